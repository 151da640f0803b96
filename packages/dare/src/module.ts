import * as tf from '@tensorflow/tfjs';
import { ConfigError, Module, Rng, type AnyModule, type FlopCount, type InitContext, type JsonObject, type ModuleRegistry, type RunContext } from '@leanpass/core';
import { CanvasAttention, getKVStore, setKVStore, type CanvasAttentionConfig, type CanvasAttentionInput, type CanvasStep, type KV } from '@leanpass/nn';
import { applyKeyMass, commit, decide, newKeyMassState, newMechanismState, tokenMajor, type DecideArgs, type DecideResult, type KeyMassState, type MechanismState } from './decide.js';
import { DARE_KIND, decisionOf, forceOf, parseSettings, usesKV, usesO, type DareSettings, type DareSettingsInput } from './options.js';
import { recordStep } from './stats.js';

/** Config of a 'dare.attention': the replaced canvas attention's config plus DARE's knobs. */
export interface DareAttentionConfig extends JsonObject {
  dim: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  ropeBase: number;
  /** The host's [MASK] id (for `forceRefresh.maskedInBlock`); null when unknown. The pass reads it from the model. */
  maskId: number | null;
  dare: DareSettings;
}

const PROJ = ['q', 'k', 'v', 'o'] as const;

/** Per-generation, per-layer state (in `ctx.state` under `dare.L<layer>`). */
interface LayerState {
  batch: number;
  length: number;
  dq: number;
  kv: MechanismState;
  o: MechanismState;
  /** DARE-O cache [B, L, C] (C = heads·d pre-W_o, dim post-W_o), or null before the first write. */
  oCache: tf.Tensor | null;
  /** The last forward's decisions (1 = reused) per window row [B·N], for inspection and tests. */
  lastKv: Uint8Array | null;
  lastO: Uint8Array | null;
  /** The key-change-aware rule's attention rows and key stamps (created when `forceRefresh.changedKeyMass` is on). */
  km: KeyMassState | null;
}

/** Head-averaged attention probabilities softmax(q·kᵀ/√d + mask) of q [B, H, M, d] over k [B, Hk, L, d] → [B, M, L]. */
function headMeanProbs(q: tf.Tensor, k: tf.Tensor, keyMask: tf.Tensor | null): tf.Tensor {
  const [B, H, M, d] = q.shape as [number, number, number, number];
  const [, Hk, L] = k.shape as [number, number, number, number];
  // Head h attends with K/V head ⌊h / (H/Hk)⌋ (scaledDotProductAttention's grouping).
  const qg = tf.reshape(tf.mul(q, 1 / Math.sqrt(d)), [B, Hk, (H / Hk) * M, d]);
  let scores = tf.reshape(tf.matMul(qg, k, false, true), [B, H, M, L]);
  if (keyMask) scores = tf.add(scores, keyMask);
  return tf.mean(tf.softmax(scores), 1);
}

/** The decisions of a layer's last forward in this generation (1 = reused, per window row b·N + n; null when the mechanism is off or computed everything). */
export function lastDecisions(ctx: RunContext, layer: number): { kv: Uint8Array | null; o: Uint8Array | null } {
  const st = ctx.state.get<LayerState>(layerStateKey(layer));
  return { kv: st?.lastKv ? st.lastKv.slice() : null, o: st?.lastO ? st.lastO.slice() : null };
}

/**
 * tensorScatterUpdate that never writes into its input: tfjs-backend-cpu 4.22's kernel scatters into the
 * input tensor's own buffer (and so into every tensor sharing it), so on cpu the input is copied first.
 */
export function scatterRows(t: tf.Tensor, indices: tf.Tensor, updates: tf.Tensor): tf.Tensor {
  return tf.tensorScatterUpdate(tf.getBackend() === 'cpu' ? tf.mul(t, 1) : t, indices, updates);
}

/** The state key prefix of one layer's DARE state in the generation's store. */
export function layerStateKey(layer: number): string {
  return `dare.L${layer}`;
}

