import type { TaskName, TaskRanges } from '@leanpass/data';

/**
 * The procedural task mixture of the tiny masked-diffusion host (data-and-models.md §2.3) — the zoo's
 * `dllm-tiny` is trained and evaluated on it. One definition for the training and evaluation scripts, the
 * CLI's calibrate/evaluate actions, DARE's benchmark and the zoo test.
 */
export const DLLM_TINY_TASKS: readonly TaskName[] = ['reverse', 'sort', 'add'];
/** Operand and list lengths of the mixture: 2-digit additions, sorts of 4–6 digits, reversals of 3–6 symbols. */
export const DLLM_TINY_RANGES: Required<TaskRanges> = { addDigits: { min: 2, max: 2 }, sortLength: { min: 4, max: 6 }, stringLength: { min: 3, max: 6 } };
/** Seed of the card's held-out evaluation problems (test side of the content split, split seed 0, fraction 0.2). */
export const DLLM_TINY_EVAL_SEED = 12345;
