import type * as tf from '@tensorflow/tfjs';
import { Observable } from 'rxjs';
import type { z } from 'zod';
import { CancelledError, ConfigError, LeanpassError, PassError, type ConfigIssue } from './errors.js';
import { stableStringify, type JsonObject, type JsonValue } from './json.js';
import type { AnyModule, ModuleRegistry } from './module.js';
import type { AnyPass, LogLevel, Pass, PassContext, PassEvent, PassPlan, PassReport, PassStage, PlanEntry, Requirement } from './pass.js';
import { Rng, hashSeed } from './rng.js';

// ---------------------------------------------------------------------------------------------
// Options: zod issues as JSON-path problems
// ---------------------------------------------------------------------------------------------

/** `steps[1].options.ratio` from a base path and zod path segments. */
export function jsonPath(base: string, segments: readonly PropertyKey[]): string {
  let out = base;
  for (const s of segments) {
    if (typeof s === 'number') out += `[${s}]`;
    else if (typeof s === 'string' && /^[A-Za-z_$][A-Za-z0-9_$-]*$/.test(s)) out += out ? `.${s}` : s;
    else out += `[${JSON.stringify(String(s))}]`;
  }
  return out;
}

/** A short rendering of a value found in user input, for error messages. */
export function describeValue(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (typeof v === 'string') return JSON.stringify(v.length > 60 ? `${v.slice(0, 57)}...` : v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v);
  if (typeof v === 'function') return 'a function';
  let s: string;
  try {
    s = JSON.stringify(v) ?? typeof v;
  } catch {
    s = Object.prototype.toString.call(v);
  }
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

function valueAt(root: unknown, segments: readonly PropertyKey[]): unknown {
  let cur: unknown = root;
  for (const s of segments) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[s];
  }
  return cur;
}

interface ZodInternals {
  _zod?: { def?: { type?: string; shape?: Record<string, unknown>; innerType?: unknown; element?: unknown; in?: unknown } };
}

/** The keys an object schema knows at a path (unwrapping optional/default/nullable/pipe), if it is an object there. */
function knownKeysAt(schema: unknown, segments: readonly PropertyKey[]): string[] | undefined {
  let cur: unknown = schema;
  const unwrap = (): void => {
    for (let guard = 0; guard < 16; guard++) {
      const def = (cur as ZodInternals)._zod?.def;
      if (!def) return;
      if (def.innerType !== undefined) cur = def.innerType;
      else if (def.type === 'pipe' && def.in !== undefined) cur = def.in;
      else return;
    }
  };
  unwrap();
  for (const s of segments) {
    const def = (cur as ZodInternals)._zod?.def;
    if (def?.type === 'object' && typeof s === 'string' && def.shape) cur = def.shape[s];
    else if (def?.type === 'array' && typeof s === 'number') cur = def.element;
    else return undefined;
    if (cur === undefined) return undefined;
    unwrap();
  }
  const def = (cur as ZodInternals)._zod?.def;
  return def?.type === 'object' && def.shape ? Object.keys(def.shape) : undefined;
}

interface LooseIssue {
  code?: string;
  path: PropertyKey[];
  message: string;
  expected?: unknown;
  origin?: string;
  maximum?: number | bigint;
  minimum?: number | bigint;
  inclusive?: boolean;
  values?: unknown[];
  keys?: string[];
  format?: string;
  divisor?: number;
  errors?: LooseIssue[][];
}

/**
 * Turns zod issues into problems with JSON paths and the value found, e.g.
 * `steps[1].options.ratio: expected number ≤ 1, found 1.5`. `schema` (optional) lets unknown-key
 * problems list the keys that are known.
 */
