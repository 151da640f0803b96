import * as tf from '@tensorflow/tfjs';
import { cloneModel, createRunContext, registry, Rng, savedForBackward, useBackend } from '@leanpass/core';
import { beforeEach, describe, expect, it } from 'vitest';
import { axisGeometry, DepthwiseConv2d, depthwiseConv2d, type Padding } from './depthwise.js';
import { compareBackends, gradCheck } from './gradcheck.js';

function randn(shape: number[], seed: number, std = 1): tf.Tensor {
  return tf.tensor(new Rng(seed).normalArray(shape.reduce((a, b) => a * b, 1), std), shape);
}
function rel(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => (tf.norm(tf.sub(a, b)).dataSync()[0] as number) / Math.max(tf.norm(b).dataSync()[0] as number, 1e-30));
}
const ctx = createRunContext({ mode: 'train' });

/** tfjs's own depthwise op (with the cpu backend's gradient kernels) as the reference. */
function tfPad(p: Padding): 'same' | 'valid' | [[number, number], [number, number], [number, number], [number, number]] {
  return typeof p === 'number' ? [[0, 0], [p, p], [p, p], [0, 0]] : p;
}
function reference(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor, stride: number | [number, number], padding: Padding): tf.Tensor {
  return tf.add(tf.depthwiseConv2d(x as tf.Tensor4D, w as tf.Tensor4D, stride, tfPad(padding)), b);
}

interface Case {
  x: [number, number, number, number];
  k: [number, number];
  stride: number | [number, number];
  padding: Padding;
  m: number;
}
const CASES: Case[] = [
  { x: [2, 7, 6, 3], k: [3, 3], stride: 1, padding: 'same', m: 1 },
  { x: [2, 7, 6, 3], k: [3, 3], stride: 2, padding: 'same', m: 1 },
  { x: [2, 8, 8, 3], k: [3, 3], stride: 2, padding: 'same', m: 1 },
  { x: [2, 7, 6, 3], k: [3, 3], stride: 1, padding: 'valid', m: 1 },
  { x: [2, 8, 9, 3], k: [3, 3], stride: 2, padding: 'valid', m: 1 },
  { x: [2, 7, 6, 3], k: [3, 3], stride: 2, padding: 1, m: 1 },
  { x: [2, 7, 7, 2], k: [5, 5], stride: 1, padding: 2, m: 2 },
  { x: [1, 9, 9, 2], k: [3, 3], stride: 3, padding: 'same', m: 2 },
  { x: [2, 6, 6, 4], k: [3, 3], stride: 1, padding: 4, m: 1 },
  { x: [2, 6, 5, 4], k: [2, 2], stride: 2, padding: 'same', m: 3 },
  { x: [2, 5, 7, 2], k: [1, 1], stride: 2, padding: 'same', m: 1 },
  { x: [2, 6, 7, 2], k: [3, 2], stride: [2, 1], padding: 'same', m: 1 },
  { x: [2, 8, 6, 2], k: [1, 3], stride: [1, 2], padding: 'valid', m: 2 },
];
const label = (c: Case): string => `x [${c.x.join(',')}] k ${c.k.join('×')} stride ${JSON.stringify(c.stride)} padding ${JSON.stringify(c.padding)} m ${c.m}`;

