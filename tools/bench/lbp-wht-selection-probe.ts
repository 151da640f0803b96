/**
 * Is the base *selection* what limits LBP-WHT on the vit-tiny transfer task? Captures, with exact backprop,
 * the input x and output gradient dy of every adapted linear on two batches of fine-tuning images (zoo
 * vit-tiny with its new 5-way head, seed 0), then computes in Float64 the relative error and cosine of the
 * projected weight gradient ĝ_W = (P_S dy)ᵀ x against x ᵀdy on the second batch for base sets S of K = 6
 * per o×o patch:
 *   lpL1     LP_L1-3 (the default);
 *   dyEnergy the 6 bases with the most dy energy (of this batch: an oracle);
 *   xEnergy  the 6 bases with the most x energy (the pass's `energy` selection, of this batch);
 *   greedy   DC plus 5 bases chosen greedily on the *first* batch to minimise ‖Σ_{k∈S} C_k − g_W‖ with
 *            C_k = (P_k dy)ᵀ x (the best a per-layer fixed set could do for g_W), scored on the second.
 * Also the fraction of dy's energy the set keeps (what ĝ_x = P_S dy·Wᵀ depends on).
 *
 *   npx tsx --conditions=@leanpass/source tools/bench/lbp-wht-selection-probe.ts [--order 8] [--scale 1]
 *     [--layout contig|phase2] [--layers stage2] [--json out.json]
 *
 * --scale 2 runs the same weights on a 2× bilinear upsampled input (64×64 → grids 32×32 and 16×16: o = 8
 * then cuts stage 2 into 4 patches), a cheap look at whether a finer token grid would make the gradients
 * smoother; --layout phase2 groups stage-1 tokens by their position inside the 2×2 patch merge (every
 * second token per axis) before cutting patches; --layers keeps the layers whose path contains it.
 */
import { parseArgs } from 'node:util';
import { writeFile } from 'node:fs/promises';
import * as tf from '@tensorflow/tfjs';
import { createRunContext, matchesSelector, useBackend, type AnyModule, type JsonObject, type RunContext } from '@leanpass/core';
import { epochBatches } from '@leanpass/data';
import { buildVitTiny, replaceHead, type ViT } from '@leanpass/models';
import { softmaxCrossEntropy } from '@leanpass/train';
import { VIT_TINY_SELECT } from '@leanpass/lbp-wht/bench';
import { allPairs, lowPassL1, walshMatrix } from '@leanpass/lbp-wht';
import { loadTransferData } from '@leanpass/lbp-wht/transfer';
import { loadZoo } from '@leanpass/zoo';

const { values: args } = parseArgs({
  options: { order: { type: 'string', default: '8' }, scale: { type: 'string', default: '1' }, layout: { type: 'string', default: 'contig' }, layers: { type: 'string', default: '' }, json: { type: 'string' } },
});
const o = Number(args.order);
const scale = Number(args.scale);
const K = 6;
await useBackend('wasm');
const data = await loadTransferData({ seed: 0 });
const zoo = (await loadZoo('vit-tiny')) as ViT;
replaceHead(zoo, 5, 0);
let model: ViT = zoo;
if (scale > 1) {
  model = buildVitTiny({ imageSize: 28 * scale, inputSize: 32 * scale, numClasses: 5, seed: 0 });
  const src = new Map([...zoo.namedParams()]);
  for (const [path, p] of model.namedParams()) p.assign((src.get(path) as { variable: tf.Variable }).variable);
}
const upsample = (x: tf.Tensor): tf.Tensor => (scale > 1 ? tf.image.resizeBilinear(x as tf.Tensor4D, [28 * scale, 28 * scale]) : x);

