import * as tf from '@tensorflow/tfjs';
import { PassError, createRunContext, type AnyModule, type CalibrationSource, type RunContext } from '@leanpass/core';

/** Input statistics of one distinct linear input, accumulated in Float64. */
export interface InputStats {
  /** Input width n. */
  n: number;
  /** Σ xᵀx over calibration rows, n×n row-major. */
  gram: Float64Array;
  /** Σ |x_j| per channel (ASVD). */
  absSum: Float64Array;
  /** Rows (tokens) seen. */
  rows: number;
}

export interface Calibration {
  /** Statistics per input key (the path of the first linear that read that input). */
  stats: Map<string, InputStats>;
  /** For every hooked linear path: the key of its input. */
  keyOf: Map<string, string>;
  /** Samples (sequences) and tokens drawn. */
  samples: number;
  tokens: number;
}

/** What a calibration batch may be: the model's input tensor, nested id arrays, or `{ inputs }`. */
export type CalibrationBatch = tf.Tensor | number[][] | number[] | { inputs: tf.Tensor | number[][] };

function toInput(batch: unknown, who: string): tf.Tensor {
  if (batch instanceof tf.Tensor) return batch as tf.Tensor;
  if (Array.isArray(batch)) {
    const rows = batch.length && Array.isArray(batch[0]) ? (batch as number[][]) : [batch as number[]];
    return tf.tensor2d(rows, [rows.length, rows[0]?.length ?? 0], 'int32');
  }
  if (batch !== null && typeof batch === 'object' && 'inputs' in batch) return toInput((batch).inputs, who);
  throw new PassError(who, `expected calibration batches to be tensors of token ids, number[][] or { inputs }, found ${typeof batch}`);
}

/** The vocabulary size of the first 'embedding' module, when the model has one. */
export function vocabOf(model: AnyModule): number | undefined {
  for (const [, m] of model.modules()) {
    if (m.kind === 'embedding') {
      const v = (m.config as Record<string, unknown>)['numEmbeddings'];
      if (typeof v === 'number') return v;
    }
  }
  return undefined;
}

/**
 * Runs the dense model on seeded calibration batches and accumulates, per distinct input of the
 * hooked linears, the Gram Σ xᵀx (float32 products per batch, `matMul(transpose(X), X)`, summed in
 * Float64 in a fixed order: deterministic) and Σ|x|. Linears whose input is the same tensor in a
 * forward (Q/K/V, gate/up) share one key. Forwards are hooked by temporarily wrapping the linears'
 * `forward` methods; they are restored in every case. Throws a PassError (nothing changed) on batches
 * outside the vocabulary, inconsistent sharing, or fewer rows than a Gram's width.
 */