/**
 * DARE attention (kind 'dare.attention'): a 'canvas-attention' whose K/V rows (DARE-KV) and/or attention
 * output rows (DARE-O) are reused across sampler steps for tokens whose query barely moved (dare.md §2).
 * Keeps the replaced module's Linear children q, k, v, o (the same objects) and its config.
 *
 * Outside a sampler step (no `input.step` or no K/V store: training, single forwards) it is exactly
 * CanvasAttention. In a step: Q for every window row (same ops as CanvasAttention), the drift of each
 * row's query against its reference, the reuse sets, then
 * - K/V: the recompute rows are gathered (gatherND), projected compactly (`projectKVGathered`) and
 *   scattered into the canvas K/V store (tensorScatterUpdate); reused rows keep their stored K/V;
 * - O: attention only for each sequence's recompute query rows, scattered into the O cache (pre- or
 *   post-W_o); reused rows take the cached row.
 * When nothing is reused the dense CanvasAttention ops run unchanged, so τ = 0 is bit-identical.
 * All state (references, refresh steps and ids, the O cache, statistics) lives in `ctx.state`.
 */
export class DareAttention extends Module<CanvasAttentionInput, tf.Tensor, DareAttentionConfig> {
  readonly kind = DARE_KIND;
  /** CanvasAttention's steps, run on this module's own children (kept in sync before every call). */
  private readonly ops: CanvasAttention;

  /**
   * `children`: the Linear q, k, v, o to adopt (moved from the replaced module). Without them fresh ones
   * are made (the registry's factory, before weights are loaded).
   */
  constructor(config: { dim: number; heads: number; kvHeads?: number; headDim?: number; ropeBase?: number; maskId?: number | null; dare?: DareSettingsInput | DareSettings }, init: InitContext, children?: Partial<Record<(typeof PROJ)[number], AnyModule>>) {
    const base = { dim: config.dim, heads: config.heads, kvHeads: config.kvHeads, headDim: config.headDim, ropeBase: config.ropeBase };
    const ops = new CanvasAttention(Object.fromEntries(Object.entries(base).filter(([, v]) => v !== undefined)) as { dim: number; heads: number }, children ? { rng: new Rng(0) } : init);
    const c = ops.config;
    if (config.maskId !== undefined && config.maskId !== null && !(Number.isInteger(config.maskId) && config.maskId >= 0)) {
      throw new ConfigError(`${DARE_KIND}: expected maskId to be a non-negative integer token id or null, found ${String(config.maskId)}`);
    }
    super({ dim: c.dim, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim, ropeBase: c.ropeBase, maskId: config.maskId ?? null, dare: parseSettings(config.dare ?? {}) });
    this.ops = ops;
    for (const name of PROJ) {
      const given = children?.[name];
      if (given) ops.setChild(name, given).dispose();
      this.addChild(name, ops.child(name));
    }
  }

  /** The knobs (a copy). */
  get settings(): DareSettings {
    return { ...this.config.dare, forceRefresh: { ...this.config.dare.forceRefresh } };
  }

  /** The host's [MASK] id used by `forceRefresh.maskedInBlock` (null: unknown). */
  get maskId(): number | null {
    return this.config.maskId;
  }

  /** Changes knobs in place (e.g. the threshold found by `calibrateThreshold`); validated. */
  updateSettings(patch: DareSettingsInput): void {
    this.config.dare = parseSettings({ ...this.config.dare, ...patch, forceRefresh: { ...this.config.dare.forceRefresh, ...(patch.forceRefresh ?? {}) } });
  }

  private sync(): void {
    for (const name of PROJ) {
      const mine = this.child(name);
      if (this.ops.child(name) !== mine) this.ops.setChild(name, mine);
    }
  }

  forward(input: CanvasAttentionInput, ctx: RunContext): tf.Tensor {
    this.sync();
    const step = input.step;
    if (!step || input.store === undefined) return this.ops.forward(input, ctx);
    return this.stepForward(input, step, input.store, ctx);
  }

  /** Outside sampler steps the canvas attention's cost; in a step the forward records its own (reuse-dependent) cost. */
  override flops(input: CanvasAttentionInput): FlopCount | undefined {
    return input.step && input.store !== undefined ? undefined : this.ops.flops(input);
  }

  private layerState(ctx: RunContext, layer: number, B: number, L: number, dq: number): LayerState {
    const key = layerStateKey(layer);
    const st = ctx.state.get<LayerState>(key);
    if (st) {
      if (st.batch !== B || st.length !== L || st.dq !== dq) {
        throw new ConfigError(`${DARE_KIND} (layer ${layer}): the generation's state holds ${st.batch} sequences × ${st.length} positions, this forward has ${B} × ${L}; use a fresh state store per generation`);
      }
      return st;
    }
    const fresh: LayerState = { batch: B, length: L, dq, kv: newMechanismState(B * L, dq), o: newMechanismState(B * L, dq), oCache: null, lastKv: null, lastO: null, km: null };
    ctx.state.set(key, fresh);
    ctx.state.onDispose(() => {
      fresh.oCache?.dispose();
      fresh.oCache = null;
    });
    return fresh;
  }

