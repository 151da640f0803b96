/**
 * The module kind 'lbp-wht.linear': a linear layer (or a 1×1 convolution over NHWC maps) whose forward
 * is the wrapped layer's and whose training backward is LBP-WHT's (op.ts). Its parameters keep the
 * wrapped layer's names and shapes, so checkpoints and optimizer state keyed by path carry over.
 */
import * as tf from '@tensorflow/tfjs';
import { ConfigError, Module, type FlopCount, type InitContext, type JsonObject, type ModuleRegistry, type Param, type RunContext } from '@leanpass/core';
import { dense, isFrozen } from '@leanpass/nn';
import { lbpDense, makeBases, resolveGeometry, type Bases, type PadMode } from './op.js';
import { patchGrid } from './patch.js';
import { isPowerOfTwo, validatePairs } from './wht.js';

export const LBP_LINEAR_KIND = 'lbp-wht.linear';

export interface LbpLinearConfig extends JsonObject {
  inFeatures: number;
  outFeatures: number;
  bias: boolean;
  /** Shape of the stored weight: [in, out] for a linear, [1, 1, in, out] for a 1×1 conv. */
  weightShape: number[];
  /** The kind it replaced ('linear' or 'conv2d'). */
  wraps: string;
  /** Patch side o (a power of two). */
  order: number;
  /** The K selected 2-D bases (i, j), i vertical, j horizontal sequency. */
  bases: Array<[number, number]>;
  padMode: PadMode;
  /** Token grid [H, W] of the input, or null: from an NHWC input's shape, else a square grid inferred from the token count. */
  grid: [number, number] | null;
  /** Leading non-grid tokens per sample (class token), passed through the exact dense path. */
  extraTokens: number;
}

/** Checks a config read from a file (or built by the pass) and returns it normalised. */
export function checkLbpConfig(cfg: JsonObject): LbpLinearConfig {
  const bad = (field: string, expected: string): never => {
    throw new ConfigError(`${LBP_LINEAR_KIND}: expected config.${field} to be ${expected}, found ${JSON.stringify(cfg[field])}`);
  };
  const posInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 1;
  const inFeatures = cfg['inFeatures'];
  if (!posInt(inFeatures)) return bad('inFeatures', 'a positive integer');
  const outFeatures = cfg['outFeatures'];
  if (!posInt(outFeatures)) return bad('outFeatures', 'a positive integer');
  const bias = cfg['bias'];
  if (typeof bias !== 'boolean') return bad('bias', 'a boolean');
  const order = cfg['order'];
  if (!posInt(order) || !isPowerOfTwo(order) || order < 2) return bad('order', 'a power of two ≥ 2');
  const ws = cfg['weightShape'];
  if (!Array.isArray(ws) || !ws.every(posInt) || ws.reduce((a: number, b: number) => a * b, 1) !== inFeatures * outFeatures || ws[ws.length - 1] !== outFeatures) {
    return bad('weightShape', `a shape [..., ${inFeatures}, ${outFeatures}] with ${inFeatures}·${outFeatures} elements`);
  }
  const weightShape = ws.slice();
  const wraps = cfg['wraps'];
  if (wraps !== 'linear' && wraps !== 'conv2d') return bad('wraps', "'linear' or 'conv2d'");
  const basesRaw = cfg['bases'];
  const isPair = (p: unknown): p is [number, number] => Array.isArray(p) && p.length === 2 && p.every((n) => typeof n === 'number');
  if (!Array.isArray(basesRaw) || !basesRaw.every(isPair)) return bad('bases', 'a list of [i, j] pairs');
  const bases = basesRaw.map((p): [number, number] => [p[0], p[1]]);
  validatePairs(order, bases, LBP_LINEAR_KIND);
  const padMode = cfg['padMode'];
  if (padMode !== 'zeroX' && padMode !== 'zero' && padMode !== 'reflect') return bad('padMode', "'zeroX', 'zero' or 'reflect'");
  const gridRaw = cfg['grid'];
  let grid: [number, number] | null = null;
  if (gridRaw !== null && gridRaw !== undefined) {
    if (!Array.isArray(gridRaw) || gridRaw.length !== 2 || !gridRaw.every(posInt)) return bad('grid', 'null or [H, W] with positive integers');
    grid = [gridRaw[0] as number, gridRaw[1] as number];
  }
  const extraTokens = cfg['extraTokens'] ?? 0;
  if (typeof extraTokens !== 'number' || !Number.isInteger(extraTokens) || extraTokens < 0) return bad('extraTokens', 'an integer ≥ 0');
  return { inFeatures, outFeatures, bias, weightShape, wraps, order, bases, padMode, grid, extraTokens };
}

