/**
 * Safetensors reader and writer, byte-compatible with the Python `safetensors` library.
 *
 * Layout: an 8-byte little-endian u64 header length N, N bytes of UTF-8 JSON header
 * `{"__metadata__": {str: str}, "<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...}`
 * (offsets relative to the first byte after the header), then the data.
 *
 * The reader is as strict as the Python library, and stricter where that library is silent:
 * - the header is at most `maxHeaderBytes` (default 100 MB, like Python) and never more than the file;
 * - the header is UTF-8 JSON that starts with `{`; duplicate keys at any level are rejected
 *   (JSON.parse would silently keep the last one);
 * - every entry has a supported dtype, a shape of non-negative integers and `[begin, end]` offsets whose
 *   length equals product(shape) · size(dtype);
 * - the tensors cover the data buffer exactly: sorted by offset, each begins where the previous one ends
 *   and the last ends at the end of the file — overlaps, gaps and trailing bytes are errors (the Python
 *   library rejects non-contiguous data the same way);
 * - `__metadata__` maps strings to strings.
 * Every problem is a `FormatError` naming the tensor (or the header) and what was wrong. Nothing is
 * allocated from the header's claims: tensor data are views of the input bytes (or copies, on request).
 * Tensor names are plain strings kept in a `Map`: `__proto__` or `constructor` are ordinary names.
 */
