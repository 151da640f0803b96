/**
 * Trains the masked-diffusion tiny host of DARE (dare.md §3.4, data-and-models.md §2.3) on the
 * procedural tasks of @leanpass/data with LLaDA's SFT objective, and writes
 * packages/zoo/models/dllm-tiny/{config.json, model.safetensors}. The model card (exact match with the
 * plain and the Fast-dLLM samplers) is written by tools/zoo/eval-dllm-tiny.ts.
 *
 *   npx tsx --conditions=@leanpass/source tools/zoo/train-dllm-tiny.ts [--steps 8000] [--size small] [--answer-length 16]
 *
 * Re-running resumes from the newest checkpoint in --ckpt (default tmp/dllm-tiny-ckpt) unless --fresh.
 * Options: --steps N, --batch B, --lr PEAK, --warmup W, --seed S, --size small|base, --tasks a,b,c,
 * --answer-length A (generation length, default 16), --ckpt DIR, --out DIR, --backend wasm|cpu, --eval-every N. Training draws only
 * from the train side of the content split; progress is measured on held-out test problems.
 */
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { Rng, createRunContext, saveModel, useBackend, type BackendName } from '@leanpass/core';
import { TASK_EOS_ID, TASK_MASK_ID, TASK_PAD_ID, TASK_VOCAB_SIZE, exactMatch, makeTaskSet, taskBatch, taskExtent, type TaskName, type TaskProblem } from '@leanpass/data';
import { DLLM_BASE_CONFIG, DLLM_SMALL_CONFIG, createDiffusionLM, diffusionSftLoss, type DiffusionLM, type DiffusionSftBatch } from '@leanpass/models';
import { AdamW, Trainer, findLatestCheckpoint, warmupCosineSchedule } from '@leanpass/train';
import { DLLM_TINY_RANGES, DLLM_TINY_TASKS } from './dllm-tiny-common.js';

const root = resolve(import.meta.dirname, '../..');
const { values: args } = parseArgs({
  options: {
    steps: { type: 'string', default: '1500' },
    batch: { type: 'string', default: '64' },
    lr: { type: 'string', default: '0.003' },
    warmup: { type: 'string', default: '50' },
    seed: { type: 'string', default: '0' },
    size: { type: 'string', default: 'small' },
    tasks: { type: 'string', default: DLLM_TINY_TASKS.join(',') },
    // dare.md §6: generation length 16–32 (canvas 8 + 16 = 24; answers EOS-padded to 16, as LLaDA's SFT does)
    'answer-length': { type: 'string', default: '16' },
    'eval-every': { type: 'string', default: '250' },
    ckpt: { type: 'string', default: join(root, 'tmp/dllm-tiny-ckpt') },
    out: { type: 'string', default: join(root, 'packages/zoo/models/dllm-tiny') },
    backend: { type: 'string', default: 'wasm' },
    fresh: { type: 'boolean', default: false },
  },
});
const steps = Number(args.steps);
const batchSize = Number(args.batch);
const peak = Number(args.lr);
const warmupSteps = Number(args.warmup);
const seed = Number(args.seed);
const tasks = args.tasks.split(',') as TaskName[];
const answerLength = Number(args['answer-length']);
const ckptDir = resolve(args.ckpt);
const outDir = resolve(args.out);
const EPOCH_STEPS = 100;

const log = (msg: string): void => console.log(`${new Date().toISOString()} ${msg}`);

await useBackend(args.backend as BackendName);
const { promptLength } = taskExtent(tasks, DLLM_TINY_RANGES);
const length = promptLength + answerLength;
const base = args.size === 'base' ? DLLM_BASE_CONFIG : DLLM_SMALL_CONFIG;
const model: DiffusionLM = createDiffusionLM({ ...base, vocabSize: TASK_VOCAB_SIZE, maskId: TASK_MASK_ID, eosId: TASK_EOS_ID, padId: TASK_PAD_ID, maxLength: length }, { seed });
log(`dllm-tiny (${args.size}): ${model.paramCount()} params; tasks ${tasks.join(', ')}; canvas ${promptLength} + ${answerLength}`);

const data = function* (epoch: number): Generator<DiffusionSftBatch> {
  const per = Math.ceil((EPOCH_STEPS * batchSize) / tasks.length);
  const set = makeTaskSet({ tasks, count: per, seed: seed * 100_003 + epoch, answerLength, ...DLLM_TINY_RANGES });
  const order = new Rng(seed).fork(`epoch/${epoch}`).permutation(set.problems.length);
  for (let i = 0; i < EPOCH_STEPS; i++) {
    const probs = order.slice(i * batchSize, (i + 1) * batchSize).map((j) => set.problems[j] as TaskProblem);
    const b = taskBatch(probs, { promptWidth: promptLength });
    yield { ids: b.ids, batch: b.batch, length: b.length, answerStart: b.answerStart, pad: b.pad };
  }
};

