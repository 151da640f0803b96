/**
 * Evaluates packages/zoo/models/dllm-tiny (written by tools/zoo/train-dllm-tiny.ts) with the plain LLaDA
 * sampler and the Fast-dLLM options on held-out problems, stores the figures in its config.json
 * metadata and writes its MODEL_CARD.md.
 *
 *   npx tsx --conditions=@leanpass/source tools/zoo/eval-dllm-tiny.ts [--count 256] [--ckpt tmp/dllm-tiny-ckpt]
 */
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { loadModel, saveModel, useBackend, type BackendName } from '@leanpass/core';
import { exactMatch, makeTaskSet, taskExtent, type TaskName, type TaskProblem } from '@leanpass/data';
import { DiffusionLM, dllmParamCount, generateDiffusion, type GenerationOptions } from '@leanpass/models';
import { DLLM_TINY_EVAL_SEED, DLLM_TINY_RANGES, DLLM_TINY_TASKS } from './dllm-tiny-common.js';

const root = resolve(import.meta.dirname, '../..');
const { values: args } = parseArgs({
  options: {
    count: { type: 'string', default: '256' },
    batch: { type: 'string', default: '64' },
    slice: { type: 'string', default: '64' },
    tasks: { type: 'string', default: DLLM_TINY_TASKS.join(',') },
    ckpt: { type: 'string', default: join(root, 'tmp/dllm-tiny-ckpt') },
    out: { type: 'string', default: join(root, 'packages/zoo/models/dllm-tiny') },
    backend: { type: 'string', default: 'wasm' },
  },
});
const count = Number(args.count);
const batchSize = Number(args.batch);
const sliceCount = Number(args.slice);
const tasks = args.tasks.split(',') as TaskName[];
const outDir = resolve(args.out);
const log = (msg: string): void => console.log(`${new Date().toISOString()} ${msg}`);

await useBackend(args.backend as BackendName);
const model = await loadModel(outDir);
if (!(model instanceof DiffusionLM)) throw new Error(`expected a 'dllm' model in ${outDir}, found kind '${model.kind}'`);
const { promptLength } = taskExtent(tasks, DLLM_TINY_RANGES);
const genLength = model.config.maxLength - promptLength;
const sets = new Map<TaskName, TaskProblem[]>(tasks.map((t) => [t, makeTaskSet({ tasks: t, count, seed: DLLM_TINY_EVAL_SEED, split: 'test', answerLength: genLength, ...DLLM_TINY_RANGES }).problems]));

interface Variant {
  name: string;
  label: string;
  opts: Omit<GenerationOptions, 'genLength'>;
}
const block = Math.min(4, genLength);
const variants: Variant[] = [
  { name: 'plain', label: `plain LLaDA: block ${block}, one token per step, low-confidence, temperature 0`, opts: { blockLength: block } },
  ...(genLength > 8 && genLength % 8 === 0 ? [{ name: 'plain-block8', label: 'plain, block 8', opts: { blockLength: 8 } }] : []),
  { name: 'plain-1block', label: `plain, one block of ${genLength} (LLaDA's default block = generation)`, opts: { blockLength: genLength } },
  { name: 'prefix', label: `prefix cache, block ${block}`, opts: { blockLength: block, cache: 'prefix' } },
  { name: 'dual', label: `dual cache, block ${block}`, opts: { blockLength: block, cache: 'dual' } },
  { name: 'threshold', label: `threshold 0.9 parallel decoding, block ${block}`, opts: { blockLength: block, threshold: 0.9 } },
  { name: 'dual-threshold', label: `dual cache + threshold 0.9, block ${block}`, opts: { blockLength: block, cache: 'dual', threshold: 0.9 } },
];

