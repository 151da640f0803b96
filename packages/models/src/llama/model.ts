import * as tf from '@tensorflow/tfjs';
import { ConfigError, Module, Rng, registry, type InitContext, type JsonObject, type RunContext } from '@leanpass/core';
import { Attention, Embedding, Linear, RMSNorm, SwiGLU, dense, transposeLast2, type KV } from '@leanpass/nn';
import { llamaConfig, type LlamaConfig, type LlamaConfigInput } from './config.js';
import { fastBlockStep, fastPathApplies, gradientTapeActive } from './decode.js';
import { constructModel } from '../construct.js';

/** Keeps the extended K/V (outside any tidy) under `key`, freeing the ones it replaces. */
function storeCache(ctx: RunContext, key: string, past: KV | undefined, next: KV): void {
  tf.keep(next.k);
  tf.keep(next.v);
  if (past) {
    past.k.dispose();
    past.v.dispose();
  }
  ctx.state.set(key, next);
}

/** Config of one decoder block (kind 'llama.block'). */
export interface LlamaBlockConfig extends JsonObject {
  dim: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  hidden: number;
  eps: number;
  ropeTheta: number;
}

/** What a block takes besides a plain [B, T, dim] tensor: the ctx.state key of its K/V cache. */
export interface LlamaBlockInput {
  x: tf.Tensor;
  /** Read past K/V from, and write the extended K/V to, `ctx.state` under this key. */
  cacheKey?: string;
  /** Allow the batch-1 inference fast path (default true; see `LlamaInput.fast`). */
  fast?: boolean;
}

/** Cached K/V of one block: [B, kvHeads, P, headDim] each (RoPE already applied to k); both paths share it. */
export type LlamaLayerCache = KV;

export function llamaBlockConfig(c: LlamaConfig): LlamaBlockConfig {
  return {
    dim: c.hidden_size,
    heads: c.num_attention_heads,
    kvHeads: c.num_key_value_heads,
    headDim: c.head_dim,
    hidden: c.intermediate_size,
    eps: c.rms_norm_eps,
    ropeTheta: c.rope_theta,
  };
}

/**
 * One pre-norm LLaMA decoder block (kind 'llama.block'):
 *   x ← x + attn.o(causal-attention(RoPE(attn.q(n₁)), RoPE(attn.k(n₁)), attn.v(n₁))),  n₁ = attnNorm(x)
 *   x ← x + mlp.down(silu(mlp.gate(n₂)) ⊙ mlp.up(n₂)),                                n₂ = mlpNorm(x)
 * Children: 'attnNorm' (rmsnorm), 'attn' (nn's Attention: Linear 'q', 'k', 'v', 'o', no bias, causal,
 * rotate-half RoPE, GQA), 'mlpNorm' (rmsnorm), 'mlp' (SwiGLU: Linear 'gate', 'up', 'down').
 */
export class LlamaBlock extends Module<tf.Tensor | LlamaBlockInput, tf.Tensor, LlamaBlockConfig> {
  readonly kind = 'llama.block';

  constructor(config: LlamaBlockConfig, init: InitContext) {
    super({ ...config });
    const { dim, heads, kvHeads, headDim, hidden, eps, ropeTheta } = this.config;
    this.addChild('attnNorm', new RMSNorm({ dim, eps }));
    this.addChild('attn', new Attention({ dim, heads, kvHeads, headDim, bias: false, causal: true, rope: { base: ropeTheta } }, init));
    this.addChild('mlpNorm', new RMSNorm({ dim, eps }));
    this.addChild('mlp', new SwiGLU({ dim, hiddenFeatures: hidden, bias: false, act: 'silu' }, init));
  }

  forward(input: tf.Tensor | LlamaBlockInput, ctx: RunContext): tf.Tensor {
    const inp: LlamaBlockInput = input instanceof tf.Tensor ? { x: input } : input;
    const x = inp.x;
    if (inp.cacheKey !== undefined && inp.fast !== false && x.shape[0] === 1 && !gradientTapeActive()) {
      const attn = this.child('attn');
      if (fastPathApplies(attn, ctx)) return this.fastStep(x, attn, ctx, inp.cacheKey);
    }
    const h = this.child('attnNorm').call(x, ctx) as tf.Tensor;
    const a = inp.cacheKey === undefined ? (this.child('attn').call(h, ctx) as tf.Tensor) : this.cachedAttention(h, ctx, inp.cacheKey);
    const x1 = tf.add(x, a);
    const m = this.child('mlp').call(this.child('mlpNorm').call(x1, ctx), ctx) as tf.Tensor;
    return tf.add(x1, m);
  }

