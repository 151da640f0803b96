/**
 * The inference fast path of a LLaMA block with a K/V cache (batch 1, no gradient tape).
 *
 * Batch-1 decoding is dispatch-bound on tfjs-wasm: each op costs a few µs whatever its size, the
 * generic layers wrap every piece in a customGrad (needed for training), RoPE rebuilt its cos/sin
 * tables and a d×d rotation matrix on every call, and the attention transposed the whole K cache on
 * every token. This path computes the same function with far fewer ops:
 *
 * - RMSNorm, RoPE and the grouped softmax as single-dispatch kernels on wasm (`DECODE_KERNELS`, JS
 *   loops on the wasm heap); elsewhere RMSNorm as nn's six elementwise ops in nn's order
 *   (bit-identical) and RoPE as nn's applyRope ops;
 * - RoPE from cos/sin rows built once per step and shared by every block (nn's float32 tables; the
 *   query's score scale 1/√d is folded into its tables; the queries come out transposed, Qᵀ);
 * - attention over the cache with two flag-free 2-D matMuls for all heads at once, grouped-query
 *   heads included, on nn's cache layout ([1, Hk, T, d], appended on axis 2). With the cache viewed
 *   as rows K [Hk·T, d]: Sᵀ = K·Qᵀ [Hk·T, N·H] scores every query head against every kv group; each
 *   head's softmax runs over its own group's keys only (causal for N > 1) and is exactly zero on the
 *   other groups, so P·V [Hk·T, d] is the grouped attention. The other groups cost Hk× the MACs of
 *   per-group products — cheap against the dispatches they save at decode lengths (T up to a few
 *   hundred);
 * - SwiGLU's gate as x·σ(x) with no customGrad;
 * - nn's Linear children run as their bare product (no customGrad, no reshapes); any other linear
 *   child (a pass's replacement, e.g. SkipCat's factorised linears) is called as a module and runs
 *   its own forward.
 *
 * Outputs equal the general path within float32 summation-order noise (tests in llama.test.ts).
 */
import * as tf from '@tensorflow/tfjs';
import { type RunContext } from '@leanpass/core';
import { Attention, Linear, MASKED, RMSNorm, SwiGLU, gradientTapeActive, matMulRaw, transposeLast2, type KV, type WasmHeapBackend } from '@leanpass/nn';

/** True while a gradient tape may be recording (nn's; re-exported here, where the fast path is documented). */
export { gradientTapeActive };

/**
 * Fused elementwise kernels of the fast path on wasm: plain JS loops over the wasm heap, one dispatch
 * each where the tf-op form takes three to six (each op costs a few µs at decode sizes, whatever its
 * size): RMSNorm (6 ops → 1), RoPE with the queries' transpose (4–5 → 1), the grouped softmax
 * (transpose + mask + softmax → 1). Arithmetic in float64, rounded once to float32; other backends use the tf-op form.
 */
export const DECODE_KERNELS = { rmsNorm: 'LeanpassLlamaRmsNorm', rope: 'LeanpassLlamaRope', groupSoftmax: 'LeanpassLlamaGroupSoftmax' } as const;

function heapKernel(name: string, fn: (be: WasmHeapBackend, inputs: tf.NamedTensorInfoMap, attrs: Record<string, unknown>) => tf.TensorInfo): void {
  tf.registerKernel({ kernelName: name, backendName: 'wasm', kernelFunc: ({ inputs, backend, attrs }) => fn(backend as WasmHeapBackend, inputs, attrs as Record<string, unknown>) });
}

// y = x·rsqrt(mean(x²) + eps)·γ per row of x [N, d].
heapKernel(DECODE_KERNELS.rmsNorm, (be, inputs, attrs) => {
  const xi = inputs['x'] as tf.TensorInfo;
  const gi = inputs['gamma'];
  const [N, d] = xi.shape as [number, number];
  const eps = attrs['eps'] as number;
  const out = be.makeOutput([N, d], 'float32');
  const x = be.typedArrayFromHeap(xi);
  const g = gi ? be.typedArrayFromHeap(gi) : null;
  const y = be.typedArrayFromHeap(out);
  for (let n = 0; n < N; n++) {
    const o = n * d;
    let ss = 0;
    for (let i = 0; i < d; i++) ss += (x[o + i] as number) * (x[o + i] as number);
    const r = 1 / Math.sqrt(ss / d + eps);
    if (g) for (let i = 0; i < d; i++) y[o + i] = (x[o + i] as number) * r * (g[i] as number);
    else for (let i = 0; i < d; i++) y[o + i] = (x[o + i] as number) * r;
  }
  return out;
});