import { open, readFile, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { FormatError } from './errors.js';

export type SafetensorsDtype = 'F32' | 'F16' | 'BF16' | 'I32' | 'I64' | 'U8' | 'BOOL';

/** Bytes per element of each supported dtype. */
export const SAFETENSORS_DTYPE_SIZE: Readonly<Record<SafetensorsDtype, number>> = {
  F32: 4,
  F16: 2,
  BF16: 2,
  I32: 4,
  I64: 8,
  U8: 1,
  BOOL: 1,
};

export const SAFETENSORS_DTYPES = Object.keys(SAFETENSORS_DTYPE_SIZE) as SafetensorsDtype[];

/** A tensor as stored: dtype, shape and its little-endian bytes. */
export interface RawTensor {
  dtype: SafetensorsDtype;
  shape: number[];
  data: Uint8Array;
}

export interface SafetensorsFile {
  tensors: Map<string, RawTensor>;
  metadata: Map<string, string>;
}

export interface ParseSafetensorsOptions {
  /** Largest header accepted, in bytes (default 100 000 000, the Python library's limit). */
  maxHeaderBytes?: number;
  /** Copy each tensor's bytes instead of returning views of `bytes` (default false). */
  copy?: boolean;
}

/** The Python library's header cap. */
export const DEFAULT_MAX_HEADER_BYTES = 100_000_000;
const MAX_JSON_DEPTH = 64;
const METADATA_KEY = '__metadata__';

/** Python's writer orders tensors by dtype (descending in its enum order), then by name. */
const PYTHON_DTYPE_RANK: Readonly<Record<SafetensorsDtype, number>> = { BOOL: 0, U8: 1, F16: 2, BF16: 3, I32: 4, F32: 5, I64: 6 };

function isDtype(s: string): s is SafetensorsDtype {
  return Object.prototype.hasOwnProperty.call(SAFETENSORS_DTYPE_SIZE, s);
}

// ---------------------------------------------------------------------------------------------------
// A small strict JSON parser: objects become Maps (so any key is a plain key and duplicates are seen),
// nesting is capped so that hostile input cannot overflow the stack.

type JVal = string | number | boolean | null | JVal[] | Map<string, JVal>;

const NUMBER_RE = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;

class JsonReader {
  private i = 0;
  constructor(private readonly s: string) {}

  parseDocument(): JVal {
    this.ws();
    const v = this.value(0);
    this.ws();
    if (this.i !== this.s.length) this.fail(`unexpected '${this.s[this.i]}' after the JSON value`);
    return v;
  }

  private fail(what: string): never {
    throw new FormatError(`header is not valid JSON: ${what} at character ${this.i}`, 'header');
  }

  private ws(): void {
    const s = this.s;
    for (;;) {
      const c = s.charCodeAt(this.i);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) this.i++;
      else return;
    }
  }

  private value(depth: number): JVal {
    if (depth > MAX_JSON_DEPTH) this.fail(`nesting deeper than ${MAX_JSON_DEPTH} levels`);
    const c = this.s[this.i];
    switch (c) {
      case '{':
        return this.object(depth);
      case '[':
        return this.array(depth);
      case '"':
        return this.string();
      case 't':
        return this.literal('true', true);
      case 'f':
        return this.literal('false', false);
      case 'n':
        return this.literal('null', null);
      case undefined:
        return this.fail('unexpected end');
      default:
        return this.number();
    }
  }

  private literal<T>(word: string, v: T): T {
    if (!this.s.startsWith(word, this.i)) this.fail(`unexpected '${this.s[this.i]}'`);
    this.i += word.length;
    return v;
  }

  private number(): number {
    NUMBER_RE.lastIndex = this.i;
    const m = NUMBER_RE.exec(this.s);
    if (!m) this.fail(`unexpected '${this.s[this.i]}'`);
    this.i += m[0].length;
    return Number(m[0]);
  }

  private string(): string {
    const s = this.s;
    const start = this.i;
    let escaped = false;
    let j = start + 1;
    for (;;) {
      if (j >= s.length) {
        this.i = j;
        this.fail('unterminated string');
      }
      const c = s.charCodeAt(j);
      if (c === 0x22) break;
      if (c === 0x5c) {
        escaped = true;
        j += 2;
        continue;
      }
      if (c < 0x20) {
        this.i = j;
        this.fail('control character in string');
      }
      j++;
    }
    this.i = j + 1;
    if (!escaped) return s.slice(start + 1, j);
    try {
      return JSON.parse(s.slice(start, j + 1)) as string;
    } catch {
      this.i = start;
      return this.fail('bad escape in string');
    }
  }

  private array(depth: number): JVal[] {
    this.i++;
    const out: JVal[] = [];
    this.ws();
    if (this.s[this.i] === ']') {
      this.i++;
      return out;
    }
    for (;;) {
      this.ws();
      out.push(this.value(depth + 1));
      this.ws();
      const c = this.s[this.i];
      this.i++;
      if (c === ']') return out;
      if (c !== ',') {
        this.i--;
        this.fail(c === undefined ? 'unexpected end' : `expected ',' or ']', found '${c}'`);
      }
    }
  }

  private object(depth: number): Map<string, JVal> {
    this.i++;
    const out = new Map<string, JVal>();
    this.ws();
    if (this.s[this.i] === '}') {
      this.i++;
      return out;
    }
    for (;;) {
      this.ws();
      if (this.s[this.i] !== '"') this.fail('expected a string key');
      const key = this.string();
      this.ws();
      if (this.s[this.i] !== ':') this.fail("expected ':'");
      this.i++;
      this.ws();
      const v = this.value(depth + 1);
      if (out.has(key)) {
        throw new FormatError(`duplicate key ${JSON.stringify(key)} in header JSON (a JSON parser would silently keep only the last)`, 'header');
      }
      out.set(key, v);
      this.ws();
      const c = this.s[this.i];
      this.i++;
      if (c === '}') return out;
      if (c !== ',') {
        this.i--;
        this.fail(c === undefined ? 'unexpected end' : `expected ',' or '}', found '${c}'`);
      }
    }
  }
}

function describeJson(v: JVal | undefined): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (v instanceof Map) return 'an object';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  return `${typeof v} ${String(v)}`;
}

function isIndex(v: JVal | undefined): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

// ---------------------------------------------------------------------------------------------------
// Reading

const utf8Strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const utf8Encoder = new TextEncoder();

interface Entry {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  begin: number;
  end: number;
}

/**
 * Parses a safetensors file held in memory. Tensor data are views of `bytes` unless `copy` is set.
 * Throws `FormatError` for any malformed input (see the module comment for the rules).
 */
