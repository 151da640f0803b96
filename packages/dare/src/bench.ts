/**
 * `@leanpass/dare/bench`: the benchmark and the demo (core's PassPackage contract).
 *
 * Quality and reuse on the zoo's masked-diffusion LM `dllm-tiny` over the procedural task set it was
 * trained on (test split): the plain LLaDA sampler, the Fast-dLLM prefix cache and the dual cache, each
 * alone and with DARE-KV, DARE-O and DARE-KV+O at several thresholds τ — exact match per task, reuse rates
 * with their denominators, NFE, tokens/s, analytic attention MACs saved. Speed: one transformer layer at
 * D = 256, T = 256 (seeded random weights) dense vs DARE at 87 % reuse, interleaved, median of ≥ 20 pairs;
 * and tokens/s of the dual cache with and without DARE-KV, interleaved runs.
 */
import * as tf from '@tensorflow/tfjs';
import { lastValueFrom } from 'rxjs';
import { Rng, benchReport, cloneModel, type AnyModule, type BenchOptions, type BenchReport, type BenchRow, type JsonObject, type JsonValue } from '@leanpass/core';
// eslint-disable-next-line @nx/enforce-module-boundaries -- the bench needs the procedural tasks; library code (src/index.ts) never imports data
import { exactMatch, makeTaskSet, taskExtent, type TaskName, type TaskProblem } from '@leanpass/data';
import { getKVStore } from '@leanpass/nn';
// eslint-disable-next-line @nx/enforce-module-boundaries -- the bench runs the diffusion host and its sampler; library code never imports models
import { createDiffusionLM, DLLM_SMALL_CONFIG, DLLM_TINY_RANGES, DLLM_TINY_TASKS, generateDiffusion, type CacheMode, type DiffusionLM } from '@leanpass/models';
// eslint-disable-next-line @nx/enforce-module-boundaries -- the bench loads the zoo checkpoint; library code never imports zoo
import { loadZoo } from '@leanpass/zoo';
import { calibrateThreshold } from './calibrate.js';
import { queryDrift } from './decide.js';
import { DareAttention, layerStateKey } from './module.js';
import { DARE_KIND, PASS_NAME, PASS_VERSION, dareOptions, settingsOf, type DareMode, type DareOptionsInput, type DareSettings, type DareSettingsInput } from './options.js';
import { pass } from './pass.js';
import { summarizeDareStats, type DareStepRecord } from './stats.js';
import { layerMacs, timeSyntheticLayer } from './synthetic.js';

export { pass } from './pass.js';

/** The tasks and ranges dllm-tiny was trained on (tools/zoo/train-dllm-tiny.ts). */
export const HOST_TASKS: readonly TaskName[] = DLLM_TINY_TASKS;
export const HOST_RANGES = DLLM_TINY_RANGES;
/** The default threshold the summary is read at (dare.md knob table). */
export const DEFAULT_TAU = 0.01;
/** The attention-mass threshold of DARE-O's key-change-aware rule the bench reports (`forceRefresh.changedKeyMass`). */
export const KEY_MASS = 0.2;

interface Host {
  model: DiffusionLM;
  label: string;
  problems: TaskProblem[];
  genLength: number;
  blockLength: number;
}

async function loadHost(quick: boolean, seed: number, log?: (m: string) => void): Promise<Host> {
  const { promptLength } = taskExtent(HOST_TASKS, HOST_RANGES);
  let model: DiffusionLM;
  let label: string;
  try {
    model = (await loadZoo('dllm-tiny')) as DiffusionLM;
    label = 'zoo:dllm-tiny';
  } catch (e) {
    log?.(`zoo checkpoint dllm-tiny not available (${(e as Error).message.split('\n')[0] ?? ''}); using a seeded random dllm (numbers say nothing about quality)`);
    model = createDiffusionLM({ ...DLLM_SMALL_CONFIG, maxLength: promptLength + 8 }, { seed });
    label = `random:dllm-small(seed ${seed})`;
  }
  const genLength = model.config.maxLength - promptLength;
  const perTask = quick ? 43 : 86;
  const problems = makeTaskSet({ tasks: HOST_TASKS, count: perTask, seed: 1000 + seed, split: 'test', answerLength: genLength, ...HOST_RANGES }).problems;
  return { model, label, problems, genLength, blockLength: genLength };
}

