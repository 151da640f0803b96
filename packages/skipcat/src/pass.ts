import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { ConfigError, PassError, definePass, layerSelectorSchema, selectOrThrow, type AnyModule, type JsonObject, type JsonValue, type PassContext, type PlanEntry, type RewriteTools } from '@leanpass/core';
import { DEFAULT_JITTER, mat, type Mat } from '@leanpass/linalg';
import { calibrate, type Calibration } from './calibrate.js';
import { METHODS, asvdMetric, metricOf, skipSplit, solveRank, spectrum, truncate, unitParams, usesCat, usesSkip, type Method } from './math.js';
import { CatSlice, LowRankLinear, registerSkipcatKinds, type LowRankConfig } from './modules.js';

export const PASS_NAME = '@leanpass/skipcat';
export const PASS_VERSION = '0.1.0';
/**
 * Key of `ctx.extras` under which a caller may pass a `Calibration` already collected (with
 * `calibrate`) on the same dense model and selection, to compare methods without re-running it.
 */
export const CALIBRATION_EXTRA = 'skipcat.calibration';

/** The seven linears of a LLaMA decoder layer, by child name. */
export const DECODER_LINEARS = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'] as const;
/** Children that share one input and are stacked by Cat. */
export const CAT_GROUPS: ReadonlyArray<readonly string[]> = [
  ['q', 'k', 'v'],
  ['gate', 'up'],
];

export const skipcatOptions = z
  .object({
    ratio: z.number().min(0).lt(1).default(0.2).describe('fraction of the selected linear-layer parameters removed, in [0, 1)'),
    method: z.enum(METHODS as [Method, ...Method[]]).default('skipcat').describe('skipcat | svd | asvd | svd-llm | cat | skip'),
    select: layerSelectorSchema.default({}),
    layers: z.enum(['decoder', 'all']).default('decoder').describe("'decoder': only linears named q,k,v,o,gate,up,down; 'all': every selected linear"),
    pivot: z.enum(['none', 'qrcp', 'strong']).default('strong').describe('Skip column choice: naive, QRCP, or QRCP + strong-RRQR swaps'),
    strongF: z.number().min(1).default(2).describe('strong-RRQR bound on |A′|'),
    whitening: z.enum(['eigen', 'cholesky']).default('eigen').describe('square root of the Gram on the input route'),
    jitter: z.array(z.number().positive()).min(1).default([...DEFAULT_JITTER]).describe('relative Cholesky jitter ladder (whitening: cholesky)'),
    rankAlign: z.number().int().min(1).default(1).describe('round ranks down to a multiple'),
    asvdAlpha: z.number().gt(0).max(1).default(0.5),
    maxSamples: z.number().int().min(1).default(128).describe('calibration sequences drawn at most (also capped by ctx.calibration.sampleCap)'),
    fold: z.boolean().default(true).describe("fold down's Skip permutation into gate/up outputs (slices instead of gathers)"),
    inference: z.enum(['gather', 'dense-a', 'auto']).default('gather').describe("Skip latent at run time: gatherND/slices + A′ (fewest MACs), one matMul with Ã = Π[I | A′]ᵀ (fewest ops), or auto (dense-a for ≤ 16 rows)"),
  })
  .strict();

export type SkipcatOptions = z.output<typeof skipcatOptions>;

interface Member {
  name: string;
  path: string;
  module: AnyModule;
  out: number;
}

/** One factorisation: a single linear or a Cat group sharing an input. */
export interface Unit {
  /** Path of the first member (the head). */
  key: string;
  parent: string;
  members: Member[];
  n: number;
  skip: boolean;
  /** Planned rank (before capping at the numerical rank). */
  rank: number;
  /** For a gate/up unit: the path of the down linear whose Skip permutation is folded into its outputs. */
  foldInto: string | null;
  /** For a down unit: its input arrives permuted. */
  inputPermuted: boolean;
}

function parentOf(path: string): { parent: string; name: string } {
  const i = path.lastIndexOf('.');
  return i < 0 ? { parent: '', name: path } : { parent: path.slice(0, i), name: path.slice(i + 1) };
}

