/**
 * Test helpers shared by every package: gradients against central finite differences, and one
 * computation run on two backends. tfjs has no float64, so the checks project the output on a fixed
 * random direction and accumulate that scalar in Float64 in JS; use small shapes, inputs away from
 * kinks (relu at 0…), eps ~1e-2–1e-3 and the relative tolerances below (a wrong gradient misses them
 * by orders of magnitude).
 */
import * as tf from '@tensorflow/tfjs';
import { ConfigError, Rng, useBackend, type BackendName } from '@leanpass/core';

export type TensorFn = (...inputs: tf.Tensor[]) => tf.Tensor;

export interface GradCheckOptions {
  /** Finite-difference step (default 1e-2). */
  eps?: number;
  /** Relative tolerance (default 2e-2). */
  rtol?: number;
  /**
   * Absolute tolerance as a fraction of the largest |gradient| of that tensor (default 2e-3): the
   * float32 noise of a difference quotient scales with the function, not with each element.
   */
  atolFrac?: number;
  /** Elements checked per tensor, chosen at random (default 24; all when the tensor is smaller). */
  samples?: number;
  /** Variables the function reads by closure (a layer's params), checked too. */
  params?: tf.Variable[];
  /** Seed of the projection direction and of the sampled elements. */
  seed?: number;
}

export interface GradCheckEntry {
  /** 'input 0', 'input 1', …, or 'param <name>'. */
  tensor: string;
  index: number;
  analytic: number;
  numeric: number;
  /** |analytic − numeric| / (atol + rtol·|numeric|): ≤ 1 passes. */
  ratio: number;
}

export interface GradCheckResult {
  ok: boolean;
  /** The worst-scoring element of each checked tensor. */
  worst: GradCheckEntry[];
  /** How many elements were compared in all. */
  checked: number;
}

function projection(rng: Rng, n: number): Float64Array {
  const r = new Float64Array(n);
  for (let i = 0; i < n; i++) r[i] = rng.normal();
  return r;
}

function dot(a: ArrayLike<number>, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < b.length; i++) s += (a[i] as number) * (b[i] as number);
  return s;
}

/**
 * Checks the gradients of `f` with respect to every input (and every variable in `params`) against
 * central differences of L = Σ f(x) ⊙ r for a fixed random r. Runs on the current backend (use cpu).
 */
export function gradCheck(f: TensorFn, inputs: tf.Tensor[], opts: GradCheckOptions = {}): GradCheckResult {
  const eps = opts.eps ?? 1e-2;
  const rtol = opts.rtol ?? 2e-2;
  const atolFrac = opts.atolFrac ?? 2e-3;
  const samples = opts.samples ?? 24;
  const params = opts.params ?? [];
  const rng = new Rng(opts.seed ?? 0);
  for (const [i, t] of inputs.entries()) {
    if (t.dtype !== 'float32') throw new ConfigError(`gradCheck: expected float32 inputs, input ${i} is ${t.dtype}`);
  }
  const outShape = tf.tidy(() => f(...inputs).shape);
  const r = projection(rng, outShape.reduce((a, b) => a * b, 1));
  const rT = tf.tensor(Float32Array.from(r), outShape);
  const loss = (xs: tf.Tensor[]): number => tf.tidy(() => dot(f(...xs).dataSync(), r));

  const targets: tf.Tensor[] = [...inputs, ...params];
  const analytic = tf.tidy(() => {
    const g = tf.grads((...xs: tf.Tensor[]) => tf.sum(tf.mul(f(...xs.slice(0, inputs.length)), rT)))(targets);
    return g.map((t) => t.dataSync().slice());
  });
  rT.dispose();

  const worst: GradCheckEntry[] = [];
  let checked = 0;
  targets.forEach((t, ti) => {
    const isParam = ti >= inputs.length;
    const name = isParam ? `param ${(t as tf.Variable).name}` : `input ${ti}`;
    const base = t.dataSync().slice() as Float32Array;
    const a = analytic[ti] as Float32Array;
    let scale = 0;
    for (const v of a) scale = Math.max(scale, Math.abs(v));
    const atol = Math.max(atolFrac * scale, 1e-6);
    const idx = base.length <= samples ? [...base.keys()] : rng.permutation(base.length).slice(0, samples);
    let w: GradCheckEntry | undefined;
    const evalAt = (i: number, value: number): number => {
      const data = base.slice();
      data[i] = value;
      if (isParam) {
        tf.tidy(() => (t as tf.Variable).assign(tf.tensor(data, t.shape)));
        return loss(inputs);
      }
      const x = tf.tensor(data, t.shape, 'float32');
      const xs = inputs.map((u, j) => (j === ti ? x : u));
      const l = loss(xs);
      x.dispose();
      return l;
    };
    for (const i of idx) {
      const x0 = base[i] as number;
      const num = (evalAt(i, x0 + eps) - evalAt(i, x0 - eps)) / (2 * eps);
      const an = a[i] as number;
      const ratio = Math.abs(an - num) / (atol + rtol * Math.abs(num));
      checked++;
      if (!w || ratio > w.ratio || Number.isNaN(ratio)) w = { tensor: name, index: i, analytic: an, numeric: num, ratio };
    }
    if (isParam) tf.tidy(() => (t as tf.Variable).assign(tf.tensor(base, t.shape)));
    if (w) worst.push(w);
  });
  return { ok: worst.every((e) => e.ratio <= 1), worst, checked };
}

