import * as tf from '@tensorflow/tfjs';
import { ConfigError, Module, registry, type FlopCount, type InitContext, type JsonObject, type RunContext } from '@leanpass/core';
import { customOp, positiveInt, trains } from './util.js';

export interface EmbeddingConfig extends JsonObject {
  numEmbeddings: number;
  dim: number;
}

/**
 * Row lookup W[ids] with a gradient that trains on wasm (tfjs's gather gradient needs
 * UnsortedSegmentSum, missing there). Forward: `gatherND` (on wasm ~5–11× faster than `gather`);
 * backward: dW = `scatterND(ids, dy)`, which sums the rows of repeated ids. Unlike a one-hot
 * product it costs O(tokens·dim), whatever the vocabulary size. Saves only the int32 ids.
 */
export function embeddingLookup(weight: tf.Tensor, ids: tf.Tensor): tf.Tensor {
  if (weight.rank !== 2) throw new ConfigError(`embedding: expected a weight [num, dim], found [${weight.shape.join(', ')}]`);
  const [num, dim] = weight.shape as [number, number];
  const idx = checkIds(ids, num);
  const n = idx.shape[0];
  const op = customOp(([w], save) => {
    save([idx]); // the ids may be gone by the backward (a temporary of the forward): keep them
    return {
      value: tf.gatherND(w as tf.Tensor, idx),
      gradFunc: (dy, saved) => tf.scatterND(saved[0] as tf.Tensor, tf.reshape(dy, [n, dim]), [num, dim]),
    };
  });
  const rows = op(weight);
  return tf.reshape(rows, [...ids.shape, dim]);
}

function checkIds(ids: tf.Tensor, num: number): tf.Tensor2D {
  if (ids.dtype !== 'int32') throw new ConfigError(`embedding: expected int32 ids, found ${ids.dtype}`);
  const data = ids.dataSync();
  for (let i = 0; i < data.length; i++) {
    const id = data[i] as number;
    if (id < 0 || id >= num) throw new ConfigError(`embedding: expected ids in [0, ${num}), found ${id} at flat index ${i}`);
  }
  return tf.reshape(ids, [ids.size, 1]);
}

/**
 * Token embedding table (kind 'embedding', config {numEmbeddings, dim}); input int32 ids of any
 * shape, output [...ids.shape, dim]. Initialised N(0, 1) from `init.rng` (PyTorch's nn.Embedding).
 */
export class Embedding extends Module<tf.Tensor, tf.Tensor, EmbeddingConfig> {
  readonly kind = 'embedding';

  constructor(config: { numEmbeddings: number; dim: number }, init: InitContext) {
    const cfg = { ...config } as JsonObject;
    const numEmbeddings = positiveInt('embedding', cfg, 'numEmbeddings');
    const dim = positiveInt('embedding', cfg, 'dim');
    super({ numEmbeddings, dim });
    this.addParam('weight', tf.tensor2d(init.rng.normalArray(numEmbeddings * dim), [numEmbeddings, dim]));
  }

  forward(ids: tf.Tensor, _ctx: RunContext): tf.Tensor {
    const p = this.param('weight');
    if (!trains(p)) return tf.reshape(tf.gatherND(p.variable, checkIds(ids, this.config.numEmbeddings)), [...ids.shape, this.config.dim]);
    return embeddingLookup(p.variable, ids);
  }

  override flops(ids: tf.Tensor): FlopCount {
    // no arithmetic forward; the backward adds each token's row into the table
    return { forward: 0, backward: ids.size * this.config.dim };
  }
}

registry.register('embedding', (cfg, init) => new Embedding(cfg as { numEmbeddings: number; dim: number }, init));
