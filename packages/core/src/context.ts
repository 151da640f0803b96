import { Rng } from './rng.js';

export type Mode = 'train' | 'eval';

/** Where a sampler is, for modules whose behaviour depends on the denoising / decoding step. */
export interface SamplerStep {
  /** 0-based index of the step within this generation. */
  index: number;
  /** Total number of steps in this generation. */
  count: number;
  /** Diffusion timestep (or noise level) of this step, when the sampler has one. */
  timestep?: number;
}

/**
 * Per-generation state: caching modules (DARE, LazyDiT) keep their caches here, keyed by their module
 * path, never in the module itself. A sampler creates a fresh store for each generation, so two
 * generations running at once never share a cache.
 */
export class StateStore {
  private readonly map = new Map<string, unknown>();
  private disposers: Array<() => void> = [];

  get<T>(key: string): T | undefined {
    return this.map.get(key) as T | undefined;
  }
  has(key: string): boolean {
    return this.map.has(key);
  }
  set<T>(key: string, value: T): void {
    this.map.set(key, value);
  }
  /** Gets the value, creating it with `init` on first use. */
  getOrCreate<T>(key: string, init: () => T): T {
    if (!this.map.has(key)) this.map.set(key, init());
    return this.map.get(key) as T;
  }
  delete(key: string): boolean {
    return this.map.delete(key);
  }
  keys(): string[] {
    return [...this.map.keys()];
  }
  /** Registers a cleanup (e.g. disposing cached tensors) run by `dispose()`. */
  onDispose(fn: () => void): void {
    this.disposers.push(fn);
  }
  dispose(): void {
    for (const fn of this.disposers) fn();
    this.disposers = [];
    this.map.clear();
  }
}

/** Optional per-forward instrumentation (FLOP counting, per-module timing). */
export interface ForwardMeter {
  /** Called by `Module.call` after each forward with that module's own cost. */
  record(module: { readonly kind: string }, entry: Record<string, number>): void;
}

/** What flows beside the tensors in `forward`. */
export interface RunContext {
  mode: Mode;
  step?: SamplerStep;
  state: StateStore;
  rng: Rng;
  meter?: ForwardMeter;
}

export interface RunContextInit {
  mode?: Mode;
  seed?: number;
  step?: SamplerStep;
  state?: StateStore;
  meter?: ForwardMeter;
}

/** A fresh context: eval mode, seed 0, a new state store unless given. */
export function createRunContext(init: RunContextInit = {}): RunContext {
  const ctx: RunContext = {
    mode: init.mode ?? 'eval',
    state: init.state ?? new StateStore(),
    rng: new Rng(init.seed ?? 0),
  };
  if (init.step) ctx.step = init.step;
  if (init.meter) ctx.meter = init.meter;
  return ctx;
}

/** The same context with some fields replaced (the state store is shared, not copied). */
export function withContext(ctx: RunContext, patch: Partial<RunContext>): RunContext {
  return { ...ctx, ...patch };
}
