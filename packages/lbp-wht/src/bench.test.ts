import * as tf from '@tensorflow/tfjs';
import { createRunContext, savedForBackward, useBackend } from '@leanpass/core';
import { buildVitTiny, type ViT } from '@leanpass/models';
import { softmaxCrossEntropy } from '@leanpass/train';
import { applyToEnd } from '@leanpass/core/testing';
import { beforeAll, describe, expect, it } from 'vitest';
import { LAST_STAGES, VIT_TINY_SELECT } from './bench.js';
import { LBP_LINEAR_KIND, lbpFlops, type LbpLinear } from './layer.js';
import { pass } from './pass.js';

/** Dense backward FLOPs (lbpFlops' denseBackward) of the 17 linears the K = 6 row adapts, for batch B. */
async function denseBackward17(B: number): Promise<number> {
  const m = buildVitTiny({ numClasses: 5, seed: 0 });
  await applyToEnd(pass, m, { select: VIT_TINY_SELECT }, { seed: 0, backend: 'wasm' });
  const layers = [...m.modules()].filter(([, mod]) => mod.kind === LBP_LINEAR_KIND) as Array<[string, LbpLinear]>;
  expect(layers).toHaveLength(17);
  const total = layers.reduce((acc, [, mod]) => acc + lbpFlops([B, (mod.config.grid as [number, number])[0] ** 2, mod.config.inFeatures], mod.config).denseBackward, 0);
  m.dispose();
  return total;
}

describe('bench: the last-stages row', () => {
  beforeAll(async () => {
    await useBackend('wasm');
  });

  it('fits the K = 6 FLOPs and memory budgets: per-layer orders from its overrides, the frozen prefix off the tape', async () => {
    const B = 8;
    const dense = buildVitTiny({ numClasses: 5, seed: 0 });
    const denseFlops = await denseBackward17(B);
    expect(denseFlops).toBeGreaterThan(0);
    const m = buildVitTiny({ numClasses: 5, seed: 0 });
    await applyToEnd(pass, m, LAST_STAGES.options, { seed: 0, backend: 'wasm' });
    for (const c of LAST_STAGES.frozen) m.child(c).setTrainable(false);
    const adapted = [...m.modules()].filter(([, mod]) => mod.kind === LBP_LINEAR_KIND) as Array<[string, LbpLinear]>;
    expect(adapted.map(([p]) => p)).toHaveLength(13);
    let flops = 0;
    for (const [path, mod] of adapted) {
      const c = mod.config;
      expect([path, c.order, c.bases.length]).toEqual([path, /mlp/.test(path) ? 8 : 4, 6]);
      flops += lbpFlops([B, 64, c.inFeatures], c).backward;
    }
    // the frozen stage-1 linears do no backward at all
    expect(flops / denseFlops).toBeLessThan(0.2);
    expect(flops / denseFlops).toBeGreaterThan(0.1);
    // whole model: the frozen patch embedding and stage 1 keep nothing for backward
    const x = tf.randomUniform([B, 28, 28, 1], 0, 1, 'float32', 1);
    const y = tf.oneHot(tf.tensor1d([0, 1, 2, 3, 4, 0, 1, 2], 'int32'), 5);
    const kept = (model: ViT): number => savedForBackward(() => softmaxCrossEntropy(model.call(x, createRunContext({ mode: 'train' })), y)).bytes;
    expect(kept(m)).toBeLessThan(0.5 * kept(dense));
    tf.dispose([x, y]);
    m.dispose();
    dense.dispose();
  });
});
