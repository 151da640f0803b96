import * as tf from '@tensorflow/tfjs';
import { cloneModel, createRunContext, registry, Rng, useBackend } from '@leanpass/core';
import { beforeEach, describe, expect, it } from 'vitest';
import { Embedding, embeddingLookup } from './embedding.js';
import { compareBackends } from './gradcheck.js';

const ctx = createRunContext({ mode: 'train' });

describe('Embedding', () => {
  beforeEach(async () => {
    await useBackend('cpu');
  });

  it('looks up rows for ids of any shape', () => {
    const emb = new Embedding({ numEmbeddings: 7, dim: 3 }, { rng: new Rng(1) });
    const ids = tf.tensor2d([
      [0, 6, 2],
      [2, 2, 5],
    ], [2, 3], 'int32');
    const y = emb.call(ids, ctx);
    expect(y.shape).toEqual([2, 3, 3]);
    const w = emb.param('weight').variable.arraySync() as number[][];
    expect(y.arraySync()).toEqual([
      [w[0], w[6], w[2]],
      [w[2], w[2], w[5]],
    ]);
  });

  it('has the one-hot product’s weight gradient, repeated ids summed', () => {
    const emb = new Embedding({ numEmbeddings: 5, dim: 4 }, { rng: new Rng(2) });
    const w = emb.param('weight').variable;
    const ids = tf.tensor1d([3, 1, 3, 0, 3], 'int32');
    const r = tf.tensor(new Rng(3).normalArray(20), [5, 4]);
    const { grads } = tf.variableGrads(() => tf.sum<tf.Scalar>(tf.mul(emb.call(ids, ctx), r)), [w]);
    const expected = tf.matMul(tf.oneHot(ids, 5), r, true, false);
    expect(tf.max(tf.abs(tf.sub(grads[w.name] as tf.Tensor, expected))).dataSync()[0]).toBeLessThan(1e-6);
  });

  it('trains on wasm, matching cpu (forward and weight gradient)', async () => {
    const emb = new Embedding({ numEmbeddings: 50, dim: 8 }, { rng: new Rng(4) });
    const ids = Array.from({ length: 40 }, (_, i) => (i * 17) % 50);
    const res = await compareBackends(() => emb.call(tf.tensor2d(ids, [4, 10], 'int32'), ctx), () => [], { params: [emb.param('weight').variable] });
    expect(res.ok, JSON.stringify(res.ratios)).toBe(true);
    expect(Object.keys(res.ratios)).toContain(`grad param ${emb.param('weight').variable.name}`);
  });

  it('rejects ids out of range or of the wrong dtype', () => {
    const w = tf.zeros([4, 2]);
    expect(() => embeddingLookup(w, tf.tensor1d([1, 4], 'int32'))).toThrow(/ids in \[0, 4\), found 4 at flat index 1/);
    expect(() => embeddingLookup(w, tf.tensor1d([-1], 'int32'))).toThrow(/found -1/);
    expect(() => embeddingLookup(w, tf.tensor1d([1]))).toThrow(/int32 ids, found float32/);
  });

  it('initialises N(0, 1) from the seed and round-trips through the registry and a save/load', async () => {
    const emb = new Embedding({ numEmbeddings: 100, dim: 20 }, { rng: new Rng(5) });
    const v = Array.from(emb.param('weight').variable.dataSync());
    const mean = v.reduce((a, b) => a + b, 0) / v.length;
    const std = Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / v.length);
    expect(Math.abs(mean)).toBeLessThan(0.1);
    expect(Math.abs(std - 1)).toBeLessThan(0.1);
    const again = registry.create('embedding', { numEmbeddings: 100, dim: 20 }, { rng: new Rng(5) });
    expect(Array.from(again.param('weight').variable.dataSync())).toEqual(v);
    const clone = await cloneModel(emb);
    const ids = tf.tensor1d([5, 99, 0], 'int32');
    expect(Array.from((clone.call(ids, ctx) as tf.Tensor).dataSync())).toEqual(Array.from(emb.call(ids, ctx).dataSync()));
  });
});