/** The host with two blocks (for the Fast-dLLM caches). */
function cachedHost(host: Host): Host {
  return host.genLength % 2 === 0 ? { ...host, blockLength: host.genLength / 2 } : host;
}

interface RunStats {
  exact: number;
  perTask: Record<string, number>;
  tokens: number[][];
  nfe: number;
  ms: number;
  tokensPerS: number;
  records: DareStepRecord[];
}

/** Generates every problem (batches of 64, temperature 0, one token per step) and scores exact match. */
function runSampler(model: AnyModule, host: Host, cache: CacheMode, signal?: AbortSignal): RunStats {
  const records: DareStepRecord[] = [];
  const tokens: number[][] = [];
  let nfe = 0;
  let ms = 0;
  const batch = 64;
  for (let i = 0; i < host.problems.length; i += batch) {
    if (signal?.aborted) throw new Error('cancelled');
    const part = host.problems.slice(i, i + batch);
    const r = generateDiffusion(model as DiffusionLM, part.map((p) => p.prompt), {
      genLength: host.genLength,
      blockLength: host.blockLength,
      steps: host.genLength,
      cache,
      onGenerationEnd: (ctx) => {
        const recs = ctx.state.get<DareStepRecord[]>('dare.stats');
        if (recs) records.push(...recs);
      },
    });
    tokens.push(...r.tokens);
    nfe += r.nfe;
    ms += r.ms;
  }
  const ok = host.problems.map((p, i) => exactMatch(tokens[i] as number[], p.answer));
  const perTask: Record<string, number> = {};
  for (const t of HOST_TASKS) {
    const idx = host.problems.map((p, i) => (p.task === t ? i : -1)).filter((i) => i >= 0);
    perTask[`em_${t}`] = idx.length ? (100 * idx.filter((i) => ok[i]).length) / idx.length : 0;
  }
  const nTokens = host.problems.length * host.genLength;
  return { exact: (100 * ok.filter(Boolean).length) / ok.length, perTask, tokens, nfe, ms, tokensPerS: ms > 0 ? (1000 * nTokens) / ms : 0, records };
}

/** Analytic attention-layer MACs (Q, K, V, W_o, QKᵀ+PV over the canvas) of the recorded rows, and those DARE saved. */
function attentionMacs(records: readonly DareStepRecord[], model: DiffusionLM, length: number, s: DareSettings): { dense: number; saved: number } {
  const c = model.config;
  const m = layerMacs({ dim: c.dim, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim, hidden: c.hidden, keys: length });
  const perRow = m.q + m.kv + m.wo + m.attn;
  let dense = 0;
  let saved = 0;
  for (const r of records) {
    dense += r.active * perRow;
    if (r.kv) saved += r.kv.reused * m.kv;
    if (r.o) saved += r.o.reused * (m.attn + (s.oCachePoint === 'postWo' ? m.wo : 0));
  }
  return { dense, saved };
}

function setAll(model: AnyModule, settings: DareSettingsInput): void {
  for (const [, m] of model.modules()) if (m instanceof DareAttention) m.updateSettings(settings);
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const k = s.length >> 1;
  return s.length % 2 ? (s[k] as number) : ((s[k - 1] as number) + (s[k] as number)) / 2;
}

function agreement(a: number[][], b: number[][]): number {
  let same = 0;
  let all = 0;
  a.forEach((row, i) =>
    row.forEach((t, j) => {
      all++;
      if (t === (b[i] as number[])[j]) same++;
    }),
  );
  return all ? same / all : 1;
}

/** Average ranks (ties share their mean rank). */
function ranks(xs: readonly number[]): Float64Array {
  const idx = xs.map((_, i) => i).sort((a, b) => (xs[a] as number) - (xs[b] as number));
  const r = new Float64Array(xs.length);
  for (let i = 0; i < idx.length; ) {
    let j = i;
    while (j + 1 < idx.length && xs[idx[j + 1] as number] === xs[idx[i] as number]) j++;
    for (let k = i; k <= j; k++) r[idx[k] as number] = (i + j) / 2;
    i = j + 1;
  }
  return r;
}

