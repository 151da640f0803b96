/**
 * Final evaluation of llama-tiny on the fortunes validation split, the checkpoint in the zoo and its
 * MODEL_CARD.md — shared by train-llama-tiny.ts (end of training) and eval-llama-tiny.ts (re-evaluate
 * a saved model or a training checkpoint).
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { machineDescription, saveModel } from '@leanpass/core';
import { bytesToText } from '@leanpass/data';
import {
  bitsPerByte,
  continuationTask,
  decodeLatency,
  fortunesCorpus,
  fortunesStream,
  generate,
  llamaLinearParams,
  multipleChoiceAccuracy,
  unigramBitsPerByte,
  type Llama,
} from '@leanpass/models';

/**
 * The training recipe's command-line options (node:util parseArgs), shared by the training script and
 * the re-evaluation script so the card always describes the recipe with the same defaults.
 */
export const LLAMA_TINY_RECIPE_OPTIONS = {
  steps: { type: 'string', default: '1200' },
  batch: { type: 'string', default: '16' },
  seq: { type: 'string', default: '128' },
  lr: { type: 'string', default: '0.003' },
  warmup: { type: 'string', default: '60' },
  seed: { type: 'string', default: '0' },
  backend: { type: 'string', default: 'wasm' },
} as const;

/** The fixed slice the zoo test re-measures: the first SLICE_WINDOWS non-overlapping windows of the val stream. */
export const SLICE_WINDOWS = 16;

export interface LlamaTinyRun {
  /** Updates the weights went through. */
  steps: number;
  /** Updates the schedule was planned for (--steps). */
  plannedSteps: number;
  batchSize: number;
  seqLength: number;
  peak: number;
  warmupSteps: number;
  seed: number;
  backend: string;
  wallMs: number;
}

