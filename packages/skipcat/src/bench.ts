/**
 * `@leanpass/skipcat/bench`: the benchmark and the demo (core's PassPackage contract).
 *
 * Quality on the zoo's byte-level LLaMA-tiny (fortunes): per-byte perplexity on the test split and
 * a 4-way continuation proxy, for dense and every method at 20 % and 40 % of the decoder linears'
 * parameters removed, all calibrated on the same seeded train windows. Speed: batch-1 decode time
 * per token (K/V cache) on the tiny host and on a SmolLM-135M-shaped model with seeded random
 * weights (the compressed one built at the solved ranks with random factors: speed does not depend
 * on the values). Scale: per-matrix decomposition times at SmolLM-135M shapes.
 */
import * as tf from '@tensorflow/tfjs';
import { lastValueFrom, tap } from 'rxjs';
import {
  ConfigError,
  Rng,
  cloneModel,
  createRunContext,
  benchReport,
  type AnyModule,
  type BenchOptions,
  type BenchReport,
  type BenchRow,
  type CalibrationSource,
  type JsonObject,
  type JsonValue,
  type PassReport,
  type RunContext,
} from '@leanpass/core';
// eslint-disable-next-line @nx/enforce-module-boundaries -- the bench needs a real corpus; library code (src/index.ts) never imports data
import { corpusStream, createWindowSampler, loadFortunes, type TextCorpus } from '@leanpass/data';
import { mat, type Mat } from '@leanpass/linalg';
// eslint-disable-next-line @nx/enforce-module-boundaries -- the bench runs on the LLaMA host; library code (src/index.ts) never imports models
import { bitsPerByte, continuationTask, createLlama, multipleChoiceAccuracy, type LlamaConfigInput } from '@leanpass/models';
// eslint-disable-next-line @nx/enforce-module-boundaries -- the bench loads the zoo checkpoint; library code (src/index.ts) never imports zoo
import { loadZoo } from '@leanpass/zoo';
import { skipSplit, solveRank, spectrum, truncate, type Method } from './math.js';
import { CatSlice, LowRankLinear, type LowRankConfig } from './modules.js';
import { calibrate, type Calibration } from './calibrate.js';
import { CALIBRATION_EXTRA, PASS_NAME, PASS_VERSION, pass, planUnits, skipcatOptions, type SkipcatOptions } from './pass.js';

export { pass } from './pass.js';

/** SmolLM-135M's architecture (HF config): 30 layers, d 576, F 1536, 9 heads / 3 KV heads, vocab 49152, tied. */
export const SMOLLM_135M_SHAPE: LlamaConfigInput = {
  vocab_size: 49152,
  hidden_size: 576,
  intermediate_size: 1536,
  num_hidden_layers: 30,
  num_attention_heads: 9,
  num_key_value_heads: 3,
  tie_word_embeddings: true,
  rope_theta: 10000,
  max_position_embeddings: 2048,
};

const METHOD_ORDER: readonly Method[] = ['svd', 'asvd', 'svd-llm', 'cat', 'skip', 'skipcat'];

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

/**
 * Replaces the planned linears of `model` by SkipCat modules at the solved ranks with seeded random
 * factors and random keep/rest splits (down's input permuted as the fold would). For speed
 * measurements only: the function is not an approximation of anything.
 */