export function zodIssuesToConfigIssues(issues: readonly unknown[], input: unknown, base = '', schema?: unknown): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  for (const raw of issues as LooseIssue[]) {
    const found = valueAt(input, raw.path);
    const path = jsonPath(base, raw.path);
    const foundText = `found ${describeValue(found)}`;
    switch (raw.code) {
      case 'invalid_type':
        out.push({ path, message: found === undefined ? `expected ${String(raw.expected)}, found nothing (required)` : `expected ${String(raw.expected)}, ${foundText}` });
        break;
      case 'too_big':
      case 'too_small': {
        const big = raw.code === 'too_big';
        const bound = String(big ? raw.maximum : raw.minimum);
        const op = big ? (raw.inclusive === false ? '<' : '≤') : raw.inclusive === false ? '>' : '≥';
        if (raw.origin === 'array' || raw.origin === 'set') {
          out.push({ path, message: `expected ${big ? 'at most' : 'at least'} ${bound} item(s), found ${Array.isArray(found) ? found.length : describeValue(found)}` });
        } else if (raw.origin === 'string') {
          out.push({ path, message: `expected a string of ${big ? 'at most' : 'at least'} ${bound} character(s), ${foundText}` });
        } else {
          out.push({ path, message: `expected ${raw.origin ?? 'value'} ${op} ${bound}, ${foundText}` });
        }
        break;
      }
      case 'invalid_value':
        out.push({ path, message: `expected one of ${(raw.values ?? []).map((v) => describeValue(v)).join(', ')}, ${foundText}` });
        break;
      case 'unrecognized_keys': {
        const known = schema === undefined ? undefined : knownKeysAt(schema, raw.path);
        for (const k of raw.keys ?? []) {
          out.push({
            path: jsonPath(path, [k]),
            message: `unknown key '${k}'${known ? ` (expected one of: ${known.join(', ') || 'none'})` : ''}`,
          });
        }
        break;
      }
      case 'not_multiple_of':
        out.push({ path, message: `expected a multiple of ${String(raw.divisor)}, ${foundText}` });
        break;
      case 'invalid_format':
        out.push({ path, message: `expected a ${String(raw.format)} string, ${foundText}` });
        break;
      case 'invalid_union': {
        // Report the branch that got furthest (fewest issues), else the generic message.
        const branches = (raw.errors ?? []).filter((b) => b.length > 0).sort((a, b) => a.length - b.length);
        const best = branches[0];
        if (best) out.push(...zodIssuesToConfigIssues(best, input, base, schema));
        else out.push({ path, message: `${raw.message}, ${foundText}` });
        break;
      }
      default:
        out.push({ path, message: `${raw.message} (${foundText})` });
    }
  }
  return out;
}

/**
 * Parses a pass's options with its strict schema. Every problem is listed in one ConfigError, each with
 * its JSON path under `base` (default `options`).
 */
export function parsePassOptions<S extends z.ZodType>(pass: { name: string; options: S }, raw: unknown, base = 'options'): z.output<S> {
  const r = pass.options.safeParse(raw ?? {});
  if (!r.success) {
    throw new ConfigError(`${pass.name}: invalid options`, zodIssuesToConfigIssues(r.error.issues, raw ?? {}, base, pass.options));
  }
  return r.data;
}

// ---------------------------------------------------------------------------------------------
// Requirements and stacking
// ---------------------------------------------------------------------------------------------

const REQUIREMENT_TEXT: Record<Requirement, string> = {
  calibration: 'calibration batches (ctx.calibration: { batches(), sampleCap })',
  trainData: 'training data (ctx.trainData)',
  evalData: 'evaluation data (ctx.evalData)',
};

/** Problems for every requirement of the pass that the context does not supply. */
export function checkRequirements(pass: Pick<AnyPass, 'name' | 'requires'>, ctx: PassContext, path = '', provided: ReadonlySet<Requirement> = new Set()): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  for (const req of pass.requires ?? []) {
    if (ctx[req] === undefined && !provided.has(req)) {
      issues.push({ path, message: `${pass.name} requires ${REQUIREMENT_TEXT[req] ?? req} in the pass context, found none; in a pipeline, an earlier action that provides '${req}' supplies it (the leanpass CLI's \`calibrate\` provides 'calibration')` });
    }
  }
  return issues;
}

/** A module path rewritten (or to be rewritten) by a pass. */
export interface MarkedPath {
  path: string;
  /** The pass name (the mark). */
  mark: string;
  /** Where the mark comes from, for messages: 'the model' or 'steps[0]'. */
  source: string;
}

/** Every marked module of a model. */
export function markedPaths(model: AnyModule): MarkedPath[] {
  const out: MarkedPath[] = [];
  for (const [path, m] of model.modules()) if (m.mark !== undefined) out.push({ path, mark: m.mark, source: 'the model' });
  return out;
}

/** Whether two module paths are the same or one contains the other. */
export function pathsOverlap(a: string, b: string): boolean {
  if (a === b || a === '' || b === '') return true;
  return a.startsWith(`${b}.`) || b.startsWith(`${a}.`);
}

/**
 * Stacking check. A pass may rewrite a module that is, contains or lies inside a module marked by
 * another pass only if that pass is listed in its `restacks`.
 */
