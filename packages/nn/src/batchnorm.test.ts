import * as tf from '@tensorflow/tfjs';
import { cloneModel, createRunContext, registry, Rng, savedForBackward, useBackend } from '@leanpass/core';
import { beforeEach, describe, expect, it } from 'vitest';
import { BatchNorm, batchNormEval, batchNormTrain, meanRows, sumRows } from './batchnorm.js';
import { compareBackends, gradCheck } from './gradcheck.js';

function randn(shape: number[], seed: number, std = 1, mean = 0): tf.Tensor {
  return tf.tensor(new Rng(seed).normalArray(shape.reduce((a, b) => a * b, 1), std, mean), shape);
}
const train = createRunContext({ mode: 'train' });
const evalCtx = createRunContext({ mode: 'eval' });

function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0] as number);
}
function rel(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => (tf.norm(tf.sub(a, b)).dataSync()[0] as number) / (tf.norm(b).dataSync()[0] as number));
}

/** Per-channel mean and variance (biased and unbiased) of x [..., C] in Float64. */
function channelStats(x: tf.Tensor): { mean: number[]; biased: number[]; unbiased: number[] } {
  const c = x.shape[x.rank - 1] as number;
  const v = x.dataSync();
  const n = v.length / c;
  const mean = new Array<number>(c).fill(0);
  const sq = new Array<number>(c).fill(0);
  for (let i = 0; i < v.length; i++) mean[i % c] = (mean[i % c] as number) + (v[i] as number) / n;
  for (let i = 0; i < v.length; i++) sq[i % c] = (sq[i % c] as number) + ((v[i] as number) - (mean[i % c] as number)) ** 2;
  return { mean, biased: sq.map((s) => s / n), unbiased: sq.map((s) => s / (n - 1)) };
}

/** γ, β set to non-trivial values so that their gradients are exercised. */
function perturb(bn: BatchNorm, seed: number): [tf.Variable, tf.Variable] {
  const g = bn.param('weight').variable;
  const b = bn.param('bias').variable;
  g.assign(randn(g.shape, seed, 0.3, 1));
  b.assign(randn(b.shape, seed + 1, 0.5));
  return [g, b];
}

/** tfjs's own ops (with their own gradients) for train-mode batch norm over the last axis. */
function reference(x: tf.Tensor, g: tf.Tensor, b: tf.Tensor, eps: number): tf.Tensor {
  const axes = [...Array(x.rank - 1).keys()];
  const { mean, variance } = tf.moments(x, axes);
  return tf.add(tf.mul(tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, eps))), g), b);
}

describe('meanRows / sumRows', () => {
  beforeEach(async () => {
    await useBackend('cpu');
  });

  it('reduce over rows like tf.mean / tf.sum over axis 0, one-row inputs included', () => {
    for (const [n, c] of [
      [1, 5],
      [7, 3],
      [64, 16],
    ] as const) {
      const x = randn([n, c], n + c, 2, 1);
      expect(meanRows(x).shape).toEqual([1, c]);
      expect(maxAbsDiff(meanRows(x), tf.mean(x, 0, true))).toBeLessThan(1e-6);
      expect(maxAbsDiff(sumRows(x), tf.sum(x, 0, true))).toBeLessThan(1e-4 * n);
    }
    expect(() => meanRows(tf.zeros([2, 3, 4]))).toThrow(/rank-2/);
  });
});