export function parseSafetensors(bytes: Uint8Array, opts: ParseSafetensorsOptions = {}): SafetensorsFile {
  const cap = opts.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES;
  if (bytes.byteLength < 8) {
    throw new FormatError(`file is truncated: expected at least 8 bytes (the header length), found ${bytes.byteLength}`, 'header');
  }
  const n64 = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (n64 > BigInt(cap)) {
    throw new FormatError(`header length ${n64} exceeds the limit of ${cap} bytes`, 'header');
  }
  if (n64 > BigInt(bytes.byteLength - 8)) {
    throw new FormatError(`header length ${n64} runs past the end of the file (${bytes.byteLength - 8} bytes follow the length field)`, 'header');
  }
  const n = Number(n64);
  let text: string;
  try {
    text = utf8Strict.decode(bytes.subarray(8, 8 + n));
  } catch {
    throw new FormatError('header is not valid UTF-8', 'header');
  }
  if (!text.startsWith('{')) {
    throw new FormatError(`header must start with '{', found ${text.length ? JSON.stringify(text.slice(0, 8)) : 'an empty header'}`, 'header');
  }
  const root = new JsonReader(text).parseDocument();
  if (!(root instanceof Map)) throw new FormatError(`header must be a JSON object, found ${describeJson(root)}`, 'header');

  const dataStart = 8 + n;
  const dataLen = bytes.byteLength - dataStart;
  const metadata = new Map<string, string>();
  const entries: Entry[] = [];
  for (const [name, v] of root) {
    if (name === METADATA_KEY) {
      if (!(v instanceof Map)) throw new FormatError(`expected an object of strings, found ${describeJson(v)}`, METADATA_KEY);
      for (const [k, mv] of v) {
        if (typeof mv !== 'string') throw new FormatError(`value of ${JSON.stringify(k)} must be a string, found ${describeJson(mv)}`, METADATA_KEY);
        metadata.set(k, mv);
      }
      continue;
    }
    entries.push(readEntry(name, v, dataLen));
  }

  // Contiguity: sorted by offsets, the tensors must tile [0, dataLen) exactly.
  const order = entries.slice().sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  let prev: Entry | undefined;
  for (const e of order) {
    if (e.begin < cursor) {
      throw new FormatError(`data_offsets [${e.begin}, ${e.end}] overlap tensor ${JSON.stringify(prev?.name)} (which ends at ${cursor})`, e.name);
    }
    if (e.begin > cursor) {
      throw new FormatError(
        `data_offsets [${e.begin}, ${e.end}] leave a gap of ${e.begin - cursor} bytes after ${prev ? `tensor ${JSON.stringify(prev.name)}` : 'the header'} (data must be contiguous)`,
        e.name,
      );
    }
    cursor = e.end;
    prev = e;
  }
  if (cursor !== dataLen) {
    throw new FormatError(`data buffer has ${dataLen} bytes but the tensors cover only ${cursor}: ${dataLen - cursor} trailing bytes belong to no tensor`, 'header');
  }

  const tensors = new Map<string, RawTensor>();
  for (const e of entries) {
    const view = bytes.subarray(dataStart + e.begin, dataStart + e.end);
    tensors.set(e.name, { dtype: e.dtype, shape: e.shape, data: opts.copy ? view.slice() : view });
  }
  return { tensors, metadata };
}

function readEntry(name: string, v: JVal, dataLen: number): Entry {
  if (!(v instanceof Map)) throw new FormatError(`expected an object {dtype, shape, data_offsets}, found ${describeJson(v)}`, name);
  const dtype = v.get('dtype');
  const shape = v.get('shape');
  const offsets = v.get('data_offsets');
  const missing = ['dtype', 'shape', 'data_offsets'].filter((k) => !v.has(k));
  if (missing.length) throw new FormatError(`missing field${missing.length > 1 ? 's' : ''} ${missing.join(', ')}`, name);
  if (typeof dtype !== 'string') throw new FormatError(`dtype must be a string, found ${describeJson(dtype)}`, name);
  if (!isDtype(dtype)) throw new FormatError(`unsupported dtype ${JSON.stringify(dtype)} (supported: ${SAFETENSORS_DTYPES.join(', ')})`, name);
  if (!Array.isArray(shape)) throw new FormatError(`shape must be an array of non-negative integers, found ${describeJson(shape)}`, name);
  const dims: number[] = [];
  for (let i = 0; i < shape.length; i++) {
    const d = shape[i];
    if (!isIndex(d)) throw new FormatError(`shape[${i}] must be a non-negative integer, found ${describeJson(d)}`, name);
    dims.push(d);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2) {
    throw new FormatError(`data_offsets must be [begin, end], found ${Array.isArray(offsets) ? `an array of ${offsets.length}` : describeJson(offsets)}`, name);
  }
  const [begin, end] = offsets;
  if (!isIndex(begin) || !isIndex(end)) {
    throw new FormatError(`data_offsets must be non-negative integers, found [${describeJson(begin)}, ${describeJson(end)}]`, name);
  }
  if (begin > end) throw new FormatError(`data_offsets begin ${begin} is after end ${end}`, name);
  if (end > dataLen) throw new FormatError(`data_offsets [${begin}, ${end}] run past the data buffer (${dataLen} bytes)`, name);
  const size = SAFETENSORS_DTYPE_SIZE[dtype];
  // product(shape)·size, stopping as soon as it exceeds what the offsets hold (no overflow).
  let bytes = dims.includes(0) ? 0 : size;
  if (bytes !== 0) {
    for (const d of dims) {
      bytes *= d;
      if (bytes > end - begin) break;
    }
  }
  if (bytes !== end - begin) {
    const claimed = bytes > end - begin ? `more than ${end - begin}` : String(bytes);
    throw new FormatError(`shape [${dims.join(', ')}] of ${dtype} needs ${claimed} bytes but data_offsets [${begin}, ${end}] hold ${end - begin}`, name);
  }
  return { name, dtype, shape: dims, begin, end };
}

