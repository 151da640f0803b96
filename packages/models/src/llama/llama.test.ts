import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import {
  ConfigError,
  FormatError,
  Rng,
  cloneModel,
  createRunContext,
  measureFlops,
  rawFromFloat32,
  rawToFloat32,
  serializeSafetensors,
  useBackend,
  type RawTensor,
  type SafetensorsDtype,
} from '@leanpass/core';
import { Linear } from '@leanpass/nn';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { llamaConfig, llamaConfigFromHf, llamaLinearParams, llamaParamCount, type LlamaConfig } from './config.js';
import { bitsPerByte, continuationLogLikelihood, continuationTask, decodeLatency, multipleChoiceAccuracy, targetLogProbs, unigramBitsPerByte } from './eval.js';
import { fortunesCorpus, fortunesStream } from './fortunes.js';
import { generate } from './generate.js';
import { hfLlamaTensors, loadHfLlama } from './hf.js';
import { LLAMA_CACHE_KEY, createLlama, llamaCacheLength, type Llama } from './model.js';
import { gradientTapeActive } from './decode.js';

const SMALL: LlamaConfig = llamaConfig({
  vocab_size: 23,
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-5,
  rope_theta: 500,
  max_position_embeddings: 64,
});

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'llama-hf-'));
  dirs.push(d);
  return d;
}

/** Random HF-named tensors for a config (std 0.3; norm gains around 1). */
function hfTensors(c: LlamaConfig, seed: number, dtype: SafetensorsDtype = 'F32', withHead = !c.tie_word_embeddings): Map<string, RawTensor> {
  const rng = new Rng(seed);
  const out = new Map<string, RawTensor>();
  for (const s of hfLlamaTensors(c)) {
    if (s.hf === 'lm_head.weight' && !withHead) continue;
    const n = s.hfShape.reduce((a, b) => a * b, 1);
    const isNorm = s.hfShape.length === 1;
    const v = Array.from({ length: n }, () => (isNorm ? 1 + 0.2 * rng.normal() : 0.3 * rng.normal()));
    out.set(s.hf, rawFromFloat32(v, s.hfShape, dtype, s.hf));
  }
  return out;
}

function hfConfigJson(c: LlamaConfig): Record<string, unknown> {
  return { ...c, architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_act: 'silu', attention_bias: false, rope_scaling: null, torch_dtype: 'float32' };
}

