/**
 * Fuzzing the safetensors reader. The property: on any input, parseSafetensors either returns tensors
 * whose byte count is product(shape) · size(dtype), that lie inside the data section of the input and
 * tile it exactly, or throws FormatError — never any other exception. Inputs are mutated valid files
 * (truncations, byte flips, spliced bytes, rewritten length fields), random JSON headers and random
 * structured headers with random offsets. Seeds are fixed so that a failure reproduces.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FormatError } from './errors.js';
import { SAFETENSORS_DTYPE_SIZE, parseSafetensors, rawToFloat32, serializeSafetensors, shapeSize, type RawTensor, type SafetensorsDtype } from './safetensors.js';

const DTYPES = Object.keys(SAFETENSORS_DTYPE_SIZE) as SafetensorsDtype[];

const nameArb = fc.oneof(
  fc.constantFrom('__proto__', 'constructor', 'hasOwnProperty', 'toString', 'a', 'b', 'w.0.weight', ''),
  fc.string({ maxLength: 6 }),
  fc.string({ unit: 'binary', maxLength: 4 }),
);

const rawArb: fc.Arbitrary<RawTensor> = fc
  .tuple(fc.constantFrom(...DTYPES), fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }))
  .chain(([dtype, shape]) =>
    fc.uint8Array({ minLength: shapeSize(shape) * SAFETENSORS_DTYPE_SIZE[dtype], maxLength: shapeSize(shape) * SAFETENSORS_DTYPE_SIZE[dtype] }).map((data) => ({ dtype, shape, data })),
  );

const fileArb = fc
  .tuple(
    fc.uniqueArray(fc.tuple(nameArb.filter((n) => n !== '__metadata__'), rawArb), { maxLength: 5, selector: ([n]) => n }),
    fc.option(fc.dictionary(fc.string({ maxLength: 4 }), fc.string({ maxLength: 6 }), { maxKeys: 3 }), { nil: undefined }),
  )
  .map(([tensors, meta]) => ({ tensors, meta, bytes: serializeSafetensors(tensors, meta) }));

function headerLength(bytes: Uint8Array): number {
  return Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
}

/** The property every input must satisfy. */
function check(bytes: Uint8Array): 'ok' | 'rejected' {
  let file;
  try {
    file = parseSafetensors(bytes);
  } catch (e) {
    if (e instanceof FormatError) return 'rejected';
    throw e;
  }
  const dataStart = bytes.byteOffset + 8 + headerLength(bytes);
  const dataEnd = bytes.byteOffset + bytes.byteLength;
  let covered = 0;
  for (const [name, t] of file.tensors) {
    const want = shapeSize(t.shape) * SAFETENSORS_DTYPE_SIZE[t.dtype];
    if (t.data.byteLength !== want) throw new Error(`${name}: ${t.data.byteLength} bytes for shape [${t.shape.join(',')}] ${t.dtype}`);
    if (t.data.buffer !== bytes.buffer) throw new Error(`${name}: data is not a view of the input`);
    if (t.data.byteOffset < dataStart || t.data.byteOffset + t.data.byteLength > dataEnd) throw new Error(`${name}: data outside the data section`);
    if (rawToFloat32(t, name).length !== shapeSize(t.shape)) throw new Error(`${name}: decode length`);
    covered += t.data.byteLength;
  }
  if (covered !== dataEnd - dataStart) throw new Error(`tensors cover ${covered} of ${dataEnd - dataStart} data bytes`);
  return 'ok';
}

function withHeader(header: string, dataLen: number): Uint8Array {
  const h = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + h.length + dataLen);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  return out;
}

const SEED = 20240611;

