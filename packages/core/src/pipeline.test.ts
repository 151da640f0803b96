import * as tf from '@tensorflow/tfjs';
import { Observable, firstValueFrom, lastValueFrom, toArray } from 'rxjs';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { useBackend } from './backend.js';
import type { RunContext } from './context.js';
import { CancelledError, ConfigError } from './errors.js';
import { stableStringify, type JsonObject } from './json.js';
import { Module, type AnyModule } from './module.js';
import type { AnyPass, PassContext } from './pass.js';
import {
  action,
  parsePipelineSpec,
  parsePipelineSteps,
  parsePipelineText,
  pipeline,
  pipelineSpecSchema,
  step,
  validatePlan,
  type ActionEvent,
  type ActionMap,
  type PipelineEvent,
  type PipelineResolver,
} from './pipeline.js';
import { definePass } from './rewrite.js';
import { Rng } from './rng.js';
import { layerSelectorSchema, selectOrThrow } from './selector.js';

// ---- toy modules and passes (core cannot depend on nn) ----

class ToyLinear extends Module<tf.Tensor, tf.Tensor, { dim: number; seed: number }> {
  readonly kind: string = 'toy.linear';
  constructor(config: { dim: number; seed: number }, scale = 1, from?: AnyModule) {
    super(config);
    const rng = new Rng(config.seed);
    tf.tidy(() => {
      const w = from ? from.param('w').variable : tf.tensor2d(rng.normalArray(config.dim * config.dim, 0.5), [config.dim, config.dim]);
      this.addParam('w', tf.mul(w, scale));
    });
  }
  forward(x: tf.Tensor): tf.Tensor {
    return tf.matMul(x, this.param('w').variable);
  }
}
class ToyScaled extends ToyLinear {
  override readonly kind = 'toy.scaled';
}
class ToyGain extends Module<tf.Tensor, tf.Tensor, JsonObject> {
  readonly kind = 'toy.gain';
  constructor(inner: AnyModule) {
    super({});
    this.addChild('inner', inner);
  }
  forward(x: tf.Tensor, ctx: RunContext): tf.Tensor {
    return tf.mul(this.child('inner').call(x, ctx) as tf.Tensor, 3);
  }
}
class ToySeq extends Module<tf.Tensor, tf.Tensor, { n: number; dim: number }> {
  readonly kind = 'toy.seq';
  constructor(config: { n: number; dim: number }) {
    super(config);
    for (let i = 0; i < config.n; i++) this.addChild(String(i), new ToyLinear({ dim: config.dim, seed: i + 1 }));
  }
  forward(x: tf.Tensor, ctx: RunContext): tf.Tensor {
    let h = x;
    for (const [, c] of this.children) h = c.call(h, ctx);
    return h;
  }
}

const selectOpt = { select: layerSelectorSchema.default({}) };

function selectPlan(model: AnyModule, select: { kinds?: string[]; include?: string[]; exclude?: string[] }, kinds: string[], who: string, action: string) {
  return selectOrThrow(model.modules(), select, kinds, who).map(([path, m]) => ({ path, kind: m.kind, action, reason: 'test' }));
}

const scale = definePass({
  name: '@leanpass/scale',
  version: '0.1.0',
  stage: 'compress',
  description: 'toy: scale linears',
  options: z.object({ factor: z.number().gt(0).max(10).default(2), mode: z.enum(['fast', 'exact']).default('fast'), ...selectOpt }).strict(),
  targets: ['toy.linear'],
  plan: (m, o) => selectPlan(m, o.select, ['toy.linear'], '@leanpass/scale', 'toy.scaled'),
  build: async (_e, m, t) => {
    await Promise.resolve();
    return new ToyScaled(m.config as { dim: number; seed: number }, t.options.factor, m);
  },
});

const gain = definePass({
  name: '@leanpass/gain',
  version: '0.1.0',
  stage: 'inference',
  description: 'toy: wrap linears (and scaled ones) with a gain',
  options: z.object({ ...selectOpt }).strict(),
  targets: ['toy.linear', 'toy.scaled'],
  restacks: ['@leanpass/scale'],
  plan: (m, o) => selectPlan(m, o.select, ['toy.linear', 'toy.scaled'], '@leanpass/gain', 'toy.gain'),
  build: (_e, m) => new ToyGain(m),
});

