import { Observable, isObservable, type Subscription } from 'rxjs';
import { z } from 'zod';
import type { BackendName } from './backend.js';
import { CancelledError, ConfigError, LeanpassError, type ConfigIssue } from './errors.js';
import { stableStringify, type JsonObject, type JsonValue } from './json.js';
import type { AnyModule } from './module.js';
import type { AnyPass, LogLevel, PassContext, PassEvent, PassPlan, PassReport, Requirement } from './pass.js';
import { checkPlanShape, checkRequirements, checkStacking, describeValue, markedPaths, parsePassOptions, zodIssuesToConfigIssues, type MarkedPath } from './rewrite.js';

// ---------------------------------------------------------------------------------------------
// Steps and actions
// ---------------------------------------------------------------------------------------------

/** A pass with its resolved options (every field, defaults filled in). */
export interface PassStep {
  readonly kind: 'pass';
  readonly pass: AnyPass;
  readonly options: JsonObject;
}

/** An action implemented by the host application (finetune, calibrate, evaluate, generate, bench, export…). */
export interface ActionStep {
  readonly kind: 'action';
  readonly action: string;
  readonly options: JsonObject;
  /** The action's options schema when known (to resolve defaults and shorten the text form). */
  readonly schema?: z.ZodType;
}

export type PipelineStep = PassStep | ActionStep;

/** A pass step; the options are parsed now (a ConfigError lists every problem with its path). */
export function step<P extends AnyPass>(pass: P, options?: z.input<P['options']>): PassStep {
  return { kind: 'pass', pass, options: parsePassOptions(pass, options ?? {}) as JsonObject };
}

/** An action step; with a schema, the options are parsed now. */
export function action(name: string, options: JsonObject = {}, schema?: z.ZodType): ActionStep {
  if (!schema) return { kind: 'action', action: name, options };
  return { kind: 'action', action: name, options: parsePassOptions({ name: `action '${name}'`, options: schema }, options) as JsonObject, schema };
}

/** What an action emits (if it returns an Observable). */
export type ActionEvent =
  | { type: 'progress'; fraction: number; message?: string }
  | { type: 'log'; level: LogLevel; message: string }
  | { type: 'metric'; name: string; value: number; step?: number }
  | { type: 'done'; result: JsonObject };

/** What an action may hand to the steps after it (e.g. a calibrate action providing calibration batches). */
export type ContextPatch = Partial<Pick<PassContext, 'calibration' | 'trainData' | 'evalData' | 'extras'>>;

export interface ActionContext extends PassContext {
  /** Fires when the pipeline is cancelled (ctx.signal or unsubscribe). */
  signal: AbortSignal;
  /** Index of this step. */
  step: number;
  /** Reports of the steps completed so far. */
  reports: readonly StepReport[];
  /** Supplies context (calibration, data, extras) to the following steps. */
  provide(patch: ContextPatch): void;
}

/** Runs an action; an Observable may emit progress/log/metric and a final `done` with its result. */
export type ActionHandler = (model: AnyModule, options: JsonObject, ctx: ActionContext) => Observable<ActionEvent> | Promise<JsonObject | void> | JsonObject | void;

export interface ActionDefinition {
  run: ActionHandler;
  /** Options schema (strict, with defaults), used to validate pipelines before they run. */
  options?: z.ZodType;
  /** Requirements this action supplies to later steps through `ctx.provide`. */
  provides?: readonly Requirement[];
  description?: string;
}

export type ActionMap = Record<string, ActionHandler | ActionDefinition>;

function actionDef(a: ActionHandler | ActionDefinition): ActionDefinition {
  return typeof a === 'function' ? { run: a } : a;
}

// ---------------------------------------------------------------------------------------------
// Events and reports
// ---------------------------------------------------------------------------------------------

export interface StepInfo {
  index: number;
  kind: 'pass' | 'action';
  /** Pass package name or action name. */
  name: string;
  options: JsonObject;
}

export interface StepReport extends StepInfo {
  durationMs: number;
  /** The pass's report (pass steps). */
  pass?: PassReport;
  /** The action's result (action steps). */
  result?: JsonObject;
  /** What the `after` hook returned (timing, memory, statistics…). */
  extra?: JsonObject;
}

