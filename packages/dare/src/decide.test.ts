import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, Rng, useBackend } from '@leanpass/core';
import { applyRope } from '@leanpass/nn';
import { applyKeyMass, checkDecision, commit, decide, newKeyMassState, newMechanismState, queryDrift, reuseSet, tokenMajor, type DecideArgs, type DecideResult } from './decide.js';
import { dareOptions, decisionOf, parseSettings } from './options.js';
import { summarizeDareStats, type DareStepRecord } from './stats.js';

beforeAll(async () => {
  await useBackend('cpu');
});

describe('query drift', () => {
  it('is 0 for identical vectors, scale-free under cosine, and matches the definitions', () => {
    const rng = new Rng(1);
    const a = Float32Array.from(rng.normalArray(16, 1));
    const b = Float32Array.from(rng.normalArray(16, 1));
    expect(queryDrift(a, 0, a, 0, 16, 'cosine')).toBeLessThan(1e-12);
    expect(queryDrift(a, 0, a, 0, 16, 'relL2')).toBe(0);
    const a3 = a.map((v) => 3 * v);
    expect(queryDrift(a3, 0, a, 0, 16, 'cosine')).toBeLessThan(1e-12);
    expect(queryDrift(a3, 0, a, 0, 16, 'relL2')).toBeCloseTo(2, 6);
    let dot = 0;
    let na = 0;
    let nb = 0;
    for (let i = 0; i < 16; i++) {
      dot += (a[i] as number) * (b[i] as number);
      na += (a[i] as number) ** 2;
      nb += (b[i] as number) ** 2;
    }
    expect(queryDrift(a, 0, b, 0, 16, 'cosine')).toBeCloseTo(1 - dot / Math.sqrt(na * nb), 12);
    expect(queryDrift(b.map((v) => -v), 0, b, 0, 16, 'cosine')).toBeCloseTo(2, 12);
    // Offsets address the vector inside a longer array.
    const both = new Float32Array(32);
    both.set(a, 16);
    expect(queryDrift(both, 16, b, 0, 16, 'relL2')).toBe(queryDrift(a, 0, b, 0, 16, 'relL2'));
  });

  it('is the same before and after RoPE at a shared position (identity 5), and not across positions', () => {
    const rng = new Rng(2);
    const [B, N, H, d] = [1, 6, 4, 8];
    const q = tf.tensor4d(rng.normalArray(B * N * H * d, 1), [B, N, H, d]);
    const ref = tf.add(q, tf.tensor4d(rng.normalArray(B * N * H * d, 0.3), [B, N, H, d]));
    const pos = [[3, 7, 11, 20, 41, 63]];
    const rq = applyRope(q, pos, 10000).dataSync() as Float32Array;
    const rr = applyRope(ref, pos, 10000).dataSync() as Float32Array;
    const shifted = applyRope(ref, [pos[0]!.map((p) => p + 1)], 10000).dataSync() as Float32Array;
    const pq = q.dataSync() as Float32Array;
    const pr = ref.dataSync() as Float32Array;
    let shiftGap = 0;
    for (let n = 0; n < N; n++) {
      for (const metric of ['cosine', 'relL2'] as const) {
        const pre = queryDrift(pq, n * H * d, pr, n * H * d, H * d, metric);
        const post = queryDrift(rq, n * H * d, rr, n * H * d, H * d, metric);
        expect(Math.abs(pre - post)).toBeLessThanOrEqual(1e-6);
        shiftGap = Math.max(shiftGap, Math.abs(queryDrift(rq, n * H * d, shifted, n * H * d, H * d, metric) - pre));
      }
    }
    // A reference rotated at another position gives a different drift: the invariance needs fixed positions.
    expect(shiftGap).toBeGreaterThan(1e-3);
    tf.dispose([q, ref]);
  });
});

