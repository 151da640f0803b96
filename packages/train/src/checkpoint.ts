import { readdir, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type * as tf from '@tensorflow/tfjs';
import {
  ConfigError,
  FormatError,
  rawToTensor,
  readSafetensorsFile,
  removeQuietly,
  serializeSafetensors,
  tensorToRaw,
  writeFileAtomic,
  type AnyModule,
  type ConfigIssue,
  type JsonObject,
  type RawTensor,
} from '@leanpass/core';
import type { Optimizer } from './optimizers.js';

export const CHECKPOINT_FORMAT = 'leanpass.train.checkpoint';
export const CHECKPOINT_VERSION = 1;
/** Metadata key (in the safetensors header) holding the JSON state. */
export const CHECKPOINT_STATE_KEY = 'leanpass.train.state';
/** Prefix of model weights in a checkpoint: `model/<param path>`. */
export const MODEL_PREFIX = 'model/';
/** Prefix of optimizer slots in a checkpoint: `optimizer/<slot>/<param path>`. */
export const OPTIMIZER_PREFIX = 'optimizer/';

/** Everything but tensors that a checkpoint records (the safetensors metadata and the JSON sidecar hold it). */
export interface CheckpointState {
  format: typeof CHECKPOINT_FORMAT;
  version: number;
  /** Updates completed. */
  step: number;
  /** Current epoch (0-based) and batches of it already consumed. */
  epoch: number;
  batchInEpoch: number;
  /** The trainer's seed (data order is a function of seed and epoch). */
  seed: number;
  /** The training RNG's state (`Rng.getState()`, the cached normal as null when absent). */
  rng: Array<number | null>;
  /** Schedule position: its spec and the learning rate of the next update. */
  schedule: { spec: JsonObject; nextLr: number };
  optimizer: { kind: string; config: JsonObject; counts: Record<string, number> };
  params: Array<{ path: string; shape: number[]; trainable: boolean }>;
}

/** A checkpoint read back: its state and tensors (views of the file's bytes). */
export interface LoadedCheckpoint {
  path: string;
  state: CheckpointState;
  tensors: Map<string, RawTensor>;
}

/** The two files of a checkpoint. */
export interface CheckpointFiles {
  /** The safetensors file (weights, optimizer state, and the state JSON in its metadata). */
  path: string;
  /** The JSON sidecar (the same state, readable, plus the tensor list). */
  sidecar: string;
}

/** `step-00000042.safetensors` */
export function checkpointFileName(step: number): string {
  return `step-${String(step).padStart(8, '0')}.safetensors`;
}

/** The sidecar's path for a checkpoint file: `x.safetensors` → `x.json`. */
export function sidecarPath(file: string): string {
  return file.replace(/\.safetensors$/, '') + '.json';
}

/**
 * Writes a checkpoint: the safetensors file first, then the sidecar, each atomically (temporary
 * file, fsync, rename). A checkpoint counts as complete once its sidecar exists.
 */
export async function writeCheckpoint(path: string, model: AnyModule, optimizer: Optimizer, state: CheckpointState): Promise<CheckpointFiles> {
  const tensors = new Map<string, RawTensor>();
  for (const [p, param] of model.namedParams()) tensors.set(MODEL_PREFIX + p, await tensorToRaw(param.variable, undefined, p));
  const opt = optimizer.getState();
  for (const [k, t] of opt.tensors) tensors.set(OPTIMIZER_PREFIX + k, await tensorToRaw(t, undefined, k));
  const json = JSON.stringify(state);
  await writeFileAtomic(path, serializeSafetensors(tensors, { format: CHECKPOINT_FORMAT, [CHECKPOINT_STATE_KEY]: json }));
  const sidecar = sidecarPath(path);
  const listing: Record<string, { dtype: string; shape: number[] }> = {};
  for (const [k, t] of [...tensors].sort((a, b) => (a[0] < b[0] ? -1 : 1))) listing[k] = { dtype: t.dtype, shape: t.shape };
  await writeFileAtomic(sidecar, JSON.stringify({ ...state, weights: basename(path), tensors: listing }, null, 2) + '\n');
  return { path, sidecar };
}

/** Reads a checkpoint file (the state comes from the safetensors metadata, so the file alone suffices). */
export async function readCheckpoint(path: string): Promise<LoadedCheckpoint> {
  const file = await readSafetensorsFile(path);
  const json = file.metadata.get(CHECKPOINT_STATE_KEY);
  if (json === undefined) throw new FormatError(`expected a leanpass training checkpoint (metadata key '${CHECKPOINT_STATE_KEY}'), found none`, path);
  let state: unknown;
  try {
    state = JSON.parse(json);
  } catch (e) {
    throw new FormatError(`metadata '${CHECKPOINT_STATE_KEY}' is not valid JSON: ${(e as Error).message}`, path);
  }
  return { path, state: checkState(state, path), tensors: file.tensors };
}

/** The newest complete checkpoint (highest step with both files present) in `dir`, or undefined. */
export async function findLatestCheckpoint(dir: string): Promise<string | undefined> {
  const found = await listCheckpoints(dir);
  return found.at(-1)?.path;
}

/** Complete checkpoints in `dir`, sorted by step. */
export async function listCheckpoints(dir: string): Promise<Array<{ step: number; path: string }>> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return [];
  }
  const set = new Set(names);
  const out: Array<{ step: number; path: string }> = [];
  for (const n of names) {
    const m = /^step-(\d+)\.safetensors$/.exec(n);
    if (m && set.has(n.replace(/\.safetensors$/, '.json'))) out.push({ step: Number(m[1]), path: join(dir, n) });
  }
  return out.sort((a, b) => a.step - b.step);
}

