/**
 * Depthwise 2-D convolution (NHWC) that trains on every backend, wasm included.
 *
 * tfjs-wasm has the depthwise forward kernel but neither of its gradients
 * (DepthwiseConv2dNativeBackpropInput / BackpropFilter). `depthwiseConv2d` is one `tf.customGrad`:
 * - forward: the native depthwise kernel (explicit padding) plus the bias;
 * - dx: the native depthwise kernel again, on dy (zero-inserted for stride > 1) with the flipped
 *   filter — a correlation, so it runs at forward speed;
 * - dW: for each of the k² taps, the padded input (one stride phase of it, picked with a 1×1 average
 *   pool) times dy shifted into place with a pad, averaged over rows with `meanRows`. No Slice: wasm's
 *   Slice copies its whole input out of the wasm heap first (~10 ms per tap at MobileNet sizes).
 * It saves only the unpadded input, and only when the filter needs a gradient; the filter and bias are
 * read through the closure (a saved tensor is a full copy on wasm) but passed as inputs so that they
 * receive gradients.
 */
import * as tf from '@tensorflow/tfjs';
import { ConfigError, Module, registry, type FlopCount, type InitContext, type JsonObject, type RunContext } from '@leanpass/core';
import { sumRows } from './batchnorm.js';
import { axisGeometry, backPadding, checkConvGeometry, convFlops, convGeometry, correlate, pair, phases, zeroInsert, type AxisGeometry, type Padding, type Phase } from './conv-geometry.js';
import { isFrozen } from './ops/dense.js';
import { trains, uniformInit } from './util.js';

export { axisGeometry, type AxisGeometry, type Padding } from './conv-geometry.js';

export interface DepthwiseOptions {
  stride?: number | readonly [number, number];
  padding?: Padding;
  /** Compute the filter's gradient (default: unless w is a non-trainable tf.Variable). */
  weightGrad?: boolean;
  /** Compute the bias's gradient (default: unless b is a non-trainable tf.Variable). */
  biasGrad?: boolean;
}

function shapeStr(t: tf.Tensor): string {
  return `[${t.shape.join(', ')}]`;
}

/**
 * Filter gradient of a depthwise convolution: dW[i, j, c, q] = Σ xpad[n, a·sh + i, b·sw + j, c] ·
 * dy[n, a, b, c·m + q], one pad + mul + row mean per tap, returned as [kh, kw, C, m].
 */
function depthwiseFilterGrad(x: tf.Tensor4D, dy: tf.Tensor4D, gh: AxisGeometry, gw: AxisGeometry, m: number): tf.Tensor4D {
  const [bs, , , c] = x.shape;
  const cm = c * m;
  const grids = new Map<string, tf.Tensor4D>();
  const taps: tf.Tensor[] = [];
  const ph = phases(gh);
  const pw = phases(gw);
  for (let i = 0; i < gh.kernel; i++) {
    const fh = ph[i % gh.stride] as Phase;
    const oh = Math.floor(i / gh.stride) + fh.lead;
    for (let j = 0; j < gw.kernel; j++) {
      const fw = pw[j % gw.stride] as Phase;
      const ow = Math.floor(j / gw.stride) + fw.lead;
      const key = `${fh.phase},${fw.phase}`;
      let grid = grids.get(key);
      if (!grid) {
        grid = tf.pad(x, [[0, 0], [fh.padBefore, fh.padAfter], [fw.padBefore, fw.padAfter], [0, 0]]);
        if (gh.stride > 1 || gw.stride > 1) grid = tf.avgPool(grid, 1, [gh.stride, gw.stride], 'valid');
        grids.set(key, grid);
      }
      const shifted = tf.pad(dy, [[0, 0], [oh, fh.length - gh.out - oh], [ow, fw.length - gw.out - ow], [0, 0]]);
      const rows = bs * fh.length * fw.length;
      const prod = m > 1 ? tf.mul(tf.reshape(grid, [rows, c, 1]), tf.reshape(shifted, [rows, c, m])) : tf.mul(grid, shifted);
      taps.push(sumRows(tf.reshape(prod, [rows, cm])));
    }
  }
  return tf.reshape(tf.concat(taps, 0), [gh.kernel, gw.kernel, c, m]);
}