export function compressRandom(model: AnyModule, raw: Partial<SkipcatOptions>, seed: number): void {
  const o = skipcatOptions.parse(raw);
  const units = planUnits(model, o);
  const rng = new Rng(seed);
  for (const u of units) {
    const M = u.members.reduce((a, m) => a + m.out, 0);
    const r = u.rank;
    let skip: LowRankConfig['skip'] = null;
    if (u.skip) {
      const perm = rng.permutation(u.n);
      skip = { keep: perm.slice(0, r), rest: perm.slice(r), inputPermuted: u.inputPermuted };
    }
    const cfg: LowRankConfig = {
      inFeatures: u.n,
      outs: u.members.map((m) => m.out),
      names: u.members.map((m) => m.name),
      rank: r,
      bias: false,
      group: u.members.length > 1 ? u.key : null,
      skip,
      outputPerms: u.members.map(() => null),
      method: o.method,
      inference: o.inference,
    };
    const aRows = u.skip ? u.n - r : u.n;
    let head: LowRankLinear | undefined;
    tf.tidy(() => {
      head = new LowRankLinear(cfg, {
        a: aRows > 0 ? tf.tensor2d(rng.normalArray(aRows * r, 1 / Math.sqrt(u.n)), [aRows, r]) : null,
        b: tf.tensor2d(rng.normalArray(r * M, 1 / Math.sqrt(r)), [r, M]),
      });
    });
    u.members.forEach((m, i) => {
      const neu = i === 0 ? (head as LowRankLinear) : new CatSlice({ group: u.key, index: i, inFeatures: u.n, outFeatures: m.out });
      model.replace(m.path, neu).dispose();
    });
  }
}

/** Linear-layer parameters (the decoder linears' weights) of a model. */
function linearParams(model: AnyModule): number {
  let n = 0;
  for (const [path, m] of model.modules()) {
    if (!/\.(attn|mlp)\.(q|k|v|o|gate|up|down)$/.test(path)) continue;
    for (const [, p] of m.namedParams()) n += p.size;
  }
  return n;
}

interface Host {
  model: AnyModule;
  corpus: TextCorpus;
  test: Uint8Array;
  train: Uint8Array;
}

function calibrationSource(train: Uint8Array, windows: number, seed: number): CalibrationSource {
  const batchSize = 16;
  const sampler = createWindowSampler(train, { seqLength: 128, batchSize, seed });
  const nBatches = Math.ceil(windows / batchSize);
  return {
    sampleCap: windows,
    batches: async function* () {
      for (let i = 0; i < nBatches; i++) {
        await Promise.resolve();
        const w = sampler.batch(i);
        const t = tf.tensor2d(w.inputs, [batchSize, 128], 'int32');
        try {
          yield t;
        } finally {
          t.dispose();
        }
      }
    },
  };
}

interface Quality {
  ppl: number;
  bpb: number;
  choice_acc: number;
}

function evaluate(model: AnyModule, host: Host, quick: boolean, seed: number, signal?: AbortSignal): Quality {
  const bpb = bitsPerByte(model, host.test, { window: 128, batchSize: 16, maxWindows: quick ? 32 : 400, ...(signal ? { signal } : {}) });
  const items = continuationTask(host.corpus.splits.test, { items: quick ? 30 : 200, seed });
  const mc = multipleChoiceAccuracy(model, items, { window: 128, ...(signal ? { signal } : {}) });
  return { ppl: bpb.perplexity, bpb: bpb.bitsPerByte, choice_acc: mc.accuracy };
}

async function compressHost(host: Host, method: Method, ratio: number, cal: Calibration, seed: number, signal?: AbortSignal): Promise<{ model: AnyModule; report: PassReport; ms: number }> {
  const model = await cloneModel(host.model);
  const t0 = performance.now();
  let report: PassReport | undefined;
  try {
    await lastValueFrom(
      pass
        .apply(model, skipcatOptions.parse({ method, ratio }), {
          seed,
          backend: tf.getBackend(),
          calibration: calibrationSource(host.train, cal.samples, seed),
          extras: { [CALIBRATION_EXTRA]: cal },
          ...(signal ? { signal } : {}),
        })
        .pipe(
          tap((e) => {
            if (e.type === 'done') report = e.report;
          }),
        ),
    );
  } catch (e) {
    model.dispose();
    throw e;
  }
  return { model, report: report as PassReport, ms: performance.now() - t0 };
}

