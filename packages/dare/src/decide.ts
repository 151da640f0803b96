/**
 * DARE's decision logic, free of tensors: query drift, eligibility (forced refreshes) and the reuse set
 * (threshold or budget), per sequence. dare.md §2 steps 2–3.
 */
import { ConfigError } from '@leanpass/core';

export type DriftMetric = 'cosine' | 'relL2';

/**
 * Drift of a query against its reference, in Float64: `cosine` δ = max(0, 1 − cos(q, q̄)),
 * `relL2` δ = ‖q − q̄‖ / ‖q̄‖. Vectors of `dim` values at offsets `qOff` and `rOff`. Zero vectors:
 * cosine gives 0 when both are zero and 1 otherwise; relL2 gives 0 for equal vectors and +∞ for a zero
 * reference otherwise.
 */
export function queryDrift(q: ArrayLike<number>, qOff: number, ref: ArrayLike<number>, rOff: number, dim: number, metric: DriftMetric): number {
  if (metric === 'cosine') {
    let dot = 0;
    let nq = 0;
    let nr = 0;
    for (let j = 0; j < dim; j++) {
      const a = q[qOff + j] as number;
      const b = ref[rOff + j] as number;
      dot += a * b;
      nq += a * a;
      nr += b * b;
    }
    if (nq === 0 || nr === 0) return nq === nr ? 0 : 1;
    const d = 1 - dot / Math.sqrt(nq * nr);
    return d > 0 ? d : 0;
  }
  let diff = 0;
  let nr = 0;
  for (let j = 0; j < dim; j++) {
    const a = q[qOff + j] as number;
    const b = ref[rOff + j] as number;
    diff += (a - b) * (a - b);
    nr += b * b;
  }
  if (nr === 0) return diff === 0 ? 0 : Infinity;
  return Math.sqrt(diff / nr);
}

/** Threshold (reuse iff δ < τ; τ = 0 reuses nothing) or budget (the ⌊ρ·|A|⌋ eligible rows of least drift). */
export type Decision = { kind: 'threshold'; tau: number } | { kind: 'budget'; rho: number };

/** Whether a decision can reuse anything at all (τ > 0 or ρ > 0). */
export function canReuse(d: Decision): boolean {
  return d.kind === 'threshold' ? d.tau > 0 : d.rho > 0;
}

export function checkDecision(d: Decision): void {
  if (d.kind === 'threshold' && !(d.tau >= 0)) throw new ConfigError(`dare: expected a threshold τ in [0, ∞], found ${d.tau}`);
  if (d.kind === 'budget' && !(d.rho >= 0 && d.rho <= 1)) throw new ConfigError(`dare: expected a budget ρ in [0, 1], found ${d.rho}`);
}

/**
 * The reuse set of one sequence's active rows. `drift[i]` is row i's drift (ignored where not
 * eligible), `eligible[i]` = has a cache entry and no forced refresh, `counted[i]` = the row belongs to
 * the active set A (real tokens; left padding is not counted and never changes the others' decision).
 * Budget mode reuses the ⌊ρ·|A|⌋ eligible counted rows of least drift (ties: lower index first).
 * Returns 1 for reused rows; uncounted rows are never marked here (the caller decides for them).
 */
export function reuseSet(drift: ArrayLike<number>, eligible: ArrayLike<number>, counted: ArrayLike<number>, d: Decision): Uint8Array {
  const n = drift.length;
  const out = new Uint8Array(n);
  if (!canReuse(d)) return out;
  if (d.kind === 'threshold') {
    for (let i = 0; i < n; i++) if (eligible[i] && counted[i] && (drift[i] as number) < d.tau) out[i] = 1;
    return out;
  }
  let active = 0;
  const cand: number[] = [];
  for (let i = 0; i < n; i++) {
    if (!counted[i]) continue;
    active++;
    if (eligible[i]) cand.push(i);
  }
  const k = Math.min(cand.length, Math.floor(d.rho * active));
  if (k === 0) return out;
  cand.sort((a, b) => {
    const da = drift[a] as number;
    const db = drift[b] as number;
    return da < db ? -1 : da > db ? 1 : a - b;
  });
  for (let i = 0; i < k; i++) out[cand[i] as number] = 1;
  return out;
}