  /**
   * The batch-1 inference path (no gradient tape; see decode.ts): the same function with far fewer
   * ops, on the same cache layout as the general path.
   */
  private fastStep(x: tf.Tensor, attn: Attention, ctx: RunContext, key: string): tf.Tensor {
    const [, N, d] = x.shape as [number, number, number];
    const past = ctx.state.get<LlamaLayerCache>(key);
    if (past && past.k.shape[0] !== 1) throw new ConfigError(`llama.block: the cache '${key}' holds ${past.k.shape[0]} sequences, the input has 1`);
    const { y, cache } = fastBlockStep({ attnNorm: this.child('attnNorm'), attn, mlpNorm: this.child('mlpNorm'), mlp: this.child('mlp') }, tf.reshape<tf.Rank.R2>(x, [N, d]), past, ctx);
    storeCache(ctx, key, past, cache);
    return tf.reshape(y, [1, N, d]);
  }

  /**
   * Attention over the cached keys plus the new ones; the new tokens take positions P…P+N−1 (P =
   * cached length). Stores the extended K/V (kept, outside any tidy) and frees the previous ones.
   */
  private cachedAttention(h: tf.Tensor, ctx: RunContext, key: string): tf.Tensor {
    const attn = this.child('attn');
    if (!(attn instanceof Attention)) {
      throw new ConfigError(`llama.block: a K/V cache needs the 'attn' child to be an Attention (kind 'attention'), found kind '${attn.kind}'`);
    }
    const [B, N] = h.shape as [number, number, number];
    const past = ctx.state.get<LlamaLayerCache>(key);
    if (past && past.k.shape[0] !== B) throw new ConfigError(`llama.block: the cache '${key}' holds ${past.k.shape[0]} sequences, the input has ${B}`);
    const P = past ? (past.k.shape[2] as number) : 0;
    const positions = Array.from({ length: N }, (_, i) => P + i);
    const q = attn.projectQ(h, ctx, positions);
    const fresh = attn.projectKV(h, ctx, positions);
    const kv: KV = past ? { k: tf.concat([past.k, fresh.k], 2), v: tf.concat([past.v, fresh.v], 2) } : fresh;
    const out = attn.child('o').call(attn.attend(q, kv), ctx) as tf.Tensor;
    storeCache(ctx, key, past, kv);
    return out;
  }
}

/** Config of the block list (kind 'llama.layers'). */
export interface LlamaLayersConfig extends JsonObject {
  count: number;
  block: LlamaBlockConfig;
}

/** The decoder blocks '0'…'n−1' (kind 'llama.layers'); its forward applies them in order. */
export class LlamaLayers extends Module<tf.Tensor, tf.Tensor, LlamaLayersConfig> {
  readonly kind = 'llama.layers';

  constructor(config: LlamaLayersConfig, init: InitContext) {
    if (!Number.isInteger(config.count) || config.count <= 0) throw new ConfigError(`llama.layers: expected a positive integer count, found ${JSON.stringify(config.count)}`);
    super({ count: config.count, block: { ...config.block } });
    for (let i = 0; i < config.count; i++) this.addChild(String(i), new LlamaBlock(this.config.block, init));
  }

  block(i: number): Module<tf.Tensor | LlamaBlockInput, tf.Tensor> {
    return this.child(String(i));
  }

  forward(x: tf.Tensor, ctx: RunContext): tf.Tensor {
    let h = x;
    for (let i = 0; i < this.config.count; i++) h = this.block(i).call(h, ctx);
    return h;
  }
}

/** The root's input: token ids plus, for incremental decoding, the ctx.state key of the K/V cache. */
export interface LlamaInput {
  /** int32 token ids [B, T]. */
  ids: tf.Tensor;
  /**
   * Use and extend the K/V cache kept in `ctx.state` (true: key `LLAMA_CACHE_KEY`; a string: that
   * key). The new tokens follow the cached ones (RoPE positions P…P+T−1). The cache lives in the
   * context's StateStore (one per generation) and is freed by `ctx.state.dispose()`.
   */
  cache?: boolean | string;
  /**
   * With a cache at batch 1 and no gradient tape recording, run the blocks' inference fast path
   * (decode.ts: fused norms, RoPE from per-step tables, attention for all heads in two matMuls over
   * nn's cache layout). Default true; false forces the general (differentiable) layers. Both compute
   * the same function (float32 summation-order noise) and share the cache.
   */
  fast?: boolean;
}

export const LLAMA_CACHE_KEY = 'llama.kv';

/** Cached length (tokens per sequence) under a cache key of `ctx.state`; 0 when there is none. */
export function llamaCacheLength(ctx: RunContext, key = LLAMA_CACHE_KEY): number {
  const first = ctx.state.get<LlamaLayerCache>(`${key}/0`);
  return first ? (first.k.shape[2] as number) : 0;
}

