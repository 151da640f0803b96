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
import { ConfigError, Module, registry, type FlopCount, type InitContext, type JsonObject, type JsonValue, type RunContext } from '@leanpass/core';
import { sumRows } from './batchnorm.js';
import { isFrozen } from './ops/dense.js';
import { trains, uniformInit } from './util.js';

/** 'same' (TensorFlow: output ⌈H/s⌉, extra padding at the bottom/right), 'valid' (none) or a symmetric amount. */
export type Padding = 'same' | 'valid' | number;

/** Resolved geometry along one spatial axis. */
export interface AxisGeometry {
  /** Input size. */
  size: number;
  kernel: number;
  stride: number;
  padBefore: number;
  padAfter: number;
  /** Output size. */
  out: number;
}

/** Padding and output size along one axis (TensorFlow 'same' / 'valid', or symmetric PyTorch-style padding). */
export function axisGeometry(size: number, kernel: number, stride: number, padding: Padding): AxisGeometry {
  let padBefore: number;
  let padAfter: number;
  let out: number;
  if (padding === 'same') {
    out = Math.ceil(size / stride);
    const total = Math.max((out - 1) * stride + kernel - size, 0);
    padBefore = Math.floor(total / 2);
    padAfter = total - padBefore;
  } else {
    const p = padding === 'valid' ? 0 : padding;
    padBefore = p;
    padAfter = p;
    out = Math.floor((size + 2 * p - kernel) / stride) + 1;
  }
  if (out < 1) throw new ConfigError(`convolution: input size ${size} is too small for kernel ${kernel}, stride ${stride}, padding ${JSON.stringify(padding)}`);
  return { size, kernel, stride, padBefore, padAfter, out };
}

export interface DepthwiseOptions {
  stride?: number | readonly [number, number];
  padding?: Padding;
  /** Compute the filter's gradient (default: unless w is a non-trainable tf.Variable). */
  weightGrad?: boolean;
  /** Compute the bias's gradient (default: unless b is a non-trainable tf.Variable). */
  biasGrad?: boolean;
}

/** A number or an [h, w] pair as a pair. */
export function pair(v: number | readonly number[], what: string): [number, number] {
  if (typeof v === 'number') return [v, v];
  if (v.length === 2 && typeof v[0] === 'number' && typeof v[1] === 'number') return [v[0], v[1]];
  throw new ConfigError(`${what}: expected a number or an [h, w] pair, found ${JSON.stringify(v)}`);
}

function shapeStr(t: tf.Tensor): string {
  return `[${t.shape.join(', ')}]`;
}

/** Zero insertion along axes 1 and 2: [B, H, W, C] → [B, H·sh, W·sw, C] with dy at multiples of the stride. */
export function zeroInsert(t: tf.Tensor4D, sh: number, sw: number): tf.Tensor4D {
  const [b, h, w, c] = t.shape;
  let u: tf.Tensor = t;
  if (sh > 1) u = tf.reshape(tf.pad(tf.reshape(u, [b * h, 1, w * c]), [[0, 0], [0, sh - 1], [0, 0]]), [b, h * sh, w, c]);
  if (sw > 1) u = tf.reshape(tf.pad(tf.reshape(u, [b * h * sh * w, 1, c]), [[0, 0], [0, sw - 1], [0, 0]]), [b, h * sh, w * sw, c]);
  return u as tf.Tensor4D;
}

/**
 * Padding (before, after) of the correlation that maps the zero-inserted dy back to dx along one axis;
 * negative amounts are crops of its output.
 */
export function backPadding(g: AxisGeometry): [number, number] {
  const padded = g.size + g.padBefore + g.padAfter;
  const rest = padded - ((g.out - 1) * g.stride + g.kernel);
  // zeroInsert leaves (stride − 1) zeros after the last dy row.
  return [g.kernel - 1 - g.padBefore, g.kernel - 1 + rest - g.padAfter - (g.stride - 1)];
}

/**
 * Stride-1 correlation of u with f (tf.depthwiseConv2d or tf.conv2d) with explicit padding; negative
 * amounts crop the output.
 */
