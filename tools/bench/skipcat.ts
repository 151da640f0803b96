/**
 * SkipCat benchmark: dense vs svd / asvd / svd-llm / cat / skip / skipcat at 20 % and 40 % on the
 * zoo's LLaMA-tiny, plus batch-1 decode timing (tiny host and a SmolLM-135M-shaped model).
 *
 *   npx tsx --conditions=@leanpass/source tools/bench/skipcat.ts [--quick] [--demo] [--json out.json] [--seed 0] [--backend wasm|cpu]
 *
 * Decode timing only (the SmolLM-135M-shaped comparison, about a minute per repeat), to iterate on speed:
 *
 *   npx tsx --conditions=@leanpass/source tools/bench/skipcat.ts --decode [--repeat 3] [--tokens 32] [--warmup 6] [--block 8] [--layers 30] [--ratio 0.4] [--inference gather|dense-a|auto] [--general] [--seed 0]
 */
import { parseArgs } from 'node:util';
import { useBackend } from '@leanpass/core';
import { bench, demo, smollmDecode } from '@leanpass/skipcat/bench';
import { runPassBench } from './pass-bench.js';

if (process.argv.includes('--decode')) {
  const { values: a } = parseArgs({
    options: {
      decode: { type: 'boolean' },
      repeat: { type: 'string', default: '1' },
      tokens: { type: 'string', default: '32' },
      warmup: { type: 'string', default: '6' },
      block: { type: 'string', default: '8' },
      layers: { type: 'string', default: '30' },
      ratio: { type: 'string', default: '0.4' },
      inference: { type: 'string', default: 'gather' },
      general: { type: 'boolean', default: false },
      seed: { type: 'string', default: '0' },
    },
  });
  await useBackend('wasm');
  const inference = a.inference as 'gather' | 'dense-a' | 'auto';
  const ratios: number[] = [];
  const cpu: number[] = [];
  for (let i = 0; i < Number(a.repeat); i++) {
    const r = await smollmDecode({ seed: Number(a.seed), quick: true, tokens: Number(a.tokens), warmup: Number(a.warmup), block: Number(a.block), fast: !a.general }, Number(a.layers), Number(a.ratio), inference);
    ratios.push(r.ratio);
    cpu.push(r.cpuRatio);
    console.log(
      `[${i + 1}] ${r.layers} layers, ${r.tokens} tokens, inference ${inference}${a.general ? ', general path' : ''}: dense ${r.denseMs.toFixed(2)} ms, skipcat ${r.variantMs.toFixed(2)} ms, ratio ${r.ratio.toFixed(3)} (CPU ${r.denseCpuMs.toFixed(2)} / ${r.variantCpuMs.toFixed(2)} ms, ${r.cpuRatio.toFixed(3)}); per-token alternation ${r.ratioPerToken.toFixed(3)} (CPU ${r.cpuRatioPerToken.toFixed(3)})`,
    );
  }
  const span = (x: number[]): string => `${Math.min(...x).toFixed(3)}–${Math.max(...x).toFixed(3)}`;
  console.log(`decode_time_ratio_${Math.round(Number(a.ratio) * 100)}: wall ${span(ratios)}, CPU ${span(cpu)} over ${ratios.length} run(s)`);
} else {
  await runPassBench({ bench, demo });
}
