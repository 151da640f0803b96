/**
 * The `calibrate` and `evaluate` pipeline actions. Both look at the model's root kind and use the data
 * that host was trained on:
 *
 * - `llama`: byte windows of the fortunes corpus (Debian `fortunes`): calibration from the train split,
 *   bits per byte and perplexity on the validation split.
 * - `dllm`: the procedural tasks of the zoo's dllm-tiny (tools/zoo/dllm-tiny-common.ts): calibration
 *   canvases (prompt + answer) of train-split problems, exact match per task on test-split problems
 *   with the plain sampler at the card's settings.
 * - `vit`: Fashion-MNIST (the Debian copy, else the bundled subset) restricted to the classes of the
 *   model's head: calibration from training images, accuracy on test images.
 */
import * as tf from '@tensorflow/tfjs';
import { Observable } from 'rxjs';
import { z } from 'zod';
import { ConfigError, Rng, throwIfAborted, type ActionContext, type ActionDefinition, type ActionEvent, type AnyModule, type CalibrationSource, type JsonObject } from '@leanpass/core';
import {
  corpusStream,
  createWindowSampler,
  exactMatch,
  loadFashionMnist,
  loadFortunes,
  makeBatch,
  makeTaskSet,
  selectClasses,
  taskBatch,
  taskExtent,
  type ImageDataset,
  type TaskName,
  type TaskProblem,
  type TaskRanges,
  type TextCorpus,
} from '@leanpass/data';
import { DLLM_TINY_RANGES, DLLM_TINY_TASKS, bitsPerByte, generateDiffusion, type DiffusionLM } from '@leanpass/models';
import { evaluateClassifier, type Batch } from '@leanpass/train';

/** Root model kinds the actions know how to feed. */
export const HOST_KINDS = ['llama', 'dllm', 'vit'] as const;
export type HostKind = (typeof HOST_KINDS)[number];

/** The dllm-tiny card's task mixture and ranges (tools/zoo/dllm-tiny-common.ts). */
export const DLLM_TASKS: readonly TaskName[] = DLLM_TINY_TASKS;
export const DLLM_RANGES: Required<TaskRanges> = DLLM_TINY_RANGES;
/** The card's plain-sampler block length (the sampler unmasks one token per step, temperature 0). */
export const DLLM_BLOCK = 4;

/** Rows per calibration batch. */
const CAL_BATCH = 16;

const HOST_DATA: Record<HostKind, string> = {
  llama: 'fortunes byte windows',
  dllm: 'dllm-tiny task canvases',
  vit: 'Fashion-MNIST images',
};

export const calibrateOptions = z
  .object({
    samples: z.number().int().min(1).max(100_000).default(32).describe('calibration samples: token windows (llama), problem canvases (dllm) or images (vit)'),
    seqLength: z.number().int().min(2).max(4096).default(128).describe('llama: bytes per window (at most the model context)'),
    seed: z.number().int().min(0).default(0).describe('seed of the window starts, problems or images drawn'),
  })
  .strict();
export type CalibrateOptions = z.output<typeof calibrateOptions>;

export const evaluateOptions = z
  .object({
    samples: z.number().int().min(1).max(100_000).default(32).describe('llama: validation windows; dllm: test problems per task; vit: test images'),
    seqLength: z.number().int().min(2).max(4096).default(128).describe('llama: bytes per window (at most the model context)'),
    seed: z.number().int().min(0).default(0).describe('seed of the problems (dllm) or images (vit) drawn; llama scores the first windows in order'),
  })
  .strict();
export type EvaluateOptions = z.output<typeof evaluateOptions>;

/** The model's root kind, or a ConfigError naming the kinds the action supports. */
export function hostKind(model: AnyModule, action: string): HostKind {
  const kind = model.kind;
  if ((HOST_KINDS as readonly string[]).includes(kind)) return kind as HostKind;
  throw new ConfigError(`${action}: no ${action === 'calibrate' ? 'calibration' : 'evaluation'} data for a model of root kind '${kind}'`, [
    { path: 'model', message: `expected a root kind of ${HOST_KINDS.map((k) => `'${k}' (${HOST_DATA[k]})`).join(', ')}; found '${kind}'` },
  ]);
}

