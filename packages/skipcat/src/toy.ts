import * as tf from '@tensorflow/tfjs';
import { ConfigError, Module, Rng, createRunContext, type InitContext, type JsonObject, type ModuleRegistry, type RunContext } from '@leanpass/core';
import { Attention, Embedding, Linear, RMSNorm, SwiGLU, type KV } from '@leanpass/nn';

/**
 * A LLaMA-shaped decoder built only from @leanpass/nn layers (kinds 'skipcat.toy-lm' and
 * 'skipcat.toy-block'): embedding → L × (RMSNorm → causal RoPE GQA attention (q, k, v, o) →
 * residual; RMSNorm → SwiGLU (gate, up, down) → residual) → RMSNorm → untied head. No biases.
 * It stands in for the LLaMA host in this package's tests and for the SmolLM-135M-shaped decode
 * timing (random weights: speed does not depend on the values).
 */
export interface ToyLmConfig extends JsonObject {
  vocab: number;
  dim: number;
  layers: number;
  heads: number;
  kvHeads: number;
  hidden: number;
  ropeBase: number;
}

export interface ToyBlockConfig extends JsonObject {
  dim: number;
  heads: number;
  kvHeads: number;
  hidden: number;
  ropeBase: number;
}

/** Per-layer K/V caches for batch-1 decoding. */
export type ToyCache = Array<KV | undefined>;

export class ToyBlock extends Module<tf.Tensor | { x: tf.Tensor; past?: KV; onKV?: (kv: KV) => void }, tf.Tensor, ToyBlockConfig> {
  readonly kind = 'skipcat.toy-block';
  constructor(config: ToyBlockConfig, init: InitContext) {
    super({ ...config });
    const { dim, heads, kvHeads, hidden, ropeBase } = config;
    this.addChild('norm1', new RMSNorm({ dim, eps: 1e-5 }));
    this.addChild('attn', new Attention({ dim, heads, kvHeads, bias: false, causal: true, rope: { base: ropeBase } }, init));
    this.addChild('norm2', new RMSNorm({ dim, eps: 1e-5 }));
    this.addChild('mlp', new SwiGLU({ dim, hiddenFeatures: hidden, act: 'silu', bias: false }, init));
  }

  forward(input: tf.Tensor | { x: tf.Tensor; past?: KV; onKV?: (kv: KV) => void }, ctx: RunContext): tf.Tensor {
    const inp = input instanceof tf.Tensor ? { x: input } : input;
    const x = inp.x;
    const attn = this.child<Attention>('attn');
    const h = this.child('norm1').call(x, ctx) as tf.Tensor;
    let a: tf.Tensor;
    if (inp.onKV) {
      // Decoding: project, append to the cache, attend (what Attention.forward does, exposing K/V).
      const P = inp.past ? (inp.past.k.shape[2] as number) : 0;
      const N = x.shape[1] as number;
      const pos = Array.from({ length: N }, (_, i) => P + i);
      const q = attn.projectQ(h, ctx, pos);
      let kv = attn.projectKV(h, ctx, pos);
      if (inp.past) kv = { k: tf.concat([inp.past.k, kv.k], 2), v: tf.concat([inp.past.v, kv.v], 2) };
      inp.onKV(kv);
      a = attn.child('o').call(attn.attend(q, kv), ctx) as tf.Tensor;
    } else a = attn.call(h, ctx);
    const x1 = tf.add(x, a);
    return tf.add(x1, this.child('mlp').call(this.child('norm2').call(x1, ctx) as tf.Tensor, ctx) as tf.Tensor);
  }
}

