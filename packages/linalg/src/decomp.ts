import { ConfigError, LeanpassError } from '@leanpass/core';
import { EVD, Matrix, SVD } from 'ml-matrix';
import { mat, type Mat } from './matrix.js';

/** A factorisation that cannot be computed (not positive definite even with the largest jitter, singular triangle…). */
export class LinalgError extends LeanpassError {
  override readonly name = 'LinalgError';
}

function toMl(a: Mat): Matrix {
  return Matrix.from1DArray(a.rows, a.cols, a.data);
}

function fromMl(m: Matrix): Mat {
  const rows = m.rows;
  const cols = m.columns;
  const out = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    const r = m.getRow(i);
    for (let j = 0; j < cols; j++) out[i * cols + j] = r[j] as number;
  }
  return { rows, cols, data: out };
}

function checkSquare(op: string, a: Mat): void {
  if (a.rows !== a.cols) throw new ConfigError(`${op}: expected a square matrix, found [${a.rows}, ${a.cols}]`);
}

function checkFinite(op: string, a: Mat): void {
  for (let i = 0; i < a.data.length; i++) {
    if (!Number.isFinite(a.data[i])) throw new LinalgError(`${op}: expected finite entries, found ${a.data[i]} at (${Math.floor(i / a.cols)}, ${i % a.cols})`);
  }
}

// ---------------------------------------------------------------------------------------------
// Symmetric eigendecomposition
// ---------------------------------------------------------------------------------------------

export interface SymEig {
  /** Eigenvalues, descending. */
  values: Float64Array;
  /** Eigenvectors as columns, in the order of `values` (n×n, orthonormal). */
  vectors: Mat;
}

/**
 * Eigendecomposition of a symmetric matrix (ml-matrix's EVD: Householder tridiagonalisation + QL),
 * sorted by descending eigenvalue. Only the symmetric part (a + aᵀ)/2 is used. Deterministic.
 */
export function symEig(a: Mat): SymEig {
  checkSquare('symEig', a);
  checkFinite('symEig', a);
  const n = a.rows;
  if (n === 0) return { values: new Float64Array(0), vectors: mat(0, 0) };
  const s = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) s[i * n + j] = 0.5 * ((a.data[i * n + j] as number) + (a.data[j * n + i] as number));
  const evd = new EVD(Matrix.from1DArray(n, n, s), { assumeSymmetric: true });
  const lam = evd.realEigenvalues;
  const vecs = evd.eigenvectorMatrix;
  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => (lam[y] as number) - (lam[x] as number) || x - y);
  const values = new Float64Array(n);
  const vd = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const row = vecs.getRow(i);
    for (let k = 0; k < n; k++) vd[i * n + k] = row[order[k] as number] as number;
  }
  for (let k = 0; k < n; k++) values[k] = lam[order[k] as number] as number;
  return { values, vectors: { rows: n, cols: n, data: vd } };
}

// ---------------------------------------------------------------------------------------------
// Cholesky with a jitter policy
// ---------------------------------------------------------------------------------------------

/** The default jitter ladder: relative ε (times mean(diag)) tried in order after ε = 0. */
export const DEFAULT_JITTER = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2] as const;

export interface CholeskyResult {
  /** Lower triangular L with L Lᵀ = a + ε·mean(diag a)·I. */
  L: Mat;
  /** The relative jitter that was needed (0 when none). */
  epsilon: number;
  /** The absolute amount added to the diagonal, ε·mean(diag a). */
  shift: number;
}

/** Plain Cholesky; returns undefined when a pivot is not positive. */
function tryCholesky(a: Mat, shift: number): Mat | undefined {
  const n = a.rows;
  const L = new Float64Array(n * n);
  const ad = a.data;
  for (let j = 0; j < n; j++) {
    let d = (ad[j * n + j] as number) + shift;
    const lj = j * n;
    for (let k = 0; k < j; k++) d -= (L[lj + k] as number) * (L[lj + k] as number);
    if (!(d > 0) || !Number.isFinite(d)) return undefined;
    const djj = Math.sqrt(d);
    L[lj + j] = djj;
    for (let i = j + 1; i < n; i++) {
      const li = i * n;
      let s = ad[i * n + j] as number;
      for (let k = 0; k < j; k++) s -= (L[li + k] as number) * (L[lj + k] as number);
      L[li + j] = s / djj;
    }
  }
  return { rows: n, cols: n, data: L };
}

