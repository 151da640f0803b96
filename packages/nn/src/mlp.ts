import * as tf from '@tensorflow/tfjs';
import { ConfigError, Module, registry, type FlopCount, type InitContext, type JsonObject, type RunContext } from '@leanpass/core';
import { ACTIVATIONS, Activation, activation, activationFlops, isActivationName, type ActivationName } from './activations.js';
import { Linear } from './linear.js';
import { boolOr, positiveInt } from './util.js';

export interface MlpConfig extends JsonObject {
  inFeatures: number;
  hiddenFeatures: number;
  outFeatures: number;
  act: ActivationName;
  bias: boolean;
}

export interface SwiGLUConfig extends JsonObject {
  dim: number;
  hiddenFeatures: number;
  outFeatures: number;
  /** The gate's activation: 'silu' is SwiGLU (LLaMA), 'gelu' GeGLU. */
  act: ActivationName;
  bias: boolean;
}

function actOr(kind: string, cfg: JsonObject, dflt: ActivationName): ActivationName {
  const v = cfg['act'];
  if (v === undefined) return dflt;
  if (!isActivationName(v)) throw new ConfigError(`${kind}: expected config.act to be one of ${ACTIVATIONS.join(', ')}, found ${JSON.stringify(v)}`);
  return v;
}

/**
 * Two-layer perceptron fc1 → act → fc2 (kind 'mlp'; ViT's MLP). Children: 'fc1', 'act' (an
 * 'activation' module) and 'fc2', looked up at call time so passes can replace them.
 */
export class Mlp extends Module<tf.Tensor, tf.Tensor, MlpConfig> {
  readonly kind = 'mlp';

  constructor(config: { inFeatures: number; hiddenFeatures: number; outFeatures?: number; act?: ActivationName; bias?: boolean }, init: InitContext) {
    const cfg = { ...config } as JsonObject;
    const inFeatures = positiveInt('mlp', cfg, 'inFeatures');
    const hiddenFeatures = positiveInt('mlp', cfg, 'hiddenFeatures');
    const outFeatures = cfg['outFeatures'] === undefined ? inFeatures : positiveInt('mlp', cfg, 'outFeatures');
    const act = actOr('mlp', cfg, 'gelu');
    const bias = boolOr('mlp', cfg, 'bias', true);
    super({ inFeatures, hiddenFeatures, outFeatures, act, bias });
    this.addChild('fc1', new Linear({ inFeatures, outFeatures: hiddenFeatures, bias }, init));
    this.addChild('act', new Activation({ fn: act }));
    this.addChild('fc2', new Linear({ inFeatures: hiddenFeatures, outFeatures, bias }, init));
  }

  forward(x: tf.Tensor, ctx: RunContext): tf.Tensor {
    const h = this.child('fc1').call(x, ctx) as tf.Tensor;
    return this.child('fc2').call(this.child('act').call(h, ctx), ctx) as tf.Tensor;
  }
}

/**
 * Gated MLP down(act(gate(x)) ⊙ up(x)) (kind 'swiglu'; LLaMA's, with act = 'silu'). Children
 * 'gate', 'up', 'down' (Linear, no bias by default). The activation and the product are this
 * module's own cost.
 */
export class SwiGLU extends Module<tf.Tensor, tf.Tensor, SwiGLUConfig> {
  readonly kind = 'swiglu';

  constructor(config: { dim: number; hiddenFeatures: number; outFeatures?: number; act?: ActivationName; bias?: boolean }, init: InitContext) {
    const cfg = { ...config } as JsonObject;
    const dim = positiveInt('swiglu', cfg, 'dim');
    const hiddenFeatures = positiveInt('swiglu', cfg, 'hiddenFeatures');
    const outFeatures = cfg['outFeatures'] === undefined ? dim : positiveInt('swiglu', cfg, 'outFeatures');
    const act = actOr('swiglu', cfg, 'silu');
    const bias = boolOr('swiglu', cfg, 'bias', false);
    super({ dim, hiddenFeatures, outFeatures, act, bias });
    this.addChild('gate', new Linear({ inFeatures: dim, outFeatures: hiddenFeatures, bias }, init));
    this.addChild('up', new Linear({ inFeatures: dim, outFeatures: hiddenFeatures, bias }, init));
    this.addChild('down', new Linear({ inFeatures: hiddenFeatures, outFeatures, bias }, init));
  }

  forward(x: tf.Tensor, ctx: RunContext): tf.Tensor {
    const g = activation(this.config.act)(this.child('gate').call(x, ctx) as tf.Tensor);
    const u = this.child('up').call(x, ctx) as tf.Tensor;
    return this.child('down').call(tf.mul(g, u), ctx) as tf.Tensor;
  }

  override flops(x: tf.Tensor): FlopCount {
    const elems = (x.size / this.config.dim) * this.config.hiddenFeatures;
    const a = activationFlops(this.config.act, elems);
    // the product: 1 FLOP forward, 2 backward (one per input) per element
    return { forward: a.forward + elems, backward: a.backward + 2 * elems };
  }
}

registry.register('mlp', (cfg, init) => new Mlp(cfg as { inFeatures: number; hiddenFeatures: number }, init));
registry.register('swiglu', (cfg, init) => new SwiGLU(cfg as { dim: number; hiddenFeatures: number }, init));