// Rotate-half RoPE of x [N, heads·d] with per-token tables cos/sin [N·d]: out [N, heads·d], or its
// transpose [d, N·heads] (column n·heads + h) when `transpose` (the queries, ready for K·Qᵀ).
heapKernel(DECODE_KERNELS.rope, (be, inputs, attrs) => {
  const xi = inputs['x'] as tf.TensorInfo;
  const { heads, d, transpose } = attrs as { heads: number; d: number; transpose: boolean };
  const cos = attrs['cos'] as Float32Array;
  const sin = attrs['sin'] as Float32Array;
  const N = xi.shape[0] as number;
  const half = d / 2;
  const out = be.makeOutput(transpose ? [d, N * heads] : [N, heads * d], 'float32');
  const x = be.typedArrayFromHeap(xi);
  const y = be.typedArrayFromHeap(out);
  const cols = N * heads;
  for (let n = 0; n < N; n++) {
    for (let h = 0; h < heads; h++) {
      const o = (n * heads + h) * d;
      for (let c = 0; c < d; c++) {
        const rot = c < half ? -(x[o + c + half] as number) : (x[o + c - half] as number);
        const v = (x[o + c] as number) * (cos[n * d + c] as number) + rot * (sin[n * d + c] as number);
        if (transpose) y[c * cols + n * heads + h] = v;
        else y[o + c] = v;
      }
    }
  }
  return out;
});

// Probabilities P [N·H, Hk·T] from the transposed scores Sᵀ [Hk·T, N·H]: row (n, h) is the softmax of
// its own kv group's scores (group ⌊h/g⌋) at keys 0…P+n, exactly zero elsewhere.
heapKernel(DECODE_KERNELS.groupSoftmax, (be, inputs, attrs) => {
  const si = inputs['st'] as tf.TensorInfo;
  const { N, heads, kvHeads, P } = attrs as { N: number; heads: number; kvHeads: number; P: number };
  const T = P + N;
  const R = N * heads;
  const W = kvHeads * T;
  const g = heads / kvHeads;
  const out = be.makeOutput([R, W], 'float32');
  const st = be.typedArrayFromHeap(si);
  const p = be.typedArrayFromHeap(out);
  p.fill(0);
  const e = new Float64Array(T);
  for (let n = 0; n < N; n++) {
    for (let h = 0; h < heads; h++) {
      const row = n * heads + h;
      const j = Math.floor(h / g);
      const len = P + n + 1;
      let max = -Infinity;
      for (let t = 0; t < len; t++) max = Math.max(max, st[(j * T + t) * R + row] as number);
      let sum = 0;
      for (let t = 0; t < len; t++) {
        const v = Math.exp((st[(j * T + t) * R + row] as number) - max);
        e[t] = v;
        sum += v;
      }
      const o = row * W + j * T;
      for (let t = 0; t < len; t++) p[o + t] = (e[t] as number) / sum;
    }
  }
  return out;
});

function onWasm(...ts: tf.Tensor[]): boolean {
  return tf.getBackend() === 'wasm' && ts.every((t) => t.dtype === 'float32');
}

/** Per-generation constants shared by every block of a model (kept in ctx.state, freed with it). */
interface DecodeConstants {
  /** RoPE base θ. */
  base: number;
  /** rotate_half as a signed permutation [d, d] (x·R). */
  rot: tf.Tensor2D;
  /** The current step's tables: positions P…P+N−1 (cos/sin [N, 1, d]; the query's times 1/√d) and the attention mask [N·H, Hk·T]. */
  step: StepTables | null;
}

interface StepTables {
  P: number;
  N: number;
  /** The tables as arrays [N·d] (the wasm kernels read these). */
  arrays: { cos: Float32Array; sin: Float32Array; cosQ: Float32Array; sinQ: Float32Array };
  /** The same as tensors [N, 1, d] and the additive mask [N·H, Hk·T] (the tf-op form; made on first use). */
  tensors: { cos: tf.Tensor; sin: tf.Tensor; cosQ: tf.Tensor; sinQ: tf.Tensor; mask: tf.Tensor2D } | null;
}

function constants(ctx: RunContext, heads: number, kvHeads: number, headDim: number, base: number): DecodeConstants {
  const key = `llama.decode:${heads}:${kvHeads}:${headDim}:${base}`;
  const hit = ctx.state.get<DecodeConstants>(key);
  if (hit) return hit;
  const half = headDim / 2;
  const rot = new Float32Array(headDim * headDim); // the same signed permutation as nn's applyRope
  for (let j = 0; j < half; j++) {
    rot[(j + half) * headDim + j] = -1;
    rot[j * headDim + j + half] = 1;
  }
  const c: DecodeConstants = { base, rot: tf.keep(tf.tensor2d(rot, [headDim, headDim])), step: null };
  ctx.state.set(key, c);
  ctx.state.onDispose(() => {
    c.rot.dispose();
    disposeStep(c);
  });
  return c;
}

