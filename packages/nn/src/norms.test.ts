import * as tf from '@tensorflow/tfjs';
import { cloneModel, createRunContext, registry, Rng, useBackend } from '@leanpass/core';
import { beforeEach, describe, expect, it } from 'vitest';
import { compareBackends, gradCheck } from './gradcheck.js';
import { LayerNorm, RMSNorm } from './norms.js';

function randn(shape: number[], seed: number, std = 1, mean = 0): tf.Tensor {
  return tf.tensor(new Rng(seed).normalArray(shape.reduce((a, b) => a * b, 1), std, mean), shape);
}
const ctx = createRunContext({ mode: 'train' });

/** Non-trivial affine parameters so their gradients are exercised. */
function perturbParams(m: LayerNorm | RMSNorm, seed: number): tf.Variable[] {
  const vars = [...m.namedParams()].map(([, p]) => p.variable);
  vars.forEach((v, i) => v.assign(randn(v.shape, seed + i, 0.5, i === 0 ? 1 : 0)));
  return vars;
}

describe('LayerNorm', () => {
  beforeEach(async () => {
    await useBackend('cpu');
  });

  it('normalises each row to zero mean and unit variance, then scales and shifts', () => {
    const ln = new LayerNorm({ dim: 6 });
    const [g, b] = perturbParams(ln, 1) as [tf.Variable, tf.Variable];
    const x = randn([3, 4, 6], 2, 3, 1.5);
    const y = ln.call(x, ctx);
    const mu = tf.mean(x, -1, true);
    const variance = tf.mean(tf.square(tf.sub(x, mu)), -1, true);
    const ref = tf.add(tf.mul(tf.div(tf.sub(x, mu), tf.sqrt(tf.add(variance, 1e-5))), g), b);
    expect(y.shape).toEqual([3, 4, 6]);
    expect(tf.max(tf.abs(tf.sub(y, ref))).dataSync()[0]).toBeLessThan(1e-5);
  });

  it('has gradients w.r.t. input, weight and bias that match finite differences', () => {
    const ln = new LayerNorm({ dim: 5 });
    const params = perturbParams(ln, 3);
    const res = gradCheck((x) => ln.call(x, ctx), [randn([2, 3, 5], 4)], { params });
    expect(res.worst).toHaveLength(3);
    expect(res.ok, JSON.stringify(res.worst)).toBe(true);
  });

  it('without affine parameters has none, and its input gradient still matches', () => {
    const ln = new LayerNorm({ dim: 4, affine: false });
    expect(ln.paramCount()).toBe(0);
    const res = gradCheck((x) => ln.call(x, ctx), [randn([3, 4], 5)]);
    expect(res.ok, JSON.stringify(res.worst)).toBe(true);
  });

  it('matches between cpu and wasm, forward and gradients', async () => {
    const ln = new LayerNorm({ dim: 32 });
    const params = perturbParams(ln, 6);
    const res = await compareBackends((x) => ln.call(x, ctx), () => [randn([4, 9, 32], 7, 2, 0.5)], { params });
    expect(res.ok, JSON.stringify(res.ratios)).toBe(true);
  });

  it('round-trips through the registry and a save/load', async () => {
    const ln = new LayerNorm({ dim: 4, eps: 1e-6, bias: false });
    perturbParams(ln, 8);
    expect(ln.config).toEqual({ dim: 4, eps: 1e-6, affine: true, bias: false });
    expect(registry.create('layernorm', JSON.parse(JSON.stringify(ln.config)) as never, { rng: new Rng(0) }).config).toEqual(ln.config);
    const clone = await cloneModel(ln);
    const x = randn([2, 4], 9);
    expect(Array.from((clone.call(x, ctx) as tf.Tensor).dataSync())).toEqual(Array.from(ln.call(x, ctx).dataSync()));
    expect(() => new LayerNorm({ dim: 4, eps: -1 })).toThrow(/config.eps to be a positive number/);
  });
});

describe('RMSNorm', () => {
  beforeEach(async () => {
    await useBackend('cpu');
  });

  it('divides each row by its root mean square, then scales', () => {
    const rn = new RMSNorm({ dim: 6 });
    const [g] = perturbParams(rn, 1) as [tf.Variable];
    const x = randn([5, 6], 2, 2, 1);
    const ref = tf.mul(tf.div(x, tf.sqrt(tf.add(tf.mean(tf.square(x), -1, true), 1e-6))), g);
    expect(tf.max(tf.abs(tf.sub(rn.call(x, ctx), ref))).dataSync()[0]).toBeLessThan(1e-5);
  });

  it('has gradients w.r.t. input and weight that match finite differences', () => {
    const rn = new RMSNorm({ dim: 5 });
    const params = perturbParams(rn, 3);
    const res = gradCheck((x) => rn.call(x, ctx), [randn([2, 3, 5], 4)], { params });
    expect(res.worst).toHaveLength(2);
    expect(res.ok, JSON.stringify(res.worst)).toBe(true);
  });

  it('matches between cpu and wasm, forward and gradients', async () => {
    const rn = new RMSNorm({ dim: 24 });
    const params = perturbParams(rn, 5);
    const res = await compareBackends((x) => rn.call(x, ctx), () => [randn([6, 24], 6)], { params });
    expect(res.ok, JSON.stringify(res.ratios)).toBe(true);
  });

  it('round-trips through the registry', () => {
    const rn = new RMSNorm({ dim: 8, eps: 1e-5 });
    const copy = registry.create('rmsnorm', JSON.parse(JSON.stringify(rn.config)) as never, { rng: new Rng(0) });
    expect(copy).toBeInstanceOf(RMSNorm);
    expect(copy.config).toEqual({ dim: 8, eps: 1e-5, affine: true });
  });
});
