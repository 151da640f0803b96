/**
 * LBP-WHT accuracy probe: dense vs LBP-WHT arms on the vit-tiny transfer task, same data order and seed,
 * scored on a held-out validation split (200 images per class of classes 5–9 drawn from the Fashion-MNIST
 * training images NOT in the 1,000-per-class fine-tuning subset) and on the test images.
 *
 *   npx tsx --conditions=@leanpass/source tools/bench/lbp-wht-probe.ts --arms dense,k6 --lr 3e-4 --epochs 1 [--json out.json]
 *
 * --headSteps N: LP-FT, N head-only updates first (finetuneVit's headSteps).
 * --custom '{"name": {"options": {…pass options…}, "freeze": ["embed", "stage1"]}}': arms of your own (options null: dense).
 * Arms: dense | head (linear probe: only the new head trains) | k<K> (LP_L1-r, o = 8, the bench's 17 linears) |
 *   k6-energy (per-layer top-6 input-energy bases) | dense-s1frozen, k6-s1frozen (patch embedding and stage 1 frozen) |
 *   k6-s1frozen-o4 (the same with merge and stage-2 attention at order 4) | k6-linf | k6-noattn | k6-nos1 | k6-nomerge (those layers left dense)
 */
import { parseArgs } from 'node:util';
import { writeFile } from 'node:fs/promises';
import * as tf from '@tensorflow/tfjs';
import { useBackend, type JsonObject } from '@leanpass/core';
import { FASHION_MNIST_TRANSFER, classBalancedIndices, epochBatches, loadFashionMnist, selectClasses, subsetDataset } from '@leanpass/data';
import { replaceHead, type ViT } from '@leanpass/models';
import { evaluateClassifier } from '@leanpass/train';
import { VIT_TINY_SELECT } from '@leanpass/lbp-wht/bench';
import { optionsSchema, pass, type LbpWhtOptionsInput } from '@leanpass/lbp-wht';
import { finetuneVit, loadTransferData } from '@leanpass/lbp-wht/transfer';
import { loadZoo } from '@leanpass/zoo';

const { values: args } = parseArgs({
  options: {
    arms: { type: 'string', default: 'dense,k6' },
    lr: { type: 'string', default: '1e-3' },
    epochs: { type: 'string', default: '1' },
    warmup: { type: 'string' },
    headSteps: { type: 'string', default: '0' },
    seed: { type: 'string', default: '0' },
    json: { type: 'string' },
    noTest: { type: 'boolean', default: false },
    custom: { type: 'string', default: '{}' },
  },
});
await useBackend('wasm');
const seed = Number(args.seed);
const lr = Number(args.lr);
const epochs = Number(args.epochs);
const t0 = performance.now();
const log = (m: string): void => console.log(`[${((performance.now() - t0) / 1000).toFixed(0)} s] ${m}`);

const data = await loadTransferData({ seed });
// validation: training images of the target classes outside the fine-tuning subset
const trainAll = selectClasses(await loadFashionMnist({ split: 'train' }), [...FASHION_MNIST_TRANSFER.target]);
const used = new Set(classBalancedIndices(trainAll.labels, { perClass: 1000, numClasses: 5, seed }));
const rest = [...Array(trainAll.n).keys()].filter((i) => !used.has(i));
const restDs = subsetDataset(trainAll, rest);
const val = subsetDataset(restDs, classBalancedIndices(restDs.labels, { perClass: 200, numClasses: 5, seed: seed + 100 }));
log(`train ${data.train.n}, val ${val.n} (held out), test ${data.test.n}`);

const custom = JSON.parse(args.custom) as Record<string, { options: LbpWhtOptionsInput | null; freeze?: string[] }>;

