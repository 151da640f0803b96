import { ConfigError, type JsonObject } from '@leanpass/core';

/**
 * A learning-rate schedule: a pure function from the update index `i` (0 for the first update,
 * i.e. the number of updates done before this one) to the learning rate of that update.
 * `spec` describes it as plain data; it is recorded in checkpoints.
 */
export interface Schedule {
  (step: number): number;
  readonly spec: JsonObject;
}

/** What a trainer accepts as learning rate: a number (constant), a Schedule, or any pure function of the step. */
export type LrOption = number | Schedule | ((step: number) => number);

/** The same learning rate at every step. */
export function constantSchedule(lr: number): Schedule {
  checkNonNegative('constantSchedule', 'lr', lr);
  return withSpec(() => lr, { kind: 'constant', lr });
}

export interface WarmupCosineOptions {
  /** Learning rate at the end of warm-up (the top of the cosine). */
  peak: number;
  /** Updates of linear warm-up: update i < warmupSteps uses peak · (i + 1) / warmupSteps. 0 for none. */
  warmupSteps: number;
  /** Update index at which the cosine reaches `floor`; later updates stay at `floor`. */
  totalSteps: number;
  /** Lowest learning rate (default 0). */
  floor?: number;
}

/**
 * Linear warm-up then cosine decay to a floor:
 * - i < W: lr = peak · (i + 1) / W (the first update is not wasted at lr 0; update W − 1 reaches peak);
 * - W ≤ i < T: lr = floor + (peak − floor) · ½ · (1 + cos(π · (i − W) / (T − W)));
 * - i ≥ T: lr = floor (so with T = W the rate drops to the floor right after warm-up).
 */
export function warmupCosineSchedule(opts: WarmupCosineOptions): Schedule {
  const { peak, warmupSteps, totalSteps } = opts;
  const floor = opts.floor ?? 0;
  const issues = [];
  if (!Number.isFinite(peak) || peak < 0) issues.push({ path: 'peak', message: `expected a finite number ≥ 0, found ${peak}` });
  if (!Number.isFinite(floor) || floor < 0 || floor > peak) issues.push({ path: 'floor', message: `expected 0 ≤ floor ≤ peak (${peak}), found ${floor}` });
  if (!Number.isInteger(warmupSteps) || warmupSteps < 0) issues.push({ path: 'warmupSteps', message: `expected an integer ≥ 0, found ${warmupSteps}` });
  if (!Number.isInteger(totalSteps) || totalSteps < warmupSteps) {
    issues.push({ path: 'totalSteps', message: `expected an integer ≥ warmupSteps (${warmupSteps}), found ${totalSteps}` });
  }
  if (issues.length) throw new ConfigError('warmupCosineSchedule: invalid options', issues);
  const decay = totalSteps - warmupSteps;
  return withSpec(
    (i: number) => {
      checkStep(i);
      if (i < warmupSteps) return (peak * (i + 1)) / warmupSteps;
      if (i >= totalSteps) return floor;
      const p = (i - warmupSteps) / decay;
      return floor + (peak - floor) * 0.5 * (1 + Math.cos(Math.PI * p));
    },
    { kind: 'warmup-cosine', peak, warmupSteps, totalSteps, floor },
  );
}

/** Normalises an `LrOption` to a Schedule (plain functions get spec `{kind: 'custom'}`). */
export function toSchedule(lr: LrOption): Schedule {
  if (typeof lr === 'number') return constantSchedule(lr);
  if ('spec' in lr && typeof lr.spec === 'object') return lr;
  const f = lr;
  return withSpec((i: number) => f(i), { kind: 'custom' });
}

function withSpec(f: (step: number) => number, spec: JsonObject): Schedule {
  return Object.assign((step: number) => f(step), { spec });
}

function checkStep(i: number): void {
  if (!Number.isInteger(i) || i < 0) throw new RangeError(`schedule step must be an integer ≥ 0, got ${i}`);
}

function checkNonNegative(where: string, field: string, v: number): void {
  if (!Number.isFinite(v) || v < 0) throw new ConfigError(`${where}: invalid options`, [{ path: field, message: `expected a finite number ≥ 0, found ${v}` }]);
}
