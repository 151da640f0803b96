import * as tf from '@tensorflow/tfjs';
import type { RunContext } from './context.js';
import { ConfigError } from './errors.js';
import type { JsonObject } from './json.js';
import type { Rng } from './rng.js';
import { matchesSelector, type LayerSelectorSpec } from './selector.js';

/** A named parameter: a tf.Variable and whether training updates it. */
export class Param {
  private flag: boolean;
  constructor(
    public variable: tf.Variable,
    trainable = true,
  ) {
    this.flag = trainable;
    variable.trainable = trainable;
  }
  /** Whether training updates it. Kept in sync with the tf.Variable's own flag (tf.variableGrads reads that one). */
  get trainable(): boolean {
    return this.flag;
  }
  set trainable(v: boolean) {
    this.flag = v;
    this.variable.trainable = v;
  }
  get shape(): number[] {
    return this.variable.shape.slice();
  }
  get size(): number {
    return this.variable.size;
  }
  get dtype(): tf.DataType {
    return this.variable.dtype;
  }
  /** Assigns new values; the shape must match exactly. */
  assign(value: tf.Tensor, name = 'param'): void {
    if (!sameShape(value.shape, this.variable.shape)) {
      throw new ConfigError(`${name}: expected shape [${this.variable.shape.join(', ')}], found [${value.shape.join(', ')}]`);
    }
    this.variable.assign(value.dtype === this.variable.dtype ? value : tf.cast(value, this.variable.dtype));
  }
  dispose(): void {
    this.variable.dispose();
  }
}

/** Analytic cost of one call of one module, excluding its children (they report their own). */
export interface FlopCount {
  /** FLOPs of the forward (2 per multiply-add). */
  forward: number;
  /** FLOPs of the backward (input and parameter gradients). */
  backward: number;
}

/** The serialisable shape of a module tree (config.json's `root`). */
export interface ModuleNode {
  kind: string;
  config: JsonObject;
  /** The pass that produced this module, when it was rewritten. */
  mark?: string;
  children?: Record<string, ModuleNode>;
}

/** One applied pass, recorded in the model so that a saved model says how it was made. */
export interface ProvenanceEntry {
  pass: string;
  version: string;
  options: JsonObject;
  seed: number;
  /** Module paths the pass rewrote. */
  paths: string[];
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyModule = Module<any, any, JsonObject>;

/**
 * A node of the model tree. Subclasses declare `kind`, build their params and children in the
 * constructor with `addParam` / `addChild`, and implement `forward`. Parents call children with
 * `child.call(x, ctx)` (never `forward` directly) and look children up by name at call time
 * (`this.child('q')`), so that a pass can replace a child in place.
 */
export abstract class Module<I = tf.Tensor, O = tf.Tensor, C extends JsonObject = JsonObject> {
  abstract readonly kind: string;
  readonly config: C;
  /** The pass that produced this module (for stacking checks); undefined for original modules. */
  mark: string | undefined;
  /** Passes applied to the tree rooted here (meaningful on the root). */
  provenance: ProvenanceEntry[] = [];
  private readonly paramMap = new Map<string, Param>();
  private readonly childMap = new Map<string, AnyModule>();

  constructor(config: C) {
    this.config = config;
  }

  abstract forward(input: I, ctx: RunContext): O;

  /** Own analytic cost for this call (children excluded). Leaf layers override it. */
  flops(_input: I, _output: O): FlopCount | undefined {
    return undefined;
  }

  /** Runs `forward` and reports cost to `ctx.meter` when one is attached. */
  call(input: I, ctx: RunContext): O {
    const out = this.forward(input, ctx);
    if (ctx.meter) {
      const f = this.flops(input, out);
      if (f) ctx.meter.record(this, { flops: f.forward, backwardFlops: f.backward });
    }
    return out;
  }

  /**
   * Adds a parameter initialised from `value`. The module takes ownership of `value`: it is disposed
   * once the variable holds its data (pass a clone to keep using a tensor).
   */
  protected addParam(name: string, value: tf.Tensor, trainable = true): Param {
    checkName(name, this.kind);
    if (this.paramMap.has(name) || this.childMap.has(name)) throw new ConfigError(`${this.kind}: duplicate member name '${name}'`);
    const p = new Param(tf.variable(value, trainable), trainable);
    if (!(value instanceof tf.Variable)) value.dispose();
    this.paramMap.set(name, p);
    return p;
  }

  protected addChild<M extends AnyModule>(name: string, module: M): M {
    checkName(name, this.kind);
    if (this.paramMap.has(name) || this.childMap.has(name)) throw new ConfigError(`${this.kind}: duplicate member name '${name}'`);
    this.childMap.set(name, module);
    return module;
  }

  /** A parameter of this module by name. */
  param(name: string): Param {
    const p = this.paramMap.get(name);
    if (!p) throw new ConfigError(`${this.kind} has no parameter '${name}' (has: ${[...this.paramMap.keys()].join(', ') || 'none'})`);
    return p;
  }

  /** A direct child by name. */
  child<M extends AnyModule = AnyModule>(name: string): M {
    const c = this.childMap.get(name);
    if (!c) throw new ConfigError(`${this.kind} has no child '${name}' (has: ${[...this.childMap.keys()].join(', ') || 'none'})`);
    return c as M;
  }

