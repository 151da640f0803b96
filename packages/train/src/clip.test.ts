import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, useBackend } from '@leanpass/core';
import { clipByGlobalNorm, clipByValue, globalNorm } from './clip.js';

const near = (v: number, digits = 6): number => expect.closeTo(v, digits) as number;

const norm = (ts: tf.Tensor[]): number => Math.sqrt(ts.reduce((s, t) => s + Array.from(t.dataSync()).reduce((a, v) => a + v * v, 0), 0));

describe('gradient clipping', () => {
  beforeAll(async () => {
    await useBackend('cpu');
  });

  it('computes the global norm over every tensor', () => {
    const gs = [tf.tensor1d([3, 0]), tf.tensor2d([[0, 4]]), tf.scalar(12)];
    expect(globalNorm(gs).dataSync()[0]).toBeCloseTo(13, 5);
    expect(globalNorm([]).dataSync()[0]).toBe(0);
  });

  it('scales down to the bound, keeping the direction, and leaves small gradients alone', () => {
    const gs = [tf.tensor1d([3, -4, 1]), tf.tensor2d([[2, 2]])];
    const before = norm(gs);
    const clipped = clipByGlobalNorm(gs, 1);
    expect(norm(clipped)).toBeLessThanOrEqual(1);
    expect(norm(clipped)).toBeCloseTo(1, 5);
    const ratio = (clipped[0]?.dataSync()[0] as number) / 3;
    expect(Array.from(clipped[1]!.dataSync())).toEqual([2 * ratio, 2 * ratio].map((v) => near(v, 6)));
    expect(ratio).toBeCloseTo(1 / before, 5);
    const same = clipByGlobalNorm(gs, 100);
    expect(Array.from(same[0]!.dataSync())).toEqual([3, -4, 1].map((v) => near(v, 6)));
  });

  it('clips by value', () => {
    const [c] = clipByValue([tf.tensor1d([-5, -0.5, 0.2, 9])], 1);
    expect(Array.from(c!.dataSync())).toEqual([-1, -0.5, near(0.2, 6), 1]);
    expect(() => clipByValue([], 0)).toThrow(ConfigError);
    expect(() => clipByGlobalNorm([], -1)).toThrow(ConfigError);
  });
});