export class ToyLm extends Module<tf.Tensor, tf.Tensor, ToyLmConfig> {
  readonly kind = 'skipcat.toy-lm';
  constructor(config: ToyLmConfig, init: InitContext) {
    for (const k of ['vocab', 'dim', 'layers', 'heads', 'kvHeads', 'hidden', 'ropeBase'] as const) {
      const v = config[k];
      if (typeof v !== 'number' || !(v > 0)) throw new ConfigError(`skipcat.toy-lm: expected config.${k} > 0, found ${JSON.stringify(v)}`);
    }
    super({ ...config });
    const { vocab, dim, layers, heads, kvHeads, hidden, ropeBase } = config;
    this.addChild('embed', new Embedding({ numEmbeddings: vocab, dim }, init));
    for (let i = 0; i < layers; i++) this.addChild(`layer${i}`, new ToyBlock({ dim, heads, kvHeads, hidden, ropeBase }, init));
    this.addChild('norm', new RMSNorm({ dim, eps: 1e-5 }));
    this.addChild('head', new Linear({ inFeatures: dim, outFeatures: vocab, bias: false }, init));
  }

  /** Logits [B, T, vocab] from int32 ids [B, T]. */
  forward(ids: tf.Tensor, ctx: RunContext): tf.Tensor {
    let x = this.child('embed').call(ids, ctx) as tf.Tensor;
    for (let i = 0; i < this.config.layers; i++) x = this.child(`layer${i}`).call(x, ctx) as tf.Tensor;
    return this.child('head').call(this.child('norm').call(x, ctx) as tf.Tensor, ctx) as tf.Tensor;
  }

  /**
   * One decoding step: ids [1, N] after the cached positions → logits [1, N, vocab]; `cache` is
   * updated in place (old entries disposed, new ones kept). Run it inside tf.tidy.
   */
  step(ids: tf.Tensor, cache: ToyCache, ctx: RunContext): tf.Tensor {
    let x = this.child('embed').call(ids, ctx) as tf.Tensor;
    for (let i = 0; i < this.config.layers; i++) {
      const past = cache[i];
      x = this.child<ToyBlock>(`layer${i}`).call(
        {
          x,
          ...(past ? { past } : {}),
          onKV: (kv: KV) => {
            cache[i] = { k: tf.keep(kv.k), v: tf.keep(kv.v) };
          },
        },
        ctx,
      );
      if (past) {
        past.k.dispose();
        past.v.dispose();
      }
    }
    return this.child('head').call(this.child('norm').call(x, ctx) as tf.Tensor, ctx) as tf.Tensor;
  }
}

export function registerToyKinds(reg: ModuleRegistry): void {
  reg.register('skipcat.toy-lm', toyLmFactory);
  reg.register('skipcat.toy-block', toyBlockFactory);
}
function toyLmFactory(c: JsonObject, init: InitContext): ToyLm {
  return new ToyLm(c as ToyLmConfig, init);
}
function toyBlockFactory(c: JsonObject, init: InitContext): ToyBlock {
  return new ToyBlock(c as ToyBlockConfig, init);
}

/** A seeded toy LM. */
export function makeToyLm(config: ToyLmConfig, seed: number): ToyLm {
  let m: ToyLm | undefined;
  tf.tidy(() => {
    m = new ToyLm(config, { rng: new Rng(seed) });
  });
  return m as ToyLm;
}

/** Frees a decode cache. */
export function disposeCache(cache: ToyCache): void {
  for (const kv of cache) {
    kv?.k.dispose();
    kv?.v.dispose();
  }
  cache.length = 0;
}

/** Seeded calibration batches of random token ids (for tests and timing; real calibration uses text). */
export function randomIdBatches(vocab: number, batches: number, batchSize: number, seqLen: number, seed: number): { batches(): AsyncIterable<tf.Tensor>; sampleCap: number } {
  return {
    sampleCap: batches * batchSize,
    batches: async function* () {
      const rng = new Rng(seed);
      for (let b = 0; b < batches; b++) {
        const ids = new Int32Array(batchSize * seqLen);
        for (let i = 0; i < ids.length; i++) ids[i] = rng.int(vocab);
        await Promise.resolve();
        const t = tf.tensor2d(ids, [batchSize, seqLen], 'int32');
        try {
          yield t;
        } finally {
          t.dispose();
        }
      }
    },
  };
}

/** Runs `fn` with a fresh eval context. */
export function evalCtx(): RunContext {
  return createRunContext({ mode: 'eval', seed: 0 });
}