// ---------------------------------------------------------------------------------------------------
// Writing

/** Element count of a shape ([] is a scalar: 1). */
export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function checkRaw(name: string, t: RawTensor): void {
  if (!isDtype(t.dtype)) throw new FormatError(`unsupported dtype ${JSON.stringify(t.dtype)} (supported: ${SAFETENSORS_DTYPES.join(', ')})`, name);
  if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new FormatError(`shape must be non-negative integers, found [${String(t.shape)}]`, name);
  }
  if (!(t.data instanceof Uint8Array)) throw new FormatError('data must be a Uint8Array', name);
  const want = shapeSize(t.shape) * SAFETENSORS_DTYPE_SIZE[t.dtype];
  if (t.data.byteLength !== want) {
    throw new FormatError(`shape [${t.shape.join(', ')}] of ${t.dtype} needs ${want} bytes, data has ${t.data.byteLength}`, name);
  }
}

function compareUtf8(a: string, b: string): number {
  // Rust orders Strings by UTF-8 bytes, i.e. by code point; JS `<` compares UTF-16 units.
  const ia = a[Symbol.iterator]();
  const ib = b[Symbol.iterator]();
  for (;;) {
    const x = ia.next();
    const y = ib.next();
    if (x.done || y.done) return x.done && y.done ? 0 : x.done ? -1 : 1;
    const cx = x.value.codePointAt(0) as number;
    const cy = y.value.codePointAt(0) as number;
    if (cx !== cy) return cx - cy;
  }
}

/**
 * Serialises tensors (and optional string metadata) in the layout the Python library writes: tensors
 * ordered by dtype (Python's order) then name, header `{"__metadata__":…, "<name>":{"dtype","shape","data_offsets"}}`
 * without spaces, padded with spaces to a multiple of 8 bytes. `__metadata__` is written only when non-empty,
 * its keys sorted.
 */