/** What forces a refresh (dare.md knob `forceRefresh`). */
export interface ForceRefresh {
  /** Every row at the first forward of a block. */
  blockStart: boolean;
  /** Rows whose input id changed since their reference (just unmasked). */
  changedIds: boolean;
  /** Rows refreshed more than this many forwards ago; null = never. */
  maxStaleness: number | null;
  /**
   * Still-masked rows (id = the [MASK] id) inside the current block. Meant for DARE-O only: a masked row's
   * input (and so its query and K/V) does not move when a neighbour is unmasked, but its attention output
   * does, because the neighbour's key and value changed.
   */
  maskedInBlock: boolean;
  /**
   * DARE-O only, key-change-aware: refresh a reused row whose attention (head-averaged, from its last
   * computation) put at least this mass on keys whose input moved since then (rows refreshed for a changed
   * id, for drift, or at a block start). null = off.
   */
  changedKeyMass: number | null;
}

/** Per-layer, per-mechanism bookkeeping for one generation (B sequences × L canvas positions). */
export interface MechanismState {
  /** Reference query of every canvas position, token-major [B·L·dq]. */
  qRef: Float32Array;
  /** 1 where the position has a cache entry (and a reference). */
  has: Uint8Array;
  /** NFE index of the last refresh. */
  lastRefresh: Int32Array;
  /** Input id at the last refresh. */
  idAtRefresh: Int32Array;
}

export function newMechanismState(rows: number, dq: number): MechanismState {
  return { qRef: new Float32Array(rows * dq), has: new Uint8Array(rows), lastRefresh: new Int32Array(rows), idAtRefresh: new Int32Array(rows) };
}

export interface DecideArgs {
  /** Queries of the window rows, token-major [B·N·dq] (RoPE applied or not: drift does not depend on it). */
  q: Float32Array;
  dq: number;
  batch: number;
  length: number;
  window: { start: number; end: number };
  /** Canvas ids [B·L]. */
  ids: Int32Array;
  /** Left padding per sequence. */
  pad: Int32Array;
  nfe: number;
  blockStart: boolean;
  metric: DriftMetric;
  decision: Decision;
  force: ForceRefresh;
  /** Canvas positions [start, end) of the current block (needed by `force.maskedInBlock`). */
  blockRange?: { start: number; end: number };
  /** The [MASK] id (needed by `force.maskedInBlock`). */
  maskId?: number | null;
}

export interface DecideResult {
  /** 1 = reuse, per window row [B·N] (b-major). */
  reuse: Uint8Array;
  /** Drift per window row (NaN where there was no reference). */
  drift: Float64Array;
  /** Counted (real-token) rows reused / recomputed, and the size of A. */
  reused: number;
  recomputed: number;
  active: number;
}

/**
 * Decides, for every window row, whether this mechanism reuses its cached row. Real tokens (right of the
 * sequence's padding) form A; pad rows are reused whenever they have an entry and the decision can reuse
 * at all (their keys are masked and their outputs unused), and are not counted.
 */
export function decide(st: MechanismState, a: DecideArgs): DecideResult {
  const { batch: B, length: L, window, dq } = a;
  const N = window.end - window.start;
  const reuse = new Uint8Array(B * N);
  const drift = new Float64Array(B * N).fill(NaN);
  const any = canReuse(a.decision);
  let reused = 0;
  let active = 0;
  const eligible = new Uint8Array(N);
  const counted = new Uint8Array(N);
  const dr = new Float64Array(N);
  const maskedRule = a.force.maskedInBlock;
  if (maskedRule && (a.maskId === undefined || a.maskId === null || !a.blockRange)) {
    throw new ConfigError(`dare: forceRefresh.maskedInBlock needs the [MASK] id and the block range, found maskId ${String(a.maskId)} and block range ${a.blockRange ? `[${a.blockRange.start}, ${a.blockRange.end})` : 'none'}`);
  }
  const blk = a.blockRange ?? { start: 0, end: 0 };
  for (let b = 0; b < B; b++) {
    const pad = a.pad[b] as number;
    eligible.fill(0);
    for (let n = 0; n < N; n++) {
      const pos = window.start + n;
      const row = b * L + pos;
      counted[n] = pos >= pad ? 1 : 0;
      active += counted[n] as number;
      if (!st.has[row]) continue;
      const d = queryDrift(a.q, (b * N + n) * dq, st.qRef, row * dq, dq, a.metric);
      dr[n] = d;
      drift[b * N + n] = d;
      let ok = !(a.force.blockStart && a.blockStart);
      if (ok && a.force.changedIds && a.ids[row] !== st.idAtRefresh[row]) ok = false;
      if (ok && a.force.maxStaleness !== null && a.nfe - (st.lastRefresh[row] as number) > a.force.maxStaleness) ok = false;
      if (ok && maskedRule && pos >= blk.start && pos < blk.end && a.ids[row] === a.maskId) ok = false;
      eligible[n] = ok ? 1 : 0;
    }
    const set = reuseSet(dr, eligible, counted, a.decision);
    for (let n = 0; n < N; n++) {
      const r = counted[n] ? set[n] : any && eligible[n] ? 1 : 0;
      reuse[b * N + n] = r as number;
      if (counted[n] && r) reused++;
    }
  }
  return { reuse, drift, reused, recomputed: active - reused, active };
}