function disposeStep(c: DecodeConstants): void {
  const t = c.step?.tensors;
  if (t) for (const x of [t.cos, t.sin, t.cosQ, t.sinQ, t.mask]) x.dispose();
  c.step = null;
}

/** The RoPE tables of the step at positions P…P+N−1, computed exactly as nn's applyRope does (Float64, rounded once). */
function stepTables(c: DecodeConstants, P: number, N: number, d: number): StepTables {
  if (c.step && c.step.P === P && c.step.N === N) return c.step;
  const half = d / 2;
  const scale = 1 / Math.sqrt(d);
  const cos = new Float32Array(N * d);
  const sin = new Float32Array(N * d);
  for (let n = 0; n < N; n++) {
    for (let i = 0; i < half; i++) {
      const a = (P + n) * Math.pow(c.base, (-2 * i) / d);
      const o = n * d;
      cos[o + i] = cos[o + i + half] = Math.cos(a);
      sin[o + i] = sin[o + i + half] = Math.sin(a);
    }
  }
  disposeStep(c);
  c.step = { P, N, arrays: { cos, sin, cosQ: cos.map((x) => x * scale), sinQ: sin.map((x) => x * scale) }, tensors: null };
  return c.step;
}

/** The step's tables as tensors plus the additive mask over the Hk·T score columns of each (token, head) row. */
function stepTensors(s: StepTables, heads: number, kvHeads: number, d: number): NonNullable<StepTables['tensors']> {
  if (s.tensors) return s.tensors;
  const { P, N } = s;
  const T = P + N;
  const g = heads / kvHeads;
  const mask = new Float32Array(N * heads * kvHeads * T).fill(MASKED);
  for (let n = 0; n < N; n++) {
    for (let h = 0; h < heads; h++) {
      const row = (n * heads + h) * kvHeads * T + Math.floor(h / g) * T;
      mask.fill(0, row, row + P + n + 1);
    }
  }
  const t3 = (a: Float32Array): tf.Tensor => tf.keep(tf.tensor3d(a, [N, 1, d]));
  const a = s.arrays;
  s.tensors = { cos: t3(a.cos), sin: t3(a.sin), cosQ: t3(a.cosQ), sinQ: t3(a.sinQ), mask: tf.keep(tf.tensor2d(mask, [N * heads, kvHeads * T])) };
  return s.tensors;
}

/** x·cos + rotate_half(x)·sin for x [N, heads·d] → [N, heads, d] (nn's applyRope ops, no customGrad). */
function rope(x: tf.Tensor, heads: number, d: number, cos: tf.Tensor, sin: tf.Tensor, rot: tf.Tensor2D): tf.Tensor {
  const N = x.shape[0];
  const x3 = tf.reshape(x, [N, heads, d]);
  const xr = tf.reshape(tf.matMul(tf.reshape<tf.Rank.R2>(x, [N * heads, d]), rot), [N, heads, d]);
  return tf.add(tf.mul(x3, cos), tf.mul(xr, sin));
}

function runRope(x: tf.Tensor, heads: number, d: number, cos: Float32Array, sin: Float32Array, transpose: boolean): tf.Tensor {
  return tf.engine().runKernel(DECODE_KERNELS.rope, { x }, { heads, d, cos, sin, transpose });
}

/** RMSNorm of rows x [N, d] with nn's ops in nn's order (bit-identical to the customGrad forward). */
export function rmsNormRows(x: tf.Tensor, norm: RMSNorm): tf.Tensor {
  if (onWasm(x)) {
    const inputs: tf.NamedTensorMap = norm.config.affine ? { x, gamma: norm.param('weight').variable } : { x };
    return tf.engine().runKernel(DECODE_KERNELS.rmsNorm, inputs, { eps: norm.config.eps });
  }
  const rstd = tf.rsqrt(tf.add(tf.mean(tf.mul(x, x), -1, true), norm.config.eps));
  const y = tf.mul(x, rstd);
  return norm.config.affine ? tf.mul(y, norm.param('weight').variable) : y;
}

/** Whether a block's attention allows the fast path (nn's Attention: causal self-attention with RoPE). */
export function fastPathApplies(attn: unknown, ctx: RunContext): attn is Attention {
  if (ctx.meter) return false; // a meter wants every module's own cost: take the general path
  if (!(attn instanceof Attention)) return false;
  const c = attn.config;
  return c.rope !== null && c.causal && c.kvDim === c.dim;
}

export interface FastBlockParts {
  attnNorm: unknown;
  attn: Attention;
  mlpNorm: unknown;
  mlp: unknown;
}

type Callable = { call(x: tf.Tensor, ctx: RunContext): unknown };