describe('reuse sets', () => {
  const drift = [0.5, 0.001, 0.02, 0.001, 0.0, 0.3];
  const all = [1, 1, 1, 1, 1, 1];
  it('threshold: strict δ < τ among eligible counted rows; τ = 0 reuses nothing, τ = ∞ every eligible row', () => {
    expect([...reuseSet(drift, all, all, { kind: 'threshold', tau: 0.02 })]).toEqual([0, 1, 0, 1, 1, 0]);
    expect([...reuseSet(drift, all, all, { kind: 'threshold', tau: 0 })]).toEqual([0, 0, 0, 0, 0, 0]);
    expect([...reuseSet(drift, [1, 1, 0, 0, 1, 1], all, { kind: 'threshold', tau: Infinity })]).toEqual([1, 1, 0, 0, 1, 1]);
    expect([...reuseSet(drift, all, [1, 1, 1, 0, 1, 1], { kind: 'threshold', tau: 1 })]).toEqual([1, 1, 1, 0, 1, 1]);
  });
  it('budget: ⌊ρ·|A|⌋ eligible rows of least drift, ties to the lower position, never more than eligible', () => {
    expect([...reuseSet(drift, all, all, { kind: 'budget', rho: 0.5 })]).toEqual([0, 1, 0, 1, 1, 0]);
    expect([...reuseSet(drift, all, all, { kind: 'budget', rho: 2 / 6 })]).toEqual([0, 1, 0, 0, 1, 0]);
    expect([...reuseSet(drift, all, all, { kind: 'budget', rho: 0 })]).toEqual([0, 0, 0, 0, 0, 0]);
    expect([...reuseSet(drift, [0, 0, 1, 0, 0, 0], all, { kind: 'budget', rho: 1 })]).toEqual([0, 0, 1, 0, 0, 0]);
    // |A| counts only counted rows: 4 counted × 0.5 = 2.
    expect([...reuseSet(drift, all, [1, 0, 1, 0, 1, 1], { kind: 'budget', rho: 0.5 })]).toEqual([0, 0, 1, 0, 1, 0]);
  });
  it('rejects τ < 0 or NaN and ρ outside [0, 1], in code and in the options', () => {
    expect(() => checkDecision({ kind: 'threshold', tau: -1 })).toThrow(ConfigError);
    expect(() => checkDecision({ kind: 'threshold', tau: NaN })).toThrow(/threshold τ in \[0, ∞\], found NaN/);
    expect(() => checkDecision({ kind: 'budget', rho: 1.5 })).toThrow(/budget ρ in \[0, 1\], found 1.5/);
    expect(() => parseSettings({ threshold: -0.1 })).toThrow(/threshold: expected number ≥ 0, found -0.1/);
    expect(() => parseSettings({ threshold: NaN })).toThrow(ConfigError);
    expect(() => parseSettings({ budget: 1.2 })).toThrow(/budget: expected number ≤ 1, found 1.2/);
    expect(dareOptions.safeParse({ budget: -0.5 }).success).toBe(false);
    expect(decisionOf(parseSettings({ threshold: 'inf' }))).toEqual({ kind: 'threshold', tau: Infinity });
    expect(decisionOf(parseSettings({ decision: 'budget', budget: 0.25 }))).toEqual({ kind: 'budget', rho: 0.25 });
  });
});

