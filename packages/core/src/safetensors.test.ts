import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useBackend } from './backend.js';
import { FormatError } from './errors.js';
import {
  f32BitsToBf16Bits,
  f32BitsToF16Bits,
  parseSafetensors,
  rawFromFloat32,
  rawToFloat32,
  rawToInt32,
  rawToTensor,
  readSafetensorsFile,
  serializeSafetensors,
  tensorToRaw,
  writeFileAtomic,
  writeSafetensorsFile,
  type RawTensor,
} from './safetensors.js';

/*
 * Fixtures. The Python `safetensors` package is not installed here and PyPI is unreachable, so these
 * files were written by the following script (Debian's python3 + numpy, only `struct` and `json` for the
 * format), which follows the layout the Python library documents and its Rust writer implements:
 * tensors sorted by dtype (descending in the Rust `Dtype` enum order BOOL < U8 < F16 < BF16 < I32 < F32
 * < I64) then by name bytes, compact JSON with `__metadata__` first, header padded with spaces to a
 * multiple of 8. (The real writer emits metadata keys in HashMap order; the script sorts them, as ours does.)
 *
 *   ORDER = {'BOOL': 0, 'U8': 1, 'F16': 2, 'BF16': 3, 'I32': 4, 'F32': 5, 'I64': 6}
 *   def save(tensors, metadata=None):
 *       items = sorted(tensors.items(), key=lambda kv: (-ORDER[kv[1][0]], kv[0].encode('utf-8')))
 *       header, data, off = {}, b'', 0
 *       if metadata: header['__metadata__'] = dict(sorted(metadata.items()))
 *       for name, (dt, shape, b) in items:
 *           header[name] = {'dtype': dt, 'shape': list(shape), 'data_offsets': [off, off + len(b)]}
 *           off += len(b); data += b
 *       h = json.dumps(header, separators=(',', ':'), ensure_ascii=False).encode('utf-8')
 *       h += b' ' * ((8 - len(h) % 8) % 8)
 *       return struct.pack('<Q', len(h)) + h + data
 *   def bf16(a):
 *       u = np.asarray(a, dtype='<f4').view('<u4').astype(np.uint64)
 *       return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype('<u2').tobytes()
 *   mixed = save({
 *       'weight': ('F32', [2, 3], np.array([0.5, -1.25, 3.0, 1e-3, -0.0, 65504.0], '<f4').tobytes()),
 *       'half': ('F16', [6], np.array([1.0, -2.5, 65504, 2.0**-24, -0.0, np.inf], '<f2').tobytes()),
 *       'bf': ('BF16', [3], bf16([1.0, -3.140625, 2.0**-126])),
 *       'ids': ('I32', [2, 2], np.array([1, -2, 2147483647, -2147483648], '<i4').tobytes()),
 *       'big': ('I64', [3], np.array([5, -7, 2**40], '<i8').tobytes()),
 *       'small64': ('I64', [2], np.array([-3, 123456], '<i8').tobytes()),
 *       'bytes': ('U8', [5], np.array([0, 1, 127, 128, 255], 'u1').tobytes()),
 *       'mask': ('BOOL', [2, 2], np.array([True, False, False, True], '?').tobytes()),
 *   }, {'format': 'pt'})
 *   empty = save({})
 *   shapes = save({'s': ('F32', [], np.array(2.5, '<f4').tobytes()), 'empty': ('F32', [0, 3], b''),
 *                  'e2': ('I32', [2, 0], b'')})
 *   names = save({n: ('F32', [1], np.array([i + 1], '<f4').tobytes()) for i, n in enumerate(
 *       ['__proto__', 'constructor', 'hasOwnProperty', 'toString', 'a.b.c', 'ñame✓', 'q"uote\\back',
 *        'tab\there', 'z\uffff', 'z\U0001F600'])}, {'b': '2', 'a': 'héllo ✓'})
 *   print(base64.b64encode(...))
 */
