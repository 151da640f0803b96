/**
 * The LBP-WHT dense op (spec §2.5, §2.7): `y = x·W + b` exactly, with a backward that works on K
 * Walsh–Hadamard coefficients per o×o patch of the token grid.
 *
 * Forward: y computed by nn's `dense` (so bit-identical to the Linear it replaces), plus — when W needs a
 * gradient — the unnormalised coefficients X = Bm·patchify(x), saved transposed ([Cᵢ, K·P]); x itself
 * is not saved. Backward, with G = (Bm/o²)·patchify(dy):
 *   dW = Xᵀ·G (+ the exact product over extra tokens), dx = unpatchify(Bmᵀ·(G·Wᵀ)) (extra tokens exact),
 *   db = Σ dy (exact).
 * Every product is a 2-D matMul with no transpose flags (runtime-notes §2b).
 */
import * as tf from '@tensorflow/tfjs';
import { ConfigError } from '@leanpass/core';
import { dense, sumOverRows, transposeLast2 } from '@leanpass/nn';
import { makeGeometry, patchify, reflectProblem, unpatchify, type Geometry, type PadKind, type PatchImpl } from './patch.js';
import { baseMatrix, type BasePair } from './wht.js';

/** How x and dy are padded up to a multiple of o: 'zeroX' = x zero, dy reflect (default); 'zero'; 'reflect'. */
export type PadMode = 'zeroX' | 'zero' | 'reflect';

export function padKinds(mode: PadMode): { x: PadKind; g: PadKind } {
  if (mode === 'zero') return { x: 'zero', g: 'zero' };
  if (mode === 'reflect') return { x: 'reflect', g: 'reflect' };
  return { x: 'zero', g: 'reflect' };
}

/** The bases of one layer and their constants' data (tensors are made per call: no lifetime to manage). */
export interface Bases {
  o: number;
  pairs: ReadonlyArray<BasePair>;
  /** Bm [K, o²] (±1). */
  bm: Float32Array;
  /** Bm / o² [K, o²] (exact: o² is a power of two). */
  bmG: Float32Array;
  /** Bmᵀ [o², K]. */
  bmT: Float32Array;
}

const basesCache = new Map<string, Bases>();

/** The base constants for order o and the given pairs (cached by value). */
export function makeBases(o: number, pairs: ReadonlyArray<BasePair>): Bases {
  const key = `${o}:${pairs.map(([i, j]) => `${i},${j}`).join(';')}`;
  const hit = basesCache.get(key);
  if (hit) return hit;
  const bm = baseMatrix(o, pairs);
  const K = pairs.length;
  const o2 = o * o;
  const bmG = new Float32Array(bm.length);
  const bmT = new Float32Array(bm.length);
  for (let k = 0; k < K; k++) {
    for (let n = 0; n < o2; n++) {
      const v = bm[k * o2 + n] as number;
      bmG[k * o2 + n] = v / o2;
      bmT[n * K + k] = v;
    }
  }
  const b: Bases = { o, pairs: pairs.map(([i, j]) => [i, j] as const), bm, bmG, bmT };
  basesCache.set(key, b);
  return b;
}

/** Where the grid is in the input of one call. */
export interface GridSpec {
  /** [H, W]; undefined: from a rank-4 NHWC input, else a square grid inferred from the token count. */
  grid?: readonly [number, number] | undefined;
  /** Leading non-grid tokens per sample (default 0). */
  extraTokens?: number | undefined;
}

/**
 * Resolves the geometry of x: rank 4 [B, H, W, C] (no extra tokens); rank 3 [B, E + H·W, C]; rank 2
 * [B·(E + H·W), C] (needs the grid). Throws a ConfigError naming the shape when it is not a grid.
 */
export function resolveGeometry(shape: readonly number[], o: number, spec: GridSpec, who = 'lbp-wht'): Geometry {
  const E = spec.extraTokens ?? 0;
  const C = shape[shape.length - 1] as number;
  const s = `[${shape.join(', ')}]`;
  if (shape.length === 4) {
    const [B, H, W] = shape as [number, number, number, number];
    if (E !== 0) throw new ConfigError(`${who}: a rank-4 input ${s} is an NHWC grid and cannot carry ${E} extra token(s)`);
    if (spec.grid && (spec.grid[0] !== H || spec.grid[1] !== W)) throw new ConfigError(`${who}: expected an input grid ${spec.grid[0]}×${spec.grid[1]}, found ${s}`);
    return makeGeometry(B, 0, H, W, C, o);
  }
  if (shape.length === 3) {
    const [B, T] = shape as [number, number, number];
    let grid = spec.grid;
    if (!grid) {
      const n = T - E;
      const side = Math.round(Math.sqrt(Math.max(n, 0)));
      if (n < 1 || side * side !== n) {
        throw new ConfigError(`${who}: the input ${s} has ${T} tokens; with ${E} extra token(s) that leaves ${n}, which is not a square grid: give the grid [H, W] (option 'grid' or a 'grid' field on an ancestor's config)`);
      }
      grid = [side, side];
    }
    const [H, W] = grid;
    if (T !== E + H * W) throw new ConfigError(`${who}: expected ${E} extra token(s) + a ${H}×${W} grid = ${E + H * W} tokens, found ${T} in ${s}`);
    return makeGeometry(B, E, H, W, C, o);
  }
  if (shape.length === 2) {
    if (!spec.grid) throw new ConfigError(`${who}: a rank-2 input ${s} needs the grid [H, W] (option 'grid' or a 'grid' field on an ancestor's config)`);
    const [H, W] = spec.grid;
    const T = E + H * W;
    const rows = shape[0] as number;
    if (rows % T !== 0) throw new ConfigError(`${who}: expected the ${rows} rows of ${s} to be a multiple of ${E} extra + ${H}×${W} grid tokens = ${T}`);
    return makeGeometry(rows / T, E, H, W, C, o);
  }
  throw new ConfigError(`${who}: expected an input [B, H, W, C], [B, N, C] or [rows, C], found ${s}`);
}

