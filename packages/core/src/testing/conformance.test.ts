import * as tf from '@tensorflow/tfjs';
import { Observable } from 'rxjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { useBackend } from '../backend.js';
import type { RunContext } from '../context.js';
import type { JsonObject } from '../json.js';
import { Module, ModuleRegistry, type AnyModule } from '../module.js';
import type { AnyPass, PassEvent } from '../pass.js';
import { definePass } from '../rewrite.js';
import { Rng } from '../rng.js';
import { layerSelectorSchema, selectOrThrow } from '../selector.js';
import {
  ConformanceError,
  checkDeterminism,
  checkEmptySelectionThrows,
  checkOptionsRoundTrip,
  checkPreAbortedApply,
  checkSaveLoad,
  checkUnknownOptionRejected,
  checkUnsubscribedApply,
  diffSnapshot,
  passConformance,
  runConformanceChecks,
  snapshotModel,
  type ConformanceOptions,
} from './index.js';

// ---- toy modules (core cannot depend on nn) ----

type LinCfg = { dim: number; seed: number };
class ToyLinear extends Module<tf.Tensor, tf.Tensor, LinCfg> {
  readonly kind: string = 'toy.linear';
  constructor(config: LinCfg) {
    super(config);
    const rng = new Rng(config.seed);
    tf.tidy(() => {
      this.addParam('w', tf.tensor2d(rng.normalArray(config.dim * config.dim, 0.5), [config.dim, config.dim]));
    });
  }
  forward(x: tf.Tensor): tf.Tensor {
    return tf.matMul(x, this.param('w').variable);
  }
}
class ToyScaled extends ToyLinear {
  override readonly kind: string = 'toy.scaled';
}
class ToyUnregistered extends ToyLinear {
  override readonly kind = 'toy.unregistered';
}
/** Multiplies by a factor kept outside config and params: it cannot survive save/load. */
class ToyHidden extends ToyLinear {
  override readonly kind = 'toy.hidden';
  k = 1;
  override forward(x: tf.Tensor): tf.Tensor {
    return tf.mul(super.forward(x), this.k);
  }
}
class ToySeq extends Module<tf.Tensor, tf.Tensor, { n: number; dim: number; seed: number }> {
  readonly kind = 'toy.seq';
  constructor(config: { n: number; dim: number; seed: number }) {
    super(config);
    for (let i = 0; i < config.n; i++) this.addChild(String(i), new ToyLinear({ dim: config.dim, seed: config.seed * 10 + i }));
  }
  forward(x: tf.Tensor, ctx: RunContext): tf.Tensor {
    let h = x;
    for (const [, c] of this.children) h = tf.tanh(c.call(h, ctx) as tf.Tensor);
    return h;
  }
}

const registry = new ModuleRegistry();
registry.register('toy.linear', (c) => new ToyLinear(c as LinCfg));
registry.register('toy.seq', (c) => new ToySeq(c as { n: number; dim: number; seed: number }));
registry.register('toy.hidden', (c) => new ToyHidden(c as LinCfg));
const scaledFactory = (c: JsonObject): AnyModule => new ToyScaled(c as LinCfg);

/** Replacement of `m` with w' = factor · w + noise (noise from the seeded per-module rng). */
function scaled(m: AnyModule, factor: number, rng: Rng, noise: number, Kind: new (c: LinCfg) => ToyLinear = ToyScaled): ToyLinear {
  const cfg = m.config as LinCfg;
  const r = new Kind(cfg);
  tf.tidy(() => r.param('w').assign(tf.add(tf.mul(m.param('w').variable, factor), tf.mul(tf.tensor2d(rng.normalArray(cfg.dim * cfg.dim), [cfg.dim, cfg.dim]), noise))));
  return r;
}

const goodOptions = z.object({ factor: z.number().positive().default(2), noise: z.number().min(0).default(0.1), select: layerSelectorSchema.default({}) }).strict();

function toyPass(name: string, over: { build?: (m: AnyModule, o: z.output<typeof goodOptions>, rng: Rng) => AnyModule; register?: boolean; options?: z.ZodType<JsonObject, JsonObject> } = {}): AnyPass {
  return definePass({
    name,
    version: '0.1.0',
    stage: 'compress',
    description: 'toy conformance pass',
    options: (over.options ?? goodOptions) as typeof goodOptions,
    targets: ['toy.linear'],
    registerKinds: (reg) => {
      if (over.register !== false) reg.register('toy.scaled', scaledFactory);
    },
    plan: (model, o) => selectOrThrow(model.modules(), o.select, ['toy.linear'], name).map(([path, m]) => ({ path, kind: m.kind, action: 'toy.scaled', reason: 'test' })),
    build: async (_e, m, t) => {
      await new Promise((r) => setTimeout(r, 1));
      return over.build ? over.build(m, t.options, t.rng) : scaled(m, t.options.factor, t.rng, t.options.noise);
    },
  });
}

