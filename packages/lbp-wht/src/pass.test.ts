import * as tf from '@tensorflow/tfjs';
import { ConfigError, Rng, createRunContext, deserializeModel, parsePassOptions, registry, savedForBackward, serializeModel, useBackend, type AnyModule, type PassContext } from '@leanpass/core';
import { applyToEnd, passConformance } from '@leanpass/core/testing';
import { beforeAll, describe, expect, it } from 'vitest';
import { TestConvNet, makeTestNet } from './host.test-util.js';
import type { LbpLinear} from './layer.js';
import { LBP_LINEAR_KIND, lbpFlops } from './layer.js';
import { optionsSchema, pass, type LbpWhtOptions } from './index.js';
import { randn, relErr } from './reference.test-util.js';
import { baseMatrix } from './wht.js';

const input = (seed = 7, E = 1, H = 8): tf.Tensor => randn([2, E + H * H, 6], seed);

function opts(raw: object = {}): LbpWhtOptions {
  return parsePassOptions(pass, raw);
}

/** Gradients of Σ model(x) ⊙ r with respect to every trainable parameter, by path, in train mode. */
function paramGrads(model: AnyModule, x: tf.Tensor, r: tf.Tensor): Map<string, Float32Array> {
  const params = [...model.namedParams()];
  const vars = params.map(([, p]) => p.variable);
  const ctx = createRunContext({ mode: 'train' });
  const { grads, value } = tf.variableGrads(() => tf.sum<tf.Scalar>(tf.mul(model.call(x, ctx) as tf.Tensor, r)), vars);
  value.dispose();
  const out = new Map<string, Float32Array>();
  for (const [path, p] of params) {
    const g = grads[p.variable.name];
    if (g) out.set(path, g.dataSync() as Float32Array);
  }
  tf.dispose(Object.values(grads));
  return out;
}

/**
 * Relative error, except for gradients that are zero up to rounding (attention's key bias: softmax is
 * shift-invariant), which are compared against the typical gradient size instead.
 */
function closeGrad(a: Float32Array, b: Float32Array): number {
  let nb = 0;
  let nd = 0;
  for (let i = 0; i < b.length; i++) {
    nb += (b[i] as number) ** 2;
    nd += ((a[i] as number) - (b[i] as number)) ** 2;
  }
  return Math.sqrt(nd) / Math.max(Math.sqrt(nb), 1e-3 * Math.sqrt(b.length));
}

passConformance({
  pass,
  makeModel: (seed) => makeTestNet(seed),
  makeInput: () => input(),
  options: { order: 4, bases: { type: 'lpL1', rank: 2 } },
});

describe('options', () => {
  it('defaults: order 8, LP_L1-3 (K = 6), padMode zeroX, grid auto', () => {
    expect(optionsSchema.parse({})).toEqual({ order: 8, bases: { type: 'lpL1', rank: 3 }, padMode: 'zeroX', grid: 'auto', extraTokens: 'auto', select: {}, overrides: [] });
  });

  it('rejects an order that is not a power of two, a rank beyond o², repeated or out-of-range pairs — naming the field', () => {
    const msg = (raw: object): string => {
      try {
        parsePassOptions(pass, raw);
      } catch (e) {
        expect(e).toBeInstanceOf(ConfigError);
        return (e as Error).message;
      }
      throw new Error('parsed');
    };
    expect(msg({ order: 6 })).toMatch(/options\.order: expected a power of two ≥ 2.*found 6/);
    expect(msg({ order: 4, bases: { type: 'lpL1', rank: 8 } })).toMatch(/options\.bases\.rank: expected rank ≤ 2·order − 1 = 7 for order 4.*found 8/);
    expect(msg({ order: 4, bases: { type: 'lpLinf', rank: 5 } })).toMatch(/options\.bases\.rank: expected rank ≤ order = 4.*found 5/);
    expect(msg({ order: 2, bases: { type: 'energy', k: 5 } })).toMatch(/options\.bases\.k: expected k ≤ order² = 4, found 5/);
    expect(msg({ order: 4, bases: { type: 'list', pairs: [[0, 0], [0, 0]] } })).toMatch(/options\.bases\.pairs\[1\]: base \[0, 0\] is listed twice/);
    expect(msg({ order: 4, bases: { type: 'list', pairs: [[4, 0]] } })).toMatch(/options\.bases\.pairs\[0\]: expected 0 ≤ i, j < order = 4, found \[4, 0\]/);
    expect(msg({ bases: { type: 'lpL1', rank: 3, k: 2 } })).toMatch(/unknown key 'k'/);
    expect(msg({ padMode: 'edge' })).toMatch(/options\.padMode: expected one of "zeroX", "zero", "reflect"/);
    // overrides: the combined (order, bases) of each is checked, naming the override
    expect(msg({ overrides: [{ include: ['*.attn.*'], order: 3 }] })).toMatch(/options\.overrides\[0\]\.order: expected a power of two ≥ 2.*found 3/);
    expect(msg({ bases: { type: 'lpL1', rank: 6 }, overrides: [{ include: ['*.attn.*'], order: 2 }] })).toMatch(/options\.overrides\[0\]\.bases\.rank: expected rank ≤ 2·order − 1 = 3 for order 2.*found 6/);
    expect(msg({ overrides: [{ include: ['*.attn.*'] }] })).toMatch(/options\.overrides\[0\]: expected an order and\/or bases to override, found neither/);
    expect(msg({ overrides: [{ include: ['re:(['], order: 4 }] })).toMatch(/options\.overrides\[0\]\.include\[0\]: bad regular expression/);
    expect(msg({ overrides: [{ include: [], order: 4 }] })).toMatch(/options\.overrides\[0\]\.include/);
  });
});

