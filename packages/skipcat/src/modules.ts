import * as tf from '@tensorflow/tfjs';
import { ConfigError, Module, type FlopCount, type JsonObject, type ModuleRegistry, type RunContext } from '@leanpass/core';
import { gradientTapeActive, matMulRaw, type WasmHeapBackend } from '@leanpass/nn';

/** Name of the wasm kernel behind `columnPieces`. */
export const COLUMN_PIECES_KERNEL = 'LeanpassSkipcatColumnPieces';

tf.registerKernel({
  kernelName: COLUMN_PIECES_KERNEL,
  backendName: 'wasm',
  kernelFunc: ({ inputs, backend, attrs }) => {
    const x = inputs['x'] as tf.TensorInfo;
    const { cols, sizes } = attrs as unknown as { cols: Int32Array | null; sizes: number[] };
    const be = backend as WasmHeapBackend;
    const [T, n] = x.shape as [number, number];
    const outs = sizes.map((k) => be.makeOutput([T, k], x.dtype));
    // Views are taken after every allocation: an allocation may grow (and so detach) the heap.
    const src = be.typedArrayFromHeap(x);
    let off = 0;
    sizes.forEach((k, p) => {
      const dst = be.typedArrayFromHeap(outs[p] as tf.TensorInfo);
      for (let t = 0; t < T; t++) {
        const so = t * n;
        const d0 = t * k;
        if (cols) for (let j = 0; j < k; j++) dst[d0 + j] = src[so + (cols[off + j] as number)] as number;
        else dst.set(src.subarray(so + off, so + off + k), d0);
      }
      off += k;
    });
    return outs;
  },
});

/** Name of the wasm kernel behind a factorised unit's whole batch-1 inference (`unitForward`). */
export const UNIT_KERNEL = 'LeanpassSkipcatUnit';

/** How the fused unit kernel forms the latent h from x [T, n]. */
interface UnitAttrs {
  /** 'product': h = x·a; 'skip': h = x_keep + x_rest·a; 'identity': h = x_keep (r = n). */
  mode: 'product' | 'skip' | 'identity';
  rank: number;
  /** Kept / rest input columns; null: contiguous (the input arrives permuted as [x_keep | x_rest]). */
  keep: Int32Array | null;
  rest: Int32Array | null;
  /** Output widths of the members (the pieces returned). */
  outs: number[];
}

type KernelCall = (args: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs: Record<string, unknown> }) => tf.TensorInfo;
let batchMatMulKernel: KernelCall | null = null;

/** tfjs-wasm's own BatchMatMul kernel function, called directly (no engine dispatch) on 2-D operands. */
function heapProduct(backend: WasmHeapBackend, a: tf.TensorInfo, b: tf.TensorInfo): tf.TensorInfo {
  if (!batchMatMulKernel) {
    const k = tf.getKernel(tf.BatchMatMul, 'wasm');
    if (!k) throw new ConfigError(`${UNIT_KERNEL}: expected tfjs-wasm's BatchMatMul kernel to be registered, found none`);
    batchMatMulKernel = k.kernelFunc as unknown as KernelCall;
  }
  return batchMatMulKernel({ inputs: { a, b }, backend, attrs: { transposeA: false, transposeB: false } });
}

/**
 * A factorised unit's whole inference in one dispatch: the rest columns gathered into a scratch
 * buffer, h = x_rest·A′ᵀ with tfjs-wasm's GEMM called directly, x_keep added in place, y = h·B with
 * the same GEMM, the bias added in place, and the members' outputs cut from y. The intermediates
 * never become tensors (their heap buffers are freed here). Every sum is the float32 operation of
 * the op-by-op path (a float32 + float32 sum rounded once is exact in JS doubles), and the products
 * are the same kernel, so the outputs are bit-identical to it.
 */
