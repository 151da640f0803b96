import * as tf from '@tensorflow/tfjs';
import { ConfigError, Module, registry, type FlopCount, type InitContext, type JsonObject, type RunContext } from '@leanpass/core';
import { matMulRaw, reshapeNoSave, splitRows, transposeLast2 } from './ops/dense.js';
import { Linear } from './linear.js';
import { boolOr, customOp, positiveInt } from './util.js';

/** Additive value used for masked-out scores (finite, so a fully masked row gives uniform weights, not NaN). */
export const MASKED = -1e9;

export type AttentionStrategy = 'auto' | 'loop' | 'batched';

export interface SdpaOptions {
  /** Additive float mask (0 keep, large negative drop) broadcastable to [B, H, N, T]; a constant (no gradient). */
  mask?: tf.Tensor | null;
  /** Score scale; default 1/√d. */
  scale?: number;
  /**
   * How the B·kvHeads small products run. 'loop' (the 'auto' choice on wasm): one flag-free 2-D matMul
   * per (sample, kv head), pieces cut with `splitRows`; tfjs-wasm's batched matMul runs at ~4 GFLOP/s
   * against ~15+ for these small 2-D products. 'batched' (the 'auto' choice elsewhere): rank-3 matMuls
   * with explicit transposes.
   */
  strategy?: AttentionStrategy;
}

/**
 * softmax(q·kᵀ·scale + mask)·v for q [B, H, N, d], k and v [B, Hk, T, d] with H a multiple of Hk
 * (grouped-query attention: query head h reads kv head ⌊h / (H/Hk)⌋; Hk = H is multi-head attention).
 * Returns [B, H, N, d]. One customGrad: saves the scaled q, k, v and the probabilities P, and computes
 *   dV = Pᵀ·dO, dP = dO·Vᵀ, dS = P ⊙ (dP − rowsum(dP ⊙ P)), dQ = dS·K·scale, dK = dSᵀ·(q·scale)
 * with flag-free matMuls only. The heads of one group are stacked as rows ([g·N, d] per (sample, kv
 * head)), so GQA needs no repeat of K/V and its K/V gradients are summed over the group by the product.
 */
