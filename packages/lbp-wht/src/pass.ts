/**
 * The @leanpass/lbp-wht pass: options, plan (which linears / 1×1 convs, on which token grid), the
 * energy profiling for `bases: {type: 'energy'}`, and the rewrite to 'lbp-wht.linear'.
 */
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import {
  ConfigError,
  Module,
  compilePattern,
  PassError,
  createRunContext,
  definePass,
  layerSelectorSchema,
  selectOrThrow,
  type AnyModule,
  type JsonObject,
  type JsonValue,
  type ModuleRegistry,
  type Param,
  type PlanEntry,
  type RunContext,
} from '@leanpass/core';
import { LBP_LINEAR_KIND, LbpLinear, registerLbpKinds, type LbpLinearConfig } from './layer.js';
import { makeBases, padKinds, resolveGeometry, type PadMode } from './op.js';
import { patchGrid, patchify, reflectProblem } from './patch.js';
import { allPairs, isPowerOfTwo, lowPassL1, lowPassLinf, sortPairs, topEnergy, validatePairs, type BasePair } from './wht.js';

export const PASS_NAME = '@leanpass/lbp-wht';
export const PASS_VERSION = '0.1.0';
/** Module kinds the pass rewrites by default. */
export const TARGETS: readonly string[] = ['linear', 'conv2d'];

const posInt = z.number().int().min(1);
const pairSchema = z.tuple([z.number().int().min(0), z.number().int().min(0)]);

/** Which 2-D WHT bases to keep per patch. */
export const basesSchema = z.discriminatedUnion('type', [
  z
    .object({
      type: z.literal('lpL1'),
      rank: posInt.default(3).describe('keep (i, j) with i + j < rank; K = rank(rank+1)/2 for rank ≤ order; rank = 2·order − 1 keeps all'),
    })
    .strict(),
  z
    .object({
      type: z.literal('lpLinf'),
      rank: posInt.default(2).describe('keep (i, j) with max(i, j) < rank; K = rank², rank ≤ order'),
    })
    .strict(),
  z
    .object({
      type: z.literal('list'),
      pairs: z.array(pairSchema).min(1).describe('explicit (i, j) pairs, each once, 0 ≤ i, j < order'),
    })
    .strict(),
  z
    .object({
      type: z.literal('energy'),
      k: posInt.default(6).describe("the k bases with the most energy in each layer's input over the calibration batches (DC always kept)"),
    })
    .strict(),
  z.object({ type: z.literal('dc') }).strict(),
  z.object({ type: z.literal('full') }).strict(),
]);

/** Per-layer settings: the first override whose `include` matches a selected layer's path sets its order and/or bases. */
export const overrideSchema = z
  .object({
    include: z.array(z.string().min(1)).min(1).describe('path globs or re:regex (as in select.include); the first matching override applies'),
    order: posInt.optional().describe('patch side for these layers (default: the top-level order)'),
    bases: basesSchema.optional().describe('bases for these layers (default: the top-level bases)'),
  })
  .strict();

export type LbpWhtOverride = z.output<typeof overrideSchema>;