tf.registerKernel({
  kernelName: UNIT_KERNEL,
  backendName: 'wasm',
  kernelFunc: ({ inputs, backend, attrs }) => {
    const be = backend as WasmHeapBackend & { disposeData(dataId: object): boolean };
    const x = inputs['x'] as tf.TensorInfo;
    const a = inputs['a'];
    const b = inputs['b'] as tf.TensorInfo;
    const bias = inputs['bias'];
    const { mode, rank: r, keep, rest, outs } = attrs as unknown as UnitAttrs;
    const [T, n] = x.shape as [number, number];
    let h: tf.TensorInfo = x;
    if (mode === 'product') {
      h = heapProduct(be, x, a as tf.TensorInfo);
    } else if (mode === 'skip') {
      const k = n - r;
      const xr = be.makeOutput([T, k], 'float32');
      let src = be.typedArrayFromHeap(x);
      const dst = be.typedArrayFromHeap(xr);
      for (let t = 0; t < T; t++) {
        const so = t * n;
        const d0 = t * k;
        if (rest) for (let j = 0; j < k; j++) dst[d0 + j] = src[so + (rest[j] as number)] as number;
        else dst.set(src.subarray(so + r, so + n), d0);
      }
      h = heapProduct(be, xr, a as tf.TensorInfo);
      be.disposeData(xr.dataId);
      // views after the allocations (a heap growth detaches the old ones)
      src = be.typedArrayFromHeap(x);
      const hv = be.typedArrayFromHeap(h);
      for (let t = 0; t < T; t++) {
        const so = t * n;
        const ho = t * r;
        for (let j = 0; j < r; j++) hv[ho + j] = (src[so + (keep ? (keep[j] as number) : j)] as number) + (hv[ho + j] as number);
      }
    } else if (keep) {
      h = be.makeOutput([T, r], 'float32');
      const src = be.typedArrayFromHeap(x);
      const hv = be.typedArrayFromHeap(h);
      for (let t = 0; t < T; t++) for (let j = 0; j < r; j++) hv[t * r + j] = src[t * n + (keep[j] as number)] as number;
    }
    const y = heapProduct(be, h, b);
    if (h !== x) be.disposeData(h.dataId);
    const M = b.shape[1] as number;
    if (bias) {
      const yv = be.typedArrayFromHeap(y);
      const bv = be.typedArrayFromHeap(bias);
      for (let t = 0; t < T; t++) for (let o = 0; o < M; o++) yv[t * M + o] = (yv[t * M + o] as number) + (bv[o] as number);
    }
    if (outs.length === 1) return [y];
    const pieces = outs.map((k) => be.makeOutput([T, k], 'float32'));
    const yv = be.typedArrayFromHeap(y);
    let off = 0;
    outs.forEach((k, p) => {
      const dst = be.typedArrayFromHeap(pieces[p] as tf.TensorInfo);
      for (let t = 0; t < T; t++) dst.set(yv.subarray(t * M + off, t * M + off + k), t * k);
      off += k;
    });
    be.disposeData(y.dataId);
    return pieces;
  },
});

/**
 * Columns of x [T, n] cut into pieces [T, sizes[i]]: piece i holds columns cols[o_i … o_i + sizes[i])
 * (o_i = sizes[0] + … + sizes[i−1]), or the contiguous columns o_i… when `cols` is null. One
 * dispatch of a JS copy on the wasm heap (tfjs-wasm's Slice/SplitV copy the whole input per piece,
 * and its gathers move ~30 M elements/s): the inference path of the factorised linears at small
 * row counts. Not differentiable (call it with no gradient tape); other backends use gatherND/slice.
 */