function linearShape(m: AnyModule, path: string): { n: number; out: number; bias: boolean } {
  const c = m.config as Record<string, unknown>;
  const n = c['inFeatures'];
  const out = c['outFeatures'];
  if (typeof n !== 'number' || typeof out !== 'number') throw new ConfigError(`${PASS_NAME}: '${path}' (${m.kind}) has no numeric inFeatures/outFeatures in its config`);
  return { n, out, bias: c['bias'] === true };
}

/** The factorisation units for a model and options (used by plan and apply alike). */
export function planUnits(model: AnyModule, o: SkipcatOptions): Unit[] {
  let chosen = selectOrThrow(model.modules(), o.select, ['linear'], PASS_NAME);
  if (o.layers === 'decoder') {
    const names: readonly string[] = DECODER_LINEARS;
    const all = chosen;
    chosen = chosen.filter(([p]) => names.includes(parentOf(p).name));
    if (chosen.length === 0) {
      throw new ConfigError(
        `${PASS_NAME}: the selector matched ${all.length} module(s) of kind linear (${all
          .slice(0, 4)
          .map(([p]) => p)
          .join(', ')}), but none is a decoder linear named ${DECODER_LINEARS.join('/')}; set layers: 'all' to compress them anyway`,
      );
    }
  }
  for (const [p, m] of chosen) if (m.kind !== 'linear') throw new ConfigError(`${PASS_NAME}: '${p}' is of kind ${m.kind}; SkipCat rewrites modules of kind linear (weight [in, out], optional bias)`);
  const byPath = new Map(chosen);
  const taken = new Set<string>();
  const units: Unit[] = [];
  const keep = 1 - o.ratio;
  const skip = usesSkip(o.method);
  const mk = (members: Member[], parent: string): Unit => {
    const n = linearShape((members[0] as Member).module, (members[0] as Member).path).n;
    const M = members.reduce((a, b) => a + b.out, 0);
    return { key: (members[0] as Member).path, parent, members, n, skip, rank: solveRank(keep, n, M, skip, o.rankAlign), foldInto: null, inputPermuted: false };
  };
  for (const [path, m] of chosen) {
    if (taken.has(path)) continue;
    const { parent, name } = parentOf(path);
    const group = usesCat(o.method) ? CAT_GROUPS.find((g) => g.includes(name)) : undefined;
    if (group) {
      const paths = group.map((g) => (parent ? `${parent}.${g}` : g));
      const mods = paths.map((p) => byPath.get(p));
      if (mods.every((x) => x !== undefined)) {
        const shapes = paths.map((p, i) => linearShape(mods[i] as AnyModule, p));
        if (shapes.every((s) => s.n === (shapes[0] as { n: number }).n)) {
          const members = paths.map((p, i) => ({ name: group[i] as string, path: p, module: mods[i] as AnyModule, out: (shapes[i] as { out: number }).out }));
          for (const p of paths) taken.add(p);
          units.push(mk(members, parent));
          continue;
        }
      }
    }
    taken.add(path);
    units.push(mk([{ name, path, module: m, out: linearShape(m, path).out }], parent));
  }
  // Fold: down's Skip permutation into the gate and up outputs of the same parent.
  if (skip && o.fold) {
    for (const u of units) {
      if (u.members.length !== 1 || u.members[0]?.name !== 'down') continue;
      const feeders = units.filter((v) => v.parent === u.parent && v.members.some((x) => x.name === 'gate' || x.name === 'up'));
      const names = feeders.flatMap((v) => v.members.map((x) => x.name)).sort();
      if (names.join() !== 'gate,up') continue;
      for (const v of feeders) v.foldInto = u.key;
      u.inputPermuted = true;
    }
  }
  return units;
}