export function scaledDotProductAttention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, opts: SdpaOptions = {}): tf.Tensor4D {
  if (q.rank !== 4 || k.rank !== 4 || v.rank !== 4) {
    throw new ConfigError(`attention: expected q [B, H, N, d] and k, v [B, Hk, T, d], found q [${q.shape.join(', ')}], k [${k.shape.join(', ')}], v [${v.shape.join(', ')}]`);
  }
  const [B, H, N, d] = q.shape as [number, number, number, number];
  const [Bk, Hk, T, dk] = k.shape as [number, number, number, number];
  if (Bk !== B || dk !== d || v.shape.join() !== k.shape.join() || H % Hk !== 0) {
    throw new ConfigError(`attention: expected k and v [${B}, Hk, T, ${d}] with ${H} divisible by Hk, found q [${q.shape.join(', ')}], k [${k.shape.join(', ')}], v [${v.shape.join(', ')}]`);
  }
  const scale = opts.scale ?? 1 / Math.sqrt(d);
  const mask = opts.mask ?? null;
  const strategy = opts.strategy === undefined || opts.strategy === 'auto' ? (tf.getBackend() === 'wasm' ? 'loop' : 'batched') : opts.strategy;
  const g = H / Hk;
  const G = B * Hk;
  const R = g * N;

  const softmaxMasked = (s: tf.Tensor): tf.Tensor => {
    if (!mask) return tf.softmax(s);
    return tf.reshape(tf.softmax(tf.add(tf.reshape(s, [B, H, N, T]), mask)), s.shape);
  };

  const mm = matMulRaw;
  const op = customOp((inputs, save) => {
    const [qi, ki, vi] = inputs as [tf.Tensor, tf.Tensor, tf.Tensor];
    const qsc = tf.mul(qi, scale);
    let o: tf.Tensor;
    let p: tf.Tensor;
    if (strategy === 'loop') {
      const qs = splitRows(tf.reshape(qsc, [G * R, d]), G);
      const kts = splitRows(tf.reshape(transposeLast2(ki), [G * d, T]), G);
      p = softmaxMasked(tf.concat(qs.map((x, i) => mm(x, kts[i] as tf.Tensor)), 0));
      const ps = splitRows(p, G);
      const vs = splitRows(tf.reshape(vi, [G * T, d]), G);
      o = tf.concat(ps.map((x, i) => mm(x, vs[i] as tf.Tensor)), 0);
    } else {
      const s = tf.matMul(tf.reshape(qsc, [G, R, d]), transposeLast2(tf.reshape(ki, [G, T, d])));
      p = softmaxMasked(s);
      o = tf.matMul(p, tf.reshape(vi, [G, T, d]));
    }
    save([qsc, ki, vi, p]);
    return {
      value: tf.reshape(o, [B, H, N, d]),
      gradFunc: (dy, saved) => {
        const [sq, sk, sv, sp] = saved as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
        let dq: tf.Tensor;
        let dkk: tf.Tensor;
        let dv: tf.Tensor;
        if (strategy === 'loop') {
          const dos = splitRows(tf.reshape(dy, [G * R, d]), G);
          const vts = splitRows(tf.reshape(transposeLast2(sv), [G * d, T]), G);
          const dp = tf.concat(dos.map((x, i) => mm(x, vts[i] as tf.Tensor)), 0);
          const pts = splitRows(tf.reshape(transposeLast2(tf.reshape(sp, [G, R, T])), [G * T, R]), G);
          dv = tf.concat(pts.map((x, i) => mm(x, dos[i] as tf.Tensor)), 0);
          const ds = tf.mul(sp, tf.sub(dp, tf.sum(tf.mul(dp, sp), -1, true)));
          const dss = splitRows(ds, G);
          const ks = splitRows(tf.reshape(sk, [G * T, d]), G);
          dq = tf.mul(tf.concat(dss.map((x, i) => mm(x, ks[i] as tf.Tensor)), 0), scale);
          const dsts = splitRows(tf.reshape(transposeLast2(tf.reshape(ds, [G, R, T])), [G * T, R]), G);
          const qs = splitRows(tf.reshape(sq, [G * R, d]), G);
          dkk = tf.concat(dsts.map((x, i) => mm(x, qs[i] as tf.Tensor)), 0);
        } else {
          const dy3 = tf.reshape(dy, [G, R, d]);
          const v3 = tf.reshape(sv, [G, T, d]);
          const p3 = tf.reshape(sp, [G, R, T]);
          const dp = tf.matMul(dy3, transposeLast2(v3));
          dv = tf.matMul(transposeLast2(p3), dy3);
          const ds = tf.mul(p3, tf.sub(dp, tf.sum(tf.mul(dp, p3), -1, true)));
          dq = tf.mul(tf.matMul(ds, tf.reshape(sk, [G, T, d])), scale);
          dkk = tf.matMul(transposeLast2(ds), tf.reshape(sq, [G, R, d]));
        }
        return [tf.reshape(dq, q.shape), tf.reshape(dkk, k.shape), tf.reshape(dv, v.shape)];
      },
    };
  });
  return op(q, k, v) as tf.Tensor4D;
}

/** Positions for RoPE: one row [N] shared by the batch, or one row per sample [B, N]. */
export type Positions = tf.Tensor | number[] | number[][];

/**
 * Rotary position embedding, rotate-half convention (LLaMA / Hugging Face): for x [B, N, heads, d],
 *   y = x·cos θ + rotate_half(x)·sin θ,  rotate_half([x₁, x₂]) = [−x₂, x₁],
 *   θ[n, i] = θ[n, i + d/2] = pos[n]·base^(−2i/d), i < d/2.
 * Angles are computed in Float64 in JS. rotate_half is a product with a signed permutation matrix
 * (exact). A customGrad: dx = dy·cos + (dy·sin)·Rᵀ; saves only the [B|1, N, 1, d] cos and sin.
 */
