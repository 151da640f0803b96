import * as tf from '@tensorflow/tfjs';
import { Rng, savedForBackward, useBackend } from '@leanpass/core';
import { beforeEach, describe, expect, it } from 'vitest';
import { compareBackends, gradCheck } from '../gradcheck.js';
import { dense, matMul2d, matMulRaw, splitRows, sumOverRows, transposeLast2, untaped, useFastMatMulGradient } from './dense.js';

function randn(shape: number[], seed: number, std = 1): tf.Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return tf.tensor(new Rng(seed).normalArray(n, std), shape);
}

function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0] as number);
}

describe('dense', () => {
  beforeEach(async () => {
    await useBackend('cpu');
  });

  it('computes x·W + b', () => {
    const x = randn([5, 3], 1);
    const w = randn([3, 4], 2);
    const b = randn([4], 3);
    expect(maxAbsDiff(dense(x, w, b), tf.add(tf.matMul(x, w), b))).toBeLessThan(1e-6);
    expect(maxAbsDiff(dense(x, w), tf.matMul(x, w))).toBeLessThan(1e-6);
  });

  it('folds the leading axes of a rank-3 input into rows, forward and gradient', () => {
    const x = randn([2, 3, 4], 30);
    const w = randn([4, 5], 31);
    const y = dense(x, w);
    expect(y.shape).toEqual([2, 3, 5]);
    expect(maxAbsDiff(tf.reshape(y, [6, 5]), tf.matMul(tf.reshape(x, [6, 4]), w))).toBeLessThan(1e-6);
    const res = gradCheck((a, b) => dense(a, b), [x, w]);
    expect(res.ok, JSON.stringify(res.worst)).toBe(true);
  });

  it('has gradients that match finite differences for x, W and b', () => {
    const res = gradCheck((x, w, b) => dense(x, w, b), [randn([6, 4], 1), randn([4, 5], 2), randn([5], 3)]);
    expect(res.worst.map((e) => e.tensor)).toEqual(['input 0', 'input 1', 'input 2']);
    expect(res.ok, JSON.stringify(res.worst)).toBe(true);
  });

  it('has gradients that match tfjs’s stock matMul gradients', () => {
    const x = randn([7, 3], 4);
    const w = randn([3, 6], 5);
    const b = randn([6], 6);
    const r = randn([7, 6], 7);
    const ours = tf.grads((xx, ww, bb) => tf.sum(tf.mul(dense(xx, ww, bb), r)))([x, w, b]);
    const stock = tf.grads((xx, ww, bb) => tf.sum(tf.mul(tf.add(tf.matMul(xx as tf.Tensor2D, ww as tf.Tensor2D), bb), r)))([x, w, b]);
    ours.forEach((g, i) => expect(maxAbsDiff(g, stock[i] as tf.Tensor)).toBeLessThan(1e-5));
  });

  it('gives a wider-than-tall weight gradient the same value through either transpose order', () => {
    // in > out takes the (dyᵀ·x)ᵀ branch, in < out the xᵀ·dy branch
    for (const [i, o] of [
      [9, 2],
      [2, 9],
    ] as const) {
      const x = randn([5, i], 8);
      const w = randn([i, o], 9);
      const r = randn([5, o], 10);
      const [gw] = tf.grads((ww) => tf.sum(tf.mul(dense(x, ww), r)))([w]);
      expect(maxAbsDiff(gw as tf.Tensor, tf.matMul(x, r, true, false))).toBeLessThan(1e-5);
    }
  });

  it('computes no weight gradient for a frozen weight, and the input gradient is unchanged', () => {
    const x = randn([4, 3], 11);
    const w = tf.variable(randn([3, 2], 12), false);
    const r = randn([4, 2], 13);
    const [gx] = tf.grads((xx) => tf.sum(tf.mul(dense(xx, w), r)))([x]);
    expect(maxAbsDiff(gx as tf.Tensor, tf.matMul(r, w, false, true))).toBeLessThan(1e-5);
    // the frozen weight is not an input of the op: asking for its gradient finds no path
    expect(() => tf.grads((ww) => tf.sum(dense(x, ww, null, { weightGrad: false })))([w])).toThrow();
  });

  it('trains through a weight that is a temporary of the forward (saved, not read by closure) on wasm', async () => {
    await useBackend('wasm');
    const v = tf.variable(randn([4, 3], 20));
    const x = randn([5, 3], 21);
    const r = randn([5, 4], 22);
    // W = vᵀ is created inside the taped function and disposed when its forward ends
    const { grads } = tf.variableGrads(() => tf.sum<tf.Scalar>(tf.mul(dense(x, tf.transpose(v)), r)), [v]);
    expect(maxAbsDiff(grads[v.name] as tf.Tensor, tf.matMul(r, x, true, false))).toBeLessThan(1e-5);
  });

  it('rejects mismatched shapes with what it expected', () => {
    expect(() => dense(tf.zeros([2, 3]), tf.zeros([4, 5]))).toThrow(/x has 3 features, W expects 4/);
    expect(() => dense(tf.zeros([2, 3]), tf.zeros([3, 5]), tf.zeros([4]))).toThrow(/bias of shape \[5\]/);
    const rank1: tf.Tensor = tf.zeros([3]);
    expect(() => dense(rank1, tf.zeros([3, 5]))).toThrow(/rank >= 2/);
  });

  it('matches between cpu and wasm, forward and gradients', async () => {
    const res = await compareBackends(
      (x, w, b) => dense(x, w, b),
      () => [randn([33, 17], 1), randn([17, 9], 2), randn([9], 3)],
    );
    expect(res.ok, JSON.stringify(res.ratios)).toBe(true);
  });
});