/** Rewrites only what `scale` creates. */
const rescale = definePass({
  name: '@other/rescale',
  version: '2.0.0',
  stage: 'compress',
  description: 'toy: rescale scaled linears',
  options: z.object({ ...selectOpt }).strict(),
  targets: ['toy.scaled'],
  restacks: ['@leanpass/scale'],
  plan: (m, o) => selectPlan(m, o.select, ['toy.scaled'], '@other/rescale', 'toy.scaled'),
  build: (_e, m) => new ToyScaled(m.config as { dim: number; seed: number }, 0.5, m),
});

/** Needs calibration; no restacks. */
const calib = definePass({
  name: '@leanpass/calib',
  version: '0.3.0',
  stage: 'compress',
  description: 'toy: needs calibration',
  options: z.object({ ...selectOpt }).strict(),
  targets: ['toy.linear', 'toy.scaled'],
  requires: ['calibration'],
  plan: (m, o) => selectPlan(m, o.select, ['toy.linear', 'toy.scaled'], '@leanpass/calib', 'toy.scaled'),
  build: (_e, m, t) => new ToyScaled(m.config as { dim: number; seed: number }, t.ctx.calibration?.sampleCap ?? 1, m),
});

const evaluateSchema = z.object({ task: z.string().default('copy'), samples: z.number().int().positive().default(8) }).strict();
const calibration = { sampleCap: 4, batches: async function* () {} };

function actions(log: string[] = []): ActionMap {
  return {
    evaluate: {
      options: evaluateSchema,
      run: (model, options) => {
        log.push(`evaluate ${JSON.stringify(options.task)} ${model.paramCount()}`);
        return Promise.resolve({ score: model.get('0').kind === 'toy.linear' ? 1 : 0.5 });
      },
    },
    calibrate: {
      provides: ['calibration'],
      run: (_m, _o, ctx) =>
        new Observable<ActionEvent>((s) => {
          s.next({ type: 'progress', fraction: 1, message: 'calibrated' });
          ctx.provide({ calibration });
          s.next({ type: 'done', result: { samples: 4 } });
          s.complete();
        }),
    },
    noop: () => undefined,
  };
}

const resolver: PipelineResolver = { passes: [scale, gain, rescale, calib], actions: actions() as PipelineResolver['actions'] };

function snapshot(model: AnyModule): string {
  return stableStringify({ node: model.toNode(), provenance: model.provenance, params: [...model.namedParams()].map(([p, v]) => [p, Array.from(v.variable.dataSync())]) });
}
const ctx = (extra: Partial<PassContext> = {}): PassContext => ({ seed: 3, backend: 'cpu', ...extra });
async function errorOf(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection');
}

beforeAll(async () => {
  await useBackend('cpu');
});

