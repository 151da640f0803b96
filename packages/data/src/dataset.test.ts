import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '@leanpass/core';
import {
  batchCount,
  classBalancedIndices,
  classCounts,
  createImageDataset,
  epochBatchIndices,
  epochBatches,
  epochPermutation,
  makeBatch,
  selectClasses,
  subsetDataset,
  trainValSplit,
} from './dataset.js';
import type { ImageDataset } from './dataset.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const H = 4;
const W = 3;
/** n images of H×W whose pixel (r, c) of image i is i + (r·W + c)/100: every value says where it came from. Label = i mod k. */
function synthetic(n: number, k = 10, names = false): ImageDataset {
  const images = new Float32Array(n * H * W);
  for (let i = 0; i < n; i++) for (let p = 0; p < H * W; p++) images[i * H * W + p] = i + p / 100;
  const labels = Array.from({ length: n }, (_, i) => i % k);
  return createImageDataset({ images, labels, height: H, width: W, numClasses: k, ...(names ? { classNames: Array.from({ length: k }, (_, c) => `class-${c}`) } : {}) });
}

const isPermutation = (p: ArrayLike<number>, n: number): boolean => p.length === n && Array.from(p).sort((a, b) => a - b).every((v, i) => v === i);

describe('createImageDataset', () => {
  it('infers numClasses and checks sizes, lists every problem', () => {
    const ds = createImageDataset({ images: new Float32Array(3 * 2 * 2), labels: [0, 4, 2], height: 2, width: 2 });
    expect([ds.n, ds.numClasses, ds.channels]).toEqual([3, 5, 1]);
    try {
      createImageDataset({ images: new Float32Array(5), labels: [0, 1, 3], height: 2, width: 2, numClasses: 3, classNames: ['a', 'b'] });
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      const paths = (err as ConfigError).issues.map((i) => i.path);
      expect(paths).toEqual(['images', 'labels', 'classNames']);
      expect((err as ConfigError).message).toContain('expected 3 labels × 2×2×1 = 12 values, found 5');
    }
    expect(() => createImageDataset({ images: new Float32Array(4), labels: [-1], height: 2, width: 2 })).toThrow(/class index ≥ 0, found -1/);
  });

  it('subsetDataset copies the chosen examples in the given order', () => {
    const ds = synthetic(6);
    const sub = subsetDataset(ds, [4, 1, 4]);
    expect(sub.n).toBe(3);
    expect(Array.from(sub.labels)).toEqual([4, 1, 4]);
    expect(sub.images[0]).toBeCloseTo(4, 6);
    expect(sub.images[H * W + 5]).toBeCloseTo(1.05, 6);
    sub.images[0] = -1;
    expect(ds.images[4 * H * W]).toBeCloseTo(4, 6);
    expect(() => subsetDataset(ds, [6])).toThrow(/indices in \[0, 6\), found 6/);
  });
});

