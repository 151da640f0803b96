import * as tf from '@tensorflow/tfjs';
import { ConfigError, createRunContext, type AnyModule, type RunContext } from '@leanpass/core';
import { accuracy, softmaxCrossEntropy } from './losses.js';
import type { Batch } from './trainer.js';

export interface ClassifierMetrics extends Record<string, number> {
  /** Mean cross-entropy over every labelled row. */
  loss: number;
  /** Fraction of rows classified correctly. */
  accuracy: number;
  /** Labelled rows seen. */
  count: number;
}

/**
 * Mean cross-entropy and accuracy of a classifier over batches `{x, y}` (y: class ids of shape
 * `logits.shape[:-1]`), weighted by rows. Disposes each batch's tensors after use, like the trainer.
 */
export async function evaluateClassifier(
  model: AnyModule,
  batches: AsyncIterable<Batch> | Iterable<Batch>,
  ctx: RunContext = createRunContext({ mode: 'eval' }),
): Promise<ClassifierMetrics> {
  let lossSum = 0;
  let correct = 0;
  let count = 0;
  for await (const batch of batches) {
    try {
      let rows = 0;
      const stats = tf.tidy(() => {
        const logits = model.call(batch.x, ctx) as tf.Tensor;
        rows = logits.size / (logits.shape[logits.rank - 1] as number);
        return tf.stack([softmaxCrossEntropy(logits, batch.y), accuracy(logits, batch.y)]);
      });
      const [l, a] = Array.from(await stats.data()) as [number, number];
      stats.dispose();
      lossSum += l * rows;
      correct += a * rows;
      count += rows;
    } finally {
      tf.dispose(batch as unknown as tf.TensorContainer);
    }
  }
  if (count === 0) throw new ConfigError('evaluateClassifier: expected at least one labelled row, the batches held none');
  return { loss: lossSum / count, accuracy: correct / count, count };
}
