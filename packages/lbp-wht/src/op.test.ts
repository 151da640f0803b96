import * as tf from '@tensorflow/tfjs';
import { Rng, savedForBackward, useBackend, type BackendName } from '@leanpass/core';
import { dense } from '@leanpass/nn';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lbpDense, makeBases, padKinds, resolveGeometry, type PadMode } from './op.js';
import { makeGeometry, patchify, unpatchify } from './patch.js';
import { denseGrads, randn, referenceGrads, relErr } from './reference.test-util.js';
import { allPairs, lowPassL1, type BasePair } from './wht.js';

interface Case {
  B: number;
  E: number;
  H: number;
  W: number;
  Ci: number;
  Co: number;
  o: number;
  pairs: BasePair[];
  padMode: PadMode;
  seed?: number;
}

function f32(t: tf.Tensor): Float32Array {
  return Float32Array.from(t.dataSync());
}

/** LBP-WHT gradients of L = Σ y ⊙ r (so dy = r) for x, W, b, plus the inputs as Float32Arrays. */
function lbpGrads(c: Case, opts: { bias?: boolean } = {}) {
  const seed = c.seed ?? 1;
  const T = c.E + c.H * c.W;
  const x = randn([c.B, T, c.Ci], seed);
  const w = randn([c.Ci, c.Co], seed + 1);
  const b = randn([c.Co], seed + 2);
  const r = randn([c.B, T, c.Co], seed + 3);
  const bases = makeBases(c.o, c.pairs);
  const useBias = opts.bias ?? true;
  const f = (xx: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor): tf.Tensor =>
    tf.sum(tf.mul(lbpDense(xx, ww, useBias ? bb : null, { bases, padMode: c.padMode, grid: { grid: [c.H, c.W], extraTokens: c.E } }), r));
  const grads = useBias ? tf.grads(f)([x, w, b]) : [...tf.grads((xx, ww) => f(xx, ww, b))([x, w]), tf.zeros([c.Co])];
  const out = {
    x: f32(x),
    w: f32(w),
    r: f32(r),
    gx: f32(grads[0] as tf.Tensor),
    gw: f32(grads[1] as tf.Tensor),
    gb: f32(grads[2] as tf.Tensor),
  };
  tf.dispose([x, w, b, r, ...grads]);
  return out;
}

function reference(c: Case, g: ReturnType<typeof lbpGrads>) {
  const pk = padKinds(c.padMode);
  return referenceGrads({ B: c.B, E: c.E, H: c.H, W: c.W, Ci: c.Ci, Co: c.Co, o: c.o, pairs: c.pairs, padX: pk.x, padG: pk.g, x: g.x, g: g.r, w: g.w });
}

function exact(c: Case, g: ReturnType<typeof lbpGrads>) {
  return denseGrads(g.x, g.r, g.w, c.B * (c.E + c.H * c.W), c.Ci, c.Co);
}

function columnSums(r: Float32Array, rows: number, cols: number): Float64Array {
  const s = new Float64Array(cols);
  for (let t = 0; t < rows; t++) for (let d = 0; d < cols; d++) s[d] = (s[d] as number) + (r[t * cols + d] as number);
  return s;
}

