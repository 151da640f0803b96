import * as tf from '@tensorflow/tfjs';
import { cloneModel, createRunContext, registry, Rng, useBackend } from '@leanpass/core';
import { beforeEach, describe, expect, it } from 'vitest';
import { activation } from './activations.js';
import { compareBackends, gradCheck } from './gradcheck.js';
import type { Linear } from './linear.js';
import { Mlp, SwiGLU } from './mlp.js';

function randn(shape: number[], seed: number): tf.Tensor {
  return tf.tensor(new Rng(seed).normalArray(shape.reduce((a, b) => a * b, 1)), shape);
}
const ctx = createRunContext({ mode: 'train' });
const vars = (m: Mlp | SwiGLU): tf.Variable[] => [...m.namedParams()].map(([, p]) => p.variable);
const lin = (m: Mlp | SwiGLU, name: string): Linear => m.child<Linear>(name);
function affine(m: Linear, x: tf.Tensor): tf.Tensor {
  return tf.add(tf.matMul(x, m.weight), m.bias ?? tf.scalar(0));
}

describe('Mlp', () => {
  beforeEach(async () => {
    await useBackend('cpu');
  });

  it('computes fc2(act(fc1(x))) with children named fc1, act, fc2', () => {
    const m = new Mlp({ inFeatures: 4, hiddenFeatures: 8, act: 'gelu' }, { rng: new Rng(1) });
    expect([...m.children.keys()]).toEqual(['fc1', 'act', 'fc2']);
    expect(m.config).toEqual({ inFeatures: 4, hiddenFeatures: 8, outFeatures: 4, act: 'gelu', bias: true });
    const x = randn([2, 3, 4], 2);
    const ref = affine(lin(m, 'fc2'), activation('gelu')(affine(lin(m, 'fc1'), tf.reshape(x, [6, 4]))));
    expect(tf.max(tf.abs(tf.sub(tf.reshape(m.call(x, ctx), [6, 4]), ref))).dataSync()[0]).toBeLessThan(1e-5);
  });

  it('has gradients w.r.t. input and all four params that match finite differences', () => {
    const m = new Mlp({ inFeatures: 3, hiddenFeatures: 5, outFeatures: 2, act: 'silu' }, { rng: new Rng(3) });
    const res = gradCheck((x) => m.call(x, ctx), [randn([4, 3], 4)], { params: vars(m) });
    expect(res.worst).toHaveLength(5);
    expect(res.ok, JSON.stringify(res.worst)).toBe(true);
  });

  it('matches between cpu and wasm, forward and gradients', async () => {
    const m = new Mlp({ inFeatures: 16, hiddenFeatures: 64 }, { rng: new Rng(5) });
    const res = await compareBackends((x) => m.call(x, ctx), () => [randn([2, 5, 16], 6)], { params: vars(m) });
    expect(res.ok, JSON.stringify(res.ratios)).toBe(true);
  });

  it('looks its children up at call time, so a replaced child takes effect', () => {
    const m = new Mlp({ inFeatures: 2, hiddenFeatures: 3, act: 'relu' }, { rng: new Rng(7) });
    const x = randn([1, 2], 8);
    const before = m.call(x, ctx).dataSync().slice();
    m.replace('act', registry.create('activation', { fn: 'identity' }, { rng: new Rng(0) }));
    const after = m.call(x, ctx).dataSync();
    const ref = affine(lin(m, 'fc2'), affine(lin(m, 'fc1'), x)).dataSync();
    Array.from(after).forEach((v, i) => expect(v).toBeCloseTo(ref[i] as number, 5));
    expect(Array.from(after)).not.toEqual(Array.from(before));
  });

  it('round-trips through a save/load and rejects an unknown activation', async () => {
    const m = new Mlp({ inFeatures: 3, hiddenFeatures: 6, act: 'hardSwish', bias: false }, { rng: new Rng(9) });
    const clone = await cloneModel(m);
    expect(clone.config).toEqual(m.config);
    const x = randn([2, 3], 10);
    expect(Array.from((clone.call(x, ctx) as tf.Tensor).dataSync())).toEqual(Array.from(m.call(x, ctx).dataSync()));
    expect(() => registry.create('mlp', { inFeatures: 2, hiddenFeatures: 2, act: 'tanh' }, { rng: new Rng(0) })).toThrow(/config.act to be one of/);
  });
});

describe('SwiGLU', () => {
  beforeEach(async () => {
    await useBackend('cpu');
  });

  it('computes down(silu(gate(x)) ⊙ up(x)) with children gate, up, down and no bias by default', () => {
    const m = new SwiGLU({ dim: 4, hiddenFeatures: 6 }, { rng: new Rng(1) });
    expect([...m.children.keys()]).toEqual(['gate', 'up', 'down']);
    expect(m.paramCount()).toBe(3 * 4 * 6);
    const x = randn([3, 4], 2);
    const ref = affine(lin(m, 'down'), tf.mul(activation('silu')(affine(lin(m, 'gate'), x)), affine(lin(m, 'up'), x)));
    expect(tf.max(tf.abs(tf.sub(m.call(x, ctx), ref))).dataSync()[0]).toBeLessThan(1e-5);
    const f = m.flops(x);
    expect(f.forward).toBe(3 * 6 * (5 + 1));
  });

  it('has gradients w.r.t. input and every param that match finite differences', () => {
    const m = new SwiGLU({ dim: 3, hiddenFeatures: 4, act: 'gelu', bias: true }, { rng: new Rng(3) });
    const res = gradCheck((x) => m.call(x, ctx), [randn([2, 2, 3], 4)], { params: vars(m) });
    expect(res.worst).toHaveLength(7);
    expect(res.ok, JSON.stringify(res.worst)).toBe(true);
  });

  it('matches between cpu and wasm and round-trips through a save/load', async () => {
    const m = new SwiGLU({ dim: 12, hiddenFeatures: 32 }, { rng: new Rng(5) });
    const res = await compareBackends((x) => m.call(x, ctx), () => [randn([7, 12], 6)], { params: vars(m) });
    expect(res.ok, JSON.stringify(res.ratios)).toBe(true);
    await useBackend('cpu');
    const clone = await cloneModel(m);
    const x = randn([2, 12], 7);
    expect(Array.from((clone.call(x, ctx) as tf.Tensor).dataSync())).toEqual(Array.from(m.call(x, ctx).dataSync()));
  });
});