export function applyRope(x: tf.Tensor, positions: Positions, base: number): tf.Tensor {
  if (x.rank !== 4) throw new ConfigError(`rope: expected x [B, N, heads, d], found [${x.shape.join(', ')}]`);
  const [B, N, , d] = x.shape as [number, number, number, number];
  if (d % 2 !== 0) throw new ConfigError(`rope: expected an even head dimension, found ${d}`);
  const rows = positionRows(positions, B, N);
  const half = d / 2;
  const cos = new Float32Array(rows.length * N * d);
  const sin = new Float32Array(rows.length * N * d);
  rows.forEach((row, b) => {
    for (let n = 0; n < N; n++) {
      for (let i = 0; i < half; i++) {
        const a = (row[n] as number) * Math.pow(base, (-2 * i) / d);
        const o = (b * N + n) * d;
        cos[o + i] = cos[o + i + half] = Math.cos(a);
        sin[o + i] = sin[o + i + half] = Math.sin(a);
      }
    }
  });
  const rot = new Float32Array(d * d); // x·R = rotate_half(x): column j < d/2 takes −x[j + d/2], column j ≥ d/2 takes x[j − d/2]
  for (let j = 0; j < half; j++) {
    rot[(j + half) * d + j] = -1;
    rot[j * d + j + half] = 1;
  }
  const cosT = tf.tensor4d(cos, [rows.length, N, 1, d]);
  const sinT = tf.tensor4d(sin, [rows.length, N, 1, d]);
  const op = customOp(([xi], save) => {
    if (!xi) throw new ConfigError('rope: missing input');
    const R = tf.tensor2d(rot, [d, d]);
    const xr = tf.reshape(tf.matMul(tf.reshape(xi, [-1, d]), R), xi.shape);
    save([cosT, sinT]);
    return {
      value: tf.add(tf.mul(xi, cosT), tf.mul(xr, sinT)),
      gradFunc: (dy, saved) => {
        const [c, s] = saved as [tf.Tensor, tf.Tensor];
        const Rt = transposeLast2(tf.tensor2d(rot, [d, d])) as tf.Tensor2D;
        const ds = tf.reshape(tf.matMul(tf.reshape(tf.mul(dy, s), [-1, d]), Rt), dy.shape);
        return tf.add(tf.mul(dy, c), ds);
      },
    };
  });
  return op(x);
}

function positionRows(positions: Positions, B: number, N: number): number[][] {
  let rows: number[][];
  if (positions instanceof tf.Tensor) {
    if (positions.rank !== 1 && positions.rank !== 2) throw new ConfigError(`rope: expected positions [N] or [B, N], found [${positions.shape.join(', ')}]`);
    const data = Array.from(positions.dataSync());
    rows = positions.rank === 1 ? [data] : Array.from({ length: positions.shape[0] }, (_, b) => data.slice(b * N, (b + 1) * N));
    if (positions.shape[positions.rank - 1] !== N) throw new ConfigError(`rope: expected ${N} positions per row, found [${positions.shape.join(', ')}]`);
  } else if (positions.length > 0 && Array.isArray(positions[0])) {
    rows = positions as number[][];
  } else {
    rows = [positions as number[]];
  }
  if (rows.length !== 1 && rows.length !== B) throw new ConfigError(`rope: expected positions for 1 or ${B} samples, found ${rows.length}`);
  for (const r of rows) {
    if (r.length !== N || r.some((p) => !Number.isFinite(p))) throw new ConfigError(`rope: expected ${N} finite positions per sample, found ${r.length} (${r.slice(0, 4).join(', ')}…)`);
  }
  return rows;
}

export interface AttentionConfig extends JsonObject {
  dim: number;
  heads: number;
  /** Key/value heads (GQA); `heads` for multi-head attention, 1 for multi-query. */
  kvHeads: number;
  headDim: number;
  /** Feature size of the K/V source (cross-attention); `dim` for self-attention. */
  kvDim: number;
  bias: boolean;
  causal: boolean;
  rope: { base: number } | null;
}

export interface AttentionOptions {
  dim: number;
  heads: number;
  kvHeads?: number;
  headDim?: number | null;
  kvDim?: number;
  bias?: boolean;
  causal?: boolean;
  rope?: { base: number } | null;
}