export function columnPieces(x: tf.Tensor2D, cols: Int32Array | null, sizes: number[]): tf.Tensor2D[] {
  const [T, n] = x.shape;
  const total = sizes.reduce((a, b) => a + b, 0);
  if (total > n || (cols && cols.length !== total)) throw new ConfigError(`columnPieces: expected pieces of ${total} of the ${n} columns${cols ? ` and ${total} column indices, found ${cols.length}` : ''}`);
  if (tf.getBackend() === 'wasm' && x.dtype === 'float32') return tf.engine().runKernel(COLUMN_PIECES_KERNEL, { x }, { cols, sizes } as unknown as tf.NamedAttrMap) as unknown as tf.Tensor2D[];
  let off = 0;
  return sizes.map((k) => {
    const piece = cols ? tf.gather<tf.Tensor2D>(x, tf.tensor1d(cols.subarray(off, off + k), 'int32'), 1) : tf.slice(x, [0, off], [T, k]);
    off += k;
    return piece;
  });
}

/** How a factorised unit reads its input. */
export interface SkipConfig extends JsonObject {
  /** Input columns that pass straight through (the identity block), in the order of the factor's rows. */
  keep: number[];
  /** The other input columns, in the order of A′ᵀ's rows. */
  rest: number[];
  /**
   * The input arrives already permuted as [x_keep | x_rest] (the permutation was folded into the
   * layer that produces it), so the forward slices instead of gathering.
   */
  inputPermuted: boolean;
}

export interface LowRankConfig extends JsonObject {
  inFeatures: number;
  /** Output widths of the members (one for a plain linear; Q/K/V or gate/up for a Cat group). */
  outs: number[];
  /** Member names (children of the parent), in the order of `outs`. */
  names: string[];
  rank: number;
  bias: boolean;
  /** State key shared with the group's 'skipcat.slice' members; null for a single linear. */
  group: string | null;
  skip: SkipConfig | null;
  /** Per member: the permutation baked into its output columns (column j = original column perm[j]), or null. */
  outputPerms: Array<number[] | null>;
  /** The method that built it (informational). */
  method: string;
  /**
   * How a Skip unit forms its latent at run time: 'gather' (x_keep + x_rest·A′ᵀ, gatherND or slices:
   * fewest MACs), 'dense-a' (one matMul x·Ã with Ã = Π[I | A′]ᵀ built from the stored A′ on first
   * use: r² more MACs, three ops fewer; the stored parameters are the same), or 'auto' (dense-a for
   * at most AUTO_DENSE_A_ROWS rows — batch-1 decoding, where op dispatch dominates — else gather).
   */
  inference: 'gather' | 'dense-a' | 'auto';
}

export interface SliceConfig extends JsonObject {
  group: string;
  /** Index of this member in the head's `outs`. */
  index: number;
  inFeatures: number;
  outFeatures: number;
}

/** 'auto' inference uses the dense-A latent up to this many rows. */
export const AUTO_DENSE_A_ROWS = 16;

interface GroupEntry {
  dataId: object;
  parts: tf.Tensor2D[];
}

function rowsOf(x: tf.Tensor, n: number, kind: string): { rows: tf.Tensor2D; lead: number[] } {
  if (x.rank < 1 || x.shape[x.rank - 1] !== n) throw new ConfigError(`${kind}: expected input [..., ${n}], found [${x.shape.join(', ')}]`);
  const lead = x.shape.slice(0, -1);
  const rows: tf.Tensor2D = x.rank === 2 ? (x as tf.Tensor2D) : tf.reshape(x, [x.size / n, n]);
  return { rows, lead };
}

function checkInt(kind: string, cfg: JsonObject, key: string, min: number): number {
  const v = cfg[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new ConfigError(`${kind}: expected config.${key} to be an integer ≥ ${min}, found ${JSON.stringify(v)}`);
  return v;
}

function checkIntArray(kind: string, v: unknown, what: string): number[] {
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= 0)) throw new ConfigError(`${kind}: expected ${what} to be an array of non-negative integers, found ${JSON.stringify(v)?.slice(0, 80)}`);
  return v as number[];
}

