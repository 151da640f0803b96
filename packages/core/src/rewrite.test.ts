import * as tf from '@tensorflow/tfjs';
import type { Observable } from 'rxjs';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { useBackend } from './backend.js';
import { createRunContext, type RunContext } from './context.js';
import { CancelledError, ConfigError, PassError } from './errors.js';
import { stableStringify, type JsonObject } from './json.js';
import { Module, type AnyModule } from './module.js';
import type { PassContext, PassEvent, PassPlan, PlanEntry } from './pass.js';
import { Rng } from './rng.js';
import { checkStacking, definePass, parsePassOptions, pathsOverlap, runRewrite, zodIssuesToConfigIssues, type RewriteSpec } from './rewrite.js';
import { layerSelectorSchema, selectOrThrow } from './selector.js';

// ---- toy modules (core cannot depend on nn) ----

type LinCfg = { inF: number; outF: number; seed: number };
class ToyLinear extends Module<tf.Tensor, tf.Tensor, LinCfg> {
  readonly kind = 'toy.linear';
  constructor(config: LinCfg) {
    super(config);
    const rng = new Rng(config.seed);
    tf.tidy(() => {
      this.addParam('w', tf.tensor2d(rng.normalArray(config.inF * config.outF, 0.5), [config.inF, config.outF]));
      this.addParam('b', tf.tensor1d(rng.normalArray(config.outF, 0.1)));
    });
  }
  forward(x: tf.Tensor): tf.Tensor {
    return tf.add(tf.matMul(x as tf.Tensor2D, this.param('w').variable as tf.Tensor2D), this.param('b').variable);
  }
}

/** y = scale · (x W + b), with its own (new) parameters. */
class ToyScaled extends Module<tf.Tensor, tf.Tensor, { scale: number; inF: number; outF: number }> {
  readonly kind = 'toy.scaled';
  constructor(config: { scale: number; inF: number; outF: number }, from?: ToyLinear) {
    super(config);
    tf.tidy(() => {
      this.addParam('w', from ? tf.mul(from.param('w').variable, config.scale) : tf.zeros([config.inF, config.outF]));
      this.addParam('b', from ? tf.mul(from.param('b').variable, config.scale) : tf.zeros([config.outF]));
    });
  }
  forward(x: tf.Tensor): tf.Tensor {
    return tf.add(tf.matMul(x as tf.Tensor2D, this.param('w').variable as tf.Tensor2D), this.param('b').variable);
  }
}

/** Wraps the original module (reusing its parameters) and adds a learned gain. */
class ToyGain extends Module<tf.Tensor, tf.Tensor, JsonObject> {
  readonly kind = 'toy.gain';
  constructor(inner: AnyModule, outF: number) {
    super({ outF });
    this.addChild('inner', inner);
    tf.tidy(() => {
      this.addParam('g', tf.fill([outF], 3));
    });
  }
  forward(x: tf.Tensor, ctx: RunContext): tf.Tensor {
    return tf.mul(this.child('inner').call(x, ctx) as tf.Tensor, this.param('g').variable);
  }
}

class ToySeq extends Module<tf.Tensor, tf.Tensor, { n: number; dim: number; seed: number }> {
  readonly kind = 'toy.seq';
  constructor(config: { n: number; dim: number; seed: number }) {
    super(config);
    for (let i = 0; i < config.n; i++) this.addChild(String(i), new ToyLinear({ inF: config.dim, outF: config.dim, seed: config.seed * 100 + i }));
  }
  forward(x: tf.Tensor, ctx: RunContext): tf.Tensor {
    let h = x;
    for (const [, c] of this.children) h = tf.relu(c.call(h, ctx));
    return h;
  }
}

// ---- helpers ----

function snapshot(model: AnyModule): string {
  const params = [...model.namedParams()].map(([p, v]) => [p, v.shape, Array.from(v.variable.dataSync())]);
  return stableStringify({ node: model.toNode(), provenance: model.provenance, params });
}

