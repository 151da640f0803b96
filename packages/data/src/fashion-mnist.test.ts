import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ConfigError, FormatError } from '@leanpass/core';
import { classBalancedIndices, classCounts } from './dataset.js';
import { DatasetNotInstalledError } from './errors.js';
import {
  FASHION_MNIST_CLASSES,
  FASHION_MNIST_DIR_ENV,
  bundledFashionMnistDir,
  fashionMnistFilesIn,
  findSystemFashionMnist,
  loadFashionMnist,
  loadFashionMnistSync,
} from './fashion-mnist.js';
import type { FashionMnistSplit } from './fashion-mnist.js';
import { IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, encodeIdx, readIdxFileSync } from './idx.js';

const tmp = mkdtempSync(join(tmpdir(), 'leanpass-fmnist-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const savedEnv = process.env[FASHION_MNIST_DIR_ENV];
afterEach(() => {
  if (savedEnv === undefined) delete process.env[FASHION_MNIST_DIR_ENV];
  else process.env[FASHION_MNIST_DIR_ENV] = savedEnv;
});

/** Writes a synthetic 28×28 split whose pixel (i, r, c) = (i + r + c) mod 256 and label i mod 10. */
function writeSynthetic(dir: string, n: number, opts: { gzip?: boolean; labels?: number[]; rows?: number; nLabels?: number } = {}): void {
  mkdirSync(dir, { recursive: true });
  const rows = opts.rows ?? 28;
  const pixels = new Uint8Array(n * rows * 28);
  for (let i = 0; i < n; i++) for (let r = 0; r < rows; r++) for (let c = 0; c < 28; c++) pixels[(i * rows + r) * 28 + c] = (i + r + c) % 256;
  const nl = opts.nLabels ?? n;
  const labels = Uint8Array.from(opts.labels ?? Array.from({ length: nl }, (_, i) => i % 10));
  const gz = opts.gzip ?? true;
  const sfx = gz ? '.gz' : '';
  writeFileSync(join(dir, `train-images-idx3-ubyte${sfx}`), encodeIdx([n, rows, 28], pixels, { gzip: gz }));
  writeFileSync(join(dir, `train-labels-idx1-ubyte${sfx}`), encodeIdx([labels.length], labels, { gzip: gz }));
}

describe('bundled Fashion-MNIST subset', () => {
  const splits: FashionMnistSplit[] = ['train', 'test'];
  for (const split of splits) {
    it(`${split}: 2,000 class-balanced 28×28 images scaled to [0, 1]`, async () => {
      const ds = await loadFashionMnist({ split, source: 'bundled' });
      expect(ds.source).toBe('bundled');
      expect(ds.split).toBe(split);
      expect(ds.dir).toBe(bundledFashionMnistDir());
      expect([ds.n, ds.height, ds.width, ds.channels, ds.numClasses]).toEqual([2000, 28, 28, 1, 10]);
      expect(ds.images).toBeInstanceOf(Float32Array);
      expect(ds.labels).toBeInstanceOf(Int32Array);
      expect(ds.images.length).toBe(2000 * 784);
      expect(classCounts(ds)).toEqual(new Array<number>(10).fill(200));
      let min = Infinity;
      let max = -Infinity;
      let nonInteger = 0;
      for (const v of ds.images) {
        if (v < min) min = v;
        if (v > max) max = v;
        if (Math.abs(v * 255 - Math.round(v * 255)) > 1e-4) nonInteger++;
      }
      expect(min).toBe(0);
      expect(max).toBe(1);
      expect(nonInteger).toBe(0);
      expect(ds.classNames).toEqual(FASHION_MNIST_CLASSES);
      // the synchronous loader reads the same data
      const sync = loadFashionMnistSync({ split, source: 'bundled', limit: 50 });
      expect(Array.from(sync.images)).toEqual(Array.from(ds.images.subarray(0, 50 * 784)));
      expect(Array.from(sync.labels)).toEqual(Array.from(ds.labels.subarray(0, 50)));
      expect(sync.n).toBe(50);
    });
  }

  it('records the original indices: ascending, 2,000 per split, and (when installed) equal to the originals', () => {
    const meta = JSON.parse(readFileSync(join(bundledFashionMnistDir(), 'indices.json'), 'utf8')) as { seed: number; perClass: number; train: number[]; test: number[] };
    const systemDir = findSystemFashionMnist('train');
    for (const split of ['train', 'test'] as const) {
      const idx = meta[split];
      expect(idx.length).toBe(2000);
      for (let i = 1; i < idx.length; i++) expect(idx[i]!).toBeGreaterThan(idx[i - 1]!);
      expect(idx[idx.length - 1]!).toBeLessThan(split === 'train' ? 60000 : 10000);
      const bundled = loadFashionMnistSync({ split, source: 'bundled' });
      if (systemDir !== undefined) {
        // the full dataset is installed: the subset is exactly the originals at the recorded indices,
        // and re-running the seeded selection reproduces the recorded indices
        const files = fashionMnistFilesIn(systemDir, split)!;
        const img = readIdxFileSync(files.images, IDX_IMAGES_MAGIC).data;
        const lab = readIdxFileSync(files.labels, IDX_LABELS_MAGIC).data;
        expect(Array.from(classBalancedIndices(lab, { perClass: meta.perClass, numClasses: 10, seed: meta.seed }))).toEqual(idx);
        let mismatches = 0;
        idx.forEach((k, i) => {
          if (bundled.labels[i] !== lab[k]) mismatches++;
          for (let p = 0; p < 784; p++) if (Math.round(bundled.images[i * 784 + p]! * 255) !== img[k * 784 + p]) mismatches++;
        });
        expect(mismatches).toBe(0);
      } else {
        // not installed: the recorded indices are at least consistent with the bundled labels' balance
        expect(classCounts(bundled)).toEqual(new Array<number>(10).fill(200));
      }
    }
  });

  it('finds the assets relative to the module file, from src/ and from dist/ alike; package.json ships them', () => {
    const dir = bundledFashionMnistDir();
    const pkgRoot = fileURLToPath(new URL('../', import.meta.url));
    expect(dir).toBe(join(pkgRoot, 'assets', 'fashion-mnist') + '/');
    const fromDist = fileURLToPath(new URL('../assets/fashion-mnist/', pathToFileURL(join(pkgRoot, 'dist', 'fashion-mnist.js'))));
    expect(fromDist).toBe(dir);
    const pkg = JSON.parse(readFileSync(join(pkgRoot, 'package.json'), 'utf8')) as { files: string[] };
    expect(pkg.files).toContain('assets');
    expect(fashionMnistFilesIn(dir, 'train')).toEqual({ images: join(dir, 'train-images-idx3-ubyte.gz'), labels: join(dir, 'train-labels-idx1-ubyte.gz') });
  });
});

describe('system Fashion-MNIST', () => {
  it("'auto' prefers the installed dataset and 'system' fails with the apt command when it is absent", async () => {
    delete process.env[FASHION_MNIST_DIR_ENV];
    const installed = findSystemFashionMnist('test');
    const auto = await loadFashionMnist({ split: 'test', limit: 100 });
    expect(auto.n).toBe(100);
    if (installed !== undefined) {
      expect(auto.source).toBe('system');
      expect(auto.dir).toBe(installed);
      const full = await loadFashionMnist({ split: 'test', source: 'system' });
      expect(full.n).toBe(10000);
      expect(classCounts(full)).toEqual(new Array<number>(10).fill(1000));
      expect(Array.from(full.images.subarray(0, 100 * 784))).toEqual(Array.from(auto.images));
    } else {
      expect(auto.source).toBe('bundled');
      await expect(loadFashionMnist({ split: 'test', source: 'system' })).rejects.toThrow(DatasetNotInstalledError);
      await expect(loadFashionMnist({ split: 'test', source: 'system' })).rejects.toThrow('sudo apt-get install -y dataset-fashion-mnist');
    }
  });

  it("without a system copy, 'auto' falls back to the bundled subset and 'system' fails with the apt command", async () => {
    const nowhere = [join(tmp, 'no-such-dir'), join(tmp, 'no-such-dir-2')];
    const auto = await loadFashionMnist({ split: 'train', searchDirs: nowhere, limit: 10 });
    expect([auto.source, auto.dir, auto.n]).toEqual(['bundled', bundledFashionMnistDir(), 10]);
    const err = await loadFashionMnist({ split: 'train', source: 'system', searchDirs: nowhere }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DatasetNotInstalledError);
    const e = err as DatasetNotInstalledError;
    expect(e.searched).toEqual(nowhere);
    expect(e.message).toContain(nowhere[0]);
    expect(e.message).toContain('Install it with `sudo apt-get install -y dataset-fashion-mnist`');
    expect(e.message).toContain("use source 'bundled'");
  });

  it("reads a folder given by 'dir' or by the environment, gzipped or not", async () => {
    const gzDir = join(tmp, 'gz');
    const rawDir = join(tmp, 'raw');
    writeSynthetic(gzDir, 7);
    writeSynthetic(rawDir, 7, { gzip: false });
    for (const dir of [gzDir, rawDir]) {
      const ds = await loadFashionMnist({ split: 'train', dir });
      expect([ds.source, ds.dir, ds.n]).toEqual(['system', dir, 7]);
      expect(Array.from(ds.labels)).toEqual([0, 1, 2, 3, 4, 5, 6]);
      // pixel (i=3, r=5, c=27) = 35 → 35/255
      expect(ds.images[(3 * 28 + 5) * 28 + 27]).toBeCloseTo(35 / 255, 7);
    }
    process.env[FASHION_MNIST_DIR_ENV] = rawDir;
    expect(findSystemFashionMnist('train')).toBe(rawDir);
    const viaEnv = loadFashionMnistSync({ split: 'train', source: 'system', limit: 3 });
    expect([viaEnv.source, viaEnv.dir, viaEnv.n]).toEqual(['system', rawDir, 3]);
  });

  it("a 'dir' without the files fails with what was searched and the apt command", async () => {
    const empty = join(tmp, 'empty');
    mkdirSync(empty, { recursive: true });
    const err = await loadFashionMnist({ split: 'test', dir: empty }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DatasetNotInstalledError);
    const e = err as DatasetNotInstalledError;
    expect(e.searched).toEqual([join(empty, 't10k-images-idx3-ubyte') + '[.gz]', join(empty, 't10k-labels-idx1-ubyte') + '[.gz]']);
    expect(e.installCommand).toBe('sudo apt-get install -y dataset-fashion-mnist');
    expect(e.message).toContain(empty);
  });

  it('malformed data fails with a FormatError naming the file', () => {
    const badLabel = join(tmp, 'bad-label');
    writeSynthetic(badLabel, 3, { labels: [1, 10, 2] });
    expect(() => loadFashionMnistSync({ split: 'train', dir: badLabel })).toThrow(new FormatError('expected labels 0–9, found 10 at index 1', join(badLabel, 'train-labels-idx1-ubyte.gz')));
    const badCount = join(tmp, 'bad-count');
    writeSynthetic(badCount, 3, { nLabels: 4 });
    expect(() => loadFashionMnistSync({ split: 'train', dir: badCount })).toThrow(/train-labels-idx1-ubyte\.gz: expected as many labels as the 3 images/);
    const badSize = join(tmp, 'bad-size');
    writeSynthetic(badSize, 2, { rows: 27 });
    expect(() => loadFashionMnistSync({ split: 'train', dir: badSize })).toThrow(/train-images-idx3-ubyte\.gz: expected 28×28 Fashion-MNIST images, found 27×28/);
  });

  it('rejects bad options with a ConfigError', async () => {
    await expect(loadFashionMnist({ split: 'val' as FashionMnistSplit })).rejects.toThrow(ConfigError);
    await expect(loadFashionMnist({ split: 'train', limit: 0 })).rejects.toThrow(/positive integer limit, found 0/);
    await expect(loadFashionMnist({ split: 'train', source: 'bundled', dir: tmp })).rejects.toThrow(/conflicts with source 'bundled'/);
  });
});
