import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { BackendError } from './errors.js';
import { useBackend } from './backend.js';

describe('useBackend', () => {
  it('loads wasm from node_modules and computes', async () => {
    const info = await useBackend('wasm');
    expect(info.name).toBe('wasm');
    expect(tf.getBackend()).toBe('wasm');
    const y = tf.matMul(tf.tensor2d([[1, 2]]), tf.tensor2d([[3], [4]]));
    expect(Array.from(await y.data())).toEqual([11]);
  });
  it('falls back to cpu on request', async () => {
    await useBackend('cpu');
    expect(tf.getBackend()).toBe('cpu');
  });
  it('names the install command when tensorflow is absent', async () => {
    await expect(useBackend('tensorflow')).rejects.toThrow(/npm install @tensorflow\/tfjs-node/);
    await expect(useBackend('tensorflow')).rejects.toBeInstanceOf(BackendError);
  });
  it('rejects unknown backends', async () => {
    // @ts-expect-error deliberately wrong
    await expect(useBackend('webgpu')).rejects.toThrow(/expected one of wasm, cpu, tensorflow/);
  });
});
