/**
 * The Float64 core of SkipCat and its baselines: rank solving, parameter formulas, whitened
 * decompositions (output-covariance and input routes), and the Skip split. No tfjs here.
 */
import { ConfigError } from '@leanpass/core';
import { cholesky, mat, matmul, splitColumns, symEig, type Mat } from '@leanpass/linalg';

export type Method = 'skipcat' | 'svd' | 'asvd' | 'svd-llm' | 'cat' | 'skip';
export const METHODS: readonly Method[] = ['skipcat', 'svd', 'asvd', 'svd-llm', 'cat', 'skip'];

/** Whether a method stacks Q/K/V and gate/up into one factorisation. */
export function usesCat(m: Method): boolean {
  return m === 'skipcat' || m === 'cat';
}
/** Whether a method turns r pivoted input columns of the shared factor into the identity. */
export function usesSkip(m: Method): boolean {
  return m === 'skipcat' || m === 'skip';
}
/** The input metric a method whitens with. */
export function metricOf(m: Method): 'identity' | 'asvd' | 'gram' {
  return m === 'svd' ? 'identity' : m === 'asvd' ? 'asvd' : 'gram';
}

// ---------------------------------------------------------------------------------------------
// Accounting
// ---------------------------------------------------------------------------------------------

/** Stored parameters of a rank-r unit with input n and stacked outputs M (bias excluded). */
export function unitParams(r: number, n: number, m: number, skip: boolean): number {
  return skip ? r * (n + m - r) : r * (n + m);
}

/**
 * The largest rank whose cost fits the budget ρ·P (P = n·M, the dense weight count):
 * plain r(n + M) ≤ ρP, Skip r(n + M − r) ≤ ρP; clamped to [1, min(n, M)] and rounded down to a
 * multiple of `align` when that stays ≥ 1. ρ = 1 (nothing removed) gives full rank for every form
 * (for the unskipped forms full rank costs more than dense: r(n + M) > nM).
 */
export function solveRank(keep: number, n: number, m: number, skip: boolean, align = 1): number {
  if (!(keep > 0 && keep <= 1)) throw new ConfigError(`solveRank: expected a keep ratio in (0, 1], found ${keep}`);
  const full = Math.min(n, m);
  if (keep === 1) return full;
  const P = n * m;
  const budget = keep * P;
  const s = n + m;
  let r: number;
  if (skip) {
    const disc = Math.max(0, s * s - 4 * budget);
    r = Math.floor((s - Math.sqrt(disc)) / 2);
  } else r = Math.floor(budget / s);
  r = Math.max(0, Math.min(full, r));
  // Integer correction of float rounding: budget(r) ≤ ρP < budget(r + 1) unless clamped.
  while (r < full && unitParams(r + 1, n, m, skip) <= budget) r++;
  while (r > 0 && unitParams(r, n, m, skip) > budget) r--;
  if (align > 1 && r >= align) r -= r % align;
  return Math.max(1, r);
}

// ---------------------------------------------------------------------------------------------
// Decomposition
// ---------------------------------------------------------------------------------------------

/**
 * The left factor of the whitened stack W·S (S Sᵀ = G): U (M × k) and σ (descending), k = the
 * numerical rank. Every rank-r truncation is then B = U_r Σ_r^{1/2}, A = Σ_r^{−1/2} U_rᵀ W, with
 * B·A = U_r U_rᵀ W and ‖(W − BA)X‖²_F = Σ_{i>r} σ_i² when G = XᵀX.
 */
export interface Spectrum {
  U: Mat;
  sigma: Float64Array;
  /** Which route computed it. */
  route: 'output' | 'input';
  /** Relative jitter the Cholesky needed on the input route with `whitening: 'cholesky'` (0 otherwise). */
  epsilon: number;
}

export interface SpectrumOptions {
  /** Square root of G for the input route: eigen (QΛ^{1/2}, λ clamped at 0) or Cholesky with jitter. */
  whitening?: 'eigen' | 'cholesky';
  jitter?: readonly number[];
  /** σ_i ≤ tol · σ_1 count as zero (default 1e-7). */
  rankTol?: number;
}

/** W G Wᵀ for W (M×n), G (n×n) symmetric. */
function wgwt(w: Mat, g: Mat): Mat {
  const wg = matmul(w, g);
  const M = w.rows;
  const n = w.cols;
  const out = mat(M, M);
  for (let i = 0; i < M; i++) {
    for (let j = i; j < M; j++) {
      let s = 0;
      for (let p = 0; p < n; p++) s += (wg.data[i * n + p] as number) * (w.data[j * n + p] as number);
      out.data[i * M + j] = s;
      out.data[j * M + i] = s;
    }
  }
  return out;
}

/**
 * Spectrum of W·S without forming S⁻¹: the output-covariance route (eigen of W G Wᵀ, M × M) when
 * M ≤ n, else the input route (eigen of Sᵀ Wᵀ W S, n × n; U = W S V Σ⁻¹). Both are optimal for a
 * singular G too.
 */
