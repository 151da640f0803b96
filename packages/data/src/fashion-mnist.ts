/**
 * Fashion-MNIST (Zalando, MIT): 28×28 grayscale clothing images in 10 classes, 60,000 train / 10,000
 * test. Read from the Debian package `dataset-fashion-mnist` when it is installed, else from the small
 * class-balanced subset bundled with this package (2,000 train + 2,000 test images).
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, FormatError } from '@leanpass/core';
import type { ImageDataset } from './dataset.js';
import { DatasetNotInstalledError } from './errors.js';
import { IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, idxImagesFrom, idxLabelsFrom, readIdxFile, readIdxFileSync } from './idx.js';
import type { IdxImages, IdxLabels } from './idx.js';

/** Class names, by label (0 T-shirt/top … 9 Ankle boot). */
export const FASHION_MNIST_CLASSES: readonly string[] = Object.freeze([
  'T-shirt/top',
  'Trouser',
  'Pullover',
  'Dress',
  'Coat',
  'Sandal',
  'Shirt',
  'Sneaker',
  'Bag',
  'Ankle boot',
]);

/** The transfer-learning protocol: pre-train on classes 0–4, fine-tune on 5–9 (remapped to 0–4 with `selectClasses`). */
export const FASHION_MNIST_TRANSFER: { readonly source: readonly number[]; readonly target: readonly number[] } = Object.freeze({
  source: Object.freeze([0, 1, 2, 3, 4]),
  target: Object.freeze([5, 6, 7, 8, 9]),
});

/** Where the Debian package installs the IDX files (searched in this order after `$LEANPASS_FASHION_MNIST_DIR`). */
export const FASHION_MNIST_SYSTEM_DIRS: readonly string[] = Object.freeze(['/usr/share/datasets/fashion-mnist', '/usr/local/share/datasets/fashion-mnist']);

/** Environment variable naming a folder with the four IDX files; searched before the system folders. */
export const FASHION_MNIST_DIR_ENV = 'LEANPASS_FASHION_MNIST_DIR';

/** The command that installs the full dataset on Debian / Ubuntu. */
export const FASHION_MNIST_INSTALL_COMMAND = 'sudo apt-get install -y dataset-fashion-mnist';

export type FashionMnistSplit = 'train' | 'test';
/** `system`: the installed dataset; `bundled`: this package's subset; `auto`: system when present, else bundled. */
export type FashionMnistSource = 'system' | 'bundled' | 'auto';

export interface FashionMnistOptions {
  split: FashionMnistSplit;
  /** Default `auto`. */
  source?: FashionMnistSource;
  /** A folder holding the IDX files (gzipped or not) to use instead of searching; implies a system read. */
  dir?: string;
  /** Keep only the first `limit` examples (file order). */
  limit?: number;
  /** Folders searched for a system copy instead of {@link fashionMnistSearchDirs}'s. */
  searchDirs?: readonly string[];
}

/** A loaded split: images scaled to [0, 1], `[n, 28, 28, 1]` row-major, plus where it came from. */
export interface FashionMnist extends ImageDataset {
  split: FashionMnistSplit;
  source: 'system' | 'bundled';
  /** The folder the files were read from. */
  dir: string;
  /** The two files read. */
  files: { images: string; labels: string };
}

const FILE_STEMS: Readonly<Record<FashionMnistSplit, { images: string; labels: string }>> = {
  train: { images: 'train-images-idx3-ubyte', labels: 'train-labels-idx1-ubyte' },
  test: { images: 't10k-images-idx3-ubyte', labels: 't10k-labels-idx1-ubyte' },
};

/** The folder of the bundled subset (resolved relative to this module: works from src/ and dist/). */
export function bundledFashionMnistDir(): string {
  return fileURLToPath(new URL('../assets/fashion-mnist/', import.meta.url));
}

function isFile(path: string): boolean {
  return existsSync(path) && statSync(path).isFile();
}

/** The two files of a split in `dir` (the `.gz` file when both forms exist), or undefined when either is missing. */
export function fashionMnistFilesIn(dir: string, split: FashionMnistSplit): { images: string; labels: string } | undefined {
  const pick = (stem: string): string | undefined => [join(dir, `${stem}.gz`), join(dir, stem)].find(isFile);
  const stems = FILE_STEMS[split];
  const images = pick(stems.images);
  const labels = pick(stems.labels);
  return images !== undefined && labels !== undefined ? { images, labels } : undefined;
}

/** The folders searched for a system copy: `$LEANPASS_FASHION_MNIST_DIR` (when set), then the Debian folders. */
export function fashionMnistSearchDirs(): string[] {
  const env = process.env[FASHION_MNIST_DIR_ENV];
  return [...(env ? [env] : []), ...FASHION_MNIST_SYSTEM_DIRS];
}

/** The first searched folder holding both files of `split`, or undefined when the dataset is not installed. */
export function findSystemFashionMnist(split: FashionMnistSplit = 'train'): string | undefined {
  return fashionMnistSearchDirs().find((dir) => fashionMnistFilesIn(dir, split) !== undefined);
}

interface Resolved {
  source: 'system' | 'bundled';
  dir: string;
  files: { images: string; labels: string };
}