/** Checks an (order, bases) pair, reporting issues under `at` (['order'], ['bases', …] appended). */
function checkOrderBases(order: number, b: z.output<typeof basesSchema>, at: Array<string | number>, ctx: z.RefinementCtx): void {
  if (!isPowerOfTwo(order) || order < 2) {
    ctx.addIssue({ code: 'custom', path: [...at, 'order'], message: `expected a power of two ≥ 2 (2, 4, 8, 16, …), found ${order}` });
    return;
  }
  const o2 = order * order;
  if (b.type === 'lpL1' && b.rank > 2 * order - 1) {
    ctx.addIssue({ code: 'custom', path: [...at, 'bases', 'rank'], message: `expected rank ≤ 2·order − 1 = ${2 * order - 1} for order ${order} (that keeps all ${o2} bases), found ${b.rank}` });
  }
  if (b.type === 'lpLinf' && b.rank > order) {
    ctx.addIssue({ code: 'custom', path: [...at, 'bases', 'rank'], message: `expected rank ≤ order = ${order} (K = rank² ≤ ${o2}), found ${b.rank}` });
  }
  if (b.type === 'energy' && b.k > o2) ctx.addIssue({ code: 'custom', path: [...at, 'bases', 'k'], message: `expected k ≤ order² = ${o2}, found ${b.k}` });
  if (b.type === 'list') {
    const seen = new Set<number>();
    b.pairs.forEach(([i, j], n) => {
      if (i >= order || j >= order) ctx.addIssue({ code: 'custom', path: [...at, 'bases', 'pairs', n], message: `expected 0 ≤ i, j < order = ${order}, found [${i}, ${j}]` });
      if (seen.has(i * order + j)) ctx.addIssue({ code: 'custom', path: [...at, 'bases', 'pairs', n], message: `base [${i}, ${j}] is listed twice; each base may appear once` });
      seen.add(i * order + j);
    });
  }
}

export const optionsSchema = z
  .object({
    order: posInt.default(8).describe('patch side o of the 2-D WHT (a power of two)'),
    bases: basesSchema.default({ type: 'lpL1', rank: 3 }).describe('which bases to keep per patch'),
    padMode: z
      .enum(['zeroX', 'zero', 'reflect'])
      .default('zeroX')
      .describe("grids not a multiple of order: 'zeroX' pads x with zeros, dy by reflection; 'zero' both zeros; 'reflect' both by reflection (the reference; biases dW)"),
    grid: z
      .union([z.literal('auto'), z.tuple([posInt, posInt])])
      .default('auto')
      .describe("token grid [H, W] of every selected layer's input; 'auto': the nearest ancestor's config.grid (NHWC inputs: their shape)"),
    extraTokens: z
      .union([z.literal('auto'), z.number().int().min(0)])
      .default('auto')
      .describe("leading non-grid tokens (class token) per sample, kept exact; 'auto': config.extraTokens beside the grid, else 0"),
    select: layerSelectorSchema.default({}).describe('layers to rewrite (kinds linear, conv2d by default)'),
    overrides: z.array(overrideSchema).default([]).describe('per-layer order / bases: the first override whose include matches a selected layer applies'),
  })
  .strict()
  .superRefine((o, ctx) => {
    checkOrderBases(o.order, o.bases, [], ctx);
    o.overrides.forEach((ov, n) => {
      ov.include.forEach((p, k) => {
        try {
          compilePattern(p);
        } catch (e) {
          ctx.addIssue({ code: 'custom', path: ['overrides', n, 'include', k], message: (e as Error).message });
        }
      });
      if (ov.order === undefined && ov.bases === undefined) {
        ctx.addIssue({ code: 'custom', path: ['overrides', n], message: 'expected an order and/or bases to override, found neither' });
      } else {
        // the combined setting must be valid: an order override re-checks the top-level bases and vice versa
        checkOrderBases(ov.order ?? o.order, ov.bases ?? o.bases, ['overrides', n], ctx);
      }
    });
  });

export type LbpWhtOptions = z.output<typeof optionsSchema>;
export type LbpWhtOptionsInput = z.input<typeof optionsSchema>;

/** The bases an option selects (energy selection needs the profiled energies: see `topEnergy`). */
export function basesFor(o: Pick<LbpWhtOptions, 'order' | 'bases'>, energy?: ArrayLike<number>): Array<[number, number]> {
  const b = o.bases;
  switch (b.type) {
    case 'lpL1':
      return lowPassL1(o.order, b.rank);
    case 'lpLinf':
      return lowPassLinf(o.order, b.rank);
    case 'list': {
      const pairs = b.pairs.map(([i, j]) => [i, j] as [number, number]);
      validatePairs(o.order, pairs, 'bases.pairs');
      return sortPairs(pairs);
    }
    case 'dc':
      return [[0, 0]];
    case 'full':
      return allPairs(o.order);
    case 'energy':
      if (!energy) throw new ConfigError("bases.type 'energy' needs the profiled energies");
      return topEnergy(o.order, energy, b.k);
  }
}

