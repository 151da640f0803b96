import * as tf from '@tensorflow/tfjs';
import { ConfigError, useBackend, type RunContext } from '@leanpass/core';
import { CANVAS_STEP_KEY, getKVStore, type CanvasStep } from '@leanpass/nn';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDiffusionLM, type DiffusionLM } from './model.js';
import { generateDiffusion, startGeneration, transferSchedule, type GenerationOptions, type GenerationStepInfo } from './sampler.js';

const TINY = { vocabSize: 12, dim: 16, layers: 2, heads: 2, hidden: 24, maskId: 11, eosId: 10, padId: 9, maxLength: 32 };
const PROMPTS = [
  [1, 2, 3, 4],
  [5, 6],
  [7, 8, 1],
];

let model: DiffusionLM;
let oneLayer: DiffusionLM;
beforeAll(async () => {
  await useBackend('cpu');
  model = createDiffusionLM(TINY, { seed: 1 });
  oneLayer = createDiffusionLM({ ...TINY, layers: 1 }, { seed: 2 });
});
afterAll(() => {
  model.dispose();
  oneLayer.dispose();
});

describe('transferSchedule', () => {
  it("is LLaDA's: masked // steps each, the remainder on the first steps", () => {
    expect(transferSchedule(8, 3)).toEqual([3, 3, 2]);
    expect(transferSchedule(4, 4)).toEqual([1, 1, 1, 1]);
    expect(transferSchedule(2, 4)).toEqual([1, 1, 0, 0]);
    expect(transferSchedule(7, 2).reduce((a, b) => a + b)).toBe(7);
    expect(() => transferSchedule(4, 0)).toThrow(ConfigError);
  });
});