/** Plain greedy decoding over the whole answer (one block, one token per step, low confidence). */
function greedyExactMatch(m: DiffusionLM, probs: TaskProblem[]): number {
  const b = taskBatch(probs, { promptWidth: promptLength, maskAnswers: true });
  const ids = Int32Array.from(b.ids);
  const ctx = createRunContext();
  for (let s = 0; s < answerLength; s++) {
    const logits = tf.tidy(() => tf.softmax(m.call({ ids: tf.tensor2d(ids, [b.batch, b.length], 'int32'), pad: b.pad }, ctx)));
    const prob = logits.dataSync();
    logits.dispose();
    for (let r = 0; r < b.batch; r++) {
      let best = -1;
      let bestP = -1;
      let bestId = 0;
      for (let l = b.answerStart; l < b.length; l++) {
        if (ids[r * b.length + l] !== TASK_MASK_ID) continue;
        const o = (r * b.length + l) * TASK_VOCAB_SIZE;
        for (let v = 0; v < TASK_VOCAB_SIZE; v++) {
          if (v === TASK_MASK_ID) continue;
          const pv = prob[o + v] as number;
          if (pv > bestP) [bestP, best, bestId] = [pv, l, v];
        }
      }
      if (best >= 0) ids[r * b.length + best] = bestId;
    }
  }
  let ok = 0;
  probs.forEach((p, r) => {
    if (exactMatch(ids.subarray(r * b.length + b.answerStart, (r + 1) * b.length), p.answer)) ok++;
  });
  return ok / probs.length;
}
const evalSet = makeTaskSet({ tasks, count: 64, seed: 999, split: 'test', answerLength, ...DLLM_TINY_RANGES }).problems;

const trainer = new Trainer(model, {
  optimizer: new AdamW({ beta1: 0.9, beta2: 0.99, weightDecay: 0.01, decay: (_path, shape) => shape.length === 2 }),
  lr: warmupCosineSchedule({ peak, warmupSteps, totalSteps: steps, floor: peak / 20 }),
  seed,
  clipNorm: 1,
});
const resume = !args.fresh && existsSync(ckptDir) && (await findLatestCheckpoint(ckptDir)) !== undefined;
if (resume) log(`resuming from ${ckptDir}`);

let lossAcc = 0;
let lossN = 0;
let lastLogged: number | null = null;
const summary = await trainer.run<DiffusionSftBatch>(
  {
    data,
    steps,
    loss: (m, b, ctx) => diffusionSftLoss(m, b, ctx.run, { rng: ctx.run.rng }),
    eval: {
      every: Number(args['eval-every']),
      atEnd: true,
      fn: (m) => {
        const out: Record<string, number> = {};
        for (const t of tasks) out[`em_${t}`] = greedyExactMatch(m, evalSet.filter((p) => p.task === t));
        return out;
      },
    },
    checkpoint: { dir: ckptDir, every: 100, keep: 2 },
    ...(resume ? { resume: ckptDir } : {}),
  },
  (e) => {
    if (e.type === 'step') {
      lossAcc += e.loss;
      lossN++;
      if (e.step % 25 === 0) {
        lastLogged = lossAcc / lossN;
        log(`step ${e.step}/${steps} loss ${(lossAcc / lossN).toFixed(4)} lr ${e.lr.toExponential(2)} gnorm ${e.gradNorm.toFixed(3)} ${e.ms.toFixed(0)} ms/step`);
        lossAcc = 0;
        lossN = 0;
      }
    } else if (e.type === 'eval') log(`eval @${e.step}: ${JSON.stringify(e.metrics)}`);
    else if (e.type === 'checkpoint') log(`checkpoint ${e.path}`);
    else if (e.type === 'log') log(`[${e.level}] ${e.message}`);
  },
);
log(`trained: ${summary.step} steps (this run ${(summary.ms / 60000).toFixed(1)} min)`);
// training facts for the model card (tools/zoo/eval-dllm-tiny.ts), accumulated over resumed runs
const summaryFile = join(ckptDir, 'train-summary.json');
const prior = resume && existsSync(summaryFile) ? (JSON.parse(await readFile(summaryFile, 'utf8')) as { ms?: number }).ms ?? 0 : 0;
await writeFile(
  summaryFile,
  JSON.stringify({ steps: summary.step, batch: batchSize, lr: peak, warmup: warmupSteps, seed, size: args.size, tasks, answerLength, backend: args.backend, ms: prior + summary.ms, lastLoss: lastLogged }, null, 2),
);
await saveModel(model, outDir);
log(`saved ${outDir}`);
