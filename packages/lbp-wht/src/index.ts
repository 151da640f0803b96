/**
 * @leanpass/lbp-wht — LBP-WHT (Yang et al., NeurIPS 2023): low-rank backpropagation through K 2-D
 * Walsh–Hadamard bases per o×o patch of a ViT's token grid. The forward and the bias gradient are
 * exact; the weight and input gradients are computed on K·P "pseudo-tokens" instead of N tokens.
 */
import { registry } from '@leanpass/core';
import { registerLbpKinds } from './layer.js';

export { pass, optionsSchema, basesSchema, basesFor, basesCount, findLayerGrid, isPointwiseConv, PASS_NAME, PASS_VERSION, TARGETS } from './pass.js';
export type { LbpWhtOptions, LbpWhtOptionsInput, LayerGrid } from './pass.js';
export { LbpLinear, LBP_LINEAR_KIND, checkLbpConfig, lbpFlops, registerLbpKinds } from './layer.js';
export type { LbpLinearConfig, LbpFlops, LbpLinearSource } from './layer.js';
export { lbpDense, makeBases, resolveGeometry, padKinds } from './op.js';
export type { Bases, GridSpec, LbpDenseOptions, PadMode } from './op.js';
export { patchify, unpatchify, patchGrid, makeGeometry, reflectProblem } from './patch.js';
export type { Geometry, PadKind, PatchImpl } from './patch.js';
export {
  allPairs,
  baseMatrix,
  isPowerOfTwo,
  lowPassL1,
  lowPassL1Count,
  lowPassLinf,
  sequencyPermutation,
  signChanges,
  sortPairs,
  sylvester,
  topEnergy,
  validatePairs,
  walshMatrix,
} from './wht.js';
export type { BasePair } from './wht.js';

registerLbpKinds(registry);