/** Validates a LowRankConfig read from JSON. */
export function parseLowRankConfig(kind: string, cfg: JsonObject): LowRankConfig {
  const inFeatures = checkInt(kind, cfg, 'inFeatures', 1);
  const rank = checkInt(kind, cfg, 'rank', 1);
  const outs = checkIntArray(kind, cfg['outs'], 'config.outs');
  if (outs.length === 0 || outs.some((o) => o < 1)) throw new ConfigError(`${kind}: expected config.outs to list at least one positive width, found ${JSON.stringify(outs)}`);
  const names = cfg['names'];
  if (!Array.isArray(names) || names.length !== outs.length || !names.every((n) => typeof n === 'string')) throw new ConfigError(`${kind}: expected config.names to be ${outs.length} strings, found ${JSON.stringify(names)}`);
  const bias = cfg['bias'];
  if (typeof bias !== 'boolean') throw new ConfigError(`${kind}: expected config.bias to be a boolean, found ${JSON.stringify(bias)}`);
  const group = cfg['group'];
  if (group !== null && typeof group !== 'string') throw new ConfigError(`${kind}: expected config.group to be a string or null, found ${JSON.stringify(group)}`);
  if (outs.length > 1 && group === null) throw new ConfigError(`${kind}: a group of ${outs.length} members needs config.group`);
  const total = outs.reduce((a, b) => a + b, 0);
  if (rank > Math.min(inFeatures, total)) throw new ConfigError(`${kind}: rank ${rank} exceeds min(inFeatures ${inFeatures}, outputs ${total})`);
  let skip: SkipConfig | null = null;
  const sk = cfg['skip'];
  if (sk !== null && sk !== undefined) {
    if (typeof sk !== 'object' || Array.isArray(sk)) throw new ConfigError(`${kind}: expected config.skip to be null or {keep, rest, inputPermuted}, found ${JSON.stringify(sk)?.slice(0, 80)}`);
    const keep = checkIntArray(kind, sk['keep'], 'config.skip.keep');
    const rest = checkIntArray(kind, sk['rest'], 'config.skip.rest');
    if (keep.length !== rank || keep.length + rest.length !== inFeatures) throw new ConfigError(`${kind}: expected ${rank} kept and ${inFeatures - rank} rest columns, found ${keep.length} and ${rest.length}`);
    const seen = new Uint8Array(inFeatures);
    for (const i of [...keep, ...rest]) {
      if (i >= inFeatures || seen[i]) throw new ConfigError(`${kind}: config.skip.keep and rest must together be a permutation of 0..${inFeatures - 1}`);
      seen[i] = 1;
    }
    const ip = sk['inputPermuted'];
    if (typeof ip !== 'boolean') throw new ConfigError(`${kind}: expected config.skip.inputPermuted to be a boolean, found ${JSON.stringify(ip)}`);
    skip = { keep, rest, inputPermuted: ip };
  }
  const op = cfg['outputPerms'];
  if (!Array.isArray(op) || op.length !== outs.length) throw new ConfigError(`${kind}: expected config.outputPerms to hold ${outs.length} entries (null or a permutation), found ${JSON.stringify(op)?.slice(0, 80)}`);
  const outputPerms = op.map((p, i) => {
    if (p === null) return null;
    const arr = checkIntArray(kind, p, `config.outputPerms[${i}]`);
    if (arr.length !== outs[i]) throw new ConfigError(`${kind}: config.outputPerms[${i}] has ${arr.length} entries, expected ${outs[i]}`);
    return arr;
  });
  const method = typeof cfg['method'] === 'string' ? cfg['method'] : 'skipcat';
  const inf = cfg['inference'] ?? 'gather';
  if (inf !== 'gather' && inf !== 'dense-a' && inf !== 'auto') throw new ConfigError(`${kind}: expected config.inference to be 'gather', 'dense-a' or 'auto', found ${JSON.stringify(inf)}`);
  return { inFeatures, outs, names, rank, bias, group, skip, outputPerms, method, inference: inf };
}

