import * as tf from '@tensorflow/tfjs';
import { lastValueFrom, toArray } from 'rxjs';
import { ConfigError, Module, Rng, deserializeModel, registry, serializeModel, useBackend, type AnyModule, type PassEvent, type PassReport } from '@leanpass/core';
import { passConformance } from '@leanpass/core/testing';
import { Linear } from '@leanpass/nn';
import { beforeAll, describe, expect, it } from 'vitest';
import type { LowRankLinear } from './index.js';
import { CALIBRATION_EXTRA, calibrate, denseEquivalent, denseInputFactor, pass, planUnits, skipcatOptions, type SkipcatOptions } from './index.js';
import { evalCtx, makeToyLm, randomIdBatches, type ToyLmConfig } from './toy.js';

const CFG: ToyLmConfig = { vocab: 32, dim: 16, layers: 2, heads: 4, kvHeads: 2, hidden: 24, ropeBase: 10000 };

function ids(seed: number, B = 2, T = 12): tf.Tensor2D {
  const rng = new Rng(seed);
  return tf.tensor2d(Int32Array.from({ length: B * T }, () => rng.int(CFG.vocab)), [B, T], 'int32');
}

async function apply(model: AnyModule, raw: Partial<SkipcatOptions>, cal = randomIdBatches(CFG.vocab, 4, 4, 16, 7)): Promise<PassReport> {
  const events: PassEvent[] = await lastValueFrom(pass.apply(model, skipcatOptions.parse(raw), { seed: 0, backend: tf.getBackend(), calibration: cal }).pipe(toArray()));
  const done = events.find((e) => e.type === 'done');
  if (!done || done.type !== 'done') throw new Error('no done event');
  return done.report;
}

function logits(model: AnyModule, x: tf.Tensor): Float32Array {
  return tf.tidy(() => (model.call(x, evalCtx()) as tf.Tensor).dataSync() as Float32Array);
}

function relDiff(a: Float32Array, b: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += ((a[i] as number) - (b[i] as number)) ** 2;
    den += (b[i] as number) ** 2;
  }
  return Math.sqrt(num / den);
}

function snapshot(model: AnyModule): string {
  return JSON.stringify([model.toNode(), [...model.namedParams()].map(([p, v]) => [p, Array.from(v.variable.dataSync().slice(0, 4))])]);
}