export function spectrum(w: Mat, g: Mat, opts: SpectrumOptions = {}): Spectrum {
  const M = w.rows;
  const n = w.cols;
  if (g.rows !== n || g.cols !== n) throw new ConfigError(`spectrum: the metric is [${g.rows}, ${g.cols}], expected [${n}, ${n}] for a weight with ${n} inputs`);
  const tol = opts.rankTol ?? 1e-7;
  if (M <= n) {
    const { values, vectors } = symEig(wgwt(w, g));
    const top = Math.max(values[0] ?? 0, 0);
    let k = 0;
    while (k < M && (values[k] as number) > top * tol * tol && (values[k] as number) > 0) k++;
    const U = mat(M, k);
    for (let i = 0; i < M; i++) for (let c = 0; c < k; c++) U.data[i * k + c] = vectors.data[i * M + c] as number;
    return { U, sigma: Float64Array.from({ length: k }, (_, i) => Math.sqrt(values[i] as number)), route: 'output', epsilon: 0 };
  }
  // Input route: S with S Sᵀ = G.
  let S: Mat;
  let epsilon = 0;
  if ((opts.whitening ?? 'eigen') === 'cholesky') {
    const c = cholesky(g, opts.jitter ? { jitter: opts.jitter } : {});
    S = c.L;
    epsilon = c.epsilon;
  } else {
    const { values, vectors } = symEig(g);
    S = mat(n, n);
    for (let i = 0; i < n; i++) for (let c = 0; c < n; c++) S.data[i * n + c] = (vectors.data[i * n + c] as number) * Math.sqrt(Math.max(0, values[c] as number));
  }
  const ws = matmul(w, S); // M × n
  const k2 = mat(n, n);
  for (let p = 0; p < M; p++) {
    for (let i = 0; i < n; i++) {
      const v = ws.data[p * n + i] as number;
      if (v === 0) continue;
      for (let j = i; j < n; j++) k2.data[i * n + j] = (k2.data[i * n + j] as number) + v * (ws.data[p * n + j] as number);
    }
  }
  for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) k2.data[i * n + j] = k2.data[j * n + i] as number;
  const { values, vectors } = symEig(k2);
  const top = Math.max(values[0] ?? 0, 0);
  let k = 0;
  while (k < n && (values[k] as number) > top * tol * tol && (values[k] as number) > 0) k++;
  const sigma = Float64Array.from({ length: k }, (_, i) => Math.sqrt(values[i] as number));
  // U = W S V_k Σ_k⁻¹ (row-major products, cache-friendly).
  const Vk = mat(n, k);
  for (let p = 0; p < n; p++) for (let c = 0; c < k; c++) Vk.data[p * k + c] = (vectors.data[p * n + c] as number) / (sigma[c] as number);
  const U = matmul(ws, Vk);
  return { U, sigma, route: 'input', epsilon };
}

export interface Factors {
  /** M × r. */
  B: Mat;
  /** r × n. */
  A: Mat;
}

/** B = U_r Σ_r^{1/2}, A = Σ_r^{−1/2} U_rᵀ W. */
export function truncate(w: Mat, spec: Spectrum, r: number): Factors {
  const k = spec.sigma.length;
  if (r < 1 || r > k) throw new ConfigError(`truncate: rank ${r} outside [1, ${k}] (the numerical rank)`);
  const M = w.rows;
  const n = w.cols;
  const B = mat(M, r);
  const A = mat(r, n);
  for (let c = 0; c < r; c++) {
    const sq = Math.sqrt(spec.sigma[c] as number);
    for (let i = 0; i < M; i++) B.data[i * r + c] = (spec.U.data[i * k + c] as number) * sq;
    // A row c = (1/sq) Σ_i U[i, c] W[i, :]
    const row = A.data.subarray(c * n, (c + 1) * n);
    for (let i = 0; i < M; i++) {
      const u = (spec.U.data[i * k + c] as number) / sq;
      if (u === 0) continue;
      for (let p = 0; p < n; p++) row[p] = (row[p] as number) + u * (w.data[i * n + p] as number);
    }
  }
  return { B, A };
}

export interface SkipFactors {
  keep: Int32Array;
  rest: Int32Array;
  /** A′ = A_keep⁻¹ A_rest, r × (n − r). */
  coef: Mat;
  /** B′ = B A_keep, M × r. */
  B: Mat;
  swaps: number;
}

/** Skip: B A x = B′ (x_keep + A′ x_rest) with pivoted keep columns. */
export function skipSplit(f: Factors, pivot: 'none' | 'qrcp' | 'strong', strongF = 2): SkipFactors {
  const s = splitColumns(f.A, { pivot, f: strongF });
  const r = f.A.rows;
  const n = f.A.cols;
  const Ak = mat(r, r);
  for (let i = 0; i < r; i++) for (let j = 0; j < r; j++) Ak.data[i * r + j] = f.A.data[i * n + (s.keep[j] as number)] as number;
  return { keep: s.keep, rest: s.rest, coef: s.coef, B: matmul(f.B, Ak), swaps: s.swaps };
}

/** The input metric for ASVD: diag((mean|x_j| + ε)^{2α}) (so that S = diag(s^α)). */
export function asvdMetric(meanAbs: Float64Array, alpha: number, eps = 1e-6): Mat {
  const n = meanAbs.length;
  const g = mat(n, n);
  for (let j = 0; j < n; j++) g.data[j * n + j] = Math.pow((meanAbs[j] as number) + eps, 2 * alpha);
  return g;
}
