/**
 * Pre-trains the ViT-tiny host of @leanpass/lbp-wht (data-and-models.md §2.1) on Fashion-MNIST classes
 * 0–4 and writes packages/zoo/models/vit-tiny/{config.json, model.safetensors, MODEL_CARD.md}; with
 * --transfer, measures the transfer baseline (full-backprop fine-tuning on classes 5–9 → 0–4 with a new
 * head) on the saved checkpoint and adds it to the card.
 *
 *   npx tsx --conditions=@leanpass/source tools/zoo/train-vit-tiny.ts [--per-class 3000] [--epochs 3] [--resume]
 *   npx tsx --conditions=@leanpass/source tools/zoo/train-vit-tiny.ts --transfer [--ft-per-class 1000] [--ft-epochs 1]
 *
 * Options: --per-class N (training images per class, seeded class-balanced subset of the 30,000 train
 * images of classes 0–4), --epochs E, --batch B, --lr PEAK, --warmup W, --wd λ, --seed S, --ckpt DIR
 * (default tmp/vit-tiny-ckpt), --out DIR, --resume, --backend wasm|cpu. Needs the full dataset
 * (`apt-get install dataset-fashion-mnist`); the test accuracy is on all 5,000 test images of classes
 * 0–4, plus the bundled 2,000-image subset's 1,000 images of those classes (what the tests re-check).
 * Results accumulate in <ckpt>/results.json, from which the card is rewritten (--card: rewrite it, run nothing).
 */
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { loadModel, machineDescription, saveModel, useBackend, type BackendName } from '@leanpass/core';
import {
  FASHION_MNIST_TRANSFER,
  classBalancedIndices,
  classCounts,
  epochBatches,
  loadFashionMnist,
  selectClasses,
  subsetDataset,
  type ImageDataset,
} from '@leanpass/data';
import { buildVitTiny, replaceHead, type ViT } from '@leanpass/models';
import { AdamW, Trainer, evaluateClassifier, warmupCosineSchedule, type Batch } from '@leanpass/train';
import { finetuneVit, loadTransferData } from '@leanpass/lbp-wht/transfer';

const root = resolve(import.meta.dirname, '../..');
const { values: args } = parseArgs({
  options: {
    'per-class': { type: 'string', default: '3000' },
    epochs: { type: 'string', default: '3' },
    batch: { type: 'string', default: '64' },
    lr: { type: 'string', default: '0.002' },
    warmup: { type: 'string', default: '100' },
    wd: { type: 'string', default: '0.05' },
    seed: { type: 'string', default: '0' },
    ckpt: { type: 'string', default: join(root, 'tmp/vit-tiny-ckpt') },
    out: { type: 'string', default: join(root, 'packages/zoo/models/vit-tiny') },
    backend: { type: 'string', default: 'wasm' },
    resume: { type: 'boolean', default: false },
    transfer: { type: 'boolean', default: false },
    card: { type: 'boolean', default: false },
    'ft-per-class': { type: 'string', default: '1000' },
    'ft-epochs': { type: 'string', default: '1' },
    'ft-lr': { type: 'string', default: '0.001' },
    'ft-batch': { type: 'string', default: '32' },
    'ft-seed': { type: 'string', default: '0' },
  },
});
const ckptDir = resolve(args.ckpt);
const outDir = resolve(args.out);
const resultsPath = join(ckptDir, 'results.json');
const SOURCE = [...FASHION_MNIST_TRANSFER.source];

interface PretrainResults {
  command: string;
  perClass: number;
  trainImages: number;
  trainCounts: number[];
  epochs: number;
  steps: number;
  batch: number;
  lr: number;
  warmup: number;
  weightDecay: number;
  seed: number;
  backend: string;
  machine: string;
  wallMinutes: number;
  meanStepMs: number;
  finalTrainLoss: number;
  testAccuracy: number;
  testLoss: number;
  testCount: number;
  bundledAccuracy: number;
  bundledCount: number;
  params: number;
  curve: Array<{ step: number; accuracy: number }>;
}

interface TransferResults {
  command: string;
  perClass: number;
  trainImages: number;
  testImages: number;
  epochs: number;
  steps: number;
  batch: number;
  lr: number;
  seed: number;
  accuracy: number;
  testLoss: number;
  meanStepMs: number;
  wallMinutes: number;
}

interface Results {
  pretrain?: PretrainResults;
  transfer?: TransferResults;
}

