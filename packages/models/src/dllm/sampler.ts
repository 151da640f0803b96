import * as tf from '@tensorflow/tfjs';
import { ConfigError, Rng, createRunContext, type ConfigIssue, type RunContext } from '@leanpass/core';
import { CANVAS_STEP_KEY, type CanvasStep } from '@leanpass/nn';
import type { DiffusionLM } from './model.js';

export type RemaskingStrategy = 'low_confidence' | 'random';
export type CacheMode = 'none' | 'prefix' | 'dual';

/** What one sampler step did (given to `onStep`). */
export interface GenerationStepInfo {
  /** The step as published to the layers. */
  step: CanvasStep;
  /** Canvas rows computed by this forward, [start, end). */
  window: { start: number; end: number };
  /** Canvas positions committed in this step, per sequence. */
  committed: number[][];
}

export interface GenerationOptions {
  /** Generated tokens per sequence (a multiple of blockLength). */
  genLength: number;
  /** Semi-autoregressive block length; default genLength (one block). */
  blockLength?: number;
  /** Total denoising steps (a multiple of the number of blocks); default genLength (one token per step). Nominal with `threshold`. */
  steps?: number;
  /** 'low_confidence' (softmax probability of the candidate) or 'random' (seeded uniform); default 'low_confidence'. */
  remasking?: RemaskingStrategy;
  /** Gumbel temperature of the candidates; 0 (default) = argmax. */
  temperature?: number;
  /** Fast-dLLM K/V caching: 'none' (default), 'prefix' (block + suffix recomputed) or 'dual' (block only). */
  cache?: CacheMode;
  /**
   * Fast-dLLM confidence-threshold parallel decoding: each step commits the most confident masked block
   * token and every other one with confidence ≥ threshold, until the block is unmasked. Off when absent.
   */
  threshold?: number;
  /** Seed of the Gumbel noise and of random remasking; default 0. */
  seed?: number;
  /** LLaDA's `logits_eos_inf`: EOS is never a candidate. Default false. */
  eosLogitInf?: boolean;
  /** LLaDA's `confidence_eos_eot_inf`: candidates that are EOS get confidence −∞. Default false. */
  eosConfidenceInf?: boolean;
  /** `ctx.state` prefix of the per-layer K/V stores; default 'dllm.kv'. */
  storePrefix?: string;
  /** Called after every step, with the generation's context (its state holds the stores and the step). */
  onStep?: (info: GenerationStepInfo, ctx: RunContext) => void;
  /** Called once when the generation completes, before its state can be disposed. */
  onGenerationEnd?: (ctx: RunContext, result: GenerationResult) => void;
}

export interface GenerationResult {
  /** Generated ids per sequence (genLength each). */
  tokens: number[][];
  /** The final canvas [batch, length] (left pads, prompt, generation). */
  canvas: Int32Array;
  batch: number;
  length: number;
  /** Left pads per sequence. */
  pad: Int32Array;
  /** Canvas column of the first generated token. */
  genStart: number;
  /** Number of function evaluations (model forwards). */
  nfe: number;
  /** Forwards per block. */
  blockSteps: number[];
  /** Wall time of the steps, ms. */
  ms: number;
  /** Generated tokens (batch · genLength) per second of `ms`. */
  tokensPerSecond: number;
}

/**
 * LLaDA's per-block schedule: `masked` tokens over `steps` steps, masked // steps each, the remainder
 * one more each over the first steps.
 */
export function transferSchedule(masked: number, steps: number): number[] {
  if (!Number.isInteger(masked) || masked < 0 || !Number.isInteger(steps) || steps < 1) {
    throw new ConfigError(`dllm sampler: expected masked >= 0 and steps >= 1 (integers), found ${masked}, ${steps}`);
  }
  const base = Math.floor(masked / steps);
  const rem = masked % steps;
  return Array.from({ length: steps }, (_, i) => base + (i < rem ? 1 : 0));
}

interface Resolved {
  genLength: number;
  blockLength: number;
  stepsPerBlock: number;
  remasking: RemaskingStrategy;
  temperature: number;
  cache: CacheMode;
  threshold: number | undefined;
  seed: number;
  eosLogitInf: boolean;
  eosConfidenceInf: boolean;
  storePrefix: string;
}

