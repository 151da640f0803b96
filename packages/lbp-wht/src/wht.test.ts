import { describe, expect, it } from 'vitest';
import {
  allPairs,
  baseMatrix,
  isPowerOfTwo,
  lowPassL1,
  lowPassL1Count,
  lowPassLinf,
  sequencyPermutation,
  signChanges,
  sylvester,
  topEnergy,
  validatePairs,
  walshMatrix,
} from './wht.js';

/** A·Bᵀ for row-major a [m, n], b [k, n]. */
function gram(a: ArrayLike<number>, m: number, n: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < m; j++) {
      let s = 0;
      for (let t = 0; t < n; t++) s += (a[i * n + t] as number) * (a[j * n + t] as number);
      out.push(s);
    }
  }
  return out;
}

function scaledIdentity(m: number, s: number): number[] {
  return Array.from({ length: m * m }, (_, n) => (Math.floor(n / m) === n % m ? s : 0));
}

describe('Walsh–Hadamard matrices', () => {
  it('knows powers of two', () => {
    expect([1, 2, 4, 8, 64].every(isPowerOfTwo)).toBe(true);
    expect([0, 3, 6, 12, -4, 2.5].some(isPowerOfTwo)).toBe(false);
  });

  it('builds Sylvester matrices with H·Hᵀ = o·I', () => {
    expect(Array.from(sylvester(2))).toEqual([1, 1, 1, -1]);
    for (const o of [2, 4, 8, 16, 32]) expect(gram(sylvester(o), o, o)).toEqual(scaledIdentity(o, o));
  });

  it('orders rows by sequency: perm = bitreverse(gray(k)), row k of S has k sign changes', () => {
    expect(sequencyPermutation(8)).toEqual([0, 4, 6, 2, 3, 7, 5, 1]);
    for (const o of [2, 4, 8, 16, 32]) {
      const s = walshMatrix(o);
      expect(new Set(sequencyPermutation(o)).size).toBe(o);
      for (let k = 0; k < o; k++) expect(signChanges(s.subarray(k * o, (k + 1) * o))).toBe(k);
      expect(gram(s, o, o)).toEqual(scaledIdentity(o, o));
      // S is symmetric (rows and columns taken in the same order)
      for (let i = 0; i < o; i++) for (let j = 0; j < o; j++) expect(s[i * o + j]).toBe(s[j * o + i]);
    }
  });

  it('makes orthogonal ±1 2-D bases: Bm·Bmᵀ = o²·I, base (0,0) all ones, M_ij = S[i]ᵀS[j]', () => {
    for (const o of [2, 4, 8]) {
      const pairs = allPairs(o);
      const bm = baseMatrix(o, pairs);
      expect(pairs).toHaveLength(o * o);
      expect(Array.from(bm).every((v) => v === 1 || v === -1)).toBe(true);
      expect(gram(bm, pairs.length, o * o)).toEqual(scaledIdentity(pairs.length, o * o));
      expect(Array.from(bm.subarray(0, o * o)).every((v) => v === 1)).toBe(true);
    }
    const s = walshMatrix(8);
    const bm = baseMatrix(8, [[3, 5]]);
    for (let u = 0; u < 8; u++) for (let v = 0; v < 8; v++) expect(bm[u * 8 + v]).toBe((s[3 * 8 + u] as number) * (s[5 * 8 + v] as number));
    // vertical sequency 1: the top half and the bottom half of the patch differ in sign
    const v1 = baseMatrix(4, [[1, 0]]);
    expect(Array.from(v1)).toEqual([1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1, -1]);
  });
});

describe('base selection', () => {
  it('LP_L1-r keeps i + j < r with the counts of the spec, full rank at r = 2o − 1', () => {
    expect([1, 2, 3, 4, 6, 8].map((r) => lowPassL1(8, r).length)).toEqual([1, 3, 6, 10, 21, 36]);
    for (const o of [2, 4, 8]) {
      for (let r = 1; r <= 2 * o - 1; r++) {
        const p = lowPassL1(o, r);
        expect(p.length).toBe(lowPassL1Count(o, r));
        expect(p.every(([i, j]) => i + j < r && i < o && j < o)).toBe(true);
        expect(new Set(p.map(([i, j]) => i * o + j)).size).toBe(p.length);
      }
      expect(lowPassL1(o, 2 * o - 1)).toHaveLength(o * o);
    }
    expect(lowPassL1(8, 2)).toEqual([
      [0, 0],
      [0, 1],
      [1, 0],
    ]);
  });

  it('LP_Linf-r keeps max(i, j) < r (K = r²)', () => {
    const p = lowPassLinf(8, 3);
    expect(p).toHaveLength(9);
    expect(p.every(([i, j]) => Math.max(i, j) < 3)).toBe(true);
  });

  it('top-energy keeps DC and the k − 1 most energetic others, ties by sequency', () => {
    const e = new Float64Array(16);
    e[0] = 0.1; // DC is kept even when weak
    e[5] = 9; // (1, 1)
    e[2] = 7; // (0, 2)
    e[8] = 7; // (2, 0): same energy and sequency as (0, 2) — lower i first
    e[15] = 3;
    expect(topEnergy(4, e, 3)).toEqual([
      [0, 0],
      [0, 2],
      [1, 1],
    ]);
    expect(topEnergy(4, e, 4)).toEqual([
      [0, 0],
      [0, 2],
      [1, 1],
      [2, 0],
    ]);
  });

  it('rejects bad orders, ranks and lists with what was expected', () => {
    expect(() => sylvester(6)).toThrow(/power of two ≥ 2, found 6/);
    expect(() => lowPassL1(8, 16)).toThrow(/rank r in \[1, 15\] for order 8.*found 16/);
    expect(() => lowPassL1(4, 0)).toThrow(/found 0/);
    expect(() => lowPassLinf(4, 5)).toThrow(/rank r in \[1, 4\].*found 5/);
    expect(() => validatePairs(4, [[0, 4]], 'x')).toThrow(/\(0, 4\); expected integers in \[0, 3\]/);
    expect(() => validatePairs(4, [[1, 1], [1, 1]], 'x')).toThrow(/listed twice/);
    expect(() => validatePairs(4, [], 'x')).toThrow(/at least one base/);
    expect(() => topEnergy(4, new Float64Array(16), 17)).toThrow(/k in \[1, 16\]/);
  });
});
