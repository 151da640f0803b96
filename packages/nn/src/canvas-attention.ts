import * as tf from '@tensorflow/tfjs';
import { ConfigError, Module, registry, type FlopCount, type InitContext, type JsonObject, type RunContext } from '@leanpass/core';
import { applyRope, headGeometry, scaledDotProductAttention, type KV } from './attention.js';
import { getKVStore, setKVStore, type CanvasAttentionInput } from './canvas.js';
import { Linear } from './linear.js';
import { reshapeNoSave } from './ops/dense.js';
import { positiveOr } from './util.js';

export interface CanvasAttentionConfig extends JsonObject {
  dim: number;
  heads: number;
  /** Key/value heads (GQA); a divisor of `heads`. */
  kvHeads: number;
  headDim: number;
  /** RoPE base θ (rotate-half convention). */
  ropeBase: number;
}

export interface CanvasAttentionOptions {
  dim: number;
  heads: number;
  kvHeads?: number;
  headDim?: number;
  ropeBase?: number;
}

/** One K/V row of the store to overwrite: sequence `batch`, canvas position `position`. */
export interface CanvasRow {
  batch: number;
  position: number;
}

/**
 * Bidirectional attention over a diffusion LM's canvas (kind 'canvas-attention'), the reference
 * implementation of the contract in canvas.ts. Children: Linear 'q', 'k', 'v', 'o' without bias, with
 * the names and shapes of nn's Attention (q [dim, heads·d], k and v [dim, kvHeads·d], o [heads·d, dim]);
 * rotate-half RoPE at the canvas positions given by the input.
 *
 * forward(input): Q and K/V of the N window rows (RoPE at their canvas positions), K/V written into the
 * generation's store when `input.store` is set (the first write must cover the whole canvas), then every
 * window row attends to all L keys under `keyMask` and the result goes through 'o': [B, N, dim].
 * Without a store the window must be the whole canvas (training and single forwards): then this is nn's
 * Attention with `causal: false`, with the same customGrad attention and RoPE (wasm-friendly gradients).
 *
 * The steps are public so that a module replacing this one (DARE) reproduces them bit for bit:
 * `projectQRows`, `projectKVRows`, `projectKVGathered`, `writeRows`, `writeRowSubset`, `attendAll`.
 */
export class CanvasAttention extends Module<CanvasAttentionInput, tf.Tensor, CanvasAttentionConfig> {
  readonly kind = 'canvas-attention';

  constructor(options: CanvasAttentionOptions, init: InitContext) {
    const cfg = { ...options } as JsonObject;
    const { dim, heads, kvHeads, headDim } = headGeometry('canvas-attention', cfg);
    if (headDim % 2 !== 0) throw new ConfigError(`canvas-attention: RoPE needs an even headDim, found ${headDim}`);
    const ropeBase = positiveOr('canvas-attention', cfg, 'ropeBase', 10000);
    if (!(ropeBase > 1)) throw new ConfigError(`canvas-attention: expected config.ropeBase > 1, found ${ropeBase}`);
    super({ dim, heads, kvHeads, headDim, ropeBase });
    this.addChild('q', new Linear({ inFeatures: dim, outFeatures: heads * headDim, bias: false }, init));
    this.addChild('k', new Linear({ inFeatures: dim, outFeatures: kvHeads * headDim, bias: false }, init));
    this.addChild('v', new Linear({ inFeatures: dim, outFeatures: kvHeads * headDim, bias: false }, init));
    this.addChild('o', new Linear({ inFeatures: heads * headDim, outFeatures: dim, bias: false }, init));
  }

  /** Queries [B, heads, N, headDim] of the window rows x [B, N, dim], RoPE at `positions[b][window]`. */
  projectQRows(x: tf.Tensor, positions: number[][], window: { start: number; end: number }, ctx: RunContext): tf.Tensor {
    const { heads, headDim } = this.config;
    const [B, N] = this.checkRows(x, window, positions);
    const q = reshapeNoSave(this.child('q').call(x, ctx) as tf.Tensor, [B, N, heads, headDim]);
    return tf.transpose(applyRope(q, windowPositions(positions, window), this.config.ropeBase), [0, 2, 1, 3]);
  }