describe('depthwiseConv2d op', () => {
  beforeEach(async () => {
    await useBackend('cpu');
  });

  it.each(CASES.map((c) => [label(c), c] as const))('equals tf.depthwiseConv2d and its gradients: %s', (_name, c) => {
    const x = randn(c.x, 1);
    const w = randn([...c.k, c.x[3], c.m], 2);
    const b = randn([c.x[3] * c.m], 3);
    const yRef = reference(x, w, b, c.stride, c.padding);
    const y = depthwiseConv2d(x, w, b, { stride: c.stride, padding: c.padding });
    expect(y.shape).toEqual(yRef.shape);
    expect(rel(y, yRef)).toBeLessThan(1e-6);
    const dy = randn(yRef.shape, 4);
    const mine = tf.grads((a: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor) => depthwiseConv2d(a, ww, bb, { stride: c.stride, padding: c.padding }))([x, w, b], dy);
    const ref = tf.grads((a: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor) => reference(a, ww, bb, c.stride, c.padding))([x, w, b], dy);
    mine.forEach((g, i) => expect(rel(g, ref[i] as tf.Tensor), `gradient ${i}`).toBeLessThan(1e-5));
  });

  it('has gradients that match finite differences (stride 1 and 2, multiplier 2)', () => {
    for (const stride of [1, 2]) {
      const res = gradCheck((x, w, b) => depthwiseConv2d(x, w, b, { stride, padding: 'same' }), [randn([2, 5, 4, 2], 5), randn([3, 3, 2, 2], 6), randn([4], 7)]);
      expect(res.worst).toHaveLength(3);
      expect(res.ok, JSON.stringify(res.worst)).toBe(true);
    }
  });

  it('saves only the unpadded input, and nothing when the filter is frozen', () => {
    const x = randn([2, 6, 6, 4], 8);
    const w = tf.variable(randn([3, 3, 4, 1], 9));
    const b = tf.variable(randn([4], 10));
    const y = (): tf.Tensor => depthwiseConv2d(x, w, b, { stride: 2, padding: 1 });
    const outSize = tf.tidy(() => y().size);
    // tf.sum saves its input (the conv output); the rest is the op's own.
    expect(savedForBackward(() => tf.sum<tf.Scalar>(y())).bytes).toBe(4 * x.size + 4 * outSize);
    w.trainable = false;
    const { grads } = tf.variableGrads(() => tf.sum<tf.Scalar>(y()), [b]);
    expect(Object.keys(grads)).toEqual([b.name]);
    expect(savedForBackward(() => tf.sum<tf.Scalar>(y())).bytes).toBe(4 * outSize);
    w.trainable = true;
  });

  it('works inside a per-block tf.tidy when the filter is a temporary (it is saved, not read after disposal)', () => {
    const x = randn([1, 5, 5, 2], 11);
    const w = randn([3, 3, 2, 1], 12);
    const dy = randn([1, 5, 5, 2], 13);
    const f = (a: tf.Tensor, ww: tf.Tensor): tf.Tensor => tf.tidy(() => depthwiseConv2d(a, tf.mul(ww, 1), null));
    const ref = (a: tf.Tensor, ww: tf.Tensor): tf.Tensor => depthwiseConv2d(a, ww, null);
    const got = tf.grads(f)([x, w], dy);
    tf.grads(ref)([x, w], dy).forEach((g, i) => expect(rel(got[i] as tf.Tensor, g)).toBeLessThan(1e-6));
  });

  it('matches between cpu and wasm, forward and gradients (stride 1 and 2, multiplier 2)', async () => {
    for (const [stride, m, padding] of [
      [1, 1, 'same'],
      [2, 1, 1],
      [2, 2, 'valid'],
    ] as const) {
      const res = await compareBackends(
        (x, w, b) => depthwiseConv2d(x, w, b, { stride, padding }),
        () => [randn([2, 9, 8, 6], 14), randn([3, 3, 6, m], 15), randn([6 * m], 16)],
      );
      expect(res.ok, `stride ${stride} m ${m}: ${JSON.stringify(res.ratios)}`).toBe(true);
    }
  });

  it('rejects mismatched shapes with what was expected and found', () => {
    expect(() => depthwiseConv2d(tf.zeros([1, 4, 4, 3]), tf.zeros([3, 3, 2, 1]), null)).toThrow(/has 3 channels but w \[3, 3, 2, 1\] has 2/);
    expect(() => depthwiseConv2d(tf.zeros([4, 4, 3]), tf.zeros([3, 3, 3, 1]), null)).toThrow(/expected x of rank 4/);
    expect(() => depthwiseConv2d(tf.zeros([1, 4, 4, 3]), tf.zeros([3, 3, 3, 1]), tf.zeros([2]))).toThrow(/bias of 3 elements/);
    expect(() => depthwiseConv2d(tf.zeros([1, 2, 2, 1]), tf.zeros([5, 5, 1, 1]), null, { padding: 'valid' })).toThrow(/too small for kernel 5/);
  });
});

describe('axisGeometry', () => {
  it('follows TensorFlow for same/valid and PyTorch for a number', () => {
    expect(axisGeometry(16, 3, 2, 'same')).toMatchObject({ out: 8, padBefore: 0, padAfter: 1 });
    expect(axisGeometry(15, 3, 2, 'same')).toMatchObject({ out: 8, padBefore: 1, padAfter: 1 });
    expect(axisGeometry(16, 3, 1, 'same')).toMatchObject({ out: 16, padBefore: 1, padAfter: 1 });
    expect(axisGeometry(16, 3, 2, 'valid')).toMatchObject({ out: 7, padBefore: 0, padAfter: 0 });
    expect(axisGeometry(16, 3, 2, 1)).toMatchObject({ out: 8, padBefore: 1, padAfter: 1 });
  });
});

