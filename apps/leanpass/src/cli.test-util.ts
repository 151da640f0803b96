import { main } from './main.js';

/** A non-TTY output stream that keeps what is written. */
export function capture(): { stream: { write: (s: string) => boolean; isTTY: false }; text: () => string } {
  let text = '';
  return { stream: { write: (s: string) => ((text += s), true), isTTY: false }, text: () => text };
}

/** Runs the CLI in-process with captured stdout and stderr. */
export async function cli(args: string[], cwd: string): Promise<{ code: number; out: string; err: string }> {
  const out = capture();
  const err = capture();
  const code = await main(args, { stdout: out.stream, stderr: err.stream, cwd });
  return { code, out: out.text(), err: err.text() };
}