export interface CompareOptions {
  /** The two backends (default ['cpu', 'wasm']); the backend active before the call is restored. */
  backends?: [BackendName, BackendName];
  /** Tolerance: |a − b| ≤ atol + rtol·|a| per element (defaults 1e-4, 1e-3). */
  rtol?: number;
  atol?: number;
  /** Also compare gradients w.r.t. the inputs and `params` (default true). */
  grads?: boolean;
  /** Variables read by closure (a layer's params); their gradients are compared too. */
  params?: tf.Variable[];
  seed?: number;
}

export interface CompareResult {
  ok: boolean;
  /** Largest |a − b| / (atol + rtol·|a|) of the output and of each gradient (≤ 1 passes). */
  ratios: Record<string, number>;
  /** The largest absolute difference of each compared tensor. */
  maxAbs: Record<string, number>;
}

interface BackendRun {
  out: Float32Array;
  grads: Float32Array[];
}

function runOnce(fn: TensorFn, makeInputs: () => tf.Tensor[], params: tf.Variable[], grads: boolean, seed: number): BackendRun {
  return tf.tidy(() => {
    const inputs = makeInputs();
    const y = fn(...inputs);
    const out = Float32Array.from(y.dataSync());
    if (!grads) return { out, grads: [] };
    const r = projection(new Rng(seed), y.size);
    const rT = tf.tensor(Float32Array.from(r), y.shape);
    const targets = [...inputs, ...params];
    const g = tf.grads((...xs: tf.Tensor[]) => tf.sum(tf.mul(fn(...xs.slice(0, inputs.length)), rT)))(targets);
    return { out, grads: g.map((t) => Float32Array.from(t.dataSync())) };
  });
}

function compareArrays(a: Float32Array, b: Float32Array, atol: number, rtol: number): { ratio: number; maxAbs: number } {
  if (a.length !== b.length) return { ratio: Infinity, maxAbs: Infinity };
  let ratio = 0;
  let maxAbs = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs((a[i] as number) - (b[i] as number));
    const q = d / (atol + rtol * Math.abs(a[i] as number));
    if (!(q <= ratio)) ratio = Number.isNaN(q) ? Infinity : q;
    if (d > maxAbs) maxAbs = d;
  }
  return { ratio, maxAbs };
}

/**
 * Runs `fn` (forward, and gradients of a random projection of its output w.r.t. the inputs and
 * `params`) on two backends and compares within float32 tolerance. `makeInputs` is called once per
 * backend, so the inputs live on the backend that uses them; variables move between backends by
 * themselves.
 */
export async function compareBackends(fn: TensorFn, makeInputs: () => tf.Tensor[], opts: CompareOptions = {}): Promise<CompareResult> {
  const [b1, b2] = opts.backends ?? ['cpu', 'wasm'];
  const rtol = opts.rtol ?? 1e-3;
  const atol = opts.atol ?? 1e-4;
  const grads = opts.grads ?? true;
  const params = opts.params ?? [];
  const seed = opts.seed ?? 0;
  const previous = tf.getBackend() as BackendName | undefined;
  let r1: BackendRun;
  let r2: BackendRun;
  try {
    await useBackend(b1);
    r1 = runOnce(fn, makeInputs, params, grads, seed);
    await useBackend(b2);
    r2 = runOnce(fn, makeInputs, params, grads, seed);
  } finally {
    if (previous && previous !== tf.getBackend()) await useBackend(previous);
  }
  const ratios: Record<string, number> = {};
  const maxAbs: Record<string, number> = {};
  const o = compareArrays(r1.out, r2.out, atol, rtol);
  ratios['output'] = o.ratio;
  maxAbs['output'] = o.maxAbs;
  r1.grads.forEach((g, i) => {
    const name = i < r1.grads.length - params.length ? `grad input ${i}` : `grad param ${params[i - (r1.grads.length - params.length)]?.name ?? i}`;
    const c = compareArrays(g, r2.grads[i] ?? new Float32Array(0), atol * gradScale(g), rtol);
    ratios[name] = c.ratio;
    maxAbs[name] = c.maxAbs;
  });
  return { ok: Object.values(ratios).every((v) => v <= 1), ratios, maxAbs };
}

/** max(1, max|g|): absolute gradient tolerances scale with the gradient's size. */
function gradScale(g: Float32Array): number {
  let m = 1;
  for (const v of g) m = Math.max(m, Math.abs(v));
  return m;
}