for (const backend of ['cpu', 'wasm'] as BackendName[]) {
  describe(`lbpDense on ${backend}`, () => {
    beforeAll(async () => {
      await useBackend(backend);
    });

    it('forward output is bit-identical to the dense layer (nn dense, same weights), for every K', () => {
      const x = randn([3, 1 + 64, 24], 5);
      const w = tf.variable(randn([24, 40], 6));
      const b = tf.variable(randn([40], 7));
      const ref = dense(x, w, b).dataSync();
      for (const pairs of [[[0, 0]] as BasePair[], lowPassL1(8, 3), allPairs(8)]) {
        for (const padMode of ['zeroX', 'reflect'] as const) {
          const y = lbpDense(x, w, b, { bases: makeBases(8, pairs), padMode, grid: { grid: [8, 8], extraTokens: 1 } });
          expect(y.shape).toEqual([3, 65, 40]);
          const v = y.dataSync();
          expect(v.every((val, i) => Object.is(val, ref[i]))).toBe(true);
          y.dispose();
        }
      }
      tf.dispose([x, w, b]);
    });

    it('all o² bases with a grid divisible by o give the dense gradients (rel ≤ 1e-5), class token included', () => {
      for (const c of [
        { B: 2, E: 0, H: 16, W: 16, Ci: 12, Co: 10, o: 8 },
        { B: 3, E: 1, H: 8, W: 8, Ci: 9, Co: 14, o: 4 },
        { B: 2, E: 2, H: 4, W: 8, Ci: 5, Co: 6, o: 2 },
      ]) {
        for (const padMode of ['zeroX', 'zero', 'reflect'] as const) {
          const k: Case = { ...c, pairs: allPairs(c.o), padMode };
          const g = lbpGrads(k);
          const d = exact(k, g);
          expect(relErr(g.gx, d.gx)).toBeLessThan(1e-5);
          expect(relErr(g.gw, d.gw)).toBeLessThan(1e-5);
        }
      }
    });

    it('on padded grids (7×7, 14×14, o = 8, full rank): g_x exact in every mode; g_W exact with zero/zeroX, reflect = the padded-grid product', () => {
      for (const [H, E] of [
        [7, 1],
        [14, 0],
      ] as const) {
        const base = { B: 2, E, H, W: H, Ci: 6, Co: 7, o: 8, pairs: allPairs(8) };
        for (const padMode of ['zeroX', 'zero', 'reflect'] as const) {
          const k: Case = { ...base, padMode };
          const g = lbpGrads(k);
          const d = exact(k, g);
          expect(relErr(g.gx, d.gx)).toBeLessThan(1e-5);
          if (padMode === 'reflect') {
            // full-rank reflect g_W = pad(x)ᵀ pad(g): the reference with all bases is exactly that product
            expect(relErr(g.gw, reference(k, g).gw)).toBeLessThan(1e-5);
            expect(relErr(g.gw, d.gw)).toBeGreaterThan(0.1);
          } else expect(relErr(g.gw, d.gw)).toBeLessThan(1e-5);
        }
      }
    });

    it('K < o² equals the orthogonal projection of the gradient, computed directly in Float64', () => {
      const rng = new Rng(42);
      const random = (o: number, k: number): BasePair[] => rng.permutation(o * o).slice(0, k).map((n) => [Math.floor(n / o), n % o] as const);
      const cases: Case[] = [
        { B: 2, E: 0, H: 16, W: 16, Ci: 8, Co: 6, o: 8, pairs: lowPassL1(8, 3), padMode: 'zeroX' },
        { B: 2, E: 1, H: 8, W: 8, Ci: 7, Co: 9, o: 4, pairs: random(4, 5), padMode: 'zeroX' },
        { B: 1, E: 0, H: 14, W: 10, Ci: 5, Co: 4, o: 8, pairs: random(8, 11), padMode: 'zeroX' },
        { B: 2, E: 1, H: 7, W: 7, Ci: 5, Co: 4, o: 8, pairs: lowPassL1(8, 4), padMode: 'zero' },
        { B: 2, E: 0, H: 14, W: 14, Ci: 5, Co: 4, o: 8, pairs: lowPassL1(8, 2), padMode: 'reflect' },
        { B: 2, E: 0, H: 6, W: 12, Ci: 4, Co: 3, o: 4, pairs: [[0, 0]], padMode: 'zeroX' },
      ];
      for (const c of cases) {
        const g = lbpGrads(c);
        const ref = reference(c, g);
        const d = exact(c, g);
        expect(relErr(g.gx, ref.gx), JSON.stringify({ ...c, pairs: c.pairs.length })).toBeLessThan(1e-5);
        expect(relErr(g.gw, ref.gw)).toBeLessThan(1e-5);
        // and it is an approximation, not the dense gradient
        expect(relErr(g.gx, d.gx)).toBeGreaterThan(0.05);
      }
    });

    it('the bias gradient is exact (Σ over every token of dy)', () => {
      const c: Case = { B: 2, E: 1, H: 8, W: 8, Ci: 4, Co: 5, o: 8, pairs: [[0, 0]], padMode: 'zeroX' };
      const g = lbpGrads(c);
      expect(relErr(g.gb, columnSums(g.r, 2 * 65, 5))).toBeLessThan(1e-6);
    });

    it('is exact when the gradient lies in the span of the bases (DC: constant within each patch)', () => {
      // dy constant on every 4×4 patch: DC-only g_x and g_W are exact
      const B = 2;
      const H = 8;
      const o = 4;
      const Co = 3;
      const Ci = 4;
      const rng = new Rng(3);
      const vals = rng.normalArray(B * 4 * Co);
      const r = new Float32Array(B * H * H * Co);
      for (let b = 0; b < B; b++) {
        for (let t = 0; t < H * H; t++) {
          const p = Math.floor(Math.floor(t / H) / o) * 2 + Math.floor((t % H) / o);
          for (let d = 0; d < Co; d++) r[(b * H * H + t) * Co + d] = vals[(b * 4 + p) * Co + d] as number;
        }
      }
      const x = randn([B, H * H, Ci], 4);
      const w = randn([Ci, Co], 5);
      const rt = tf.tensor(r, [B, H * H, Co]);
      const bases = makeBases(o, [[0, 0]]);
      const [gx, gw] = tf.grads((xx, ww) => tf.sum(tf.mul(lbpDense(xx, ww, null, { bases, padMode: 'zeroX' }), rt)))([x, w]);
      const d = denseGrads(x.dataSync(), r, w.dataSync(), B * H * H, Ci, Co);
      expect(relErr((gx as tf.Tensor).dataSync(), d.gx)).toBeLessThan(1e-5);
      expect(relErr((gw as tf.Tensor).dataSync(), d.gw)).toBeLessThan(1e-5);
      tf.dispose([x, w, rt, gx, gw]);
    });

    it('saves only the projected activation (K·P·Cᵢ floats, + the extra tokens), never x or a copy of W', () => {
      const x = randn([2, 1 + 256, 12], 1);
      const w = tf.variable(randn([12, 10], 2));
      const b = tf.variable(randn([10], 3));
      const bases = makeBases(8, lowPassL1(8, 3));
      const before = tf.memory().numTensors;
      const s = savedForBackward(() => tf.sum<tf.Scalar>(lbpDense(x, w, b, { bases, padMode: 'zeroX', grid: { grid: [16, 16], extraTokens: 1 } })));
      // K = 6, P = 2·4 patches, Ci = 12: 6·8·12 floats; extra tokens 2·1·12 floats
      expect(s.byKernel['forward']).toBe(4 * (6 * 8 * 12 + 2 * 12));
      const d = savedForBackward(() => tf.sum<tf.Scalar>(dense(x, w, b)));
      const denseOwn = (d.byKernel['forward'] ?? 0) + (d.byKernel['Reshape'] ?? 0);
      expect(denseOwn).toBeGreaterThanOrEqual(4 * 2 * 257 * 12);
      expect(tf.memory().numTensors).toBe(before);
      tf.dispose([x, w, b]);
    });

    it('trains a frozen-weight layer (no W gradient, x gradient still projected)', () => {
      const c = { B: 2, H: 8, W: 8, Ci: 4, Co: 3 };
      const x = randn([c.B, 64, c.Ci], 8);
      const w = tf.variable(randn([c.Ci, c.Co], 9), false);
      const r = randn([c.B, 64, c.Co], 10);
      const bases = makeBases(8, allPairs(8));
      const [gx] = tf.grads((xx) => tf.sum(tf.mul(lbpDense(xx, w, null, { bases, padMode: 'zeroX' }), r)))([x]);
      const d = denseGrads(x.dataSync(), r.dataSync(), w.dataSync(), c.B * 64, c.Ci, c.Co);
      expect(relErr((gx as tf.Tensor).dataSync(), d.gx)).toBeLessThan(1e-5);
      expect(() => tf.grads((ww) => tf.sum(lbpDense(x, ww, null, { bases, padMode: 'zeroX', weightGrad: false })))([w])).toThrow();
      tf.dispose([x, w, r, gx]);
    });
  });
}

