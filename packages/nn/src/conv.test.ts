import * as tf from '@tensorflow/tfjs';
import { cloneModel, createRunContext, registry, Rng, savedForBackward, useBackend } from '@leanpass/core';
import { beforeEach, describe, expect, it } from 'vitest';
import { Activation } from './activations.js';
import { BatchNorm } from './batchnorm.js';
import { blockDiagonalFilter, Conv2d, conv2d, transpose2d } from './conv.js';
import { DepthwiseConv2d } from './depthwise.js';
import { type Padding } from './depthwise.js';
import { compareBackends, gradCheck } from './gradcheck.js';

function randn(shape: number[], seed: number, std = 1): tf.Tensor {
  return tf.tensor(new Rng(seed).normalArray(shape.reduce((a, b) => a * b, 1), std), shape);
}
function rel(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => (tf.norm(tf.sub(a, b)).dataSync()[0] as number) / Math.max(tf.norm(b).dataSync()[0] as number, 1e-30));
}
const ctx = createRunContext({ mode: 'train' });

/** tfjs's own conv2d (cpu has every gradient kernel), groups by splitting channels. */
function reference(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor, stride: number | [number, number], padding: Padding, groups: number): tf.Tensor {
  const pad = typeof padding === 'number' ? ([[0, 0], [padding, padding], [padding, padding], [0, 0]] as [[number, number], [number, number], [number, number], [number, number]]) : padding;
  if (groups === 1) return tf.add(tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, stride, pad), b);
  const xs = tf.split(x, groups, 3);
  const ws = tf.split(w, groups, 3);
  return tf.add(tf.concat(xs.map((xi, i) => tf.conv2d(xi as tf.Tensor4D, ws[i] as tf.Tensor4D, stride, pad)), 3), b);
}

interface Case {
  x: [number, number, number, number];
  k: [number, number];
  out: number;
  stride: number | [number, number];
  padding: Padding;
  groups: number;
}
const CASES: Case[] = [
  { x: [2, 6, 5, 4], k: [3, 3], out: 5, stride: 1, padding: 'same', groups: 1 },
  { x: [2, 6, 5, 4], k: [1, 1], out: 6, stride: 1, padding: 'same', groups: 1 },
  { x: [2, 6, 5, 4], k: [1, 1], out: 6, stride: 1, padding: 'valid', groups: 1 },
  { x: [2, 6, 5, 4], k: [1, 1], out: 6, stride: 2, padding: 'same', groups: 1 },
  { x: [2, 5, 5, 3], k: [1, 1], out: 2, stride: 1, padding: 1, groups: 1 },
  { x: [2, 7, 6, 4], k: [3, 3], out: 5, stride: 2, padding: 'same', groups: 1 },
  { x: [2, 8, 8, 4], k: [3, 3], out: 5, stride: 2, padding: 'same', groups: 1 },
  { x: [2, 7, 6, 4], k: [3, 3], out: 5, stride: 2, padding: 'valid', groups: 1 },
  { x: [2, 8, 9, 4], k: [3, 3], out: 6, stride: 2, padding: 'valid', groups: 1 },
  { x: [2, 7, 6, 4], k: [3, 3], out: 5, stride: 2, padding: 1, groups: 1 },
  { x: [2, 7, 7, 3], k: [5, 5], out: 4, stride: 2, padding: 2, groups: 1 },
  { x: [1, 9, 9, 2], k: [3, 3], out: 3, stride: 3, padding: 'same', groups: 1 },
  { x: [2, 5, 5, 3], k: [3, 3], out: 3, stride: 1, padding: 4, groups: 1 },
  { x: [2, 6, 6, 3], k: [2, 2], out: 4, stride: 2, padding: 'same', groups: 1 },
  { x: [2, 6, 7, 2], k: [3, 1], out: 3, stride: [2, 1], padding: 'same', groups: 1 },
  { x: [2, 6, 5, 4], k: [3, 3], out: 6, stride: 1, padding: 'same', groups: 2 },
  { x: [2, 6, 5, 4], k: [1, 1], out: 8, stride: 1, padding: 'valid', groups: 2 },
  { x: [2, 6, 5, 6], k: [3, 3], out: 9, stride: 2, padding: 1, groups: 3 },
  { x: [2, 6, 5, 4], k: [3, 3], out: 8, stride: 1, padding: 1, groups: 4 },
  { x: [2, 6, 5, 4], k: [3, 3], out: 4, stride: 2, padding: 'same', groups: 4 },
];
const label = (c: Case): string => `x [${c.x.join(',')}] k ${c.k.join('×')} out ${c.out} stride ${JSON.stringify(c.stride)} padding ${JSON.stringify(c.padding)} groups ${c.groups}`;

