/**
 * Batch normalisation over the last axis (NHWC, or [rows, C], or [B, N, C]) with a gradient written as
 * per-channel reductions.
 *
 * tfjs's own `batchNorm` gradient broadcasts with `tile` (66 ms for [1,192]→[8192,192] on wasm) and
 * `tf.moments` + `tf.batchNorm` save more than they need. Here every per-channel reduction is `meanRows`
 * (an average pool, ~1 ms on wasm for 8192 × 192 where `tf.sum(x, 0)` takes ~10 ms), every broadcast is
 * an elementwise op with a [1, C] row, and the train-mode backward keeps only x̂ (and a [1, C] row).
 *
 * Train mode normalises with the batch statistics and updates the running statistics (PyTorch
 * convention: `running ← (1 − momentum)·running + momentum·batch`, the variance unbiased by N/(N − 1));
 * eval mode uses the running statistics. Frozen parameters (a `tf.Variable` with `trainable = false`,
 * e.g. MobileTL's frozen γ) are not inputs of the gradient op, so nothing is computed or saved for them:
 * eval mode with a frozen γ saves nothing at all.
 */
import * as tf from '@tensorflow/tfjs';
import { ConfigError, Module, registry, type FlopCount, type JsonObject, type RunContext } from '@leanpass/core';
import { isFrozen } from './ops/dense.js';
import { trains } from './util.js';

/**
 * Mean of a [N, C] matrix over its rows, as [1, C]: one 1 × N average pool with the channels innermost.
 * On wasm this runs at memory speed (~1 ms for 8192 × 192), where `tf.sum(x, 0)` / `tf.mean(x, 0)`
 * transpose first (~10 ms) and `matMul(ones[1, N], x)` repacks x as matMul weights (~15 ms: wasm's
 * matMul caches the packed right operand per tensor, so a fresh right operand costs a repack).
 */
export function meanRows(x2d: tf.Tensor): tf.Tensor2D {
  if (x2d.rank !== 2) throw new ConfigError(`meanRows: expected a rank-2 tensor [rows, C], found [${x2d.shape.join(', ')}]`);
  const [n, c] = x2d.shape as [number, number];
  if (n === 1) return tf.reshape(x2d, [1, c]);
  return tf.reshape(tf.avgPool(tf.reshape<tf.Rank.R4>(x2d, [1, 1, n, c]), [1, n], 1, 'valid'), [1, c]);
}

/** Sum of a [N, C] matrix over its rows, as [1, C] (`meanRows` × N). */
export function sumRows(x2d: tf.Tensor): tf.Tensor2D {
  const n = x2d.shape[0];
  const m = meanRows(x2d);
  return n === 1 ? m : tf.mul(m, n);
}

export interface BatchNormConfig extends JsonObject {
  channels: number;
  /** Running-statistics momentum, PyTorch convention (Keras' 0.99 is 0.01 here). */
  momentum: number;
  eps: number;
  /** Learnable per-channel scale γ ('weight') and shift β ('bias'). */
  affine: boolean;
}

export interface BatchNormOptions {
  channels: number;
  momentum?: number;
  eps?: number;
  affine?: boolean;
}

export function batchNormConfig(opts: BatchNormOptions): BatchNormConfig {
  return { channels: opts.channels, momentum: opts.momentum ?? 0.1, eps: opts.eps ?? 1e-5, affine: opts.affine ?? true };
}

function validate(c: BatchNormConfig): void {
  const issues: Array<{ path: string; message: string }> = [];
  if (!Number.isInteger(c.channels) || c.channels < 1) issues.push({ path: 'channels', message: `expected a positive integer, found ${JSON.stringify(c.channels)}` });
  if (typeof c.momentum !== 'number' || !(c.momentum >= 0 && c.momentum <= 1)) issues.push({ path: 'momentum', message: `expected a number in [0, 1], found ${JSON.stringify(c.momentum)}` });
  if (typeof c.eps !== 'number' || !(c.eps > 0)) issues.push({ path: 'eps', message: `expected a positive number, found ${JSON.stringify(c.eps)}` });
  if (typeof c.affine !== 'boolean') issues.push({ path: 'affine', message: `expected a boolean, found ${JSON.stringify(c.affine)}` });
  if (issues.length) throw new ConfigError('batchnorm: invalid config', issues);
}