/** One calibration of the dense host (every decoder linear), shared by all methods of a run. */
async function calibrateHost(host: Host, windows: number, seed: number, signal?: AbortSignal): Promise<{ cal: Calibration; ms: number }> {
  const t0 = performance.now();
  const units = planUnits(host.model, skipcatOptions.parse({ method: 'svd' }));
  const linears = units.flatMap((u) => u.members.map((m) => ({ path: m.path, module: m.module, n: u.n })));
  const cal = await calibrate(host.model, linears, calibrationSource(host.train, windows, seed), { maxSamples: windows, who: PASS_NAME, signal: signal ?? new AbortController().signal });
  return { cal, ms: performance.now() - t0 };
}

async function loadHost(model?: AnyModule): Promise<Host> {
  if (!model) {
    try {
      model = await loadZoo('llama-tiny');
    } catch (e) {
      throw new ConfigError(`the SkipCat bench needs the zoo checkpoint llama-tiny (train it with tools/zoo/train-llama-tiny.ts): ${(e as Error).message}`);
    }
  }
  const corpus = loadFortunes();
  return { model, corpus, test: corpusStream(corpus, 'test'), train: corpusStream(corpus, 'train') };
}

interface Stepper {
  step(token: number): Promise<void>;
  dispose(): void;
}

/**
 * Batch-1 incremental decoding through the host's K/V cache: one token per call, the output read
 * back. `stack`: only embedding + decoder layers + final norm (`Llama.hidden`), leaving out the LM
 * head, which no method changes.
 */
function stepper(model: AnyModule, stack: boolean, fast: boolean): Stepper {
  const ctx = createRunContext();
  const hidden = (model as unknown as { hidden?: (input: { ids: tf.Tensor; cache: boolean; fast: boolean }, ctx: RunContext) => tf.Tensor }).hidden;
  if (stack && typeof hidden !== 'function') throw new ConfigError(`expected a LLaMA host with hidden() for decoder-stack timing, found kind ${model.kind}`);
  return {
    step: async (token) => {
      const out = tf.tidy(() => {
        const input = { ids: tf.tensor2d([[token]], [1, 1], 'int32'), cache: true, fast };
        return stack ? (hidden as NonNullable<typeof hidden>).call(model, input, ctx) : (model.call(input, ctx) as tf.Tensor);
      });
      await out.data();
      out.dispose();
    },
    dispose: () => ctx.state.dispose(),
  };
}

export interface DecodeComparison {
  /** Median wall time per token (ms). */
  denseMs: number;
  variantMs: number;
  /** Median process CPU time per token (ms; less sensitive to other load on the machine). */
  denseCpuMs: number;
  variantCpuMs: number;
  /** Median over interleaved block pairs of variant/dense block time (wall; CPU). */
  ratio: number;
  cpuRatio: number;
  /** Timed tokens per model, and tokens per block. */
  tokens: number;
  block: number;
  /** The median of per-token ratios with token-by-token alternation (the earlier protocol), for reference. */
  ratioPerToken: number;
  cpuRatioPerToken: number;
}

/**
 * Decode timing of two models, interleaved so that both see the same machine load: after `warmup`
 * untimed steps each (alternating token by token), blocks of `block` consecutive steps per model,
 * the order alternating per block pair (ABBA…); both decode the same token sequence.
 * `ratio`/`cpuRatio`: median over block pairs of (variant block time / dense block time). A block of
 * several tokens, rather than single interleaved tokens, takes its share of garbage collection: V8
 * scavenges every few decode steps (~6–12 ms each at the SmolLM shape), and with token-by-token
 * alternation the pauses can alias onto one model for a whole run (measured: 0.72 vs 0.98 for the
 * same pair of models in two runs). `ratioPerToken` is that older per-token statistic, for reference.
 */
