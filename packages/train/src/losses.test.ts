import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, useBackend } from '@leanpass/core';
import { accuracy, mse, softmaxCrossEntropy } from './losses.js';

const near = (v: number, digits = 6): number => expect.closeTo(v, digits) as number;

/** Reference cross-entropy in float64. */
function refCe(logits: number[][], labels: number[], eps = 0): number {
  let total = 0;
  for (let r = 0; r < logits.length; r++) {
    const z = logits[r] as number[];
    const m = Math.max(...z);
    const lse = m + Math.log(z.reduce((s, v) => s + Math.exp(v - m), 0));
    const c = z.length;
    for (let k = 0; k < c; k++) {
      const t = (k === labels[r] ? 1 - eps : 0) + eps / c;
      total -= t * ((z[k] as number) - lse);
    }
  }
  return total / logits.length;
}

describe('losses', () => {
  beforeAll(async () => {
    await useBackend('cpu');
  });

  it('cross-entropy matches a float64 reference, with and without label smoothing', () => {
    const z = [
      [1, 2, 0.5],
      [-1, 0, 3],
      [0.2, 0.1, -0.3],
    ];
    const y = [1, 2, 0];
    const logits = tf.tensor2d(z);
    const labels = tf.tensor1d(y, 'int32');
    expect(softmaxCrossEntropy(logits, labels).dataSync()[0]).toBeCloseTo(refCe(z, y), 6);
    expect(softmaxCrossEntropy(logits, labels, { labelSmoothing: 0.1 }).dataSync()[0]).toBeCloseTo(refCe(z, y, 0.1), 6);
    // float labels holding ids work too
    expect(softmaxCrossEntropy(logits, tf.tensor1d(y)).dataSync()[0]).toBeCloseTo(refCe(z, y), 6);
  });

  it('is stable for huge logits', () => {
    const z = [
      [1000, 0, -1000],
      [-500, 500, 499],
    ];
    const v = softmaxCrossEntropy(tf.tensor2d(z), tf.tensor1d([0, 2], 'int32')).dataSync()[0] as number;
    expect(Number.isFinite(v)).toBe(true);
    expect(v).toBeCloseTo(refCe(z, [0, 2]), 4);
  });

  it('has gradient (softmax − onehot)/N', () => {
    const z = tf.tensor2d([
      [0.3, -0.2, 1.1, 0],
      [2, 1, 0, -1],
    ]);
    const y = tf.tensor1d([2, 0], 'int32');
    const g = tf.grad((x: tf.Tensor) => softmaxCrossEntropy(x, y))(z);
    const want = tf.div(tf.sub(tf.softmax(z), tf.oneHot(y, 4)), 2);
    expect(Array.from(g.dataSync())).toEqual(Array.from(want.dataSync()).map((v) => near(v, 6)));
  });

  it('accepts target distributions and higher-rank logits', () => {
    const z = tf.tensor3d([[[1, 2], [0, 0]], [[3, -1], [0.5, 0.25]]]);
    const ids = tf.tensor2d([[1, 0], [0, 1]], [2, 2], 'int32');
    const dist = tf.oneHot(tf.reshape(ids, [2, 2]), 2);
    const a = softmaxCrossEntropy(z, ids).dataSync()[0] as number;
    const b = softmaxCrossEntropy(z, dist).dataSync()[0] as number;
    expect(b).toBeCloseTo(a, 6);
    expect(a).toBeCloseTo(refCe([[1, 2], [0, 0], [3, -1], [0.5, 0.25]], [1, 0, 0, 1]), 6);
  });

  it('rejects mismatched labels and bad smoothing', () => {
    const z = tf.zeros([2, 3]);
    expect(() => softmaxCrossEntropy(z, tf.zeros([3], 'int32'))).toThrow(/expected labels of shape \[2\].*found \[3\]/);
    expect(() => softmaxCrossEntropy(z, tf.zeros([2], 'int32'), { labelSmoothing: 1 })).toThrow(ConfigError);
  });

  it('mse and accuracy', () => {
    expect(mse(tf.tensor1d([1, 2, 3]), tf.tensor1d([1, 0, 6])).dataSync()[0]).toBeCloseTo((0 + 4 + 9) / 3, 6);
    expect(() => mse(tf.zeros([2]), tf.zeros([3]))).toThrow(ConfigError);
    const z = tf.tensor2d([
      [0, 1, 0],
      [5, 1, 0],
      [0, 0, 1],
      [1, 0, 0],
    ]);
    expect(accuracy(z, tf.tensor1d([1, 0, 0, 0], 'int32')).dataSync()[0]).toBeCloseTo(0.75, 6);
    expect(accuracy(z, tf.oneHot(tf.tensor1d([1, 1, 2, 0], 'int32'), 3)).dataSync()[0]).toBeCloseTo(0.75, 6);
  });
});