describe('patch layout', () => {
  let previous: string;
  beforeAll(() => {
    previous = tf.getBackend();
  });
  afterAll(async () => {
    await useBackend(previous as BackendName);
  });

  it('own kernels equal the tfjs route exactly (cpu and wasm), and unpatchify inverts patchify', async () => {
    for (const backend of ['cpu', 'wasm'] as BackendName[]) {
      await useBackend(backend);
      for (const [B, E, H, W, C, o] of [
        [2, 0, 16, 16, 40, 8],
        [2, 1, 7, 9, 5, 4],
        [1, 2, 14, 14, 33, 8],
        [3, 0, 6, 6, 3, 2],
      ] as const) {
        const g = makeGeometry(B, E, H, W, C, o);
        const x = randn([B, E + H * W, C], H + W);
        for (const pad of ['zero', 'reflect'] as const) {
          const a = patchify(x, g, pad, 'kernel');
          const b = patchify(x, g, pad, 'ops');
          expect(a.patches.shape).toEqual([o * o, g.P * C]);
          expect(Array.from(a.patches.dataSync())).toEqual(Array.from(b.patches.dataSync()));
          expect(a.extra?.dataSync()).toEqual(b.extra?.dataSync());
          const u = unpatchify(a.patches, a.extra, g, 'kernel');
          const v = unpatchify(a.patches, a.extra, g, 'ops');
          expect(Array.from(u.dataSync())).toEqual(Array.from(v.dataSync()));
          expect(Array.from(u.dataSync())).toEqual(Array.from(x.dataSync()));
          tf.dispose([a.patches, b.patches, u, v]);
          if (a.extra) tf.dispose([a.extra]);
          if (b.extra) tf.dispose([b.extra]);
        }
        // position check: row (u·o + v), column block p holds the padded token (i·o + u, j·o + v)
        const small = patchify(x, g, 'zero', 'kernel');
        const z = small.patches.dataSync();
        const xs = x.dataSync();
        const top = Math.ceil((g.ph * o - H) / 2);
        const left = Math.ceil((g.pw * o - W) / 2);
        const p = g.P - 1; // the last patch of the last sample
        const bb = B - 1;
        const i = g.ph - 1;
        const j = g.pw - 1;
        for (let u = 0; u < o; u++) {
          for (let v = 0; v < o; v++) {
            const r = i * o + u - top;
            const c = j * o + v - left;
            const inside = r >= 0 && r < H && c >= 0 && c < W;
            expect(z[((u * o + v) * g.P + p) * C]).toBe(inside ? xs[(bb * (E + H * W) + E + r * W + c) * C] : 0);
          }
        }
        tf.dispose([x, small.patches]);
        if (small.extra) small.extra.dispose();
      }
    }
  });
});