describe('parseSafetensors under fuzzing', () => {
  it('round-trips every valid file the writer makes', () => {
    fc.assert(
      fc.property(fileArb, ({ tensors, meta, bytes }) => {
        expect(check(bytes)).toBe('ok');
        const f = parseSafetensors(bytes);
        expect(f.tensors.size).toBe(tensors.length);
        for (const [name, t] of tensors) {
          const back = f.tensors.get(name)!;
          expect(back.dtype).toBe(t.dtype);
          expect(back.shape).toEqual(t.shape);
          expect(Array.from(back.data)).toEqual(Array.from(t.data));
        }
        expect(Object.fromEntries(f.metadata)).toEqual(Object.fromEntries(Object.entries(meta ?? {})));
      }),
      { numRuns: 1000, seed: SEED },
    );
  });

  it('truncated, byte-flipped and spliced files are parsed correctly or rejected with FormatError', () => {
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant('truncate' as const), at: fc.double({ min: 0, max: 1, noNaN: true }) }),
      fc.record({
        kind: fc.constant('flip' as const),
        flips: fc.array(fc.tuple(fc.double({ min: 0, max: 1, noNaN: true }), fc.integer({ min: 0, max: 255 }), fc.boolean()), { minLength: 1, maxLength: 4 }),
      }),
      fc.record({ kind: fc.constant('splice' as const), at: fc.double({ min: 0, max: 1, noNaN: true }), remove: fc.integer({ min: 0, max: 8 }), insert: fc.uint8Array({ maxLength: 8 }) }),
      fc.record({ kind: fc.constant('length' as const), value: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), small: fc.integer({ min: -16, max: 16 }) }),
    );
    let accepted = 0;
    let rejected = 0;
    fc.assert(
      fc.property(fileArb, mutation, ({ bytes }, m) => {
        let out: Uint8Array;
        const n = headerLength(bytes);
        if (m.kind === 'truncate') out = bytes.slice(0, Math.floor(m.at * bytes.length));
        else if (m.kind === 'flip') {
          out = bytes.slice();
          // Half of the flips land in the header, where the parser has most to get wrong.
          for (const [pos, v, inHeader] of m.flips) out[inHeader ? 8 + Math.floor(pos * n) : Math.floor(pos * out.length)] = v;
        } else if (m.kind === 'splice') {
          const at = Math.floor(m.at * bytes.length);
          out = new Uint8Array([...bytes.subarray(0, at), ...m.insert, ...bytes.subarray(Math.min(bytes.length, at + m.remove))]);
        } else {
          out = bytes.slice();
          const v = m.value % 3n === 0n ? BigInt(Math.max(0, n + m.small)) : m.value;
          new DataView(out.buffer).setBigUint64(0, v, true);
        }
        if (check(out) === 'ok') accepted++;
        else rejected++;
      }),
      { numRuns: 5000, seed: SEED + 1 },
    );
    // The mutations must exercise both outcomes, or the test is not testing anything.
    expect(accepted).toBeGreaterThan(20);
    expect(rejected).toBeGreaterThan(1000);
  });

  it('random JSON headers are parsed correctly or rejected with FormatError', () => {
    fc.assert(
      fc.property(fc.oneof(fc.json(), fc.string({ maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 40 })), fc.integer({ min: 0, max: 64 }), (header, dataLen) => {
        check(withHeader(header, dataLen));
      }),
      { numRuns: 3000, seed: SEED + 2 },
    );
  });

  it('structured headers with random dtypes, shapes and offsets are parsed correctly or rejected', () => {
    const junk = fc.oneof(fc.integer({ min: -3, max: 70 }), fc.double({ noNaN: false }), fc.string({ maxLength: 3 }), fc.constant(null), fc.boolean());
    const dim = fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 0, max: 5 }) }, { weight: 1, arbitrary: junk });
    const entryArb = fc.record(
      {
        dtype: fc.oneof({ weight: 6, arbitrary: fc.constantFrom<unknown>(...DTYPES) }, { weight: 1, arbitrary: fc.oneof(fc.constantFrom('F64', 'I8', '', '__proto__'), junk) }),
        shape: fc.oneof({ weight: 6, arbitrary: fc.array(dim, { maxLength: 3 }) }, { weight: 1, arbitrary: junk }),
        data_offsets: fc.oneof(
          { weight: 6, arbitrary: fc.tuple(fc.integer({ min: 0, max: 70 }), fc.integer({ min: 0, max: 70 })).map(([a, b]) => [a, b] as unknown[]) },
          { weight: 1, arbitrary: fc.array(junk, { maxLength: 3 }) },
        ),
      },
      { requiredKeys: [] },
    );
    const headerArb = fc.array(fc.tuple(fc.oneof(nameArb, fc.constant('__metadata__')), fc.oneof({ weight: 8, arbitrary: entryArb }, { weight: 1, arbitrary: fc.jsonValue() })), { maxLength: 4 });
    let accepted = 0;
    fc.assert(
      fc.property(headerArb, fc.integer({ min: 0, max: 70 }), fc.boolean(), (entries, dataLen, tight) => {
        // Half of the cases get exactly as many data bytes as the largest offset, so that valid files occur.
        const maxEnd = Math.max(0, ...entries.map(([, e]) => (e && typeof e === 'object' && 'data_offsets' in e && Array.isArray(e.data_offsets) ? Number(e.data_offsets[1]) || 0 : 0)));
        const tightLen = Number.isSafeInteger(maxEnd) && maxEnd <= 70 ? maxEnd : dataLen;
        // Duplicate names are written as duplicate JSON keys on purpose.
        const header = `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v) ?? 'null'}`).join(',')}}`;
        if (check(withHeader(header, tight ? tightLen : dataLen)) === 'ok') accepted++;
      }),
      { numRuns: 5000, seed: SEED + 3 },
    );
    expect(accepted).toBeGreaterThan(100);
  });
});
