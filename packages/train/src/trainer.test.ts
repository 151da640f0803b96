import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { firstValueFrom, lastValueFrom, toArray } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CancelledError, ConfigError, FormatError, useBackend, type RunContext } from '@leanpass/core';
import { blobSource, blobs, makeMlp, snapshot } from '../test/fixtures.js';
import {
  AdamW,
  SGD,
  TrainingDivergedError,
  Trainer,
  evaluateClassifier,
  findLatestCheckpoint,
  listCheckpoints,
  loadCheckpointWeights,
  readCheckpoint,
  softmaxCrossEntropy,
  warmupCosineSchedule,
  type Batch,
  type TrainEvent,
} from './index.js';

let dir: string;
const DATA = blobs(96, 7);

beforeAll(async () => {
  await useBackend('cpu');
  dir = await mkdtemp(join(tmpdir(), 'leanpass-train-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const events = (obs: ReturnType<Trainer['fit']>): Promise<TrainEvent[]> => lastValueFrom(obs.pipe(toArray()));
const ofType = <T extends TrainEvent['type']>(evs: TrainEvent[], t: T) => evs.filter((e): e is Extract<TrainEvent, { type: T }> => e.type === t);

describe('Trainer', () => {
  it('reduces the loss on a learnable task and evaluates it', async () => {
    const model = makeMlp(1);
    const trainer = new Trainer(model, { optimizer: new AdamW({ weightDecay: 0 }), lr: 0.02, seed: 3 });
    const source = blobSource(DATA, 16);
    const held = blobSource(DATA, 16);
    const evalFn = (m: typeof model) => evaluateClassifier(m, held(0, { seed: 99 }));
    const before = await evalFn(model);
    const evs = await events(trainer.fit({ data: source, epochs: 8, eval: { fn: evalFn, every: 12 } }));
    const steps = ofType(evs, 'step');
    expect(steps).toHaveLength(8 * 6);
    expect(steps.map((s) => s.step)).toEqual(Array.from({ length: 48 }, (_, i) => i + 1));
    expect(steps[47]!.epoch).toBe(7);
    const evals = ofType(evs, 'eval');
    expect(evals.map((e) => e.step)).toEqual([12, 24, 36, 48]);
    const done = ofType(evs, 'done')[0]!.summary;
    expect(done).toMatchObject({ step: 48, stepsRun: 48, epoch: 8, reason: 'epochs' });
    expect(done.metrics!['accuracy']).toBeGreaterThan(0.9);
    expect(done.metrics!['loss']).toBeLessThan(before.loss / 3);
    const firstEpoch = steps.slice(0, 6).reduce((s, e) => s + e.loss, 0) / 6;
    const lastEpoch = steps.slice(-6).reduce((s, e) => s + e.loss, 0) / 6;
    expect(lastEpoch).toBeLessThan(firstEpoch / 3);
    expect(evs.at(-1)!.type).toBe('done');
    // each epoch opened once, in order, with the trainer's seed
    expect(source.opened).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  });

  it('keeps numTensors constant from step to step and frees everything at the end', async () => {
    const model = makeMlp(2, { dropout: 0.25 });
    const opt = new AdamW();
    const start = tf.memory().numTensors;
    const trainer = new Trainer(model, { optimizer: opt, lr: 0.01, clipNorm: 0.5, clipValue: 0.1 });
    const counts: number[] = [];
    await trainer.run({ data: blobSource(DATA, 16), steps: 10 }, (e) => {
      if (e.type === 'step') counts.push(tf.memory().numTensors);
    });
    expect(counts).toHaveLength(10);
    expect(new Set(counts).size).toBe(1);
    // what remains is exactly the optimizer state (m and v per trainable parameter)
    expect(counts[0]).toBe(start + 2 * 4);
    opt.dispose();
    expect(tf.memory().numTensors).toBe(start);
  });

  it('never computes gradients for frozen parameters and leaves them unchanged', async () => {
    const model = makeMlp(3);
    model.child('fc1').setTrainable(false);
    // A guard on the frozen weight: its gradient function throws if backprop ever reaches it.
    const fc1 = model.child('fc1');
    const guarded = tf.customGrad((x, w) => ({
      value: tf.matMul(x as tf.Tensor2D, w as tf.Tensor2D),
      gradFunc: () => {
        throw new Error('gradient of a frozen parameter was computed');
      },
    }));
    const loss = (m: typeof model, b: Batch, ctx: { run: RunContext }) => {
      const h = tf.relu(tf.add(guarded(b.x, fc1.param('weight').variable), fc1.param('bias').variable));
      return softmaxCrossEntropy(m.child('fc2').call(h, ctx.run) as tf.Tensor, b.y);
    };
    const before = snapshot(model);
    const trainer = new Trainer(model, { optimizer: new SGD({ momentum: 0.9, weightDecay: 0.1 }), lr: 0.1 });
    await trainer.run({ data: blobSource(DATA, 16), steps: 5, loss });
    const after = snapshot(model);
    expect(after.get('fc1.weight')).toEqual(before.get('fc1.weight'));
    expect(after.get('fc1.bias')).toEqual(before.get('fc1.bias'));
    expect(after.get('fc2.weight')).not.toEqual(before.get('fc2.weight'));
    // the optimizer holds no state for frozen parameters
    expect(Object.keys(trainer.optimizer.getState().counts)).toEqual(['fc2.bias', 'fc2.weight']);
  });

  it('honours Param.trainable even when the variable was created non-trainable', async () => {
    const model = makeMlp(4);
    model.setTrainable(false);
    const trainer = new Trainer(model, { optimizer: new SGD(), lr: 0.1 });
    await expect(trainer.run({ data: blobSource(DATA, 16), steps: 1 })).rejects.toThrow(/at least one parameter with trainable = true/);
    const w = model.child('fc2').param('weight');
    w.variable.trainable = false;
    w.trainable = true;
    const before = snapshot(model);
    await trainer.run({ data: blobSource(DATA, 16), steps: 2 });
    expect(snapshot(model).get('fc2.weight')).not.toEqual(before.get('fc2.weight'));
    expect(snapshot(model).get('fc2.bias')).toEqual(before.get('fc2.bias'));
  });

  it('clips the gradient norm: plain SGD moves the weights by exactly lr·clipNorm', async () => {
    const model = makeMlp(5);
    const trainer = new Trainer(model, { optimizer: new SGD(), lr: 1, clipNorm: 1e-3 });
    const before = snapshot(model);
    const evs = await events(trainer.fit({ data: blobSource(DATA, 16), steps: 1 }));
    const step = ofType(evs, 'step')[0]!;
    expect(step.gradNorm).toBeGreaterThan(1e-3);
    expect(step.clipped).toBe(true);
    let sq = 0;
    const after = snapshot(model);
    for (const [p, v] of before) v.forEach((x, i) => (sq += (after.get(p)![i]! - x) ** 2));
    expect(Math.sqrt(sq)).toBeLessThanOrEqual(1e-3 * (1 + 1e-4));
    expect(Math.sqrt(sq)).toBeCloseTo(1e-3, 5);
  });

  it('does not report clipping when the gradients are below the bounds', async () => {
    const trainer = new Trainer(makeMlp(5), { optimizer: new SGD(), lr: 0.1, clipNorm: 1e6, clipValue: 1e6 });
    const evs = await events(trainer.fit({ data: blobSource(DATA, 16), steps: 2 }));
    expect(ofType(evs, 'step').map((s) => s.clipped)).toEqual([false, false]);
  });

  it('clips by value: no parameter moves more than lr·clipValue', async () => {
    const model = makeMlp(6);
    const trainer = new Trainer(model, { optimizer: new SGD(), lr: 1, clipValue: 1e-4 });
    const before = snapshot(model);
    const evs = await events(trainer.fit({ data: blobSource(DATA, 16), steps: 1 }));
    expect(ofType(evs, 'step')[0]!.clipped).toBe(true);
    const after = snapshot(model);
    let maxMove = 0;
    for (const [p, v] of before) v.forEach((x, i) => (maxMove = Math.max(maxMove, Math.abs(after.get(p)![i]! - x))));
    expect(maxMove).toBeLessThanOrEqual(1e-4 * (1 + 1e-3));
    expect(maxMove).toBeGreaterThan(0.9e-4);
  });

  it('passes lr from the schedule and the step context to the loss', async () => {
    const schedule = warmupCosineSchedule({ peak: 0.1, warmupSteps: 2, totalSteps: 6, floor: 0.01 });
    const seen: Array<[number, number, number]> = [];
    const trainer = new Trainer(makeMlp(7), { optimizer: new SGD(), lr: schedule });
    const evs = await events(
      trainer.fit({
        data: blobSource(DATA, 32),
        steps: 7,
        loss: (m, b, ctx) => {
          seen.push([ctx.step, ctx.epoch, ctx.lr]);
          expect(ctx.run.mode).toBe('train');
          return softmaxCrossEntropy(m.call(b.x, ctx.run), b.y);
        },
      }),
    );
    expect(ofType(evs, 'step').map((s) => s.lr)).toEqual([0, 1, 2, 3, 4, 5, 6].map(schedule));
    expect(seen).toEqual([0, 1, 2, 3, 4, 5, 6].map((i) => [i + 1, Math.floor(i / 3), schedule(i)]));
  });

  it('stops at the next step boundary when unsubscribed', async () => {
    const model = makeMlp(8);
    const trainer = new Trainer(model, { optimizer: new SGD(), lr: 0.1 });
    const got: number[] = [];
    const sub = trainer.fit({ data: blobSource(DATA, 16), steps: 100 }).subscribe((e) => {
      if (e.type === 'step') {
        got.push(e.step);
        if (e.step === 3) sub.unsubscribe();
      }
    });
    await trainer.idle();
    expect(got).toEqual([1, 2, 3]);
    expect(trainer.step).toBe(3);
    const frozen = snapshot(model);
    await new Promise((r) => setTimeout(r, 20));
    expect(snapshot(model)).toEqual(frozen);
    // the trainer can go on afterwards
    const summary = await trainer.run({ data: blobSource(DATA, 16), steps: 5 });
    expect(summary).toMatchObject({ step: 5, stepsRun: 2 });
  });

  it('stops with a CancelledError when its signal aborts', async () => {
    const ac = new AbortController();
    const trainer = new Trainer(makeMlp(8), { optimizer: new SGD(), lr: 0.1 });
    const seen: number[] = [];
    const err = await new Promise<unknown>((resolve) => {
      trainer.fit({ data: blobSource(DATA, 16), steps: 100, signal: ac.signal }).subscribe({
        next: (e) => {
          if (e.type === 'step') {
            seen.push(e.step);
            if (e.step === 2) ac.abort();
          }
        },
        error: resolve,
        complete: () => resolve(undefined),
      });
    });
    expect(err).toBeInstanceOf(CancelledError);
    expect((err as Error).message).toMatch(/cancelled at step 2/);
    expect(trainer.step).toBe(2);
    expect(seen).toEqual([1, 2]);
  });

  it('refuses a second concurrent fit on the same trainer', async () => {
    const trainer = new Trainer(makeMlp(9), { optimizer: new SGD(), lr: 0.1 });
    const sub = trainer.fit({ data: blobSource(DATA, 16), steps: 50 }).subscribe();
    await expect(firstValueFrom(trainer.fit({ data: blobSource(DATA, 16), steps: 1 }))).rejects.toThrow(/already running/);
    sub.unsubscribe();
    await trainer.idle();
  });

  it('validates its options and the data', async () => {
    expect(() => new Trainer(makeMlp(1), { optimizer: new SGD(), lr: -1, clipNorm: 0, seed: 1.5 })).toThrow(/lr[\s\S]*clipNorm|clipNorm[\s\S]*lr/);
    const trainer = new Trainer(makeMlp(1), { optimizer: new SGD(), lr: 0.1 });
    await expect(trainer.run({ data: blobSource(DATA, 16) })).rejects.toThrow(/`steps` or `epochs`/);
    await expect(trainer.run({ data: blobSource(DATA, 16), steps: 2, eval: { fn: () => ({}), every: 0 } })).rejects.toThrow(/eval\.every/);
    await expect(trainer.run({ data: () => [], steps: 2 })).rejects.toThrow(/no batches for epoch 0/);
    await expect(trainer.run({ data: () => [{ a: tf.zeros([1]) }], steps: 1 })).rejects.toThrow(/default loss expects batches \{x/);
    const bad = new Trainer(makeMlp(1), { optimizer: new SGD(), lr: () => Number.NaN });
    await expect(bad.run({ data: blobSource(DATA, 16), steps: 1 })).rejects.toThrow(ConfigError);
  });

  it('takes a core DataSource (batches(epoch)) and async iterables', async () => {
    const src = blobSource(DATA, 32);
    const ds = {
      size: 96,
      async *batches(epoch: number): AsyncIterable<Batch> {
        for (const b of src(epoch, { seed: 0 })) yield await Promise.resolve(b);
      },
    };
    const trainer = new Trainer(makeMlp(1), { optimizer: new SGD(), lr: 0.1 });
    const summary = await trainer.run({ data: ds, epochs: 2 });
    expect(summary).toMatchObject({ step: 6, epoch: 2, reason: 'epochs' });
  });
});

describe('checkpoints and resume', () => {
  const cfg = { dropout: 0.2 };
  const makeTrainer = (seed: number) =>
    new Trainer(makeMlp(seed, cfg), {
      optimizer: new AdamW({ weightDecay: 0.05 }),
      lr: warmupCosineSchedule({ peak: 0.02, warmupSteps: 3, totalSteps: 14, floor: 1e-3 }),
      seed: 11,
      clipNorm: 1,
    });

  it('a resumed run reproduces the uninterrupted run exactly', async () => {
    const N = 7; // 6 batches per epoch: the checkpoint falls inside epoch 1
    const straight = makeTrainer(1);
    await straight.run({ data: blobSource(DATA, 16), steps: 2 * N });

    const ck = join(dir, 'resume');
    const first = makeTrainer(1);
    const evs = await events(first.fit({ data: blobSource(DATA, 16), steps: N, checkpoint: { dir: ck } }));
    expect(ofType(evs, 'checkpoint').map((e) => e.step)).toEqual([N]);

    const resumed = makeTrainer(42); // a different initialisation: everything must come from the checkpoint
    const src = blobSource(DATA, 16);
    const evs2 = await events(resumed.fit({ data: src, steps: 2 * N, resume: ck }));
    expect(ofType(evs2, 'log').some((l) => /resumed from .*step-00000007\.safetensors at step 7 \(epoch 1, batch 1\)/.test(l.message))).toBe(true);
    expect(ofType(evs2, 'step').map((s) => s.step)).toEqual([8, 9, 10, 11, 12, 13, 14]);
    expect(src.opened).toEqual([1, 2]);
    expect(snapshot(resumed.model)).toEqual(snapshot(straight.model));
    const a = straight.optimizer.getState();
    const b = resumed.optimizer.getState();
    expect(b.counts).toEqual(a.counts);
    for (const [k, t] of a.tensors) expect(Array.from(b.tensors.get(k)!.dataSync())).toEqual(Array.from(t.dataSync()));
    expect(resumed.rng.getState()).toEqual(straight.rng.getState());
    expect(resumed.epoch).toBe(straight.epoch);
  });

  it('writes the safetensors file with its JSON sidecar, every N steps, keeping the newest', async () => {
    const ck = join(dir, 'periodic');
    const trainer = makeTrainer(1);
    const evs = await events(trainer.fit({ data: blobSource(DATA, 16), steps: 10, checkpoint: { dir: ck, every: 3, keep: 2 } }));
    expect(ofType(evs, 'checkpoint').map((e) => e.step)).toEqual([3, 6, 9, 10]);
    expect((await listCheckpoints(ck)).map((c) => c.step)).toEqual([9, 10]);
    expect((await readdir(ck)).sort()).toEqual(['step-00000009.json', 'step-00000009.safetensors', 'step-00000010.json', 'step-00000010.safetensors']);
    const sidecar = JSON.parse(await readFile(join(ck, 'step-00000010.json'), 'utf8')) as { schedule: { nextLr: number }; optimizer: unknown; tensors: Record<string, unknown> };
    expect(sidecar).toMatchObject({ format: 'leanpass.train.checkpoint', step: 10, epoch: 1, batchInEpoch: 4, seed: 11, weights: 'step-00000010.safetensors' });
    expect(sidecar.schedule.nextLr).toBeCloseTo(trainer.schedule(10), 12);
    expect(sidecar.optimizer).toMatchObject({ kind: 'adamw', counts: { 'fc1.weight': 10 } });
    expect(Object.keys(sidecar.tensors)).toContain('optimizer/m/fc2.bias');
    const ckpt = await readCheckpoint(join(ck, 'step-00000010.safetensors'));
    expect(ckpt.state).toEqual(trainer.state());
    // the weights load into a fresh model
    const fresh = makeMlp(5, cfg);
    await loadCheckpointWeights(fresh, ck);
    expect(snapshot(fresh)).toEqual(snapshot(trainer.model));
  });

  it('stops with TrainingDivergedError on a NaN loss, keeping the last good checkpoint', async () => {
    const ck = join(dir, 'nan');
    const trainer = makeTrainer(1);
    const atCheckpoint = new Map<number, Map<string, Float32Array>>();
    const k = 6;
    const obs = trainer.fit({
      data: blobSource(DATA, 16),
      steps: 20,
      checkpoint: { dir: ck, every: 4 },
      loss: (m, b, ctx) => {
        const l = softmaxCrossEntropy(m.call(b.x, ctx.run), b.y);
        return ctx.step === k ? tf.mul(l, Number.NaN) : l;
      },
    });
    const seen: TrainEvent[] = [];
    const err = await new Promise<unknown>((resolve) =>
      obs.subscribe({
        next: (e) => {
          seen.push(e);
          if (e.type === 'checkpoint') atCheckpoint.set(e.step, snapshot(trainer.model));
        },
        error: resolve,
        complete: () => resolve(undefined),
      }),
    );
    expect(err).toBeInstanceOf(TrainingDivergedError);
    const d = err as TrainingDivergedError;
    expect(d.step).toBe(k);
    expect(d.quantity).toBe('loss');
    expect(Number.isNaN(d.value)).toBe(true);
    expect(d.message).toMatch(/training diverged at step 6: expected a finite loss, found NaN/);
    expect(d.lastCheckpoint).toBe(join(ck, 'step-00000004.safetensors'));
    expect(ofType(seen, 'step').map((s) => s.step)).toEqual([1, 2, 3, 4, 5]);
    // the update of step k was not applied, and the checkpoint on disk is step 4's and loads
    expect(trainer.step).toBe(k - 1);
    expect(await findLatestCheckpoint(ck)).toBe(d.lastCheckpoint);
    const fresh = makeMlp(9, cfg);
    const state = await loadCheckpointWeights(fresh, ck);
    expect(state.step).toBe(4);
    expect(snapshot(fresh)).toEqual(atCheckpoint.get(4));
  });

  it('stops when a gradient is not finite although the loss is', async () => {
    const trainer = new Trainer(makeMlp(1), { optimizer: new SGD(), lr: 0.1 });
    const before = snapshot(trainer.model);
    const err = await trainer
      .run({
        data: blobSource(DATA, 16),
        steps: 3,
        // d/dw sqrt(0·w) = ∞·0 = NaN, while the value is 0
        loss: (m, b, ctx) => tf.add(softmaxCrossEntropy(m.call(b.x, ctx.run), b.y), tf.sum(tf.sqrt(tf.mul(m.child('fc1').param('bias').variable, 0)))),
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TrainingDivergedError);
    expect(err).toMatchObject({ step: 1, quantity: 'gradient norm' });
    expect((err as Error).message).toMatch(/there is no checkpoint to go back to/);
    expect(snapshot(trainer.model)).toEqual(before);
  });

  it('rejects checkpoints that do not match the model or optimizer', async () => {
    const ck = join(dir, 'mismatch');
    await makeTrainer(1).run({ data: blobSource(DATA, 16), steps: 2, checkpoint: { dir: ck } });
    const wrongModel = new Trainer(makeMlp(1, { ...cfg, hidden: 8 }), { optimizer: new AdamW(), lr: 0.1, seed: 11 });
    await expect(wrongModel.restore(ck)).rejects.toThrow(FormatError);
    await expect(wrongModel.restore(ck)).rejects.toThrow(/fc1\.weight: expected shape \[4, 8\], found \[4, 16\]/);
    const wrongOpt = new Trainer(makeMlp(1, cfg), { optimizer: new SGD(), lr: 0.1, seed: 11 });
    await expect(wrongOpt.restore(ck)).rejects.toThrow(/written by optimizer 'adamw', this trainer uses 'sgd'/);
    const wrongSeed = new Trainer(makeMlp(1, cfg), { optimizer: new AdamW(), lr: 0.1, seed: 12 });
    await expect(wrongSeed.restore(ck)).rejects.toThrow(/seed 11, this trainer has seed 12/);
    await expect(wrongSeed.restore(join(dir, 'nothing-here'))).rejects.toThrow(ConfigError);
  });
});
