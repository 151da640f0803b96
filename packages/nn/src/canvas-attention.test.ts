import * as tf from '@tensorflow/tfjs';
import { ConfigError, createRunContext, registry, Rng, useBackend, type RunContext } from '@leanpass/core';
import { beforeEach, describe, expect, it } from 'vitest';
import { Attention, MASKED } from './attention.js';
import { CanvasAttention } from './canvas-attention.js';
import { getKVStore, type CanvasAttentionInput } from './canvas.js';

function randn(shape: number[], seed: number, std = 1): tf.Tensor {
  return tf.tensor(new Rng(seed).normalArray(shape.reduce((a, b) => a * b, 1), std), shape);
}
const arr = (t: tf.Tensor): number[] => Array.from(t.dataSync());
const maxAbsDiff = (a: tf.Tensor, b: tf.Tensor): number => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0] as number);

/** A CanvasAttention and an nn Attention (causal false, no bias, RoPE) with the same weights. */
function pair(dim: number, heads: number, kvHeads: number, seed: number): { ca: CanvasAttention; att: Attention } {
  const ca = new CanvasAttention({ dim, heads, kvHeads, ropeBase: 10000 }, { rng: new Rng(seed) });
  const att = new Attention({ dim, heads, kvHeads, bias: false, causal: false, rope: { base: 10000 } }, { rng: new Rng(seed + 1) });
  for (const n of ['q', 'k', 'v', 'o']) att.child(n).param('weight').assign(ca.child(n).param('weight').variable);
  return { ca, att };
}

function rowsOf(t: tf.Tensor, start: number, n: number): tf.Tensor {
  return tf.slice(t, [0, start, 0], [-1, n, -1]);
}