describe('plan', () => {
  beforeAll(async () => {
    await useBackend('cpu');
  });

  it('rewrites the linears under a gridded ancestor and skips the embedding and the head', () => {
    const model = makeTestNet(0);
    const plan = pass.plan(model, opts());
    expect(plan.entries.map((e) => e.path)).toEqual(['b0.attn.q', 'b0.attn.k', 'b0.attn.v', 'b0.attn.o', 'b0.mlp.fc1', 'b0.mlp.fc2', 'b1.attn.q', 'b1.attn.k', 'b1.attn.v', 'b1.attn.o', 'b1.mlp.fc1', 'b1.mlp.fc2']);
    const e = plan.entries[0];
    expect(e?.action).toBe(LBP_LINEAR_KIND);
    expect(e?.detail).toMatchObject({ grid: [8, 8], extraTokens: 1, K: 6, patchesPerSample: 1 });
    expect(e?.reason).toMatch(/LP_L1-3 \(K = 6\) per 8×8 patch of a 8×8 grid \(from 'b0'\) \+ 1 exact token/);
    model.dispose();
  });

  it('follows the selector, the grid / extraTokens options, and fails clearly when nothing is on a grid', () => {
    const model = makeTestNet(0);
    expect(pass.plan(model, opts({ select: { include: ['*.mlp.*'] } })).entries.map((e) => e.path)).toEqual(['b0.mlp.fc1', 'b0.mlp.fc2', 'b1.mlp.fc1', 'b1.mlp.fc2']);
    // an explicit grid applies to every selected linear, the head and embedding included
    const all = pass.plan(model, opts({ grid: [8, 8], extraTokens: 1 }));
    expect(all.entries.map((e) => e.path)).toContain('head');
    expect(() => pass.plan(model, opts({ select: { include: ['head', 'embed'] } }))).toThrow(/nothing to rewrite: it looks for kinds \[linear, conv2d\] on a token grid[^]*'head': no token grid/);
    expect(() => pass.plan(model, opts({ select: { include: ['no.such'] } }))).toThrow(/matched no module. Looked for kinds \[linear, conv2d\]/);
    model.dispose();
  });

  it('rejects reflect padding that the grid cannot take, naming the layer and the sides', () => {
    const model = makeTestNet(0, { tokenGrid: [2, 2], extraTokens: 0 });
    expect(() => pass.plan(model, opts({ padMode: 'reflect' }))).toThrow(/layer 'b0.attn.q' has a 2×2 grid and padMode 'reflect': reflect padding to a multiple of 8 needs each pad ≤ side − 1 \(rows: pads 3\/3 on a side of 2/);
    expect(pass.plan(model, opts({ padMode: 'zero' })).entries).toHaveLength(12);
    model.dispose();
  });

  it('per-layer overrides: the first matching one sets order and/or bases; one that matches nothing fails', async () => {
    const model = makeTestNet(0);
    const o = opts({ overrides: [{ include: ['b0.attn.*'], order: 4 }, { include: ['*.attn.*', 'b1.mlp.fc2'], bases: { type: 'dc' } }] });
    const plan = pass.plan(model, o);
    const by = new Map(plan.entries.map((e) => [e.path, e.detail]));
    expect(by.get('b0.attn.q')).toMatchObject({ order: 4, K: 6, patchesPerSample: 4, override: 0 }); // order 4, top-level LP_L1-3
    expect(by.get('b1.attn.v')).toMatchObject({ order: 8, K: 1, override: 1 }); // the first override took b0.attn.*
    expect(by.get('b1.mlp.fc2')).toMatchObject({ order: 8, K: 1, override: 1 });
    expect(by.get('b0.mlp.fc1')).toMatchObject({ order: 8, K: 6 });
    expect(by.get('b0.mlp.fc1')).not.toHaveProperty('override');
    expect(plan.entries.find((e) => e.path === 'b0.attn.q')?.reason).toMatch(/LP_L1-3 \(K = 6\) per 4×4 patch of a 8×8 grid.*\[override 0\]/);
    // the rewritten layers carry their own settings
    await applyToEnd(pass, model, o, { seed: 0, backend: 'cpu' });
    const cfg = (p: string): LbpLinear['config'] => (model.get(p) as LbpLinear).config;
    expect([cfg('b0.attn.q').order, cfg('b0.attn.q').bases.length]).toEqual([4, 6]);
    expect([cfg('b1.attn.q').order, cfg('b1.attn.q').bases]).toEqual([8, [[0, 0]]]);
    expect([cfg('b1.mlp.fc1').order, cfg('b1.mlp.fc1').bases.length]).toEqual([8, 6]);
    model.dispose();
    const fresh = makeTestNet(0);
    expect(() => pass.plan(fresh, opts({ select: { include: ['*.mlp.*'] }, overrides: [{ include: ['*.attn.*'], order: 4 }] }))).toThrow(
      /overrides\[0\] \(include \[\*\.attn\.\*\]\) applies to none of the rewritten layers[^]*b0\.mlp\.fc1/,
    );
    expect(() => pass.plan(fresh, opts({ overrides: [{ include: ['**'], order: 4 }, { include: ['b0.*'], order: 2 }] }))).toThrow(/overrides\[1\][^]*an earlier override may take them/);
    fresh.dispose();
  });

  it('takes 1×1 stride-1 convolutions and leaves the 3×3 one', () => {
    const model = new TestConvNet({ channels: 4 }, { rng: new Rng(1) });
    const plan = pass.plan(model, opts({ order: 4 }));
    expect(plan.entries.map((e) => [e.path, e.kind])).toEqual([['pw', 'conv2d']]);
    model.dispose();
  });
});

describe('apply', () => {
  beforeAll(async () => {
    await useBackend('cpu');
  });

  for (const backend of ['cpu', 'wasm'] as const) {
    it(`keeps the forward bit-identical in eval and train modes, and full rank gives the dense gradients (${backend})`, async () => {
      await useBackend(backend);
      const dense = makeTestNet(3);
      const model = makeTestNet(3);
      const { report } = await applyToEnd(pass, model, { bases: { type: 'full' } }, { seed: 0, backend });
      expect(report.modules).toHaveLength(12);
      expect(model.get('b0.mlp.fc1').kind).toBe(LBP_LINEAR_KIND);
      const x = input(11);
      for (const mode of ['eval', 'train'] as const) {
        const a = tf.tidy(() => dense.call(x, createRunContext({ mode })).dataSync());
        const b = tf.tidy(() => model.call(x, createRunContext({ mode })).dataSync());
        expect(Array.from(b)).toEqual(Array.from(a));
      }
      const r = randn([2, 3], 12);
      const gd = paramGrads(dense, x, r);
      const gl = paramGrads(model, x, r);
      expect([...gl.keys()].sort()).toEqual([...gd.keys()].sort());
      for (const [path, g] of gd) expect(closeGrad(gl.get(path) as Float32Array, g), path).toBeLessThan(1e-4);
      tf.dispose([x, r]);
      dense.dispose();
      model.dispose();
    });
  }

  it('K < o²: only the rewritten layers’ weight gradients change; biases, norms and the head stay exact', async () => {
    await useBackend('cpu');
    const dense = makeTestNet(4);
    const model = makeTestNet(4);
    await applyToEnd(pass, model, { select: { include: ['b1.mlp.*'] } }, { seed: 0, backend: 'cpu' });
    const x = input(13);
    const r = randn([2, 3], 14);
    const gd = paramGrads(dense, x, r);
    const gl = paramGrads(model, x, r);
    const err = (path: string): number => relErr(gl.get(path) as Float32Array, gd.get(path) as Float32Array);
    // the projected layers' weights are approximate; everything downstream of them is exact
    expect(err('b1.mlp.fc1.weight')).toBeGreaterThan(1e-3);
    expect(err('b1.mlp.fc2.weight')).toBeGreaterThan(1e-3);
    for (const path of ['norm.weight', 'norm.bias', 'head.weight', 'head.bias']) expect(err(path), path).toBeLessThan(1e-5);
    // fc2's bias is exact: it sees the unprojected output gradient
    expect(relErr(gl.get('b1.mlp.fc2.bias') as Float32Array, gd.get('b1.mlp.fc2.bias') as Float32Array)).toBeLessThan(1e-5);
    tf.dispose([x, r]);
    dense.dispose();
    model.dispose();
  });

  it('saves far less for backward in the rewritten layers, and frees everything after a step', async () => {
    await useBackend('cpu');
    const dense = makeTestNet(5, { tokenGrid: [16, 16], extraTokens: 0 });
    const model = makeTestNet(5, { tokenGrid: [16, 16], extraTokens: 0 });
    await applyToEnd(pass, model, {}, { seed: 0, backend: 'cpu' });
    const x = input(15, 0, 16);
    const run = (m: AnyModule) => savedForBackward(() => tf.sum<tf.Scalar>(m.call(x, createRunContext({ mode: 'train' })) as tf.Tensor));
    const before = tf.memory().numTensors;
    const sd = run(dense);
    const sl = run(model);
    expect(tf.memory().numTensors).toBe(before);
    expect(sl.bytes).toBeLessThan(sd.bytes);
    // one layer alone: K·P/N of the input (6·4/256)
    const fc1 = model.get('b0.mlp.fc1') as LbpLinear;
    const h = randn([2, 256, 16], 16);
    const one = savedForBackward(() => tf.sum<tf.Scalar>(fc1.call(h, createRunContext({ mode: 'train' }))));
    expect(one.byKernel['forward']).toBe(4 * 6 * 2 * 4 * 16);
    tf.dispose([x, h]);
    dense.dispose();
    model.dispose();
  });

  it('round-trips through save and load with its bases, grid and marks', async () => {
    await useBackend('cpu');
    const model = makeTestNet(6);
    await applyToEnd(pass, model, { order: 4, bases: { type: 'list', pairs: [[0, 0], [2, 1]] } }, { seed: 0, backend: 'cpu' });
    const { config, weights } = await serializeModel(model);
    const loaded = deserializeModel(JSON.parse(JSON.stringify(config)) as unknown, weights, { registry });
    const m = loaded.get('b1.attn.v') as LbpLinear;
    expect(m.kind).toBe(LBP_LINEAR_KIND);
    expect(m.config).toMatchObject({ order: 4, bases: [[0, 0], [2, 1]], grid: [8, 8], extraTokens: 1, wraps: 'linear' });
    expect(m.mark).toBe(pass.name);
    const x = input(17);
    const r = randn([2, 3], 18);
    const ga = paramGrads(model, x, r);
    const gb = paramGrads(loaded, x, r);
    for (const [path, g] of ga) expect(Array.from(gb.get(path) as Float32Array), path).toEqual(Array.from(g));
    tf.dispose([x, r]);
    model.dispose();
    loaded.dispose();
  });

  it('rewrites a 1×1 conv: same forward, full-rank gradients equal the conv’s', async () => {
    await useBackend('cpu');
    const conv = new TestConvNet({ channels: 3 }, { rng: new Rng(2) });
    const model = new TestConvNet({ channels: 3 }, { rng: new Rng(2) });
    await applyToEnd(pass, model, { order: 4, bases: { type: 'full' } }, { seed: 0, backend: 'cpu' });
    expect(model.get('pw').kind).toBe(LBP_LINEAR_KIND);
    expect(model.get('pw').param('weight').shape).toEqual([1, 1, 3, 6]);
    const x = randn([2, 8, 8, 3], 19);
    const r = randn([2, 3], 20);
    const a = tf.tidy(() => conv.call(x, createRunContext({ mode: 'train' })).dataSync());
    const b = tf.tidy(() => model.call(x, createRunContext({ mode: 'train' })).dataSync());
    expect(Array.from(b)).toEqual(Array.from(a));
    const ga = paramGrads(conv, x, r);
    const gb = paramGrads(model, x, r);
    for (const [path, g] of ga) expect(relErr(gb.get(path) as Float32Array, g), path).toBeLessThan(1e-4);
    tf.dispose([x, r]);
    conv.dispose();
    model.dispose();
  });

  it('checks the token count per call: a sequence that is not E + H·W tokens fails clearly', async () => {
    await useBackend('cpu');
    const model = makeTestNet(7);
    await applyToEnd(pass, model, {}, { seed: 0, backend: 'cpu' });
    const x = randn([2, 60, 6], 1);
    expect(() => model.call(x, createRunContext({ mode: 'train' }))).toThrow(/lbp-wht\.linear: expected 1 extra token\(s\) \+ a 8×8 grid = 65 tokens, found 60/);
    x.dispose();
    model.dispose();
  });

  it('reports analytic backward FLOPs below dense (projections included)', () => {
    const f = lbpFlops([16, 256, 384], { inFeatures: 384, outFeatures: 384, bias: true, order: 8, bases: [[0, 0], [0, 1], [1, 0], [0, 2], [1, 1], [2, 0]], grid: [16, 16], extraTokens: 0 });
    // dense backward 4·N·C² + N·C; LBP: 4·R·C² + 2·K·N′·3C + N·C with R = K·P = 6·64
    const N = 16 * 256;
    expect(f.denseBackward).toBe(4 * N * 384 * 384 + N * 384);
    expect(f.backward).toBe(4 * 384 * 384 * 384 + 2 * 6 * N * 3 * 384 + N * 384);
    expect(f.backward / f.denseBackward).toBeLessThan(0.2);
  });
});

describe('energy-based bases', () => {
  it('profiles each layer’s input on calibration batches and keeps DC plus the most energetic bases', async () => {
    await useBackend('cpu');
    // inputs: one 8×8 pattern (WHT base (2, 3)) in every patch, times random channel vectors, plus small noise;
    // the embedding is a per-token linear map, so every block's first layer input keeps that structure
    const pattern = baseMatrix(8, [[2, 3]]);
    const mk = (seed: number): tf.Tensor => {
      const rng = new Rng(seed);
      const data = new Float32Array(2 * 65 * 6);
      for (let b = 0; b < 2; b++) {
        const chan = rng.normalArray(6);
        for (let t = 0; t < 64; t++) for (let c = 0; c < 6; c++) data[(b * 65 + 1 + t) * 6 + c] = (pattern[t] as number) * (chan[c] as number) + 0.01 * rng.normal();
      }
      return tf.tensor(data, [2, 65, 6]);
    };
    const model = makeTestNet(8);
    const ctx: PassContext = {
      seed: 0,
      backend: 'cpu',
      calibration: {
        sampleCap: 4,
        batches: async function* () {
          for (const make of [() => mk(1), () => ({ x: mk(2) }), () => mk(3)]) yield await Promise.resolve(make());
        },
      },
    };
    const before = tf.memory().numTensors;
    const { report } = await applyToEnd(pass, model, { bases: { type: 'energy', k: 2 }, select: { include: ['*.attn.q'] } }, ctx);
    expect(report.modules).toEqual(['b0.attn.q', 'b1.attn.q']);
    expect((model.get('b0.attn.q') as LbpLinear).config.bases).toEqual([
      [0, 0],
      [2, 3],
    ]);
    // no probe left behind, no tensor leaked besides the new layers' parameters (copies of the old ones)
    expect([...model.modules()].some(([, m]) => m.kind === 'lbp-wht.probe')).toBe(false);
    expect(tf.memory().numTensors).toBe(before);
    await expect(applyToEnd(pass, makeTestNet(9), { bases: { type: 'energy', k: 2 } }, { seed: 0, backend: 'cpu' })).rejects.toThrow(/needs calibration batches/);
    model.dispose();
  });
});
