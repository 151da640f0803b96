import * as tf from '@tensorflow/tfjs';
import { ConfigError, Rng, createRunContext, type AnyModule, type RunContext } from '@leanpass/core';

export interface GenerateOptions {
  /** Tokens to generate after the prompt. */
  maxNewTokens: number;
  /** 0 (default): greedy (argmax, lowest id on ties). > 0: sample from softmax(logits / temperature). */
  temperature?: number;
  /** Sample among the k most likely tokens only (temperature > 0). */
  topK?: number;
  /** Seed of the sampler (temperature > 0). Default 0. */
  seed?: number;
  /** Stop after generating this token (it is included in the output). */
  stopToken?: number;
  /** Context to run in (a fresh one by default); its state store holds the K/V cache and is disposed at the end. */
  ctx?: RunContext;
}

/** Picks the next token from one row of logits (Float32Array) — greedy or seeded sampling. */
export function pickToken(logits: ArrayLike<number>, temperature: number, rng: Rng, topK?: number): number {
  const V = logits.length;
  if (temperature === 0) {
    let best = 0;
    for (let i = 1; i < V; i++) if ((logits[i] as number) > (logits[best] as number)) best = i;
    return best;
  }
  let ids = Array.from({ length: V }, (_, i) => i);
  if (topK !== undefined && topK < V) ids = ids.sort((a, b) => (logits[b] as number) - (logits[a] as number) || a - b).slice(0, topK);
  let max = -Infinity;
  for (const i of ids) max = Math.max(max, (logits[i] as number) / temperature);
  const w = ids.map((i) => Math.exp((logits[i] as number) / temperature - max));
  const total = w.reduce((a, b) => a + b, 0);
  let u = rng.next() * total;
  for (let j = 0; j < ids.length; j++) {
    u -= w[j] as number;
    if (u < 0) return ids[j] as number;
  }
  return ids[ids.length - 1] as number;
}

/**
 * Autoregressive generation at batch 1 with the K/V cache kept in the context's state store (one per
 * generation): the prompt is prefilled in one forward, then one token per forward. Returns the new
 * tokens (prompt excluded). Deterministic for a given seed and backend.
 */
export function generate(model: AnyModule, prompt: readonly number[] | Uint8Array, opts: GenerateOptions): number[] {
  const { maxNewTokens } = opts;
  const temperature = opts.temperature ?? 0;
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) throw new ConfigError(`generate: expected an integer maxNewTokens ≥ 0, found ${maxNewTokens}`);
  if (!(temperature >= 0) || !Number.isFinite(temperature)) throw new ConfigError(`generate: expected a finite temperature ≥ 0, found ${temperature}`);
  if (opts.topK !== undefined && (!Number.isInteger(opts.topK) || opts.topK <= 0)) throw new ConfigError(`generate: expected a positive integer topK, found ${opts.topK}`);
  if (prompt.length === 0) throw new ConfigError('generate: expected a non-empty prompt');
  const rng = new Rng(opts.seed ?? 0);
  const ctx = opts.ctx ?? createRunContext();
  const out: number[] = [];
  try {
    let next: number[] = Array.from(prompt);
    for (let i = 0; i < maxNewTokens; i++) {
      const row = tf.tidy(() => {
        const logits = model.call({ ids: tf.tensor2d(Int32Array.from(next), [1, next.length], 'int32'), cache: true }, ctx) as tf.Tensor;
        const V = logits.shape[2] as number;
        return tf.reshape(tf.slice(logits, [0, next.length - 1, 0], [1, 1, V]), [V]);
      });
      const values = row.dataSync();
      row.dispose();
      const tok = pickToken(values, temperature, rng, opts.topK);
      out.push(tok);
      if (opts.stopToken !== undefined && tok === opts.stopToken) break;
      next = [tok];
    }
  } finally {
    if (!opts.ctx) ctx.state.dispose();
  }
  return out;
}
