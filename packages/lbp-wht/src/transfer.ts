/**
 * The transfer task of the LBP-WHT demonstration (bench-only: imported by src/bench.ts and the zoo
 * training script, not exported from the package entry). Fashion-MNIST classes 5–9 relabelled 0–4,
 * fine-tuned from the vit-tiny checkpoint pre-trained on classes 0–4.
 *
 * `finetuneVit` trains whatever the model's trainable parameters are with @leanpass/train's Trainer
 * (AdamW, warm-up + cosine, seeded data order) and reports test accuracy. The caller prepares the model
 * (new head with `replaceHead`, a pass applied or not, frozen parts); with the same seed and data, two
 * arms see the same batches in the same order.
 */
/* eslint-disable @nx/enforce-module-boundaries -- bench-only module: the transfer task needs the data
   loaders and the trainer; src/index.ts (the pass itself) does not import this file. */
import type * as tf from '@tensorflow/tfjs';
import { ConfigError, type AnyModule, type RunContext } from '@leanpass/core';
import {
  FASHION_MNIST_TRANSFER,
  classBalancedIndices,
  classCounts,
  epochBatches,
  loadFashionMnist,
  selectClasses,
  subsetDataset,
  type FashionMnistSource,
  type ImageDataset,
} from '@leanpass/data';
import { AdamW, Trainer, evaluateClassifier, softmaxCrossEntropy, warmupCosineSchedule, type Batch, type TrainEvent } from '@leanpass/train';
/* eslint-enable @nx/enforce-module-boundaries */

export interface TransferData {
  /** Training images of classes 5–9, labels 0–4. */
  train: ImageDataset;
  /** Test images of classes 5–9, labels 0–4. */
  test: ImageDataset;
  /** Where the images came from ('system': Debian's full dataset; 'bundled': the 2,000-image subset). */
  source: 'system' | 'bundled';
}

export interface TransferDataOptions {
  /** Training images per class, a seeded class-balanced subset (default 1000; the bundled subset has 200). */
  trainPerClass?: number;
  /** Test images per class (default: all of them — 1,000 per class with the full dataset). */
  testPerClass?: number;
  /** Seed of the subsets (default 0). */
  seed?: number;
  /** Default 'auto': the installed full dataset, else the bundled subset. */
  source?: FashionMnistSource;
}

/** Loads the target task: classes 5–9 relabelled 0–4, seeded class-balanced subsets. */
export async function loadTransferData(opts: TransferDataOptions = {}): Promise<TransferData> {
  const seed = opts.seed ?? 0;
  const target = [...FASHION_MNIST_TRANSFER.target];
  const trainRaw = await loadFashionMnist({ split: 'train', source: opts.source ?? 'auto' });
  const testRaw = await loadFashionMnist({ split: 'test', source: opts.source ?? 'auto' });
  const trainAll = selectClasses(trainRaw, target);
  const testAll = selectClasses(testRaw, target);
  const pick = (ds: ImageDataset, perClass: number | undefined, what: string, s: number): ImageDataset => {
    if (perClass === undefined) return ds;
    const have = Math.min(...classCounts(ds));
    if (!Number.isInteger(perClass) || perClass < 1 || perClass > have) {
      throw new ConfigError(`loadTransferData: expected ${what} in [1, ${have}] (the ${trainRaw.source} dataset has ${have} images of its smallest target class), found ${perClass}`);
    }
    return subsetDataset(ds, classBalancedIndices(ds.labels, { perClass, numClasses: target.length, seed: s }));
  };
  return {
    train: pick(trainAll, opts.trainPerClass ?? Math.min(1000, Math.min(...classCounts(trainAll))), 'trainPerClass', seed),
    test: pick(testAll, opts.testPerClass, 'testPerClass', seed + 1),
    source: trainRaw.source,
  };
}