export async function compareDecode(
  dense: AnyModule,
  variant: AnyModule,
  opts: { tokens: number; warmup: number; stack: boolean; fast?: boolean; block?: number },
): Promise<DecodeComparison> {
  const a = stepper(dense, opts.stack, opts.fast ?? true);
  const b = stepper(variant, opts.stack, opts.fast ?? true);
  const block = Math.max(1, Math.min(opts.block ?? 8, opts.tokens));
  const blocks = Math.ceil(opts.tokens / block);
  const wall: [number[], number[]] = [[], []];
  const cpu: [number[], number[]] = [[], []];
  const tokenAt = (i: number): number => (i * 37 + 11) % 200;
  const timed = async (s: Stepper, k: number, token: number): Promise<void> => {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await s.step(token);
    const ms = performance.now() - t0;
    const cu = process.cpuUsage(c0);
    (wall[k] as number[]).push(ms);
    (cpu[k] as number[]).push((cu.user + cu.system) / 1000);
  };
  try {
    for (let i = 0; i < opts.warmup; i++) {
      for (const s of i % 2 ? [a, b] : [b, a]) await s.step(tokenAt(i));
    }
    for (let j = 0; j < blocks; j++) {
      const order: Array<[Stepper, number]> = j % 2 ? [[b, 1], [a, 0]] : [[a, 0], [b, 1]];
      for (const [s, k] of order) {
        for (let t = 0; t < block; t++) await timed(s, k, tokenAt(opts.warmup + j * block + t));
      }
    }
  } finally {
    a.dispose();
    b.dispose();
  }
  const sum = (x: number[], j: number): number => x.slice(j * block, (j + 1) * block).reduce((p, q) => p + q, 0);
  // Ratios of adjacent (same-load) blocks, then the median: robust to load that drifts during the run.
  const perBlock = (x: number[][]): number => median(Array.from({ length: blocks }, (_, j) => sum(x[1] as number[], j) / sum(x[0] as number[], j)));
  const perToken = (x: number[][]): number => median((x[1] as number[]).map((v, i) => v / ((x[0] as number[])[i] as number)));
  return {
    denseMs: median(wall[0]),
    variantMs: median(wall[1]),
    denseCpuMs: median(cpu[0]),
    variantCpuMs: median(cpu[1]),
    ratio: perBlock(wall),
    cpuRatio: perBlock(cpu),
    tokens: blocks * block,
    block,
    ratioPerToken: perToken(wall),
    cpuRatioPerToken: perToken(cpu),
  };
}

/** Decode ratio on a SmolLM-135M-shaped model with random weights at the solved ranks (decoder stack). */
export async function smollmDecode(
  opts: { seed: number; quick: boolean; tokens?: number; warmup?: number; block?: number; fast?: boolean },
  layers: number,
  ratio: number,
  inference: 'gather' | 'dense-a' | 'auto' = 'gather',
): Promise<DecodeComparison & { layers: number; params: { dense: number; compressed: number } }> {
  const shape = { ...SMOLLM_135M_SHAPE, num_hidden_layers: layers };
  const dense = createLlama(shape, { seed: opts.seed });
  const comp = createLlama(shape, { seed: opts.seed });
  try {
    compressRandom(comp, { ratio, method: 'skipcat', inference }, opts.seed);
    const r = await compareDecode(dense, comp, { tokens: opts.tokens ?? (opts.quick ? 32 : 96), warmup: opts.warmup ?? 6, stack: true, fast: opts.fast ?? true, ...(opts.block ? { block: opts.block } : {}) });
    return { ...r, layers, params: { dense: linearParams(dense), compressed: linearParams(comp) } };
  } finally {
    dense.dispose();
    comp.dispose();
  }
}