const FIXTURES = {
  mixed:
    'AAIAAAAAAAB7Il9fbWV0YWRhdGFfXyI6eyJmb3JtYXQiOiJwdCJ9LCJiaWciOnsiZHR5cGUiOiJJNjQiLCJzaGFwZSI6WzNdLCJkYXRhX29mZnNldHMiOlswLDI0XX0sInNtYWxsNjQiOnsiZHR5cGUiOiJJNjQiLCJzaGFwZSI6WzJdLCJkYXRhX29mZnNldHMiOlsyNCw0MF19LCJ3ZWlnaHQiOnsiZHR5cGUiOiJGMzIiLCJzaGFwZSI6WzIsM10sImRhdGFfb2Zmc2V0cyI6WzQwLDY0XX0sImlkcyI6eyJkdHlwZSI6IkkzMiIsInNoYXBlIjpbMiwyXSwiZGF0YV9vZmZzZXRzIjpbNjQsODBdfSwiYmYiOnsiZHR5cGUiOiJCRjE2Iiwic2hhcGUiOlszXSwiZGF0YV9vZmZzZXRzIjpbODAsODZdfSwiaGFsZiI6eyJkdHlwZSI6IkYxNiIsInNoYXBlIjpbNl0sImRhdGFfb2Zmc2V0cyI6Wzg2LDk4XX0sImJ5dGVzIjp7ImR0eXBlIjoiVTgiLCJzaGFwZSI6WzVdLCJkYXRhX29mZnNldHMiOls5OCwxMDNdfSwibWFzayI6eyJkdHlwZSI6IkJPT0wiLCJzaGFwZSI6WzIsMl0sImRhdGFfb2Zmc2V0cyI6WzEwMywxMDddfX0gICAgIAUAAAAAAAAA+f////////8AAAAAAAEAAP3/////////QOIBAAAAAAAAAAA/AACgvwAAQEBvEoM6AAAAgADgf0cBAAAA/v///////38AAACAgD9JwIAAADwAwf97AQAAgAB8AAF/gP8BAAAB',
  empty: 'CAAAAAAAAAB7fSAgICAgIA==',
  shapes:
    'qAAAAAAAAAB7ImVtcHR5Ijp7ImR0eXBlIjoiRjMyIiwic2hhcGUiOlswLDNdLCJkYXRhX29mZnNldHMiOlswLDBdfSwicyI6eyJkdHlwZSI6IkYzMiIsInNoYXBlIjpbXSwiZGF0YV9vZmZzZXRzIjpbMCw0XX0sImUyIjp7ImR0eXBlIjoiSTMyIiwic2hhcGUiOlsyLDBdLCJkYXRhX29mZnNldHMiOls0LDRdfX0AACBA',
  names:
    'mAIAAAAAAAB7Il9fbWV0YWRhdGFfXyI6eyJhIjoiaMOpbGxvIOKckyIsImIiOiIyIn0sIl9fcHJvdG9fXyI6eyJkdHlwZSI6IkYzMiIsInNoYXBlIjpbMV0sImRhdGFfb2Zmc2V0cyI6WzAsNF19LCJhLmIuYyI6eyJkdHlwZSI6IkYzMiIsInNoYXBlIjpbMV0sImRhdGFfb2Zmc2V0cyI6WzQsOF19LCJjb25zdHJ1Y3RvciI6eyJkdHlwZSI6IkYzMiIsInNoYXBlIjpbMV0sImRhdGFfb2Zmc2V0cyI6WzgsMTJdfSwiaGFzT3duUHJvcGVydHkiOnsiZHR5cGUiOiJGMzIiLCJzaGFwZSI6WzFdLCJkYXRhX29mZnNldHMiOlsxMiwxNl19LCJxXCJ1b3RlXFxiYWNrIjp7ImR0eXBlIjoiRjMyIiwic2hhcGUiOlsxXSwiZGF0YV9vZmZzZXRzIjpbMTYsMjBdfSwidGFiXHRoZXJlIjp7ImR0eXBlIjoiRjMyIiwic2hhcGUiOlsxXSwiZGF0YV9vZmZzZXRzIjpbMjAsMjRdfSwidG9TdHJpbmciOnsiZHR5cGUiOiJGMzIiLCJzaGFwZSI6WzFdLCJkYXRhX29mZnNldHMiOlsyNCwyOF19LCJ677+/Ijp7ImR0eXBlIjoiRjMyIiwic2hhcGUiOlsxXSwiZGF0YV9vZmZzZXRzIjpbMjgsMzJdfSwievCfmIAiOnsiZHR5cGUiOiJGMzIiLCJzaGFwZSI6WzFdLCJkYXRhX29mZnNldHMiOlszMiwzNl19LCLDsWFtZeKckyI6eyJkdHlwZSI6IkYzMiIsInNoYXBlIjpbMV0sImRhdGFfb2Zmc2V0cyI6WzM2LDQwXX19AACAPwAAoEAAAABAAABAQAAA4EAAAABBAACAQAAAEEEAACBBAADAQA==',
} as const;

function fixture(name: keyof typeof FIXTURES): Uint8Array {
  return new Uint8Array(Buffer.from(FIXTURES[name], 'base64'));
}

/** A file made of an arbitrary header string (padded to 8) and `dataLen` data bytes. */
function fileWithHeader(header: string, dataLen = 0, pad = true): Uint8Array {
  let h = Buffer.from(header, 'utf8');
  if (pad && h.length % 8) h = Buffer.concat([h, Buffer.alloc(8 - (h.length % 8), 0x20)]);
  const out = new Uint8Array(8 + h.length + dataLen);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  for (let i = 0; i < dataLen; i++) out[8 + h.length + i] = i & 0xff;
  return out;
}

function entry(dtype: string, shape: unknown, offsets: unknown): string {
  return JSON.stringify({ dtype, shape, data_offsets: offsets });
}