export interface PipelineReport {
  name?: string;
  /** Canonical text form. */
  text: string;
  seed: number;
  backend: string;
  steps: StepReport[];
  durationMs: number;
  params: { before: number; after: number };
}

export type PipelineEvent =
  | { type: 'start'; text: string; steps: StepInfo[]; plans: Array<PassPlan | undefined>; notes: ConfigIssue[] }
  | ({ type: 'step-start' } & StepInfo)
  | { type: 'pass-event'; index: number; name: string; event: PassEvent }
  | { type: 'action-event'; index: number; name: string; event: ActionEvent }
  | { type: 'step-end'; index: number; kind: 'pass' | 'action'; name: string; durationMs: number; report: StepReport }
  | { type: 'done'; report: PipelineReport };

export interface PipelineHooks {
  before?(step: StepInfo, model: AnyModule): void | Promise<void>;
  /** After each pass step: throw to fail the pipeline (the step's rewrite stays in the model). */
  verify?(step: StepInfo, model: AnyModule, report: PassReport): void | Promise<void>;
  /** After each step; an object returned is stored as the step report's `extra`. */
  after?(step: StepInfo, model: AnyModule, report: StepReport): JsonObject | void | Promise<JsonObject | void>;
  failed?(step: StepInfo, model: AnyModule, error: unknown): void | Promise<void>;
}

export interface PipelineRunOptions {
  actions?: ActionMap;
  hooks?: PipelineHooks;
}

// ---------------------------------------------------------------------------------------------
// Pipeline
// ---------------------------------------------------------------------------------------------

export interface PipelineMeta {
  name?: string;
  model?: string;
  seed?: number;
  backend?: BackendName;
}

export class Pipeline {
  readonly steps: readonly PipelineStep[];
  readonly meta: PipelineMeta;
  constructor(steps: readonly PipelineStep[], meta: PipelineMeta = {}) {
    this.steps = [...steps];
    this.meta = { ...meta };
  }

  /** The same steps with other metadata. */
  withMeta(meta: PipelineMeta): Pipeline {
    return new Pipeline(this.steps, { ...this.meta, ...meta });
  }

  /** Canonical one-line form: `skipcat{ratio=0.2} | dare{mode=kv} | evaluate{task=add}`. */
  toText(): string {
    return pipelineToText(this);
  }

  /** The JSON form. `minimal`: only options that differ from the defaults (default: every resolved option). */
  toSpec(opts: { minimal?: boolean } = {}): PipelineSpec {
    const spec: PipelineSpec = { steps: [] };
    if (this.meta.name !== undefined) spec.name = this.meta.name;
    if (this.meta.model !== undefined) spec.model = this.meta.model;
    if (this.meta.seed !== undefined) spec.seed = this.meta.seed;
    if (this.meta.backend !== undefined) spec.backend = this.meta.backend;
    for (const s of this.steps) {
      const options = opts.minimal ? nonDefaultOptions(s) : s.options;
      spec.steps.push(s.kind === 'pass' ? { pass: s.pass.name, options } : { action: s.action, options });
    }
    return spec;
  }

  /** Checks the whole pipeline on the model (see `validatePlan`). */
  validate(model: AnyModule, ctx: PassContext, opts: { actions?: ActionMap } = {}): PlanCheck {
    return validatePlan(this, model, ctx, opts);
  }

  /**
   * Runs the steps in order as one Observable. `validatePlan` runs first (nothing changes if it fails).
   * Unsubscribing or firing ctx.signal stops between steps and inside passes; the model is left as it
   * was after the last completed step.
   */
  run(model: AnyModule, ctx: PassContext, opts: PipelineRunOptions = {}): Observable<PipelineEvent> {
    return new Observable<PipelineEvent>((subscriber) => {
      const controller = new AbortController();
      const outer = ctx.signal;
      const onOuterAbort = (): void => controller.abort(outer?.reason);
      if (outer?.aborted) controller.abort(outer.reason);
      else outer?.addEventListener('abort', onOuterAbort, { once: true });
      let finished = false;
      const emit = (e: PipelineEvent): void => {
        if (!subscriber.closed) subscriber.next(e);
      };
      runPipeline(this, model, ctx, opts, controller.signal, emit).then(
        (report) => {
          finished = true;
          emit({ type: 'done', report });
          subscriber.complete();
        },
        (err: unknown) => {
          finished = true;
          subscriber.error(err);
        },
      );
      return () => {
        outer?.removeEventListener('abort', onOuterAbort);
        if (!finished) controller.abort(new CancelledError('pipeline unsubscribed'));
      };
    });
  }
}