/** Projected keys and values, [B, kvHeads, T, headDim], RoPE already applied to k. */
export interface KV {
  k: tf.Tensor;
  v: tf.Tensor;
}

/** What Attention's forward takes besides a plain [B, N, dim] tensor. */
export interface AttentionInput {
  /** Queries' source [B, N, dim] (or [N, dim] for one sample). */
  x: tf.Tensor;
  /** K/V source [B, M, kvDim] (cross-attention); default x. */
  kv?: tf.Tensor;
  /** Cached, already projected K/V [B, kvHeads, P, headDim], placed before the new ones. */
  past?: KV;
  /**
   * Bool (true = attend, PyTorch SDPA's convention) or additive float mask over [N, T] keys
   * (T = P + M): rank 2 [N, T], rank 3 [B, N, T], or rank 4 [B|1, heads|1, N, T]. A constant.
   */
  mask?: tf.Tensor;
  /** RoPE positions of the queries, [N] or [B, N]; default P, P+1, … (after the cached keys). */
  positions?: Positions;
  /** RoPE positions of the new keys; default `positions` for self-attention, 0…M−1 for cross. */
  kvPositions?: Positions;
}

/**
 * The head geometry of an attention config (`what` names the kind in errors): dim, heads, kvHeads
 * (default heads; heads must be a multiple of it) and headDim (default dim / heads, which must divide).
 */
export function headGeometry(what: string, cfg: JsonObject): { dim: number; heads: number; kvHeads: number; headDim: number } {
  const dim = positiveInt(what, cfg, 'dim');
  const heads = positiveInt(what, cfg, 'heads');
  const kvHeads = cfg['kvHeads'] === undefined ? heads : positiveInt(what, cfg, 'kvHeads');
  let headDim: number;
  if (cfg['headDim'] === undefined || cfg['headDim'] === null) {
    if (dim % heads !== 0) throw new ConfigError(`${what}: dim ${dim} is not divisible by heads ${heads}; set headDim`);
    headDim = dim / heads;
  } else headDim = positiveInt(what, cfg, 'headDim');
  if (heads % kvHeads !== 0) throw new ConfigError(`${what}: heads ${heads} must be a multiple of kvHeads ${kvHeads}`);
  return { dim, heads, kvHeads, headDim };
}

function range(start: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => start + i);
}

/**
 * Multi-head attention (kind 'attention') with children Linear 'q', 'k', 'v', 'o'. Bidirectional or
 * causal, an optional bool/additive mask, RoPE with explicit positions, grouped-query heads, cross-
 * attention (a separate K/V source) and cached K/V. All products are flag-free 2-D matMuls and all
 * transposes rank ≤ 4. Causal masking is by index: query i (of N) sees key j (of T) iff j ≤ i + T − N,
 * so cached keys (T > N) stay visible.
 */
export class Attention extends Module<tf.Tensor | AttentionInput, tf.Tensor, AttentionConfig> {
  readonly kind = 'attention';

  constructor(options: AttentionOptions, init: InitContext) {
    const cfg = { ...options } as JsonObject;
    const { dim, heads, kvHeads, headDim } = headGeometry('attention', cfg);
    const kvDim = cfg['kvDim'] === undefined ? dim : positiveInt('attention', cfg, 'kvDim');
    const bias = boolOr('attention', cfg, 'bias', true);
    const causal = boolOr('attention', cfg, 'causal', false);
    const ropeCfg = cfg['rope'];
    let rope: { base: number } | null = null;
    if (ropeCfg !== undefined && ropeCfg !== null) {
      const base = typeof ropeCfg === 'object' && !Array.isArray(ropeCfg) ? ropeCfg['base'] : undefined;
      if (typeof base !== 'number' || !(base > 1)) throw new ConfigError(`attention: expected config.rope to be null or {base: number > 1}, found ${JSON.stringify(ropeCfg)}`);
      if (headDim % 2 !== 0) throw new ConfigError(`attention: RoPE needs an even headDim, found ${headDim}`);
      rope = { base };
    }
    super({ dim, heads, kvHeads, headDim, kvDim, bias, causal, rope });
    this.addChild('q', new Linear({ inFeatures: dim, outFeatures: heads * headDim, bias }, init));
    this.addChild('k', new Linear({ inFeatures: kvDim, outFeatures: kvHeads * headDim, bias }, init));
    this.addChild('v', new Linear({ inFeatures: kvDim, outFeatures: kvHeads * headDim, bias }, init));
    this.addChild('o', new Linear({ inFeatures: heads * headDim, outFeatures: dim, bias }, init));
  }

