import { Rng } from '@leanpass/core';
import { describe, expect, it } from 'vitest';
import {
  LinalgError,
  block,
  cholesky,
  frobenius,
  identity,
  mat,
  matmul,
  matmulTN,
  maxAbs,
  qrcp,
  selectCols,
  solveTriangular,
  splitColumns,
  strongSwaps,
  sub,
  svd,
  symEig,
  transpose,
  type Mat,
} from './index.js';

function randn(rng: Rng, m: number, n: number): Mat {
  return mat(m, n, rng.normalArray(m * n));
}

/** An m×n matrix with singular values geometrically spaced from 1 down to 1/cond. */
function illConditioned(rng: Rng, m: number, n: number, cond: number): Mat {
  const k = Math.min(m, n);
  const q1 = qrcp(randn(rng, m, k), { wantQ: true }).Q as Mat;
  const q2 = qrcp(randn(rng, n, k), { wantQ: true }).Q as Mat;
  const s = mat(k, k);
  for (let i = 0; i < k; i++) s.data[i * k + i] = Math.pow(cond, -i / (k - 1));
  return matmul(matmul(q1, s), transpose(q2));
}

function rel(a: Mat, b: Mat): number {
  return frobenius(sub(a, b)) / Math.max(frobenius(b), 1e-300);
}

function orthoErr(q: Mat): number {
  return maxAbs(sub(matmulTN(q, q), identity(q.cols)));
}

function diag(s: ArrayLike<number>): Mat {
  const out = mat(s.length, s.length);
  for (let i = 0; i < s.length; i++) out.data[i * s.length + i] = s[i] as number;
  return out;
}

describe('matrix helpers', () => {
  it('matmul and matmulTN agree with the transpose', () => {
    const rng = new Rng(1);
    const a = randn(rng, 5, 3);
    const b = randn(rng, 5, 4);
    expect(rel(matmulTN(a, b), matmul(transpose(a), b))).toBeLessThan(1e-15);
    expect(() => matmul(a, b)).toThrow(/inner dimensions differ: \[5, 3\] · \[5, 4\]/);
  });
});

describe('symEig', () => {
  it.each([
    ['random', 1],
    ['ill-conditioned (cond 1e10)', 1e10],
  ])('reconstructs and is orthonormal: %s', (_label, cond) => {
    const rng = new Rng(2);
    const n = 40;
    const x = cond === 1 ? randn(rng, n, n) : illConditioned(rng, n, n, Math.sqrt(cond));
    const g = matmulTN(x, x); // SPD with condition `cond`
    const { values, vectors } = symEig(g);
    for (let i = 1; i < n; i++) expect(values[i] as number).toBeLessThanOrEqual(values[i - 1] as number);
    expect(orthoErr(vectors)).toBeLessThan(1e-12);
    expect(rel(matmul(matmul(vectors, diag(values)), transpose(vectors)), g)).toBeLessThan(1e-12);
  });

  it('finds known eigenvalues', () => {
    const a = mat(2, 2, [2, 1, 1, 2]);
    const { values } = symEig(a);
    expect(values[0]).toBeCloseTo(3, 12);
    expect(values[1]).toBeCloseTo(1, 12);
  });
});

describe('cholesky', () => {
  it('factors an SPD matrix with no jitter', () => {
    const rng = new Rng(3);
    const x = randn(rng, 60, 30);
    const g = matmulTN(x, x);
    const { L, epsilon } = cholesky(g);
    expect(epsilon).toBe(0);
    for (let i = 0; i < 30; i++) for (let j = i + 1; j < 30; j++) expect(L.data[i * 30 + j]).toBe(0);
    expect(rel(matmul(L, transpose(L)), g)).toBeLessThan(1e-14);
  });

  it('escalates jitter on a rank-deficient Gram and reports the ε used', () => {
    const rng = new Rng(4);
    const x = randn(rng, 10, 30); // rank 10 Gram of size 30
    const g = matmulTN(x, x);
    const { L, epsilon, shift } = cholesky(g);
    expect(epsilon).toBeGreaterThan(0);
    expect(epsilon).toBeLessThanOrEqual(1e-2);
    let tr = 0;
    for (let i = 0; i < 30; i++) tr += g.data[i * 31] as number;
    expect(shift).toBeCloseTo((epsilon * tr) / 30, 12);
    const shifted = mat(30, 30, g.data.slice());
    for (let i = 0; i < 30; i++) shifted.data[i * 31] = (shifted.data[i * 31] as number) + shift;
    expect(rel(matmul(L, transpose(L)), shifted)).toBeLessThan(1e-13);
  });

  it('throws a LinalgError on an indefinite matrix', () => {
    const a = mat(2, 2, [1, 0, 0, -1]);
    expect(() => cholesky(a)).toThrow(LinalgError);
    expect(() => cholesky(a)).toThrow(/not positive definite even with jitter 0.01/);
  });
});