function spearman(a: readonly number[], b: readonly number[]): number {
  const ra = ranks(a);
  const rb = ranks(b);
  const n = a.length;
  let ma = 0;
  let mb = 0;
  for (let i = 0; i < n; i++) {
    ma += ra[i] as number;
    mb += rb[i] as number;
  }
  ma /= n;
  mb /= n;
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < n; i++) {
    const x = (ra[i] as number) - ma;
    const y = (rb[i] as number) - mb;
    sab += x * y;
    saa += x * x;
    sbb += y * y;
  }
  return saa > 0 && sbb > 0 ? sab / Math.sqrt(saa * sbb) : 0;
}

export interface DriftObservation {
  /** (row, step) pairs observed: real tokens whose id did not change since the previous forward. */
  pairs: number;
  /** Spearman correlation of the query drift with the true relative change of the token's K and V rows. */
  spearmanK: number;
  spearmanV: number;
  /** Mean relative ΔK of the rows a selection would reuse, at a reuse fraction of the observed rows. */
  reuseFraction: number;
  meanDkByDrift: number;
  meanDkRandom: number;
  meanDkOracle: number;
}

/**
 * The observation behind DARE (dare.md §6 experiment 1): on the plain sampler (every row recomputed every
 * step, τ = 0), per layer and step, does a small query drift predict a small change of the row's K/V?
 * Compares reusing the lowest-drift rows with random rows and with the oracle (lowest true ΔK) at equal
 * reuse.
 */
function observeDrift(dareModel: AnyModule, host: Host, reuseFraction: number, seed: number): DriftObservation {
  const drifts: number[] = [];
  const dks: number[] = [];
  const dvs: number[] = [];
  const c = host.model.config;
  const dq = c.heads * c.headDim;
  const dkv = c.kvHeads * c.headDim;
  const prev = new Map<number, { q: Float32Array; k: Float32Array; v: Float32Array; ids: Int32Array }>();
  const rel = (x: Float32Array, y: Float32Array, rowsOf: (j: number) => number, n: number): number => {
    let num = 0;
    let den = 0;
    for (let j = 0; j < n; j++) {
      const i = rowsOf(j);
      const d = (x[i] as number) - (y[i] as number);
      num += d * d;
      den += (y[i] as number) ** 2;
    }
    return den > 0 ? Math.sqrt(num / den) : 0;
  };
  const part = host.problems.slice(0, 64);
  generateDiffusion(dareModel as DiffusionLM, part.map((p) => p.prompt), {
    genLength: host.genLength,
    blockLength: host.blockLength,
    steps: host.genLength,
    cache: 'none',
    onStep: (info, ctx) => {
      const { batch: B, length: L, ids, pad } = info.step;
      for (let layer = 0; layer < c.layers; layer++) {
        const st = ctx.state.get<{ kv: { qRef: Float32Array } }>(layerStateKey(layer));
        const store = getKVStore(ctx, `dllm.kv/${layer}`);
        if (!st || !store) continue;
        const cur = { q: st.kv.qRef.slice(), k: store.k.dataSync() as Float32Array, v: store.v.dataSync() as Float32Array, ids: ids.slice() };
        const before = prev.get(layer);
        prev.set(layer, { ...cur, k: cur.k.slice(), v: cur.v.slice() });
        if (!before || info.step.blockStart) continue;
        for (let b = 0; b < B; b++) {
          for (let p = pad[b] as number; p < L; p++) {
            const row = b * L + p;
            if (cur.ids[row] !== before.ids[row]) continue;
            drifts.push(queryDrift(cur.q, row * dq, before.q, row * dq, dq, 'cosine'));
            // K/V rows of token (b, p) in [B, Hk, L, d]: head h, element e at ((b·Hk + h)·L + p)·d + e.
            const at = (j: number): number => ((b * c.kvHeads + Math.floor(j / c.headDim)) * L + p) * c.headDim + (j % c.headDim);
            dks.push(rel(cur.k, before.k, at, dkv));
            dvs.push(rel(cur.v, before.v, at, dkv));
          }
        }
      }
    },
  });
  const n = drifts.length;
  const k = Math.max(1, Math.floor(reuseFraction * n));
  const order = (xs: number[]): number[] => xs.map((_, i) => i).sort((a, b) => (xs[a] as number) - (xs[b] as number));
  const mean = (idx: number[]): number => idx.reduce((a, i) => a + (dks[i] as number), 0) / Math.max(1, idx.length);
  const rng = new Rng(seed).fork('dare.observe');
  return {
    pairs: n,
    spearmanK: spearman(drifts, dks),
    spearmanV: spearman(drifts, dvs),
    reuseFraction,
    meanDkByDrift: mean(order(drifts).slice(0, k)),
    meanDkRandom: mean(rng.permutation(n).slice(0, k)),
    meanDkOracle: mean(order(dks).slice(0, k)),
  };
}

