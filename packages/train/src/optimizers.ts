import * as tf from '@tensorflow/tfjs';
import { ConfigError, FormatError, type ConfigIssue, type JsonObject } from '@leanpass/core';

/** Which parameters get weight decay: called with the parameter path and shape. */
export type DecayFilter = (path: string, shape: readonly number[]) => boolean;

/** An optimizer's full state as plain tensors and numbers, keyed by parameter path (for checkpoints). */
export interface OptimizerState {
  /** Slot tensors keyed `<slot>/<param path>` (e.g. `m/blocks.0.fc.weight`). */
  tensors: Map<string, tf.Tensor>;
  /** Updates applied so far to each parameter, keyed by path. */
  counts: Record<string, number>;
}

/**
 * Base of the optimizers: explicit per-parameter state (slot variables keyed by parameter path and
 * an update count per parameter) that `getState` / `setState` expose for checkpoints. Subclasses
 * implement `update` for one parameter; everything it allocates is freed by a tidy around it.
 */
export abstract class Optimizer {
  abstract readonly kind: string;
  private readonly slotMap = new Map<string, Map<string, tf.Variable>>();
  private readonly countMap = new Map<string, number>();

  /** Hyperparameters as plain data (recorded in checkpoints). */
  abstract config(): JsonObject;

  /** One update of one parameter. `t` is this parameter's update number, 1 for its first update. */
  protected abstract update(path: string, param: tf.Variable, grad: tf.Tensor, lr: number, t: number): void;

  /**
   * Applies one update with learning rate `lr` to every parameter that has a gradient in `grads`
   * (keyed by parameter path; `params` maps the same paths to their variables). Parameters without a
   * gradient are left alone and their state does not advance.
   */
  apply(params: ReadonlyMap<string, tf.Variable>, grads: ReadonlyMap<string, tf.Tensor>, lr: number): void {
    if (!Number.isFinite(lr) || lr < 0) throw new ConfigError(`${this.kind}: expected a finite learning rate ≥ 0, found ${lr}`);
    for (const [path, g] of grads) {
      const p = params.get(path);
      if (!p) throw new ConfigError(`${this.kind}: gradient for '${path}', which is not among the parameters given (${[...params.keys()].join(', ')})`);
      if (!sameShape(p.shape, g.shape)) {
        throw new ConfigError(`${this.kind}: gradient for '${path}' has shape [${g.shape.join(', ')}], expected the parameter's [${p.shape.join(', ')}]`);
      }
      const t = (this.countMap.get(path) ?? 0) + 1;
      tf.tidy(() => this.update(path, p, g, lr, t));
      this.countMap.set(path, t);
    }
  }

  /** Updates applied so far to the parameter at `path`. */
  count(path: string): number {
    return this.countMap.get(path) ?? 0;
  }

  protected hasSlot(path: string, slot: string): boolean {
    return this.slotMap.get(path)?.has(slot) ?? false;
  }

  /** The slot's current value; throws if it does not exist. */
  protected getSlot(path: string, slot: string): tf.Variable {
    const v = this.slotMap.get(path)?.get(slot);
    if (!v) throw new ConfigError(`${this.kind}: no state '${slot}' for parameter '${path}'`);
    return v;
  }

  /** Sets (creating on first use) a slot variable. */
  protected setSlot(path: string, slot: string, value: tf.Tensor): void {
    let slots = this.slotMap.get(path);
    if (!slots) this.slotMap.set(path, (slots = new Map<string, tf.Variable>()));
    const v = slots.get(slot);
    if (v) v.assign(value);
    else slots.set(slot, tf.variable(value, false));
  }

  /** The state as tensors (views of the live slot variables: copy or serialise them before the next update) and counts. */
  getState(): OptimizerState {
    const tensors = new Map<string, tf.Tensor>();
    for (const [path, slots] of this.slotMap) for (const [slot, v] of slots) tensors.set(`${slot}/${path}`, v);
    const counts: Record<string, number> = {};
    for (const [path, n] of [...this.countMap].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) counts[path] = n;
    return { tensors, counts };
  }