/**
 * LLaMA-architecture decoder (kind 'llama'), Hugging Face `LlamaForCausalLM` semantics: int32 ids
 * [B, T] → logits [B, T, vocab]. Children: 'embed' (Embedding), 'layers' ('llama.layers' holding
 * 'llama.block's '0'…), 'norm' (RMSNorm), 'head' (Linear, no bias; absent with tied embeddings, when
 * the logits are h·embedᵀ). Linear paths: `layers.{i}.attn.{q,k,v,o}`, `layers.{i}.mlp.{gate,up,down}`,
 * `head`. Weights are [in, out] (HF's transposed).
 */
export class Llama extends Module<tf.Tensor | LlamaInput, tf.Tensor, LlamaConfig> {
  readonly kind = 'llama';

  constructor(config: LlamaConfigInput | LlamaConfig, init: InitContext) {
    super(llamaConfig(config));
    const c = this.config;
    this.addChild('embed', new Embedding({ numEmbeddings: c.vocab_size, dim: c.hidden_size }, init));
    this.addChild('layers', new LlamaLayers({ count: c.num_hidden_layers, block: llamaBlockConfig(c) }, init));
    this.addChild('norm', new RMSNorm({ dim: c.hidden_size, eps: c.rms_norm_eps }));
    if (!c.tie_word_embeddings) this.addChild('head', new Linear({ inFeatures: c.hidden_size, outFeatures: c.vocab_size, bias: false }, init));
  }

  get layers(): LlamaLayers {
    return this.child<LlamaLayers>('layers');
  }

  /** Final hidden states [B, T, hidden] (after the last RMSNorm). */
  hidden(input: tf.Tensor | LlamaInput, ctx: RunContext): tf.Tensor {
    const inp: LlamaInput = input instanceof tf.Tensor ? { ids: input } : input;
    const ids = inp.ids;
    if (ids.rank !== 2 || ids.dtype !== 'int32') {
      throw new ConfigError(`llama: expected int32 token ids [B, T], found ${ids.dtype} [${ids.shape.join(', ')}]`);
    }
    let h = this.child('embed').call(ids, ctx) as tf.Tensor;
    const layers = this.layers;
    const key = inp.cache === undefined || inp.cache === false ? undefined : inp.cache === true ? LLAMA_CACHE_KEY : inp.cache;
    if (key !== undefined && !ctx.state.has(key)) {
      ctx.state.set(key, true);
      const n = this.config.num_hidden_layers;
      ctx.state.onDispose(() => {
        for (let i = 0; i < n; i++) {
          const kv = ctx.state.get<LlamaLayerCache>(`${key}/${i}`);
          kv?.k.dispose();
          kv?.v.dispose();
        }
      });
    }
    for (let i = 0; i < layers.config.count; i++) {
      const block = layers.block(i);
      const x = h;
      // One tidy per block: its temporaries go as soon as it returns (the tape keeps what backward needs).
      h = tf.tidy(() => block.call(key === undefined ? x : { x, cacheKey: `${key}/${i}`, ...(inp.fast === false ? { fast: false } : {}) }, ctx));
      if (i > 0) x.dispose();
    }
    return this.child('norm').call(h, ctx) as tf.Tensor;
  }

  forward(input: tf.Tensor | LlamaInput, ctx: RunContext): tf.Tensor {
    const h = this.hidden(input, ctx);
    const [B, T, d] = h.shape as [number, number, number];
    let logits: tf.Tensor;
    if (this.config.tie_word_embeddings) {
      const w = this.child('embed').param('weight').variable;
      logits = dense(tf.reshape(h, [B * T, d]), transposeLast2(w));
    } else {
      logits = this.child('head').call(h, ctx) as tf.Tensor;
    }
    return tf.reshape(logits, [B, T, this.config.vocab_size]);
  }
}

/** A LLaMA with the given config (HF field names), initialised from `seed`. */
export function createLlama(config: LlamaConfigInput | LlamaConfig, opts: { seed?: number; init?: InitContext } = {}): Llama {
  const init = opts.init ?? { rng: new Rng(opts.seed ?? 0) };
  return constructModel(() => new Llama(config, init));
}

registry.register('llama', (cfg, init) => new Llama(cfg as unknown as LlamaConfig, init));
registry.register('llama.layers', (cfg, init) => new LlamaLayers(cfg as unknown as LlamaLayersConfig, init));
registry.register('llama.block', (cfg, init) => new LlamaBlock(cfg as unknown as LlamaBlockConfig, init));