  /** Keys (RoPE applied) and values [B, kvHeads, N, headDim] of the window rows x [B, N, dim]. */
  projectKVRows(x: tf.Tensor, positions: number[][], window: { start: number; end: number }, ctx: RunContext): KV {
    const { kvHeads, headDim } = this.config;
    const [B, N] = this.checkRows(x, window, positions);
    const k = reshapeNoSave(this.child('k').call(x, ctx) as tf.Tensor, [B, N, kvHeads, headDim]);
    const v = reshapeNoSave(this.child('v').call(x, ctx) as tf.Tensor, [B, N, kvHeads, headDim]);
    const kr = applyRope(k, windowPositions(positions, window), this.config.ropeBase);
    return { k: tf.transpose(kr, [0, 2, 1, 3]), v: tf.transpose(v, [0, 2, 1, 3]) };
  }

  /**
   * Keys and values of M gathered rows x [M, dim] (any sequences), each at its own canvas position:
   * k, v [M, kvHeads, headDim]. Row for row bit-identical to `projectKVRows` on the same inputs (matMul
   * rows and RoPE are row-independent), ready for `writeRowSubset`.
   */
  projectKVGathered(x: tf.Tensor, positions: number[], ctx: RunContext): KV {
    const { dim, kvHeads, headDim } = this.config;
    if (x.rank !== 2 || x.shape[1] !== dim) throw new ConfigError(`canvas-attention: expected gathered rows [M, ${dim}], found [${x.shape.join(', ')}]`);
    const M = x.shape[0];
    if (positions.length !== M) throw new ConfigError(`canvas-attention: expected ${M} positions for ${M} gathered rows, found ${positions.length}`);
    const k = reshapeNoSave(this.child('k').call(x, ctx) as tf.Tensor, [1, M, kvHeads, headDim]);
    const v = this.child('v').call(x, ctx) as tf.Tensor;
    const kr = applyRope(k, [positions], this.config.ropeBase);
    return { k: reshapeNoSave(kr, [M, kvHeads, headDim]), v: reshapeNoSave(v, [M, kvHeads, headDim]) };
  }

  /**
   * Writes K/V rows [B, kvHeads, N, headDim] into the store under `storeKey` at canvas positions
   * [start, start + N) and returns the whole updated store. The first write (no store yet) must start at
   * 0 and cover the canvas (`length` rows when given).
   */
  writeRows(ctx: RunContext, storeKey: string, start: number, kv: KV, length?: number): KV {
    this.checkKV(kv.k, kv.v, 4, 'rows');
    const [B, , N] = kv.k.shape as [number, number, number, number];
    const prev = getKVStore(ctx, storeKey);
    if (!prev) {
      if (start !== 0 || (length !== undefined && N !== length)) {
        throw new ConfigError(`canvas-attention: the first write to the K/V store '${storeKey}' must cover the whole canvas [0, ${length ?? '?'}), found rows [${start}, ${start + N})`);
      }
      setKVStore(ctx, storeKey, kv);
      return kv;
    }
    const [Bs, , L] = prev.k.shape as [number, number, number, number];
    if (Bs !== B || (length !== undefined && L !== length)) {
      throw new ConfigError(`canvas-attention: the K/V store '${storeKey}' holds [${prev.k.shape.join(', ')}], the write has ${B} sequences of canvas length ${length ?? L}`);
    }
    if (!Number.isInteger(start) || start < 0 || start + N > L) throw new ConfigError(`canvas-attention: expected rows inside [0, ${L}), found [${start}, ${start + N})`);
    if (start === 0 && N === L) {
      setKVStore(ctx, storeKey, kv);
      return kv;
    }
    const splice = (old: tf.Tensor, rows: tf.Tensor): tf.Tensor => {
      const parts: tf.Tensor[] = [];
      if (start > 0) parts.push(tf.slice(old, [0, 0, 0, 0], [-1, -1, start, -1]));
      parts.push(rows);
      if (start + N < L) parts.push(tf.slice(old, [0, 0, start + N, 0], [-1, -1, L - start - N, -1]));
      return tf.concat(parts, 2);
    };
    const next = { k: splice(prev.k, kv.k), v: splice(prev.v, kv.v) };
    setKVStore(ctx, storeKey, next);
    return next;
  }