describe('conv2d op', () => {
  beforeEach(async () => {
    await useBackend('cpu');
  });

  it.each(CASES.map((c) => [label(c), c] as const))('equals tf.conv2d and its gradients: %s', (_name, c) => {
    const x = randn(c.x, 1);
    const w = randn([...c.k, c.x[3] / c.groups, c.out], 2);
    const b = randn([c.out], 3);
    const yRef = reference(x, w, b, c.stride, c.padding, c.groups);
    const opts = { stride: c.stride, padding: c.padding, groups: c.groups };
    const y = conv2d(x, w, b, opts);
    expect(y.shape).toEqual(yRef.shape);
    expect(rel(y, yRef)).toBeLessThan(1e-6);
    const dy = randn(yRef.shape, 4);
    const mine = tf.grads((a: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor) => conv2d(a, ww, bb, opts))([x, w, b], dy);
    const ref = tf.grads((a: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor) => reference(a, ww, bb, c.stride, c.padding, c.groups))([x, w, b], dy);
    mine.forEach((g, i) => expect(rel(g, ref[i] as tf.Tensor), `gradient ${i}`).toBeLessThan(1e-5));
  });

  it('has gradients that match finite differences (3×3 stride 2, 1×1, groups 2)', () => {
    for (const [k, stride, groups] of [
      [3, 2, 1],
      [1, 1, 1],
      [3, 1, 2],
    ] as const) {
      const res = gradCheck((x, w, b) => conv2d(x, w, b, { stride, padding: 'same', groups }), [randn([2, 5, 4, 4], 5), randn([k, k, 4 / groups, 3 * groups], 6), randn([3 * groups], 7)]);
      expect(res.worst).toHaveLength(3);
      expect(res.ok, `k ${k} stride ${stride} groups ${groups}: ${JSON.stringify(res.worst)}`).toBe(true);
    }
  });

  it('saves only the input (1×1 via dense and k×k alike), and nothing when the weight is frozen', () => {
    for (const k of [1, 3]) {
      const x = randn([2, 5, 5, 4], 8);
      const w = tf.variable(randn([k, k, 4, 6], 9));
      const b = tf.variable(randn([6], 10));
      const y = (): tf.Tensor => conv2d(x, w, b);
      const outSize = tf.tidy(() => y().size);
      expect(savedForBackward(() => tf.sum<tf.Scalar>(y())).bytes, `k ${k}`).toBe(4 * x.size + 4 * outSize);
      w.trainable = false;
      expect(Object.keys(tf.variableGrads(() => tf.sum<tf.Scalar>(y()), [b]).grads)).toEqual([b.name]);
      expect(savedForBackward(() => tf.sum<tf.Scalar>(y())).bytes, `k ${k} frozen`).toBe(4 * outSize);
    }
  });

  it('works inside a per-block tf.tidy when the filter is a temporary (it is saved, not read after disposal)', () => {
    for (const [k, groups] of [
      [3, 1],
      [3, 2],
      [3, 4],
      [1, 1],
    ] as const) {
      const x = randn([1, 5, 5, 4], 11);
      const w = randn([k, k, 4 / groups, 4], 12);
      const dy = randn([1, 5, 5, 4], 13);
      const f = (a: tf.Tensor, ww: tf.Tensor): tf.Tensor => tf.tidy(() => conv2d(a, tf.mul(ww, 1), null, { groups }));
      const ref = (a: tf.Tensor, ww: tf.Tensor): tf.Tensor => conv2d(a, ww, null, { groups });
      const got = tf.grads(f)([x, w], dy);
      tf.grads(ref)([x, w], dy).forEach((g, i) => expect(rel(got[i] as tf.Tensor, g), `k ${k} groups ${groups}`).toBeLessThan(1e-6));
    }
  });

  it('matches between cpu and wasm, forward and gradients (1×1, 3×3 stride 1 and 2, groups 2, groups = in)', async () => {
    for (const [k, stride, groups, out] of [
      [1, 1, 1, 12],
      [3, 1, 1, 10],
      [3, 2, 1, 10],
      [3, 1, 2, 10],
      [3, 2, 8, 16],
    ] as const) {
      const res = await compareBackends(
        (x, w, b) => conv2d(x, w, b, { stride, padding: 1, groups }),
        () => [randn([2, 9, 8, 8], 14), randn([k, k, 8 / groups, out], 15), randn([out], 16)],
      );
      expect(res.ok, `k ${k} stride ${stride} groups ${groups}: ${JSON.stringify(res.ratios)}`).toBe(true);
    }
  });

  it('rejects mismatched shapes and groups with what was expected and found', () => {
    expect(() => conv2d(tf.zeros([1, 4, 4, 3]), tf.zeros([3, 3, 2, 4]), null)).toThrow(/has 3 channels but w \[3, 3, 2, 4\] expects 2 per group × 1 groups/);
    expect(() => conv2d(tf.zeros([1, 4, 4, 4]), tf.zeros([3, 3, 2, 3]), null, { groups: 2 })).toThrow(/groups must be a positive integer dividing both 4 input and 3 output channels, found 2/);
    expect(() => conv2d(tf.zeros([1, 4, 4, 4]), tf.zeros([3, 3, 4, 3]), tf.zeros([4]))).toThrow(/bias of 3 elements/);
    expect(() => conv2d(tf.zeros([4, 4, 4]), tf.zeros([3, 3, 4, 3]), null)).toThrow(/expected x of rank 4/);
  });
});