/** Analytic cost of one call (FLOPs; a ±1 projection as a matMul counts 2 per add, as it runs). */
export interface LbpFlops extends FlopCount {
  /** Backward of the dense layer on the same input. */
  denseBackward: number;
  /** The projection part of `backward` (x, dy and the reverse projection of dx). */
  projection: number;
  /** Rows of the low-rank products: K·P (+ extra tokens). */
  rows: number;
  /** Tokens: B·(E + H·W). */
  tokens: number;
}

/**
 * FLOPs of an LBP-WHT layer on an input of `shape`. The projection of x runs in the forward pass but
 * exists only for the backward, so it is counted in `backward`.
 */
export function lbpFlops(shape: readonly number[], cfg: Pick<LbpLinearConfig, 'inFeatures' | 'outFeatures' | 'bias' | 'order' | 'bases' | 'grid' | 'extraTokens'>, train: { weight: boolean; bias: boolean } = { weight: true, bias: true }): LbpFlops {
  const Ci = cfg.inFeatures;
  const Co = cfg.outFeatures;
  const g = resolveGeometry(shape, cfg.order, { grid: cfg.grid ?? undefined, extraTokens: cfg.extraTokens }, LBP_LINEAR_KIND);
  const K = cfg.bases.length;
  const o2 = cfg.order * cfg.order;
  const N = g.B * g.T;
  const Nprime = g.P * o2;
  const R = K * g.P;
  const Ex = g.B * g.E;
  const mm = 2 * N * Ci * Co;
  const denseBackward = mm + (train.weight ? mm : 0) + (cfg.bias && train.bias ? N * Co : 0);
  const projG = 2 * K * Nprime * Co;
  const projBack = 2 * K * Nprime * Ci;
  const projX = train.weight ? 2 * K * Nprime * Ci : 0;
  const lowX = 2 * (R + Ex) * Ci * Co;
  const lowW = train.weight ? 2 * (R + Ex) * Ci * Co : 0;
  const backward = projG + projBack + projX + lowX + lowW + (cfg.bias && train.bias ? N * Co : 0);
  return { forward: mm + (cfg.bias ? N * Co : 0), backward, denseBackward, projection: projG + projBack + projX, rows: R + Ex, tokens: N };
}

function trains(p: Param): boolean {
  return p.trainable && !isFrozen(p.variable);
}

/** The source parameters of a rewritten layer (copied into the new module). */
export interface LbpLinearSource {
  weight: Param;
  bias?: Param | undefined;
}

/**
 * y = x·W + b with LBP-WHT gradients in training mode (kind 'lbp-wht.linear'). In 'eval' mode it runs
 * nn's `dense`, exactly as the wrapped Linear does.
 */
export class LbpLinear extends Module<tf.Tensor, tf.Tensor, LbpLinearConfig> {
  readonly kind = LBP_LINEAR_KIND;
  private readonly basesData: Bases;