function armOptions(arm: string): LbpWhtOptionsInput | null {
  if (custom[arm]) return custom[arm].options;
  const inc = VIT_TINY_SELECT.include;
  const sel = (include: string[]): JsonObject => ({ kinds: ['linear'], include });
  const m = /^k(\d+)$/.exec(arm);
  if (arm === 'dense' || arm === 'head' || arm === 'dense-s1frozen' || arm === 'k6-s1frozen-o4') return null;
  if (arm === 'k6-s1frozen') return { order: 8, bases: { type: 'lpL1', rank: 3 }, select: sel(inc.filter((p) => !p.startsWith('stage1'))) };
  if (m) {
    // LP_L1-r keeps K = r(r+1)/2 bases (r ≤ 8)
    const K = Number(m[1]);
    const rank = [1, 2, 3, 4, 5, 6, 7, 8].find((r) => (r * (r + 1)) / 2 === K);
    if (rank === undefined) throw new Error(`arm ${arm}: K = ${K} is not r(r+1)/2 for r ≤ 8`);
    return { order: 8, bases: { type: 'lpL1', rank }, select: sel(inc) };
  }
  if (arm === 'k6-noattn') return { order: 8, bases: { type: 'lpL1', rank: 3 }, select: sel(inc.filter((p) => !p.includes('attn'))) };
  if (arm === 'k6-nos1') return { order: 8, bases: { type: 'lpL1', rank: 3 }, select: sel(inc.filter((p) => !p.startsWith('stage1'))) };
  if (arm === 'k6-nomerge') return { order: 8, bases: { type: 'lpL1', rank: 3 }, select: sel(inc.filter((p) => !p.startsWith('merge'))) };
  if (arm === 'k6-energy') return { order: 8, bases: { type: 'energy', k: 6 }, select: sel(inc) };
  if (arm === 'k6-linf') return { order: 8, bases: { type: 'lpLinf', rank: 2 }, select: sel(inc) };
  throw new Error(`unknown arm ${arm}`);
}

// calibration for energy selection: 8 batches of 32 fine-tuning images (model inputs)
const calibration = {
  sampleCap: 256,
  async *batches(): AsyncGenerator<tf.Tensor> {
    for (const b of epochBatches(data.train, { batchSize: 32, seed, epoch: 0, shuffle: true, padTo: 32 })) {
      yield b.x;
      b.y.dispose();
    }
  },
};

async function apply(model: ViT, o: LbpWhtOptionsInput): Promise<void> {
  const options = optionsSchema.parse(o);
  await new Promise<void>((resolve, reject) => {
    pass.apply(model, options, { seed, backend: tf.getBackend(), calibration }).subscribe({ error: (e: unknown) => reject(e instanceof Error ? e : new Error(String(e))), complete: () => resolve() });
  });
}

const results: JsonObject[] = [];
for (const arm of (args.arms).split(',')) {
  const model = (await loadZoo('vit-tiny')) as ViT;
  replaceHead(model, 5, seed);
  const o = armOptions(arm);
  if (o) await apply(model, o);
  if (arm === 'k6-s1frozen-o4') {
    // stage 2 MLPs at order 8, merge and stage-2 attention at order 4 (4 patches of the 8×8 grid), K = 6 everywhere
    await apply(model, { order: 8, bases: { type: 'lpL1', rank: 3 }, select: { kinds: ['linear'], include: ['stage2.*.mlp.*'] } });
    await apply(model, { order: 4, bases: { type: 'lpL1', rank: 3 }, select: { kinds: ['linear'], include: ['merge.reduction', 'stage2.*.attn.*'] } });
  }
  for (const child of custom[arm]?.freeze ?? []) model.child(child).setTrainable(false);
  if (arm.includes('s1frozen')) {
    model.child('embed').setTrainable(false);
    model.child('stage1').setTrainable(false);
  }
  if (arm === 'head') {
    model.setTrainable(false);
    model.child('head').setTrainable(true);
  }
  const res = await finetuneVit(model, {
    train: data.train,
    test: args.noTest ? val : data.test,
    epochs,
    seed,
    lr,
    labelSmoothing: 0.1,
    headSteps: Number(args.headSteps),
    ...(args.warmup !== undefined ? { warmupSteps: Number(args.warmup) } : {}),
  });
  const v = await evaluateClassifier(model, (function* () { for (const b of epochBatches(val, { batchSize: 250, seed: 0, epoch: 0, shuffle: false, padTo: 32 })) yield { x: b.x, y: b.y }; })());
  const r: JsonObject = { arm, lr, epochs, headSteps: Number(args.headSteps), val: 100 * v.accuracy, test: args.noTest ? null : 100 * res.accuracy, steps: res.steps, medianStepMs: res.medianStepMs, finalLoss: res.curve.slice(-20).reduce((a, c) => a + c.loss, 0) / 20 };
  results.push(r);
  log(JSON.stringify(r));
  model.dispose();
}
if (args.json) await writeFile(args.json, JSON.stringify(results, null, 1));