function resolveFiles(options: FashionMnistOptions): Resolved {
  const split = options.split;
  if (split !== 'train' && split !== 'test') throw new ConfigError(`loadFashionMnist: expected split 'train' or 'test', found ${JSON.stringify(split)}`);
  const source = options.source ?? 'auto';
  if (source !== 'system' && source !== 'bundled' && source !== 'auto') {
    throw new ConfigError(`loadFashionMnist: expected source 'system', 'bundled' or 'auto', found ${JSON.stringify(source)}`);
  }
  if (options.limit !== undefined && (!Number.isInteger(options.limit) || options.limit <= 0)) {
    throw new ConfigError(`loadFashionMnist: expected a positive integer limit, found ${options.limit}`);
  }
  const stems = FILE_STEMS[split];
  if (options.dir !== undefined) {
    if (source === 'bundled') throw new ConfigError(`loadFashionMnist: 'dir' (${options.dir}) reads a system copy and conflicts with source 'bundled'`);
    const files = fashionMnistFilesIn(options.dir, split);
    if (files === undefined) {
      throw new DatasetNotInstalledError(`Fashion-MNIST (${split} split)`, [`${join(options.dir, stems.images)}[.gz]`, `${join(options.dir, stems.labels)}[.gz]`], FASHION_MNIST_INSTALL_COMMAND);
    }
    return { source: 'system', dir: options.dir, files };
  }
  if (source !== 'bundled') {
    const searchDirs = options.searchDirs ?? fashionMnistSearchDirs();
    for (const dir of searchDirs) {
      const files = fashionMnistFilesIn(dir, split);
      if (files !== undefined) return { source: 'system', dir, files };
    }
    if (source === 'system') {
      throw new DatasetNotInstalledError(
        `Fashion-MNIST (${split} split)`,
        searchDirs,
        FASHION_MNIST_INSTALL_COMMAND,
        `set ${FASHION_MNIST_DIR_ENV}, pass 'dir', or use source 'bundled' (the bundled 2,000-image subset)`,
      );
    }
  }
  const dir = bundledFashionMnistDir();
  const files = fashionMnistFilesIn(dir, split);
  if (files === undefined) throw new FormatError(`the bundled Fashion-MNIST subset is missing (expected ${stems.images}.gz and ${stems.labels}.gz): this copy of @leanpass/data is incomplete`, dir);
  return { source: 'bundled', dir, files };
}

/**
 * Turns decoded IDX images and labels into an {@link ImageDataset} scaled to [0, 1], checking that they
 * are 28×28, that the counts agree and that labels are 0–9. `limit` keeps the first examples.
 */
export function fashionMnistFromIdx(images: IdxImages, labels: IdxLabels, names: { images: string; labels: string }, limit?: number): ImageDataset {
  if (images.rows !== 28 || images.cols !== 28) throw new FormatError(`expected 28×28 Fashion-MNIST images, found ${images.rows}×${images.cols}`, names.images);
  if (images.n !== labels.n) throw new FormatError(`expected as many labels as the ${images.n} images in ${names.images}, found ${labels.n}`, names.labels);
  const n = Math.min(images.n, limit ?? images.n);
  const per = images.rows * images.cols;
  const out = new Float32Array(n * per);
  const scale = 1 / 255;
  for (let i = 0; i < n * per; i++) out[i] = (images.pixels[i] as number) * scale;
  const lab = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const l = labels.labels[i] as number;
    if (l > 9) throw new FormatError(`expected labels 0–9, found ${l} at index ${i}`, names.labels);
    lab[i] = l;
  }
  return { images: out, labels: lab, n, height: 28, width: 28, channels: 1, numClasses: 10, classNames: FASHION_MNIST_CLASSES };
}

/**
 * Loads a Fashion-MNIST split. `source: 'auto'` (default) reads the installed Debian copy when present
 * and the bundled 2,000-image subset otherwise; `'system'` fails with the install command when the
 * dataset is absent. Gunzipping runs off the main thread.
 */
export async function loadFashionMnist(options: FashionMnistOptions): Promise<FashionMnist> {
  const r = resolveFiles(options);
  const [img, lab] = await Promise.all([readIdxFile(r.files.images, IDX_IMAGES_MAGIC), readIdxFile(r.files.labels, IDX_LABELS_MAGIC)]);
  const ds = fashionMnistFromIdx(idxImagesFrom(img, r.files.images), idxLabelsFrom(lab, r.files.labels), r.files, options.limit);
  return { ...ds, split: options.split, source: r.source, dir: r.dir, files: r.files };
}

/** Synchronous {@link loadFashionMnist}. */
export function loadFashionMnistSync(options: FashionMnistOptions): FashionMnist {
  const r = resolveFiles(options);
  const img = readIdxFileSync(r.files.images, IDX_IMAGES_MAGIC);
  const lab = readIdxFileSync(r.files.labels, IDX_LABELS_MAGIC);
  const ds = fashionMnistFromIdx(idxImagesFrom(img, r.files.images), idxLabelsFrom(lab, r.files.labels), r.files, options.limit);
  return { ...ds, split: options.split, source: r.source, dir: r.dir, files: r.files };
}