describe('bad input', () => {
  it('says what it expected: token count not a grid, wrong channels, rank-2 without a grid, reflect too small', async () => {
    await useBackend('cpu');
    const bases = makeBases(8, lowPassL1(8, 3));
    const w = tf.zeros([4, 3]);
    expect(() => lbpDense(tf.zeros([2, 50, 4]), w, null, { bases, padMode: 'zero' })).toThrow(/50 tokens.*leaves 50, which is not a square grid/);
    expect(() => lbpDense(tf.zeros([2, 65, 4]), w, null, { bases, padMode: 'zero', grid: { grid: [8, 8] } })).toThrow(/0 extra token\(s\) \+ a 8×8 grid = 64 tokens, found 65/);
    expect(() => lbpDense(tf.zeros([2, 64, 5]), w, null, { bases, padMode: 'zero' })).toThrow(/last axis to be 4/);
    expect(() => lbpDense(tf.zeros([128, 4]), w, null, { bases, padMode: 'zero' })).toThrow(/rank-2 input \[128, 4\] needs the grid/);
    expect(() => lbpDense(tf.zeros([2, 4, 4]), w, null, { bases, padMode: 'reflect' })).toThrow(/padMode 'reflect' on a 2×2 grid: reflect padding/);
    expect(() => resolveGeometry([2, 8, 8, 4], 8, { extraTokens: 1 })).toThrow(/NHWC grid and cannot carry 1 extra/);
    expect(() => makeBases(6, [[0, 0]])).toThrow(/power of two/);
    expect(() => makeBases(8, [[0, 8]])).toThrow(/expected integers in \[0, 7\]/);
  });

  it('accepts NHWC inputs (a 1×1 conv) and rank-2 rows with a known grid', async () => {
    await useBackend('cpu');
    const bases = makeBases(4, allPairs(4));
    const x = randn([2, 8, 8, 3], 1);
    const w = randn([3, 5], 2);
    const r = randn([2, 8, 8, 5], 3);
    const [gx4, gw4] = tf.grads((xx, ww) => tf.sum(tf.mul(lbpDense(xx, ww, null, { bases, padMode: 'zeroX' }), r)))([x, w]);
    const [gx2, gw2] = tf.grads((xx, ww) => tf.sum(tf.mul(lbpDense(xx, ww, null, { bases, padMode: 'zeroX', grid: { grid: [8, 8] } }), tf.reshape(r, [128, 5]))))([
      tf.reshape(x, [128, 3]),
      w,
    ]);
    const d = denseGrads(x.dataSync(), r.dataSync(), w.dataSync(), 128, 3, 5);
    expect((gx4 as tf.Tensor).shape).toEqual([2, 8, 8, 3]);
    expect(relErr((gx4 as tf.Tensor).dataSync(), d.gx)).toBeLessThan(1e-5);
    expect(relErr((gw4 as tf.Tensor).dataSync(), d.gw)).toBeLessThan(1e-5);
    expect(relErr((gx2 as tf.Tensor).dataSync(), d.gx)).toBeLessThan(1e-5);
    expect(relErr((gw2 as tf.Tensor).dataSync(), d.gw)).toBeLessThan(1e-5);
  });
});

