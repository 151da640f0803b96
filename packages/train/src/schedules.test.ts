import { describe, expect, it } from 'vitest';
import { ConfigError } from '@leanpass/core';
import { constantSchedule, toSchedule, warmupCosineSchedule } from './schedules.js';

describe('schedules', () => {
  it('constant gives the same rate at every step', () => {
    const s = constantSchedule(0.05);
    expect([0, 1, 10, 1e6].map(s)).toEqual([0.05, 0.05, 0.05, 0.05]);
    expect(s.spec).toEqual({ kind: 'constant', lr: 0.05 });
  });

  it('warm-up then cosine hits the documented values', () => {
    const s = warmupCosineSchedule({ peak: 1, warmupSteps: 4, totalSteps: 14, floor: 0.1 });
    // warm-up: peak·(i+1)/W
    expect([0, 1, 2, 3].map(s)).toEqual([0.25, 0.5, 0.75, 1]);
    // top of the cosine, half way, end, after the end
    expect(s(4)).toBeCloseTo(1, 12);
    expect(s(9)).toBeCloseTo(0.55, 12);
    expect(s(14)).toBeCloseTo(0.1, 12);
    expect(s(100)).toBe(0.1);
    // a quarter of the way: floor + (peak − floor)·½·(1 + cos(π/4))
    const w = warmupCosineSchedule({ peak: 2, warmupSteps: 0, totalSteps: 8 });
    expect(w(2)).toBeCloseTo(2 * 0.5 * (1 + Math.cos(Math.PI / 4)), 12);
    expect(w(0)).toBe(2);
  });

  it('decays monotonically after warm-up and never goes below the floor', () => {
    const s = warmupCosineSchedule({ peak: 3e-3, warmupSteps: 10, totalSteps: 200, floor: 1e-5 });
    for (let i = 10; i < 250; i++) {
      expect(s(i + 1)).toBeLessThanOrEqual(s(i));
      expect(s(i)).toBeGreaterThanOrEqual(1e-5);
    }
  });

  it('drops to the floor right after warm-up when totalSteps = warmupSteps', () => {
    const s = warmupCosineSchedule({ peak: 1, warmupSteps: 2, totalSteps: 2, floor: 0.2 });
    expect([0, 1, 2, 3].map(s)).toEqual([0.5, 1, 0.2, 0.2]);
  });

  it('rejects bad options with every issue listed', () => {
    try {
      warmupCosineSchedule({ peak: -1, warmupSteps: 1.5, totalSteps: 0, floor: 2 });
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      expect((e as ConfigError).issues.map((i) => i.path).sort()).toEqual(['floor', 'peak', 'totalSteps', 'warmupSteps']);
    }
    expect(() => constantSchedule(Number.NaN)).toThrow(ConfigError);
    expect(() => warmupCosineSchedule({ peak: 1, warmupSteps: 0, totalSteps: 5 })(-1)).toThrow(RangeError);
  });

  it('wraps numbers and plain functions', () => {
    expect(toSchedule(0.3)(7)).toBe(0.3);
    const f = toSchedule((i) => 1 / (i + 1));
    expect(f(3)).toBe(0.25);
    expect(f.spec).toEqual({ kind: 'custom' });
    const c = constantSchedule(1);
    expect(toSchedule(c)).toBe(c);
  });
});