describe('pipeline (code form)', () => {
  it('runs passes and actions in order, tagging events with the step and reporting each step', async () => {
    const model = new ToySeq({ n: 2, dim: 3 });
    const log: string[] = [];
    const p = pipeline(step(scale, { factor: 3 }), action('calibrate'), step(gain, { select: { include: ['1'] } }), action('evaluate', { task: 'add' }));
    const events = await lastValueFrom(p.run(model, ctx(), { actions: actions(log) }).pipe(toArray()));
    const types = events.map((e) => (e.type === 'pass-event' || e.type === 'action-event' ? `${e.type}:${e.index}:${e.event.type}` : e.type));
    expect(types).toEqual([
      'start',
      'step-start',
      'pass-event:0:progress',
      'pass-event:0:progress',
      'pass-event:0:done',
      'step-end',
      'step-start',
      'action-event:1:progress',
      'action-event:1:done',
      'step-end',
      'step-start',
      'pass-event:2:progress',
      'pass-event:2:done',
      'step-end',
      'step-start',
      'step-end',
      'done',
    ]);
    const done = events.at(-1) as Extract<PipelineEvent, { type: 'done' }>;
    expect(done.report.text).toBe('scale{factor=3} | calibrate | gain{select={include=["1"]}} | evaluate{task=add}');
    expect(done.report.steps.map((s) => [s.index, s.kind, s.name])).toEqual([
      [0, 'pass', '@leanpass/scale'],
      [1, 'action', 'calibrate'],
      [2, 'pass', '@leanpass/gain'],
      [3, 'action', 'evaluate'],
    ]);
    expect(done.report.steps[0]?.pass?.modules).toEqual(['0', '1']);
    expect(done.report.steps[1]?.result).toEqual({ samples: 4 });
    expect(done.report.steps[3]?.result).toEqual({ score: 0.5 });
    expect(done.report.steps[3]?.options).toEqual({ task: 'add', samples: 8 });
    expect(done.report.steps.every((s) => s.durationMs >= 0)).toBe(true);
    expect(done.report.params).toEqual({ before: 18, after: 18 });
    expect(log).toEqual(['evaluate "add" 18']);
    expect([...model.modules()].map(([p, m]) => `${p}:${m.kind}:${m.mark ?? ''}`)).toEqual([':toy.seq:', '0:toy.scaled:@leanpass/scale', '1:toy.gain:@leanpass/gain', '1.inner:toy.scaled:@leanpass/scale']);
    expect(model.provenance.map((e) => e.pass)).toEqual(['@leanpass/scale', '@leanpass/gain']);
    const start = events[0] as Extract<PipelineEvent, { type: 'start' }>;
    expect(start.plans.map((pl) => pl?.entries.map((e) => e.path))).toEqual([['0', '1'], undefined, ['1'], undefined]);
  });

  it('step() parses options at once and lists every problem', () => {
    expect(() => step(scale, { factor: 11, mode: 'slow' } as never)).toThrow(ConfigError);
    try {
      step(scale, { factor: 11, mode: 'slow' } as never);
    } catch (e) {
      expect((e as ConfigError).issues.map((i) => `${i.path}: ${i.message}`)).toEqual(['options.factor: expected number ≤ 10, found 11', 'options.mode: expected one of "fast", "exact", found "slow"']);
    }
  });

  it('runs hooks around each step: before, verify (passes), after (extra in the report), failed', async () => {
    const model = new ToySeq({ n: 1, dim: 2 });
    const calls: string[] = [];
    const p = pipeline(step(scale), action('noop'));
    const events = await lastValueFrom(
      p
        .run(model, ctx(), {
          actions: actions(),
          hooks: {
            before: (s) => void calls.push(`before ${s.index}`),
            verify: (s, m, r) => void calls.push(`verify ${s.index} ${r.modules.join()} ${m.get('0').kind}`),
            after: (s, _m, r) => {
              calls.push(`after ${s.index}`);
              return { hooked: r.durationMs >= 0 };
            },
            failed: () => void calls.push('failed'),
          },
        })
        .pipe(toArray()),
    );
    expect(calls).toEqual(['before 0', 'verify 0 0 toy.scaled', 'after 0', 'before 1', 'after 1']);
    const done = events.at(-1) as Extract<PipelineEvent, { type: 'done' }>;
    expect(done.report.steps.map((s) => s.extra)).toEqual([{ hooked: true }, { hooked: true }]);

    const failed = vi.fn();
    const model2 = new ToySeq({ n: 1, dim: 2 });
    const err = await errorOf(
      lastValueFrom(
        pipeline(step(scale), action('noop')).run(model2, ctx(), {
          actions: actions(),
          hooks: {
            verify: () => {
              throw new Error('outputs not finite');
            },
            failed,
          },
        }),
      ),
    );
    expect(err.message).toBe('outputs not finite');
    expect(failed).toHaveBeenCalledWith(expect.objectContaining({ index: 0, name: '@leanpass/scale' }), model2, err);
  });
});