function planEntries(model: AnyModule, o: SkipcatOptions): PlanEntry[] {
  const entries: PlanEntry[] = [];
  for (const u of planUnits(model, o)) {
    const M = u.members.reduce((a, b) => a + b.out, 0);
    const dense = u.n * M;
    const params = unitParams(u.rank, u.n, M, u.skip);
    u.members.forEach((mem, i) => {
      const action = i > 0 ? 'skipcat.slice' : u.members.length > 1 ? 'skipcat.cat' : 'skipcat.linear';
      const reason =
        i > 0
          ? `shares the factor of '${u.key}' (Cat)`
          : `${o.method} rank ${u.rank} over ${u.members.map((x) => x.name).join('+')}: ${params} params vs ${dense} dense (${((100 * params) / dense).toFixed(1)} %)`;
      entries.push({ path: mem.path, kind: mem.module.kind, action, reason, detail: { unit: u.key, rank: u.rank, params: i === 0 ? params : 0, dense: i === 0 ? dense : 0 } });
    });
  }
  return entries;
}

/** Float64 W (out × in) of an nn Linear (weight stored [in, out]). */
function weightOf(m: AnyModule): Mat {
  const w = m.param('weight').variable;
  const [n, out] = w.shape as [number, number];
  const d = w.dataSync();
  const W = mat(out, n);
  for (let i = 0; i < n; i++) for (let j = 0; j < out; j++) W.data[j * n + i] = d[i * out + j] as number;
  return W;
}

/** What prepare computes per unit; tensors are made in build. */
interface Prepared {
  key: string;
  config: LowRankConfig;
  a: Float32Array | null;
  aShape: [number, number];
  b: Float32Array;
  bShape: [number, number];
  bias: Float32Array | null;
  info: Record<string, JsonValue>;
}

export interface PreparedState {
  units: Map<string, Unit>;
  unitOf: Map<string, string>;
  prepared: Map<string, Prepared>;
  calibration: Calibration;
}

function factorise(u: Unit, o: SkipcatOptions, cal: Calibration, perms: Map<string, Int32Array>): Prepared {
  const W = (() => {
    const parts = u.members.map((m) => weightOf(m.module));
    if (parts.length === 1) return parts[0] as Mat;
    const n = u.n;
    const M = parts.reduce((a, p) => a + p.rows, 0);
    const out = mat(M, n);
    let off = 0;
    for (const p of parts) {
      out.data.set(p.data, off);
      off += p.data.length;
    }
    return out;
  })();
  const n = u.n;
  const M = W.rows;
  const metric = metricOf(o.method);
  const key = cal.keyOf.get(u.key) as string;
  const st = cal.stats.get(key);
  if (!st) throw new PassError(PASS_NAME, `no calibration statistics for '${u.key}'`);
  for (const m of u.members.slice(1)) {
    if (cal.keyOf.get(m.path) !== key) throw new PassError(PASS_NAME, `'${m.path}' does not read the same input tensor as '${u.key}' (cross-attention?); Cat cannot share a factor there: use method 'skip' or exclude it`);
  }
  let G: Mat;
  if (metric === 'gram') G = mat(n, n, st.gram.slice());
  else if (metric === 'asvd') G = asvdMetric(Float64Array.from(st.absSum, (v) => v / st.rows), o.asvdAlpha);
  else {
    G = mat(n, n);
    for (let i = 0; i < n; i++) G.data[i * n + i] = 1;
  }
  const spec = spectrum(W, G, { whitening: o.whitening, jitter: o.jitter });
  const r = Math.min(u.rank, spec.sigma.length);
  if (r < 1) throw new PassError(PASS_NAME, `'${u.key}': the whitened weight is numerically zero; nothing to factorise`);
  const f = truncate(W, spec, r);
  let B = f.B;
  let aT: Float32Array | null;
  let aShape: [number, number];
  let skipCfg: LowRankConfig['skip'] = null;
  const info: Record<string, JsonValue> = { rank: r, plannedRank: u.rank, route: spec.route, n, out: M, members: u.members.map((m) => m.name) };
  if (spec.epsilon) info['jitter'] = spec.epsilon;
  let tail = 0;
  for (let i = r; i < spec.sigma.length; i++) tail += (spec.sigma[i] as number) ** 2;
  let total = 0;
  for (let i = 0; i < spec.sigma.length; i++) total += (spec.sigma[i] as number) ** 2;
  info['relError'] = total > 0 ? Math.sqrt(tail / total) : 0;
  if (u.skip) {
    const s = skipSplit(f, o.pivot, o.strongF);
    B = s.B;
    const k = n - r;
    aT = k > 0 ? new Float32Array(k * r) : null;
    for (let i = 0; i < k; i++) for (let j = 0; j < r; j++) (aT as Float32Array)[i * r + j] = s.coef.data[j * k + i] as number;
    aShape = [k, r];
    skipCfg = { keep: [...s.keep], rest: [...s.rest], inputPermuted: u.inputPermuted };
    let maxCoef = 0;
    for (const v of s.coef.data) maxCoef = Math.max(maxCoef, Math.abs(v));
    info['maxCoef'] = maxCoef;
    info['swaps'] = s.swaps;
    if (u.inputPermuted) perms.set(u.key, Int32Array.from([...s.keep, ...s.rest]));
  } else {
    aT = new Float32Array(n * r);
    for (let i = 0; i < n; i++) for (let j = 0; j < r; j++) aT[i * r + j] = f.A.data[j * n + i] as number;
    aShape = [n, r];
  }
  // bᵀ [r, M] with members' columns, biases concatenated; output permutations applied later.
  const b = new Float32Array(r * M);
  for (let j = 0; j < r; j++) for (let i = 0; i < M; i++) b[j * M + i] = B.data[i * r + j] as number;
  let bias: Float32Array | null = null;
  const hasBias = u.members.some((m) => linearShape(m.module, m.path).bias);
  if (hasBias) {
    bias = new Float32Array(M);
    let off = 0;
    for (const m of u.members) {
      if (linearShape(m.module, m.path).bias) bias.set(m.module.param('bias').variable.dataSync(), off);
      off += m.out;
    }
  }
  const config: LowRankConfig = {
    inFeatures: n,
    outs: u.members.map((m) => m.out),
    names: u.members.map((m) => m.name),
    rank: r,
    bias: hasBias,
    group: u.members.length > 1 ? u.key : null,
    skip: skipCfg,
    outputPerms: u.members.map(() => null),
    method: o.method,
    inference: o.inference,
  };
  info['params'] = unitParams(r, n, M, u.skip);
  info['dense'] = n * M;
  return { key: u.key, config, a: aT, aShape, b, bShape: [r, M], bias, info };
}