export function checkStacking(pass: Pick<AnyPass, 'name' | 'restacks'>, entries: readonly PlanEntry[], marked: readonly MarkedPath[], path = ''): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const allowed = new Set(pass.restacks ?? []);
  for (const e of entries) {
    for (const m of marked) {
      if (m.mark === pass.name || allowed.has(m.mark) || !pathsOverlap(e.path, m.path)) continue;
      const rel = e.path === m.path ? 'which was rewritten' : e.path.startsWith(`${m.path}.`) || m.path === '' ? `which lies inside '${m.path}', rewritten` : `which contains '${m.path}', rewritten`;
      issues.push({
        path,
        message:
          `${pass.name} plans to rewrite '${e.path}' (${e.kind}), ${rel} by ${m.mark} (${m.source}); ` +
          `${pass.name} does not list ${m.mark} in its restacks (it lists: ${[...allowed].join(', ') || 'none'})`,
      });
    }
  }
  return issues;
}

/** Problems with the shape of a plan: no entries, the root, duplicate or nested paths, missing modules, kind mismatches. */
export function checkPlanShape(pass: Pick<AnyPass, 'name' | 'targets'>, model: AnyModule, plan: PassPlan, path = ''): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  if (plan.entries.length === 0) {
    const present = [...new Set([...model.modules()].filter(([p]) => p !== '').map(([, m]) => m.kind))].sort();
    issues.push({ path, message: `${pass.name} found nothing to rewrite: it looks for kinds [${pass.targets.join(', ')}]; the model has kinds [${present.join(', ')}]` });
    return issues;
  }
  const seen = new Set<string>();
  for (const e of plan.entries) {
    if (e.path === '') {
      issues.push({ path, message: `${pass.name} plans to replace the root module; a pass rewrites modules below the root` });
      continue;
    }
    if (seen.has(e.path)) issues.push({ path, message: `${pass.name} plans '${e.path}' twice` });
    seen.add(e.path);
    let found: AnyModule | undefined;
    try {
      found = model.get(e.path);
    } catch (err) {
      issues.push({ path, message: `${pass.name} plans '${e.path}', which does not exist: ${(err as Error).message}` });
    }
    if (found && found.kind !== e.kind) issues.push({ path, message: `${pass.name} plans '${e.path}' as kind ${e.kind}, found kind ${found.kind}` });
  }
  const paths = [...seen].sort();
  for (let i = 0; i < paths.length; i++) {
    for (let j = i + 1; j < paths.length; j++) {
      const a = paths[i] as string;
      const b = paths[j] as string;
      if (b.startsWith(`${a}.`)) issues.push({ path, message: `${pass.name} plans both '${a}' and '${b}' inside it; planned modules must not nest` });
    }
  }
  return issues;
}

// ---------------------------------------------------------------------------------------------
// runRewrite: build all, swap at once
// ---------------------------------------------------------------------------------------------

/** What `build`, `prepare` and `measure` get to report progress and check for cancellation. */
export interface RewriteTools {
  /** Fires on ctx.signal or when the subscriber unsubscribes. */
  readonly signal: AbortSignal;
  /** Seeded from ctx.seed, the pass name and the module path (or 'prepare'): order-independent. */
  readonly rng: Rng;
  /** Progress within the current module (or preparation), 0..1. */
  progress(fraction: number, message?: string): void;
  log(level: LogLevel, message: string): void;
  metric(name: string, value: number, step?: number): void;
  /** Throws CancelledError when the signal has fired: call it between long computations. */
  throwIfAborted(): void;
}

export interface RewriteSpec<O extends JsonObject = JsonObject> {
  pass: Pick<AnyPass, 'name' | 'version' | 'targets' | 'restacks' | 'requires'>;
  model: AnyModule;
  /** The resolved options (recorded in provenance and in the report). */
  options: O;
  ctx: PassContext;
  plan: PassPlan;
  /** Runs once before the builds (e.g. collecting calibration statistics). Use closures for state. */
  prepare?(tools: RewriteTools): void | Promise<void>;
  /** Fraction of the progress bar given to `prepare` (default 0.3 when there is one). */
  prepareWeight?: number;
  /** Builds the replacement of one planned module. Must not change `module` or the model. */
  build(entry: PlanEntry, module: AnyModule, tools: RewriteTools): AnyModule | Promise<AnyModule>;
  /** Extra measurements for the report, taken on the rewritten model before the change is committed. */
  measure?(model: AnyModule, tools: RewriteTools): Record<string, JsonValue> | Promise<Record<string, JsonValue>>;
  /** FLOPs of one forward of the model (for the report's before/after). */
  flops?(model: AnyModule): number | Promise<number>;
  /** Always runs at the end (success, error or cancellation): free what `prepare` made. */
  cleanup?(): void;
}

