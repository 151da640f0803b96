/**
 * LBP-WHT benchmark: full backprop vs LBP-WHT LP_L1-r (r = 2, 3, 4; K = 3, 6, 10) — step time on a
 * ViT-S-shaped model and on the tiny host, analytic backward FLOPs and saved-for-backward bytes of the
 * adapted layers, and accuracy on the vit-tiny transfer task (when the zoo checkpoint is bundled).
 *
 *   npx tsx --conditions=@leanpass/source tools/bench/lbp-wht.ts [--quick] [--demo] [--json out.json] [--seed 0] [--backend wasm|cpu]
 */
import { parseArgs } from 'node:util';
import { formatBenchTable, useBackend, validateBenchReport, writeBenchReport, type BackendName } from '@leanpass/core';
import { bench, demo } from '@leanpass/lbp-wht/bench';

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    demo: { type: 'boolean', default: false },
    json: { type: 'string' },
    seed: { type: 'string', default: '0' },
    backend: { type: 'string', default: 'wasm' },
  },
});

const backend = await useBackend(args.backend as BackendName);
const t0 = performance.now();
const run = args.demo ? demo : bench;
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