async function collect(obs: Observable<PassEvent>): Promise<{ events: PassEvent[]; error?: unknown }> {
  const events: PassEvent[] = [];
  return new Promise((resolve) => {
    obs.subscribe({ next: (e) => events.push(e), error: (error: unknown) => resolve({ events, error }), complete: () => resolve({ events }) });
  });
}

const toyPass = { name: '@test/scale', version: '1.2.3', targets: ['toy.linear'] as const, restacks: [] as string[], requires: [] };

function planAll(model: AnyModule, kind = 'toy.linear'): PassPlan {
  return {
    pass: toyPass.name,
    entries: [...model.modules()].filter(([, m]) => m.kind === kind).map(([path, m]) => ({ path, kind: m.kind, action: 'toy.scaled', reason: 'test' })),
  };
}

function scaleSpec(model: AnyModule, ctx: PassContext, over: Partial<RewriteSpec<JsonObject>> = {}): RewriteSpec<JsonObject> {
  return {
    pass: toyPass,
    model,
    options: { scale: 2 },
    ctx,
    plan: planAll(model),
    build: (_e: PlanEntry, m: AnyModule) => new ToyScaled({ scale: 2, inF: m.config.inF as number, outF: m.config.outF as number }, m as ToyLinear),
    ...over,
  };
}

const x = (): tf.Tensor2D => tf.tensor2d(new Rng(9).normalArray(4 * 3), [4, 3]);
function forward(model: AnyModule): Float32Array {
  return tf.tidy(() => (model.call(x(), createRunContext()) as tf.Tensor).dataSync() as Float32Array);
}

beforeAll(async () => {
  await useBackend('cpu');
});