describe('BatchNorm', () => {
  beforeEach(async () => {
    await useBackend('cpu');
  });

  it('train mode normalises with the batch statistics (equals moments + scale + shift)', () => {
    const bn = new BatchNorm({ channels: 6 });
    const [g, b] = perturb(bn, 1);
    const x = randn([3, 4, 5, 6], 2, 2.5, 1.5);
    const y = bn.call(x, train);
    expect(y.shape).toEqual([3, 4, 5, 6]);
    expect(maxAbsDiff(y, reference(x, g, b, 1e-5))).toBeLessThan(2e-5);
  });

  it('train mode updates the running statistics (PyTorch momentum, unbiased variance); eval leaves them', () => {
    const bn = new BatchNorm({ channels: 4, momentum: 0.25 });
    const x = randn([5, 3, 4], 3, 2, -1);
    const s = channelStats(x);
    bn.call(x, train);
    const rm = bn.param('runningMean').variable.dataSync();
    const rv = bn.param('runningVar').variable.dataSync();
    for (let c = 0; c < 4; c++) {
      expect(rm[c]).toBeCloseTo(0.75 * 0 + 0.25 * (s.mean[c] as number), 5);
      expect(rv[c]).toBeCloseTo(0.75 * 1 + 0.25 * (s.unbiased[c] as number), 5);
    }
    const before = [Array.from(rm), Array.from(rv)];
    bn.call(randn([5, 3, 4], 4), evalCtx);
    expect([Array.from(bn.param('runningMean').variable.dataSync()), Array.from(bn.param('runningVar').variable.dataSync())]).toEqual(before);
    // A second train step compounds: running ← 0.75·running + 0.25·batch.
    const x2 = randn([5, 3, 4], 5, 0.5, 2);
    const s2 = channelStats(x2);
    tf.dispose(tf.tidy(() => bn.call(x2, train))); // the update survives the caller's tidy
    const rm2 = bn.param('runningMean').variable.dataSync();
    for (let c = 0; c < 4; c++) expect(rm2[c]).toBeCloseTo(0.75 * (rm[c] as number) + 0.25 * (s2.mean[c] as number), 5);
  });

  it('running statistics stay out of the gradient and are not trainable', () => {
    const bn = new BatchNorm({ channels: 3 });
    perturb(bn, 6);
    const trainable = [...bn.namedParams()].filter(([, p]) => p.trainable).map(([n]) => n);
    expect(trainable).toEqual(['weight', 'bias']);
    const vars = [...bn.namedParams()].map(([, p]) => p.variable);
    const x = randn([8, 3], 7);
    const { value, grads } = tf.variableGrads(() => tf.sum<tf.Scalar>(tf.square(bn.call(x, train))), vars.filter((v) => v.trainable));
    expect(Object.keys(grads).sort()).toEqual(vars.filter((v) => v.trainable).map((v) => v.name).sort());
    value.dispose();
  });

  it('eval mode uses the running statistics: y = (x − mean)/√(var + ε)·γ + β', () => {
    const bn = new BatchNorm({ channels: 5, eps: 1e-3 });
    const [g, b] = perturb(bn, 8);
    const rm = randn([5], 9);
    const rv = tf.add(tf.square(randn([5], 10)), 0.5);
    bn.param('runningMean').variable.assign(rm);
    bn.param('runningVar').variable.assign(rv);
    const x = randn([4, 2, 5], 11, 2);
    const ref = tf.add(tf.mul(tf.div(tf.sub(x, rm), tf.sqrt(tf.add(rv, 1e-3))), g), b);
    expect(maxAbsDiff(bn.call(x, evalCtx), ref)).toBeLessThan(1e-5);
  });

  it('train-mode gradients (x, γ, β) match finite differences and tfjs autodiff of the reference ops', () => {
    const bn = new BatchNorm({ channels: 3 });
    const [g, b] = perturb(bn, 12);
    const res = gradCheck((x) => bn.call(x, train), [randn([2, 3, 2, 3], 13, 1.5, 0.5)], { params: [g, b] });
    expect(res.worst).toHaveLength(3);
    expect(res.ok, JSON.stringify(res.worst)).toBe(true);

    const x = randn([4, 5, 3], 14, 2, 1);
    const dy = randn([4, 5, 3], 15);
    const mine = tf.grads((a: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) => batchNormTrain(a, { gamma: gg, beta: bb }))([x, g, b], dy);
    const ref = tf.grads((a: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) => reference(a, gg, bb, 1e-5))([x, g, b], dy);
    mine.forEach((t, i) => expect(rel(t, ref[i] as tf.Tensor)).toBeLessThan(1e-5));
  });

  it('eval-mode gradients (x, γ, β) match finite differences', () => {
    const bn = new BatchNorm({ channels: 4 });
    const [g, b] = perturb(bn, 16);
    bn.param('runningMean').variable.assign(randn([4], 17));
    bn.param('runningVar').variable.assign(tf.add(tf.square(randn([4], 18)), 0.3));
    const res = gradCheck((x) => bn.call(x, evalCtx), [randn([3, 2, 4], 19)], { params: [g, b] });
    expect(res.worst).toHaveLength(3);
    expect(res.ok, JSON.stringify(res.worst)).toBe(true);
  });

  it('without affine parameters normalises only, and its input gradient matches', () => {
    const bn = new BatchNorm({ channels: 3, affine: false });
    expect([...bn.namedParams()].map(([n]) => n)).toEqual(['runningMean', 'runningVar']);
    const x = randn([6, 3], 20, 3, 2);
    const s = channelStats(tf.tidy(() => bn.call(x, train)));
    s.mean.forEach((m) => expect(Math.abs(m)).toBeLessThan(1e-5));
    s.biased.forEach((v) => expect(v).toBeCloseTo(1, 3));
    expect(gradCheck((a) => bn.call(a, train), [randn([5, 3], 21)]).ok).toBe(true);
  });

  it('a frozen γ gets no gradient; eval mode then saves nothing for the backward', () => {
    const bn = new BatchNorm({ channels: 4 });
    const [g, b] = perturb(bn, 22);
    g.trainable = false;
    const x = randn([2, 3, 4], 23);
    const grads = tf.variableGrads(() => tf.sum<tf.Scalar>(bn.call(x, train)), [b]).grads;
    expect(Object.keys(grads)).toEqual([b.name]);
    // Sum saves its input (the BN output); anything beyond that would be BN's own.
    const bytes = savedForBackward(() => tf.sum<tf.Scalar>(bn.call(x, evalCtx))).bytes;
    expect(bytes).toBe(4 * x.size);
    g.trainable = true;
  });

  it('a parameter marked untrainable on the module (Param.trainable) is treated as frozen too', () => {
    const bn = new BatchNorm({ channels: 4 });
    perturb(bn, 40);
    bn.param('weight').trainable = false;
    const x = randn([2, 3, 4], 41);
    expect(savedForBackward(() => tf.sum<tf.Scalar>(bn.call(x, evalCtx))).bytes).toBe(4 * x.size);
  });

  it('works inside a per-block tf.tidy when γ and the statistics are temporaries (saved, not read after disposal)', () => {
    const g = randn([3], 42, 0.3, 1);
    const mean = randn([3], 43);
    const variance = tf.add(tf.square(randn([3], 44)), 0.5);
    const x = randn([4, 3], 45);
    const dy = randn([4, 3], 46);
    const f = (a: tf.Tensor, gg: tf.Tensor): tf.Tensor => tf.tidy(() => batchNormTrain(a, { gamma: tf.mul(gg, 1) }));
    const ref = (a: tf.Tensor, gg: tf.Tensor): tf.Tensor => batchNormTrain(a, { gamma: gg });
    tf.grads(f)([x, g], dy).forEach((t, i) => expect(maxAbsDiff(t, tf.grads(ref)([x, g], dy)[i] as tf.Tensor)).toBeLessThan(1e-6));
    const fe = (a: tf.Tensor, gg: tf.Tensor): tf.Tensor => tf.tidy(() => batchNormEval(a, { mean: tf.mul(mean, 1), variance: tf.mul(variance, 1), gamma: tf.mul(gg, 1) }));
    const re = (a: tf.Tensor, gg: tf.Tensor): tf.Tensor => batchNormEval(a, { mean, variance, gamma: gg });
    tf.grads(fe)([x, g], dy).forEach((t, i) => expect(maxAbsDiff(t, tf.grads(re)([x, g], dy)[i] as tf.Tensor)).toBeLessThan(1e-6));
  });

  it('saves x̂ and 1/σ only in train mode', () => {
    const bn = new BatchNorm({ channels: 4 });
    perturb(bn, 24);
    const x = randn([3, 5, 4], 25);
    const bytes = savedForBackward(() => tf.sum<tf.Scalar>(bn.call(x, train))).bytes;
    // x̂ [N, C] + 1/σ [1, C] + the Sum's input.
    expect(bytes).toBe(4 * x.size + 4 * 4 + 4 * x.size);
  });

  it('matches between cpu and wasm, train and eval, forward and gradients', async () => {
    const bn = new BatchNorm({ channels: 24 });
    const [g, b] = perturb(bn, 26);
    const r1 = await compareBackends((x) => bn.call(x, train), () => [randn([4, 6, 5, 24], 27, 2, 1)], { params: [g, b] });
    expect(r1.ok, JSON.stringify(r1.ratios)).toBe(true);
    bn.param('runningVar').variable.assign(tf.add(tf.square(randn([24], 28)), 0.5));
    const r2 = await compareBackends((x) => bn.call(x, evalCtx), () => [randn([4, 6, 5, 24], 29, 2, 1)], { params: [g, b] });
    expect(r2.ok, JSON.stringify(r2.ratios)).toBe(true);
  });

  it('round-trips through the registry and a save/load, running statistics included', async () => {
    const bn = new BatchNorm({ channels: 3, momentum: 0.05, eps: 1e-4 });
    perturb(bn, 30);
    bn.call(randn([6, 3], 31, 2, 1), train);
    expect(bn.config).toEqual({ channels: 3, momentum: 0.05, eps: 1e-4, affine: true });
    const fresh = registry.create('batchnorm', JSON.parse(JSON.stringify(bn.config)) as never, { rng: new Rng(0) });
    expect(fresh.config).toEqual(bn.config);
    const clone = await cloneModel(bn);
    const x = randn([4, 3], 32);
    expect(Array.from((clone.call(x, evalCtx) as tf.Tensor).dataSync())).toEqual(Array.from(bn.call(x, evalCtx).dataSync()));
    expect(clone.param('runningMean').trainable).toBe(false);
  });

  it('rejects bad configs and inputs with what was expected and found', () => {
    expect(() => new BatchNorm({ channels: 0 })).toThrow(/channels: expected a positive integer, found 0/);
    expect(() => new BatchNorm({ channels: 3, momentum: 1.5 })).toThrow(/momentum: expected a number in \[0, 1\], found 1.5/);
    expect(() => registry.create('batchnorm', { channels: 3, affine: 'yes' }, { rng: new Rng(0) })).toThrow(/affine: expected a boolean/);
    const bn = new BatchNorm({ channels: 3 });
    expect(() => bn.call(tf.zeros([2, 4]), train)).toThrow(/3 channels on the last axis, found \[2, 4\]/);
    expect(() => bn.call(tf.zeros([1, 1, 3]), train)).toThrow(/more than 1 value per channel/);
    expect(() => batchNormEval(tf.zeros([2, 3]), { mean: tf.zeros([4]), variance: tf.ones([3]) })).toThrow(/runningMean with 3 elements/);
  });

  it('reports its FLOPs', () => {
    const bn = new BatchNorm({ channels: 3 });
    const x = tf.zeros([4, 3]);
    expect(bn.flops(x)).toEqual({ forward: 7 * 12, backward: 7 * 12 });
  });
});
