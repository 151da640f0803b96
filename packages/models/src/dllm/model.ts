import * as tf from '@tensorflow/tfjs';
import { ConfigError, Module, Rng, registry, type InitContext, type JsonObject, type RunContext } from '@leanpass/core';
import { CanvasAttention, Embedding, Linear, MASKED, RMSNorm, SwiGLU, type CanvasAttentionInput, type CanvasStep } from '@leanpass/nn';
import { dllmConfig, type DiffusionLMConfig, type DiffusionLMConfigInput } from './config.js';
import { constructModel } from '../construct.js';
import type { LlamaBlockConfig } from '../llama/model.js';

/** Config of one block (kind 'dllm.block'): the same geometry as a LLaMA block's. */
export type DiffusionBlockConfig = LlamaBlockConfig;

/** A block's input: the window rows' hidden states and the canvas description for its attention. */
export interface DiffusionBlockInput {
  /** Hidden states of the window rows, [B, N, dim]. */
  x: tf.Tensor;
  /** Everything of the attention input but its `x` (the block fills in the normed rows). */
  canvas: Omit<CanvasAttentionInput, 'x'>;
}

/**
 * One pre-norm block (kind 'dllm.block'), LLaMA's without the causal mask:
 *   x ← x + attn(attnNorm(x)),  x ← x + mlp(mlpNorm(x)).
 * Children 'attnNorm' (rmsnorm), 'attn' (canvas-attention, or a module replacing it with the same
 * CanvasAttentionInput contract, e.g. DARE's), 'mlpNorm' (rmsnorm), 'mlp' (swiglu: 'gate', 'up', 'down').
 */
export class DiffusionBlock extends Module<DiffusionBlockInput, tf.Tensor, DiffusionBlockConfig> {
  readonly kind = 'dllm.block';

  constructor(config: DiffusionBlockConfig, init: InitContext) {
    super({ ...config });
    const { dim, heads, kvHeads, headDim, hidden, eps, ropeTheta } = this.config;
    this.addChild('attnNorm', new RMSNorm({ dim, eps }));
    this.addChild('attn', new CanvasAttention({ dim, heads, kvHeads, headDim, ropeBase: ropeTheta }, init));
    this.addChild('mlpNorm', new RMSNorm({ dim, eps }));
    this.addChild('mlp', new SwiGLU({ dim, hiddenFeatures: hidden, bias: false, act: 'silu' }, init));
  }

  forward(input: DiffusionBlockInput, ctx: RunContext): tf.Tensor {
    const h = this.child('attnNorm').call(input.x, ctx) as tf.Tensor;
    const a = this.child('attn').call({ ...input.canvas, x: h }, ctx) as tf.Tensor;
    const x1 = tf.add(input.x, a);
    const m = this.child('mlp').call(this.child('mlpNorm').call(x1, ctx), ctx) as tf.Tensor;
    return tf.add(x1, m);
  }
}

/** Config of the block list (kind 'dllm.layers'). */
export interface DiffusionLayersConfig extends JsonObject {
  count: number;
  block: DiffusionBlockConfig;
}

/** The blocks '0'…'n−1' (kind 'dllm.layers'). DiffusionLM runs them itself (one tidy per block). */
export class DiffusionLayers extends Module<DiffusionBlockInput, tf.Tensor, DiffusionLayersConfig> {
  readonly kind = 'dllm.layers';

  constructor(config: DiffusionLayersConfig, init: InitContext) {
    if (!Number.isInteger(config.count) || config.count <= 0) throw new ConfigError(`dllm.layers: expected a positive integer count, found ${JSON.stringify(config.count)}`);
    super({ count: config.count, block: { ...config.block } });
    for (let i = 0; i < config.count; i++) this.addChild(String(i), new DiffusionBlock(this.config.block, init));
  }

  block(i: number): Module<DiffusionBlockInput, tf.Tensor> {
    return this.child(String(i));
  }

  forward(input: DiffusionBlockInput, ctx: RunContext): tf.Tensor {
    let h = input.x;
    for (let i = 0; i < this.config.count; i++) h = this.block(i).call({ x: h, canvas: { ...input.canvas, layer: i, store: input.canvas.store === undefined ? undefined : `${input.canvas.store}/${i}` } }, ctx);
    return h;
  }
}

/** What DiffusionLM's forward takes besides a plain int32 [B, L] tensor. */
export interface DiffusionLMInput {
  /** int32 ids of the whole canvas, [B, L]. */
  ids: tf.Tensor;
  /** Rows to compute, [start, end); default the whole canvas. Anything else needs `store`. */
  window?: { start: number; end: number };
  /** Left pads per sequence (the first real token of sequence b sits at canvas position pad[b]); default none. */
  pad?: ArrayLike<number>;
  /** K/V store prefix in `ctx.state`: layer i uses `${store}/${i}`. Absent: nothing is stored. */
  store?: string;
  /** The sampler's step, passed to every attention input. */
  step?: CanvasStep;
}

/** RoPE positions [B][L]: canvas position minus the sequence's pads (pads get 0). */
export function canvasPositions(pad: ArrayLike<number>, length: number): number[][] {
  return Array.from({ length: pad.length }, (_, b) => Array.from({ length }, (_, l) => Math.max(0, l - (pad[b] as number))));
}