/** Resolves a resume target: a checkpoint file, or a directory (its newest complete checkpoint). */
export async function resolveCheckpoint(target: string): Promise<string> {
  let isDir: boolean;
  try {
    isDir = (await stat(target)).isDirectory();
  } catch {
    throw new ConfigError(`resume: expected a checkpoint file or a directory of checkpoints, found nothing at '${target}'`);
  }
  if (!isDir) return target;
  const latest = await findLatestCheckpoint(target);
  if (!latest) throw new ConfigError(`resume: expected a complete checkpoint (step-N.safetensors with its step-N.json) in '${target}', found none`);
  return latest;
}

/**
 * Deletes complete checkpoints in `dir` with step ≤ `upTo`, keeping the `keep` newest of them
 * (checkpoints with a higher step, e.g. left by another run, are not touched). Returns the deleted paths.
 */
export async function pruneCheckpoints(dir: string, keep: number, upTo: number): Promise<string[]> {
  const mine = (await listCheckpoints(dir)).filter((c) => c.step <= upTo);
  const doomed = mine.slice(0, Math.max(0, mine.length - keep));
  for (const c of doomed) {
    // Sidecar first: without it the checkpoint is no longer "complete", so a crash here leaves no half checkpoint.
    await removeQuietly(sidecarPath(c.path));
    await removeQuietly(c.path);
  }
  return doomed.map((c) => c.path);
}

/**
 * Loads a checkpoint's model weights into `model`. Every parameter of the model must be in the
 * checkpoint with the same shape and the checkpoint may hold no other weights; otherwise a
 * FormatError lists every mismatch and nothing is assigned.
 */
export function assignModelWeights(model: AnyModule, ckpt: LoadedCheckpoint): void {
  const issues: ConfigIssue[] = [];
  const params = new Map(model.namedParams());
  for (const [p, param] of params) {
    const raw = ckpt.tensors.get(MODEL_PREFIX + p);
    if (!raw) issues.push({ path: p, message: 'missing from the checkpoint' });
    else if (!sameShape(raw.shape, param.shape)) issues.push({ path: p, message: `expected shape [${param.shape.join(', ')}], found [${raw.shape.join(', ')}]` });
  }
  for (const k of ckpt.tensors.keys()) {
    if (k.startsWith(MODEL_PREFIX) && !params.has(k.slice(MODEL_PREFIX.length))) issues.push({ path: k.slice(MODEL_PREFIX.length), message: 'in the checkpoint but not a parameter of the model' });
  }
  if (issues.length) throw new FormatError(`checkpoint does not match the model:\n${issues.map((i) => `  - ${i.path}: ${i.message}`).join('\n')}`, ckpt.path);
  for (const [p, param] of params) {
    const t = rawToTensor(ckpt.tensors.get(MODEL_PREFIX + p) as RawTensor, p);
    try {
      param.assign(t, p);
    } finally {
      t.dispose();
    }
  }
}

