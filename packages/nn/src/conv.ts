/**
 * 2-D convolution (NHWC, weight [kh, kw, in/groups, out]) that trains on every backend, wasm included.
 *
 * tfjs-wasm has no Conv2DBackpropFilter, and its Conv2DBackpropInput is ~10× slower than a forward
 * convolution. `conv2d` picks, per call:
 * - 1×1, stride 1, no padding: a flag-free matMul on the last axis (as `dense`, but on the 4-D filter
 *   itself, so that only x is saved, and with the weight gradient's transposition chosen for conv
 *   shapes: see `weightGradient`);
 * - groups = in channels: the depthwise op (`depthwiseConv2d`, multiplier = out / in);
 * - otherwise one `tf.customGrad`: forward = the native convolution; dx = the native convolution of dy
 *   (zero-inserted for stride > 1) with the flipped, in/out-swapped filter; dW = for each tap, dyᵀ
 *   shifted into place with a pad, times the padded input as [rows, in] — the same right operand for
 *   every tap, so wasm packs it once (wasm's matMul repacks a fresh right operand on every call).
 *   1 < groups < in runs that path on a block-diagonal filter (groups× the multiply-adds).
 * No path uses Slice (wasm's copies its whole input out of the heap first) or a flagged matMul.
 */
import * as tf from '@tensorflow/tfjs';
import { ConfigError, Module, registry, type FlopCount, type InitContext, type JsonObject, type RunContext } from '@leanpass/core';
import { sumRows } from './batchnorm.js';
import { axisGeometry, backPadding, checkConvGeometry, convFlops, convGeometry, correlate, pair, phases, zeroInsert, type AxisGeometry, type Padding } from './conv-geometry.js';
import { depthwiseConv2d } from './depthwise.js';
import { isFrozen } from './ops/dense.js';
import { trains, uniformInit } from './util.js';

function shapeStr(t: tf.Tensor): string {
  return `[${t.shape.join(', ')}]`;
}

/**
 * [rows, cols] → [cols, rows]. On wasm, tfjs's rank-2 Transpose of a tall matrix runs at ~10 ns per
 * element ([8192, 192]: ~10 ms) while the same permutation written as [a, rows/a, cols] → [2, 0, 1]
 * takes ~3 ms; wide matrices are already fast as rank 2.
 */
export function transpose2d(x: tf.Tensor): tf.Tensor2D {
  if (x.rank !== 2) throw new ConfigError(`transpose2d: expected a rank-2 tensor, found ${shapeStr(x)}`);
  const [rows, cols] = x.shape as [number, number];
  if (rows > cols) {
    for (const a of [16, 8, 32, 12, 24, 4, 6, 2, 3]) {
      if (rows % a === 0 && rows / a > 1) return tf.reshape(tf.transpose(tf.reshape(x, [a, rows / a, cols]), [2, 0, 1]), [cols, rows]);
    }
  }
  return tf.transpose(x as tf.Tensor2D, [1, 0]);
}

export interface Conv2dOptions {
  stride?: number | readonly [number, number];
  padding?: Padding;
  groups?: number;
  /** Compute the weight's gradient (default: unless w is a non-trainable tf.Variable). */
  weightGrad?: boolean;
  /** Compute the bias's gradient (default: unless b is a non-trainable tf.Variable). */
  biasGrad?: boolean;
}

/**
 * [kh, kw, in/g, out] → the equivalent dense filter [kh, kw, in, out] with zero off-diagonal blocks
 * (input group i feeds output group i only). Small, taped ops: the gradient flows back to `w`.
 */
export function blockDiagonalFilter(w: tf.Tensor, groups: number): tf.Tensor4D {
  const [kh, kw, ing, out] = w.shape as [number, number, number, number];
  const og = out / groups;
  const mask = new Float32Array(groups * groups);
  for (let g = 0; g < groups; g++) mask[g * groups + g] = 1;
  const m = tf.tensor5d(mask, [1, groups, 1, groups, 1]);
  const expanded = tf.mul(tf.reshape(w, [kh * kw, 1, ing, groups, og]), m);
  return tf.reshape(expanded, [kh, kw, groups * ing, out]);
}

/**
 * Filter gradient of a dense convolution: dW[i, j] = Σ_rows xpad-window(i, j)ᵀ · dy, computed as
 * (dyᵀ shifted by a pad) · grid for each tap, where grid = [rows, in] is one stride phase of the padded
 * input, shared by its taps. Returns [kh, kw, in, out].
 */