interface Row {
  variant: Variant;
  em: Record<string, number>;
  nfe: number;
  tokensPerSecond: number;
}
const rows: Row[] = [];
for (const v of variants) {
  const em: Record<string, number> = {};
  let nfe = 0;
  let calls = 0;
  let ms = 0;
  let tokens = 0;
  for (const t of tasks) {
    const probs = sets.get(t) as TaskProblem[];
    let ok = 0;
    for (let i = 0; i < probs.length; i += batchSize) {
      const chunk = probs.slice(i, i + batchSize);
      const r = generateDiffusion(model, chunk.map((p) => p.prompt), { ...v.opts, genLength });
      chunk.forEach((p, b) => {
        if (exactMatch(r.tokens[b] as number[], p.answer)) ok++;
      });
      nfe += r.nfe;
      calls++;
      ms += r.ms;
      tokens += chunk.length * genLength;
    }
    em[t] = ok / probs.length;
  }
  const row = { variant: v, em, nfe: nfe / calls, tokensPerSecond: (tokens * 1000) / ms };
  rows.push(row);
  log(`${v.name}: ${tasks.map((t) => `${t} ${(100 * (em[t] as number)).toFixed(2)} %`).join(', ')}; NFE ${row.nfe.toFixed(2)} per generation; ${row.tokensPerSecond.toFixed(0)} tokens/s`);
}

// a small slice the zoo test re-measures on every run
const sliceTask = tasks[0] as TaskName;
const slice = (sets.get(sliceTask) as TaskProblem[]).slice(0, sliceCount);
const sliceRes = generateDiffusion(model, slice.map((p) => p.prompt), { genLength, blockLength: block });
const sliceEm = slice.filter((p, b) => exactMatch(sliceRes.tokens[b] as number[], p.answer)).length / slice.length;

const summaryFile = join(resolve(args.ckpt), 'train-summary.json');
interface TrainFacts {
  steps: number;
  batch: number;
  lr: number;
  warmup: number;
  seed: number;
  size: string;
  answerLength?: number;
  backend: string;
  ms: number;
  lastLoss: number | null;
}
const train = existsSync(summaryFile) ? (JSON.parse(await readFile(summaryFile, 'utf8')) as TrainFacts) : undefined;
const plain = rows[0] as Row;
const metadata: Record<string, string> = {
  'dllm-tiny.tasks': tasks.join(','),
  'dllm-tiny.gen_length': String(genLength),
  'dllm-tiny.block_length': String(block),
  'dllm-tiny.eval_seed': String(DLLM_TINY_EVAL_SEED),
  'dllm-tiny.eval_count': String(count),
  'dllm-tiny.slice_task': sliceTask,
  'dllm-tiny.slice_count': String(slice.length),
  'dllm-tiny.slice_exact_match': String(sliceEm),
};
for (const r of rows) for (const t of tasks) metadata[`dllm-tiny.em.${r.variant.name}.${t}`] = String(r.em[t]);
await saveModel(model, outDir, { metadata });

const pct = (x: number): string => `${(100 * x).toFixed(2)} %`;
const c = model.config;
const best = tasks.reduce((a, t) => ((plain.em[t] as number) > (plain.em[a] as number) ? t : a), tasks[0] as TaskName);
const trainLine = train
  ? `${train.steps} updates of batch ${train.batch}, AdamW (β 0.9/0.99, weight decay 0.01 on matrices), peak learning rate ${train.lr} with ${train.warmup} warm-up updates then cosine to 1/20 of the peak, gradient clipping at norm 1, seed ${train.seed}; backend ${train.backend}, ${(train.ms / 60000).toFixed(1)} min of training on 2 shared cores; mean training loss over the last 25 updates ${train.lastLoss === null ? 'n/a' : train.lastLoss.toFixed(4)}.`
  : 'training facts not found (tmp/dllm-tiny-ckpt/train-summary.json missing).';