function expectFormatError(fn: () => unknown, pattern: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught, `expected a FormatError matching ${pattern}`).toBeInstanceOf(FormatError);
  expect((caught as Error).message).toMatch(pattern);
}

const f32 = new Float32Array(1);
const f32Bits = new Uint32Array(f32.buffer);
function bitsOf(x: number): number {
  f32[0] = x;
  return f32Bits[0] as number;
}
function fromBits(b: number): number {
  f32Bits[0] = b;
  return f32[0] as number;
}

beforeAll(async () => {
  await useBackend('cpu');
});

describe('parseSafetensors on files in the Python layout', () => {
  it('reads every dtype of the mixed fixture with the right values and metadata', () => {
    const f = parseSafetensors(fixture('mixed'));
    expect([...f.metadata]).toEqual([['format', 'pt']]);
    expect([...f.tensors.keys()]).toEqual(['big', 'small64', 'weight', 'ids', 'bf', 'half', 'bytes', 'mask']);
    const t = (n: string): RawTensor => f.tensors.get(n)!;
    expect(t('weight').shape).toEqual([2, 3]);
    expect(Array.from(rawToFloat32(t('weight')))).toEqual([0.5, -1.25, 3, Math.fround(1e-3), -0, 65504]);
    expect(Object.is(rawToFloat32(t('weight'))[4], -0)).toBe(true);
    const half = rawToFloat32(t('half'));
    expect(Array.from(half)).toEqual([1, -2.5, 65504, 2 ** -24, -0, Infinity]);
    expect(Object.is(half[4], -0)).toBe(true);
    expect(Array.from(rawToFloat32(t('bf')))).toEqual([1, -3.140625, 2 ** -126]);
    expect(Array.from(rawToInt32(t('ids')))).toEqual([1, -2, 2147483647, -2147483648]);
    expect(Array.from(rawToFloat32(t('big')))).toEqual([5, -7, 2 ** 40]);
    expect(Array.from(rawToInt32(t('small64')))).toEqual([-3, 123456]);
    expect(Array.from(rawToInt32(t('bytes')))).toEqual([0, 1, 127, 128, 255]);
    expect(t('mask').dtype).toBe('BOOL');
    expect(Array.from(rawToInt32(t('mask')))).toEqual([1, 0, 0, 1]);
  });

  it('reads scalars, zero-size tensors and an empty file', () => {
    const f = parseSafetensors(fixture('shapes'));
    expect(f.tensors.get('s')!.shape).toEqual([]);
    expect(Array.from(rawToFloat32(f.tensors.get('s')!))).toEqual([2.5]);
    expect(f.tensors.get('empty')!.shape).toEqual([0, 3]);
    expect(f.tensors.get('empty')!.data.byteLength).toBe(0);
    expect(f.tensors.get('e2')!.dtype).toBe('I32');
    const e = parseSafetensors(fixture('empty'));
    expect(e.tensors.size).toBe(0);
    expect(e.metadata.size).toBe(0);
  });

  it('treats __proto__, constructor and other odd names as plain tensor names', () => {
    const f = parseSafetensors(fixture('names'));
    const names = ['__proto__', 'constructor', 'hasOwnProperty', 'toString', 'a.b.c', 'ñame✓', 'q"uote\\back', 'tab\there', 'z\uffff', 'z\u{1F600}'];
    names.forEach((n, i) => {
      expect(f.tensors.has(n), n).toBe(true);
      expect(Array.from(rawToFloat32(f.tensors.get(n)!))).toEqual([i + 1]);
    });
    expect(f.tensors.size).toBe(names.length);
    expect(f.metadata.get('a')).toBe('héllo ✓');
    expect(f.metadata.get('b')).toBe('2');
  });

  it('writes byte-identical files from the same tensors (order, JSON, padding)', () => {
    for (const name of Object.keys(FIXTURES) as Array<keyof typeof FIXTURES>) {
      const bytes = fixture(name);
      const f = parseSafetensors(bytes);
      // Reverse the insertion order: the writer must sort, not keep the caller's order.
      const again = serializeSafetensors([...f.tensors].reverse(), f.metadata);
      expect(Buffer.from(again).equals(Buffer.from(bytes)), name).toBe(true);
    }
  });

  it('writes the documented byte layout for one F32 tensor (checked by hand)', () => {
    const out = serializeSafetensors(new Map([['a', rawFromFloat32([1], [1])]]));
    const header = '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'; // 54 bytes → padded to 56
    const expected = [
      ...[56, 0, 0, 0, 0, 0, 0, 0],
      ...Buffer.from(header + '  ', 'ascii'),
      ...[0x00, 0x00, 0x80, 0x3f], // 1.0f little-endian
    ];
    expect(Array.from(out)).toEqual(expected);
  });

  it('returns views of the input by default and copies on request', () => {
    const bytes = fixture('mixed');
    const view = parseSafetensors(bytes).tensors.get('weight')!;
    expect(view.data.buffer).toBe(bytes.buffer);
    const copy = parseSafetensors(bytes, { copy: true }).tensors.get('weight')!;
    expect(copy.data.buffer).not.toBe(bytes.buffer);
    expect(Array.from(copy.data)).toEqual(Array.from(view.data));
  });

  it('parses a file that sits at an odd offset inside a larger buffer', () => {
    const inner = fixture('mixed');
    const outer = new Uint8Array(inner.length + 3);
    outer.set(inner, 3);
    const f = parseSafetensors(outer.subarray(3));
    expect(Array.from(rawToFloat32(f.tensors.get('weight')!))).toEqual([0.5, -1.25, 3, Math.fround(1e-3), -0, 65504]);
    expect(Array.from(rawToInt32(f.tensors.get('ids')!))).toEqual([1, -2, 2147483647, -2147483648]);
  });
});