describe('validatePlan', () => {
  it('collects every problem into one ConfigError and run() changes nothing', async () => {
    const model = new ToySeq({ n: 2, dim: 3 });
    model.get('1').mark = '@acme/foreign';
    const snap = snapshot(model);
    const p = pipeline(
      step(calib, { select: { include: ['0'] } }), // requires calibration: missing
      step(scale, { select: { include: ['no.such.layer'] } }), // empty selection
      step(gain, { select: { include: ['1'] } }), // '1' is marked by a pass gain does not restack
      action('evaluate', { samples: -1 }), // bad action options
      action('evalute'), // unknown action
    );
    const err = await errorOf(lastValueFrom(p.run(model, ctx(), { actions: actions() })));
    expect(err).toBeInstanceOf(ConfigError);
    const issues = (err as ConfigError).issues.map((i) => `${i.path}: ${i.message}`);
    expect(issues).toHaveLength(5);
    expect(issues[0]).toMatch(/^steps\[0\]: @leanpass\/calib requires calibration batches .* found none; in a pipeline, an earlier action that provides 'calibration' supplies it/);
    expect(issues[1]).toMatch(/^steps\[1\]: .*matched no module\. Looked for kinds \[toy\.linear\], include \[no\.such\.layer\]/);
    expect(issues[2]).toMatch(/^steps\[2\]: @leanpass\/gain plans to rewrite '1' \(toy\.linear\), which was rewritten by @acme\/foreign \(the model\); @leanpass\/gain does not list @acme\/foreign in its restacks \(it lists: @leanpass\/scale\)$/);
    expect(issues[3]).toBe('steps[3].options.samples: expected number > 0, found -1');
    expect(issues[4]).toMatch(/^steps\[4\]\.action: unknown action 'evalute' \(did you mean 'evaluate'\?\); known: evaluate, calibrate, noop$/);
    expect(snapshot(model)).toBe(snap);
  });

  it('simulates earlier steps: their planned paths count as marked by their pass', () => {
    const model = new ToySeq({ n: 2, dim: 3 });
    // gain restacks scale: fine
    expect(validatePlan(pipeline(step(scale), step(gain)), model, ctx()).plans.map((p) => p?.entries.length)).toEqual([2, 2]);
    // calib does not restack scale, and plans the same paths
    let err: unknown;
    try {
      validatePlan(pipeline(step(scale, { select: { include: ['0'] } }), step(calib)), model, ctx({ calibration }));
    } catch (e) {
      err = e;
    }
    expect((err as ConfigError).issues).toEqual([
      { path: 'steps[1]', message: "@leanpass/calib plans to rewrite '0' (toy.linear), which was rewritten by @leanpass/scale (planned by steps[0]); @leanpass/calib does not list @leanpass/scale in its restacks (it lists: none)" },
    ]);
    // nothing was changed by validation
    expect(model.get('0').kind).toBe('toy.linear');
  });

  it('an action that provides a requirement satisfies later passes', async () => {
    const model = new ToySeq({ n: 1, dim: 2 });
    const before = Array.from(model.get('0').param('w').variable.dataSync());
    const p = pipeline(action('calibrate'), step(calib));
    expect(() => validatePlan(p, model, ctx(), { actions: actions() })).not.toThrow();
    await lastValueFrom(p.run(model, ctx(), { actions: actions() }));
    // calib scales by ctx.calibration.sampleCap (4), which only the calibrate action supplied
    expect(Array.from(model.get('0').param('w').variable.dataSync())).toEqual(before.map((v) => Math.fround(v * 4)));
  });

  it('notes (does not fail) a step whose targets only an earlier restacked pass creates, and runs it', async () => {
    const model = new ToySeq({ n: 1, dim: 2 });
    const before = Array.from(model.get('0').param('w').variable.dataSync());
    const p = pipeline(step(scale), step(rescale));
    const check = validatePlan(p, model, ctx());
    expect(check.plans[1]).toBeUndefined();
    expect(check.notes[0]?.path).toBe('steps[1]');
    expect(check.notes[0]?.message).toMatch(/could not be computed ahead \(it may rewrite what @leanpass\/scale creates\)/);
    await lastValueFrom(p.run(model, ctx()));
    expect(model.get('0').mark).toBe('@other/rescale');
    expect(Array.from(model.get('0').param('w').variable.dataSync())).toEqual(before.map((v) => Math.fround(Math.fround(v * 2) * 0.5)));
    // without the enabling step it is an error
    expect(() => validatePlan(pipeline(step(rescale)), new ToySeq({ n: 1, dim: 2 }), ctx())).toThrow(/matched no module\. Looked for kinds \[toy\.scaled\]/);
  });
});

