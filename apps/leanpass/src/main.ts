import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { z } from 'zod';
import {
  BACKENDS,
  CancelledError,
  ConfigError,
  formatBenchTable,
  machineDescription,
  parsePipelineSpec,
  pipelineSpecSchema,
  registry,
  saveModel,
  useBackend,
  writeBenchReport,
  type ActionDefinition,
  type AnyModule,
  type BackendName,
  type BenchReport,
  type JsonObject,
  type PassContext,
  type PipelineReport,
} from '@leanpass/core';
import { dataActions } from './actions.js';
import { benchFunctions, findPass, installedPasses, type FoundPackage, type InstalledPass } from './discover.js';
import { EXIT, InputError, UsageError, exitCodeFor } from './errors.js';
import { resolveModel } from './model.js';
import { OutputDir } from './outdir.js';
import { createView, type ProgressView, type Stream } from './progress.js';
import { readCliReport, renderHtml, summaryTable, type CliReport } from './report.js';

export interface Io {
  stdout: Stream;
  stderr: Stream;
  cwd: string;
  /** Cancels the running command (SIGINT in the real CLI). */
  signal?: AbortSignal;
}

interface GlobalOpts {
  backend?: BackendName;
  seed?: number;
  threads?: number;
  plugin?: string[];
  /** Restricts discovery to these passes (package, pass or short names). */
  passes?: string[];
  json?: boolean;
}

/** The installed passes, restricted by --passes when given (unknown names are an error listing the installed ones). */
async function passesFor(g: GlobalOpts, io: Io, opts: { tolerant?: boolean; only?: string[] } = {}): Promise<InstalledPass[]> {
  const only = opts.only ?? g.passes;
  return installedPasses({
    cwd: io.cwd,
    plugins: g.plugin ?? [],
    ...(only ? { only } : {}),
    // Listing, inspecting and the demo go on past a broken package (named on stderr); runs do not.
    ...(opts.tolerant ? { onError: (p: FoundPackage, e: Error) => void io.stderr.write(`leanpass: warning: skipping ${p.packageName}: ${e.message.split('\n')[0]}\n`) } : {}),
  });
}

const VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** The JSON Schema of pipeline files (generated from the zod schema that validates them). */
export function pipelineJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(pipelineSpecSchema, { target: 'draft-2020-12', io: 'input' });
}

/** Actions the CLI provides to pipelines. */
function cliActions(out: () => OutputDir | undefined): Record<string, ActionDefinition> {
  return {
    ...dataActions(),
    export: {
      description: 'save the model as it is at this step (config.json + model.safetensors) into the output folder',
      options: z.object({ name: z.string().regex(/^[A-Za-z0-9._-]+$/).default('export').describe('folder name inside --out') }).strict(),
      run: async (model: AnyModule, options: JsonObject) => {
        const o = out();
        if (!o) throw new ConfigError('export needs an output folder');
        const name = typeof options['name'] === 'string' ? options['name'] : 'export';
        await saveModel(model, o.path(name));
        return { dir: name };
      },
    },
  };
}

async function setupBackend(g: GlobalOpts, fallback: BackendName = 'wasm'): Promise<BackendName> {
  const name = g.backend ?? fallback;
  await useBackend(name);
  if (g.threads !== undefined && name === 'wasm') {
    // tfjs-backend-wasm is single-threaded under Node (see runtime-notes): report, don't pretend.
    if (g.threads !== 1) process.emitWarning(`--threads ${g.threads}: the wasm backend runs one thread under Node; ignored`);
  }
  return name;
}

function writeReportFiles(o: OutputDir, report: CliReport): void {
  writeFileSync(o.path('report.json'), JSON.stringify(report, null, 2));
  writeFileSync(o.path('report.html'), renderHtml(report));
}