describe('runRewrite', () => {
  it('builds, swaps, marks, records provenance, disposes the old modules and reports', async () => {
    const model = new ToySeq({ n: 3, dim: 3, seed: 1 });
    // reference: every layer becomes relu(2 (h W + b)), computed from the original parameters
    const expected = tf.tidy(() => {
      let h: tf.Tensor = x();
      for (const [, c] of model.children) h = tf.relu(tf.mul(2, tf.add(tf.matMul(h as tf.Tensor2D, c.param('w').variable as tf.Tensor2D), c.param('b').variable)));
      return h.dataSync() as Float32Array;
    });
    const oldVars = [...model.namedParams()].map(([, p]) => p.variable);
    const { events, error } = await collect(runRewrite(scaleSpec(model, { seed: 7, backend: 'cpu' })));
    expect(error).toBeUndefined();
    expect(events.map((e) => e.type)).toEqual(['progress', 'progress', 'progress', 'done']);
    const fr = events.filter((e) => e.type === 'progress').map((e) => e.fraction);
    expect(fr[2]).toBeCloseTo(1);
    expect(fr[0]).toBeCloseTo(1 / 3);
    const done = events.at(-1);
    if (done?.type !== 'done') throw new Error('no done');
    expect(done.report).toEqual({ pass: '@test/scale', version: '1.2.3', options: { scale: 2 }, modules: ['0', '1', '2'], params: { before: 36, after: 36 } });
    expect([...model.modules()].map(([p, m]) => [p, m.kind, m.mark])).toEqual([
      ['', 'toy.seq', undefined],
      ['0', 'toy.scaled', '@test/scale'],
      ['1', 'toy.scaled', '@test/scale'],
      ['2', 'toy.scaled', '@test/scale'],
    ]);
    expect(model.provenance).toEqual([{ pass: '@test/scale', version: '1.2.3', options: { scale: 2 }, seed: 7, paths: ['0', '1', '2'] }]);
    expect(oldVars.every((v) => v.isDisposed)).toBe(true);
    const after = forward(model);
    expect(after.length).toBe(expected.length);
    after.forEach((v, i) => expect(v).toBeCloseTo(expected[i] as number, 5));
  });

  it('an error in the 2nd build disposes the 1st replacement and leaves the model as it was', async () => {
    const model = new ToySeq({ n: 3, dim: 3, seed: 2 });
    const snap = snapshot(model);
    const out = forward(model);
    const tensorsBefore = tf.memory().numTensors;
    const built: AnyModule[] = [];
    let calls = 0;
    const { events, error } = await collect(
      runRewrite(
        scaleSpec(model, { seed: 0, backend: 'cpu' }, {
          build: (e, m) => {
            calls++;
            if (calls === 2) throw new Error('boom');
            const r = new ToyScaled({ scale: 2, inF: 3, outF: 3 }, m as ToyLinear);
            built.push(r);
            return r;
          },
        }),
      ),
    );
    expect(error).toBeInstanceOf(PassError);
    expect(String((error as Error).message)).toMatch(/failed while building '1' \(toy\.linear\): boom/);
    expect(events.map((e) => e.type)).toEqual(['progress']);
    expect(calls).toBe(2);
    expect(built).toHaveLength(1);
    expect([...built[0]!.namedParams()].every(([, p]) => p.variable.isDisposed)).toBe(true);
    expect(snapshot(model)).toBe(snap);
    expect(forward(model)).toEqual(out);
    expect(tf.memory().numTensors).toBe(tensorsBefore);
  });

  it('unsubscribing after the first progress event cancels before the swap and disposes what was built', async () => {
    const model = new ToySeq({ n: 3, dim: 3, seed: 3 });
    const snap = snapshot(model);
    const tensorsBefore = tf.memory().numTensors;
    const built: AnyModule[] = [];
    let seenSignal: AbortSignal | undefined;
    let finishedBuilds = 0;
    const spec = scaleSpec(model, { seed: 0, backend: 'cpu' }, {
      build: async (_e, m, tools) => {
        seenSignal = tools.signal;
        await new Promise((r) => setTimeout(r, 5));
        const r = new ToyScaled({ scale: 2, inF: 3, outF: 3 }, m as ToyLinear);
        built.push(r);
        finishedBuilds++;
        return r;
      },
    });
    const events: PassEvent[] = [];
    const sub = runRewrite(spec).subscribe({
      next: (e) => {
        events.push(e);
        sub.unsubscribe();
      },
    });
    await vi.waitFor(() => {
      expect(events).toHaveLength(1);
      expect(built.length).toBe(1);
      expect(tf.memory().numTensors).toBe(tensorsBefore);
    });
    await new Promise((r) => setTimeout(r, 20));
    expect(events).toHaveLength(1);
    expect(seenSignal?.aborted).toBe(true);
    expect(finishedBuilds).toBe(1);
    expect(built.every((b) => [...b.namedParams()].every(([, p]) => p.variable.isDisposed))).toBe(true);
    expect(snapshot(model)).toBe(snap);
  });

  it('unsubscribing on the last progress event still cancels: the swap never happens', async () => {
    const model = new ToySeq({ n: 2, dim: 3, seed: 15 });
    const snap = snapshot(model);
    const tensors = tf.memory().numTensors;
    let progress = 0;
    const sub = runRewrite(scaleSpec(model, { seed: 0, backend: 'cpu' })).subscribe({
      next: (e) => {
        if (e.type === 'progress' && ++progress === 2) sub.unsubscribe();
      },
    });
    await vi.waitFor(() => {
      expect(progress).toBe(2);
      expect(tf.memory().numTensors).toBe(tensors);
    });
    await new Promise((r) => setTimeout(r, 10));
    expect(snapshot(model)).toBe(snap);
  });

  it('a pre-aborted signal builds nothing and fails with CancelledError', async () => {
    const model = new ToySeq({ n: 2, dim: 3, seed: 4 });
    const snap = snapshot(model);
    const build = vi.fn();
    const ac = new AbortController();
    ac.abort();
    const { events, error } = await collect(runRewrite(scaleSpec(model, { seed: 0, backend: 'cpu', signal: ac.signal }, { build })));
    expect(error).toBeInstanceOf(CancelledError);
    expect(events).toEqual([]);
    expect(build).not.toHaveBeenCalled();
    expect(snapshot(model)).toBe(snap);
  });

  it('an abort fired during a build cancels with CancelledError and leaves the model', async () => {
    const model = new ToySeq({ n: 3, dim: 3, seed: 5 });
    const snap = snapshot(model);
    const ac = new AbortController();
    let calls = 0;
    const { error } = await collect(
      runRewrite(
        scaleSpec(model, { seed: 0, backend: 'cpu', signal: ac.signal }, {
          build: (_e, m) => {
            if (++calls === 2) ac.abort();
            return new ToyScaled({ scale: 2, inF: 3, outF: 3 }, m as ToyLinear);
          },
        }),
      ),
    );
    expect(error).toBeInstanceOf(CancelledError);
    expect(calls).toBe(2);
    expect(snapshot(model)).toBe(snap);
  });

  it('keeps parameters that a replacement reuses (wrapping the original module), on success and on abort', async () => {
    const wrapSpec = (model: AnyModule, ctx: PassContext, fail: boolean): RewriteSpec<JsonObject> =>
      scaleSpec(model, ctx, {
        build: (e, m) => {
          if (fail && e.path === '2') throw new Error('late failure');
          return new ToyGain(m, 3);
        },
      });
    const a = new ToySeq({ n: 3, dim: 3, seed: 6 });
    const snapA = snapshot(a);
    const tensors = tf.memory().numTensors;
    const failed = await collect(runRewrite(wrapSpec(a, { seed: 0, backend: 'cpu' }, true)));
    expect(failed.error).toBeInstanceOf(PassError);
    expect(snapshot(a)).toBe(snapA); // reading every value proves none was disposed
    expect(tf.memory().numTensors).toBe(tensors); // the gains were freed

    const innerVars = [...a.namedParams()].map(([, p]) => p.variable);
    const ok = await collect(runRewrite(wrapSpec(a, { seed: 0, backend: 'cpu' }, false)));
    expect(ok.error).toBeUndefined();
    expect(innerVars.some((v) => v.isDisposed)).toBe(false);
    expect(a.get('0').kind).toBe('toy.gain');
    expect(a.get('0.inner').kind).toBe('toy.linear');
    expect(a.get('0.inner').mark).toBeUndefined();
    expect(a.get('0').mark).toBe('@test/scale');
  });

  it('a failing measure restores the model after the swap', async () => {
    const model = new ToySeq({ n: 2, dim: 3, seed: 8 });
    const snap = snapshot(model);
    const tensors = tf.memory().numTensors;
    let sawRewritten = false;
    const { error } = await collect(
      runRewrite(
        scaleSpec(model, { seed: 0, backend: 'cpu' }, {
          measure: (m) => {
            sawRewritten = m.get('0').kind === 'toy.scaled';
            throw new Error('measure broke');
          },
        }),
      ),
    );
    expect(sawRewritten).toBe(true);
    expect(error).toBeInstanceOf(PassError);
    expect((error as Error).message).toMatch(/the model was restored\): measure broke/);
    expect(snapshot(model)).toBe(snap);
    expect(tf.memory().numTensors).toBe(tensors);
  });

  it('reports measurements, FLOPs and runs prepare before and cleanup after', async () => {
    const model = new ToySeq({ n: 2, dim: 3, seed: 10 });
    const order: string[] = [];
    const { events, error } = await collect(
      runRewrite(
        scaleSpec(model, { seed: 0, backend: 'cpu' }, {
          prepare: (tools) => {
            order.push('prepare');
            tools.progress(0.5, 'half');
            tools.log('info', 'prepared');
          },
          build: (_e, m, tools) => {
            order.push('build');
            tools.metric('norm', 1.5);
            return new ToyScaled({ scale: 2, inF: 3, outF: 3 }, m as ToyLinear);
          },
          flops: (m) => [...m.modules()].filter(([, c]) => c.kind === 'toy.linear').length * 10,
          measure: () => ({ custom: 42 }),
          cleanup: () => order.push('cleanup'),
        }),
      ),
    );
    expect(error).toBeUndefined();
    expect(order).toEqual(['prepare', 'build', 'build', 'cleanup']);
    expect(events[0]).toEqual({ type: 'progress', pass: '@test/scale', fraction: 0.15, current: 0, total: 2, message: 'half' });
    expect(events.filter((e) => e.type === 'log')).toHaveLength(1);
    expect(events.filter((e) => e.type === 'metric')).toHaveLength(2);
    const done = events.at(-1);
    if (done?.type !== 'done') throw new Error('no done');
    expect(done.report.flops).toEqual({ before: 20, after: 0 });
    expect(done.report.measured).toEqual({ custom: 42 });
  });

  it('refuses unmet requirements, bad plans and incompatible stacking before building anything', async () => {
    const model = new ToySeq({ n: 2, dim: 3, seed: 11 });
    const build = vi.fn();
    const ctx = { seed: 0, backend: 'cpu' };
    const req = await collect(runRewrite(scaleSpec(model, ctx, { pass: { ...toyPass, requires: ['calibration'] }, build })));
    expect((req.error as Error).message).toMatch(/requires calibration batches .* found none/);

    const nested: PassPlan = {
      pass: toyPass.name,
      entries: [
        { path: '', kind: 'toy.seq', action: 'x', reason: '' },
        { path: '0', kind: 'toy.conv', action: 'x', reason: '' },
        { path: '0', kind: 'toy.linear', action: 'x', reason: '' },
        { path: '7', kind: 'toy.linear', action: 'x', reason: '' },
        { path: '0.w', kind: 'toy.linear', action: 'x', reason: '' },
      ],
    };
    const bad = await collect(runRewrite(scaleSpec(model, ctx, { plan: nested, build })));
    const msg = (bad.error as Error).message;
    expect(msg).toMatch(/replace the root module/);
    expect(msg).toMatch(/plans '0' as kind toy\.conv, found kind toy\.linear/);
    expect(msg).toMatch(/plans '0' twice/);
    expect(msg).toMatch(/plans '7', which does not exist/);
    expect(msg).toMatch(/must not nest/);

    const empty = await collect(runRewrite(scaleSpec(model, ctx, { plan: { pass: toyPass.name, entries: [] }, build })));
    expect((empty.error as Error).message).toMatch(/found nothing to rewrite: it looks for kinds \[toy\.linear\]; the model has kinds \[toy\.linear\]/);

    model.get('1').mark = '@test/other';
    const stack = await collect(runRewrite(scaleSpec(model, ctx, { build })));
    expect(stack.error).toBeInstanceOf(PassError);
    expect((stack.error as Error).message).toMatch(/plans to rewrite '1' \(toy\.linear\), which was rewritten by @test\/other \(the model\); @test\/scale does not list @test\/other in its restacks/);
    expect(build).not.toHaveBeenCalled();

    const allowed = await collect(runRewrite(scaleSpec(model, ctx, { pass: { ...toyPass, restacks: ['@test/other'] } })));
    expect(allowed.error).toBeUndefined();
  });
});

