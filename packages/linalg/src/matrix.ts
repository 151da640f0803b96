import { ConfigError } from '@leanpass/core';

/** A dense Float64 matrix, row-major: element (i, j) is `data[i * cols + j]`. */
export interface Mat {
  readonly rows: number;
  readonly cols: number;
  readonly data: Float64Array;
}

/** A matrix of the given shape, zero-filled or wrapping `data` (not copied; its length must be rows·cols). */
export function mat(rows: number, cols: number, data?: ArrayLike<number>): Mat {
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 0) throw new ConfigError(`mat: expected non-negative integer shape, found [${rows}, ${cols}]`);
  if (data === undefined) return { rows, cols, data: new Float64Array(rows * cols) };
  if (data.length !== rows * cols) throw new ConfigError(`mat: expected ${rows * cols} values for [${rows}, ${cols}], found ${data.length}`);
  return { rows, cols, data: data instanceof Float64Array ? data : Float64Array.from(data) };
}

/** A matrix from an array of rows. */
export function fromRows(rows: ArrayLike<ArrayLike<number>>): Mat {
  const m = rows.length;
  const n = m ? (rows[0] as ArrayLike<number>).length : 0;
  const out = mat(m, n);
  for (let i = 0; i < m; i++) {
    const r = rows[i] as ArrayLike<number>;
    if (r.length !== n) throw new ConfigError(`fromRows: row ${i} has ${r.length} values, expected ${n}`);
    for (let j = 0; j < n; j++) out.data[i * n + j] = r[j] as number;
  }
  return out;
}

export function identity(n: number): Mat {
  const out = mat(n, n);
  for (let i = 0; i < n; i++) out.data[i * n + i] = 1;
  return out;
}

export function clone(a: Mat): Mat {
  return { rows: a.rows, cols: a.cols, data: a.data.slice() };
}

export function get(a: Mat, i: number, j: number): number {
  return a.data[i * a.cols + j] as number;
}

export function transpose(a: Mat): Mat {
  const { rows: m, cols: n, data } = a;
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) out[j * m + i] = data[i * n + j] as number;
  return { rows: n, cols: m, data: out };
}

/** a · b (i-k-j loop order; sums in a fixed order, so results are deterministic). */
export function matmul(a: Mat, b: Mat): Mat {
  if (a.cols !== b.rows) throw new ConfigError(`matmul: inner dimensions differ: [${a.rows}, ${a.cols}] · [${b.rows}, ${b.cols}]`);
  const m = a.rows;
  const k = a.cols;
  const n = b.cols;
  const out = new Float64Array(m * n);
  const ad = a.data;
  const bd = b.data;
  for (let i = 0; i < m; i++) {
    const oi = i * n;
    for (let p = 0; p < k; p++) {
      const v = ad[i * k + p] as number;
      if (v === 0) continue;
      const bp = p * n;
      for (let j = 0; j < n; j++) out[oi + j] = (out[oi + j] as number) + v * (bd[bp + j] as number);
    }
  }
  return { rows: m, cols: n, data: out };
}

/** aᵀ · b without forming aᵀ. */
export function matmulTN(a: Mat, b: Mat): Mat {
  if (a.rows !== b.rows) throw new ConfigError(`matmulTN: row counts differ: [${a.rows}, ${a.cols}]ᵀ · [${b.rows}, ${b.cols}]`);
  const k = a.rows;
  const m = a.cols;
  const n = b.cols;
  const out = new Float64Array(m * n);
  const ad = a.data;
  const bd = b.data;
  for (let p = 0; p < k; p++) {
    const bp = p * n;
    for (let i = 0; i < m; i++) {
      const v = ad[p * m + i] as number;
      if (v === 0) continue;
      const oi = i * n;
      for (let j = 0; j < n; j++) out[oi + j] = (out[oi + j] as number) + v * (bd[bp + j] as number);
    }
  }
  return { rows: m, cols: n, data: out };
}