function configNumber(model: AnyModule, key: string): number {
  const v = (model.config as Record<string, unknown>)[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new ConfigError(`a '${model.kind}' model's config should have a number '${key}', found ${JSON.stringify(v)}`);
  return v;
}

function checkWindow(model: AnyModule, action: string, seqLength: number): void {
  const ctxLen = configNumber(model, 'max_position_embeddings');
  if (seqLength > ctxLen) throw new ConfigError(`${action}: invalid options`, [{ path: 'options.seqLength', message: `expected at most ${ctxLen} (the model's context), found ${seqLength}` }]);
}

/** Canvas layout of the dllm host: prompt width from the card's ranges, the rest of maxLength generated. */
function dllmLayout(model: AnyModule, action: string): { promptLength: number; genLength: number; blockLength: number } {
  const maxLength = configNumber(model, 'maxLength');
  const { promptLength, answerLength } = taskExtent(DLLM_TASKS, DLLM_RANGES);
  const genLength = maxLength - promptLength;
  if (genLength < answerLength) {
    throw new ConfigError(`${action}: a dllm with maxLength ${maxLength} cannot hold the tasks ${DLLM_TASKS.join(', ')}`, [
      { path: 'model', message: `expected maxLength ≥ ${promptLength + answerLength} (prompt ${promptLength} + answer ${answerLength}), found ${maxLength}` },
    ]);
  }
  return { promptLength, genLength, blockLength: genLength % DLLM_BLOCK === 0 ? DLLM_BLOCK : genLength };
}

/** The classes of a vit's head: Fashion-MNIST classes 0…numClasses−1 (how the zoo's vit-tiny was trained). */
function vitClasses(model: AnyModule, action: string): number[] {
  const k = configNumber(model, 'numClasses');
  if (!Number.isInteger(k) || k < 2 || k > 10) {
    throw new ConfigError(`${action}: no Fashion-MNIST classes for this vit`, [{ path: 'model', message: `expected a head of 2–10 classes (Fashion-MNIST classes 0…k−1), found ${k}` }]);
  }
  return Array.from({ length: k }, (_, i) => i);
}

/** `samples` seeded distinct indices of a dataset, or all of them when it is smaller. */
function pickIndices(n: number, samples: number, seed: number): number[] {
  return new Rng(seed).permutation(n).slice(0, Math.min(n, samples));
}

/** Runs `job` as an action's Observable: progress and metric events, then `done` with the result. */
function actionStream(job: (emit: (e: ActionEvent) => void) => Promise<JsonObject>): Observable<ActionEvent> {
  return new Observable<ActionEvent>((sub) => {
    job((e) => {
      if (!sub.closed) sub.next(e);
    }).then(
      (result) => {
        if (sub.closed) return;
        sub.next({ type: 'done', result });
        sub.complete();
      },
      (err: unknown) => sub.error(err),
    );
  });
}

/** Loads corpora and datasets once per CLI run (calibrate and evaluate may both need them). */
export class DataCache {
  private fortunes?: TextCorpus;
  private readonly images = new Map<string, Promise<ImageDataset>>();

  corpus(): TextCorpus {
    this.fortunes ??= loadFortunes();
    return this.fortunes;
  }

  fashion(split: 'train' | 'test', classes: readonly number[]): Promise<ImageDataset> {
    const key = `${split}:${classes.join(',')}`;
    let p = this.images.get(key);
    if (!p) {
      p = loadFashionMnist({ split, source: 'auto' }).then((ds) => selectClasses(ds, classes));
      this.images.set(key, p);
    }
    return p;
  }
}

function rowBatches(rows: number, emitTensor: (start: number, count: number) => tf.Tensor, sampleCap: number): CalibrationSource {
  return {
    sampleCap,
    batches: async function* () {
      for (let start = 0; start < rows; start += CAL_BATCH) {
        await Promise.resolve();
        const t = emitTensor(start, Math.min(CAL_BATCH, rows - start));
        try {
          yield t;
        } finally {
          t.dispose();
        }
      }
    },
  };
}

/** Builds the calibration source of the model's host (loading its data now, so a missing corpus fails here). */
export async function calibrationFor(model: AnyModule, o: CalibrateOptions, data: DataCache): Promise<{ source: CalibrationSource; result: JsonObject }> {
  const host = hostKind(model, 'calibrate');
  if (host === 'llama') {
    checkWindow(model, 'calibrate', o.seqLength);
    const train = corpusStream(data.corpus(), 'train');
    const sampler = createWindowSampler(train, { seqLength: o.seqLength, batchSize: CAL_BATCH, seed: o.seed });
    const source = rowBatches(o.samples, (start, count) => tf.tensor2d(sampler.batch(start / CAL_BATCH).inputs.subarray(0, count * o.seqLength), [count, o.seqLength], 'int32'), o.samples);
    return { source, result: { host, data: 'fortunes', split: 'train', samples: o.samples, seqLength: o.seqLength, tokens: o.samples * o.seqLength, seed: o.seed } };
  }
  if (host === 'dllm') {
    const { promptLength, genLength } = dllmLayout(model, 'calibrate');
    const perTask = Math.ceil(o.samples / DLLM_TASKS.length);
    const problems = makeTaskSet({ tasks: DLLM_TASKS, count: perTask, seed: o.seed, split: 'train', answerLength: genLength, ...DLLM_RANGES }).problems.slice(0, o.samples);
    const canvas = taskBatch(problems, { promptWidth: promptLength });
    const L = canvas.length;
    const source = rowBatches(problems.length, (start, count) => tf.tensor2d(canvas.ids.subarray(start * L, (start + count) * L), [count, L], 'int32'), problems.length);
    return { source, result: { host, data: 'tasks', tasks: [...DLLM_TASKS], split: 'train', samples: problems.length, length: L, seed: o.seed } };
  }
  const classes = vitClasses(model, 'calibrate');
  const inputSize = configNumber(model, 'inputSize');
  const ds = await data.fashion('train', classes);
  const idx = pickIndices(ds.n, o.samples, o.seed);
  const source = rowBatches(idx.length, (start, count) => {
    const b = makeBatch(ds, idx.slice(start, start + count), { padTo: inputSize });
    b.y.dispose();
    return b.x;
  }, idx.length);
  return { source, result: { host, data: 'fashion-mnist', split: 'train', classes, samples: idx.length, seed: o.seed } };
}

/** Quality of the model on its host's held-out data; `metrics` holds the figures. */
export async function evaluateHost(model: AnyModule, o: EvaluateOptions, data: DataCache, signal?: AbortSignal, progress?: (f: number, m: string) => void): Promise<JsonObject & { metrics: Record<string, number> }> {
  const host = hostKind(model, 'evaluate');
  if (host === 'llama') {
    checkWindow(model, 'evaluate', o.seqLength);
    const val = corpusStream(data.corpus(), 'val');
    const r = bitsPerByte(model, val, { window: o.seqLength, batchSize: 16, maxWindows: o.samples, ...(signal ? { signal } : {}) });
    return { host, data: 'fortunes', split: 'val', windows: r.windows, tokens: r.tokens, seqLength: o.seqLength, metrics: { bits_per_byte: r.bitsPerByte, perplexity: r.perplexity } };
  }
  if (host === 'dllm') {
    const { genLength, blockLength } = dllmLayout(model, 'evaluate');
    const metrics: Record<string, number> = {};
    let ok = 0;
    let total = 0;
    for (const [ti, task] of DLLM_TASKS.entries()) {
      throwIfAborted(signal, 'evaluate');
      const problems: TaskProblem[] = makeTaskSet({ tasks: task, count: o.samples, seed: o.seed, split: 'test', answerLength: genLength, ...DLLM_RANGES }).problems;
      let right = 0;
      for (let i = 0; i < problems.length; i += 64) {
        const chunk = problems.slice(i, i + 64);
        const r = generateDiffusion(model as DiffusionLM, chunk.map((p) => p.prompt), { genLength, blockLength, steps: genLength, temperature: 0, remasking: 'low_confidence' });
        chunk.forEach((p, b) => {
          if (exactMatch(r.tokens[b] as number[], p.answer)) right++;
        });
      }
      metrics[`exact_match.${task}`] = right / problems.length;
      ok += right;
      total += problems.length;
      progress?.((ti + 1) / DLLM_TASKS.length, `${task}: ${right}/${problems.length}`);
    }
    return {
      host,
      data: 'tasks',
      split: 'test',
      problems: total,
      sampler: { genLength, blockLength, steps: genLength, temperature: 0, remasking: 'low_confidence' },
      metrics: { exact_match: ok / total, ...metrics },
    };
  }
  const classes = vitClasses(model, 'evaluate');
  const inputSize = configNumber(model, 'inputSize');
  const ds = await data.fashion('test', classes);
  const idx = pickIndices(ds.n, o.samples, o.seed);
  function* batches(): Generator<Batch> {
    for (let i = 0; i < idx.length; i += 64) {
      throwIfAborted(signal, 'evaluate');
      const b = makeBatch(ds, idx.slice(i, i + 64), { padTo: inputSize });
      yield { x: b.x, y: b.y };
    }
  }
  const m = await evaluateClassifier(model, batches());
  return { host, data: 'fashion-mnist', split: 'test', classes, images: m.count, metrics: { accuracy: m.accuracy, loss: m.loss } };
}

/** The `calibrate` and `evaluate` actions, sharing one data cache. */
export function dataActions(data: DataCache = new DataCache()): Record<'calibrate' | 'evaluate', ActionDefinition> {
  return {
    calibrate: {
      description: "calibration batches from the model's own training data (llama: fortunes windows; dllm: task canvases; vit: Fashion-MNIST images) for the steps after it",
      options: calibrateOptions,
      provides: ['calibration'],
      run: async (model: AnyModule, options: JsonObject, ctx: ActionContext) => {
        const { source, result } = await calibrationFor(model, calibrateOptions.parse(options), data);
        ctx.provide({ calibration: source });
        return result;
      },
    },
    evaluate: {
      description: "quality on the model's held-out data (llama: bits per byte on fortunes; dllm: exact match per task; vit: Fashion-MNIST accuracy)",
      options: evaluateOptions,
      run: (model: AnyModule, options: JsonObject, ctx: ActionContext) =>
        actionStream(async (emit) => {
          const r = await evaluateHost(model, evaluateOptions.parse(options), data, ctx.signal, (fraction, message) => emit({ type: 'progress', fraction, message }));
          for (const [name, value] of Object.entries(r.metrics)) emit({ type: 'metric', name, value });
          return r;
        }),
    },
  };
}