/**
 * BatchNorm over the last axis. Params: 'weight' γ [C] and 'bias' β [C] (when affine), and the
 * non-trainable 'runningMean' [C] and 'runningVar' [C].
 */
export class BatchNorm extends Module<tf.Tensor, tf.Tensor, BatchNormConfig> {
  readonly kind = 'batchnorm';

  constructor(opts: BatchNormOptions | BatchNormConfig) {
    const config = batchNormConfig(opts);
    validate(config);
    super(config);
    const c = config.channels;
    if (config.affine) {
      this.addParam('weight', tf.ones([c]));
      this.addParam('bias', tf.zeros([c]));
    }
    this.addParam('runningMean', tf.zeros([c]), false);
    this.addParam('runningVar', tf.ones([c]), false);
  }

  forward(x: tf.Tensor, ctx: RunContext): tf.Tensor {
    const c = this.config.channels;
    if (x.rank < 2 || x.shape[x.rank - 1] !== c) {
      throw new ConfigError(`batchnorm: expected an input of rank >= 2 with ${c} channels on the last axis, found [${x.shape.join(', ')}]`);
    }
    const gp = this.config.affine ? this.param('weight') : undefined;
    const bp = this.config.affine ? this.param('bias') : undefined;
    const common = {
      gamma: gp?.variable,
      beta: bp?.variable,
      eps: this.config.eps,
      gammaGrad: gp !== undefined && trains(gp),
      betaGrad: bp !== undefined && trains(bp),
    };
    if (ctx.mode === 'train') {
      return batchNormTrain(x, { ...common, momentum: this.config.momentum, runningMean: this.param('runningMean').variable, runningVar: this.param('runningVar').variable });
    }
    return batchNormEval(x, { ...common, mean: this.param('runningMean').variable, variance: this.param('runningVar').variable });
  }

  override flops(x: tf.Tensor): FlopCount {
    // Train: mean, centre, square, variance sum, normalise, scale, shift = 7 per element; backward:
    // Σdy, Σdy·x̂ (2), dx = (dy − x̂·a − b)·g (4) = 7. Eval: scale + shift; backward: dy·k (+ Σdy, Σdy·x̂).
    const n = x.size;
    return { forward: 7 * n, backward: 7 * n };
  }
}

/** Options of `batchNormTrain`. */
export interface BatchNormTrainOptions {
  /** Scale γ [C]; none: 1. */
  gamma?: tf.Tensor;
  /** Shift β [C]; none: 0. */
  beta?: tf.Tensor;
  eps?: number;
  /** Running statistics to update in place (both or neither), with this momentum (default 0.1). */
  runningMean?: tf.Variable;
  runningVar?: tf.Variable;
  momentum?: number;
  /** Compute γ's / β's gradient (default: unless it is a non-trainable tf.Variable). */
  gammaGrad?: boolean;
  betaGrad?: boolean;
}

/** Tensors a gradient reads: variables through the closure, anything else saved (it may be disposed first). */
function mustSave(t: tf.Tensor | undefined): t is tf.Tensor {
  return t !== undefined && !(t instanceof tf.Variable);
}

/**
 * Train-mode batch norm over the last axis as one `tf.customGrad`, with the batch statistics; updates
 * the running statistics when given (with the tape off). Saves x̂ [N, C] and 1/σ [1, C] (and γ when it
 * is not a tf.Variable).
 *
 * Backward (N rows): dβ = Σdy, dγ = Σdy·x̂, dx = (γ/σ)·(dy − mean(dy) − x̂·mean(dy·x̂)).
 */
