import * as tf from '@tensorflow/tfjs';
import { ConfigError, Rng, createRunContext, throwIfAborted, type AnyModule, type RunContext } from '@leanpass/core';
import type { LlamaInput } from './model.js';

/** Anything that maps int32 ids [B, T] to logits [B, T, V] (a Llama, or a Llama rewritten by a pass). */
export type CausalLM = AnyModule;

function logitsOf(model: CausalLM, input: tf.Tensor | LlamaInput, ctx: RunContext): tf.Tensor3D {
  const out = model.call(input, ctx) as tf.Tensor;
  if (out.rank !== 3) throw new ConfigError(`expected the model to return logits [B, T, V], found [${out.shape.join(', ')}]`);
  return out as tf.Tensor3D;
}

/**
 * Natural-log probabilities of `targets` under `model` for a batch of equal-length rows: returns a
 * Float64Array [B·T] (row-major) of log p(target[b, t] | ids[b, ≤t]).
 */
export function targetLogProbs(model: CausalLM, ids: Int32Array, targets: Int32Array, batch: number, length: number, ctx: RunContext = createRunContext()): Float64Array {
  if (ids.length !== batch * length || targets.length !== batch * length) {
    throw new ConfigError(`targetLogProbs: expected ${batch}×${length} ids and targets, found ${ids.length} and ${targets.length}`);
  }
  const lp = tf.tidy(() => {
    const logits = logitsOf(model, tf.tensor2d(ids, [batch, length], 'int32'), ctx);
    const V = logits.shape[2];
    const flat = tf.logSoftmax(tf.reshape(logits, [batch * length, V]), -1);
    const idx = new Int32Array(batch * length * 2);
    for (let i = 0; i < batch * length; i++) {
      idx[2 * i] = i;
      const t = targets[i] as number;
      if (t < 0 || t >= V) throw new ConfigError(`targetLogProbs: expected targets in [0, ${V}), found ${t}`);
      idx[2 * i + 1] = t;
    }
    return tf.gatherND(flat, tf.tensor2d(idx, [batch * length, 2], 'int32'));
  });
  const data = lp.dataSync();
  lp.dispose();
  return Float64Array.from(data);
}

export interface BitsPerByteOptions {
  /** Context window (tokens per forward). Default 128. */
  window?: number;
  /**
   * Step between window starts. Default `window` (non-overlapping). With a smaller stride each target
   * is still scored once, by the window that gives it the most context (the sliding-window protocol of
   * HF's perplexity guide).
   */
  stride?: number;
  /** Windows per forward. Default 16. */
  batchSize?: number;
  /** Score at most this many windows (from the start). */
  maxWindows?: number;
  signal?: AbortSignal;
}

export interface BitsPerByteResult {
  /** Mean −log₂ p per scored byte (token). */
  bitsPerByte: number;
  /** Mean −ln p per scored byte (nats). */
  nll: number;
  /** exp(nll): per-byte (per-token) perplexity. */
  perplexity: number;
  /** Targets scored. */
  tokens: number;
  windows: number;
}

/**
 * Bits per byte (and perplexity) of a byte stream under a byte-level LM. Windows start at 0, stride,
 * 2·stride, … (plus a last one ending at the stream's end); window s reads bytes[s … s+window−1] and
 * predicts bytes[s+1 … s+window]; each target byte 1 … n−1 is scored exactly once, by the first window
 * that reaches it. The first byte has no context and is not scored.
 */
export function bitsPerByte(model: CausalLM, bytes: Uint8Array | Int32Array | readonly number[], opts: BitsPerByteOptions = {}): BitsPerByteResult {
  const window = opts.window ?? 128;
  const stride = opts.stride ?? window;
  const batchSize = opts.batchSize ?? 16;
  const n = bytes.length;
  if (!Number.isInteger(window) || window <= 0) throw new ConfigError(`bitsPerByte: expected a positive integer window, found ${window}`);
  if (!Number.isInteger(stride) || stride <= 0 || stride > window) throw new ConfigError(`bitsPerByte: expected an integer stride in [1, ${window}], found ${stride}`);
  if (!Number.isInteger(batchSize) || batchSize <= 0) throw new ConfigError(`bitsPerByte: expected a positive integer batchSize, found ${batchSize}`);
  if (n < window + 1) throw new ConfigError(`bitsPerByte: a window of ${window} needs at least ${window + 1} bytes, found ${n}`);
  // window starts and the first target index each one scores
  const starts: number[] = [];
  const firstScored: number[] = [];
  let covered = 0; // targets 1..covered are scored
  for (let s = 0; s + window + 1 <= n; s += stride) {
    if (opts.maxWindows !== undefined && starts.length >= opts.maxWindows) break;
    starts.push(s);
    firstScored.push(Math.max(covered + 1, s + 1));
    covered = s + window;
  }
  if (covered < n - 1 && (opts.maxWindows === undefined || starts.length < opts.maxWindows)) {
    const s = n - 1 - window;
    starts.push(s);
    firstScored.push(covered + 1);
  }
  const ctx = createRunContext();
  let sum = 0;
  let count = 0;
  for (let b0 = 0; b0 < starts.length; b0 += batchSize) {
    throwIfAborted(opts.signal, 'bitsPerByte');
    const rows = starts.slice(b0, b0 + batchSize);
    const ids = new Int32Array(rows.length * window);
    const tg = new Int32Array(rows.length * window);
    rows.forEach((s, r) => {
      for (let t = 0; t < window; t++) {
        ids[r * window + t] = bytes[s + t] as number;
        tg[r * window + t] = bytes[s + t + 1] as number;
      }
    });
    const lp = targetLogProbs(model, ids, tg, rows.length, window, ctx);
    rows.forEach((s, r) => {
      const first = firstScored[b0 + r] as number;
      // target index (in the stream) of column t is s + t + 1
      for (let t = Math.max(0, first - s - 1); t < window; t++) {
        sum -= lp[r * window + t] as number;
        count++;
      }
    });
  }
  ctx.state.dispose();
  const nll = sum / count;
  return { bitsPerByte: nll / Math.LN2, nll, perplexity: Math.exp(nll), tokens: count, windows: starts.length };
}