describe('stacking rules', () => {
  it('paths overlap when equal or nested either way', () => {
    expect(pathsOverlap('a.b', 'a.b')).toBe(true);
    expect(pathsOverlap('a.b.c', 'a.b')).toBe(true);
    expect(pathsOverlap('a', 'a.b')).toBe(true);
    expect(pathsOverlap('a.b', 'a.bc')).toBe(false);
    expect(pathsOverlap('a.1', 'a.10')).toBe(false);
  });
  it('flags modules inside and around a marked module, not the pass itself', () => {
    const e = (path: string): PlanEntry => ({ path, kind: 'k', action: 'a', reason: '' });
    const marked = [{ path: 'blocks.0.attn', mark: '@x/a', source: 'steps[0]' }];
    const pass = { name: '@x/b', restacks: [] };
    expect(checkStacking(pass, [e('blocks.0.attn.q')], marked)[0]?.message).toMatch(/lies inside 'blocks\.0\.attn', rewritten by @x\/a \(steps\[0\]\)/);
    expect(checkStacking(pass, [e('blocks.0')], marked)[0]?.message).toMatch(/contains 'blocks\.0\.attn'/);
    expect(checkStacking(pass, [e('blocks.1.attn')], marked)).toEqual([]);
    expect(checkStacking({ name: '@x/a' }, [e('blocks.0.attn')], marked)).toEqual([]);
    expect(checkStacking({ name: '@x/b', restacks: ['@x/a'] }, [e('blocks.0.attn')], marked)).toEqual([]);
  });
});

