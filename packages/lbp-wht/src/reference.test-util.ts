/**
 * Test helpers: a direct Float64 computation of LBP-WHT's gradients from the projector formula of the
 * spec (§2.5) — pad, project each patch with P_K = Σ_k M_k M_kᵀ / o², crop — written without the
 * package's patch layout or matMuls, and with its own sequency ordering (Sylvester rows sorted by
 * sign changes). Not a test file itself (no `.test.ts` suffix), imported by the tests.
 */
import * as tf from '@tensorflow/tfjs';
import { Rng } from '@leanpass/core';

export type RefPad = 'zero' | 'reflect';

/** Sequency-ordered WHT rows, built independently: Sylvester rows sorted by their number of sign changes. */
export function refWalsh(o: number): number[][] {
  let h: number[][] = [[1]];
  while (h.length < o) h = [...h.map((r) => [...r, ...r]), ...h.map((r) => [...r, ...r.map((v) => -v)])];
  const changes = (r: number[]): number => r.slice(1).filter((v, i) => v !== r[i]).length;
  return h.slice().sort((a, b) => changes(a) - changes(b));
}

export interface RefInput {
  B: number;
  E: number;
  H: number;
  W: number;
  Ci: number;
  Co: number;
  o: number;
  pairs: ReadonlyArray<readonly [number, number]>;
  padX: RefPad;
  padG: RefPad;
  /** [B, E + H·W, Ci] row-major. */
  x: Float64Array | Float32Array;
  /** [B, E + H·W, Co]. */
  g: Float64Array | Float32Array;
  /** [Ci, Co]. */
  w: Float64Array | Float32Array;
}

/** Index of padded coordinate p (pad `before` in front) in a side of n, or −1 for a zero. */
function srcIndex(p: number, before: number, n: number, pad: RefPad): number {
  let i = p - before;
  if (i >= 0 && i < n) return i;
  if (pad === 'zero') return -1;
  while (i < 0 || i >= n) i = i < 0 ? -i : 2 * (n - 1) - i;
  return i;
}

/**
 * The spec's ĝ_x = crop(P_K pad_g(g))·Wᵀ-side (here W is [Ci, Co]: ĝ_x = crop(P_K pad_g g)·Wᵀ) and
 * ĝ_W = pad_x(x)ᵀ·P_K pad_g(g) ([Ci, Co]); extra tokens exact. Float64.
 */
export function referenceGrads(r: RefInput): { gx: Float64Array; gw: Float64Array } {
  const { B, E, H, W, Ci, Co, o, pairs } = r;
  const T = E + H * W;
  const ph = Math.ceil(H / o);
  const pw = Math.ceil(W / o);
  const top = Math.ceil((ph * o - H) / 2);
  const left = Math.ceil((pw * o - W) / 2);
  const S = refWalsh(o);
  const M = pairs.map(([i, j]) => {
    const m: number[] = [];
    for (let u = 0; u < o; u++) for (let v = 0; v < o; v++) m.push((S[i] as number[])[u]! * (S[j] as number[])[v]!);
    return m;
  });
  const o2 = o * o;
  const gx = new Float64Array(B * T * Ci);
  const gw = new Float64Array(Ci * Co);
  const pg = new Float64Array(o2 * Co); // projected padded g of one patch
  const xp = new Float64Array(o2 * Ci); // padded x of one patch
  for (let b = 0; b < B; b++) {
    // extra tokens: exact
    for (let e = 0; e < E; e++) {
      const t = b * T + e;
      for (let c = 0; c < Ci; c++) {
        let s = 0;
        for (let d = 0; d < Co; d++) s += (r.g[t * Co + d] as number) * (r.w[c * Co + d] as number);
        gx[t * Ci + c] = s;
        for (let d = 0; d < Co; d++) gw[c * Co + d] = (gw[c * Co + d] as number) + (r.x[t * Ci + c] as number) * (r.g[t * Co + d] as number);
      }
    }
    for (let i = 0; i < ph; i++) {
      for (let j = 0; j < pw; j++) {
        // gather the padded patch of g and x
        const gpatch = new Float64Array(o2 * Co);
        xp.fill(0);
        for (let u = 0; u < o; u++) {
          for (let v = 0; v < o; v++) {
            const pos = u * o + v;
            const rg = srcIndex(i * o + u, top, H, r.padG);
            const cg = srcIndex(j * o + v, left, W, r.padG);
            if (rg >= 0 && cg >= 0) for (let d = 0; d < Co; d++) gpatch[pos * Co + d] = r.g[(b * T + E + rg * W + cg) * Co + d] as number;
            const rx = srcIndex(i * o + u, top, H, r.padX);
            const cx = srcIndex(j * o + v, left, W, r.padX);
            if (rx >= 0 && cx >= 0) for (let c = 0; c < Ci; c++) xp[pos * Ci + c] = r.x[(b * T + E + rx * W + cx) * Ci + c] as number;
          }
        }
        // P_K g = Σ_k M_k (M_k · g) / o²
        pg.fill(0);
        for (const m of M) {
          for (let d = 0; d < Co; d++) {
            let coef = 0;
            for (let pos = 0; pos < o2; pos++) coef += (m[pos] as number) * (gpatch[pos * Co + d] as number);
            coef /= o2;
            for (let pos = 0; pos < o2; pos++) pg[pos * Co + d] = (pg[pos * Co + d] as number) + (m[pos] as number) * coef;
          }
        }
        for (let u = 0; u < o; u++) {
          for (let v = 0; v < o; v++) {
            const pos = u * o + v;
            // ĝ_W over the padded patch
            for (let c = 0; c < Ci; c++) {
              const xv = xp[pos * Ci + c] as number;
              if (xv === 0) continue;
              for (let d = 0; d < Co; d++) gw[c * Co + d] = (gw[c * Co + d] as number) + xv * (pg[pos * Co + d] as number);
            }
            // ĝ_x on the positions inside the grid
            const rr = i * o + u - top;
            const cc = j * o + v - left;
            if (rr < 0 || rr >= H || cc < 0 || cc >= W) continue;
            const t = b * T + E + rr * W + cc;
            for (let c = 0; c < Ci; c++) {
              let s = 0;
              for (let d = 0; d < Co; d++) s += (pg[pos * Co + d] as number) * (r.w[c * Co + d] as number);
              gx[t * Ci + c] = s;
            }
          }
        }
      }
    }
  }
  return { gx, gw };
}

/** Exact dense gradients: g_x = g·Wᵀ, g_W = xᵀ·g, Float64. */
export function denseGrads(x: ArrayLike<number>, g: ArrayLike<number>, w: ArrayLike<number>, N: number, Ci: number, Co: number): { gx: Float64Array; gw: Float64Array } {
  const gx = new Float64Array(N * Ci);
  const gw = new Float64Array(Ci * Co);
  for (let t = 0; t < N; t++) {
    for (let c = 0; c < Ci; c++) {
      let s = 0;
      for (let d = 0; d < Co; d++) {
        s += (g[t * Co + d] as number) * (w[c * Co + d] as number);
        gw[c * Co + d] = (gw[c * Co + d] as number) + (x[t * Ci + c] as number) * (g[t * Co + d] as number);
      }
      gx[t * Ci + c] = s;
    }
  }
  return { gx, gw };
}

/** ‖a − b‖_F / ‖b‖_F. */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    const d = (a[i] as number) - (b[i] as number);
    num += d * d;
    den += (b[i] as number) * (b[i] as number);
  }
  return Math.sqrt(num / den);
}

export function randn(shape: number[], seed: number, std = 1): tf.Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return tf.tensor(new Rng(seed).normalArray(n, std), shape);
}
