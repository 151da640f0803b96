/**
 * Activations with cheap, explicit gradients that run on every backend (wasm has no Gelu kernel).
 *
 * Each is a `tf.customGrad` that saves what its gradient needs and nothing else. Masks are built with
 * `step` (one fast unary kernel) rather than comparisons: on wasm a `greater` plus `cast` costs ~5× a
 * `step` over the same tensor. Gradient masks follow PyTorch exactly, boundaries included:
 * relu 1[x > 0]; relu6 1[0 < x < 6] (tfjs's own Relu6 gradient uses 0 < x ≤ 6); hardSigmoid
 * 1[-3 < x < 3] / 6; hardSwish 0 below -3, x/3 + 1/2 on [-3, 3], 1 above.
 */
import * as tf from '@tensorflow/tfjs';
import { ConfigError, Module, registry, type FlopCount, type JsonObject, type RunContext } from '@leanpass/core';
import { customOp } from './util.js';

/** Activation names understood by `activation()`, `Mlp` and the 'activation' module. */
export const ACTIVATIONS = ['relu', 'relu6', 'gelu', 'geluErf', 'silu', 'hardSwish', 'hardSigmoid', 'identity'] as const;
export type ActivationName = (typeof ACTIVATIONS)[number];

export type ActivationFn = (x: tf.Tensor) => tf.Tensor;

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);
const GELU_K = 0.044715;
const INV_SQRT2 = Math.SQRT1_2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/** Builds a customGrad unary op: `forward` returns the output and the tensors to save. */
function unary(forward: (x: tf.Tensor) => { y: tf.Tensor; keep: tf.Tensor[] }, backward: (dy: tf.Tensor, kept: tf.Tensor[]) => tf.Tensor): ActivationFn {
  const op = customOp(([x], save) => {
    const { y, keep } = forward(x as tf.Tensor);
    save(keep);
    return { value: y, gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => backward(dy, saved) };
  });
  return (x: tf.Tensor) => op(x);
}

function first(saved: tf.Tensor[]): tf.Tensor {
  return saved[0] as tf.Tensor;
}

/** max(x, 0); gradient 1[x > 0] = step(y). Saves the output. */
export const relu: ActivationFn = unary(
  (x) => {
    const y = tf.relu(x);
    return { y, keep: [y] };
  },
  (dy, s) => tf.mul(dy, tf.step(first(s))),
);

/** min(max(x, 0), 6); gradient 1[0 < x < 6] = step(y·(6 − y)) (PyTorch's mask). Saves the output. */
export const relu6: ActivationFn = unary(
  (x) => {
    const y = tf.clipByValue(x, 0, 6);
    return { y, keep: [y] };
  },
  (dy, s) => {
    const y = first(s);
    return tf.mul(dy, tf.step(tf.mul(y, tf.sub(6, y))));
  },
);

/** relu6(x + 3) / 6; gradient 1[-3 < x < 3] / 6 = step(y·(1 − y)) / 6. Saves the output. */
export const hardSigmoid: ActivationFn = unary(
  (x) => {
    const y = tf.mul(tf.clipByValue(tf.add(x, 3), 0, 6), 1 / 6);
    return { y, keep: [y] };
  },
  (dy, s) => {
    const y = first(s);
    return tf.mul(tf.mul(dy, 1 / 6), tf.step(tf.mul(y, tf.sub(1, y))));
  },
);

/** x · relu6(x + 3) / 6; gradient as PyTorch (0 below -3, x/3 + 1/2 on [-3, 3], 1 above). Saves x. */
export const hardSwish: ActivationFn = unary(
  (x) => ({ y: tf.mul(x, tf.mul(tf.clipByValue(tf.add(x, 3), 0, 6), 1 / 6)), keep: [x] }),
  (dy, s) => {
    const x = first(s);
    const lo = tf.sub(1, tf.step(tf.sub(-3, x))); // 1[x >= -3]
    const hi = tf.sub(1, tf.step(tf.sub(x, 3))); // 1[x <= 3]
    // lo·(hi·(x/3 + 1/2) + 1 − hi) = lo·(hi·(x/3 − 1/2) + 1)
    const g = tf.mul(lo, tf.add(tf.mul(hi, tf.sub(tf.mul(x, 1 / 3), 0.5)), 1));
    return tf.mul(dy, g);
  },
);

/** x · σ(x); gradient σ(x)·(1 + x·(1 − σ(x))). Saves x. */
export const silu: ActivationFn = unary(
  (x) => ({ y: tf.mul(x, tf.sigmoid(x)), keep: [x] }),
  (dy, s) => {
    const x = first(s);
    const sg = tf.sigmoid(x);
    return tf.mul(dy, tf.mul(sg, tf.add(tf.mul(x, tf.sub(1, sg)), 1)));
  },
);

