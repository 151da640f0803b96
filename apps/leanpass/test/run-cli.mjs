// Runs the CLI from its TypeScript sources (for tests): node --import tsx --conditions=@leanpass/source test/run-cli.mjs …
import { main } from '../src/main.ts';

const controller = new AbortController();
process.on('SIGINT', () => {
  if (controller.signal.aborted) process.exit(130);
  controller.abort();
});
const code = await main(process.argv.slice(2), { signal: controller.signal });
process.exit(code);