function commandLine(): string {
  return `npx tsx --conditions=@leanpass/source ${relative(root, process.argv[1] ?? 'tools/zoo/train-vit-tiny.ts')} ${process.argv.slice(2).join(' ')}`.trim();
}

async function readResults(): Promise<Results> {
  return existsSync(resultsPath) ? (JSON.parse(await readFile(resultsPath, 'utf8')) as Results) : {};
}

function* evalBatches(ds: ImageDataset, batchSize = 250): Generator<Batch> {
  for (const b of epochBatches(ds, { batchSize, seed: 0, shuffle: false, padTo: 32 })) yield { x: b.x, y: b.y };
}

async function pretrain(): Promise<void> {
  const perClass = Number(args['per-class']);
  const epochs = Number(args.epochs);
  const batch = Number(args.batch);
  const lr = Number(args.lr);
  const warmup = Number(args.warmup);
  const weightDecay = Number(args.wd);
  const seed = Number(args.seed);

  const trainAll = selectClasses(await loadFashionMnist({ split: 'train', source: 'system' }), SOURCE);
  const train = subsetDataset(trainAll, classBalancedIndices(trainAll.labels, { perClass, numClasses: SOURCE.length, seed }));
  const test = selectClasses(await loadFashionMnist({ split: 'test', source: 'system' }), SOURCE);
  const bundled = selectClasses(await loadFashionMnist({ split: 'test', source: 'bundled' }), SOURCE);
  const probe = subsetDataset(test, classBalancedIndices(test.labels, { perClass: 200, numClasses: SOURCE.length, seed: 1 }));
  const stepsPerEpoch = Math.ceil(train.n / batch);
  const totalSteps = stepsPerEpoch * epochs;
  console.log(`train ${train.n} images (${classCounts(train).join('/')}), ${stepsPerEpoch} steps/epoch × ${epochs} = ${totalSteps} steps; test ${test.n}, bundled ${bundled.n}`);

  const model = buildVitTiny({ numClasses: SOURCE.length, seed });
  const trainer = new Trainer(model, {
    optimizer: new AdamW({ weightDecay, decay: (_path, shape) => shape.length >= 2 }),
    lr: warmupCosineSchedule({ peak: lr, warmupSteps: warmup, totalSteps, floor: lr * 0.01 }),
    seed,
    clipNorm: 5,
  });
  const curve: Array<{ step: number; accuracy: number }> = [];
  let stepMs = 0;
  let stepN = 0;
  let lastLoss = Number.NaN;
  const t0 = performance.now();
  const summary = await trainer.run<Batch>(
    {
      data: (epoch, info) => {
        const it = epochBatches(train, { batchSize: batch, seed: info.seed, epoch, padTo: 32 });
        return (function* () {
          for (const b of it) yield { x: b.x, y: b.y };
        })();
      },
      epochs,
      checkpoint: { dir: ckptDir, every: 50, keep: 2 },
      eval: {
        every: 150,
        fn: async (m, ctx) => {
          const r = await evaluateClassifier(m, evalBatches(probe), ctx.run);
          return { accuracy: r.accuracy, loss: r.loss };
        },
      },
      ...(args.resume ? { resume: ckptDir } : {}),
    },
    (e) => {
      if (e.type === 'step') {
        stepMs += e.ms;
        stepN++;
        lastLoss = e.loss;
        if (e.step % 10 === 0) console.log(`step ${e.step}/${totalSteps} epoch ${e.epoch} loss ${e.loss.toFixed(4)} lr ${e.lr.toExponential(2)} ${e.ms.toFixed(0)} ms`);
      } else if (e.type === 'eval') {
        curve.push({ step: e.step, accuracy: e.metrics['accuracy'] as number });
        console.log(`eval step ${e.step}: probe accuracy ${(e.metrics['accuracy'] as number).toFixed(4)} loss ${(e.metrics['loss'] as number).toFixed(4)}`);
      } else if (e.type === 'log') console.log(`[${e.level}] ${e.message}`);
    },
  );
  const wallMinutes = (performance.now() - t0) / 60000;
  console.log(`done: ${summary.step} steps in ${wallMinutes.toFixed(1)} min`);

  const full = await evaluateClassifier(model, evalBatches(test));
  const sub = await evaluateClassifier(model, evalBatches(bundled));
  console.log(`test accuracy ${full.accuracy.toFixed(4)} (${full.count}), bundled ${sub.accuracy.toFixed(4)} (${sub.count})`);
  await saveModel(model, outDir, { metadata: { name: 'vit-tiny', classes: SOURCE.join(','), seed: String(seed) } });

  const prev = await readResults();
  const results: Results = {
    ...prev,
    pretrain: {
      command: commandLine(),
      perClass,
      trainImages: train.n,
      trainCounts: classCounts(train),
      epochs,
      steps: summary.step,
      batch,
      lr,
      warmup,
      weightDecay,
      seed,
      backend: tf.getBackend(),
      machine: machineDescription(),
      wallMinutes: Number(wallMinutes.toFixed(1)),
      meanStepMs: Number((stepN ? stepMs / stepN : 0).toFixed(0)),
      finalTrainLoss: Number(lastLoss.toFixed(4)),
      testAccuracy: Number(full.accuracy.toFixed(4)),
      testLoss: Number(full.loss.toFixed(4)),
      testCount: full.count,
      bundledAccuracy: Number(sub.accuracy.toFixed(4)),
      bundledCount: sub.count,
      params: model.paramCount(),
      curve,
    },
  };
  await writeFile(resultsPath, JSON.stringify(results, null, 2) + '\n');
  await writeCard(results);
}