/** `pipeline(step(skipcat, { ratio: 0.2 }), action('evaluate', { task: 'add' }))`. */
export function pipeline(...steps: PipelineStep[]): Pipeline {
  return new Pipeline(steps);
}

function stepInfo(s: PipelineStep, index: number): StepInfo {
  return { index, kind: s.kind, name: s.kind === 'pass' ? s.pass.name : s.action, options: s.options };
}

function drain<E>(obs: Observable<E>, signal: AbortSignal, onEvent: (e: E) => void): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal.aborted) {
      reject(new CancelledError('pipeline cancelled'));
      return;
    }
    const held: { sub?: Subscription } = {};
    let settled = false;
    const onAbort = (): void => {
      held.sub?.unsubscribe();
      if (!settled) {
        settled = true;
        reject(new CancelledError('pipeline cancelled'));
      }
    };
    signal.addEventListener('abort', onAbort, { once: true });
    const sub = obs.subscribe({
      next: onEvent,
      error: (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        if (!settled) {
          settled = true;
          reject(e instanceof Error ? e : new Error(String(e)));
        }
      },
      complete: () => {
        signal.removeEventListener('abort', onAbort);
        if (!settled) {
          settled = true;
          resolve();
        }
      },
    });
    held.sub = sub;
    if (settled) sub.unsubscribe();
  });
}