  /** From a config; parameters copied from `source`, or zeros (to be loaded) when absent. */
  constructor(config: JsonObject, source?: LbpLinearSource) {
    const cfg = checkLbpConfig(config);
    super(cfg);
    this.basesData = makeBases(cfg.order, cfg.bases);
    if (cfg.grid && cfg.padMode !== 'zero') {
      const g = patchGrid(cfg.grid[0], cfg.grid[1], cfg.order);
      if (Math.max(g.top, g.bottom) > cfg.grid[0] - 1 || Math.max(g.left, g.right) > cfg.grid[1] - 1) {
        throw new ConfigError(`${LBP_LINEAR_KIND}: padMode '${cfg.padMode}' cannot reflect-pad a ${cfg.grid[0]}×${cfg.grid[1]} grid to a multiple of ${cfg.order} (pads ${g.top}/${g.bottom} rows, ${g.left}/${g.right} columns); use padMode 'zero'`);
      }
    }
    if (source) {
      if (source.weight.size !== cfg.inFeatures * cfg.outFeatures) throw new ConfigError(`${LBP_LINEAR_KIND}: the source weight has shape [${source.weight.shape.join(', ')}], expected ${cfg.inFeatures}·${cfg.outFeatures} elements`);
      const w = this.addParam('weight', tf.tidy(() => tf.reshape(tf.clone(source.weight.variable), cfg.weightShape)), source.weight.trainable);
      w.variable.trainable = source.weight.variable.trainable;
      if (cfg.bias) {
        if (!source.bias) throw new ConfigError(`${LBP_LINEAR_KIND}: config.bias is true but the source layer has no bias`);
        const b = this.addParam('bias', tf.clone(source.bias.variable), source.bias.trainable);
        b.variable.trainable = source.bias.variable.trainable;
      }
    } else {
      this.addParam('weight', tf.zeros(cfg.weightShape));
      if (cfg.bias) this.addParam('bias', tf.zeros([cfg.outFeatures]));
    }
  }

  /** The bases' constants (K×o² matrix and friends). */
  get bases(): Bases {
    return this.basesData;
  }

  /** The weight as [in, out] (a view for a 1×1 conv's [1, 1, in, out]). */
  private weight2d(): tf.Tensor2D {
    const v = this.param('weight').variable;
    return (v.rank === 2 ? v : tf.reshape(v, [this.config.inFeatures, this.config.outFeatures])) as tf.Tensor2D;
  }

  forward(x: tf.Tensor, ctx: RunContext): tf.Tensor {
    const { inFeatures, grid, extraTokens, padMode } = this.config;
    if (x.rank < 2 || x.shape[x.rank - 1] !== inFeatures) {
      throw new ConfigError(`${LBP_LINEAR_KIND}: expected an input [..., ${inFeatures}], found [${x.shape.join(', ')}]`);
    }
    const wp = this.param('weight');
    const bp = this.config.bias ? this.param('bias') : undefined;
    const weightGrad = trains(wp);
    const biasGrad = bp !== undefined && trains(bp);
    // A 1×1 conv's weight is a [1, 1, in, out] variable: the reshape is then an input of the op (a
    // temporary), so only a linear's weight can be read through the closure as a variable.
    const w = this.weight2d();
    if (ctx.mode !== 'train') return dense(x, w, bp?.variable, { weightGrad, biasGrad });
    return lbpDense(x, w, bp?.variable, {
      bases: this.basesData,
      padMode,
      grid: { grid: grid ?? undefined, extraTokens },
      weightGrad,
      biasGrad,
      who: LBP_LINEAR_KIND,
    });
  }

  override flops(x: tf.Tensor): FlopCount {
    const wTrain = trains(this.param('weight'));
    const bTrain = this.config.bias && trains(this.param('bias'));
    const f = lbpFlops(x.shape, this.config, { weight: wTrain, bias: bTrain });
    return { forward: f.forward, backward: f.backward };
  }
}

/** Registers 'lbp-wht.linear' (idempotent). */
export function registerLbpKinds(reg: ModuleRegistry): void {
  if (!reg.has(LBP_LINEAR_KIND)) reg.register(LBP_LINEAR_KIND, (cfg: JsonObject, _init: InitContext) => new LbpLinear(cfg));
}