  /**
   * Replaces the whole state (the old slots are disposed). Tensor keys are `<slot>/<path>` with
   * slot in `slotNames`. The new variables share the inputs' data buffers (reference counted), so the
   * caller keeps ownership of its tensors and may dispose them.
   */
  setState(state: OptimizerState): void {
    const issues: ConfigIssue[] = [];
    const parsed: Array<[string, string, tf.Tensor]> = [];
    for (const [key, t] of state.tensors) {
      const cut = key.indexOf('/');
      const slot = cut < 0 ? '' : key.slice(0, cut);
      if (!this.slotNames.includes(slot)) {
        issues.push({ path: key, message: `expected a key '<slot>/<param path>' with slot one of ${this.slotNames.join(', ')}` });
        continue;
      }
      parsed.push([key.slice(cut + 1), slot, t]);
    }
    for (const [path, n] of Object.entries(state.counts)) {
      if (!Number.isInteger(n) || n < 0) issues.push({ path: `counts.${path}`, message: `expected an integer ≥ 0, found ${String(n)}` });
    }
    if (issues.length) throw new FormatError(`${this.kind}: invalid optimizer state\n${issues.map((i) => `  - ${i.path}: ${i.message}`).join('\n')}`);
    this.dispose();
    for (const [path, slot, t] of parsed) {
      let slots = this.slotMap.get(path);
      if (!slots) this.slotMap.set(path, (slots = new Map<string, tf.Variable>()));
      slots.set(slot, tf.variable(t, false));
    }
    for (const [path, n] of Object.entries(state.counts)) this.countMap.set(path, n);
  }

  /** The slot names this optimizer keeps per parameter. */
  abstract readonly slotNames: readonly string[];

  /** Frees every state tensor and forgets the counts. */
  dispose(): void {
    for (const slots of this.slotMap.values()) for (const v of slots.values()) v.dispose();
    this.slotMap.clear();
    this.countMap.clear();
  }
}

export interface SgdOptions {
  /** Momentum factor μ (default 0: plain SGD). */
  momentum?: number;
  /** Dampening of the momentum's gradient term (default 0). */
  dampening?: number;
  /** Nesterov momentum (needs momentum > 0 and dampening 0). */
  nesterov?: boolean;
  /** L2 penalty added to the gradient, g + λ·p (coupled, as PyTorch's SGD; default 0). */
  weightDecay?: number;
  /** Parameters that get weight decay (default: all). */
  decay?: DecayFilter;
}

/**
 * SGD with momentum, PyTorch's update rule:
 * d = g + λp; b = d on the first update, else μb + (1 − τ)d; d = nesterov ? d + μb : b; p ← p − lr·d.
 */
export class SGD extends Optimizer {
  readonly kind = 'sgd';
  readonly slotNames = ['momentum'] as const;
  readonly momentum: number;
  readonly dampening: number;
  readonly nesterov: boolean;
  readonly weightDecay: number;
  private readonly decay: DecayFilter | undefined;

  constructor(opts: SgdOptions = {}) {
    super();
    this.momentum = opts.momentum ?? 0;
    this.dampening = opts.dampening ?? 0;
    this.nesterov = opts.nesterov ?? false;
    this.weightDecay = opts.weightDecay ?? 0;
    this.decay = opts.decay;
    const issues: ConfigIssue[] = [];
    if (!(this.momentum >= 0 && this.momentum < 1)) issues.push({ path: 'momentum', message: `expected 0 ≤ μ < 1, found ${this.momentum}` });
    if (!(this.dampening >= 0 && this.dampening <= 1)) issues.push({ path: 'dampening', message: `expected 0 ≤ τ ≤ 1, found ${this.dampening}` });
    if (!(this.weightDecay >= 0 && Number.isFinite(this.weightDecay))) issues.push({ path: 'weightDecay', message: `expected a finite λ ≥ 0, found ${this.weightDecay}` });
    if (this.nesterov && (this.momentum === 0 || this.dampening !== 0)) {
      issues.push({ path: 'nesterov', message: `needs momentum > 0 and dampening 0, found momentum ${this.momentum}, dampening ${this.dampening}` });
    }
    if (issues.length) throw new ConfigError('SGD: invalid options', issues);
  }

  config(): JsonObject {
    return { kind: this.kind, momentum: this.momentum, dampening: this.dampening, nesterov: this.nesterov, weightDecay: this.weightDecay, decay: this.decay ? 'custom' : 'all' };
  }

