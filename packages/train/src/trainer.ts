import { mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { Observable, lastValueFrom, tap } from 'rxjs';
import {
  CancelledError,
  ConfigError,
  Rng,
  StateStore,
  createRunContext,
  stableStringify,
  type AnyModule,
  type ConfigIssue,
  type LogLevel,
  type RunContext,
} from '@leanpass/core';
import {
  CHECKPOINT_FORMAT,
  CHECKPOINT_VERSION,
  assignModelWeights,
  assignOptimizerState,
  checkpointFileName,
  listCheckpoints,
  pruneCheckpoints,
  readCheckpoint,
  resolveCheckpoint,
  writeCheckpoint,
  type CheckpointFiles,
  type CheckpointState,
} from './checkpoint.js';
import { clipByGlobalNorm, clipByValue, globalNorm } from './clip.js';
import { TrainingDivergedError } from './errors.js';
import { softmaxCrossEntropy } from './losses.js';
import type { Optimizer } from './optimizers.js';
import { toSchedule, type LrOption, type Schedule } from './schedules.js';

/** The default batch shape: inputs and targets (class ids for the default loss). */
export interface Batch {
  x: tf.Tensor;
  y: tf.Tensor;
}

/** What `data(epoch, info)` receives besides the epoch. */
export interface BatchSourceInfo {
  /** The trainer's seed. */
  seed: number;
}

/**
 * Where batches come from. Contract (it is what makes resuming exact):
 * - the sequence of batches of an epoch is a function of (seed, epoch) only — shuffle with
 *   `new Rng(seed).fork(epoch)` or similar, never with shared or global random state;
 * - opening the same epoch again yields the same batches in the same order (a resumed run re-opens
 *   the interrupted epoch and skips the batches already consumed);
 * - every batch holds fresh tensors: the trainer takes ownership and disposes every tensor found in
 *   the batch (recursively through arrays and plain objects) after its step.
 * Either a function `(epoch, {seed}) => iterable`, or an object with `batches(epoch)` (core's DataSource).
 */
export type BatchSource<B> =
  | ((epoch: number, info: BatchSourceInfo) => AsyncIterable<B> | Iterable<B>)
  | { batches(epoch: number): AsyncIterable<B> | Iterable<B> };

/** What the loss callback gets besides the model and the batch. */
export interface StepContext {
  /** Forward context: mode 'train', the trainer's RNG (checkpointed), a fresh state store per step. */
  run: RunContext;
  /** The update being computed (1-based). */
  step: number;
  epoch: number;
  lr: number;
}

/** Computes the scalar loss of one batch. Runs under the gradient tape; must not dispose the batch. */
export type LossFn<B, M> = (model: M, batch: B, ctx: StepContext) => tf.Scalar;

/** What an eval function gets: a context in eval mode with its own RNG (seeded from seed and step). */
export interface EvalContext {
  run: RunContext;
  step: number;
  epoch: number;
}

/** Evaluates the model; must free its own tensors. Does not touch the training RNG. */
export type EvalFn<M> = (model: M, ctx: EvalContext) => Promise<Record<string, number>> | Record<string, number>;

export interface EvalOptions<M> {
  fn: EvalFn<M>;
  /** Evaluate after every `every` updates (default: only at the end). */
  every?: number;
  /** Evaluate after the last update unless it was just evaluated (default true). */
  atEnd?: boolean;
}

export interface CheckpointOptions {
  /** Directory for `step-N.safetensors` + `step-N.json` (created if missing). */
  dir: string;
  /** Write after every `every` updates (default: only at the end). */
  every?: number;
  /** Write after the last update unless it was just written (default true). */
  atEnd?: boolean;
  /** Keep this many of the newest checkpoints with step ≤ the current one (default 3). */
  keep?: number;
}

export interface FitOptions<B, M> {
  data: BatchSource<B>;
  /** Total updates of the run, counted from step 0 (a resumed run stops at the same step). */
  steps?: number;
  /** Total epochs of the run, counted from epoch 0. With `steps` too, whichever comes first. */
  epochs?: number;
  /** Loss of one batch; default: softmax cross-entropy of `model.call(batch.x)` against `batch.y`. */
  loss?: LossFn<B, M>;
  eval?: EvalOptions<M>;
  checkpoint?: CheckpointOptions;
  /** A checkpoint file, or a directory (its newest complete checkpoint), to resume from first. */
  resume?: string;
  /** Aborting stops at the next step boundary with a CancelledError. */
  signal?: AbortSignal;
}

export interface TrainerOptions {
  optimizer: Optimizer;
  /** Learning rate: a number, a Schedule, or a pure function of the update index (0-based). */
  lr: LrOption;
  /** Seed of the training RNG and of the data order (default 0). */
  seed?: number;
  /** Clip gradients to this global L2 norm (after value clipping). */
  clipNorm?: number;
  /** Clip each gradient element to [−clipValue, clipValue]. */
  clipValue?: number;
}

export interface TrainSummary {
  /** Updates completed (the trainer's step) when the run ended. */
  step: number;
  /** Updates done in this call. */
  stepsRun: number;
  epoch: number;
  /** Loss of the last update, and the mean over this call's updates. */
  lastLoss: number | undefined;
  meanLoss: number | undefined;
  /** Wall time of this call. */
  ms: number;
  /** Metrics of the last evaluation. */
  metrics?: Record<string, number>;
  lastCheckpoint?: string;
  /** Why the run ended: the step or epoch budget was reached. */
  reason: 'steps' | 'epochs';
}

export type TrainEvent =
  | {
      type: 'step';
      /** Updates completed, this one included (1-based index of this update). */
      step: number;
      epoch: number;
      /** Loss of this batch before the update. */
      loss: number;
      /** Learning rate used by this update. */
      lr: number;
      /** Global L2 norm of the gradients before clipping. */
      gradNorm: number;
      /** Whether clipping changed the gradients. */
      clipped: boolean;
      /** Wall time of the step (forward, backward, update), data loading excluded. */
      ms: number;
    }
  | { type: 'eval'; step: number; epoch: number; metrics: Record<string, number> }
  | { type: 'checkpoint'; step: number; path: string; sidecar: string }
  | { type: 'log'; level: LogLevel; message: string }
  | { type: 'done'; summary: TrainSummary };

type Emit = (e: TrainEvent) => void;

/**
 * Trains a core Module tree: own optimizers with explicit state, learning-rate schedules, gradient
 * clipping, periodic evaluation and checkpoints, exact resume. Only parameters with `trainable` set
 * get gradients and updates.
 */
export class Trainer<M extends AnyModule = AnyModule> {
  readonly optimizer: Optimizer;
  readonly schedule: Schedule;
  readonly seed: number;
  readonly clipNorm: number | undefined;
  readonly clipValue: number | undefined;
  private readonly runCtx: RunContext;
  private stepCount = 0;
  private epochCount = 0;
  private batchCount = 0;
  private lastCheckpointPath: string | undefined;
  private running: Promise<void> | undefined;

  constructor(
    readonly model: M,
    opts: TrainerOptions,
  ) {
    const issues: ConfigIssue[] = [];
    const seed = opts.seed ?? 0;
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) issues.push({ path: 'seed', message: `expected an integer in [0, 2³²), found ${seed}` });
    if (opts.clipNorm !== undefined && !(opts.clipNorm > 0 && Number.isFinite(opts.clipNorm))) {
      issues.push({ path: 'clipNorm', message: `expected a finite number > 0, found ${opts.clipNorm}` });
    }
    if (opts.clipValue !== undefined && !(opts.clipValue > 0 && Number.isFinite(opts.clipValue))) {
      issues.push({ path: 'clipValue', message: `expected a finite number > 0, found ${opts.clipValue}` });
    }
    if (typeof opts.lr === 'number' && !(opts.lr >= 0 && Number.isFinite(opts.lr))) issues.push({ path: 'lr', message: `expected a finite number ≥ 0, found ${opts.lr}` });
    if (issues.length) throw new ConfigError('Trainer: invalid options', issues);
    this.optimizer = opts.optimizer;
    this.schedule = toSchedule(opts.lr);
    this.seed = seed;
    this.clipNorm = opts.clipNorm;
    this.clipValue = opts.clipValue;
    this.runCtx = createRunContext({ mode: 'train', seed });
  }

  /** Updates completed so far. */
  get step(): number {
    return this.stepCount;
  }
  /** Current epoch (0-based). */
  get epoch(): number {
    return this.epochCount;
  }
  /** Batches of the current epoch already consumed. */
  get batchInEpoch(): number {
    return this.batchCount;
  }
  /** The training RNG (the forward context's; checkpointed). */
  get rng(): Rng {
    return this.runCtx.rng;
  }
  /** Path of the last checkpoint written or restored. */
  get lastCheckpoint(): string | undefined {
    return this.lastCheckpointPath;
  }

  /** Resolves when no `fit` is running (e.g. after an unsubscribe, once the current step has finished). */
  async idle(): Promise<void> {
    await this.running;
  }

  /**
   * Trains until `steps` updates or `epochs` epochs have been completed (counted from the start of
   * the run, so a resumed run stops where the uninterrupted one would). Cold: nothing runs until
   * subscribed. Unsubscribing stops at the next step boundary (the current step finishes).
   */
  fit<B = Batch>(opts: FitOptions<B, M>): Observable<TrainEvent> {
    return new Observable<TrainEvent>((subscriber) => {
      let stopped = false;
      if (this.running) {
        subscriber.error(new ConfigError('Trainer.fit: a fit is already running on this trainer; wait for trainer.idle()'));
        return;
      }
      const emit: Emit = (e) => {
        if (!stopped) subscriber.next(e);
      };
      const run = this.runFit(opts, emit, () => stopped).then(
        (summary) => {
          if (summary) {
            emit({ type: 'done', summary });
            subscriber.complete();
          }
        },
        (err: unknown) => subscriber.error(err),
      );
      this.running = run.finally(() => {
        this.running = undefined;
      });
      return () => {
        stopped = true;
      };
    });
  }

  /** `fit` as a promise of the summary; `onEvent` sees every event. */
  async run<B = Batch>(opts: FitOptions<B, M>, onEvent?: (e: TrainEvent) => void): Promise<TrainSummary> {
    let summary: TrainSummary | undefined;
    await lastValueFrom(
      this.fit(opts).pipe(
        tap((e) => {
          onEvent?.(e);
          if (e.type === 'done') summary = e.summary;
        }),
      ),
      { defaultValue: undefined },
    );
    if (!summary) throw new CancelledError('training stopped before it finished');
    return summary;
  }

  /** Writes a checkpoint of the current state to `path` (a `.safetensors` file; the sidecar goes beside it). */
  async save(path: string): Promise<CheckpointFiles> {
    await mkdir(dirname(path), { recursive: true });
    const files = await writeCheckpoint(path, this.model, this.optimizer, this.state());
    this.lastCheckpointPath = files.path;
    return files;
  }

  /**
   * Restores model weights, optimizer state, step, epoch position and RNG state from a checkpoint
   * file or the newest complete checkpoint in a directory. Returns the checkpoint's state.
   */
  async restore(target: string): Promise<CheckpointState> {
    if (this.running) throw new ConfigError('Trainer.restore: a fit is running on this trainer; wait for trainer.idle()');
    return this.restoreFrom(target, () => undefined);
  }

  /** The checkpointable state, tensors excluded. */
  state(): CheckpointState {
    const rng = this.runCtx.rng.getState().map((v, i) => (i === 4 && Number.isNaN(v) ? null : v));
    return {
      format: CHECKPOINT_FORMAT,
      version: CHECKPOINT_VERSION,
      step: this.stepCount,
      epoch: this.epochCount,
      batchInEpoch: this.batchCount,
      seed: this.seed,
      rng,
      schedule: { spec: this.schedule.spec, nextLr: this.schedule(this.stepCount) },
      optimizer: { kind: this.optimizer.kind, config: this.optimizer.config(), counts: this.optimizer.getState().counts },
      params: [...this.model.namedParams()].map(([path, p]) => ({ path, shape: p.shape, trainable: p.trainable })),
    };
  }

  private async restoreFrom(target: string, log: (level: LogLevel, message: string) => void): Promise<CheckpointState> {
    const path = await resolveCheckpoint(target);
    const ckpt = await readCheckpoint(path);
    const s = ckpt.state;
    if (s.seed !== this.seed) {
      throw new ConfigError(`resume: the checkpoint was written with seed ${s.seed}, this trainer has seed ${this.seed}; data order and RNG streams would differ`);
    }
    assignModelWeights(this.model, ckpt);
    assignOptimizerState(this.optimizer, this.model, ckpt);
    this.runCtx.rng.setState(s.rng.map((v) => (v === null ? Number.NaN : v)));
    this.stepCount = s.step;
    this.epochCount = s.epoch;
    this.batchCount = s.batchInEpoch;
    this.lastCheckpointPath = path;
    if (stableStringify(s.schedule.spec) !== stableStringify(this.schedule.spec)) {
      log('warn', `resume: the learning-rate schedule differs from the checkpoint's (${stableStringify(s.schedule.spec)} → ${stableStringify(this.schedule.spec)})`);
    }
    if (stableStringify(s.optimizer.config) !== stableStringify(this.optimizer.config())) {
      log('warn', `resume: optimizer hyperparameters differ from the checkpoint's (${stableStringify(s.optimizer.config)} → ${stableStringify(this.optimizer.config())})`);
    }
    const trainable = new Map(s.params.map((p) => [p.path, p.trainable]));
    const changed = [...this.model.namedParams()].filter(([p, param]) => trainable.has(p) && trainable.get(p) !== param.trainable).map(([p]) => p);
    if (changed.length) log('warn', `resume: trainable flags differ from the checkpoint's for ${changed.join(', ')}`);
    return s;
  }

  private async runFit<B>(opts: FitOptions<B, M>, emit: Emit, isStopped: () => boolean): Promise<TrainSummary | undefined> {
    checkFitOptions(opts);
    const t0 = performance.now();
    const log = (level: LogLevel, message: string): void => emit({ type: 'log', level, message });
    if (opts.resume !== undefined) {
      const s = await this.restoreFrom(opts.resume, log);
      log('info', `resumed from ${this.lastCheckpointPath ?? opts.resume} at step ${s.step} (epoch ${s.epoch}, batch ${s.batchInEpoch})`);
    }
    const ckpt = opts.checkpoint;
    if (ckpt) {
      await mkdir(ckpt.dir, { recursive: true });
      const newer = (await listCheckpoints(ckpt.dir)).filter((c) => c.step > this.stepCount);
      if (newer.length) log('warn', `checkpoint dir ${ckpt.dir} holds checkpoints past step ${this.stepCount} (${newer.map((c) => c.step).join(', ')}); they will be overwritten when reached`);
    }

    const trainables = [...this.model.namedParams()].filter(([, p]) => p.trainable);
    if (trainables.length === 0) throw new ConfigError('Trainer.fit: expected at least one parameter with trainable = true, found none');
    const vars = new Map<string, tf.Variable>();
    const pathOf = new Map<string, string>();
    for (const [path, p] of trainables) {
      // Param.trainable is the source of truth; tf.variableGrads drops variables whose own flag is off.
      p.variable.trainable = true;
      vars.set(path, p.variable);
      pathOf.set(p.variable.name, path);
    }
    const varList = [...vars.values()];
    const lossFn = opts.loss ?? (defaultLoss as unknown as LossFn<B, M>);

    const done = (): 'steps' | 'epochs' | undefined =>
      opts.steps !== undefined && this.stepCount >= opts.steps ? 'steps' : opts.epochs !== undefined && this.epochCount >= opts.epochs ? 'epochs' : undefined;

    let stepsRun = 0;
    let lossSum = 0;
    let lastLoss: number | undefined;
    let metrics: Record<string, number> | undefined;
    let lastEvalStep = -1;
    let lastCkptStep = -1;
    let warnedNoGrad = false;
    let iter: AsyncIterator<B> | Iterator<B> | undefined;

    const evaluate = async (): Promise<void> => {
      if (!opts.eval) return;
      const run = createRunContext({ mode: 'eval' });
      run.rng = new Rng(this.seed).fork(`eval/${this.stepCount}`);
      try {
        metrics = await opts.eval.fn(this.model, { run, step: this.stepCount, epoch: this.epochCount });
      } finally {
        run.state.dispose();
      }
      lastEvalStep = this.stepCount;
      emit({ type: 'eval', step: this.stepCount, epoch: this.epochCount, metrics: { ...metrics } });
    };
    const checkpoint = async (): Promise<void> => {
      if (!ckpt) return;
      const files = await this.save(join(ckpt.dir, checkpointFileName(this.stepCount)));
      lastCkptStep = this.stepCount;
      emit({ type: 'checkpoint', step: this.stepCount, path: files.path, sidecar: files.sidecar });
      const pruned = await pruneCheckpoints(ckpt.dir, ckpt.keep ?? 3, this.stepCount);
      if (pruned.length) log('debug', `removed old checkpoints: ${pruned.join(', ')}`);
    };

    try {
      let reason = done();
      iter = reason ? undefined : await this.openEpoch(opts.data, this.epochCount, this.batchCount);
      while (!reason && iter) {
        if (isStopped()) return undefined;
        if (opts.signal?.aborted) throw new CancelledError(`training cancelled at step ${this.stepCount}`);
        const r = await iter.next();
        if (r.done) {
          if (this.batchCount === 0) throw new ConfigError(`Trainer.fit: the data source yielded no batches for epoch ${this.epochCount}`);
          this.epochCount++;
          this.batchCount = 0;
          reason = done();
          iter = reason ? undefined : await this.openEpoch(opts.data, this.epochCount, 0);
          continue;
        }
        const batch = r.value;
        if (isStopped()) {
          tf.dispose(batch as tf.TensorContainer);
          return undefined;
        }
        const ts = performance.now();
        const lr = this.schedule(this.stepCount);
        if (!Number.isFinite(lr) || lr < 0) throw new ConfigError(`learning-rate schedule: expected a finite rate ≥ 0 for step ${this.stepCount}, found ${lr}`);
        const stepCtx: StepContext = { run: { ...this.runCtx, state: new StateStore() }, step: this.stepCount + 1, epoch: this.epochCount, lr };
        let stats: { loss: number; gradNorm: number; clipped: boolean; missing: string[] };
        try {
          stats = await this.trainStep(varList, vars, pathOf, () => lossFn(this.model, batch, stepCtx), lr, stepCtx.step);
        } finally {
          stepCtx.run.state.dispose();
          tf.dispose(batch as tf.TensorContainer);
        }
        if (!warnedNoGrad && stats.missing.length) {
          warnedNoGrad = true;
          log('warn', `no gradient reaches trainable parameters ${stats.missing.join(', ')}: they are not updated`);
        }
        this.stepCount++;
        this.batchCount++;
        stepsRun++;
        lossSum += stats.loss;
        lastLoss = stats.loss;
        emit({ type: 'step', step: this.stepCount, epoch: this.epochCount, loss: stats.loss, lr, gradNorm: stats.gradNorm, clipped: stats.clipped, ms: performance.now() - ts });
        if (opts.eval?.every && this.stepCount % opts.eval.every === 0) await evaluate();
        if (ckpt?.every && this.stepCount % ckpt.every === 0) await checkpoint();
        reason = done();
      }
      if (isStopped()) return undefined;
      if (opts.eval && (opts.eval.atEnd ?? true) && lastEvalStep !== this.stepCount) await evaluate();
      if (ckpt && (ckpt.atEnd ?? true) && lastCkptStep !== this.stepCount) await checkpoint();
      const summary: TrainSummary = {
        step: this.stepCount,
        stepsRun,
        epoch: this.epochCount,
        lastLoss,
        meanLoss: stepsRun ? lossSum / stepsRun : undefined,
        ms: performance.now() - t0,
        reason: reason ?? 'steps',
      };
      if (metrics) summary.metrics = metrics;
      if (this.lastCheckpointPath) summary.lastCheckpoint = this.lastCheckpointPath;
      return summary;
    } catch (e) {
      if (e instanceof TrainingDivergedError && this.lastCheckpointPath) {
        throw new TrainingDivergedError(e.step, e.quantity, e.value, this.lastCheckpointPath);
      }
      throw e;
    } finally {
      await closeIterator(iter);
    }
  }

  /** One update. Throws TrainingDivergedError (without updating) when the loss or a gradient is not finite. */
  private async trainStep(
    varList: tf.Variable[],
    vars: ReadonlyMap<string, tf.Variable>,
    pathOf: ReadonlyMap<string, string>,
    f: () => tf.Scalar,
    lr: number,
    step: number,
  ): Promise<{ loss: number; gradNorm: number; clipped: boolean; missing: string[] }> {
    const { value, grads } = tf.variableGrads(f, varList);
    try {
      const paths: string[] = [];
      const list: tf.Tensor[] = [];
      for (const [name, g] of Object.entries(grads)) {
        if (!g) continue;
        paths.push(pathOf.get(name) as string);
        list.push(g);
      }
      const missing = [...vars.keys()].filter((p) => !paths.includes(p));
      const normT = globalNorm(list);
      let loss: number;
      let gradNorm: number;
      let maxAbs: number;
      try {
        const statsT = tf.tidy(() => tf.stack([tf.cast(value, 'float32'), normT, this.clipValue !== undefined ? maxAbsOf(list) : tf.scalar(0)]));
        [loss, gradNorm, maxAbs] = Array.from(await statsT.data()) as [number, number, number];
        statsT.dispose();
        if (!Number.isFinite(loss)) throw new TrainingDivergedError(step, 'loss', loss);
        if (!Number.isFinite(gradNorm)) throw new TrainingDivergedError(step, 'gradient norm', gradNorm);
        const valueClipped = this.clipValue !== undefined && maxAbs > this.clipValue;
        // clipByGlobalNorm scales by min(1, c / (norm + 1e-6)): it changes the gradients iff norm + 1e-6 > c.
        const clipped = valueClipped || (this.clipNorm !== undefined && gradNorm + 1e-6 > this.clipNorm);
        tf.tidy(() => {
          let g = list;
          if (this.clipValue !== undefined) g = clipByValue(g, this.clipValue);
          if (this.clipNorm !== undefined) g = clipByGlobalNorm(g, this.clipNorm, valueClipped ? undefined : normT);
          this.optimizer.apply(vars, new Map(paths.map((p, i) => [p, g[i] as tf.Tensor])), lr);
        });
        return { loss, gradNorm, clipped, missing };
      } finally {
        normT.dispose();
      }
    } finally {
      value.dispose();
      for (const g of Object.values(grads)) g?.dispose();
    }
  }

  /** Opens an epoch's iterator and skips the batches already consumed (disposing them). */
  private async openEpoch<B>(data: BatchSource<B>, epoch: number, skip: number): Promise<AsyncIterator<B> | Iterator<B>> {
    const iterable = typeof data === 'function' ? data(epoch, { seed: this.seed }) : data.batches(epoch);
    const it = Symbol.asyncIterator in iterable ? iterable[Symbol.asyncIterator]() : iterable[Symbol.iterator]();
    for (let i = 0; i < skip; i++) {
      const r = await it.next();
      if (r.done) {
        throw new ConfigError(`resume: epoch ${epoch} of the data source has ${i} batches, but the checkpoint had consumed ${skip}; the source must yield the same batches for the same (seed, epoch)`);
      }
      tf.dispose(r.value as tf.TensorContainer);
    }
    return it;
  }
}

