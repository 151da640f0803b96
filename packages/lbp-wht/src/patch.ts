/**
 * Patch layout for LBP-WHT: token tensors ↔ the [o², P·C] matrix whose row (u·o + v) holds, for every
 * patch p and channel c, the token at offset (u, v) of patch p (spec §2.7). Padding (zero or reflect,
 * ⌈total/2⌉ before, the rest after) happens on the way in; the way back crops it.
 *
 * On the cpu and wasm backends both directions are one kernel of our own that copies contiguous runs of
 * C channels (one pass over the data); tfjs's route (pad → reshape → two rank-4 transposes) is kept
 * for other backends and as the test oracle: both are pure copies, so they agree exactly.
 */
import * as tf from '@tensorflow/tfjs';
import { ConfigError } from '@leanpass/core';

export type PadKind = 'zero' | 'reflect';

/** Where the grid sits in a token tensor and how it is cut into o×o patches. */
export interface Geometry {
  /** Samples. */
  B: number;
  /** Tokens per sample (E + H·W). */
  T: number;
  /** Leading non-grid tokens per sample (a class token). */
  E: number;
  H: number;
  W: number;
  /** Channels. */
  C: number;
  /** Patch side. */
  o: number;
  /** Patches along H and W. */
  ph: number;
  pw: number;
  /** Padding before the grid (top, left); after = ph·o − H − top, pw·o − W − left. */
  top: number;
  left: number;
  /** Patches in all: B·ph·pw. */
  P: number;
}

/** The patch grid of an H×W token grid: ⌈H/o⌉×⌈W/o⌉ patches, padding split ⌈total/2⌉ before, the rest after. */
export function patchGrid(H: number, W: number, o: number): { ph: number; pw: number; top: number; bottom: number; left: number; right: number } {
  const ph = Math.ceil(H / o);
  const pw = Math.ceil(W / o);
  const th = ph * o - H;
  const tw = pw * o - W;
  return { ph, pw, top: Math.ceil(th / 2), bottom: th - Math.ceil(th / 2), left: Math.ceil(tw / 2), right: tw - Math.ceil(tw / 2) };
}

/** Problems with reflect padding of an H×W grid at order o (reflect needs each pad ≤ side − 1), or undefined. */
export function reflectProblem(H: number, W: number, o: number): string | undefined {
  const g = patchGrid(H, W, o);
  const bad: string[] = [];
  if (Math.max(g.top, g.bottom) > H - 1) bad.push(`rows: pads ${g.top}/${g.bottom} on a side of ${H}`);
  if (Math.max(g.left, g.right) > W - 1) bad.push(`columns: pads ${g.left}/${g.right} on a side of ${W}`);
  return bad.length ? `reflect padding to a multiple of ${o} needs each pad ≤ side − 1 (${bad.join('; ')}); use padMode 'zero' or 'zeroX', or a smaller order` : undefined;
}

export function makeGeometry(B: number, E: number, H: number, W: number, C: number, o: number): Geometry {
  const g = patchGrid(H, W, o);
  return { B, T: E + H * W, E, H, W, C, o, ph: g.ph, pw: g.pw, top: g.top, left: g.left, P: B * g.ph * g.pw };
}

function reflectIndex(i: number, n: number): number {
  // i ∈ [−(n−1), 2n−2]: mirror without repeating the edge
  if (i < 0) return -i;
  if (i >= n) return 2 * (n - 1) - i;
  return i;
}

/** Source token index (within a sample's grid, r·W + c) for padded position (pr, pc), or −1 for a zero. */
function sourceIndex(g: Geometry, pr: number, pc: number, pad: PadKind): number {
  let r = pr - g.top;
  let c = pc - g.left;
  if (r < 0 || r >= g.H || c < 0 || c >= g.W) {
    if (pad === 'zero') return -1;
    r = reflectIndex(r, g.H);
    c = reflectIndex(c, g.W);
  }
  return r * g.W + c;
}

