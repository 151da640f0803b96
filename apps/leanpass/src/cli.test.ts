import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { Rng, createRunContext, loadModel, saveModel, useBackend, type AnyModule } from '@leanpass/core';
import { Mlp } from '@leanpass/nn';
import { cli } from './cli.test-util.js';
import { EXIT } from './errors.js';

const here = fileURLToPath(new URL('.', import.meta.url));
const appDir = resolve(here, '..');
const fixture = resolve(appDir, 'test/fixtures/slow-pass');

let work: string;
let modelDir: string;
let input: tf.Tensor;
let denseOut: number[];

describe('leanpass CLI', () => {
  beforeAll(async () => {
    await useBackend('cpu');
    work = mkdtempSync(join(tmpdir(), 'leanpass-cli-'));
    modelDir = join(work, 'mlp');
    const model: AnyModule = new Mlp({ inFeatures: 4, hiddenFeatures: 8 }, { rng: new Rng(3) });
    await saveModel(model, modelDir);
    input = tf.tensor2d([[0.5, -1, 2, 0.25]]);
    denseOut = Array.from((model.call(input, createRunContext()) as tf.Tensor).dataSync());
  });

  it('lists installed pass packages with options and defaults', async () => {
    const r = await cli(['--plugin', fixture, '--passes', '@fixture/slow-pass', 'passes'], work);
    expect(r.code).toBe(EXIT.ok);
    expect(r.out).toContain('@fixture/slow-pass@1.2.3  [compress]');
    expect(r.out).toMatch(/scale\s+default 1\s+output factor/);
    const j = await cli(['--plugin', fixture, '--passes', '@fixture/slow-pass', '--json', 'passes'], work);
    const list = JSON.parse(j.out) as Array<{ name: string; options: Array<{ name: string; default: unknown }> }>;
    const mine = list.find((p) => p.name === '@fixture/slow-pass');
    expect(mine?.options.map((o) => o.name)).toEqual(['scale', 'delayMs', 'select']);
  });

  it('runs a pipeline from JSON and writes model, report.json and report.html atomically', async () => {
    const spec = { name: 'halve', model: modelDir, seed: 5, steps: [{ pass: '@fixture/slow-pass', options: { scale: 0.5 } }, { action: 'export', options: { name: 'after-scale' } }] };
    writeFileSync(join(work, 'halve.json'), JSON.stringify(spec));
    const r = await cli(['--plugin', fixture, '--passes', '@fixture/slow-pass', '--backend', 'cpu', 'run', 'halve.json', '--out', 'out1'], work);
    expect(r.err).not.toMatch(/leanpass:/);
    expect(r.code).toBe(EXIT.ok);
    expect(r.out).toContain('slow-pass{scale=0.5} | export{name=after-scale}');
    const out = join(work, 'out1');
    expect(readdirSync(out).sort()).toEqual(['after-scale', 'model', 'report.html', 'report.json']);
    const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')) as { pipeline: { steps: unknown[]; text: string }; seed: number };
    expect(report.seed).toBe(5);
    expect(report.pipeline.steps).toHaveLength(2);
    // The rewritten kinds load back without the pass running again, and outputs are halved.
    const loaded = await loadModel(join(out, 'model'));
    expect(loaded.get('fc1').kind).toBe('fixture.scaled');
    expect(loaded.provenance[0]?.pass).toBe('@fixture/slow-pass');
    const y = Array.from((loaded.call(input, createRunContext()) as tf.Tensor).dataSync());
    expect(y).not.toEqual(denseOut);
    const exported = await loadModel(join(out, 'after-scale'));
    expect(Array.from((exported.call(input, createRunContext()) as tf.Tensor).dataSync())).toEqual(y);
    // No temp folders left beside the output.
    expect(readdirSync(work).filter((n) => n.includes('.tmp-'))).toEqual([]);
  });

  it('scale 1 leaves outputs unchanged', async () => {
    writeFileSync(join(work, 'id.json'), JSON.stringify({ model: modelDir, steps: [{ pass: '@fixture/slow-pass' }] }));
    const r = await cli(['--plugin', fixture, '--passes', '@fixture/slow-pass', '--backend', 'cpu', 'run', 'id.json', '--out', 'out-id'], work);
    expect(r.code).toBe(EXIT.ok);
    const loaded = await loadModel(join(work, 'out-id', 'model'));
    expect(Array.from((loaded.call(input, createRunContext()) as tf.Tensor).dataSync())).toEqual(denseOut);
  });

  it('bad pipeline JSON: every problem listed with its JSON path, exit code for input errors, nothing written', async () => {
    writeFileSync(
      join(work, 'bad.json'),
      JSON.stringify({ model: modelDir, steps: [{ pass: '@fixture/slow-pass', options: { scale: 'big', nope: 1 } }, { pass: '@leanpass/nothing' }, { action: 'frobnicate' }] }),
    );
    const r = await cli(['--plugin', fixture, '--passes', '@fixture/slow-pass', 'run', 'bad.json', '--out', 'out-bad'], work);
    expect(r.code).toBe(EXIT.input);
    expect(r.err).toMatch(/steps\[0\]\.options\.scale/);
    expect(r.err).toMatch(/steps\[0\]\.options/);
    expect(r.err).toMatch(/nope/);
    expect(r.err).toMatch(/steps\[1\]\.pass.*@leanpass\/nothing/s);
    expect(r.err).toMatch(/@fixture\/slow-pass/);
    expect(r.err).toMatch(/steps\[2\].*frobnicate/s);
    expect(existsSync(join(work, 'out-bad'))).toBe(false);
  });

  it('unreadable JSON, missing model, missing file and unknown commands have distinct, clear errors', async () => {
    writeFileSync(join(work, 'syntax.json'), '{ "steps": [ ');
    const a = await cli(['run', 'syntax.json'], work);
    expect(a.code).toBe(EXIT.input);
    expect(a.err).toMatch(/cannot read pipeline .*syntax\.json/);
    writeFileSync(join(work, 'nomodel.json'), JSON.stringify({ model: 'no-such-model', steps: [{ pass: '@fixture/slow-pass' }] }));
    const b = await cli(['--plugin', fixture, '--passes', '@fixture/slow-pass', 'run', 'nomodel.json'], work);
    expect(b.code).toBe(EXIT.input);
    expect(b.err).toMatch(/no model 'no-such-model': looked for a folder .*no-such-model .*zoo model/);
    const c = await cli(['frobnicate'], work);
    expect(c.code).toBe(EXIT.usage);
    const d = await cli(['--backend', 'webgpu', 'passes'], work);
    expect(d.code).toBe(EXIT.usage);
    const e = await cli(['--plugin', fixture, '--passes', '@fixture/slow-pass', 'bench', 'skipcatx'], work);
    expect(e.code).toBe(EXIT.input);
    expect(e.err).toMatch(/unknown pass 'skipcatx'. Installed passes: .*@fixture\/slow-pass/);
    const g = await cli(['--passes', 'nope', 'passes'], work);
    expect(g.code).toBe(EXIT.input);
    expect(g.err).toMatch(/unknown pass 'nope'. Installed passes: /);
    const f = await cli(['--backend', 'tensorflow', '--plugin', fixture, '--passes', '@fixture/slow-pass', 'inspect', modelDir], work);
    expect(f.code).toBe(EXIT.backend);
    expect(f.err).toMatch(/npm install @tensorflow\/tfjs-node/);
  });

  it('inspect shows the tree, parameter counts by kind and the plans of installed passes', async () => {
    const r = await cli(['--plugin', fixture, '--passes', '@fixture/slow-pass', '--backend', 'cpu', 'inspect', modelDir], work);
    expect(r.code).toBe(EXIT.ok);
    expect(r.out).toMatch(/mlp, 76 parameters/);
    expect(r.out).toMatch(/linear\s+2 modules\s+76 params/);
    expect(r.out).toMatch(/@fixture\/slow-pass: 2 modules\n\s+fc1 \(linear\) → fixture.scaled/);
  });

  it('demo writes report files and prints the summary table; report re-renders', async () => {
    const r = await cli(['--plugin', fixture, '--passes', '@fixture/slow-pass', '--backend', 'cpu', 'demo', '--out', 'demo'], work);
    expect(r.code).toBe(EXIT.ok);
    expect(r.out).toMatch(/@fixture\/slow-pass\s+fixture\s+scaled\s+acc 0\.9 → 0\.88\s+time ×0\.60, params ×0\.60/);
    const html = readFileSync(join(work, 'demo', 'report.html'), 'utf8');
    expect(html).toContain('vegaEmbed');
    expect(html).not.toMatch(/<script[^>]+src=/);
    const again = await cli(['report', join(work, 'demo', 'report.json'), '--out', join(work, 'again.html')], work);
    expect(again.code).toBe(EXIT.ok);
    expect(readFileSync(join(work, 'again.html'), 'utf8')).toBe(html);
    writeFileSync(join(work, 'notreport.json'), '{"format":"x"}');
    const bad = await cli(['report', 'notreport.json'], work);
    expect(bad.code).toBe(EXIT.input);
    expect(bad.err).toMatch(/not a leanpass report/);
  });

  it('the published pipeline JSON Schema matches the zod schema', async () => {
    const r = await cli(['schema'], work);
    const committed = readFileSync(resolve(appDir, 'schema/pipeline.schema.json'), 'utf8');
    expect(JSON.parse(r.out)).toEqual(JSON.parse(committed));
  });

  it('SIGINT cancels a running pipeline: exit 130 and no output left behind', async () => {
    writeFileSync(join(work, 'slow.json'), JSON.stringify({ model: modelDir, steps: [{ pass: '@fixture/slow-pass', options: { delayMs: 20000 } }] }));
    const tsxLoader = pathToFileURL(resolve(appDir, '../../node_modules/tsx/dist/loader.mjs')).href;
    const child = spawn(process.execPath, ['--import', tsxLoader, '--conditions=@leanpass/source', resolve(appDir, 'test/run-cli.mjs'), '--plugin', fixture, '--passes', '@fixture/slow-pass', '--backend', 'cpu', 'run', 'slow.json', '--out', 'out-slow'], {
      cwd: work,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, CI: 'true' },
    });
    let err = '';
    const started = new Promise<void>((res) => {
      child.stderr.on('data', (d: Buffer) => {
        err += d.toString();
        if (err.includes('▶ 1. @fixture/slow-pass')) res();
      });
    });
    const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
    // If the child dies before starting the step, fail with its stderr instead of hanging.
    const early = await Promise.race([started.then(() => 'started'), exited.then((c) => `exited ${c}`)]);
    expect(early, err).toBe('started');
    child.kill('SIGINT');
    const code = await exited;
    expect(err).toMatch(/interrupted/);
    expect(code).toBe(130);
    expect(existsSync(join(work, 'out-slow'))).toBe(false);
    expect(readdirSync(work).filter((n) => n.includes('.tmp-'))).toEqual([]);
  }, 120_000);
});
