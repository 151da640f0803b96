import * as tf from '@tensorflow/tfjs';
import { Rng, useBackend } from '@leanpass/core';
import { beforeEach, describe, expect, it } from 'vitest';
import { compareBackends, gradCheck } from './gradcheck.js';

function randn(shape: number[], seed: number): tf.Tensor {
  return tf.tensor(new Rng(seed).normalArray(shape.reduce((a, b) => a * b, 1)), shape);
}

/** x·y elementwise with a gradient for y that is off by `factor`. */
function skewedMul(factor: number): (x: tf.Tensor, y: tf.Tensor) => tf.Tensor {
  return tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [x, y, save] = args as [tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    save([x, y]);
    return {
      value: tf.mul(x, y),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => [tf.mul(dy, saved[1] as tf.Tensor), tf.mul(tf.mul(dy, saved[0] as tf.Tensor), factor)],
    };
  });
}

describe('gradCheck', () => {
  beforeEach(async () => {
    await useBackend('cpu');
  });

  it('passes a correct gradient and fails one that is 5% off, naming the tensor', () => {
    const inputs = [randn([3, 4], 1), randn([3, 4], 2)];
    expect(gradCheck((x, y) => skewedMul(1)(x, y), inputs).ok).toBe(true);
    const bad = gradCheck((x, y) => skewedMul(1.05)(x, y), inputs);
    expect(bad.ok).toBe(false);
    expect(bad.worst.find((e) => e.ratio > 1)?.tensor).toBe('input 1');
    expect(bad.worst.find((e) => e.tensor === 'input 0')?.ratio).toBeLessThanOrEqual(1);
  });

  it('checks closure variables given as params, and restores them', () => {
    const w = tf.variable(randn([4], 3));
    const before = Array.from(w.dataSync());
    const res = gradCheck((x) => tf.mul(tf.sin(x), w), [randn([2, 4], 4)], { params: [w], samples: 4 });
    expect(res.ok, JSON.stringify(res.worst)).toBe(true);
    expect(res.worst.map((e) => e.tensor)).toEqual(['input 0', `param ${w.name}`]);
    expect(res.checked).toBe(8);
    expect(Array.from(w.dataSync())).toEqual(before);
  });

  it('rejects non-float inputs', () => {
    expect(() => gradCheck((x) => x, [tf.tensor1d([1], 'int32')])).toThrow(/float32 inputs/);
  });
});

describe('compareBackends', () => {
  it('agrees for the same computation and restores the backend', async () => {
    await useBackend('cpu');
    const res = await compareBackends((x) => tf.tanh(tf.matMul(x as tf.Tensor2D, x as tf.Tensor2D, false, true)), () => [randn([5, 3], 5)]);
    expect(res.ok, JSON.stringify(res.ratios)).toBe(true);
    expect(Object.keys(res.ratios)).toEqual(['output', 'grad input 0']);
    expect(tf.getBackend()).toBe('cpu');
  });

  it('detects a computation that differs between backends, in the output and in the gradient', async () => {
    const res = await compareBackends((x) => tf.mul(x, tf.getBackend() === 'wasm' ? 1.01 : 1), () => [randn([10], 6)]);
    expect(res.ok).toBe(false);
    expect(res.ratios['output']).toBeGreaterThan(1);
    expect(res.ratios['grad input 0']).toBeGreaterThan(1);
  });
});