function convFilterGrad(x: tf.Tensor4D, dy: tf.Tensor4D, gh: AxisGeometry, gw: AxisGeometry): tf.Tensor4D {
  const [bs, , , cin] = x.shape;
  const cout = dy.shape[3];
  const dyT = tf.reshape(transpose2d(tf.reshape(dy, [bs * gh.out * gw.out, cout])), [cout, bs, gh.out, gw.out]);
  const ph = phases(gh);
  const pw = phases(gw);
  const grids = new Map<string, tf.Tensor2D>();
  const taps: tf.Tensor[] = [];
  for (let i = 0; i < gh.kernel; i++) {
    const fh = ph[i % gh.stride]!;
    const oh = Math.floor(i / gh.stride) + fh.lead;
    for (let j = 0; j < gw.kernel; j++) {
      const fw = pw[j % gw.stride]!;
      const ow = Math.floor(j / gw.stride) + fw.lead;
      const key = `${fh.phase},${fw.phase}`;
      const rows = bs * fh.length * fw.length;
      let grid = grids.get(key);
      if (!grid) {
        let g: tf.Tensor4D = tf.pad(x, [[0, 0], [fh.padBefore, fh.padAfter], [fw.padBefore, fw.padAfter], [0, 0]]);
        if (gh.stride > 1 || gw.stride > 1) g = tf.avgPool(g, 1, [gh.stride, gw.stride], 'valid');
        grid = tf.reshape(g, [rows, cin]);
        grids.set(key, grid);
      }
      const shifted = tf.pad(dyT, [[0, 0], [0, 0], [oh, fh.length - gh.out - oh], [ow, fw.length - gw.out - ow]]);
      taps.push(tf.matMul(tf.reshape<tf.Rank.R2>(shifted, [cout, rows]), grid));
    }
  }
  // [taps, out, in] → [taps, in, out]
  return tf.reshape(tf.transpose(tf.stack(taps), [0, 2, 1]), [gh.kernel, gw.kernel, cin, cout]);
}

/**
 * xᵀ·dy for x [rows, in], dy [rows, out] with flag-free matMuls. wasm's matMul packs its right
 * operand afresh for every new tensor (~10–20 ns per element at these sizes; the packed form is cached
 * per tensor, so timing one tensor repeatedly hides it), and transposes a tall matrix at ~2 ns per
 * element via `transpose2d`: so the narrower of the two goes on the right, the wider one is transposed.
 */
export function weightGradient(x: tf.Tensor2D, dy: tf.Tensor2D): tf.Tensor2D {
  const [, cin] = x.shape;
  const [, cout] = dy.shape;
  if (cin >= cout) return tf.matMul(transpose2d(x), dy);
  return tf.transpose(tf.matMul(transpose2d(dy), x));
}

/**
 * 1×1 stride-1 convolution: a matMul on the last axis, [B·H·W, in] · [in, out]. The [1, 1, in, out]
 * filter itself is the op's input (reshaped inside, so no taped reshape saves a copy); only x is saved.
 */
function pointwiseConv(x: tf.Tensor4D, w: tf.Tensor4D, bias: tf.Tensor | undefined, wGrad: boolean, bGrad: boolean): tf.Tensor4D {
  const [bs, h, wd, cin] = x.shape;
  const cout = w.shape[3];
  const rows = bs * h * wd;
  const wSave = !(w instanceof tf.Variable);
  const inputs: tf.Tensor[] = [x];
  if (wGrad) inputs.push(w);
  if (bGrad && bias) inputs.push(bias);
  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const x2 = tf.reshape<tf.Rank.R2>(args[0] as tf.Tensor, [rows, cin]);
    let y: tf.Tensor = tf.matMul(x2, tf.reshape<tf.Rank.R2>(w, [cin, cout]));
    if (bias) y = tf.add(y, tf.reshape(bias, [cout]));
    const keep: tf.Tensor[] = [];
    if (wGrad) keep.push(x2);
    if (wSave) keep.push(w);
    save(keep);
    return {
      value: tf.reshape(y, [bs, h, wd, cout]),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const wb = (wSave ? saved[saved.length - 1] : w) as tf.Tensor;
        const dy2 = tf.reshape<tf.Rank.R2>(dy, [rows, cout]);
        const wt = tf.transpose(tf.reshape<tf.Rank.R2>(wb, [cin, cout]));
        const grads: tf.Tensor[] = [tf.reshape(tf.matMul(dy2, wt), [bs, h, wd, cin])];
        if (wGrad) grads.push(tf.reshape(weightGradient(saved[0] as tf.Tensor2D, dy2), [1, 1, cin, cout]));
        if (bGrad && bias) grads.push(tf.reshape(sumRows(dy2), bias.shape));
        return grads;
      },
    };
  });
  return op(...inputs) as tf.Tensor4D;
}