interface Capture {
  x: Float32Array;
  g: Float32Array;
  B: number;
  N: number;
  Ci: number;
  Co: number;
}
const paths = [...model.modules()].filter(([p, m]) => matchesSelector(VIT_TINY_SELECT, p, m.kind, ['linear']) && p.includes(args.layers)).map(([p]) => p);
const current = new Map<string, Partial<Capture>>();
for (const p of paths) {
  const mod = model.get(p);
  const call = mod.call.bind(mod);
  (mod as { call: AnyModule['call'] }).call = (x: tf.Tensor, ctx: RunContext) => {
    const rec: Partial<Capture> = { x: x.dataSync() as Float32Array, B: x.shape[0], N: x.shape[1], Ci: x.shape[2] };
    current.set(p, rec);
    const spy = tf.customGrad((...a: Array<tf.Tensor | tf.GradSaveFunc>) => ({
      value: tf.clone(a[0] as tf.Tensor),
      gradFunc: (dy: tf.Tensor) => {
        rec.g = dy.dataSync() as Float32Array;
        rec.Co = dy.shape[2];
        return dy;
      },
    }));
    return spy(call(x, ctx) as tf.Tensor);
  };
}
const vars = [...model.namedParams()].map(([, p]) => p.variable);
function capture(b: { x: tf.Tensor; y: tf.Tensor }): Map<string, Capture> {
  current.clear();
  const ctx = createRunContext({ mode: 'train' });
  const { value, grads } = tf.variableGrads(() => softmaxCrossEntropy(model.call(upsample(b.x), ctx) as tf.Tensor, b.y, { labelSmoothing: 0.1 }), vars);
  tf.dispose([value, ...Object.values(grads)]);
  return new Map([...current].map(([k, v]) => [k, v as Capture]));
}
const batches = epochBatches(data.train, { batchSize: 32, seed: 0, epoch: 0, shuffle: true, padTo: 32 });
const fit = capture(batches.next().value as { x: tf.Tensor; y: tf.Tensor });
const test = capture(batches.next().value as { x: tf.Tensor; y: tf.Tensor });

const S = walshMatrix(o);
const base = ([i, j]: readonly [number, number]): Float64Array => {
  const m = new Float64Array(o * o);
  for (let u = 0; u < o; u++) for (let v = 0; v < o; v++) m[u * o + v] = (S[i * o + u] as number) * (S[j * o + v] as number);
  return m;
};
/** Token lists (sample-local indices, offset order u·o + v) of the o×o patches of an H×H grid. */
function patches(H: number, phase: boolean): number[][] {
  const d = phase ? 2 : 1;
  const out: number[][] = [];
  const h = H / d;
  for (let a = 0; a < d; a++)
    for (let c = 0; c < d; c++)
      for (let pr = 0; pr < h / o; pr++)
        for (let pc = 0; pc < h / o; pc++) {
          const l: number[] = [];
          for (let u = 0; u < o; u++) for (let v = 0; v < o; v++) l.push((d * (pr * o + u) + a) * H + d * (pc * o + v) + c);
          out.push(l);
        }
  return out;
}
/** P_S z: z [B·N, C] projected per patch onto the span of the bases. */
function project(z: Float32Array, cap: Capture, C: number, pats: number[][], bs: Float64Array[]): Float64Array {
  const out = new Float64Array(z.length);
  const coef = new Float64Array(C);
  for (let s = 0; s < cap.B; s++)
    for (const pat of pats)
      for (const m of bs) {
        coef.fill(0);
        pat.forEach((t, q) => {
          const w = m[q] as number;
          const at = (s * cap.N + t) * C;
          for (let c = 0; c < C; c++) coef[c] = (coef[c] as number) + w * (z[at + c] as number);
        });
        pat.forEach((t, q) => {
          const w = (m[q] as number) / (o * o);
          const at = (s * cap.N + t) * C;
          for (let c = 0; c < C; c++) out[at + c] = (out[at + c] as number) + w * (coef[c] as number);
        });
      }
  return out;
}
function xtg(cap: Capture, g: ArrayLike<number>): Float64Array {
  const r = new Float64Array(cap.Ci * cap.Co);
  for (let t = 0; t < cap.B * cap.N; t++)
    for (let i = 0; i < cap.Ci; i++) {
      const xv = cap.x[t * cap.Ci + i] as number;
      for (let j = 0; j < cap.Co; j++) r[i * cap.Co + j] = (r[i * cap.Co + j] as number) + xv * (g[t * cap.Co + j] as number);
    }
  return r;
}
const dot = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] as number) * (b[i] as number);
  return s;
};
const energyPerBase = (z: Float32Array, cap: Capture, C: number, pats: number[][]): number[] => allPairs(o).map((p) => dot(project(z, cap, C, pats, [base(p)]), z));
const top = (e: number[]): Array<[number, number]> => {
  const pairs = allPairs(o);
  const rest = e.map((v, k) => [v, k] as const).filter(([, k]) => k !== 0).sort((a, b) => b[0] - a[0]).slice(0, K - 1).map(([, k]) => pairs[k] as [number, number]);
  return [[0, 0], ...rest];
};