describe('@leanpass/skipcat on a LLaMA-shaped toy LM', () => {
  beforeAll(async () => {
    await useBackend('cpu');
  });

  it('plans Cat groups, Skip singles and the down fold', () => {
    const m = makeToyLm(CFG, 1);
    const units = planUnits(m, skipcatOptions.parse({}));
    expect(units.map((u) => u.members.map((x) => x.name).join('+'))).toEqual(['q+k+v', 'o', 'gate+up', 'down', 'q+k+v', 'o', 'gate+up', 'down']);
    expect(units.filter((u) => u.foldInto).map((u) => u.foldInto)).toEqual(['layer0.mlp.down', 'layer1.mlp.down']);
    const plain = planUnits(m, skipcatOptions.parse({ method: 'svd-llm' }));
    expect(plain).toHaveLength(14);
    const plan = pass.plan(m, skipcatOptions.parse({}));
    expect(plan.entries.map((e) => e.action).slice(0, 4)).toEqual(['skipcat.cat', 'skipcat.slice', 'skipcat.slice', 'skipcat.linear']);
    m.dispose();
  });

  it('ratio 0 leaves the outputs unchanged (every method)', async () => {
    const x = ids(3);
    for (const method of ['skipcat', 'svd-llm', 'cat', 'skip', 'svd', 'asvd'] as const) {
      const m = makeToyLm(CFG, 1);
      const before = logits(m, x);
      await apply(m, { ratio: 0, method });
      expect(relDiff(logits(m, x), before), method).toBeLessThan(1e-5);
      m.dispose();
    }
    x.dispose();
  });

  it('20 %: linear parameters ≤ 80 % of dense, solved ranks reported, model still close', async () => {
    const m = makeToyLm(CFG, 1);
    const x = ids(4);
    const before = logits(m, x);
    const rep = await apply(m, { ratio: 0.2 });
    const lp = rep.measured?.['linearParams'] as { before: number; after: number; ratio: number };
    expect(lp.before).toBe(2 * (16 * 16 + 2 * 16 * 8 + 16 * 16 + 3 * 16 * 24));
    expect(lp.ratio).toBeLessThanOrEqual(0.8);
    expect(lp.ratio).toBeGreaterThan(0.7);
    // The model's parameter count dropped by exactly the linear savings.
    expect(rep.params.before - rep.params.after).toBe(lp.before - lp.after);
    const kinds = [...m.modules()].map(([, mm]) => mm.kind);
    expect(kinds.filter((k) => k === 'skipcat.cat')).toHaveLength(4);
    expect(kinds.filter((k) => k === 'skipcat.slice')).toHaveLength(6);
    expect(kinds.filter((k) => k === 'skipcat.linear')).toHaveLength(4);
    expect(relDiff(logits(m, x), before)).toBeLessThan(0.5);
    m.dispose();
    x.dispose();
  });

  it('SkipCat beats SVD-LLM at an equal budget on the calibration distribution', async () => {
    const x = ids(5, 4, 16);
    const errs: Record<string, number> = {};
    for (const method of ['skipcat', 'svd-llm', 'svd'] as const) {
      const m = makeToyLm(CFG, 1);
      const before = logits(m, x);
      await apply(m, { ratio: 0.4, method });
      errs[method] = relDiff(logits(m, x), before);
      m.dispose();
    }
    expect(errs['skipcat']).toBeLessThan(errs['svd-llm'] as number);
    x.dispose();
  });

  it('the fold, gatherND and dense-A paths compute the same function', async () => {
    const x = ids(6);
    const a = makeToyLm(CFG, 1);
    const b = makeToyLm(CFG, 1);
    await apply(a, { ratio: 0.3, fold: true, inference: 'gather' });
    await apply(b, { ratio: 0.3, fold: false, inference: 'gather' });
    expect((a.get('layer0.mlp.down') as LowRankLinear).config.skip?.inputPermuted).toBe(true);
    expect((b.get('layer0.mlp.down') as LowRankLinear).config.skip?.inputPermuted).toBe(false);
    expect(relDiff(logits(a, x), logits(b, x))).toBeLessThan(1e-5);
    // The dense-A run-time path (and 'auto', which picks it for few rows) gives the same logits.
    const c = makeToyLm(CFG, 1);
    await apply(c, { ratio: 0.3, fold: true, inference: 'dense-a' });
    expect(relDiff(logits(c, x), logits(a, x))).toBeLessThan(1e-5);
    c.dispose();
    // Dense-A: h = x·Ã equals the gathered latent.
    const o = b.get('layer1.attn.o') as LowRankLinear;
    tf.tidy(() => {
      const rows = tf.randomNormal<tf.Rank.R2>([5, 16], 0, 1, 'float32', 3);
      const viaGather = o.latent(rows);
      const viaDense = tf.matMul(rows, denseInputFactor(o));
      expect(relDiff(viaGather.dataSync() as Float32Array, viaDense.dataSync() as Float32Array)).toBeLessThan(1e-5);
    });
    a.dispose();
    b.dispose();
    x.dispose();
  });

  it('a compressed unit equals its dense reference', async () => {
    const m = makeToyLm(CFG, 2);
    await apply(m, { ratio: 0.25 });
    const head = m.get('layer0.attn.q') as LowRankLinear;
    const ref = denseEquivalent(head);
    tf.tidy(() => {
      const rows = tf.randomNormal<tf.Rank.R2>([3, 16], 0, 1, 'float32', 4);
      const ctx = evalCtx();
      const q = head.call(rows, ctx);
      const k = m.get('layer0.attn.k').call(rows, ctx) as tf.Tensor;
      const v = m.get('layer0.attn.v').call(rows, ctx) as tf.Tensor;
      const dense = tf.matMul(rows, tf.tensor2d(Float32Array.from(ref.weight), [ref.rows, ref.cols]));
      const got = tf.concat([q, k, v], 1);
      expect(relDiff(got.dataSync() as Float32Array, dense.dataSync() as Float32Array)).toBeLessThan(1e-5);
    });
    m.dispose();
  });

  it('a slice member called without its head fails clearly', async () => {
    const m = makeToyLm(CFG, 2);
    await apply(m, { ratio: 0.25 });
    tf.tidy(() => {
      const rows = tf.ones([2, 16]);
      expect(() => m.get('layer0.attn.k').call(rows, evalCtx()) as unknown).toThrow(/expected its group head .* to have run first on the same input tensor/);
    });
    m.dispose();
  });

  it('seeded calibration is deterministic: the same weights bit for bit', async () => {
    const a = makeToyLm(CFG, 1);
    const b = makeToyLm(CFG, 1);
    await apply(a, { ratio: 0.3 });
    await apply(b, { ratio: 0.3 });
    const pa = [...a.namedParams()];
    const pb = [...b.namedParams()];
    expect(pb.map(([p]) => p)).toEqual(pa.map(([p]) => p));
    pa.forEach(([, va], i) => {
      expect(Array.from(pb[i]?.[1].variable.dataSync() ?? [])).toEqual(Array.from(va.variable.dataSync()));
    });
    a.dispose();
    b.dispose();
  });

  it('statistics handed in through ctx.extras give the same result as calibrating inside the pass', async () => {
    const a = makeToyLm(CFG, 1);
    const b = makeToyLm(CFG, 1);
    await apply(a, { ratio: 0.3 });
    const units = planUnits(b, skipcatOptions.parse({ method: 'svd' }));
    const linears = units.flatMap((u) => u.members.map((m) => ({ path: m.path, module: m.module, n: u.n })));
    const cal = await calibrate(b, linears, randomIdBatches(CFG.vocab, 4, 4, 16, 7), { maxSamples: 128, who: 'test', signal: new AbortController().signal });
    await lastValueFrom(pass.apply(b, skipcatOptions.parse({ ratio: 0.3 }), { seed: 0, backend: tf.getBackend(), calibration: randomIdBatches(CFG.vocab, 1, 1, 1, 0), extras: { [CALIBRATION_EXTRA]: cal } }));
    const x = ids(12);
    expect(Array.from(logits(b, x))).toEqual(Array.from(logits(a, x)));
    a.dispose();
    b.dispose();
    x.dispose();
  });

  it('saves and loads the compressed model', async () => {
    const m = makeToyLm(CFG, 1);
    await apply(m, { ratio: 0.2 });
    const { config, weights } = await serializeModel(m);
    const back = deserializeModel(config, weights, { registry });
    const x = ids(8);
    expect(relDiff(logits(back, x), logits(m, x))).toBeLessThan(1e-6);
    m.dispose();
    back.dispose();
    x.dispose();
  });

  describe('bad input → clear errors, model untouched', () => {
    it('a model with no linear layers', () => {
      class NoLinear extends Module<tf.Tensor, tf.Tensor> {
        readonly kind = 'test.nolinear';
        forward(x: tf.Tensor): tf.Tensor {
          return x;
        }
      }
      expect(() => pass.plan(new NoLinear({}), skipcatOptions.parse({}))).toThrow(/matched no module. Looked for kinds \[linear\]/);
    });

    it('linears that are not decoder linears', () => {
      class Wrap extends Module<tf.Tensor, tf.Tensor> {
        readonly kind = 'test.wrap';
        constructor() {
          super({});
          this.addChild('fc', new Linear({ inFeatures: 4, outFeatures: 4 }, { rng: new Rng(0) }));
        }
        forward(x: tf.Tensor): tf.Tensor {
          return x;
        }
      }
      expect(() => pass.plan(new Wrap(), skipcatOptions.parse({}))).toThrow(/none is a decoder linear named q\/k\/v\/o\/gate\/up\/down; set layers: 'all'/);
    });

    it.each([1, -0.1, 1.5])('ratio %s outside [0, 1)', async (ratio) => {
      const m = makeToyLm(CFG, 1);
      const snap = snapshot(m);
      await expect(lastValueFrom(pass.apply(m, { ratio } as unknown as SkipcatOptions, { seed: 0, backend: 'cpu', calibration: randomIdBatches(CFG.vocab, 1, 2, 16, 0) }))).rejects.toThrow(ConfigError);
      await expect(lastValueFrom(pass.apply(m, { ratio } as unknown as SkipcatOptions, { seed: 0, backend: 'cpu', calibration: randomIdBatches(CFG.vocab, 1, 2, 16, 0) }))).rejects.toThrow(/options\.ratio: expected number/);
      expect(snapshot(m)).toBe(snap);
      m.dispose();
    });

    it('calibration ids outside the vocabulary', async () => {
      const m = makeToyLm(CFG, 1);
      const snap = snapshot(m);
      await expect(apply(m, {}, randomIdBatches(CFG.vocab * 4, 2, 2, 16, 0))).rejects.toThrow(/token ids must lie in \[0, 32\) \(the model's vocabulary\), found ids in \[\d+, \d+\]/);
      expect(snapshot(m)).toBe(snap);
      // The calibration hooks were removed.
      expect(Object.prototype.hasOwnProperty.call(m.get('layer0.attn.q'), 'forward')).toBe(false);
      m.dispose();
    });

    it('too few tokens for a full-rank Gram', async () => {
      const m = makeToyLm(CFG, 1);
      const snap = snapshot(m);
      await expect(apply(m, {}, randomIdBatches(CFG.vocab, 1, 1, 10, 0))).rejects.toThrow(/too few calibration tokens: 'layer0.attn.q' saw 10 token rows, its 16 inputs need at least 16/);
      expect(snapshot(m)).toBe(snap);
      m.dispose();
    });

    it('no calibration in the context', async () => {
      const m = makeToyLm(CFG, 1);
      await expect(lastValueFrom(pass.apply(m, skipcatOptions.parse({}), { seed: 0, backend: 'cpu' }))).rejects.toThrow(/requires calibration batches/);
      m.dispose();
    });
  });
});

passConformance({
  pass,
  makeModel: (seed) => makeToyLm({ ...CFG, layers: 1 }, seed),
  makeInput: () => ids(11, 2, 8),
  options: { ratio: 0.3 },
  context: () => ({ seed: 0, backend: tf.getBackend(), calibration: randomIdBatches(CFG.vocab, 2, 4, 16, 3) }),
  tolerance: 1e-5,
});
