import type { Observable } from 'rxjs';
import type { z } from 'zod';
import type { JsonObject, JsonValue } from './json.js';
import type { AnyModule, ModuleRegistry } from './module.js';

/** When a pass runs: during fine-tuning, as a one-off compression, or inside inference/sampling. */
export type PassStage = 'finetune' | 'compress' | 'inference';

/** One module a pass will rewrite, and why. */
export interface PlanEntry {
  path: string;
  /** Kind of the module as it is now. */
  kind: string;
  /** Kind it becomes (or what is done to it). */
  action: string;
  reason: string;
  detail?: JsonObject;
}

/** What `plan` returns: the rewrite list, computed without changing the model. */
export interface PassPlan {
  pass: string;
  entries: PlanEntry[];
  notes?: string[];
}

/** Things a pass needs from its context, checked before anything runs. */
export type Requirement = 'calibration' | 'trainData' | 'evalData';

export type LogLevel = 'debug' | 'info' | 'warn';

export interface Logger {
  log(level: LogLevel, message: string): void;
}

/** A source of calibration batches with a cap on the number of samples drawn. */
export interface CalibrationSource<T = unknown> {
  /** Seeded, deterministic batches. */
  batches(): AsyncIterable<T>;
  /** The most samples (rows, tokens or images, as the pass documents) that will be drawn. */
  sampleCap: number;
}

/** A labelled dataset a pass may train or evaluate with (LazyDiT's gates, MobileTL fine-tuning). */
export interface DataSource<T = unknown> {
  batches(epoch: number): AsyncIterable<T>;
  size: number;
}

/** What a pass gets besides the model and its options. Options are plain data; everything else is here. */
export interface PassContext {
  seed: number;
  /** The tfjs backend in use ('wasm', 'cpu', 'tensorflow'). */
  backend: string;
  signal?: AbortSignal;
  logger?: Logger;
  calibration?: CalibrationSource;
  trainData?: DataSource;
  evalData?: DataSource;
  registry?: ModuleRegistry;
  /** Free-form extras for third-party passes. */
  extras?: Record<string, unknown>;
}

/** What a pass measured and did; carried by its `done` event and recorded in reports. */
export interface PassReport {
  pass: string;
  version: string;
  options: JsonObject;
  /** Paths of the modules rewritten. */
  modules: string[];
  params: { before: number; after: number };
  flops?: { before: number; after: number };
  /** Anything else the pass measured (per-layer ranks, reuse rates…). */
  measured?: Record<string, JsonValue>;
}

export type PassEvent =
  | { type: 'progress'; pass: string; fraction: number; message?: string; current?: number; total?: number }
  | { type: 'log'; pass: string; level: LogLevel; message: string }
  | { type: 'metric'; pass: string; name: string; value: number; step?: number }
  | { type: 'done'; pass: string; report: PassReport };

/**
 * The interface every technique package implements (see DESIGN.md).
 * `options` is a strict zod object schema with a default for every field, so `options.parse({})`
 * gives the defaults and unknown keys fail.
 */
export interface Pass<S extends z.ZodType<JsonObject, JsonObject> = z.ZodType<JsonObject, JsonObject>> {
  /** The npm package name, e.g. `@leanpass/skipcat`. */
  readonly name: string;
  /** The package version (from its package.json). */
  readonly version: string;
  readonly stage: PassStage;
  readonly description: string;
  readonly options: S;
  /** Module kinds the pass rewrites by default (the selector's default `kinds`). */
  readonly targets: readonly string[];
  readonly requires?: readonly Requirement[];
  /** Marks (pass names) of already-rewritten modules this pass may rewrite again. */
  readonly restacks?: readonly string[];
  /** Registers the module kinds the pass introduces, so rewritten models load without the pass running. */
  registerKinds(registry: ModuleRegistry): void;
  /** Which modules would be rewritten and why; changes nothing. An empty plan throws a PassError. */
  plan(model: AnyModule, options: z.output<S>): PassPlan;
  /**
   * Rewrites the model. Emits progress/log/metric events and ends with one `done` event. Replacements
   * are built first and swapped in at the end: an error or an unsubscribe leaves the model as it was.
   */
  apply(model: AnyModule, options: z.output<S>, ctx: PassContext): Observable<PassEvent>;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyPass = Pass<any>;