/** K for options that do not need profiling. */
export function basesCount(o: Pick<LbpWhtOptions, 'order' | 'bases'>): number {
  return o.bases.type === 'energy' ? o.bases.k : basesFor(o).length;
}

/** The order and bases of the layer at `path`: the first matching override's, else the top-level ones. */
export function layerSettings(o: LbpWhtOptions, path: string): Pick<LbpWhtOptions, 'order' | 'bases'> & { override?: number } {
  const n = o.overrides.findIndex((ov) => ov.include.some((p) => compilePattern(p).test(path)));
  if (n < 0) return { order: o.order, bases: o.bases };
  const ov = o.overrides[n] as LbpWhtOverride;
  return { order: ov.order ?? o.order, bases: ov.bases ?? o.bases, override: n };
}

// ---------------------------------------------------------------------------------------------------
// Where a layer's grid comes from

export interface LayerGrid {
  /** [H, W], or null for an NHWC 1×1 conv (its input shape says it). */
  grid: [number, number] | null;
  extraTokens: number;
  /** The module path whose config gave the grid ('' = the root; undefined: option or input shape). */
  from?: string;
}

function readGrid(v: JsonValue | undefined, where: string): [number, number] {
  if (!Array.isArray(v) || v.length !== 2 || !v.every((n) => typeof n === 'number' && Number.isInteger(n) && n >= 1)) {
    throw new ConfigError(`${PASS_NAME}: expected config.grid of '${where || '(root)'}' to be [H, W] with positive integers, found ${JSON.stringify(v)}`);
  }
  return [v[0] as number, v[1] as number];
}

/**
 * The grid of the layer at `path`: the `grid` option, else config.grid of the nearest ancestor that
 * has one (parent first; extraTokens from beside it). Undefined when no ancestor has one.
 */
export function findLayerGrid(model: AnyModule, path: string, opts: Pick<LbpWhtOptions, 'grid' | 'extraTokens'>): LayerGrid | undefined {
  const parts = path.split('.');
  let found: LayerGrid | undefined;
  for (let n = parts.length - 1; n >= 0 && !found; n--) {
    const at = parts.slice(0, n).join('.');
    const cfg = model.get(at).config;
    if (cfg['grid'] !== undefined && cfg['grid'] !== null) {
      const e = cfg['extraTokens'];
      if (e !== undefined && (typeof e !== 'number' || !Number.isInteger(e) || e < 0)) {
        throw new ConfigError(`${PASS_NAME}: expected config.extraTokens of '${at || '(root)'}' to be an integer ≥ 0, found ${JSON.stringify(e)}`);
      }
      found = { grid: readGrid(cfg['grid'], at), extraTokens: typeof e === 'number' ? e : 0, from: at };
    }
  }
  if (opts.grid !== 'auto') found = { grid: [opts.grid[0], opts.grid[1]], extraTokens: found?.extraTokens ?? 0 };
  if (found && opts.extraTokens !== 'auto') found = { ...found, extraTokens: opts.extraTokens };
  return found;
}

/** Whether a 'conv2d' module is a 1×1, stride-1, ungrouped convolution (the only convs the pass rewrites). */
export function isPointwiseConv(m: AnyModule): boolean {
  const c = m.config;
  const one = (v: JsonValue | undefined, dflt: number): boolean => (v === undefined ? dflt === 1 : Array.isArray(v) ? v.every((x) => x === 1) : v === 1);
  const ks = c['kernelSize'] ?? c['kernel'];
  const groups = c['groups'];
  const dil = c['dilation'];
  const pad = c['padding'];
  const noPad = pad === undefined || pad === 'same' || pad === 'valid' || pad === 0;
  return one(ks, 0) && one(c['stride'] ?? c['strides'], 1) && (groups === undefined || groups === 1) && one(dil, 1) && noPad;
}

