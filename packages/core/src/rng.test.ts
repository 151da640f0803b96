import { describe, expect, it } from 'vitest';
import { Rng, hashSeed } from './rng.js';

describe('Rng', () => {
  it('is deterministic per seed and differs across seeds', () => {
    const a = new Rng(42);
    const b = new Rng(42);
    const c = new Rng(43);
    const sa = Array.from({ length: 5 }, () => a.nextU32());
    expect(Array.from({ length: 5 }, () => b.nextU32())).toEqual(sa);
    expect(Array.from({ length: 5 }, () => c.nextU32())).not.toEqual(sa);
  });
  it('uniform values are in [0,1) with the right mean and normals have unit variance', () => {
    const r = new Rng(1);
    let s = 0;
    let s2 = 0;
    let m = 0;
    const n = 20000;
    for (let i = 0; i < n; i++) {
      const u = r.next();
      expect(u >= 0 && u < 1).toBe(true);
      m += u;
      const z = r.normal();
      s += z;
      s2 += z * z;
    }
    expect(Math.abs(m / n - 0.5)).toBeLessThan(0.01);
    expect(Math.abs(s / n)).toBeLessThan(0.03);
    expect(Math.abs(s2 / n - 1)).toBeLessThan(0.04);
  });
  it('int covers its range uniformly enough and rejects bad bounds', () => {
    const r = new Rng(3);
    const counts = new Array<number>(6).fill(0);
    for (let i = 0; i < 6000; i++) counts[r.int(6)]! += 1;
    for (const c of counts) expect(Math.abs(c - 1000)).toBeLessThan(120);
    expect(() => r.int(0)).toThrow(RangeError);
  });
  it('permutation is a permutation', () => {
    const p = new Rng(5).permutation(100);
    expect([...p].sort((x, y) => x - y)).toEqual(Array.from({ length: 100 }, (_, i) => i));
  });
  it('getState/setState resumes the exact stream (normal spare included)', () => {
    const r = new Rng(9);
    r.normal();
    const st = r.getState();
    const next = [r.normal(), r.normal(), r.nextU32()];
    const q = new Rng(0);
    q.setState(st);
    expect([q.normal(), q.normal(), q.nextU32()]).toEqual(next);
    expect(() => q.setState([1, 2])).toThrow(RangeError);
  });
  it('fork gives independent deterministic streams', () => {
    const r = new Rng(11);
    expect(r.fork('a').nextU32()).toBe(new Rng(11).fork('a').nextU32());
    expect(r.fork('a').nextU32()).not.toBe(r.fork('b').nextU32());
    expect(hashSeed('x')).not.toBe(hashSeed('y'));
  });
});