const good = toyPass('@test/good');

const base = (pass: AnyPass): ConformanceOptions => ({
  pass,
  makeModel: (seed: number) => new ToySeq({ n: 3, dim: 4, seed: seed + 1 }),
  makeInput: () => tf.tensor2d(new Rng(5).normalArray(2 * 4), [2, 4]),
  registry,
  options: { factor: 1.5 },
  settleTimeoutMs: 2000,
});

/** A hand-written pass (no definePass) for the broken behaviours definePass would prevent. */
function handPass(name: string, apply: AnyPass['apply'], plan?: AnyPass['plan']): AnyPass {
  return {
    name,
    version: '0.0.0',
    stage: 'compress',
    description: 'broken on purpose',
    options: goodOptions,
    targets: ['toy.linear'],
    registerKinds: (reg) => reg.register('toy.scaled', scaledFactory),
    plan: plan ?? ((model) => ({ pass: name, entries: [...model.modules()].filter(([, m]) => m.kind === 'toy.linear').map(([path, m]) => ({ path, kind: m.kind, action: 'toy.scaled', reason: '' })) })),
    apply,
  };
}

function report(name: string, modules: string[]): PassEvent {
  return { type: 'done', pass: name, report: { pass: name, version: '0.0.0', options: {}, modules, params: { before: 0, after: 0 } } };
}

/** Swaps synchronously, ignoring the signal. */
function swapAll(model: AnyModule, name: string): string[] {
  const paths = [...model.modules()].filter(([, m]) => m.kind === 'toy.linear').map(([p]) => p);
  for (const p of paths) {
    const r = scaled(model.get(p), 2, new Rng(0), 0);
    r.mark = name;
    model.replace(p, r).dispose();
  }
  model.provenance.push({ pass: name, version: '0.0.0', options: {}, seed: 0, paths });
  return paths;
}

// The suite itself, on the conforming toy pass (cpu and wasm).
passConformance(base(good));

