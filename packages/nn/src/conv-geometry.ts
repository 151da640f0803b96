/**
 * Convolution geometry shared by `conv2d` and `depthwiseConv2d` (internal: not re-exported from the
 * package entry, except `Padding`, `AxisGeometry` and `axisGeometry`, which depthwise.ts re-exports):
 * padding and output sizes, the zero insertion and padding of the input-gradient correlation, and the
 * stride phases the filter gradients are computed on.
 */
import * as tf from '@tensorflow/tfjs';
import { ConfigError, type JsonValue } from '@leanpass/core';

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

/** A number or an [h, w] pair as a pair. */
export function pair(v: number | readonly number[], what: string): [number, number] {
  if (typeof v === 'number') return [v, v];
  if (v.length === 2 && typeof v[0] === 'number' && typeof v[1] === 'number') return [v[0], v[1]];
  throw new ConfigError(`${what}: expected a number or an [h, w] pair, found ${JSON.stringify(v)}`);
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

/** The geometry fields shared by conv2d and depthwise-conv2d options, copied with their defaults. */
export function convGeometry(o: { kernelSize: number | number[]; stride?: number | number[]; padding?: Padding; bias?: boolean }): {
  kernelSize: number | number[];
  stride: number | number[];
  padding: Padding;
  bias: boolean;
} {
  return {
    kernelSize: Array.isArray(o.kernelSize) ? [...o.kernelSize] : o.kernelSize,
    stride: Array.isArray(o.stride) ? [...o.stride] : (o.stride ?? 1),
    padding: o.padding ?? 'same',
    bias: o.bias ?? true,
  };
}

/**
 * FLOPs of a convolution with `macs` multiply-adds producing `outputs` values: forward 2·MACs (+ the
 * bias add); backward dx (2·MACs), dW (2·MACs, when the weight trains) and db (when the bias trains).
 */
export function convFlops(macs: number, outputs: number, bias: boolean, weightTrains: boolean, biasTrains: boolean): { forward: number; backward: number } {
  const b = bias ? outputs : 0;
  return { forward: 2 * macs + b, backward: 2 * macs + (weightTrains ? 2 * macs : 0) + (biasTrains ? b : 0) };
}

/** Checks the fields shared by conv2d and depthwise-conv2d configs (geometry and bias); pushes problems to `issues`. */
export function checkConvGeometry(cfg: { kernelSize: JsonValue; stride: JsonValue; padding: JsonValue; bias: JsonValue }, issues: Array<{ path: string; message: string }>): void {
  if (typeof cfg.bias !== 'boolean') issues.push({ path: 'bias', message: `expected a boolean, found ${JSON.stringify(cfg.bias)}` });
  const isPair = (v: JsonValue): boolean => (typeof v === 'number' && Number.isInteger(v) && v >= 1) || (Array.isArray(v) && v.length === 2 && v.every((e) => typeof e === 'number' && Number.isInteger(e) && e >= 1));
  if (!isPair(cfg.kernelSize)) issues.push({ path: 'kernelSize', message: `expected a positive integer or an [h, w] pair, found ${JSON.stringify(cfg.kernelSize)}` });
  if (!isPair(cfg.stride)) issues.push({ path: 'stride', message: `expected a positive integer or an [h, w] pair, found ${JSON.stringify(cfg.stride)}` });
  const p = cfg.padding;
  if (!(p === 'same' || p === 'valid' || (typeof p === 'number' && Number.isInteger(p) && p >= 0))) {
    issues.push({ path: 'padding', message: `expected 'same', 'valid' or a non-negative integer, found ${JSON.stringify(p)}` });
  }
}