async function transfer(): Promise<void> {
  const perClass = Number(args['ft-per-class']);
  const epochs = Number(args['ft-epochs']);
  const lr = Number(args['ft-lr']);
  const batch = Number(args['ft-batch']);
  const seed = Number(args['ft-seed']);
  const data = await loadTransferData({ trainPerClass: perClass, seed, source: 'system' });
  const model = (await loadModel(outDir)) as ViT;
  replaceHead(model, FASHION_MNIST_TRANSFER.target.length, seed);
  const t0 = performance.now();
  const r = await finetuneVit(model, {
    train: data.train,
    test: data.test,
    epochs,
    batchSize: batch,
    lr,
    seed,
    onEvent: (e) => {
      if (e.type === 'step' && e.step % 10 === 0) console.log(`ft step ${e.step} loss ${e.loss.toFixed(4)} ${e.ms.toFixed(0)} ms`);
    },
  });
  const wallMinutes = (performance.now() - t0) / 60000;
  console.log(`transfer: accuracy ${r.accuracy.toFixed(4)} after ${r.steps} steps (${wallMinutes.toFixed(1)} min)`);
  const prev = await readResults();
  const results: Results = {
    ...prev,
    transfer: {
      command: commandLine(),
      perClass,
      trainImages: data.train.n,
      testImages: data.test.n,
      epochs,
      steps: r.steps,
      batch,
      lr,
      seed,
      accuracy: Number(r.accuracy.toFixed(4)),
      testLoss: Number(r.testLoss.toFixed(4)),
      meanStepMs: Number(r.meanStepMs.toFixed(0)),
      wallMinutes: Number(wallMinutes.toFixed(1)),
    },
  };
  await writeFile(resultsPath, JSON.stringify(results, null, 2) + '\n');
  await writeCard(results);
}

const pct = (v: number): string => `${(100 * v).toFixed(2)} %`;