describe('matMul2d', () => {
  it('has gradients for both operands that match finite differences', async () => {
    await useBackend('cpu');
    const res = gradCheck((a, b) => matMul2d(a, b), [randn([4, 5], 1), randn([5, 3], 2)]);
    expect(res.ok, JSON.stringify(res.worst)).toBe(true);
    expect(res.worst).toHaveLength(2);
  });

  it('matches between cpu and wasm', async () => {
    const res = await compareBackends((a, b) => matMul2d(a, b), () => [randn([20, 30], 1), randn([30, 7], 2)]);
    expect(res.ok, JSON.stringify(res.ratios)).toBe(true);
  });
});

describe('wasm kernels', () => {
  beforeEach(async () => {
    await useBackend('wasm');
  });

  it('splitRows equals tf.split exactly, for float32, int32 and bool', () => {
    const x = randn([12, 3, 2], 1);
    const ours = splitRows(x, 4);
    const ref = tf.split(x, 4, 0);
    expect(ours).toHaveLength(4);
    ours.forEach((t, i) => {
      expect(t.shape).toEqual([3, 3, 2]);
      expect(Array.from(t.dataSync())).toEqual(Array.from((ref[i] as tf.Tensor).dataSync()));
    });
    const ints = splitRows(tf.range(0, 6, 1, 'int32'), 3);
    expect(ints.map((t) => Array.from(t.dataSync()))).toEqual([
      [0, 1],
      [2, 3],
      [4, 5],
    ]);
    const bools = splitRows(tf.tensor1d([true, false, false, true], 'bool'), 2);
    expect(bools.map((t) => Array.from(t.dataSync()))).toEqual([
      [1, 0],
      [0, 1],
    ]);
  });

  it('splitRows is differentiable (its gradient concatenates) and rejects uneven splits', () => {
    const x = randn([6, 2], 2);
    const r = randn([6, 2], 3);
    const [g] = tf.grads((xx) => tf.addN(splitRows(xx, 3).map((p, i) => tf.sum(tf.mul(p, tf.slice(r, [2 * i, 0], [2, 2]))))))([x]);
    expect(maxAbsDiff(g as tf.Tensor, r)).toBe(0);
    expect(() => splitRows(x, 4)).toThrow(/divisible into 4/);
  });

  it('transposeLast2 equals tf.transpose exactly at ranks 2–4 and odd sizes', () => {
    for (const shape of [
      [37, 19],
      [3, 17, 33],
      [2, 3, 5, 40],
    ]) {
      const x = randn(shape, shape.length);
      const perm = [...shape.keys()];
      perm.splice(-2, 2, shape.length - 1, shape.length - 2);
      const ours = transposeLast2(x);
      expect(ours.shape).toEqual(perm.map((p) => shape[p]));
      expect(Array.from(ours.dataSync())).toEqual(Array.from(tf.transpose(x, perm).dataSync()));
    }
    const ints = tf.tensor2d([1, 2, 3, 4, 5, 6], [2, 3], 'int32');
    expect(transposeLast2(ints).arraySync()).toEqual([
      [1, 4],
      [2, 5],
      [3, 6],
    ]);
  });

  it('transposeLast2 is differentiable', () => {
    const x = randn([3, 4], 5);
    const r = randn([4, 3], 6);
    const [g] = tf.grads((xx) => tf.sum(tf.mul(transposeLast2(xx), r)))([x]);
    expect(maxAbsDiff(g as tf.Tensor, tf.transpose(r))).toBe(0);
  });

  it('matMulRaw equals tf.matMul exactly (wasm, straight through the kernel) and on cpu', async () => {
    const a = randn([13, 7], 8);
    const b = randn([7, 5], 9);
    const y = matMulRaw(a, b);
    expect(y.shape).toEqual([13, 5]);
    expect(Array.from(y.dataSync())).toEqual(Array.from(tf.matMul(a, b).dataSync()));
    await useBackend('cpu');
    expect(maxAbsDiff(matMulRaw(a, b), tf.matMul(a, b))).toBe(0);
  });

  it('sumOverRows equals a sum over axis 0', () => {
    const x = randn([300, 7], 7);
    const s = sumOverRows(x);
    expect(s.shape).toEqual([7]);
    expect(maxAbsDiff(s, tf.sum(x, 0))).toBeLessThan(1e-4);
  });
});