function weightOf(m: AnyModule): Param {
  return m.param('weight');
}

function biasOf(m: AnyModule): Param | undefined {
  return m.params.has('bias') ? m.param('bias') : undefined;
}

/** [in, out] of a linear or 1×1 conv from its weight (stored [in, out] or [1, 1, in, out]). */
function featuresOf(m: AnyModule, path: string): { inFeatures: number; outFeatures: number; weightShape: number[] } {
  const w = weightOf(m);
  const s = w.shape;
  const ok = s.length === 2 || (s.length === 4 && s[0] === 1 && s[1] === 1);
  if (!ok) throw new PassError(PASS_NAME, `'${path}' (${m.kind}) has a weight of shape [${s.join(', ')}]; expected [in, out] or [1, 1, in, out]`);
  return { inFeatures: s[s.length - 2] as number, outFeatures: s[s.length - 1] as number, weightShape: s };
}

// ---------------------------------------------------------------------------------------------------
// Energy profiling

/** Stands in for a planned layer while profiling: accumulates the energy of each WHT base of its input. */
class EnergyProbe extends Module {
  readonly kind = 'lbp-wht.probe';
  constructor(
    inner: AnyModule,
    private readonly order: number,
    private readonly padMode: PadMode,
    private readonly spec: LayerGrid,
    readonly energy: Float64Array,
  ) {
    super({});
    this.addChild('inner', inner);
  }
  forward(x: tf.Tensor, ctx: RunContext): tf.Tensor {
    tf.tidy(() => {
      const g = resolveGeometry(x.shape, this.order, { grid: this.spec.grid ?? undefined, extraTokens: this.spec.extraTokens }, PASS_NAME);
      if (this.padMode !== 'zero') {
        const problem = reflectProblem(g.H, g.W, this.order);
        if (problem) throw new ConfigError(`${PASS_NAME}: ${problem}`);
      }
      const full = makeBases(this.order, allPairs(this.order));
      const o2 = this.order * this.order;
      const { patches } = patchify(x, g, padKinds(this.padMode).x);
      const coef = tf.matMul(tf.tensor2d(full.bm, [o2, o2]), patches);
      const e = tf.sum(tf.square(coef), 1).dataSync();
      full.pairs.forEach(([i, j], k) => {
        this.energy[i * this.order + j] = (this.energy[i * this.order + j] as number) + (e[k] as number);
      });
    });
    return this.child('inner').call(x, ctx) as tf.Tensor;
  }
}

function batchInput(batch: unknown): tf.Tensor {
  if (batch instanceof tf.Tensor) return batch as tf.Tensor;
  if (batch !== null && typeof batch === 'object' && (batch as { x?: unknown }).x instanceof tf.Tensor) return (batch as { x: tf.Tensor }).x;
  throw new ConfigError(`${PASS_NAME}: expected calibration batches to be model inputs (a tf.Tensor or {x: tf.Tensor}), found ${typeof batch}`);
}

function disposeBatch(batch: unknown): void {
  if (batch instanceof tf.Tensor) batch.dispose();
  else if (batch !== null && typeof batch === 'object') for (const v of Object.values(batch)) if (v instanceof tf.Tensor) v.dispose();
}

// ---------------------------------------------------------------------------------------------------
// The pass

function describeBases(o: Pick<LbpWhtOptions, 'bases'>): string {
  const b = o.bases;
  switch (b.type) {
    case 'lpL1':
      return `LP_L1-${b.rank}`;
    case 'lpLinf':
      return `LP_Linf-${b.rank}`;
    case 'list':
      return `${b.pairs.length} listed bases`;
    case 'energy':
      return `top-${b.k} energy bases`;
    case 'dc':
      return 'DC only';
    case 'full':
      return 'all bases';
  }
}

