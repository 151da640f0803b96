import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';

/**
 * An output folder written atomically: everything goes to a hidden sibling temp folder, which
 * replaces the target only on `commit()`. `abort()` (or a crash) leaves the old folder untouched and
 * removes the temp one, so no half-written output remains.
 */
export class OutputDir {
  readonly target: string;
  readonly tmp: string;
  private done = false;
  constructor(target: string) {
    this.target = resolve(target);
    this.tmp = join(dirname(this.target), `.${basename(this.target)}.tmp-${process.pid}-${Date.now()}`);
    mkdirSync(this.tmp, { recursive: true });
  }
  path(...parts: string[]): string {
    return join(this.tmp, ...parts);
  }
  commit(): void {
    if (this.done) return;
    this.done = true;
    const old = `${this.tmp}.old`;
    const had = existsSync(this.target);
    if (had) renameSync(this.target, old);
    try {
      renameSync(this.tmp, this.target);
    } catch (e) {
      if (had) renameSync(old, this.target);
      throw e;
    }
    if (had) rmSync(old, { recursive: true, force: true });
  }
  abort(): void {
    if (this.done) return;
    this.done = true;
    rmSync(this.tmp, { recursive: true, force: true });
  }
}
