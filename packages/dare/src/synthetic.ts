/**
 * Layer-time measurement on a synthetic transformer layer (dare.md §5–6): RMSNorm → canvas attention →
 * residual → RMSNorm → SwiGLU → residual at D = 256, T = 256 with seeded random weights, dense vs DARE at a
 * fixed reuse fraction, baseline and variant interleaved (core's compareTimings), medians of many pairs.
 */
import * as tf from '@tensorflow/tfjs';
import { Rng, compareTimings, createRunContext, type RunContext } from '@leanpass/core';
import { CanvasAttention, RMSNorm, SwiGLU, type CanvasAttentionInput, type CanvasStep } from '@leanpass/nn';
import { DareAttention } from './module.js';
import type { DareMode } from './options.js';

export interface SyntheticLayerOptions {
  dim?: number;
  length?: number;
  batch?: number;
  heads?: number;
  kvHeads?: number;
  /** SwiGLU hidden features (default ≈ 8/3·D rounded to 8). */
  hidden?: number;
  /** Fraction of the active rows reused per step (budget decision). */
  reuse?: number;
  seed?: number;
  /** Timed baseline/variant pairs (median over them). */
  pairs?: number;
  warmup?: number;
}

export interface LayerTiming {
  mode: DareMode;
  /** Median over the interleaved pairs of (variant time / dense time) of the whole layer. */
  ratio: number;
  /** Variant median / dense median (core's compareTimings ratio). */
  ratioOfMedians: number;
  denseMs: number;
  dareMs: number;
  /** Analytic MACs ratio of the layer (variant / dense) at this reuse. */
  analyticRatio: number;
  /** Rows reused per step in the timed steps (measured), over the active rows. */
  reuseMeasured: number;
}

/** MACs per token of one layer: Q, K, V, W_o, attention (QKᵀ and PV over T keys), SwiGLU. */
export function layerMacs(o: { dim: number; heads: number; kvHeads: number; headDim: number; hidden: number; keys: number }): { q: number; kv: number; wo: number; attn: number; mlp: number; total: number } {
  const dq = o.heads * o.headDim;
  const dkv = o.kvHeads * o.headDim;
  const q = o.dim * dq;
  const kv = 2 * o.dim * dkv;
  const wo = dq * o.dim;
  const attn = 2 * o.keys * dq;
  const mlp = 3 * o.dim * o.hidden;
  return { q, kv, wo, attn, mlp, total: q + kv + wo + attn + mlp };
}

/** Analytic layer MACs ratio with a fraction `r` of rows reused (DARE-O post-W_o also skips W_o). */
export function analyticLayerRatio(m: ReturnType<typeof layerMacs>, mode: DareMode, r: number): number {
  let saved = 0;
  if (mode === 'kv' || mode === 'kv+o') saved += r * m.kv;
  if (mode === 'o' || mode === 'kv+o') saved += r * (m.attn + m.wo);
  return (m.total - saved) / m.total;
}

class SyntheticLayer {
  constructor(
    readonly norm1: RMSNorm,
    readonly attn: CanvasAttention | DareAttention,
    readonly norm2: RMSNorm,
    readonly mlp: SwiGLU,
  ) {}
  run(x: tf.Tensor, base: Omit<CanvasAttentionInput, 'x'>, ctx: RunContext): tf.Tensor {
    return tf.tidy(() => {
      const a = this.attn.call({ ...base, x: this.norm1.call(x, ctx) }, ctx);
      const x1 = tf.add(x, a);
      return tf.add(x1, this.mlp.call(this.norm2.call(x1, ctx), ctx));
    });
  }
}

/**
 * Times one transformer layer (plain sampler window: the whole canvas) with DARE in each mode against the
 * same layer dense, in steady state inside a block: every timed step reuses ⌊reuse·T⌋ rows per sequence.
 */