/** Runs an async job, turning the abort signal into CancelledError promptly. */
function cancellable<T>(signal: AbortSignal | undefined, job: () => Promise<T>): Promise<T> {
  if (!signal) return job();
  if (signal.aborted) return Promise.reject(new CancelledError('interrupted'));
  return new Promise<T>((res, rej) => {
    const onAbort = () => rej(new CancelledError('interrupted'));
    signal.addEventListener('abort', onAbort, { once: true });
    job().then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        res(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        rej(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

/** One line per action step whose result carries `metrics` (evaluate): `3. evaluate: bits_per_byte 2.38, perplexity 5.21`. */
function metricLines(report: PipelineReport): string {
  let text = '';
  for (const s of report.steps) {
    const m = s.result?.['metrics'];
    if (m === null || typeof m !== 'object' || Array.isArray(m)) continue;
    const parts = Object.entries(m).filter((e): e is [string, number] => typeof e[1] === 'number').map(([k, v]) => `${k} ${Number(v.toPrecision(4))}`);
    if (parts.length) text += `${s.index + 1}. ${s.name}: ${parts.join(', ')}\n`;
  }
  return text;
}

async function cmdRun(file: string, opts: { out: string; model?: string } & GlobalOpts, io: Io): Promise<number> {
  const path = resolve(io.cwd, file);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new InputError(`cannot read pipeline ${path}: ${(e as Error).message}`);
  }
  const passes = await passesFor(opts, io);
  // The output folder is created only once everything validated; actions reach it through this holder.
  const holder: { out?: OutputDir } = {};
  const actions = cliActions(() => holder.out);
  const pipeline = parsePipelineSpec(json, { passes: passes.map((p) => p.pass), actions });
  const modelSpec = opts.model ?? pipeline.meta.model;
  if (!modelSpec) throw new UsageError('no model: give --model <zoo name or folder> or a "model" field in the pipeline file');
  const backend = await setupBackend({ ...opts, backend: opts.backend ?? pipeline.meta.backend });
  const seed = opts.seed ?? pipeline.meta.seed ?? 0;
  const { model, source } = await resolveModel(modelSpec, io.cwd);
  const view = createView(io.stderr, opts);
  const out = new OutputDir(resolve(io.cwd, opts.out));
  holder.out = out;
  const ctx: PassContext = { seed, backend, registry, ...(io.signal ? { signal: io.signal } : {}) };
  try {
    const report = await new Promise<PipelineReport>((res, rej) => {
      const sub = pipeline.run(model, ctx, { actions }).subscribe({
        next: (e) => {
          if (e.type === 'start') view.log(`pipeline: ${e.text} on ${source}`);
          else if (e.type === 'step-start') view.start(String(e.index), `${e.index + 1}. ${e.name}`);
          else if (e.type === 'pass-event' || e.type === 'action-event') {
            const ev = e.event;
            if (ev.type === 'progress') view.progress(String(e.index), ev.fraction, ev.message);
            else if (ev.type === 'log') view.log(`${e.name}: ${ev.message}`);
            else if (ev.type === 'metric') view.log(`${e.name}: ${ev.name} = ${ev.value}`);
          } else if (e.type === 'step-end') view.end(String(e.index), true, `${e.durationMs.toFixed(0)} ms`);
          else res(e.report);
        },
        error: (err: unknown) => rej(err instanceof Error ? err : new Error(String(err))),
      });
      io.signal?.addEventListener('abort', () => {
        sub.unsubscribe();
        rej(new CancelledError('interrupted'));
      }, { once: true });
    });
    view.close();
    await saveModel(model, out.path('model'));
    const cli: CliReport = {
      format: 'leanpass-report/1',
      kind: 'run',
      created: new Date().toISOString(),
      machine: machineDescription(),
      backend,
      seed,
      pipeline: {
        text: report.text,
        model: source,
        durationMs: report.durationMs,
        params: report.params,
        steps: report.steps.map((s) => ({ index: s.index, kind: s.kind, name: s.name, durationMs: s.durationMs, report: JSON.parse(JSON.stringify(s.pass ?? s.result ?? null)) as z.infer<ReturnType<typeof z.json>> })),
      },
      benches: [],
      failures: [],
    };
    writeReportFiles(out, cli);
    if (io.signal?.aborted) throw new CancelledError('interrupted');
    out.commit();
    io.stdout.write(opts.json ? `${JSON.stringify(cli)}\n` : `${report.text}\n${metricLines(report)}parameters ${report.params.before} → ${report.params.after}; wrote ${out.target}/{model,report.json,report.html}\n`);
    return EXIT.ok;
  } catch (e) {
    view.close();
    out.abort();
    throw e;
  }
}

function optionRows(p: InstalledPass): Array<{ name: string; default: unknown; description: string }> {
  const schema = z.toJSONSchema(p.pass.options, { io: 'input', unrepresentable: 'any' }) as { properties?: Record<string, { default?: unknown; description?: string; type?: unknown }> };
  return Object.entries(schema.properties ?? {}).map(([name, s]) => ({ name, default: s.default, description: s.description ?? '' }));
}

async function cmdPasses(opts: GlobalOpts, io: Io): Promise<number> {
  const passes = await passesFor(opts, io, { tolerant: true });
  const list = passes.map((p) => ({ name: p.pass.name, package: p.packageName, version: p.version, stage: p.pass.stage, description: p.pass.description, dir: p.dir, options: optionRows(p) }));
  if (opts.json) {
    io.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
    return EXIT.ok;
  }
  if (!list.length) {
    io.stdout.write('No pass packages installed (packages with the "leanpass-pass" keyword in package.json).\n');
    return EXIT.ok;
  }
  for (const p of list) {
    io.stdout.write(`${p.name}@${p.version}  [${p.stage}]\n  ${p.description}\n`);
    for (const o of p.options) io.stdout.write(`    ${o.name.padEnd(18)} default ${JSON.stringify(o.default) ?? '—'}${o.description ? `  ${o.description}` : ''}\n`);
  }
  return EXIT.ok;
}

async function cmdInspect(modelSpec: string, opts: GlobalOpts, io: Io): Promise<number> {
  const passes = await passesFor(opts, io, { tolerant: true });
  await setupBackend(opts);
  const { model, source } = await resolveModel(modelSpec, io.cwd);
  const byKind = new Map<string, { modules: number; params: number }>();
  const tree: string[] = [];
  for (const [path, m] of model.modules()) {
    const own = [...m.params.values()].reduce((n, p) => n + p.size, 0);
    const k = byKind.get(m.kind) ?? { modules: 0, params: 0 };
    byKind.set(m.kind, { modules: k.modules + 1, params: k.params + own });
    const depth = path ? path.split('.').length : 0;
    tree.push(`${'  '.repeat(depth)}${path ? path.split('.').pop() : '(root)'}  ${m.kind}${m.mark ? ` [${m.mark}]` : ''}  ${m.paramCount()} params`);
  }
  const plans = passes.map((p) => {
    try {
      const plan = p.pass.plan(model, (p.pass.options as z.ZodType<JsonObject>).parse({}));
      return { pass: p.pass.name, entries: plan.entries.map((e) => ({ path: e.path, kind: e.kind, action: e.action, reason: e.reason })), error: undefined as string | undefined };
    } catch (e) {
      return { pass: p.pass.name, entries: [], error: (e as Error).message };
    }
  });
  if (opts.json) {
    io.stdout.write(`${JSON.stringify({ model: source, params: model.paramCount(), kinds: Object.fromEntries(byKind), tree: model.toNode(), provenance: model.provenance, plans }, null, 2)}\n`);
    return EXIT.ok;
  }
  io.stdout.write(`${source}: ${model.kind}, ${model.paramCount()} parameters (${model.paramCount({ trainableOnly: true })} trainable)\n\n${tree.join('\n')}\n\nParameters by kind:\n`);
  for (const [k, v] of [...byKind.entries()].sort((a, b) => b[1].params - a[1].params)) io.stdout.write(`  ${k.padEnd(24)} ${String(v.modules).padStart(4)} modules  ${String(v.params).padStart(10)} params\n`);
  if (model.provenance.length) io.stdout.write(`\nProvenance:\n${model.provenance.map((p) => `  ${p.pass}@${p.version} ${JSON.stringify(p.options)} seed ${p.seed}: ${p.paths.length} modules`).join('\n')}\n`);
  io.stdout.write('\nInstalled passes (default options):\n');
  if (!plans.length) io.stdout.write('  none installed\n');
  for (const p of plans) {
    if (p.error) io.stdout.write(`  ${p.pass}: does not apply — ${p.error.split('\n')[0]}\n`);
    else io.stdout.write(`  ${p.pass}: ${p.entries.length} modules\n${p.entries.slice(0, 12).map((e) => `    ${e.path} (${e.kind}) → ${e.action}`).join('\n')}${p.entries.length > 12 ? `\n    … ${p.entries.length - 12} more` : ''}\n`);
  }
  return EXIT.ok;
}

async function runBenchLike(kind: 'bench' | 'demo', p: InstalledPass, g: GlobalOpts & { quick: boolean }, backend: BackendName, view: ProgressView, io: Io): Promise<BenchReport> {
  const fns = await benchFunctions(p);
  const fn = kind === 'bench' ? fns.bench : fns.demo;
  if (!fn) throw new InputError(`${p.pass.name} provides no ${kind}`);
  const id = `${kind}:${p.pass.name}`;
  view.start(id, `${p.pass.name} ${kind}`);
  try {
    const r = await cancellable(io.signal, () =>
      fn({ quick: g.quick, seed: g.seed ?? 0, backend, ...(io.signal ? { signal: io.signal } : {}), progress: (f, m) => view.progress(id, f, m), log: (m) => view.log(`${p.pass.name}: ${m}`) }),
    );
    view.end(id, true);
    return r;
  } catch (e) {
    view.end(id, false, (e as Error).message.split('\n')[0]);
    throw e;
  }
}

async function cmdBench(name: string, opts: GlobalOpts & { quick?: boolean; jsonFile?: string }, io: Io): Promise<number> {
  const p = findPass(await passesFor(opts, io, { only: [name] }), name);
  const backend = await setupBackend(opts);
  const view = createView(io.stderr, opts);
  let report: BenchReport;
  try {
    report = await runBenchLike('bench', p, { ...opts, quick: !!opts.quick }, backend, view, io);
  } finally {
    view.close();
  }
  if (opts.jsonFile) await writeBenchReport(resolve(io.cwd, opts.jsonFile), report);
  io.stdout.write(opts.json ? `${JSON.stringify(report)}\n` : `${formatBenchTable(report)}\n`);
  return EXIT.ok;
}

async function cmdDemo(opts: GlobalOpts & { out: string; quick?: boolean }, io: Io): Promise<number> {
  const broken: Array<{ pass: string; error: string }> = [];
  const passes = await installedPasses({
    cwd: io.cwd,
    plugins: opts.plugin ?? [],
    ...(opts.passes ? { only: opts.passes } : {}),
    onError: (p, e) => broken.push({ pass: p.packageName, error: e.message }),
  });
  const backend = await setupBackend(opts);
  const view = createView(io.stderr, opts);
  const out = new OutputDir(resolve(io.cwd, opts.out));
  const benches: BenchReport[] = [];
  const failures: Array<{ pass: string; error: string }> = [...broken];
  try {
    for (const p of passes) {
      const fns = await benchFunctions(p);
      if (!fns.demo) {
        view.log(`${p.pass.name}: no demo`);
        continue;
      }
      try {
        benches.push(await runBenchLike('demo', p, { ...opts, quick: true }, backend, view, io));
      } catch (e) {
        if (e instanceof CancelledError) throw e;
        failures.push({ pass: p.pass.name, error: (e as Error).message });
      }
    }
    view.close();
    const report: CliReport = { format: 'leanpass-report/1', kind: 'demo', created: new Date().toISOString(), machine: machineDescription(), backend, seed: opts.seed ?? 0, benches, failures };
    writeReportFiles(out, report);
    if (io.signal?.aborted) throw new CancelledError('interrupted');
    out.commit();
    if (opts.json) io.stdout.write(`${JSON.stringify(report)}\n`);
    else {
      io.stdout.write(benches.length ? `${summaryTable(benches)}\n` : 'No installed pass package provides a demo.\n');
      for (const f of failures) io.stdout.write(`FAILED ${f.pass}: ${f.error}\n`);
      io.stdout.write(`\nwrote ${out.target}/report.json and report.html\n`);
    }
    return failures.length ? EXIT.runtime : EXIT.ok;
  } catch (e) {
    view.close();
    out.abort();
    throw e;
  }
}

function cmdReport(file: string, opts: { out?: string; json?: boolean }, io: Io): number {
  const path = resolve(io.cwd, file);
  const report = readCliReport(path);
  const html = resolve(io.cwd, opts.out ?? path.replace(/\.json$/i, '') + '.html');
  writeFileSync(html, renderHtml(report));
  io.stdout.write(report.benches.length ? `${summaryTable(report.benches)}\n` : '');
  io.stdout.write(`wrote ${html}\n`);
  return EXIT.ok;
}

function intArg(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new UsageError(`${name} expects a non-negative integer, got '${v}'`);
    return n;
  };
}

/** The CLI. Returns the exit code; never calls process.exit (testable in-process). */
export async function main(argv: string[], ioIn: Partial<Io> = {}): Promise<number> {
  const io: Io = { stdout: ioIn.stdout ?? process.stdout, stderr: ioIn.stderr ?? process.stderr, cwd: ioIn.cwd ?? process.cwd(), ...(ioIn.signal ? { signal: ioIn.signal } : {}) };
  let code: number = EXIT.ok;
  const program = new Command('leanpass')
    .description('Compose, run, benchmark and report model-efficiency passes for TensorFlow.js')
    .version(VERSION)
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) })
    .addOption(new Option('--backend <name>', 'tfjs backend').choices([...BACKENDS]))
    .option('--seed <n>', 'seed for every random choice', intArg('--seed'))
    .option('--threads <n>', 'threads, where the backend has them', intArg('--threads'))
    .option('--plugin <dir>', 'an extra pass package folder (repeatable), besides installed packages', (v: string, prev: string[] = []) => [...prev, v])
    .option('--passes <names>', 'only these installed passes (comma-separated names, e.g. skipcat,lbp-wht)', (v: string) => v.split(',').map((x) => x.trim()).filter(Boolean))
    .option('--json', 'machine-readable output on stdout; progress as plain lines on stderr');
  const g = (): GlobalOpts => program.opts<GlobalOpts>();
  program
    .command('run <pipeline>')
    .description('validate and run a pipeline JSON file; writes the model, report.json and report.html to --out')
    .option('--out <dir>', 'output folder', 'leanpass-out')
    .option('--model <model>', 'zoo name or model folder (overrides the pipeline file)')
    .action(async (file: string, o: { out: string; model?: string }) => {
      code = await cmdRun(file, { ...g(), ...o }, io);
    });
  program
    .command('passes')
    .description('list installed pass packages with their options')
    .action(async () => {
      code = await cmdPasses(g(), io);
    });
  program
    .command('inspect <model>')
    .description('module tree, parameter counts by kind, and the plans of installed passes')
    .action(async (m: string) => {
      code = await cmdInspect(m, g(), io);
    });
  program
    .command('bench <pass>')
    .description("run a pass's benchmark")
    .option('--quick', 'a few minutes on 2 cores')
    .option('--json-file <file>', 'also write the benchmark JSON here')
    .action(async (name: string, o: { quick?: boolean; jsonFile?: string }) => {
      code = await cmdBench(name, { ...g(), ...o }, io);
    });
  program
    .command('demo')
    .description('for each installed pass, its demo pipeline on its zoo model; summary table + report files')
    .option('--out <dir>', 'output folder', 'leanpass-demo')
    .action(async (o: { out: string }) => {
      code = await cmdDemo({ ...g(), ...o }, io);
    });
  program
    .command('report <report.json>')
    .description('re-render a report.json as HTML')
    .option('--out <file>', 'HTML file (default: beside the JSON)')
    .action((file: string, o: { out?: string }) => {
      code = cmdReport(file, { ...o, ...(g().json ? { json: true } : {}) }, io);
    });
  program
    .command('schema')
    .description('print the JSON Schema of pipeline files')
    .action(() => {
      io.stdout.write(`${JSON.stringify(pipelineJsonSchema(), null, 2)}\n`);
    });
  try {
    await program.parseAsync(argv, { from: 'user' });
    return code;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.exitCode === 0) return EXIT.ok;
      return EXIT.usage;
    }
    const exit = exitCodeFor(e);
    io.stderr.write(`leanpass: ${exit === EXIT.interrupted ? 'interrupted' : (e as Error).message}\n`);
    return exit;
  }
}
