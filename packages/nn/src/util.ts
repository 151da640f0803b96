/** Internal helpers of the nn layers (not re-exported from the package entry). */
import * as tf from '@tensorflow/tfjs';
import { ConfigError, type JsonObject, type Param, type Rng } from '@leanpass/core';
import { isFrozen } from './ops/dense.js';

/** Whether a parameter receives a gradient: its Param flag and its tf.Variable flag both say so. */
export function trains(p: Param): boolean {
  return p.trainable && !isFrozen(p.variable);
}

/** Checks that `cfg[key]` is a positive integer and returns it. */
export function positiveInt(kind: string, cfg: JsonObject, key: string): number {
  const v = cfg[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) {
    throw new ConfigError(`${kind}: expected config.${key} to be a positive integer, found ${JSON.stringify(v)}`);
  }
  return v;
}

/** Checks that `cfg[key]` is a boolean (or absent, giving `dflt`). */
export function boolOr(kind: string, cfg: JsonObject, key: string, dflt: boolean): boolean {
  const v = cfg[key];
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') throw new ConfigError(`${kind}: expected config.${key} to be a boolean, found ${JSON.stringify(v)}`);
  return v;
}

/** Checks that `cfg[key]` is a positive finite number (or absent, giving `dflt`). */
export function positiveOr(kind: string, cfg: JsonObject, key: string, dflt: number): number {
  const v = cfg[key];
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw new ConfigError(`${kind}: expected config.${key} to be a positive number, found ${JSON.stringify(v)}`);
  }
  return v;
}

/** U(-bound, bound) values, drawn in row-major order from `rng`. */
export function uniformInit(rng: Rng, shape: number[], bound: number): tf.Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = rng.uniform(-bound, bound);
  return tf.tensor(data, shape, 'float32');
}

/** Checks that `x` has rank ≥ 2 and `features` on its last axis. */
export function checkFeatures(x: tf.Tensor, features: number, kind: string): void {
  if (x.rank < 2) throw new ConfigError(`${kind}: expected an input of rank >= 2 [..., ${features}], found [${x.shape.join(', ')}]`);
  if (x.shape[x.rank - 1] !== features) {
    throw new ConfigError(`${kind}: expected the last axis of the input to be ${features}, found [${x.shape.join(', ')}]`);
  }
}

export interface CustomOpResult<T extends tf.Tensor> {
  value: T;
  gradFunc: (dy: T, saved: tf.Tensor[]) => tf.Tensor | tf.Tensor[];
}

/** `tf.customGrad` with the inputs as an array and `save` apart (typed; tfjs's own signature mixes them). */
export function customOp<T extends tf.Tensor>(f: (inputs: tf.Tensor[], save: tf.GradSaveFunc) => CustomOpResult<T>): (...inputs: tf.Tensor[]) => T {
  return tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    return f(args.slice(0, -1) as tf.Tensor[], save);
  });
}
