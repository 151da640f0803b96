import * as tf from '@tensorflow/tfjs';
import { ConfigError, Rng, createRunContext, deserializeModel, serializeModel, useBackend } from '@leanpass/core';
import { CanvasAttention, getKVStore } from '@leanpass/nn';
import { beforeAll, describe, expect, it } from 'vitest';
import { DLLM_BASE_CONFIG, DLLM_SMALL_CONFIG, dllmConfig, dllmParamCount } from './config.js';
import { DiffusionLM, createDiffusionLM } from './model.js';
import { diffusionSftLoss, noiseBatch, weightedMaskedCE, type DiffusionSftBatch } from './objective.js';

const TINY = { vocabSize: 12, dim: 16, layers: 2, heads: 2, hidden: 24, maskId: 11, eosId: 10, padId: 9, maxLength: 32 };
const arr = (t: tf.Tensor): number[] => Array.from(t.dataSync());
const maxAbsDiff = (a: tf.Tensor, b: tf.Tensor): number => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0] as number);
const ids2 = (rows: number[][]): tf.Tensor => tf.tensor2d(rows, [rows.length, (rows[0] as number[]).length], 'int32');

beforeAll(async () => {
  await useBackend('cpu');
});

describe('dllm config', () => {
  it('completes defaults, counts parameters and lists every bad field', () => {
    const c = dllmConfig(TINY);
    expect(c).toMatchObject({ kvHeads: 2, headDim: 8, eps: 1e-5, ropeTheta: 10000 });
    const m = createDiffusionLM(c, { seed: 1 });
    expect(m.paramCount()).toBe(dllmParamCount(c));
    expect(dllmParamCount(dllmConfig(DLLM_SMALL_CONFIG))).toBeGreaterThan(90_000);
    expect(dllmParamCount(dllmConfig(DLLM_BASE_CONFIG))).toBeGreaterThan(700_000);
    m.dispose();
    try {
      dllmConfig({ ...TINY, heads: 3, maskId: 12, eosId: 9 });
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      const paths = (e as ConfigError).issues.map((i) => i.path);
      expect(paths).toEqual(expect.arrayContaining(['headDim', 'maskId']));
    }
  });
});

describe('DiffusionLM', () => {
  let model: DiffusionLM;
  beforeAll(() => {
    model = createDiffusionLM(TINY, { seed: 3 });
  });

  it('is bidirectional: changing a late token changes the logits of earlier positions', () => {
    const ctx = createRunContext();
    const a = model.call(ids2([[1, 2, 3, 4, 5, 6]]), ctx);
    const b = model.call(ids2([[1, 2, 3, 4, 5, 7]]), ctx);
    expect(a.shape).toEqual([1, 6, 12]);
    expect(maxAbsDiff(tf.slice(a, [0, 0, 0], [1, 1, 12]), tf.slice(b, [0, 0, 0], [1, 1, 12]))).toBeGreaterThan(1e-6);
  });

  it('left padding: a padded sequence gives the logits of its unpadded forward', () => {
    const ctx = createRunContext();
    const single = model.call(ids2([[1, 2, 3, 11, 11]]), ctx);
    const batch = model.call({ ids: ids2([[9, 9, 1, 2, 3, 11, 11], [4, 5, 6, 7, 8, 11, 11]]), pad: [2, 0] }, ctx);
    expect(maxAbsDiff(tf.slice(batch, [0, 2, 0], [1, 5, 12]), single)).toBeLessThan(1e-5);
  });

  it('a window over the store equals the rows of the full forward when the canvas is unchanged', () => {
    const gen = createRunContext();
    const ids = ids2([[1, 2, 3, 11, 11, 11, 11]]);
    const full = model.call({ ids, store: 'kv' }, gen);
    expect(arr(full)).toEqual(arr(model.call(ids, createRunContext())));
    for (const w of [
      { start: 3, end: 7 },
      { start: 3, end: 5 },
    ]) {
      const part = model.call({ ids, window: w, store: 'kv' }, gen);
      expect(arr(part)).toEqual(arr(tf.slice(full, [0, w.start, 0], [1, w.end - w.start, 12])));
    }
    expect(getKVStore(gen, 'kv/0')?.k.shape).toEqual([1, 2, 7, 8]);
    expect(getKVStore(gen, 'kv/1')).toBeDefined();
    gen.state.dispose();
    expect(() => model.call({ ids, window: { start: 3, end: 7 } }, createRunContext())).toThrow(/without a K\/V store/);
  });

  it('rejects bad ids, windows and pads with ConfigErrors', () => {
    const ctx = createRunContext();
    expect(() => model.call(tf.tensor2d([[1, 2]], [1, 2], 'float32'), ctx)).toThrow(/int32/);
    expect(() => model.call(ids2([[1, 12]]), ctx)).toThrow(/ids in \[0, 12\)/);
    expect(() => model.call({ ids: ids2([[1, 2]]), window: { start: 1, end: 3 } }, ctx)).toThrow(/window/);
    expect(() => model.call({ ids: ids2([[1, 2]]), pad: [0, 0] }, ctx)).toThrow(/pad counts/);
    expect(() => model.call({ ids: ids2([[1, 2]]), pad: [2] }, ctx)).toThrow(/pad counts/);
  });

  it('saves and loads (every kind registered) with identical logits', async () => {
    const { config, weights } = await serializeModel(model);
    const back = deserializeModel(config, weights) as DiffusionLM;
    expect(back).toBeInstanceOf(DiffusionLM);
    expect(back.get('layers.1.attn')).toBeInstanceOf(CanvasAttention);
    const ids = ids2([[1, 2, 3, 4]]);
    expect(arr(back.call(ids, createRunContext()))).toEqual(arr(model.call(ids, createRunContext())));
    back.dispose();
  });
});