  /** Queries [B, heads, N, headDim] from x [B, N, dim], RoPE applied. */
  projectQ(x: tf.Tensor, ctx: RunContext, positions?: Positions): tf.Tensor {
    const { heads, headDim, dim } = this.config;
    const x3 = this.batched(x, dim, 'x');
    const [B, N] = x3.shape;
    let q = reshapeNoSave(this.child('q').call(x3, ctx) as tf.Tensor, [B, N, heads, headDim]);
    if (this.config.rope) q = applyRope(q, positions ?? range(0, N), this.config.rope.base);
    return tf.transpose(q, [0, 2, 1, 3]);
  }

  /** Keys and values [B, kvHeads, M, headDim] from a source [B, M, kvDim], RoPE applied to the keys. */
  projectKV(src: tf.Tensor, ctx: RunContext, positions?: Positions): KV {
    const { kvHeads, headDim, kvDim } = this.config;
    const s3 = this.batched(src, kvDim, 'kv');
    const [B, M] = s3.shape;
    let k = reshapeNoSave(this.child('k').call(s3, ctx) as tf.Tensor, [B, M, kvHeads, headDim]);
    const v = reshapeNoSave(this.child('v').call(s3, ctx) as tf.Tensor, [B, M, kvHeads, headDim]);
    if (this.config.rope) k = applyRope(k, positions ?? range(0, M), this.config.rope.base);
    return { k: tf.transpose(k, [0, 2, 1, 3]), v: tf.transpose(v, [0, 2, 1, 3]) };
  }