const results: JsonObject[] = [];
for (const path of paths) {
  const a = fit.get(path) as Capture;
  const b = test.get(path) as Capture;
  const H = Math.round(Math.sqrt(b.N));
  if (H % o !== 0) continue;
  const pats = patches(H, args.layout === 'phase2' && path.startsWith('stage1'));
  // greedy on the fitting batch
  const pairs = allPairs(o);
  const exactA = xtg(a, a.g);
  const terms = pairs.map((p) => xtg(a, project(a.g, a, a.Co, pats, [base(p)])));
  const chosen = [0];
  const acc = Float64Array.from(terms[0] as Float64Array);
  while (chosen.length < K) {
    let best = -1;
    let bestErr = Infinity;
    for (let k = 1; k < pairs.length; k++) {
      if (chosen.includes(k)) continue;
      const t = terms[k] as Float64Array;
      let d = 0;
      for (let i = 0; i < acc.length; i++) d += ((acc[i] as number) + (t[i] as number) - (exactA[i] as number)) ** 2;
      if (d < bestErr) [bestErr, best] = [d, k];
    }
    chosen.push(best);
    const t = terms[best] as Float64Array;
    for (let i = 0; i < acc.length; i++) acc[i] = (acc[i] as number) + (t[i] as number);
  }
  const sets: Record<string, Array<[number, number]>> = {
    lpL1: lowPassL1(o, 3),
    dyEnergy: top(energyPerBase(b.g, b, b.Co, pats)),
    xEnergy: top(energyPerBase(b.x, b, b.Ci, pats)),
    greedy: chosen.map((k) => pairs[k] as [number, number]),
  };
  const exact = xtg(b, b.g);
  const gg = dot(b.g, b.g);
  for (const [name, set] of Object.entries(sets)) {
    const pg = project(b.g, b, b.Co, pats, set.map(base));
    const est = xtg(b, pg);
    let d = 0;
    for (let i = 0; i < est.length; i++) d += ((est[i] as number) - (exact[i] as number)) ** 2;
    const ee = dot(exact, exact);
    const r: JsonObject = { layer: path, selection: name, bases: set, rel: Math.sqrt(d / ee), cos: dot(est, exact) / Math.sqrt(dot(est, est) * ee), dyEnergyKept: dot(pg, b.g) / gg };
    results.push(r);
    console.log(`${path.padEnd(18)} ${name.padEnd(8)} rel ${(r.rel as number).toFixed(3)}  cos ${(r.cos as number).toFixed(3)}  dy energy kept ${(r.dyEnergyKept as number).toFixed(3)}`);
  }
}
if (args.json) await writeFile(args.json, JSON.stringify({ what: 'tools/bench/lbp-wht-selection-probe.ts', order: o, scale, layout: args.layout, K, results }, null, 1));