export interface FinetuneOptions {
  train: ImageDataset;
  test: ImageDataset;
  /** Epochs over `train` (default 1 when `steps` is not given). */
  epochs?: number;
  /** Stop after this many updates (with `epochs` too, whichever comes first). */
  steps?: number;
  /** Default 32. */
  batchSize?: number;
  /** Peak learning rate (default 1e-3). */
  lr?: number;
  /** Linear warm-up updates (default: 10 % of the run, at most 50). */
  warmupSteps?: number;
  /** Final learning rate as a fraction of the peak (default 0.01). */
  floorRatio?: number;
  /** AdamW decoupled weight decay on weight matrices (default 1e-5, the reference recipe). */
  weightDecay?: number;
  /** Label smoothing of the training loss (default 0). */
  labelSmoothing?: number;
  /** Global-norm gradient clipping (default 5). */
  clipNorm?: number;
  /** Seed of the data order (default 0). */
  seed?: number;
  /**
   * Linear probing first (LP-FT): train only the parameters under `headPath` for this many updates
   * (AdamW at the peak `lr`, linear warm-up over the first 10 %, cosine to `floorRatio`), then the full run
   * (`epochs` / `steps`) over all trainable parameters with a fresh optimizer. Default 0 (no probing phase).
   * Its batches follow a seeded order of their own (data seed + 7919), the same in every arm.
   */
  headSteps?: number;
  /** Module path of the classifier head trained in the probing phase (default 'head'). */
  headPath?: string;
  /** Batch size of the final evaluation (default 250). */
  evalBatchSize?: number;
  /** Zero-pad images to this side (default 32, the ViT's input size; images of this size are used as they are). */
  padTo?: number;
  /** Every trainer event (steps, logs, done). */
  onEvent?: (e: TrainEvent) => void;
  signal?: AbortSignal;
}

export interface FinetuneResult {
  /** Accuracy on `test` after training. */
  accuracy: number;
  testLoss: number;
  /** Updates done (the full run; `headSteps` not included). */
  steps: number;
  /** Updates of the head-only probing phase. */
  headSteps: number;
  /** Wall time of training and evaluation. */
  ms: number;
  /** Mean wall time of one update (forward, backward, optimizer), evaluation and data loading excluded. */
  meanStepMs: number;
  /** Median update time, less sensitive to a shared machine's hiccups. */
  medianStepMs: number;
  /** Training loss of every update. */
  curve: Array<{ step: number; loss: number }>;
}

function* batchesOf(ds: ImageDataset, opts: { batchSize: number; seed: number; epoch: number; shuffle: boolean; padTo: number }): Generator<Batch> {
  for (const b of epochBatches(ds, opts)) yield { x: b.x, y: b.y };
}

/** The head-only phase of LP-FT: every other parameter frozen for its duration, flags restored after. */
async function probeHead(
  model: AnyModule,
  opts: FinetuneOptions,
  o: { headSteps: number; batchSize: number; padTo: number; seed: number; lr: number; loss: (m: AnyModule, batch: Batch, ctx: { run: RunContext }) => tf.Scalar },
): Promise<void> {
  const headPath = opts.headPath ?? 'head';
  const head = model.get(headPath);
  const flags = [...model.namedParams()].map(([, p]) => [p, p.trainable] as const);
  const headParams = new Set([...head.namedParams()].map(([, p]) => p));
  if (![...headParams].some((p) => p.trainable)) throw new ConfigError(`finetuneVit: headSteps needs trainable parameters under '${headPath}', found none`);
  for (const [p] of flags) if (!headParams.has(p)) p.trainable = false;
  try {
    const trainer = new Trainer(model, {
      optimizer: new AdamW({ weightDecay: opts.weightDecay ?? 1e-5, decay: (_path, shape) => shape.length >= 2 }),
      lr: warmupCosineSchedule({ peak: o.lr, warmupSteps: Math.floor(o.headSteps / 10), totalSteps: o.headSteps, floor: o.lr * (opts.floorRatio ?? 0.01) }),
      seed: o.seed,
      clipNorm: opts.clipNorm ?? 5,
    });
    await trainer.run<Batch>(
      {
        // a shuffle of its own, distinct from the full run's (identical across arms)
        data: (epoch, info) => batchesOf(opts.train, { batchSize: o.batchSize, seed: info.seed + 7919, epoch, shuffle: true, padTo: o.padTo }),
        steps: o.headSteps,
        loss: o.loss,
        ...(opts.signal ? { signal: opts.signal } : {}),
      },
      (e) => opts.onEvent?.(e),
    );
  } finally {
    for (const [p, t] of flags) p.trainable = t;
  }
}