/** Dense (groups = 1) convolution as one customGrad. */
function denseConv(x: tf.Tensor4D, w: tf.Tensor4D, bias: tf.Tensor | undefined, sh: number, sw: number, padding: Padding, wGrad: boolean, bGrad: boolean): tf.Tensor4D {
  const [bs, h, wd] = x.shape;
  const [kh, kw, , cout] = w.shape;
  const gh = axisGeometry(h, kh, sh, padding);
  const gw = axisGeometry(wd, kw, sw, padding);
  const pads: [[number, number], [number, number], [number, number], [number, number]] = [
    [0, 0],
    [gh.padBefore, gh.padAfter],
    [gw.padBefore, gw.padAfter],
    [0, 0],
  ];
  const rows = bs * gh.out * gw.out;
  // A weight that is not a tf.Variable may be disposed before the backward (it is a temporary of the
  // caller's forward): save it; variables are read through the closure (a save is a copy on wasm).
  const wSave = !(w instanceof tf.Variable);
  const inputs: tf.Tensor[] = [x];
  if (wGrad) inputs.push(w);
  if (bGrad && bias) inputs.push(bias);
  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const xi = args[0] as tf.Tensor4D;
    let y: tf.Tensor4D = tf.conv2d(xi, w, [sh, sw], pads);
    if (bias) y = tf.add(y, tf.reshape(bias, [cout]));
    const keep: tf.Tensor[] = [];
    if (wGrad) keep.push(xi);
    if (wSave) keep.push(w);
    save(keep);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const dy4 = dy as tf.Tensor4D;
        const wb = (wSave ? saved[saved.length - 1] : w) as tf.Tensor4D;
        const u = sh > 1 || sw > 1 ? zeroInsert(dy4, sh, sw) : dy4;
        const flipped = tf.transpose(tf.reverse(wb, [0, 1]), [0, 1, 3, 2]);
        const grads: tf.Tensor[] = [correlate(u, flipped, backPadding(gh), backPadding(gw), 'dense')];
        if (wGrad) grads.push(convFilterGrad(saved[0] as tf.Tensor4D, dy4, gh, gw));
        if (bGrad && bias) grads.push(tf.reshape(sumRows(tf.reshape(dy4, [rows, cout])), bias.shape));
        return grads;
      },
    };
  });
  return op(...inputs);
}

/**
 * Convolution y = x ⊛ w (+ b) for x [B, H, W, in], w [kh, kw, in/groups, out], b [out]. Output
 * channel o of group g = ⌊o / (out/groups)⌋ sees input channels g·in/groups … (g+1)·in/groups − 1
 * (PyTorch's grouping). Trains on wasm.
 */
export function conv2d(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor | null | undefined, opts: Conv2dOptions = {}): tf.Tensor4D {
  if (x.rank !== 4) throw new ConfigError(`conv2d: expected x of rank 4 [B, H, W, C], found ${shapeStr(x)}`);
  if (w.rank !== 4) throw new ConfigError(`conv2d: expected w of rank 4 [kh, kw, in/groups, out], found ${shapeStr(w)}`);
  const cin = x.shape[3] as number;
  const [kh, kw, ing, cout] = w.shape as [number, number, number, number];
  const groups = opts.groups ?? 1;
  if (!Number.isInteger(groups) || groups < 1 || cin % groups !== 0 || cout % groups !== 0) {
    throw new ConfigError(`conv2d: groups must be a positive integer dividing both ${cin} input and ${cout} output channels, found ${groups}`);
  }
  if (ing * groups !== cin) throw new ConfigError(`conv2d: x ${shapeStr(x)} has ${cin} channels but w ${shapeStr(w)} expects ${ing} per group × ${groups} groups`);
  const bias = b ?? undefined;
  if (bias && bias.size !== cout) throw new ConfigError(`conv2d: expected a bias of ${cout} elements, found ${shapeStr(bias)}`);
  const [sh, sw] = pair(opts.stride ?? 1, 'conv2d stride');
  if (!(Number.isInteger(sh) && Number.isInteger(sw) && sh >= 1 && sw >= 1)) throw new ConfigError(`conv2d: expected positive integer strides, found [${sh}, ${sw}]`);
  const padding = opts.padding ?? 'same';
  const wGrad = opts.weightGrad ?? !isFrozen(w);
  const bGrad = bias !== undefined && (opts.biasGrad ?? !isFrozen(bias));
  if (groups > 1 && groups === cin) {
    return depthwiseConv2d(x, tf.reshape(w, [kh, kw, cin, cout / cin]), bias, { stride: [sh, sw], padding, weightGrad: wGrad, biasGrad: bGrad });
  }
  const wEff = groups > 1 ? blockDiagonalFilter(w, groups) : (w as tf.Tensor4D);
  const noPad = padding === 'valid' || padding === 0 || padding === 'same';
  if (kh === 1 && kw === 1 && sh === 1 && sw === 1 && noPad) return pointwiseConv(x as tf.Tensor4D, wEff, bias, wGrad, bGrad);
  return denseConv(x as tf.Tensor4D, wEff, bias, sh, sw, padding, wGrad, bGrad);
}