function variablesOf(module: AnyModule): Set<tf.Variable> {
  const s = new Set<tf.Variable>();
  for (const [, p] of module.namedParams()) s.add(p.variable);
  return s;
}

/** Disposes every parameter of `modules` whose variable is not in `keep` (shared ones survive). */
function disposeExcept(modules: readonly AnyModule[], keep: ReadonlySet<tf.Variable>): void {
  const done = new Set<tf.Variable>();
  for (const m of modules) {
    for (const [, p] of m.namedParams()) {
      const v = p.variable;
      if (keep.has(v) || done.has(v)) continue;
      done.add(v);
      if (!v.isDisposed) v.dispose();
    }
  }
}

function isModule(x: unknown): x is AnyModule {
  return x !== null && typeof x === 'object' && typeof (x as AnyModule).kind === 'string' && typeof (x as AnyModule).toNode === 'function' && typeof (x as AnyModule).namedParams === 'function';
}

function wrapError(who: string, what: string, e: unknown): Error {
  if (e instanceof LeanpassError) return e;
  const err = new PassError(who, `${what}: ${e instanceof Error ? e.message : String(e)}`);
  Object.defineProperty(err, 'cause', { value: e, enumerable: false });
  return err;
}

/**
 * Applies a planned rewrite atomically, as an Observable of PassEvents:
 * 1. checks the context's requirements, the plan's shape and stacking (nothing built yet);
 * 2. runs `prepare`, then builds every replacement (a progress event after each; ctx.signal and the
 *    subscription are checked between modules);
 * 3. swaps all replacements in with `model.replace`, marks them with the pass name, measures;
 * 4. commits: appends provenance, disposes the old modules' parameters (those the new tree does not
 *    reuse) and emits `done` with the report.
 * An error, an abort or an unsubscribe before the commit disposes what was built (parameters the model
 * still uses are kept) and leaves the model exactly as it was.
 */
export function runRewrite<O extends JsonObject>(spec: RewriteSpec<O>): Observable<PassEvent> {
  return new Observable<PassEvent>((subscriber) => {
    const controller = new AbortController();
    const outer = spec.ctx.signal;
    const onOuterAbort = (): void => controller.abort(outer?.reason);
    if (outer?.aborted) controller.abort(outer.reason);
    else outer?.addEventListener('abort', onOuterAbort, { once: true });
    let finished = false;
    executeRewrite(spec, controller.signal, (e) => {
      if (!subscriber.closed) subscriber.next(e);
    }).then(
      () => {
        finished = true;
        subscriber.complete();
      },
      (err: unknown) => {
        finished = true;
        subscriber.error(err);
      },
    );
    return () => {
      outer?.removeEventListener('abort', onOuterAbort);
      if (!finished) controller.abort(new CancelledError(`${spec.pass.name} unsubscribed`));
    };
  });
}