export interface LbpDenseOptions {
  bases: Bases;
  padMode: PadMode;
  grid?: GridSpec;
  /** Compute W's gradient (default: unless W is a frozen tf.Variable). */
  weightGrad?: boolean;
  /** Compute b's gradient (default: unless b is a frozen tf.Variable). */
  biasGrad?: boolean;
  /** Patch layout implementation (default 'auto': own kernels on cpu/wasm). */
  impl?: PatchImpl;
  /** Layer name for error messages. */
  who?: string;
}

function frozen(t: tf.Tensor): boolean {
  return t instanceof tf.Variable && !t.trainable;
}

/**
 * `x·W + b` over the last axis of x with LBP-WHT gradients. W is [Cᵢ, Cₒ] and read through the closure
 * in the backward (never saved; a tf.Variable outlives the step); b is [Cₒ] or null.
 */
export function lbpDense(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor | null | undefined, opts: LbpDenseOptions): tf.Tensor {
  const who = opts.who ?? 'lbp-wht';
  if (w.rank !== 2) throw new ConfigError(`${who}: expected W of rank 2 [in, out], found [${w.shape.join(', ')}]`);
  const [Ci, Co] = w.shape as [number, number];
  if (x.shape[x.rank - 1] !== Ci) throw new ConfigError(`${who}: expected the input's last axis to be ${Ci}, found [${x.shape.join(', ')}]`);
  if (b && (b.rank !== 1 || b.shape[0] !== Co)) throw new ConfigError(`${who}: expected bias of shape [${Co}], found [${b.shape.join(', ')}]`);
  const { bases, padMode } = opts;
  const o = bases.o;
  const geom = resolveGeometry(x.shape, o, opts.grid ?? {}, who);
  const geomG: Geometry = { ...geom, C: Co };
  if (padMode !== 'zero') {
    const problem = reflectProblem(geom.H, geom.W, o);
    if (problem) throw new ConfigError(`${who}: padMode '${padMode}' on a ${geom.H}×${geom.W} grid: ${problem}`);
  }
  const pads = padKinds(padMode);
  const impl = opts.impl ?? 'auto';
  const K = bases.pairs.length;
  const { P, B } = geom;
  const o2 = o * o;
  const bias = b ?? undefined;
  const wGrad = opts.weightGrad ?? !frozen(w);
  const bGrad = bias !== undefined && (opts.biasGrad ?? !frozen(bias));
  const w2 = w as tf.Tensor2D;
  const wByClosure = w instanceof tf.Variable;

  const inputs: tf.Tensor[] = [x];
  if (wGrad) inputs.push(w);
  if (bGrad) inputs.push(bias);

  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const xi = args[0] as tf.Tensor;
    // nn's dense computes the value (the tape is off here): bit-identical to the Linear it replaces.
    const value = dense(xi, w2, bias ?? null, { weightGrad: false, biasGrad: false });
    const keep: tf.Tensor[] = [];
    if (wGrad) {
      const { patches, extra } = patchify(xi, geom, pads.x, impl);
      const xs = tf.reshape(tf.matMul(tf.tensor2d(bases.bm, [K, o2]), patches), [K * P, Ci]);
      keep.push(transposeLast2(xs));
      if (extra) keep.push(transposeLast2(extra));
    }
    // A weight held in a tf.Variable outlives the step and is read through the closure; any other W
    // (a temporary of the caller's forward, e.g. a reshaped conv kernel) is gone by the backward: save it.
    if (!wByClosure) keep.push(w2);
    save(keep);
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const { patches, extra: dye } = patchify(dy, geomG, pads.g, impl);
        const gs = tf.reshape<tf.Rank.R2>(tf.matMul(tf.tensor2d(bases.bmG, [K, o2]), patches), [K * P, Co]);
        const wb = wByClosure ? w2 : (saved[saved.length - 1] as tf.Tensor2D);
        const wT = transposeLast2(wb) as tf.Tensor2D;
        const gxl = tf.matMul(gs, wT);
        const gxp = tf.matMul(tf.tensor2d(bases.bmT, [o2, K]), tf.reshape<tf.Rank.R2>(gxl, [K, P * Ci]));
        const gxe = dye ? tf.matMul(dye, wT) : undefined;
        const gx = tf.reshape(unpatchify(gxp, gxe, geom, impl), xi.shape);
        const grads: tf.Tensor[] = [gx];
        if (wGrad) {
          const xsT = saved[0] as tf.Tensor2D;
          let gw: tf.Tensor = tf.matMul(xsT, gs);
          if (dye) gw = tf.add(gw, tf.matMul(saved[1] as tf.Tensor2D, dye));
          grads.push(gw);
        }
        if (bGrad) grads.push(sumOverRows(tf.reshape(dy, [B * geom.T, Co])));
        return grads;
      },
    };
  });
  return op(...inputs);
}