/**
 * A factorised linear map y = B·A·x (+ b) over the last axis, for one linear ('skipcat.linear') or a
 * Cat group ('skipcat.cat': the stacked outputs of Q/K/V or gate/up share one A). Stored so that no
 * matMul needs a transpose flag:
 * - plain: 'a' = Aᵀ [in, r], 'b' = B_catᵀ [r, Σout];
 * - Skip: 'a' = A′ᵀ [in − r, r] (absent when r = in), 'b' = B′_catᵀ [r, Σout]; h = x_keep + x_rest·A′ᵀ,
 *   with x_keep/x_rest taken by gatherND (per-element indices cached per row count) or, when the
 *   producer was permuted (`skip.inputPermuted`), by two slices.
 * A group head returns its first member's part and leaves the others in `ctx.state` for the
 * 'skipcat.slice' members that replace the other linears; they must run after the head, on the
 * same input tensor (checked).
 */
export class LowRankLinear extends Module<tf.Tensor, tf.Tensor, LowRankConfig> {
  readonly kind: 'skipcat.linear' | 'skipcat.cat';
  private readonly indexCache = new Map<number, { keep: tf.Tensor; rest: tf.Tensor | null }>();
  private denseA: tf.Tensor2D | null = null;
  private keepRest: Int32Array | null = null;
  private skipCols: { keep: Int32Array | null; rest: Int32Array | null } | null = null;

  constructor(config: LowRankConfig, values?: { a: tf.Tensor | null; b: tf.Tensor; bias?: tf.Tensor }) {
    const cfg = parseLowRankConfig(config.outs.length > 1 ? 'skipcat.cat' : 'skipcat.linear', config);
    super(cfg);
    this.kind = cfg.outs.length > 1 ? 'skipcat.cat' : 'skipcat.linear';
    const { inFeatures: n, rank: r } = cfg;
    const total = cfg.outs.reduce((x, y) => x + y, 0);
    const aRows = cfg.skip ? n - r : n;
    if (aRows > 0) this.addParam('a', values?.a ?? tf.zeros([aRows, r]));
    this.addParam('b', values?.b ?? tf.zeros([r, total]));
    if (cfg.bias) this.addParam('bias', values?.bias ?? tf.zeros([total]));
    if (values) {
      const aShape = this.params.get('a')?.shape;
      if (aRows > 0 && (aShape?.[0] !== aRows || aShape[1] !== r)) throw new ConfigError(`${this.kind}: expected a [${aRows}, ${r}], found [${values.a?.shape.join(', ')}]`);
      const bs = this.param('b').shape;
      if (bs[0] !== r || bs[1] !== total) throw new ConfigError(`${this.kind}: expected b [${r}, ${total}], found [${bs.join(', ')}]`);
    }
  }

  get totalOut(): number {
    return this.config.outs.reduce((x, y) => x + y, 0);
  }

  private indices(T: number): { keep: tf.Tensor; rest: tf.Tensor | null } {
    const hit = this.indexCache.get(T);
    if (hit) return hit;
    const skip = this.config.skip as SkipConfig;
    const make = (cols: number[]): tf.Tensor => {
      const k = cols.length;
      const idx = new Int32Array(T * k * 2);
      for (let t = 0; t < T; t++) {
        for (let j = 0; j < k; j++) {
          idx[(t * k + j) * 2] = t;
          idx[(t * k + j) * 2 + 1] = cols[j] as number;
        }
      }
      return tf.keep(tf.tensor3d(idx, [T, k, 2], 'int32'));
    };
    const entry = { keep: make(skip.keep), rest: skip.rest.length ? make(skip.rest) : null };
    if (this.indexCache.size >= 8) {
      const [oldest, old] = this.indexCache.entries().next().value as [number, { keep: tf.Tensor; rest: tf.Tensor | null }];
      old.keep.dispose();
      old.rest?.dispose();
      this.indexCache.delete(oldest);
    }
    this.indexCache.set(T, entry);
    return entry;
  }