describe('parseSafetensors rejects malformed files with FormatError', () => {
  const ok = entry('F32', [2], [0, 8]);

  it('truncated files and bad header lengths', () => {
    expectFormatError(() => parseSafetensors(new Uint8Array(0)), /at least 8 bytes.*found 0/);
    expectFormatError(() => parseSafetensors(new Uint8Array(7)), /truncated/);
    const f = fixture('mixed');
    expectFormatError(() => parseSafetensors(f.subarray(0, 100)), /runs past the end of the file/);
    expectFormatError(() => parseSafetensors(f.subarray(0, f.length - 1)), /run past the data buffer|trailing|cover/);
    const huge = new Uint8Array(16);
    new DataView(huge.buffer).setBigUint64(0, 0xffffffffffffffffn, true);
    expectFormatError(() => parseSafetensors(huge), /exceeds the limit/);
    expectFormatError(() => parseSafetensors(fileWithHeader(`{"a":${ok}}`, 8), { maxHeaderBytes: 16 }), /header length \d+ exceeds the limit of 16/);
  });

  it('headers that are not UTF-8, not JSON or not an object', () => {
    const bad = fileWithHeader('{"a":1}');
    bad[9] = 0xff;
    expectFormatError(() => parseSafetensors(bad), /not valid UTF-8/);
    expectFormatError(() => parseSafetensors(fileWithHeader('[]')), /must start with '\{'/);
    expectFormatError(() => parseSafetensors(fileWithHeader('  {}')), /must start with '\{'/);
    expectFormatError(() => parseSafetensors(fileWithHeader('', 0)), /empty header/);
    expectFormatError(() => parseSafetensors(fileWithHeader('{"a":')), /not valid JSON/);
    expectFormatError(() => parseSafetensors(fileWithHeader('{"a":1,}')), /not valid JSON/);
    expectFormatError(() => parseSafetensors(fileWithHeader('{} x')), /not valid JSON.*after the JSON value/);
    expectFormatError(() => parseSafetensors(fileWithHeader('{}\0\0\0\0\0\0', 0, false)), /not valid JSON/);
    expectFormatError(() => parseSafetensors(fileWithHeader('{"a\\q":1}')), /bad escape/);
    expectFormatError(() => parseSafetensors(fileWithHeader('{"a\tb":1}')), /control character/);
  });

  it('deeply nested JSON fails cleanly instead of overflowing the stack', () => {
    const deep = `{"__metadata__":${'['.repeat(100_000)}${']'.repeat(100_000)}}`;
    expectFormatError(() => parseSafetensors(fileWithHeader(deep)), /nesting deeper than 64/);
  });

  it('entries that are not objects, lack fields or have wrong types', () => {
    expectFormatError(() => parseSafetensors(fileWithHeader('{"w":5}')), /w: expected an object \{dtype, shape, data_offsets\}, found number 5/);
    expectFormatError(() => parseSafetensors(fileWithHeader('{"w":{"dtype":"F32"}}')), /w: missing fields shape, data_offsets/);
    expectFormatError(() => parseSafetensors(fileWithHeader(`{"w":${entry('F32', [2], [0, 8]).replace('"dtype":"F32"', '"dtype":4')}}`, 8)), /w: dtype must be a string, found number 4/);
    expectFormatError(() => parseSafetensors(fileWithHeader(`{"w":${entry('F32', 2, [0, 8])}}`, 8)), /w: shape must be an array/);
    expectFormatError(() => parseSafetensors(fileWithHeader(`{"w":${entry('F32', [-2], [0, 8])}}`, 8)), /w: shape\[0\] must be a non-negative integer, found number -2/);
    expectFormatError(() => parseSafetensors(fileWithHeader(`{"w":${entry('F32', [1.5], [0, 8])}}`, 8)), /shape\[0\].*1\.5/);
    expectFormatError(() => parseSafetensors(fileWithHeader(`{"w":${entry('F32', ['2'], [0, 8])}}`, 8)), /shape\[0\].*string/);
    expectFormatError(() => parseSafetensors(fileWithHeader(`{"w":${entry('F32', [2], [0])}}`, 8)), /data_offsets must be \[begin, end\], found an array of 1/);
    expectFormatError(() => parseSafetensors(fileWithHeader(`{"w":${entry('F32', [2], ['0', 8])}}`, 8)), /data_offsets must be non-negative integers/);
    expectFormatError(() => parseSafetensors(fileWithHeader(`{"w":${entry('F32', [2], [-8, 0])}}`, 8)), /non-negative integers/);
  });

  it('unknown or unsupported dtypes', () => {
    expectFormatError(() => parseSafetensors(fileWithHeader(`{"w":${entry('F64', [1], [0, 8])}}`, 8)), /w: unsupported dtype "F64" \(supported: F32, F16, BF16, I32, I64, U8, BOOL\)/);
    expectFormatError(() => parseSafetensors(fileWithHeader(`{"w":${entry('f32', [2], [0, 8])}}`, 8)), /unsupported dtype "f32"/);
    expectFormatError(() => parseSafetensors(fileWithHeader(`{"w":${entry('__proto__', [2], [0, 8])}}`, 8)), /unsupported dtype "__proto__"/);
  });

  it('byte counts that disagree with the offsets, including overflowing shapes', () => {
    expectFormatError(() => parseSafetensors(fileWithHeader(`{"w":${entry('F32', [3], [0, 8])}}`, 8)), /w: shape \[3\] of F32 needs more than 8 bytes but data_offsets \[0, 8\] hold 8/);
    expectFormatError(() => parseSafetensors(fileWithHeader(`{"w":${entry('F16', [3], [0, 8])}}`, 8)), /needs 6 bytes/);
    const big = 2 ** 40;
    expectFormatError(() => parseSafetensors(fileWithHeader(`{"w":${entry('F32', [big, big, big], [0, 8])}}`, 8)), /needs more than 8/);
    expectFormatError(() => parseSafetensors(fileWithHeader(`{"w":${entry('F32', [2 ** 60], [0, 8])}}`, 8)), /shape\[0\]|needs more than/);
    // A zero dimension makes the tensor empty whatever the other dimensions claim.
    expectFormatError(() => parseSafetensors(fileWithHeader(`{"w":${entry('F32', [big, 0], [0, 8])}}`, 8)), /needs 0 bytes/);
  });

  it('offsets out of bounds, reversed, overlapping, with gaps or trailing bytes', () => {
    expectFormatError(() => parseSafetensors(fileWithHeader(`{"w":${entry('F32', [2], [8, 16])}}`, 8)), /w: data_offsets \[8, 16\] run past the data buffer \(8 bytes\)/);
    expectFormatError(() => parseSafetensors(fileWithHeader(`{"w":${entry('F32', [0], [8, 0])}}`, 8)), /begin 8 is after end 0/);
    expectFormatError(
      () => parseSafetensors(fileWithHeader(`{"a":${entry('F32', [2], [0, 8])},"b":${entry('F32', [1], [4, 8])}}`, 8)),
      /b: data_offsets \[4, 8\] overlap tensor "a"/,
    );
    expectFormatError(() => parseSafetensors(fileWithHeader(`{"a":${entry('F32', [1], [4, 8])}}`, 8)), /gap of 4 bytes after the header/);
    expectFormatError(
      () => parseSafetensors(fileWithHeader(`{"a":${entry('F32', [1], [0, 4])},"b":${entry('F32', [1], [8, 12])}}`, 12)),
      /b: .*gap of 4 bytes after tensor "a"/,
    );
    expectFormatError(() => parseSafetensors(fileWithHeader(`{"a":${entry('F32', [1], [0, 4])}}`, 8)), /4 trailing bytes belong to no tensor/);
    expectFormatError(() => parseSafetensors(fileWithHeader('{}', 3)), /3 trailing bytes/);
    // The same bytes claimed twice.
    expectFormatError(() => parseSafetensors(fileWithHeader(`{"a":${ok},"b":${ok}}`, 8)), /overlap/);
  });

  it('metadata that is not an object of strings', () => {
    expectFormatError(() => parseSafetensors(fileWithHeader('{"__metadata__":[]}')), /__metadata__: expected an object of strings, found an array/);
    expectFormatError(() => parseSafetensors(fileWithHeader('{"__metadata__":{"a":1}}')), /__metadata__: value of "a" must be a string, found number 1/);
    expectFormatError(() => parseSafetensors(fileWithHeader('{"__metadata__":{"a":null}}')), /found null/);
  });

  it('duplicate keys, at the top level, in metadata and inside an entry', () => {
    expectFormatError(() => parseSafetensors(fileWithHeader(`{"a":${ok},"a":${ok}}`, 8)), /duplicate key "a"/);
    expectFormatError(() => parseSafetensors(fileWithHeader('{"__metadata__":{"k":"1","k":"2"}}')), /duplicate key "k"/);
    expectFormatError(() => parseSafetensors(fileWithHeader('{"a":{"dtype":"F32","dtype":"F16","shape":[2],"data_offsets":[0,8]}}', 8)), /duplicate key "dtype"/);
    expectFormatError(() => parseSafetensors(fileWithHeader(`{"__proto__":${ok},"__proto__":${ok}}`, 8)), /duplicate key "__proto__"/);
  });
});