describe('CanvasAttention', () => {
  beforeEach(async () => {
    await useBackend('cpu');
  });

  it('over the whole canvas without a store equals nn Attention (causal false): outputs and gradients, GQA', () => {
    const { ca, att } = pair(16, 4, 2, 3);
    const B = 2;
    const L = 6;
    const x = randn([B, L, 16], 5);
    const positions = [
      [0, 1, 2, 3, 4, 5],
      [0, 0, 0, 1, 2, 3],
    ];
    const ctx = createRunContext({ mode: 'train' });
    const input = (xx: tf.Tensor): CanvasAttentionInput => ({ x: xx, window: { start: 0, end: L }, length: L, positions, keyMask: null, layer: 0 });
    const a = ca.call(input(x), ctx);
    const b = att.call({ x, positions }, ctx);
    expect(arr(a)).toEqual(arr(b));
    const r = randn([B, L, 16], 9);
    const ga = tf.grads((xx: tf.Tensor) => tf.sum(tf.mul(ca.call(input(xx), ctx), r)))([x]);
    const gb = tf.grads((xx: tf.Tensor) => tf.sum(tf.mul(att.call({ x: xx, positions }, ctx), r)))([x]);
    expect(maxAbsDiff(ga[0] as tf.Tensor, gb[0] as tf.Tensor)).toBeLessThan(1e-5);
    const wa = tf.variableGrads(() => tf.sum<tf.Scalar>(tf.mul(ca.call(input(x), ctx), r)), [ca.child('k').param('weight').variable]);
    const wb = tf.variableGrads(() => tf.sum<tf.Scalar>(tf.mul(att.call({ x, positions }, ctx), r)), [att.child('k').param('weight').variable]);
    const gka = Object.values(wa.grads)[0] as tf.Tensor;
    const gkb = Object.values(wb.grads)[0] as tf.Tensor;
    expect(maxAbsDiff(gka, gkb)).toBeLessThan(1e-5);
    expect(tf.max(tf.abs(gka)).dataSync()[0]).toBeGreaterThan(0);
  });

  it('a window with a store equals the full forward over the canvas whose K/V are the latest computed rows', () => {
    const { ca } = pair(16, 4, 4, 11);
    const B = 2;
    const L = 8;
    const positions = [Array.from({ length: L }, (_, i) => i), Array.from({ length: L }, (_, i) => Math.max(0, i - 1))];
    const keyData = new Float32Array(B * L);
    keyData[L] = MASKED; // sequence 1 has one left pad
    const keyMask = tf.tensor4d(keyData, [B, 1, 1, L]);
    const x1 = randn([B, L, 16], 1);
    const x2 = randn([B, L, 16], 2);
    const gen = createRunContext();
    const input = (x: tf.Tensor, start: number, end: number, store?: string): CanvasAttentionInput => ({
      x: rowsOf(x, start, end - start),
      window: { start, end },
      length: L,
      positions,
      keyMask,
      ...(store === undefined ? {} : { store }),
      layer: 0,
    });
    // first write: the whole canvas; equals the storeless forward
    const full1 = ca.call(input(x1, 0, L, 's'), gen);
    expect(arr(full1)).toEqual(arr(ca.call(input(x1, 0, L), createRunContext())));
    // second forward on the window [3, 6) of x2: K/V of rows 3..5 from x2, the others stay from x1
    const win = ca.call(input(x2, 3, 6, 's'), gen);
    const mixed = tf.concat([rowsOf(x1, 0, 3), rowsOf(x2, 3, 3), rowsOf(x1, 6, L - 6)], 1);
    const ref = ca.call(input(mixed, 0, L), createRunContext());
    expect(win.shape).toEqual([B, 3, 16]);
    expect(arr(win)).toEqual(arr(rowsOf(ref, 3, 3)));
    const store = getKVStore(gen, 's');
    expect(store?.k.shape).toEqual([B, 4, L, 4]);
    // the store holds exactly the K/V of the mixed canvas
    const kvRef = ca.projectKVRows(mixed, positions, { start: 0, end: L }, createRunContext());
    expect(arr(store?.k as tf.Tensor)).toEqual(arr(kvRef.k));
    expect(arr(store?.v as tf.Tensor)).toEqual(arr(kvRef.v));
    gen.state.dispose();
  });

  it('masks pad keys: a left-padded sequence gives the rows of its unpadded forward', () => {
    const { ca } = pair(8, 2, 2, 21);
    const real = randn([1, 5, 8], 4);
    const junk = randn([1, 3, 8], 5, 10);
    const padded = tf.concat([junk, real], 1);
    const keyMask = tf.tensor4d([MASKED, MASKED, MASKED, 0, 0, 0, 0, 0], [1, 1, 1, 8]);
    const ctx = createRunContext();
    const a = ca.call({ x: padded, window: { start: 0, end: 8 }, length: 8, positions: [[0, 0, 0, 0, 1, 2, 3, 4]], keyMask, layer: 0 }, ctx);
    const b = ca.call({ x: real, window: { start: 0, end: 5 }, length: 5, positions: [[0, 1, 2, 3, 4]], keyMask: null, layer: 0 }, ctx);
    expect(maxAbsDiff(rowsOf(a, 3, 5), b)).toBeLessThan(1e-5);
    // without the mask the junk keys do change the output
    const c = ca.call({ x: padded, window: { start: 0, end: 8 }, length: 8, positions: [[0, 0, 0, 0, 1, 2, 3, 4]], keyMask: null, layer: 0 }, ctx);
    expect(maxAbsDiff(rowsOf(c, 3, 5), b)).toBeGreaterThan(1e-3);
  });

  it('gathered K/V rows are bit-identical to window rows, and writeRowSubset equals writeRows', () => {
    const { ca } = pair(16, 4, 2, 31);
    const B = 2;
    const L = 6;
    const positions = [
      [0, 1, 2, 3, 4, 5],
      [0, 0, 1, 2, 3, 4],
    ];
    const x1 = randn([B, L, 16], 7);
    const x2 = randn([B, L, 16], 8);
    const a: RunContext = createRunContext();
    const b: RunContext = createRunContext();
    ca.writeRows(a, 'kv', 0, ca.projectKVRows(x1, positions, { start: 0, end: L }, a), L);
    ca.writeRows(b, 'kv', 0, ca.projectKVRows(x1, positions, { start: 0, end: L }, b), L);
    // rows 2..3 of both sequences from x2
    ca.writeRows(a, 'kv', 2, ca.projectKVRows(rowsOf(x2, 2, 2), positions, { start: 2, end: 4 }, a), L);
    const rows = [
      { batch: 0, position: 2 },
      { batch: 1, position: 2 },
      { batch: 0, position: 3 },
      { batch: 1, position: 3 },
    ];
    const gathered = tf.gatherND(x2, tf.tensor2d(rows.map((r) => [r.batch, r.position]), [4, 2], 'int32'));
    const kv = ca.projectKVGathered(gathered, rows.map((r) => positions[r.batch]?.[r.position] as number), b);
    ca.writeRowSubset(b, 'kv', rows, kv);
    const sa = getKVStore(a, 'kv');
    const sb = getKVStore(b, 'kv');
    expect(arr(sb?.k as tf.Tensor)).toEqual(arr(sa?.k as tf.Tensor));
    expect(arr(sb?.v as tf.Tensor)).toEqual(arr(sa?.v as tf.Tensor));
    a.state.dispose();
    b.state.dispose();
  });

  it('frees every store with the generation state and leaks no tensor per forward', () => {
    const { ca } = pair(8, 2, 2, 41);
    const x = randn([1, 4, 8], 1);
    const positions = [[0, 1, 2, 3]];
    const before = tf.memory().numTensors;
    const gen = createRunContext();
    for (let s = 0; s < 3; s++) {
      tf.tidy(() => {
        ca.call({ x: s === 0 ? x : rowsOf(x, 1, 2), window: s === 0 ? { start: 0, end: 4 } : { start: 1, end: 3 }, length: 4, positions, keyMask: null, store: 'a', layer: 0 }, gen);
        ca.call({ x, window: { start: 0, end: 4 }, length: 4, positions, keyMask: null, store: 'b', layer: 1 }, gen);
      });
    }
    expect(tf.memory().numTensors).toBe(before + 4); // two stores of k and v
    gen.state.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('is registered and rejects bad shapes, windows, positions and masks with ConfigErrors', () => {
    const ca = registry.create('canvas-attention', { dim: 8, heads: 2 }, { rng: new Rng(0) }) as CanvasAttention;
    expect(ca.kind).toBe('canvas-attention');
    expect(ca.config).toEqual({ dim: 8, heads: 2, kvHeads: 2, headDim: 4, ropeBase: 10000 });
    expect(() => new CanvasAttention({ dim: 8, heads: 3 }, { rng: new Rng(0) })).toThrow(/divisible/);
    expect(() => new CanvasAttention({ dim: 8, heads: 4, kvHeads: 3 }, { rng: new Rng(0) })).toThrow(/multiple/);
    const ctx = createRunContext();
    const x = randn([1, 4, 8], 1);
    const pos = [[0, 1, 2, 3]];
    const base: CanvasAttentionInput = { x, window: { start: 0, end: 4 }, length: 4, positions: pos, keyMask: null, layer: 0 };
    expect(() => ca.call({ ...base, x: randn([1, 4, 6], 1) }, ctx)).toThrow(ConfigError);
    expect(() => ca.call({ ...base, window: { start: 0, end: 5 } }, ctx)).toThrow(/window/);
    expect(() => ca.call({ ...base, window: { start: 2, end: 2 } }, ctx)).toThrow(/window/);
    expect(() => ca.call({ ...base, x: rowsOf(x, 1, 2), window: { start: 1, end: 3 } }, ctx)).toThrow(/without a K\/V store/);
    expect(() => ca.call({ ...base, x: rowsOf(x, 1, 2), window: { start: 1, end: 3 }, store: 's' }, ctx)).toThrow(/first write/);
    expect(() => ca.call({ ...base, positions: [[0, 1, 2]] }, ctx)).toThrow(/positions/);
    expect(() => ca.call({ ...base, keyMask: tf.zeros([1, 1, 4, 4]) }, ctx)).toThrow(/keyMask/);
    expect(() => ca.writeRowSubset(ctx, 'none', [], { k: tf.zeros([0, 2, 4]), v: tf.zeros([0, 2, 4]) })).toThrow(/no K\/V store/);
    ca.call({ ...base, store: 's' }, ctx);
    expect(() => ca.writeRowSubset(ctx, 's', [{ batch: 1, position: 0 }], { k: tf.zeros([1, 2, 4]), v: tf.zeros([1, 2, 4]) })).toThrow(/batch in \[0, 1\)/);
    expect(() => ca.call({ ...base, x: randn([2, 4, 8], 1), positions: [pos[0] as number[], pos[0] as number[]], store: 's' }, ctx)).toThrow(/holds/);
    ctx.state.dispose();
  });
});
