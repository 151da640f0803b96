import { LeanpassError } from '@leanpass/core';

/** What went non-finite: the loss, or the global norm of the gradients (some gradient holds NaN/Inf). */
export type DivergedQuantity = 'loss' | 'gradient norm';

/**
 * Training produced a non-finite loss or gradient. The update of that step was not applied and no
 * checkpoint was written after it: `lastCheckpoint` (the last checkpoint the trainer wrote or restored,
 * if any) is the last good one.
 */
export class TrainingDivergedError extends LeanpassError {
  override readonly name = 'TrainingDivergedError';
  constructor(
    /** The update (1-based) whose loss or gradients were non-finite. */
    readonly step: number,
    readonly quantity: DivergedQuantity,
    /** The offending value (NaN, Infinity or −Infinity). */
    readonly value: number,
    /** Path of the last checkpoint written or restored before the divergence, if any. */
    readonly lastCheckpoint?: string,
  ) {
    super(
      `training diverged at step ${step}: expected a finite ${quantity}, found ${String(value)}; the update was not applied` +
        (lastCheckpoint ? `; last good checkpoint: ${lastCheckpoint}` : '; there is no checkpoint to go back to'),
    );
  }
}