/** Float64 timings of the decomposition of one SmolLM-135M layer (random weights, Gram from random rows). */
export function decompositionTimes(seed: number): Array<{ unit: string; shape: string; ms: number; cpuMs: number }> {
  const rng = new Rng(seed);
  const d = 576;
  const F = 1536;
  const gram = (n: number): Mat => {
    const g = tf.tidy(() => {
      const x = tf.randomNormal([2 * n, n], 0, 1, 'float32', seed);
      return tf.matMul(tf.transpose(x), x).dataSync();
    });
    return mat(n, n, Float64Array.from(g));
  };
  const cases: Array<{ unit: string; m: number; n: number }> = [
    { unit: 'q+k+v (SkipCat)', m: d + 192 + 192, n: d },
    { unit: 'o (Skip)', m: d, n: d },
    { unit: 'gate+up (SkipCat)', m: 2 * F, n: d },
    { unit: 'down (Skip)', m: d, n: F },
  ];
  const out: Array<{ unit: string; shape: string; ms: number; cpuMs: number }> = [];
  for (const c of cases) {
    const G = gram(c.n);
    const W = mat(c.m, c.n, rng.normalArray(c.m * c.n));
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    const sp = spectrum(W, G);
    const r = solveRank(0.8, c.n, c.m, true);
    skipSplit(truncate(W, sp, Math.min(r, sp.sigma.length)), 'strong');
    const cu = process.cpuUsage(c0);
    out.push({ unit: c.unit, shape: `${c.m}×${c.n}`, ms: performance.now() - t0, cpuMs: (cu.user + cu.system) / 1000 });
  }
  return out;
}

function rowFor(label: string, options: JsonObject, q: Quality, cost: Record<string, number>, extra?: Record<string, JsonValue>): BenchRow {
  const row: BenchRow = { label, options, quality: { ...q }, cost };
  if (extra) row.extra = extra;
  return row;
}

/** The full comparison (see the module comment). `quick`: fewer calibration/eval windows, fewer timing rounds. */
export async function bench(opts: BenchOptions): Promise<BenchReport> {
  return benchOn(undefined, opts);
}

/**
 * The bench on a given byte-level LLaMA-architecture model (default: the zoo's llama-tiny, loaded and
 * disposed here; a given model is disposed too).
 */