describe('cancellation', () => {
  it('unsubscribing during the 2nd pass leaves the model as after the 1st step', async () => {
    const model = new ToySeq({ n: 3, dim: 3 });
    const reference = new ToySeq({ n: 3, dim: 3 });
    await lastValueFrom(pipeline(step(scale)).run(reference, ctx()));
    const tensors = tf.memory().numTensors;
    let secondStarted = false;
    await new Promise<void>((resolve) => {
      const sub = pipeline(step(scale), step(gain))
        .run(model, ctx())
        .subscribe((e) => {
          if (e.type === 'pass-event' && e.index === 1 && e.event.type === 'progress') {
            secondStarted = true;
            sub.unsubscribe();
            resolve();
          }
        });
    });
    expect(secondStarted).toBe(true);
    await vi.waitFor(() => expect(tf.memory().numTensors).toBeLessThanOrEqual(tensors));
    await new Promise((r) => setTimeout(r, 10));
    expect(snapshot(model)).toBe(snapshot(reference));
    expect(model.provenance.map((p) => p.pass)).toEqual(['@leanpass/scale']);
  });

  it('ctx.signal fired by a step stops before the next step with CancelledError', async () => {
    const model = new ToySeq({ n: 1, dim: 2 });
    const ac = new AbortController();
    const ran: string[] = [];
    const err = await errorOf(
      lastValueFrom(
        pipeline(step(scale), action('stop'), step(gain)).run(model, ctx({ signal: ac.signal }), {
          actions: {
            stop: () => {
              ran.push('stop');
              ac.abort();
            },
          },
        }),
      ),
    );
    expect(err).toBeInstanceOf(CancelledError);
    expect(ran).toEqual(['stop']);
    expect(model.provenance.map((p) => p.pass)).toEqual(['@leanpass/scale']);
    expect(model.get('0').kind).toBe('toy.scaled');
  });

  it('a pre-aborted signal runs nothing', async () => {
    const model = new ToySeq({ n: 1, dim: 2 });
    const snap = snapshot(model);
    const ac = new AbortController();
    ac.abort();
    await expect(firstValueFrom(pipeline(step(scale)).run(model, ctx({ signal: ac.signal })))).rejects.toBeInstanceOf(CancelledError);
    expect(snapshot(model)).toBe(snap);
  });
});