export function sub(a: Mat, b: Mat): Mat {
  sameShape('sub', a, b);
  const out = new Float64Array(a.data.length);
  for (let i = 0; i < out.length; i++) out[i] = (a.data[i] as number) - (b.data[i] as number);
  return { rows: a.rows, cols: a.cols, data: out };
}

export function add(a: Mat, b: Mat): Mat {
  sameShape('add', a, b);
  const out = new Float64Array(a.data.length);
  for (let i = 0; i < out.length; i++) out[i] = (a.data[i] as number) + (b.data[i] as number);
  return { rows: a.rows, cols: a.cols, data: out };
}

export function scale(a: Mat, s: number): Mat {
  const out = new Float64Array(a.data.length);
  for (let i = 0; i < out.length; i++) out[i] = (a.data[i] as number) * s;
  return { rows: a.rows, cols: a.cols, data: out };
}

/** Frobenius norm (scaled sum, no overflow for large entries). */
export function frobenius(a: Mat): number {
  let s = 0;
  for (let i = 0; i < a.data.length; i++) {
    const v = a.data[i] as number;
    s += v * v;
  }
  return Math.sqrt(s);
}

/** Columns `idx` of a, in that order. */
export function selectCols(a: Mat, idx: ArrayLike<number>): Mat {
  const k = idx.length;
  const out = new Float64Array(a.rows * k);
  for (let i = 0; i < a.rows; i++) for (let j = 0; j < k; j++) out[i * k + j] = a.data[i * a.cols + (idx[j] as number)] as number;
  return { rows: a.rows, cols: k, data: out };
}

/** Rows `idx` of a, in that order. */
export function selectRows(a: Mat, idx: ArrayLike<number>): Mat {
  const k = idx.length;
  const out = new Float64Array(k * a.cols);
  for (let i = 0; i < k; i++) out.set(a.data.subarray((idx[i] as number) * a.cols, ((idx[i] as number) + 1) * a.cols), i * a.cols);
  return { rows: k, cols: a.cols, data: out };
}

/** The block rows [r0, r1) × cols [c0, c1). */
export function block(a: Mat, r0: number, r1: number, c0: number, c1: number): Mat {
  const m = r1 - r0;
  const n = c1 - c0;
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) out[i * n + j] = a.data[(r0 + i) * a.cols + c0 + j] as number;
  return { rows: m, cols: n, data: out };
}

/** Stacks matrices with equal column counts on top of each other. */
export function vstack(parts: readonly Mat[]): Mat {
  if (parts.length === 0) throw new ConfigError('vstack: expected at least one matrix, found none');
  const n = (parts[0] as Mat).cols;
  let m = 0;
  for (const p of parts) {
    if (p.cols !== n) throw new ConfigError(`vstack: expected ${n} columns in every part, found ${p.cols}`);
    m += p.rows;
  }
  const out = new Float64Array(m * n);
  let off = 0;
  for (const p of parts) {
    out.set(p.data, off);
    off += p.data.length;
  }
  return { rows: m, cols: n, data: out };
}

/** Symmetrises in place: a ← (a + aᵀ)/2. */
export function symmetrize(a: Mat): Mat {
  if (a.rows !== a.cols) throw new ConfigError(`symmetrize: expected a square matrix, found [${a.rows}, ${a.cols}]`);
  const n = a.rows;
  const d = a.data;
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const v = 0.5 * ((d[i * n + j] as number) + (d[j * n + i] as number));
      d[i * n + j] = v;
      d[j * n + i] = v;
    }
  }
  return a;
}

export function maxAbs(a: Mat): number {
  let m = 0;
  for (let i = 0; i < a.data.length; i++) m = Math.max(m, Math.abs(a.data[i] as number));
  return m;
}

function sameShape(op: string, a: Mat, b: Mat): void {
  if (a.rows !== b.rows || a.cols !== b.cols) throw new ConfigError(`${op}: shapes differ: [${a.rows}, ${a.cols}] vs [${b.rows}, ${b.cols}]`);
}
