/**
 * In-memory labelled image datasets: seeded train/validation splits, class subsets with label
 * remapping, a per-epoch order that is a pure function of (seed, epoch), and batching into tf tensors.
 * Everything is deterministic: the same inputs and seed give the same arrays on every machine.
 */
import * as tf from '@tensorflow/tfjs';
import { ConfigError, Rng } from '@leanpass/core';

/**
 * A labelled image dataset held in memory. `images` is row-major NHWC float32 (`n × height × width ×
 * channels`), `labels` holds one class index in `[0, numClasses)` per image.
 */
export interface ImageDataset {
  images: Float32Array;
  labels: Int32Array;
  n: number;
  height: number;
  width: number;
  channels: number;
  numClasses: number;
  /** One name per class index, when known. */
  classNames?: readonly string[];
}

export interface ImageDatasetInit {
  images: Float32Array;
  labels: Int32Array | readonly number[];
  height: number;
  width: number;
  channels?: number;
  /** Defaults to `classNames.length` when given, else to 1 + the largest label. */
  numClasses?: number;
  classNames?: readonly string[];
}

/** Builds an {@link ImageDataset}, checking that the sizes and labels agree (ConfigError listing every problem). */
export function createImageDataset(init: ImageDatasetInit): ImageDataset {
  const channels = init.channels ?? 1;
  const labels = init.labels instanceof Int32Array ? init.labels : Int32Array.from(init.labels);
  const issues: { path: string; message: string }[] = [];
  for (const [key, v] of [['height', init.height], ['width', init.width], ['channels', channels]] as const) {
    if (!Number.isInteger(v) || v <= 0) issues.push({ path: key, message: `expected a positive integer, found ${v}` });
  }
  const n = labels.length;
  const per = init.height * init.width * channels;
  if (issues.length === 0 && init.images.length !== n * per) {
    issues.push({ path: 'images', message: `expected ${n} labels × ${init.height}×${init.width}×${channels} = ${n * per} values, found ${init.images.length}` });
  }
  let maxLabel = -1;
  for (let i = 0; i < n; i++) {
    const l = labels[i] as number;
    if (l < 0) {
      issues.push({ path: `labels[${i}]`, message: `expected a class index ≥ 0, found ${l}` });
      break;
    }
    if (l > maxLabel) maxLabel = l;
  }
  const numClasses = init.numClasses ?? init.classNames?.length ?? maxLabel + 1;
  if (!Number.isInteger(numClasses) || numClasses < 0) issues.push({ path: 'numClasses', message: `expected a non-negative integer, found ${numClasses}` });
  else if (maxLabel >= numClasses) issues.push({ path: 'labels', message: `expected class indices below numClasses = ${numClasses}, found ${maxLabel}` });
  if (init.classNames !== undefined && init.classNames.length !== numClasses) {
    issues.push({ path: 'classNames', message: `expected ${numClasses} names (one per class), found ${init.classNames.length}` });
  }
  if (issues.length > 0) throw new ConfigError('invalid image dataset', issues);
  const ds: ImageDataset = { images: init.images, labels, n, height: init.height, width: init.width, channels, numClasses };
  if (init.classNames !== undefined) ds.classNames = init.classNames;
  return ds;
}

function checkIndices(ds: ImageDataset, indices: ArrayLike<number>, what: string): void {
  for (let i = 0; i < indices.length; i++) {
    const k = indices[i] as number;
    if (!Number.isInteger(k) || k < 0 || k >= ds.n) {
      throw new ConfigError(`${what}: expected indices in [0, ${ds.n}), found ${k} at position ${i}`);
    }
  }
}