/**
 * Cholesky factorisation of a symmetric positive (semi)definite matrix. Tries a as is, then
 * a + ε·mean(diag a)·I for each ε of `jitter` (default 1e-6 … 1e-2) and reports the ε used. Throws a
 * LinalgError naming the largest ε tried when every rung fails.
 */
export function cholesky(a: Mat, opts: { jitter?: readonly number[] } = {}): CholeskyResult {
  checkSquare('cholesky', a);
  checkFinite('cholesky', a);
  const n = a.rows;
  let trace = 0;
  for (let i = 0; i < n; i++) trace += a.data[i * n + i] as number;
  const meanDiag = n ? trace / n : 0;
  const ladder = [0, ...(opts.jitter ?? DEFAULT_JITTER)];
  for (const eps of ladder) {
    const shift = eps * Math.abs(meanDiag);
    const L = tryCholesky(a, shift);
    if (L) return { L, epsilon: eps, shift };
  }
  throw new LinalgError(
    `cholesky: the ${n}×${n} matrix is not positive definite even with jitter ${ladder[ladder.length - 1]}·mean(diag) = ${(ladder[ladder.length - 1] as number) * Math.abs(meanDiag)} (mean diag ${meanDiag}); ` +
      'expected a symmetric positive semidefinite matrix (a Gram from enough samples)',
  );
}

// ---------------------------------------------------------------------------------------------
// Triangular solves
// ---------------------------------------------------------------------------------------------

export interface TriangularOptions {
  /** The triangle is lower (default false: upper). */
  lower?: boolean;
  /** Solve with the transpose of the triangle. */
  transpose?: boolean;
}

/**
 * Solves T X = B (or Tᵀ X = B) for a square triangular T by substitution; B may have many columns.
 * Throws a LinalgError on a zero diagonal.
 */
export function solveTriangular(t: Mat, b: Mat, opts: TriangularOptions = {}): Mat {
  checkSquare('solveTriangular', t);
  if (b.rows !== t.rows) throw new ConfigError(`solveTriangular: right-hand side has ${b.rows} rows, expected ${t.rows}`);
  const n = t.rows;
  const k = b.cols;
  const td = t.data;
  // Effective orientation: solving with Tᵀ swaps lower/upper; element (i, j) of the effective matrix.
  const lower = (opts.lower ?? false) !== (opts.transpose ?? false);
  const at = opts.transpose ? (i: number, j: number): number => td[j * n + i] as number : (i: number, j: number): number => td[i * n + j] as number;
  const x = b.data.slice();
  for (let step = 0; step < n; step++) {
    const i = lower ? step : n - 1 - step;
    const d = at(i, i);
    if (d === 0 || !Number.isFinite(d)) throw new LinalgError(`solveTriangular: diagonal element ${i} is ${d}; the triangle is singular`);
    const xi = i * k;
    if (lower) {
      for (let j = 0; j < i; j++) {
        const c = at(i, j);
        if (c === 0) continue;
        const xj = j * k;
        for (let q = 0; q < k; q++) x[xi + q] = (x[xi + q] as number) - c * (x[xj + q] as number);
      }
    } else {
      for (let j = i + 1; j < n; j++) {
        const c = at(i, j);
        if (c === 0) continue;
        const xj = j * k;
        for (let q = 0; q < k; q++) x[xi + q] = (x[xi + q] as number) - c * (x[xj + q] as number);
      }
    }
    for (let q = 0; q < k; q++) x[xi + q] = (x[xi + q] as number) / d;
  }
  return { rows: n, cols: k, data: x };
}