  /** The latent h = A·x (plain) or x_keep + A′·x_rest (Skip), rows [T, r]. */
  latent(rows: tf.Tensor2D): tf.Tensor2D {
    const { skip, rank: r, inFeatures: n } = this.config;
    const fast = this.inferenceFast();
    const mm = fast ? matMulRaw : (a: tf.Tensor2D, b: tf.Tensor): tf.Tensor2D => tf.matMul(a, b);
    if (!skip) return mm(rows, this.param('a').variable);
    const T = rows.shape[0];
    if (this.config.inference === 'dense-a' || (this.config.inference === 'auto' && T <= AUTO_DENSE_A_ROWS)) {
      this.denseA ??= tf.keep(denseInputFactor(this));
      return mm(rows, this.denseA);
    }
    if (r === n && skip.inputPermuted) return rows;
    let xk: tf.Tensor2D;
    let xr: tf.Tensor2D;
    if (r === n) {
      // A′ is empty: the latent is x in the kept order
      this.keepRest ??= Int32Array.from(skip.keep);
      return fast ? (columnPieces(rows, this.keepRest, [r])[0] as tf.Tensor2D) : (tf.gatherND(rows, this.indices(T).keep) as tf.Tensor2D);
    }
    if (fast) {
      // one dispatch for both pieces ([x_keep | x_rest] in that order)
      this.keepRest ??= skip.inputPermuted ? null : Int32Array.from([...skip.keep, ...skip.rest]);
      [xk, xr] = columnPieces(rows, this.keepRest, [r, n - r]) as [tf.Tensor2D, tf.Tensor2D];
    } else if (skip.inputPermuted) {
      xk = tf.slice(rows, [0, 0], [T, r]);
      xr = tf.slice(rows, [0, r], [T, n - r]);
    } else {
      const idx = this.indices(T);
      xk = tf.gatherND(rows, idx.keep) as tf.Tensor2D;
      xr = tf.gatherND(rows, idx.rest as tf.Tensor) as tf.Tensor2D;
    }
    return tf.add(xk, mm(xr, this.param('a').variable));
  }

  /**
   * The inference path: wasm, no gradient tape. `forward` runs the unit as one `UNIT_KERNEL`
   * dispatch; `latent` called on its own uses bare products and one `columnPieces` dispatch.
   */
  private inferenceFast(): boolean {
    return tf.getBackend() === 'wasm' && !gradientTapeActive();
  }

  /**
   * The unit's outputs on rows x [T, n] in one dispatch of `UNIT_KERNEL` (wasm, float32, no tape):
   * one piece [T, outs[i]] per member, bit-identical to the op-by-op inference path.
   */
  unitForward(rows: tf.Tensor2D): tf.Tensor2D[] {
    const { skip, rank: r, inFeatures: n, inference, outs } = this.config;
    const T = rows.shape[0];
    const inputs: tf.NamedTensorMap = { x: rows, b: this.param('b').variable };
    if (this.config.bias) inputs['bias'] = this.param('bias').variable;
    let attrs: UnitAttrs;
    if (!skip) {
      inputs['a'] = this.param('a').variable;
      attrs = { mode: 'product', rank: r, keep: null, rest: null, outs };
    } else if (inference === 'dense-a' || (inference === 'auto' && T <= AUTO_DENSE_A_ROWS)) {
      this.denseA ??= tf.keep(denseInputFactor(this));
      inputs['a'] = this.denseA;
      attrs = { mode: 'product', rank: r, keep: null, rest: null, outs };
    } else {
      this.skipCols ??= skip.inputPermuted ? { keep: null, rest: null } : { keep: Int32Array.from(skip.keep), rest: Int32Array.from(skip.rest) };
      if (r < n) inputs['a'] = this.param('a').variable;
      attrs = { mode: r < n ? 'skip' : 'identity', rank: r, ...this.skipCols, outs };
    }
    return tf.engine().runKernel(UNIT_KERNEL, inputs, attrs as unknown as tf.NamedAttrMap) as unknown as tf.Tensor2D[];
  }

