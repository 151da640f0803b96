/**
 * Per-layer gradient error of LBP-WHT on the transfer task's starting point: the zoo vit-tiny with its new
 * 5-way head (seed 0), one batch of 32 fine-tuning images (Fashion-MNIST classes 5–9), label-smoothed
 * cross-entropy. For each adapted linear: rel = ‖ĝ_W − g_W‖_F / ‖g_W‖_F and the cosine between them, with
 * LBP-WHT LP_L1-r (o = 8) on the bench's 17 linears vs exact backprop through the same weights.
 *
 *   npx tsx --conditions=@leanpass/source tools/bench/lbp-wht-grad-error.ts [--ranks 2,3,4] [--batches 2] [--json out.json]
 *     [--mergeOrder 4] (merge.reduction at that order, the rest at 8) [--only glob,glob] (adapt only these layers)
 */
import { parseArgs } from 'node:util';
import { writeFile } from 'node:fs/promises';
import * as tf from '@tensorflow/tfjs';
import { createRunContext, useBackend, type AnyModule, type JsonObject } from '@leanpass/core';
import { epochBatches } from '@leanpass/data';
import { replaceHead, type ViT } from '@leanpass/models';
import { softmaxCrossEntropy } from '@leanpass/train';
import { VIT_TINY_SELECT } from '@leanpass/lbp-wht/bench';
import { optionsSchema, pass } from '@leanpass/lbp-wht';
import { loadTransferData } from '@leanpass/lbp-wht/transfer';
import { loadZoo } from '@leanpass/zoo';

const { values: args } = parseArgs({
  options: { only: { type: 'string' }, mergeOrder: { type: 'string', default: '8' }, ranks: { type: 'string', default: '2,3,4' }, batches: { type: 'string', default: '2' }, json: { type: 'string' } },
});
await useBackend('wasm');
const data = await loadTransferData({ seed: 0 });

async function model(rank: number): Promise<AnyModule> {
  const m = (await loadZoo('vit-tiny')) as ViT;
  replaceHead(m, 5, 0);
  if (rank > 0) {
    const mergeOrder = Number(args.mergeOrder);
    const inc = (args.only?.split(',') ?? VIT_TINY_SELECT.include).filter((p) => mergeOrder === 8 || p !== 'merge.reduction');
    const runs = [optionsSchema.parse({ order: 8, bases: { type: 'lpL1', rank }, select: { kinds: ['linear'], include: inc } })];
    if (mergeOrder !== 8) runs.push(optionsSchema.parse({ order: mergeOrder, bases: { type: 'lpL1', rank }, select: { kinds: ['linear'], include: ['merge.reduction'] } }));
    for (const options of runs) {
      await new Promise<void>((resolve, reject) => {
        pass.apply(m, options, { seed: 0, backend: tf.getBackend() }).subscribe({ error: (e: unknown) => reject(e instanceof Error ? e : new Error(String(e))), complete: () => resolve() });
      });
    }
  }
  return m;
}

/** Weight gradients of every linear under the adapted paths, summed over `n` batches of epoch 0. */
function weightGrads(m: AnyModule, n: number): Map<string, Float32Array> {
  const params = [...m.namedParams()].filter(([path]) => path.endsWith('.weight'));
  const vars = params.map(([, p]) => p.variable);
  const out = new Map<string, Float32Array>();
  let k = 0;
  for (const b of epochBatches(data.train, { batchSize: 32, seed: 0, epoch: 0, shuffle: true, padTo: 32 })) {
    if (k++ >= n) {
      tf.dispose([b.x, b.y]);
      break;
    }
    const ctx = createRunContext({ mode: 'train' });
    const { grads } = tf.variableGrads(() => softmaxCrossEntropy(m.call(b.x, ctx) as tf.Tensor, b.y, { labelSmoothing: 0.1 }), vars);
    params.forEach(([path, p]) => {
      const g = grads[p.variable.name];
      if (!g) return;
      const v = g.dataSync() as Float32Array;
      const acc = out.get(path);
      if (acc) for (let i = 0; i < v.length; i++) acc[i] = (acc[i] as number) + (v[i] as number);
      else out.set(path, Float32Array.from(v));
    });
    tf.dispose([...Object.values(grads), b.x, b.y]);
    ctx.state.dispose();
  }
  return out;
}

const n = Number(args.batches);
const exact = weightGrads(await model(0), n);
const results: JsonObject[] = [];
for (const rank of args.ranks.split(',').map(Number)) {
  const approx = weightGrads(await model(rank), n);
  for (const [path, g] of approx) {
    const e = exact.get(path) as Float32Array;
    let dd = 0;
    let ee = 0;
    let de = 0;
    for (let i = 0; i < g.length; i++) {
      const a = g[i] as number;
      const b = e[i] as number;
      dd += (a - b) * (a - b);
      ee += b * b;
      de += a * b;
    }
    let gg = 0;
    for (const a of g) gg += a * a;
    const layer = path.replace(/\.weight$/, '');
    if (!/(mlp\.fc\d|attn\.[^.]+|merge\.reduction)$/.test(layer)) continue;
    const r: JsonObject = { rank, K: (rank * (rank + 1)) / 2, layer, rel: Math.sqrt(dd / ee), cos: de / Math.sqrt(gg * ee) };
    results.push(r);
    console.log(`${r.K}\t${layer}\trel ${(r.rel as number).toFixed(3)}\tcos ${(r.cos as number).toFixed(3)}`);
  }
}
if (args.json) await writeFile(args.json, JSON.stringify(results, null, 1));