function sftBatch(): DiffusionSftBatch {
  // two sequences: pads, prompt, answer (4 tokens, EOS-padded)
  const ids = Int32Array.from([9, 1, 2, 3, 4, 5, 10, 10, 1, 2, 3, 4, 6, 7, 8, 10]);
  return { ids, batch: 2, length: 8, answerStart: 4, pad: Int32Array.from([1, 0]) };
}

describe('LLaDA SFT objective', () => {
  it('never masks the prompt, masks answers at rate p and weights them 1/(p·A·B)', () => {
    const batch = sftBatch();
    const rng = new Rng(5);
    let maskedFrac = 0;
    let pMean = 0;
    const n = 400;
    for (let it = 0; it < n; it++) {
      const noise = noiseBatch(batch, 11, rng);
      for (let b = 0; b < 2; b++) {
        const p = noise.p[b] as number;
        expect(p).toBeGreaterThanOrEqual(1e-3);
        expect(p).toBeLessThanOrEqual(1);
        for (let l = 0; l < 8; l++) {
          const i = b * 8 + l;
          if (l < 4) expect(noise.noisy[i]).toBe(batch.ids[i]);
          else {
            const w = noise.weights[b * 4 + l - 4] as number;
            if (noise.noisy[i] === 11) expect(w).toBeCloseTo(1 / (p * 4 * 2), 5);
            else {
              expect(noise.noisy[i]).toBe(batch.ids[i]);
              expect(w).toBe(0);
            }
          }
        }
        pMean += p;
      }
      maskedFrac += noise.masked;
    }
    // E[masked fraction] = E[p] ≈ 0.5
    expect(maskedFrac / (n * 8)).toBeGreaterThan(0.45);
    expect(maskedFrac / (n * 8)).toBeLessThan(0.55);
    expect(pMean / (2 * n)).toBeCloseTo(0.5, 1);
    const again = noiseBatch(batch, 11, new Rng(5));
    expect(Array.from(again.noisy)).toEqual(Array.from(noiseBatch(batch, 11, new Rng(5)).noisy));
  });

  it('weightedMaskedCE equals the hand-computed weighted cross-entropy', () => {
    const batch = sftBatch();
    const logits = tf.tensor3d(new Rng(2).normalArray(2 * 4 * 12), [2, 4, 12]);
    const weights = Float32Array.from([0.5, 0, 2, 0, 0, 1, 0, 0.25]);
    const got = weightedMaskedCE(logits, batch, weights).dataSync()[0] as number;
    const lp = tf.logSoftmax(logits).arraySync();
    let want = 0;
    for (let b = 0; b < 2; b++) for (let i = 0; i < 4; i++) want -= (weights[b * 4 + i] as number) * ((lp[b] as number[][])[i] as number[])[batch.ids[b * 8 + 4 + i] as number]!;
    expect(got).toBeCloseTo(want, 4);
  });

  it('is differentiable: the gradient matches central finite differences along a random direction', () => {
    const model = createDiffusionLM(TINY, { seed: 7 });
    const batch = sftBatch();
    const ctx = createRunContext({ mode: 'train' });
    const vars = [...model.namedParams()].map(([, p]) => p.variable);
    const loss = (): tf.Scalar => diffusionSftLoss(model, batch, ctx, { rng: new Rng(11) });
    const { value, grads } = tf.variableGrads(loss, vars);
    expect(Number.isFinite(value.dataSync()[0])).toBe(true);
    const dirs = vars.map((v, i) => tf.tensor(new Rng(100 + i).normalArray(v.size), v.shape));
    let dot = 0;
    vars.forEach((v, i) => {
      const g = grads[v.name] as tf.Tensor;
      expect(arr(g).every(Number.isFinite)).toBe(true);
      dot += tf.sum(tf.mul(g, dirs[i] as tf.Tensor)).dataSync()[0] as number;
    });
    const eps = 1e-2;
    const originals = vars.map((v) => tf.clone(v));
    const at = (s: number): number => {
      vars.forEach((v, i) => v.assign(tf.add(originals[i] as tf.Tensor, tf.mul(dirs[i] as tf.Tensor, s))));
      return tf.tidy(() => loss().dataSync()[0] as number);
    };
    const fd = (at(eps) - at(-eps)) / (2 * eps);
    vars.forEach((v, i) => v.assign(originals[i] as tf.Tensor));
    expect(Math.abs(fd - dot)).toBeLessThan(0.02 * Math.max(1, Math.abs(dot)));
    expect(Math.abs(dot)).toBeGreaterThan(1e-3);
    model.dispose();
  });

  it('rejects malformed batches', () => {
    const b = sftBatch();
    expect(() => noiseBatch({ ...b, answerStart: 8 }, 11, new Rng(0))).toThrow(/answerStart/);
    expect(() => noiseBatch({ ...b, length: 7 }, 11, new Rng(0))).toThrow(/ids/);
    expect(() => noiseBatch(b, 11, new Rng(0), 0)).toThrow(/ε/);
  });
});
