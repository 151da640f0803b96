/**
 * LBP-WHT benchmark: full backprop vs LBP-WHT LP_L1-r (r = 2, 3, 4; K = 3, 6, 10) — step time on a
 * ViT-S-shaped model and on the tiny host, analytic backward FLOPs and saved-for-backward bytes of the
 * adapted layers, and accuracy on the vit-tiny transfer task (when the zoo checkpoint is bundled).
 *
 *   npx tsx --conditions=@leanpass/source tools/bench/lbp-wht.ts [--quick] [--demo] [--json out.json] [--seed 0] [--backend wasm|cpu]
 */
import { bench, demo } from '@leanpass/lbp-wht/bench';
import { runPassBench } from './pass-bench.js';

await runPassBench({ bench, demo });
