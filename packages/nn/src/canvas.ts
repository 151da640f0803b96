import * as tf from '@tensorflow/tfjs';
import type { RunContext } from '@leanpass/core';

/**
 * Canvas attention: the contract between a masked-diffusion LM host (models' 'dllm'), its sampler and
 * modules that replace a block's attention (DARE's 'dare.attention'). It lives in nn so that passes,
 * which depend on core and nn only, can implement it. The reference implementation is `CanvasAttention`
 * (kind 'canvas-attention', in canvas-attention.ts).
 *
 * Canvas: B sequences of L positions (left-padded prompt, then the generation). The sampler runs one
 * forward per step over an *active window* A = [start, end) of canvas positions — the whole canvas for
 * the plain sampler, block + suffix for the prefix cache, the block alone for the dual cache. Every
 * layer attends from the N = end − start active rows to all L keys.
 *
 * K/V store: per layer, a full-length [B, kvHeads, L, headDim] pair (k after RoPE — positions never
 * shift on a canvas — and v) kept in the generation's `ctx.state` under `CanvasAttentionInput.store`. It
 * holds the *last computed* K/V of every canvas position: each forward computes K/V for its active
 * rows, writes them into the store, and attends over the whole store. With the prefix cache the keys
 * left of the window are therefore those of the block's first (full) forward; with the dual cache the
 * keys right of the block are too (Fast-dLLM's `replace_position` semantics). A module replacing the
 * attention (DARE-KV) may skip computing some active rows and leave their stored K/V in place.
 */

/** What the sampler tells the layers about the current forward. */
export interface CanvasStep {
  /** Index of the current semi-autoregressive block (0-based). */
  block: number;
  /** Forward index within the block; 0 is the block's first forward. */
  stepInBlock: number;
  /** Forward index within the generation (0-based) = number of function evaluations so far. */
  nfe: number;
  /** `stepInBlock === 0`: Fast-dLLM (re)builds its caches here, and DARE forces a refresh. */
  blockStart: boolean;
  /** Canvas positions [start, end) of the current block. */
  blockRange: { start: number; end: number };
  /** The ids this forward sees, the whole canvas, row-major [B·L]. */
  ids: Int32Array;
  /** B. */
  batch: number;
  /** L. */
  length: number;
  /** Left-pad positions of each sequence [B] (its first real token sits at canvas position pad[b]). */
  pad: Int32Array;
}

/** A block's call of its 'attn' child (kind 'canvas-attention' and modules replacing it). */
export interface CanvasAttentionInput {
  /** Normed hidden states of the active rows, [B, N, dim]. */
  x: tf.Tensor;
  /** Active window [start, end) in canvas positions; N = end − start. Training: [0, L). */
  window: { start: number; end: number };
  /** Canvas length L (keys attended: all L positions). */
  length: number;
  /**
   * RoPE positions of all L canvas positions per sequence, [B][L]: they count from the sequence's first
   * real token (pad positions get 0), so a sequence's numbers do not depend on its batch.
   */
  positions: number[][];
  /** Additive key mask [B, 1, 1, L] (0 keep, `MASKED` for pad keys), or null without padding. A constant. */
  keyMask: tf.Tensor | null;
  /**
   * `ctx.state` key of this layer's K/V store (see above). Absent in training and in single forwards
   * outside a sampler: the window must then be the whole canvas and nothing is stored.
   */
  store?: string;
  /** Index of the block in the model (0-based), for per-layer state and statistics. */
  layer: number;
  /** The sampler's step; absent outside a sampler. */
  step?: CanvasStep;
}

/** The stored K/V of one layer, [B, kvHeads, L, headDim] each. */
export interface KVStore {
  k: tf.Tensor;
  v: tf.Tensor;
}

/** `ctx.state` key under which the sampler publishes the current `CanvasStep` (also passed in each input). */
export const CANVAS_STEP_KEY = 'canvas.step';

/** The K/V store under `key` in the generation's state, or undefined before the first write. */
export function getKVStore(ctx: RunContext, key: string): KVStore | undefined {
  return ctx.state.get<KVStore>(key);
}

/**
 * Replaces the K/V store under `key`: keeps the new tensors (they survive the caller's tidy), frees the
 * previous ones (unless they are the same tensors), and on first use registers their disposal with the
 * state store, so `ctx.state.dispose()` at the end of a generation frees every store.
 */
export function setKVStore(ctx: RunContext, key: string, kv: KVStore): void {
  const prev = ctx.state.get<KVStore>(key);
  tf.keep(kv.k);
  tf.keep(kv.v);
  if (prev) {
    if (prev.k !== kv.k) prev.k.dispose();
    if (prev.v !== kv.v) prev.v.dispose();
  } else {
    ctx.state.onDispose(() => {
      const last = ctx.state.get<KVStore>(key);
      last?.k.dispose();
      last?.v.dispose();
    });
  }
  ctx.state.set(key, kv);
}