export async function finishLlamaTiny(opts: { model: Llama; outDir: string; run: LlamaTinyRun; log: (m: string) => void; note?: string }): Promise<void> {
  const { model, outDir, run, log } = opts;
  const corpus = fortunesCorpus();
  const train = fortunesStream('train');
  const val = fortunesStream('val');
  const T = run.seqLength;
  const full = bitsPerByte(model, val, { window: T, batchSize: 16 });
  const slice = bitsPerByte(model, val.subarray(0, SLICE_WINDOWS * T + 1), { window: T, batchSize: SLICE_WINDOWS });
  const unigram = unigramBitsPerByte(train, val);
  const items = continuationTask(corpus.splits.val, { choices: 4, items: 200, seed: 0 });
  const mc = multipleChoiceAccuracy(model, items, { window: T });
  const lat = await decodeLatency(model, { tokens: 32, warmup: 8 });
  log(`val: ${full.bitsPerByte.toFixed(4)} bits/byte (ppl ${full.perplexity.toFixed(3)}, ${full.tokens} bytes); slice ${slice.bitsPerByte.toFixed(4)}; unigram ${unigram.toFixed(4)}; 4-way choice ${(mc.accuracy * 100).toFixed(1)} %; decode ${lat.msPerToken.toFixed(2)} ms/token`);

  const prompt = Array.from(new TextEncoder().encode('The meaning of life is'));
  const sample = bytesToText(Uint8Array.from(generate(model, prompt, { maxNewTokens: 80, temperature: 0 })));

  const tokensSeen = run.steps * run.batchSize * T;
  const metadata: Record<string, string> = {
    'llama-tiny.val_bits_per_byte': full.bitsPerByte.toFixed(6),
    'llama-tiny.val_slice_bits_per_byte': slice.bitsPerByte.toFixed(6),
    'llama-tiny.val_slice_windows': String(SLICE_WINDOWS),
    'llama-tiny.window': String(T),
    'llama-tiny.steps': String(run.steps),
    'llama-tiny.seed': String(run.seed),
  };
  await saveModel(model, outDir, { metadata });

  const floor = Number((run.peak / 10).toPrecision(6));
  const command = `npx tsx --conditions=@leanpass/source tools/zoo/train-llama-tiny.ts --steps ${run.plannedSteps} --batch ${run.batchSize} --seq ${T} --lr ${run.peak} --warmup ${run.warmupSteps} --seed ${run.seed}`;
  const linear = llamaLinearParams(model.config);
  const card = `# llama-tiny — byte-level LLaMA host for @leanpass/skipcat

A ${model.paramCount().toLocaleString('en-US')}-parameter LLaMA-architecture byte-level language model (vocabulary 256, no tokenizer) trained on
Debian's \`fortunes\` corpus: validation **${full.bitsPerByte.toFixed(3)} bits/byte** (a unigram byte model: ${unigram.toFixed(3)}).

## Architecture

kind \`llama\` from @leanpass/models (Hugging Face \`LlamaForCausalLM\` semantics): hidden 128, 4 layers, 4 heads (head dim 32, no GQA),
SwiGLU hidden 344, RMSNorm ε 1e-5, rotate-half RoPE θ 10000, untied LM head, context ${T}. ${linear.toLocaleString('en-US')} parameters in the
q/k/v/o/gate/up/down linears (what SkipCat compresses), ${(model.paramCount() - linear).toLocaleString('en-US')} in embeddings, head and norms.
Module paths: \`layers.{0..3}.attn.{q,k,v,o}\`, \`layers.{0..3}.mlp.{gate,up,down}\`, \`embed\`, \`norm\`, \`head\`.

## Data and splits

\`fortunes\` 1:1.99.1 (Debian packages \`fortunes\` + \`fortunes-min\`, /usr/share/games/fortunes), read with @leanpass/data's
\`loadFortunes()\`: records separated by \`%\`, symlinks skipped, overstrike sequences stripped, identical records merged (${corpus.stats.unique} left),
then split **by record** with a hash of its bytes into 90/5/5 train/val/test (${corpus.stats.records.train}/${corpus.stats.records.val}/${corpus.stats.records.test} records;
train/val streams of ${train.length}/${val.length} bytes, records joined by \`\\n%\\n\`). Training saw the train split only; every figure below
is on the validation split. The corpus is not redistributed here: evaluation needs the installed package (\`apt-get install -y fortunes\`;
@leanpass/models' \`fortunesStream('val')\` rebuilds the same split).

## Training

@leanpass/train's Trainer: AdamW (β 0.9/0.95, ε 1e-8, weight decay 0.1 on matrices only), linear warm-up ${run.warmupSteps} steps then cosine
from ${run.peak} to ${floor} over ${run.plannedSteps} steps, gradient clipping at global norm 1; **${run.steps} steps** × ${run.batchSize} windows × ${T} bytes
(**${tokensSeen.toLocaleString('en-US')} tokens seen**, ≈ ${(tokensSeen / train.length).toFixed(2)} passes over the train stream), windows drawn uniformly from
the train stream by \`createWindowSampler\` (seed ${run.seed}); initialisation seed ${run.seed}. Backend tfjs-${run.backend} on ${machineDescription()},
shared with other jobs (load average ≈ 6–13 on the 2 cores); wall time **${(run.wallMs / 60000).toFixed(1)} min**. Context ${T} as in data-and-models §2.6.
${opts.note ? `\n${opts.note}\n` : ''}
## Results (validation split)

| metric | value |
|---|---|
| bits/byte, all ${full.windows} windows of ${T} (${full.tokens.toLocaleString('en-US')} bytes) | **${full.bitsPerByte.toFixed(4)}** (per-byte perplexity ${full.perplexity.toFixed(3)}) |
| bits/byte, fixed slice: first ${SLICE_WINDOWS} windows (${slice.tokens} bytes) — re-measured by packages/zoo's test | ${slice.bitsPerByte.toFixed(4)} |
| unigram byte model (train frequencies, add-one) on the same bytes | ${unigram.toFixed(4)} |
| 4-way continuation choice (${mc.items} val records: true second half vs 3 others of the closest lengths, summed log-likelihood; chance 25 %) | ${(mc.accuracy * 100).toFixed(1)} % |
| batch-1 decode with K/V cache (median of 32 tokens, tfjs-${tf.getBackend()}, loaded machine) | ${lat.msPerToken.toFixed(2)} ms/token |

Greedy continuation of "The meaning of life is": \`${JSON.stringify(sample).slice(1, -1)}\`

## Reproduce

\`\`\`
apt-get install -y fortunes
${command}
\`\`\`

Checkpoints go to tmp/llama-tiny-ckpt every 100 steps; add \`--resume\` to continue an interrupted run from the newest one
(same result: the window sampler is a pure function of (seed, step) and the optimizer and RNG state are checkpointed).
\`npx tsx --conditions=@leanpass/source tools/zoo/eval-llama-tiny.ts\` re-measures these figures and rewrites this card.
`;
  await writeFile(join(outDir, 'MODEL_CARD.md'), card);
  log(`wrote ${outDir}`);
}