/**
 * GELU, tanh form (PyTorch `GELU(approximate='tanh')`): ½x(1 + tanh(u)), u = √(2/π)(x + 0.044715x³),
 * computed as x·σ(2u) (the same function: wasm's tanh is ~7× slower than its sigmoid). With
 * z = 2u = x·a, a = 2√(2/π)(1 + 0.044715x²): dy/dx = s·(1 + x(1 − s)·z'), s = σ(z),
 * z' = 2√(2/π)(1 + 3·0.044715x²). Saves x and s (the backward then needs no transcendental).
 */
export const gelu: ActivationFn = unary(
  (x) => {
    const a = tf.add(tf.mul(tf.mul(x, x), 2 * SQRT_2_OVER_PI * GELU_K), 2 * SQRT_2_OVER_PI);
    const s = tf.sigmoid(tf.mul(x, a));
    return { y: tf.mul(x, s), keep: [x, s] };
  },
  (dy, saved) => {
    const [x, s] = saved as [tf.Tensor, tf.Tensor];
    const dz = tf.add(tf.mul(tf.mul(x, x), 6 * SQRT_2_OVER_PI * GELU_K), 2 * SQRT_2_OVER_PI);
    const g = tf.mul(s, tf.add(tf.mul(tf.mul(x, tf.sub(1, s)), dz), 1));
    return tf.mul(dy, g);
  },
);

/** GELU, exact form (PyTorch's default `GELU()`): x·Φ(x) = ½x(1 + erf(x/√2)). Saves x. */
export const geluErf: ActivationFn = unary(
  (x) => ({ y: tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, INV_SQRT2)), 1)), keep: [x] }),
  (dy, s) => {
    const x = first(s);
    // Φ(x) + x·φ(x)
    const cdf = tf.mul(tf.add(tf.erf(tf.mul(x, INV_SQRT2)), 1), 0.5);
    const pdf = tf.mul(tf.exp(tf.mul(tf.mul(x, x), -0.5)), INV_SQRT_2PI);
    return tf.mul(dy, tf.add(cdf, tf.mul(x, pdf)));
  },
);

/** The identity (returns its input). */
export const identity: ActivationFn = (x) => x;

const FNS: Record<ActivationName, ActivationFn> = { relu, relu6, gelu, geluErf, silu, hardSwish, hardSigmoid, identity };

/** Analytic cost per element {forward, backward} (elementwise operations counted as 1 FLOP each). */
const PER_ELEMENT: Record<ActivationName, FlopCount> = {
  relu: { forward: 1, backward: 1 },
  relu6: { forward: 2, backward: 1 },
  hardSigmoid: { forward: 4, backward: 2 },
  hardSwish: { forward: 5, backward: 6 },
  silu: { forward: 5, backward: 9 },
  gelu: { forward: 6, backward: 9 },
  geluErf: { forward: 5, backward: 12 },
  identity: { forward: 0, backward: 0 },
};

export function isActivationName(name: unknown): name is ActivationName {
  return typeof name === 'string' && (ACTIVATIONS as readonly string[]).includes(name);
}

/** The activation function of a name; throws ConfigError naming the known ones. */
export function activation(name: string): ActivationFn {
  if (!isActivationName(name)) throw new ConfigError(`unknown activation '${name}': expected one of ${ACTIVATIONS.join(', ')}`);
  return FNS[name];
}

/** FLOPs of an activation over `elements` elements. */
export function activationFlops(name: ActivationName, elements: number): FlopCount {
  const p = PER_ELEMENT[name];
  return { forward: p.forward * elements, backward: p.backward * elements };
}

export interface ActivationConfig extends JsonObject {
  fn: ActivationName;
}

/** An activation as a module (kind 'activation', config {fn}), so passes can find and swap it. */
export class Activation extends Module<tf.Tensor, tf.Tensor, ActivationConfig> {
  readonly kind = 'activation';
  private readonly f: ActivationFn;
  constructor(config: ActivationConfig) {
    super({ fn: config.fn });
    this.f = activation(config.fn);
  }
  forward(x: tf.Tensor, _ctx: RunContext): tf.Tensor {
    return this.f(x);
  }
  override flops(x: tf.Tensor): FlopCount {
    return activationFlops(this.config.fn, x.size);
  }
}

registry.register('activation', (cfg) => {
  const fn = cfg['fn'];
  if (!isActivationName(fn)) throw new ConfigError(`activation: expected config.fn to be one of ${ACTIVATIONS.join(', ')}, found ${JSON.stringify(fn)}`);
  return new Activation({ fn });
});
