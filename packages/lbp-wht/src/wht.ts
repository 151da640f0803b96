/**
 * Walsh–Hadamard bases for LBP-WHT (spec lbp-wht.md §2.2–2.3): the sequency-ordered 1-D WHT matrix, the
 * 2-D bases M_ij = S[i]ᵀ S[j] flattened row-major, and the base selections (low-pass L1 triangle, L∞
 * square, explicit list, top-energy). Pure JS, no tensors: the op turns the chosen rows into constants.
 */
import { ConfigError } from '@leanpass/core';

/** A 2-D base (i, j): i = vertical sequency (along the grid's rows), j = horizontal. */
export type BasePair = readonly [number, number];

/** Whether n is a power of two (1, 2, 4, …). */
export function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && (n & (n - 1)) === 0;
}

function checkOrder(o: number, who: string): void {
  if (!isPowerOfTwo(o) || o < 2) throw new ConfigError(`${who}: expected the order o to be a power of two ≥ 2, found ${o}`);
}

/** Sylvester's natural-order Hadamard matrix of size o (entries ±1, row-major). */
export function sylvester(o: number): Int8Array {
  checkOrder(o, 'sylvester');
  const h = new Int8Array(o * o);
  h[0] = 1;
  for (let n = 1; n < o; n *= 2) {
    for (let r = 0; r < n; r++) {
      for (let c = 0; c < n; c++) {
        const v = h[r * o + c] as number;
        h[r * o + c + n] = v;
        h[(r + n) * o + c] = v;
        h[(r + n) * o + c + n] = -v;
      }
    }
  }
  return h;
}

function bitReverse(k: number, bits: number): number {
  let r = 0;
  for (let b = 0; b < bits; b++) r |= ((k >> b) & 1) << (bits - 1 - b);
  return r;
}

/** perm[k] = bitreverse(gray(k)): the natural-order row with k sign changes (o = 8: [0,4,6,2,3,7,5,1]). */
export function sequencyPermutation(o: number): number[] {
  checkOrder(o, 'sequencyPermutation');
  const bits = Math.log2(o);
  return Array.from({ length: o }, (_, k) => bitReverse(k ^ (k >> 1), bits));
}

/** The sequency-ordered WHT matrix S (o×o, ±1, row k has exactly k sign changes; S·Sᵀ = o·I). */
export function walshMatrix(o: number): Int8Array {
  const h = sylvester(o);
  const perm = sequencyPermutation(o);
  const s = new Int8Array(o * o);
  for (let k = 0; k < o; k++) s.set(h.subarray((perm[k] as number) * o, ((perm[k] as number) + 1) * o), k * o);
  return s;
}

/** Number of sign changes along a ±1 row. */
export function signChanges(row: ArrayLike<number>): number {
  let n = 0;
  for (let i = 1; i < row.length; i++) if (Math.sign(row[i] as number) !== Math.sign(row[i - 1] as number)) n++;
  return n;
}

/**
 * The K×o² base matrix Bm: row k is M_{i_k j_k} = S[i]ᵀS[j] flattened row-major (index u·o + v), so
 * Bm·Bmᵀ = o²·I_K for distinct pairs.
 */
export function baseMatrix(o: number, pairs: readonly BasePair[]): Float32Array {
  validatePairs(o, pairs, 'baseMatrix');
  const s = walshMatrix(o);
  const o2 = o * o;
  const out = new Float32Array(pairs.length * o2);
  pairs.forEach(([i, j], k) => {
    for (let u = 0; u < o; u++) for (let v = 0; v < o; v++) out[k * o2 + u * o + v] = (s[i * o + u] as number) * (s[j * o + v] as number);
  });
  return out;
}

