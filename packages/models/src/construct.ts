import * as tf from '@tensorflow/tfjs';

/**
 * Builds a module tree under `tf.tidy`, so the initial-value tensors its constructors create are freed
 * once the variables hold them; returns what `make` built.
 */
export function constructModel<T>(make: () => T): T {
  let built: { value: T } | undefined;
  tf.tidy(() => {
    built = { value: make() };
  });
  return (built as { value: T }).value;
}