describe('the conformance checks catch broken passes', () => {
  beforeAll(async () => {
    await useBackend('cpu');
  });

  it('a conforming pass passes every check', async () => {
    expect(await runConformanceChecks(base(good))).toEqual([]);
  });

  it('snapshots see value changes, swaps and disposal', () => {
    const m = new ToySeq({ n: 2, dim: 2, seed: 1 });
    const snap = snapshotModel(m);
    expect(diffSnapshot(snap, m)).toEqual([]);
    m.get('0').param('w').assign(tf.zeros([2, 2]));
    expect(diffSnapshot(snap, m)[0]).toMatch(/parameter '0\.w' changed value at 0/);
    m.replace('1', new ToyScaled({ dim: 2, seed: 11 }));
    expect(diffSnapshot(snap, m)).toEqual(expect.arrayContaining(['the module tree (kinds, configs or marks) changed', "parameter '1.w' is a different variable"]));
  });

  it('non-atomic: a build that changes the original module fails the unsubscribe check', async () => {
    const pass = toyPass('@test/non-atomic', {
      build: (m, o, rng) => {
        tf.tidy(() => m.param('w').assign(tf.mul(m.param('w').variable, 2))); // mutates the model before the swap
        return scaled(m, o.factor, rng, 0);
      },
    });
    await expect(checkUnsubscribedApply(base(pass))).rejects.toThrow(/unsubscribed apply: the model changed after unsubscribing: parameter '0\.w' changed value/);
  });

  it('a pass that ignores the signal and swaps at once fails both abort checks', async () => {
    const pass = handPass(
      '@test/eager',
      (model) =>
        new Observable<PassEvent>((s) => {
          s.next(report('@test/eager', swapAll(model, '@test/eager')));
          s.complete();
        }),
    );
    await expect(checkPreAbortedApply(base(pass))).rejects.toThrow(/pre-aborted apply: apply completed although the signal was aborted/);
    await expect(checkUnsubscribedApply(base(pass))).rejects.toThrow(/the first event was 'done'/);
  });

  it('a pass that swaps after being unsubscribed fails', async () => {
    const pass = handPass(
      '@test/late',
      (model, _o, ctx) =>
        new Observable<PassEvent>((s) => {
          if (ctx.signal?.aborted) {
            s.error(Object.assign(new Error('cancelled'), { name: 'CancelledError' }));
            return;
          }
          s.next({ type: 'progress', pass: '@test/late', fraction: 0.5 });
          setTimeout(() => {
            const paths = swapAll(model, '@test/late');
            s.next(report('@test/late', paths));
            s.complete();
          }, 10);
        }),
    );
    await expect(checkPreAbortedApply(base(pass))).resolves.toBeUndefined();
    await expect(checkUnsubscribedApply(base(pass))).rejects.toThrow(/the model changed after unsubscribing: the module tree/);
  });

  it('a pass that does not dispose what it built after an unsubscribe fails', async () => {
    const pass = handPass(
      '@test/leaky',
      (model) =>
        new Observable<PassEvent>((s) => {
          let stop = false;
          void (async () => {
            const built: AnyModule[] = [];
            for (const [p, m] of [...model.modules()].filter(([, x]) => x.kind === 'toy.linear')) {
              await new Promise((r) => setTimeout(r, 1));
              if (stop) return; // forgets to dispose `built`
              built.push(scaled(m, 2, new Rng(0), 0));
              s.next({ type: 'progress', pass: '@test/leaky', fraction: 0.5, message: p });
            }
          })();
          return () => {
            stop = true;
          };
        }),
    );
    await expect(checkUnsubscribedApply({ ...base(pass), settleTimeoutMs: 100 })).rejects.toThrow(/1 tensor\(s\) still allocated 100 ms after unsubscribing/);
  });

  it('a pass that is not deterministic fails the same-seed check', async () => {
    let calls = 0;
    const pass = toyPass('@test/random', { build: (m, o) => scaled(m, o.factor + calls++, new Rng(0), 0) });
    await expect(checkDeterminism(base(pass))).rejects.toThrow(/same seed, same result: the reports differ|the two rewritten models differ: parameter '0\.w' changed value/);
  });

  it('a pass that does not register its kinds, or keeps state outside config and params, fails save/load', async () => {
    const unregistered = toyPass('@test/unregistered', { build: (m, o, rng) => scaled(m, o.factor, rng, 0, ToyUnregistered) });
    await expect(checkSaveLoad(base(unregistered))).rejects.toThrow(/kinds \[toy\.unregistered\] are not registered after @test\/unregistered\.registerKinds\(registry\)/);
    const hidden = toyPass('@test/hidden', {
      build: (m, o, rng) => {
        const r = scaled(m, o.factor, rng, 0, ToyHidden) as ToyHidden;
        r.k = 3;
        return r;
      },
    });
    await expect(checkSaveLoad(base(hidden))).rejects.toThrow(/save and load: loaded vs rewritten: outputs differ at 0/);
  });

  it('lax, non-JSON or default-less options fail the options checks', () => {
    const lax = toyPass('@test/lax', { options: z.object({ factor: z.number().default(2), select: layerSelectorSchema.default({}) }) });
    expect(() => checkUnknownOptionRejected(lax)).toThrow(ConformanceError);
    expect(() => checkUnknownOptionRejected(lax)).toThrow(/unknown key 'noSuchOption__' parsed; the schema must be strict/);
    const looseSelect = toyPass('@test/loose-select', { options: z.object({ select: z.object({ include: z.array(z.string()).optional() }).default({}) }).strict() });
    expect(() => checkUnknownOptionRejected(looseSelect)).toThrow(/a selector with an unknown key/);
    const nan = toyPass('@test/nan', { options: z.object({ eps: z.number().default(Number.NaN) }).strict() });
    expect(() => checkOptionsRoundTrip(nan)).toThrow(/resolved options are not plain JSON: options\.eps is NaN/);
    const required = toyPass('@test/required', { options: z.object({ ratio: z.number() }).strict() });
    expect(() => checkOptionsRoundTrip(required)).toThrow(/every option needs a default/);
    expect(() => checkOptionsRoundTrip(good, { factor: 3 })).not.toThrow();
    expect(() => checkUnknownOptionRejected(good)).not.toThrow();
  });

  it('a pass whose empty selection is silent, or unhelpful, fails', async () => {
    const silent = handPass('@test/silent', () => new Observable<PassEvent>(), () => ({ pass: '@test/silent', entries: [] }));
    await expect(checkEmptySelectionThrows(base(silent))).rejects.toThrow(/returned \{"pass":"@test\/silent","entries":\[\]\} instead of throwing/);
    const vague = handPass(
      '@test/vague',
      () => new Observable<PassEvent>(),
      () => {
        throw new Error('nothing to do');
      },
    );
    await expect(checkEmptySelectionThrows(base(vague))).rejects.toThrow(/does not name the kind\(s\) toy\.linear the pass looks for: nothing to do/);
  });
});