async function executeRewrite<O extends JsonObject>(spec: RewriteSpec<O>, signal: AbortSignal, emit: (e: PassEvent) => void): Promise<void> {
  const { pass, model, ctx, plan } = spec;
  const who = pass.name;
  const check = (): void => {
    if (signal.aborted) throw new CancelledError(`${who} cancelled`);
  };
  try {
    check();
    const problems = [...checkRequirements(pass, ctx), ...checkPlanShape(pass, model, plan), ...checkStacking(pass, plan.entries, markedPaths(model))];
    if (problems.length) throw new PassError(who, 'cannot rewrite this model', problems);

    const n = plan.entries.length;
    const prepW = spec.prepare ? Math.min(0.95, Math.max(0, spec.prepareWeight ?? 0.3)) : 0;
    let phase = { base: 0, width: prepW, current: 0 };
    const makeTools = (label: string): RewriteTools => ({
      signal,
      rng: new Rng(hashSeed(`${ctx.seed}/${who}/${label}`)),
      progress: (fraction, message) => {
        const f = Math.min(1, Math.max(0, Number.isFinite(fraction) ? fraction : 0));
        const ev: PassEvent = { type: 'progress', pass: who, fraction: phase.base + phase.width * f, current: phase.current, total: n };
        if (message !== undefined) ev.message = message;
        emit(ev);
      },
      log: (level, message) => emit({ type: 'log', pass: who, level, message }),
      metric: (name, value, step) => emit(step === undefined ? { type: 'metric', pass: who, name, value } : { type: 'metric', pass: who, name, value, step }),
      throwIfAborted: check,
    });

    const paramsBefore = model.paramCount();
    const flopsBefore = spec.flops ? await spec.flops(model) : undefined;
    check();
    if (spec.prepare) {
      await spec.prepare(makeTools('prepare'));
      check();
      emit({ type: 'progress', pass: who, fraction: prepW, current: 0, total: n, message: 'prepared' });
    }

    const built: Array<{ entry: PlanEntry; module: AnyModule }> = [];
    try {
      for (let i = 0; i < n; i++) {
        check();
        const entry = plan.entries[i] as PlanEntry;
        phase = { base: prepW + ((1 - prepW) * i) / n, width: (1 - prepW) / n, current: i };
        let m: unknown;
        try {
          m = await spec.build(entry, model.get(entry.path), makeTools(entry.path));
        } catch (e) {
          throw wrapError(who, `failed while building '${entry.path}' (${entry.kind})`, e);
        }
        if (!isModule(m)) throw new PassError(who, `build of '${entry.path}' returned ${describeValue(m)}, expected a Module`);
        built.push({ entry, module: m });
        emit({ type: 'progress', pass: who, fraction: prepW + ((1 - prepW) * (i + 1)) / n, current: i + 1, total: n, message: `built ${entry.path} (${m.kind})` });
      }
      check();
    } catch (e) {
      disposeExcept(
        built.map((b) => b.module),
        variablesOf(model),
      );
      throw e;
    }

    // Swap everything in; undo on any failure until the commit.
    const swapped: Array<{ path: string; old: AnyModule; neu: AnyModule; prevMark: string | undefined }> = [];
    const undo = (): void => {
      for (let i = swapped.length - 1; i >= 0; i--) {
        const s = swapped[i] as (typeof swapped)[number];
        s.neu.mark = s.prevMark;
        model.replace(s.path, s.old);
      }
    };
    let paramsAfter: number;
    let flopsAfter: number | undefined;
    let measured: Record<string, JsonValue> | undefined;
    try {
      for (const { entry, module } of built) {
        const prevMark = module.mark;
        const old = model.replace(entry.path, module);
        swapped.push({ path: entry.path, old, neu: module, prevMark });
        module.mark = who;
      }
      paramsAfter = model.paramCount();
      if (spec.flops) flopsAfter = await spec.flops(model);
      if (spec.measure) {
        phase = { base: 1, width: 0, current: n };
        measured = await spec.measure(model, makeTools('measure'));
      }
      check();
    } catch (e) {
      undo();
      disposeExcept(
        built.map((b) => b.module),
        variablesOf(model),
      );
      throw wrapError(who, 'failed after swapping in the replacements (the model was restored)', e);
    }

    // Commit.
    const paths = built.map((b) => b.entry.path);
    model.provenance.push({ pass: who, version: pass.version, options: JSON.parse(stableStringify(spec.options)) as JsonObject, seed: ctx.seed, paths });
    disposeExcept(
      swapped.map((s) => s.old),
      variablesOf(model),
    );
    const report: PassReport = {
      pass: who,
      version: pass.version,
      options: JSON.parse(stableStringify(spec.options)) as JsonObject,
      modules: paths,
      params: { before: paramsBefore, after: paramsAfter },
    };
    if (flopsBefore !== undefined && flopsAfter !== undefined) report.flops = { before: flopsBefore, after: flopsAfter };
    if (measured !== undefined) report.measured = measured;
    emit({ type: 'done', pass: who, report });
  } finally {
    spec.cleanup?.();
  }
}

// ---------------------------------------------------------------------------------------------
// definePass: a Pass from a plan and a build function
// ---------------------------------------------------------------------------------------------

export interface DefinePassTools<O, R> extends RewriteTools {
  model: AnyModule;
  options: O;
  ctx: PassContext;
  plan: PassPlan;
  /** What `prepare` returned. */
  prepared: R;
}

