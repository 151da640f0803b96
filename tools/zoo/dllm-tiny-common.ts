/** Shared settings of the dllm-tiny checkpoint (training script, evaluation script, model card): defined in @leanpass/models. */
export { DLLM_TINY_EVAL_SEED, DLLM_TINY_RANGES, DLLM_TINY_TASKS } from '@leanpass/models';
