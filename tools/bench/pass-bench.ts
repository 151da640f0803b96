/**
 * The command line shared by the per-pass benchmark scripts (tools/bench/<pass>.ts): parses
 * [--quick] [--demo] [--json out.json] [--seed 0] [--backend wasm|cpu], selects the backend, runs the
 * pass package's bench (or demo), validates the report, prints its table and summary, writes the JSON.
 * `leanpass bench <pass>` does the same through the CLI's plugin discovery.
 */
import { parseArgs } from 'node:util';
import { formatBenchTable, useBackend, validateBenchReport, writeBenchReport, type BackendName, type PassPackage } from '@leanpass/core';

export async function runPassBench(fns: Pick<PassPackage, 'bench' | 'demo'>): Promise<void> {
  const { values: args } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      demo: { type: 'boolean', default: false },
      json: { type: 'string' },
      seed: { type: 'string', default: '0' },
      backend: { type: 'string', default: 'wasm' },
    },
  });
  const run = args.demo ? fns.demo : fns.bench;
  if (!run) throw new Error(`this pass package provides no ${args.demo ? 'demo' : 'bench'}`);
  const backend = await useBackend(args.backend as BackendName);
  const t0 = performance.now();
  const report = await run({
    quick: args.quick,
    seed: Number(args.seed),
    backend: backend.name,
    log: (m) => console.log(`[${((performance.now() - t0) / 1000).toFixed(1)} s] ${m}`),
  });
  validateBenchReport(report);
  console.log(formatBenchTable(report));
  console.log(JSON.stringify(report.summary, null, 2));
  console.log(`total ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  if (args.json) await writeBenchReport(args.json, report);
}
