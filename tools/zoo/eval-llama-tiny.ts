/**
 * Re-evaluates llama-tiny and rewrites its model card (config.json metadata and MODEL_CARD.md):
 *
 *   npx tsx --conditions=@leanpass/source tools/zoo/eval-llama-tiny.ts [--checkpoint tmp/llama-tiny-ckpt]
 *
 * Without --checkpoint it re-measures the bundled zoo model; with it, it takes the weights of the newest
 * training checkpoint (a file or directory) instead — e.g. to publish a run stopped before its last step.
 * Training hyperparameters default to train-llama-tiny.ts's defaults; pass the ones the run used.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { loadModel, useBackend, type BackendName } from '@leanpass/core';
import { LLAMA_TINY_CONFIG, createLlama, type Llama } from '@leanpass/models';
import { loadCheckpointWeights } from '@leanpass/train';
import { LLAMA_TINY_RECIPE_OPTIONS, finishLlamaTiny } from './llama-tiny-card.js';

const root = resolve(import.meta.dirname, '../..');
const { values: args } = parseArgs({
  options: {
    checkpoint: { type: 'string' },
    ...LLAMA_TINY_RECIPE_OPTIONS,
    wall: { type: 'string', default: join(root, 'tmp/llama-tiny-ckpt/wall.json') },
    out: { type: 'string', default: join(root, 'packages/zoo/models/llama-tiny') },
    note: { type: 'string' },
  },
});
const log = (msg: string): void => console.log(`${new Date().toISOString()} ${msg}`);
await useBackend(args.backend as BackendName);
const outDir = resolve(args.out);
const seqLength = Number(args.seq);
let model: Llama;
let steps: number;
if (args.checkpoint !== undefined) {
  model = createLlama({ ...LLAMA_TINY_CONFIG, max_position_embeddings: seqLength }, { seed: Number(args.seed) });
  const state = await loadCheckpointWeights(model, resolve(args.checkpoint));
  steps = state.step;
} else {
  model = (await loadModel(outDir)) as Llama;
  const meta = JSON.parse(await readFile(join(outDir, 'config.json'), 'utf8')) as { metadata?: Record<string, string> };
  steps = Number(meta.metadata?.['llama-tiny.steps'] ?? args.steps);
}
const wallMs = existsSync(args.wall) ? (JSON.parse(await readFile(args.wall, 'utf8')) as { ms: number }).ms : Number.NaN;
await finishLlamaTiny({
  model,
  outDir,
  run: {
    steps,
    plannedSteps: Number(args.steps),
    batchSize: Number(args.batch),
    seqLength,
    peak: Number(args.lr),
    warmupSteps: Number(args.warmup),
    seed: Number(args.seed),
    backend: args.backend ?? 'wasm',
    wallMs,
  },
  log,
  ...(args.note !== undefined ? { note: args.note } : {}),
});