describe('splits and class subsets', () => {
  it('trainValSplit is a seeded partition that keeps class proportions and order', () => {
    const ds = synthetic(1000);
    const a = trainValSplit(ds, { seed: 7 });
    const b = trainValSplit(ds, { seed: 7 });
    const c = trainValSplit(ds, { seed: 8 });
    expect(Array.from(a.valIndices)).toEqual(Array.from(b.valIndices));
    expect(Array.from(a.valIndices)).not.toEqual(Array.from(c.valIndices));
    expect(isPermutation([...a.trainIndices, ...a.valIndices], 1000)).toBe(true);
    expect(classCounts(a.val)).toEqual(new Array<number>(10).fill(10));
    expect(classCounts(a.train)).toEqual(new Array<number>(10).fill(90));
    for (const idx of [a.trainIndices, a.valIndices]) for (let i = 1; i < idx.length; i++) expect(idx[i]!).toBeGreaterThan(idx[i - 1]!);
    // the val dataset holds the examples it names
    a.valIndices.forEach((k, i) => expect(a.val.images[i * H * W]).toBeCloseTo(k, 4));
    const flat = trainValSplit(ds, { seed: 7, valFraction: 0.25, stratify: false });
    expect(flat.val.n).toBe(250);
    expect(flat.train.n).toBe(750);
    expect(() => trainValSplit(ds, { seed: 1, valFraction: 1 })).toThrow(ConfigError);
  });

  it('classBalancedIndices takes perClass of every class, seeded, ascending', () => {
    const labels = Array.from({ length: 500 }, (_, i) => (i * 7) % 5);
    const a = classBalancedIndices(labels, { perClass: 30, numClasses: 5, seed: 3 });
    expect(a.length).toBe(150);
    const counts = [0, 0, 0, 0, 0];
    for (const k of a) counts[labels[k]!]!++;
    expect(counts).toEqual([30, 30, 30, 30, 30]);
    for (let i = 1; i < a.length; i++) expect(a[i]!).toBeGreaterThan(a[i - 1]!);
    expect(Array.from(classBalancedIndices(labels, { perClass: 30, numClasses: 5, seed: 3 }))).toEqual(Array.from(a));
    expect(Array.from(classBalancedIndices(labels, { perClass: 30, numClasses: 5, seed: 4 }))).not.toEqual(Array.from(a));
    expect(() => classBalancedIndices(labels, { perClass: 101, numClasses: 5, seed: 3 })).toThrow(/class 0 has 100 example\(s\), fewer than perClass = 101/);
  });

  it('selectClasses keeps the chosen classes and remaps 5–9 to 0–4 (names follow)', () => {
    const ds = synthetic(40, 10, true);
    const target = selectClasses(ds, [5, 6, 7, 8, 9]);
    expect(target.n).toBe(20);
    expect(target.numClasses).toBe(5);
    expect(target.classNames).toEqual(['class-5', 'class-6', 'class-7', 'class-8', 'class-9']);
    for (let i = 0; i < target.n; i++) {
      const original = Math.round(target.images[i * H * W]!); // the original index
      expect(original % 10).toBe(target.labels[i]! + 5);
    }
    const reordered = selectClasses(ds, [3, 1]);
    expect(Array.from(reordered.labels.subarray(0, 4))).toEqual([1, 0, 1, 0]);
    const kept = selectClasses(ds, [0, 1, 2, 3, 4], { remap: false });
    expect(kept.numClasses).toBe(10);
    expect(Math.max(...kept.labels)).toBe(4);
    expect(() => selectClasses(ds, [1, 1])).toThrow(/listed twice/);
    expect(() => selectClasses(ds, [10])).toThrow(/\[0, 10\), found 10/);
  });
});

