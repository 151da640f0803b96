import type { RunContext } from '@leanpass/core';

/** `ctx.state` key of the generation's DARE statistics (one record per layer and forward). */
export const STATS_KEY = 'dare.stats';

/** Reused / recomputed real-token rows of one mechanism at one (layer, forward). */
export interface ReuseCount {
  reused: number;
  recomputed: number;
}

/** One layer at one forward of the sampler. */
export interface DareStepRecord {
  layer: number;
  /** Forward index within the generation. */
  nfe: number;
  block: number;
  stepInBlock: number;
  blockStart: boolean;
  /** |A|: real-token rows of the active window, summed over the batch (left padding excluded). */
  active: number;
  /** Real-token rows outside the window (served by the sampler's prefix/dual cache, not by DARE). */
  outside: number;
  kv: ReuseCount | null;
  o: ReuseCount | null;
}

/** A reuse rate with its numerator and denominator. */
export interface Rate {
  reused: number;
  total: number;
  rate: number;
}

export interface DareTotals {
  /** Records summarised. */
  records: number;
  /** K/V rows reused over active-window rows (the headline `reuse_rate_kv`). */
  kv: Rate | null;
  /** Attention-output rows reused over active-window rows. */
  o: Rate | null;
  /** K/V reuse counting the rows outside the window (prefix/dual cache) as reused, over all real rows. */
  kvPrefixInclusive: Rate | null;
  oPrefixInclusive: Rate | null;
  /** Per layer: K/V and O rates over the active window. */
  perLayer: Array<{ layer: number; kv: Rate | null; o: Rate | null }>;
}

export interface DareStats {
  records: DareStepRecord[];
  totals: DareTotals;
}

function rate(reused: number, total: number): Rate {
  return { reused, total, rate: total > 0 ? reused / total : 0 };
}

/** Appends a record to the generation's statistics. */
export function recordStep(ctx: RunContext, rec: DareStepRecord): void {
  ctx.state.getOrCreate<DareStepRecord[]>(STATS_KEY, () => []).push(rec);
}

/** Totals (row-weighted rates) over any list of records, e.g. several generations concatenated. */
export function summarizeDareStats(records: readonly DareStepRecord[]): DareTotals {
  let kvR = 0;
  let oR = 0;
  let kvN = 0;
  let oN = 0;
  let kvOut = 0;
  let oOut = 0;
  const layers = new Map<number, { kvR: number; kvN: number; oR: number; oN: number }>();
  for (const r of records) {
    const l = layers.get(r.layer) ?? { kvR: 0, kvN: 0, oR: 0, oN: 0 };
    layers.set(r.layer, l);
    if (r.kv) {
      kvR += r.kv.reused;
      kvN += r.active;
      kvOut += r.outside;
      l.kvR += r.kv.reused;
      l.kvN += r.active;
    }
    if (r.o) {
      oR += r.o.reused;
      oN += r.active;
      oOut += r.outside;
      l.oR += r.o.reused;
      l.oN += r.active;
    }
  }
  const any = (n: number): boolean => n > 0 || records.length > 0;
  const hasKv = records.some((r) => r.kv);
  const hasO = records.some((r) => r.o);
  return {
    records: records.length,
    kv: hasKv && any(kvN) ? rate(kvR, kvN) : null,
    o: hasO && any(oN) ? rate(oR, oN) : null,
    kvPrefixInclusive: hasKv ? rate(kvR + kvOut, kvN + kvOut) : null,
    oPrefixInclusive: hasO ? rate(oR + oOut, oN + oOut) : null,
    perLayer: [...layers.entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([layer, l]) => ({ layer, kv: hasKv ? rate(l.kvR, l.kvN) : null, o: hasO ? rate(l.oR, l.oN) : null })),
  };
}

/**
 * The generation's DARE statistics: one record per (layer, forward) with reused / recomputed / active
 * rows for K/V and O apart, and totals with their denominators. Read it before the sampler disposes the
 * state (its `onGenerationEnd(ctx)` hook). Empty when no DARE layer ran in a sampler step.
 */
export function readDareStats(ctx: RunContext): DareStats {
  const records = (ctx.state.get<DareStepRecord[]>(STATS_KEY) ?? []).map((r) => ({ ...r, kv: r.kv ? { ...r.kv } : null, o: r.o ? { ...r.o } : null }));
  return { records, totals: summarizeDareStats(records) };
}