export async function calibrate(
  model: AnyModule,
  linears: ReadonlyArray<{ path: string; module: AnyModule; n: number }>,
  source: CalibrationSource,
  opts: { maxSamples: number; who: string; signal: AbortSignal; progress?: (f: number, msg: string) => void },
): Promise<Calibration> {
  const { who } = opts;
  const stats = new Map<string, InputStats>();
  const keyOf = new Map<string, string>();
  const cap = Math.min(opts.maxSamples, source.sampleCap > 0 ? source.sampleCap : opts.maxSamples);
  const vocab = vocabOf(model);
  let perBatch = new Map<object, string>();
  const originals: Array<{ module: AnyModule; had: boolean; value: unknown }> = [];
  const hook = (path: string, module: AnyModule, n: number): void => {
    const orig = module.forward.bind(module) as (x: tf.Tensor, ctx: RunContext) => tf.Tensor;
    const had = Object.prototype.hasOwnProperty.call(module, 'forward');
    originals.push({ module, had, value: had ? (module as unknown as { forward: unknown }).forward : undefined });
    (module as unknown as { forward: (x: tf.Tensor, ctx: RunContext) => tf.Tensor }).forward = (x: tf.Tensor, ctx: RunContext): tf.Tensor => {
      const key = perBatch.get(x.dataId) ?? path;
      perBatch.set(x.dataId, key);
      const prev = keyOf.get(path);
      if (prev !== undefined && prev !== key) throw new PassError(who, `'${path}' read the same input as '${key}' in one calibration batch but not in another; cannot decide whether it shares a factor`);
      keyOf.set(path, key);
      if (key === path) {
        let st = stats.get(key);
        if (!st) {
          st = { n, gram: new Float64Array(n * n), absSum: new Float64Array(n), rows: 0 };
          stats.set(key, st);
        }
        const s = st;
        tf.tidy(() => {
          const rows = tf.reshape(x, [x.size / n, n]);
          const g = tf.matMul(tf.transpose(rows), rows).dataSync();
          const a = tf.sum(tf.abs(rows), 0).dataSync();
          for (let i = 0; i < g.length; i++) s.gram[i] = (s.gram[i] as number) + (g[i] as number);
          for (let i = 0; i < n; i++) s.absSum[i] = (s.absSum[i] as number) + (a[i] as number);
          s.rows += x.size / n;
        });
      }
      return orig(x, ctx);
    };
  };
  let samples = 0;
  let tokens = 0;
  try {
    for (const l of linears) hook(l.path, l.module, l.n);
    for await (const raw of source.batches()) {
      if (opts.signal.aborted) break;
      if (samples >= cap) break;
      const given = toInput(raw, who);
      const callerOwned = raw instanceof tf.Tensor || (raw !== null && typeof raw === 'object' && 'inputs' in raw && (raw).inputs === given);
      let input = given;
      try {
        const take = input.rank >= 2 ? (input.shape[0]) : 1;
        if (samples + take > cap && input.rank >= 2) input = tf.slice(input, 0, cap - samples);
        if (vocab !== undefined) {
          if (input.dtype !== 'int32') throw new PassError(who, `calibration batches must be int32 token ids for a model with a ${vocab}-token embedding, found dtype ${input.dtype}`);
          const d = input.dataSync();
          let lo = Infinity;
          let hi = -Infinity;
          for (const v of d) {
            lo = Math.min(lo, v);
            hi = Math.max(hi, v);
          }
          if (lo < 0 || hi >= vocab) throw new PassError(who, `calibration token ids must lie in [0, ${vocab}) (the model's vocabulary), found ids in [${lo}, ${hi}]`);
        }
        perBatch = new Map();
        tf.tidy(() => {
          model.call(input, createRunContext({ mode: 'eval', seed: 0 }));
        });
        samples += input.rank >= 2 ? (input.shape[0]) : 1;
        tokens += input.rank >= 2 ? input.size / (input.rank > 2 ? (input.shape[input.rank - 1] as number) : 1) : input.size;
      } finally {
        if (input !== given) input.dispose();
        if (!callerOwned) given.dispose();
      }
      opts.progress?.(Math.min(1, samples / cap), `calibration: ${samples}/${cap} samples`);
    }
  } finally {
    for (const o of originals.reverse()) {
      if (o.had) (o.module as unknown as { forward: unknown }).forward = o.value;
      else delete (o.module as unknown as { forward?: unknown }).forward;
    }
  }
  if (opts.signal.aborted) return { stats, keyOf, samples, tokens };
  const missing = linears.filter((l) => !keyOf.has(l.path)).map((l) => l.path);
  if (missing.length) throw new PassError(who, `calibration never reached ${missing.length} selected linear(s) (${missing.slice(0, 4).join(', ')}${missing.length > 4 ? ', …' : ''}); expected the model's forward to call them`);
  const short: string[] = [];
  for (const [key, st] of stats) if (st.rows < st.n) short.push(`'${key}' saw ${st.rows} token rows, its ${st.n} inputs need at least ${st.n} for a full-rank Gram`);
  if (short.length) throw new PassError(who, `too few calibration tokens: ${short.join('; ')} (supply more or longer calibration batches)`);
  return { stats, keyOf, samples, tokens };
}
