import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng, createRunContext, useBackend, type RunContext } from '@leanpass/core';
import type { CanvasAttention} from '@leanpass/nn';
import { type CanvasAttentionInput, type KV } from '@leanpass/nn';
import { MASK_ID, SMALL, keyMaskOf, makeCanvas, makeDare, planSteps, positionsOf, runLayer, type CacheKind, type PlannedStep, type Scenario } from './harness.test-util.js';
import { DareAttention, lastDecisions } from './module.js';
import type { DareSettingsInput } from './options.js';
import { readDareStats } from './stats.js';

const CACHES: CacheKind[] = ['none', 'prefix', 'dual'];

/**
 * Independent dense reference for given reuse masks: the canvas layer's dense ops, then a `where` blend
 * of fresh and cached K/V rows (and of fresh and cached attention-output rows).
 */
function blendReference(base: CanvasAttention, sc: Scenario, steps: readonly PlannedStep[], kvMasks: Array<Uint8Array | null>, oMasks: Array<Uint8Array | null>, point: 'preWo' | 'postWo'): Float32Array[] {
  const ctx = createRunContext();
  const positions = positionsOf(sc);
  const keyMask = keyMaskOf(sc);
  const { batch: B, length: L, dim: D, kvHeads: Hk } = sc;
  const d = base.config.headDim;
  const C = point === 'preWo' ? base.config.heads * d : D;
  let store: KV | null = null;
  let oCache: tf.Tensor | null = null;
  const outs: Float32Array[] = [];
  const splice = (old: tf.Tensor, rows: tf.Tensor, axis: number, start: number, n: number): tf.Tensor => {
    const parts: tf.Tensor[] = [];
    const len = old.shape[axis] as number;
    const begin = old.shape.map(() => 0);
    const size = old.shape.map(() => -1);
    if (start > 0) parts.push(tf.slice(old, begin, size.map((v, i) => (i === axis ? start : v))));
    parts.push(rows);
    if (start + n < len) parts.push(tf.slice(old, begin.map((v, i) => (i === axis ? start + n : v)), size.map((v, i) => (i === axis ? len - start - n : v))));
    return tf.concat(parts, axis);
  };
  const maskOf = (m: Uint8Array, shape: number[], N: number, inner: number, heads: number): tf.Tensor => {
    // m is [B·N]; build a bool tensor of `shape` ([B, heads, N, inner] or [B, N, inner]).
    const out = new Uint8Array(shape.reduce((a, b) => a * b, 1));
    let i = 0;
    for (let b = 0; b < B; b++) for (let h = 0; h < heads; h++) for (let n = 0; n < N; n++) for (let j = 0; j < inner; j++) out[i++] = m[b * N + n] as number;
    return tf.tensor(out, shape, 'bool');
  };
  steps.forEach((s, t) => {
    const N = s.window.end - s.window.start;
    const y = tf.tidy(() => {
      const x = tf.slice(tf.tensor3d(s.hidden, [B, L, D]), [0, s.window.start, 0], [B, N, D]);
      const q = base.projectQRows(x, positions, s.window, ctx);
      const fresh = base.projectKVRows(x, positions, s.window, ctx);
      let kv: KV;
      const km = kvMasks[t];
      if (!store) kv = fresh;
      else if (km) {
        const old = { k: tf.slice(store.k, [0, 0, s.window.start, 0], [B, Hk, N, d]), v: tf.slice(store.v, [0, 0, s.window.start, 0], [B, Hk, N, d]) };
        const mk = maskOf(km, [B, Hk, N, d], N, d, Hk);
        kv = { k: splice(store.k, tf.where(mk, old.k, fresh.k), 2, s.window.start, N), v: splice(store.v, tf.where(mk, old.v, fresh.v), 2, s.window.start, N) };
      } else kv = { k: splice(store.k, fresh.k, 2, s.window.start, N), v: splice(store.v, fresh.v, 2, s.window.start, N) };
      const prevStore = store;
      store = { k: tf.keep(kv.k), v: tf.keep(kv.v) };
      if (prevStore) tf.dispose([prevStore.k, prevStore.v]);
      const merged = base.attendAll(q, kv, keyMask);
      const dense = point === 'preWo' ? merged : (base.child('o').call(merged, ctx) as tf.Tensor);
      const om = oMasks[t];
      let rows = dense;
      if (oCache && om) rows = tf.where(maskOf(om, [B, N, C], N, C, 1), tf.slice(oCache, [0, s.window.start, 0], [B, N, C]), dense);
      const next = oCache ? splice(oCache, rows, 1, s.window.start, N) : rows;
      const prevO = oCache;
      oCache = tf.keep(tf.clone(next));
      prevO?.dispose();
      return point === 'preWo' ? (base.child('o').call(rows, ctx) as tf.Tensor) : rows;
    });
    outs.push(y.dataSync() as Float32Array);
    y.dispose();
  });
  const last = store as KV | null;
  if (last) tf.dispose([last.k, last.v]);
  (oCache as tf.Tensor | null)?.dispose();
  keyMask?.dispose();
  return outs;
}

