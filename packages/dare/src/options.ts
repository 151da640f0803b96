import { z } from 'zod';
import { ConfigError, layerSelectorSchema, zodIssuesToConfigIssues } from '@leanpass/core';
import type { Decision, DriftMetric, ForceRefresh } from './decide.js';

export const PASS_NAME = '@leanpass/dare';
export const PASS_VERSION = '0.1.0';
/** The kind DARE rewrites. */
export const CANVAS_KIND = 'canvas-attention';
/** The kind it introduces. */
export const DARE_KIND = 'dare.attention';

export const DARE_MODES = ['kv', 'o', 'kv+o'] as const;
export type DareMode = (typeof DARE_MODES)[number];

/** The per-layer knobs (dare.md §2 knob table), recorded in each 'dare.attention' config. */
export const dareSettingsSchema = z
  .object({
    mode: z.enum(DARE_MODES).default('kv').describe('kv: reuse cached K/V rows; o: reuse cached attention-output rows; kv+o: both'),
    metric: z.enum(['cosine', 'relL2']).default('cosine').describe('query drift: 1 − cos(q, q̄) or ‖q − q̄‖/‖q̄‖'),
    granularity: z.enum(['token']).default('token').describe('one decision per token over all heads (per-head decisions are not implemented)'),
    decision: z.enum(['threshold', 'budget']).default('threshold').describe('threshold: reuse rows with drift < τ; budget: reuse the ⌊ρ·|A|⌋ rows of least drift'),
    threshold: z
      .union([z.number().min(0), z.literal('inf')])
      .default(0.01)
      .describe("τ ≥ 0 ('inf' = always reuse when eligible); 0 reuses nothing"),
    budget: z.number().min(0).max(1).default(0.5).describe('ρ ∈ [0, 1], fraction of the active rows reused (decision: budget)'),
    reference: z.enum(['anchor', 'previous']).default('anchor').describe("q̄: the query at the row's last refresh, or the previous step's query"),
    forceRefresh: z
      .object({
        blockStart: z.boolean().default(true).describe('refresh every row at the first forward of a block'),
        changedIds: z.boolean().default(true).describe('refresh rows whose id changed since their refresh (just unmasked)'),
        maxStaleness: z.number().int().min(0).nullable().default(null).describe('refresh rows older than this many forwards (null: never)'),
        maskedInBlock: z
          .boolean()
          .default(true)
          .describe("DARE-O only: refresh the attention output of every still-masked row of the current block (its query does not move when a neighbour is unmasked, its output does); K/V ignore it"),
        changedKeyMass: z
          .number()
          .gt(0)
          .max(1)
          .nullable()
          .default(null)
          .describe('DARE-O only: refresh a reused row whose last attention put at least this mass on keys that moved since (null: off)'),
      })
      .strict()
      .default({ blockStart: true, changedIds: true, maxStaleness: null, maskedInBlock: true, changedKeyMass: null }),
    oCachePoint: z.enum(['preWo', 'postWo']).default('postWo').describe("DARE-O's cache point: before the output projection or after it"),
  })
  .strict();

export type DareSettings = z.output<typeof dareSettingsSchema>;
export type DareSettingsInput = z.input<typeof dareSettingsSchema>;

/** The pass's options: the knobs plus the layer selector (default: every 'canvas-attention'). */
export const dareOptions = dareSettingsSchema
  .extend({
    select: layerSelectorSchema.default({}).describe("which attention layers (default: every 'canvas-attention')"),
  })
  .strict();

export type DareOptions = z.output<typeof dareOptions>;
export type DareOptionsInput = z.input<typeof dareOptions>;

/** Parses knobs, listing every problem with its path (e.g. `threshold: expected number ≥ 0, found -1`). */
export function parseSettings(raw: unknown, base = 'dare'): DareSettings {
  const r = dareSettingsSchema.safeParse(raw ?? {});
  if (!r.success) throw new ConfigError(`${PASS_NAME}: invalid settings`, zodIssuesToConfigIssues(r.error.issues, raw ?? {}, base, dareSettingsSchema));
  return r.data;
}

/** The knobs of a full options object (drops `select`). */
export function settingsOf(o: DareOptions | DareSettings): DareSettings {
  const { mode, metric, granularity, decision, threshold, budget, reference, forceRefresh, oCachePoint } = o;
  return { mode, metric, granularity, decision, threshold, budget, reference, forceRefresh: { ...forceRefresh }, oCachePoint };
}

export function decisionOf(s: DareSettings): Decision {
  return s.decision === 'threshold' ? { kind: 'threshold', tau: s.threshold === 'inf' ? Infinity : s.threshold } : { kind: 'budget', rho: s.budget };
}

export function metricOf(s: DareSettings): DriftMetric {
  return s.metric;
}

export function forceOf(s: DareSettings): ForceRefresh {
  return { ...s.forceRefresh };
}

export function usesKV(mode: DareMode): boolean {
  return mode === 'kv' || mode === 'kv+o';
}
export function usesO(mode: DareMode): boolean {
  return mode === 'o' || mode === 'kv+o';
}

/** A short label: `kv τ=0.01`, `kv+o ρ=0.5`. */
export function settingsLabel(s: DareSettings): string {
  return `${s.mode} ${s.decision === 'threshold' ? `τ=${String(s.threshold)}` : `ρ=${s.budget}`}`;
}
