import * as tf from '@tensorflow/tfjs';
import { lastValueFrom, toArray } from 'rxjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, Rng, createRunContext, isPassPackage, useBackend, type AnyModule, type RunContext } from '@leanpass/core';
import { passConformance } from '@leanpass/core/testing';
import { createDiffusionLM, createLlama, generateDiffusion, startGeneration, type DiffusionLM } from '@leanpass/models';
import type { CanvasStep } from '@leanpass/nn';
import { TINY } from './harness.test-util.js';
import * as entry from './index.js';
import { DARE_KIND, DareAttention, calibrateThreshold, dare, dareOptions, pass, readDareStats, summarizeDareStats, type DareStepRecord } from './index.js';

const L = 12;
const B = 2;

function canvasIds(seed: number): Int32Array {
  const rng = new Rng(seed);
  const ids = new Int32Array(B * L);
  for (let b = 0; b < B; b++) for (let p = 0; p < L; p++) ids[b * L + p] = p < 4 ? rng.int(20) : 24;
  return ids;
}

/**
 * Two sampler-like forwards (block start over the whole canvas, then the block [4, 8) with one token
 * unmasked) through the model with a K/V store, so DARE's reuse path runs; returns the second step's logits.
 */
function twoSteps(model: AnyModule, ids0: Int32Array, ctx: RunContext, window: { start: number; end: number } = { start: 4, end: L }): tf.Tensor {
  const pad = new Int32Array(B);
  const step = (nfe: number, ids: Int32Array): CanvasStep => ({ block: 0, stepInBlock: nfe, nfe, blockStart: nfe === 0, blockRange: { start: 4, end: 8 }, ids, batch: B, length: L, pad });
  const ids1 = ids0.slice();
  ids1[4] = 7;
  ids1[L + 4] = 9;
  tf.tidy(() => model.call({ ids: tf.tensor2d(ids0, [B, L], 'int32'), store: 'kv', step: step(0, ids0) }, ctx) as tf.Tensor).dispose();
  return tf.tidy(() => model.call({ ids: tf.tensor2d(ids1, [B, L], 'int32'), window, store: 'kv', step: step(1, ids1) }, ctx) as tf.Tensor);
}

passConformance({
  pass,
  makeModel: (seed) => createDiffusionLM(TINY, { seed }),
  makeInput: () => tf.tensor2d(canvasIds(5), [B, L], 'int32'),
  forward: (model, input, ctx) => twoSteps(model, input.dataSync() as Int32Array, ctx),
  options: { mode: 'kv+o', threshold: 'inf' },
});

describe('@leanpass/dare pass', () => {
  beforeAll(async () => {
    await useBackend('cpu');
  });

  it('has the entry shape the CLI discovers', () => {
    expect(isPassPackage(entry)).toBe(true);
    expect(pass.name).toBe('@leanpass/dare');
    expect(dare({ mode: 'o' }).pass).toBe(pass);
  });

  it('plans every canvas attention, moves (not copies) q, k, v, o and records its knobs', async () => {
    const m = createDiffusionLM(TINY, { seed: 1 });
    const q0 = m.get('layers.0.attn.q');
    const plan = pass.plan(m, dareOptions.parse({}));
    expect(plan.entries.map((e) => [e.path, e.kind, e.action])).toEqual([
      ['layers.0.attn', 'canvas-attention', DARE_KIND],
      ['layers.1.attn', 'canvas-attention', DARE_KIND],
    ]);
    const params = m.paramCount();
    const events = await lastValueFrom(pass.apply(m, dareOptions.parse({ mode: 'kv+o', threshold: 0.03 }), { seed: 0, backend: tf.getBackend() }).pipe(toArray()));
    expect(events.at(-1)?.type).toBe('done');
    const a = m.get('layers.0.attn');
    expect(a).toBeInstanceOf(DareAttention);
    expect(a.mark).toBe(pass.name);
    expect(m.get('layers.0.attn.q')).toBe(q0);
    expect(m.paramCount()).toBe(params);
    expect((a as DareAttention).settings).toMatchObject({ mode: 'kv+o', threshold: 0.03, metric: 'cosine', reference: 'anchor', forceRefresh: { maskedInBlock: true, changedKeyMass: null } });
    // The host's [MASK] id is recorded for DARE-O's masked-row refresh.
    expect((a as DareAttention).maskId).toBe(TINY.maskId);
    expect(() => pass.plan(m, dareOptions.parse({}))).toThrow(/2 layer\(s\) are already 'dare.attention' \(layers.0.attn, layers.1.attn\)/);
    m.dispose();
  });

  it('rejects a causal host, naming the diffusion LM it expects and what it found', () => {
    const llama = createLlama({ vocab_size: 16, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2 }, { seed: 0 });
    expect(() => pass.plan(llama, dareOptions.parse({}))).toThrow(ConfigError);
    expect(() => pass.plan(llama, dareOptions.parse({}))).toThrow(/expected a bidirectional masked-diffusion LM \(kind 'dllm'\).*found a model of kind 'llama'/);
    llama.dispose();
  });

  it('rejects thresholds below 0 or NaN and budgets outside [0, 1] with the field and the value', () => {
    const m = createDiffusionLM(TINY, { seed: 1 });
    expect(() => pass.plan(m, { threshold: -0.5 } as never)).toThrow(/options\.threshold: expected number ≥ 0, found -0.5/);
    expect(() => pass.plan(m, { threshold: Number.NaN } as never)).toThrow(ConfigError);
    expect(() => pass.plan(m, { decision: 'budget', budget: 1.5 } as never)).toThrow(/options\.budget: expected number ≤ 1, found 1.5/);
    expect(() => pass.plan(m, { mode: 'q' } as never)).toThrow(/options\.mode: expected one of "kv", "o", "kv\+o", found "q"/);
    expect(() => pass.plan(m, { select: { include: ['nothing.here'] } } as never)).toThrow(/matched no module. Looked for kinds \[canvas-attention\]/);
    m.dispose();
  });

  it('at τ = 0 the rewritten model equals the dense one step for step (window: prefix and dual shapes)', async () => {
    for (const window of [
      { start: 4, end: L },
      { start: 4, end: 8 },
    ]) {
      const dense = createDiffusionLM(TINY, { seed: 2 });
      const m = createDiffusionLM(TINY, { seed: 2 });
      await lastValueFrom(pass.apply(m, dareOptions.parse({ mode: 'kv+o', threshold: 0 }), { seed: 0, backend: tf.getBackend() }));
      const c1 = createRunContext();
      const c2 = createRunContext();
      const a = twoSteps(dense, canvasIds(3), c1, window);
      const b = twoSteps(m, canvasIds(3), c2, window);
      expect(b.dataSync()).toEqual(a.dataSync());
      const t = readDareStats(c2).totals;
      expect(t.kv?.reused).toBe(0);
      expect(t.records).toBe(4);
      tf.dispose([a, b]);
      c1.state.dispose();
      c2.state.dispose();
      dense.dispose();
      m.dispose();
    }
  });
});