  /**
   * Overwrites single rows of an existing store: `rows[i]` takes k[i], v[i] ([M, kvHeads, headDim], e.g.
   * from `projectKVGathered`). One `tensorScatterUpdate` per tensor (no gather). Returns the updated store.
   */
  writeRowSubset(ctx: RunContext, storeKey: string, rows: readonly CanvasRow[], kv: KV): KV {
    const prev = getKVStore(ctx, storeKey);
    if (!prev) throw new ConfigError(`canvas-attention: no K/V store '${storeKey}' yet; the first write must cover the whole canvas (writeRows)`);
    this.checkKV(kv.k, kv.v, 3, 'gathered rows');
    const M = kv.k.shape[0];
    if (M !== rows.length) throw new ConfigError(`canvas-attention: expected ${M} row indices for ${M} K/V rows, found ${rows.length}`);
    if (M === 0) return prev;
    const [B, , L] = prev.k.shape as [number, number, number, number];
    const idx = new Int32Array(2 * M);
    rows.forEach((r, i) => {
      if (!Number.isInteger(r.batch) || r.batch < 0 || r.batch >= B || !Number.isInteger(r.position) || r.position < 0 || r.position >= L) {
        throw new ConfigError(`canvas-attention: expected rows with batch in [0, ${B}) and position in [0, ${L}), found {batch: ${r.batch}, position: ${r.position}} at ${i}`);
      }
      idx[2 * i] = r.batch;
      idx[2 * i + 1] = r.position;
    });
    const indices = tf.tensor2d(idx, [M, 2], 'int32');
    const scatter = (old: tf.Tensor, upd: tf.Tensor): tf.Tensor => tf.transpose(tf.tensorScatterUpdate(tf.transpose(old, [0, 2, 1, 3]), indices, upd), [0, 2, 1, 3]);
    const next = { k: scatter(prev.k, kv.k), v: scatter(prev.v, kv.v) };
    indices.dispose();
    setKVStore(ctx, storeKey, next);
    return next;
  }

  /**
   * softmax(q·kᵀ/√d + keyMask)·v merged over heads: q [B, heads, N, d], k/v [B, kvHeads, L, d], keyMask
   * [B, 1, 1, L] additive or null → [B, N, heads·d] (before 'o'). The mask is a constant.
   */
  attendAll(q: tf.Tensor, kv: KV, keyMask: tf.Tensor | null): tf.Tensor {
    const { heads, headDim } = this.config;
    if (q.rank !== 4 || q.shape[1] !== heads || q.shape[3] !== headDim) {
      throw new ConfigError(`canvas-attention: expected q [B, ${heads}, N, ${headDim}], found [${q.shape.join(', ')}]`);
    }
    const [B, H, N, d] = q.shape as [number, number, number, number];
    this.checkKV(kv.k, kv.v, 4, 'keys');
    const L = kv.k.shape[2] as number;
    if (kv.k.shape[0] !== B) throw new ConfigError(`canvas-attention: expected K/V for ${B} sequences, found [${kv.k.shape.join(', ')}]`);
    if (keyMask && (keyMask.rank !== 4 || keyMask.shape[0] !== B || keyMask.shape[1] !== 1 || keyMask.shape[2] !== 1 || keyMask.shape[3] !== L)) {
      throw new ConfigError(`canvas-attention: expected keyMask [${B}, 1, 1, ${L}], found [${keyMask.shape.join(', ')}]`);
    }
    const o = scaledDotProductAttention(q, kv.k, kv.v, { mask: keyMask });
    return reshapeNoSave(tf.transpose(o, [0, 2, 1, 3]), [B, N, H * d]);
  }

