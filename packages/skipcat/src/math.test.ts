import { Rng } from '@leanpass/core';
import { frobenius, mat, matmul, matmulTN, selectCols, sub, transpose, vstack, type Mat } from '@leanpass/linalg';
import { describe, expect, it } from 'vitest';
import { skipSplit, solveRank, spectrum, truncate, unitParams } from './math.js';

function randn(rng: Rng, m: number, n: number, scale = 1): Mat {
  return mat(m, n, rng.normalArray(m * n, scale));
}

/** Calibration-like rows X [T, n] with correlated channels and a few outliers. */
function activations(rng: Rng, T: number, n: number): Mat {
  const mix = randn(rng, n, n, 1 / Math.sqrt(n));
  const x = matmul(randn(rng, T, n), mix);
  for (let t = 0; t < T; t++) for (let j = 0; j < n; j += 9) x.data[t * n + j] = (x.data[t * n + j] as number) * 8;
  return x;
}

function rel(a: Mat, b: Mat): number {
  return frobenius(sub(a, b)) / frobenius(b);
}

/** ‖(W − BA)Xᵀ‖²_F for rows X. */
function outputError2(w: Mat, approx: Mat, x: Mat): number {
  const e = matmul(sub(w, approx), transpose(x));
  const f = frobenius(e);
  return f * f;
}

describe('rank solving and parameter formulas', () => {
  it('matches the spec table for the tiny host (d 128, F 344) at 20/40/60 %', () => {
    const d = 128;
    const F = 344;
    const row = (c: number): number[] => {
      const k = 1 - c;
      return [
        solveRank(k, d, d, false), // plain q/k/v/o
        solveRank(k, d, F, false), // plain gate/up
        solveRank(k, d, 3 * d, false), // Cat QKV
        solveRank(k, d, 2 * F, false), // Cat GU
        solveRank(k, d, d, true), // Skip o
        solveRank(k, F, d, true), // Skip down
        solveRank(k, d, 3 * d, true), // SkipCat QKV
        solveRank(k, d, 2 * F, true), // SkipCat GU
      ];
    };
    expect(row(0.2)).toEqual([51, 74, 76, 86, 70, 92, 94, 98]);
    expect(row(0.4)).toEqual([38, 55, 57, 64, 47, 64, 66, 70]);
    expect(row(0.6)).toEqual([25, 37, 38, 43, 28, 40, 41, 45]);
  });

  it('matches the spec table for LLaMA-2-7B at 20 %', () => {
    const d = 4096;
    const F = 11008;
    expect([solveRank(0.8, d, d, false), solveRank(0.8, d, F, false), solveRank(0.8, d, 3 * d, false), solveRank(0.8, d, 2 * F, false), solveRank(0.8, d, d, true), solveRank(0.8, F, d, true), solveRank(0.8, d, 3 * d, true), solveRank(0.8, d, 2 * F, true)]).toEqual([
      1638, 2388, 2457, 2762, 2264, 2973, 3010, 3140,
    ]);
  });

  it('the solved rank is the largest within budget', () => {
    const rng = new Rng(1);
    for (let t = 0; t < 300; t++) {
      const n = 1 + rng.int(300);
      const m = 1 + rng.int(900);
      const keep = 0.05 + 0.94 * rng.next();
      for (const skip of [false, true]) {
        const r = solveRank(keep, n, m, skip);
        const P = n * m;
        const full = Math.min(n, m);
        if (unitParams(r, n, m, skip) > keep * P) expect(r).toBe(1); // clamped up to 1
        else if (r < full) expect(unitParams(r + 1, n, m, skip)).toBeGreaterThan(keep * P);
      }
    }
  });

  it('formulas: r(m+n), r(m+n−r); Skip saves for every r < min(m, n) and breaks even at full rank', () => {
    expect(unitParams(10, 30, 20, false)).toBe(500);
    expect(unitParams(10, 30, 20, true)).toBe(400);
    for (let r = 1; r < 20; r++) expect(unitParams(r, 30, 20, true)).toBeLessThan(600);
    expect(unitParams(20, 30, 20, true)).toBe(600);
    expect(solveRank(1, 30, 20, true)).toBe(20);
    expect(solveRank(0.8, 64, 64, false, 8) % 8).toBe(0);
  });
});