function defaultLoss(model: AnyModule, batch: Batch, ctx: StepContext): tf.Scalar {
  if (typeof batch !== 'object' || batch === null || !(batch.x instanceof tf.Tensor) || !(batch.y instanceof tf.Tensor)) {
    throw new ConfigError('Trainer.fit: the default loss expects batches {x: tf.Tensor, y: tf.Tensor}; pass `loss` for other batch shapes');
  }
  return softmaxCrossEntropy(model.call(batch.x, ctx.run) as tf.Tensor, batch.y);
}

/** max |g| over every element of every tensor. */
function maxAbsOf(list: readonly tf.Tensor[]): tf.Scalar {
  return tf.tidy(() => (list.length ? tf.max(tf.stack(list.map((g) => tf.max(tf.abs(g))))) : tf.scalar(0)));
}

async function closeIterator<B>(it: AsyncIterator<B> | Iterator<B> | undefined): Promise<void> {
  if (it?.return) await it.return();
}

function checkFitOptions<B, M>(opts: FitOptions<B, M>): void {
  const issues: ConfigIssue[] = [];
  const posInt = (v: number | undefined, path: string, min = 1): void => {
    if (v !== undefined && (!Number.isInteger(v) || v < min)) issues.push({ path, message: `expected an integer ≥ ${min}, found ${v}` });
  };
  if (opts.steps === undefined && opts.epochs === undefined) issues.push({ path: 'steps', message: 'expected `steps` or `epochs` (or both), found neither' });
  posInt(opts.steps, 'steps', 0);
  posInt(opts.epochs, 'epochs', 0);
  if (typeof opts.data !== 'function' && (typeof opts.data !== 'object' || opts.data === null || typeof opts.data.batches !== 'function')) {
    issues.push({ path: 'data', message: 'expected a function (epoch, {seed}) => iterable of batches, or an object with batches(epoch)' });
  }
  if (opts.eval) {
    if (typeof opts.eval.fn !== 'function') issues.push({ path: 'eval.fn', message: 'expected a function (model, ctx) => metrics' });
    posInt(opts.eval.every, 'eval.every');
  }
  if (opts.checkpoint) {
    if (typeof opts.checkpoint.dir !== 'string' || opts.checkpoint.dir === '') issues.push({ path: 'checkpoint.dir', message: `expected a directory path, found ${JSON.stringify(opts.checkpoint.dir)}` });
    posInt(opts.checkpoint.every, 'checkpoint.every');
    posInt(opts.checkpoint.keep, 'checkpoint.keep');
  }
  if (issues.length) throw new ConfigError('Trainer.fit: invalid options', issues);
}
