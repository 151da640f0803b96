import type * as tf from '@tensorflow/tfjs';
import { Module, registry, type FlopCount, type InitContext, type JsonObject, type RunContext } from '@leanpass/core';
import { dense } from './ops/dense.js';
import { boolOr, checkFeatures, positiveInt, trains, uniformInit } from './util.js';

export interface LinearConfig extends JsonObject {
  inFeatures: number;
  outFeatures: number;
  bias: boolean;
}

/**
 * y = x·W + b over the last axis (kind 'linear'). The weight is stored **[in, out]** (transposed
 * relative to PyTorch's [out, in]) so that the forward is a flag-free matMul on wasm; any rank ≥ 2
 * input is folded into rows. Initialisation as PyTorch's nn.Linear: W, b ~ U(-1/√in, 1/√in), drawn
 * from `init.rng` (weight first, row-major [in, out], then bias).
 */
export class Linear extends Module<tf.Tensor, tf.Tensor, LinearConfig> {
  readonly kind = 'linear';

  constructor(config: { inFeatures: number; outFeatures: number; bias?: boolean }, init: InitContext) {
    const cfg = { ...config } as JsonObject;
    const inFeatures = positiveInt('linear', cfg, 'inFeatures');
    const outFeatures = positiveInt('linear', cfg, 'outFeatures');
    const bias = boolOr('linear', cfg, 'bias', true);
    super({ inFeatures, outFeatures, bias });
    const bound = 1 / Math.sqrt(inFeatures);
    this.addParam('weight', uniformInit(init.rng, [inFeatures, outFeatures], bound));
    if (bias) this.addParam('bias', uniformInit(init.rng, [outFeatures], bound));
  }

  /** The weight variable, [in, out]. */
  get weight(): tf.Variable {
    return this.param('weight').variable;
  }

  /** The bias variable, [out], or undefined. */
  get bias(): tf.Variable | undefined {
    return this.config.bias ? this.param('bias').variable : undefined;
  }

  forward(x: tf.Tensor, _ctx: RunContext): tf.Tensor {
    checkFeatures(x, this.config.inFeatures, 'linear');
    return dense(x, this.weight, this.bias, { weightGrad: trains(this.param('weight')), biasGrad: this.config.bias && trains(this.param('bias')) });
  }

  override flops(x: tf.Tensor): FlopCount {
    const { inFeatures, outFeatures, bias } = this.config;
    const rows = x.size / inFeatures;
    const mm = 2 * rows * inFeatures * outFeatures;
    const wTrain = trains(this.param('weight'));
    const bTrain = bias && trains(this.param('bias'));
    return {
      forward: mm + (bias ? rows * outFeatures : 0),
      backward: mm + (wTrain ? mm : 0) + (bTrain ? rows * outFeatures : 0),
    };
  }
}

registry.register('linear', (cfg, init) => {
  const inFeatures = positiveInt('linear', cfg, 'inFeatures');
  const outFeatures = positiveInt('linear', cfg, 'outFeatures');
  return new Linear({ inFeatures, outFeatures, bias: boolOr('linear', cfg, 'bias', true) }, init);
});