  private stepForward(input: CanvasAttentionInput, step: CanvasStep, store: string, ctx: RunContext): tf.Tensor {
    const { x, window, length: L, positions, keyMask } = input;
    const { heads: H, headDim: d, kvHeads: Hk, dim } = this.config;
    const s = this.config.dare;
    const B = x.shape[0];
    const N = window.end - window.start;
    if (!Number.isInteger(L) || window.start < 0 || window.end > L || N < 1) {
      throw new ConfigError(`${DARE_KIND}: expected a window [start, end) inside [0, ${L}), found [${window.start}, ${window.end})`);
    }
    if (step.batch !== B || step.length !== L || step.ids.length !== B * L || step.pad.length !== B) {
      throw new ConfigError(`${DARE_KIND}: expected the sampler step for ${B} sequences × ${L} positions (ids [${B * L}], pad [${B}]), found batch ${step.batch}, length ${step.length}, ids [${step.ids.length}], pad [${step.pad.length}]`);
    }
    const dq = H * d;
    const st = this.layerState(ctx, input.layer, B, L, dq);
    const ops = this.ops;
    const oLin = this.child('o');
    const kvOn = usesKV(s.mode);
    const oOn = usesO(s.mode);
    const decision = decisionOf(s);
    const force = forceOf(s);

    return tf.tidy(() => {
      const q = ops.projectQRows(x, positions, window, ctx);
      const qTok = tokenMajor(q.dataSync() as Float32Array, B, H, N, d);
      const args: DecideArgs = { q: qTok, dq, batch: B, length: L, window, ids: step.ids, pad: step.pad, nfe: step.nfe, blockStart: step.blockStart, metric: s.metric, decision, force: { ...force, maskedInBlock: false } };
      // The masked-row rule is DARE-O's: a masked row's K/V depend only on its own (unchanged) input.
      const argsO: DecideArgs = { ...args, force, blockRange: step.blockRange, maskId: this.config.maskId };
      if (oOn && force.maskedInBlock && this.config.maskId === null) {
        throw new ConfigError(`${DARE_KIND} (layer ${input.layer}): forceRefresh.maskedInBlock needs the host's [MASK] id, found none (apply the pass to a 'dllm' model, pass maskId to the constructor, or set forceRefresh.maskedInBlock: false)`);
      }
      const prevStore = getKVStore(ctx, store);
      const dKv: DecideResult | null = kvOn && prevStore ? decide(st.kv, args) : null;
      const dO: DecideResult | null = oOn && st.oCache ? decide(st.o, argsO) : null;
      const theta = oOn ? force.changedKeyMass : null;
      if (theta !== null) {
        st.km ??= newKeyMassState(B, L);
        if (dO) {
          // Keys that moved this forward: rows a decision with only the block-start and changed-id refreshes recomputes.
          const movedKeys = decide(st.o, { ...argsO, force: { ...force, maskedInBlock: false, maxStaleness: null, changedKeyMass: null } }).reuse.map((r) => 1 - r);
          applyKeyMass(dO, st.km, st.o.lastRefresh, movedKeys, { batch: B, length: L, window, pad: step.pad, nfe: step.nfe }, theta);
        }
      }
      const kvReuse = dKv?.reuse.some((r) => r === 1) ?? false;
      const oReuse = dO?.reuse.some((r) => r === 1) ?? false;

      // ---- keys and values
      let kv: KV;
      let kvRows = B * N;
      if (kvReuse && dKv && prevStore) {
        const rows: number[] = [];
        dKv.reuse.forEach((r, i) => {
          if (!r) rows.push(i);
        });
        kvRows = rows.length;
        kv = rows.length === 0 ? prevStore : this.writeKVSubset(ctx, store, x, rows, window, positions, N, prevStore);
      } else {
        const fresh = ops.projectKVRows(x, positions, window, ctx);
        kv = ops.writeRows(ctx, store, window.start, fresh, L);
      }

      // ---- attention and output projection
      let out: tf.Tensor;
      let qRows = B * N;
      let oRows = B * N;
      const C = s.oCachePoint === 'preWo' ? dq : dim;
      if (oReuse && dO && st.oCache) {
        const perSeq: number[][] = Array.from({ length: B }, () => []);
        dO.reuse.forEach((r, i) => {
          if (!r) (perSeq[Math.floor(i / N)] as number[]).push(i % N);
        });
        // One attention call for all sequences: each sequence's recompute query rows, padded to the
        // largest count M by repeating one of its rows (rows are independent; the padding is dropped).
        const M = Math.max(...perSeq.map((r) => r.length));
        const cacheIdx: number[] = [];
        const valid: number[] = [];
        let upd: tf.Tensor | null = null;
        if (M > 0) {
          const qIdx = new Int32Array(B * H * M * 3);
          let p = 0;
          for (let b = 0; b < B; b++) {
            const rows = perSeq[b] as number[];
            for (let h = 0; h < H; h++) {
              for (let j = 0; j < M; j++) {
                qIdx[p++] = b;
                qIdx[p++] = h;
                qIdx[p++] = rows.length ? (rows[Math.min(j, rows.length - 1)] as number) : 0;
              }
            }
            rows.forEach((n, j) => {
              cacheIdx.push(b, window.start + n);
              valid.push(b * M + j);
            });
          }
          const qs = tf.reshape(tf.gatherND(q, tf.tensor2d(qIdx, [B * H * M, 3], 'int32')), [B, H, M, d]);
          const all = tf.reshape(ops.attendAll(qs, kv, keyMask), [B * M, dq]);
          if (st.km && theta !== null) this.recordAttn(st.km, headMeanProbs(qs, kv.k, keyMask), perSeq, M, window.start, L);
          upd = valid.length === B * M ? all : tf.gatherND(all, tf.tensor2d(Int32Array.from(valid), [valid.length, 1], 'int32'));
        }
        qRows = cacheIdx.length / 2;
        if (upd && s.oCachePoint === 'postWo') upd = oLin.call(upd, ctx) as tf.Tensor;
        oRows = s.oCachePoint === 'postWo' ? qRows : B * N;
        const cache = upd ? scatterRows(st.oCache, tf.tensor2d(Int32Array.from(cacheIdx), [qRows, 2], 'int32'), upd) : st.oCache;
        this.setOCache(st, cache);
        const win = N === L ? cache : tf.slice(cache, [0, window.start, 0], [B, N, C]);
        out = s.oCachePoint === 'postWo' ? tf.reshape(win, [B, N, dim]) : (oLin.call(win, ctx) as tf.Tensor);
      } else {
        const merged = ops.attendAll(q, kv, keyMask);
        out = oLin.call(merged, ctx) as tf.Tensor;
        if (st.km && theta !== null) this.recordAttn(st.km, headMeanProbs(q, kv.k, keyMask), Array.from({ length: B }, () => Array.from({ length: N }, (_, n) => n)), N, window.start, L);
        if (oOn) this.writeOWindow(st, s.oCachePoint === 'preWo' ? merged : out, window, B, L, C);
      }

      st.lastKv = kvOn ? (dKv?.reuse ?? new Uint8Array(B * N)) : null;
      st.lastO = oOn ? (dO?.reuse ?? new Uint8Array(B * N)) : null;
      if (dKv) commit(st.kv, args, dKv.reuse, s.reference);
      else if (kvOn) commit(st.kv, args, new Uint8Array(B * N), s.reference);
      if (dO) commit(st.o, args, dO.reuse, s.reference);
      else if (oOn) commit(st.o, args, new Uint8Array(B * N), s.reference);

      let active = 0;
      let real = 0;
      for (let b = 0; b < B; b++) {
        const pad = step.pad[b] as number;
        active += Math.max(0, window.end - Math.max(window.start, pad));
        real += L - pad;
      }
      const count = (dr: DecideResult | null, on: boolean): { reused: number; recomputed: number } | null => (on ? { reused: dr?.reused ?? 0, recomputed: dr ? dr.recomputed : active } : null);
      recordStep(ctx, {
        layer: input.layer,
        nfe: step.nfe,
        block: step.block,
        stepInBlock: step.stepInBlock,
        blockStart: step.blockStart,
        active,
        outside: real - active,
        kv: count(dKv, kvOn),
        o: count(dO, oOn),
      });
      if (ctx.meter) {
        // Attention core (QKᵀ, softmax, PV) for the query rows computed, and RoPE on Q and the K rows computed.
        const scores = qRows * H * L;
        const rope = (B * N * H + kvRows * Hk) * d * (2 * d + 3);
        ctx.meter.record(this, { flops: 4 * scores * d + 5 * scores + qRows * H * d + rope, backwardFlops: 0, kvRows, attnRows: qRows, oRows });
      }
      return out;
    });
  }

