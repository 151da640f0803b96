import * as tf from '@tensorflow/tfjs';
import { ConfigError } from '@leanpass/core';

/** √(Σ‖g‖²) over every tensor: the global L2 norm of a set of gradients. */
export function globalNorm(grads: readonly tf.Tensor[]): tf.Scalar {
  return tf.tidy(() => {
    if (grads.length === 0) return tf.scalar(0);
    const squares = grads.map((g) => tf.sum(tf.square(g)));
    return tf.sqrt(squares.length === 1 ? (squares[0] as tf.Scalar) : tf.addN(squares)) as tf.Scalar;
  });
}

/**
 * Scales every gradient by min(1, maxNorm / (norm + 1e-6)) so that the global norm is at most
 * `maxNorm` (PyTorch's clip_grad_norm_). `norm` may be passed when already computed. Returns new
 * tensors; the inputs are not disposed.
 */
export function clipByGlobalNorm(grads: readonly tf.Tensor[], maxNorm: number, norm?: tf.Scalar): tf.Tensor[] {
  if (!(maxNorm > 0) || !Number.isFinite(maxNorm)) {
    throw new ConfigError('clipByGlobalNorm: invalid options', [{ path: 'maxNorm', message: `expected a finite number > 0, found ${maxNorm}` }]);
  }
  return tf.tidy(() => {
    const n = norm ?? globalNorm(grads);
    const scale = tf.minimum(tf.scalar(1), tf.div(tf.scalar(maxNorm), tf.add(n, 1e-6)));
    return grads.map((g) => tf.mul(g, scale));
  });
}

/** Clamps every gradient element to [−maxValue, maxValue]. Returns new tensors. */
export function clipByValue(grads: readonly tf.Tensor[], maxValue: number): tf.Tensor[] {
  if (!(maxValue > 0) || !Number.isFinite(maxValue)) {
    throw new ConfigError('clipByValue: invalid options', [{ path: 'maxValue', message: `expected a finite number > 0, found ${maxValue}` }]);
  }
  return tf.tidy(() => grads.map((g) => tf.clipByValue(g, -maxValue, maxValue)));
}