describe('epoch order and batches', () => {
  it('epochPermutation is a pure function of (seed, epoch)', () => {
    const p = epochPermutation(257, 11, 3);
    expect(isPermutation(p, 257)).toBe(true);
    expect(Array.from(epochPermutation(257, 11, 3))).toEqual(Array.from(p));
    expect(Array.from(epochPermutation(257, 11, 4))).not.toEqual(Array.from(p));
    expect(Array.from(epochPermutation(257, 12, 3))).not.toEqual(Array.from(p));
    expect(() => epochPermutation(5, 1, -1)).toThrow(RangeError);
  });

  it('batches of an epoch cover every example once in the epoch order; the last one may be partial', () => {
    const ds = synthetic(23);
    const order = epochPermutation(23, 5, 2);
    const idx = epochBatchIndices(23, { batchSize: 5, seed: 5, epoch: 2 });
    expect(idx.map((b) => b.length)).toEqual([5, 5, 5, 5, 3]);
    expect(idx.flatMap((b) => Array.from(b))).toEqual(Array.from(order));
    expect(epochBatchIndices(23, { batchSize: 5, seed: 5, epoch: 2, dropLast: true }).map((b) => b.length)).toEqual([5, 5, 5, 5]);
    expect([batchCount(23, 5), batchCount(23, 5, true), batchCount(20, 5, true)]).toEqual([5, 4, 4]);
    const plain = epochBatchIndices(7, { batchSize: 3, seed: 5, shuffle: false });
    expect(plain.map((b) => Array.from(b))).toEqual([[0, 1, 2], [3, 4, 5], [6]]);

    const before = tf.memory().numTensors;
    const seen: number[] = [];
    for (const batch of epochBatches(ds, { batchSize: 5, seed: 5, epoch: 2 })) {
      const b = batch.indices.length;
      expect(batch.x.shape).toEqual([b, H, W, 1]);
      expect(batch.x.dtype).toBe('float32');
      expect(batch.y.dtype).toBe('int32');
      const x = batch.x.dataSync();
      const y = batch.y.dataSync();
      batch.indices.forEach((k, i) => {
        expect(x[i * H * W + 7]).toBeCloseTo(k + 0.07, 4);
        expect(y[i]).toBe(k % 10);
      });
      seen.push(...batch.indices);
      batch.x.dispose();
      batch.y.dispose();
    }
    expect(seen).toEqual(Array.from(order));
    expect(tf.memory().numTensors).toBe(before);
  });

  it('resuming at startBatch gives the same batches as the uninterrupted epoch', () => {
    const ds = synthetic(30);
    const full = [...epochBatches(ds, { batchSize: 4, seed: 9, epoch: 1 })];
    const resumed = [...epochBatches(ds, { batchSize: 4, seed: 9, epoch: 1, startBatch: 5 })];
    expect(resumed.map((b) => b.index)).toEqual([5, 6, 7]);
    resumed.forEach((b, i) => {
      const f = full[i + 5]!;
      expect(Array.from(b.indices)).toEqual(Array.from(f.indices));
      expect(Array.from(b.x.dataSync())).toEqual(Array.from(f.x.dataSync()));
    });
    for (const b of [...full, ...resumed]) tf.dispose([b.x, b.y]);
  });

  it('padTo centres the image in zeros; oneHot gives float32 [B, K]', () => {
    const ds = synthetic(3);
    const { x, y } = makeBatch(ds, [2, 0], { padTo: 8, oneHot: true });
    expect(x.shape).toEqual([2, 8, 8, 1]);
    const v = x.dataSync();
    // H=4 → rows 2..5, W=3 → cols 2..4 (left pad floor((8−3)/2) = 2)
    let borderSum = 0;
    for (let i = 0; i < 2; i++) {
      const k = [2, 0][i]!;
      for (let r = 0; r < 8; r++) {
        for (let c = 0; c < 8; c++) {
          const val = v[(i * 8 + r) * 8 + c]!;
          const inside = r >= 2 && r < 6 && c >= 2 && c < 5;
          if (inside) expect(val).toBeCloseTo(k + ((r - 2) * W + (c - 2)) / 100, 5);
          else borderSum += Math.abs(val);
        }
      }
    }
    expect(borderSum).toBe(0);
    expect(y.shape).toEqual([2, 10]);
    expect(y.dtype).toBe('float32');
    expect(Array.from(y.dataSync()).map((t, j) => (t === 1 ? j : -1)).filter((j) => j >= 0)).toEqual([2, 10]);
    tf.dispose([x, y]);
    expect(() => makeBatch(ds, [0], { padTo: 3 })).toThrow(/padTo must be an integer ≥ the image size 4×3, found 3/);
  });

  it('28×28 padded to 32×32 preserves every pixel sum', () => {
    const n = 2;
    const images = new Float32Array(n * 28 * 28);
    for (let i = 0; i < images.length; i++) images[i] = ((i * 2654435761) % 1000) / 1000;
    const ds = createImageDataset({ images, labels: [0, 1], height: 28, width: 28 });
    const { x, y } = makeBatch(ds, [0, 1], { padTo: 32 });
    expect(x.shape).toEqual([2, 32, 32, 1]);
    const sums = tf.sum(x, [1, 2, 3]).dataSync();
    const expected = [0, 1].map((i) => images.subarray(i * 784, (i + 1) * 784).reduce((a, b) => a + b, 0));
    expect(sums[0]).toBeCloseTo(expected[0]!, 2);
    expect(sums[1]).toBeCloseTo(expected[1]!, 2);
    expect(x.dataSync()[(0 * 32 + 2) * 32 + 2]).toBe(images[0]);
    tf.dispose([x, y]);
  });
});
