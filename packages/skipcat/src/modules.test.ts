import * as tf from '@tensorflow/tfjs';
import { Rng, createRunContext, useBackend } from '@leanpass/core';
import { afterAll, describe, expect, it } from 'vitest';
import { matMulRaw } from '@leanpass/nn';
import { CatSlice, LowRankLinear, UNIT_KERNEL, columnPieces, denseEquivalent, type LowRankConfig } from './modules.js';

afterAll(async () => {
  await useBackend('cpu');
});

function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs((a[i] as number) - (b[i] as number)));
  return m;
}

/** A factorised unit with seeded random factors (Cat when `outs` has several members). */
function unit(n: number, outs: number[], r: number, skip: 'none' | 'gather' | 'permuted', seed: number, inference: LowRankConfig['inference'] = 'gather', bias = false): LowRankLinear {
  const rng = new Rng(seed);
  const perm = rng.permutation(n);
  const total = outs.reduce((a, b) => a + b, 0);
  const cfg: LowRankConfig = {
    inFeatures: n,
    outs,
    names: outs.map((_, i) => `m${i}`),
    rank: r,
    bias,
    group: outs.length > 1 ? `g${seed}` : null,
    skip: skip === 'none' ? null : { keep: perm.slice(0, r), rest: perm.slice(r), inputPermuted: skip === 'permuted' },
    outputPerms: outs.map(() => null),
    method: 'skipcat',
    inference,
  };
  const aRows = skip === 'none' ? n : n - r;
  let m: LowRankLinear | undefined;
  tf.tidy(() => {
    m = new LowRankLinear(cfg, {
      a: aRows > 0 ? tf.tensor2d(rng.normalArray(aRows * r), [aRows, r]) : null,
      b: tf.tensor2d(rng.normalArray(r * total), [r, total]),
      ...(bias ? { bias: tf.tensor1d(rng.normalArray(total)) } : {}),
    });
  });
  return m as unknown as LowRankLinear;
}

/** The unit's stacked output on rows x (Cat members read back through CatSlice). */
function stacked(m: LowRankLinear, x: tf.Tensor2D): tf.Tensor2D {
  const ctx = createRunContext();
  const { outs, group, inFeatures } = m.config;
  const parts = [m.call(x, ctx)];
  for (let i = 1; i < outs.length; i++) parts.push(new CatSlice({ group: group as string, index: i, inFeatures, outFeatures: outs[i] as number }).call(x, ctx));
  return tf.concat(parts, 1) as tf.Tensor2D;
}

function reference(m: LowRankLinear, x: tf.Tensor2D): Float32Array {
  const ref = denseEquivalent(m);
  return tf.tidy(() => {
    const y = tf.matMul(x, tf.tensor2d(Float32Array.from(ref.weight), [ref.rows, ref.cols]));
    return (ref.bias ? tf.add(y, tf.tensor1d(Float32Array.from(ref.bias))) : y).dataSync() as Float32Array;
  });
}