// ---------------------------------------------------------------------------------------------
// Column-pivoted QR (Businger–Golub) and strong-RRQR ("maxvol") swaps
// ---------------------------------------------------------------------------------------------

export interface Qrcp {
  /** Column permutation: column j of AΠ is column perm[j] of A. */
  perm: Int32Array;
  /** R (k×n, k = number of steps), upper trapezoidal, columns in pivoted order: AΠ = Q R. */
  R: Mat;
  /** Q (m×k), orthonormal columns; only when `wantQ`. */
  Q?: Mat;
}

/**
 * Householder QR with column pivoting (Businger–Golub 1965): at each step the remaining column of
 * largest norm (of the part below the current row) is moved to the front, so |R₀₀| ≥ |R₁₁| ≥ … .
 * Column norms are recomputed exactly at every step (no downdating drift); ties go to the lowest
 * index, so the result is deterministic. `steps` caps the number of Householder steps (default min(m, n)).
 */
export function qrcp(a: Mat, opts: { steps?: number; wantQ?: boolean } = {}): Qrcp {
  checkFinite('qrcp', a);
  const m = a.rows;
  const n = a.cols;
  const k = Math.min(opts.steps ?? Math.min(m, n), m, n);
  const w = a.data.slice();
  const perm = Int32Array.from({ length: n }, (_, i) => i);
  const vs: Float64Array[] = [];
  const betas: number[] = [];
  for (let j = 0; j < k; j++) {
    // Pivot: the largest remaining column norm over rows j..m-1.
    let best = -1;
    let bestNorm = -1;
    for (let c = j; c < n; c++) {
      let s = 0;
      for (let i = j; i < m; i++) {
        const v = w[i * n + c] as number;
        s += v * v;
      }
      if (s > bestNorm) {
        bestNorm = s;
        best = c;
      }
    }
    if (best !== j) {
      for (let i = 0; i < m; i++) {
        const t = w[i * n + j] as number;
        w[i * n + j] = w[i * n + best] as number;
        w[i * n + best] = t;
      }
      const t = perm[j] as number;
      perm[j] = perm[best] as number;
      perm[best] = t;
    }
    // Householder vector for column j, rows j..m-1.
    const len = m - j;
    const v = new Float64Array(len);
    let norm2 = 0;
    for (let i = 0; i < len; i++) {
      const x = w[(j + i) * n + j] as number;
      v[i] = x;
      norm2 += x * x;
    }
    const norm = Math.sqrt(norm2);
    let beta = 0;
    if (norm > 0) {
      const x0 = v[0] as number;
      const alpha = x0 >= 0 ? -norm : norm;
      v[0] = x0 - alpha;
      let vn2 = 0;
      for (let i = 0; i < len; i++) vn2 += (v[i] as number) * (v[i] as number);
      beta = vn2 > 0 ? 2 / vn2 : 0;
      // Apply H = I − β v vᵀ to columns j..n-1.
      for (let c = j; c < n; c++) {
        let dot = 0;
        for (let i = 0; i < len; i++) dot += (v[i] as number) * (w[(j + i) * n + c] as number);
        const f = beta * dot;
        if (f === 0) continue;
        for (let i = 0; i < len; i++) w[(j + i) * n + c] = (w[(j + i) * n + c] as number) - f * (v[i] as number);
      }
      w[j * n + j] = alpha;
      for (let i = 1; i < len; i++) w[(j + i) * n + j] = 0;
    }
    vs.push(v);
    betas.push(beta);
  }
  const R = mat(k, n);
  for (let i = 0; i < k; i++) for (let c = i; c < n; c++) R.data[i * n + c] = w[i * n + c] as number;
  const out: Qrcp = { perm, R };
  if (opts.wantQ) {
    // Q = H₀ H₁ … H_{k−1} applied to the first k columns of I (backward accumulation).
    const Q = mat(m, k);
    for (let i = 0; i < k; i++) Q.data[i * k + i] = 1;
    for (let j = k - 1; j >= 0; j--) {
      const v = vs[j] as Float64Array;
      const beta = betas[j] as number;
      if (beta === 0) continue;
      for (let c = 0; c < k; c++) {
        let dot = 0;
        for (let i = 0; i < v.length; i++) dot += (v[i] as number) * (Q.data[(j + i) * k + c] as number);
        const f = beta * dot;
        if (f === 0) continue;
        for (let i = 0; i < v.length; i++) Q.data[(j + i) * k + c] = (Q.data[(j + i) * k + c] as number) - f * (v[i] as number);
      }
    }
    out.Q = Q;
  }
  return out;
}