async function runPipeline(
  p: Pipeline,
  model: AnyModule,
  ctx: PassContext,
  opts: PipelineRunOptions,
  signal: AbortSignal,
  emit: (e: PipelineEvent) => void,
): Promise<PipelineReport> {
  const t0 = performance.now();
  if (signal.aborted) throw new CancelledError('pipeline cancelled');
  const actions = opts.actions ?? {};
  const hooks = opts.hooks ?? {};
  const check = validatePlan(p, model, ctx, { actions });
  const text = p.toText();
  emit({ type: 'start', text, steps: p.steps.map(stepInfo), plans: check.plans, notes: check.notes });
  const paramsBefore = model.paramCount();
  const reports: StepReport[] = [];
  const provided: ContextPatch = {};

  for (let i = 0; i < p.steps.length; i++) {
    if (signal.aborted) throw new CancelledError('pipeline cancelled');
    const s = p.steps[i] as PipelineStep;
    const info = stepInfo(s, i);
    emit({ type: 'step-start', ...info });
    const start = performance.now();
    let report: StepReport;
    try {
      await hooks.before?.(info, model);
      if (s.kind === 'pass') {
        let passReport: PassReport | undefined;
        const stepCtx: PassContext = { ...ctx, ...provided, signal };
        await drain(s.pass.apply(model, s.options, stepCtx), signal, (event) => {
          if (event.type === 'done') passReport = event.report;
          emit({ type: 'pass-event', index: i, name: info.name, event });
        });
        if (!passReport) throw new LeanpassError(`${s.pass.name}: apply completed without a 'done' event`);
        await hooks.verify?.(info, model, passReport);
        report = { ...info, durationMs: performance.now() - start, pass: passReport };
      } else {
        const def = actionDef(actions[s.action] as ActionHandler | ActionDefinition);
        const options = def.options ? (parsePassOptions({ name: `action '${s.action}'`, options: def.options }, s.options, `steps[${i}].options`) as JsonObject) : s.options;
        const actx: ActionContext = {
          ...ctx,
          ...provided,
          signal,
          step: i,
          reports: [...reports],
          provide: (patch) => Object.assign(provided, patch),
        };
        const out = def.run(model, options, actx);
        let result: JsonObject | undefined;
        if (isObservable(out)) {
          await drain(out, signal, (event) => {
            if (event.type === 'done') result = event.result;
            emit({ type: 'action-event', index: i, name: info.name, event });
          });
        } else {
          const r = await out;
          if (r) result = r;
        }
        if (signal.aborted) throw new CancelledError('pipeline cancelled');
        report = { ...info, options, durationMs: performance.now() - start };
        if (result !== undefined) report.result = result;
      }
      const extra = await hooks.after?.(info, model, report);
      if (extra) report.extra = extra;
    } catch (e) {
      try {
        await hooks.failed?.(info, model, e);
      } catch {
        // the step's own error is the one reported
      }
      throw e;
    }
    reports.push(report);
    emit({ type: 'step-end', index: i, kind: info.kind, name: info.name, durationMs: report.durationMs, report });
  }
  const out: PipelineReport = {
    text,
    seed: ctx.seed,
    backend: ctx.backend,
    steps: reports,
    durationMs: performance.now() - t0,
    params: { before: paramsBefore, after: model.paramCount() },
  };
  if (p.meta.name !== undefined) out.name = p.meta.name;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Plan validation
// ---------------------------------------------------------------------------------------------

export interface PlanCheck {
  /** Each pass step's plan on the current model (undefined for actions and unplannable steps). */
  plans: Array<PassPlan | undefined>;
  /** Things that could not be checked ahead (e.g. a step that targets kinds an earlier step creates). */
  notes: ConfigIssue[];
}

function errorIssues(err: unknown, base: string): ConfigIssue[] {
  const issues = (err as { issues?: readonly ConfigIssue[] }).issues;
  const header = err instanceof Error ? err.message.split('\n')[0] ?? '' : String(err);
  if (!issues || issues.length === 0) return [{ path: base, message: header }];
  return issues.map((i) => {
    if (i.path.startsWith('options')) return { path: `${base}.${i.path}`, message: i.message };
    return { path: base, message: i.path ? `${i.path}: ${i.message}` : i.message };
  });
}

/**
 * Checks the whole pipeline on the model before anything runs and collects every problem into one
 * ConfigError: unmet `requires` (unless an earlier action `provides` it), plans that throw or are
 * empty, and incompatible stacking (a pass planning to rewrite a module that is marked, or planned by
 * an earlier step, by a pass not in its `restacks`). Later plans are computed on the current model,
 * with the paths planned by earlier steps treated as marked by those steps' passes. A step whose plan
 * fails while an earlier step runs a pass it restacks is only noted (it may target kinds that pass
 * creates). Actions are checked against `opts.actions` when given (unknown names, bad options).
 */
export function validatePlan(p: Pipeline, model: AnyModule, ctx: PassContext, opts: { actions?: ActionMap } = {}): PlanCheck {
  const issues: ConfigIssue[] = [];
  const notes: ConfigIssue[] = [];
  const plans: Array<PassPlan | undefined> = [];
  const marked: MarkedPath[] = markedPaths(model);
  const provided = new Set<Requirement>();
  const earlierPasses: string[] = [];
  if (p.steps.length === 0) issues.push({ path: 'steps', message: 'expected at least one step, found none' });

  p.steps.forEach((s, i) => {
    const base = `steps[${i}]`;
    if (s.kind === 'action') {
      plans.push(undefined);
      if (opts.actions) {
        const a = Object.prototype.hasOwnProperty.call(opts.actions, s.action) ? opts.actions[s.action] : undefined;
        if (a === undefined) {
          issues.push({ path: `${base}.action`, message: unknownMessage('action', s.action, Object.keys(opts.actions)) });
          return;
        }
        const def = actionDef(a);
        if (def.options) {
          const r = def.options.safeParse(s.options);
          if (!r.success) issues.push(...zodIssuesToConfigIssues(r.error.issues, s.options, `${base}.options`, def.options));
        }
        for (const req of def.provides ?? []) provided.add(req);
      }
      return;
    }
    const pass = s.pass;
    issues.push(...checkRequirements(pass, ctx, base, provided));
    let plan: PassPlan | undefined;
    let planProblems: ConfigIssue[];
    try {
      plan = pass.plan(model, s.options);
      planProblems = checkPlanShape(pass, model, plan, base);
    } catch (e) {
      planProblems = errorIssues(e, base);
    }
    if (planProblems.length) {
      const maker = earlierPasses.find((n) => (pass.restacks ?? []).includes(n));
      if (maker && (!plan || plan.entries.length === 0)) {
        notes.push({ path: base, message: `${pass.name}'s plan could not be computed ahead (it may rewrite what ${maker} creates); it will be checked when the step runs: ${planProblems.map((x) => x.message).join('; ')}` });
      } else issues.push(...planProblems);
      plans.push(undefined);
    } else if (plan) {
      issues.push(...checkStacking(pass, plan.entries, marked, base));
      plans.push(plan);
      for (const e of plan.entries) marked.push({ path: e.path, mark: pass.name, source: `planned by ${base}` });
    }
    earlierPasses.push(pass.name);
  });
  if (issues.length) throw new ConfigError(`pipeline cannot run on this model: ${issues.length} problem(s)`, issues);
  return { plans, notes };
}

// ---------------------------------------------------------------------------------------------
// JSON form
// ---------------------------------------------------------------------------------------------

const optionsField = z.record(z.string(), z.unknown()).optional().describe('options of the pass or action (validated by its own schema)');

export const passStepSchema = z
  .object({
    pass: z.string().min(1).describe('pass package name, e.g. @leanpass/skipcat'),
    options: optionsField,
  })
  .strict();

export const actionStepSchema = z
  .object({
    action: z.string().min(1).describe('action name: finetune, calibrate, evaluate, generate, bench, export…'),
    options: optionsField,
  })
  .strict();

/** The JSON form of a pipeline (strict). `z.toJSONSchema(pipelineSpecSchema)` gives its JSON Schema. */
export const pipelineSpecSchema = z
  .object({
    $schema: z.string().optional(),
    name: z.string().optional(),
    model: z.string().optional().describe('model to load (zoo name or path)'),
    seed: z.number().int().optional(),
    backend: z.enum(['wasm', 'cpu', 'tensorflow']).optional(),
    steps: z.array(z.union([passStepSchema, actionStepSchema])).min(1),
  })
  .strict();

export type PipelineSpec = z.infer<typeof pipelineSpecSchema>;
export type PipelineStepSpec = PipelineSpec['steps'][number];

const topSchema = pipelineSpecSchema.extend({ steps: z.array(z.unknown()) });

export interface PipelineResolver {
  /** Installed passes: a map (by name), a list, or a lookup function. */
  passes: ReadonlyMap<string, AnyPass> | readonly AnyPass[] | ((name: string) => AnyPass | undefined);
  /** Known actions and their options schemas (an ActionMap of definitions fits). */
  actions?: Record<string, { options?: z.ZodType; provides?: readonly Requirement[] }>;
}

interface Installed {
  lookup(name: string): AnyPass | AnyPass[] | undefined;
  names(): string[] | undefined;
  duplicates: ConfigIssue[];
}

/** Short name of a pass: its package name without the scope (`@leanpass/skipcat` → `skipcat`). */
export function shortName(passName: string): string {
  return passName.replace(/^@[^/]+\//, '');
}

function installedPasses(r: PipelineResolver): Installed {
  if (typeof r.passes === 'function') {
    const f = r.passes;
    return { lookup: (n) => f(n), names: () => undefined, duplicates: [] };
  }
  const list = [...new Set(r.passes instanceof Map ? [...(r.passes as ReadonlyMap<string, AnyPass>).values()] : (r.passes as readonly AnyPass[]))];
  const byName = new Map<string, AnyPass[]>();
  for (const p of list) byName.set(p.name, [...(byName.get(p.name) ?? []), p]);
  const duplicates: ConfigIssue[] = [];
  for (const [name, ps] of byName) {
    if (ps.length > 1) duplicates.push({ path: 'passes', message: `duplicate pass name '${name}': ${ps.length} installed passes use it (versions ${ps.map((p) => p.version).join(', ')}); uninstall all but one` });
  }
  const map = r.passes instanceof Map ? (r.passes as ReadonlyMap<string, AnyPass>) : undefined;
  return {
    lookup: (n) => {
      const exact = byName.get(n);
      if (exact) return exact.length === 1 ? exact[0] : exact;
      const keyed = map?.get(n);
      if (keyed) return keyed;
      if (n.includes('/')) return undefined;
      const short = list.filter((p) => shortName(p.name) === n);
      return short.length === 0 ? undefined : short.length === 1 ? short[0] : short;
    },
    names: () => [...byName.keys()].sort(),
    duplicates,
  };
}

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0] as number;
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = d[j] as number;
      d[j] = Math.min((d[j] as number) + 1, (d[j - 1] as number) + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return d[b.length] as number;
}

function unknownMessage(what: string, name: string, known: string[] | undefined): string {
  if (!known) return `unknown ${what} '${name}'`;
  const near = known.filter((k) => editDistance(k, name) <= 2 || editDistance(shortName(k), name) <= 2);
  return `unknown ${what} '${name}'${near.length ? ` (did you mean ${near.map((n) => `'${n}'`).join(' or ')}?)` : ''}; ${what === 'pass' ? 'installed' : 'known'}: ${known.length ? known.join(', ') : 'none'}`;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/**
 * Validates a pipeline in its JSON form and resolves its passes and actions. Every problem is listed
 * in one ConfigError with its JSON path (`steps[1].options.ratio: expected number ≤ 1, found 1.5`):
 * bad top-level fields, empty steps, unknown passes (the installed ones are listed), unknown actions,
 * bad options, duplicate pass names among the installed passes.
 */
export function parsePipelineSpec(json: unknown, resolve: PipelineResolver): Pipeline {
  const issues: ConfigIssue[] = [];
  if (!isPlainObject(json)) throw new ConfigError(`invalid pipeline: expected a JSON object with "steps", found ${describeValue(json)}`);
  const installed = installedPasses(resolve);
  issues.push(...installed.duplicates);
  const top = topSchema.safeParse(json);
  if (!top.success) issues.push(...zodIssuesToConfigIssues(top.error.issues, json, '', topSchema));
  const rawSteps = Array.isArray(json.steps) ? (json.steps as unknown[]) : [];
  if (Array.isArray(json.steps) && rawSteps.length === 0) issues.push({ path: 'steps', message: 'expected at least one step, found none' });
  const actions = resolve.actions ?? {};
  const steps: PipelineStep[] = [];

  rawSteps.forEach((raw, i) => {
    const base = `steps[${i}]`;
    if (!isPlainObject(raw)) {
      issues.push({ path: base, message: `expected an object with "pass" or "action", found ${describeValue(raw)}` });
      return;
    }
    const hasPass = 'pass' in raw;
    const hasAction = 'action' in raw;
    if (hasPass && hasAction) {
      issues.push({ path: base, message: 'a step has either "pass" or "action", found both' });
      return;
    }
    if (!hasPass && !hasAction) {
      issues.push({ path: base, message: `expected "pass" or "action", found keys [${Object.keys(raw).join(', ')}]` });
      return;
    }
    const schema = hasPass ? passStepSchema : actionStepSchema;
    const r = schema.safeParse(raw);
    if (!r.success) {
      issues.push(...zodIssuesToConfigIssues(r.error.issues, raw, base, schema));
      return;
    }
    const options = (raw.options ?? {}) as JsonObject;
    if (hasPass) {
      const name = raw.pass as string;
      const found = installed.lookup(name);
      if (found === undefined) {
        issues.push({ path: `${base}.pass`, message: unknownMessage('pass', name, installed.names()) });
        return;
      }
      if (Array.isArray(found)) {
        issues.push({ path: `${base}.pass`, message: `'${name}' is ambiguous: ${found.map((p) => p.name).join(', ')}; use the full package name` });
        return;
      }
      try {
        steps.push({ kind: 'pass', pass: found, options: parsePassOptions(found, options, `${base}.options`) as JsonObject });
      } catch (e) {
        issues.push(...(e instanceof ConfigError && e.issues.length ? e.issues : [{ path: `${base}.options`, message: e instanceof Error ? e.message : String(e) }]));
      }
      return;
    }
    const name = raw.action as string;
    const a = Object.prototype.hasOwnProperty.call(actions, name) ? actions[name] : undefined;
    if (!a) {
      issues.push({ path: `${base}.action`, message: unknownMessage('action', name, Object.keys(actions).sort()) });
      return;
    }
    if (!a.options) {
      steps.push({ kind: 'action', action: name, options });
      return;
    }
    const parsed = a.options.safeParse(options);
    if (!parsed.success) {
      issues.push(...zodIssuesToConfigIssues(parsed.error.issues, options, `${base}.options`, a.options));
      return;
    }
    steps.push({ kind: 'action', action: name, options: parsed.data as JsonObject, schema: a.options });
  });

  if (issues.length) {
    const name = typeof json.name === 'string' ? ` '${json.name}'` : '';
    throw new ConfigError(`invalid pipeline${name}: ${issues.length} problem(s)`, issues);
  }
  const meta: PipelineMeta = {};
  const spec = top.data as PipelineSpec;
  if (spec.name !== undefined) meta.name = spec.name;
  if (spec.model !== undefined) meta.model = spec.model;
  if (spec.seed !== undefined) meta.seed = spec.seed;
  if (spec.backend !== undefined) meta.backend = spec.backend;
  return new Pipeline(steps, meta);
}

// ---------------------------------------------------------------------------------------------
// Canonical text form
// ---------------------------------------------------------------------------------------------

function defaultsOf(schema: z.ZodType | undefined): JsonObject {
  if (!schema) return {};
  const r = schema.safeParse({});
  return r.success && isPlainObject(r.data) ? (r.data as JsonObject) : {};
}

function nonDefaultOptions(s: PipelineStep): JsonObject {
  const defaults = defaultsOf(s.kind === 'pass' ? (s.pass.options as z.ZodType) : s.schema);
  const out: JsonObject = {};
  for (const k of Object.keys(s.options).sort()) {
    const v = s.options[k];
    if (v === undefined) continue;
    if (k in defaults && stableStringify(defaults[k]) === stableStringify(v)) continue;
    out[k] = v;
  }
  return out;
}

const BARE_STRING = /^[A-Za-z_*?@/][A-Za-z0-9_*?@/.:+-]*$/;
const BARE_KEY = /^[A-Za-z_$][A-Za-z0-9_$-]*$/;
const NUMBER = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$/;

function formatValue(v: JsonValue): string {
  if (v === null || typeof v === 'boolean') return String(v);
  if (typeof v === 'number') return JSON.stringify(v);
  if (typeof v === 'string') return BARE_STRING.test(v) && v !== 'true' && v !== 'false' && v !== 'null' ? v : JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(formatValue).join(', ')}]`;
  return formatObject(v);
}

function formatObject(o: { [k: string]: JsonValue }): string {
  const keys = Object.keys(o)
    .filter((k) => o[k] !== undefined)
    .sort();
  return `{${keys.map((k) => `${BARE_KEY.test(k) ? k : JSON.stringify(k)}=${formatValue(o[k] as JsonValue)}`).join(', ')}}`;
}

/** `name{key=value, …}`, the options block left out when empty. */
export function formatStep(name: string, options: JsonObject): string {
  return Object.keys(options).length ? `${name}${formatObject(options)}` : name;
}

/** Canonical one-line text: short pass names, only options that differ from the defaults, sorted keys. */
export function pipelineToText(p: Pipeline): string {
  return p.steps.map((s) => formatStep(s.kind === 'pass' ? shortName(s.pass.name) : s.action, nonDefaultOptions(s))).join(' | ');
}

class TextParser {
  i = 0;
  constructor(readonly src: string) {}
  fail(expected: string): never {
    const found = this.i >= this.src.length ? 'the end' : `'${this.src.slice(this.i, this.i + 12)}'`;
    throw new ConfigError(`pipeline text, column ${this.i + 1}: expected ${expected}, found ${found}`, [{ path: `column ${this.i + 1}`, message: `expected ${expected}, found ${found}` }]);
  }
  ws(): void {
    while (this.i < this.src.length && /\s/.test(this.src[this.i] as string)) this.i++;
  }
  peek(): string | undefined {
    this.ws();
    return this.src[this.i];
  }
  eat(ch: string): boolean {
    if (this.peek() === ch) {
      this.i++;
      return true;
    }
    return false;
  }
  expect(ch: string, what: string): void {
    if (!this.eat(ch)) this.fail(what);
  }
  quoted(): string {
    const start = this.i;
    this.i++;
    while (this.i < this.src.length && this.src[this.i] !== '"') this.i += this.src[this.i] === '\\' ? 2 : 1;
    if (this.i >= this.src.length) {
      this.i = start;
      this.fail('a closing \'"\'');
    }
    this.i++;
    try {
      return JSON.parse(this.src.slice(start, this.i)) as string;
    } catch {
      this.i = start;
      return this.fail('a valid JSON string');
    }
  }
  bare(): string {
    this.ws();
    const start = this.i;
    while (this.i < this.src.length && !/[\s,{}[\]|="]/.test(this.src[this.i] as string)) this.i++;
    return this.src.slice(start, this.i);
  }
  name(): string {
    this.ws();
    const m = /^[@A-Za-z0-9_./-]+/.exec(this.src.slice(this.i));
    if (!m) this.fail('a step name');
    this.i += m[0].length;
    return m[0];
  }
  key(): string {
    if (this.peek() === '"') return this.quoted();
    const k = this.bare();
    if (!k) this.fail('an option name');
    return k;
  }
  object(): JsonObject {
    this.expect('{', "'{'");
    const out: JsonObject = {};
    if (this.eat('}')) return out;
    for (;;) {
      const k = this.key();
      this.expect('=', `'=' after '${k}'`);
      out[k] = this.value();
      if (this.eat('}')) return out;
      this.expect(',', "',' or '}'");
    }
  }
  array(): JsonValue[] {
    this.expect('[', "'['");
    const out: JsonValue[] = [];
    if (this.eat(']')) return out;
    for (;;) {
      out.push(this.value());
      if (this.eat(']')) return out;
      this.expect(',', "',' or ']'");
    }
  }
  value(): JsonValue {
    const c = this.peek();
    if (c === '"') return this.quoted();
    if (c === '{') return this.object();
    if (c === '[') return this.array();
    const tok = this.bare();
    if (!tok) this.fail('a value');
    if (tok === 'true') return true;
    if (tok === 'false') return false;
    if (tok === 'null') return null;
    if (NUMBER.test(tok)) return Number(tok);
    return tok;
  }
}

/** Parses the text form into names and options (no resolution). */
export function parsePipelineSteps(text: string): Array<{ name: string; options: JsonObject }> {
  const p = new TextParser(text);
  const out: Array<{ name: string; options: JsonObject }> = [];
  if (p.peek() === undefined) p.fail('at least one step');
  for (;;) {
    const name = p.name();
    const options = p.peek() === '{' ? p.object() : {};
    out.push({ name, options });
    if (p.peek() === undefined) return out;
    p.expect('|', "'|' or the end");
  }
}

/**
 * Parses the canonical text form back into a JSON spec (full pass names; the options as written),
 * for replay: `parsePipelineSpec(parsePipelineText(t, r), r).toText() === t` for canonical `t`.
 * A step name is a pass (full or short name) or an action; unknown or ambiguous names are listed.
 */
export function parsePipelineText(text: string, resolve: PipelineResolver): PipelineSpec {
  const parsed = parsePipelineSteps(text);
  const installed = installedPasses(resolve);
  const actions = resolve.actions ?? {};
  const issues: ConfigIssue[] = [];
  const steps: PipelineStepSpec[] = [];
  parsed.forEach(({ name, options }, i) => {
    const base = `steps[${i}]`;
    const found = installed.lookup(name);
    const isAction = Object.prototype.hasOwnProperty.call(actions, name);
    if (Array.isArray(found)) {
      issues.push({ path: base, message: `'${name}' is ambiguous: ${found.map((p) => p.name).join(', ')}; write the full package name` });
    } else if (found && isAction) {
      issues.push({ path: base, message: `'${name}' is both a pass (${found.name}) and an action; write the pass's full package name` });
    } else if (found) {
      steps.push({ pass: found.name, options });
    } else if (isAction) {
      steps.push({ action: name, options });
    } else {
      const known = installed.names();
      const candidates = [...new Set([...(known ?? []).map(shortName), ...Object.keys(actions)])];
      const near = candidates.filter((c) => editDistance(c, name) <= 2);
      issues.push({
        path: base,
        message:
          `unknown step '${name}'${near.length ? ` (did you mean ${near.map((n) => `'${n}'`).join(' or ')}?)` : ''}: ` +
          `not an installed pass (${known ? known.join(', ') || 'none' : 'unknown'}) nor an action (${Object.keys(actions).sort().join(', ') || 'none'})`,
      });
    }
  });
  if (issues.length) throw new ConfigError(`invalid pipeline text: ${issues.length} problem(s)`, issues);
  return { steps };
}