const MODE_LABEL: Record<DareMode, string> = { kv: 'dare-kv', o: 'dare-o', 'kv+o': 'dare-kv+o' };

async function applyDare(model: DiffusionLM, options: DareOptionsInput, seed: number): Promise<DiffusionLM> {
  const clone = (await cloneModel(model)) as DiffusionLM;
  await lastValueFrom(pass.apply(clone, dareOptions.parse(options), { seed, backend: tf.getBackend() }));
  return clone;
}

/** The benchmark: quality/reuse rows per cache × mode × τ, layer-time rows, dual-cache tokens/s. */
export async function bench(opts: BenchOptions): Promise<BenchReport> {
  const log = opts.log;
  const host = await loadHost(opts.quick, opts.seed, log);
  const taus = opts.quick ? [0.003, DEFAULT_TAU, 0.03] : [0.001, 0.003, DEFAULT_TAU, 0.03, 0.1];
  const modes: DareMode[] = ['kv', 'o', 'kv+o'];
  const caches: CacheMode[] = ['none', 'prefix', 'dual'];
  const length = host.model.config.maxLength;
  const dareModel = await applyDare(host.model, {}, opts.seed);
  const rows: BenchRow[] = [];
  const summary: Record<string, number> = {};
  const total = caches.length * (1 + modes.length * taus.length) + 3 + 3 + modes.length + 2;
  let done = 0;
  const tick = (msg: string): void => {
    done++;
    opts.progress?.(done / total, msg);
    log?.(msg);
  };
  try {
    for (const cache of caches) {
      // LLaDA's default for the plain sampler: one block over the generation. Fast-dLLM's caches work
      // across blocks: two blocks for them (with one block, prefix and dual windows coincide).
      const hc = cache === 'none' ? host : cachedHost(host);
      const base = runSampler(host.model, hc, cache, opts.signal);
      rows.push({
        label: `${cache}`,
        options: {},
        quality: { exact_match: base.exact, ...base.perTask },
        cost: { time_ms: base.ms, tokens_per_s: base.tokensPerS, nfe: base.nfe },
        extra: { sampler: { cache, genLength: hc.genLength, blockLength: hc.blockLength, steps: hc.genLength, temperature: 0, remasking: 'low_confidence' } },
      });
      tick(`${cache}: exact match ${base.exact.toFixed(1)} %, ${base.tokensPerS.toFixed(0)} tokens/s`);
      for (const mode of modes) {
        for (const tau of taus) {
          setAll(dareModel, { mode, decision: 'threshold', threshold: tau });
          const r = runSampler(dareModel, hc, cache, opts.signal);
          const t = summarizeDareStats(r.records);
          const s = settingsOf(dareOptions.parse({ mode, threshold: tau }));
          const macs = attentionMacs(r.records, host.model, length, s);
          const cost: Record<string, number> = { time_ms: r.ms, tokens_per_s: r.tokensPerS, nfe: r.nfe, attn_macs_saved_frac: macs.dense ? macs.saved / macs.dense : 0 };
          if (t.kv) {
            cost['reuse_kv'] = t.kv.rate;
            cost['reuse_kv_prefix_inclusive'] = t.kvPrefixInclusive?.rate ?? 0;
          }
          if (t.o) {
            cost['reuse_o'] = t.o.rate;
            cost['reuse_o_prefix_inclusive'] = t.oPrefixInclusive?.rate ?? 0;
          }
          const extra: Record<string, JsonValue> = {
            denominators: JSON.parse(JSON.stringify({ kv: t.kv, o: t.o, kvPrefixInclusive: t.kvPrefixInclusive, oPrefixInclusive: t.oPrefixInclusive })) as JsonObject,
            perLayer: t.perLayer.map((l) => ({ layer: l.layer, kv: l.kv ? l.kv.rate : null, o: l.o ? l.o.rate : null })),
            attnMacs: { dense: macs.dense, saved: macs.saved },
          };
          rows.push({
            label: `${cache} + ${MODE_LABEL[mode]} τ=${tau}`,
            options: { mode, threshold: tau },
            quality: { exact_match: r.exact, exact_match_delta: r.exact - base.exact, token_agreement: agreement(r.tokens, base.tokens), ...r.perTask },
            cost,
            extra,
          });
          if (tau === DEFAULT_TAU) {
            const key = mode === 'kv' ? 'kv' : mode === 'o' ? 'o' : 'kvo';
            if (cache === 'none') {
              summary[`exact_match_delta_${key}`] = r.exact - base.exact;
              if (mode === 'kv') summary['reuse_rate_kv'] = t.kv?.rate ?? 0;
              if (mode === 'o') summary['reuse_rate_o'] = t.o?.rate ?? 0;
            } else if (mode === 'kv') summary[`reuse_rate_kv_${cache}`] = t.kv?.rate ?? 0;
          }
          tick(`${cache} + ${MODE_LABEL[mode]} τ=${tau}: exact match ${r.exact.toFixed(1)} % (Δ ${(r.exact - base.exact).toFixed(1)}), reuse kv ${t.kv ? (100 * t.kv.rate).toFixed(1) : '–'} % o ${t.o ? (100 * t.o.rate).toFixed(1) : '–'} %`);
        }
      }
    }

    // The observation: query drift vs the true change of K/V (τ = 0, every row recomputed).
    setAll(dareModel, { mode: 'kv', decision: 'threshold', threshold: 0 });
    const obs = observeDrift(dareModel, host, summary['reuse_rate_kv'] ?? 0.5, opts.seed);
    summary['drift_spearman_dk'] = obs.spearmanK;
    rows.push({
      label: 'observation: drift vs true ΔK',
      options: { mode: 'kv', threshold: 0 },
      quality: { spearman_dk: obs.spearmanK, spearman_dv: obs.spearmanV },
      cost: { mean_dk_by_drift: obs.meanDkByDrift, mean_dk_random: obs.meanDkRandom, mean_dk_oracle: obs.meanDkOracle, reuse_fraction: obs.reuseFraction, pairs: obs.pairs },
    });
    tick(`observation: spearman(drift, ΔK) ${obs.spearmanK.toFixed(3)}; mean ΔK of reused rows at ${(100 * obs.reuseFraction).toFixed(0)} %: drift ${obs.meanDkByDrift.toExponential(2)}, random ${obs.meanDkRandom.toExponential(2)}, oracle ${obs.meanDkOracle.toExponential(2)}`);

    // τ is model-dependent (dare.md §2): calibrate DARE-KV on training-split prompts for 80 % reuse, evaluate on the test problems.
    {
      const calib = makeTaskSet({ tasks: HOST_TASKS, count: 11, seed: 77 + opts.seed, split: 'train', answerLength: host.genLength, ...HOST_RANGES }).problems.map((p) => p.prompt);
      setAll(dareModel, { mode: 'kv', decision: 'threshold', threshold: DEFAULT_TAU });
      const cal = await calibrateThreshold(dareModel, calib, 0.8, {
        tolerance: 0.005,
        maxRuns: 10,
        generate: (m, prompts) => {
          const recs: DareStepRecord[] = [];
          generateDiffusion(m as DiffusionLM, prompts, {
            genLength: host.genLength,
            blockLength: host.blockLength,
            steps: host.genLength,
            cache: 'none',
            onGenerationEnd: (ctx) => recs.push(...(ctx.state.get<DareStepRecord[]>('dare.stats') ?? [])),
          });
          return recs;
        },
      });
      const base = rows.find((r) => r.label === 'none');
      const r = runSampler(dareModel, host, 'none', opts.signal);
      const t = summarizeDareStats(r.records);
      const baseEm = base?.quality['exact_match'] ?? r.exact;
      summary['calibrated_threshold_kv'] = cal.threshold;
      summary['reuse_rate_kv_calibrated'] = t.kv?.rate ?? 0;
      summary['exact_match_delta_kv_calibrated'] = r.exact - baseEm;
      rows.push({
        label: `none + dare-kv τ=${cal.threshold.toPrecision(3)} (calibrated for 80 % reuse)`,
        options: { mode: 'kv', threshold: cal.threshold },
        quality: { exact_match: r.exact, exact_match_delta: r.exact - baseEm, ...r.perTask },
        cost: { time_ms: r.ms, tokens_per_s: r.tokensPerS, nfe: r.nfe, reuse_kv: t.kv?.rate ?? 0 },
        extra: { calibration: { prompts: calib.length, target: 0.8, runs: cal.runs.map((x) => ({ threshold: x.threshold, reuse: x.reuse })) } },
      });
      tick(`calibrated τ ${cal.threshold.toPrecision(3)} (train prompts reuse ${(100 * cal.reuse).toFixed(1)} %): test reuse kv ${t.kv ? (100 * t.kv.rate).toFixed(1) : '–'} %, exact match Δ ${(r.exact - baseEm).toFixed(1)}`);
    }

    // DARE-O's refresh rules at the default τ on the plain sampler: without the masked-row refresh (the rule
    // set before it), the key-change-aware rule alone, and both. The default is `maskedInBlock` alone.
    {
      const base = rows.find((r) => r.label === 'none');
      const baseEm = base?.quality['exact_match'] ?? 0;
      const variants: Array<{ key: string; label: string; force: { maskedInBlock: boolean; changedKeyMass: number | null } }> = [
        { key: 'no_masked_refresh', label: 'without the masked-row refresh', force: { maskedInBlock: false, changedKeyMass: null } },
        { key: 'key_mass', label: `changedKeyMass ${KEY_MASS}, no masked-row refresh`, force: { maskedInBlock: false, changedKeyMass: KEY_MASS } },
        { key: 'masked_key_mass', label: `masked-row refresh + changedKeyMass ${KEY_MASS}`, force: { maskedInBlock: true, changedKeyMass: KEY_MASS } },
      ];
      for (const v of variants) {
        setAll(dareModel, { mode: 'o', decision: 'threshold', threshold: DEFAULT_TAU, forceRefresh: v.force });
        const r = runSampler(dareModel, host, 'none', opts.signal);
        const t = summarizeDareStats(r.records);
        summary[`exact_match_delta_o_${v.key}`] = r.exact - baseEm;
        summary[`reuse_rate_o_${v.key}`] = t.o?.rate ?? 0;
        rows.push({
          label: `none + dare-o τ=${DEFAULT_TAU} ${v.label}`,
          options: { mode: 'o', threshold: DEFAULT_TAU, forceRefresh: v.force },
          quality: { exact_match: r.exact, exact_match_delta: r.exact - baseEm, ...r.perTask },
          cost: { time_ms: r.ms, tokens_per_s: r.tokensPerS, nfe: r.nfe, reuse_o: t.o?.rate ?? 0 },
          extra: { denominators: JSON.parse(JSON.stringify({ o: t.o })) as JsonObject },
        });
        tick(`dare-o ${v.label}: exact match Δ ${(r.exact - baseEm).toFixed(2)}, reuse o ${t.o ? (100 * t.o.rate).toFixed(1) : '–'} %`);
      }
      setAll(dareModel, { forceRefresh: { maskedInBlock: true, changedKeyMass: null } });
    }

    // The plain sampler with two blocks (the spec's demo plan: block 4–8; each block's first forward refreshes every row).
    if (host.genLength % 2 === 0) {
      const half = { ...host, blockLength: host.genLength / 2 };
      const b2 = runSampler(host.model, half, 'none', opts.signal);
      rows.push({
        label: `none block ${half.blockLength}`,
        options: {},
        quality: { exact_match: b2.exact, ...b2.perTask },
        cost: { time_ms: b2.ms, tokens_per_s: b2.tokensPerS, nfe: b2.nfe },
        extra: { sampler: { cache: 'none', genLength: half.genLength, blockLength: half.blockLength, steps: half.genLength, temperature: 0, remasking: 'low_confidence' } },
      });
      for (const mode of modes) {
        setAll(dareModel, { mode, decision: 'threshold', threshold: DEFAULT_TAU });
        const r2 = runSampler(dareModel, half, 'none', opts.signal);
        const t2 = summarizeDareStats(r2.records);
        const key = mode === 'kv' ? 'kv' : mode === 'o' ? 'o' : 'kvo';
        summary[`exact_match_delta_${key}_two_blocks`] = r2.exact - b2.exact;
        if (t2.kv && mode === 'kv') summary['reuse_rate_kv_two_blocks'] = t2.kv.rate;
        if (t2.o && mode === 'o') summary['reuse_rate_o_two_blocks'] = t2.o.rate;
        const cost: Record<string, number> = { time_ms: r2.ms, tokens_per_s: r2.tokensPerS, nfe: r2.nfe };
        if (t2.kv) cost['reuse_kv'] = t2.kv.rate;
        if (t2.o) cost['reuse_o'] = t2.o.rate;
        rows.push({
          label: `none block ${half.blockLength} + ${MODE_LABEL[mode]} τ=${DEFAULT_TAU}`,
          options: { mode, threshold: DEFAULT_TAU },
          quality: { exact_match: r2.exact, exact_match_delta: r2.exact - b2.exact, token_agreement: agreement(r2.tokens, b2.tokens), ...r2.perTask },
          cost,
          extra: { blockLength: half.blockLength, denominators: JSON.parse(JSON.stringify({ kv: t2.kv, o: t2.o })) as JsonObject, baselineExactMatch: b2.exact },
        });
        tick(`two blocks of ${half.blockLength} + ${MODE_LABEL[mode]}: exact match Δ ${(r2.exact - b2.exact).toFixed(2)}, reuse kv ${t2.kv ? (100 * t2.kv.rate).toFixed(1) : '–'} % o ${t2.o ? (100 * t2.o.rate).toFixed(1) : '–'} %`);
      }
    }

    // Dual cache ± DARE-KV at the default τ: interleaved runs, median tokens/s.
    setAll(dareModel, { mode: 'kv', decision: 'threshold', threshold: DEFAULT_TAU });
    const reps = opts.quick ? 9 : 15;
    const plain: number[] = [];
    const withKv: number[] = [];
    for (let i = 0; i < reps; i++) {
      plain.push(runSampler(host.model, cachedHost(host), 'dual', opts.signal).tokensPerS);
      withKv.push(runSampler(dareModel, cachedHost(host), 'dual', opts.signal).tokensPerS);
    }
    // Median over the interleaved pairs of (with DARE-KV / alone), as for the layer time: robust to the load of
    // the shared machine drifting during the runs (the ratio of the two medians is kept as a second figure).
    const pairRatio = median(withKv.map((w, i) => w / (plain[i] as number)));
    summary['tokens_per_s_ratio_dual_cache'] = pairRatio;
    summary['tokens_per_s_ratio_dual_cache_of_medians'] = median(withKv) / median(plain);
    rows.push({
      label: `dual ± dare-kv τ=${DEFAULT_TAU} interleaved`,
      options: { mode: 'kv', threshold: DEFAULT_TAU },
      quality: {},
      cost: { tokens_per_s: median(withKv), tokens_per_s_dual_alone: median(plain), ratio_median_of_pairs: pairRatio, ratio_of_medians: median(withKv) / median(plain) },
      extra: { runs: reps, plain, withKv },
    });
    tick(`dual cache tokens/s: ${median(plain).toFixed(0)} alone, ${median(withKv).toFixed(0)} with DARE-KV; median pair ratio ${pairRatio.toFixed(3)}`);

    // One transformer layer at D = 256, T = 256: dense vs DARE at 87 % reuse, interleaved.
    const layer = await timeSyntheticLayer(modes, { pairs: opts.quick ? 30 : 60, seed: opts.seed });
    for (const l of layer) {
      const key = l.mode === 'kv' ? 'kv' : l.mode === 'o' ? 'o' : 'kvo';
      summary[`layer_time_ratio_${key}`] = l.ratio;
      rows.push({
        label: `layer D256 T256 ${MODE_LABEL[l.mode]} 87% reuse`,
        options: { mode: l.mode, decision: 'budget', budget: 0.87 },
        quality: {},
        cost: { time_ms: l.dareMs, time_ms_dense: l.denseMs, layer_time_ratio: l.ratio, ratio_of_medians: l.ratioOfMedians, analytic_macs_ratio: l.analyticRatio, reuse: l.reuseMeasured },
      });
    }
    tick(`layer time ratios: ${layer.map((l) => `${l.mode} ${l.ratio.toFixed(3)} (analytic ${l.analyticRatio.toFixed(3)})`).join(', ')}`);
  } finally {
    dareModel.dispose();
    host.model.dispose();
  }
  return benchReport({
    pass: PASS_NAME,
    version: PASS_VERSION,
    host: host.label,
    quick: opts.quick,
    seed: opts.seed,
    rows,
    summary,
    extra: {
      problems: host.problems.length,
      tasks: [...HOST_TASKS],
      thresholds: taus,
      defaultThreshold: DEFAULT_TAU,
      layerTiming: { dim: 256, length: 256, batch: 1, heads: 4, reuse: 0.87, protocol: 'compareTimings (ABBA interleaved), warm-up 3; layer_time_ratio = median over the pairs of variant/dense' },
    },
  });
}

