/**
 * Model save/load: `config.json` (the module tree's kinds, configs and marks, the provenance of applied
 * passes) plus `model.safetensors` (every parameter keyed by its dotted path, F32 — I32 for int params).
 *
 * Loading rebuilds the root from the registry, then reconciles the constructed tree with the saved one:
 * a child whose kind and config match is kept and reconciled recursively; any other saved child is built
 * from the registry and swapped in (this is how modules rewritten by a pass load back without running the
 * pass again). Then every parameter is assigned from the weights; missing, unexpected or misshapen tensors
 * fail together in one FormatError.
 */
import { createHash } from 'node:crypto';
import { link, copyFile, mkdir, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { ConfigError, FormatError, LeanpassError, type ConfigIssue } from './errors.js';
import { stableStringify, type JsonValue } from './json.js';
import { registry as globalRegistry, type AnyModule, type ModuleNode, type ModuleRegistry, type ProvenanceEntry } from './module.js';
import { Rng } from './rng.js';
import {
  parseSafetensors,
  rawToTensor,
  removeQuietly,
  serializeSafetensors,
  syncDir,
  tempPathFor,
  tensorToRaw,
  writeTempFile,
  type RawTensor,
  type SafetensorsDtype,
} from './safetensors.js';

export const MODEL_FORMAT = 'leanpass-model/1';
export const CONFIG_FILE = 'config.json';
export const WEIGHTS_FILE = 'model.safetensors';

/** What config.json holds. */
export interface ModelFile {
  format: typeof MODEL_FORMAT;
  root: ModuleNode;
  provenance: ProvenanceEntry[];
  metadata?: Record<string, string>;
  /**
   * Size and SHA-256 of the model.safetensors saved with this config. Checked on load when present, so a
   * config paired with other weights (a copy gone wrong, an interrupted save) fails instead of loading.
   */
  weights?: { bytes: number; sha256: string };
  /** Paths of parameters whose `trainable` flag is false. When present, loading restores every flag. */
  frozen?: string[];
}

export interface SerializeOptions {
  /** Free-form strings stored in config.json (`metadata`). */
  metadata?: Record<string, string>;
}

export interface DeserializeOptions {
  /** Where kinds are looked up (default: core's global `registry`). */
  registry?: ModuleRegistry;
  /** Seed of the RNG given to factories (their initial weights are overwritten by the saved ones). */
  seed?: number;
}

const MEMBER_NAME = /^[A-Za-z0-9_-]+$/;

type Issue = ConfigIssue;

function issueList(issues: readonly Issue[]): string {
  return issues.map((i) => `  - ${i.path ? `${i.path}: ` : ''}${i.message}`).join('\n');
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'number' && !Number.isFinite(v)) return String(v);
  return typeof v === 'object' ? 'an object' : `${typeof v} ${JSON.stringify(v)}`;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** Checks that `v` is JSON data (finite numbers, strings, booleans, null, arrays, plain objects). */
function checkJson(v: unknown, path: string, issues: Issue[], depth = 0): void {
  if (depth > 200) {
    issues.push({ path, message: 'nested more than 200 levels' });
    return;
  }
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return;
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) issues.push({ path, message: `expected a finite number, found ${String(v)}` });
    return;
  }
  if (Array.isArray(v)) {
    v.forEach((x, i) => checkJson(x, `${path}[${i}]`, issues, depth + 1));
    return;
  }
  if (isPlainObject(v)) {
    for (const k of Object.keys(v)) checkJson(v[k], `${path}.${k}`, issues, depth + 1);
    return;
  }
  issues.push({ path, message: `expected JSON data, found ${typeof v === 'object' ? (v.constructor?.name ?? 'an object') : typeof v}` });
}

function checkNode(v: unknown, path: string, issues: Issue[], depth: number): void {
  if (!isPlainObject(v)) {
    issues.push({ path, message: `expected a module node {kind, config, mark?, children?}, found ${typeName(v)}` });
    return;
  }
  if (depth > 100) {
    issues.push({ path, message: 'module tree nested more than 100 levels' });
    return;
  }
  if (typeof v['kind'] !== 'string' || v['kind'] === '') issues.push({ path: `${path}.kind`, message: `expected a non-empty string, found ${typeName(v['kind'])}` });
  if (!isPlainObject(v['config'])) issues.push({ path: `${path}.config`, message: `expected an object, found ${typeName(v['config'])}` });
  else checkJson(v['config'], `${path}.config`, issues);
  if (v['mark'] !== undefined && typeof v['mark'] !== 'string') issues.push({ path: `${path}.mark`, message: `expected a string, found ${typeName(v['mark'])}` });
  const children = v['children'];
  if (children === undefined) return;
  if (!isPlainObject(children)) {
    issues.push({ path: `${path}.children`, message: `expected an object of module nodes, found ${typeName(children)}` });
    return;
  }
  for (const name of Object.keys(children)) {
    const at = `${path}.children.${name}`;
    if (!MEMBER_NAME.test(name)) issues.push({ path: at, message: 'child names must match [A-Za-z0-9_-]+' });
    checkNode(children[name], at, issues, depth + 1);
  }
}

