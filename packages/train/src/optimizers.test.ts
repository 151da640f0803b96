import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, FormatError, useBackend } from '@leanpass/core';
import { AdamW, SGD, type Optimizer } from './optimizers.js';

const near = (v: number, digits = 6): number => expect.closeTo(v, digits) as number;

type Vec = number[];
const GRADS: Vec[] = [
  [0.5, 1, -0.25],
  [-1, 0.25, 0.75],
  [2, -0.5, 0.1],
];
const P0: Vec = [1, -2, 0.3];
const LRS = [0.1, 0.05, 0.2];

function refSgd(o: { mu: number; damp: number; nesterov: boolean; wd: number }): Vec[] {
  let p = P0.slice();
  let buf: Vec | undefined;
  const out: Vec[] = [];
  GRADS.forEach((g, s) => {
    let d = g.map((gi, i) => gi + o.wd * (p[i] as number));
    if (o.mu > 0) {
      buf = buf ? buf.map((b, i) => o.mu * b + (1 - o.damp) * (d[i] as number)) : d.slice();
      const b = buf;
      d = o.nesterov ? d.map((di, i) => di + o.mu * (b[i] as number)) : b.slice();
    }
    p = p.map((pi, i) => pi - (LRS[s] as number) * (d[i] as number));
    out.push(p);
  });
  return out;
}

function refAdamW(o: { b1: number; b2: number; eps: number; wd: number }, grads = GRADS, lrs = LRS): Vec[] {
  let p = P0.slice();
  let m = [0, 0, 0];
  let v = [0, 0, 0];
  const out: Vec[] = [];
  grads.forEach((g, s) => {
    const t = s + 1;
    const lr = lrs[s] as number;
    p = p.map((pi) => pi * (1 - lr * o.wd));
    m = m.map((mi, i) => o.b1 * mi + (1 - o.b1) * (g[i] as number));
    v = v.map((vi, i) => o.b2 * vi + (1 - o.b2) * (g[i] as number) ** 2);
    const bc1 = 1 - o.b1 ** t;
    const bc2 = 1 - o.b2 ** t;
    p = p.map((pi, i) => pi - (lr / bc1) * (m[i] as number) / (Math.sqrt(v[i] as number) / Math.sqrt(bc2) + o.eps));
    out.push(p);
  });
  return out;
}

function run(opt: Optimizer, grads = GRADS, lrs = LRS): Vec[] {
  const w = tf.variable(tf.tensor1d(P0));
  const params = new Map([['layer.weight', w]]);
  const out: Vec[] = [];
  grads.forEach((g, s) => {
    const gt = tf.tensor1d(g);
    opt.apply(params, new Map([['layer.weight', gt]]), lrs[s] as number);
    gt.dispose();
    out.push(Array.from(w.dataSync()));
  });
  w.dispose();
  return out;
}

const close = (want: Vec[]) => want.map((row) => row.map((v) => near(v, 6)));

