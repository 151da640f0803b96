/**
 * ViT-tiny: the two-stage vision transformer host of @leanpass/lbp-wht (data-and-models.md §2.1).
 *
 *   x [B, 28, 28, 1] → zero-pad to 32×32 → 2×2 patch embed (linear 4 → 48) → 16×16 grid
 *   → stage1: 2 blocks, token mixer avg3×3(LN x) − LN x (PoolFormer), MLP ×4
 *   → 2×2 patch merge (LN, linear 192 → 96) → 8×8 grid
 *   → stage2: 2 blocks, 4-head self-attention, MLP ×4
 *   → LN → mean over tokens → linear head
 *
 * Tokens between modules are [B, H·W, C], row-major over the grid. Every module that owns linears on a
 * grid carries `grid: [H, W]` and `extraTokens: 0` in its config: the grid of a linear is the `grid` of
 * its nearest ancestor that has one (see {@link tokenGridOf}); the head (pooled input) has none.
 */
import * as tf from '@tensorflow/tfjs';
import { ConfigError, Module, Rng, registry, type AnyModule, type FlopCount, type InitContext, type JsonObject, type JsonValue, type RunContext } from '@leanpass/core';
import { Attention, LayerNorm, Linear, Mlp, gradientTapeActive, untaped } from '@leanpass/nn';
import { patchify, poolMix } from './ops.js';

export type VitMixer = 'pool' | 'attention';
const MIXERS: readonly VitMixer[] = ['pool', 'attention'];

// ---------------------------------------------------------------- config checks