export function serializeSafetensors(
  tensors: Map<string, RawTensor> | Iterable<[string, RawTensor]>,
  metadata?: Record<string, string> | Map<string, string>,
): Uint8Array {
  const list: Array<[string, RawTensor]> = [];
  const seen = new Set<string>();
  for (const [name, t] of tensors) {
    if (typeof name !== 'string') throw new FormatError(`tensor names must be strings, found ${typeof name}`);
    if (name === METADATA_KEY) throw new FormatError(`'${METADATA_KEY}' is reserved for metadata and cannot name a tensor`, name);
    if (seen.has(name)) throw new FormatError('duplicate tensor name', name);
    seen.add(name);
    checkRaw(name, t);
    list.push([name, t]);
  }
  list.sort(([na, a], [nb, b]) => PYTHON_DTYPE_RANK[b.dtype] - PYTHON_DTYPE_RANK[a.dtype] || compareUtf8(na, nb));

  const meta: Array<[string, string]> = metadata instanceof Map ? [...metadata] : metadata ? Object.entries(metadata) : [];
  for (const [k, v] of meta) {
    if (typeof v !== 'string') throw new FormatError(`value of ${JSON.stringify(k)} must be a string, found ${typeof v}`, METADATA_KEY);
  }
  meta.sort(([a], [b]) => compareUtf8(a, b));

  const parts: string[] = [];
  if (meta.length) parts.push(`${JSON.stringify(METADATA_KEY)}:{${meta.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`);
  let offset = 0;
  for (const [name, t] of list) {
    const end = offset + t.data.byteLength;
    parts.push(`${JSON.stringify(name)}:{"dtype":"${t.dtype}","shape":[${t.shape.join(',')}],"data_offsets":[${offset},${end}]}`);
    offset = end;
  }
  const header = utf8Encoder.encode(`{${parts.join(',')}}`);
  const padded = header.byteLength + ((8 - (header.byteLength % 8)) % 8);
  const out = new Uint8Array(8 + padded + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(header, 8);
  out.fill(0x20, 8 + header.byteLength, 8 + padded);
  let at = 8 + padded;
  for (const [, t] of list) {
    out.set(t.data, at);
    at += t.data.byteLength;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Conversions

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

let f16Table: Float32Array | undefined;
/** All 65536 half-precision values as float32 (built once, 256 KB). */
function halfTable(): Float32Array {
  if (f16Table) return f16Table;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0) t[h] = sign * mant * 2 ** -24;
    else if (exp === 0x1f) t[h] = mant ? NaN : sign * Infinity;
    else t[h] = sign * (1 + mant / 1024) * 2 ** (exp - 15);
  }
  f16Table = t;
  return t;
}

/** float32 bits → float16 bits, round to nearest, ties to even; overflow → ±Inf; NaN stays NaN. */
export function f32BitsToF16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 112; // re-biased exponent (127 → 15)
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal half: value = m · 2^-24 with m = (1.mant · 2^23) · 2^(exp-126-23+23) = full >> (126 - exp).
    const shift = 126 - exp;
    if (shift > 24) return sign;
    const full = mant | 0x800000;
    let m = full >>> shift;
    const rem = full & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && m & 1)) m++;
    return sign | m;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++; // a carry into the exponent is correct (up to Inf)
  return sign | h;
}

/** float32 bits → bfloat16 bits, round to nearest, ties to even; NaN stays NaN. */
export function f32BitsToBf16Bits(x: number): number {
  if ((x & 0x7f800000) === 0x7f800000 && x & 0x7fffff) return ((x >>> 16) | 0x40) & 0xffff;
  const u = x >>> 0;
  return Math.floor((u + 0x7fff + ((u >>> 16) & 1)) / 65536) & 0xffff;
}