export async function benchOn(model: AnyModule | undefined, opts: BenchOptions, hostLabel = 'zoo:llama-tiny'): Promise<BenchReport> {
  const log = opts.log ?? ((): void => undefined);
  const progress = opts.progress ?? ((): void => undefined);
  const host = await loadHost(model);
  const calWindows = opts.quick ? 32 : 128;
  const rows: BenchRow[] = [];
  const ppl: Record<string, number> = {};
  const paramsRatio: Record<string, number> = {};
  try {
    progress(0, 'dense');
    const dq = evaluate(host.model, host, opts.quick, opts.seed, opts.signal);
    const denseLinear = linearParams(host.model);
    rows.push(rowFor('dense', {}, dq, { params: denseLinear, params_model: host.model.paramCount() }));
    ppl['dense'] = dq.ppl;
    log(`dense: ppl ${dq.ppl.toFixed(4)} bpb ${dq.bpb.toFixed(4)} choice ${dq.choice_acc.toFixed(3)}`);
    const { cal, ms: calMs } = await calibrateHost(host, calWindows, opts.seed, opts.signal);
    log(`calibration: ${cal.samples} windows, ${cal.tokens} tokens, ${calMs.toFixed(0)} ms (shared by every method)`);
    const configs = [0.2, 0.4].flatMap((ratio) => METHOD_ORDER.map((method) => ({ method, ratio })));
    let tinyComp: AnyModule | undefined;
    for (let i = 0; i < configs.length; i++) {
      const { method, ratio } = configs[i] as { method: Method; ratio: number };
      progress((0.7 * (i + 1)) / (configs.length + 1), `${method} ${ratio}`);
      const { model, report, ms } = await compressHost(host, method, ratio, cal, opts.seed, opts.signal);
      const q = evaluate(model, host, opts.quick, opts.seed, opts.signal);
      const lp = linearParams(model);
      const key = `${method}_${Math.round(ratio * 100)}`;
      ppl[key] = q.ppl;
      paramsRatio[key] = lp / denseLinear;
      const units = (report.measured?.['units'] ?? []) as JsonObject[];
      rows.push(
        rowFor(`${method} ratio=${ratio}`, { method, ratio }, q, { params: lp, params_model: model.paramCount(), compress_ms: ms }, { ranks: units.map((u) => ({ path: u['path'] ?? null, rank: u['rank'] ?? null, members: u['members'] ?? null })) as JsonValue }),
      );
      log(`${method} ${ratio}: ppl ${q.ppl.toFixed(4)} params ${(lp / denseLinear).toFixed(4)} (${ms.toFixed(0)} ms)`);
      if (method === 'skipcat' && ratio === 0.4) tinyComp = model;
      else model.dispose();
    }
    progress(0.75, 'decode timing (tiny host)');
    const tiny = await compareDecode(host.model, tinyComp as AnyModule, { tokens: opts.quick ? 40 : 96, warmup: 6, stack: false });
    tinyComp?.dispose();
    log(`tiny decode: dense ${tiny.denseMs.toFixed(3)} ms, skipcat 40 % ${tiny.variantMs.toFixed(3)} ms (wall ${tiny.ratio.toFixed(3)}, cpu ${tiny.cpuRatio.toFixed(3)})`);
    const dense = rows[0] as BenchRow;
    dense.cost.time_ms = tiny.denseMs;
    const sc40 = rows.find((r) => r.label === 'skipcat ratio=0.4');
    if (sc40) sc40.cost.time_ms = tiny.variantMs;
    progress(0.8, 'decode timing (SmolLM-135M shape)');
    // Repeats, each a fresh pair of models: the first large pair of a process has measured from
    // 0.70 to 1.04 against 0.70–0.78 for later ones on the shared machine, so one run is not enough.
    const smolRuns: Array<Awaited<ReturnType<typeof smollmDecode>>> = [];
    for (let rep = 0; rep < (opts.quick ? 2 : 3); rep++) {
      const r = await smollmDecode(opts, SMOLLM_135M_SHAPE.num_hidden_layers, 0.4);
      smolRuns.push(r);
      log(`SmolLM-135M-shaped decode ${rep + 1} (${r.layers} layers): dense ${r.denseMs.toFixed(2)} ms, skipcat 40 % ${r.variantMs.toFixed(2)} ms (wall ${r.ratio.toFixed(3)}, cpu ${r.cpuRatio.toFixed(3)}; per-token alternation ${r.ratioPerToken.toFixed(3)})`);
    }
    const byRatio = [...smolRuns].sort((x, y) => x.ratio - y.ratio);
    const smol = byRatio[byRatio.length >> 1] as (typeof smolRuns)[number]; // the median run (the worse of the two for 2)
    // Decomposition timings at SmolLM-135M shapes (about a minute and a half): full runs only.
    progress(0.9, 'decomposition timings');
    const dec = opts.quick ? [] : decompositionTimes(opts.seed);
    const perLayer = dec.reduce((a, b) => a + b.cpuMs, 0);
    const svdllm20 = (ppl['svd-llm_20'] as number) - (ppl['dense']);
    const summary: Record<string, number> = {
      ppl_increase_ratio_vs_svdllm_20: ((ppl['skipcat_20'] as number) - (ppl['dense'])) / svdllm20,
      params_ratio_20: paramsRatio['skipcat_20'] as number,
      decode_time_ratio_40: smol.ratio,
      decode_time_ratio_40_cpu: smol.cpuRatio,
      decode_time_ratio_40_per_token: smol.ratioPerToken,
      decode_time_ratio_40_tiny: tiny.ratio,
      decode_time_ratio_40_tiny_cpu: tiny.cpuRatio,
      ppl_dense: ppl['dense'],
      ppl_skipcat_20: ppl['skipcat_20'] as number,
      ppl_svdllm_20: ppl['svd-llm_20'] as number,
      ppl_skipcat_40: ppl['skipcat_40'] as number,
      ppl_svdllm_40: ppl['svd-llm_40'] as number,
      params_ratio_40: paramsRatio['skipcat_40'] as number,
    };
    progress(1, 'done');
    return benchReport({
      pass: PASS_NAME,
      version: PASS_VERSION,
      host: hostLabel,
      backend: opts.backend,
      quick: opts.quick,
      seed: opts.seed,
      rows,
      summary,
      extra: {
        calibration: { windows: calWindows, length: 128, split: 'train', ms: calMs, note: 'one calibration of the dense model shared by every method; compress_ms is the decomposition and rewrite only' },
        eval: { split: 'test', windows: opts.quick ? 32 : 400, window: 128, choiceItems: opts.quick ? 30 : 200 },
        decode_tiny: { ...tiny, note: 'zoo llama-tiny, whole model, batch 1, K/V cache, interleaved in blocks of tokens (ABBA)' } as unknown as JsonValue,
        decode_smollm_runs: smolRuns.map((r) => ({ ratio: r.ratio, cpuRatio: r.cpuRatio, ratioPerToken: r.ratioPerToken, cpuRatioPerToken: r.cpuRatioPerToken, denseMs: r.denseMs, variantMs: r.variantMs })),
        decode_smollm: {
          ...smol,
          note: 'SmolLM-135M shape (30 layers), seeded random weights (compressed: random factors at the solved SkipCat 40 % ranks), batch 1, K/V cache; decoder stack (embedding, layers, final norm) — the tied LM head, unchanged by every method, is left out',
        } as unknown as JsonValue,
        smollm_linear_params: smol.params,
        decomposition_ms: dec,
        ...(opts.quick ? {} : { decomposition_smollm_135m_estimate_cpu_s: (30 * perLayer) / 1000 }),
      },
    });
  } finally {
    host.model.dispose();
  }
}

