/** Test fixtures: a tiny MLP written against core's Module (raw matMuls) and seeded synthetic data. */
import * as tf from '@tensorflow/tfjs';
import { Module, Rng, type RunContext } from '@leanpass/core';
import type { Batch, BatchSourceInfo } from '../src/index.js';

export class Dense extends Module<tf.Tensor, tf.Tensor, { inDim: number; outDim: number }> {
  readonly kind = 'test.dense';
  constructor(cfg: { inDim: number; outDim: number }, rng: Rng) {
    super(cfg);
    this.addParam('weight', tf.tensor2d(rng.normalArray(cfg.inDim * cfg.outDim, 1 / Math.sqrt(cfg.inDim)), [cfg.inDim, cfg.outDim]));
    this.addParam('bias', tf.zeros([cfg.outDim]));
  }
  forward(x: tf.Tensor): tf.Tensor {
    return tf.add(tf.matMul(x as tf.Tensor2D, this.param('weight').variable as tf.Tensor2D), this.param('bias').variable);
  }
}

export interface MlpConfig {
  inDim: number;
  hidden: number;
  outDim: number;
  /** Dropout rate in train mode; the mask is drawn from ctx.rng, so the RNG state matters for resume. */
  dropout: number;
  [k: string]: number;
}

export class Mlp extends Module<tf.Tensor, tf.Tensor, MlpConfig> {
  readonly kind = 'test.mlp';
  constructor(cfg: MlpConfig, rng: Rng) {
    super(cfg);
    this.addChild('fc1', new Dense({ inDim: cfg.inDim, outDim: cfg.hidden }, rng));
    this.addChild('fc2', new Dense({ inDim: cfg.hidden, outDim: cfg.outDim }, rng));
  }
  forward(x: tf.Tensor, ctx: RunContext): tf.Tensor {
    let h = tf.relu(this.child('fc1').call(x, ctx) as tf.Tensor);
    if (ctx.mode === 'train' && this.config.dropout > 0) {
      const keep = 1 - this.config.dropout;
      const mask = new Float32Array(h.size);
      for (let i = 0; i < mask.length; i++) mask[i] = ctx.rng.next() < keep ? 1 / keep : 0;
      h = tf.mul(h, tf.tensor(mask, h.shape));
    }
    return this.child('fc2').call(h, ctx) as tf.Tensor;
  }
}

export function makeMlp(seed: number, cfg: Partial<MlpConfig> = {}): Mlp {
  return new Mlp({ inDim: 4, hidden: 16, outDim: 3, dropout: 0, ...cfg }, new Rng(seed));
}

/** Three Gaussian blobs in 4-D (a learnable task): rows and integer labels. */
export function blobs(n: number, seed: number, dim = 4, classes = 3): { x: Float32Array; y: Int32Array; n: number; dim: number } {
  const rng = new Rng(seed);
  const centres = Array.from({ length: classes }, () => rng.normalArray(dim, 2));
  const x = new Float32Array(n * dim);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const c = i % classes;
    y[i] = c;
    const centre = centres[c] as Float32Array;
    for (let d = 0; d < dim; d++) x[i * dim + d] = (centre[d] as number) + rng.normal(0, 0.7);
  }
  return { x, y, n, dim };
}

/**
 * A batch source honouring the contract: epoch order = permutation from (seed, epoch); fresh tensors
 * per batch. `opened` counts epoch openings.
 */
export function blobSource(
  data: { x: Float32Array; y: Int32Array; n: number; dim: number },
  batchSize: number,
): ((epoch: number, info: BatchSourceInfo) => Iterable<Batch>) & { opened: number[] } {
  const opened: number[] = [];
  const source = (epoch: number, info: BatchSourceInfo): Iterable<Batch> => {
    opened.push(epoch);
    const perm = new Rng(info.seed).fork(`data/${epoch}`).permutation(data.n);
    return (function* () {
      for (let b = 0; b + batchSize <= data.n; b += batchSize) {
        const xs = new Float32Array(batchSize * data.dim);
        const ys = new Int32Array(batchSize);
        for (let i = 0; i < batchSize; i++) {
          const r = perm[b + i] as number;
          xs.set(data.x.subarray(r * data.dim, (r + 1) * data.dim), i * data.dim);
          ys[i] = data.y[r] as number;
        }
        yield { x: tf.tensor2d(xs, [batchSize, data.dim]), y: tf.tensor1d(ys, 'int32') };
      }
    })();
  };
  return Object.assign(source, { opened });
}

/** Copies of every parameter's values, keyed by path. */
export function snapshot(model: Module): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const [p, param] of model.namedParams()) out.set(p, param.variable.dataSync().slice() as Float32Array);
  return out;
}
