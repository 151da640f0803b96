import * as tf from '@tensorflow/tfjs';
import { cloneModel, createRunContext, registry, Rng, useBackend } from '@leanpass/core';
import { beforeEach, describe, expect, it } from 'vitest';
import { Attention, MASKED, applyRope, scaledDotProductAttention, type AttentionInput } from './attention.js';
import { compareBackends, gradCheck } from './gradcheck.js';
import { Embedding } from './embedding.js';
import type { Linear } from './linear.js';
import { Mlp } from './mlp.js';
import { LayerNorm, RMSNorm } from './norms.js';
import { addNoSave } from './ops/dense.js';

function randn(shape: number[], seed: number, std = 1): tf.Tensor {
  return tf.tensor(new Rng(seed).normalArray(shape.reduce((a, b) => a * b, 1), std), shape);
}
function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0] as number);
}
const ctx = createRunContext({ mode: 'train' });
const vars = (m: Attention): tf.Variable[] => [...m.namedParams()].map(([, p]) => p.variable);

/** Textbook attention with stock tfjs ops: K/V heads repeated with gather, transposed matMul flags. */
function naiveSdpa(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, mask?: tf.Tensor): tf.Tensor {
  const [, H, , d] = q.shape as number[];
  const Hk = k.shape[1] as number;
  const idx = tf.tensor1d(Array.from({ length: H as number }, (_, h) => Math.floor(h / ((H as number) / Hk))), 'int32');
  const kr = tf.gather(k, idx, 1);
  const vr = tf.gather(v, idx, 1);
  let s = tf.div(tf.matMul(q, kr, false, true), Math.sqrt(d as number));
  if (mask) s = tf.add(s, mask);
  return tf.matMul(tf.softmax(s), vr);
}

/** HF's rotate_half RoPE written with slices (the reference for applyRope). */
function naiveRope(x: tf.Tensor, positions: number[], base: number): tf.Tensor {
  const [B, N, Hh, d] = x.shape as [number, number, number, number];
  const half = d / 2;
  const ang = positions.map((p) => Array.from({ length: d }, (_, j) => p * Math.pow(base, (-2 * (j % half)) / d)));
  const cos = tf.reshape(tf.tensor2d(ang.map((r) => r.map(Math.cos))), [1, N, 1, d]);
  const sin = tf.reshape(tf.tensor2d(ang.map((r) => r.map(Math.sin))), [1, N, 1, d]);
  const x1 = tf.slice(x, [0, 0, 0, 0], [B, N, Hh, half]);
  const x2 = tf.slice(x, [0, 0, 0, half], [B, N, Hh, half]);
  return tf.add(tf.mul(x, cos), tf.mul(tf.concat([tf.neg(x2), x1], 3), sin));
}

