/**
 * SkipCat benchmark: dense vs svd / asvd / svd-llm / cat / skip / skipcat at 20 % and 40 % on the
 * zoo's LLaMA-tiny, plus batch-1 decode timing (tiny host and a SmolLM-135M-shaped model).
 *
 *   npx tsx --conditions=@leanpass/source tools/bench/skipcat.ts [--quick] [--demo] [--json out.json] [--seed 0] [--backend wasm|cpu]
 */
import { bench, demo } from '@leanpass/skipcat/bench';
import { runPassBench } from './pass-bench.js';

await runPassBench({ bench, demo });
