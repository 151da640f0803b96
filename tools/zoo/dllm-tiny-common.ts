/** Shared settings of the dllm-tiny checkpoint (training script, evaluation script, model card). */
import type { TaskName, TaskRanges } from '@leanpass/data';

/** Task ranges the checkpoint is trained and evaluated on. */
export const DLLM_TINY_RANGES: Required<TaskRanges> = { addDigits: { min: 2, max: 2 }, sortLength: { min: 4, max: 6 }, stringLength: { min: 3, max: 6 } };
/** Default task mixture. */
export const DLLM_TINY_TASKS: readonly TaskName[] = ['reverse', 'sort', 'add'];
/** Seed of the held-out evaluation problems (test side of the content split, split seed 0, fraction 0.2). */
export const DLLM_TINY_EVAL_SEED = 12345;
