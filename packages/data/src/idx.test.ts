import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { FormatError } from '@leanpass/core';
import {
  IDX_IMAGES_MAGIC,
  IDX_LABELS_MAGIC,
  decodeIdx,
  decodeIdxImages,
  decodeIdxLabels,
  encodeIdx,
  isGzip,
  readIdxFile,
  readIdxFileSync,
} from './idx.js';

/** A hand-made IDX file: header bytes then data, exactly as the format describes. */
function rawIdx(magic: number, dims: number[], data: number[]): Uint8Array {
  const out = new Uint8Array(4 + 4 * dims.length + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, magic, false);
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
  out.set(data, 4 + 4 * dims.length);
  return out;
}

function formatError(fn: () => unknown): FormatError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(FormatError);
    return err as FormatError;
  }
  throw new Error('expected a FormatError, nothing was thrown');
}

const tmp = mkdtempSync(join(tmpdir(), 'leanpass-idx-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('IDX decoding of hand-made buffers', () => {
  it('reads a 2×2×3 image file byte for byte, row-major', () => {
    const pixels = [0, 1, 2, 3, 4, 5, 250, 251, 252, 253, 254, 255];
    const buf = rawIdx(0x00000803, [2, 2, 3], pixels);
    // the header is big-endian: 00 00 08 03, then 00 00 00 02 …
    expect(Array.from(buf.subarray(0, 8))).toEqual([0, 0, 8, 3, 0, 0, 0, 2]);
    const img = decodeIdxImages(buf, 'img');
    expect({ n: img.n, rows: img.rows, cols: img.cols }).toEqual({ n: 2, rows: 2, cols: 3 });
    expect(Array.from(img.pixels)).toEqual(pixels);
  });

  it('reads labels, and the same bytes gzipped give the same result', () => {
    const buf = rawIdx(0x00000801, [5], [9, 0, 3, 3, 7]);
    const gz = gzipSync(buf);
    expect(isGzip(gz)).toBe(true);
    expect(isGzip(buf)).toBe(false);
    expect(Array.from(decodeIdxLabels(buf).labels)).toEqual([9, 0, 3, 3, 7]);
    expect(Array.from(decodeIdxLabels(gz).labels)).toEqual([9, 0, 3, 3, 7]);
  });

  it('encodeIdx round-trips with and without gzip, and its header matches the hand-made one', () => {
    const data = Uint8Array.from({ length: 4 * 3 * 5 }, (_, i) => (i * 37) % 256);
    const raw = encodeIdx([4, 3, 5], data, { gzip: false });
    expect(Array.from(raw)).toEqual(Array.from(rawIdx(IDX_IMAGES_MAGIC, [4, 3, 5], Array.from(data))));
    const gz = encodeIdx([4, 3, 5], data);
    expect(isGzip(gz)).toBe(true);
    expect(gz.length).toBeLessThan(raw.length + 40);
    for (const b of [raw, gz]) {
      const arr = decodeIdx(b);
      expect(arr.magic).toBe(IDX_IMAGES_MAGIC);
      expect(arr.dims).toEqual([4, 3, 5]);
      expect(Array.from(arr.data)).toEqual(Array.from(data));
    }
    // deterministic bytes: a regenerated asset is identical
    expect(Array.from(encodeIdx([4, 3, 5], data))).toEqual(Array.from(gz));
    expect(() => encodeIdx([4, 3], data)).toThrow(/12 elements, but data has 60/);
  });

  it('accepts an empty label file (0 items)', () => {
    expect(decodeIdxLabels(rawIdx(IDX_LABELS_MAGIC, [0], [])).n).toBe(0);
  });
});

