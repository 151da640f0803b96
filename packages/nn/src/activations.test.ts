import * as tf from '@tensorflow/tfjs';
import { createRunContext, registry, Rng, useBackend } from '@leanpass/core';
import { beforeEach, describe, expect, it } from 'vitest';
import { ACTIVATIONS, Activation, activation, activationFlops, type ActivationName } from './activations.js';
import { compareBackends, gradCheck } from './gradcheck.js';

/** Points spread over [-8, 8], kept at least 0.1 away from every kink (0, ±3, 6). */
function awayFromKinks(n: number, seed: number): tf.Tensor {
  const rng = new Rng(seed);
  const kinks = [-3, 0, 3, 6];
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let x: number;
    do x = rng.uniform(-8, 8);
    while (kinks.some((k) => Math.abs(x - k) < 0.1));
    v[i] = x;
  }
  return tf.tensor1d(v);
}

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

/** Reference values, written independently of the implementations (Float64, from the definitions). */
function reference(name: ActivationName, x: number): number {
  switch (name) {
    case 'relu':
      return Math.max(x, 0);
    case 'relu6':
      return Math.min(Math.max(x, 0), 6);
    case 'gelu':
      return 0.5 * x * (1 + Math.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)));
    case 'geluErf': {
      // Φ(x) through the complementary error function series (Abramowitz–Stegun 7.1.26 is too coarse):
      // numerically integrate the density instead
      let s = 0;
      const steps = 4000;
      const lo = -12;
      const h = (x - lo) / steps;
      for (let i = 0; i <= steps; i++) {
        const t = lo + i * h;
        const wgt = i === 0 || i === steps ? 1 : i % 2 === 1 ? 4 : 2;
        s += wgt * Math.exp(-0.5 * t * t);
      }
      return x * ((s * h) / 3 / Math.sqrt(2 * Math.PI));
    }
    case 'silu':
      return x / (1 + Math.exp(-x));
    case 'hardSwish':
      return (x * Math.min(Math.max(x + 3, 0), 6)) / 6;
    case 'hardSigmoid':
      return Math.min(Math.max(x + 3, 0), 6) / 6;
    case 'identity':
      return x;
  }
}

describe('activations', () => {
  beforeEach(async () => {
    await useBackend('cpu');
  });

  it('compute their definitions', () => {
    const x = awayFromKinks(64, 1);
    const xs = Array.from(x.dataSync());
    for (const name of ACTIVATIONS) {
      const y = Array.from(activation(name)(x).dataSync());
      y.forEach((v, i) => expect(Math.abs(v - reference(name, xs[i] as number)), `${name}(${xs[i]})`).toBeLessThan(2e-5 * (1 + Math.abs(v))));
    }
  });

  for (const name of ACTIVATIONS) {
    it(`${name}: gradient matches finite differences`, () => {
      const res = gradCheck((x) => activation(name)(x), [awayFromKinks(48, 2)], { eps: 1e-2, samples: 48 });
      expect(res.ok, JSON.stringify(res.worst)).toBe(true);
    });
  }

  it('use PyTorch’s gradient masks at the boundaries', () => {
    const at = (name: ActivationName, pts: number[]): number[] => Array.from(tf.grad((x) => activation(name)(x))(tf.tensor1d(pts)).dataSync());
    // relu: 1[x > 0]; relu6: 1[0 < x < 6] (tfjs's stock Relu6 gradient would give 1 at x = 6)
    expect(at('relu', [-1, 0, 1])).toEqual([0, 0, 1]);
    expect(at('relu6', [-1, 0, 3, 6, 7])).toEqual([0, 0, 1, 0, 0]);
    // hardSigmoid: 1[-3 < x < 3] / 6
    const hsig = at('hardSigmoid', [-4, -3, 0, 3, 4]);
    [0, 0, 1 / 6, 0, 0].forEach((e, i) => expect(hsig[i]).toBeCloseTo(e, 7));
    // hardSwish: 0 below -3, x/3 + 1/2 on [-3, 3], 1 above
    const hs = at('hardSwish', [-4, -3, 0, 3, 4]);
    [0, -0.5, 0.5, 1.5, 1].forEach((e, i) => expect(hs[i]).toBeCloseTo(e, 6));
  });

  it('match between cpu and wasm, forward and gradients', async () => {
    for (const name of ACTIVATIONS) {
      const res = await compareBackends((x) => activation(name)(x), () => [awayFromKinks(200, 3)]);
      expect(res.ok, `${name}: ${JSON.stringify(res.ratios)}`).toBe(true);
    }
  });

  it('reject unknown names with the known ones listed', () => {
    expect(() => activation('swish')).toThrow(/unknown activation 'swish'.*relu, relu6, gelu/);
  });
});

describe('Activation module', () => {
  it('applies its function, reports FLOPs and round-trips through the registry', async () => {
    await useBackend('cpu');
    const m = new Activation({ fn: 'silu' });
    const x = awayFromKinks(10, 4);
    const ctx = createRunContext();
    expect(Array.from(m.call(x, ctx).dataSync())).toEqual(Array.from(activation('silu')(x).dataSync()));
    expect(m.flops(x)).toEqual(activationFlops('silu', 10));
    const copy = registry.create('activation', JSON.parse(JSON.stringify(m.toNode().config)) as { fn: string }, { rng: new Rng(0) });
    expect(copy).toBeInstanceOf(Activation);
    expect(copy.config).toEqual({ fn: 'silu' });
    expect(() => registry.create('activation', { fn: 'tanh' }, { rng: new Rng(0) })).toThrow(/config.fn to be one of/);
  });
});