describe('scaledDotProductAttention', () => {
  beforeEach(async () => {
    await useBackend('cpu');
  });

  it('equals textbook attention, forward and gradients, for both strategies (GQA, N ≠ T, additive mask)', () => {
    const q = randn([2, 4, 3, 6], 1);
    const k = randn([2, 2, 5, 6], 2);
    const v = randn([2, 2, 5, 6], 3);
    const maskData = new Float32Array(2 * 1 * 3 * 5).map((_, i) => (i % 4 === 1 ? MASKED : 0.3 * Math.sin(i)));
    const mask = tf.tensor4d(maskData, [2, 1, 3, 5]);
    const r = randn([2, 4, 3, 6], 4);
    const lossOf = (f: (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.Tensor) => (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.sum(tf.mul(f(a, b, c), r));
    const ref = naiveSdpa(q, k, v, mask);
    const refGrads = tf.grads(lossOf((a, b, c) => naiveSdpa(a, b, c, mask)))([q, k, v]);
    for (const strategy of ['loop', 'batched'] as const) {
      const out = scaledDotProductAttention(q, k, v, { mask, strategy });
      expect(maxAbsDiff(out, ref), strategy).toBeLessThan(1e-5);
      const g = tf.grads(lossOf((a, b, c) => scaledDotProductAttention(a, b, c, { mask, strategy })))([q, k, v]);
      g.forEach((t, i) => expect(maxAbsDiff(t, refGrads[i] as tf.Tensor), `${strategy} grad ${i}`).toBeLessThan(1e-5));
    }
  });

  it('runs both strategies to the same result on wasm', async () => {
    await useBackend('wasm');
    const q = randn([3, 4, 8, 16], 5);
    const k = randn([3, 1, 8, 16], 6);
    const v = randn([3, 1, 8, 16], 7);
    const r = randn([3, 4, 8, 16], 8);
    const run = (strategy: 'loop' | 'batched') => {
      const out = scaledDotProductAttention(q, k, v, { strategy });
      const g = tf.grads((a, b, c) => tf.sum(tf.mul(scaledDotProductAttention(a, b, c, { strategy }), r)))([q, k, v]);
      return [out, ...g];
    };
    const a = run('loop');
    const b = run('batched');
    a.forEach((t, i) => expect(maxAbsDiff(t, b[i] as tf.Tensor)).toBeLessThan(1e-4));
  });

  it('rejects inconsistent shapes', () => {
    expect(() => scaledDotProductAttention(tf.zeros([1, 3, 2, 4]), tf.zeros([1, 2, 2, 4]), tf.zeros([1, 2, 2, 4]))).toThrow(/divisible by Hk/);
    expect(() => scaledDotProductAttention(tf.zeros([1, 2, 4]), tf.zeros([1, 2, 4]), tf.zeros([1, 2, 4]))).toThrow(/q \[B, H, N, d\]/);
  });
});

describe('applyRope', () => {
  beforeEach(async () => {
    await useBackend('cpu');
  });

  it('equals the rotate-half formulation of Hugging Face / LLaMA', () => {
    const x = randn([2, 5, 3, 8], 1);
    const pos = [0, 1, 7, 30, 1000];
    expect(maxAbsDiff(applyRope(x, pos, 10000), naiveRope(x, pos, 10000))).toBeLessThan(1e-5);
    // positions per sample: the second sample shifted by 2
    const per = applyRope(x, [pos, pos.map((p) => p + 2)], 10000);
    const second = tf.slice(x, [1, 0, 0, 0], [1, 5, 3, 8]);
    expect(maxAbsDiff(tf.slice(per, [1, 0, 0, 0], [1, 5, 3, 8]), naiveRope(second, pos.map((p) => p + 2), 10000))).toBeLessThan(1e-5);
  });

  it('makes scores depend only on the position difference', () => {
    const q = randn([1, 1, 1, 16], 2);
    const k = randn([1, 1, 1, 16], 3);
    const score = (m: number, n: number): number => tf.sum(tf.mul(applyRope(q, [m], 500), applyRope(k, [n], 500))).dataSync()[0] as number;
    for (const [m, n] of [
      [3, 1],
      [0, 5],
      [10, 10],
    ] as const) {
      const s0 = score(m, n);
      for (const shift of [1, 17, 250]) expect(score(m + shift, n + shift)).toBeCloseTo(s0, 3);
    }
    // and it does depend on the difference
    expect(Math.abs(score(3, 1) - score(4, 1))).toBeGreaterThan(1e-3);
  });

  it('preserves norms and has a gradient that matches finite differences', () => {
    const x = randn([1, 3, 2, 4], 4);
    const y = applyRope(x, [2, 5, 9], 100);
    expect(tf.norm(y).dataSync()[0]).toBeCloseTo(tf.norm(x).dataSync()[0] as number, 4);
    const res = gradCheck((t) => applyRope(t, [2, 5, 9], 100), [x]);
    expect(res.ok, JSON.stringify(res.worst)).toBe(true);
  });
});

describe('Attention', () => {
  beforeEach(async () => {
    await useBackend('cpu');
  });

  it('equals textbook multi-head attention (kvHeads = heads) and accepts a plain tensor', () => {
    const att = new Attention({ dim: 8, heads: 2 }, { rng: new Rng(1) });
    expect(att.config).toEqual({ dim: 8, heads: 2, kvHeads: 2, headDim: 4, kvDim: 8, bias: true, causal: false, rope: null });
    const x = randn([2, 5, 8], 2);
    const proj = (name: string): tf.Tensor => {
      const l = att.child<Linear>(name);
      return tf.transpose(tf.reshape(tf.add(tf.matMul(tf.reshape(x, [10, 8]), l.weight), l.bias as tf.Tensor), [2, 5, 2, 4]), [0, 2, 1, 3]);
    };
    const o = tf.reshape(tf.transpose(naiveSdpa(proj('q'), proj('k'), proj('v')), [0, 2, 1, 3]), [10, 8]);
    const ol = att.child<Linear>('o');
    const ref = tf.reshape(tf.add(tf.matMul(o, ol.weight), ol.bias as tf.Tensor), [2, 5, 8]);
    expect(maxAbsDiff(att.call(x, ctx), ref)).toBeLessThan(1e-5);
    expect(maxAbsDiff(att.call({ x }, ctx), ref)).toBeLessThan(1e-5);
  });

  it('with grouped K/V heads equals multi-head attention whose K/V weights repeat per group', () => {
    const gqa = new Attention({ dim: 8, heads: 4, kvHeads: 2, rope: { base: 10000 }, causal: true }, { rng: new Rng(3) });
    const mha = new Attention({ dim: 8, heads: 4, kvHeads: 4, rope: { base: 10000 }, causal: true }, { rng: new Rng(4) });
    for (const n of ['q', 'o']) {
      mha.child<Linear>(n).param('weight').assign(gqa.child<Linear>(n).weight);
      mha.child<Linear>(n).param('bias').assign(gqa.child<Linear>(n).bias as tf.Tensor);
    }
    for (const n of ['k', 'v']) {
      // kv head j serves query heads 2j and 2j+1: columns [h0, h0, h1, h1]
      const w = gqa.child<Linear>(n).weight;
      const b = gqa.child<Linear>(n).bias as tf.Tensor;
      const rep = (t: tf.Tensor, axis: number) => tf.concat([0, 0, 1, 1].map((j) => tf.slice(t, axis === 1 ? [0, 2 * j] : [2 * j], axis === 1 ? [8, 2] : [2])), axis);
      mha.child<Linear>(n).param('weight').assign(rep(w, 1));
      mha.child<Linear>(n).param('bias').assign(rep(b, 0));
    }
    const x = randn([2, 6, 8], 5);
    expect(maxAbsDiff(gqa.call(x, ctx), mha.call(x, ctx))).toBeLessThan(1e-5);
  });

  it('causal: perturbing a future token leaves every earlier output unchanged (bitwise); bidirectional does not', () => {
    for (const causal of [true, false]) {
      const att = new Attention({ dim: 8, heads: 2, causal, rope: { base: 100 } }, { rng: new Rng(6) });
      const x = randn([1, 6, 8], 7);
      const bumped = tf.add(x, tf.mul(tf.oneHot(tf.tensor1d([4], 'int32'), 6).reshape([1, 6, 1]), 3));
      const before = tf.slice(att.call(x, ctx), [0, 0, 0], [1, 4, 8]).dataSync();
      const after = tf.slice(att.call(bumped, ctx), [0, 0, 0], [1, 4, 8]).dataSync();
      if (causal) expect(Array.from(after)).toEqual(Array.from(before));
      else expect(Math.max(...Array.from(after).map((v, i) => Math.abs(v - (before[i] as number))))).toBeGreaterThan(1e-3);
    }
  });

  it('masks: a bool mask equals its additive form, and masked keys do not influence the output', () => {
    const att = new Attention({ dim: 8, heads: 2 }, { rng: new Rng(8) });
    const x = randn([2, 5, 8], 9);
    const keep = [
      [1, 1, 0, 1, 0],
      [1, 0, 1, 1, 1],
    ];
    const boolMask = tf.tensor3d(keep.map((row) => Array.from({ length: 5 }, () => row)), [2, 5, 5], 'int32').cast('bool');
    const addMask = tf.mul(tf.sub(1, tf.cast(boolMask, 'float32')), MASKED);
    const yb = att.call({ x, mask: boolMask }, ctx);
    expect(maxAbsDiff(yb, att.call({ x, mask: addMask }, ctx))).toBe(0);
    expect(maxAbsDiff(yb, att.call({ x, mask: tf.reshape(addMask, [2, 1, 5, 5]) }, ctx))).toBe(0);
    // change token 2 of sample 0 and token 1 of sample 1 — both masked out as keys for every query
    const noise = tf.mul(tf.tensor3d([[[0], [0], [1], [0], [0]], [[0], [1], [0], [0], [0]]]), 5);
    const y2 = att.call({ x: tf.add(x, noise), mask: boolMask }, ctx);
    // queries at unmasked positions are unchanged (queries at the changed tokens change, being inputs)
    for (const [b, n] of [
      [0, 0],
      [0, 3],
      [1, 2],
      [1, 4],
    ] as const) {
      expect(maxAbsDiff(tf.slice(y2, [b, n, 0], [1, 1, 8]), tf.slice(yb, [b, n, 0], [1, 1, 8]))).toBeLessThan(1e-6);
    }
    expect(() => att.call({ x, mask: tf.zeros([5, 4]) }, ctx)).toThrow(/expected a mask \[5, 5\]/);
  });

  it('decoding with cached K/V equals the full causal forward', () => {
    const att = new Attention({ dim: 8, heads: 4, kvHeads: 2, causal: true, rope: { base: 10000 } }, { rng: new Rng(10) });
    const x = randn([2, 7, 8], 11);
    const full = att.call(x, ctx);
    const head = tf.slice(x, [0, 0, 0], [2, 4, 8]);
    const tail = tf.slice(x, [0, 4, 0], [2, 3, 8]);
    const past = att.projectKV(head, ctx, [0, 1, 2, 3]);
    const inc = att.call({ x: tail, past }, ctx);
    expect(maxAbsDiff(inc, tf.slice(full, [0, 4, 0], [2, 3, 8]))).toBeLessThan(1e-5);
    expect(maxAbsDiff(att.call(head, ctx), tf.slice(full, [0, 0, 0], [2, 4, 8]))).toBeLessThan(1e-5);
  });

  it('cross-attends to a source of another width and length', () => {
    const att = new Attention({ dim: 8, heads: 2, kvDim: 6, bias: false }, { rng: new Rng(12) });
    const x = randn([2, 3, 8], 13);
    const src = randn([2, 7, 6], 14);
    const y = att.call({ x, kv: src } satisfies AttentionInput, ctx);
    expect(y.shape).toEqual([2, 3, 8]);
    const res = gradCheck((a, s) => att.call({ x: a, kv: s }, ctx), [randn([1, 2, 8], 15), randn([1, 3, 6], 16)], { params: vars(att) });
    expect(res.worst).toHaveLength(6);
    expect(res.ok, JSON.stringify(res.worst)).toBe(true);
  });

  it('has gradients w.r.t. input and all eight params that match finite differences (causal, RoPE, GQA)', () => {
    const att = new Attention({ dim: 8, heads: 2, kvHeads: 1, causal: true, rope: { base: 10000 } }, { rng: new Rng(17) });
    const res = gradCheck((x) => att.call(x, ctx), [randn([2, 3, 8], 18)], { params: vars(att), samples: 16 });
    expect(res.worst).toHaveLength(9);
    expect(res.ok, JSON.stringify(res.worst)).toBe(true);
  });

  it('matches between cpu and wasm, forward and gradients (causal, RoPE, GQA, mask)', async () => {
    const att = new Attention({ dim: 32, heads: 4, kvHeads: 2, causal: true, rope: { base: 10000 } }, { rng: new Rng(19) });
    const mask = new Float32Array(3 * 9 * 9).map((_, i) => (i % 7 === 3 ? MASKED : 0));
    const res = await compareBackends(
      (x) => att.call({ x: x, mask: tf.tensor3d(mask, [3, 9, 9]) }, ctx),
      () => [randn([3, 9, 32], 20)],
      { params: vars(att) },
    );
    expect(res.ok, JSON.stringify(res.ratios)).toBe(true);
  });

  it('reports its own FLOPs (the products and softmax; the projections are its children’s)', () => {
    const att = new Attention({ dim: 8, heads: 2 }, { rng: new Rng(21) });
    const x = tf.zeros([3, 5, 8]);
    const scores = 3 * 2 * 5 * 5;
    expect(att.flops(x)).toEqual({ forward: 4 * scores * 4 + 5 * scores + 3 * 2 * 5 * 4, backward: 8 * scores * 4 + 4 * scores + 3 * 2 * 5 * 4 });
  });

  it('round-trips through the registry and a save/load', async () => {
    const att = new Attention({ dim: 12, heads: 3, headDim: 2, kvHeads: 1, causal: true, rope: { base: 500 }, bias: false }, { rng: new Rng(22) });
    const node = JSON.parse(JSON.stringify(att.toNode())) as { config: Record<string, never>; children: Record<string, unknown> };
    expect(Object.keys(node.children)).toEqual(['q', 'k', 'v', 'o']);
    const rebuilt = registry.create('attention', node.config, { rng: new Rng(22) });
    expect(rebuilt.config).toEqual(att.config);
    const clone = await cloneModel(att);
    const x = randn([2, 4, 12], 23);
    expect(Array.from((clone.call(x, ctx) as tf.Tensor).dataSync())).toEqual(Array.from(att.call(x, ctx).dataSync()));
    expect(() => new Attention({ dim: 8, heads: 3 }, { rng: new Rng(0) })).toThrow(/not divisible by heads 3/);
    expect(() => new Attention({ dim: 8, heads: 4, kvHeads: 3 }, { rng: new Rng(0) })).toThrow(/multiple of kvHeads 3/);
    expect(() => registry.create('attention', { dim: 8, heads: 2, rope: { base: 'x' } }, { rng: new Rng(0) })).toThrow(/config.rope to be null or \{base/);
  });
});

describe('a training step through every layer', () => {
  it('leaves no tensor behind on wasm or cpu, and every parameter gets a finite gradient', async () => {
    for (const backend of ['wasm', 'cpu'] as const) {
      await useBackend(backend);
      const rng = new Rng(30);
      const emb = new Embedding({ numEmbeddings: 20, dim: 16 }, { rng });
      const ln = new LayerNorm({ dim: 16 });
      const att = new Attention({ dim: 16, heads: 4, kvHeads: 2, causal: true, rope: { base: 10000 } }, { rng });
      const rms = new RMSNorm({ dim: 16 });
      const mlp = new Mlp({ inFeatures: 16, hiddenFeatures: 32 }, { rng });
      const params = [emb, ln, att, rms, mlp].flatMap((m) => [...m.namedParams()].map(([, p]) => p.variable));
      const ids = tf.tensor2d(Array.from({ length: 24 }, (_, i) => (i * 7) % 20), [3, 8], 'int32');
      const mask = tf.ones([3, 8, 8], 'bool');
      const step = (): void => {
        const { value, grads } = tf.variableGrads(() => {
          const x = emb.call(ids, ctx);
          const h = addNoSave(x, att.call({ x: ln.call(x, ctx), mask }, ctx));
          return tf.mean<tf.Scalar>(tf.square(addNoSave(h, mlp.call(rms.call(h, ctx), ctx))));
        }, params);
        expect(Object.keys(grads)).toHaveLength(params.length);
        for (const g of Object.values(grads)) expect(Number.isFinite(tf.tidy(() => tf.sum(tf.abs(g)).dataSync()[0]))).toBe(true);
        tf.dispose([value, ...Object.values(grads)]);
      };
      tf.tidy(step); // warm-up (kernels, caches)
      const before = tf.memory().numTensors;
      step();
      expect(tf.memory().numTensors, backend).toBe(before);
    }
  });
});