describe('DepthwiseConv2d module', () => {
  beforeEach(async () => {
    await useBackend('cpu');
  });

  it('runs the op on its params; gradients of its params match finite differences', () => {
    const m = new DepthwiseConv2d({ channels: 3, kernelSize: 3, stride: 2, padding: 1, multiplier: 2 }, { rng: new Rng(1) });
    expect(m.param('weight').shape).toEqual([3, 3, 3, 2]);
    expect(m.param('bias').shape).toEqual([6]);
    const x = randn([2, 5, 5, 3], 17);
    const ref = reference(x, m.param('weight').variable, m.param('bias').variable, 2, 1);
    expect(rel(m.call(x, ctx), ref)).toBeLessThan(1e-6);
    const res = gradCheck((a) => m.call(a, ctx), [randn([1, 5, 4, 3], 18)], { params: [m.param('weight').variable, m.param('bias').variable] });
    expect(res.worst).toHaveLength(3);
    expect(res.ok, JSON.stringify(res.worst)).toBe(true);
  });

  it('initialises like PyTorch: U(±1/√(kh·kw)), seeded', () => {
    const a = new DepthwiseConv2d({ channels: 8, kernelSize: [3, 5] }, { rng: new Rng(7) });
    const b = new DepthwiseConv2d({ channels: 8, kernelSize: [3, 5] }, { rng: new Rng(7) });
    const w = a.param('weight').variable.dataSync();
    const bound = 1 / Math.sqrt(15);
    expect(Math.max(...Array.from(w, Math.abs))).toBeLessThanOrEqual(bound);
    expect(Math.max(...Array.from(w, Math.abs))).toBeGreaterThan(0.8 * bound);
    expect(Array.from(b.param('weight').variable.dataSync())).toEqual(Array.from(w));
  });

  it('round-trips through the registry and a save/load', async () => {
    const m = new DepthwiseConv2d({ channels: 4, kernelSize: [3, 3], stride: [1, 2], padding: 'valid', multiplier: 2, bias: false }, { rng: new Rng(2) });
    expect(m.config).toEqual({ channels: 4, kernelSize: [3, 3], stride: [1, 2], padding: 'valid', multiplier: 2, bias: false });
    const fresh = registry.create('depthwise-conv2d', JSON.parse(JSON.stringify(m.config)) as never, { rng: new Rng(0) });
    expect(fresh.config).toEqual(m.config);
    const clone = await cloneModel(m);
    const x = randn([1, 6, 7, 4], 19);
    expect(Array.from((clone.call(x, ctx) as tf.Tensor).dataSync())).toEqual(Array.from(m.call(x, ctx).dataSync()));
  });

  it('reports its FLOPs (2·k²·outputs forward; dx, dW and db backward)', () => {
    const m = new DepthwiseConv2d({ channels: 4, kernelSize: 3 }, { rng: new Rng(3) });
    const x = tf.zeros([2, 6, 6, 4]);
    const y = m.call(x, ctx);
    expect(m.flops(x, y)).toEqual({ forward: 2 * 9 * y.size + y.size, backward: 4 * 9 * y.size + y.size });
    m.param('weight').trainable = false;
    expect(m.flops(x, y).backward).toBe(2 * 9 * y.size + y.size);
  });

  it('rejects bad configs and inputs, listing every problem', () => {
    expect(() => new DepthwiseConv2d({ channels: 0, kernelSize: 3, padding: 'full' as never, multiplier: 1.5 }, { rng: new Rng(0) })).toThrow(
      /channels: expected a positive integer, found 0[\s\S]*multiplier: expected a positive integer, found 1.5[\s\S]*padding: expected 'same', 'valid' or a non-negative integer, found "full"/,
    );
    expect(() => registry.create('depthwise-conv2d', { channels: 2, kernelSize: [3] }, { rng: new Rng(0) })).toThrow(/kernelSize: expected a positive integer or an \[h, w\] pair/);
    const m = new DepthwiseConv2d({ channels: 3, kernelSize: 3 }, { rng: new Rng(0) });
    expect(() => m.call(tf.zeros([1, 4, 4, 2]), ctx)).toThrow(/expected an input \[B, H, W, 3\], found \[1, 4, 4, 2\]/);
  });
});