/** A short run: dense vs SkipCat at 20 % on LLaMA-tiny, with per-layer savings. */
export async function demo(opts: BenchOptions): Promise<BenchReport> {
  const host = await loadHost();
  try {
    opts.progress?.(0, 'dense');
    const dq = evaluate(host.model, host, true, opts.seed, opts.signal);
    const denseLinear = linearParams(host.model);
    opts.progress?.(0.3, 'skipcat 20 %');
    const { cal } = await calibrateHost(host, 32, opts.seed, opts.signal);
    const { model, report, ms } = await compressHost(host, 'skipcat', 0.2, cal, opts.seed, opts.signal);
    try {
      const q = evaluate(model, host, true, opts.seed, opts.signal);
      const lp = linearParams(model);
      const units = (report.measured?.['units'] ?? []) as JsonObject[];
      opts.progress?.(1, 'done');
      return benchReport({
        pass: PASS_NAME,
        version: PASS_VERSION,
        host: 'zoo:llama-tiny',
        backend: opts.backend,
        quick: true,
        seed: opts.seed,
        rows: [rowFor('dense', {}, dq, { params: denseLinear }), rowFor('skipcat ratio=0.2', { method: 'skipcat', ratio: 0.2 }, q, { params: lp, compress_ms: ms })],
        summary: { params_ratio_20: lp / denseLinear, ppl_dense: dq.ppl, ppl_skipcat_20: q.ppl },
        extra: {
          layers: units.map((u) => ({
            path: u['path'] ?? '',
            kind: (u['members'] as string[] | undefined)?.length === 1 ? 'skipcat.linear' : 'skipcat.cat',
            before: { params: u['dense'] ?? 0 },
            after: { params: u['params'] ?? 0, rank: u['rank'] ?? 0 },
          })) as JsonValue,
        },
      });
    } finally {
      model.dispose();
    }
  } finally {
    host.model.dispose();
  }
}