describe('JSON form', () => {
  it('parses, resolves and runs a valid spec', async () => {
    const json = JSON.parse(
      '{ "$schema": "./pipeline.schema.json", "name": "demo", "model": "zoo:toy", "seed": 5, "backend": "cpu", "steps": [ { "pass": "@leanpass/scale", "options": { "factor": 0.5 } }, { "pass": "gain" }, { "action": "evaluate", "options": { "task": "add" } } ] }',
    ) as unknown;
    const p = parsePipelineSpec(json, resolver);
    expect(p.meta).toEqual({ name: 'demo', model: 'zoo:toy', seed: 5, backend: 'cpu' });
    expect(p.steps.map((s) => (s.kind === 'pass' ? s.pass.name : s.action))).toEqual(['@leanpass/scale', '@leanpass/gain', 'evaluate']);
    expect(p.steps[0]?.options).toEqual({ factor: 0.5, mode: 'fast', select: {} });
    expect(p.toSpec({ minimal: true })).toEqual({
      name: 'demo',
      model: 'zoo:toy',
      seed: 5,
      backend: 'cpu',
      steps: [{ pass: '@leanpass/scale', options: { factor: 0.5 } }, { pass: '@leanpass/gain', options: {} }, { action: 'evaluate', options: { task: 'add' } }],
    });
    // the full spec parses back to the same pipeline
    expect(parsePipelineSpec(JSON.parse(JSON.stringify(p.toSpec())), resolver).toSpec()).toEqual(p.toSpec());
    const model = new ToySeq({ n: 1, dim: 2 });
    const events = await lastValueFrom(p.run(model, ctx(), { actions: actions() }).pipe(toArray()));
    expect(events.at(-1)?.type).toBe('done');
  });

  it('lists every problem with its JSON path in one ConfigError', () => {
    const dup = definePass({ ...{ name: '@leanpass/gain', version: '9.9.9', stage: 'compress' as const, description: '', targets: ['x'] }, options: z.object({}).strict(), plan: () => [], build: (_e, m) => m });
    const bad = {
      name: 'broken',
      seed: 1.5,
      backend: 'webgpu',
      extra: true,
      steps: [
        { pass: '@leanpass/scael', options: {} },
        { pass: '@leanpass/scale', options: { factor: 15, mode: 'slow', select: { include: [1] }, ratio: 0.2 } },
        { action: 'evaluate', options: { samples: 0 } },
        { action: 'finetune' },
        { pass: '@leanpass/gain', action: 'evaluate' },
        'scale',
        { opts: 1 },
      ],
    };
    let err: unknown;
    try {
      parsePipelineSpec(bad, { ...resolver, passes: [scale, gain, rescale, calib, dup] });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message.split('\n')[0]).toBe("invalid pipeline 'broken': 14 problem(s)");
    expect((err as ConfigError).issues.map((i) => `${i.path}: ${i.message}`)).toEqual([
      "passes: duplicate pass name '@leanpass/gain': 2 installed passes use it (versions 0.1.0, 9.9.9); uninstall all but one",
      'seed: expected int, found 1.5',
      'backend: expected one of "wasm", "cpu", "tensorflow", found "webgpu"',
      "extra: unknown key 'extra' (expected one of: $schema, name, model, seed, backend, steps)",
      "steps[0].pass: unknown pass '@leanpass/scael' (did you mean '@leanpass/scale'?); installed: @leanpass/calib, @leanpass/gain, @leanpass/scale, @other/rescale",
      'steps[1].options.factor: expected number ≤ 10, found 15',
      'steps[1].options.mode: expected one of "fast", "exact", found "slow"',
      'steps[1].options.select.include[0]: expected string, found 1',
      "steps[1].options.ratio: unknown key 'ratio' (expected one of: factor, mode, select)",
      'steps[2].options.samples: expected number > 0, found 0',
      "steps[3].action: unknown action 'finetune'; known: calibrate, evaluate, noop",
      'steps[4]: a step has either "pass" or "action", found both',
      'steps[5]: expected an object with "pass" or "action", found "scale"',
      'steps[6]: expected "pass" or "action", found keys [opts]',
    ]);
  });

  it('rejects empty steps, missing steps and non-objects', () => {
    expect(() => parsePipelineSpec({ steps: [] }, resolver)).toThrow(/steps: expected at least one step, found none/);
    expect(() => parsePipelineSpec({}, resolver)).toThrow(/steps: expected array, found nothing \(required\)/);
    expect(() => parsePipelineSpec([1], resolver)).toThrow(/expected a JSON object with "steps", found \[1\]/);
  });

  it('resolves passes through a map or a function', () => {
    const spec = { steps: [{ pass: '@leanpass/scale' }] };
    expect(parsePipelineSpec(spec, { passes: new Map<string, AnyPass>([['@leanpass/scale', scale]]) }).steps[0]?.kind).toBe('pass');
    expect(parsePipelineSpec(spec, { passes: (n) => (n === '@leanpass/scale' ? scale : undefined) }).toText()).toBe('scale');
    expect(() => parsePipelineSpec({ steps: [{ pass: 'x' }] }, { passes: () => undefined })).toThrow(/steps\[0\]\.pass: unknown pass 'x'$/m);
  });

  it('exports a schema that z.toJSONSchema turns into a JSON Schema', () => {
    const schema = z.toJSONSchema(pipelineSpecSchema) as { required: string[]; additionalProperties: boolean; properties: Record<string, { minItems?: number; enum?: string[] }> };
    expect(schema.required).toEqual(['steps']);
    expect(schema.additionalProperties).toBe(false);
    expect(schema.properties.steps?.minItems).toBe(1);
    expect(schema.properties.backend?.enum).toEqual(['wasm', 'cpu', 'tensorflow']);
  });
});