  forward(input: CanvasAttentionInput, ctx: RunContext): tf.Tensor {
    const { x, window, length: L, positions, keyMask, store } = input;
    if (!Number.isInteger(L) || L < 1) throw new ConfigError(`canvas-attention: expected a positive integer canvas length, found ${L}`);
    if (!Number.isInteger(window.start) || !Number.isInteger(window.end) || window.start < 0 || window.end > L || window.start >= window.end) {
      throw new ConfigError(`canvas-attention: expected a window [start, end) with 0 <= start < end <= ${L}, found [${window.start}, ${window.end})`);
    }
    const B = x.shape[0];
    if (positions.length !== B || positions.some((r) => r.length !== L)) {
      throw new ConfigError(`canvas-attention: expected positions [${B}][${L}], found [${positions.length}][${positions.map((r) => r.length).join(', ')}]`);
    }
    if (store === undefined && (window.start !== 0 || window.end !== L)) {
      throw new ConfigError(`canvas-attention: without a K/V store the window must be the whole canvas [0, ${L}), found [${window.start}, ${window.end})`);
    }
    const q = this.projectQRows(x, positions, window, ctx);
    const fresh = this.projectKVRows(x, positions, window, ctx);
    const kv = store === undefined ? fresh : this.writeRows(ctx, store, window.start, fresh, L);
    const merged = this.attendAll(q, kv, keyMask);
    return this.child('o').call(merged, ctx) as tf.Tensor;
  }

  override flops(input: CanvasAttentionInput): FlopCount {
    const { heads, kvHeads, headDim } = this.config;
    const B = input.x.shape[0];
    const N = input.window.end - input.window.start;
    const T = input.length;
    const scores = B * heads * N * T;
    const rope = B * (heads + kvHeads) * N * headDim * (2 * headDim + 3);
    return {
      forward: 4 * scores * headDim + 5 * scores + B * heads * N * headDim + rope,
      backward: 8 * scores * headDim + 4 * scores + B * heads * N * headDim + rope,
    };
  }

  private checkRows(x: tf.Tensor, window: { start: number; end: number }, positions: number[][]): [number, number] {
    const { dim } = this.config;
    const N = window.end - window.start;
    if (x.rank !== 3 || x.shape[2] !== dim || x.shape[1] !== N) {
      throw new ConfigError(`canvas-attention: expected x [B, ${N}, ${dim}] for the window [${window.start}, ${window.end}), found [${x.shape.join(', ')}]`);
    }
    const B = x.shape[0];
    if (positions.length !== B || positions.some((r) => r.length < window.end)) {
      throw new ConfigError(`canvas-attention: expected positions for ${B} sequences covering [0, ${window.end}), found ${positions.length} rows of lengths ${positions.map((r) => r.length).join(', ')}`);
    }
    return [B, N];
  }

  private checkKV(k: tf.Tensor, v: tf.Tensor, rank: 3 | 4, what: string): void {
    const { kvHeads, headDim } = this.config;
    const ok = k.rank === rank && k.shape[1] === kvHeads && k.shape[rank - 1] === headDim && v.shape.join() === k.shape.join();
    if (!ok) {
      const want = rank === 4 ? `[B, ${kvHeads}, N, ${headDim}]` : `[M, ${kvHeads}, ${headDim}]`;
      throw new ConfigError(`canvas-attention: expected ${what} k and v ${want}, found k [${k.shape.join(', ')}], v [${v.shape.join(', ')}]`);
    }
  }
}

function windowPositions(positions: number[][], window: { start: number; end: number }): number[][] {
  return positions.map((r) => r.slice(window.start, window.end));
}

registry.register('canvas-attention', (cfg, init) => new CanvasAttention(cfg as unknown as CanvasAttentionOptions, init));