  /**
   * softmax(q·kᵀ/√d + mask)·v merged over heads: q [B, heads, N, d], k/v [B, kvHeads, T, d] →
   * [B, N, heads·d] (before 'o'). Applies the causal mask when configured.
   */
  attend(q: tf.Tensor, kv: KV, mask?: tf.Tensor): tf.Tensor {
    const [B, H, N, d] = q.shape as [number, number, number, number];
    const T = kv.k.shape[2] as number;
    // The mask is a constant: built inside a customGrad so that none of its ops is taped (a taped op
    // saves its inputs, a copy each on wasm) and no gradient is ever computed for it.
    const build = (m?: tf.Tensor): tf.Tensor | null => this.additiveMask(m, B, N, T);
    let add: tf.Tensor | null = null;
    if (mask || this.config.causal) {
      const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => ({
        value: build(args.length > 1 ? (args[0] as tf.Tensor) : undefined) as tf.Tensor,
        gradFunc: () => (args.length > 1 ? [tf.zerosLike(args[0] as tf.Tensor)] : []),
      }));
      add = mask ? op(mask) : op();
    }
    const o = scaledDotProductAttention(q, kv.k, kv.v, { mask: add });
    return reshapeNoSave(tf.transpose(o, [0, 2, 1, 3]), [B, N, H * d]);
  }

  forward(input: tf.Tensor | AttentionInput, ctx: RunContext): tf.Tensor {
    const inp: AttentionInput = input instanceof tf.Tensor ? { x: input } : input;
    const x = inp.x;
    const past = inp.past;
    const P = past ? (past.k.shape[2] as number) : 0;
    const N = x.shape[x.rank - 2] as number;
    const q = this.projectQ(x, ctx, inp.positions ?? range(P, N));
    let kvPos = inp.kvPositions;
    if (kvPos === undefined && inp.kv === undefined) kvPos = inp.positions ?? range(P, N);
    let kv = this.projectKV(inp.kv ?? x, ctx, kvPos);
    if (past) {
      if (past.k.rank !== 4 || past.k.shape[1] !== this.config.kvHeads || past.k.shape[3] !== this.config.headDim || past.v.shape.join() !== past.k.shape.join()) {
        throw new ConfigError(`attention: expected past k and v [B, ${this.config.kvHeads}, P, ${this.config.headDim}], found k [${past.k.shape.join(', ')}], v [${past.v.shape.join(', ')}]`);
      }
      kv = { k: tf.concat([past.k, kv.k], 2), v: tf.concat([past.v, kv.v], 2) };
    }
    const merged = this.attend(q, kv, inp.mask);
    const out = this.child('o').call(merged, ctx) as tf.Tensor;
    return x.rank === 2 ? reshapeNoSave(out, [N, this.config.dim]) : out;
  }

  override flops(input: tf.Tensor | AttentionInput): FlopCount {
    const inp: AttentionInput = input instanceof tf.Tensor ? { x: input } : input;
    const { heads, kvHeads, headDim } = this.config;
    const B = inp.x.rank === 2 ? 1 : (inp.x.shape[0]);
    const N = inp.x.shape[inp.x.rank - 2] as number;
    const src = inp.kv ?? inp.x;
    const M = src.shape[src.rank - 2] as number;
    const T = M + (inp.past ? (inp.past.k.shape[2] as number) : 0);
    const scores = B * heads * N * T;
    // QKᵀ and PV: 2 FLOPs per MAC each; backward: dP, dV, dQ, dK. Softmax ~5 forward, ~4 backward.
    let forward = 4 * scores * headDim + 5 * scores + B * heads * N * headDim;
    let backward = 8 * scores * headDim + 4 * scores + B * heads * N * headDim;
    if (this.config.rope) {
      const elems = B * (heads * N + kvHeads * M) * headDim;
      forward += elems * (2 * headDim + 3);
      backward += elems * (2 * headDim + 3);
    }
    return { forward, backward };
  }

  private batched(x: tf.Tensor, features: number, what: string): tf.Tensor3D {
    if ((x.rank !== 2 && x.rank !== 3) || x.shape[x.rank - 1] !== features) {
      throw new ConfigError(`attention: expected ${what} [B, N, ${features}] or [N, ${features}], found [${x.shape.join(', ')}]`);
    }
    return (x.rank === 2 ? reshapeNoSave(x, [1, ...x.shape]) : x) as tf.Tensor3D;
  }

  /** The combined additive mask [B|1, H|1, N, T] (user mask + causal), or null when there is none. */
  private additiveMask(mask: tf.Tensor | undefined, B: number, N: number, T: number): tf.Tensor | null {
    const H = this.config.heads;
    let add: tf.Tensor | null = null;
    if (mask) {
      const shape = mask.shape;
      const last2 = shape.slice(-2);
      const okLead = mask.rank < 3 || ((shape[0] === 1 || shape[0] === B) && (mask.rank === 3 || shape[1] === 1 || shape[1] === H));
      if (mask.rank < 2 || mask.rank > 4 || last2[0] !== N || last2[1] !== T || !okLead) {
        throw new ConfigError(`attention: expected a mask [${N}, ${T}], [B, ${N}, ${T}] or [B|1, ${H}|1, ${N}, ${T}] (B = ${B}), found [${shape.join(', ')}]`);
      }
      let m4: tf.Tensor;
      if (mask.rank === 2) m4 = tf.reshape(mask, [1, 1, N, T]);
      else if (mask.rank === 3) m4 = tf.reshape(mask, [shape[0], 1, N, T]);
      else m4 = mask;
      add = mask.dtype === 'bool' ? tf.mul(tf.sub(1, tf.cast(m4, 'float32')), MASKED) : tf.cast(m4, 'float32');
    }
    if (this.config.causal) {
      const c = new Float32Array(N * T);
      const off = T - N;
      for (let i = 0; i < N; i++) for (let j = i + off + 1; j < T; j++) c[i * T + j] = MASKED;
      const ct = tf.tensor4d(c, [1, 1, N, T]);
      add = add ? tf.add(add, ct) : ct;
    }
    return add;
  }
}

registry.register('attention', (cfg, init) => new Attention(cfg as unknown as AttentionOptions, init));