describe('prototype keys', () => {
  it('a tensor literally named __proto__ round-trips and pollutes nothing', () => {
    const bytes = fileWithHeader(`{"__proto__":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"polluted":"yes"},"__metadata__":{"__proto__":"m","constructor":"c"}}`, 8);
    const f = parseSafetensors(bytes);
    expect([...f.tensors.keys()]).toEqual(['__proto__']);
    expect(f.tensors.get('__proto__')!.shape).toEqual([2]);
    expect(f.metadata.get('__proto__')).toBe('m');
    expect(f.metadata.get('constructor')).toBe('c');
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
    expect(({} as Record<string, unknown>)['dtype']).toBeUndefined();
    expect(Object.prototype).not.toHaveProperty('polluted');
    const again = parseSafetensors(serializeSafetensors(f.tensors, f.metadata));
    expect([...again.tensors.keys()]).toEqual(['__proto__']);
    expect(Array.from(again.tensors.get('__proto__')!.data)).toEqual(Array.from(f.tensors.get('__proto__')!.data));
    expect(again.metadata.get('__proto__')).toBe('m');
  });
});

describe('serializeSafetensors validates its input', () => {
  it('rejects wrong byte counts, duplicates, the reserved name and bad dtypes', () => {
    expectFormatError(() => serializeSafetensors(new Map([['w', { dtype: 'F32', shape: [3], data: new Uint8Array(8) }]])), /w: shape \[3\] of F32 needs 12 bytes, data has 8/);
    const t = rawFromFloat32([1], [1]);
    expectFormatError(() => serializeSafetensors([['w', t], ['w', t]]), /w: duplicate tensor name/);
    expectFormatError(() => serializeSafetensors([['__metadata__', t]]), /reserved/);
    expectFormatError(() => serializeSafetensors([['w', { ...t, dtype: 'F64' as 'F32' }]]), /unsupported dtype "F64"/);
    expectFormatError(() => serializeSafetensors([['w', { ...t, shape: [-1] }]]), /shape must be non-negative integers/);
    expectFormatError(() => serializeSafetensors([['w', t]], { a: 1 as unknown as string }), /value of "a" must be a string/);
  });

  it('orders by Python dtype rank, then by code point (not UTF-16 unit)', () => {
    const one = (dtype: 'F32' | 'I64' | 'BOOL'): RawTensor => rawFromFloat32([1], [1], dtype);
    const f = parseSafetensors(serializeSafetensors([['z\u{1F600}', one('F32')], ['z\uffff', one('F32')], ['b', one('BOOL')], ['a', one('I64')]]));
    expect([...f.tensors.keys()]).toEqual(['a', 'z\uffff', 'z\u{1F600}', 'b']);
  });
});