const card = `# dllm-tiny — LLaDA-style masked-diffusion LM on procedural tasks

The masked-diffusion tiny host of DARE (dare.md §3.4, data-and-models.md §2.3): a bidirectional LLaMA-style encoder trained with LLaDA's SFT objective on ${tasks.join(', ')}. Plain LLaDA sampling (block ${block}, one token per step, low-confidence remasking, temperature 0) reaches **${pct(plain.em[best] as number)} exact match on ${best}** over ${count} held-out problems per task (${tasks.map((t) => `${t} ${pct(plain.em[t] as number)}`).join(', ')}).

## Architecture

Kind \`dllm\` (@leanpass/models): Embedding (gatherND lookup, ${c.vocabSize} × ${c.dim}), ${c.layers} blocks (RMSNorm ε ${c.eps.toExponential()}, CanvasAttention with ${c.heads} heads of ${c.headDim} (${c.kvHeads} K/V heads), rotate-half RoPE θ ${c.ropeTheta}, no causal mask; RMSNorm, SwiGLU ${c.hidden}), final RMSNorm, untied head; no biases. ${dllmParamCount(c).toLocaleString('en-US')} parameters. Vocabulary (@leanpass/data \`TASK_TOKENS\`): digits, letters a–f, '+', '=', task symbols A S R C, then pad ${c.padId}, EOS ${c.eosId}, [MASK] ${c.maskId}. Canvas: prompt left-padded to ${promptLength}, then ${genLength} answer positions (answers EOS-padded), ${c.maxLength} in all.

## Training

- Data: \`makeTaskSet\` (@leanpass/data) from the train side of the content split (split seed 0, test fraction 0.2; a test prompt never appears in training), a fresh seeded set each epoch of 100 updates; tasks ${tasks.join(', ')} in equal shares; add: two 2-digit operands; sort: 4–6 digits; reverse: 3–6 digits/letters.
- Objective: LLaDA SFT — per sequence t ~ U(0, 1), p = (1 − 10⁻³)t + 10⁻³, each answer token masked with probability p, prompt never masked, cross-entropy on masked positions weighted 1/p, normalised by answer length and batch (\`diffusionSftLoss\`).
- ${trainLine}

## Evaluation

${count} held-out problems per task (test side of the content split, \`makeTaskSet({split: 'test', seed: ${DLLM_TINY_EVAL_SEED}})\`), generation length ${genLength}, batches of ${batchSize}, exact match of the answer up to its first EOS. NFE = forwards per generation (batch); tokens/s on ${args.backend}, ${cpus().length} shared cores (indicative only).

| sampler | ${tasks.join(' | ')} | NFE | tokens/s |
|---|${tasks.map(() => '---|').join('')}---|---|
${rows.map((r) => `| ${r.variant.label} | ${tasks.map((t) => pct(r.em[t] as number)).join(' | ')} | ${r.nfe.toFixed(2)} | ${r.tokensPerSecond.toFixed(0)} |`).join('\n')}

For a cheap re-check, config.json's metadata records the plain sampler's exact match on the first ${slice.length} ${sliceTask} problems of that evaluation set: ${pct(sliceEm)} (\`dllm-tiny.slice_exact_match\`), and every figure of the table (\`dllm-tiny.em.<sampler>.<task>\`).

## Reproduce

\`\`\`sh
npx tsx --conditions=@leanpass/source tools/zoo/train-dllm-tiny.ts --size ${train?.size ?? 'small'} --steps ${train?.steps ?? 8000} --warmup ${train?.warmup ?? 200} --seed ${train?.seed ?? 0} --answer-length ${train?.answerLength ?? genLength}
npx tsx --conditions=@leanpass/source tools/zoo/eval-dllm-tiny.ts --count ${count}
\`\`\`

Training checkpoints every 100 updates to tmp/dllm-tiny-ckpt; re-running the training command resumes from the newest checkpoint (pass --fresh to start over). The data of each epoch is a pure function of (seed, epoch), so a resumed run matches an uninterrupted one.
`;
await writeFile(join(outDir, 'MODEL_CARD.md'), card);
log(`wrote ${join(outDir, 'MODEL_CARD.md')}`);
