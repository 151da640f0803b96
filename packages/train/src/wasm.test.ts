import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useBackend } from '@leanpass/core';
import { blobSource, blobs, makeMlp, snapshot } from '../test/fixtures.js';
import { AdamW, SGD, Trainer, evaluateClassifier, warmupCosineSchedule } from './index.js';

let dir: string;
const DATA = blobs(96, 21);

beforeAll(async () => {
  await useBackend('wasm');
  dir = await mkdtemp(join(tmpdir(), 'leanpass-train-wasm-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('Trainer on wasm', () => {
  it('trains (one-hot cross-entropy, no gather), with a constant tensor count per step', async () => {
    expect(tf.getBackend()).toBe('wasm');
    const model = makeMlp(1, { dropout: 0.1 });
    const held = blobSource(DATA, 32);
    const before = await evaluateClassifier(model, held(0, { seed: 5 }));
    const trainer = new Trainer(model, { optimizer: new AdamW({ weightDecay: 0.01 }), lr: warmupCosineSchedule({ peak: 0.03, warmupSteps: 4, totalSteps: 48 }), clipNorm: 5 });
    const counts: number[] = [];
    const losses: number[] = [];
    const summary = await trainer.run({ data: blobSource(DATA, 16), epochs: 8, eval: { fn: (m) => evaluateClassifier(m, held(0, { seed: 5 })) } }, (e) => {
      if (e.type === 'step') {
        counts.push(tf.memory().numTensors);
        losses.push(e.loss);
      }
    });
    expect(new Set(counts).size).toBe(1);
    expect(summary.metrics!['accuracy']).toBeGreaterThan(0.9);
    expect(summary.metrics!['loss']).toBeLessThan(before.loss / 3);
    expect(losses.slice(-6).reduce((a, b) => a + b) / 6).toBeLessThan(losses.slice(0, 6).reduce((a, b) => a + b) / 6 / 3);
  });

  it('resumes exactly from a checkpoint', async () => {
    const make = (seed: number) => new Trainer(makeMlp(seed, { dropout: 0.2 }), { optimizer: new SGD({ momentum: 0.9, nesterov: true }), lr: 0.05, seed: 4 });
    const straight = make(1);
    await straight.run({ data: blobSource(DATA, 16), steps: 10 });
    const ck = join(dir, 'resume');
    await make(1).run({ data: blobSource(DATA, 16), steps: 5, checkpoint: { dir: ck } });
    const resumed = make(2);
    await resumed.run({ data: blobSource(DATA, 16), steps: 10, resume: ck });
    expect(snapshot(resumed.model)).toEqual(snapshot(straight.model));
  });
});