function dataView(t: RawTensor): DataView {
  return new DataView(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

function checkedElements(t: RawTensor, name: string): number {
  checkRaw(name, t);
  return shapeSize(t.shape);
}

/**
 * Decodes a tensor's bytes to float32 values (a fresh array). F16 and BF16 are widened exactly;
 * integers and booleans are converted (I64 beyond 2^24 loses precision, as any float32 would).
 */
export function rawToFloat32(t: RawTensor, name = 'tensor'): Float32Array {
  const n = checkedElements(t, name);
  const out = new Float32Array(n);
  const dv = dataView(t);
  switch (t.dtype) {
    case 'F32':
      if (LITTLE_ENDIAN) new Uint8Array(out.buffer).set(t.data);
      else for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * 4, true);
      break;
    case 'F16': {
      const table = halfTable();
      for (let i = 0; i < n; i++) out[i] = table[dv.getUint16(i * 2, true)] as number;
      break;
    }
    case 'BF16': {
      const bits = new Uint32Array(out.buffer);
      // bits and out share one buffer in native byte order, so this is endian-independent.
      for (let i = 0; i < n; i++) bits[i] = dv.getUint16(i * 2, true) << 16;
      break;
    }
    case 'I32':
      for (let i = 0; i < n; i++) out[i] = dv.getInt32(i * 4, true);
      break;
    case 'I64':
      for (let i = 0; i < n; i++) out[i] = Number(dv.getBigInt64(i * 8, true));
      break;
    case 'U8':
      for (let i = 0; i < n; i++) out[i] = t.data[i] as number;
      break;
    case 'BOOL':
      for (let i = 0; i < n; i++) out[i] = t.data[i] ? 1 : 0;
      break;
  }
  return out;
}

/** Decodes integer dtypes to int32, failing if an I64 value does not fit. */
export function rawToInt32(t: RawTensor, name = 'tensor'): Int32Array {
  const n = checkedElements(t, name);
  const out = new Int32Array(n);
  const dv = dataView(t);
  switch (t.dtype) {
    case 'I32':
      for (let i = 0; i < n; i++) out[i] = dv.getInt32(i * 4, true);
      return out;
    case 'I64':
      for (let i = 0; i < n; i++) {
        const v = dv.getBigInt64(i * 8, true);
        if (v < -2147483648n || v > 2147483647n) {
          throw new FormatError(`I64 value ${v} at index ${i} does not fit in int32 (tfjs has no int64)`, name);
        }
        out[i] = Number(v);
      }
      return out;
    case 'U8':
    case 'BOOL':
      for (let i = 0; i < n; i++) out[i] = t.dtype === 'BOOL' ? (t.data[i] ? 1 : 0) : (t.data[i] as number);
      return out;
    default:
      throw new FormatError(`expected an integer dtype (I32, I64, U8, BOOL), found ${t.dtype}`, name);
  }
}

/**
 * A tfjs tensor from stored bytes: F32/F16/BF16 → float32, I32/I64 (range-checked)/U8 → int32,
 * BOOL → bool. The caller owns (and disposes) the result.
 */
export function rawToTensor(t: RawTensor, name = 'tensor'): tf.Tensor {
  switch (t.dtype) {
    case 'F32':
    case 'F16':
    case 'BF16':
      return tf.tensor(rawToFloat32(t, name), t.shape, 'float32');
    case 'BOOL': {
      const n = checkedElements(t, name);
      const v = new Uint8Array(n);
      for (let i = 0; i < n; i++) v[i] = t.data[i] ? 1 : 0;
      return tf.tensor(v, t.shape, 'bool');
    }
    default:
      return tf.tensor(rawToInt32(t, name), t.shape, 'int32');
  }
}

/**
 * Encodes values as a RawTensor of `dtype`: F32 exactly, F16/BF16 rounded to nearest even, integer
 * dtypes only for integer values in range, BOOL only for 0/1.
 */
export function rawFromFloat32(values: ArrayLike<number>, shape: readonly number[], dtype: SafetensorsDtype = 'F32', name = 'tensor'): RawTensor {
  if (!isDtype(dtype)) throw new FormatError(`unsupported dtype ${JSON.stringify(dtype)} (supported: ${SAFETENSORS_DTYPES.join(', ')})`, name);
  const n = shapeSize(shape);
  if (values.length !== n) throw new FormatError(`shape [${shape.join(', ')}] holds ${n} values, found ${values.length}`, name);
  const size = SAFETENSORS_DTYPE_SIZE[dtype];
  const data = new Uint8Array(n * size);
  const dv = new DataView(data.buffer);
  const f = new Float32Array(1);
  const fb = new Uint32Array(f.buffer);
  const intIn = (v: number, lo: number, hi: number, i: number): number => {
    if (!Number.isInteger(v) || v < lo || v > hi) throw new FormatError(`value ${v} at index ${i} is not an integer in [${lo}, ${hi}] as ${dtype} requires`, name);
    return v;
  };
  for (let i = 0; i < n; i++) {
    const v = values[i] as number;
    switch (dtype) {
      case 'F32':
        dv.setFloat32(i * 4, v, true);
        break;
      case 'F16':
        f[0] = v;
        dv.setUint16(i * 2, f32BitsToF16Bits(fb[0] as number), true);
        break;
      case 'BF16':
        f[0] = v;
        dv.setUint16(i * 2, f32BitsToBf16Bits(fb[0] as number), true);
        break;
      case 'I32':
        dv.setInt32(i * 4, intIn(v, -2147483648, 2147483647, i), true);
        break;
      case 'I64':
        dv.setBigInt64(i * 8, BigInt(intIn(v, Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, i)), true);
        break;
      case 'U8':
        data[i] = intIn(v, 0, 255, i);
        break;
      case 'BOOL':
        data[i] = intIn(v, 0, 1, i);
        break;
    }
  }
  return { dtype, shape: shape.slice(), data };
}

const DEFAULT_DTYPE: Partial<Record<tf.DataType, SafetensorsDtype>> = { float32: 'F32', int32: 'I32', bool: 'BOOL' };

/**
 * Reads a tfjs tensor into a RawTensor (default dtype: float32 → F32, int32 → I32, bool → BOOL).
 * Does not dispose `t`.
 */
export async function tensorToRaw(t: tf.Tensor, dtype?: SafetensorsDtype, name = 'tensor'): Promise<RawTensor> {
  const target = dtype ?? DEFAULT_DTYPE[t.dtype];
  if (!target) throw new FormatError(`tfjs dtype '${t.dtype}' cannot be stored in safetensors (expected float32, int32 or bool)`, name);
  const values = await t.data<'float32' | 'int32' | 'bool'>();
  if (target === 'F32' && values instanceof Float32Array) {
    const data = new Uint8Array(values.length * 4);
    if (LITTLE_ENDIAN) data.set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
    else {
      const dv = new DataView(data.buffer);
      for (let i = 0; i < values.length; i++) dv.setFloat32(i * 4, values[i] as number, true);
    }
    return { dtype: 'F32', shape: t.shape.slice(), data };
  }
  return rawFromFloat32(values, t.shape, target, name);
}

// ---------------------------------------------------------------------------------------------------
// Files

/** Reads and parses a safetensors file; format errors name the file. */
export async function readSafetensorsFile(path: string, opts: ParseSafetensorsOptions = {}): Promise<SafetensorsFile> {
  const buf = await readFile(path);
  try {
    return parseSafetensors(new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength), opts);
  } catch (e) {
    if (e instanceof FormatError) throw new FormatError(e.message, path);
    throw e;
  }
}

