/**
 * `@leanpass/core/testing`: the conformance suite every pass package runs in its own tests.
 *
 * `passConformance({...})` registers vitest blocks; the checks behind them are exported as plain async
 * functions that throw a `ConformanceError` naming what broke, so they can be used outside vitest too.
 */
import * as tf from '@tensorflow/tfjs';
import type { Subscription } from 'rxjs';
import type { z } from 'zod';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { useBackend, type BackendName } from '../backend.js';
import { createRunContext, type RunContext } from '../context.js';
import { stableStringify, type JsonObject } from '../json.js';
import { registry as globalRegistry, type AnyModule, type ModuleRegistry } from '../module.js';
import type { AnyPass, PassContext, PassEvent, PassReport } from '../pass.js';
import { describeValue, zodIssuesToConfigIssues } from '../rewrite.js';
import { deserializeModel, serializeModel } from '../serialize.js';

/** A conformance check that failed. */
export class ConformanceError extends Error {
  override readonly name = 'ConformanceError';
  constructor(
    readonly check: string,
    message: string,
  ) {
    super(`${check}: ${message}`);
  }
}

export interface ConformanceOptions {
  pass: AnyPass;
  /** A fresh host model; the same seed must give the same model. */
  makeModel: (seed: number) => AnyModule | Promise<AnyModule>;
  /** A fresh input for `forward`. */
  makeInput: () => tf.Tensor;
  /** How to run the model (default: `model.call(input, ctx)` with an eval context of seed 0). */
  forward?: (model: AnyModule, input: tf.Tensor, ctx: RunContext) => tf.Tensor;
  /** Raw options to apply with (default `{}`). */
  options?: JsonObject;
  /** The pass context (default `{ seed: 0, backend: <current> }`); a new one per apply. */
  context?: () => PassContext;
  /** Backends to run the model checks on (default `['cpu', 'wasm']`). */
  backends?: BackendName[];
  /** Registry used to load the rewritten model (default: core's global registry). */
  registry?: ModuleRegistry;
  /** Seed given to `makeModel` (default 0). */
  modelSeed?: number;
  /** Save/load output tolerance: |a − b| ≤ tol · (1 + |b|) (default 1e-6). */
  tolerance?: number;
  /** How long to wait for an unsubscribed apply to wind down (default 30 000 ms). */
  settleTimeoutMs?: number;
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/** Everything that must not change when an apply is aborted: tree, marks, provenance, every parameter. */
export interface ModelSnapshot {
  tree: string;
  provenance: string;
  params: Map<string, { variable: tf.Variable; shape: number[]; dtype: string; trainable: boolean; values: Float32Array | Int32Array | Uint8Array }>;
}

export function snapshotModel(model: AnyModule): ModelSnapshot {
  const params: ModelSnapshot['params'] = new Map();
  for (const [path, p] of model.namedParams()) {
    params.set(path, { variable: p.variable, shape: p.shape, dtype: p.dtype, trainable: p.trainable, values: p.variable.dataSync().slice() });
  }
  return { tree: stableStringify(model.toNode()), provenance: stableStringify(model.provenance), params };
}

/**
 * Differences between a snapshot and a model (empty when equal). With `sameVariables` (default) the
 * parameters must also be the very same tf.Variables (an aborted apply must not swap any).
 */
export function diffSnapshot(before: ModelSnapshot, model: AnyModule, opts: { sameVariables?: boolean } = {}): string[] {
  const out: string[] = [];
  if (stableStringify(model.toNode()) !== before.tree) out.push('the module tree (kinds, configs or marks) changed');
  if (stableStringify(model.provenance) !== before.provenance) out.push(`the provenance changed: ${describeValue(model.provenance)}`);
  const now = new Map([...model.namedParams()]);
  for (const [path, b] of before.params) {
    const p = now.get(path);
    if (!p) {
      out.push(`parameter '${path}' is gone`);
      continue;
    }
    if ((opts.sameVariables ?? true) && p.variable !== b.variable) out.push(`parameter '${path}' is a different variable`);
    if (p.variable.isDisposed) {
      out.push(`parameter '${path}' was disposed`);
      continue;
    }
    if (p.trainable !== b.trainable) out.push(`parameter '${path}' trainable flag changed`);
    if (stableStringify(p.shape) !== stableStringify(b.shape) || p.dtype !== b.dtype) {
      out.push(`parameter '${path}' changed shape or dtype: [${b.shape.join(', ')}] ${b.dtype} → [${p.shape.join(', ')}] ${p.dtype}`);
      continue;
    }
    const v = p.variable.dataSync();
    for (let i = 0; i < v.length; i++) {
      if (!Object.is(v[i], b.values[i])) {
        out.push(`parameter '${path}' changed value at ${i}: ${b.values[i]} → ${v[i]}`);
        break;
      }
    }
  }
  for (const path of now.keys()) if (!before.params.has(path)) out.push(`parameter '${path}' appeared`);
  return out;
}

/** Applies and waits for the `done` report (errors are rethrown; a stream without `done` fails). */
export function applyToEnd(pass: AnyPass, model: AnyModule, options: JsonObject, ctx: PassContext): Promise<{ report: PassReport; events: PassEvent[] }> {
  return new Promise((resolve, reject) => {
    const events: PassEvent[] = [];
    pass.apply(model, options, ctx).subscribe({
      next: (e) => events.push(e),
      error: (e: unknown) => reject(e instanceof Error ? e : new Error(String(e))),
      complete: () => {
        const done = events.find((e): e is Extract<PassEvent, { type: 'done' }> => e.type === 'done');
        if (!done) reject(new ConformanceError('apply', `${pass.name} completed without a 'done' event`));
        else if (events.at(-1) !== done) reject(new ConformanceError('apply', `${pass.name} emitted events after 'done'`));
        else resolve({ report: done.report, events });
      },
    });
  });
}

/** The pass's options schema, typed (AnyPass carries it as `any`). */
function schemaOf(pass: AnyPass): z.ZodType {
  return pass.options as z.ZodType;
}

function resolveOptions(pass: AnyPass, raw: JsonObject, check: string): JsonObject {
  const r = schemaOf(pass).safeParse(raw);
  if (!r.success) {
    const issues = zodIssuesToConfigIssues(r.error.issues, raw, 'options', schemaOf(pass));
    throw new ConformanceError(check, `the options given to the suite do not parse: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`);
  }
  return r.data as JsonObject;
}

function defaultContext(o: ConformanceOptions): PassContext {
  return o.context ? o.context() : { seed: 0, backend: tf.getBackend() };
}

function runForward(o: ConformanceOptions, model: AnyModule): { values: Float32Array; shape: number[] } {
  return tf.tidy(() => {
    const input = o.makeInput();
    const ctx = createRunContext({ seed: 0 });
    const y = o.forward ? o.forward(model, input, ctx) : (model.call(input, ctx) as tf.Tensor);
    if (!(y instanceof tf.Tensor)) throw new ConformanceError('forward', `expected the forward to return a tf.Tensor, found ${describeValue(y)}`);
    const values = Float32Array.from(y.dataSync());
    ctx.state.dispose();
    return { values, shape: y.shape.slice() };
  });
}

function compareOutputs(check: string, a: { values: Float32Array; shape: number[] }, b: { values: Float32Array; shape: number[] }, tol: number, what: string): void {
  if (stableStringify(a.shape) !== stableStringify(b.shape)) throw new ConformanceError(check, `${what}: output shapes differ: [${a.shape.join(', ')}] vs [${b.shape.join(', ')}]`);
  for (let i = 0; i < a.values.length; i++) {
    const x = a.values[i] as number;
    const y = b.values[i] as number;
    const ok = tol === 0 ? Object.is(x, y) : Math.abs(x - y) <= tol * (1 + Math.abs(y)) || (Number.isNaN(x) && Number.isNaN(y));
    if (!ok) throw new ConformanceError(check, `${what}: outputs differ at ${i}: ${x} vs ${y} (tolerance ${tol})`);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// ---------------------------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------------------------

/** The resolved options survive JSON: parse → JSON.stringify → parse gives the same, and `{}` parses (every field has a default). */
export function checkOptionsRoundTrip(pass: AnyPass, options: JsonObject = {}): void {
  const check = 'options round-trip';
  const defaults = schemaOf(pass).safeParse({});
  if (!defaults.success) throw new ConformanceError(check, `options.parse({}) fails: every option needs a default (${defaults.error.issues.map((i) => `${i.path.map(String).join('.')}: ${i.message}`).join('; ')})`);
  for (const raw of [{}, options]) {
    const once = resolveOptions(pass, raw, check);
    const bad = nonJson(once, 'options');
    if (bad) throw new ConformanceError(check, `resolved options are not plain JSON: ${bad}`);
    const text = JSON.stringify(once);
    const viaJson = JSON.parse(text) as unknown;
    const twice = schemaOf(pass).safeParse(viaJson);
    if (!twice.success) throw new ConformanceError(check, `the resolved options ${text} do not parse again: ${twice.error.issues.map((i) => i.message).join('; ')}`);
    if (stableStringify(twice.data) !== stableStringify(once)) throw new ConformanceError(check, `parse(JSON(parse(x))) differs from parse(x): ${stableStringify(twice.data)} vs ${stableStringify(once)}`);
  }
}

/** An unknown key fails, at the top level and inside `select`, with the key named. */
export function checkUnknownOptionRejected(pass: AnyPass, options: JsonObject = {}): void {
  const check = 'unknown option';
  const key = 'noSuchOption__';
  const r = schemaOf(pass).safeParse({ ...options, [key]: 1 });
  if (r.success) throw new ConformanceError(check, `options with an unknown key '${key}' parsed; the schema must be strict`);
  const issues = zodIssuesToConfigIssues(r.error.issues, { ...options, [key]: 1 }, 'options', schemaOf(pass));
  if (!issues.some((i) => i.path.includes(key) || i.message.includes(key))) throw new ConformanceError(check, `the error does not name the unknown key: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`);
  const sel = schemaOf(pass).safeParse({ ...options, select: { ...selectOf(options), [key]: 1 } });
  if (sel.success) throw new ConformanceError(check, `a selector with an unknown key '${key}' parsed; embed core's strict layerSelectorSchema as 'select'`);
}

/** Where a value stops being plain JSON (NaN, Infinity, undefined, functions, class instances…), or undefined. */
function nonJson(v: unknown, path: string): string | undefined {
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return undefined;
  if (typeof v === 'number') return Number.isFinite(v) ? undefined : `${path} is ${v}`;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const r = nonJson(v[i], `${path}[${i}]`);
      if (r) return r;
    }
    return undefined;
  }
  if (typeof v === 'object') {
    const proto = Object.getPrototypeOf(v) as unknown;
    if (proto !== Object.prototype && proto !== null) return `${path} is a ${v.constructor?.name ?? 'non-plain object'}`;
    for (const [k, x] of Object.entries(v)) {
      if (x === undefined) continue; // dropped by JSON, like an absent optional field
      const r = nonJson(x, `${path}.${k}`);
      if (r) return r;
    }
    return undefined;
  }
  return `${path} is ${typeof v === 'function' ? 'a function' : typeof v}`;
}

function selectOf(options: JsonObject): JsonObject {
  const s = options.select;
  return s !== null && typeof s === 'object' && !Array.isArray(s) ? s : {};
}

/** A selector matching nothing makes `plan` throw, naming the kinds the pass looks for. */
export async function checkEmptySelectionThrows(o: Pick<ConformanceOptions, 'pass' | 'makeModel' | 'options' | 'modelSeed'>): Promise<void> {
  const check = 'empty selection';
  const { pass } = o;
  const raw: JsonObject = { ...(o.options ?? {}), select: { ...selectOf(o.options ?? {}), include: ['no.such.layer'] } };
  const options = resolveOptions(pass, raw, check);
  const model = await o.makeModel(o.modelSeed ?? 0);
  try {
    let plan: unknown;
    try {
      plan = pass.plan(model, options);
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      const kinds = (selectOf(options).kinds as string[] | undefined)?.length ? (selectOf(options).kinds as string[]) : [...pass.targets];
      const missing = kinds.filter((k) => !msg.includes(k));
      if (missing.length) throw new ConformanceError(check, `the error does not name the kind(s) ${missing.join(', ')} the pass looks for: ${msg}`);
      return;
    }
    throw new ConformanceError(check, `plan with select.include = ['no.such.layer'] returned ${describeValue(plan)} instead of throwing`);
  } finally {
    model.dispose();
  }
}

/** apply → serializeModel → deserializeModel (kinds from the registry, the pass not re-run) gives the same tree, provenance and outputs. */
export async function checkSaveLoad(o: ConformanceOptions): Promise<void> {
  const check = 'save and load';
  const { pass } = o;
  const options = resolveOptions(pass, o.options ?? {}, check);
  const model = await o.makeModel(o.modelSeed ?? 0);
  let loaded: AnyModule | undefined;
  try {
    const { report } = await applyToEnd(pass, model, options, defaultContext(o));
    if (report.modules.length === 0) throw new ConformanceError(check, 'the report lists no rewritten modules');
    const reg = o.registry ?? globalRegistry;
    const kinds = new Set([...model.modules()].map(([, m]) => m.kind));
    if ([...kinds].some((k) => !reg.has(k))) pass.registerKinds(reg);
    const missing = [...kinds].filter((k) => !reg.has(k));
    if (missing.length) throw new ConformanceError(check, `kinds [${missing.join(', ')}] are not registered after ${pass.name}.registerKinds(registry): a saved model could not load`);
    const { config, weights } = await serializeModel(model);
    loaded = deserializeModel(JSON.parse(JSON.stringify(config)) as unknown, weights, { registry: reg, seed: 12345 });
    if (stableStringify(loaded.toNode()) !== stableStringify(model.toNode())) throw new ConformanceError(check, 'the loaded tree (kinds, configs, marks) differs from the rewritten one');
    if (stableStringify(loaded.provenance) !== stableStringify(model.provenance)) throw new ConformanceError(check, 'the loaded provenance differs');
    if (!model.provenance.some((p) => p.pass === pass.name)) throw new ConformanceError(check, `the model's provenance has no entry for ${pass.name}`);
    compareOutputs(check, runForward(o, loaded), runForward(o, model), o.tolerance ?? 1e-6, 'loaded vs rewritten');
  } finally {
    model.dispose();
    loaded?.dispose();
  }
}

/** Two applies with the same seed on the same model give the same tree, report, parameters and outputs. */
export async function checkDeterminism(o: ConformanceOptions): Promise<void> {
  const check = 'same seed, same result';
  const { pass } = o;
  const options = resolveOptions(pass, o.options ?? {}, check);
  const a = await o.makeModel(o.modelSeed ?? 0);
  const b = await o.makeModel(o.modelSeed ?? 0);
  try {
    const ra = await applyToEnd(pass, a, options, defaultContext(o));
    const rb = await applyToEnd(pass, b, options, defaultContext(o));
    if (stableStringify(ra.report) !== stableStringify(rb.report)) throw new ConformanceError(check, `the reports differ: ${stableStringify(ra.report)} vs ${stableStringify(rb.report)}`);
    const diff = diffSnapshot(snapshotModel(a), b, { sameVariables: false });
    if (diff.length) throw new ConformanceError(check, `the two rewritten models differ: ${diff.join('; ')}`);
    compareOutputs(check, runForward(o, a), runForward(o, b), 0, 'two applies');
  } finally {
    a.dispose();
    b.dispose();
  }
}

/** An apply on a pre-aborted signal fails with CancelledError and changes nothing. */
export async function checkPreAbortedApply(o: ConformanceOptions): Promise<void> {
  const check = 'pre-aborted apply';
  const { pass } = o;
  const options = resolveOptions(pass, o.options ?? {}, check);
  const model = await o.makeModel(o.modelSeed ?? 0);
  try {
    const snap = snapshotModel(model);
    const tensors = tf.memory().numTensors;
    const ac = new AbortController();
    ac.abort();
    let error: unknown;
    try {
      await applyToEnd(pass, model, options, { ...defaultContext(o), signal: ac.signal });
    } catch (e) {
      error = e;
    }
    if (error === undefined) throw new ConformanceError(check, 'apply completed although the signal was aborted before it started');
    if (!(error instanceof Error) || error.name !== 'CancelledError') throw new ConformanceError(check, `expected a CancelledError, found ${error instanceof Error ? `${error.name}: ${error.message}` : describeValue(error)}`);
    const diff = diffSnapshot(snap, model);
    if (diff.length) throw new ConformanceError(check, `the model changed: ${diff.join('; ')}`);
    const leaked = tf.memory().numTensors - tensors;
    if (leaked > 0) throw new ConformanceError(check, `${leaked} tensor(s) leaked`);
  } finally {
    model.dispose();
  }
}

/**
 * Unsubscribing right after the first event leaves the model unchanged once the pass has wound down
 * (waits until the tensor count is back to where it was: what was built is disposed).
 */
export async function checkUnsubscribedApply(o: ConformanceOptions): Promise<void> {
  const check = 'unsubscribed apply';
  const { pass } = o;
  const options = resolveOptions(pass, o.options ?? {}, check);
  const model = await o.makeModel(o.modelSeed ?? 0);
  try {
    const snap = snapshotModel(model);
    const tensors = tf.memory().numTensors;
    const first = await new Promise<PassEvent | undefined>((resolve, reject) => {
      const held: { sub?: Subscription } = {};
      let got: PassEvent | undefined;
      const sub = pass.apply(model, options, defaultContext(o)).subscribe({
        next: (e) => {
          if (got) return;
          got = e;
          held.sub?.unsubscribe();
          resolve(e);
        },
        error: (e: unknown) => (got ? undefined : reject(e instanceof Error ? e : new Error(String(e)))),
        complete: () => resolve(got),
      });
      held.sub = sub;
      if (got) sub.unsubscribe();
    });
    if (!first) throw new ConformanceError(check, 'apply completed without emitting any event');
    if (first.type === 'done') throw new ConformanceError(check, "the first event was 'done': emit progress events while building, before the swap, so that an unsubscribe can cancel");
    const deadline = Date.now() + (o.settleTimeoutMs ?? 30_000);
    while (tf.memory().numTensors > tensors && Date.now() < deadline) await sleep(5);
    await sleep(20);
    const diff = diffSnapshot(snap, model);
    if (diff.length) throw new ConformanceError(check, `the model changed after unsubscribing: ${diff.join('; ')}`);
    const leaked = tf.memory().numTensors - tensors;
    if (leaked > 0) throw new ConformanceError(check, `${leaked} tensor(s) still allocated ${o.settleTimeoutMs ?? 30_000} ms after unsubscribing: the replacements built so far must be disposed`);
  } finally {
    model.dispose();
  }
}

/** Every check, in order, on the current backend; returns the failures (empty when the pass conforms). */
export async function runConformanceChecks(o: ConformanceOptions): Promise<ConformanceError[]> {
  const failures: ConformanceError[] = [];
  const run = async (f: () => void | Promise<void>): Promise<void> => {
    try {
      await f();
    } catch (e) {
      failures.push(e instanceof ConformanceError ? e : new ConformanceError('unexpected error', e instanceof Error ? `${e.name}: ${e.message}` : String(e)));
    }
  };
  await run(() => checkOptionsRoundTrip(o.pass, o.options));
  await run(() => checkUnknownOptionRejected(o.pass, o.options));
  await run(() => checkEmptySelectionThrows(o));
  await run(() => checkSaveLoad(o));
  await run(() => checkDeterminism(o));
  await run(() => checkPreAbortedApply(o));
  await run(() => checkUnsubscribedApply(o));
  return failures;
}

// ---------------------------------------------------------------------------------------------
// The vitest suite
// ---------------------------------------------------------------------------------------------

/**
 * Registers the conformance suite for a pass: options round-trip, unknown keys fail, an empty
 * selection throws naming the kinds, and on each backend (default cpu and wasm): apply → save → load
 * gives the same outputs, the same seed gives the same result, a pre-aborted or unsubscribed apply
 * leaves the model unchanged.
 */
export function passConformance(o: ConformanceOptions): void {
  const backends = o.backends ?? ['cpu', 'wasm'];
  describe(`${o.pass.name} conformance`, () => {
    beforeAll(async () => {
      await useBackend(backends[0] ?? 'cpu');
    });
    it('options round-trip through JSON', () => checkOptionsRoundTrip(o.pass, o.options));
    it('an unknown option key fails', () => checkUnknownOptionRejected(o.pass, o.options));
    it('an empty selection throws naming the kinds', () => checkEmptySelectionThrows(o));
    for (const backend of backends) {
      describe(`on ${backend}`, () => {
        let previous: string | undefined;
        beforeAll(async () => {
          previous = tf.getBackend();
          await useBackend(backend);
        });
        afterAll(async () => {
          if (previous && previous !== backend && (previous === 'cpu' || previous === 'wasm' || previous === 'tensorflow')) await useBackend(previous);
        });
        it('apply → save → load gives the same outputs', () => checkSaveLoad(o));
        it('the same seed gives the same result', () => checkDeterminism(o));
        it('a pre-aborted apply leaves the model unchanged', () => checkPreAbortedApply(o));
        it('unsubscribing after the first event leaves the model unchanged', () => checkUnsubscribedApply(o));
      });
    }
  });
}