/** A new dataset holding copies of the given examples, in the given order. */
export function subsetDataset(ds: ImageDataset, indices: ArrayLike<number>): ImageDataset {
  checkIndices(ds, indices, 'subsetDataset');
  const per = ds.height * ds.width * ds.channels;
  const images = new Float32Array(indices.length * per);
  const labels = new Int32Array(indices.length);
  for (let i = 0; i < indices.length; i++) {
    const k = indices[i] as number;
    images.set(ds.images.subarray(k * per, (k + 1) * per), i * per);
    labels[i] = ds.labels[k] as number;
  }
  return { ...ds, images, labels, n: indices.length };
}

/** The number of examples of each class (length `numClasses`). */
export function classCounts(ds: Pick<ImageDataset, 'labels' | 'numClasses'>): number[] {
  const counts = new Array<number>(ds.numClasses).fill(0);
  for (const l of ds.labels) counts[l] = (counts[l] ?? 0) + 1;
  return counts;
}

/** A seeded permutation of `0..n-1` as an Int32Array (Fisher–Yates driven by core's Rng). */
export function seededPermutation(n: number, rng: Rng): Int32Array {
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`seededPermutation expects a non-negative integer, got ${n}`);
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const t = p[i] as number;
    p[i] = p[j] as number;
    p[j] = t;
  }
  return p;
}

/**
 * The order in which epoch `epoch` visits `n` examples: a pure function of `(seed, epoch)`, so a run
 * resumed at epoch e sees exactly the order the uninterrupted run would have seen.
 */
export function epochPermutation(n: number, seed: number, epoch: number): Int32Array {
  if (!Number.isInteger(epoch) || epoch < 0) throw new RangeError(`epochPermutation expects a non-negative integer epoch, got ${epoch}`);
  return seededPermutation(n, new Rng(seed).fork(`epoch/${epoch}`));
}

export interface SplitOptions {
  /** Fraction of examples that go to validation, in (0, 1). Default 0.1. */
  valFraction?: number;
  seed: number;
  /** Split each class separately so both parts keep the class proportions. Default true. */
  stratify?: boolean;
}

export interface TrainValSplit {
  train: ImageDataset;
  val: ImageDataset;
  /** Indices into the original dataset, ascending. */
  trainIndices: Int32Array;
  valIndices: Int32Array;
}

/**
 * Seeded train/validation split. Both parts keep the original order of their examples. Stratified
 * (default): each class sends `round(count · valFraction)` of its examples to validation; otherwise
 * `round(n · valFraction)` examples overall.
 */
export function trainValSplit(ds: ImageDataset, options: SplitOptions): TrainValSplit {
  const frac = options.valFraction ?? 0.1;
  if (!(frac > 0 && frac < 1)) throw new ConfigError(`trainValSplit: expected valFraction in (0, 1), found ${frac}`);
  const rng = new Rng(options.seed).fork('train-val-split');
  const isVal = new Uint8Array(ds.n);
  if (options.stratify ?? true) {
    const byClass: number[][] = Array.from({ length: ds.numClasses }, () => []);
    for (let i = 0; i < ds.n; i++) byClass[ds.labels[i] as number]?.push(i);
    byClass.forEach((members, c) => {
      const perm = seededPermutation(members.length, rng.fork(`class/${c}`));
      const k = Math.round(members.length * frac);
      for (let j = 0; j < k; j++) isVal[members[perm[j] as number] as number] = 1;
    });
  } else {
    const perm = seededPermutation(ds.n, rng);
    const k = Math.round(ds.n * frac);
    for (let j = 0; j < k; j++) isVal[perm[j] as number] = 1;
  }
  const trainIdx: number[] = [];
  const valIdx: number[] = [];
  for (let i = 0; i < ds.n; i++) (isVal[i] ? valIdx : trainIdx).push(i);
  const trainIndices = Int32Array.from(trainIdx);
  const valIndices = Int32Array.from(valIdx);
  return { train: subsetDataset(ds, trainIndices), val: subsetDataset(ds, valIndices), trainIndices, valIndices };
}

/**
 * Seeded, class-balanced choice of `perClass` examples of every class in `[0, numClasses)`, returned as
 * ascending indices. Fails when a class has fewer than `perClass` examples.
 */
