/**
 * SkipCat benchmark: dense vs svd / asvd / svd-llm / cat / skip / skipcat at 20 % and 40 % on the
 * zoo's LLaMA-tiny, plus batch-1 decode timing (tiny host and a SmolLM-135M-shaped model).
 *
 *   npx tsx --conditions=@leanpass/source tools/bench/skipcat.ts [--quick] [--json out.json] [--seed 0] [--backend wasm|cpu]
 */
import { parseArgs } from 'node:util';
import { formatBenchTable, useBackend, validateBenchReport, writeBenchReport, type BackendName } from '@leanpass/core';
import { bench } from '@leanpass/skipcat/bench';

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    json: { type: 'string' },
    seed: { type: 'string', default: '0' },
    backend: { type: 'string', default: 'wasm' },
  },
});

const backend = await useBackend(args.backend as BackendName);
const t0 = performance.now();
const report = await bench({
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
