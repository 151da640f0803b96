import { BackendError, CancelledError, ConfigError, FormatError, PassError } from '@leanpass/core';
import { DatasetNotInstalledError } from '@leanpass/data';

/** Exit codes: distinct for usage, input and runtime errors. */
export const EXIT = {
  ok: 0,
  /** A runtime failure (a pass failed, training diverged…). */
  runtime: 1,
  /** Bad command line (unknown command or flag, missing argument). */
  usage: 2,
  /** Bad input: pipeline JSON, options, model folder, report file, a dataset that is not installed. */
  input: 3,
  /** The requested backend cannot be used. */
  backend: 4,
  /** Interrupted (SIGINT). */
  interrupted: 130,
} as const;

/** A usage error raised by our own argument checks. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** A bad input file or name (missing model, unreadable JSON…). */
export class InputError extends Error {
  override readonly name = 'InputError';
}

export function exitCodeFor(e: unknown): number {
  if (e instanceof CancelledError) return EXIT.interrupted;
  if (e instanceof UsageError) return EXIT.usage;
  if (e instanceof InputError || e instanceof ConfigError || e instanceof FormatError || e instanceof DatasetNotInstalledError) return EXIT.input;
  if (e instanceof BackendError) return EXIT.backend;
  if (e instanceof PassError) return EXIT.runtime;
  return EXIT.runtime;
}