function intAt(kind: string, cfg: JsonObject, key: string, min = 1): number {
  const v = cfg[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new ConfigError(`${kind}: expected config.${key} to be an integer ≥ ${min}, found ${JSON.stringify(v)}`);
  return v;
}

function numOr(kind: string, cfg: JsonObject, key: string, dflt: number): number {
  const v = cfg[key];
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new ConfigError(`${kind}: expected config.${key} to be a positive number, found ${JSON.stringify(v)}`);
  return v;
}

function gridAt(kind: string, cfg: JsonObject, key: string): [number, number] {
  const v = cfg[key];
  if (!Array.isArray(v) || v.length !== 2 || !v.every((d) => typeof d === 'number' && Number.isInteger(d) && d >= 1)) {
    throw new ConfigError(`${kind}: expected config.${key} to be a grid [H, W] of positive integers, found ${JSON.stringify(v)}`);
  }
  return [v[0] as number, v[1] as number];
}

function mixerAt(kind: string, cfg: JsonObject, key: string): VitMixer {
  const v = cfg[key];
  if (typeof v !== 'string' || !(MIXERS as readonly string[]).includes(v)) throw new ConfigError(`${kind}: expected config.${key} to be one of ${MIXERS.join(', ')}, found ${JSON.stringify(v)}`);
  return v as VitMixer;
}

function intPair(kind: string, cfg: JsonObject, key: string, dflt: [number, number]): [number, number] {
  const v = cfg[key] ?? dflt;
  if (!Array.isArray(v) || v.length !== 2 || !v.every((d) => typeof d === 'number' && Number.isInteger(d) && d >= 1)) {
    throw new ConfigError(`${kind}: expected config.${key} to be two positive integers, found ${JSON.stringify(v)}`);
  }
  return [v[0] as number, v[1] as number];
}

function checkTokens(kind: string, x: tf.Tensor, grid: readonly [number, number], dim: number): [number, number, number] {
  const n = grid[0] * grid[1];
  if (x.rank !== 3 || x.shape[1] !== n || x.shape[2] !== dim) {
    throw new ConfigError(`${kind}: expected tokens [B, ${n}, ${dim}] on a ${grid[0]}×${grid[1]} grid, found [${x.shape.join(', ')}]`);
  }
  return x.shape as [number, number, number];
}

// ---------------------------------------------------------------- patch embedding

export interface VitPatchEmbedConfig extends JsonObject {
  inChannels: number;
  patchSize: number;
  dim: number;
  /** Token grid of the output and of `proj`'s input. */
  grid: [number, number];
  extraTokens: number;
}

/**
 * Non-overlapping p×p patch embedding as reshape + linear (kind 'vit.patch-embed'): image
 * [B, H·p, W·p, Cin] → tokens [B, H·W, dim]. Child `proj` (linear p·p·Cin → dim) sees [B, H·W, p·p·Cin],
 * features ordered (dy, dx, c).
 */
export class VitPatchEmbed extends Module<tf.Tensor, tf.Tensor, VitPatchEmbedConfig> {
  readonly kind = 'vit.patch-embed';
  constructor(config: { inChannels: number; patchSize: number; dim: number; grid: [number, number] }, init: InitContext) {
    const cfg = config as unknown as JsonObject;
    const k = 'vit.patch-embed';
    const inChannels = intAt(k, cfg, 'inChannels');
    const patchSize = intAt(k, cfg, 'patchSize');
    const dim = intAt(k, cfg, 'dim');
    const grid = gridAt(k, cfg, 'grid');
    super({ inChannels, patchSize, dim, grid, extraTokens: 0 });
    this.addChild('proj', new Linear({ inFeatures: patchSize * patchSize * inChannels, outFeatures: dim }, init));
  }
  forward(x: tf.Tensor, ctx: RunContext): tf.Tensor {
    const { patchSize: p, inChannels, grid } = this.config;
    if (x.rank !== 4 || x.shape[1] !== grid[0] * p || x.shape[2] !== grid[1] * p || x.shape[3] !== inChannels) {
      throw new ConfigError(`vit.patch-embed: expected images [B, ${grid[0] * p}, ${grid[1] * p}, ${inChannels}], found [${x.shape.join(', ')}]`);
    }
    return this.child('proj').call(patchify(x, p), ctx) as tf.Tensor;
  }
}

// ---------------------------------------------------------------- pooling mixer

export interface VitPoolMixerConfig extends JsonObject {
  grid: [number, number];
  extraTokens: number;
}

/** PoolFormer token mixer avg3×3(t) − t over the grid (kind 'vit.pool-mixer'; no parameters). */
export class VitPoolMixer extends Module<tf.Tensor, tf.Tensor, VitPoolMixerConfig> {
  readonly kind = 'vit.pool-mixer';
  constructor(config: { grid: [number, number] }) {
    const grid = gridAt('vit.pool-mixer', config, 'grid');
    super({ grid, extraTokens: 0 });
  }
  forward(t: tf.Tensor, _ctx: RunContext): tf.Tensor {
    return poolMix(t, this.config.grid);
  }
  override flops(t: tf.Tensor): FlopCount {
    // 4 adds (separable box sum), 1 scale, 1 subtract per element; the backward is the same operator.
    return { forward: 6 * t.size, backward: 6 * t.size };
  }
}

// ---------------------------------------------------------------- block

export interface VitBlockConfig extends JsonObject {
  dim: number;
  mixer: VitMixer;
  /** Attention heads (used when mixer = 'attention'). */
  heads: number;
  mlpRatio: number;
  /** Token grid of every linear inside the block. */
  grid: [number, number];
  extraTokens: number;
  eps: number;
}

export interface VitBlockOptions {
  dim: number;
  mixer: VitMixer;
  heads?: number;
  mlpRatio?: number;
  grid: [number, number];
  eps?: number;
}

/**
 * Pre-norm block (kind 'vit.block'): x += mixer(norm1 x); x += mlp(norm2 x). Children 'norm1', 'mixer'
 * (vit.pool-mixer) or 'attn' (attention, q/k/v/o linears), 'norm2', 'mlp' (fc1 → GELU → fc2).
 */
export class VitBlock extends Module<tf.Tensor, tf.Tensor, VitBlockConfig> {
  readonly kind = 'vit.block';
  constructor(options: VitBlockOptions, init: InitContext) {
    const cfg = options as unknown as JsonObject;
    const k = 'vit.block';
    const dim = intAt(k, cfg, 'dim');
    const mixer = mixerAt(k, cfg, 'mixer');
    const heads = cfg['heads'] === undefined ? 1 : intAt(k, cfg, 'heads');
    const mlpRatio = numOr(k, cfg, 'mlpRatio', 4);
    const grid = gridAt(k, cfg, 'grid');
    const eps = numOr(k, cfg, 'eps', 1e-5);
    const hidden = Math.round(dim * mlpRatio);
    if (mixer === 'attention' && dim % heads !== 0) throw new ConfigError(`vit.block: dim ${dim} is not divisible by heads ${heads}`);
    super({ dim, mixer, heads, mlpRatio, grid, extraTokens: 0, eps });
    this.addChild('norm1', new LayerNorm({ dim, eps }));
    if (mixer === 'pool') this.addChild('mixer', new VitPoolMixer({ grid }));
    else this.addChild('attn', new Attention({ dim, heads }, init));
    this.addChild('norm2', new LayerNorm({ dim, eps }));
    this.addChild('mlp', new Mlp({ inFeatures: dim, hiddenFeatures: hidden, act: 'gelu' }, init));
  }
  forward(x: tf.Tensor, ctx: RunContext): tf.Tensor {
    checkTokens('vit.block', x, this.config.grid, this.config.dim);
    const mix = this.child(this.config.mixer === 'pool' ? 'mixer' : 'attn');
    const h = tf.add(x, mix.call(this.child('norm1').call(x, ctx), ctx) as tf.Tensor);
    return tf.add(h, this.child('mlp').call(this.child('norm2').call(h, ctx), ctx) as tf.Tensor);
  }
  override flops(x: tf.Tensor): FlopCount {
    // the two residual adds
    return { forward: 2 * x.size, backward: 0 };
  }
}

// ---------------------------------------------------------------- stage

export interface VitStageConfig extends JsonObject {
  dim: number;
  depth: number;
  mixer: VitMixer;
  heads: number;
  mlpRatio: number;
  grid: [number, number];
  extraTokens: number;
  eps: number;
}

/**
 * A stack of `depth` blocks on one grid (kind 'vit.stage'), children '0' … 'depth−1'. Each block runs in
 * its own tf.tidy so only its output stays alive between blocks (runtime-notes §4).
 */
export class VitStage extends Module<tf.Tensor, tf.Tensor, VitStageConfig> {
  readonly kind = 'vit.stage';
  constructor(options: VitBlockOptions & { depth: number }, init: InitContext) {
    const cfg = options as unknown as JsonObject;
    const depth = intAt('vit.stage', cfg, 'depth');
    const first = new VitBlock(options, init);
    super({ ...first.config, depth });
    this.addChild('0', first);
    for (let i = 1; i < depth; i++) this.addChild(String(i), new VitBlock(options, init));
  }
  forward(x: tf.Tensor, ctx: RunContext): tf.Tensor {
    let h = x;
    for (let i = 0; i < this.config.depth; i++) {
      const input = h;
      h = tf.tidy(() => this.child(String(i)).call(input, ctx) as tf.Tensor);
    }
    return h;
  }
}

// ---------------------------------------------------------------- patch merge

export interface VitPatchMergeConfig extends JsonObject {
  inDim: number;
  outDim: number;
  /** Grid of the input tokens. */
  inGrid: [number, number];
  /** Grid of the output tokens and of `norm`/`reduction`'s input (inGrid / 2). */
  grid: [number, number];
  extraTokens: number;
  eps: number;
}

/**
 * Swin-style 2×2 patch merging (kind 'vit.patch-merge'): [B, H·W, C] → concat of each 2×2 neighbourhood
 * [B, (H/2)(W/2), 4C] → LN ('norm') → linear 4C → outDim ('reduction', with bias).
 */
export class VitPatchMerge extends Module<tf.Tensor, tf.Tensor, VitPatchMergeConfig> {
  readonly kind = 'vit.patch-merge';
  constructor(options: { inDim: number; outDim: number; inGrid: [number, number]; eps?: number }, init: InitContext) {
    const cfg = options as unknown as JsonObject;
    const k = 'vit.patch-merge';
    const inDim = intAt(k, cfg, 'inDim');
    const outDim = intAt(k, cfg, 'outDim');
    const inGrid = gridAt(k, cfg, 'inGrid');
    const eps = numOr(k, cfg, 'eps', 1e-5);
    if (inGrid[0] % 2 !== 0 || inGrid[1] % 2 !== 0) throw new ConfigError(`vit.patch-merge: expected an even input grid, found ${inGrid[0]}×${inGrid[1]}`);
    super({ inDim, outDim, inGrid, grid: [inGrid[0] / 2, inGrid[1] / 2], extraTokens: 0, eps });
    this.addChild('norm', new LayerNorm({ dim: 4 * inDim, eps }));
    this.addChild('reduction', new Linear({ inFeatures: 4 * inDim, outFeatures: outDim }, init));
  }
  forward(x: tf.Tensor, ctx: RunContext): tf.Tensor {
    const { inGrid, inDim } = this.config;
    const [B] = checkTokens('vit.patch-merge', x, inGrid, inDim);
    const merged = patchify(tf.reshape(x, [B, inGrid[0], inGrid[1], inDim]), 2);
    return this.child('reduction').call(this.child('norm').call(merged, ctx), ctx) as tf.Tensor;
  }
}

// ---------------------------------------------------------------- model

export interface ViTConfig extends JsonObject {
  /** Side of the input images (28 for Fashion-MNIST); they are zero-padded to `inputSize`. */
  imageSize: number;
  /** Side after zero padding (32); a multiple of patchSize · 2. Inputs of this size are used as they are. */
  inputSize: number;
  inChannels: number;
  patchSize: number;
  /** Widths of stage 1 and stage 2. */
  dims: [number, number];
  /** Blocks per stage. */
  depths: [number, number];
  /** Token mixer per stage. */
  mixers: [VitMixer, VitMixer];
  /** Heads of the attention stages. */
  heads: number;
  mlpRatio: number;
  numClasses: number;
  eps: number;
}

/** The §2.1 configuration (10 classes). */
export function vitTinyConfig(overrides: Partial<ViTConfig> = {}): ViTConfig {
  return {
    imageSize: 28,
    inputSize: 32,
    inChannels: 1,
    patchSize: 2,
    dims: [48, 96],
    depths: [2, 2],
    mixers: ['pool', 'attention'],
    heads: 4,
    mlpRatio: 4,
    numClasses: 10,
    eps: 1e-5,
    ...overrides,
  };
}

function resolveConfig(raw: JsonObject): ViTConfig {
  const k = 'vit';
  const d = vitTinyConfig();
  const withDefaults: JsonObject = { ...d, ...raw };
  const imageSize = intAt(k, withDefaults, 'imageSize');
  const inputSize = intAt(k, withDefaults, 'inputSize');
  const inChannels = intAt(k, withDefaults, 'inChannels');
  const patchSize = intAt(k, withDefaults, 'patchSize');
  const dims = intPair(k, withDefaults, 'dims', d.dims);
  const depths = intPair(k, withDefaults, 'depths', d.depths);
  const mixersRaw = withDefaults['mixers'];
  if (!Array.isArray(mixersRaw) || mixersRaw.length !== 2) throw new ConfigError(`vit: expected config.mixers to be two of ${MIXERS.join(', ')}, found ${JSON.stringify(mixersRaw)}`);
  const mixers = [mixerAt(k, { m: mixersRaw[0] as JsonValue }, 'm'), mixerAt(k, { m: mixersRaw[1] as JsonValue }, 'm')] as [VitMixer, VitMixer];
  const heads = intAt(k, withDefaults, 'heads');
  const mlpRatio = numOr(k, withDefaults, 'mlpRatio', 4);
  const numClasses = intAt(k, withDefaults, 'numClasses');
  const eps = numOr(k, withDefaults, 'eps', 1e-5);
  if (inputSize < imageSize || (inputSize - imageSize) % 2 !== 0) {
    throw new ConfigError(`vit: expected inputSize ≥ imageSize with an even difference (symmetric padding), found imageSize ${imageSize}, inputSize ${inputSize}`);
  }
  if (inputSize % (2 * patchSize) !== 0) throw new ConfigError(`vit: expected inputSize divisible by 2·patchSize = ${2 * patchSize} (patch embed, then a 2×2 merge), found ${inputSize}`);
  return { imageSize, inputSize, inChannels, patchSize, dims, depths, mixers, heads, mlpRatio, numClasses, eps };
}

/**
 * The two-stage ViT (kind 'vit'). Children: 'embed', 'stage1', 'merge', 'stage2', 'norm', 'head'.
 * Input: images [B, imageSize, imageSize, C] (zero-padded symmetrically to inputSize inside, as
 * @leanpass/data's makeBatch `padTo`) or [B, inputSize, inputSize, C]. Output: logits [B, numClasses].
 */
/** The ViT's trunk in call order (the head follows the mean pool). */
const VIT_TRUNK = ['embed', 'stage1', 'merge', 'stage2', 'norm'] as const;

export class ViT extends Module<tf.Tensor, tf.Tensor, ViTConfig> {
  readonly kind = 'vit';
  constructor(config: Partial<ViTConfig>, init: InitContext) {
    const cfg = resolveConfig(config as JsonObject);
    super(cfg);
    const { inputSize, inChannels, patchSize, dims, depths, mixers, heads, mlpRatio, eps, numClasses } = cfg;
    const g1 = inputSize / patchSize;
    this.addChild('embed', new VitPatchEmbed({ inChannels, patchSize, dim: dims[0], grid: [g1, g1] }, init));
    this.addChild('stage1', new VitStage({ dim: dims[0], depth: depths[0], mixer: mixers[0], heads, mlpRatio, grid: [g1, g1], eps }, init));
    this.addChild('merge', new VitPatchMerge({ inDim: dims[0], outDim: dims[1], inGrid: [g1, g1], eps }, init));
    this.addChild('stage2', new VitStage({ dim: dims[1], depth: depths[1], mixer: mixers[1], heads, mlpRatio, grid: [g1 / 2, g1 / 2], eps }, init));
    this.addChild('norm', new LayerNorm({ dim: dims[1], eps }));
    this.addChild('head', new Linear({ inFeatures: dims[1], outFeatures: numClasses }, init));
  }

  /** Zero-pads images to inputSize × inputSize when they are imageSize × imageSize. */
  private padded(x: tf.Tensor): tf.Tensor {
    const { imageSize, inputSize, inChannels } = this.config;
    const side = x.shape[1];
    if (x.rank !== 4 || x.shape[3] !== inChannels || side !== x.shape[2] || (side !== imageSize && side !== inputSize)) {
      throw new ConfigError(`vit: expected images [B, ${imageSize}, ${imageSize}, ${inChannels}] or [B, ${inputSize}, ${inputSize}, ${inChannels}], found [${x.shape.join(', ')}]`);
    }
    if (side === inputSize) return x;
    const lo = (inputSize - imageSize) / 2;
    return tf.pad(x, [[0, 0], [lo, lo], [lo, lo], [0, 0]]);
  }

  /**
   * The leading children (in call order) that hold no trainable parameter: under a gradient tape they run
   * off it (`untaped`), so a frozen patch embedding / stage 1 keeps no activations for backward. 0 when
   * the patch embedding trains.
   */
  frozenPrefix(): number {
    let n = 0;
    while (n < VIT_TRUNK.length && this.child(VIT_TRUNK[n] as string).paramCount({ trainableOnly: true }) === 0) n++;
    return n;
  }

  /** Pooled features [B, dims[1]] (after the final norm), before the head. */
  features(x: tf.Tensor, ctx: RunContext): tf.Tensor {
    const through = (h: tf.Tensor, from: number, to: number): tf.Tensor => {
      for (let i = from; i < to; i++) h = this.child(VIT_TRUNK[i] as string).call(h, ctx) as tf.Tensor;
      return h;
    };
    const frozen = gradientTapeActive() ? this.frozenPrefix() : 0;
    let h = this.padded(x);
    if (frozen > 0) h = untaped((t) => through(t, 0, frozen), h);
    h = through(h, frozen, VIT_TRUNK.length);
    return tf.mean(h, 1);
  }

  forward(x: tf.Tensor, ctx: RunContext): tf.Tensor {
    return this.child('head').call(this.features(x, ctx), ctx) as tf.Tensor;
  }

  override flops(x: tf.Tensor): FlopCount {
    // mean pooling over the final grid: one add per element forward, one scale per element backward
    const { inputSize, patchSize, dims } = this.config;
    const tokens = (inputSize / patchSize / 2) ** 2;
    const elems = x.shape[0] * tokens * dims[1];
    return { forward: elems, backward: elems };
  }
}

/** Builds a seeded ViT-tiny (§2.1: 281,722 parameters with 10 classes). */
export function buildVitTiny(opts: { numClasses?: number; seed?: number } & Partial<ViTConfig> = {}): ViT {
  const { seed, ...rest } = opts;
  return new ViT(vitTinyConfig(rest), { rng: new Rng(seed ?? 0) });
}

/**
 * Replaces the classifier with a fresh, seeded linear of `numClasses` outputs (PyTorch nn.Linear
 * initialisation) and records the new class count in the root config; the old head is disposed.
 * For transfer: pre-trained on classes 0–4, `replaceHead(model, 5, seed)` before fine-tuning on 5–9.
 */
export function replaceHead(model: ViT, numClasses: number, seed: number): Linear {
  if (!Number.isInteger(numClasses) || numClasses < 1) throw new ConfigError(`replaceHead: expected a positive integer numClasses, found ${numClasses}`);
  const head = new Linear({ inFeatures: model.config.dims[1], outFeatures: numClasses }, { rng: new Rng(seed).fork('vit/head') });
  const old = model.replace('head', head);
  old.dispose();
  model.config.numClasses = numClasses;
  return head;
}

/** A module's `grid`/`extraTokens` config, when it has them. */
function ownGrid(m: AnyModule): { grid: [number, number]; extraTokens: number } | undefined {
  const cfg = m.config;
  const g = cfg['grid'];
  if (!Array.isArray(g) || g.length !== 2) return undefined;
  const extra = cfg['extraTokens'];
  return { grid: [g[0] as number, g[1] as number], extraTokens: typeof extra === 'number' ? extra : 0 };
}

/**
 * The token grid of the input of the module at `path`: the `grid` and `extraTokens` of the nearest
 * ancestor (the module itself excluded, parent first) whose config has a `grid`. Undefined when none has
 * (e.g. the ViT head, which sees pooled features). This is the rule LBP-WHT follows for rank-3 inputs.
 */
export function tokenGridOf(model: AnyModule, path: string): { grid: [number, number]; extraTokens: number } | undefined {
  const parts = path === '' ? [] : path.split('.');
  model.get(path); // throws a ConfigError naming the missing segment
  for (let i = parts.length - 1; i >= 0; i--) {
    const found = ownGrid(model.get(parts.slice(0, i).join('.')));
    if (found) return found;
  }
  return undefined;
}

// ---------------------------------------------------------------- registry

registry.register('vit', (cfg, init) => new ViT(cfg, init));
registry.register('vit.patch-embed', (cfg, init) => new VitPatchEmbed(cfg as unknown as VitPatchEmbedConfig, init));
registry.register('vit.pool-mixer', (cfg) => new VitPoolMixer(cfg as unknown as VitPoolMixerConfig));
registry.register('vit.block', (cfg, init) => new VitBlock(cfg as unknown as VitBlockOptions, init));
registry.register('vit.stage', (cfg, init) => new VitStage(cfg as unknown as VitBlockOptions & { depth: number }, init));
registry.register('vit.patch-merge', (cfg, init) => new VitPatchMerge(cfg as unknown as { inDim: number; outDim: number; inGrid: [number, number] }, init));