export interface PassDefinition<S extends z.ZodType<JsonObject, JsonObject>, R = undefined> {
  /** The npm package name, e.g. `@leanpass/skipcat`. */
  name: string;
  version: string;
  stage: PassStage;
  description: string;
  /** Strict zod object schema with a default for every field. */
  options: S;
  targets: readonly string[];
  requires?: readonly Requirement[];
  restacks?: readonly string[];
  /** Registers the kinds the pass introduces (default: none). */
  registerKinds?(registry: ModuleRegistry): void;
  /** The rewrite list (entries or a whole plan); changes nothing. An empty list becomes a PassError. */
  plan(model: AnyModule, options: z.output<S>): PlanEntry[] | PassPlan;
  /** Runs once before the builds; what it returns reaches every build as `tools.prepared`. */
  prepare?(args: { model: AnyModule; options: z.output<S>; ctx: PassContext; plan: PassPlan; tools: RewriteTools }): R | Promise<R>;
  prepareWeight?: number;
  build(entry: PlanEntry, module: AnyModule, tools: DefinePassTools<z.output<S>, R>): AnyModule | Promise<AnyModule>;
  measure?(model: AnyModule, args: { options: z.output<S>; ctx: PassContext; plan: PassPlan; prepared: R; tools: RewriteTools }): Record<string, JsonValue> | Promise<Record<string, JsonValue>>;
  flops?(model: AnyModule): number | Promise<number>;
  /** Frees what `prepare` made; runs at the end whatever happened. */
  cleanup?(prepared: R): void;
}

/**
 * Builds a Pass from a definition. `plan` parses the options (every problem listed, with JSON paths)
 * and fails with a PassError naming the kinds looked for when nothing is planned; `apply` runs the
 * plan through `runRewrite` (atomic, cancellable, provenance, marks, report).
 */
export function definePass<S extends z.ZodType<JsonObject, JsonObject>, R = undefined>(def: PassDefinition<S, R>): Pass<S> {
  const meta = { name: def.name, version: def.version, targets: def.targets, restacks: def.restacks ?? [], requires: def.requires ?? [] };
  const plan = (model: AnyModule, options: z.output<S>): PassPlan => {
    const resolved = parsePassOptions(def, options);
    const raw = def.plan(model, resolved);
    const p: PassPlan = Array.isArray(raw) ? { pass: def.name, entries: raw } : { ...raw, pass: def.name };
    const problems = checkPlanShape(meta, model, p);
    if (problems.length) throw new PassError(def.name, p.entries.length === 0 ? 'empty plan' : 'invalid plan', problems);
    return p;
  };
  const pass: Pass<S> = {
    name: def.name,
    version: def.version,
    stage: def.stage,
    description: def.description,
    options: def.options,
    targets: def.targets,
    requires: meta.requires,
    restacks: meta.restacks,
    registerKinds: (registry) => def.registerKinds?.(registry),
    plan,
    apply: (model, options, ctx) =>
      new Observable<PassEvent>((subscriber) => {
        let resolved: z.output<S>;
        let p: PassPlan;
        try {
          if (ctx.signal?.aborted) throw new CancelledError(`${def.name} cancelled`);
          resolved = parsePassOptions(def, options);
          p = plan(model, resolved);
        } catch (e) {
          subscriber.error(e);
          return undefined;
        }
        let prepared: R = undefined as R;
        let didPrepare = false;
        const spec: RewriteSpec<z.output<S>> = {
          pass: meta,
          model,
          options: resolved,
          ctx,
          plan: p,
          build: (entry, module, tools) => def.build(entry, module, { ...tools, model, options: resolved, ctx, plan: p, prepared }),
        };
        if (def.prepare) {
          const prep = def.prepare.bind(def);
          spec.prepare = async (tools) => {
            prepared = await prep({ model, options: resolved, ctx, plan: p, tools });
            didPrepare = true;
          };
        }
        if (def.prepareWeight !== undefined) spec.prepareWeight = def.prepareWeight;
        if (def.measure) {
          const measure = def.measure.bind(def);
          spec.measure = (m, tools) => measure(m, { options: resolved, ctx, plan: p, prepared, tools });
        }
        if (def.flops) spec.flops = def.flops.bind(def);
        if (def.cleanup) {
          const cleanup = def.cleanup.bind(def);
          spec.cleanup = () => {
            if (didPrepare || !def.prepare) cleanup(prepared);
          };
        }
        return runRewrite(spec).subscribe(subscriber);
      }),
  };
  return pass;
}