export interface Conv2dConfig extends JsonObject {
  inChannels: number;
  outChannels: number;
  kernelSize: number | number[];
  stride: number | number[];
  padding: Padding;
  groups: number;
  bias: boolean;
}

export interface Conv2dModuleOptions {
  inChannels: number;
  outChannels: number;
  kernelSize: number | [number, number];
  stride?: number | [number, number];
  padding?: Padding;
  groups?: number;
  bias?: boolean;
}

export function conv2dConfig(o: Conv2dModuleOptions | Conv2dConfig): Conv2dConfig {
  return { inChannels: o.inChannels, outChannels: o.outChannels, groups: o.groups ?? 1, ...convGeometry(o) };
}

/**
 * 2-D convolution module (kind 'conv2d'), NHWC. Params: 'weight' [kh, kw, in/groups, out] and 'bias'
 * [out] (when bias). Initialised as PyTorch's Conv2d: U(±1/√(in/groups·kh·kw)), weight then bias.
 */
export class Conv2d extends Module<tf.Tensor, tf.Tensor, Conv2dConfig> {
  readonly kind = 'conv2d';

  constructor(opts: Conv2dModuleOptions | Conv2dConfig, init: InitContext) {
    const config = conv2dConfig(opts);
    const issues: Array<{ path: string; message: string }> = [];
    const posInt = (v: unknown): boolean => typeof v === 'number' && Number.isInteger(v) && v >= 1;
    if (!posInt(config.inChannels)) issues.push({ path: 'inChannels', message: `expected a positive integer, found ${JSON.stringify(config.inChannels)}` });
    if (!posInt(config.outChannels)) issues.push({ path: 'outChannels', message: `expected a positive integer, found ${JSON.stringify(config.outChannels)}` });
    if (!posInt(config.groups)) {
      issues.push({ path: 'groups', message: `expected a positive integer, found ${JSON.stringify(config.groups)}` });
    } else if (config.inChannels % config.groups !== 0 || config.outChannels % config.groups !== 0) {
      issues.push({ path: 'groups', message: `expected a divisor of inChannels (${config.inChannels}) and outChannels (${config.outChannels}), found ${config.groups}` });
    }
    checkConvGeometry(config, issues);
    if (issues.length) throw new ConfigError('conv2d: invalid config', issues);
    super(config);
    const [kh, kw] = pair(config.kernelSize, 'kernelSize');
    const ing = config.inChannels / config.groups;
    const bound = 1 / Math.sqrt(ing * kh * kw);
    this.addParam('weight', uniformInit(init.rng, [kh, kw, ing, config.outChannels], bound));
    if (config.bias) this.addParam('bias', uniformInit(init.rng, [config.outChannels], bound));
  }

  forward(x: tf.Tensor, _ctx: RunContext): tf.Tensor {
    const { inChannels, groups, stride, padding } = this.config;
    if (x.rank !== 4 || x.shape[3] !== inChannels) throw new ConfigError(`conv2d: expected an input [B, H, W, ${inChannels}], found ${shapeStr(x)}`);
    const wp = this.param('weight');
    const bp = this.config.bias ? this.param('bias') : undefined;
    return conv2d(x, wp.variable, bp?.variable, { stride: pair(stride, 'stride'), padding, groups, weightGrad: trains(wp), biasGrad: bp !== undefined && trains(bp) });
  }

  override flops(_x: tf.Tensor, y: tf.Tensor): FlopCount {
    const [kh, kw] = pair(this.config.kernelSize, 'kernelSize');
    const macs = kh * kw * (this.config.inChannels / this.config.groups) * y.size;
    return convFlops(macs, y.size, this.config.bias, trains(this.param('weight')), this.config.bias && trains(this.param('bias')));
  }
}

registry.register('conv2d', (cfg, init) => new Conv2d(cfg as Conv2dConfig, init));