const provenanceSchema = z.array(
  z.object({
    pass: z.string().min(1),
    version: z.string(),
    options: z.record(z.string(), z.unknown()),
    seed: z.number().int(),
    paths: z.array(z.string()),
  }),
);
const metadataSchema = z.record(z.string(), z.string());
const weightsSchema = z.object({ bytes: z.number().int().nonnegative(), sha256: z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 lowercase hex digits') });
const frozenSchema = z.array(z.string());

function zodIssues(prefix: string, schema: z.ZodType, v: unknown, issues: Issue[]): void {
  const r = schema.safeParse(v);
  if (r.success) return;
  for (const i of r.error.issues) {
    const path = i.path.reduce<string>((acc, p) => (typeof p === 'number' ? `${acc}[${p}]` : `${acc}.${String(p)}`), prefix);
    issues.push({ path, message: i.message });
  }
}

/** The problems of a would-be config.json, each with its JSON path (empty when valid). */
export function modelFileIssues(v: unknown): Issue[] {
  const issues: Issue[] = [];
  if (!isPlainObject(v)) return [{ path: '', message: `expected an object, found ${typeName(v)}` }];
  if (v['format'] !== MODEL_FORMAT) issues.push({ path: 'format', message: `expected "${MODEL_FORMAT}", found ${typeName(v['format'])}` });
  checkNode(v['root'], 'root', issues, 0);
  zodIssues('provenance', provenanceSchema, v['provenance'], issues);
  if (Array.isArray(v['provenance'])) v['provenance'].forEach((p: unknown, i) => isPlainObject(p) && checkJson(p['options'], `provenance[${i}].options`, issues));
  if (v['metadata'] !== undefined) zodIssues('metadata', metadataSchema, v['metadata'], issues);
  if (v['weights'] !== undefined) zodIssues('weights', weightsSchema, v['weights'], issues);
  if (v['frozen'] !== undefined) zodIssues('frozen', frozenSchema, v['frozen'], issues);
  return issues;
}

/** Validates a parsed config.json; throws FormatError listing every problem with its path. */
export function validateModelFile(v: unknown): ModelFile {
  const issues = modelFileIssues(v);
  if (issues.length) throw new FormatError(`not a valid ${MODEL_FORMAT} file:\n${issueList(issues)}`, CONFIG_FILE);
  return v as ModelFile;
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

function clonePlain<T>(v: T): T {
  // Only called on validated JSON data: a JSON round trip is exact (and keeps own `__proto__` keys).
  return JSON.parse(JSON.stringify(v)) as T;
}

function nodeOf(m: AnyModule): ModuleNode {
  const node: ModuleNode = { kind: m.kind, config: clonePlain(m.config) };
  if (m.mark !== undefined) node.mark = m.mark;
  if (m.children.size) {
    const children: Record<string, ModuleNode> = {};
    // defineProperty: a child literally named `__proto__` must stay an own key.
    for (const [name, c] of m.children) Object.defineProperty(children, name, { value: nodeOf(c), enumerable: true, writable: true, configurable: true });
    node.children = children;
  }
  return node;
}

function safetensorsDtypeOf(dtype: tf.DataType, path: string): SafetensorsDtype {
  if (dtype === 'float32') return 'F32';
  if (dtype === 'int32') return 'I32';
  if (dtype === 'bool') return 'BOOL';
  throw new ConfigError(`cannot save parameter '${path}': dtype ${dtype} has no safetensors form (expected float32, int32 or bool)`);
}

/** The model as config.json data and model.safetensors bytes. */
export async function serializeModel(model: AnyModule, opts: SerializeOptions = {}): Promise<{ config: ModelFile; weights: Uint8Array }> {
  const tensors = new Map<string, RawTensor>();
  const frozen: string[] = [];
  for (const [path, p] of model.namedParams()) {
    if (tensors.has(path)) throw new ConfigError(`cannot save: two parameters share the path '${path}'`);
    const dtype = safetensorsDtypeOf(p.dtype, path);
    let raw: RawTensor;
    try {
      raw = await tensorToRaw(p.variable, dtype, path);
    } catch (e) {
      if (e instanceof LeanpassError) throw e;
      throw new ConfigError(`cannot save: parameter '${path}' cannot be read: ${(e as Error).message}`);
    }
    tensors.set(path, raw);
    if (!p.trainable) frozen.push(path);
  }
  const weights = serializeSafetensors(tensors, { format: MODEL_FORMAT });
  const config: ModelFile = {
    format: MODEL_FORMAT,
    root: nodeOf(model),
    provenance: model.provenance,
    weights: { bytes: weights.byteLength, sha256: sha256(weights) },
    frozen,
  };
  if (opts.metadata) config.metadata = opts.metadata;
  const issues = modelFileIssues(config);
  if (issues.length) throw new ConfigError('cannot save: the model does not serialise to valid JSON', issues);
  return { config: clonePlain(config), weights };
}

function moduleLabel(path: string): string {
  return path === '' ? '(root)' : `'${path}'`;
}

/** Rebuilds a model from config.json data and model.safetensors bytes. */
export function deserializeModel(config: unknown, weights: Uint8Array, opts: DeserializeOptions = {}): AnyModule {
  const file = validateModelFile(config);
  if (file.weights) {
    if (file.weights.bytes !== weights.byteLength || file.weights.sha256 !== sha256(weights)) {
      throw new FormatError(
        `${WEIGHTS_FILE} does not belong to this ${CONFIG_FILE}: expected ${file.weights.bytes} bytes with sha256 ${file.weights.sha256}, ` +
          `found ${weights.byteLength} bytes with sha256 ${sha256(weights)} (a mismatched copy or an interrupted save)`,
        CONFIG_FILE,
      );
    }
  }
  let st;
  try {
    st = parseSafetensors(weights);
  } catch (e) {
    if (e instanceof FormatError) throw new FormatError(e.message, WEIGHTS_FILE);
    throw e;
  }
  const reg = opts.registry ?? globalRegistry;
  const rng = new Rng(opts.seed ?? 0);
  const created: AnyModule[] = [];
  const replaced: AnyModule[] = [];
  const create = (node: ModuleNode, path: string): AnyModule => {
    let m: AnyModule | undefined;
    try {
      // Under tidy: factories' initial-value tensors are freed; variables survive tidy.
      tf.tidy(() => {
        m = reg.create(node.kind, clonePlain(node.config), { rng });
      });
    } catch (e) {
      if (e instanceof ConfigError) throw new ConfigError(`cannot build module ${moduleLabel(path)}: ${e.message}`, e.issues);
      throw e;
    }
    const built = m as unknown as AnyModule;
    created.push(built);
    return built;
  };
  const issues: Issue[] = [];
  const reconcile = (m: AnyModule, node: ModuleNode, path: string): void => {
    m.mark = node.mark;
    const saved = node.children ?? {};
    const savedNames = Object.keys(saved);
    for (const name of savedNames) {
      const childNode = saved[name] as ModuleNode;
      const childPath = path ? `${path}.${name}` : name;
      const existing = m.children.get(name);
      if (!existing) {
        issues.push({ path: childPath, message: `${CONFIG_FILE} has a child '${name}' (${childNode.kind}) that ${m.kind} does not build` });
        continue;
      }
      if (existing.kind === childNode.kind && stableStringify(existing.config) === stableStringify(childNode.config)) {
        reconcile(existing, childNode, childPath);
      } else {
        const built = create(childNode, childPath);
        reconcile(built, childNode, childPath);
        m.setChild(name, built);
        replaced.push(existing);
      }
    }
    for (const name of m.children.keys()) {
      if (!Object.prototype.hasOwnProperty.call(saved, name)) {
        issues.push({ path: path ? `${path}.${name}` : name, message: `${m.kind} builds a child '${name}' that ${CONFIG_FILE} does not have` });
      }
    }
  };

  const disposeUnused = (keep: Set<tf.Variable>, modules: AnyModule[]): void => {
    const done = new Set<tf.Variable>();
    for (const mod of modules) {
      for (const [, p] of mod.namedParams()) {
        if (keep.has(p.variable) || done.has(p.variable)) continue;
        done.add(p.variable);
        p.variable.dispose();
      }
    }
  };

  let root: AnyModule | undefined;
  try {
    root = create(file.root, '');
    reconcile(root, file.root, '');
    if (issues.length) throw new FormatError(`module tree does not match what the registered kinds build:\n${issueList(issues)}`, CONFIG_FILE);
    assignWeights(root, st.tensors, file.frozen);
    root.provenance = clonePlain(file.provenance);
  } catch (e) {
    disposeUnused(new Set(), [...created, ...replaced]);
    throw e;
  }
  const live = new Set<tf.Variable>([...root.namedParams()].map(([, p]) => p.variable));
  disposeUnused(live, replaced);
  return root;
}

const FLOAT_STORED: ReadonlySet<SafetensorsDtype> = new Set(['F32', 'F16', 'BF16']);
const INT_STORED: ReadonlySet<SafetensorsDtype> = new Set(['I32', 'I64', 'U8', 'BOOL']);

function assignWeights(root: AnyModule, tensors: Map<string, RawTensor>, frozen: string[] | undefined): void {
  const issues: Issue[] = [];
  const params = [...root.namedParams()];
  const known = new Set(params.map(([p]) => p));
  for (const [path, p] of params) {
    const raw = tensors.get(path);
    if (!raw) {
      issues.push({ path, message: `missing from ${WEIGHTS_FILE} (expected ${p.dtype} [${p.shape.join(', ')}])` });
      continue;
    }
    if (raw.shape.length !== p.shape.length || raw.shape.some((d, i) => d !== p.shape[i])) {
      issues.push({ path, message: `expected shape [${p.shape.join(', ')}], found [${raw.shape.join(', ')}]` });
    }
    const ok = p.dtype === 'float32' ? FLOAT_STORED.has(raw.dtype) : p.dtype === 'int32' ? INT_STORED.has(raw.dtype) : p.dtype === 'bool' ? raw.dtype === 'BOOL' || raw.dtype === 'U8' : false;
    if (!ok) issues.push({ path, message: `a ${p.dtype} parameter cannot be loaded from ${raw.dtype}` });
  }
  for (const name of tensors.keys()) if (!known.has(name)) issues.push({ path: name, message: `unexpected tensor in ${WEIGHTS_FILE}: the model has no such parameter` });
  const frozenSet = new Set(frozen ?? []);
  for (const f of frozenSet) if (!known.has(f)) issues.push({ path: 'frozen', message: `'${f}' names no parameter of the model` });
  if (issues.length) throw new FormatError(`weights do not match the model (${issues.length} problem${issues.length > 1 ? 's' : ''}):\n${issueList(issues)}`, WEIGHTS_FILE);
  for (const [path, p] of params) {
    const raw = tensors.get(path) as RawTensor;
    tf.tidy(() => p.assign(rawToTensor(raw, path), path));
    if (frozen) p.trainable = !frozenSet.has(path);
  }
}

/**
 * Saves `dir/config.json` and `dir/model.safetensors` (creating `dir`). Both files are written to
 * temporary files first and renamed into place; if anything fails, the previous pair is left as it was.
 */
export async function saveModel(model: AnyModule, dir: string, opts: SerializeOptions = {}): Promise<void> {
  const { config, weights } = await serializeModel(model, opts);
  await mkdir(dir, { recursive: true });
  const wPath = join(dir, WEIGHTS_FILE);
  const cPath = join(dir, CONFIG_FILE);
  const tmpW = await writeTempFile(wPath, weights);
  let tmpC: string;
  try {
    tmpC = await writeTempFile(cPath, `${JSON.stringify(config, null, 2)}\n`);
  } catch (e) {
    await removeQuietly(tmpW);
    throw e;
  }
  // Keep the old weights reachable until the new config is in place, to undo a half-done swap.
  let backup: string | undefined = `${tempPathFor(wPath)}.bak`;
  try {
    await link(wPath, backup);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') backup = undefined;
    else {
      // No hard links on this file system: copy instead.
      try {
        await copyFile(wPath, backup);
      } catch (e2) {
        await Promise.all([removeQuietly(tmpW), removeQuietly(tmpC), removeQuietly(backup)]);
        throw e2;
      }
    }
  }
  try {
    await rename(tmpW, wPath);
  } catch (e) {
    await Promise.all([removeQuietly(tmpW), removeQuietly(tmpC), backup ? removeQuietly(backup) : undefined]);
    throw e;
  }
  try {
    await rename(tmpC, cPath);
  } catch (e) {
    if (backup) await rename(backup, wPath).catch(() => undefined);
    else await removeQuietly(wPath);
    await removeQuietly(tmpC);
    throw e;
  }
  if (backup) await removeQuietly(backup);
  await syncDir(dir);
}

/** Loads a model saved by `saveModel` (kinds must be registered). */
export async function loadModel(dir: string, opts: DeserializeOptions = {}): Promise<AnyModule> {
  const cPath = join(dir, CONFIG_FILE);
  const [text, buf] = await Promise.all([readFile(cPath, 'utf8'), readFile(join(dir, WEIGHTS_FILE))]);
  let config: unknown;
  try {
    config = JSON.parse(text) as JsonValue;
  } catch (e) {
    throw new FormatError(`not valid JSON: ${(e as Error).message}`, cPath);
  }
  try {
    return deserializeModel(config, new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength), opts);
  } catch (e) {
    if (e instanceof FormatError) throw new FormatError(e.message, dir);
    throw e;
  }
}

/** A deep copy of a model (structure, marks, provenance, weights, trainable flags) via serialise/deserialise. */
export async function cloneModel(model: AnyModule, opts: DeserializeOptions = {}): Promise<AnyModule> {
  const { config, weights } = await serializeModel(model);
  return deserializeModel(config, weights, opts);
}
