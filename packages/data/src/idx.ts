/**
 * IDX files (the MNIST / Fashion-MNIST container): a big-endian header — two zero bytes, a dtype byte,
 * a dimension count byte, one uint32 per dimension — followed by the raw row-major data. Files may be
 * gzipped (detected by the gzip magic 0x1f 0x8b). Only the unsigned-byte dtype (0x08) is supported,
 * which is what every MNIST-family file uses. Every malformed input fails with a FormatError that names
 * the file and says what was expected and what was found.
 */
import { readFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { gunzip, gunzipSync, gzipSync } from 'node:zlib';
import { promisify } from 'node:util';
import { FormatError } from '@leanpass/core';

const gunzipAsync = promisify(gunzip);

/** The IDX dtype byte of unsigned 8-bit data (the only one leanpass reads). */
export const IDX_UBYTE = 0x08;
/** Magic number of an unsigned-byte IDX file with 3 dimensions (images: n, rows, cols). */
export const IDX_IMAGES_MAGIC = 0x00000803;
/** Magic number of an unsigned-byte IDX file with 1 dimension (labels: n). */
export const IDX_LABELS_MAGIC = 0x00000801;

const DTYPE_NAMES: Readonly<Record<number, string>> = {
  0x08: 'unsigned byte',
  0x09: 'signed byte',
  0x0b: 'int16',
  0x0c: 'int32',
  0x0d: 'float32',
  0x0e: 'float64',
};

/** A decoded IDX array: its dimensions and its raw bytes (a view, row-major). */
export interface IdxArray {
  /** The 32-bit magic number (0x0000 · dtype · ndims). */
  magic: number;
  dtype: number;
  dims: number[];
  data: Uint8Array;
}

/** An IDX image file: `n` images of `rows × cols` unsigned bytes, row-major. */
export interface IdxImages {
  n: number;
  rows: number;
  cols: number;
  pixels: Uint8Array;
}

/** An IDX label file: `n` unsigned-byte labels. */
export interface IdxLabels {
  n: number;
  labels: Uint8Array;
}

const hex = (v: number, digits: number): string => `0x${v.toString(16).padStart(digits, '0')}`;

/** True when the buffer starts with the gzip magic bytes 0x1f 0x8b. */
export function isGzip(buf: Uint8Array): boolean {
  return buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b;
}

function gunzipOrThrow(buf: Uint8Array, name: string): Uint8Array {
  try {
    return gunzipSync(buf);
  } catch (err) {
    throw new FormatError(`not a valid gzip stream (the file starts with the gzip magic 0x1f8b): ${(err as Error).message}`, name);
  }
}

/**
 * Decodes an IDX buffer (gunzipping it first when it is gzipped). `name` (a file path or label) is
 * named in every error. With `expectMagic`, the magic number must be exactly that value.
 */
export function decodeIdx(buf: Uint8Array, name = 'IDX buffer', expectMagic?: number): IdxArray {
  const raw = isGzip(buf) ? gunzipOrThrow(buf, name) : buf;
  return parseIdxHeader(raw, name, expectMagic);
}

function parseIdxHeader(raw: Uint8Array, name: string, expectMagic: number | undefined): IdxArray {
  if (raw.length < 4) {
    throw new FormatError(`expected at least a 4-byte IDX magic number, found ${raw.length} byte(s)`, name);
  }
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const magic = view.getUint32(0, false);
  if (raw[0] !== 0 || raw[1] !== 0) {
    throw new FormatError(`expected an IDX magic number starting with two zero bytes, found ${hex(magic, 8)}`, name);
  }
  const dtype = raw[2] as number;
  const ndims = raw[3] as number;
  if (expectMagic !== undefined && magic !== expectMagic) throw magicError(expectMagic, magic, name);
  if (dtype !== IDX_UBYTE) {
    const dtypeName = DTYPE_NAMES[dtype];
    throw new FormatError(
      dtypeName === undefined
        ? `unknown IDX dtype byte ${hex(dtype, 2)}: expected ${hex(IDX_UBYTE, 2)} (unsigned byte)`
        : `unsupported IDX dtype ${hex(dtype, 2)} (${dtypeName}): only ${hex(IDX_UBYTE, 2)} (unsigned byte) is supported`,
      name,
    );
  }
  if (ndims === 0) throw new FormatError('expected at least 1 dimension in the IDX header, found 0', name);
  const headerBytes = 4 + 4 * ndims;
  if (raw.length < headerBytes) {
    throw new FormatError(`truncated IDX header: ${ndims} dimension(s) need ${headerBytes} header bytes, found ${raw.length}`, name);
  }
  const dims: number[] = [];
  let count = 1;
  for (let d = 0; d < ndims; d++) {
    const size = view.getUint32(4 + 4 * d, false);
    dims.push(size);
    count *= size;
  }
  const found = raw.length - headerBytes;
  if (found !== count) {
    const diff = found < count ? `${count - found} byte(s) short` : `${found - count} byte(s) too many`;
    throw new FormatError(
      `expected ${headerBytes} header bytes + ${dims.join('×')} = ${count} data bytes (${headerBytes + count} in all), found ${raw.length} (${diff})`,
      name,
    );
  }
  return { magic, dtype, dims, data: raw.subarray(headerBytes) };
}

function magicError(expected: number, found: number, name: string): FormatError {
  return new FormatError(`expected magic number ${hex(expected, 8)} (${describeMagic(expected)}), found ${hex(found, 8)} (${describeMagic(found)})`, name);
}

function describeMagic(magic: number): string {
  const dtype = (magic >>> 8) & 0xff;
  const ndims = magic & 0xff;
  const dtypeName = DTYPE_NAMES[dtype] ?? 'unknown dtype';
  if (magic === IDX_IMAGES_MAGIC) return 'unsigned-byte images, 3 dimensions';
  if (magic === IDX_LABELS_MAGIC) return 'unsigned-byte labels, 1 dimension';
  return `${dtypeName}, ${ndims} dimension(s)`;
}

/** Decodes an IDX image file (magic 0x00000803: n × rows × cols unsigned bytes). */
export function decodeIdxImages(buf: Uint8Array, name = 'IDX images'): IdxImages {
  return idxImagesFrom(decodeIdx(buf, name, IDX_IMAGES_MAGIC), name);
}

/** Decodes an IDX label file (magic 0x00000801: n unsigned bytes). */
export function decodeIdxLabels(buf: Uint8Array, name = 'IDX labels'): IdxLabels {
  return idxLabelsFrom(decodeIdx(buf, name, IDX_LABELS_MAGIC), name);
}

/**
 * Encodes unsigned-byte data as an IDX file (gzipped unless `gzip: false`). The gzip output is
 * deterministic (no timestamp in the header), so re-running a generator reproduces the same bytes.
 */
export function encodeIdx(dims: readonly number[], data: Uint8Array, options: { gzip?: boolean; level?: number } = {}): Uint8Array {
  if (dims.length < 1 || dims.length > 255) throw new RangeError(`encodeIdx expects 1–255 dimensions, got ${dims.length}`);
  let count = 1;
  for (const d of dims) {
    if (!Number.isInteger(d) || d < 0 || d > 0xffffffff) throw new RangeError(`encodeIdx expects dimensions that are uint32 integers, got ${JSON.stringify(dims)}`);
    count *= d;
  }
  if (count !== data.length) throw new RangeError(`encodeIdx: dimensions ${dims.join('×')} = ${count} elements, but data has ${data.length}`);
  const headerBytes = 4 + 4 * dims.length;
  const out = new Uint8Array(headerBytes + data.length);
  const view = new DataView(out.buffer);
  out[2] = IDX_UBYTE;
  out[3] = dims.length;
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
  out.set(data, headerBytes);
  if (options.gzip === false) return out;
  return new Uint8Array(gzipSync(out, { level: options.level ?? 9 }));
}

/** Reads and decodes an IDX file (gzipped or not); errors name the path. */
export async function readIdxFile(path: string, expectMagic?: number): Promise<IdxArray> {
  const buf = await readFile(path);
  if (isGzip(buf)) {
    let raw: Uint8Array;
    try {
      raw = await gunzipAsync(buf);
    } catch (err) {
      throw new FormatError(`not a valid gzip stream (the file starts with the gzip magic 0x1f8b): ${(err as Error).message}`, path);
    }
    return parseIdxHeader(raw, path, expectMagic);
  }
  return parseIdxHeader(buf, path, expectMagic);
}

/** Synchronous {@link readIdxFile}. */
export function readIdxFileSync(path: string, expectMagic?: number): IdxArray {
  return decodeIdx(readFileSync(path), path, expectMagic);
}

/** Converts a decoded image array to {@link IdxImages}, checking its magic number and shape. */
export function idxImagesFrom(arr: IdxArray, name: string): IdxImages {
  if (arr.magic !== IDX_IMAGES_MAGIC) throw magicError(IDX_IMAGES_MAGIC, arr.magic, name);
  const [n, rows, cols] = arr.dims as [number, number, number];
  if (rows === 0 || cols === 0) throw new FormatError(`expected images of at least 1×1 pixels, found ${rows}×${cols}`, name);
  return { n, rows, cols, pixels: arr.data };
}

/** Converts a decoded label array to {@link IdxLabels}, checking its magic number. */
export function idxLabelsFrom(arr: IdxArray, name: string): IdxLabels {
  if (arr.magic !== IDX_LABELS_MAGIC) throw magicError(IDX_LABELS_MAGIC, arr.magic, name);
  return { n: arr.dims[0] as number, labels: arr.data };
}