/**
 * Updates the bookkeeping after a forward: recomputed rows take the current query as reference (and the
 * current id and step); with `previous` every window row takes the current query.
 */
export function commit(st: MechanismState, a: Pick<DecideArgs, 'q' | 'dq' | 'batch' | 'length' | 'window' | 'ids' | 'nfe'>, reuse: Uint8Array, reference: 'anchor' | 'previous'): void {
  const { batch: B, length: L, window, dq } = a;
  const N = window.end - window.start;
  for (let b = 0; b < B; b++) {
    for (let n = 0; n < N; n++) {
      const row = b * L + window.start + n;
      const i = b * N + n;
      const fresh = !reuse[i];
      if (fresh || reference === 'previous') st.qRef.set(a.q.subarray(i * dq, (i + 1) * dq), row * dq);
      if (fresh) {
        st.has[row] = 1;
        st.lastRefresh[row] = a.nfe;
        st.idAtRefresh[row] = a.ids[row] as number;
      }
    }
  }
}

/**
 * Token-major [B·N·H·d] copy of queries laid out [B, H, N, d] (as `projectQRows` returns them), so that a
 * token's query over all heads is one contiguous vector.
 */
export function tokenMajor(q: Float32Array, B: number, H: number, N: number, d: number): Float32Array {
  const out = new Float32Array(q.length);
  const dq = H * d;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let n = 0; n < N; n++) {
        const src = ((b * H + h) * N + n) * d;
        const dst = (b * N + n) * dq + h * d;
        for (let j = 0; j < d; j++) out[dst + j] = q[src + j] as number;
      }
    }
  }
  return out;
}

/** What the key-change-aware rule (`forceRefresh.changedKeyMass`) keeps per layer for one generation. */
export interface KeyMassState {
  /** Head-averaged attention probabilities of every row over the canvas keys at its last O computation [B·L·L]. */
  attn: Float32Array;
  /** 1 where `attn` holds a row. */
  hasAttn: Uint8Array;
  /** NFE at which each position's key last moved (its input changed); −1 = never since its first computation. */
  keyMovedAt: Int32Array;
}

export function newKeyMassState(batch: number, length: number): KeyMassState {
  return { attn: new Float32Array(batch * length * length), hasAttn: new Uint8Array(batch * length), keyMovedAt: new Int32Array(batch * length).fill(-1) };
}

/**
 * The key-change-aware refresh of DARE-O (dare.md §6: "low reuse on just-unmasked tokens and their masked
 * neighbours"). A row's attention output changes when the keys it attends to change, even when its own
 * query does not. `moved[i]` (window rows, b-major) marks the rows whose input moved this forward; a reused
 * counted row i is switched to recompute when the attention mass it put (at its last O computation,
 * `lastRefresh`) on keys that moved since then — this forward included — reaches `theta`. Rows without a
 * recorded attention row are refreshed. Updates `res` in place (reuse, reused, recomputed) and then stamps
 * the moved keys with `nfe`. Returns the number of rows switched.
 */
export function applyKeyMass(res: DecideResult, km: KeyMassState, lastRefresh: Int32Array, moved: Uint8Array, a: Pick<DecideArgs, 'batch' | 'length' | 'window' | 'pad' | 'nfe'>, theta: number): number {
  const { batch: B, length: L, window } = a;
  const N = window.end - window.start;
  let switched = 0;
  for (let b = 0; b < B; b++) {
    const pad = a.pad[b] as number;
    for (let n = 0; n < N; n++) {
      const i = b * N + n;
      const pos = window.start + n;
      if (!res.reuse[i] || pos < pad) continue;
      const row = b * L + pos;
      let mass = 0;
      if (km.hasAttn[row]) {
        const since = lastRefresh[row] as number;
        const off = row * L;
        for (let j = pad; j < L; j++) {
          const inWin = j >= window.start && j < window.end;
          const movedNow = inWin && moved[b * N + (j - window.start)] === 1;
          if (movedNow || (km.keyMovedAt[b * L + j] as number) > since) mass += km.attn[off + j] as number;
        }
      } else mass = Infinity;
      if (mass >= theta) {
        res.reuse[i] = 0;
        res.reused--;
        res.recomputed++;
        switched++;
      }
    }
  }
  for (let b = 0; b < B; b++) for (let n = 0; n < N; n++) if (moved[b * N + n]) km.keyMovedAt[b * L + window.start + n] = a.nfe;
  return switched;
}