export async function timeSyntheticLayer(modes: readonly DareMode[], opts: SyntheticLayerOptions = {}): Promise<LayerTiming[]> {
  const D = opts.dim ?? 256;
  const L = opts.length ?? 256;
  const B = opts.batch ?? 1;
  const heads = opts.heads ?? 4;
  const kvHeads = opts.kvHeads ?? heads;
  const hidden = opts.hidden ?? Math.round((8 * D) / 3 / 8) * 8;
  const reuse = opts.reuse ?? 0.87;
  const rng = new Rng(opts.seed ?? 0);
  const init = { rng };
  const base = new CanvasAttention({ dim: D, heads, kvHeads }, init);
  const norm1 = new RMSNorm({ dim: D });
  const norm2 = new RMSNorm({ dim: D });
  const mlp = new SwiGLU({ dim: D, hiddenFeatures: hidden }, init);
  const x = tf.tensor3d(rng.normalArray(B * L * D, 1), [B, L, D]);
  const positions = Array.from({ length: B }, () => Array.from({ length: L }, (_, i) => i));
  const ids = new Int32Array(B * L).fill(1);
  const mkStep = (nfe: number): CanvasStep => ({ block: 0, stepInBlock: nfe, nfe, blockStart: nfe === 0, blockRange: { start: 0, end: L }, ids, batch: B, length: L, pad: new Int32Array(B) });
  const input = (nfe: number): Omit<CanvasAttentionInput, 'x'> => ({ window: { start: 0, end: L }, length: L, positions, keyMask: null, store: 'kv.0', layer: 0, step: mkStep(nfe) });
  const out: LayerTiming[] = [];
  const macs = layerMacs({ dim: D, heads, kvHeads, headDim: D / heads, hidden, keys: L });
  try {
    for (const mode of modes) {
      // The synthetic canvas holds no [MASK] tokens (every id is 1): the masked-row refresh does not apply.
      const dare = new DareAttention({ ...base.config, dare: { mode, decision: 'budget', budget: reuse, forceRefresh: { maskedInBlock: false } } }, init, { q: base.child('q'), k: base.child('k'), v: base.child('v'), o: base.child('o') });
      const dense = new SyntheticLayer(norm1, base, norm2, mlp);
      const variant = new SyntheticLayer(norm1, dare, norm2, mlp);
      const cd = createRunContext();
      const cv = createRunContext();
      let nd = 0;
      let nv = 0;
      // The block's first (full) forward fills the caches; the timed steps are later steps of the block.
      dense.run(x, input(nd++), cd).dispose();
      variant.run(x, input(nv++), cv).dispose();
      const t = await compareTimings(
        () => dense.run(x, input(nd++), cd),
        () => variant.run(x, input(nv++), cv),
        { warmup: opts.warmup ?? 3, repeats: opts.pairs ?? 20 },
      );
      const recs = (cv.state.get<Array<{ active: number; kv: { reused: number } | null; o: { reused: number } | null }>>('dare.stats') ?? []).slice(1);
      const act = recs.reduce((a, r) => a + r.active, 0);
      const reusedRows = recs.reduce((a, r) => a + (mode === 'o' ? (r.o?.reused ?? 0) : (r.kv?.reused ?? 0)), 0);
      const pairRatios = t.variant.samples.map((v, i) => v / (t.baseline.samples[i] as number)).sort((a, b) => a - b);
      const mid = pairRatios.length >> 1;
      const pairMedian = pairRatios.length % 2 ? (pairRatios[mid] as number) : ((pairRatios[mid - 1] as number) + (pairRatios[mid] as number)) / 2;
      out.push({ mode, ratio: pairMedian, ratioOfMedians: t.ratio, denseMs: t.baseline.medianMs, dareMs: t.variant.medianMs, analyticRatio: analyticLayerRatio(macs, mode, reuse), reuseMeasured: act ? reusedRows / act : 0 });
      cd.state.dispose();
      cv.state.dispose();
    }
  } finally {
    x.dispose();
    base.dispose();
    mlp.dispose();
    norm1.dispose();
    norm2.dispose();
  }
  return out;
}