/**
 * Fine-tunes the trainable parameters of `model` (a classifier taking [B, H, W, C] images) on `train`
 * and evaluates it on `test`. The model runs in 'train' mode during updates and 'eval' mode for the
 * evaluation. The batches of epoch e are a pure function of (seed, e).
 */
export async function finetuneVit(model: AnyModule, opts: FinetuneOptions): Promise<FinetuneResult> {
  const batchSize = opts.batchSize ?? 32;
  const padTo = opts.padTo ?? 32;
  const seed = opts.seed ?? 0;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new ConfigError(`finetuneVit: expected a positive integer batchSize, found ${batchSize}`);
  const epochs = opts.epochs ?? (opts.steps === undefined ? 1 : undefined);
  const perEpoch = Math.ceil(opts.train.n / batchSize);
  const total = Math.min(opts.steps ?? Number.POSITIVE_INFINITY, epochs === undefined ? Number.POSITIVE_INFINITY : epochs * perEpoch);
  if (!Number.isFinite(total) || total < 1) throw new ConfigError(`finetuneVit: expected at least one update, found ${total} (steps ${opts.steps}, epochs ${epochs}, ${opts.train.n} images)`);
  const lr = opts.lr ?? 1e-3;
  const warmupSteps = opts.warmupSteps ?? Math.min(50, Math.floor(total / 10));
  const labelSmoothing = opts.labelSmoothing ?? 0;
  const loss = (m: AnyModule, batch: Batch, ctx: { run: RunContext }): tf.Scalar => softmaxCrossEntropy(m.call(batch.x, ctx.run) as tf.Tensor, batch.y, { labelSmoothing });
  const headSteps = opts.headSteps ?? 0;
  if (!Number.isInteger(headSteps) || headSteps < 0) throw new ConfigError(`finetuneVit: expected headSteps to be an integer ≥ 0, found ${headSteps}`);
  const t0 = performance.now();
  if (headSteps > 0) await probeHead(model, opts, { headSteps, batchSize, padTo, seed, lr, loss });
  const trainer = new Trainer(model, {
    optimizer: new AdamW({ weightDecay: opts.weightDecay ?? 1e-5, decay: (_path, shape) => shape.length >= 2 }),
    lr: warmupCosineSchedule({ peak: lr, warmupSteps, totalSteps: total, floor: lr * (opts.floorRatio ?? 0.01) }),
    seed,
    clipNorm: opts.clipNorm ?? 5,
  });
  const stepMs: number[] = [];
  const curve: Array<{ step: number; loss: number }> = [];
  const summary = await trainer.run<Batch>(
    {
      data: (epoch, info) => batchesOf(opts.train, { batchSize, seed: info.seed, epoch, shuffle: true, padTo }),
      steps: total,
      ...(epochs !== undefined ? { epochs } : {}),
      loss,
      ...(opts.signal ? { signal: opts.signal } : {}),
    },
    (e) => {
      if (e.type === 'step') {
        stepMs.push(e.ms);
        curve.push({ step: e.step, loss: e.loss });
      }
      opts.onEvent?.(e);
    },
  );
  const evalOpts = { batchSize: opts.evalBatchSize ?? 250, seed: 0, epoch: 0, shuffle: false, padTo };
  const metrics = await evaluateClassifier(model, batchesOf(opts.test, evalOpts));
  const sorted = [...stepMs].sort((a, b) => a - b);
  return {
    accuracy: metrics.accuracy,
    testLoss: metrics.loss,
    steps: summary.step,
    headSteps,
    ms: performance.now() - t0,
    meanStepMs: stepMs.reduce((a, b) => a + b, 0) / Math.max(1, stepMs.length),
    medianStepMs: sorted[Math.floor(sorted.length / 2)] ?? 0,
    curve,
  };
}
