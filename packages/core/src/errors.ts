/** Typed errors. Every message says what was expected and what was found. */

export class LeanpassError extends Error {
  override readonly name: string = 'LeanpassError';
}

/** One problem found while validating options, a pipeline or a plan. */
export interface ConfigIssue {
  /** Where: a JSON path such as `steps[1].options.ratio`, or a module path. */
  path: string;
  message: string;
}

/** Bad options, a bad pipeline or an unmet requirement. Lists every problem found, not just the first. */
export class ConfigError extends LeanpassError {
  override readonly name = 'ConfigError';
  readonly issues: readonly ConfigIssue[];
  constructor(summary: string, issues: readonly ConfigIssue[] = []) {
    super(issues.length === 0 ? summary : `${summary}\n${issues.map((i) => `  - ${i.path ? `${i.path}: ` : ''}${i.message}`).join('\n')}`);
    this.issues = issues;
  }
}

/** A file (safetensors, config.json, IDX…) that is malformed. Names the tensor or field and the problem. */
export class FormatError extends LeanpassError {
  override readonly name = 'FormatError';
  constructor(
    message: string,
    /** The tensor or field the problem concerns, when there is one. */
    readonly subject?: string,
  ) {
    super(subject === undefined ? message : `${subject}: ${message}`);
  }
}

/** A pass that cannot run on this model (nothing to rewrite, incompatible stacking, failure while applying). */
export class PassError extends LeanpassError {
  override readonly name = 'PassError';
  constructor(
    readonly pass: string,
    message: string,
    readonly issues: readonly ConfigIssue[] = [],
  ) {
    super(`${pass}: ${message}${issues.length ? `\n${issues.map((i) => `  - ${i.path ? `${i.path}: ` : ''}${i.message}`).join('\n')}` : ''}`);
  }
}

/** Work stopped because its AbortSignal fired (or its Observable was unsubscribed). */
export class CancelledError extends LeanpassError {
  override readonly name = 'CancelledError';
  constructor(message = 'cancelled') {
    super(message);
  }
}

/** A backend that was asked for and cannot be used. */
export class BackendError extends LeanpassError {
  override readonly name = 'BackendError';
}

/** Throws CancelledError if the signal has fired. */
export function throwIfAborted(signal: AbortSignal | undefined, what = 'operation'): void {
  if (signal?.aborted) throw new CancelledError(`${what} cancelled`);
}