/**
 * Bits per byte of a unigram (byte-frequency) model fitted on `train` with add-`alpha` smoothing,
 * evaluated on `evalBytes` bytes 1…n−1 (the same targets `bitsPerByte` scores): the honest floor a
 * trained LM must beat.
 */
export function unigramBitsPerByte(train: Uint8Array, evalBytes: Uint8Array, alpha = 1): number {
  const counts = new Float64Array(256).fill(alpha);
  for (const b of train) counts[b] = (counts[b] as number) + 1;
  const total = counts.reduce((a, b) => a + b, 0);
  let bits = 0;
  for (let i = 1; i < evalBytes.length; i++) bits -= Math.log2((counts[evalBytes[i] as number] as number) / total);
  return bits / (evalBytes.length - 1);
}

/** One multiple-choice item: a context and k candidate continuations, `answer` the right one. */
export interface ChoiceItem {
  context: Uint8Array | readonly number[];
  choices: Array<Uint8Array | readonly number[]>;
  answer: number;
}

export interface ChoiceOptions {
  /** Longest sequence the model sees (context is cut from the left). Default 128. */
  window?: number;
  /** 'sum' (default): total log-likelihood of the continuation; 'mean': per token (length-normalised). */
  score?: 'sum' | 'mean';
  signal?: AbortSignal;
}

export interface ChoiceResult {
  accuracy: number;
  items: number;
  /** Per item, the score of each choice. */
  scores: number[][];
  /** Per item, the chosen index. */
  predictions: number[];
}

/** Log-likelihood of `continuation` after `context` (context cut from the left to fit `window`). */
export function continuationLogLikelihood(
  model: CausalLM,
  context: Uint8Array | readonly number[],
  continuation: Uint8Array | readonly number[],
  window = 128,
  ctx: RunContext = createRunContext(),
): { sum: number; tokens: number } {
  if (continuation.length === 0) throw new ConfigError('continuationLogLikelihood: expected a non-empty continuation');
  if (context.length === 0) throw new ConfigError('continuationLogLikelihood: expected a non-empty context (the first token has no prediction)');
  const full = [...Array.from(context), ...Array.from(continuation)];
  const seq = full.slice(Math.max(0, full.length - window - 1));
  const T = seq.length - 1;
  const scored = Math.min(continuation.length, T);
  const lp = targetLogProbs(model, Int32Array.from(seq.slice(0, T)), Int32Array.from(seq.slice(1)), 1, T, ctx);
  let sum = 0;
  for (let t = T - scored; t < T; t++) sum += lp[t] as number;
  return { sum, tokens: scored };
}

/** Accuracy of picking the continuation with the highest log-likelihood (ties: the lowest index). */
export function multipleChoiceAccuracy(model: CausalLM, items: readonly ChoiceItem[], opts: ChoiceOptions = {}): ChoiceResult {
  if (items.length === 0) throw new ConfigError('multipleChoiceAccuracy: expected at least one item');
  const window = opts.window ?? 128;
  const mode = opts.score ?? 'sum';
  const ctx = createRunContext();
  const scores: number[][] = [];
  const predictions: number[] = [];
  let right = 0;
  items.forEach((item, i) => {
    throwIfAborted(opts.signal, 'multipleChoiceAccuracy');
    if (!Number.isInteger(item.answer) || item.answer < 0 || item.answer >= item.choices.length) {
      throw new ConfigError(`multipleChoiceAccuracy: item ${i}: expected answer in [0, ${item.choices.length}), found ${item.answer}`);
    }
    const s = item.choices.map((c) => {
      const r = continuationLogLikelihood(model, item.context, c, window, ctx);
      return mode === 'sum' ? r.sum : r.sum / r.tokens;
    });
    let best = 0;
    for (let j = 1; j < s.length; j++) if ((s[j] as number) > (s[best] as number)) best = j;
    scores.push(s);
    predictions.push(best);
    if (best === item.answer) right++;
  });
  ctx.state.dispose();
  return { accuracy: right / items.length, items: items.length, scores, predictions };
}