export interface ColumnSplit {
  /** The r kept columns (become the identity block), in order. */
  keep: Int32Array;
  /** The other n − r columns, in order. */
  rest: Int32Array;
  /** A′ = A[:, keep]⁻¹ A[:, rest] (r × (n − r)). */
  coef: Mat;
  /** Strong swaps done. */
  swaps: number;
}

/**
 * Splits the columns of a full-row-rank A (r×n, r ≤ n) into r kept and n − r rest columns with
 * A′ = A_keep⁻¹ A_rest, by QRCP (keep = the first r pivots; A′ = R₁₁⁻¹R₁₂) and, with `strong`, then
 * Gu–Eisenstat / maxvol swaps while some |A′ᵢⱼ| > f (each swap multiplies |det A_keep| by more than
 * f, so it terminates). `pivot: 'none'` keeps the first r columns (the naive split, for comparisons).
 */
export function splitColumns(a: Mat, opts: { pivot?: 'none' | 'qrcp' | 'strong'; f?: number; maxSwaps?: number } = {}): ColumnSplit {
  const r = a.rows;
  const n = a.cols;
  if (r > n) throw new ConfigError(`splitColumns: expected rows ≤ columns, found [${r}, ${n}]`);
  const pivot = opts.pivot ?? 'qrcp';
  let keep: Int32Array;
  let rest: Int32Array;
  let coef: Mat;
  if (pivot === 'none') {
    keep = Int32Array.from({ length: r }, (_, i) => i);
    rest = Int32Array.from({ length: n - r }, (_, i) => r + i);
    const q = qrcp(selectColumns(a, keep), { wantQ: true });
    // A_keep Π₀ = Q R ⇒ A_keep⁻¹ A_rest = Π₀ R⁻¹ Qᵀ A_rest.
    const qtRest = mulTN(q.Q as Mat, selectColumns(a, rest));
    const y = solveTriangular(q.R, qtRest);
    coef = mat(r, n - r);
    for (let i = 0; i < r; i++) coef.data.set(y.data.subarray(i * (n - r), (i + 1) * (n - r)), (q.perm[i] as number) * (n - r));
  } else {
    const q = qrcp(a, { steps: r });
    keep = q.perm.slice(0, r);
    rest = q.perm.slice(r);
    const R11 = mat(r, r);
    const R12 = mat(r, n - r);
    for (let i = 0; i < r; i++) {
      for (let j = 0; j < r; j++) R11.data[i * r + j] = q.R.data[i * n + j] as number;
      for (let j = 0; j < n - r; j++) R12.data[i * (n - r) + j] = q.R.data[i * n + r + j] as number;
    }
    coef = solveTriangular(R11, R12);
  }
  let swaps = 0;
  if (pivot === 'strong' && r > 0 && n > r) swaps = strongSwaps(coef, keep, rest, opts.f ?? 2, opts.maxSwaps ?? 50 * r + 100);
  return { keep, rest, coef, swaps };
}

/**
 * In-place maxvol swaps on A′ (r × (n−r)) and the index lists while max |A′ᵢⱼ| > f. Update per swap
 * (p = A′ᵢⱼ, u = A′_{:,j} − eᵢ): A′ ← A′ − u·A′_{i,:}/p, then column j ← eᵢ − u/p. Returns the swap count.
 */
