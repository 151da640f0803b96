import * as tf from '@tensorflow/tfjs';
import { cloneModel, createRunContext, registry, Rng, useBackend } from '@leanpass/core';
import { beforeEach, describe, expect, it } from 'vitest';
import { compareBackends, gradCheck } from './gradcheck.js';
import { Linear } from './linear.js';

function randn(shape: number[], seed: number): tf.Tensor {
  return tf.tensor(new Rng(seed).normalArray(shape.reduce((a, b) => a * b, 1)), shape);
}
const ctx = createRunContext({ mode: 'train' });

describe('Linear', () => {
  beforeEach(async () => {
    await useBackend('cpu');
  });

  it('computes x·W + b over the last axis of any rank ≥ 2, weight stored [in, out]', () => {
    const lin = new Linear({ inFeatures: 3, outFeatures: 5 }, { rng: new Rng(1) });
    expect(lin.weight.shape).toEqual([3, 5]);
    expect(lin.bias?.shape).toEqual([5]);
    const x = randn([2, 4, 3], 2);
    const y = lin.call(x, ctx);
    expect(y.shape).toEqual([2, 4, 5]);
    const ref = tf.add(tf.matMul(tf.reshape(x, [8, 3]), lin.weight), lin.bias as tf.Tensor);
    expect(tf.max(tf.abs(tf.sub(tf.reshape(y, [8, 5]), ref))).dataSync()[0]).toBeLessThan(1e-6);
    expect(lin.call(tf.reshape(x, [8, 3]), ctx).shape).toEqual([8, 5]);
  });

  it('initialises like PyTorch (U(±1/√in)) and repeats with the same seed', () => {
    const a = new Linear({ inFeatures: 16, outFeatures: 8 }, { rng: new Rng(7) });
    const b = new Linear({ inFeatures: 16, outFeatures: 8 }, { rng: new Rng(7) });
    const c = new Linear({ inFeatures: 16, outFeatures: 8 }, { rng: new Rng(8) });
    const wa = a.weight.dataSync();
    expect(Array.from(wa)).toEqual(Array.from(b.weight.dataSync()));
    expect(Array.from(wa)).not.toEqual(Array.from(c.weight.dataSync()));
    expect(Math.max(...Array.from(wa).map(Math.abs))).toBeLessThanOrEqual(0.25);
    expect(Math.max(...Array.from(wa).map(Math.abs))).toBeGreaterThan(0.2);
    expect(new Linear({ inFeatures: 2, outFeatures: 2, bias: false }, { rng: new Rng(0) }).paramCount()).toBe(4);
  });

  it('has gradients w.r.t. input, weight and bias that match finite differences', () => {
    const lin = new Linear({ inFeatures: 4, outFeatures: 3 }, { rng: new Rng(3) });
    const res = gradCheck((x) => lin.call(x, ctx), [randn([2, 3, 4], 4)], { params: [lin.weight, lin.bias as tf.Variable] });
    expect(res.worst).toHaveLength(3);
    expect(res.ok, JSON.stringify(res.worst)).toBe(true);
  });

  it('matches between cpu and wasm, forward and gradients', async () => {
    const lin = new Linear({ inFeatures: 24, outFeatures: 10 }, { rng: new Rng(5) });
    const res = await compareBackends((x) => lin.call(x, ctx), () => [randn([3, 7, 24], 6)], { params: [lin.weight, lin.bias as tf.Variable] });
    expect(res.ok, JSON.stringify(res.ratios)).toBe(true);
  });

  it('skips the weight gradient (and its FLOPs) when the parameter is frozen', () => {
    const lin = new Linear({ inFeatures: 4, outFeatures: 6 }, { rng: new Rng(9) });
    const x = randn([5, 4], 10);
    const full = lin.flops(x);
    expect(full).toEqual({ forward: 2 * 5 * 4 * 6 + 5 * 6, backward: 2 * (2 * 5 * 4 * 6) + 5 * 6 });
    lin.param('weight').trainable = false;
    expect(lin.flops(x).backward).toBe(2 * 5 * 4 * 6 + 5 * 6);
    // the frozen weight is no input of the op: no path from it to the output
    expect(() => tf.grads(() => tf.sum(lin.call(x, ctx)))([lin.weight])).toThrow();
    const [gb] = tf.grads((b) => tf.sum(tf.add(tf.matMul(x, lin.weight), b)))([lin.bias as tf.Tensor]);
    const { grads } = tf.variableGrads(() => tf.sum<tf.Scalar>(lin.call(x, ctx)), [lin.bias as tf.Variable]);
    expect(Array.from((grads[(lin.bias as tf.Variable).name] as tf.Tensor).dataSync())).toEqual(Array.from((gb as tf.Tensor).dataSync()));
  });

  it('round-trips through the registry and a save/load', async () => {
    const lin = new Linear({ inFeatures: 3, outFeatures: 2, bias: false }, { rng: new Rng(11) });
    const node = JSON.parse(JSON.stringify(lin.toNode())) as { kind: string; config: Record<string, never> };
    expect(node).toEqual({ kind: 'linear', config: { inFeatures: 3, outFeatures: 2, bias: false } });
    const rebuilt = registry.create(node.kind, node.config, { rng: new Rng(11) });
    expect(rebuilt.config).toEqual(lin.config);
    expect(Array.from((rebuilt as Linear).weight.dataSync())).toEqual(Array.from(lin.weight.dataSync()));
    const clone = await cloneModel(lin);
    const x = randn([4, 3], 12);
    expect(Array.from((clone.call(x, ctx) as tf.Tensor).dataSync())).toEqual(Array.from(lin.call(x, ctx).dataSync()));
  });

  it('rejects bad configs and inputs with what it expected', () => {
    expect(() => new Linear({ inFeatures: 0, outFeatures: 2 }, { rng: new Rng(0) })).toThrow(/config.inFeatures to be a positive integer, found 0/);
    expect(() => registry.create('linear', { inFeatures: 2, outFeatures: 2, bias: 'yes' }, { rng: new Rng(0) })).toThrow(/config.bias to be a boolean/);
    const lin = new Linear({ inFeatures: 3, outFeatures: 2 }, { rng: new Rng(0) });
    expect(() => lin.call(tf.zeros([2, 4]), ctx)).toThrow(/last axis of the input to be 3, found \[2, 4\]/);
    expect(() => lin.call(tf.zeros([3]), ctx)).toThrow(/rank >= 2/);
  });
});
