import * as tf from '@tensorflow/tfjs';
import { Module, registry, type FlopCount, type InitContext, type JsonObject, type RunContext } from '@leanpass/core';
import { sumOverRows } from './ops/dense.js';
import { boolOr, checkFeatures, positiveInt, positiveOr, trains } from './util.js';

export interface LayerNormConfig extends JsonObject {
  dim: number;
  eps: number;
  /** Learnable per-feature scale (PyTorch's elementwise_affine). */
  affine: boolean;
  /** Learnable per-feature shift (only with `affine`). */
  bias: boolean;
}

export interface RMSNormConfig extends JsonObject {
  dim: number;
  eps: number;
  affine: boolean;
}

interface NormParams {
  gamma: tf.Variable | undefined;
  beta: tf.Variable | undefined;
  gammaGrad: boolean;
  betaGrad: boolean;
}

/**
 * Normalisation over the last axis of x [..., d] as one customGrad (leading axes folded inside): `rms = false` gives LayerNorm
 * ((x − μ)/σ), `rms = true` RMSNorm (x/rms(x)). Saves x̂ [rows, d] and 1/σ [rows, 1] and nothing else.
 * Gradients are row reductions (mean over the last axis for dx) and ones-vector products over the
 * rows for dγ, dβ: no `tile`, no axis-0 reduction (both slow on wasm).
 *   dx = (1/σ)·(g − mean(g) − x̂·mean(g·x̂)), g = dy·γ   (RMSNorm drops the mean(g) term)
 */
function normRows(x: tf.Tensor, eps: number, rms: boolean, p: NormParams): tf.Tensor {
  const shape = x.shape.slice();
  const d = shape[shape.length - 1] as number;
  const rows = x.size / d;
  const inputs: tf.Tensor[] = [x];
  if (p.gamma && p.gammaGrad) inputs.push(p.gamma);
  if (p.beta && p.betaGrad) inputs.push(p.beta);
  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const xi = tf.reshape(args[0] as tf.Tensor, [rows, d]);
    let xc: tf.Tensor = xi;
    if (!rms) xc = tf.sub(xi, tf.mean(xi, -1, true));
    const rstd = tf.rsqrt(tf.add(tf.mean(tf.mul(xc, xc), -1, true), eps));
    const xhat = tf.mul(xc, rstd);
    let y: tf.Tensor = xhat;
    if (p.gamma) y = tf.mul(y, p.gamma);
    if (p.beta) y = tf.add(y, p.beta);
    save([xhat, rstd]);
    return {
      value: tf.reshape(y, shape),
      gradFunc: (dyIn: tf.Tensor, saved: tf.Tensor[]) => {
        const [sx, sr] = saved as [tf.Tensor2D, tf.Tensor2D];
        const dy = tf.reshape(dyIn, [rows, d]);
        const g = p.gamma ? tf.mul(dy, p.gamma) : dy;
        let inner = tf.sub(g, tf.mul(sx, tf.mean(tf.mul(g, sx), -1, true)));
        if (!rms) inner = tf.sub(inner, tf.mean(g, -1, true));
        const grads: tf.Tensor[] = [tf.reshape(tf.mul(inner, sr), shape)];
        if (p.gamma && p.gammaGrad) grads.push(sumOverRows(tf.mul(dy, sx)));
        if (p.beta && p.betaGrad) grads.push(sumOverRows(dy));
        return grads;
      },
    };
  });
  return op(...inputs);
}

/** Per-element FLOPs of a normalisation (forward, backward), affine terms included. */
function normFlops(rows: number, dim: number, rms: boolean, affine: boolean, bias: boolean): FlopCount {
  const n = rows * dim;
  const fwd = (rms ? 3 : 5) * n + (affine ? n : 0) + (bias ? n : 0);
  const bwd = (rms ? 5 : 7) * n + (affine ? 3 * n : 0) + (bias ? n : 0);
  return { forward: fwd, backward: bwd };
}

/** Layer normalisation over the last axis (kind 'layernorm'); γ = 1, β = 0 at init (PyTorch). */
export class LayerNorm extends Module<tf.Tensor, tf.Tensor, LayerNormConfig> {
  readonly kind = 'layernorm';

  constructor(config: { dim: number; eps?: number; affine?: boolean; bias?: boolean }, _init?: InitContext) {
    const cfg = { ...config } as JsonObject;
    const dim = positiveInt('layernorm', cfg, 'dim');
    const eps = positiveOr('layernorm', cfg, 'eps', 1e-5);
    const affine = boolOr('layernorm', cfg, 'affine', true);
    const bias = affine && boolOr('layernorm', cfg, 'bias', true);
    super({ dim, eps, affine, bias });
    if (affine) this.addParam('weight', tf.ones([dim]));
    if (bias) this.addParam('bias', tf.zeros([dim]));
  }

  forward(x: tf.Tensor, _ctx: RunContext): tf.Tensor {
    const { dim, eps, affine, bias } = this.config;
    checkFeatures(x, dim, 'layernorm');
    return normRows(x, eps, false, {
      gamma: affine ? this.param('weight').variable : undefined,
      beta: bias ? this.param('bias').variable : undefined,
      gammaGrad: affine && trains(this.param('weight')),
      betaGrad: bias && trains(this.param('bias')),
    });
  }

  override flops(x: tf.Tensor): FlopCount {
    const { dim, affine, bias } = this.config;
    return normFlops(x.size / dim, dim, false, affine, bias);
  }
}

/** RMS normalisation over the last axis (kind 'rmsnorm', LLaMA's); γ = 1 at init, eps 1e-6. */
export class RMSNorm extends Module<tf.Tensor, tf.Tensor, RMSNormConfig> {
  readonly kind = 'rmsnorm';

  constructor(config: { dim: number; eps?: number; affine?: boolean }, _init?: InitContext) {
    const cfg = { ...config } as JsonObject;
    const dim = positiveInt('rmsnorm', cfg, 'dim');
    const eps = positiveOr('rmsnorm', cfg, 'eps', 1e-6);
    const affine = boolOr('rmsnorm', cfg, 'affine', true);
    super({ dim, eps, affine });
    if (affine) this.addParam('weight', tf.ones([dim]));
  }

  forward(x: tf.Tensor, _ctx: RunContext): tf.Tensor {
    const { dim, eps, affine } = this.config;
    checkFeatures(x, dim, 'rmsnorm');
    return normRows(x, eps, true, {
      gamma: affine ? this.param('weight').variable : undefined,
      beta: undefined,
      gammaGrad: affine && trains(this.param('weight')),
      betaGrad: false,
    });
  }

  override flops(x: tf.Tensor): FlopCount {
    const { dim, affine } = this.config;
    return normFlops(x.size / dim, dim, true, affine, false);
  }
}

registry.register('layernorm', (cfg) => new LayerNorm(cfg as { dim: number; eps?: number; affine?: boolean; bias?: boolean }));
registry.register('rmsnorm', (cfg) => new RMSNorm(cfg as { dim: number; eps?: number; affine?: boolean }));