  /** K/V of the recompute rows (window-relative flat indices b·N + n) projected compactly and scattered into the store. */
  private writeKVSubset(ctx: RunContext, store: string, x: tf.Tensor, rows: number[], window: { start: number; end: number }, positions: number[][], N: number, prev: KV): KV {
    const { dim, kvHeads: Hk, headDim: d } = this.config;
    const B = x.shape[0];
    const M = rows.length;
    const xc = tf.gatherND(tf.reshape(x, [B * N, dim]), tf.tensor2d(Int32Array.from(rows), [M, 1], 'int32'));
    // A SkipCat Cat group (q head, k/v slices) computes its members from the head's call on the same tensor.
    if (this.child('k').kind === 'skipcat.slice' || this.child('v').kind === 'skipcat.slice') this.child('q').call(xc, ctx);
    const pos = rows.map((i) => (positions[Math.floor(i / N)] as number[])[window.start + (i % N)] as number);
    const kvc = this.ops.projectKVGathered(xc, pos, ctx);
    // Scatter straight into [B, Hk, L, d] with (b, h, position) indices: no transposes of the store.
    const idx = new Int32Array(M * Hk * 3);
    let p = 0;
    for (const i of rows) {
      const b = Math.floor(i / N);
      const position = window.start + (i % N);
      for (let h = 0; h < Hk; h++) {
        idx[p++] = b;
        idx[p++] = h;
        idx[p++] = position;
      }
    }
    const indices = tf.tensor2d(idx, [M * Hk, 3], 'int32');
    const next: KV = {
      k: scatterRows(prev.k, indices, tf.reshape(kvc.k, [M * Hk, d])),
      v: scatterRows(prev.v, indices, tf.reshape(kvc.v, [M * Hk, d])),
    };
    setKVStore(ctx, store, next);
    return next;
  }

