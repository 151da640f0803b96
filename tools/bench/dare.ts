/**
 * DARE benchmark: the plain / prefix-cache / dual-cache diffusion samplers on the zoo's dllm-tiny, each
 * alone and with DARE-KV, DARE-O and DARE-KV+O at several thresholds; layer time at D = 256, T = 256.
 *
 *   npx tsx --conditions=@leanpass/source tools/bench/dare.ts [--quick] [--demo] [--json out.json] [--seed 0] [--backend wasm|cpu]
 */
import { bench, demo } from '@leanpass/dare/bench';
import { runPassBench } from './pass-bench.js';

await runPassBench({ bench, demo });