function planEntries(model: AnyModule, options: LbpWhtOptions): PlanEntry[] {
  const chosen = selectOrThrow(model.modules(), options.select, TARGETS, PASS_NAME);
  const entries: PlanEntry[] = [];
  const skipped: string[] = [];
  const used = new Set<number>();
  for (const [path, m] of chosen) {
    const settings = layerSettings(options, path);
    const K = basesCount(settings);
    const o = settings.order;
    if (m.kind === 'conv2d' && !isPointwiseConv(m)) {
      skipped.push(`'${path}': not a 1×1 stride-1 convolution`);
      continue;
    }
    if (m.kind !== 'linear' && m.kind !== 'conv2d') {
      skipped.push(`'${path}': kind ${m.kind} is not a linear or 1×1 conv`);
      continue;
    }
    const feats = featuresOf(m, path);
    let lg = findLayerGrid(model, path, options);
    if (m.kind === 'conv2d') lg = { grid: lg?.grid ?? null, extraTokens: 0 };
    if (!lg) {
      skipped.push(`'${path}': no token grid (no ancestor has config.grid and the 'grid' option is 'auto')`);
      continue;
    }
    const detail: JsonObject = { K, order: o, inFeatures: feats.inFeatures, outFeatures: feats.outFeatures, extraTokens: lg.extraTokens, grid: lg.grid };
    if (settings.override !== undefined) {
      detail['override'] = settings.override;
      used.add(settings.override);
    }
    let reason = `${describeBases(settings)} (K = ${K}) per ${o}×${o} patch`;
    if (lg.grid) {
      const [H, W] = lg.grid;
      if (options.padMode !== 'zero') {
        const problem = reflectProblem(H, W, o);
        if (problem) throw new ConfigError(`${PASS_NAME}: layer '${path}' has a ${H}×${W} grid and padMode '${options.padMode}': ${problem}`);
      }
      const pg = patchGrid(H, W, o);
      const perSample = pg.ph * pg.pw;
      detail['patchesPerSample'] = perSample;
      detail['backwardRowRatio'] = (K * perSample + lg.extraTokens) / (H * W + lg.extraTokens);
      reason += ` of a ${H}×${W} grid${lg.from !== undefined ? ` (from '${lg.from || '(root)'}')` : ''}${lg.extraTokens ? ` + ${lg.extraTokens} exact token(s)` : ''}: backward rows ×${(detail['backwardRowRatio']).toFixed(3)}`;
    } else reason += ' of the NHWC input grid';
    if (settings.override !== undefined) reason += ` [override ${settings.override}]`;
    entries.push({ path, kind: m.kind, action: LBP_LINEAR_KIND, reason, detail });
  }
  const unused = options.overrides.map((ov, n) => ({ ov, n })).filter(({ n }) => !used.has(n));
  if (unused.length && entries.length) {
    const { ov, n } = unused[0] as (typeof unused)[number];
    throw new ConfigError(
      `${PASS_NAME}: overrides[${n}] (include [${ov.include.join(', ')}]) applies to none of the rewritten layers (an earlier override may take them): ` +
        `expected it to match one of [${entries.map((e) => e.path).join(', ')}]`,
    );
  }
  if (entries.length === 0) {
    throw new PassError(PASS_NAME, `nothing to rewrite: it looks for kinds [${TARGETS.join(', ')}] on a token grid; every selected layer was skipped`, skipped.map((message) => ({ path: '', message })));
  }
  return entries;
}