type Typed = Float32Array;

/** Patchify on typed arrays: src [B, T, C] → dst [o², P, C] (+ extras [B·E, C]). */
function patchifyArrays(src: Typed, dst: Typed, extra: Typed | undefined, g: Geometry, pad: PadKind): void {
  const { B, T, E, C, o, ph, pw, P } = g;
  for (let b = 0; b < B; b++) {
    const sampleBase = b * T;
    for (let i = 0; i < ph; i++) {
      for (let u = 0; u < o; u++) {
        for (let j = 0; j < pw; j++) {
          const p = (b * ph + i) * pw + j;
          for (let v = 0; v < o; v++) {
            const s = sourceIndex(g, i * o + u, j * o + v, pad);
            const d = ((u * o + v) * P + p) * C;
            if (s < 0) dst.fill(0, d, d + C);
            else {
              const so = (sampleBase + E + s) * C;
              if (C >= 32) dst.set(src.subarray(so, so + C), d);
              else for (let c = 0; c < C; c++) dst[d + c] = src[so + c] as number;
            }
          }
        }
      }
    }
    if (extra && E > 0) extra.set(src.subarray(sampleBase * C, (sampleBase + E) * C), b * E * C);
  }
}

/** Unpatchify on typed arrays: src [o², P, C] (+ extras [B·E, C]) → dst [B, T, C], padding cropped. */
function unpatchifyArrays(src: Typed, extra: Typed | undefined, dst: Typed, g: Geometry): void {
  const { B, T, E, H, W, C, o, ph, pw, P, top, left } = g;
  for (let b = 0; b < B; b++) {
    const sampleBase = b * T;
    if (E > 0) {
      if (extra) dst.set(extra.subarray(b * E * C, (b + 1) * E * C), sampleBase * C);
      else dst.fill(0, sampleBase * C, (sampleBase + E) * C);
    }
    for (let r = 0; r < H; r++) {
      const pr = r + top;
      const i = Math.floor(pr / o);
      const u = pr - i * o;
      for (let c = 0; c < W; c++) {
        const pc = c + left;
        const j = Math.floor(pc / o);
        const v = pc - j * o;
        const p = (b * ph + i) * pw + j;
        const so = ((u * o + v) * P + p) * C;
        const d = (sampleBase + E + r * W + c) * C;
        if (C >= 32) dst.set(src.subarray(so, so + C), d);
        else for (let k = 0; k < C; k++) dst[d + k] = src[so + k] as number;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Kernels (cpu and wasm)

const PATCHIFY = 'LeanpassLbpPatchify';
const UNPATCHIFY = 'LeanpassLbpUnpatchify';

interface GeometryAttrs {
  geom: Geometry;
  pad: PadKind;
}

/** The parts of the cpu and wasm backends the kernels use (public methods in tfjs 4.22). */
interface WasmLike {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array | Int32Array | Uint8Array;
}
interface CpuLike {
  readSync(dataId: object): unknown;
  makeTensorInfo(shape: number[], dtype: tf.DataType, values?: Float32Array): tf.TensorInfo;
}

function registerOnce(config: tf.KernelConfig): void {
  if (tf.getKernel(config.kernelName, config.backendName) === undefined) tf.registerKernel(config);
}

function outShapes(g: Geometry): { patches: number[]; extra: number[] } {
  return { patches: [g.o * g.o, g.P * g.C], extra: [g.B * g.E, g.C] };
}

registerOnce({
  kernelName: PATCHIFY,
  backendName: 'wasm',
  kernelFunc: ({ inputs, backend, attrs }) => {
    const { geom: g, pad } = attrs as unknown as GeometryAttrs;
    const be = backend as unknown as WasmLike;
    const x = inputs['x'] as tf.TensorInfo;
    const shapes = outShapes(g);
    const out = be.makeOutput(shapes.patches, 'float32');
    const ex = g.E > 0 ? be.makeOutput(shapes.extra, 'float32') : undefined;
    // Views are taken after every allocation: an allocation may grow (and so detach) the heap.
    patchifyArrays(be.typedArrayFromHeap(x) as Float32Array, be.typedArrayFromHeap(out) as Float32Array, ex ? (be.typedArrayFromHeap(ex) as Float32Array) : undefined, g, pad);
    return ex ? [out, ex] : [out];
  },
});

registerOnce({
  kernelName: PATCHIFY,
  backendName: 'cpu',
  kernelFunc: ({ inputs, backend, attrs }) => {
    const { geom: g, pad } = attrs as unknown as GeometryAttrs;
    const be = backend as unknown as CpuLike;
    const x = inputs['x'] as tf.TensorInfo;
    const shapes = outShapes(g);
    const dst = new Float32Array(g.o * g.o * g.P * g.C);
    const ex = g.E > 0 ? new Float32Array(g.B * g.E * g.C) : undefined;
    patchifyArrays(be.readSync(x.dataId) as Float32Array, dst, ex, g, pad);
    const outs = [be.makeTensorInfo(shapes.patches, 'float32', dst)];
    if (ex) outs.push(be.makeTensorInfo(shapes.extra, 'float32', ex));
    return outs;
  },
});

registerOnce({
  kernelName: UNPATCHIFY,
  backendName: 'wasm',
  kernelFunc: ({ inputs, backend, attrs }) => {
    const { geom: g } = attrs as unknown as GeometryAttrs;
    const be = backend as unknown as WasmLike;
    const y = inputs['y'] as tf.TensorInfo;
    const e = inputs['extra'];
    const out = be.makeOutput([g.B, g.T, g.C], 'float32');
    unpatchifyArrays(be.typedArrayFromHeap(y) as Float32Array, e ? (be.typedArrayFromHeap(e) as Float32Array) : undefined, be.typedArrayFromHeap(out) as Float32Array, g);
    return out;
  },
});

registerOnce({
  kernelName: UNPATCHIFY,
  backendName: 'cpu',
  kernelFunc: ({ inputs, backend, attrs }) => {
    const { geom: g } = attrs as unknown as GeometryAttrs;
    const be = backend as unknown as CpuLike;
    const y = inputs['y'] as tf.TensorInfo;
    const e = inputs['extra'];
    const dst = new Float32Array(g.B * g.T * g.C);
    unpatchifyArrays(be.readSync(y.dataId) as Float32Array, e ? (be.readSync(e.dataId) as Float32Array) : undefined, dst, g);
    return be.makeTensorInfo([g.B, g.T, g.C], 'float32', dst);
  },
});

// ---------------------------------------------------------------------------------------------------
// Public functions

export type PatchImpl = 'auto' | 'kernel' | 'ops';

function useKernel(impl: PatchImpl): boolean {
  if (impl === 'ops') return false;
  const b = tf.getBackend();
  const has = b === 'cpu' || b === 'wasm';
  if (impl === 'kernel' && !has) throw new ConfigError(`lbp-wht: the patch kernels exist for cpu and wasm, the backend is '${b}'`);
  return has;
}

function checkInput(x: tf.Tensor, g: Geometry, what: string): void {
  if (x.dtype !== 'float32') throw new ConfigError(`lbp-wht: expected ${what} of dtype float32, found ${x.dtype}`);
  if (x.size !== g.B * g.T * g.C) {
    throw new ConfigError(`lbp-wht: expected ${what} with ${g.B}·${g.T}·${g.C} = ${g.B * g.T * g.C} elements ([B, E + H·W, C] with E = ${g.E}, grid ${g.H}×${g.W}), found [${x.shape.join(', ')}]`);
  }
}

/**
 * x (any shape holding [B, T, C] row-major) → patches [o², P·C] (padded with `pad`) and, when E > 0,
 * the extra tokens [B·E, C].
 */
export function patchify(x: tf.Tensor, g: Geometry, pad: PadKind, impl: PatchImpl = 'auto'): { patches: tf.Tensor2D; extra: tf.Tensor2D | undefined } {
  checkInput(x, g, 'the token tensor');
  if (useKernel(impl)) {
    const outs = tf.engine().runKernel(PATCHIFY, { x }, { geom: g, pad } as unknown as tf.NamedAttrMap) as unknown as tf.Tensor[];
    return { patches: outs[0] as tf.Tensor2D, extra: outs[1] as tf.Tensor2D | undefined };
  }
  return tf.tidy(() => {
    const { B, T, E, H, W, C, o, ph, pw, P } = g;
    const x3 = tf.reshape(x, [B, T, C]);
    let grid = E > 0 ? tf.slice(x3, [0, E, 0], [B, H * W, C]) : x3;
    grid = tf.reshape(grid, [B, H, W, C]);
    const pg = patchGrid(H, W, o);
    const pads: Array<[number, number]> = [
      [0, 0],
      [pg.top, pg.bottom],
      [pg.left, pg.right],
      [0, 0],
    ];
    const any = pg.top + pg.bottom + pg.left + pg.right > 0;
    const padded = !any ? grid : pad === 'zero' ? tf.pad(grid, pads) : tf.mirrorPad(grid, pads, 'reflect');
    const a = tf.transpose(tf.reshape(padded, [B * ph, o, pw, o * C]), [1, 0, 2, 3]);
    const b = tf.transpose(tf.reshape(a, [o, P, o, C]), [0, 2, 1, 3]);
    const patches = tf.reshape<tf.Rank.R2>(b, [o * o, P * C]);
    const extra = E > 0 ? tf.reshape<tf.Rank.R2>(tf.slice(x3, [0, 0, 0], [B, E, C]), [B * E, C]) : undefined;
    return extra ? { patches, extra } : { patches, extra: undefined };
  });
}

/**
 * patches [o², P·C] (and extras [B·E, C], or zeros) → [B, T, C]: the inverse layout of `patchify`,
 * with the padding cropped.
 */
export function unpatchify(y: tf.Tensor, extra: tf.Tensor | undefined, g: Geometry, impl: PatchImpl = 'auto'): tf.Tensor3D {
  const { B, E, H, W, C, o, ph, pw, P } = g;
  if (y.size !== o * o * P * C) throw new ConfigError(`lbp-wht: expected patches with ${o * o}·${P}·${C} elements, found [${y.shape.join(', ')}]`);
  if (extra && extra.size !== B * E * C) throw new ConfigError(`lbp-wht: expected extra tokens [${B * E}, ${C}], found [${extra.shape.join(', ')}]`);
  if (useKernel(impl)) {
    const inputs: tf.NamedTensorMap = extra ? { y, extra } : { y };
    return tf.engine().runKernel<tf.Tensor3D>(UNPATCHIFY, inputs, { geom: g, pad: 'zero' } as unknown as tf.NamedAttrMap);
  }
  return tf.tidy(() => {
    const pg = patchGrid(H, W, o);
    const a = tf.transpose(tf.reshape(y, [o, o, P, C]), [0, 2, 1, 3]); // [u, P, v, C]
    const b = tf.transpose(tf.reshape(a, [o, B * ph, pw, o * C]), [1, 0, 2, 3]); // [B·ph, u, pw, v·C]
    const padded = tf.reshape(b, [B, ph * o, pw * o, C]);
    const grid = tf.reshape<tf.Rank.R3>(tf.slice(padded, [0, pg.top, pg.left, 0], [B, H, W, C]), [B, H * W, C]);
    if (E === 0) return grid;
    const ex = extra ? tf.reshape(extra, [B, E, C]) : tf.zeros([B, E, C]);
    return tf.concat<tf.Tensor3D>([ex as tf.Tensor3D, grid], 1);
  });
}