  get params(): ReadonlyMap<string, Param> {
    return this.paramMap;
  }
  get children(): ReadonlyMap<string, AnyModule> {
    return this.childMap;
  }

  /** Replaces a direct child; returns the old one (not disposed). */
  setChild(name: string, module: AnyModule): AnyModule {
    const old = this.childMap.get(name);
    if (!old) throw new ConfigError(`${this.kind} has no child '${name}' to replace (has: ${[...this.childMap.keys()].join(', ') || 'none'})`);
    this.childMap.set(name, module);
    return old;
  }

  /** Every module of the tree, depth first, with its dotted path ('' for this one). */
  *modules(prefix = ''): Generator<[string, AnyModule]> {
    yield [prefix, this];
    for (const [name, c] of this.childMap) yield* c.modules(prefix ? `${prefix}.${name}` : name);
  }

  /** Every parameter of the tree with its dotted path (`blocks.0.attn.q.weight`). */
  *namedParams(prefix = ''): Generator<[string, Param]> {
    for (const [name, p] of this.paramMap) yield [prefix ? `${prefix}.${name}` : name, p];
    for (const [name, c] of this.childMap) yield* c.namedParams(prefix ? `${prefix}.${name}` : name);
  }

  /** The module at a dotted path ('' is this module). */
  get(path: string): AnyModule {
    if (path === '') return this;
    let cur = this as AnyModule;
    const parts = path.split('.');
    for (let i = 0; i < parts.length; i++) {
      const next: AnyModule | undefined = cur.children.get(parts[i] as string);
      if (!next) {
        const at = parts.slice(0, i).join('.') || '(root)';
        throw new ConfigError(`no module at '${path}': '${at}' (${cur.kind}) has no child '${parts[i]}' (has: ${[...cur.children.keys()].join(', ') || 'none'})`);
      }
      cur = next;
    }
    return cur;
  }

  /** Replaces the module at a dotted path; returns the old one (not disposed). */
  replace(path: string, module: AnyModule): AnyModule {
    if (path === '') throw new ConfigError('cannot replace the root module');
    const cut = path.lastIndexOf('.');
    const parent = this.get(cut < 0 ? '' : path.slice(0, cut));
    return parent.setChild(cut < 0 ? path : path.slice(cut + 1), module);
  }

  /** Modules matching a selector (kinds, include/exclude globs or `re:` regexes), the root excluded. */
  select(selector: LayerSelectorSpec): Array<[string, AnyModule]> {
    return [...this.modules()].filter(([p, m]) => p !== '' && matchesSelector(selector, p, m.kind));
  }

  /** Number of parameter elements in the tree. */
  paramCount(opts: { trainableOnly?: boolean } = {}): number {
    let n = 0;
    for (const [, p] of this.namedParams()) if (!opts.trainableOnly || p.trainable) n += p.size;
    return n;
  }

  /** Sets the trainable flag of every parameter of this subtree. */
  setTrainable(trainable: boolean): this {
    for (const [, p] of this.namedParams()) p.trainable = trainable;
    return this;
  }

  /** The serialisable tree (kinds, configs, marks). */
  toNode(): ModuleNode {
    const node: ModuleNode = { kind: this.kind, config: this.config };
    if (this.mark !== undefined) node.mark = this.mark;
    if (this.childMap.size) {
      // A null-prototype object: a child literally named `__proto__` stays a plain key.
      const children = Object.create(null) as Record<string, ModuleNode>;
      for (const [name, c] of this.childMap) children[name] = c.toNode();
      node.children = children;
    }
    return node;
  }

  /** Frees every parameter of the subtree. */
  dispose(): void {
    for (const [, p] of this.namedParams()) p.dispose();
  }
}

/** What a factory gets besides the config: the seeded RNG for initialisation. */
export interface InitContext {
  rng: Rng;
}

export type ModuleFactory = (config: JsonObject, init: InitContext) => AnyModule;

/** Kinds and their factories, so that a saved tree (config.json) can be rebuilt. */
export class ModuleRegistry {
  private readonly factories = new Map<string, ModuleFactory>();

  /** Registers a kind. Registering the same kind twice is an error unless `replace` is set. */
  register(kind: string, factory: ModuleFactory, opts: { replace?: boolean } = {}): void {
    if (this.factories.has(kind) && !opts.replace && this.factories.get(kind) !== factory) {
      throw new ConfigError(`module kind '${kind}' is already registered`);
    }
    this.factories.set(kind, factory);
  }
  has(kind: string): boolean {
    return this.factories.has(kind);
  }
  kinds(): string[] {
    return [...this.factories.keys()].sort();
  }
  create(kind: string, config: JsonObject, init: InitContext): AnyModule {
    const f = this.factories.get(kind);
    if (!f) {
      throw new ConfigError(`unknown module kind '${kind}': register it (import the package that defines it) before loading. Known kinds: ${this.kinds().join(', ') || 'none'}`);
    }
    const m = f(config, init);
    if (m.kind !== kind) throw new ConfigError(`factory for '${kind}' built a module of kind '${m.kind}'`);
    return m;
  }
}

/** The process-wide registry that packages register their kinds in. */
export const registry = new ModuleRegistry();

function checkName(name: string, kind: string): void {
  if (!/^[A-Za-z0-9_-]+$/.test(name)) throw new ConfigError(`${kind}: member name '${name}' must match [A-Za-z0-9_-]+ (no dots)`);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
