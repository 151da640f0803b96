/**
 * Progress display fed by one stream of events: a live task list with bars on a TTY, plain
 * timestamped lines otherwise (pipes, CI, --json). Everything goes to stderr; stdout holds results.
 */
export interface ProgressView {
  start(id: string, title: string): void;
  progress(id: string, fraction: number, message?: string): void;
  log(message: string): void;
  end(id: string, ok: boolean, detail?: string): void;
  close(): void;
}

export interface Stream {
  write(s: string): boolean;
  isTTY?: boolean;
  columns?: number;
}

interface Task {
  title: string;
  fraction: number;
  message: string;
  state: 'running' | 'ok' | 'failed';
  detail: string;
  t0: number;
}

function stamp(d = new Date()): string {
  return d.toISOString().slice(11, 23);
}

/** Plain timestamped lines; progress is printed when it advances by ≥ 10 % or the message changes stage. */
export class LineView implements ProgressView {
  private readonly last = new Map<string, number>();
  private readonly titles = new Map<string, string>();
  constructor(private readonly out: Stream) {}
  start(id: string, title: string): void {
    this.titles.set(id, title);
    this.last.set(id, -1);
    this.out.write(`[${stamp()}] ▶ ${title}\n`);
  }
  progress(id: string, fraction: number, message?: string): void {
    const prev = this.last.get(id) ?? -1;
    if (fraction - prev < 0.1 && fraction < 1) return;
    this.last.set(id, fraction);
    this.out.write(`[${stamp()}]   ${this.titles.get(id) ?? id} ${Math.round(fraction * 100)}%${message ? ` ${message}` : ''}\n`);
  }
  log(message: string): void {
    this.out.write(`[${stamp()}]   ${message}\n`);
  }
  end(id: string, ok: boolean, detail?: string): void {
    this.out.write(`[${stamp()}] ${ok ? '✔' : '✖'} ${this.titles.get(id) ?? id}${detail ? ` — ${detail}` : ''}\n`);
  }
  close(): void {}
}

/** A live task list with progress bars, redrawn in place (at most ~12 times a second). */
export class TtyView implements ProgressView {
  private readonly tasks = new Map<string, Task>();
  private lines = 0;
  private timer: NodeJS.Timeout | undefined;
  private dirty = false;
  private readonly logs: string[] = [];
  constructor(private readonly out: Stream) {
    this.timer = setInterval(() => this.flush(), 80);
    this.timer.unref();
  }
  start(id: string, title: string): void {
    this.tasks.set(id, { title, fraction: 0, message: '', state: 'running', detail: '', t0: Date.now() });
    this.dirty = true;
  }
  progress(id: string, fraction: number, message?: string): void {
    const t = this.tasks.get(id);
    if (!t) return;
    t.fraction = Math.max(0, Math.min(1, fraction));
    if (message !== undefined) t.message = message;
    this.dirty = true;
  }
  log(message: string): void {
    this.logs.push(message);
    this.dirty = true;
  }
  end(id: string, ok: boolean, detail?: string): void {
    const t = this.tasks.get(id);
    if (!t) return;
    t.state = ok ? 'ok' : 'failed';
    t.fraction = ok ? 1 : t.fraction;
    t.detail = detail ?? '';
    this.dirty = true;
    this.flush();
  }
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.dirty = true;
    this.flush();
  }
  private flush(): void {
    if (!this.dirty) return;
    this.dirty = false;
    const width = Math.max(40, (this.out.columns ?? 100) - 1);
    let s = this.lines ? `\x1b[${this.lines}A\x1b[0J` : '';
    for (const l of this.logs.splice(0)) s += `${l.slice(0, width)}\n`;
    const rows: string[] = [];
    for (const t of this.tasks.values()) {
      const icon = t.state === 'ok' ? '\x1b[32m✔\x1b[0m' : t.state === 'failed' ? '\x1b[31m✖\x1b[0m' : '\x1b[36m◼\x1b[0m';
      const secs = ((Date.now() - t.t0) / 1000).toFixed(1);
      const barW = 24;
      const filled = Math.round(t.fraction * barW);
      const bar = t.state === 'running' ? ` [${'█'.repeat(filled)}${'░'.repeat(barW - filled)}] ${String(Math.round(t.fraction * 100)).padStart(3)}%` : '';
      const tail = t.state === 'running' ? t.message : t.detail;
      rows.push(`${icon} ${t.title}${bar} ${secs}s${tail ? ` ${tail}` : ''}`.slice(0, width + 20));
    }
    s += rows.map((r) => `${r}\n`).join('');
    this.lines = rows.length;
    this.out.write(s);
  }
}

export function createView(out: Stream, opts: { json?: boolean } = {}): ProgressView {
  return out.isTTY && !opts.json && process.env['CI'] !== 'true' ? new TtyView(out) : new LineView(out);
}