  forward(x: tf.Tensor, ctx: RunContext): tf.Tensor {
    const { rows, lead } = rowsOf(x, this.config.inFeatures, this.kind);
    const fast = this.inferenceFast() && rows.dtype === 'float32';
    const { outs } = this.config;
    let parts: tf.Tensor2D[];
    if (fast) {
      parts = this.unitForward(rows);
      if (outs.length === 1) {
        const y = parts[0] as tf.Tensor2D;
        return lead.length === 1 ? y : tf.reshape(y, [...lead, outs[0] as number]);
      }
    } else {
      const h = this.latent(rows);
      let y: tf.Tensor2D = tf.matMul(h, this.param('b').variable);
      if (this.config.bias) y = tf.add(y, this.param('bias').variable);
      if (outs.length === 1) return lead.length === 1 ? y : tf.reshape(y, [...lead, outs[0] as number]);
      parts = tf.split<tf.Tensor2D>(y, outs, 1);
    }
    ctx.state.set(`skipcat:${this.config.group}`, { dataId: x.dataId, parts } satisfies GroupEntry);
    return lead.length === 1 ? (parts[0] as tf.Tensor) : tf.reshape(parts[0] as tf.Tensor, [...lead, outs[0] as number]);
  }

  /** Drops the dense-A cache (call after changing the 'a' parameter in place). */
  refresh(): void {
    this.denseA?.dispose();
    this.denseA = null;
  }

  override flops(x: tf.Tensor): FlopCount {
    const { inFeatures: n, rank: r, skip } = this.config;
    const T = x.size / n;
    const dA = this.config.inference === 'dense-a' || (this.config.inference === 'auto' && T <= AUTO_DENSE_A_ROWS);
    const aRows = skip && !dA ? n - r : n;
    const fwd = 2 * T * aRows * r + (skip && !dA && aRows > 0 ? T * r : 0) + 2 * T * r * this.totalOut + (this.config.bias ? T * this.totalOut : 0);
    return { forward: fwd, backward: 2 * fwd };
  }

  override dispose(): void {
    for (const e of this.indexCache.values()) {
      e.keep.dispose();
      e.rest?.dispose();
    }
    this.indexCache.clear();
    this.refresh();
    super.dispose();
  }
}

/**
 * A member of a Cat group other than its head (kind 'skipcat.slice', no parameters): returns its
 * part of the head's stacked output, which the head left in `ctx.state` for the same input tensor.
 */
export class CatSlice extends Module<tf.Tensor, tf.Tensor, SliceConfig> {
  readonly kind = 'skipcat.slice';

  constructor(config: SliceConfig) {
    const cfg = { ...config } as JsonObject;
    const group = cfg['group'];
    if (typeof group !== 'string' || !group) throw new ConfigError(`skipcat.slice: expected config.group to be a non-empty string, found ${JSON.stringify(group)}`);
    super({ group, index: checkInt('skipcat.slice', cfg, 'index', 1), inFeatures: checkInt('skipcat.slice', cfg, 'inFeatures', 1), outFeatures: checkInt('skipcat.slice', cfg, 'outFeatures', 1) });
  }

  forward(x: tf.Tensor, ctx: RunContext): tf.Tensor {
    const { group, index, inFeatures, outFeatures } = this.config;
    if (x.shape[x.rank - 1] !== inFeatures) throw new ConfigError(`skipcat.slice: expected input [..., ${inFeatures}], found [${x.shape.join(', ')}]`);
    const e = ctx.state.get<GroupEntry>(`skipcat:${group}`);
    if (!e || e.dataId !== x.dataId) {
      throw new ConfigError(
        `skipcat.slice (group '${group}', member ${index}): expected its group head (the 'skipcat.cat' module) to have run first on the same input tensor in this RunContext; ` +
          (e ? 'found a result for a different input (cross-attention or a copied input cannot share a Cat group)' : 'found no result'),
      );
    }
    const part = e.parts[index];
    if (!part || part.isDisposed) throw new ConfigError(`skipcat.slice (group '${group}', member ${index}): the head's output was already disposed (call the members inside the same tf.tidy as the head)`);
    return x.rank === 2 ? part : tf.reshape(part, [...x.shape.slice(0, -1), outFeatures]);
  }