/**
 * Depthwise convolution y = x ⊛ w (+ b) for x [B, H, W, C], w [kh, kw, C, m], b [C·m] (output channel
 * c·m + q is input channel c with filter q, as `tf.depthwiseConv2d`). Trains on wasm.
 */
export function depthwiseConv2d(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor | null | undefined, opts: DepthwiseOptions = {}): tf.Tensor4D {
  if (x.rank !== 4) throw new ConfigError(`depthwiseConv2d: expected x of rank 4 [B, H, W, C], found ${shapeStr(x)}`);
  if (w.rank !== 4) throw new ConfigError(`depthwiseConv2d: expected w of rank 4 [kh, kw, C, multiplier], found ${shapeStr(w)}`);
  const [bs, h, wd, c] = x.shape as [number, number, number, number];
  const [kh, kw, wc, m] = w.shape as [number, number, number, number];
  if (wc !== c) throw new ConfigError(`depthwiseConv2d: x ${shapeStr(x)} has ${c} channels but w ${shapeStr(w)} has ${wc}`);
  const cm = c * m;
  const bias = b ?? undefined;
  if (bias && bias.size !== cm) throw new ConfigError(`depthwiseConv2d: expected a bias of ${cm} elements, found ${shapeStr(bias)}`);
  const [sh, sw] = pair(opts.stride ?? 1, 'depthwiseConv2d stride');
  if (!(Number.isInteger(sh) && Number.isInteger(sw) && sh >= 1 && sw >= 1)) throw new ConfigError(`depthwiseConv2d: expected positive integer strides, found [${sh}, ${sw}]`);
  const padding = opts.padding ?? 'same';
  const gh = axisGeometry(h, kh, sh, padding);
  const gw = axisGeometry(wd, kw, sw, padding);
  const pads: [[number, number], [number, number], [number, number], [number, number]] = [
    [0, 0],
    [gh.padBefore, gh.padAfter],
    [gw.padBefore, gw.padAfter],
    [0, 0],
  ];
  const rows = bs * gh.out * gw.out;
  const wGrad = opts.weightGrad ?? !isFrozen(w);
  const bGrad = bias !== undefined && (opts.biasGrad ?? !isFrozen(bias));
  // A filter that is not a tf.Variable may be disposed before the backward (a temporary of the
  // caller's forward): save it; variables are read through the closure (a save is a copy on wasm).
  const wSave = !(w instanceof tf.Variable);
  const inputs: tf.Tensor[] = [x];
  if (wGrad) inputs.push(w);
  if (bGrad) inputs.push(bias);

  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const xi = args[0] as tf.Tensor4D;
    let y: tf.Tensor4D = tf.depthwiseConv2d(xi, w as tf.Tensor4D, [sh, sw], pads);
    if (bias) y = tf.add(y, tf.reshape(bias, [cm]));
    const keep: tf.Tensor[] = [];
    if (wGrad) keep.push(xi);
    if (wSave) keep.push(w);
    save(keep);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const dy4 = dy as tf.Tensor4D;
        const wb = wSave ? (saved[saved.length - 1] as tf.Tensor) : w;
        // dx: correlation of the zero-inserted dy with the flipped filter.
        const u = sh > 1 || sw > 1 ? zeroInsert(dy4, sh, sw) : dy4;
        const flipped = tf.reshape<tf.Rank.R4>(tf.reverse(wb, [0, 1]), [kh, kw, cm, 1]);
        let dx: tf.Tensor = correlate(u, flipped, backPadding(gh), backPadding(gw));
        if (m > 1) dx = tf.sum(tf.reshape(dx, [bs, h, wd, c, m]), 4);
        const grads: tf.Tensor[] = [dx];
        const dy2 = tf.reshape(dy4, [rows, cm]);
        if (wGrad) grads.push(depthwiseFilterGrad(saved[0] as tf.Tensor4D, dy4, gh, gw, m));
        if (bGrad) grads.push(tf.reshape(sumRows(dy2), bias.shape));
        return grads;
      },
    };
  });
  return op(...inputs);
}