export function batchNormTrain(x: tf.Tensor, opts: BatchNormTrainOptions = {}): tf.Tensor {
  const { gamma, beta, runningMean, runningVar } = opts;
  const eps = opts.eps ?? 1e-5;
  const shape = x.shape;
  const c = shape[shape.length - 1] as number;
  const n = x.size / c;
  if (x.rank < 2) throw new ConfigError(`batchnorm: expected an input of rank >= 2 [..., C], found [${shape.join(', ')}]`);
  if (n < 2) throw new ConfigError(`batchnorm: train mode needs more than 1 value per channel, found input [${shape.join(', ')}]`);
  checkChannelParam('weight', gamma, c);
  checkChannelParam('bias', beta, c);
  const gGrad = gamma !== undefined && (opts.gammaGrad ?? !isFrozen(gamma));
  const bGrad = beta !== undefined && (opts.betaGrad ?? !isFrozen(beta));
  const gSave = mustSave(gamma);
  const inputs: tf.Tensor[] = [x];
  if (gGrad) inputs.push(gamma);
  if (bGrad) inputs.push(beta);
  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const x2 = tf.reshape(args[0] as tf.Tensor, [n, c]);
    const mean = meanRows(x2);
    const xc = tf.sub(x2, mean);
    const variance = meanRows(tf.square(xc));
    const rstd = tf.rsqrt(tf.add(variance, eps));
    const xhat = tf.mul(xc, rstd);
    let y: tf.Tensor = xhat;
    if (gamma) y = tf.mul(y, tf.reshape(gamma, [1, c]));
    if (beta) y = tf.add(y, tf.reshape(beta, [1, c]));
    save(gSave ? [xhat, rstd, gamma] : [xhat, rstd]);
    if (runningMean && runningVar) {
      // customGrad runs its forward with the tape off: the update is never differentiated.
      const m = opts.momentum ?? 0.1;
      runningMean.assign(tf.add(tf.mul(runningMean, 1 - m), tf.mul(tf.reshape(mean, [c]), m)));
      runningVar.assign(tf.add(tf.mul(runningVar, 1 - m), tf.mul(tf.reshape(variance, [c]), (m * n) / (n - 1))));
    }
    return {
      value: tf.reshape(y, shape),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [xh, rs] = saved as [tf.Tensor2D, tf.Tensor2D];
        const g = gSave ? (saved[2] as tf.Tensor) : gamma;
        const dy2 = tf.reshape<tf.Rank.R2>(dy, [n, c]);
        const mdy = meanRows(dy2);
        const mdyx = meanRows(tf.mul(dy2, xh));
        const scale = g ? tf.mul(rs, tf.reshape(g, [1, c])) : rs;
        // dx = (dy − x̂·mean(dy·x̂) − mean(dy))·γ/σ
        const dx = tf.mul(tf.sub(tf.sub(dy2, tf.mul(xh, mdyx)), mdy), scale);
        const grads: tf.Tensor[] = [tf.reshape(dx, shape)];
        if (gGrad) grads.push(tf.reshape(tf.mul(mdyx, n), gamma.shape));
        if (bGrad) grads.push(tf.reshape(tf.mul(mdy, n), beta.shape));
        return grads;
      },
    };
  });
  return op(...inputs);
}

/** Options of `batchNormEval`. */
export interface BatchNormEvalOptions {
  /** Fixed per-channel statistics [C]. */
  mean: tf.Tensor;
  variance: tf.Tensor;
  gamma?: tf.Tensor;
  beta?: tf.Tensor;
  eps?: number;
  gammaGrad?: boolean;
  betaGrad?: boolean;
}