describe('solveTriangular', () => {
  it('solves upper, lower and transposed systems', () => {
    const rng = new Rng(5);
    const n = 20;
    const u = randn(rng, n, n);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < i; j++) u.data[i * n + j] = 0;
      u.data[i * n + i] = 3 + Math.abs(u.data[i * n + i] as number);
    }
    const l = transpose(u);
    const b = randn(rng, n, 3);
    expect(rel(matmul(u, solveTriangular(u, b)), b)).toBeLessThan(1e-13);
    expect(rel(matmul(l, solveTriangular(l, b, { lower: true })), b)).toBeLessThan(1e-13);
    expect(rel(matmul(transpose(u), solveTriangular(u, b, { transpose: true })), b)).toBeLessThan(1e-13);
    expect(rel(matmul(transpose(l), solveTriangular(l, b, { lower: true, transpose: true })), b)).toBeLessThan(1e-13);
    const sing = mat(2, 2, [1, 1, 0, 0]);
    expect(() => solveTriangular(sing, mat(2, 1, [1, 1]))).toThrow(/diagonal element 1 is 0/);
  });
});

describe('qrcp', () => {
  it.each([
    ['random tall', 30, 20, 1],
    ['random wide', 15, 40, 1],
    ['ill-conditioned (cond 1e9)', 30, 30, 1e9],
  ])('AΠ = QR, Q orthonormal, |diag R| non-increasing: %s', (_label, m, n, cond) => {
    const rng = new Rng(6);
    const a = cond === 1 ? randn(rng, m, n) : illConditioned(rng, m, n, cond);
    const { perm, R, Q } = qrcp(a, { wantQ: true });
    expect([...perm].sort((x, y) => x - y)).toEqual(Array.from({ length: n }, (_, i) => i));
    expect(orthoErr(Q as Mat)).toBeLessThan(1e-13);
    expect(rel(matmul(Q as Mat, R), selectCols(a, perm))).toBeLessThan(1e-13);
    const k = Math.min(m, n);
    for (let i = 0; i < k; i++) for (let j = 0; j < i; j++) expect(R.data[i * n + j]).toBe(0);
    for (let i = 1; i < k; i++) expect(Math.abs(R.data[i * n + i] as number)).toBeLessThanOrEqual(Math.abs(R.data[(i - 1) * n + i - 1] as number) * (1 + 1e-12));
    // Rank-revealing: each |R_ii| dominates the rest of its trailing block's columns.
    for (let i = 0; i < k; i++) {
      for (let c = i + 1; c < n; c++) {
        let s = 0;
        for (let r = i; r < k; r++) s += (R.data[r * n + c] as number) ** 2;
        expect(Math.sqrt(s)).toBeLessThanOrEqual(Math.abs(R.data[i * n + i] as number) * (1 + 1e-10));
      }
    }
  });

  it('picks the column of largest norm first', () => {
    const a = mat(2, 3, [1, 0, 5, 0, 2, 0]);
    const { perm } = qrcp(a);
    expect(perm[0]).toBe(2);
    expect(perm[1]).toBe(1);
  });
});