describe('approximation quality', () => {
  beforeAll(async () => {
    await useBackend('cpu');
  });

  it('‖ĝ_x − g_x‖ does not grow as nested low-pass sets grow (grid divisible by o)', () => {
    const errs: number[] = [];
    for (let r = 1; r <= 15; r++) {
      const c: Case = { B: 2, E: 0, H: 16, W: 16, Ci: 5, Co: 6, o: 8, pairs: lowPassL1(8, r), padMode: 'zeroX', seed: 11 };
      const g = lbpGrads(c, { bias: false });
      errs.push(relErr(g.gx, exact(c, g).gx));
    }
    for (let i = 1; i < errs.length; i++) expect(errs[i]).toBeLessThanOrEqual((errs[i - 1] as number) + 1e-6);
    expect(errs[errs.length - 1]).toBeLessThan(1e-5);
  });

  it('on smooth signals matches the spec’s low-pass table (32×32, box-filtered noise, o = 8, mean of 8 seeds, ±0.05)', () => {
    // Spec §4 test 8: x and g independent white noise, each box-filtered 11×11 with circular wrap.
    const B = 2;
    const N = 32;
    const C = 16;
    const box = (rng: Rng): Float32Array => {
      const noise = rng.normalArray(B * N * N * C);
      const out = new Float32Array(B * N * N * C);
      for (let b = 0; b < B; b++) {
        for (let r = 0; r < N; r++) {
          for (let c = 0; c < N; c++) {
            for (let k = 0; k < C; k++) {
              let s = 0;
              for (let dr = -5; dr <= 5; dr++) for (let dc = -5; dc <= 5; dc++) s += noise[((b * N + ((r + dr + N) % N)) * N + ((c + dc + N) % N)) * C + k] as number;
              out[((b * N + r) * N + c) * C + k] = s;
            }
          }
        }
      }
      return out;
    };
    const table: Array<[BasePair[], number, number]> = [
      [[[0, 0]], 0.65, 0.28],
      [lowPassL1(8, 2), 0.48, 0.11],
      [lowPassL1(8, 3), 0.41, 0.08],
      [lowPassL1(8, 4), 0.32, 0.04],
      [lowPassL1(8, 6), 0.23, 0.026],
      [lowPassL1(8, 8), 0.095, 0.004],
    ];
    const sums = table.map((): [number, number] => [0, 0]);
    const seeds = 8;
    for (let s = 0; s < seeds; s++) {
      const rng = new Rng(100 + s);
      const xv = box(rng);
      const gv = box(rng);
      const wv = rng.normalArray(C * C);
      const x = tf.tensor(xv, [B, N * N, C]);
      const gt = tf.tensor(gv, [B, N * N, C]);
      const w = tf.tensor(wv, [C, C]);
      const d = denseGrads(xv, gv, wv, B * N * N, C, C);
      table.forEach(([pairs], t) => {
        const [gx, gw] = tf.grads((xx, ww) => tf.sum(tf.mul(lbpDense(xx, ww, null, { bases: makeBases(8, pairs), padMode: 'zeroX' }), gt)))([x, w]);
        const acc = sums[t] as [number, number];
        acc[0] += relErr((gx as tf.Tensor).dataSync(), d.gx);
        acc[1] += relErr((gw as tf.Tensor).dataSync(), d.gw);
        tf.dispose([gx, gw]);
      });
      tf.dispose([x, gt, w]);
    }
    table.forEach(([pairs, ex, ew], t) => {
      const [sx, sw] = sums[t] as [number, number];
      expect(Math.abs(sx / seeds - ex), `K = ${pairs.length}: ĝ_x error ${sx / seeds}`).toBeLessThanOrEqual(0.05);
      expect(Math.abs(sw / seeds - ew), `K = ${pairs.length}: ĝ_W error ${sw / seeds}`).toBeLessThanOrEqual(0.05);
    });
  });
});

describe('geometry', () => {
  it('splits padding ⌈total/2⌉ before, the rest after, and counts patches', () => {
    const g = makeGeometry(3, 1, 7, 14, 5, 8);
    expect([g.ph, g.pw, g.top, g.left, g.P, g.T]).toEqual([1, 2, 1, 1, 6, 99]);
    const g2 = resolveGeometry([4, 1 + 49, 6], 8, { extraTokens: 1 });
    expect([g2.B, g2.H, g2.W, g2.E, g2.C]).toEqual([4, 7, 7, 1, 6]);
  });
});