describe('half and bfloat16 conversion', () => {
  it('f16: every finite half value survives f16 → f32 → f16 exactly', () => {
    const raw = new Uint8Array(2 * 65536);
    const dv = new DataView(raw.buffer);
    for (let h = 0; h < 65536; h++) dv.setUint16(h * 2, h, true);
    const vals = rawToFloat32({ dtype: 'F16', shape: [65536], data: raw });
    for (let h = 0; h < 65536; h++) {
      const v = vals[h] as number;
      if (Number.isNaN(v)) {
        expect((h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0).toBe(true);
        expect(Number.isNaN(vals[f32BitsToF16Bits(bitsOf(v))] as number)).toBe(true);
        continue;
      }
      if (f32BitsToF16Bits(bitsOf(v)) !== h) expect.fail(`half 0x${h.toString(16)} (${v}) did not round-trip`);
    }
  });

  it('f16: midpoints round to even, values beside them to the nearer neighbour', () => {
    const table = rawToFloat32({ dtype: 'F16', shape: [0x7c00], data: new Uint8Array(new Uint16Array(Array.from({ length: 0x7c00 }, (_, i) => i)).buffer) });
    for (let h = 0; h < 0x7bff; h++) {
      const a = table[h] as number;
      const b = table[h + 1] as number;
      const mid = (a + b) / 2; // exact in float32: needs 12 significant bits
      if (Math.fround(mid) !== mid) expect.fail(`midpoint ${mid} is not a float32`);
      const even = h % 2 === 0 ? h : h + 1;
      const mb = bitsOf(mid);
      if (f32BitsToF16Bits(mb) !== even) expect.fail(`midpoint of 0x${h.toString(16)} rounded to 0x${f32BitsToF16Bits(mb).toString(16)}`);
      if (f32BitsToF16Bits(mb - 1) !== h || f32BitsToF16Bits(mb + 1) !== h + 1) expect.fail(`neighbours of midpoint ${h}`);
      // Negative values mirror positive ones.
      if (f32BitsToF16Bits(bitsOf(-mid)) !== (even | 0x8000)) expect.fail(`negative midpoint ${h}`);
    }
    // Overflow: 65520 is the midpoint between 65504 and 65536 = Inf, ties to even → Inf; just below stays finite.
    expect(f32BitsToF16Bits(bitsOf(65520))).toBe(0x7c00);
    expect(f32BitsToF16Bits(bitsOf(65519.99))).toBe(0x7bff);
    expect(f32BitsToF16Bits(bitsOf(1e10))).toBe(0x7c00);
    expect(f32BitsToF16Bits(bitsOf(-Infinity))).toBe(0xfc00);
    // Underflow: half of the smallest subnormal is a tie → 0; a bit more → smallest subnormal.
    expect(f32BitsToF16Bits(bitsOf(2 ** -25))).toBe(0);
    expect(f32BitsToF16Bits(bitsOf(2 ** -25) + 1)).toBe(1);
    expect(f32BitsToF16Bits(bitsOf(1e-30))).toBe(0);
    expect(f32BitsToF16Bits(bitsOf(-0))).toBe(0x8000);
    expect(f32BitsToF16Bits(0x7fc00000) & 0x7c00).toBe(0x7c00);
    expect(f32BitsToF16Bits(0x7fc00000) & 0x3ff).not.toBe(0);
  });

  it('bf16: every finite bfloat16 round-trips and midpoints round to even', () => {
    const raw = new Uint8Array(2 * 0x7f80);
    const dv = new DataView(raw.buffer);
    for (let h = 0; h < 0x7f80; h++) dv.setUint16(h * 2, h, true);
    const vals = rawToFloat32({ dtype: 'BF16', shape: [0x7f80], data: raw });
    for (let h = 0; h < 0x7f80; h++) {
      const v = vals[h] as number;
      if (bitsOf(v) !== h << 16) expect.fail(`bf16 0x${h.toString(16)} widened wrongly`);
      if (f32BitsToBf16Bits(h << 16) !== h) expect.fail(`bf16 0x${h.toString(16)} did not round-trip`);
      if (h + 1 < 0x7f80) {
        const mid = (h << 16) + 0x8000; // the f32 exactly halfway to the next bf16
        const even = h % 2 === 0 ? h : h + 1;
        if (f32BitsToBf16Bits(mid) !== even) expect.fail(`bf16 midpoint after 0x${h.toString(16)}`);
        if (f32BitsToBf16Bits(mid - 1) !== h || f32BitsToBf16Bits(mid + 1) !== h + 1) expect.fail(`bf16 neighbours after 0x${h.toString(16)}`);
        if (f32BitsToBf16Bits((mid | 0x80000000) >>> 0) !== (even | 0x8000)) expect.fail(`negative bf16 midpoint after 0x${h.toString(16)}`);
      }
    }
    expect(f32BitsToBf16Bits(0x7f7fffff)).toBe(0x7f80); // largest float rounds up to Inf
    expect(f32BitsToBf16Bits(0x7f800000)).toBe(0x7f80);
    expect(f32BitsToBf16Bits(0xff800000)).toBe(0xff80);
    const nan = f32BitsToBf16Bits(0x7f800001); // a NaN whose payload sits in the low bits stays NaN
    expect(Number.isNaN(fromBits(nan << 16))).toBe(true);
  });

  it('rawFromFloat32 encodes each dtype and range-checks integers', () => {
    expect(Array.from(rawToFloat32(rawFromFloat32([1, 65520, 1 + 2 ** -11], [3], 'F16')))).toEqual([1, Infinity, 1]);
    expect(Array.from(rawToFloat32(rawFromFloat32([1, 1 + 2 ** -8, 1 + 3 * 2 ** -8], [3], 'BF16')))).toEqual([1, 1, 1 + 2 ** -6]);
    expect(Array.from(rawToInt32(rawFromFloat32([-5, 7], [2], 'I64')))).toEqual([-5, 7]);
    expect(Array.from(rawFromFloat32([0, 255], [2], 'U8').data)).toEqual([0, 255]);
    expectFormatError(() => rawFromFloat32([256], [1], 'U8', 'w'), /w: value 256 at index 0 is not an integer in \[0, 255\]/);
    expectFormatError(() => rawFromFloat32([0.5], [1], 'I32'), /not an integer/);
    expectFormatError(() => rawFromFloat32([2], [1], 'BOOL'), /\[0, 1\]/);
    expectFormatError(() => rawFromFloat32([1, 2], [3]), /holds 3 values, found 2/);
  });
});

describe('tfjs conversion', () => {
  it('rawToTensor maps dtypes as documented and checks the I64 range', async () => {
    const f = parseSafetensors(fixture('mixed'));
    const w = rawToTensor(f.tensors.get('weight')!);
    expect(w.dtype).toBe('float32');
    expect(w.shape).toEqual([2, 3]);
    const h = rawToTensor(f.tensors.get('half')!);
    expect(h.dtype).toBe('float32');
    expect(Array.from(await h.data())).toEqual([1, -2.5, 65504, 2 ** -24, -0, Infinity]);
    const ids = rawToTensor(f.tensors.get('ids')!);
    expect(ids.dtype).toBe('int32');
    expect(Array.from(await ids.data())).toEqual([1, -2, 2147483647, -2147483648]);
    const s64 = rawToTensor(f.tensors.get('small64')!);
    expect(s64.dtype).toBe('int32');
    expect(Array.from(await s64.data())).toEqual([-3, 123456]);
    const u8 = rawToTensor(f.tensors.get('bytes')!);
    expect(u8.dtype).toBe('int32');
    expect(Array.from(await u8.data())).toEqual([0, 1, 127, 128, 255]);
    const mask = rawToTensor(f.tensors.get('mask')!);
    expect(mask.dtype).toBe('bool');
    expect(Array.from(await mask.data())).toEqual([1, 0, 0, 1]);
    expectFormatError(() => rawToTensor(f.tensors.get('big')!, 'big'), /big: I64 value 1099511627776 at index 2 does not fit in int32/);
    const s = rawToTensor(parseSafetensors(fixture('shapes')).tensors.get('s')!);
    expect(s.rank).toBe(0);
    tf.dispose([w, h, ids, s64, u8, mask, s]);
  });

  it('tensorToRaw round-trips float32, int32 and bool and converts on request', async () => {
    const x = tf.tensor2d([[1.5, -2], [3.25, 1e-8]]);
    const rx = await tensorToRaw(x);
    expect(rx.dtype).toBe('F32');
    expect(rx.shape).toEqual([2, 2]);
    expect(Array.from(rawToFloat32(rx))).toEqual(Array.from(await x.data()));
    const h = await tensorToRaw(x, 'F16');
    expect(Array.from(rawToFloat32(h))).toEqual([1.5, -2, 3.25, 0]);
    const i = tf.tensor1d([3, -4], 'int32');
    expect((await tensorToRaw(i)).dtype).toBe('I32');
    expect(Array.from(rawToInt32(await tensorToRaw(i, 'I64')))).toEqual([3, -4]);
    const b = tf.tensor1d([true, false, true], 'bool');
    const rb = await tensorToRaw(b);
    expect(rb.dtype).toBe('BOOL');
    expect(Array.from(rb.data)).toEqual([1, 0, 1]);
    await expect(tensorToRaw(x, 'I32', 'x')).rejects.toThrow(/x: value 1.5 at index 0 is not an integer/);
    const str = tf.tensor1d(['a'], 'string');
    await expect(tensorToRaw(str, undefined, 's')).rejects.toThrow(FormatError);
    tf.dispose([x, i, b, str]);
  });
});

describe('files', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'leanpass-st-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes and reads back a file; format errors name the path', async () => {
    const path = join(dir, 'a.safetensors');
    const f = parseSafetensors(fixture('mixed'));
    await writeSafetensorsFile(path, f.tensors, f.metadata);
    expect(Buffer.from(await readFile(path)).equals(Buffer.from(fixture('mixed')))).toBe(true);
    const back = await readSafetensorsFile(path);
    expect([...back.tensors.keys()].sort()).toEqual([...f.tensors.keys()].sort());
    const broken = join(dir, 'broken.safetensors');
    await writeFile(broken, fixture('mixed').subarray(0, 50));
    await expect(readSafetensorsFile(broken)).rejects.toThrow(new RegExp(`^${broken.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: header: header length`));
    await expect(readSafetensorsFile(broken)).rejects.toBeInstanceOf(FormatError);
  });

  it('writeFileAtomic replaces a file, and a failed write leaves the old one and no temporary file', async () => {
    const path = join(dir, 'atomic.txt');
    await writeFileAtomic(path, 'first');
    await writeFileAtomic(path, 'second');
    expect(await readFile(path, 'utf8')).toBe('second');
    // Data that cannot be written: the write throws after the temporary file was created.
    await expect(writeFileAtomic(path, 42 as unknown as string)).rejects.toThrow();
    expect(await readFile(path, 'utf8')).toBe('second');
    // A directory that does not exist.
    await expect(writeFileAtomic(join(dir, 'missing', 'x.txt'), 'x')).rejects.toThrow(/ENOENT/);
    // Renaming over a non-empty directory fails after the temporary file was written.
    const sub = join(dir, 'sub');
    await mkdir(join(sub, 'inner'), { recursive: true });
    await expect(writeFileAtomic(sub, 'x')).rejects.toThrow(/EISDIR|ENOTEMPTY|EEXIST/);
    const left = (await readdir(dir)).filter((n) => n.endsWith('.tmp'));
    expect(left).toEqual([]);
  });
});