describe('splitColumns', () => {
  it.each(['none', 'qrcp', 'strong'] as const)('A[:, keep]·A′ = A[:, rest] exactly (%s)', (pivot) => {
    const rng = new Rng(7);
    const a = randn(rng, 12, 30);
    const { keep, rest, coef } = splitColumns(a, { pivot });
    expect([...keep, ...rest].sort((x, y) => x - y)).toEqual(Array.from({ length: 30 }, (_, i) => i));
    expect(rel(matmul(selectCols(a, keep), coef), selectCols(a, rest))).toBeLessThan(1e-12);
  });

  it('strong swaps bound |A′| by f, match a fresh solve and bound σ_min(A_keep)', () => {
    const rng = new Rng(8);
    const r = 10;
    const n = 40;
    // Outlier columns make the naive and even the QRCP split less well conditioned.
    const a = randn(rng, r, n);
    for (let i = 0; i < r; i++) for (let j = 0; j < n; j += 7) a.data[i * n + j] = (a.data[i * n + j] as number) * 30;
    const f = 1.05;
    // Start from the naive split so that swaps are needed.
    const s = splitColumns(a, { pivot: 'none' });
    expect(maxAbs(s.coef)).toBeGreaterThan(f);
    const swaps = strongSwaps(s.coef, s.keep, s.rest, f, 10_000);
    expect(maxAbs(s.coef)).toBeLessThanOrEqual(f);
    expect(swaps).toBeGreaterThan(0);
    expect(maxAbs(splitColumns(a, { pivot: 'strong', f }).coef)).toBeLessThanOrEqual(f);
    // Fresh solve with the final index sets.
    const ak = selectCols(a, s.keep);
    const q = qrcp(ak, { wantQ: true });
    const fresh = solveTriangular(q.R, matmulTN(q.Q as Mat, selectCols(a, s.rest)));
    const unperm = mat(r, n - r);
    for (let i = 0; i < r; i++) unperm.data.set(fresh.data.subarray(i * (n - r), (i + 1) * (n - r)), (q.perm[i] as number) * (n - r));
    expect(rel(s.coef, unperm)).toBeLessThan(1e-10);
    const sA = svd(a).s;
    const sK = svd(ak).s;
    expect(sK[r - 1] as number).toBeGreaterThanOrEqual(((sA[r - 1] as number) / Math.sqrt(1 + f * f * r * (n - r))) * (1 - 1e-12));
  });

  it('QRCP keeps A′ small where the naive split does not', () => {
    const rng = new Rng(9);
    const a = illConditioned(rng, 8, 24, 1e3);
    // Make the first 8 columns nearly dependent.
    for (let i = 0; i < 8; i++) a.data[i * 24 + 7] = (a.data[i * 24 + 6] as number) + 1e-9 * (a.data[i * 24 + 7] as number);
    const naive = splitColumns(a, { pivot: 'none' });
    const piv = splitColumns(a, { pivot: 'qrcp' });
    expect(maxAbs(piv.coef)).toBeLessThan(maxAbs(naive.coef) / 100);
  });
});

describe('svd', () => {
  it.each([
    ['tall', 30, 12, 1],
    ['wide', 10, 25, 1],
    ['ill-conditioned (cond 1e8)', 24, 24, 1e8],
  ])('reconstructs, is orthonormal and sorted: %s', (_label, m, n, cond) => {
    const rng = new Rng(10);
    const a = cond === 1 ? randn(rng, m, n) : illConditioned(rng, m, n, cond);
    const { U, s, V } = svd(a);
    const k = Math.min(m, n);
    expect(U.cols).toBe(k);
    expect(V.cols).toBe(k);
    for (let i = 1; i < k; i++) expect(s[i] as number).toBeLessThanOrEqual(s[i - 1] as number);
    expect(orthoErr(U)).toBeLessThan(1e-12);
    expect(orthoErr(V)).toBeLessThan(1e-12);
    expect(rel(matmul(matmul(U, diag(s)), transpose(V)), a)).toBeLessThan(1e-12);
    if (cond !== 1) {
      expect(s[k - 1] as number).toBeCloseTo(1 / cond, 14);
      // relative accuracy of the smallest singular value
      expect(Math.abs((s[k - 1] as number) * cond - 1)).toBeLessThan(1e-4);
    }
  });

  it('block extracts sub-matrices', () => {
    const a = mat(3, 3, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect([...block(a, 1, 3, 0, 2).data]).toEqual([4, 5, 7, 8]);
  });
});
