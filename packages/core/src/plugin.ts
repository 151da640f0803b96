import type { BenchReport } from './report.js';
import type { AnyPass } from './pass.js';

/** The package.json keyword that makes a package discoverable as a leanpass pass. */
export const PASS_KEYWORD = 'leanpass-pass';

/** What `leanpass bench` and `leanpass demo` hand to a pass package. */
export interface BenchOptions {
  /** A few minutes on 2 cores instead of the full evaluation. */
  quick: boolean;
  seed: number;
  /** The tfjs backend already selected ('wasm', 'cpu', 'tensorflow'). */
  backend: string;
  signal?: AbortSignal;
  /** Progress of the whole bench/demo, fraction in [0, 1]. */
  progress?: (fraction: number, message: string) => void;
  log?: (message: string) => void;
}

/**
 * The shape of a pass package's entry module: `export const pass`, and optionally `bench` and `demo`.
 * Both return the one benchmark JSON shape (DESIGN.md): rows with quality and cost, the dense row
 * first, and `summary` with the headline figures. A demo may add, in `extra`:
 * `layers: [{ path, kind, before: {...}, after: {...} }]` (per-layer savings) and
 * `curves: [{ series, step, value }]` (training curves), which the HTML report charts.
 */
export interface PassPackage {
  pass: AnyPass;
  bench?: (opts: BenchOptions) => Promise<BenchReport>;
  demo?: (opts: BenchOptions) => Promise<BenchReport>;
}

/** Whether an imported module has the PassPackage shape (a `pass` with name, options, plan and apply). */
export function isPassPackage(mod: unknown): mod is PassPackage {
  if (mod === null || typeof mod !== 'object') return false;
  const p = (mod as { pass?: unknown }).pass;
  if (p === null || typeof p !== 'object') return false;
  const q = p as Record<string, unknown>;
  return typeof q['name'] === 'string' && typeof q['plan'] === 'function' && typeof q['apply'] === 'function' && q['options'] !== undefined;
}