export const pass = definePass({
  name: PASS_NAME,
  version: PASS_VERSION,
  stage: 'finetune',
  description: 'LBP-WHT: low-rank backpropagation through K low-sequency 2-D Walsh–Hadamard bases per o×o token patch (exact forward and bias gradient)',
  options: optionsSchema,
  targets: TARGETS,
  registerKinds: (reg: ModuleRegistry) => registerLbpKinds(reg),
  plan: (model, options) => planEntries(model, options),
  prepareWeight: 0.5,
  async prepare({ model, options, ctx, plan, tools }): Promise<Map<string, Float64Array> | undefined> {
    if (!plan.entries.some((e) => layerSettings(options, e.path).bases.type === 'energy')) return undefined;
    const cal = ctx.calibration;
    if (!cal) throw new PassError(PASS_NAME, "bases.type 'energy' needs calibration batches (ctx.calibration: batches of model inputs, a tf.Tensor or {x}) to profile each layer's input");
    const probes: Array<{ path: string; inner: AnyModule; probe: EnergyProbe }> = [];
    try {
      for (const e of plan.entries) {
        const settings = layerSettings(options, e.path);
        if (settings.bases.type !== 'energy') continue;
        const o = settings.order;
        const inner = model.get(e.path);
        const d = e.detail ?? {};
        const grid = Array.isArray(d['grid']) ? ([d['grid'][0], d['grid'][1]] as [number, number]) : null;
        const probe = new EnergyProbe(inner, o, options.padMode, { grid, extraTokens: (d['extraTokens'] as number | undefined) ?? 0 }, new Float64Array(o * o));
        model.replace(e.path, probe);
        probes.push({ path: e.path, inner, probe });
      }
      let samples = 0;
      for await (const batch of cal.batches()) {
        tools.throwIfAborted();
        try {
          const x = batchInput(batch);
          const run = createRunContext({ mode: 'eval', seed: ctx.seed });
          tf.tidy(() => {
            model.call(x, run);
          });
          run.state.dispose();
          samples += x.rank > 1 ? (x.shape[0]) : 1;
        } finally {
          disposeBatch(batch);
        }
        tools.progress(Math.min(1, samples / Math.max(1, cal.sampleCap)), `profiled ${samples} samples`);
        if (samples >= cal.sampleCap) break;
      }
      if (samples === 0) throw new PassError(PASS_NAME, 'the calibration source yielded no batches');
    } finally {
      for (let i = probes.length - 1; i >= 0; i--) {
        const p = probes[i] as (typeof probes)[number];
        model.replace(p.path, p.inner);
      }
    }
    return new Map(probes.map((p) => [p.path, p.probe.energy]));
  },
  build(entry, module, tools) {
    const options = tools.options;
    const d = entry.detail ?? {};
    const feats = featuresOf(module, entry.path);
    const energy = tools.prepared?.get(entry.path);
    const settings = layerSettings(options, entry.path);
    const pairs: BasePair[] = basesFor(settings, energy);
    const grid = Array.isArray(d['grid']) ? ([d['grid'][0], d['grid'][1]] as [number, number]) : null;
    const bias = biasOf(module);
    const cfg: LbpLinearConfig = {
      inFeatures: feats.inFeatures,
      outFeatures: feats.outFeatures,
      bias: bias !== undefined,
      weightShape: feats.weightShape,
      wraps: module.kind,
      order: settings.order,
      bases: pairs.map(([i, j]) => [i, j]),
      padMode: options.padMode,
      grid,
      extraTokens: (d['extraTokens'] as number | undefined) ?? 0,
    };
    if (energy) tools.log('info', `${entry.path}: energy bases ${cfg.bases.map(([i, j]) => `(${i},${j})`).join(' ')}`);
    return new LbpLinear(cfg, { weight: weightOf(module), bias });
  },
  measure(model, { plan }) {
    const layers: JsonValue[] = plan.entries.map((e) => {
      const m = model.get(e.path);
      const c = m.config as LbpLinearConfig;
      return { path: e.path, K: c.bases.length, order: c.order, grid: c.grid, extraTokens: c.extraTokens, bases: c.bases };
    });
    return { layers };
  },
});