async function writeCard(r: Results): Promise<void> {
  const p = r.pretrain;
  if (!p) throw new Error('no pre-training results: run the pre-training first');
  const lines = [
    '# vit-tiny — two-stage ViT pre-trained on Fashion-MNIST classes 0–4',
    '',
    `The ViT-tiny host of @leanpass/lbp-wht (data-and-models.md §2.1), pre-trained on Fashion-MNIST classes 0–4 (T-shirt/top, Trouser, Pullover, Dress, Coat) with a 5-way head: test accuracy ${pct(p.testAccuracy)} on the ${p.testCount.toLocaleString('en')} test images of those classes.`,
    '',
    '## Architecture',
    '',
    'Input 28×28×1 zero-padded to 32×32; 2×2 patch embed (linear 4 → 48) → 16×16 grid; stage 1: 2 blocks with the',
    'PoolFormer mixer avg3×3(LN x) − LN x and MLP ×4 (GELU, tanh form); 2×2 patch merge (LN, linear 192 → 96) → 8×8 grid;',
    'stage 2: 2 blocks of 4-head self-attention and MLP ×4; LN → mean pool → linear head (5 classes).',
    `Parameters: ${p.params.toLocaleString('en')} (the §2.1 count 281,722 is for a 10-class head; 5 classes remove 96·5 + 5 = 485).`,
    'Kinds: vit, vit.patch-embed, vit.stage, vit.block, vit.pool-mixer, vit.patch-merge (registered by @leanpass/models).',
    '',
    '## Pre-training',
    '',
    `- Data: Fashion-MNIST train split from Debian's dataset-fashion-mnist, classes 0–4, a seeded class-balanced subset of ${p.perClass.toLocaleString('en')} images per class (\`classBalancedIndices\`, seed ${p.seed}): ${p.trainImages.toLocaleString('en')} images (${p.trainCounts.join(' / ')}). Pixels scaled to [0, 1]; no augmentation.`,
    `- ${p.epochs} epochs, batch ${p.batch}, ${p.steps} updates; AdamW (β 0.9/0.999, weight decay ${p.weightDecay} on weight matrices only), learning rate linear warm-up over ${p.warmup} updates to ${p.lr} then cosine to ${p.lr * 0.01}; gradient clipping at global norm 5; seed ${p.seed}.`,
    `- Backend ${p.backend}; machine: ${p.machine}; wall time ${p.wallMinutes} min (mean step ${p.meanStepMs} ms, on 2 cores shared with other jobs). Final training loss ${p.finalTrainLoss}.`,
    `- Probe accuracy during training (1,000 class-balanced test images, for monitoring only: no early stopping or model selection; the final weights are saved): ${p.curve.map((c) => `step ${c.step}: ${pct(c.accuracy)}`).join(', ')}.`,
    '',
    '## Evaluation',
    '',
    '| test set | images | accuracy | loss |',
    '|---|---|---|---|',
    `| Fashion-MNIST test, classes 0–4 (all) | ${p.testCount.toLocaleString('en')} | ${pct(p.testAccuracy)} | ${p.testLoss} |`,
    `| bundled subset (@leanpass/data, 2,000 test images), classes 0–4 | ${p.bundledCount.toLocaleString('en')} | ${pct(p.bundledAccuracy)} | – |`,
    '',
    'The models package test re-measures the bundled-subset figure (classes 0–4 of the 2,000-image subset) on every run.',
    '',
  ];
  const t = r.transfer;
  if (t) {
    lines.push(
      '## Transfer baseline (what LBP-WHT is compared against)',
      '',
      `Target task: classes 5–9 (Sandal, Shirt, Sneaker, Bag, Ankle boot) relabelled 0–4, a new seeded 5-way head (\`replaceHead(model, 5, ${t.seed})\`), then full backprop of every parameter with \`finetuneVit\` (packages/lbp-wht/src/transfer.ts): ${t.trainImages.toLocaleString('en')} training images (${t.perClass} per class, seeded), ${t.epochs} epoch(s), batch ${t.batch}, ${t.steps} updates, AdamW (weight decay 1e-5 on weight matrices) with peak learning rate ${t.lr}, linear warm-up over ${Math.min(50, Math.floor(t.steps / 10))} updates then cosine to 1 % of the peak, gradient clipping at global norm 5, no label smoothing, seed ${t.seed}.`,
      '',
      `**Full-backprop fine-tuning accuracy: ${pct(t.accuracy)}** on all ${t.testImages.toLocaleString('en')} test images of classes 5–9 (test loss ${t.testLoss}); mean step ${t.meanStepMs} ms, ${t.wallMinutes} min wall in total.`,
      '',
      `Command: \`${t.command}\``,
      '',
    );
  }
  lines.push(
    '## Reproduce',
    '',
    '```sh',
    'sudo apt-get install -y dataset-fashion-mnist',
    p.command,
    ...(t ? [t.command] : []),
    '```',
    '',
    'Training checkpoints every 50 updates to tmp/vit-tiny-ckpt (add --resume to continue an interrupted run; the data order is a pure function of seed and epoch, so a resumed run matches an uninterrupted one).',
    '',
    'Data: Fashion-MNIST © 2017 Zalando SE, MIT licence.',
    '',
  );
  await writeFile(join(outDir, 'MODEL_CARD.md'), lines.join('\n'));
}

await useBackend(args.backend as BackendName);
if (args.card) await writeCard(await readResults()); // rewrite MODEL_CARD.md from <ckpt>/results.json only
else if (args.transfer) await transfer();
else await pretrain();