export function classBalancedIndices(labels: ArrayLike<number>, options: { perClass: number; numClasses: number; seed: number }): Int32Array {
  const { perClass, numClasses, seed } = options;
  if (!Number.isInteger(perClass) || perClass <= 0) throw new ConfigError(`classBalancedIndices: expected a positive integer perClass, found ${perClass}`);
  const byClass: number[][] = Array.from({ length: numClasses }, () => []);
  for (let i = 0; i < labels.length; i++) byClass[labels[i] as number]?.push(i);
  const rng = new Rng(seed).fork('class-balanced');
  const chosen: number[] = [];
  byClass.forEach((members, c) => {
    if (members.length < perClass) throw new ConfigError(`classBalancedIndices: class ${c} has ${members.length} example(s), fewer than perClass = ${perClass}`);
    const perm = seededPermutation(members.length, rng.fork(`class/${c}`));
    for (let j = 0; j < perClass; j++) chosen.push(members[perm[j] as number] as number);
  });
  return Int32Array.from(chosen).sort();
}

/**
 * Keeps only the examples whose label is in `classes`. With `remap` (default) labels become positions
 * in `classes` (e.g. classes [5,6,7,8,9] → labels 0–4), `numClasses` becomes `classes.length` and the
 * class names follow; without it labels and `numClasses` are unchanged.
 */
export function selectClasses(ds: ImageDataset, classes: readonly number[], options: { remap?: boolean } = {}): ImageDataset {
  const remap = options.remap ?? true;
  const position = new Map<number, number>();
  classes.forEach((c, i) => {
    if (!Number.isInteger(c) || c < 0 || c >= ds.numClasses) throw new ConfigError(`selectClasses: expected class indices in [0, ${ds.numClasses}), found ${c}`);
    if (position.has(c)) throw new ConfigError(`selectClasses: class ${c} is listed twice in ${JSON.stringify(classes)}`);
    position.set(c, i);
  });
  const keep: number[] = [];
  for (let i = 0; i < ds.n; i++) if (position.has(ds.labels[i] as number)) keep.push(i);
  const sub = subsetDataset(ds, keep);
  if (!remap) return sub;
  for (let i = 0; i < sub.n; i++) sub.labels[i] = position.get(sub.labels[i] as number) as number;
  const out: ImageDataset = { ...sub, numClasses: classes.length };
  if (ds.classNames !== undefined) {
    const names = ds.classNames;
    out.classNames = classes.map((c) => names[c] as string);
  } else delete out.classNames;
  return out;
}

export interface BatchOptions {
  /** Zero-pad images symmetrically to `padTo × padTo` (e.g. 32 for 28×28 Fashion-MNIST). */
  padTo?: number;
  /** Labels as one-hot float32 `[B, numClasses]` instead of int32 `[B]`. Default false. */
  oneHot?: boolean;
}

/** One batch: `x` is `[B, H, W, C]` float32, `y` int32 `[B]` (or one-hot `[B, K]`). The caller disposes both. */
export interface ImageBatch {
  x: tf.Tensor4D;
  y: tf.Tensor1D | tf.Tensor2D;
  /** The dataset indices in this batch, in order. */
  indices: Int32Array;
  /** 0-based position of the batch within its epoch. */
  index: number;
}