export interface DepthwiseConv2dConfig extends JsonObject {
  channels: number;
  kernelSize: number | number[];
  stride: number | number[];
  padding: Padding;
  multiplier: number;
  bias: boolean;
}

export interface DepthwiseConv2dModuleOptions {
  channels: number;
  kernelSize: number | [number, number];
  stride?: number | [number, number];
  padding?: Padding;
  multiplier?: number;
  bias?: boolean;
}

export function depthwiseConv2dConfig(o: DepthwiseConv2dModuleOptions | DepthwiseConv2dConfig): DepthwiseConv2dConfig {
  return { channels: o.channels, multiplier: o.multiplier ?? 1, ...convGeometry(o) };
}

/**
 * Depthwise 2-D convolution module (kind 'depthwise-conv2d'), NHWC. Params: 'weight'
 * [kh, kw, channels, multiplier] and 'bias' [channels·multiplier] (when bias). Initialised as PyTorch's
 * Conv2d (uniform ±1/√(kh·kw)).
 */
export class DepthwiseConv2d extends Module<tf.Tensor, tf.Tensor, DepthwiseConv2dConfig> {
  readonly kind = 'depthwise-conv2d';

  constructor(opts: DepthwiseConv2dModuleOptions | DepthwiseConv2dConfig, init: InitContext) {
    const config = depthwiseConv2dConfig(opts);
    const issues: Array<{ path: string; message: string }> = [];
    if (!Number.isInteger(config.channels) || config.channels < 1) issues.push({ path: 'channels', message: `expected a positive integer, found ${JSON.stringify(config.channels)}` });
    if (!Number.isInteger(config.multiplier) || config.multiplier < 1) issues.push({ path: 'multiplier', message: `expected a positive integer, found ${JSON.stringify(config.multiplier)}` });
    checkConvGeometry(config, issues);
    if (issues.length) throw new ConfigError('depthwise-conv2d: invalid config', issues);
    super(config);
    const [kh, kw] = pair(config.kernelSize, 'kernelSize');
    const bound = 1 / Math.sqrt(kh * kw);
    this.addParam('weight', uniformInit(init.rng, [kh, kw, config.channels, config.multiplier], bound));
    if (config.bias) this.addParam('bias', uniformInit(init.rng, [config.channels * config.multiplier], bound));
  }

  forward(x: tf.Tensor, _ctx: RunContext): tf.Tensor {
    if (x.rank !== 4 || x.shape[3] !== this.config.channels) {
      throw new ConfigError(`depthwise-conv2d: expected an input [B, H, W, ${this.config.channels}], found ${shapeStr(x)}`);
    }
    const wp = this.param('weight');
    const bp = this.config.bias ? this.param('bias') : undefined;
    return depthwiseConv2d(x, wp.variable, bp?.variable, {
      stride: pair(this.config.stride, 'stride'),
      padding: this.config.padding,
      weightGrad: trains(wp),
      biasGrad: bp !== undefined && trains(bp),
    });
  }

  override flops(_x: tf.Tensor, y: tf.Tensor): FlopCount {
    const [kh, kw] = pair(this.config.kernelSize, 'kernelSize');
    // backward: dx (one correlation) + dW (one product and sum per tap) + db.
    return convFlops(kh * kw * y.size, y.size, this.config.bias, trains(this.param('weight')), this.config.bias && trains(this.param('bias')));
  }
}

registry.register('depthwise-conv2d', (cfg, init) => new DepthwiseConv2d(cfg as DepthwiseConv2dConfig, init));