function resolve(opts: GenerationOptions): Resolved {
  const issues: ConfigIssue[] = [];
  const genLength = opts.genLength;
  if (!Number.isInteger(genLength) || genLength < 1) issues.push({ path: 'genLength', message: `expected a positive integer, found ${genLength}` });
  const blockLength = opts.blockLength ?? genLength;
  if (!Number.isInteger(blockLength) || blockLength < 1 || genLength % blockLength !== 0) {
    issues.push({ path: 'blockLength', message: `expected a positive divisor of genLength ${genLength}, found ${blockLength}` });
  }
  const blocks = Math.max(1, Math.floor(genLength / blockLength) || 1);
  const steps = opts.steps ?? genLength;
  if (!Number.isInteger(steps) || steps < 1 || steps % blocks !== 0) issues.push({ path: 'steps', message: `expected a positive multiple of the number of blocks (${blocks}), found ${steps}` });
  const remasking = opts.remasking ?? 'low_confidence';
  if (remasking !== 'low_confidence' && remasking !== 'random') issues.push({ path: 'remasking', message: `expected 'low_confidence' or 'random', found ${JSON.stringify(remasking)}` });
  const temperature = opts.temperature ?? 0;
  if (!Number.isFinite(temperature) || temperature < 0) issues.push({ path: 'temperature', message: `expected a finite number >= 0, found ${temperature}` });
  const cache = opts.cache ?? 'none';
  if (!['none', 'prefix', 'dual'].includes(cache)) issues.push({ path: 'cache', message: `expected 'none', 'prefix' or 'dual', found ${JSON.stringify(cache)}` });
  const threshold = opts.threshold;
  if (threshold !== undefined && !(Number.isFinite(threshold) && threshold >= 0)) issues.push({ path: 'threshold', message: `expected a finite number >= 0, found ${threshold}` });
  const seed = opts.seed ?? 0;
  if (!Number.isInteger(seed) || seed < 0) issues.push({ path: 'seed', message: `expected a non-negative integer, found ${seed}` });
  const storePrefix = opts.storePrefix ?? 'dllm.kv';
  if (typeof storePrefix !== 'string' || storePrefix.length === 0) issues.push({ path: 'storePrefix', message: `expected a non-empty string, found ${JSON.stringify(storePrefix)}` });
  if (issues.length) throw new ConfigError('dllm sampler: invalid generation options', issues);
  return {
    genLength,
    blockLength,
    stepsPerBlock: steps / blocks,
    remasking,
    temperature,
    cache,
    threshold,
    seed,
    eosLogitInf: opts.eosLogitInf ?? false,
    eosConfidenceInf: opts.eosConfidenceInf ?? false,
    storePrefix,
  };
}

/**
 * One generation in progress: a canvas per sequence (left pads, prompt, `genLength` `[MASK]`s), its
 * own run context and StateStore (the per-layer K/V stores live there), and a step counter. Each
 * `step()` runs one model forward over the active window and commits tokens in the current block.
 * Generations never share state, so several may be stepped in any interleaving.
 */
export class DiffusionGeneration {
  readonly ctx: RunContext;
  readonly batch: number;
  readonly length: number;
  readonly genStart: number;
  readonly pad: Int32Array;
  private readonly opts: Resolved;
  private readonly canvas: Int32Array;
  private readonly rng: Rng;
  private block = 0;
  private stepInBlock = 0;
  private nfe = 0;
  private readonly blockSteps: number[] = [];
  private schedule: number[] = [];
  private ms = 0;
  private finished = false;
  private disposed = false;
  private final: GenerationResult | undefined;

