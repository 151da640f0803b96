/**
 * A small ViT-like host built from nn modules, for the pass tests (the real host lives in
 * @leanpass/models): tokens [B, E + H·W, inDim] → embed (linear, not on a grid) → blocks
 * (kind 'lbp-test.block', config.grid / config.extraTokens; pre-norm attention + MLP) → mean over
 * tokens → head (linear, not on a grid).
 */
import * as tf from '@tensorflow/tfjs';
import { Module, Rng, registry, type InitContext, type JsonObject, type RunContext } from '@leanpass/core';
import { Attention, Conv2d, LayerNorm, Linear, Mlp } from '@leanpass/nn';

export interface TestNetConfig extends JsonObject {
  inDim: number;
  dim: number;
  heads: number;
  depth: number;
  /** Not named `grid`: the root is not on a grid (its head sees pooled features). */
  tokenGrid: [number, number];
  extraTokens: number;
  classes: number;
}

export class TestBlock extends Module<tf.Tensor, tf.Tensor, { dim: number; heads: number; grid: [number, number]; extraTokens: number }> {
  readonly kind = 'lbp-test.block';
  constructor(config: { dim: number; heads: number; grid: [number, number]; extraTokens: number }, init: InitContext) {
    super({ ...config });
    this.addChild('norm1', new LayerNorm({ dim: config.dim }));
    this.addChild('attn', new Attention({ dim: config.dim, heads: config.heads }, init));
    this.addChild('norm2', new LayerNorm({ dim: config.dim }));
    this.addChild('mlp', new Mlp({ inFeatures: config.dim, hiddenFeatures: 2 * config.dim }, init));
  }
  forward(x: tf.Tensor, ctx: RunContext): tf.Tensor {
    const h = tf.add(x, this.child('attn').call(this.child('norm1').call(x, ctx), ctx) as tf.Tensor);
    return tf.add(h, this.child('mlp').call(this.child('norm2').call(h, ctx), ctx) as tf.Tensor);
  }
}

/** Root config: no grid here (the head is not on a grid); the blocks carry it. */
export class TestNet extends Module<tf.Tensor, tf.Tensor, TestNetConfig> {
  readonly kind = 'lbp-test.net';
  constructor(config: TestNetConfig, init: InitContext) {
    super({ ...config, tokenGrid: [config.tokenGrid[0], config.tokenGrid[1]] });
    this.addChild('embed', new Linear({ inFeatures: config.inDim, outFeatures: config.dim }, init));
    for (let i = 0; i < config.depth; i++) {
      this.addChild(`b${i}`, new TestBlock({ dim: config.dim, heads: config.heads, grid: [config.tokenGrid[0], config.tokenGrid[1]], extraTokens: config.extraTokens }, init));
    }
    this.addChild('norm', new LayerNorm({ dim: config.dim }));
    this.addChild('head', new Linear({ inFeatures: config.dim, outFeatures: config.classes }, init));
  }
  forward(x: tf.Tensor, ctx: RunContext): tf.Tensor {
    let h = this.child('embed').call(x, ctx) as tf.Tensor;
    for (let i = 0; i < this.config.depth; i++) h = this.child(`b${i}`).call(h, ctx) as tf.Tensor;
    const pooled = tf.mean(this.child('norm').call(h, ctx) as tf.Tensor, 1);
    return this.child('head').call(pooled, ctx) as tf.Tensor;
  }
}

/** A map model: NHWC → 1×1 conv (rewritten) → 3×3 conv (left alone) → mean → [B, C]. */
export class TestConvNet extends Module<tf.Tensor, tf.Tensor, { channels: number }> {
  readonly kind = 'lbp-test.convnet';
  constructor(config: { channels: number }, init: InitContext) {
    super({ ...config });
    this.addChild('pw', new Conv2d({ inChannels: config.channels, outChannels: 2 * config.channels, kernelSize: 1 }, init));
    this.addChild('spatial', new Conv2d({ inChannels: 2 * config.channels, outChannels: config.channels, kernelSize: 3 }, init));
  }
  forward(x: tf.Tensor, ctx: RunContext): tf.Tensor {
    return tf.mean(this.child('spatial').call(this.child('pw').call(x, ctx), ctx) as tf.Tensor, [1, 2]);
  }
}

export const TEST_NET: TestNetConfig = { inDim: 6, dim: 16, heads: 2, depth: 2, tokenGrid: [8, 8], extraTokens: 1, classes: 3 };

export function makeTestNet(seed: number, cfg: Partial<TestNetConfig> = {}): TestNet {
  return new TestNet({ ...TEST_NET, ...cfg } as TestNetConfig, { rng: new Rng(seed) });
}

if (!registry.has('lbp-test.block')) registry.register('lbp-test.block', (cfg, init) => new TestBlock(cfg as unknown as ConstructorParameters<typeof TestBlock>[0], init));
if (!registry.has('lbp-test.net')) registry.register('lbp-test.net', (cfg, init) => new TestNet(cfg as unknown as TestNetConfig, init));
if (!registry.has('lbp-test.convnet')) registry.register('lbp-test.convnet', (cfg, init) => new TestConvNet(cfg as unknown as { channels: number }, init));