describe('conv helpers', () => {
  beforeEach(async () => {
    await useBackend('cpu');
  });

  it('transpose2d equals tf.transpose for tall, wide, square and prime-sized matrices', async () => {
    for (const backend of ['cpu', 'wasm'] as const) {
      await useBackend(backend);
      for (const [r, c] of [
        [96, 5],
        [5, 96],
        [16, 16],
        [97, 3],
        [1, 7],
        [384, 40],
      ] as const) {
        const x = randn([r, c], r * c);
        const t = transpose2d(x);
        expect(t.shape).toEqual([c, r]);
        expect(Array.from(t.dataSync())).toEqual(Array.from(tf.transpose(x).dataSync()));
      }
    }
  });

  it('blockDiagonalFilter puts group g of the filter on the g-th diagonal block, zeros elsewhere', () => {
    const w = randn([2, 1, 3, 4], 20); // in/groups = 3, out = 4, groups = 2 → [2, 1, 6, 4]
    const bd = blockDiagonalFilter(w, 2);
    expect(bd.shape).toEqual([2, 1, 6, 4]);
    const v = bd.arraySync();
    const wv = w.arraySync() as number[][][][];
    for (let i = 0; i < 2; i++) {
      for (let ci = 0; ci < 6; ci++) {
        for (let o = 0; o < 4; o++) {
          const sameGroup = Math.floor(ci / 3) === Math.floor(o / 2);
          const got = v[i]![0]![ci]![o] as number;
          expect(sameGroup ? got : Math.abs(got)).toBe(sameGroup ? wv[i]![0]![ci % 3]![o] : 0);
        }
      }
    }
  });
});

describe('Conv2d module', () => {
  beforeEach(async () => {
    await useBackend('cpu');
  });

  it('runs the op on its params; gradients of its params match finite differences', () => {
    const m = new Conv2d({ inChannels: 4, outChannels: 6, kernelSize: 3, stride: 2, padding: 1, groups: 2 }, { rng: new Rng(1) });
    expect(m.param('weight').shape).toEqual([3, 3, 2, 6]);
    const x = randn([2, 5, 5, 4], 17);
    const ref = reference(x, m.param('weight').variable, m.param('bias').variable, 2, 1, 2);
    expect(rel(m.call(x, ctx), ref)).toBeLessThan(1e-6);
    const res = gradCheck((a) => m.call(a, ctx), [randn([1, 5, 4, 4], 18)], { params: [m.param('weight').variable, m.param('bias').variable] });
    expect(res.worst).toHaveLength(3);
    expect(res.ok, JSON.stringify(res.worst)).toBe(true);
  });

  it('initialises like PyTorch: U(±1/√(in/groups·kh·kw)), seeded', () => {
    const a = new Conv2d({ inChannels: 8, outChannels: 16, kernelSize: 3, groups: 2 }, { rng: new Rng(5) });
    const b = new Conv2d({ inChannels: 8, outChannels: 16, kernelSize: 3, groups: 2 }, { rng: new Rng(5) });
    const w = a.param('weight').variable.dataSync();
    const bound = 1 / Math.sqrt(4 * 9);
    expect(Math.max(...Array.from(w, Math.abs))).toBeLessThanOrEqual(bound);
    expect(Math.max(...Array.from(w, Math.abs))).toBeGreaterThan(0.9 * bound);
    expect(Array.from(b.param('weight').variable.dataSync())).toEqual(Array.from(w));
    expect(Array.from(b.param('bias').variable.dataSync())).toEqual(Array.from(a.param('bias').variable.dataSync()));
  });

  it('round-trips through the registry and a save/load', async () => {
    const m = new Conv2d({ inChannels: 3, outChannels: 4, kernelSize: [3, 1], stride: [2, 1], padding: 'valid', bias: false }, { rng: new Rng(2) });
    expect(m.config).toEqual({ inChannels: 3, outChannels: 4, kernelSize: [3, 1], stride: [2, 1], padding: 'valid', groups: 1, bias: false });
    const fresh = registry.create('conv2d', JSON.parse(JSON.stringify(m.config)) as never, { rng: new Rng(0) });
    expect(fresh.config).toEqual(m.config);
    const clone = await cloneModel(m);
    const x = randn([1, 7, 5, 3], 19);
    expect(Array.from((clone.call(x, ctx) as tf.Tensor).dataSync())).toEqual(Array.from(m.call(x, ctx).dataSync()));
  });

  it('reports its FLOPs (2·MACs forward; dx, dW and db backward, dW only when trained)', () => {
    const m = new Conv2d({ inChannels: 4, outChannels: 6, kernelSize: 3, groups: 2 }, { rng: new Rng(3) });
    const x = tf.zeros([2, 5, 5, 4]);
    const y = m.call(x, ctx);
    const macs = 9 * 2 * y.size;
    expect(m.flops(x, y)).toEqual({ forward: 2 * macs + y.size, backward: 4 * macs + y.size });
    m.param('weight').trainable = false;
    expect(m.flops(x, y).backward).toBe(2 * macs + y.size);
  });

  it('rejects bad configs and inputs, listing every problem', () => {
    expect(() => new Conv2d({ inChannels: 4, outChannels: 6, kernelSize: 0, groups: 4 }, { rng: new Rng(0) })).toThrow(
      /groups: expected a divisor of inChannels \(4\) and outChannels \(6\), found 4[\s\S]*kernelSize: expected a positive integer or an \[h, w\] pair, found 0/,
    );
    expect(() => registry.create('conv2d', { inChannels: 2, kernelSize: 3 }, { rng: new Rng(0) })).toThrow(/outChannels: expected a positive integer, found undefined/);
    const m = new Conv2d({ inChannels: 3, outChannels: 2, kernelSize: 1 }, { rng: new Rng(0) });
    expect(() => m.call(tf.zeros([1, 4, 4, 2]), ctx)).toThrow(/expected an input \[B, H, W, 3\], found \[1, 4, 4, 2\]/);
  });
});