/** Additive key mask [B, 1, 1, L] (`MASKED` on each sequence's left pads), or null when nothing is padded. */
export function canvasKeyMask(pad: ArrayLike<number>, length: number): tf.Tensor | null {
  let any = false;
  const m = new Float32Array(pad.length * length);
  for (let b = 0; b < pad.length; b++) {
    const p = pad[b] as number;
    if (p > 0) any = true;
    m.fill(MASKED, b * length, b * length + p);
  }
  return any ? tf.tensor4d(m, [pad.length, 1, 1, length]) : null;
}

/**
 * LLaDA-style masked-diffusion LM (kind 'dllm'): a bidirectional LLaMA (RMSNorm, RoPE, SwiGLU, no
 * biases, untied head) predicting every canvas position; `[MASK]` is an ordinary id (config.maskId).
 * Children: 'embed' (Embedding), 'layers' ('dllm.layers' of 'dllm.block'), 'norm' (RMSNorm), 'head'
 * (Linear). forward({ids [B, L], window?, pad?, store?, step?}) → logits [B, N, vocab] of the window rows.
 * Left pads are masked as keys and RoPE positions count from each sequence's first real token, so a
 * sequence's numbers do not depend on its batch.
 */
export class DiffusionLM extends Module<tf.Tensor | DiffusionLMInput, tf.Tensor, DiffusionLMConfig> {
  readonly kind = 'dllm';

  constructor(config: DiffusionLMConfigInput | DiffusionLMConfig, init: InitContext) {
    super(dllmConfig(config));
    const c = this.config;
    this.addChild('embed', new Embedding({ numEmbeddings: c.vocabSize, dim: c.dim }, init));
    const block: DiffusionBlockConfig = { dim: c.dim, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim, hidden: c.hidden, eps: c.eps, ropeTheta: c.ropeTheta };
    this.addChild('layers', new DiffusionLayers({ count: c.layers, block }, init));
    this.addChild('norm', new RMSNorm({ dim: c.dim, eps: c.eps }));
    this.addChild('head', new Linear({ inFeatures: c.dim, outFeatures: c.vocabSize, bias: false }, init));
  }

  get layers(): DiffusionLayers {
    return this.child<DiffusionLayers>('layers');
  }

  forward(input: tf.Tensor | DiffusionLMInput, ctx: RunContext): tf.Tensor {
    const inp: DiffusionLMInput = input instanceof tf.Tensor ? { ids: input } : input;
    const ids = inp.ids;
    if (ids.rank !== 2 || ids.dtype !== 'int32') throw new ConfigError(`dllm: expected int32 token ids [B, L], found ${ids.dtype} [${ids.shape.join(', ')}]`);
    const [B, L] = ids.shape as [number, number];
    const window = inp.window ?? { start: 0, end: L };
    if (!Number.isInteger(window.start) || !Number.isInteger(window.end) || window.start < 0 || window.end > L || window.start >= window.end) {
      throw new ConfigError(`dllm: expected a window [start, end) with 0 <= start < end <= ${L}, found [${window.start}, ${window.end})`);
    }
    const pad = inp.pad ?? new Int32Array(B);
    if (pad.length !== B) throw new ConfigError(`dllm: expected ${B} pad counts, found ${pad.length}`);
    for (let b = 0; b < B; b++) {
      const p = pad[b] as number;
      if (!Number.isInteger(p) || p < 0 || p >= L) throw new ConfigError(`dllm: expected pad counts in [0, ${L}), found ${p} for sequence ${b}`);
    }
    const N = window.end - window.start;
    const rows = window.start === 0 && window.end === L ? ids : tf.slice(ids, [0, window.start], [B, N]);
    let h = this.child('embed').call(rows, ctx) as tf.Tensor;
    if (rows !== ids) rows.dispose();
    const positions = canvasPositions(pad, L);
    const keyMask = canvasKeyMask(pad, L);
    const layers = this.layers;
    try {
      for (let i = 0; i < layers.config.count; i++) {
        const block = layers.block(i);
        const x = h;
        const canvas: Omit<CanvasAttentionInput, 'x'> = {
          window: { start: window.start, end: window.end },
          length: L,
          positions,
          keyMask,
          layer: i,
          ...(inp.store === undefined ? {} : { store: `${inp.store}/${i}` }),
          ...(inp.step === undefined ? {} : { step: inp.step }),
        };
        // One tidy per block: its temporaries go as soon as it returns (the tape keeps what backward needs).
        h = tf.tidy(() => block.call({ x, canvas }, ctx));
        x.dispose();
      }
    } finally {
      keyMask?.dispose();
    }
    const out = tf.tidy(() => this.child('head').call(this.child('norm').call(h, ctx), ctx) as tf.Tensor);
    h.dispose();
    return tf.reshape(out, [B, N, this.config.vocabSize]);
  }
}

/** A diffusion LM with the given config, initialised from `seed`. */
export function createDiffusionLM(config: DiffusionLMConfigInput | DiffusionLMConfig, opts: { seed?: number; init?: InitContext } = {}): DiffusionLM {
  const init = opts.init ?? { rng: new Rng(opts.seed ?? 0) };
  return constructModel(() => new DiffusionLM(config, init));
}

registry.register('dllm', (cfg, init) => new DiffusionLM(cfg as unknown as DiffusionLMConfig, init));
registry.register('dllm.layers', (cfg, init) => new DiffusionLayers(cfg as unknown as DiffusionLayersConfig, init));
registry.register('dllm.block', (cfg, init) => new DiffusionBlock(cfg as unknown as DiffusionBlockConfig, init));