/**
 * Eval-mode batch norm with fixed statistics: y = x·k + s, k = γ/√(var + ε), s = β − mean·k.
 * Gradients: dx = dy·k, dβ = Σdy, dγ = Σdy·(x − mean)/√(var + ε). Saves x only when γ needs a
 * gradient (and the statistics and γ when they are not tf.Variables); with γ frozen it saves nothing,
 * which makes it MobileTL's shift-only norm.
 */
export function batchNormEval(x: tf.Tensor, opts: BatchNormEvalOptions): tf.Tensor {
  const { mean, variance, gamma, beta } = opts;
  const eps = opts.eps ?? 1e-5;
  const shape = x.shape;
  const c = shape[shape.length - 1] as number;
  const n = x.size / c;
  if (x.rank < 2) throw new ConfigError(`batchnorm: expected an input of rank >= 2 [..., C], found [${shape.join(', ')}]`);
  checkChannelParam('runningMean', mean, c);
  checkChannelParam('runningVar', variance, c);
  checkChannelParam('weight', gamma, c);
  checkChannelParam('bias', beta, c);
  const gGrad = gamma !== undefined && (opts.gammaGrad ?? !isFrozen(gamma));
  const bGrad = beta !== undefined && (opts.betaGrad ?? !isFrozen(beta));
  const inputs: tf.Tensor[] = [x];
  if (gGrad) inputs.push(gamma);
  if (bGrad) inputs.push(beta);
  // What the backward reads besides dy: k (from the variance and γ), and for dγ also x and the mean.
  const closure: Array<tf.Tensor | undefined> = gGrad ? [variance, gamma, mean] : [variance, gamma];
  const toSave = closure.filter(mustSave);
  const rstdRow = (v: tf.Tensor): tf.Tensor => tf.reshape(tf.rsqrt(tf.add(v, eps)), [1, c]);
  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const x2 = tf.reshape(args[0] as tf.Tensor, [n, c]);
    const r = rstdRow(variance);
    const k = gamma ? tf.mul(r, tf.reshape(gamma, [1, c])) : r;
    let shift = tf.neg(tf.mul(tf.reshape(mean, [1, c]), k));
    if (beta) shift = tf.add(shift, tf.reshape(beta, [1, c]));
    save(gGrad ? [x2, ...toSave] : toSave);
    return {
      value: tf.reshape(tf.add(tf.mul(x2, k), shift), shape),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        let at = gGrad ? 1 : 0;
        const read = (t: tf.Tensor | undefined): tf.Tensor | undefined => (mustSave(t) ? (saved[at++]) : t);
        const v = read(variance) as tf.Tensor;
        const g = read(gamma);
        const dy2 = tf.reshape(dy, [n, c]);
        const rr = rstdRow(v);
        const grads: tf.Tensor[] = [tf.reshape(tf.mul(dy2, g ? tf.mul(rr, tf.reshape(g, [1, c])) : rr), shape)];
        if (gGrad) {
          const m = read(mean) as tf.Tensor;
          const xhat = tf.mul(tf.sub(saved[0] as tf.Tensor, tf.reshape(m, [1, c])), rr);
          grads.push(tf.reshape(sumRows(tf.mul(dy2, xhat)), gamma.shape));
        }
        if (bGrad) grads.push(tf.reshape(sumRows(dy2), beta.shape));
        return grads;
      },
    };
  });
  return op(...inputs);
}

function checkChannelParam(name: string, t: tf.Tensor | undefined, c: number): void {
  if (t && t.size !== c) throw new ConfigError(`batchnorm: expected ${name} with ${c} elements, found shape [${t.shape.join(', ')}]`);
}

registry.register('batchnorm', (cfg) => {
  const channels = cfg['channels'];
  const opts: BatchNormOptions = { channels: channels as number };
  if (cfg['momentum'] !== undefined) opts.momentum = cfg['momentum'] as number;
  if (cfg['eps'] !== undefined) opts.eps = cfg['eps'] as number;
  if (cfg['affine'] !== undefined) opts.affine = cfg['affine'] as boolean;
  return new BatchNorm(opts);
});
