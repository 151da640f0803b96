/**
 * Meters: analytic FLOPs per module path, bytes saved for backward (walking tfjs's gradient tape, because
 * `tf.memory()` counts shared buffers once per tensor object), wall-clock timing with warm-up and
 * interleaved repeats, and a description of the machine for reports.
 */
import { availableParallelism, cpus } from 'node:os';
import { performance } from 'node:perf_hooks';
import * as tf from '@tensorflow/tfjs';
import { createRunContext, type ForwardMeter, type RunContext, type RunContextInit } from './context.js';
import { ConfigError } from './errors.js';
import type { AnyModule, FlopCount } from './module.js';

// ---------------------------------------------------------------------------------------------------
// FLOPs

export interface PathFlops extends FlopCount {
  kind: string;
  calls: number;
}

/**
 * Sums the analytic cost that modules report from `Module.call` (attach it as `ctx.meter`), by module
 * path. Modules that are not (or no longer) in `model` are recorded under `?<kind>`.
 */
export class FlopMeter implements ForwardMeter {
  private paths = new Map<object, string>();
  private readonly entries = new Map<string, PathFlops>();

  constructor(private readonly model: AnyModule) {
    this.indexPaths();
  }

  private indexPaths(): void {
    this.paths = new Map();
    for (const [p, m] of this.model.modules()) if (!this.paths.has(m)) this.paths.set(m, p);
  }

  record(module: { readonly kind: string }, entry: Record<string, number>): void {
    let path = this.paths.get(module);
    if (path === undefined) {
      // The tree may have changed since the meter was made (a pass replaced a module): look again.
      this.indexPaths();
      path = this.paths.get(module) ?? `?${module.kind}`;
    }
    let e = this.entries.get(path);
    if (!e) {
      e = { kind: module.kind, forward: 0, backward: 0, calls: 0 };
      this.entries.set(path, e);
    }
    e.forward += entry['flops'] ?? 0;
    e.backward += entry['backwardFlops'] ?? 0;
    e.calls += 1;
  }

  total(): FlopCount {
    let forward = 0;
    let backward = 0;
    for (const e of this.entries.values()) {
      forward += e.forward;
      backward += e.backward;
    }
    return { forward, backward };
  }

  /** Per-path totals, in the order modules were first called (a copy). */
  byPath(): Map<string, PathFlops> {
    return new Map([...this.entries].map(([k, v]) => [k, { ...v }]));
  }

  reset(): void {
    this.entries.clear();
  }
}

/**
 * Runs `run` once under `tf.tidy` with a FlopMeter attached to a fresh eval context (its tensors are
 * freed), and returns the analytic FLOPs it recorded.
 */
export function measureFlops(
  model: AnyModule,
  run: (ctx: RunContext) => unknown,
  init: Omit<RunContextInit, 'meter'> = {},
): { total: FlopCount; byPath: Map<string, PathFlops> } {
  const meter = new FlopMeter(model);
  const ctx = createRunContext({ ...init, meter });
  try {
    tf.tidy(() => {
      run(ctx);
    });
  } finally {
    if (!init.state) ctx.state.dispose();
  }
  return { total: meter.total(), byPath: meter.byPath() };
}

// ---------------------------------------------------------------------------------------------------
// Saved-for-backward bytes

export interface SavedBytes {
  /** Bytes held by tensors saved for the backward pass, each buffer counted once. */
  bytes: number;
  /** Distinct buffers saved. */
  tensors: number;
  /** Bytes by the kernel that first saved each buffer (`MatMul`, `Relu`, a customGrad's name…). */
  byKernel: Record<string, number>;
}

/** Bytes per element as the cpu and wasm backends store them (bool: 1 byte, per runtime-notes §5). */
export function bytesPerElement(dtype: tf.DataType): number {
  switch (dtype) {
    case 'bool':
      return 1;
    case 'complex64':
      return 8;
    case 'string':
      return 0;
    default:
      return 4;
  }
}

/** The slice of tfjs's engine internals this file reads (pinned to tfjs 4.22). */
interface TapeNodeLike {
  kernelName: string;
  saved?: tf.Tensor[];
}
interface EngineInternals {
  state: { activeTape: TapeNodeLike[] | null; registeredVariables: Record<string, tf.Variable> };
  gradients<T extends tf.Tensor>(f: () => T, xs: tf.Tensor[], dy?: T, allowNoGradients?: boolean): { value: T; grads: Array<tf.Tensor | undefined> };
}

function internals(): EngineInternals {
  const e = tf.engine() as unknown as EngineInternals;
  if (typeof e.gradients !== 'function' || typeof e.state !== 'object') {
    throw new ConfigError('savedForBackward needs tfjs 4.22 engine internals (engine.gradients, engine.state.activeTape)');
  }
  return e;
}

function measureTape(tape: readonly TapeNodeLike[]): SavedBytes {
  const seen = new Map<object, { bytes: number; kernel: string }>();
  for (const node of tape) {
    for (const t of node.saved ?? []) {
      const id = t.dataId;
      const b = t.size * bytesPerElement(t.dtype);
      const prev = seen.get(id);
      if (!prev) seen.set(id, { bytes: b, kernel: node.kernelName });
      else if (b > prev.bytes) prev.bytes = b;
    }
  }
  const byKernel: Record<string, number> = Object.create(null) as Record<string, number>;
  let bytes = 0;
  for (const { bytes: b, kernel } of seen.values()) {
    bytes += b;
    byKernel[kernel] = (byKernel[kernel] ?? 0) + b;
  }
  return { bytes, tensors: seen.size, byKernel: { ...byKernel } };
}

