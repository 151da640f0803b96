/**
 * Test harness (not part of the library build: excluded with the tests): one attention layer driven
 * through a sampler-like schedule over a canvas — blocks, one unmasking per step, the windows of the
 * plain sampler, the prefix cache and the dual cache — with slowly drifting hidden rows and big changes
 * where a token was just unmasked.
 */
import * as tf from '@tensorflow/tfjs';
import { Rng, createRunContext, type AnyModule, type RunContext } from '@leanpass/core';
import type { DiffusionLMConfigInput } from '@leanpass/models';
import { CanvasAttention, MASKED, type CanvasAttentionInput, type CanvasStep } from '@leanpass/nn';
import { DareAttention } from './module.js';
import type { DareSettingsInput } from './options.js';

/** A tiny random diffusion LM for the host-level tests. */
export const TINY: DiffusionLMConfigInput = { vocabSize: 25, dim: 32, layers: 2, heads: 4, kvHeads: 2, hidden: 48, maskId: 24, eosId: 23, padId: 22, maxLength: 16 };

export type CacheKind = 'none' | 'prefix' | 'dual';

export interface Scenario {
  batch: number;
  length: number;
  prompt: number;
  block: number;
  pad: number[];
  dim: number;
  heads: number;
  kvHeads: number;
  /** Per-step drift of every row. */
  noise: number;
  seed: number;
}

export const SMALL: Scenario = { batch: 2, length: 12, prompt: 4, block: 4, pad: [0, 2], dim: 32, heads: 4, kvHeads: 2, noise: 0.002, seed: 3 };

export const MASK_ID = 99;

export interface PlannedStep {
  step: CanvasStep;
  window: { start: number; end: number };
  /** Hidden rows of the whole canvas [B·L·dim] this step. */
  hidden: Float32Array;
}

/** The steps of one generation (deterministic in the scenario's seed). */
export function planSteps(sc: Scenario, cache: CacheKind): PlannedStep[] {
  const { batch: B, length: L, dim: D } = sc;
  const rng = new Rng(sc.seed);
  const hidden = Float32Array.from(rng.normalArray(B * L * D, 1));
  const ids = new Int32Array(B * L);
  for (let b = 0; b < B; b++) {
    for (let p = 0; p < L; p++) ids[b * L + p] = p < (sc.pad[b] as number) ? 0 : p < sc.prompt ? 1 + ((p * 7 + b) % 20) : MASK_ID;
  }
  const out: PlannedStep[] = [];
  let nfe = 0;
  const nBlocks = (L - sc.prompt) / sc.block;
  for (let blk = 0; blk < nBlocks; blk++) {
    const bs = sc.prompt + blk * sc.block;
    const be = bs + sc.block;
    for (let k = 0; k < sc.block; k++) {
      const window = k === 0 || cache === 'none' ? { start: 0, end: L } : cache === 'prefix' ? { start: bs, end: L } : { start: bs, end: be };
      out.push({
        step: { block: blk, stepInBlock: k, nfe, blockStart: k === 0, blockRange: { start: bs, end: be }, ids: ids.slice(), batch: B, length: L, pad: Int32Array.from(sc.pad) },
        window,
        hidden: hidden.slice(),
      });
      nfe++;
      // Commit one token per sequence (position bs + k), then drift every row and move the committed rows a lot.
      for (let b = 0; b < B; b++) ids[b * L + bs + k] = 1 + ((7 * k + 3 * blk + b) % 20);
      const noise = rng.normalArray(B * L * D, sc.noise);
      for (let i = 0; i < hidden.length; i++) hidden[i] = (hidden[i] as number) + (noise[i] as number);
      for (let b = 0; b < B; b++) {
        const jump = rng.normalArray(D, 1);
        const row = (b * L + bs + k) * D;
        for (let j = 0; j < D; j++) hidden[row + j] = (hidden[row + j] as number) + (jump[j] as number);
      }
    }
  }
  return out;
}

export function positionsOf(sc: Scenario): number[][] {
  return sc.pad.map((p) => Array.from({ length: sc.length }, (_, i) => Math.max(0, i - p)));
}

export function keyMaskOf(sc: Scenario): tf.Tensor | null {
  if (sc.pad.every((p) => p === 0)) return null;
  const m = new Float32Array(sc.batch * sc.length);
  sc.pad.forEach((p, b) => {
    for (let i = 0; i < p; i++) m[b * sc.length + i] = MASKED;
  });
  return tf.tensor4d(m, [sc.batch, 1, 1, sc.length]);
}

export function makeCanvas(sc: Scenario, seed = 1): CanvasAttention {
  return new CanvasAttention({ dim: sc.dim, heads: sc.heads, kvHeads: sc.kvHeads }, { rng: new Rng(seed) });
}

/** A DARE layer sharing the canvas layer's Linear children. */
export function makeDare(base: CanvasAttention, settings: DareSettingsInput): DareAttention {
  return new DareAttention({ ...base.config, maskId: MASK_ID, dare: settings }, { rng: new Rng(0) }, { q: base.child('q'), k: base.child('k'), v: base.child('v'), o: base.child('o') });
}

export interface RunResult {
  /** Output of each step [B·N·dim]. */
  outputs: Float32Array[];
  ctx: RunContext;
}

/** Runs a layer through the steps with its own state store (not disposed: the caller reads stats, then disposes). */
export function runLayer(layer: AnyModule, sc: Scenario, steps: readonly PlannedStep[], opts: { ctx?: RunContext; layerIndex?: number; onStep?: (i: number, ctx: RunContext) => void } = {}): RunResult {
  const ctx = opts.ctx ?? createRunContext();
  const positions = positionsOf(sc);
  const keyMask = keyMaskOf(sc);
  const outputs: Float32Array[] = [];
  steps.forEach((s, i) => {
    const y = tf.tidy(() => {
      const N = s.window.end - s.window.start;
      const full = tf.tensor3d(s.hidden, [sc.batch, sc.length, sc.dim]);
      const x = tf.slice(full, [0, s.window.start, 0], [sc.batch, N, sc.dim]);
      const input: CanvasAttentionInput = { x, window: s.window, length: sc.length, positions, keyMask, store: `kv.${opts.layerIndex ?? 0}`, layer: opts.layerIndex ?? 0, step: s.step };
      return layer.call(input, ctx) as tf.Tensor;
    });
    outputs.push(y.dataSync() as Float32Array);
    y.dispose();
    opts.onStep?.(i, ctx);
  });
  keyMask?.dispose();
  return { outputs, ctx };
}
