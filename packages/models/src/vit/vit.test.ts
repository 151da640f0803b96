import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { ConfigError, Module, Rng, createRunContext, deserializeModel, loadModel, measureFlops, registry, savedForBackward, serializeModel, useBackend, type AnyModule, type RunContext } from '@leanpass/core';
import { epochBatches, loadFashionMnist, selectClasses } from '@leanpass/data';
import { gradCheck, type Linear } from '@leanpass/nn';
import { beforeAll, describe, expect, it } from 'vitest';
import { patchify, poolMix } from './ops.js';
import { ViT, VitBlock, VitStage, buildVitTiny, replaceHead, tokenGridOf, vitTinyConfig } from './vit.js';

const train = createRunContext({ mode: 'train' });
const evalCtx = createRunContext({ mode: 'eval' });

function randn(shape: number[], seed: number): tf.Tensor {
  return tf.tensor(new Rng(seed).normalArray(shape.reduce((a, b) => a * b, 1)), shape);
}
function images(b: number, side: number, seed: number): tf.Tensor {
  return tf.tensor(new Rng(seed).uniformArray(b * side * side, 0, 1), [b, side, side, 1]);
}
function maxAbsDiffArr(a: Float32Array, b: Float32Array): number {
  let worst = a.length === b.length ? 0 : Infinity;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs((a[i] as number) - (b[i] as number)));
  return worst;
}
function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0] as number);
}

/** Naive 3×3 average (in-grid cells only) minus identity, in Float64 over [B, H·W, C]. */
function naivePoolMix(x: Float32Array, B: number, H: number, W: number, C: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let b = 0; b < B; b++)
    for (let r = 0; r < H; r++)
      for (let c = 0; c < W; c++)
        for (let k = 0; k < C; k++) {
          let s = 0;
          let n = 0;
          for (let i = -1; i <= 1; i++)
            for (let j = -1; j <= 1; j++) {
              const rr = r + i;
              const cc = c + j;
              if (rr < 0 || rr >= H || cc < 0 || cc >= W) continue;
              s += x[((b * H + rr) * W + cc) * C + k] as number;
              n++;
            }
          const at = ((b * H + r) * W + c) * C + k;
          out[at] = s / n - (x[at] as number);
        }
  return out;
}

describe('ViT ops', () => {
  beforeAll(async () => {
    await useBackend('wasm');
  });

  it('patchify groups each p×p block into one token, features ordered (dy, dx, c)', () => {
    const [B, H, W, C] = [2, 4, 6, 3];
    const x = randn([B, H, W, C], 1);
    const xs = x.dataSync();
    const y = patchify(x, 2);
    expect(y.shape).toEqual([B, 6, 12]);
    const ys = y.dataSync();
    for (let b = 0; b < B; b++)
      for (let pr = 0; pr < 2; pr++)
        for (let pc = 0; pc < 3; pc++)
          for (let dy = 0; dy < 2; dy++)
            for (let dx = 0; dx < 2; dx++)
              for (let c = 0; c < C; c++) {
                const got = ys[(b * 6 + pr * 3 + pc) * 12 + (dy * 2 + dx) * C + c];
                const want = xs[((b * H + 2 * pr + dy) * W + 2 * pc + dx) * C + c];
                expect(got).toBe(want);
              }
  });

  it('poolMix equals the naive avg3×3 − identity (count_include_pad = False) on a non-square grid', () => {
    const [B, H, W, C] = [2, 5, 7, 3];
    const x = randn([B, H * W, C], 2);
    const want = naivePoolMix(x.dataSync() as Float32Array, B, H, W, C);
    const got = poolMix(x, [H, W]).dataSync();
    let worst = 0;
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs((got[i] as number) - (want[i] as number)));
    expect(worst).toBeLessThan(1e-5);
  });

  it("poolMix's gradient is the adjoint: ∂⟨poolMix(x), g⟩/∂x equals Aᵀg from the naive operator", () => {
    const [B, H, W, C] = [1, 4, 5, 2];
    const x = randn([B, H * W, C], 3);
    const g = randn([B, H * W, C], 4);
    const grad = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(poolMix(t, [H, W]), g)))(x).dataSync();
    // Aᵀg by columns: e_i ↦ ⟨A e_i, g⟩
    const gs = g.dataSync();
    const n = B * H * W * C;
    for (let i = 0; i < n; i++) {
      const e = new Float32Array(n);
      e[i] = 1;
      const col = naivePoolMix(e, B, H, W, C);
      let want = 0;
      for (let j = 0; j < n; j++) want += (col[j] as number) * (gs[j] as number);
      expect(Math.abs((grad[i] as number) - want)).toBeLessThan(1e-5);
    }
  });

  it('poolMix saves nothing for the backward and rejects a token count that is not the grid', () => {
    expect(() => poolMix(randn([1, 15, 2], 5), [4, 4])).toThrow(ConfigError);
    const x = tf.variable(randn([2, 16, 3], 6));
    const plain = savedForBackward(() => tf.sum(tf.mul(x, 2)));
    const mixed = savedForBackward(() => tf.sum(tf.mul(poolMix(x, [4, 4]), 2)));
    expect(mixed.bytes).toBe(plain.bytes);
    x.dispose();
  });
});