describe('optimizers match hand-computed updates', () => {
  beforeAll(async () => {
    await useBackend('cpu');
  });

  it('plain SGD', () => {
    expect(run(new SGD())).toEqual(close(refSgd({ mu: 0, damp: 0, nesterov: false, wd: 0 })));
  });

  it('SGD with momentum, dampening and weight decay', () => {
    expect(run(new SGD({ momentum: 0.9, dampening: 0.1, weightDecay: 0.01 }))).toEqual(close(refSgd({ mu: 0.9, damp: 0.1, nesterov: false, wd: 0.01 })));
  });

  it('SGD with Nesterov momentum', () => {
    const got = run(new SGD({ momentum: 0.8, nesterov: true }));
    expect(got).toEqual(close(refSgd({ mu: 0.8, damp: 0, nesterov: true, wd: 0 })));
    // and it differs from classical momentum (the test would not catch a dropped flag otherwise)
    expect(got[2]![0]).not.toBeCloseTo(refSgd({ mu: 0.8, damp: 0, nesterov: false, wd: 0 })[2]![0]!, 4);
  });

  it('AdamW with bias correction and decoupled weight decay', () => {
    const o = { b1: 0.9, b2: 0.999, eps: 1e-8, wd: 0.1 };
    expect(run(new AdamW({ weightDecay: 0.1 }))).toEqual(close(refAdamW(o)));
    const o2 = { b1: 0.5, b2: 0.75, eps: 1e-3, wd: 0 };
    expect(run(new AdamW({ beta1: 0.5, beta2: 0.75, epsilon: 1e-3, weightDecay: 0 }))).toEqual(close(refAdamW(o2)));
  });

  it('counts steps per parameter: a parameter without a gradient does not advance', () => {
    const opt = new AdamW({ weightDecay: 0 });
    const a = tf.variable(tf.tensor1d(P0));
    const b = tf.variable(tf.tensor1d(P0));
    const params = new Map([
      ['a', a],
      ['b', b],
    ]);
    const g0 = tf.tensor1d(GRADS[0]!);
    const g1 = tf.tensor1d(GRADS[1]!);
    opt.apply(params, new Map([['a', g0]]), 0.1);
    expect(Array.from(b.dataSync())).toEqual(P0.map((v) => near(v, 7)));
    opt.apply(params, new Map([['a', g1], ['b', g0]]), 0.1);
    expect(opt.count('a')).toBe(2);
    expect(opt.count('b')).toBe(1);
    // b's first update uses t = 1: the same as a single AdamW step
    expect(Array.from(b.dataSync())).toEqual(close(refAdamW({ b1: 0.9, b2: 0.999, eps: 1e-8, wd: 0 }, [GRADS[0]!], [0.1]))[0]);
    opt.dispose();
    tf.dispose([a, b, g0, g1]);
  });

  it('applies weight decay only where the filter says', () => {
    const opt = new AdamW({ weightDecay: 0.5, decay: (_p, shape) => shape.length >= 2 });
    const w = tf.variable(tf.ones([2, 2]));
    const bias = tf.variable(tf.ones([2]));
    opt.apply(new Map([['w', w], ['bias', bias]]), new Map([['w', tf.zeros([2, 2])], ['bias', tf.zeros([2])]]), 0.1);
    expect(Array.from(w.dataSync())).toEqual([0.95, 0.95, 0.95, 0.95].map((v) => near(v, 7)));
    expect(Array.from(bias.dataSync())).toEqual([1, 1]);
    expect(opt.config()).toMatchObject({ kind: 'adamw', weightDecay: 0.5, decay: 'custom' });
  });

  it('state round-trips: a restored optimizer continues exactly', () => {
    for (const make of [() => new SGD({ momentum: 0.9 }), () => new AdamW()]) {
      const a = make();
      const wa = tf.variable(tf.tensor1d(P0));
      const pa = new Map([['w', wa]]);
      for (const g of GRADS.slice(0, 2)) a.apply(pa, new Map([['w', tf.tensor1d(g)]]), 0.1);
      const b = make();
      const wb = tf.variable(wa.clone());
      const st = a.getState();
      const copies = new Map([...st.tensors].map(([k, t]) => [k, t.clone()]));
      b.setState({ tensors: copies, counts: st.counts });
      tf.dispose([...copies.values()]);
      expect(b.getState().counts).toEqual({ w: 2 });
      a.apply(pa, new Map([['w', tf.tensor1d(GRADS[2]!)]]), 0.1);
      b.apply(new Map([['w', wb]]), new Map([['w', tf.tensor1d(GRADS[2]!)]]), 0.1);
      expect(Array.from(wb.dataSync())).toEqual(Array.from(wa.dataSync()));
      a.dispose();
      b.dispose();
    }
  });

  it('keeps its tensor count constant across updates', () => {
    const opt = new AdamW();
    const w = tf.variable(tf.tensor1d(P0));
    const g = tf.tensor1d(GRADS[0]!);
    opt.apply(new Map([['w', w]]), new Map([['w', g]]), 0.1);
    const n = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) opt.apply(new Map([['w', w]]), new Map([['w', g]]), 0.1);
    expect(tf.memory().numTensors).toBe(n);
    opt.dispose();
    expect(tf.memory().numTensors).toBe(n - 2);
  });

  it('rejects bad hyperparameters, state and gradients', () => {
    expect(() => new SGD({ nesterov: true })).toThrow(/nesterov: needs momentum > 0/);
    expect(() => new SGD({ momentum: 1 })).toThrow(ConfigError);
    expect(() => new AdamW({ beta1: 1, epsilon: 0 })).toThrow(/beta1[\s\S]*epsilon/);
    const opt = new SGD({ momentum: 0.5 });
    expect(() => opt.setState({ tensors: new Map([['m/w', tf.zeros([1])]]), counts: {} })).toThrow(FormatError);
    const w = tf.variable(tf.zeros([2]));
    expect(() => opt.apply(new Map([['w', w]]), new Map([['w', tf.zeros([3])]]), 0.1)).toThrow(/shape \[3\], expected the parameter's \[2\]/);
    expect(() => opt.apply(new Map([['w', w]]), new Map([['v', tf.zeros([2])]]), 0.1)).toThrow(/not among the parameters/);
    expect(() => opt.apply(new Map([['w', w]]), new Map([['w', tf.zeros([2])]]), Number.NaN)).toThrow(/learning rate/);
  });
});