export function strongSwaps(coef: Mat, keep: Int32Array, rest: Int32Array, f: number, maxSwaps: number): number {
  if (!(f >= 1)) throw new ConfigError(`strongSwaps: expected f ≥ 1, found ${f}`);
  const r = coef.rows;
  const k = coef.cols;
  const d = coef.data;
  let swaps = 0;
  while (swaps < maxSwaps) {
    let bi = -1;
    let bj = -1;
    let bv = f;
    for (let i = 0; i < r; i++) {
      for (let j = 0; j < k; j++) {
        const v = Math.abs(d[i * k + j] as number);
        if (v > bv) {
          bv = v;
          bi = i;
          bj = j;
        }
      }
    }
    if (bi < 0) break;
    const p = d[bi * k + bj] as number;
    const u = new Float64Array(r);
    for (let i = 0; i < r; i++) u[i] = (d[i * k + bj] as number) - (i === bi ? 1 : 0);
    const rowI = d.slice(bi * k, (bi + 1) * k);
    for (let i = 0; i < r; i++) {
      const ui = (u[i] as number) / p;
      if (ui === 0) continue;
      for (let j = 0; j < k; j++) d[i * k + j] = (d[i * k + j] as number) - ui * (rowI[j] as number);
    }
    for (let i = 0; i < r; i++) d[i * k + bj] = (i === bi ? 1 : 0) - (u[i] as number) / p;
    const t = keep[bi] as number;
    keep[bi] = rest[bj] as number;
    rest[bj] = t;
    swaps++;
  }
  return swaps;
}

function selectColumns(a: Mat, idx: ArrayLike<number>): Mat {
  const k = idx.length;
  const out = mat(a.rows, k);
  for (let i = 0; i < a.rows; i++) for (let j = 0; j < k; j++) out.data[i * k + j] = a.data[i * a.cols + (idx[j] as number)] as number;
  return out;
}

function mulTN(a: Mat, b: Mat): Mat {
  const out = mat(a.cols, b.cols);
  for (let p = 0; p < a.rows; p++) {
    for (let i = 0; i < a.cols; i++) {
      const v = a.data[p * a.cols + i] as number;
      if (v === 0) continue;
      for (let j = 0; j < b.cols; j++) out.data[i * b.cols + j] = (out.data[i * b.cols + j] as number) + v * (b.data[p * b.cols + j] as number);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// SVD
// ---------------------------------------------------------------------------------------------

export interface Svd {
  /** m×k left singular vectors (k = min(m, n)). */
  U: Mat;
  /** Singular values, descending. */
  s: Float64Array;
  /** n×k right singular vectors. */
  V: Mat;
}

/**
 * Thin SVD a = U diag(s) Vᵀ with ml-matrix's Golub–Kahan–Reinsch SVD (auto-transposed for wide
 * matrices), sorted descending. Accurate for small singular values, unlike the Gram + eigen route
 * (which squares the condition number); use `symEig` on a Gram when only the dominant part matters
 * and speed does.
 */
export function svd(a: Mat): Svd {
  checkFinite('svd', a);
  const m = a.rows;
  const n = a.cols;
  const k = Math.min(m, n);
  if (k === 0) return { U: mat(m, 0), s: new Float64Array(0), V: mat(n, 0) };
  const dec = new SVD(toMl(a), { autoTranspose: true });
  const U = fromMl(dec.leftSingularVectors);
  const V = fromMl(dec.rightSingularVectors);
  const sd = dec.diagonal;
  const order = Array.from({ length: sd.length }, (_, i) => i).sort((x, y) => (sd[y] as number) - (sd[x] as number) || x - y).slice(0, k);
  const s = Float64Array.from(order, (i) => sd[i] as number);
  const Uo = mat(m, k);
  const Vo = mat(n, k);
  for (let i = 0; i < m; i++) for (let c = 0; c < k; c++) Uo.data[i * k + c] = U.data[i * U.cols + (order[c] as number)] as number;
  for (let i = 0; i < n; i++) for (let c = 0; c < k; c++) Vo.data[i * k + c] = V.data[i * V.cols + (order[c] as number)] as number;
  return { U: Uo, s, V: Vo };
}