/** Serialises and writes a safetensors file atomically. */
export async function writeSafetensorsFile(
  path: string,
  tensors: Map<string, RawTensor> | Iterable<[string, RawTensor]>,
  metadata?: Record<string, string> | Map<string, string>,
): Promise<void> {
  await writeFileAtomic(path, serializeSafetensors(tensors, metadata));
}

let tempCounter = 0;

/** A fresh temporary file name beside `path` (same directory, so that rename is atomic). */
export function tempPathFor(path: string): string {
  tempCounter = (tempCounter + 1) % 1e9;
  return join(dirname(path), `.${basename(path)}.${process.pid}.${process.hrtime.bigint().toString(36)}.${tempCounter}.tmp`);
}

/** Best-effort removal of a file we created; a missing file is fine. */
export async function removeQuietly(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch {
    // already gone (or never created): nothing to clean up
  }
}

/** Writes `data` to a new temporary file in `dirname(path)` (exclusive create) and fsyncs it. */
export async function writeTempFile(path: string, data: Uint8Array | string): Promise<string> {
  const tmp = tempPathFor(path);
  let handle: Awaited<ReturnType<typeof open>> | undefined;
  try {
    handle = await open(tmp, 'wx', 0o644);
    await handle.writeFile(data);
    await handle.sync();
    await handle.close();
    handle = undefined;
    return tmp;
  } catch (e) {
    if (handle) await handle.close().catch(() => undefined);
    await removeQuietly(tmp);
    throw e;
  }
}

/** fsyncs a directory so that a rename inside it survives a crash (best effort: not every OS allows it). */
export async function syncDir(dir: string): Promise<void> {
  let h: Awaited<ReturnType<typeof open>> | undefined;
  try {
    h = await open(dir, 'r');
    await h.sync();
  } catch {
    // directories cannot be opened or fsynced on some platforms (Windows); the rename is still atomic
  } finally {
    await h?.close().catch(() => undefined);
  }
}

/**
 * Writes a file atomically: a temporary file in the same directory, fsync, rename over `path`, fsync of
 * the directory. On failure the temporary file is removed and any previous `path` is left untouched.
 */
export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const tmp = await writeTempFile(path, data);
  try {
    await rename(tmp, path);
  } catch (e) {
    await removeQuietly(tmp);
    throw e;
  }
  await syncDir(dirname(path));
}
