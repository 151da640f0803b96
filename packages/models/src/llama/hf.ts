import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { FormatError, rawToFloat32, readSafetensorsFile, type RawTensor } from '@leanpass/core';
import { llamaConfigFromHf, type LlamaConfig } from './config.js';
import { createLlama, type Llama } from './model.js';

/** One HF tensor of a LLaMA checkpoint and where it goes in our tree. */
export interface HfTensorSpec {
  /** HF name, e.g. `model.layers.0.self_attn.q_proj.weight`. */
  hf: string;
  /** Our parameter path, e.g. `layers.0.attn.q.weight`. */
  path: string;
  /** Shape as HF stores it ([out, in] for linears). */
  hfShape: number[];
  /** HF linears are [out, in]; ours are [in, out]. */
  transpose: boolean;
  /** Present in the checkpoint but not loaded (lm_head.weight of a tied model). */
  optional?: boolean;
}

/** HF's tensor names for a config and the parameters they map to (HF `LlamaForCausalLM` layout). */
export function hfLlamaTensors(c: LlamaConfig): HfTensorSpec[] {
  const d = c.hidden_size;
  const q = c.num_attention_heads * c.head_dim;
  const kv = c.num_key_value_heads * c.head_dim;
  const F = c.intermediate_size;
  const specs: HfTensorSpec[] = [{ hf: 'model.embed_tokens.weight', path: 'embed.weight', hfShape: [c.vocab_size, d], transpose: false }];
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const h = `model.layers.${i}`;
    const o = `layers.${i}`;
    specs.push(
      { hf: `${h}.input_layernorm.weight`, path: `${o}.attnNorm.weight`, hfShape: [d], transpose: false },
      { hf: `${h}.self_attn.q_proj.weight`, path: `${o}.attn.q.weight`, hfShape: [q, d], transpose: true },
      { hf: `${h}.self_attn.k_proj.weight`, path: `${o}.attn.k.weight`, hfShape: [kv, d], transpose: true },
      { hf: `${h}.self_attn.v_proj.weight`, path: `${o}.attn.v.weight`, hfShape: [kv, d], transpose: true },
      { hf: `${h}.self_attn.o_proj.weight`, path: `${o}.attn.o.weight`, hfShape: [d, q], transpose: true },
      { hf: `${h}.post_attention_layernorm.weight`, path: `${o}.mlpNorm.weight`, hfShape: [d], transpose: false },
      { hf: `${h}.mlp.gate_proj.weight`, path: `${o}.mlp.gate.weight`, hfShape: [F, d], transpose: true },
      { hf: `${h}.mlp.up_proj.weight`, path: `${o}.mlp.up.weight`, hfShape: [F, d], transpose: true },
      { hf: `${h}.mlp.down_proj.weight`, path: `${o}.mlp.down.weight`, hfShape: [d, F], transpose: true },
    );
  }
  specs.push({ hf: 'model.norm.weight', path: 'norm.weight', hfShape: [d], transpose: false });
  specs.push({ hf: 'lm_head.weight', path: 'head.weight', hfShape: [c.vocab_size, d], transpose: true, optional: c.tie_word_embeddings });
  return specs;
}

/** Buffers HF checkpoints carry that are not parameters (older exports save RoPE's inv_freq). */
const IGNORED = /(^|\.)rotary_emb\.inv_freq$/;

/** Transposes a row-major [rows, cols] array into a new [cols, rows] one. */
export function transpose2d(src: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) out[c * rows + r] = src[base + c] as number;
  }
  return out;
}

export interface LoadHfLlamaOptions {
  /** Seed of the initialisation that the loaded weights overwrite (irrelevant to the result). */
  seed?: number;
}

/**
 * Loads a Hugging Face LLaMA checkpoint directory: `config.json` plus `model.safetensors`, or a
 * sharded `model.safetensors.index.json` (its `weight_map` names each tensor's shard). Accepts F32,
 * F16 and BF16 tensors (converted to float32). Linear weights are transposed from HF's [out, in] to
 * our [in, out]. Fails with a FormatError naming every missing, unexpected, mis-shaped or non-float
 * tensor; `lm_head.weight` is ignored when the config ties the embeddings, and RoPE `inv_freq`
 * buffers always are.
 */