describe('an inverted residual block of these layers', () => {
  it('gives the same outputs and parameter gradients on cpu and wasm (stride 1 and 2)', async () => {
    await useBackend('cpu');
    for (const stride of [1, 2]) {
      const init = { rng: new Rng(40 + stride) };
      const layers = [
        new Conv2d({ inChannels: 8, outChannels: 24, kernelSize: 1, bias: false }, init),
        new BatchNorm({ channels: 24 }),
        new Activation({ fn: 'relu6' }),
        new DepthwiseConv2d({ channels: 24, kernelSize: 3, stride, padding: 1, bias: false }, init),
        new BatchNorm({ channels: 24 }),
        new Activation({ fn: 'relu6' }),
        new Conv2d({ inChannels: 24, outChannels: 8, kernelSize: 1, bias: false }, init),
        new BatchNorm({ channels: 8 }),
      ];
      const params = layers.flatMap((l) => [...l.namedParams()].filter(([, p]) => p.trainable).map(([, p]) => p.variable));
      expect(params).toHaveLength(9);
      const block = (x: tf.Tensor): tf.Tensor => {
        const h = layers.reduce((t, l) => l.call(t, ctx), x);
        return stride === 1 ? tf.add(x, h) : h;
      };
      const res = await compareBackends(block, () => [randn([4, 8, 8, 8], 50, 2)], { params });
      expect(res.ok, `stride ${stride}: ${JSON.stringify(res.ratios)}`).toBe(true);
    }
  });

  it('leaves no tensor behind after a training step on wasm', async () => {
    await useBackend('wasm');
    const init = { rng: new Rng(60) };
    const layers = [
      new Conv2d({ inChannels: 4, outChannels: 12, kernelSize: 1, bias: false }, init),
      new BatchNorm({ channels: 12 }),
      new DepthwiseConv2d({ channels: 12, kernelSize: 3, stride: 2, padding: 1 }, init),
      new Conv2d({ inChannels: 12, outChannels: 6, kernelSize: 3, stride: 2, groups: 2 }, init),
      new BatchNorm({ channels: 6 }),
    ];
    const vars = layers.flatMap((l) => [...l.namedParams()].filter(([, p]) => p.trainable).map(([, p]) => p.variable));
    const x = randn([2, 9, 9, 4], 61);
    const step = (): void => {
      const { value, grads } = tf.variableGrads(() => tf.mean<tf.Scalar>(tf.square(layers.reduce((t, l) => l.call(t, ctx), x))), vars);
      expect(Object.keys(grads)).toHaveLength(vars.length);
      value.dispose();
      tf.dispose(grads);
    };
    step();
    const before = tf.memory().numTensors;
    step();
    expect(tf.memory().numTensors).toBe(before);
    await useBackend('cpu');
  });
});