function runDare(base: CanvasAttention, sc: Scenario, steps: readonly PlannedStep[], settings: DareSettingsInput, ctx?: RunContext): { outputs: Float32Array[]; kv: Array<Uint8Array | null>; o: Array<Uint8Array | null>; ctx: RunContext } {
  const dare = makeDare(base, settings);
  const kv: Array<Uint8Array | null> = [];
  const o: Array<Uint8Array | null> = [];
  const r = runLayer(dare, sc, steps, {
    ...(ctx ? { ctx } : {}),
    onStep: (_i, c) => {
      const d = lastDecisions(c, 0);
      kv.push(d.kv);
      o.push(d.o);
    },
  });
  return { outputs: r.outputs, kv, o, ctx: r.ctx };
}

for (const backend of ['cpu', 'wasm'] as const) {
  describe(`DareAttention on ${backend}`, () => {
    let base: CanvasAttention;
    beforeAll(async () => {
      await useBackend(backend);
      base = makeCanvas(SMALL);
    });
    afterAll(() => base.dispose());

    it('outside a sampler step is exactly CanvasAttention', () => {
      const dare = makeDare(base, { threshold: 'inf', mode: 'kv+o' });
      const positions = positionsOf(SMALL);
      const [a, b] = tf.tidy(() => {
        const x = tf.randomNormal([SMALL.batch, SMALL.length, SMALL.dim], 0, 1, 'float32', 5);
        const input: CanvasAttentionInput = { x, window: { start: 0, end: SMALL.length }, length: SMALL.length, positions, keyMask: null, layer: 0 };
        return [base.call(input, createRunContext()).dataSync(), dare.call(input, createRunContext()).dataSync()];
      });
      expect(b).toEqual(a);
    });

    it.each(CACHES)('τ = 0 is bit-identical to the plain layer with the %s cache, in every mode, and reuses nothing (identity 1)', (cache) => {
      const steps = planSteps(SMALL, cache);
      const ref = runLayer(base, SMALL, steps);
      ref.ctx.state.dispose();
      for (const settings of [{ mode: 'kv' }, { mode: 'o', oCachePoint: 'preWo' }, { mode: 'kv+o' }, { mode: 'kv+o', decision: 'budget', budget: 0 }] as DareSettingsInput[]) {
        const r = runDare(base, SMALL, steps, { ...settings, ...(settings.decision ? {} : { threshold: 0 }) });
        r.outputs.forEach((o, i) => expect(o, `${cache} ${JSON.stringify(settings)} step ${i}`).toEqual(ref.outputs[i]));
        const t = readDareStats(r.ctx).totals;
        expect((t.kv?.reused ?? 0) + (t.o?.reused ?? 0)).toBe(0);
        r.ctx.state.dispose();
      }
    });

    it.each(CACHES)('random reuse masks (%s cache) equal a dense computation blending fresh and cached rows with where (identity 3)', (cache) => {
      const steps = planSteps(SMALL, cache);
      for (const settings of [
        { mode: 'kv', decision: 'budget', budget: 0.5 },
        { mode: 'o', decision: 'budget', budget: 0.6, oCachePoint: 'postWo' },
        { mode: 'o', decision: 'budget', budget: 0.4, oCachePoint: 'preWo' },
        { mode: 'kv+o', decision: 'budget', budget: 0.5, metric: 'relL2', reference: 'previous' },
      ] as DareSettingsInput[]) {
        const r = runDare(base, SMALL, steps, settings);
        const reused = r.kv.concat(r.o).reduce((a, m) => a + (m ? m.reduce((x, y) => x + y, 0) : 0), 0);
        expect(reused).toBeGreaterThan(0);
        const want = blendReference(base, SMALL, steps, r.kv, r.o, settings.oCachePoint ?? 'postWo');
        r.outputs.forEach((o, i) => expect(o, `${cache} ${JSON.stringify(settings)} step ${i}`).toEqual(want[i]));
        r.ctx.state.dispose();
      }
    });

    it.each(CACHES)('τ = ∞ (%s cache) equals K/V and O frozen after their last forced refresh (identity 2); just-unmasked rows are always refreshed', (cache) => {
      const steps = planSteps(SMALL, cache);
      const { batch: B, length: L } = SMALL;
      // Independent frozen masks: a row is refreshed iff block start, never computed, or its id changed since
      // its refresh; for O also every still-masked row of the current block (forceRefresh.maskedInBlock).
      const frozenMasks = (maskedRule: boolean): Uint8Array[] => {
        const out: Uint8Array[] = [];
        const idAt = new Int32Array(B * L).fill(-1);
        for (const s of steps) {
          const N = s.window.end - s.window.start;
          const m = new Uint8Array(B * N);
          for (let b = 0; b < B; b++) {
            for (let n = 0; n < N; n++) {
              const pos = s.window.start + n;
              const row = b * L + pos;
              const maskedInBlock = maskedRule && s.step.ids[row] === MASK_ID && pos >= s.step.blockRange.start && pos < s.step.blockRange.end;
              const keep = !s.step.blockStart && idAt[row] !== -1 && idAt[row] === s.step.ids[row] && !maskedInBlock;
              m[b * N + n] = keep ? 1 : 0;
              if (!keep) idAt[row] = s.step.ids[row] as number;
            }
          }
          out.push(m);
        }
        return out;
      };
      const frozenKv = frozenMasks(false);
      for (const [mode, maskedInBlock] of [['kv', true], ['o', true], ['kv+o', true], ['o', false]] as const) {
        const frozenO = frozenMasks(maskedInBlock);
        const r = runDare(base, SMALL, steps, { mode, threshold: 'inf', forceRefresh: { maskedInBlock } });
        const label = `${mode} maskedInBlock ${String(maskedInBlock)}`;
        const check = (got: Array<Uint8Array | null>, want: Uint8Array[]): void =>
          got.forEach((m, i) => expect(m ? [...m] : null, `${label} step ${i}`).toEqual(i === 0 ? new Array(want[0]!.length).fill(0) : [...want[i]!]));
        if (mode !== 'o') check(r.kv, frozenKv);
        if (mode !== 'kv') check(r.o, frozenO);
        const want = blendReference(base, SMALL, steps, mode === 'o' ? steps.map(() => null) : frozenKv, mode === 'kv' ? steps.map(() => null) : frozenO, 'postWo');
        r.outputs.forEach((o, i) => expect(o, `${label} step ${i}`).toEqual(want[i]));
        // After a block start: K/V recompute exactly the rows unmasked by the previous step (one per
        // sequence); O also the block's still-masked rows.
        const recs = readDareStats(r.ctx).records;
        recs.forEach((rec, i) => {
          const s = steps[i] as PlannedStep;
          let masked = 0;
          for (let b = 0; b < B; b++) for (let p = Math.max(s.window.start, s.step.blockRange.start); p < Math.min(s.window.end, s.step.blockRange.end); p++) if (s.step.ids[b * L + p] === MASK_ID) masked++;
          for (const [c, extra] of [
            [rec.kv, 0],
            [rec.o, maskedInBlock ? masked : 0],
          ] as const) {
            if (!c) continue;
            if (rec.blockStart) expect(c.reused).toBe(0);
            else expect(c.recomputed, `${label} step ${i}`).toBe(SMALL.batch + extra);
          }
        });
        r.ctx.state.dispose();
      }
    });

    it('DARE-O refreshes a still-masked row when a neighbour is unmasked: its output equals the dense layer (and is stale without the rule)', () => {
      // No drift: every row's input is unchanged except the just-unmasked one (as at the first layer), so
      // queries do not move and only forced refreshes recompute.
      const sc: Scenario = { ...SMALL, noise: 0 };
      const steps = planSteps(sc, 'none');
      const dense = runLayer(base, sc, steps);
      dense.ctx.state.dispose();
      const { batch: B, length: L, dim: D } = sc;
      let maskedRows = 0;
      let stale = 0;
      for (const maskedInBlock of [true, false]) {
        const r = runDare(base, sc, steps, { mode: 'o', threshold: 0.01, forceRefresh: { maskedInBlock } });
        steps.forEach((s, i) => {
          if (s.step.blockStart) return;
          for (let b = 0; b < B; b++) {
            for (let p = s.step.blockRange.start; p < s.step.blockRange.end; p++) {
              if (s.step.ids[b * L + p] !== MASK_ID) continue;
              const at = (b * L + p) * D;
              const got = r.outputs[i]!.slice(at, at + D);
              const want = dense.outputs[i]!.slice(at, at + D);
              if (maskedInBlock) {
                maskedRows++;
                expect(r.o[i]![b * L + p], `step ${i} row ${b}/${p}`).toBe(0);
                expect(got, `step ${i} row ${b}/${p}`).toEqual(want);
              } else if (got.some((v, j) => Math.abs(v - (want[j] as number)) > 1e-4)) stale++;
            }
          }
        });
        // The rule is O's: the O reuse drops, yet committed and prompt rows are still reused.
        const t = readDareStats(r.ctx).totals;
        expect(t.o!.reused).toBeGreaterThan(0);
        r.ctx.state.dispose();
      }
      expect(maskedRows).toBeGreaterThan(4);
      expect(stale).toBeGreaterThan(0);
    });

    it('DARE-O with changedKeyMass: a tiny θ refreshes every row that attends to a moved key (equals the dense layer); θ = 1 keeps reusing', () => {
      const sc: Scenario = { ...SMALL, noise: 0 };
      const steps = planSteps(sc, 'none');
      const dense = runLayer(base, sc, steps);
      dense.ctx.state.dispose();
      const tiny = runDare(base, sc, steps, { mode: 'o', threshold: 0.01, forceRefresh: { maskedInBlock: false, changedKeyMass: 1e-9 } });
      // Real rows (left-pad rows are reused uncounted; their outputs are never used).
      const D = sc.dim;
      tiny.outputs.forEach((o, i) => {
        for (let b = 0; b < sc.batch; b++) {
          const from = (b * sc.length + (sc.pad[b] as number)) * D;
          const to = (b + 1) * sc.length * D;
          expect(o.slice(from, to), `step ${i} sequence ${b}`).toEqual(dense.outputs[i]!.slice(from, to));
        }
      });
      expect(readDareStats(tiny.ctx).totals.o!.reused).toBe(0);
      tiny.ctx.state.dispose();
      const one = runDare(base, sc, steps, { mode: 'o', threshold: 0.01, forceRefresh: { maskedInBlock: false, changedKeyMass: 1 } });
      const mid = runDare(base, sc, steps, { mode: 'o', threshold: 0.01, forceRefresh: { maskedInBlock: false, changedKeyMass: 0.2 } });
      const [r1, rMid] = [readDareStats(one.ctx).totals.o!.reused, readDareStats(mid.ctx).totals.o!.reused];
      expect(rMid).toBeGreaterThan(0);
      expect(r1).toBeGreaterThan(rMid);
      one.ctx.state.dispose();
      mid.ctx.state.dispose();
    });

    it('DARE-O with maskedInBlock needs the mask id', () => {
      const dare = new DareAttention({ ...base.config, dare: { mode: 'o' } }, { rng: new Rng(0) }, { q: base.child('q'), k: base.child('k'), v: base.child('v'), o: base.child('o') });
      const steps = planSteps(SMALL, 'none');
      expect(() => runLayer(dare, SMALL, steps.slice(0, 2))).toThrow(/maskedInBlock needs the host's \[MASK\] id/);
      expect(() => new DareAttention({ ...base.config, maskId: -1 }, { rng: new Rng(0) })).toThrow(/maskId/);
    });

    it('reports smaller analytic costs when rows are reused (K/V linears, attention rows)', () => {
      const steps = planSteps(SMALL, 'none');
      const cost = (settings: DareSettingsInput): Record<string, number> => {
        const sums: Record<string, number> = {};
        const ctx = createRunContext({ meter: { record: (m, e) => (sums[m.kind] = (sums[m.kind] ?? 0) + (e['flops'] ?? 0)) } });
        runLayer(makeDare(base, settings), SMALL, steps, { ctx });
        ctx.state.dispose();
        return sums;
      };
      const dense = cost({ mode: 'kv+o', threshold: 0 });
      const reuse = cost({ mode: 'kv+o', threshold: 'inf' });
      expect(reuse['dare.attention']).toBeLessThan(dense['dare.attention'] as number);
      expect(reuse['linear']).toBeLessThan(dense['linear'] as number);
      expect(dense['dare.attention']).toBeGreaterThan(0);
    });

    it('accounts every active row once per (layer, step), block starts reuse nothing (identity 6)', () => {
      for (const cache of CACHES) {
        const steps = planSteps(SMALL, cache);
        const r = runDare(base, SMALL, steps, { mode: 'kv+o', threshold: 0.05 });
        const { records, totals } = readDareStats(r.ctx);
        expect(records.length).toBe(steps.length);
        let kvR = 0;
        let act = 0;
        records.forEach((rec, i) => {
          const s = steps[i] as PlannedStep;
          const real = SMALL.pad.reduce((a, p) => a + Math.max(0, s.window.end - Math.max(s.window.start, p)), 0);
          expect(rec.active).toBe(real);
          expect(rec.outside).toBe(SMALL.pad.reduce((a, p) => a + SMALL.length - p, 0) - real);
          for (const c of [rec.kv, rec.o]) {
            expect(c).not.toBeNull();
            expect(c!.reused + c!.recomputed).toBe(rec.active);
          }
          if (rec.blockStart) expect(rec.kv!.reused + rec.o!.reused).toBe(0);
          kvR += rec.kv!.reused;
          act += rec.active;
        });
        expect(totals.kv).toEqual({ reused: kvR, total: act, rate: kvR / act });
        expect(totals.kv!.rate).toBeGreaterThan(0);
        expect(totals.kv!.rate).toBeLessThanOrEqual(1);
        expect(totals.kvPrefixInclusive!.rate).toBeGreaterThanOrEqual(totals.kv!.rate);
        r.ctx.state.dispose();
      }
    });

    it('a batch equals its sequences run alone (identity 7), reruns are identical (identity 8)', () => {
      const steps = planSteps(SMALL, 'prefix');
      const settings: DareSettingsInput = { mode: 'kv+o', threshold: 0.02 };
      const batch = runDare(base, SMALL, steps, settings);
      const again = runDare(base, SMALL, steps, settings);
      batch.outputs.forEach((o, i) => expect(again.outputs[i]).toEqual(o));
      const bt = readDareStats(batch.ctx).totals;
      let kvReused = 0;
      let oReused = 0;
      for (let b = 0; b < SMALL.batch; b++) {
        const pad = SMALL.pad[b] as number;
        // Alone: the same sequence without its left padding (canvas positions shift by pad, RoPE positions do not).
        const sc: Scenario = { ...SMALL, batch: 1, pad: [0], length: SMALL.length - pad, prompt: SMALL.prompt - pad };
        const one = steps.map((s) => {
          const win = { start: Math.max(0, s.window.start - pad), end: s.window.end - pad };
          const hidden = s.hidden.slice((b * SMALL.length + pad) * SMALL.dim, (b + 1) * SMALL.length * SMALL.dim);
          const ids = s.step.ids.slice(b * SMALL.length + pad, (b + 1) * SMALL.length);
          const blockRange = { start: s.step.blockRange.start - pad, end: s.step.blockRange.end - pad };
          return { window: win, hidden, step: { ...s.step, ids, batch: 1, length: sc.length, pad: Int32Array.from([0]), blockRange } };
        });
        const r = runDare(base, sc, one, settings);
        const t = readDareStats(r.ctx).totals;
        kvReused += t.kv!.reused;
        oReused += t.o!.reused;
        r.outputs.forEach((o, i) => {
          const s = steps[i] as PlannedStep;
          const N = s.window.end - s.window.start;
          const lead = Math.max(0, pad - s.window.start);
          const rows = batch.outputs[i]!.slice((b * N + lead) * SMALL.dim, (b + 1) * N * SMALL.dim);
          expect(o.length).toBe(rows.length);
          for (let j = 0; j < o.length; j++) expect(Math.abs((o[j] as number) - (rows[j] as number))).toBeLessThanOrEqual(1e-5);
        });
        r.ctx.state.dispose();
      }
      expect(bt.kv!.reused).toBe(kvReused);
      expect(bt.o!.reused).toBe(oReused);
      batch.ctx.state.dispose();
      again.ctx.state.dispose();
    });

    it('interleaved generations do not share caches; tensors are freed at the end of each (identity 9)', () => {
      const a = planSteps(SMALL, 'dual');
      const b = planSteps({ ...SMALL, seed: 11 }, 'dual');
      const settings: DareSettingsInput = { mode: 'kv+o', threshold: 0.05, oCachePoint: 'preWo' };
      const aloneA = runDare(base, SMALL, a, settings);
      const aloneB = runDare(base, SMALL, b, settings);
      aloneA.ctx.state.dispose();
      aloneB.ctx.state.dispose();
      const before = tf.memory().numTensors;
      const dare = makeDare(base, settings);
      const ca = createRunContext();
      const cb = createRunContext();
      const positions = positionsOf(SMALL);
      const keyMask = keyMaskOf(SMALL);
      const run = (s: PlannedStep, ctx: RunContext): Float32Array =>
        tf.tidy(() => {
          const N = s.window.end - s.window.start;
          const x = tf.slice(tf.tensor3d(s.hidden, [SMALL.batch, SMALL.length, SMALL.dim]), [0, s.window.start, 0], [SMALL.batch, N, SMALL.dim]);
          return dare.call({ x, window: s.window, length: SMALL.length, positions, keyMask, store: 'kv.0', layer: 0, step: s.step }, ctx).dataSync() as Float32Array;
        });
      a.forEach((s, i) => {
        expect(run(s, ca)).toEqual(aloneA.outputs[i]);
        expect(run(b[i] as PlannedStep, cb)).toEqual(aloneB.outputs[i]);
      });
      ca.state.dispose();
      cb.state.dispose();
      keyMask?.dispose();
      expect(tf.memory().numTensors).toBe(before);
    });
  });
}
