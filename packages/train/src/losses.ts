import * as tf from '@tensorflow/tfjs';
import { ConfigError } from '@leanpass/core';

export interface CrossEntropyOptions {
  /** ε in [0, 1): the target becomes (1 − ε)·onehot + ε/C. Default 0. */
  labelSmoothing?: number;
}

/**
 * Mean softmax cross-entropy from logits `[..., C]`.
 *
 * `labels` is either integer class ids of shape `logits.shape[:-1]` (any numeric dtype; cast to
 * int32) or a target distribution of the same shape as the logits. Uses a stable log-softmax
 * (`tf.logSoftmax`, max-shifted) and `tf.oneHot` (no gather, so it trains on wasm as well).
 */
export function softmaxCrossEntropy(logits: tf.Tensor, labels: tf.Tensor, opts: CrossEntropyOptions = {}): tf.Scalar {
  const eps = opts.labelSmoothing ?? 0;
  if (!Number.isFinite(eps) || eps < 0 || eps >= 1) {
    throw new ConfigError('softmaxCrossEntropy: invalid options', [{ path: 'labelSmoothing', message: `expected 0 ≤ ε < 1, found ${eps}` }]);
  }
  if (logits.rank < 1) throw new ConfigError(`softmaxCrossEntropy: expected logits of rank ≥ 1 ([..., classes]), found a scalar`);
  const c = logits.shape[logits.rank - 1] as number;
  const rowShape = logits.shape.slice(0, -1);
  const isIds = sameShape(labels.shape, rowShape);
  const isDist = !isIds && sameShape(labels.shape, logits.shape);
  if (!isIds && !isDist) {
    throw new ConfigError(
      `softmaxCrossEntropy: expected labels of shape [${rowShape.join(', ')}] (class ids) or [${logits.shape.join(', ')}] (distributions), found [${labels.shape.join(', ')}]`,
    );
  }
  return tf.tidy(() => {
    const flat = tf.reshape(logits, [-1, c]);
    const logp = tf.logSoftmax(flat, -1);
    let target: tf.Tensor = isIds
      ? tf.oneHot(tf.reshape(labels.dtype === 'int32' ? labels : tf.cast(labels, 'int32'), [-1]), c)
      : tf.reshape(tf.cast(labels, 'float32'), [-1, c]);
    if (eps > 0) target = tf.add(tf.mul(target, 1 - eps), eps / c);
    const perRow = tf.neg(tf.sum(tf.mul(target, logp), -1));
    return tf.mean(perRow);
  });
}

/** Mean squared error over every element. Shapes must match exactly. */
export function mse(pred: tf.Tensor, target: tf.Tensor): tf.Scalar {
  if (!sameShape(pred.shape, target.shape)) {
    throw new ConfigError(`mse: expected target of shape [${pred.shape.join(', ')}] (the prediction's), found [${target.shape.join(', ')}]`);
  }
  return tf.tidy(() => tf.mean(tf.squaredDifference(pred, tf.cast(target, pred.dtype))));
}

/**
 * Fraction of rows whose arg-max logit is the label: labels as class ids (shape `logits.shape[:-1]`)
 * or as distributions / one-hot rows (their arg-max is the class).
 */
export function accuracy(logits: tf.Tensor, labels: tf.Tensor): tf.Scalar {
  const rowShape = logits.shape.slice(0, -1);
  const isIds = sameShape(labels.shape, rowShape);
  if (!isIds && !sameShape(labels.shape, logits.shape)) {
    throw new ConfigError(
      `accuracy: expected labels of shape [${rowShape.join(', ')}] (class ids) or [${logits.shape.join(', ')}] (distributions), found [${labels.shape.join(', ')}]`,
    );
  }
  return tf.tidy(() => {
    const pred = tf.argMax(logits, -1);
    const truth = isIds ? tf.cast(labels, 'int32') : tf.argMax(labels, -1);
    return tf.mean(tf.cast(tf.equal(pred, truth), 'float32'));
  });
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