/** Applies a column permutation to one member's block of bᵀ and bias. */
function permuteOutputs(p: Prepared, member: number, perm: Int32Array): void {
  const M = p.bShape[1];
  const r = p.bShape[0];
  let off = 0;
  for (let i = 0; i < member; i++) off += p.config.outs[i] as number;
  const w = p.config.outs[member] as number;
  if (perm.length !== w) throw new PassError(PASS_NAME, `cannot fold a permutation of ${perm.length} into '${p.key}' member ${member} of width ${w}`);
  for (let j = 0; j < r; j++) {
    const row = p.b.slice(j * M + off, j * M + off + w);
    for (let c = 0; c < w; c++) p.b[j * M + off + c] = row[perm[c] as number] as number;
  }
  if (p.bias) {
    const row = p.bias.slice(off, off + w);
    for (let c = 0; c < w; c++) p.bias[off + c] = row[perm[c] as number] as number;
  }
  p.config.outputPerms[member] = [...perm];
}

async function prepareAll(model: AnyModule, o: SkipcatOptions, ctx: PassContext, tools: RewriteTools): Promise<PreparedState> {
  const units = planUnits(model, o);
  const linears = units.flatMap((u) => u.members.map((m) => ({ path: m.path, module: m.module, n: u.n })));
  if (!ctx.calibration) throw new PassError(PASS_NAME, 'requires calibration batches in ctx.calibration, found none');
  // A benchmark comparing methods may hand in statistics it already collected on the same dense model.
  const given = ctx.extras?.[CALIBRATION_EXTRA] as Calibration | undefined;
  if (given && linears.some((l) => !given.keyOf.has(l.path))) throw new PassError(PASS_NAME, `ctx.extras['${CALIBRATION_EXTRA}'] lacks statistics for some selected linears`);
  const calibration =
    given ??
    (await calibrate(model, linears, ctx.calibration, {
      maxSamples: o.maxSamples,
      who: PASS_NAME,
      signal: tools.signal,
      progress: (f, msg) => tools.progress(0.5 * f, msg),
    }));
  tools.throwIfAborted();
  const prepared = new Map<string, Prepared>();
  const perms = new Map<string, Int32Array>();
  // Fold targets (down) first, so their permutations exist for gate/up.
  const order = [...units].sort((a, b) => Number(b.inputPermuted) - Number(a.inputPermuted));
  let done = 0;
  for (const u of order) {
    tools.throwIfAborted();
    const p = factorise(u, o, calibration, perms);
    prepared.set(u.key, p);
    done++;
    tools.progress(0.5 + (0.5 * done) / units.length, `factorised ${u.key} (rank ${p.config.rank})`);
    await new Promise((res) => setTimeout(res, 0));
  }
  for (const u of units) {
    if (!u.foldInto) continue;
    const perm = perms.get(u.foldInto);
    if (!perm) continue;
    const p = prepared.get(u.key) as Prepared;
    u.members.forEach((m, i) => {
      if (m.name === 'gate' || m.name === 'up') permuteOutputs(p, i, perm);
    });
  }
  const unitOf = new Map<string, string>();
  for (const u of units) for (const m of u.members) unitOf.set(m.path, u.key);
  return { units: new Map(units.map((u) => [u.key, u])), unitOf, prepared, calibration };
}

