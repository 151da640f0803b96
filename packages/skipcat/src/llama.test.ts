import * as tf from '@tensorflow/tfjs';
import { lastValueFrom } from 'rxjs';
import { Rng, createRunContext, deserializeModel, registry, serializeModel, useBackend, type AnyModule } from '@leanpass/core';
import { createLlama, decodeLatency, targetLogProbs } from '@leanpass/models';
import { beforeAll, describe, expect, it } from 'vitest';
import { pass, skipcatOptions } from './index.js';
import { randomIdBatches } from './toy.js';

// The LLaMA host of @leanpass/models (GQA, RoPE, K/V cache) with SkipCat applied.
const CFG = { vocab_size: 40, hidden_size: 24, intermediate_size: 40, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2 };

function logProbs(model: AnyModule): Float64Array {
  const rng = new Rng(9);
  const ids = Int32Array.from({ length: 2 * 10 }, () => rng.int(40));
  const tg = Int32Array.from({ length: 2 * 10 }, () => rng.int(40));
  return targetLogProbs(model, ids, tg, 2, 10);
}

async function compress(model: AnyModule, ratio: number): Promise<void> {
  await lastValueFrom(pass.apply(model, skipcatOptions.parse({ ratio }), { seed: 0, backend: tf.getBackend(), calibration: randomIdBatches(40, 3, 4, 16, 1) }));
}

describe('SkipCat on the @leanpass/models LLaMA host', () => {
  beforeAll(async () => {
    await useBackend('cpu');
  });

  it('ratio 0 keeps the log-probabilities; 30 % rewrites every decoder linear and still decodes with the K/V cache', async () => {
    const m = createLlama(CFG, { seed: 1 });
    const before = logProbs(m);
    await compress(m, 0);
    const after = logProbs(m);
    for (let i = 0; i < before.length; i++) expect(Math.abs((after[i] as number) - (before[i] as number))).toBeLessThan(1e-4);
    m.dispose();

    const c = createLlama(CFG, { seed: 1 });
    await compress(c, 0.3);
    const kinds = [...c.modules()].map(([p, mm]) => `${p}:${mm.kind}`);
    expect(kinds).toContain('layers.0.attn.q:skipcat.cat');
    expect(kinds).toContain('layers.1.mlp.up:skipcat.slice');
    expect(kinds).toContain('layers.1.mlp.down:skipcat.linear');
    expect(kinds).toContain('head:linear');
    const lat = await decodeLatency(c, { tokens: 3, warmup: 1 });
    expect(lat.times).toHaveLength(3);
    // Incremental decoding equals the full forward (the Cat state survives the per-block tidy).
    const seq = [3, 1, 4, 1, 5, 9];
    const fullLogits = tf.tidy(() => (c.call(tf.tensor2d([seq], [1, 6], 'int32'), createRunContext())).arraySync() as number[][][]);
    const ctx = createRunContext();
    const stepLogits: number[][] = [];
    tf.tidy(() => {
      const first = c.call({ ids: tf.tensor2d([seq.slice(0, 3)], [1, 3], 'int32'), cache: true }, ctx);
      stepLogits.push(...(first.arraySync() as number[][][])[0] as number[][]);
    });
    for (let t = 3; t < 6; t++) {
      tf.tidy(() => {
        const out = c.call({ ids: tf.tensor2d([[seq[t] as number]], [1, 1], 'int32'), cache: true }, ctx);
        stepLogits.push((out.arraySync() as number[][][])[0]?.[0] as number[]);
      });
    }
    ctx.state.dispose();
    for (let t = 0; t < 6; t++) for (let v = 0; v < 40; v++) expect(Math.abs((stepLogits[t]?.[v] as number) - (fullLogits[0]?.[t]?.[v] as number))).toBeLessThan(1e-4);
    const full = logProbs(c);
    const { config, weights } = await serializeModel(c);
    const back = deserializeModel(config, weights, { registry });
    const again = logProbs(back);
    for (let i = 0; i < full.length; i++) expect(Math.abs((again[i] as number) - (full[i] as number))).toBeLessThan(1e-5);
    c.dispose();
    back.dispose();
  });
});