/** Builds one batch from the given example indices (see {@link BatchOptions}). */
export function makeBatch(ds: ImageDataset, indices: Int32Array | readonly number[], options: BatchOptions = {}): { x: tf.Tensor4D; y: tf.Tensor1D | tf.Tensor2D } {
  checkIndices(ds, indices, 'makeBatch');
  const { height: h, width: w, channels: c } = ds;
  const outH = options.padTo ?? h;
  const outW = options.padTo ?? w;
  if (options.padTo !== undefined && (!Number.isInteger(options.padTo) || options.padTo < h || options.padTo < w)) {
    throw new ConfigError(`makeBatch: padTo must be an integer ≥ the image size ${h}×${w}, found ${options.padTo}`);
  }
  const top = (outH - h) >> 1;
  const left = (outW - w) >> 1;
  const b = indices.length;
  const per = h * w * c;
  const x = new Float32Array(b * outH * outW * c);
  const labels = new Int32Array(b);
  for (let i = 0; i < b; i++) {
    const k = indices[i] as number;
    labels[i] = ds.labels[k] as number;
    const src = ds.images.subarray(k * per, (k + 1) * per);
    if (outH === h && outW === w) {
      x.set(src, i * per);
      continue;
    }
    const base = i * outH * outW * c;
    for (let r = 0; r < h; r++) {
      x.set(src.subarray(r * w * c, (r + 1) * w * c), base + ((r + top) * outW + left) * c);
    }
  }
  const xt = tf.tensor4d(x, [b, outH, outW, c], 'float32');
  if (!options.oneHot) return { x: xt, y: tf.tensor1d(labels, 'int32') };
  const hot = new Float32Array(b * ds.numClasses);
  for (let i = 0; i < b; i++) hot[i * ds.numClasses + (labels[i] as number)] = 1;
  return { x: xt, y: tf.tensor2d(hot, [b, ds.numClasses], 'float32') };
}

export interface EpochBatchOptions extends BatchOptions {
  batchSize: number;
  /** Seed of the epoch order; with `shuffle: false` it is unused. */
  seed: number;
  /** 0-based epoch: the order is `epochPermutation(n, seed, epoch)`. Default 0. */
  epoch?: number;
  /** Default true; false visits the examples in dataset order. */
  shuffle?: boolean;
  /** Drop the final batch when it holds fewer than `batchSize` examples. Default false. */
  dropLast?: boolean;
  /** Start at this batch of the epoch (resuming mid-epoch). Default 0. */
  startBatch?: number;
}

/** The number of batches in one epoch of `n` examples. */
export function batchCount(n: number, batchSize: number, dropLast = false): number {
  return dropLast ? Math.floor(n / batchSize) : Math.ceil(n / batchSize);
}

/** The example indices of every batch of one epoch (no tensors). */
export function epochBatchIndices(n: number, options: Pick<EpochBatchOptions, 'batchSize' | 'seed' | 'epoch' | 'shuffle' | 'dropLast'>): Int32Array[] {
  const { batchSize } = options;
  if (!Number.isInteger(batchSize) || batchSize <= 0) throw new ConfigError(`expected a positive integer batchSize, found ${batchSize}`);
  let order: Int32Array;
  if (options.shuffle ?? true) order = epochPermutation(n, options.seed, options.epoch ?? 0);
  else {
    order = new Int32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
  }
  const count = batchCount(n, batchSize, options.dropLast);
  const out: Int32Array[] = [];
  for (let b = 0; b < count; b++) out.push(order.slice(b * batchSize, Math.min(n, (b + 1) * batchSize)));
  return out;
}

/**
 * Batches of one epoch as tf tensors, created lazily one at a time; the caller disposes each batch's
 * `x` and `y`. The order depends only on `(seed, epoch)`; `startBatch` resumes mid-epoch.
 */
export function* epochBatches(ds: ImageDataset, options: EpochBatchOptions): Generator<ImageBatch, void, undefined> {
  const all = epochBatchIndices(ds.n, options);
  const start = options.startBatch ?? 0;
  if (!Number.isInteger(start) || start < 0) throw new ConfigError(`expected a non-negative integer startBatch, found ${start}`);
  const batchOptions: BatchOptions = {};
  if (options.padTo !== undefined) batchOptions.padTo = options.padTo;
  if (options.oneHot !== undefined) batchOptions.oneHot = options.oneHot;
  for (let b = start; b < all.length; b++) {
    const indices = all[b] as Int32Array;
    const { x, y } = makeBatch(ds, indices, batchOptions);
    yield { x, y, indices, index: b };
  }
}