  private setOCache(st: LayerState, t: tf.Tensor): void {
    if (st.oCache === t) return;
    tf.keep(t);
    st.oCache?.dispose();
    st.oCache = t;
  }

  /** Stores the head-averaged attention rows [B, M, L] of each sequence's computed window rows `rows[b]` (window-relative). */
  private recordAttn(km: KeyMassState, probs: tf.Tensor, rows: number[][], M: number, start: number, L: number): void {
    const p = probs.dataSync() as Float32Array;
    rows.forEach((list, b) => {
      list.forEach((n, j) => {
        const row = b * L + start + n;
        km.attn.set(p.subarray((b * M + j) * L, (b * M + j + 1) * L), row * L);
        km.hasAttn[row] = 1;
      });
    });
  }

  /** Writes the window rows [B, N, C] into the O cache (creating it on first use). */
  private writeOWindow(st: LayerState, value: tf.Tensor, window: { start: number; end: number }, B: number, L: number, C: number): void {
    const N = window.end - window.start;
    const v3 = tf.reshape(value, [B, N, C]);
    let next: tf.Tensor;
    if (N === L) next = tf.clone(v3);
    else {
      const old = st.oCache ?? tf.zeros([B, L, C]);
      const parts: tf.Tensor[] = [];
      if (window.start > 0) parts.push(tf.slice(old, [0, 0, 0], [B, window.start, C]));
      parts.push(v3);
      if (window.end < L) parts.push(tf.slice(old, [0, window.end, 0], [B, L - window.end, C]));
      next = tf.concat(parts, 1);
    }
    this.setOCache(st, next);
  }
}

/** Registers 'dare.attention' (fresh children; weights come from the checkpoint). */
export function registerDareKinds(reg: ModuleRegistry): void {
  if (reg.has(DARE_KIND)) return;
  reg.register(DARE_KIND, (cfg: JsonObject, init: InitContext) => {
    const c = cfg as Partial<DareAttentionConfig>;
    if (typeof c.dim !== 'number' || typeof c.heads !== 'number') {
      throw new ConfigError(`${DARE_KIND}: expected a config {dim, heads, kvHeads, headDim, ropeBase, dare}, found ${JSON.stringify(cfg).slice(0, 120)}`);
    }
    return new DareAttention(c as DareAttentionConfig, init);
  });
}

/** The canvas attention config of a module (a 'canvas-attention' or a 'dare.attention'). */
export function canvasConfigOf(m: AnyModule): CanvasAttentionConfig {
  const c = m.config as Partial<CanvasAttentionConfig>;
  return { dim: c.dim as number, heads: c.heads as number, kvHeads: c.kvHeads as number, headDim: c.headDim as number, ropeBase: c.ropeBase as number };
}