/**
 * Bytes that one forward of `f` keeps alive for its backward pass. `f` runs under tfjs's gradient tape
 * (as inside `variableGrads`/`optimizer.minimize`, with every trainable variable as a source); at the
 * end of `f` the tape is walked and every saved tensor is counted once per data buffer, size × bytes per
 * element. The backward then runs and everything it made is disposed. Everything on the tape counts,
 * including ops with no variable upstream: tfjs keeps their saved inputs until the backward ends too.
 */
export function savedForBackward(f: () => tf.Scalar): SavedBytes {
  const engine = internals();
  let result: SavedBytes | undefined;
  const vars = Object.values(engine.state.registeredVariables).filter((v) => v.trainable);
  // engine.gradients needs at least one source; a throwaway scalar when there are no variables.
  const dummy = vars.length ? undefined : tf.scalar(0);
  try {
    const { value, grads } = engine.gradients(
      () => {
        const y = f();
        result = measureTape(engine.state.activeTape ?? []);
        return y;
      },
      dummy ? [dummy] : vars,
      undefined,
      true,
    );
    value.dispose();
    for (const g of grads) g?.dispose();
  } finally {
    dummy?.dispose();
  }
  if (!result) throw new ConfigError('savedForBackward: f did not run');
  return result;
}

// ---------------------------------------------------------------------------------------------------
// Timing

export interface Timing {
  medianMs: number;
  minMs: number;
  maxMs: number;
  /** Every timed run, in order. */
  samples: number[];
}

export interface TimeOptions {
  /** Untimed runs first (default 2). */
  warmup?: number;
  /** Timed runs (default 10). */
  repeats?: number;
}

type Timed = () => tf.Tensor | tf.Tensor[] | void | Promise<unknown>;

function isTensor(x: unknown): x is tf.Tensor {
  return x instanceof tf.Tensor;
}

function tensorsIn(v: unknown): tf.Tensor[] {
  if (isTensor(v)) return [v];
  if (Array.isArray(v)) return (v as unknown[]).filter(isTensor);
  return [];
}

/** One run: waits for the data of the returned tensors (so async backends are measured), then frees them. */
async function runOnce(fn: Timed): Promise<number> {
  const t0 = performance.now();
  let out: unknown = fn();
  if (out instanceof Promise) out = await out;
  const ts = tensorsIn(out);
  for (const t of ts) await t.data();
  const ms = performance.now() - t0;
  for (const t of ts) if (!t.isDisposed) t.dispose();
  return ms;
}

function median(xs: readonly number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

function summarise(samples: number[]): Timing {
  return { medianMs: median(samples), minMs: Math.min(...samples), maxMs: Math.max(...samples), samples };
}

function counts(opts: TimeOptions): { warmup: number; repeats: number } {
  const warmup = opts.warmup ?? 2;
  const repeats = opts.repeats ?? 10;
  if (!Number.isInteger(warmup) || warmup < 0) throw new ConfigError(`warmup: expected an integer ≥ 0, found ${warmup}`);
  if (!Number.isInteger(repeats) || repeats < 1) throw new ConfigError(`repeats: expected an integer ≥ 1, found ${repeats}`);
  return { warmup, repeats };
}

/**
 * Times `fn`: `warmup` untimed runs, then `repeats` timed ones. Tensors that `fn` returns are awaited
 * and disposed; `fn` should tidy its own intermediates.
 */
export async function timeIt(fn: Timed, opts: TimeOptions = {}): Promise<Timing> {
  const { warmup, repeats } = counts(opts);
  for (let i = 0; i < warmup; i++) await runOnce(fn);
  const samples: number[] = [];
  for (let i = 0; i < repeats; i++) samples.push(await runOnce(fn));
  return summarise(samples);
}

/**
 * Times a baseline and a variant in the same process: both warmed up, then repeats interleaved in ABBA
 * order so that drift (thermal, GC) affects both alike. `ratio` = variant median / baseline median
 * (below 1: the variant is faster).
 */
export async function compareTimings(baseline: Timed, variant: Timed, opts: TimeOptions = {}): Promise<{ baseline: Timing; variant: Timing; ratio: number }> {
  const { warmup, repeats } = counts(opts);
  for (let i = 0; i < warmup; i++) {
    await runOnce(baseline);
    await runOnce(variant);
  }
  const a: number[] = [];
  const b: number[] = [];
  for (let i = 0; i < repeats; i++) {
    if (i % 2 === 0) {
      a.push(await runOnce(baseline));
      b.push(await runOnce(variant));
    } else {
      b.push(await runOnce(variant));
      a.push(await runOnce(baseline));
    }
  }
  const base = summarise(a);
  const vari = summarise(b);
  return { baseline: base, variant: vari, ratio: base.medianMs > 0 ? vari.medianMs / base.medianMs : Number.NaN };
}

/** `"<cpu model>, <n> cores, <platform>/<arch>, node <version>"` — name the machine next to absolute times. */
export function machineDescription(): string {
  const list = cpus();
  const model = list[0]?.model.trim().replace(/\s+/g, ' ') || 'unknown cpu';
  const cores = availableParallelism();
  return `${model}, ${cores} cores, ${process.platform}/${process.arch}, node ${process.version}`;
}
