import { LeanpassError } from '@leanpass/core';

/**
 * A dataset or corpus that was asked for and is not on this machine. Says where it looked and the
 * command that installs it.
 */
export class DatasetNotInstalledError extends LeanpassError {
  override readonly name: string = 'DatasetNotInstalledError';
  constructor(
    /** The dataset, e.g. `Fashion-MNIST` or `fortunes`. */
    readonly dataset: string,
    /** The paths that were searched. */
    readonly searched: readonly string[],
    /** The shell command that installs it (Debian / Ubuntu). */
    readonly installCommand: string,
    /** What else the caller can do (e.g. use the bundled subset). */
    hint?: string,
  ) {
    super(
      `${dataset} is not installed: looked in ${searched.join(', ')}. ` +
        `Install it with \`${installCommand}\`${hint === undefined ? '' : `, or ${hint}`}.`,
    );
  }
}