describe('inference path of the factorised linears', () => {
  for (const backend of ['cpu', 'wasm'] as const) {
    it(`columnPieces cuts gathered and contiguous column pieces (${backend})`, async () => {
      await useBackend(backend);
      const rng = new Rng(5);
      for (const T of [1, 4]) {
        const n = 11;
        const xs = rng.normalArray(T * n);
        const cols = Int32Array.from(rng.permutation(n).slice(0, 9));
        tf.tidy(() => {
          const x = tf.tensor2d(xs, [T, n]);
          const [a, b] = columnPieces(x, cols, [4, 5]);
          const c = columnPieces(x, null, [3, 8]);
          for (let t = 0; t < T; t++) {
            for (let j = 0; j < 4; j++) expect(a?.dataSync()[t * 4 + j]).toBe(Math.fround(xs[t * n + (cols[j] as number)] as number));
            for (let j = 0; j < 5; j++) expect(b?.dataSync()[t * 5 + j]).toBe(Math.fround(xs[t * n + (cols[4 + j] as number)] as number));
            for (let j = 0; j < 8; j++) expect(c[1]?.dataSync()[t * 8 + j]).toBe(Math.fround(xs[t * n + 3 + j] as number));
          }
          expect(c[0]?.shape).toEqual([T, 3]);
        });
      }
      expect(() => columnPieces(tf.zeros([2, 3]), null, [2, 2])).toThrow(/4 of the 3 columns/);
    });

    it(`every unit layout equals its dense reference at 1 and 20 rows (${backend})`, async () => {
      await useBackend(backend);
      const cases: Array<[string, LowRankLinear]> = [
        ['cat + skip (gather)', unit(12, [8, 4, 4], 5, 'gather', 1)],
        ['skip, permuted input', unit(12, [7], 5, 'permuted', 2)],
        ['skip at full rank', unit(6, [9], 6, 'gather', 3)],
        ['plain', unit(12, [7], 5, 'none', 4)],
        ['cat + skip, dense-A', unit(12, [8, 4, 4], 5, 'gather', 5, 'dense-a')],
        ['skip + bias', unit(12, [7], 5, 'gather', 8, 'gather', true)],
        ['full rank, permuted input', unit(6, [9], 6, 'permuted', 9)],
      ];
      for (const [name, m] of cases) {
        for (const T of [1, 20]) {
          const x = tf.randomNormal<tf.Rank.R2>([T, m.config.inFeatures], 0, 1, 'float32', T);
          const got = tf.tidy(() => stacked(m, x).dataSync() as Float32Array);
          const err = maxAbs(got, reference(m, x));
          expect(err, `${name}, ${T} rows`).toBeLessThan(1e-4);
          x.dispose();
        }
        m.dispose();
      }
    });
  }

  it('on wasm a unit is one fused dispatch, bit-identical to the op-by-op inference path, and frees its scratch', async () => {
    await useBackend('wasm');
    const cases: Array<[string, LowRankLinear]> = [
      ['cat + skip (gather)', unit(12, [8, 4, 4], 5, 'gather', 11)],
      ['skip, permuted input', unit(12, [7], 5, 'permuted', 12)],
      ['skip at full rank', unit(6, [9], 6, 'gather', 13)],
      ['full rank, permuted input', unit(6, [9], 6, 'permuted', 14)],
      ['plain', unit(12, [7], 5, 'none', 15)],
      ['cat + skip, dense-A', unit(12, [8, 4, 4], 5, 'gather', 16, 'dense-a')],
      ['cat + skip + bias', unit(12, [8, 4, 4], 5, 'gather', 17, 'gather', true)],
    ];
    for (const [name, m] of cases) {
      for (const T of [1, 3]) {
        const x = tf.randomNormal<tf.Rank.R2>([T, m.config.inFeatures], 0, 1, 'float32', 20 + T);
        tf.tidy(() => {
          m.call(x, createRunContext()); // the first call builds the cached index arrays / dense-A
        });
        const dataIds = tf.engine().backend.numDataIds();
        const profile = await tf.profile(() => {
          tf.tidy(() => {
            m.call(x, createRunContext()); // a Cat head's other members' parts are freed by the tidy too
          });
        });
        expect(profile.kernelNames, `${name}, ${T} rows`).toEqual([UNIT_KERNEL]);
        expect(tf.engine().backend.numDataIds(), `${name}: scratch freed`).toBe(dataIds);
        const { fused, stepwise } = tf.tidy(() => {
          const got = m.unitForward(x);
          // the op-by-op inference path: latent, bare product, bias, column pieces
          let y = matMulRaw(m.latent(x), m.param('b').variable);
          if (m.config.bias) y = tf.add(y, m.param('bias').variable);
          const want = m.config.outs.length > 1 ? columnPieces(y, null, m.config.outs) : [y];
          return { fused: got.map((t) => Array.from(t.dataSync())), stepwise: want.map((t) => Array.from(t.dataSync())) };
        });
        expect(fused, `${name}, ${T} rows`).toEqual(stepwise);
        expect(fused.map((p) => p.length)).toEqual(m.config.outs.map((o) => o * T));
        x.dispose();
      }
      m.dispose();
    }
  });

  it('under a gradient tape the general (differentiable) path runs on wasm, with the same values', async () => {
    await useBackend('wasm');
    const m = unit(12, [8, 4, 4], 5, 'gather', 6);
    const x = tf.randomNormal<tf.Rank.R2>([1, 12], 0, 1, 'float32', 7);
    const fast = tf.tidy(() => stacked(m, x).dataSync() as Float32Array);
    const aVar = m.param('a').variable;
    const bVar = m.param('b').variable;
    let taped: Float32Array = new Float32Array(0);
    const grads = tf.tidy(() => {
      const { grads: g } = tf.variableGrads(() => {
        const y = stacked(m, x);
        taped = y.dataSync() as Float32Array;
        return tf.sum(tf.square(y));
      }, [aVar, bVar]);
      return Object.values(g).map((t) => Array.from(t.dataSync()));
    });
    expect(maxAbs(fast, taped)).toBeLessThan(1e-5);
    expect(grads).toHaveLength(2);
    for (const g of grads) expect(Math.max(...g.map(Math.abs))).toBeGreaterThan(0);
    m.dispose();
    x.dispose();
  });
});