export interface ContinuationTaskOptions {
  /** Candidates per item (the true one included). Default 4. */
  choices?: number;
  /** Items to build (at most). Default 100. */
  items?: number;
  seed?: number;
  /** Records shorter than this (bytes) are skipped. Default 40. */
  minBytes?: number;
  /** Records are cut to this many bytes first. Default 120. */
  maxBytes?: number;
}

/**
 * The held-out continuation proxy (skipcat.md §6): each item is the first half of a record as context
 * and its true second half against the second halves of `choices − 1` other records of the closest
 * lengths; the answer's position is drawn from the seed. Deterministic in (records, options).
 */
export function continuationTask(records: ReadonlyArray<Uint8Array>, opts: ContinuationTaskOptions = {}): ChoiceItem[] {
  const k = opts.choices ?? 4;
  const nItems = opts.items ?? 100;
  const minBytes = opts.minBytes ?? 40;
  const maxBytes = opts.maxBytes ?? 120;
  if (!Number.isInteger(k) || k < 2) throw new ConfigError(`continuationTask: expected choices ≥ 2, found ${k}`);
  const pool = records.filter((r) => r.length >= minBytes).map((r) => r.subarray(0, maxBytes));
  if (pool.length < k) throw new ConfigError(`continuationTask: expected at least ${k} records of ≥ ${minBytes} bytes, found ${pool.length}`);
  const halves = pool.map((r) => ({ head: r.subarray(0, r.length >> 1), tail: r.subarray(r.length >> 1) }));
  const rng = new Rng(opts.seed ?? 0);
  const order = rng.permutation(halves.length);
  const items: ChoiceItem[] = [];
  for (let n = 0; n < Math.min(nItems, halves.length); n++) {
    const i = order[n] as number;
    const me = halves[i] as { head: Uint8Array; tail: Uint8Array };
    const others = halves
      .map((h, j) => ({ j, d: Math.abs(h.tail.length - me.tail.length) }))
      .filter((o) => o.j !== i && !bytesEqual((halves[o.j] as { tail: Uint8Array }).tail, me.tail))
      .sort((a, b) => a.d - b.d || a.j - b.j)
      .slice(0, k - 1)
      .map((o) => (halves[o.j] as { tail: Uint8Array }).tail);
    const answer = rng.int(k);
    const choices = [...others];
    choices.splice(answer, 0, me.tail);
    items.push({ context: me.head, choices, answer });
  }
  return items;
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export interface DecodeLatencyOptions {
  /** Tokens decoded one at a time after the prompt (timed). Default 32. */
  tokens?: number;
  /** Untimed decode steps first (kernel warm-up). Default 4. */
  warmup?: number;
  /** Prompt prefilled before decoding (default: the single token 0). */
  prompt?: readonly number[];
}

export interface DecodeLatencyResult {
  /** Median wall time per decoded token (one batch-1 forward with the K/V cache, logits read back). */
  msPerToken: number;
  meanMs: number;
  tokens: number;
  /** Per-token times (ms). */
  times: number[];
}

/**
 * Batch-1 incremental decode latency: prefill the prompt, then decode greedily with the K/V cache in a
 * fresh `ctx.state`; each step's time includes reading the logits back (so the work is finished).
 */
export async function decodeLatency(model: CausalLM, opts: DecodeLatencyOptions = {}): Promise<DecodeLatencyResult> {
  const tokens = opts.tokens ?? 32;
  const warmup = opts.warmup ?? 4;
  const prompt = opts.prompt ?? [0];
  if (!Number.isInteger(tokens) || tokens <= 0) throw new ConfigError(`decodeLatency: expected a positive integer tokens, found ${tokens}`);
  if (!Number.isInteger(warmup) || warmup < 0) throw new ConfigError(`decodeLatency: expected an integer warmup ≥ 0, found ${warmup}`);
  if (prompt.length === 0) throw new ConfigError('decodeLatency: expected a non-empty prompt');
  const step = async (ctx: RunContext, ids: readonly number[]): Promise<number> => {
    const logits = tf.tidy(() => {
      const out = logitsOf(model, { ids: tf.tensor2d(Int32Array.from(ids), [1, ids.length], 'int32'), cache: true }, ctx);
      return tf.argMax(tf.reshape(tf.slice(out, [0, ids.length - 1, 0], [1, 1, -1]), [-1]));
    });
    const v = (await logits.data())[0] as number;
    logits.dispose();
    return v;
  };
  // warm-up generation (its own state), then the timed one
  const warm = createRunContext();
  try {
    let t = await step(warm, prompt);
    for (let i = 0; i < warmup; i++) t = await step(warm, [t]);
  } finally {
    warm.state.dispose();
  }
  const ctx = createRunContext();
  const times: number[] = [];
  try {
    let t = await step(ctx, prompt);
    for (let i = 0; i < tokens; i++) {
      const t0 = performance.now();
      t = await step(ctx, [t]);
      times.push(performance.now() - t0);
    }
  } finally {
    ctx.state.dispose();
  }
  const sorted = [...times].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
  return { msPerToken: median, meanMs: times.reduce((a, b) => a + b, 0) / times.length, tokens, times };
}