export function correlate(u: tf.Tensor4D, f: tf.Tensor4D, ph: [number, number], pw: [number, number], kind: 'depthwise' | 'dense' = 'depthwise'): tf.Tensor4D {
  const pads: [[number, number], [number, number], [number, number], [number, number]] = [
    [0, 0],
    [Math.max(ph[0], 0), Math.max(ph[1], 0)],
    [Math.max(pw[0], 0), Math.max(pw[1], 0)],
    [0, 0],
  ];
  let out = kind === 'dense' ? tf.conv2d(u, f, 1, pads) : tf.depthwiseConv2d(u, f, 1, pads);
  const crop = [Math.max(-ph[0], 0), Math.max(-ph[1], 0), Math.max(-pw[0], 0), Math.max(-pw[1], 0)] as const;
  if (crop.some((v) => v > 0)) {
    const [b, h, w, c] = out.shape;
    out = tf.slice(out, [0, crop[0], crop[2], 0], [b, h - crop[0] - crop[1], w - crop[2] - crop[3], c]);
  }
  return out;
}

/** One stride phase of one axis: the grid of padded-input positions ≡ phase (mod stride). */
export interface Phase {
  phase: number;
  /** Padding of x before the 1×1 stride-s pick. */
  padBefore: number;
  padAfter: number;
  /** Leading grid positions that precede padded position `phase` (so that padBefore stays ≥ 0). */
  lead: number;
  /** Grid length after the pick. */
  length: number;
}

/**
 * The phases of one axis used by the filter gradient. Phase p holds xpad[g·s + p − lead·s]; tap
 * i = p + o·s reads grid positions a + o + lead for outputs a < out, so no slicing is ever needed
 * (wasm's Slice copies its whole input to JS first): x is padded, picked with a 1×1 average pool of
 * stride s (exact), and dy is shifted with a pad instead.
 */
export function phases(g: AxisGeometry): Phase[] {
  const out: Phase[] = [];
  for (let p = 0; p < Math.min(g.stride, g.kernel); p++) {
    const maxOffset = Math.floor((g.kernel - 1 - p) / g.stride);
    const lead = Math.ceil(Math.max(0, p - g.padBefore) / g.stride);
    const padBefore = g.padBefore - p + lead * g.stride;
    const needed = (g.out + maxOffset + lead - 1) * g.stride + 1;
    const padAfter = Math.max(0, needed - padBefore - g.size);
    const length = Math.floor((padBefore + g.size + padAfter - 1) / g.stride) + 1;
    out.push({ phase: p, padBefore, padAfter, lead, length });
  }
  return out;
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
  return {
    channels: o.channels,
    kernelSize: Array.isArray(o.kernelSize) ? [...(o.kernelSize as number[])] : o.kernelSize,
    stride: Array.isArray(o.stride) ? [...(o.stride as number[])] : (o.stride ?? 1),
    padding: o.padding ?? 'same',
    multiplier: o.multiplier ?? 1,
    bias: o.bias ?? true,
  };
}

/** Checks the fields shared by conv2d and depthwise-conv2d configs; pushes problems to `issues`. */
export function checkConvGeometry(cfg: { kernelSize: JsonValue; stride: JsonValue; padding: JsonValue }, issues: Array<{ path: string; message: string }>): void {
  const isPair = (v: JsonValue): boolean => (typeof v === 'number' && Number.isInteger(v) && v >= 1) || (Array.isArray(v) && v.length === 2 && v.every((e) => typeof e === 'number' && Number.isInteger(e) && e >= 1));
  if (!isPair(cfg.kernelSize)) issues.push({ path: 'kernelSize', message: `expected a positive integer or an [h, w] pair, found ${JSON.stringify(cfg.kernelSize)}` });
  if (!isPair(cfg.stride)) issues.push({ path: 'stride', message: `expected a positive integer or an [h, w] pair, found ${JSON.stringify(cfg.stride)}` });
  const p = cfg.padding;
  if (!(p === 'same' || p === 'valid' || (typeof p === 'number' && Number.isInteger(p) && p >= 0))) {
    issues.push({ path: 'padding', message: `expected 'same', 'valid' or a non-negative integer, found ${JSON.stringify(p)}` });
  }
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
    if (typeof config.bias !== 'boolean') issues.push({ path: 'bias', message: `expected a boolean, found ${JSON.stringify(config.bias)}` });
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
    const macs = kh * kw * y.size;
    const bias = this.config.bias ? y.size : 0;
    const wTrain = trains(this.param('weight'));
    const bTrain = this.config.bias && trains(this.param('bias'));
    // backward: dx (one correlation) + dW (one product and sum per tap) + db.
    return { forward: 2 * macs + bias, backward: 2 * macs + (wTrain ? 2 * macs : 0) + (bTrain ? bias : 0) };
  }
}

registry.register('depthwise-conv2d', (cfg, init) => new DepthwiseConv2d(cfg as DepthwiseConv2dConfig, init));