/**
 * Parameters the loss cannot depend on: attention's key bias adds q·b_k to every score of a query row
 * (softmax cancels it), and the bias of a pool block's norm1 is a per-channel constant that
 * avg3×3(t) − t maps to 0 (an average of in-grid cells of a constant is that constant).
 */
function invariant(path: string): boolean {
  return path.endsWith('attn.k.bias') || /^stage1\.\d+\.norm1\.bias$/.test(path);
}

describe('ViT-tiny', () => {
  let model: ViT;
  beforeAll(async () => {
    await useBackend('wasm');
    model = buildVitTiny({ numClasses: 10, seed: 0 });
  });

  it('has the §2.1 parameter count, 281,722, split as derived', () => {
    expect(model.paramCount()).toBe(281_722);
    const count = (path: string): number => model.get(path).paramCount();
    expect(count('embed')).toBe(4 * 48 + 48);
    expect(count('stage1')).toBe(2 * (4 * 48 + 48 * 192 + 192 + 192 * 48 + 48));
    expect(count('merge')).toBe(2 * 192 + 192 * 96 + 96);
    expect(count('stage2')).toBe(2 * (4 * 96 + 4 * (96 * 96 + 96) + 96 * 384 + 384 + 384 * 96 + 96));
    expect(count('norm') + count('head')).toBe(2 * 96 + 96 * 10 + 10);
  });

  it('reports the §2.1 cost: 26.4 M MACs per image in linears and attention products, 89 % in the LBP-WHT linears', () => {
    const { byPath } = measureFlops(model, (ctx) => model.call(images(2, 28, 3), ctx));
    let macs = 0;
    let wrapped = 0;
    for (const [path, e] of byPath) {
      if (e.kind === 'linear') {
        // forward = rows·(2·in·out + out) with a bias
        const { inFeatures: i, outFeatures: o } = (model.get(path) as Linear).config;
        const rows = e.forward / (2 * i * o + o);
        expect(Number.isInteger(rows), path).toBe(true);
        macs += rows * i * o;
        if (!['embed.proj', 'merge.reduction', 'head'].includes(path)) wrapped += rows * i * o;
      } else if (e.kind === 'attention') macs += 2 * 2 * 4 * 64 * 64 * 24; // QKᵀ and PV, 2 samples × 4 heads
    }
    const perImage = macs / 2;
    expect(perImage / 1e6).toBeCloseTo(26.4, 1);
    expect(wrapped / 2 / perImage).toBeCloseTo(0.89, 2);
  });

  it('maps [B, 28, 28, 1] to logits [B, classes]; a pre-padded 32×32 input gives the same logits', () => {
    const x = images(3, 28, 7);
    const y = model.call(x, evalCtx);
    expect(y.shape).toEqual([3, 10]);
    const y32 = model.call(tf.pad(x, [[0, 0], [2, 2], [2, 2], [0, 0]]), evalCtx);
    expect(maxAbsDiff(y, y32)).toBe(0);
    expect(() => model.call(images(1, 30, 1), evalCtx)).toThrow(/expected images \[B, 28, 28, 1\] or \[B, 32, 32, 1\]/);
  });

  it('feeds every gridded linear rank-3 tokens [B, H·W, C] of the grid its ancestor declares', () => {
    const m = buildVitTiny({ numClasses: 10, seed: 0 });
    const seen = new Map<string, number[]>();
    class Spy extends Module {
      readonly kind = 'test.spy';
      constructor(
        readonly path: string,
        inner: AnyModule,
      ) {
        super({});
        this.addChild('inner', inner);
      }
      forward(x: tf.Tensor, ctx: RunContext): tf.Tensor {
        seen.set(this.path, x.shape);
        return this.child('inner').call(x, ctx) as tf.Tensor;
      }
    }
    const linears = m.select({ kinds: ['linear'] });
    expect(linears.map(([p]) => p)).toEqual([
      'embed.proj',
      'stage1.0.mlp.fc1',
      'stage1.0.mlp.fc2',
      'stage1.1.mlp.fc1',
      'stage1.1.mlp.fc2',
      'merge.reduction',
      'stage2.0.attn.q',
      'stage2.0.attn.k',
      'stage2.0.attn.v',
      'stage2.0.attn.o',
      'stage2.0.mlp.fc1',
      'stage2.0.mlp.fc2',
      'stage2.1.attn.q',
      'stage2.1.attn.k',
      'stage2.1.attn.v',
      'stage2.1.attn.o',
      'stage2.1.mlp.fc1',
      'stage2.1.mlp.fc2',
      'head',
    ]);
    const grids = new Map(linears.map(([p]) => [p, tokenGridOf(m, p)]));
    for (const [p, lin] of linears) m.replace(p, new Spy(p, lin));
    tf.tidy(() => m.call(images(2, 28, 8), train));
    for (const [p, lin] of linears) {
      const shape = seen.get(p) as number[];
      const g = grids.get(p);
      if (p === 'head') {
        expect(g).toBeUndefined();
        expect(shape).toEqual([2, 96]);
        continue;
      }
      expect(g, p).toBeDefined();
      const { grid, extraTokens } = g as { grid: [number, number]; extraTokens: number };
      expect(extraTokens).toBe(0);
      expect(grid).toEqual(p.startsWith('stage2') || p === 'merge.reduction' ? [8, 8] : [16, 16]);
      expect(shape, p).toEqual([2, grid[0] * grid[1], (lin as Linear).config.inFeatures]);
    }
  });

  it('gets a finite, non-zero gradient for every parameter in one wasm step', () => {
    const m = buildVitTiny({ numClasses: 10, seed: 1 });
    const x = images(4, 28, 9);
    const y = tf.oneHot(tf.tensor1d([0, 3, 7, 9], 'int32'), 10);
    const named = [...m.namedParams()];
    const { value, grads } = tf.variableGrads(() => tf.losses.softmaxCrossEntropy<tf.Tensor, tf.Scalar>(y, m.call(x, train)), named.map(([, p]) => p.variable));
    expect(Number.isFinite(value.dataSync()[0])).toBe(true);
    expect(Object.keys(grads)).toHaveLength(named.length);
    const norms = new Map<string, number>();
    for (const [path, p] of named) {
      const g = grads[p.variable.name];
      expect(g, path).toBeDefined();
      const norm = tf.tidy(() => tf.norm(g as tf.Tensor).dataSync()[0] as number);
      expect(Number.isFinite(norm), path).toBe(true);
      norms.set(path, norm);
    }
    const live = [...norms].filter(([p]) => !invariant(p));
    const smallest = Math.min(...live.map(([, n]) => n));
    expect(live.length).toBe(named.length - 4);
    expect(smallest).toBeGreaterThan(1e-6);
    for (const [p, n] of norms) if (invariant(p)) expect(n, p).toBeLessThan(1e-3 * smallest);
    tf.dispose([value, ...Object.values(grads)]);
  });

  it('runs a frozen patch embedding + stage 1 off the tape: same value and gradients, their activations not kept', () => {
    const x = images(4, 28, 12);
    const y = tf.oneHot(tf.tensor1d([0, 3, 7, 9], 'int32'), 10);
    const run = (m: ViT, wrt: Array<[string, { variable: tf.Variable }]>): { loss: number; grads: Map<string, Float32Array>; bytes: number } => {
      const vars = wrt.map(([, p]) => p.variable);
      const loss = (): tf.Scalar => tf.losses.softmaxCrossEntropy<tf.Tensor, tf.Scalar>(y, m.call(x, train));
      const { value, grads } = tf.variableGrads(loss, vars);
      const out = new Map(wrt.map(([path, p]) => [path, (grads[p.variable.name] as tf.Tensor).dataSync() as Float32Array]));
      const l = value.dataSync()[0] as number;
      tf.dispose([value, ...Object.values(grads)]);
      const bytes = savedForBackward(loss).bytes;
      return { loss: l, grads: out, bytes };
    };
    const m = buildVitTiny({ numClasses: 10, seed: 2 });
    const rest = [...m.namedParams()].filter(([path]) => !/^(embed|stage1)\./.test(path));
    expect(m.frozenPrefix()).toBe(0);
    const taped = run(m, rest); // everything trainable: the prefix is on the tape (its gradients are simply not asked for)
    m.child('embed').setTrainable(false);
    m.child('stage1').setTrainable(false);
    expect(m.frozenPrefix()).toBe(2);
    const off = run(m, rest);
    expect(off.loss).toBe(taped.loss);
    for (const [path, g] of taped.grads) expect(maxAbsDiffArr(off.grads.get(path) as Float32Array, g), path).toBe(0);
    // the stage-1 activations (16×16 tokens of 48–192 channels per image) are no longer kept
    expect(off.bytes).toBeLessThan(0.7 * taped.bytes);
    // a trainable parameter inside the prefix ends it: merge trains, so does everything after it
    m.child('embed').setTrainable(true);
    expect(m.frozenPrefix()).toBe(0);
    m.setTrainable(true);
  });

  it('matches central finite differences through a whole small ViT (cpu)', async () => {
    await useBackend('cpu');
    try {
      const m = new ViT(vitTinyConfig({ imageSize: 8, inputSize: 8, dims: [4, 8], depths: [1, 1], heads: 2, numClasses: 3 }), { rng: new Rng(5) });
      // gradient exactly 0 in exact arithmetic (see `invariant`): float noise only, left out of the comparison
      const named = [...m.namedParams()].filter(([path]) => !invariant(path));
      const res = gradCheck((x) => tf.sum(tf.mul(m.call(x, train), tf.tensor2d([[1, -2, 0.5]]))), [images(1, 8, 11)], { params: named.map(([, p]) => p.variable), samples: 3 });
      const pathOf = new Map(named.map(([path, p]) => [`param ${p.variable.name}`, path]));
      expect(res.ok, JSON.stringify(res.worst.filter((w) => w.ratio > 1).map((w) => ({ ...w, path: pathOf.get(w.tensor) })))).toBe(true);
    } finally {
      await useBackend('wasm');
    }
  });

  it('round-trips through serializeModel / deserializeModel with identical logits', async () => {
    const { config, weights } = await serializeModel(model);
    expect(config.root.kind).toBe('vit');
    for (const k of ['vit', 'vit.patch-embed', 'vit.stage', 'vit.block', 'vit.pool-mixer', 'vit.patch-merge']) expect(registry.has(k)).toBe(true);
    const back = deserializeModel(JSON.parse(JSON.stringify(config)), weights, { seed: 99 }) as ViT;
    expect(back).toBeInstanceOf(ViT);
    expect(back.paramCount()).toBe(model.paramCount());
    const x = images(2, 28, 12);
    expect(maxAbsDiff(back.call(x, evalCtx), model.call(x, evalCtx))).toBe(0);
    back.dispose();
  });

  it('replaceHead swaps in a seeded head, updates the config and still round-trips', async () => {
    const m = buildVitTiny({ numClasses: 10, seed: 2 });
    const stage1Before = m.get('stage1.0.mlp.fc1').param('weight').variable.dataSync().slice();
    replaceHead(m, 5, 3);
    expect(m.config.numClasses).toBe(5);
    expect(m.paramCount()).toBe(281_722 - 96 * 5 - 5);
    expect(Array.from(m.get('stage1.0.mlp.fc1').param('weight').variable.dataSync())).toEqual(Array.from(stage1Before));
    const other = buildVitTiny({ numClasses: 10, seed: 7 });
    replaceHead(other, 5, 3);
    expect(Array.from(other.get('head').param('weight').variable.dataSync())).toEqual(Array.from(m.get('head').param('weight').variable.dataSync()));
    const x = images(2, 28, 13);
    expect(m.call(x, evalCtx).shape).toEqual([2, 5]);
    const { config, weights } = await serializeModel(m);
    const back = deserializeModel(config, weights) as ViT;
    expect(back.config.numClasses).toBe(5);
    expect(maxAbsDiff(back.call(x, evalCtx), m.call(x, evalCtx))).toBe(0);
    expect(() => replaceHead(m, 0, 1)).toThrow(ConfigError);
    m.dispose();
    other.dispose();
    back.dispose();
  });

  it('a single stage builds a ViT-S-shaped body that carries its grid', () => {
    const s = new VitStage({ dim: 32, depth: 2, mixer: 'attention', heads: 4, mlpRatio: 4, grid: [4, 4] }, { rng: new Rng(4) });
    expect(s.config.grid).toEqual([4, 4]);
    expect(tokenGridOf(s, '1.attn.v')).toEqual({ grid: [4, 4], extraTokens: 0 });
    const y = s.call(randn([2, 16, 32], 14), evalCtx);
    expect(y.shape).toEqual([2, 16, 32]);
    expect(() => s.call(randn([2, 15, 32], 15), evalCtx)).toThrow(/expected tokens \[B, 16, 32\] on a 4×4 grid/);
    s.dispose();
  });

  it('rejects bad configurations with what was expected', () => {
    const init = { rng: new Rng(0) };
    expect(() => new ViT(vitTinyConfig({ inputSize: 30 }), init)).toThrow(/inputSize divisible by 2·patchSize = 4/);
    expect(() => new ViT(vitTinyConfig({ inputSize: 27 }), init)).toThrow(/even difference/);
    expect(() => new ViT({ mixers: ['pool', 'conv'] } as unknown as Partial<ViT['config']>, init)).toThrow(/one of pool, attention/);
    expect(() => new VitBlock({ dim: 10, mixer: 'attention', heads: 4, grid: [2, 2] }, init)).toThrow(/not divisible by heads/);
    expect(() => new VitBlock({ dim: 8, mixer: 'pool', grid: [2] as unknown as [number, number] }, init)).toThrow(/grid \[H, W\]/);
  });
});