function writeHf(dir: string, c: LlamaConfig, tensors: Map<string, RawTensor>, shards = 1, extraConfig: Record<string, unknown> = {}): void {
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...hfConfigJson(c), ...extraConfig }));
  if (shards === 1) {
    writeFileSync(join(dir, 'model.safetensors'), serializeSafetensors(tensors));
    return;
  }
  const names = [...tensors.keys()];
  const weight_map: Record<string, string> = {};
  for (let s = 0; s < shards; s++) {
    const file = `model-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
    const part = new Map(names.filter((_, i) => i % shards === s).map((n) => [n, tensors.get(n) as RawTensor]));
    for (const n of part.keys()) weight_map[n] = file;
    writeFileSync(join(dir, file), serializeSafetensors(part));
  }
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 0 }, weight_map }));
}

/** HF LlamaForCausalLM written out plainly in Float64: loops and dot products, nothing shared with the module. */
function referenceLogits(c: LlamaConfig, tensors: Map<string, RawTensor>, ids: number[]): number[][] {
  const W = (name: string): Float32Array => rawToFloat32(tensors.get(name) as RawTensor, name);
  const d = c.hidden_size;
  const H = c.num_attention_heads;
  const Hk = c.num_key_value_heads;
  const hd = c.head_dim;
  const T = ids.length;
  // y[o] = Σ_i w[o, i] x[i] for an HF [out, in] weight
  const lin = (w: Float32Array, x: number[], out: number): number[] => {
    const inn = x.length;
    const y = new Array<number>(out).fill(0);
    for (let o = 0; o < out; o++) {
      let acc = 0;
      for (let i = 0; i < inn; i++) acc += (w[o * inn + i] as number) * (x[i] as number);
      y[o] = acc;
    }
    return y;
  };
  const rms = (x: number[], g: Float32Array): number[] => {
    const ms = x.reduce((a, v) => a + v * v, 0) / x.length;
    return x.map((v, i) => (v / Math.sqrt(ms + c.rms_norm_eps)) * (g[i] as number));
  };
  const rope = (x: number[], pos: number): number[] => {
    const y = x.slice();
    const half = hd / 2;
    for (let j = 0; j < half; j++) {
      const a = pos * Math.pow(c.rope_theta, (-2 * j) / hd);
      const x1 = x[j] as number;
      const x2 = x[j + half] as number;
      y[j] = x1 * Math.cos(a) - x2 * Math.sin(a);
      y[j + half] = x2 * Math.cos(a) + x1 * Math.sin(a);
    }
    return y;
  };
  const E = W('model.embed_tokens.weight');
  let h = ids.map((id) => Array.from(E.subarray(id * d, (id + 1) * d)));
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    const n1 = h.map((x) => rms(x, W(`${p}.input_layernorm.weight`)));
    const q = n1.map((x) => lin(W(`${p}.self_attn.q_proj.weight`), x, H * hd));
    const k = n1.map((x) => lin(W(`${p}.self_attn.k_proj.weight`), x, Hk * hd));
    const v = n1.map((x) => lin(W(`${p}.self_attn.v_proj.weight`), x, Hk * hd));
    const attn = h.map(() => new Array<number>(H * hd).fill(0));
    for (let head = 0; head < H; head++) {
      const kvh = Math.floor(head / (H / Hk));
      for (let t = 0; t < T; t++) {
        const qt = rope((q[t] as number[]).slice(head * hd, (head + 1) * hd), t);
        const scores: number[] = [];
        for (let u = 0; u <= t; u++) {
          const ku = rope((k[u] as number[]).slice(kvh * hd, (kvh + 1) * hd), u);
          scores.push(qt.reduce((a, val, j) => a + val * (ku[j] as number), 0) / Math.sqrt(hd));
        }
        const mx = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - mx));
        const z = e.reduce((a, b) => a + b, 0);
        for (let u = 0; u <= t; u++) {
          const row = attn[t] as number[];
          for (let j = 0; j < hd; j++) row[head * hd + j] = (row[head * hd + j] as number) + ((e[u] as number) / z) * ((v[u] as number[])[kvh * hd + j] as number);
        }
      }
    }
    h = h.map((x, t) => {
      const o = lin(W(`${p}.self_attn.o_proj.weight`), attn[t] as number[], d);
      return x.map((val, i) => val + (o[i] as number));
    });
    h = h.map((x) => {
      const n2 = rms(x, W(`${p}.post_attention_layernorm.weight`));
      const g = lin(W(`${p}.mlp.gate_proj.weight`), n2, c.intermediate_size);
      const u = lin(W(`${p}.mlp.up_proj.weight`), n2, c.intermediate_size);
      const m = g.map((gv, i) => (gv / (1 + Math.exp(-gv))) * (u[i] as number));
      const dn = lin(W(`${p}.mlp.down_proj.weight`), m, d);
      return x.map((val, i) => val + (dn[i] as number));
    });
  }
  const hn = h.map((x) => rms(x, W('model.norm.weight')));
  const head = c.tie_word_embeddings ? E : W('lm_head.weight');
  return hn.map((x) => lin(head, x, c.vocab_size));
}

function logitsOf(model: Llama, ids: number[][]): number[][][] {
  return tf.tidy(() => model.call(tf.tensor2d(ids, [ids.length, (ids[0] as number[]).length], 'int32'), createRunContext()).arraySync() as number[][][]);
}

function maxDiff(a: number[][], b: number[][]): number {
  let m = 0;
  a.forEach((row, i) => row.forEach((v, j) => (m = Math.max(m, Math.abs(v - ((b[i] as number[])[j] as number))))));
  return m;
}

beforeAll(async () => {
  await useBackend('cpu');
});
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('llama config', () => {
  it('fills HF defaults and counts parameters', () => {
    expect(SMALL.head_dim).toBe(4);
    expect(SMALL.tie_word_embeddings).toBe(false);
    // tiny host (data-and-models §2.6): 790,528 linear params
    const tiny = llamaConfig({ vocab_size: 256, hidden_size: 128, intermediate_size: 344, num_hidden_layers: 4, num_attention_heads: 4 });
    expect(llamaLinearParams(tiny)).toBe(790528);
    const m = createLlama(SMALL, { seed: 1 });
    expect(m.paramCount()).toBe(llamaParamCount(SMALL));
    m.dispose();
  });

  it('rejects invalid and unsupported configs with the field named', () => {
    expect(() => llamaConfig({ vocab_size: 10, hidden_size: 16, intermediate_size: 8, num_hidden_layers: 1, num_attention_heads: 4, num_key_value_heads: 3 })).toThrow(/num_key_value_heads/);
    expect(() => llamaConfig({ vocab_size: 0, hidden_size: 16, intermediate_size: 8, num_hidden_layers: 1, num_attention_heads: 4 })).toThrow(ConfigError);
    expect(() => llamaConfigFromHf({ ...hfConfigJson(SMALL), rope_scaling: { type: 'linear', factor: 2 } })).toThrow(/rope_scaling/);
    expect(() => llamaConfigFromHf({ ...hfConfigJson(SMALL), attention_bias: true })).toThrow(/attention_bias/);
    expect(() => llamaConfigFromHf({ ...hfConfigJson(SMALL), hidden_act: 'gelu' })).toThrow(/hidden_act/);
  });
});

describe('llama forward', () => {
  it('module paths let passes find q/k/v/o and gate/up/down per block', () => {
    const m = createLlama(SMALL, { seed: 2 });
    const linears = m.select({ kinds: ['linear'] }).map(([p]) => p);
    expect(linears).toEqual([
      ...[0, 1].flatMap((i) => ['q', 'k', 'v', 'o'].map((n) => `layers.${i}.attn.${n}`).concat(['gate', 'up', 'down'].map((n) => `layers.${i}.mlp.${n}`))),
      'head',
    ]);
    expect(m.select({ kinds: ['llama.block'] }).map(([p]) => p)).toEqual(['layers.0', 'layers.1']);
    expect(m.get('layers.1.attn.k').config).toMatchObject({ inFeatures: 16, outFeatures: 8, bias: false });
    m.dispose();
  });

  for (const tied of [false, true]) {
    it(`equals a plain-loop HF reference forward (GQA, RoPE, causal; ${tied ? 'tied' : 'untied'} embeddings)`, async () => {
      const c = llamaConfig({ ...SMALL, tie_word_embeddings: tied });
      const tensors = hfTensors(c, 10 + Number(tied));
      const dir = tempDir();
      writeHf(dir, c, tensors);
      const m = await loadHfLlama(dir);
      const ids = [
        [3, 17, 0, 22, 9, 9, 14],
        [5, 1, 2, 11, 20, 7, 3],
      ];
      const got = logitsOf(m, ids);
      ids.forEach((row, b) => {
        const ref = referenceLogits(c, tensors, row);
        expect(maxDiff(got[b] as number[][], ref)).toBeLessThan(2e-4);
      });
      m.dispose();
    });
  }

  it('is causal: changing a later token leaves earlier logits unchanged', () => {
    const m = createLlama(SMALL, { seed: 3 });
    const a = logitsOf(m, [[1, 2, 3, 4, 5, 6]])[0] as number[][];
    const b = logitsOf(m, [[1, 2, 3, 19, 5, 6]])[0] as number[][];
    expect(maxDiff(a.slice(0, 3), b.slice(0, 3))).toBe(0);
    expect(maxDiff(a.slice(3), b.slice(3))).toBeGreaterThan(1e-3);
    m.dispose();
  });

  it('incremental decoding with the K/V cache in ctx.state equals the full forward, and dispose frees it', () => {
    const m = createLlama(SMALL, { seed: 4 });
    const ids = [
      [4, 8, 15, 16, 2, 1, 0, 9],
      [1, 1, 2, 3, 5, 8, 13, 21],
    ];
    const full = logitsOf(m, ids);
    const before = tf.memory().numTensors;
    const ctx = createRunContext();
    const chunks = [
      [0, 3],
      [3, 4],
      [4, 7],
      [7, 8],
    ];
    const parts: number[][][][] = [];
    for (const [s, e] of chunks) {
      const slice = ids.map((r) => r.slice(s, e));
      parts.push(tf.tidy(() => m.call({ ids: tf.tensor2d(slice, [2, (e as number) - (s as number)], 'int32'), cache: true }, ctx).arraySync() as number[][][]));
      expect(llamaCacheLength(ctx)).toBe(e);
    }
    expect(ctx.state.has(LLAMA_CACHE_KEY)).toBe(true);
    for (let b = 0; b < 2; b++) {
      const inc = parts.flatMap((p) => p[b] as number[][]);
      expect(maxDiff(inc, full[b] as number[][])).toBeLessThan(1e-5);
    }
    ctx.state.dispose();
    expect(tf.memory().numTensors).toBe(before);
    // a batch of another size against the same cache is refused
    const ctx2 = createRunContext();
    tf.tidy(() => m.call({ ids: tf.tensor2d([[1, 2]], [1, 2], 'int32'), cache: 'c' }, ctx2));
    expect(() => tf.tidy(() => m.call({ ids: tf.tensor2d([[1], [2]], [2, 1], 'int32'), cache: 'c' }, ctx2))).toThrow(/holds 1 sequences/);
    ctx2.state.dispose();
    m.dispose();
  });

  it('reports analytic FLOPs per path: 2·tokens·params for every linear', () => {
    const m = createLlama(SMALL, { seed: 11 });
    const { byPath } = measureFlops(m, (ctx) => m.call(tf.zeros([2, 5], 'int32'), ctx));
    const tokens = 10;
    let linear = 0;
    for (const [path, mod] of m.select({ kinds: ['linear'] })) {
      const f = byPath.get(path);
      expect(f?.forward).toBe(2 * tokens * mod.paramCount());
      linear += f?.forward ?? 0;
    }
    expect(linear).toBe(2 * tokens * (llamaLinearParams(SMALL) + 16 * 23));
    expect(byPath.get('layers.0.attn')?.forward).toBeGreaterThan(0);
    m.dispose();
  });

  it('rejects ids that are not int32 [B, T]', () => {
    const m = createLlama(SMALL, { seed: 5 });
    expect(() => m.call(tf.tensor2d([[1, 2]], [1, 2], 'float32'), createRunContext())).toThrow(/int32 token ids/);
    expect(() => m.call(tf.tensor1d([1, 2], 'int32'), createRunContext())).toThrow(/\[B, T\]/);
    m.dispose();
  });

  it('gradients match central finite differences along a random direction', () => {
    const c = llamaConfig({ ...SMALL, num_hidden_layers: 1 });
    const m = createLlama(c, { seed: 6 });
    const ctx = createRunContext({ mode: 'train' });
    const ids = tf.tensor2d([[3, 1, 4, 1, 5, 9]], [1, 6], 'int32');
    const r = tf.tensor3d(new Rng(7).normalArray(6 * c.vocab_size), [1, 6, c.vocab_size]);
    const params = [...m.namedParams()];
    const loss = (): tf.Scalar => tf.sum(tf.mul(tf.tanh(m.call(ids, ctx)), r));
    const { grads } = tf.variableGrads(loss, params.map(([, p]) => p.variable));
    const rng = new Rng(8);
    const dirs = params.map(([, p]) => tf.tensor(rng.normalArray(p.size), p.shape));
    const analytic = params.reduce((acc, [, p], i) => acc + (tf.sum(tf.mul(grads[p.variable.name] as tf.Tensor, dirs[i] as tf.Tensor)).dataSync()[0] as number), 0);
    const orig = params.map(([, p]) => tf.clone(p.variable));
    const at = (eps: number): number => {
      params.forEach(([, p], i) => p.variable.assign(tf.add(orig[i] as tf.Tensor, tf.mul(dirs[i] as tf.Tensor, eps))));
      return tf.tidy(() => loss().dataSync()[0] as number);
    };
    const eps = 1e-3;
    const numeric = (at(eps) - at(-eps)) / (2 * eps);
    expect(Math.abs(numeric - analytic) / Math.abs(analytic)).toBeLessThan(2e-2);
    m.dispose();
  });

  it('follows replaced children (a pass swapping a Linear) and round-trips through save/load', async () => {
    const m = createLlama(SMALL, { seed: 9 });
    const ids = [[2, 7, 1, 8, 2, 8]];
    const before = logitsOf(m, ids);
    const clone = await cloneModel(m);
    expect(maxDiff((logitsOf(clone as Llama, ids)[0] as number[][]), before[0] as number[][])).toBe(0);
    const zero = new Linear({ inFeatures: 24, outFeatures: 16, bias: false }, { rng: new Rng(0) });
    zero.param('weight').assign(tf.zeros([24, 16]));
    const old = m.replace('layers.1.mlp.down', zero);
    const after = logitsOf(m, ids);
    expect(maxDiff(after[0] as number[][], before[0] as number[][])).toBeGreaterThan(1e-3);
    old.dispose();
    m.dispose();
    clone.dispose();
  });
});

describe('loadHfLlama', () => {
  it('loads unsharded and sharded F32 checkpoints to the same, transposed weights', async () => {
    const tensors = hfTensors(SMALL, 20);
    const d1 = tempDir();
    const d3 = tempDir();
    writeHf(d1, SMALL, tensors);
    writeHf(d3, SMALL, tensors, 3);
    const a = await loadHfLlama(d1);
    const b = await loadHfLlama(d3, { seed: 99 });
    const q = rawToFloat32(tensors.get('model.layers.1.self_attn.q_proj.weight') as RawTensor); // [16 out, 16 in]
    const ours = a.get('layers.1.attn.q').param('weight').variable.dataSync(); // [in, out]
    expect(ours[3 * 16 + 5]).toBe(q[5 * 16 + 3]);
    const gate = rawToFloat32(tensors.get('model.layers.0.mlp.gate_proj.weight') as RawTensor); // [24, 16]
    const g = a.get('layers.0.mlp.gate').param('weight').variable.dataSync(); // [16, 24]
    expect(g[7 * 24 + 20]).toBe(gate[20 * 16 + 7]);
    const pb = [...b.namedParams()];
    [...a.namedParams()].forEach(([path, x], i) => {
      const other = pb[i];
      expect(other?.[0]).toBe(path);
      expect(Array.from(other?.[1].variable.dataSync() ?? [])).toEqual(Array.from(x.variable.dataSync()));
    });
    a.dispose();
    b.dispose();
  });

  for (const dtype of ['BF16', 'F16'] as const) {
    it(`loads ${dtype} tensors as their exact float32 values and matches the reference forward`, async () => {
      const tensors = hfTensors(SMALL, 30, dtype);
      const dir = tempDir();
      writeHf(dir, SMALL, tensors, 2);
      const m = await loadHfLlama(dir);
      const raw = rawToFloat32(tensors.get('model.embed_tokens.weight') as RawTensor);
      expect(Array.from(m.get('embed').param('weight').variable.dataSync())).toEqual(Array.from(raw));
      const ids = [1, 5, 9, 2, 22];
      expect(maxDiff(logitsOf(m, [ids])[0] as number[][], referenceLogits(SMALL, tensors, ids))).toBeLessThan(2e-4);
      m.dispose();
    });
  }

  it('names missing, unexpected and mis-shaped tensors', async () => {
    const t1 = hfTensors(SMALL, 40);
    t1.delete('model.layers.1.mlp.up_proj.weight');
    t1.set('model.layers.0.self_attn.q_proj.bias', rawFromFloat32(new Array(16).fill(0), [16]));
    const d1 = tempDir();
    writeHf(d1, SMALL, t1);
    const err = await loadHfLlama(d1).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FormatError);
    expect(String(err)).toMatch(/missing tensors \(1\): model\.layers\.1\.mlp\.up_proj\.weight/);
    expect(String(err)).toMatch(/unexpected tensors \(1\): model\.layers\.0\.self_attn\.q_proj\.bias/);

    const t2 = hfTensors(SMALL, 41);
    t2.set('model.layers.0.self_attn.k_proj.weight', rawFromFloat32(new Array(16 * 16).fill(0), [16, 16]));
    const d2 = tempDir();
    writeHf(d2, SMALL, t2, 2);
    await expect(loadHfLlama(d2)).rejects.toThrow(/k_proj\.weight: expected shape \[8, 16\], found \[16, 16\]/);

    const d3 = tempDir();
    writeFileSync(join(d3, 'config.json'), JSON.stringify(hfConfigJson(SMALL)));
    await expect(loadHfLlama(d3)).rejects.toThrow(/model\.safetensors or model\.safetensors\.index\.json/);
  });

  it('ignores lm_head.weight of a tied model and RoPE inv_freq buffers', async () => {
    const c = llamaConfig({ ...SMALL, tie_word_embeddings: true });
    const t = hfTensors(c, 50, 'F32', true);
    t.set('model.layers.0.self_attn.rotary_emb.inv_freq', rawFromFloat32([1, 0.1], [2]));
    const dir = tempDir();
    writeHf(dir, c, t);
    const m = await loadHfLlama(dir);
    expect(m.children.has('head')).toBe(false);
    expect(maxDiff(logitsOf(m, [[0, 1, 2]])[0] as number[][], referenceLogits(c, t, [0, 1, 2]))).toBeLessThan(2e-4);
    m.dispose();
  });
});

describe('generation and evaluation', () => {
  let model: Llama;
  beforeAll(() => {
    model = createLlama({ ...SMALL, vocab_size: 256 }, { seed: 60 });
  });
  afterAll(() => model.dispose());

  it('greedy generate equals repeated argmax of the full forward; sampling is seeded', () => {
    const prompt = [72, 101, 108];
    const before = tf.memory().numTensors;
    const got = generate(model, prompt, { maxNewTokens: 6 });
    expect(tf.memory().numTensors).toBe(before);
    const seq = [...prompt];
    for (let i = 0; i < 6; i++) {
      const last = (logitsOf(model, [seq])[0] as number[][])[seq.length - 1] as number[];
      seq.push(last.indexOf(Math.max(...last)));
    }
    expect(got).toEqual(seq.slice(prompt.length));
    const s1 = generate(model, prompt, { maxNewTokens: 12, temperature: 1.5, seed: 3 });
    expect(generate(model, prompt, { maxNewTokens: 12, temperature: 1.5, seed: 3 })).toEqual(s1);
    expect(generate(model, prompt, { maxNewTokens: 12, temperature: 1.5, seed: 4 })).not.toEqual(s1);
    const k1 = generate(model, prompt, { maxNewTokens: 12, temperature: 1, topK: 1, seed: 5 });
    expect(k1).toEqual(generate(model, prompt, { maxNewTokens: 12 }));
  });

  it('bitsPerByte scores every byte once, equals summed target log-probs, and is 8 for a uniform model', () => {
    const bytes = Uint8Array.from({ length: 70 }, (_, i) => (i * 37 + 11) % 256);
    const r = bitsPerByte(model, bytes, { window: 16, stride: 16, batchSize: 3 });
    expect(r.tokens).toBe(69);
    // the same targets by hand: windows at 0, 16, 32, 48 and a last one ending at byte 69
    let nats = 0;
    for (const s of [0, 16, 32, 48]) {
      const lp = targetLogProbs(model, Int32Array.from(bytes.subarray(s, s + 16)), Int32Array.from(bytes.subarray(s + 1, s + 17)), 1, 16);
      nats -= lp.reduce((a, b) => a + b, 0);
    }
    const last = targetLogProbs(model, Int32Array.from(bytes.subarray(53, 69)), Int32Array.from(bytes.subarray(54, 70)), 1, 16);
    for (let t = 11; t < 16; t++) nats -= last[t] as number; // targets 65…69
    expect(r.nll).toBeCloseTo(nats / 69, 5);
    expect(r.bitsPerByte).toBeCloseTo(r.nll / Math.LN2, 10);
    const sliding = bitsPerByte(model, bytes, { window: 16, stride: 4 });
    expect(sliding.tokens).toBe(69);
    const uniform = createLlama({ ...SMALL, vocab_size: 256 }, { seed: 61 });
    uniform.get('head').param('weight').assign(tf.zeros([16, 256]));
    expect(bitsPerByte(uniform, bytes, { window: 16 }).bitsPerByte).toBeCloseTo(8, 5);
    uniform.dispose();
    expect(() => bitsPerByte(model, bytes.subarray(0, 10), { window: 16 })).toThrow(/at least 17 bytes/);
  });

  it('unigram baseline: −log₂ of smoothed train frequencies', () => {
    const train = Uint8Array.from([1, 1, 1, 2]);
    const evalBytes = Uint8Array.from([9, 1, 2]);
    // counts with add-1: byte 1 → 4, byte 2 → 2, total 256 + 4
    expect(unigramBitsPerByte(train, evalBytes)).toBeCloseTo((-Math.log2(4 / 260) - Math.log2(2 / 260)) / 2, 12);
  });

  it('multiple choice picks the highest continuation log-likelihood; the task is deterministic', () => {
    const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
    const records = ['the quick brown fox jumps over the lazy dog again', 'a journey of a thousand miles begins with one step', 'all that glitters is not gold, said the old man', 'to be or not to be, that is the question here', 'short'].map(enc);
    const items = continuationTask(records, { choices: 3, items: 4, seed: 1, minBytes: 20 });
    expect(items).toHaveLength(4);
    expect(continuationTask(records, { choices: 3, items: 4, seed: 1, minBytes: 20 })).toEqual(items);
    for (const it of items) {
      expect(it.choices).toHaveLength(3);
      const truth = records.find((r) => Buffer.from(r).toString().startsWith(Buffer.from(it.context as Uint8Array).toString()));
      expect(truth).toBeDefined();
      expect(Buffer.from([...(it.context as Uint8Array), ...(it.choices[it.answer] as Uint8Array)]).toString()).toBe(Buffer.from(truth as Uint8Array).toString());
    }
    const r = multipleChoiceAccuracy(model, items, { window: 32 });
    r.scores.forEach((s, i) => {
      expect(r.predictions[i]).toBe(s.indexOf(Math.max(...s)));
      const item = items[i];
      const direct = continuationLogLikelihood(model, item?.context ?? [], item?.choices[0] ?? [1], 32).sum;
      expect(s[0]).toBeCloseTo(direct, 6);
    });
    expect(r.accuracy).toBe(r.predictions.filter((p, i) => p === items[i]?.answer).length / items.length);
  });

  it('decodeLatency times batch-1 cached decoding and frees its state', async () => {
    const before = tf.memory().numTensors;
    const r = await decodeLatency(model, { tokens: 5, warmup: 1, prompt: [1, 2, 3] });
    expect(r.times).toHaveLength(5);
    expect(r.msPerToken).toBeGreaterThan(0);
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('llama on wasm', () => {
  it('matches the cpu logits and trains (loss falls on a repeated pattern)', async () => {
    const c = llamaConfig({ ...SMALL, vocab_size: 32 });
    const ids = [[1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8]];
    const mCpu = createLlama(c, { seed: 70 });
    const ref = logitsOf(mCpu, ids);
    mCpu.dispose();
    await useBackend('wasm');
    try {
      const m = createLlama(c, { seed: 70 });
      expect(maxDiff(logitsOf(m, ids)[0] as number[][], ref[0] as number[][])).toBeLessThan(1e-4);
      const x = tf.tensor2d(ids[0]?.slice(0, 15) ?? [], [1, 15], 'int32');
      const y = tf.tensor2d(ids[0]?.slice(1) ?? [], [1, 15], 'int32');
      const ctx = createRunContext({ mode: 'train' });
      const opt = tf.train.adam(0.01);
      const vars = [...m.namedParams()].map(([, p]) => p.variable);
      const lossOf = (): tf.Scalar => tf.losses.softmaxCrossEntropy(tf.oneHot(tf.reshape(y, [-1]), 32), tf.reshape(m.call(x, ctx), [-1, 32]));
      const first = tf.tidy(() => lossOf().dataSync()[0] as number);
      for (let i = 0; i < 30; i++) tf.tidy(() => {
        opt.minimize(lossOf, false, vars);
      });
      const last = tf.tidy(() => lossOf().dataSync()[0] as number);
      expect(last).toBeLessThan(first * 0.5);
      m.dispose();
    } finally {
      await useBackend('cpu');
    }
  });
});

/**
 * Batch-1 cached decoding in chunks [s, e) (each with its own `fast` flag) → logits [T, vocab] of
 * the one sequence; the context's state is disposed and checked freed.
 */
function decodeChunks(m: Llama, seq: number[], plan: Array<[number, number, boolean]>): number[][] {
  const ctx = createRunContext();
  const out: number[][] = [];
  const before = tf.memory().numTensors;
  for (const [s, e, fast] of plan) {
    const rows = tf.tidy(() => m.call({ ids: tf.tensor2d([seq.slice(s, e)], [1, e - s], 'int32'), cache: true, fast }, ctx).arraySync() as number[][][]);
    out.push(...(rows[0] as number[][]));
    expect(llamaCacheLength(ctx)).toBe(e);
  }
  ctx.state.dispose();
  expect(tf.memory().numTensors).toBeLessThanOrEqual(before);
  return out;
}

describe('llama batch-1 decode fast path', () => {
  // GQA 6 query / 2 kv heads (and MHA below), head_dim 8, RoPE base 500: the grouped masking matters.
  const GQA = llamaConfig({ ...SMALL, hidden_size: 48, num_attention_heads: 6, num_key_value_heads: 2, intermediate_size: 40 });
  const MHA = llamaConfig({ ...SMALL, hidden_size: 32, num_attention_heads: 4, num_key_value_heads: 4 });
  const seq = [4, 8, 15, 16, 2, 1, 0, 9, 22, 7, 3, 5];
  const chunks = (fast: boolean | ((i: number) => boolean)): Array<[number, number, boolean]> =>
    (
      [
        [0, 5],
        [5, 6],
        [6, 7],
        [7, 10],
        [10, 11],
        [11, 12],
      ] as Array<[number, number]>
    ).map(([s, e], i) => [s, e, typeof fast === 'function' ? fast(i) : fast]);

  for (const backend of ['cpu', 'wasm'] as const) {
    it(`equals the full forward and the general path, prefill and single tokens, shared cache (${backend})`, async () => {
      await useBackend(backend);
      try {
        for (const cfg of [GQA, MHA]) {
          const m = createLlama(cfg, { seed: 31 });
          const full = logitsOf(m, [seq])[0] as number[][];
          const general = decodeChunks(m, seq, chunks(false));
          const fast = decodeChunks(m, seq, chunks(true));
          // the two paths read and extend each other's cache
          const mixed = decodeChunks(m, seq, chunks((i) => i % 2 === 0));
          expect(maxDiff(general, full)).toBeLessThan(2e-5);
          expect(maxDiff(fast, full)).toBeLessThan(2e-5);
          expect(maxDiff(fast, general)).toBeLessThan(2e-5);
          expect(maxDiff(mixed, full)).toBeLessThan(2e-5);
          // and it is the same function, not a near miss: a different token changes the logits
          const other = decodeChunks(m, [...seq.slice(0, 11), 6], chunks(true));
          expect(maxDiff([other[11] as number[]], [fast[11] as number[]])).toBeGreaterThan(1e-3);
          m.dispose();
        }
      } finally {
        await useBackend('cpu');
      }
    });
  }

  it('follows replaced children: a replaced q (a Linear subclass) runs its own forward on the fast path (wasm)', async () => {
    await useBackend('wasm');
    try {
      replacedChild();
    } finally {
      await useBackend('cpu');
    }
  });

  function replacedChild(): void {
    const m = createLlama(GQA, { seed: 32 });
    const ref = decodeChunks(m, seq, chunks(false));
    // A Linear subclass that doubles its output: the fast path must call it (not read its weight).
    class Doubled extends Linear {
      override forward(x: tf.Tensor, ctx: ReturnType<typeof createRunContext>): tf.Tensor {
        return tf.mul(super.forward(x, ctx), 2);
      }
    }
    const q = m.get('layers.1.attn.q') as Linear;
    const d = new Doubled({ inFeatures: q.config.inFeatures, outFeatures: q.config.outFeatures, bias: false }, { rng: new Rng(0) });
    d.param('weight').variable.assign(tf.mul(q.weight, 0.5));
    m.replace('layers.1.attn.q', d).dispose();
    expect(maxDiff(decodeChunks(m, seq, chunks(true)), ref)).toBeLessThan(2e-5);
    m.dispose();
  }

  it('is not taken under a gradient tape: cached forwards inside variableGrads give the uncached gradients', () => {
    const m = createLlama(SMALL, { seed: 33 });
    const vars = [...m.namedParams()].map(([, p]) => p.variable);
    const ids = [[3, 1, 4, 1, 5]];
    const gradsOf = (cache: boolean): number[] =>
      tf.tidy(() => {
        const ctx = createRunContext();
        let seen = false;
        const { grads } = tf.variableGrads(() => {
          seen = gradientTapeActive();
          return tf.sum(tf.square(m.call({ ids: tf.tensor2d(ids, [1, 5], 'int32'), cache }, ctx)));
        }, vars);
        ctx.state.dispose();
        expect(seen).toBe(true);
        return Object.values(grads).flatMap((g) => Array.from(g.dataSync()));
      });
    expect(gradientTapeActive()).toBe(false);
    const a = gradsOf(false);
    const b = gradsOf(true);
    expect(a.length).toBeGreaterThan(0);
    expect(Math.max(...a.map((v, i) => Math.abs(v - (b[i] as number))))).toBeLessThan(1e-5);
    expect(Math.max(...a.map(Math.abs))).toBeGreaterThan(1e-3);
    m.dispose();
  });
});

describe('fortunes helpers', () => {
  it('split a fortunes directory by record, memoised, as @leanpass/data does', () => {
    const dir = tempDir();
    const records = Array.from({ length: 60 }, (_, i) => `fortune number ${i}: ${'x'.repeat(i % 7)}`);
    writeFileSync(join(dir, 'test'), records.join('\n%\n') + '\n');
    const c = fortunesCorpus({ dir });
    expect(fortunesCorpus({ dir })).toBe(c);
    const total = c.splits.train.length + c.splits.val.length + c.splits.test.length;
    expect(total).toBe(60);
    const val = fortunesStream('val', { dir });
    const expected = c.splits.val.map((r) => Buffer.from(r).toString() + '\n%\n').join('');
    expect(Buffer.from(val).toString()).toBe(expected);
  });
});