/** Builds the replacement module for one planned linear. */
function buildModule(path: string, st: PreparedState): AnyModule {
  const key = st.unitOf.get(path);
  const u = key === undefined ? undefined : st.units.get(key);
  const p = key === undefined ? undefined : st.prepared.get(key);
  if (!u || !p) throw new PassError(PASS_NAME, `no prepared factorisation for '${path}'`);
  const idx = u.members.findIndex((m) => m.path === path);
  if (idx > 0) return new CatSlice({ group: u.key, index: idx, inFeatures: u.n, outFeatures: u.members[idx]?.out as number });
  // The module takes ownership of (and disposes) the initial-value tensors.
  const values: { a: tf.Tensor | null; b: tf.Tensor; bias?: tf.Tensor } = { a: p.a ? tf.tensor2d(p.a, p.aShape) : null, b: tf.tensor2d(p.b, p.bShape) };
  if (p.bias) values.bias = tf.tensor1d(p.bias);
  try {
    return new LowRankLinear(JSON.parse(JSON.stringify(p.config)) as LowRankConfig, values);
  } catch (e) {
    for (const t of [values.a, values.b, values.bias]) if (t && !t.isDisposed) t.dispose();
    throw e;
  }
}

export const pass = definePass<typeof skipcatOptions, PreparedState>({
  name: PASS_NAME,
  version: PASS_VERSION,
  stage: 'compress',
  description: 'SkipCat (Lu et al., AAAI 2026): calibrated low-rank factorisation of linear layers with shared (concatenated) Q/K/V and gate/up factors and pivoted identity blocks; baselines svd, asvd, svd-llm, cat, skip',
  options: skipcatOptions,
  targets: ['linear'],
  requires: ['calibration'],
  registerKinds: registerSkipcatKinds,
  plan: (model, o) => planEntries(model, o),
  prepare: ({ model, options, ctx, tools }) => prepareAll(model, options, ctx, tools),
  prepareWeight: 0.9,
  build: (entry, _module, tools) => buildModule(entry.path, tools.prepared),
  measure: (model, { prepared }) => {
    let before = 0;
    let after = 0;
    const units: JsonObject[] = [];
    for (const key of prepared.units.keys()) {
      const p = prepared.prepared.get(key);
      if (!p) continue;
      before += p.info['dense'] as number;
      after += p.info['params'] as number;
      units.push({ path: key, ...p.info });
    }
    return {
      linearParams: { before, after, ratio: before ? after / before : 1 },
      units,
      calibration: { samples: prepared.calibration.samples, tokens: prepared.calibration.tokens },
      modelParams: model.paramCount(),
    };
  },
});