describe('whitened decomposition', () => {
  const rng = new Rng(2);
  const n = 24;
  const x = activations(rng, 200, n);
  const G = matmulTN(x, x);
  const single = randn(rng, 16, n); // output route (16 ≤ 24)
  const group = vstack([randn(rng, 24, n), randn(rng, 12, n), randn(rng, 12, n)]); // input route (48 > 24)

  it.each([
    ['single (output route)', single],
    ['Cat group (input route)', group],
  ])('full rank reproduces dense: %s', (_l, w) => {
    const sp = spectrum(w, G);
    const r = Math.min(w.rows, n);
    const f = truncate(w, sp, r);
    expect(rel(matmul(f.B, f.A), w)).toBeLessThan(1e-11);
  });

  it.each([
    ['single (output route)', single, 'output'],
    ['Cat group (input route)', group, 'input'],
  ])('truncation identity ‖(W − BA)Xᵀ‖² = Σ_{i>r} σ_i²: %s', (_l, w, route) => {
    const sp = spectrum(w, G);
    expect(sp.route).toBe(route);
    for (const r of [3, 8, 13]) {
      const f = truncate(w, sp, r);
      let tail = 0;
      for (let i = r; i < sp.sigma.length; i++) tail += (sp.sigma[i] as number) ** 2;
      const err = outputError2(w, matmul(f.B, f.A), x);
      expect(Math.abs(err - tail) / tail).toBeLessThan(1e-9);
    }
  });

  it('Cat: each member equals its row block of the stacked reconstruction; the error sums over members', () => {
    const sp = spectrum(group, G);
    const f = truncate(group, sp, 10);
    const recon = matmul(f.B, f.A);
    const bq = mat(24, 10, f.B.data.subarray(0, 240));
    const rq = matmul(bq, f.A);
    expect(rel(rq, mat(24, n, recon.data.subarray(0, 24 * n)))).toBeLessThan(1e-14);
  });

  it('routes agree: output vs input route, eigen vs Cholesky square root', () => {
    const sp1 = spectrum(single, G);
    const tall = vstack([single, single, single]); // forces the input route with the same left space
    const spE = spectrum(tall, G, { whitening: 'eigen' });
    const spC = spectrum(tall, G, { whitening: 'cholesky' });
    const r = 9;
    const wr = (w: Mat, sp: ReturnType<typeof spectrum>): Mat => {
      const f = truncate(w, sp, r);
      return matmul(f.B, f.A);
    };
    const a = wr(tall, spE);
    expect(rel(wr(tall, spC), a)).toBeLessThan(1e-9);
    // The stacked copies have σ·√3 of the single one and the same row space.
    for (let i = 0; i < r; i++) expect(Math.abs((spE.sigma[i] as number) / Math.sqrt(3) / (sp1.sigma[i] as number) - 1)).toBeLessThan(1e-9);
    expect(rel(mat(16, n, a.data.subarray(0, 16 * n)), wr(single, sp1))).toBeLessThan(1e-9);
  });

  it('a singular Gram still gives the optimal truncation (no jitter needed)', () => {
    const xs = activations(new Rng(3), 10, n); // 10 rows < 24 inputs: rank-10 Gram
    const Gs = matmulTN(xs, xs);
    const w = randn(new Rng(4), 30, n);
    const sp = spectrum(w, Gs);
    expect(sp.sigma.length).toBeLessThanOrEqual(10);
    const f = truncate(w, sp, 6);
    let tail = 0;
    for (let i = 6; i < sp.sigma.length; i++) tail += (sp.sigma[i] as number) ** 2;
    expect(Math.abs(outputError2(w, matmul(f.B, f.A), xs) - tail) / tail).toBeLessThan(1e-8);
  });
});

describe('Skip', () => {
  it.each(['none', 'qrcp', 'strong'] as const)('B′(x_keep + A′x_rest) = BAx exactly (%s pivot)', (pivot) => {
    const rng = new Rng(5);
    const n = 30;
    const w = randn(rng, 20, n);
    const x = activations(rng, 100, n);
    const f = truncate(w, spectrum(w, matmulTN(x, x)), 12);
    const s = skipSplit(f, pivot);
    // Rebuild the dense map: columns keep → B′, rest → B′A′.
    const BA = matmul(f.B, f.A);
    const recon = mat(20, n);
    const restPart = matmul(s.B, s.coef);
    for (let i = 0; i < 20; i++) {
      s.keep.forEach((c, j) => (recon.data[i * n + c] = s.B.data[i * 12 + j] as number));
      s.rest.forEach((c, j) => (recon.data[i * n + c] = restPart.data[i * (n - 12) + j] as number));
    }
    expect(rel(recon, BA)).toBeLessThan(1e-12);
    expect(rel(matmul(selectCols(f.A, s.keep), s.coef), selectCols(f.A, s.rest))).toBeLessThan(1e-12);
    if (pivot === 'strong') {
      let mx = 0;
      for (const v of s.coef.data) mx = Math.max(mx, Math.abs(v));
      expect(mx).toBeLessThanOrEqual(2);
    }
  });
});