  override flops(): FlopCount {
    return { forward: 0, backward: 0 };
  }
}

/** Registers 'skipcat.linear', 'skipcat.cat' and 'skipcat.slice'. */
export function registerSkipcatKinds(reg: ModuleRegistry): void {
  reg.register('skipcat.linear', linearFactory);
  reg.register('skipcat.cat', linearFactory);
  reg.register('skipcat.slice', sliceFactory);
}

function linearFactory(cfg: JsonObject): LowRankLinear {
  return new LowRankLinear(parseLowRankConfig('skipcat.linear', cfg));
}
function sliceFactory(cfg: JsonObject): CatSlice {
  return new CatSlice(cfg as SliceConfig);
}

/**
 * Dense reference of a factorised unit: the [in, Σout] matrix Ẽ with y = x·Ẽ (+ bias), in the
 * coordinates the module reads and writes (a permuted input or output stays permuted). Float64.
 */
export function denseEquivalent(m: LowRankLinear): { weight: Float64Array; rows: number; cols: number; bias: Float64Array | null } {
  const { inFeatures: n, rank: r, skip } = m.config;
  const M = m.totalOut;
  const b = Float64Array.from(m.param('b').variable.dataSync());
  const aP = m.params.get('a');
  const a = aP ? Float64Array.from(aP.variable.dataSync()) : new Float64Array(0);
  const out = new Float64Array(n * M);
  const addRow = (target: number, coef: ArrayLike<number> | null, unit: number): void => {
    for (let j = 0; j < r; j++) {
      const c = coef ? (coef[j] as number) : j === unit ? 1 : 0;
      if (c === 0) continue;
      for (let o = 0; o < M; o++) out[target * M + o] = (out[target * M + o] as number) + c * (b[j * M + o] as number);
    }
  };
  if (!skip) {
    for (let i = 0; i < n; i++) addRow(i, a.subarray(i * r, (i + 1) * r), -1);
  } else {
    const keepPos = skip.inputPermuted ? Array.from({ length: r }, (_, j) => j) : skip.keep;
    const restPos = skip.inputPermuted ? Array.from({ length: n - r }, (_, j) => r + j) : skip.rest;
    for (let j = 0; j < r; j++) addRow(keepPos[j] as number, null, j);
    for (let i = 0; i < n - r; i++) addRow(restPos[i] as number, a.subarray(i * r, (i + 1) * r), -1);
  }
  const bias = m.config.bias ? Float64Array.from(m.param('bias').variable.dataSync()) : null;
  return { weight: out, rows: n, cols: M, bias };
}

/**
 * The "dense-A" form of a Skip unit's input factor: Ã [in, r] with h = x·Ã (rows keep[j] = e_j,
 * rows rest[i] = A′ᵀ[i]). One matMul instead of gathers; for tests and comparisons.
 */
export function denseInputFactor(m: LowRankLinear): tf.Tensor2D {
  const { inFeatures: n, rank: r, skip } = m.config;
  if (!skip) return tf.clone(m.param('a').variable) as tf.Tensor2D;
  const aP = m.params.get('a');
  const a = aP ? aP.variable.dataSync() : new Float32Array(0);
  const out = new Float32Array(n * r);
  const keepPos = skip.inputPermuted ? Array.from({ length: r }, (_, j) => j) : skip.keep;
  const restPos = skip.inputPermuted ? Array.from({ length: n - r }, (_, j) => r + j) : skip.rest;
  for (let j = 0; j < r; j++) out[(keepPos[j] as number) * r + j] = 1;
  for (let i = 0; i < n - r; i++) out.set(a.subarray(i * r, (i + 1) * r), (restPos[i] as number) * r);
  return tf.tensor2d(out, [n, r]);
}