describe('diffusion sampler', () => {
  it('plain decoding, one token per step: deterministic, commits exactly one token per step, NFE = genLength', () => {
    const steps: GenerationStepInfo[] = [];
    const opts: GenerationOptions = { genLength: 8, blockLength: 4, onStep: (i) => steps.push(i) };
    const a = generateDiffusion(model, PROMPTS, opts);
    const b = generateDiffusion(model, PROMPTS, { genLength: 8, blockLength: 4 });
    expect(a.tokens).toEqual(b.tokens);
    expect(a.nfe).toBe(8);
    expect(a.blockSteps).toEqual([4, 4]);
    expect(steps).toHaveLength(8);
    for (const s of steps) {
      for (const c of s.committed) expect(c).toHaveLength(1);
      expect(s.window).toEqual({ start: 0, end: a.length });
      // committed positions lie in the current block
      for (const c of s.committed) for (const p of c) expect(p >= s.step.blockRange.start && p < s.step.blockRange.end).toBe(true);
    }
    // semi-autoregressive: block 0 is filled before anything of block 1
    expect(steps.slice(0, 4).every((s) => s.step.block === 0)).toBe(true);
    for (const t of a.tokens) {
      expect(t).toHaveLength(8);
      expect(t).not.toContain(TINY.maskId);
    }
    expect(a.tokensPerSecond).toBeGreaterThan(0);
  });

  it('several tokens per step follow the schedule (8 tokens, 2 blocks, 4 steps → 2 per step)', () => {
    const counts: number[] = [];
    const r = generateDiffusion(model, PROMPTS, { genLength: 8, blockLength: 4, steps: 4, onStep: (i) => counts.push(i.committed[0]?.length ?? -1) });
    expect(r.nfe).toBe(4);
    expect(counts).toEqual([2, 2, 2, 2]);
  });

  it('prefix and dual caches decode exactly like plain decoding on a one-layer model (layer-0 K/V depend only on the ids)', () => {
    const opts = { genLength: 8, blockLength: 4 };
    const plain = generateDiffusion(oneLayer, PROMPTS, opts);
    const windows: Array<{ start: number; end: number }> = [];
    const prefix = generateDiffusion(oneLayer, PROMPTS, { ...opts, cache: 'prefix', onStep: (i) => windows.push(i.window) });
    const dual = generateDiffusion(oneLayer, PROMPTS, { ...opts, cache: 'dual' });
    expect(prefix.tokens).toEqual(plain.tokens);
    expect(dual.tokens).toEqual(plain.tokens);
    expect(prefix.nfe).toBe(plain.nfe);
    const L = plain.length;
    const g = plain.genStart;
    expect(windows[0]).toEqual({ start: 0, end: L });
    expect(windows[1]).toEqual({ start: g, end: L });
    expect(windows[4]).toEqual({ start: 0, end: L });
    expect(windows[5]).toEqual({ start: g + 4, end: L });
  });

  it('with one block the dual cache equals the prefix cache; each block start equals the plain forward', () => {
    const opts = { genLength: 8 };
    const prefix = generateDiffusion(model, PROMPTS, { ...opts, cache: 'prefix' });
    const dual = generateDiffusion(model, PROMPTS, { ...opts, cache: 'dual' });
    expect(dual.tokens).toEqual(prefix.tokens);
    // the first step of every block is a full forward: its commits equal plain decoding's first step
    const first = (cache: 'none' | 'prefix' | 'dual'): number[][] => {
      const g = startGeneration(model, PROMPTS, { genLength: 8, blockLength: 4, cache });
      const info = g.step();
      g.dispose();
      return info.committed;
    };
    expect(first('prefix')).toEqual(first('none'));
    expect(first('dual')).toEqual(first('none'));
  });

  it('threshold decoding commits at least one token per step, counts NFE and degenerates correctly', () => {
    const perStep: number[][] = [];
    let checked = 0;
    const onStep = (i: GenerationStepInfo): void => {
      perStep.push(i.committed.map((c) => c.length));
      const { ids, length, blockRange } = i.step;
      i.committed.forEach((c, b) => {
        const masked = Array.from(ids.subarray(b * length + blockRange.start, b * length + blockRange.end)).filter((x) => x === TINY.maskId).length;
        // every sequence whose block still had masks commits at least one token, never more than it had
        if (masked > 0) expect(c.length).toBeGreaterThanOrEqual(1);
        expect(c.length).toBeLessThanOrEqual(masked);
        checked++;
      });
    };
    const r = generateDiffusion(model, PROMPTS, { genLength: 8, blockLength: 4, threshold: 0.2, onStep });
    expect(checked).toBe(3 * r.nfe);
    expect(r.nfe).toBe(perStep.length);
    expect(r.blockSteps.reduce((a, b) => a + b)).toBe(r.nfe);
    expect(r.nfe).toBeLessThanOrEqual(8);
    expect(r.nfe).toBeGreaterThanOrEqual(2);
    for (const t of r.tokens) expect(t).not.toContain(TINY.maskId);
    // threshold 0: a whole block per step
    const all = generateDiffusion(model, PROMPTS, { genLength: 8, blockLength: 4, threshold: 0 });
    expect(all.nfe).toBe(2);
    expect(all.blockSteps).toEqual([1, 1]);
    // threshold above 1: only the top-1 per step, i.e. plain one-token-per-step decoding
    const top1 = generateDiffusion(model, PROMPTS, { genLength: 8, blockLength: 4, threshold: 1.5 });
    const plain = generateDiffusion(model, PROMPTS, { genLength: 8, blockLength: 4 });
    expect(top1.tokens).toEqual(plain.tokens);
    expect(top1.nfe).toBe(8);
  });

  it('a left-padded batch of N equals N single runs (plain, prefix, threshold)', () => {
    for (const opts of [{ genLength: 8, blockLength: 4 }, { genLength: 8, blockLength: 4, cache: 'prefix' as const }, { genLength: 8, blockLength: 4, threshold: 0.3 }]) {
      const batch = generateDiffusion(model, PROMPTS, opts);
      expect(Array.from(batch.pad)).toEqual([0, 2, 1]);
      const singles = PROMPTS.map((p) => generateDiffusion(model, [p], opts).tokens[0]);
      expect(batch.tokens).toEqual(singles);
    }
  });

  it('two interleaved generations equal sequential ones and never share caches', () => {
    const opts: GenerationOptions = { genLength: 8, blockLength: 4, cache: 'dual' };
    const seqA = generateDiffusion(model, [PROMPTS[0] as number[]], opts);
    const seqB = generateDiffusion(model, [PROMPTS[1] as number[], PROMPTS[2] as number[]], opts);
    const a = startGeneration(model, [PROMPTS[0] as number[]], opts);
    const b = startGeneration(model, [PROMPTS[1] as number[], PROMPTS[2] as number[]], opts);
    expect(a.ctx.state).not.toBe(b.ctx.state);
    while (!a.done || !b.done) {
      if (!a.done) a.step();
      if (!b.done) b.step();
      if (!b.done) b.step();
    }
    expect(getKVStore(a.ctx, 'dllm.kv/0')?.k.shape[0]).toBe(1);
    expect(getKVStore(b.ctx, 'dllm.kv/0')?.k.shape[0]).toBe(2);
    expect(a.result().tokens).toEqual(seqA.tokens);
    expect(b.result().tokens).toEqual(seqB.tokens);
    a.dispose();
    b.dispose();
  });

  it('publishes the step to the layers and in ctx.state, and calls onGenerationEnd before freeing the state', () => {
    const seen: CanvasStep[] = [];
    let endStores = 0;
    let ends = 0;
    const r = generateDiffusion(model, PROMPTS, {
      genLength: 8,
      blockLength: 4,
      cache: 'prefix',
      onStep: (_i, ctx: RunContext) => {
        const s = ctx.state.get<CanvasStep>(CANVAS_STEP_KEY);
        if (s) seen.push(s);
      },
      onGenerationEnd: (ctx, result) => {
        ends++;
        endStores = ['dllm.kv/0', 'dllm.kv/1'].filter((k) => getKVStore(ctx, k) !== undefined).length;
        expect(result.nfe).toBe(8);
      },
    });
    expect(ends).toBe(1);
    expect(endStores).toBe(2);
    expect(seen.map((s) => s.nfe)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(seen.map((s) => s.blockStart)).toEqual([true, false, false, false, true, false, false, false]);
    expect(seen[5]?.blockRange).toEqual({ start: r.genStart + 4, end: r.genStart + 8 });
    expect(Array.from(seen[0]?.pad ?? [])).toEqual([0, 2, 1]);
    // the ids seen by step s are the canvas before its commits: one more mask than step s+1 per sequence
    const masks = (s: CanvasStep): number => Array.from(s.ids).filter((x) => x === TINY.maskId).length;
    expect(masks(seen[0] as CanvasStep) - masks(seen[1] as CanvasStep)).toBe(3);
  });

  it('temperature and random remasking are reproducible from the seed', () => {
    const o: GenerationOptions = { genLength: 8, blockLength: 4, temperature: 1, remasking: 'random', seed: 4 };
    const a = generateDiffusion(model, PROMPTS, o);
    expect(generateDiffusion(model, PROMPTS, o).tokens).toEqual(a.tokens);
    const others = [5, 6, 7].map((seed) => generateDiffusion(model, PROMPTS, { ...o, seed }).tokens);
    expect(others.some((t) => JSON.stringify(t) !== JSON.stringify(a.tokens))).toBe(true);
  });

  it('EOS options: eosLogitInf never emits EOS', () => {
    const r = generateDiffusion(model, PROMPTS, { genLength: 8, eosLogitInf: true, temperature: 2, seed: 3 });
    for (const t of r.tokens) expect(t).not.toContain(TINY.eosId);
  });

  it('frees every tensor after dispose (tf.memory().numTensors stable)', () => {
    generateDiffusion(model, PROMPTS, { genLength: 8, blockLength: 4, cache: 'dual' });
    const before = tf.memory().numTensors;
    for (const cache of ['none', 'prefix', 'dual'] as const) generateDiffusion(model, PROMPTS, { genLength: 8, blockLength: 4, cache, threshold: 0.5 });
    const g = startGeneration(model, PROMPTS, { genLength: 8, blockLength: 4 });
    g.step();
    expect(tf.memory().numTensors).toBeGreaterThan(before);
    g.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('rejects bad prompts and options with clear ConfigErrors', () => {
    expect(() => startGeneration(model, [], { genLength: 4 })).toThrow(/at least one prompt/);
    expect(() => startGeneration(model, [[]], { genLength: 4 })).toThrow(/empty/);
    expect(() => startGeneration(model, [[1, 12]], { genLength: 4 })).toThrow(/ids in \[0, 12\)/);
    expect(() => startGeneration(model, [[1, 11]], { genLength: 4 })).toThrow(/\[MASK\]/);
    expect(() => startGeneration(model, [[1]], { genLength: 40 })).toThrow(/maxLength/);
    expect(() => startGeneration(model, [[1]], { genLength: 8, blockLength: 3 })).toThrow(/blockLength/);
    expect(() => startGeneration(model, [[1]], { genLength: 8, blockLength: 4, steps: 3 })).toThrow(/steps/);
    expect(() => startGeneration(model, [[1]], { genLength: 8, cache: 'both' as 'dual' })).toThrow(/cache/);
    expect(() => startGeneration(model, [[1]], { genLength: 8, temperature: -1 })).toThrow(/temperature/);
    expect(() => startGeneration(model, [[1]], { genLength: 8, threshold: Number.NaN })).toThrow(/threshold/);
    const g = startGeneration(model, [[1]], { genLength: 2 });
    expect(() => g.result()).toThrow(/not finished/);
    g.step();
    g.step();
    expect(g.done).toBe(true);
    expect(() => g.step()).toThrow(/finished/);
    g.dispose();
    expect(() => g.step()).toThrow(/disposed/);
  });
});
