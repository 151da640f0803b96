import { ConfigError, type AnyModule } from '@leanpass/core';
import { DareAttention } from './module.js';
import { DARE_KIND, PASS_NAME, usesKV } from './options.js';
import { summarizeDareStats, type DareStepRecord } from './stats.js';

export interface CalibrateOptions<P> {
  /**
   * Runs the sampler over `prompts` with the model as it is now and returns the DARE records of those
   * generations (read with `readDareStats(ctx)` in the sampler's `onGenerationEnd` hook).
   */
  generate(model: AnyModule, prompts: P): readonly DareStepRecord[] | Promise<readonly DareStepRecord[]>;
  /** Which reuse rate to match: 'kv' (default when the layers' mode uses K/V reuse) or 'o'. */
  mechanism?: 'kv' | 'o';
  /** Stop when |rate − target| ≤ tolerance (default 0.01). */
  tolerance?: number;
  /** At most this many sampler runs (default 12). */
  maxRuns?: number;
  /** Initial bracket of τ (default [1e-6, 1]); the upper end grows ×10 while the rate stays below target (up to 1e6). */
  bracket?: [number, number];
}

export interface CalibrationRun {
  threshold: number;
  reuse: number;
}

export interface CalibrationResult {
  /** The τ chosen: the smallest tried whose reuse rate reached the target, else the one closest to it. */
  threshold: number;
  /** Its measured reuse rate (active-window rows). */
  reuse: number;
  runs: CalibrationRun[];
}

function dareLayers(model: AnyModule): DareAttention[] {
  const out: DareAttention[] = [];
  for (const [, m] of model.modules()) if (m.kind === DARE_KIND && m instanceof DareAttention) out.push(m);
  return out;
}

/**
 * Finds the threshold τ that gives a target reuse rate on a few prompts (dare.md §2: τ is model-dependent).
 * Bisects τ on a log scale, running the sampler (through `opts.generate`) with every DARE layer set to
 * threshold decisions at the trial τ; leaves the chosen τ set on the model's layers and returns it with
 * every trial. The reuse rate is monotone in τ up to the anchor-reference dynamics, so the search is a
 * bisection with a tolerance, not an exact inversion.
 */
export async function calibrateThreshold<P>(model: AnyModule, prompts: P, targetReuse: number, opts: CalibrateOptions<P>): Promise<CalibrationResult> {
  if (!(targetReuse >= 0 && targetReuse <= 1)) throw new ConfigError(`${PASS_NAME}: calibrateThreshold expects a target reuse rate in [0, 1], found ${targetReuse}`);
  const layers = dareLayers(model);
  if (layers.length === 0) throw new ConfigError(`${PASS_NAME}: calibrateThreshold expects a model rewritten by DARE (modules of kind '${DARE_KIND}'), found none in a model of kind '${model.kind}'`);
  const mech = opts.mechanism ?? (usesKV((layers[0] as DareAttention).settings.mode) ? 'kv' : 'o');
  const tol = opts.tolerance ?? 0.01;
  const maxRuns = opts.maxRuns ?? 12;
  let [lo, hi] = opts.bracket ?? [1e-6, 1];
  if (!(lo > 0 && hi > lo)) throw new ConfigError(`${PASS_NAME}: calibrateThreshold expects a bracket 0 < lo < hi, found [${lo}, ${hi}]`);
  const runs: CalibrationRun[] = [];
  const trial = async (tau: number): Promise<number> => {
    for (const l of layers) l.updateSettings({ decision: 'threshold', threshold: tau });
    const totals = summarizeDareStats(await opts.generate(model, prompts));
    const r = mech === 'kv' ? totals.kv : totals.o;
    if (!r) throw new ConfigError(`${PASS_NAME}: calibrateThreshold found no ${mech.toUpperCase()} statistics: does the layers' mode use ${mech === 'kv' ? 'K/V' : 'O'} reuse, and does generate() return the records?`);
    runs.push({ threshold: tau, reuse: r.rate });
    return r.rate;
  };
  let rHi = await trial(hi);
  while (rHi < targetReuse && hi < 1e6 && runs.length < maxRuns) {
    lo = hi;
    hi *= 10;
    rHi = await trial(hi);
  }
  while (runs.length < maxRuns && Math.abs(rHi - targetReuse) > tol) {
    const mid = Math.sqrt(lo * hi);
    const r = await trial(mid);
    if (r >= targetReuse) {
      hi = mid;
      rHi = r;
    } else lo = mid;
    if (Math.abs(r - targetReuse) <= tol) break;
  }
  const reached = runs.filter((r) => r.reuse >= targetReuse - tol).sort((a, b) => a.threshold - b.threshold);
  const best = reached[0] ?? [...runs].sort((a, b) => Math.abs(a.reuse - targetReuse) - Math.abs(b.reuse - targetReuse))[0];
  if (!best) throw new ConfigError(`${PASS_NAME}: calibrateThreshold ran no trial (maxRuns ${maxRuns})`);
  for (const l of layers) l.updateSettings({ decision: 'threshold', threshold: best.threshold });
  return { threshold: best.threshold, reuse: best.reuse, runs };
}