describe('IDX validation errors name the file and the problem', () => {
  it('rejects a wrong magic number: labels read as images and images as labels', () => {
    const labels = rawIdx(IDX_LABELS_MAGIC, [3], [1, 2, 3]);
    const e1 = formatError(() => decodeIdxImages(labels, 'labels.idx'));
    expect(e1.message).toContain('labels.idx');
    expect(e1.message).toContain('expected magic number 0x00000803');
    expect(e1.message).toContain('found 0x00000801');
    const images = rawIdx(IDX_IMAGES_MAGIC, [1, 1, 1], [7]);
    expect(formatError(() => decodeIdxLabels(images, 'x')).message).toMatch(/expected magic number 0x00000801.*found 0x00000803/);
  });

  it('rejects a non-zero prefix and names the bytes found', () => {
    const buf = rawIdx(0x01000801, [1], [0]);
    expect(formatError(() => decodeIdx(buf, 'f')).message).toMatch(/^f: expected an IDX magic number starting with two zero bytes, found 0x01000801/);
  });

  it('rejects unsupported and unknown dtypes', () => {
    expect(formatError(() => decodeIdx(rawIdx(0x00000d01, [1], [0, 0, 0, 0]), 'f')).message).toMatch(/unsupported IDX dtype 0x0d \(float32\)/);
    expect(formatError(() => decodeIdx(rawIdx(0x00000701, [1], [0]), 'f')).message).toMatch(/unknown IDX dtype byte 0x07/);
  });

  it('rejects zero dimensions, a truncated header and a too-short buffer', () => {
    expect(formatError(() => decodeIdx(Uint8Array.from([0, 0, 8, 0]), 'f')).message).toMatch(/at least 1 dimension/);
    const truncated = rawIdx(IDX_IMAGES_MAGIC, [2, 2, 2], []).subarray(0, 10);
    expect(formatError(() => decodeIdx(truncated, 'f')).message).toMatch(/truncated IDX header: 3 dimension\(s\) need 16 header bytes, found 10/);
    expect(formatError(() => decodeIdx(Uint8Array.from([0, 0]), 'f')).message).toMatch(/at least a 4-byte/);
  });

  it('rejects data shorter or longer than the dimensions say', () => {
    const short = rawIdx(IDX_IMAGES_MAGIC, [2, 2, 2], [1, 2, 3, 4, 5, 6, 7]);
    const e = formatError(() => decodeIdxImages(short, 'short.idx'));
    expect(e.message).toContain('short.idx');
    expect(e.message).toMatch(/2×2×2 = 8 data bytes \(24 in all\), found 23 \(1 byte\(s\) short\)/);
    const long = rawIdx(IDX_LABELS_MAGIC, [2], [1, 2, 3]);
    expect(formatError(() => decodeIdxLabels(long, 'l')).message).toMatch(/1 byte\(s\) too many/);
  });

  it('rejects images with a zero-sized side', () => {
    expect(formatError(() => decodeIdxImages(rawIdx(IDX_IMAGES_MAGIC, [1, 0, 4], []), 'f')).message).toMatch(/at least 1×1 pixels, found 0×4/);
  });

  it('rejects a corrupt gzip stream', () => {
    const gz = gzipSync(rawIdx(IDX_LABELS_MAGIC, [100], new Array<number>(100).fill(3)));
    const cut = gz.subarray(0, gz.length - 12);
    expect(formatError(() => decodeIdx(cut, 'cut.gz')).message).toMatch(/^cut\.gz: not a valid gzip stream/);
  });

  it('readIdxFile and readIdxFileSync name the path in errors and agree on good files', async () => {
    const good = join(tmp, 'good-labels.gz');
    writeFileSync(good, gzipSync(rawIdx(IDX_LABELS_MAGIC, [3], [4, 5, 6])));
    const bad = join(tmp, 'bad-images');
    writeFileSync(bad, rawIdx(IDX_IMAGES_MAGIC, [1, 2, 2], [1, 2, 3]));
    const badGz = join(tmp, 'bad.gz');
    writeFileSync(badGz, gzipSync(rawIdx(IDX_IMAGES_MAGIC, [1, 2, 2], [1, 2, 3])).subarray(0, 15));
    expect(Array.from((await readIdxFile(good, IDX_LABELS_MAGIC)).data)).toEqual([4, 5, 6]);
    expect(Array.from(readIdxFileSync(good).data)).toEqual([4, 5, 6]);
    await expect(readIdxFile(good, IDX_IMAGES_MAGIC)).rejects.toThrow(`${good}: expected magic number 0x00000803`);
    await expect(readIdxFile(bad)).rejects.toThrow(`${bad}: expected 16 header bytes + 1×2×2 = 4 data bytes`);
    expect(() => readIdxFileSync(bad)).toThrow(FormatError);
    await expect(readIdxFile(badGz)).rejects.toThrow(`${badGz}: not a valid gzip stream`);
    expect(() => readIdxFileSync(badGz)).toThrow(`${badGz}: not a valid gzip stream`);
  });
});