describe('useFastMatMulGradient', () => {
  it('gives the stock gradients for every transpose combination, rank 2 and 3, and sums broadcast batches', async () => {
    await useBackend('cpu');
    const cases: Array<{ a: number[]; b: number[]; ta: boolean; tb: boolean }> = [];
    for (const ta of [false, true]) {
      for (const tb of [false, true]) {
        cases.push({ a: ta ? [4, 3] : [3, 4], b: tb ? [5, 4] : [4, 5], ta, tb });
        cases.push({ a: ta ? [2, 4, 3] : [2, 3, 4], b: tb ? [2, 5, 4] : [2, 4, 5], ta, tb });
      }
    }
    const run = (c: (typeof cases)[number], seed: number): tf.Tensor[] => {
      const a = randn(c.a, seed);
      const b = randn(c.b, seed + 1);
      const outShape = tf.matMul(a, b, c.ta, c.tb).shape;
      const r = randn(outShape, seed + 2);
      return tf.grads((aa, bb) => tf.sum(tf.mul(tf.matMul(aa, bb, c.ta, c.tb), r)))([a, b]);
    };
    const stock = cases.map((c, i) => run(c, 10 * i));
    expect(useFastMatMulGradient()).toBe(true);
    expect(useFastMatMulGradient()).toBe(false);
    cases.forEach((c, i) => {
      const ours = run(c, 10 * i);
      ours.forEach((g, j) => expect(maxAbsDiff(g, (stock[i] as tf.Tensor[])[j] as tf.Tensor)).toBeLessThan(1e-5));
    });
    // broadcast batch: a [3, 2, 4] · b [1, 4, 5] → b's gradient sums over the batch
    const a = randn([3, 2, 4], 90);
    const b = randn([1, 4, 5], 91);
    const [, gb] = tf.grads((aa, bb) => tf.sum(tf.matMul(aa, bb)))([a, b]);
    expect((gb as tf.Tensor).shape).toEqual([1, 4, 5]);
    const expected = tf.sum(tf.matMul(a, tf.ones([3, 2, 5]), true, false), 0, true);
    expect(maxAbsDiff(gb as tf.Tensor, expected)).toBeLessThan(1e-5);
  });
});

describe('untaped', () => {
  it('returns the same value, records nothing for backward, and passes no gradient back', async () => {
    await useBackend('wasm');
    const w = tf.variable(tf.tensor2d(new Rng(3).normalArray(12), [4, 3]));
    const v = tf.variable(tf.tensor2d(new Rng(4).normalArray(6), [3, 2]));
    const x = tf.tensor2d(new Rng(5).normalArray(20), [5, 4]);
    const prefix = (t: tf.Tensor): tf.Tensor => tf.tanh(tf.matMul(t, w));
    const loss = (off: boolean): tf.Scalar => tf.sum(tf.matMul(off ? untaped(prefix, x) : prefix(x), v));
    expect(untaped(prefix, x).dataSync()).toEqual(prefix(x).dataSync());
    const on = savedForBackward(() => loss(false));
    const off = savedForBackward(() => loss(true));
    // tanh keeps its output and the first matMul its inputs on the tape; off the tape only v's product keeps its input
    expect(off.bytes).toBeLessThan(on.bytes);
    const { grads } = tf.variableGrads(() => loss(true), [w, v]);
    expect(grads[w.name]).toBeUndefined();
    const { grads: gv } = tf.variableGrads(() => loss(false), [v]);
    expect(Array.from((grads[v.name] as tf.Tensor).dataSync())).toEqual(Array.from((gv[v.name] as tf.Tensor).dataSync()));
    tf.dispose([w, v, x, ...Object.values(grads), ...Object.values(gv)]);
  });
});
