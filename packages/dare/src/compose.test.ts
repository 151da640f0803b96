import * as tf from '@tensorflow/tfjs';
import { lastValueFrom } from 'rxjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { cloneModel, useBackend, type AnyModule, type PassContext } from '@leanpass/core';
import { createDiffusionLM, generateDiffusion, type DiffusionLM } from '@leanpass/models';
// eslint-disable-next-line @nx/enforce-module-boundaries -- the composition test (issue 7) runs SkipCat then DARE; library code never imports another pass
import { pass as skipcat, randomIdBatches, skipcatOptions } from '@leanpass/skipcat';
import { DareAttention, dareOptions, pass, readDareStats } from './index.js';
import { TINY } from './harness.test-util.js';

const prompts = [
  [3, 5, 7, 1],
  [2, 9],
];
const opts = { genLength: 8, blockLength: 4, steps: 8, cache: 'dual' as const };

async function compressed(): Promise<AnyModule> {
  const m = createDiffusionLM(TINY, { seed: 6 });
  const ctx: PassContext = { seed: 0, backend: tf.getBackend(), calibration: randomIdBatches(TINY.vocabSize - 1, 2, 4, 12, 1) };
  await lastValueFrom(skipcat.apply(m, skipcatOptions.parse({ ratio: 0.2 }), ctx));
  return m;
}

describe('SkipCat then DARE', () => {
  beforeAll(async () => {
    await useBackend('wasm');
  });

  it('plans over SkipCat-compressed linears, equals SkipCat alone at τ = 0 and reuses K/V through the Cat group at τ > 0', async () => {
    const sc = await compressed();
    expect(sc.get('layers.0.attn.q').kind).toBe('skipcat.cat');
    expect(sc.get('layers.0.attn.k').kind).toBe('skipcat.slice');
    const plan = pass.plan(sc, dareOptions.parse({}));
    expect(plan.entries.map((e) => e.path)).toEqual(['layers.0.attn', 'layers.1.attn']);
    const want = generateDiffusion(sc as DiffusionLM, prompts, opts);

    const both = await cloneModel(sc);
    await lastValueFrom(pass.apply(both, dareOptions.parse({ mode: 'kv+o', threshold: 0 }), { seed: 0, backend: tf.getBackend() }));
    expect(both.provenance.map((p) => p.pass)).toEqual(['@leanpass/skipcat', '@leanpass/dare']);
    expect(both.get('layers.0.attn.q').kind).toBe('skipcat.cat');
    expect(generateDiffusion(both as DiffusionLM, prompts, opts).tokens).toEqual(want.tokens);

    for (const [, m] of both.modules()) if (m instanceof DareAttention) m.updateSettings({ mode: 'kv', threshold: 'inf' });
    let rate = -1;
    const r = generateDiffusion(both as DiffusionLM, prompts, { ...opts, onGenerationEnd: (ctx) => (rate = readDareStats(ctx).totals.kv?.rate ?? -1) });
    expect(r.tokens.length).toBe(2);
    expect(rate).toBeGreaterThan(0.3);
    sc.dispose();
    both.dispose();
  });
});