export async function loadHfLlama(dir: string, opts: LoadHfLlamaOptions = {}): Promise<Llama> {
  const cfgPath = join(dir, 'config.json');
  if (!existsSync(cfgPath)) throw new FormatError(`expected an HF checkpoint directory with config.json, found none`, dir);
  let json: unknown;
  try {
    json = JSON.parse(await readFile(cfgPath, 'utf8'));
  } catch (e) {
    throw new FormatError(`expected JSON, found a parse error: ${(e as Error).message}`, cfgPath);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new FormatError('expected a JSON object', cfgPath);
  const config = llamaConfigFromHf(json as Record<string, unknown>);

  // which file holds each tensor
  const single = join(dir, 'model.safetensors');
  const indexPath = join(dir, 'model.safetensors.index.json');
  const where = new Map<string, string>();
  const files = new Map<string, Map<string, RawTensor>>();
  if (existsSync(single)) {
    const st = await readSafetensorsFile(single);
    files.set(single, st.tensors);
    for (const name of st.tensors.keys()) where.set(name, single);
  } else if (existsSync(indexPath)) {
    let index: unknown;
    try {
      index = JSON.parse(await readFile(indexPath, 'utf8'));
    } catch (e) {
      throw new FormatError(`expected JSON, found a parse error: ${(e as Error).message}`, indexPath);
    }
    const map = (index as { weight_map?: unknown } | null)?.weight_map;
    if (typeof map !== 'object' || map === null || Array.isArray(map)) throw new FormatError('expected an object field weight_map {tensor name: shard file}', indexPath);
    for (const [name, file] of Object.entries(map as Record<string, unknown>)) {
      if (typeof file !== 'string' || file.includes('/') || file.includes('\\')) throw new FormatError(`expected a shard file name in the same directory, found ${JSON.stringify(file)}`, `weight_map.${name}`);
      where.set(name, join(dir, file));
    }
  } else {
    throw new FormatError('expected model.safetensors or model.safetensors.index.json, found neither', dir);
  }

  const specs = hfLlamaTensors(config);
  const known = new Set(specs.map((s) => s.hf));
  const missing = specs.filter((s) => !s.optional && !where.has(s.hf)).map((s) => s.hf);
  const unexpected = [...where.keys()].filter((n) => !known.has(n) && !IGNORED.test(n));
  const problems: string[] = [];
  if (missing.length) problems.push(`missing tensors (${missing.length}): ${missing.join(', ')}`);
  if (unexpected.length) problems.push(`unexpected tensors (${unexpected.length}): ${unexpected.join(', ')}`);
  if (problems.length) throw new FormatError(`checkpoint does not match a LLaMA with this config.json:\n  ${problems.join('\n  ')}`, dir);

  const tensorOf = async (name: string): Promise<RawTensor> => {
    const file = where.get(name) as string;
    let t = files.get(file);
    if (!t) {
      if (!existsSync(file)) throw new FormatError(`shard '${file}' named by weight_map for ${name} does not exist`, indexPath);
      t = (await readSafetensorsFile(file)).tensors;
      files.set(file, t);
    }
    const raw = t.get(name);
    if (!raw) throw new FormatError(`weight_map puts ${name} in ${file}, which does not hold it`, indexPath);
    return raw;
  };

  const load = specs.filter((s) => !(s.optional && config.tie_word_embeddings));
  const values = new Map<string, Float32Array>();
  const bad: string[] = [];
  for (const s of load) {
    const raw = await tensorOf(s.hf);
    if (raw.dtype !== 'F32' && raw.dtype !== 'F16' && raw.dtype !== 'BF16') {
      bad.push(`${s.hf}: expected F32, F16 or BF16, found ${raw.dtype}`);
      continue;
    }
    if (raw.shape.length !== s.hfShape.length || raw.shape.some((v, i) => v !== s.hfShape[i])) {
      bad.push(`${s.hf}: expected shape [${s.hfShape.join(', ')}], found [${raw.shape.join(', ')}]`);
      continue;
    }
    const v = rawToFloat32(raw, s.hf);
    values.set(s.path, s.transpose ? transpose2d(v, s.hfShape[0] as number, s.hfShape[1] as number) : v);
  }
  if (bad.length) throw new FormatError(`checkpoint tensors do not fit the config (${bad.length}):\n  ${bad.join('\n  ')}`, dir);

  const model = createLlama(config, { seed: opts.seed ?? 0 });
  const params = new Map(model.namedParams());
  for (const [path, v] of values) {
    const p = params.get(path);
    if (!p) throw new FormatError(`internal mapping names no parameter '${path}'`, dir);
    tf.tidy(() => p.assign(tf.tensor(v, p.shape, 'float32'), path));
  }
  return model;
}
