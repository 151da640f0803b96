import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { lastValueFrom, toArray, type Observable } from 'rxjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { Rng, loadModel, saveModel, useBackend, type ActionContext, type ActionEvent, type AnyModule, type CalibrationSource, type ContextPatch } from '@leanpass/core';
import { FORTUNES_DIR_ENV, TASK_MASK_ID, TASK_PAD_ID, TASK_VOCAB_SIZE, taskSplitOf, decodeTask } from '@leanpass/data';
import { Mlp } from '@leanpass/nn';
import { loadZoo } from '@leanpass/zoo';
import { DataCache, calibrationFor, dataActions, evaluateOptions, calibrateOptions } from './actions.js';
import { EXIT } from './errors.js';
import { cli } from './cli.test-util.js';

async function collect(source: CalibrationSource): Promise<tf.Tensor[]> {
  const out: tf.Tensor[] = [];
  for await (const b of source.batches()) out.push(tf.clone(b as tf.Tensor));
  return out;
}

interface RunReport {
  pipeline: { text: string; steps: Array<{ kind: string; name: string; report: Record<string, unknown> | null }> };
}

let work: string;
let mlpDir: string;

describe('calibrate and evaluate actions', () => {
  beforeAll(async () => {
    await useBackend('cpu');
    work = mkdtempSync(join(tmpdir(), 'leanpass-actions-'));
    mlpDir = join(work, 'mlp');
    await saveModel(new Mlp({ inFeatures: 4, hiddenFeatures: 8 }, { rng: new Rng(3) }), mlpDir);
  });

  it('calibrate | skipcat | evaluate | export runs on zoo:llama-tiny from a JSON file', async () => {
    const spec = {
      steps: [
        { action: 'calibrate', options: { samples: 16 } },
        { pass: 'skipcat', options: { ratio: 0.2 } },
        { action: 'evaluate', options: { samples: 4 } },
        { action: 'export', options: { name: 'small' } },
      ],
    };
    writeFileSync(join(work, 'skipcat.json'), JSON.stringify(spec));
    const r = await cli(['--passes', 'skipcat', 'run', 'skipcat.json', '--model', 'zoo:llama-tiny', '--out', 'out-llama'], work);
    expect(r.err).not.toMatch(/leanpass:/);
    expect(r.code).toBe(EXIT.ok);
    // ratio 0.2 is skipcat's default, so the canonical text leaves it out
    expect(r.out).toContain('calibrate{samples=16} | skipcat | evaluate{samples=4} | export{name=small}');
    expect(r.out).toMatch(/3\. evaluate: bits_per_byte \d+(\.\d+)?, perplexity \d+/);
    expect(r.err).toMatch(/evaluate: bits_per_byte = /);
    const out = join(work, 'out-llama');
    expect(readdirSync(out).sort()).toEqual(['model', 'report.html', 'report.json', 'small']);
    const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')) as RunReport;
    const [cal, pass, ev] = report.pipeline.steps;
    expect(cal?.report).toMatchObject({ host: 'llama', split: 'train', samples: 16, seqLength: 128, tokens: 2048 });
    expect(pass?.name).toBe('@leanpass/skipcat');
    const metrics = (ev?.report as { metrics: { bits_per_byte: number; perplexity: number } }).metrics;
    expect(ev?.report).toMatchObject({ host: 'llama', split: 'val', windows: 4, tokens: 4 * 128 });
    // perplexity is 2^bpb per byte; a trained byte model sits well under 8 bits (uniform) per byte.
    expect(metrics.perplexity).toBeCloseTo(2 ** metrics.bits_per_byte, 4);
    expect(metrics.bits_per_byte).toBeGreaterThan(0.5);
    expect(metrics.bits_per_byte).toBeLessThan(6);
    const loaded = await loadModel(join(out, 'model'));
    expect(loaded.provenance[0]?.pass).toBe('@leanpass/skipcat');
    const dense = await loadZoo('llama-tiny');
    expect(loaded.paramCount()).toBeLessThan(dense.paramCount());
    dense.dispose();
    loaded.dispose();
  }, 240_000);

  it('skipcat without calibrate is rejected before anything runs', async () => {
    writeFileSync(join(work, 'nocal.json'), JSON.stringify({ model: 'zoo:llama-tiny', steps: [{ pass: 'skipcat', options: { ratio: 0.2 } }, { action: 'evaluate' }] }));
    const r = await cli(['--passes', 'skipcat', '--backend', 'cpu', 'run', 'nocal.json', '--out', 'out-nocal'], work);
    expect(r.code).toBe(EXIT.input);
    expect(r.err).toMatch(/steps\[0\].*calibration/s);
    expect(r.err).not.toMatch(/▶/);
    expect(existsSync(join(work, 'out-nocal'))).toBe(false);
  });

  it('calibrate on an unsupported host exits 3 naming the supported kinds', async () => {
    writeFileSync(join(work, 'mlpcal.json'), JSON.stringify({ model: mlpDir, steps: [{ action: 'calibrate' }] }));
    const r = await cli(['--passes', 'skipcat', '--backend', 'cpu', 'run', 'mlpcal.json', '--out', 'out-mlp'], work);
    expect(r.code).toBe(EXIT.input);
    expect(r.err).toMatch(/calibrate: no calibration data for a model of root kind 'mlp'/);
    expect(r.err).toMatch(/'llama'.*'dllm'.*'vit'/);
    expect(existsSync(join(work, 'out-mlp'))).toBe(false);
  });

  it('bad action options exit 3 listing each JSON path', async () => {
    writeFileSync(join(work, 'badopts.json'), JSON.stringify({ model: mlpDir, steps: [{ action: 'calibrate', options: { samples: 0, nope: 1 } }, { action: 'evaluate', options: { seed: 'x' } }] }));
    const r = await cli(['--passes', 'skipcat', 'run', 'badopts.json', '--out', 'out-badopts'], work);
    expect(r.code).toBe(EXIT.input);
    expect(r.err).toMatch(/steps\[0\]\.options\.samples/);
    expect(r.err).toMatch(/steps\[0\]\.options.*nope/s);
    expect(r.err).toMatch(/steps\[1\]\.options\.seed/);
    expect(existsSync(join(work, 'out-badopts'))).toBe(false);
  });

  it('a missing fortunes corpus is an input error with the install command', async () => {
    const empty = mkdtempSync(join(tmpdir(), 'leanpass-nofortunes-'));
    const before = process.env[FORTUNES_DIR_ENV];
    process.env[FORTUNES_DIR_ENV] = empty;
    try {
      writeFileSync(join(work, 'cal-only.json'), JSON.stringify({ model: 'zoo:llama-tiny', steps: [{ action: 'calibrate' }] }));
      const r = await cli(['--passes', 'skipcat', '--backend', 'cpu', 'run', 'cal-only.json', '--out', 'out-nofortunes'], work);
      expect(r.code).toBe(EXIT.input);
      expect(r.err).toMatch(/fortunes corpus is not installed/);
      expect(r.err).toContain('sudo apt-get install -y fortunes');
      expect(existsSync(join(work, 'out-nofortunes'))).toBe(false);
    } finally {
      if (before === undefined) delete process.env[FORTUNES_DIR_ENV];
      else process.env[FORTUNES_DIR_ENV] = before;
    }
  });

  it('evaluate on zoo:dllm-tiny reports exact match per task at the card level', async () => {
    writeFileSync(join(work, 'dllm.json'), JSON.stringify({ model: 'zoo:dllm-tiny', steps: [{ action: 'evaluate', options: { samples: 24 } }] }));
    const r = await cli(['--passes', 'skipcat', 'run', 'dllm.json', '--out', 'out-dllm'], work);
    expect(r.err).not.toMatch(/leanpass:/);
    expect(r.code).toBe(EXIT.ok);
    const report = JSON.parse(readFileSync(join(work, 'out-dllm', 'report.json'), 'utf8')) as RunReport;
    const ev = report.pipeline.steps[0]?.report as { problems: number; metrics: Record<string, number> };
    expect(ev.problems).toBe(72);
    expect(ev.metrics['exact_match']).toBeGreaterThanOrEqual(0.9);
    const perTask = ['reverse', 'sort', 'add'].map((t) => ev.metrics[`exact_match.${t}`] as number);
    // the overall figure is the mean of equal-sized per-task figures
    expect(ev.metrics['exact_match']).toBeCloseTo(perTask.reduce((a, b) => a + b, 0) / 3, 10);
    expect(r.out).toMatch(/1\. evaluate: exact_match 0\.\d+|1\. evaluate: exact_match 1/);
  }, 120_000);

  it('dllm calibration batches are full training-split canvases of the model width, seeded', async () => {
    const model = await loadZoo('dllm-tiny');
    const data = new DataCache();
    const o = calibrateOptions.parse({ samples: 20, seed: 4 });
    const { source, result } = await calibrationFor(model, o, data);
    expect(result).toMatchObject({ host: 'dllm', split: 'train', samples: 20 });
    expect(source.sampleCap).toBe(20);
    const width = (model.config as { maxLength: number }).maxLength;
    const batches = await collect(source);
    expect(batches.map((b) => b.shape)).toEqual([
      [16, width],
      [4, width],
    ]);
    const rows = batches.flatMap((b) => b.arraySync() as number[][]);
    for (const row of rows) {
      expect(row.every((id) => Number.isInteger(id) && id >= 0 && id < TASK_VOCAB_SIZE)).toBe(true);
      expect(row).not.toContain(TASK_MASK_ID);
      const prompt = decodeTask(row.filter((id) => id !== TASK_PAD_ID)).split('=')[0] as string;
      expect(taskSplitOf(`${prompt}=`)).toBe('train');
    }
    const again = await collect((await calibrationFor(model, o, data)).source);
    expect(again.flatMap((b) => b.arraySync() as number[][])).toEqual(rows);
    const other = await collect((await calibrationFor(model, { ...o, seed: 5 }, data)).source);
    expect(other.flatMap((b) => b.arraySync() as number[][])).not.toEqual(rows);
    for (const b of [...batches, ...again, ...other]) b.dispose();
    model.dispose();
  });

  it('vit: calibration images come padded to the input size and evaluate scores the head classes', async () => {
    const model: AnyModule = await loadZoo('vit-tiny');
    const actions = dataActions();
    let provided: ContextPatch = {};
    const ctx = { seed: 0, backend: 'cpu', signal: new AbortController().signal, step: 0, reports: [], provide: (p: ContextPatch) => (provided = { ...provided, ...p }) } as ActionContext;
    const cal = (await actions.calibrate.run(model, calibrateOptions.parse({ samples: 20 }), ctx)) as Record<string, unknown>;
    expect(cal).toMatchObject({ host: 'vit', split: 'train', classes: [0, 1, 2, 3, 4], samples: 20 });
    const source = provided.calibration as CalibrationSource;
    const batches = await collect(source);
    const size = (model.config as { inputSize: number }).inputSize;
    expect(batches.map((b) => b.shape)).toEqual([
      [16, size, size, 1],
      [4, size, size, 1],
    ]);
    const px = await tf.concat(batches.map((b) => tf.reshape(b, [-1]))).data();
    expect(Math.min(...px)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...px)).toBeLessThanOrEqual(1);
    for (const b of batches) b.dispose();
    const events = await lastValueFrom((actions.evaluate.run(model, evaluateOptions.parse({ samples: 64 }), ctx) as Observable<ActionEvent>).pipe(toArray()));
    const metric = events.filter((e) => e.type === 'metric');
    expect(metric.map((e) => e.name)).toEqual(['accuracy', 'loss']);
    const done = events.at(-1);
    if (done?.type !== 'done') throw new Error(`expected a final 'done' event, found ${JSON.stringify(done)}`);
    const result = done.result as { images: number; metrics: { accuracy: number } };
    expect(result.images).toBe(64);
    // the card's test accuracy on classes 0–4 is far above chance (0.2)
    expect(result.metrics.accuracy).toBeGreaterThan(0.6);
    model.dispose();
  });
});