describe('@leanpass/dare on the diffusion sampler', () => {
  beforeAll(async () => {
    await useBackend('wasm');
  });
  const prompts = [
    [3, 5, 7, 1],
    [2, 9],
    [4, 4, 8],
  ];
  const opts = { genLength: 8, blockLength: 4, steps: 8 };

  it('τ = 0 generates exactly what the plain, prefix-cache and dual-cache samplers do, reusing nothing', async () => {
    const dense = createDiffusionLM(TINY, { seed: 4 });
    const m = createDiffusionLM(TINY, { seed: 4 });
    await lastValueFrom(pass.apply(m, dareOptions.parse({ mode: 'kv+o', threshold: 0 }), { seed: 0, backend: tf.getBackend() }));
    for (const cache of ['none', 'prefix', 'dual'] as const) {
      const want = generateDiffusion(dense, prompts, { ...opts, cache });
      let reused = -1;
      const got = generateDiffusion(m, prompts, {
        ...opts,
        cache,
        onGenerationEnd: (ctx) => {
          const t = readDareStats(ctx).totals;
          reused = (t.kv?.reused ?? 0) + (t.o?.reused ?? 0);
        },
      });
      expect(got.tokens).toEqual(want.tokens);
      expect(got.nfe).toBe(want.nfe);
      expect(reused).toBe(0);
    }
    dense.dispose();
    m.dispose();
  });

  it('calibrateThreshold finds a τ reaching a target reuse rate and leaves it set; bad targets and hosts fail', async () => {
    const m = createDiffusionLM(TINY, { seed: 4 });
    await expect(calibrateThreshold(m, prompts, 0.3, { generate: () => [] })).rejects.toThrow(/expects a model rewritten by DARE/);
    await lastValueFrom(pass.apply(m, dareOptions.parse({ mode: 'kv' }), { seed: 0, backend: tf.getBackend() }));
    await expect(calibrateThreshold(m, prompts, 1.5, { generate: () => [] })).rejects.toThrow(/target reuse rate in \[0, 1\], found 1.5/);
    const generate = (model: AnyModule, ps: number[][]): DareStepRecord[] => {
      const recs: DareStepRecord[] = [];
      generateDiffusion(model as DiffusionLM, ps, { ...opts, cache: 'none', onGenerationEnd: (ctx) => recs.push(...readDareStats(ctx).records) });
      return recs;
    };
    const target = 0.35;
    const r = await calibrateThreshold(m, prompts, target, { generate, tolerance: 0.03 });
    expect(r.runs.length).toBeGreaterThan(1);
    expect(r.reuse).toBeGreaterThanOrEqual(target - 0.03);
    // The smallest τ tried that reached the target: every smaller τ tried fell short.
    for (const run of r.runs) if (run.threshold < r.threshold) expect(run.reuse).toBeLessThan(target - 0.03);
    expect((m.get('layers.0.attn') as DareAttention).settings.threshold).toBe(r.threshold);
    const check = summarizeDareStats(generate(m, prompts)).kv!.rate;
    expect(check).toBeCloseTo(r.reuse, 10);
    m.dispose();
  });

  it('interleaved generations equal separate ones; tensors return to their count after each generation', async () => {
    const m = createDiffusionLM(TINY, { seed: 4 });
    await lastValueFrom(pass.apply(m, dareOptions.parse({ mode: 'kv+o', threshold: 0.05 }), { seed: 0, backend: tf.getBackend() }));
    const a = generateDiffusion(m, prompts, { ...opts, cache: 'prefix' });
    const before = tf.memory().numTensors;
    const b = generateDiffusion(m, [[1, 2, 3]], { ...opts, cache: 'prefix' });
    expect(tf.memory().numTensors).toBe(before);
    const ga = startGeneration(m, prompts, { ...opts, cache: 'prefix' });
    const gb = startGeneration(m, [[1, 2, 3]], { ...opts, cache: 'prefix' });
    while (!ga.done || !gb.done) {
      if (!ga.done) ga.step();
      if (!gb.done) gb.step();
    }
    expect(ga.result().tokens).toEqual(a.tokens);
    expect(gb.result().tokens).toEqual(b.tokens);
    ga.dispose();
    gb.dispose();
    expect(tf.memory().numTensors).toBe(before);
    m.dispose();
  });
});
