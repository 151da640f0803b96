import * as tf from '@tensorflow/tfjs';
import { ConfigError, type Rng, type RunContext } from '@leanpass/core';
import type { DiffusionLM } from './model.js';

/** A supervised batch on the canvas layout: left-padded prompts, then the (EOS-padded) answers. */
export interface DiffusionSftBatch {
  /** Row-major clean ids [batch, length]. */
  ids: Int32Array;
  batch: number;
  length: number;
  /** Canvas column where every answer starts; columns before it (pads and prompt) are never masked. */
  answerStart: number;
  /** Left pads per sequence. */
  pad: Int32Array;
}

/** The noised batch of one objective evaluation. */
export interface DiffusionNoise {
  /** Ids with the masked answer tokens replaced by `[MASK]`, [batch, length]. */
  noisy: Int32Array;
  /** Per-sequence masking probability p = (1 − ε)·t + ε, t ~ U(0, 1). */
  p: Float32Array;
  /** Loss weight per answer position [batch, answerLength]: 1/(p_b · answerLength · batch) where masked, 0 elsewhere. */
  weights: Float32Array;
  /** Number of masked positions. */
  masked: number;
}

/**
 * LLaDA's SFT forward process: per sequence t ~ U(0, 1), p = (1 − ε)t + ε; each answer token is
 * replaced by `[MASK]` independently with probability p; the prompt is never masked. Weights are 1/p,
 * normalised per answer length and batch. Draws, in order, t then the answer's coins for each sequence.
 */
export function noiseBatch(batch: DiffusionSftBatch, maskId: number, rng: Rng, eps = 1e-3): DiffusionNoise {
  const { batch: B, length: L, answerStart: S } = batch;
  if (batch.ids.length !== B * L) throw new ConfigError(`dllm objective: expected ${B}×${L} ids, found ${batch.ids.length}`);
  if (!Number.isInteger(S) || S < 1 || S >= L) throw new ConfigError(`dllm objective: expected answerStart in [1, ${L}), found ${S}`);
  if (!(eps > 0 && eps < 1)) throw new ConfigError(`dllm objective: expected ε in (0, 1), found ${eps}`);
  const A = L - S;
  const noisy = Int32Array.from(batch.ids);
  const p = new Float32Array(B);
  const weights = new Float32Array(B * A);
  let masked = 0;
  for (let b = 0; b < B; b++) {
    const pb = (1 - eps) * rng.next() + eps;
    p[b] = pb;
    for (let i = 0; i < A; i++) {
      if (rng.next() < pb) {
        noisy[b * L + S + i] = maskId;
        weights[b * A + i] = 1 / (pb * A * B);
        masked++;
      }
    }
  }
  return { noisy, p, weights, masked };
}

/**
 * Σ over masked answer positions of w·CE(logits, clean id), w = 1/(p·answerLength·batch): the 1/p-weighted
 * masked cross-entropy (an upper bound of the negative log-likelihood). Logits [batch, answerLength, vocab].
 */
export function weightedMaskedCE(logits: tf.Tensor, batch: DiffusionSftBatch, weights: Float32Array): tf.Scalar {
  const { batch: B, length: L, answerStart: S } = batch;
  const A = L - S;
  const V = logits.shape[2] as number;
  if (logits.rank !== 3 || logits.shape[0] !== B || logits.shape[1] !== A) throw new ConfigError(`dllm objective: expected logits [${B}, ${A}, vocab], found [${logits.shape.join(', ')}]`);
  const coef = new Float32Array(B * A * V);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < A; i++) {
      const w = weights[b * A + i] as number;
      if (w === 0) continue;
      const id = batch.ids[b * L + S + i] as number;
      if (id < 0 || id >= V) throw new ConfigError(`dllm objective: expected target ids in [0, ${V}), found ${id}`);
      coef[(b * A + i) * V + id] = -w;
    }
  }
  return tf.tidy(() => tf.sum(tf.mul(tf.logSoftmax(tf.reshape(logits, [B * A, V])), tf.tensor2d(coef, [B * A, V]))));
}

export interface DiffusionLossOptions {
  /** Draws the masking ratio and the masks (e.g. the trainer's checkpointed RNG). */
  rng: Rng;
  /** Smallest masking probability ε; default 1e-3 (LLaDA). */
  eps?: number;
}

/**
 * The LLaDA SFT loss of a batch: noise it (`noiseBatch`), run the model over the whole canvas, and take
 * the 1/p-weighted CE on the masked answer positions. Differentiable in the model's parameters.
 */
export function diffusionSftLoss(model: DiffusionLM, batch: DiffusionSftBatch, ctx: RunContext, opts: DiffusionLossOptions): tf.Scalar {
  const noise = noiseBatch(batch, model.config.maskId, opts.rng, opts.eps);
  const { batch: B, length: L, answerStart: S } = batch;
  const ids = tf.tensor2d(noise.noisy, [B, L], 'int32');
  try {
    const logits = model.call({ ids, pad: batch.pad }, ctx);
    const answer = tf.slice(logits, [0, S, 0], [B, L - S, model.config.vocabSize]);
    return weightedMaskedCE(answer, batch, noise.weights);
  } finally {
    ids.dispose();
  }
}