  protected update(path: string, p: tf.Variable, g: tf.Tensor, lr: number): void {
    let d = g;
    if (this.weightDecay > 0 && (this.decay?.(path, p.shape) ?? true)) d = tf.add(d, tf.mul(p, this.weightDecay));
    if (this.momentum > 0) {
      const buf = this.hasSlot(path, 'momentum') ? tf.add(tf.mul(this.getSlot(path, 'momentum'), this.momentum), tf.mul(d, 1 - this.dampening)) : d;
      this.setSlot(path, 'momentum', buf);
      d = this.nesterov ? tf.add(d, tf.mul(buf, this.momentum)) : buf;
    }
    p.assign(tf.sub(p, tf.mul(d, lr)));
  }
}

export interface AdamWOptions {
  /** β₁ (default 0.9). */
  beta1?: number;
  /** β₂ (default 0.999). */
  beta2?: number;
  /** ε added to the denominator (default 1e-8). */
  epsilon?: number;
  /** Decoupled weight decay λ: p ← p·(1 − lr·λ) before the Adam step (default 0.01, as PyTorch). */
  weightDecay?: number;
  /** Parameters that get weight decay (default: all). */
  decay?: DecayFilter;
}

/**
 * AdamW (Loshchilov & Hutter), PyTorch's update rule with bias correction:
 * p ← p(1 − lr·λ); m ← β₁m + (1 − β₁)g; v ← β₂v + (1 − β₂)g²;
 * p ← p − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε), with t counted per parameter.
 */
export class AdamW extends Optimizer {
  readonly kind = 'adamw';
  readonly slotNames = ['m', 'v'] as const;
  readonly beta1: number;
  readonly beta2: number;
  readonly epsilon: number;
  readonly weightDecay: number;
  private readonly decay: DecayFilter | undefined;

  constructor(opts: AdamWOptions = {}) {
    super();
    this.beta1 = opts.beta1 ?? 0.9;
    this.beta2 = opts.beta2 ?? 0.999;
    this.epsilon = opts.epsilon ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0.01;
    this.decay = opts.decay;
    const issues: ConfigIssue[] = [];
    if (!(this.beta1 >= 0 && this.beta1 < 1)) issues.push({ path: 'beta1', message: `expected 0 ≤ β₁ < 1, found ${this.beta1}` });
    if (!(this.beta2 >= 0 && this.beta2 < 1)) issues.push({ path: 'beta2', message: `expected 0 ≤ β₂ < 1, found ${this.beta2}` });
    if (!(this.epsilon > 0 && Number.isFinite(this.epsilon))) issues.push({ path: 'epsilon', message: `expected a finite ε > 0, found ${this.epsilon}` });
    if (!(this.weightDecay >= 0 && Number.isFinite(this.weightDecay))) issues.push({ path: 'weightDecay', message: `expected a finite λ ≥ 0, found ${this.weightDecay}` });
    if (issues.length) throw new ConfigError('AdamW: invalid options', issues);
  }

  config(): JsonObject {
    return { kind: this.kind, beta1: this.beta1, beta2: this.beta2, epsilon: this.epsilon, weightDecay: this.weightDecay, decay: this.decay ? 'custom' : 'all' };
  }

  protected update(path: string, p: tf.Variable, g: tf.Tensor, lr: number, t: number): void {
    const { beta1: b1, beta2: b2 } = this;
    const m = this.hasSlot(path, 'm') ? tf.add(tf.mul(this.getSlot(path, 'm'), b1), tf.mul(g, 1 - b1)) : tf.mul(g, 1 - b1);
    const g2 = tf.square(g);
    const v = this.hasSlot(path, 'v') ? tf.add(tf.mul(this.getSlot(path, 'v'), b2), tf.mul(g2, 1 - b2)) : tf.mul(g2, 1 - b2);
    this.setSlot(path, 'm', m);
    this.setSlot(path, 'v', v);
    const bc1 = 1 - Math.pow(b1, t);
    const bc2 = 1 - Math.pow(b2, t);
    const base = this.weightDecay > 0 && (this.decay?.(path, p.shape) ?? true) ? tf.mul(p, 1 - lr * this.weightDecay) : p;
    const denom = tf.add(tf.div(tf.sqrt(v), Math.sqrt(bc2)), this.epsilon);
    p.assign(tf.sub(base, tf.mul(tf.div(m, denom), lr / bc1)));
  }
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