/** Checks that every pair lies in [0, o)² and none repeats (a repeat doubles a base's weight and breaks the projection). */
export function validatePairs(o: number, pairs: readonly BasePair[], who: string): void {
  checkOrder(o, who);
  if (pairs.length === 0) throw new ConfigError(`${who}: expected at least one base, found none`);
  const seen = new Set<number>();
  for (const [k, p] of pairs.entries()) {
    const [i, j] = p;
    if (!Number.isInteger(i) || !Number.isInteger(j) || i < 0 || j < 0 || i >= o || j >= o) {
      throw new ConfigError(`${who}: base ${k} is (${i}, ${j}); expected integers in [0, ${o - 1}] for order ${o}`);
    }
    const key = i * o + j;
    if (seen.has(key)) throw new ConfigError(`${who}: base (${i}, ${j}) is listed twice; each base may appear once`);
    seen.add(key);
  }
}

/** Sorts pairs by total sequency i + j, then by i (a canonical order; the projection does not depend on it). */
export function sortPairs(pairs: readonly BasePair[]): Array<[number, number]> {
  return pairs.map(([i, j]) => [i, j] as [number, number]).sort((a, b) => a[0] + a[1] - (b[0] + b[1]) || a[0] - b[0]);
}

/** Low-pass L1 triangle LP_L1-r: every (i, j) with i + j < r, i, j < o. r ∈ [1, 2o − 1]; r = 2o − 1 is full rank. */
export function lowPassL1(o: number, r: number): Array<[number, number]> {
  checkOrder(o, 'lowPassL1');
  if (!Number.isInteger(r) || r < 1 || r > 2 * o - 1) {
    throw new ConfigError(`lowPassL1: expected rank r in [1, ${2 * o - 1}] for order ${o} (r = ${2 * o - 1} keeps all ${o * o} bases), found ${r}`);
  }
  const out: Array<[number, number]> = [];
  for (let s = 0; s < r; s++) for (let i = 0; i <= s; i++) if (i < o && s - i < o) out.push([i, s - i]);
  return out;
}

/** Number of bases of LP_L1-r: r(r+1)/2 for r ≤ o, o² − (2o−r)(2o−r−1)/2 above. */
export function lowPassL1Count(o: number, r: number): number {
  return r <= o ? (r * (r + 1)) / 2 : o * o - ((2 * o - r) * (2 * o - r - 1)) / 2;
}

/** Low-pass L∞ square: every (i, j) with max(i, j) < r. r ∈ [1, o]; K = r². */
export function lowPassLinf(o: number, r: number): Array<[number, number]> {
  checkOrder(o, 'lowPassLinf');
  if (!Number.isInteger(r) || r < 1 || r > o) throw new ConfigError(`lowPassLinf: expected rank r in [1, ${o}] for order ${o} (K = r² ≤ o² = ${o * o}), found ${r}`);
  return sortPairs(Array.from({ length: r * r }, (_, n) => [Math.floor(n / r), n % r] as [number, number]));
}

/** Every base of order o, in sequency order (full rank). */
export function allPairs(o: number): Array<[number, number]> {
  return lowPassL1(o, 2 * o - 1);
}

/**
 * The k bases with the largest energy. `energy[i·o + j]` is the energy of base (i, j); ties go to the
 * lower total sequency, then the lower i (deterministic). The DC base is always kept first so that a
 * constant signal is represented exactly.
 */
export function topEnergy(o: number, energy: ArrayLike<number>, k: number): Array<[number, number]> {
  checkOrder(o, 'topEnergy');
  if (energy.length !== o * o) throw new ConfigError(`topEnergy: expected ${o * o} energies for order ${o}, found ${energy.length}`);
  if (!Number.isInteger(k) || k < 1 || k > o * o) throw new ConfigError(`topEnergy: expected k in [1, ${o * o}] for order ${o}, found ${k}`);
  const idx = Array.from({ length: o * o }, (_, n) => n).filter((n) => n !== 0);
  idx.sort((a, b) => {
    const d = (energy[b] as number) - (energy[a] as number);
    if (d !== 0 && Number.isFinite(d)) return d;
    const sa = Math.floor(a / o) + (a % o);
    const sb = Math.floor(b / o) + (b % o);
    return sa - sb || a - b;
  });
  return sortPairs([0, ...idx.slice(0, k - 1)].map((n) => [Math.floor(n / o), n % o] as [number, number]));
}