/** The demo: plain sampler vs DARE-KV (default τ) on dllm-tiny, quality and cost, per-layer reuse. */
export async function demo(opts: BenchOptions): Promise<BenchReport> {
  const host = await loadHost(true, opts.seed, opts.log);
  host.problems = host.problems.slice(0, 64);
  const dareModel = await applyDare(host.model, { mode: 'kv', threshold: DEFAULT_TAU }, opts.seed);
  try {
    const base = runSampler(host.model, host, 'none', opts.signal);
    opts.progress?.(0.5, 'plain sampler done');
    const r = runSampler(dareModel, host, 'none', opts.signal);
    opts.progress?.(1, 'DARE-KV done');
    const t = summarizeDareStats(r.records);
    const s = settingsOf(dareOptions.parse({ mode: 'kv', threshold: DEFAULT_TAU }));
    const macs = attentionMacs(r.records, host.model, host.model.config.maxLength, s);
    const c = host.model.config;
    const kvPerRow = 2 * c.dim * c.kvHeads * c.headDim;
    const layers = t.perLayer.map((l) => {
      const active = l.kv?.total ?? 0;
      const reused = l.kv?.reused ?? 0;
      return { path: `layers.${l.layer}.attn`, kind: DARE_KIND, before: { kv_rows: active, kv_macs: active * kvPerRow }, after: { kv_rows: active - reused, kv_macs: (active - reused) * kvPerRow, reuse: l.kv?.rate ?? 0 } };
    });
    return benchReport({
      pass: PASS_NAME,
      version: PASS_VERSION,
      host: host.label,
      quick: true,
      seed: opts.seed,
      rows: [
        { label: 'plain sampler', options: {}, quality: { exact_match: base.exact, ...base.perTask }, cost: { time_ms: base.ms, tokens_per_s: base.tokensPerS, nfe: base.nfe } },
        {
          label: `dare-kv τ=${DEFAULT_TAU}`,
          options: { mode: 'kv', threshold: DEFAULT_TAU },
          quality: { exact_match: r.exact, ...r.perTask, token_agreement: agreement(r.tokens, base.tokens) },
          cost: { time_ms: r.ms, tokens_per_s: r.tokensPerS, nfe: r.nfe, reuse_kv: t.kv?.rate ?? 0, attn_macs_saved_frac: macs.dense ? macs.saved / macs.dense : 0 },
        },
      ],
      summary: { reuse_rate_kv: t.kv?.rate ?? 0, exact_match_delta_kv: r.exact - base.exact, attn_macs_saved_frac: macs.dense ? macs.saved / macs.dense : 0 },
      extra: { layers, problems: host.problems.length },
    });
  } finally {
    dareModel.dispose();
    host.model.dispose();
  }
}