/** Loads only the model weights of a checkpoint file (or of the newest checkpoint in a directory) into `model`. */
export async function loadCheckpointWeights(model: AnyModule, target: string): Promise<CheckpointState> {
  const ckpt = await readCheckpoint(await resolveCheckpoint(target));
  assignModelWeights(model, ckpt);
  return ckpt.state;
}

/**
 * Loads a checkpoint's optimizer state into `optimizer`: the kind must match, and every slot must
 * belong to a parameter of `model` with the parameter's shape.
 */
export function assignOptimizerState(optimizer: Optimizer, model: AnyModule, ckpt: LoadedCheckpoint): void {
  if (ckpt.state.optimizer.kind !== optimizer.kind) {
    throw new ConfigError(`resume: the checkpoint was written by optimizer '${ckpt.state.optimizer.kind}', this trainer uses '${optimizer.kind}'`);
  }
  const params = new Map(model.namedParams());
  const issues: ConfigIssue[] = [];
  const tensors = new Map<string, tf.Tensor>();
  try {
    for (const [k, raw] of ckpt.tensors) {
      if (!k.startsWith(OPTIMIZER_PREFIX)) continue;
      const key = k.slice(OPTIMIZER_PREFIX.length);
      const path = key.slice(key.indexOf('/') + 1);
      const param = params.get(path);
      if (!param) issues.push({ path: k, message: `state for '${path}', which is not a parameter of the model` });
      else if (!sameShape(raw.shape, param.shape)) issues.push({ path: k, message: `expected the parameter's shape [${param.shape.join(', ')}], found [${raw.shape.join(', ')}]` });
      else tensors.set(key, rawToTensor(raw, k));
    }
    if (issues.length) throw new FormatError(`optimizer state does not match the model:\n${issues.map((i) => `  - ${i.path}: ${i.message}`).join('\n')}`, ckpt.path);
    optimizer.setState({ tensors, counts: ckpt.state.optimizer.counts });
  } finally {
    for (const t of tensors.values()) t.dispose();
  }
}

function checkState(s: unknown, path: string): CheckpointState {
  const fail = (what: string): never => {
    throw new FormatError(`invalid checkpoint state: ${what}`, path);
  };
  if (typeof s !== 'object' || s === null) return fail(`expected an object, found ${String(s)}`);
  const o = s as Record<string, unknown>;
  if (o['format'] !== CHECKPOINT_FORMAT) fail(`expected format '${CHECKPOINT_FORMAT}', found ${JSON.stringify(o['format'])}`);
  if (o['version'] !== CHECKPOINT_VERSION) fail(`expected version ${CHECKPOINT_VERSION}, found ${JSON.stringify(o['version'])}`);
  for (const k of ['step', 'epoch', 'batchInEpoch', 'seed']) {
    if (!Number.isInteger(o[k]) || (o[k] as number) < 0) fail(`expected '${k}' to be an integer ≥ 0, found ${JSON.stringify(o[k])}`);
  }
  const rng = o['rng'];
  if (!Array.isArray(rng) || rng.length !== 5 || !rng.every((v, i) => (i === 4 && v === null) || typeof v === 'number')) {
    fail(`expected 'rng' to be [u32, u32, u32, u32, number | null], found ${JSON.stringify(rng)}`);
  }
  const sch = o['schedule'] as Record<string, unknown> | undefined;
  if (typeof sch !== 'object' || sch === null || typeof sch['spec'] !== 'object' || typeof sch['nextLr'] !== 'number') {
    fail(`expected 'schedule' to be {spec, nextLr}, found ${JSON.stringify(sch)}`);
  }
  const opt = o['optimizer'] as Record<string, unknown> | undefined;
  if (typeof opt !== 'object' || opt === null || typeof opt['kind'] !== 'string' || typeof opt['counts'] !== 'object' || opt['counts'] === null) {
    fail(`expected 'optimizer' to be {kind, config, counts}, found ${JSON.stringify(opt)}`);
  }
  if (!Array.isArray(o['params'])) fail(`expected 'params' to be an array, found ${JSON.stringify(o['params'])}`);
  return o as unknown as CheckpointState;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