/**
 * A linear child on rows x [N, in]: nn's Linear as its bare product on wasm (its forward without the
 * customGrad wrapper and tf.matMul's rank-3 reshapes, which cost more than the product at N = 1);
 * any other module (a pass's replacement) through its own forward.
 */
function linearRows(m: unknown, x: tf.Tensor, ctx: RunContext): tf.Tensor {
  // exactly nn's Linear (a subclass may override forward)
  if (m instanceof Linear && m.constructor === Linear && onWasm(x) && x.rank === 2 && x.shape[1] === m.config.inFeatures) {
    const y = matMulRaw(x, m.weight);
    return m.bias ? tf.add(y, m.bias) : y;
  }
  return (m as Callable).call(x, ctx) as tf.Tensor;
}

/**
 * One block at batch 1 on rows x [N, dim] with the cache `past` (nn's layout [1, Hk, P, d], or
 * undefined when empty); returns the block output rows [N, dim] and the extended cache (new
 * tensors, not kept).
 */
export function fastBlockStep(parts: FastBlockParts, x: tf.Tensor2D, past: KV | undefined, ctx: RunContext): { y: tf.Tensor2D; cache: KV } {
  const { attn } = parts;
  const { heads: H, kvHeads: Hk, headDim: d } = attn.config;
  const base = (attn.config.rope as { base: number }).base;
  const N = x.shape[0];
  const P = past ? (past.k.shape[2] as number) : 0;
  const T = P + N;
  const c = constants(ctx, H, Hk, d, base);
  const tab = stepTables(c, P, N, d);

  const norm = (m: unknown, h: tf.Tensor): tf.Tensor => (m instanceof RMSNorm ? rmsNormRows(h, m) : ((m as Callable).call(h, ctx) as tf.Tensor));
  const h = norm(parts.attnNorm, x);
  const q = linearRows(attn.child('q'), h, ctx);
  const k = linearRows(attn.child('k'), h, ctx);
  const v = linearRows(attn.child('v'), h, ctx);
  const wasm = onWasm(q, k, v);
  // RoPE'd queries transposed, Qᵀ [d, N·H] (scaled by 1/√d), and keys [N, Hk·d].
  const tt = wasm ? null : stepTensors(tab, H, Hk, d);
  const qt = tt ? transposeLast2(tf.reshape(rope(q, H, d, tt.cosQ, tt.sinQ, c.rot), [N * H, d])) : runRope(q, H, d, tab.arrays.cosQ, tab.arrays.sinQ, true);
  const kr = tt ? rope(k, Hk, d, tt.cos, tt.sin, c.rot) : runRope(k, Hk, d, tab.arrays.cos, tab.arrays.sin, false);
  const heads = (t: tf.Tensor, n: number): tf.Tensor => (N === 1 ? tf.reshape(t, [1, n, 1, d]) : tf.transpose(tf.reshape(t, [1, N, n, d]), [0, 2, 1, 3]));
  const kNew = heads(kr, Hk);
  const vNew = heads(v, Hk);
  const kc = past ? tf.concat([past.k, kNew], 2) : kNew;
  const vc = past ? tf.concat([past.v, vNew], 2) : vNew;

  // Sᵀ = K [Hk·T, d] · Qᵀ [d, N·H]; P [N·H, Hk·T]: each head's softmax over its own group (causal).
  const mm = wasm ? matMulRaw : (a: tf.Tensor, b: tf.Tensor): tf.Tensor2D => tf.matMul(a, b);
  const st = mm(tf.reshape(kc, [Hk * T, d]), qt);
  const p: tf.Tensor = tt ? tf.softmax(tf.add(transposeLast2(st), tt.mask)) : tf.engine().runKernel<tf.Tensor>(DECODE_KERNELS.groupSoftmax, { st }, { N, heads: H, kvHeads: Hk, P });
  const o = tf.reshape(mm(p, tf.reshape(vc, [Hk * T, d])), [N, H * d]);
  const x1 = tf.add(x, linearRows(attn.child('o'), o, ctx));

  const h2 = norm(parts.mlpNorm, x1);
  const mlp = parts.mlp;
  let m: tf.Tensor;
  if (mlp instanceof SwiGLU && mlp.config.act === 'silu') {
    const g = linearRows(mlp.child('gate'), h2, ctx);
    const u = linearRows(mlp.child('up'), h2, ctx);
    // (wasm's Sigmoid kernel beats a JS loop of Math.exp here)
    m = linearRows(mlp.child('down'), tf.mul(tf.mul(g, tf.sigmoid(g)), u), ctx);
  } else {
    m = (mlp as Callable).call(h2, ctx) as tf.Tensor;
  }
  return { y: tf.add<tf.Tensor2D>(x1, m), cache: { k: kc, v: vc } };
}
