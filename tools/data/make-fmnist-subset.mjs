#!/usr/bin/env node
// Makes the class-balanced Fashion-MNIST subset bundled in packages/data/assets/fashion-mnist/ from the
// full dataset installed by Debian's `dataset-fashion-mnist` package:
// 200 images of each of the 10 classes from the training set and 200 of each from the test set, chosen
// by classBalancedIndices (seed 2017), kept in their original order, written as gzipped IDX files
// (deterministic bytes) plus indices.json (the chosen indices into the original files).
//
// Usage (from the repository root):
//   sudo apt-get install -y dataset-fashion-mnist
//   node --conditions=@leanpass/source --import tsx tools/data/make-fmnist-subset.mjs [--src DIR] [--out DIR] [--check]
// --check regenerates in memory and exits 1 unless the files in --out are byte-identical.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  IDX_IMAGES_MAGIC,
  IDX_LABELS_MAGIC,
  classBalancedIndices,
  encodeIdx,
  idxImagesFrom,
  idxLabelsFrom,
  readIdxFileSync,
} from '@leanpass/data';

const SEED = 2017;
const PER_CLASS = 200;
const NUM_CLASSES = 10;
const SPLITS = {
  train: { images: 'train-images-idx3-ubyte', labels: 'train-labels-idx1-ubyte' },
  test: { images: 't10k-images-idx3-ubyte', labels: 't10k-labels-idx1-ubyte' },
};

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : fallback;
};
const src = opt('--src', '/usr/share/datasets/fashion-mnist');
const out = opt('--out', fileURLToPath(new URL('../../packages/data/assets/fashion-mnist/', import.meta.url)));
const check = args.includes('--check');

const files = {};
const indices = {};
for (const [split, stems] of Object.entries(SPLITS)) {
  const imgPath = join(src, `${stems.images}.gz`);
  const labPath = join(src, `${stems.labels}.gz`);
  if (!existsSync(imgPath) || !existsSync(labPath)) {
    console.error(`missing ${imgPath} or ${labPath}: install the dataset with \`sudo apt-get install -y dataset-fashion-mnist\` or pass --src`);
    process.exit(2);
  }
  const images = idxImagesFrom(readIdxFileSync(imgPath, IDX_IMAGES_MAGIC), imgPath);
  const labels = idxLabelsFrom(readIdxFileSync(labPath, IDX_LABELS_MAGIC), labPath);
  const chosen = classBalancedIndices(labels.labels, { perClass: PER_CLASS, numClasses: NUM_CLASSES, seed: SEED });
  const per = images.rows * images.cols;
  const pixels = new Uint8Array(chosen.length * per);
  const labs = new Uint8Array(chosen.length);
  chosen.forEach((k, i) => {
    pixels.set(images.pixels.subarray(k * per, (k + 1) * per), i * per);
    labs[i] = labels.labels[k];
  });
  files[`${stems.images}.gz`] = encodeIdx([chosen.length, images.rows, images.cols], pixels);
  files[`${stems.labels}.gz`] = encodeIdx([chosen.length], labs);
  indices[split] = Array.from(chosen);
}
files['indices.json'] = new TextEncoder().encode(
  JSON.stringify(
    {
      description: 'Indices into the original Fashion-MNIST files of the images kept in this subset, in subset order',
      generator: 'tools/data/make-fmnist-subset.mjs',
      seed: SEED,
      perClass: PER_CLASS,
      train: indices.train,
      test: indices.test,
    },
    null,
    0,
  ) + '\n',
);

let differs = 0;
for (const [name, bytes] of Object.entries(files)) {
  const path = join(out, name);
  if (check) {
    const same = existsSync(path) && Buffer.compare(readFileSync(path), Buffer.from(bytes)) === 0;
    console.log(`${same ? 'same   ' : 'DIFFERS'} ${path}`);
    if (!same) differs++;
  } else {
    mkdirSync(out, { recursive: true });
    writeFileSync(path, bytes);
    console.log(`wrote ${path} (${bytes.length} bytes)`);
  }
}
if (differs > 0) process.exit(1);