describe('canonical text form', () => {
  it('writes short names, only non-default options, sorted keys', () => {
    const p = pipeline(step(scale, { mode: 'exact', factor: 0.2 }), step(gain), action('evaluate', { task: 'add', samples: 8 }, evaluateSchema), action('noop', { b: 1, a: 'x y' }));
    expect(p.toText()).toBe('scale{factor=0.2, mode=exact} | gain | evaluate{task=add} | noop{a="x y", b=1}');
  });

  it('round-trips text → spec → pipeline → text, with awkward values', () => {
    const texts = [
      'scale{factor=0.2} | gain | evaluate{task=add}',
      'scale{select={exclude=["re:^1$", blocks.*.q], include=[**]}} | calib{select={kinds=[toy.scaled]}}',
      'noop{a=[1, -2.5e-7, true, false, null, "true", "12", "a,b|c"], n={"odd key"=x, z={}}} | rescale',
    ];
    for (const t of texts) {
      const spec = parsePipelineText(t, resolver);
      const p = parsePipelineSpec(JSON.parse(JSON.stringify(spec)), resolver);
      expect(p.toText()).toBe(t);
      expect(parsePipelineSpec(parsePipelineText(p.toText(), resolver), resolver).toSpec()).toEqual(p.toSpec());
    }
    expect(parsePipelineText('scale{factor=0.2} | evaluate{task=add}', resolver)).toEqual({
      steps: [
        { pass: '@leanpass/scale', options: { factor: 0.2 } },
        { action: 'evaluate', options: { task: 'add' } },
      ],
    });
    expect(parsePipelineSteps('noop{a=[1, -2.5e-7, true, null, "12"]}')[0]?.options).toEqual({ a: [1, -2.5e-7, true, null, '12'] });
  });

  it('accepts full names and loose spacing; reports syntax errors with their column', () => {
    expect(parsePipelineText('  @leanpass/scale { factor = 3 }|noop  ', resolver)).toEqual({ steps: [{ pass: '@leanpass/scale', options: { factor: 3 } }, { action: 'noop', options: {} }] });
    expect(() => parsePipelineSteps('scale{factor 3}')).toThrow(/column 14: expected '=' after 'factor', found '3}'/);
    expect(() => parsePipelineSteps('scale{factor=3')).toThrow(/column 15: expected ',' or '}', found the end/);
    expect(() => parsePipelineSteps('scale | ')).toThrow(/column 9: expected a step name, found the end/);
    expect(() => parsePipelineSteps('')).toThrow(/expected at least one step/);
    expect(() => parsePipelineSteps('noop{a="open}')).toThrow(/expected a closing '"'/);
  });

  it('reports unknown and ambiguous step names', () => {
    const twin = definePass({ ...{ name: '@acme/scale', version: '1.0.0', stage: 'compress' as const, description: '', targets: ['x'] }, options: z.object({}).strict(), plan: () => [], build: (_e, m) => m });
    let err: unknown;
    try {
      parsePipelineText('scale | skale | evaluate', { ...resolver, passes: [scale, twin, gain] });
    } catch (e) {
      err = e;
    }
    expect((err as ConfigError).issues).toEqual([
      { path: 'steps[0]', message: "'scale' is ambiguous: @leanpass/scale, @acme/scale; write the full package name" },
      { path: 'steps[1]', message: "unknown step 'skale' (did you mean 'scale'?): not an installed pass (@acme/scale, @leanpass/gain, @leanpass/scale) nor an action (calibrate, evaluate, noop)" },
    ]);
  });
});