describe('zoo checkpoint vit-tiny', () => {
  const dir = fileURLToPath(new URL('../../../zoo/models/vit-tiny/', import.meta.url));

  it('loads and reaches its model card accuracy on the bundled test subset (classes 0–4)', async () => {
    await useBackend('wasm');
    expect(existsSync(dir), dir).toBe(true);
    const card = readFileSync(`${dir}MODEL_CARD.md`, 'utf8');
    const row = /\| bundled subset[^|]*\| ([\d,]+) \| ([\d.]+) % \|/.exec(card);
    expect(row, 'bundled-subset row of MODEL_CARD.md').not.toBeNull();
    const [count, acc] = [Number((row as RegExpExecArray)[1]?.replace(/,/g, '')), Number((row as RegExpExecArray)[2]) / 100];
    const model = (await loadModel(dir)) as ViT;
    expect(model).toBeInstanceOf(ViT);
    expect(model.config.numClasses).toBe(5);
    const test = selectClasses(await loadFashionMnist({ split: 'test', source: 'bundled' }), [0, 1, 2, 3, 4]);
    expect(test.n).toBe(count);
    let correct = 0;
    for (const b of epochBatches(test, { batchSize: 250, seed: 0, shuffle: false, padTo: 32 })) {
      correct += tf.tidy(() => tf.sum(tf.cast(tf.equal(tf.argMax(model.call(b.x, evalCtx), -1), b.y), 'int32')).dataSync()[0] as number);
      tf.dispose([b.x, b.y]);
    }
    expect(Math.abs(correct / test.n - acc)).toBeLessThanOrEqual(0.005);
    expect(correct / test.n).toBeGreaterThan(0.5); // trained: far above chance (0.2)
    model.dispose();
  });
});
