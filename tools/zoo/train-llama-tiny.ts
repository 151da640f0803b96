/**
 * Trains the byte-level LLaMA-tiny host of @leanpass/skipcat (data-and-models.md §2.6) on Debian's
 * `fortunes` corpus and writes packages/zoo/models/llama-tiny/{config.json, model.safetensors,
 * MODEL_CARD.md}.
 *
 *   npx tsx --conditions=@leanpass/source tools/zoo/train-llama-tiny.ts [--steps 1200] [--resume]
 *
 * Options: --steps N (total updates), --batch B, --seq T, --lr PEAK, --warmup W, --seed S,
 * --ckpt DIR (checkpoints; default tmp/llama-tiny-ckpt), --out DIR, --resume (continue from the newest
 * checkpoint in --ckpt), --backend wasm|cpu. Training uses the train split only; the figures in the
 * card are measured on the validation split.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { useBackend, type BackendName } from '@leanpass/core';
import { corpusStream, createWindowSampler, loadFortunes } from '@leanpass/data';
import { LLAMA_TINY_CONFIG, bitsPerByte, createLlama, llamaLinearParams, type Llama } from '@leanpass/models';
import { AdamW, Trainer, softmaxCrossEntropy, warmupCosineSchedule, type Batch } from '@leanpass/train';
import { LLAMA_TINY_RECIPE_OPTIONS, finishLlamaTiny } from './llama-tiny-card.js';

const root = resolve(import.meta.dirname, '../..');
const { values: args } = parseArgs({
  options: {
    ...LLAMA_TINY_RECIPE_OPTIONS,
    ckpt: { type: 'string', default: join(root, 'tmp/llama-tiny-ckpt') },
    out: { type: 'string', default: join(root, 'packages/zoo/models/llama-tiny') },
    resume: { type: 'boolean', default: false },
  },
});
const steps = Number(args.steps);
const batchSize = Number(args.batch);
const seqLength = Number(args.seq);
const peak = Number(args.lr);
const warmupSteps = Number(args.warmup);
const seed = Number(args.seed);
const ckptDir = resolve(args.ckpt);
const outDir = resolve(args.out);
const EPOCH_STEPS = 100; // the sampler's windows of step i are a pure function of (seed, i); an "epoch" is 100 of them

const log = (msg: string): void => console.log(`${new Date().toISOString()} ${msg}`);

await useBackend(args.backend as BackendName);
const corpus = loadFortunes();
const train = corpusStream(corpus, 'train');
const val = corpusStream(corpus, 'val');
log(`fortunes: ${corpus.stats.unique} unique records; train ${corpus.stats.records.train} (${train.length} bytes), val ${corpus.stats.records.val} (${val.length} bytes), test ${corpus.stats.records.test}`);

const config = { ...LLAMA_TINY_CONFIG, max_position_embeddings: seqLength };
const model: Llama = createLlama(config, { seed });
log(`llama-tiny: ${model.paramCount()} params (${llamaLinearParams(model.config)} in q/k/v/o/gate/up/down)`);

const sampler = createWindowSampler(train, { seqLength, batchSize, seed });
const data = function* (epoch: number): Generator<Batch> {
  for (let i = 0; i < EPOCH_STEPS; i++) {
    const w = sampler.batch(epoch * EPOCH_STEPS + i);
    yield { x: tf.tensor2d(w.inputs, [batchSize, seqLength], 'int32'), y: tf.tensor2d(w.targets, [batchSize, seqLength], 'int32') };
  }
};

const trainer = new Trainer(model, {
  optimizer: new AdamW({ beta1: 0.9, beta2: 0.95, weightDecay: 0.1, decay: (_path, shape) => shape.length === 2 }),
  lr: warmupCosineSchedule({ peak, warmupSteps, totalSteps: steps, floor: peak / 10 }),
  seed,
  clipNorm: 1,
});

// wall time accumulated over resumed runs
const wallFile = join(ckptDir, 'wall.json');
let priorMs = 0;
if (args.resume && existsSync(wallFile)) priorMs = (JSON.parse(await readFile(wallFile, 'utf8')) as { ms: number }).ms;
const t0 = performance.now();
const saveWall = async (): Promise<void> => {
  await mkdir(ckptDir, { recursive: true });
  await writeFile(wallFile, JSON.stringify({ ms: priorMs + performance.now() - t0 }));
};

let lossAcc = 0;
let lossN = 0;
const summary = await trainer.run(
  {
    data,
    steps,
    loss: (m, b, ctx) => softmaxCrossEntropy(m.call(b.x, ctx.run), b.y),
    eval: {
      every: 300,
      fn: (m) => {
        const r = bitsPerByte(m, val, { window: seqLength, maxWindows: 64, batchSize });
        return { valBitsPerByte64: r.bitsPerByte };
      },
    },
    checkpoint: { dir: ckptDir, every: 100, keep: 2 },
    ...(args.resume ? { resume: ckptDir } : {}),
  },
  (e) => {
    if (e.type === 'step') {
      lossAcc += e.loss;
      lossN++;
      if (e.step % 20 === 0) {
        log(`step ${e.step}/${steps} loss ${(lossAcc / lossN).toFixed(4)} (${(lossAcc / lossN / Math.LN2).toFixed(3)} bits) lr ${e.lr.toExponential(2)} gnorm ${e.gradNorm.toFixed(3)} ${e.ms.toFixed(0)} ms/step`);
        lossAcc = 0;
        lossN = 0;
      }
    } else if (e.type === 'eval') log(`eval @${e.step}: ${JSON.stringify(e.metrics)}`);
    else if (e.type === 'checkpoint') {
      log(`checkpoint ${e.path}`);
      void saveWall();
    } else if (e.type === 'log') log(`[${e.level}] ${e.message}`);
  },
);
await saveWall();
const wallMs = priorMs + performance.now() - t0;
log(`trained: ${summary.step} steps, wall ${(wallMs / 60000).toFixed(1)} min (this run ${(summary.ms / 60000).toFixed(1)} min)`);

await finishLlamaTiny({
  model,
  outDir,
  run: { steps: summary.step, plannedSteps: steps, batchSize, seqLength, peak, warmupSteps, seed, backend: args.backend ?? 'wasm', wallMs },
  log,
});