describe('decide and commit', () => {
  const B = 2;
  const L = 5;
  const dq = 4;
  const base = (q: Float32Array, ids: Int32Array, nfe: number, extra: Partial<DecideArgs> = {}): DecideArgs => ({
    q,
    dq,
    batch: B,
    length: L,
    window: { start: 0, end: L },
    ids,
    pad: Int32Array.from([0, 1]),
    nfe,
    blockStart: false,
    metric: 'cosine',
    decision: { kind: 'threshold', tau: Infinity },
    force: { blockStart: true, changedIds: true, maxStaleness: null, maskedInBlock: false, changedKeyMass: null },
    ...extra,
  });
  const q0 = Float32Array.from(new Rng(4).normalArray(B * L * dq, 1));
  const ids0 = Int32Array.from([5, 6, 9, 9, 9, 0, 5, 9, 9, 9]);

  it('refreshes rows without an entry, at block start, just-unmasked rows and stale rows; pad rows are not counted', () => {
    const st = newMechanismState(B * L, dq);
    const first = decide(st, base(q0, ids0, 0));
    expect([...first.reuse]).toEqual(new Array(B * L).fill(0));
    expect(first.active).toBe(9);
    commit(st, base(q0, ids0, 0), first.reuse, 'anchor');

    const ids1 = ids0.slice();
    ids1[2] = 7; // sequence 0 position 2 unmasked
    ids1[L + 3] = 4; // sequence 1 position 3 unmasked
    const r1 = decide(st, base(q0, ids1, 1));
    // τ = ∞: everything eligible is reused, except the two just-unmasked rows; the pad row (1, 0) is reused uncounted.
    expect([...r1.reuse]).toEqual([1, 1, 0, 1, 1, 1, 1, 1, 0, 1]);
    expect(r1.reused).toBe(7);
    expect(r1.recomputed).toBe(2);
    expect(r1.reused + r1.recomputed).toBe(r1.active);
    commit(st, base(q0, ids1, 1), r1.reuse, 'anchor');
    expect(st.lastRefresh[2]).toBe(1);
    expect(st.idAtRefresh[2]).toBe(7);
    expect(st.lastRefresh[0]).toBe(0);

    expect([...decide(st, base(q0, ids1, 2, { blockStart: true })).reuse]).toEqual(new Array(B * L).fill(0));
    const stale = decide(st, base(q0, ids1, 3, { force: { blockStart: true, changedIds: true, maxStaleness: 2, maskedInBlock: false, changedKeyMass: null } }));
    // Rows refreshed at nfe 0 are 3 forwards old (> 2): refreshed; rows refreshed at nfe 1 are reused.
    expect([...stale.reuse]).toEqual([0, 0, 1, 0, 0, 0, 0, 0, 1, 0]);
    // Without the changed-id rule a just-unmasked row would be reused at τ = ∞.
    const ids2 = ids1.slice();
    ids2[4] = 3;
    expect(decide(st, base(q0, ids2, 2, { force: { blockStart: true, changedIds: false, maxStaleness: null, maskedInBlock: false, changedKeyMass: null } })).reuse[4]).toBe(1);
    expect(decide(st, base(q0, ids2, 2)).reuse[4]).toBe(0);
  });

  it('maskedInBlock refreshes exactly the still-masked rows of the current block (DARE-O), and needs the mask id', () => {
    const st = newMechanismState(B * L, dq);
    commit(st, base(q0, ids0, 0), new Uint8Array(B * L), 'anchor');
    // ids0: [5 6 9 9 9 | 0 5 9 9 9] with 9 as [MASK]; block [2, 4): positions 2, 3 (position 4 lies right of the block).
    const masked = { force: { blockStart: true, changedIds: true, maxStaleness: null, maskedInBlock: true, changedKeyMass: null }, maskId: 9, blockRange: { start: 2, end: 4 } };
    const r = decide(st, base(q0, ids0, 1, masked));
    expect([...r.reuse]).toEqual([1, 1, 0, 0, 1, 1, 1, 0, 0, 1]);
    expect(r.reused + r.recomputed).toBe(r.active);
    // Without the rule every row is eligible (τ = ∞ reuses them all).
    expect([...decide(st, base(q0, ids0, 1)).reuse]).toEqual(new Array(B * L).fill(1));
    // A committed row of the block is no longer masked: reused again (its id change was refreshed by commit).
    const ids1 = ids0.slice();
    ids1[2] = 7;
    commit(st, base(q0, ids1, 1), Uint8Array.from([1, 1, 0, 1, 1, 1, 1, 1, 1, 1]), 'anchor');
    expect([...decide(st, base(q0, ids1, 2, masked)).reuse]).toEqual([1, 1, 1, 0, 1, 1, 1, 0, 0, 1]);
    expect(() => decide(st, base(q0, ids1, 2, { ...masked, maskId: null }))).toThrow(/maskedInBlock needs the \[MASK\] id/);
  });

  it('changedKeyMass refreshes reused rows whose last attention put ≥ θ on keys that moved since, and stamps the moved keys', () => {
    // One sequence of 4 positions, window = canvas; rows last refreshed at nfe 0, except row 3 at nfe 2.
    const a = { batch: 1, length: 4, window: { start: 0, end: 4 }, pad: Int32Array.from([0]), nfe: 3 };
    const km = newKeyMassState(1, 4);
    km.attn.set([0.7, 0.1, 0.1, 0.1, 0.25, 0.25, 0.25, 0.25, 0.05, 0.05, 0.3, 0.6, 0.4, 0.4, 0.1, 0.1]);
    km.hasAttn.set([1, 1, 1, 1]);
    km.keyMovedAt.set([-1, 1, -1, 1]); // key 1 and key 3 moved at nfe 1 (before row 3's refresh at nfe 2)
    const lastRefresh = Int32Array.from([0, 0, 0, 2]);
    const res = (): DecideResult => ({ reuse: Uint8Array.from([1, 1, 1, 1]), drift: new Float64Array(4), reused: 4, recomputed: 0, active: 4 });
    // Moved now: key 2. Masses on moved keys: row 0 → k1 + k2 + k3 = 0.3; row 1 → 0.75; row 2 → 0.95; row 3 (refreshed after nfe 1) → k2 = 0.1.
    const r = res();
    expect(applyKeyMass(r, km, lastRefresh, Uint8Array.from([0, 0, 1, 0]), a, 0.5)).toBe(2);
    expect([...r.reuse]).toEqual([1, 0, 0, 1]);
    expect([r.reused, r.recomputed]).toEqual([2, 2]);
    expect([...km.keyMovedAt]).toEqual([-1, 1, 3, 1]);
    const low = res();
    applyKeyMass(low, km, lastRefresh, new Uint8Array(4), a, 0.05);
    expect([...low.reuse]).toEqual([0, 0, 0, 0]);
    // A row without a recorded attention row is refreshed.
    km.hasAttn[0] = 0;
    const none = res();
    applyKeyMass(none, km, lastRefresh, new Uint8Array(4), a, 1);
    expect([...none.reuse]).toEqual([0, 1, 1, 1]);
  });

  it('anchor keeps the reference of reused rows; previous moves it every step', () => {
    for (const ref of ['anchor', 'previous'] as const) {
      const st = newMechanismState(B * L, dq);
      commit(st, base(q0, ids0, 0), new Uint8Array(B * L), ref);
      const q1 = q0.map((v) => v + 0.1);
      const r = decide(st, base(q1, ids0, 1));
      commit(st, base(q1, ids0, 1), r.reuse, ref);
      expect(st.qRef[0]).toBe(ref === 'anchor' ? q0[0] : q1[0]);
    }
  });

  it('tokenMajor gathers a token’s heads into one vector', () => {
    const [Bq, H, N, d] = [2, 3, 2, 2];
    const q = Float32Array.from({ length: Bq * H * N * d }, (_, i) => i);
    const t = tokenMajor(q, Bq, H, N, d);
    // token (b=1, n=0): heads h at ((1·3 + h)·2 + 0)·2.
    expect([...t.subarray((1 * N + 0) * H * d, (1 * N + 1) * H * d)]).toEqual([12, 13, 16, 17, 20, 21]);
  });
});

describe('statistics totals', () => {
  it('are row-weighted, keep KV, O and the prefix-inclusive rates apart', () => {
    const rec = (layer: number, active: number, outside: number, kv: number | null, o: number | null): DareStepRecord => ({
      layer,
      nfe: 0,
      block: 0,
      stepInBlock: 1,
      blockStart: false,
      active,
      outside,
      kv: kv === null ? null : { reused: kv, recomputed: active - kv },
      o: o === null ? null : { reused: o, recomputed: active - o },
    });
    const t = summarizeDareStats([rec(0, 10, 0, 9, 5), rec(1, 30, 10, 15, 0)]);
    expect(t.kv).toEqual({ reused: 24, total: 40, rate: 0.6 });
    expect(t.o).toEqual({ reused: 5, total: 40, rate: 5 / 40 });
    expect(t.kvPrefixInclusive).toEqual({ reused: 34, total: 50, rate: 34 / 50 });
    expect(t.perLayer.map((l) => l.kv?.rate)).toEqual([0.9, 0.5]);
    expect(summarizeDareStats([rec(0, 4, 0, 2, null)]).o).toBeNull();
  });
});
