import { useBackend } from '@leanpass/core';
import { classCounts, createImageDataset, type ImageDataset } from '@leanpass/data';
import { buildVitTiny, replaceHead } from '@leanpass/models';
import { beforeAll, describe, expect, it } from 'vitest';
import { finetuneVit, loadTransferData } from './transfer.js';

/** A small ViT of the host family (same code paths, fewer channels) so the test stays fast. */
function smallVit(seed: number) {
  const m = buildVitTiny({ dims: [8, 16], depths: [1, 1], heads: 2, numClasses: 10, seed });
  replaceHead(m, 5, seed);
  return m;
}

/** n images whose class is readable from brightness, so a few updates can learn something. */
function toyData(n: number, seed: number): ImageDataset {
  const images = new Float32Array(n * 28 * 28);
  const labels: number[] = [];
  for (let i = 0; i < n; i++) {
    const c = (i * 7 + seed) % 5;
    labels.push(c);
    images.fill(0.1 + 0.2 * c, i * 784, (i + 1) * 784);
  }
  return createImageDataset({ images, labels, height: 28, width: 28, numClasses: 5 });
}

describe('transfer task', () => {
  beforeAll(async () => {
    await useBackend('wasm');
  });

  it('loads classes 5–9 relabelled 0–4, class-balanced and seeded', async () => {
    const a = await loadTransferData({ trainPerClass: 20, testPerClass: 10, seed: 3, source: 'bundled' });
    expect(a.source).toBe('bundled');
    expect(a.train.numClasses).toBe(5);
    expect(classCounts(a.train)).toEqual([20, 20, 20, 20, 20]);
    expect(classCounts(a.test)).toEqual([10, 10, 10, 10, 10]);
    expect(a.train.classNames).toEqual(['Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot']);
    const b = await loadTransferData({ trainPerClass: 20, testPerClass: 10, seed: 3, source: 'bundled' });
    expect(Array.from(b.train.images)).toEqual(Array.from(a.train.images));
    const c = await loadTransferData({ trainPerClass: 20, testPerClass: 10, seed: 4, source: 'bundled' });
    expect(Array.from(c.train.images)).not.toEqual(Array.from(a.train.images));
    await expect(loadTransferData({ trainPerClass: 201, source: 'bundled' })).rejects.toThrow(/trainPerClass in \[1, 200\]/);
  });

  it('fine-tunes deterministically: same seed, same losses and accuracy; the loss falls on a learnable task', async () => {
    const train = toyData(64, 0);
    const test = toyData(40, 1);
    const run = async () => finetuneVit(smallVit(1), { train, test, epochs: 3, batchSize: 16, lr: 3e-3, seed: 5, evalBatchSize: 20 });
    const r1 = await run();
    const r2 = await run();
    expect(r1.steps).toBe(12);
    expect(r1.curve.map((c) => c.loss)).toEqual(r2.curve.map((c) => c.loss));
    expect(r1.accuracy).toBe(r2.accuracy);
    expect(r1.meanStepMs).toBeGreaterThan(0);
    expect(r1.medianStepMs).toBeGreaterThan(0);
    const first = r1.curve.slice(0, 4).reduce((s, c) => s + c.loss, 0) / 4;
    const last = r1.curve.slice(-4).reduce((s, c) => s + c.loss, 0) / 4;
    expect(last).toBeLessThan(first);
    await expect(finetuneVit(smallVit(1), { train, test, steps: 0 })).rejects.toThrow(/at least one update/);
  });

  it('headSteps (LP-FT): the probing phase updates only the head, then every trainable parameter; flags restored', async () => {
    const train = toyData(64, 0);
    const test = toyData(40, 1);
    const model = smallVit(2);
    const snapshot = (): Map<string, Float32Array> => new Map([...model.namedParams()].map(([path, p]) => [path, p.variable.dataSync().slice() as Float32Array]));
    const before = snapshot();
    const frozenBefore = [...model.namedParams()].filter(([, p]) => !p.trainable).map(([path]) => path);
    let afterProbe: Map<string, Float32Array> | undefined;
    let dones = 0;
    const res = await finetuneVit(model, {
      train,
      test,
      steps: 3,
      headSteps: 4,
      batchSize: 16,
      lr: 3e-3,
      seed: 5,
      evalBatchSize: 20,
      onEvent: (e) => {
        if (e.type === 'done' && dones++ === 0) afterProbe = snapshot();
      },
    });
    expect(res.steps).toBe(3);
    expect(res.headSteps).toBe(4);
    expect(res.curve).toHaveLength(3);
    expect(afterProbe).toBeDefined();
    const probed = afterProbe as Map<string, Float32Array>;
    const after = snapshot();
    for (const [path, v] of before) {
      const changedInProbe = !Array.from(probed.get(path) as Float32Array).every((x, i) => x === v[i]);
      const changedAtEnd = !Array.from(after.get(path) as Float32Array).every((x, i) => x === v[i]);
      expect(changedInProbe, path).toBe(path.startsWith('head.'));
      expect(changedAtEnd, path).toBe(true);
    }
    expect([...model.namedParams()].filter(([, p]) => !p.trainable).map(([path]) => path)).toEqual(frozenBefore);
    await expect(finetuneVit(smallVit(1), { train, test, steps: 1, headSteps: -1 })).rejects.toThrow(/headSteps/);
    model.dispose();
  });
});