  constructor(
    readonly model: DiffusionLM,
    prompts: ReadonlyArray<ArrayLike<number>>,
    private readonly options: GenerationOptions,
  ) {
    this.opts = resolve(options);
    const c = model.config;
    if (prompts.length === 0) throw new ConfigError('dllm sampler: expected at least one prompt, found none');
    prompts.forEach((p, b) => {
      if (p.length === 0) throw new ConfigError(`dllm sampler: prompt ${b} is empty; expected at least one id`);
      for (let i = 0; i < p.length; i++) {
        const id = p[i] as number;
        if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize) throw new ConfigError(`dllm sampler: expected prompt ids in [0, ${c.vocabSize}), found ${id} at ${i} of prompt ${b}`);
        if (id === c.maskId) throw new ConfigError(`dllm sampler: prompt ${b} holds the [MASK] id ${c.maskId} at ${i}; prompts must be fully observed`);
      }
    });
    const width = Math.max(...prompts.map((p) => p.length));
    this.batch = prompts.length;
    this.genStart = width;
    this.length = width + this.opts.genLength;
    if (this.length > c.maxLength) throw new ConfigError(`dllm sampler: canvas length ${this.length} (prompt ${width} + genLength ${this.opts.genLength}) exceeds the model's maxLength ${c.maxLength}`);
    this.pad = new Int32Array(this.batch);
    this.canvas = new Int32Array(this.batch * this.length);
    prompts.forEach((p, b) => {
      const np = width - p.length;
      this.pad[b] = np;
      const row = b * this.length;
      this.canvas.fill(c.padId, row, row + np);
      for (let i = 0; i < p.length; i++) this.canvas[row + np + i] = p[i] as number;
      this.canvas.fill(c.maskId, row + width, row + this.length);
    });
    this.rng = new Rng(this.opts.seed).fork('dllm.sampler');
    this.ctx = createRunContext({ mode: 'eval', seed: this.opts.seed });
    this.schedule = transferSchedule(this.opts.blockLength, this.opts.stepsPerBlock);
  }

  /** True once every generated position is committed. */
  get done(): boolean {
    return this.finished;
  }

  /** Forwards so far. */
  get evaluations(): number {
    return this.nfe;
  }

  /** A copy of the current canvas [batch, length]. */
  ids(): Int32Array {
    return Int32Array.from(this.canvas);
  }

  /** Runs one forward and commits this step's tokens. Throws once done or disposed. */
  step(): GenerationStepInfo {
    if (this.disposed) throw new ConfigError('dllm sampler: step() on a disposed generation');
    if (this.finished) throw new ConfigError('dllm sampler: step() on a finished generation; read result()');
    const t0 = performance.now();
    const { blockLength, cache, threshold } = this.opts;
    const { batch: B, length: L, genStart } = this;
    const bs = genStart + this.block * blockLength;
    const be = bs + blockLength;
    const window = this.stepInBlock === 0 || cache === 'none' ? { start: 0, end: L } : cache === 'prefix' ? { start: bs, end: L } : { start: bs, end: be };
    const step: CanvasStep = {
      block: this.block,
      stepInBlock: this.stepInBlock,
      nfe: this.nfe,
      blockStart: this.stepInBlock === 0,
      blockRange: { start: bs, end: be },
      ids: Int32Array.from(this.canvas),
      batch: B,
      length: L,
      pad: Int32Array.from(this.pad),
    };
    this.ctx.state.set(CANVAS_STEP_KEY, step);
    const V = this.model.config.vocabSize;
    const logitsT = tf.tidy(() => {
      const ids = tf.tensor2d(this.canvas, [B, L], 'int32');
      const out = this.model.call({ ids, window, pad: this.pad, store: this.opts.storePrefix, step }, this.ctx);
      return tf.slice(out, [0, bs - window.start, 0], [B, blockLength, V]);
    });
    const logits = logitsT.dataSync() as Float32Array;
    logitsT.dispose();
    this.nfe++;

    const committed = this.commit(logits, bs, threshold === undefined ? (this.schedule[this.stepInBlock] ?? 0) : undefined);
    this.stepInBlock++;
    const blockDone = this.blockUnmasked(bs, be);
    const scheduleDone = threshold === undefined && this.stepInBlock >= this.opts.stepsPerBlock;
    if (blockDone && (threshold !== undefined || scheduleDone)) this.endBlock();
    else if (scheduleDone) {
      // Only reachable if a schedule left tokens masked, which transferSchedule never does.
      throw new ConfigError(`dllm sampler: block ${this.block} still has masked tokens after ${this.stepInBlock} steps`);
    }
    this.ms += performance.now() - t0;
    const info: GenerationStepInfo = { step, window, committed };
    this.options.onStep?.(info, this.ctx);
    if (this.finished) {
      const result = this.result();
      this.options.onGenerationEnd?.(this.ctx, result);
    }
    return info;
  }

  /** The result; throws until done. */
  result(): GenerationResult {
    if (!this.finished) throw new ConfigError(`dllm sampler: the generation is not finished (block ${this.block}, ${this.nfe} forwards so far)`);
    if (!this.final) {
      const { batch: B, length: L, genStart } = this;
      const tokens = Array.from({ length: B }, (_, b) => Array.from(this.canvas.subarray(b * L + genStart, (b + 1) * L)));
      this.final = {
        tokens,
        canvas: Int32Array.from(this.canvas),
        batch: B,
        length: L,
        pad: Int32Array.from(this.pad),
        genStart,
        nfe: this.nfe,
        blockSteps: [...this.blockSteps],
        ms: this.ms,
        tokensPerSecond: this.ms > 0 ? (B * this.opts.genLength * 1000) / this.ms : 0,
      };
    }
    return this.final;
  }

  /** Frees the K/V stores and every other state of the generation. Idempotent. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.ctx.state.dispose();
  }

  private endBlock(): void {
    this.blockSteps.push(this.stepInBlock);
    this.block++;
    this.stepInBlock = 0;
    if (this.block * this.opts.blockLength >= this.opts.genLength) this.finished = true;
  }

  private blockUnmasked(bs: number, be: number): boolean {
    const maskId = this.model.config.maskId;
    for (let b = 0; b < this.batch; b++) {
      const row = b * this.length;
      for (let l = bs; l < be; l++) if (this.canvas[row + l] === maskId) return false;
    }
    return true;
  }

  /**
   * Picks candidates and confidences for the masked block positions and commits, per sequence, the
   * `k` most confident (schedule) or the top-1 plus all with confidence ≥ threshold (k undefined).
   */
  private commit(logits: Float32Array, bs: number, k: number | undefined): number[][] {
    const { blockLength, temperature, remasking, eosLogitInf, eosConfidenceInf, threshold } = this.opts;
    const { maskId, eosId, vocabSize: V } = this.model.config;
    const out: number[][] = [];
    const row = new Float64Array(V);
    for (let b = 0; b < this.batch; b++) {
      const cand: Array<{ pos: number; id: number; conf: number }> = [];
      for (let i = 0; i < blockLength; i++) {
        const pos = bs + i;
        if (this.canvas[b * this.length + pos] !== maskId) continue;
        const o = (b * blockLength + i) * V;
        let max = -Infinity;
        for (let v = 0; v < V; v++) {
          const x = logits[o + v] as number;
          row[v] = x;
          if (x > max) max = x;
        }
        // candidate: argmax of Gumbel-perturbed logits (LLaDA: exp(l) / (−log u)^τ), never [MASK]
        let best = -1;
        let bestScore = -Infinity;
        for (let v = 0; v < V; v++) {
          if (v === maskId || (eosLogitInf && v === eosId)) continue;
          let s = row[v] as number;
          if (temperature > 0) s -= temperature * Math.log(-Math.log(Math.max(this.rng.next(), Number.MIN_VALUE)));
          if (s > bestScore) [bestScore, best] = [s, v];
        }
        let conf: number;
        if (remasking === 'random') conf = this.rng.next();
        else {
          let z = 0;
          for (let v = 0; v < V; v++) z += Math.exp((row[v] as number) - max);
          conf = Math.exp((row[best] as number) - max) / z;
        }
        if (eosConfidenceInf && best === eosId) conf = -Infinity;
        cand.push({ pos, id: best, conf });
      }
      cand.sort((x, y) => y.conf - x.conf || x.pos - y.pos);
      let take: typeof cand;
      if (k === undefined) take = cand.filter((c, i) => i === 0 || c.conf >= (threshold as number));
      else take = cand.slice(0, k);
      for (const c of take) this.canvas[b * this.length + c.pos] = c.id;
      out.push(take.map((c) => c.pos).sort((x, y) => x - y));
    }
    return out;
  }
}

/** Starts a step-wise generation (see DiffusionGeneration); the caller steps it and must `dispose()` it. */
export function startGeneration(model: DiffusionLM, prompts: ReadonlyArray<ArrayLike<number>>, opts: GenerationOptions): DiffusionGeneration {
  return new DiffusionGeneration(model, prompts, opts);
}

/** Runs a generation to the end and frees its state: LLaDA's `generate` with Fast-dLLM's options. */
export function generateDiffusion(model: DiffusionLM, prompts: ReadonlyArray<ArrayLike<number>>, opts: GenerationOptions): GenerationResult {
  const g = new DiffusionGeneration(model, prompts, opts);
  try {
    while (!g.done) g.step();
    return g.result();
  } finally {
    g.dispose();
  }
}