describe('options problems', () => {
  const schema = z
    .object({
      ratio: z.number().gt(0).max(1).default(0.2),
      mode: z.enum(['kv', 'o']).default('kv'),
      steps: z.number().int().min(1).default(4),
      select: layerSelectorSchema.default({}),
    })
    .strict();
  it('lists every problem with its JSON path, what was expected and what was found', () => {
    let err: unknown;
    try {
      parsePassOptions({ name: '@x/p', options: schema }, { ratio: 1.5, mode: 'q', steps: 0.5, select: { include: [3], kinds: 'x' }, ratoi: 1 }, 'steps[1].options');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const issues = (err as ConfigError).issues.map((i) => `${i.path}: ${i.message}`);
    expect(issues).toEqual(
      expect.arrayContaining([
        'steps[1].options.ratio: expected number ≤ 1, found 1.5',
        'steps[1].options.mode: expected one of "kv", "o", found "q"',
        'steps[1].options.steps: expected int, found 0.5',
        'steps[1].options.select.include[0]: expected string, found 3',
        'steps[1].options.select.kinds: expected array, found "x"',
        'steps[1].options.ratoi: unknown key \'ratoi\' (expected one of: ratio, mode, steps, select)',
      ]),
    );
    expect(issues).toHaveLength(6);
  });
  it('names keys that need quoting and exclusive bounds', () => {
    const s = z.object({ a: z.number().gt(0) }).strict();
    const r = s.safeParse({ a: 0, 'b c': 1 });
    if (r.success) throw new Error('expected failure');
    const issues = zodIssuesToConfigIssues(r.error.issues, { a: 0, 'b c': 1 }, 'o', s).map((i) => `${i.path}: ${i.message}`);
    expect(issues).toEqual(['o.a: expected number > 0, found 0', 'o["b c"]: unknown key \'b c\' (expected one of: a)']);
  });
});

describe('definePass', () => {
  const registerKinds = vi.fn();
  const prepared: string[] = [];
  const pass = definePass({
    name: '@test/defined',
    version: '0.0.1',
    stage: 'compress',
    description: 'scales toy linears by a seeded random factor',
    options: z.object({ scale: z.number().positive().default(2), jitter: z.boolean().default(false), select: layerSelectorSchema.default({}) }).strict(),
    targets: ['toy.linear'],
    registerKinds,
    plan: (model, o) => selectOrThrow(model.modules(), o.select, ['toy.linear'], '@test/defined').map(([path, m]) => ({ path, kind: m.kind, action: 'toy.scaled', reason: `scale by ${o.scale}` })),
    prepare: ({ plan }) => {
      prepared.push(`prepared ${plan.entries.length}`);
      return { base: 1 };
    },
    build: (_e, m, t) => {
      const s = t.prepared.base * t.options.scale * (t.options.jitter ? 1 + t.rng.next() : 1);
      return new ToyScaled({ scale: s, inF: 3, outF: 3 }, m as ToyLinear);
    },
    measure: (_m, { plan }) => ({ planned: plan.entries.length }),
    cleanup: (p) => prepared.push(`cleanup ${p.base}`),
  });

  it('parses options in plan and apply, listing every problem', () => {
    const model = new ToySeq({ n: 2, dim: 3, seed: 12 });
    const raw = { scale: -1, extra: true } as never;
    expect(() => pass.plan(model, raw)).toThrow(ConfigError);
    try {
      pass.plan(model, raw);
    } catch (e) {
      expect((e as ConfigError).issues.map((i) => i.path)).toEqual(['options.scale', 'options.extra']);
    }
    const plan = pass.plan(model, pass.options.parse({}));
    expect(plan.pass).toBe('@test/defined');
    expect(plan.entries.map((e) => e.path)).toEqual(['0', '1']);
    expect(plan.entries[0]?.reason).toBe('scale by 2');
  });

  it('an empty selection throws naming the kinds', () => {
    const model = new ToySeq({ n: 2, dim: 3, seed: 12 });
    expect(() => pass.plan(model, pass.options.parse({ select: { include: ['no.such.layer'] } }))).toThrow(/toy\.linear/);
    const emptyPlan = definePass({ ...{ name: '@test/empty', version: '0', stage: 'compress' as const, description: '', targets: ['toy.conv'] }, options: z.object({}).strict(), plan: () => [], build: (_e, m) => m });
    expect(() => emptyPlan.plan(model, {})).toThrow(/@test\/empty found nothing to rewrite: it looks for kinds \[toy\.conv\]; the model has kinds \[toy\.linear\]/);
  });

  it('applies with prepared state, seeded per-module rng, measurements and provenance of the resolved options', async () => {
    const run = async (seed: number): Promise<{ model: AnyModule; events: PassEvent[] }> => {
      const model = new ToySeq({ n: 2, dim: 3, seed: 13 });
      const { events, error } = await collect(pass.apply(model, pass.options.parse({ jitter: true }), { seed, backend: 'cpu' }));
      expect(error).toBeUndefined();
      return { model, events };
    };
    prepared.length = 0;
    const a = await run(1);
    const b = await run(1);
    const c = await run(2);
    expect(prepared).toEqual(['prepared 2', 'cleanup 1', 'prepared 2', 'cleanup 1', 'prepared 2', 'cleanup 1']);
    expect(snapshot(a.model)).toBe(snapshot(b.model));
    expect(snapshot(a.model)).not.toBe(snapshot(c.model));
    expect(a.model.get('0').config.scale).not.toBe(a.model.get('1').config.scale);
    expect(a.model.provenance).toEqual([{ pass: '@test/defined', version: '0.0.1', options: { jitter: true, scale: 2, select: {} }, seed: 1, paths: ['0', '1'] }]);
    const done = a.events.at(-1);
    expect(done?.type === 'done' && done.report.measured).toEqual({ planned: 2 });
    pass.registerKinds(undefined as never);
    expect(registerKinds).toHaveBeenCalledTimes(1);
  });

  it('apply reports bad options and pre-aborted signals as errors of the stream', async () => {
    const model = new ToySeq({ n: 2, dim: 3, seed: 14 });
    const snap = snapshot(model);
    const bad = await collect(pass.apply(model, { scale: 'big' } as never, { seed: 0, backend: 'cpu' }));
    expect((bad.error as Error).message).toMatch(/options\.scale: expected number, found "big"/);
    const ac = new AbortController();
    ac.abort();
    const cancelled = await collect(pass.apply(model, pass.options.parse({}), { seed: 0, backend: 'cpu', signal: ac.signal }));
    expect(cancelled.error).toBeInstanceOf(CancelledError);
    expect(snapshot(model)).toBe(snap);
  });
});
