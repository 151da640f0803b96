import { ConfigError, type ConfigIssue, type JsonObject } from '@leanpass/core';

/**
 * The fields of Hugging Face's `LlamaConfig` that the architecture depends on (same names, same
 * meaning). `head_dim` defaults to hidden_size / num_attention_heads as in HF.
 */
export interface LlamaConfig extends JsonObject {
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  head_dim: number;
  rms_norm_eps: number;
  rope_theta: number;
  tie_word_embeddings: boolean;
  max_position_embeddings: number;
}

/** What `llamaConfig` accepts: every field but the sizes is optional (HF's defaults, head_dim derived). */
export type LlamaConfigInput = Pick<LlamaConfig, 'vocab_size' | 'hidden_size' | 'intermediate_size' | 'num_hidden_layers' | 'num_attention_heads'> &
  Partial<Omit<LlamaConfig, 'vocab_size' | 'hidden_size' | 'intermediate_size' | 'num_hidden_layers' | 'num_attention_heads'>>;

/** The byte-level tiny host of data-and-models §2.6: vocab 256, d 128, 4 layers, 4 heads, SwiGLU 344, context 128, untied head. */
export const LLAMA_TINY_CONFIG: Readonly<LlamaConfig> = Object.freeze({
  vocab_size: 256,
  hidden_size: 128,
  intermediate_size: 344,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 4,
  head_dim: 32,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  tie_word_embeddings: false,
  max_position_embeddings: 128,
});

function posInt(issues: ConfigIssue[], cfg: Record<string, unknown>, key: string): number {
  const v = cfg[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
    issues.push({ path: key, message: `expected a positive integer, found ${JSON.stringify(v)}` });
    return 1;
  }
  return v;
}

function posNum(issues: ConfigIssue[], cfg: Record<string, unknown>, key: string, dflt: number): number {
  const v = cfg[key] ?? dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    issues.push({ path: key, message: `expected a finite number > 0, found ${JSON.stringify(v)}` });
    return dflt;
  }
  return v;
}

/**
 * Validates and completes a LLaMA config (HF field names). Unknown keys are ignored so that a whole
 * HF config.json can be passed; fields that change the architecture in ways this host does not
 * implement (biases, rope_scaling, another activation) are rejected by `llamaConfigFromHf`.
 */
export function llamaConfig(input: LlamaConfigInput | Record<string, unknown>): LlamaConfig {
  const cfg = input as Record<string, unknown>;
  const issues: ConfigIssue[] = [];
  const vocab_size = posInt(issues, cfg, 'vocab_size');
  const hidden_size = posInt(issues, cfg, 'hidden_size');
  const intermediate_size = posInt(issues, cfg, 'intermediate_size');
  const num_hidden_layers = posInt(issues, cfg, 'num_hidden_layers');
  const num_attention_heads = posInt(issues, cfg, 'num_attention_heads');
  const num_key_value_heads = cfg['num_key_value_heads'] === undefined || cfg['num_key_value_heads'] === null ? num_attention_heads : posInt(issues, cfg, 'num_key_value_heads');
  let head_dim: number;
  if (cfg['head_dim'] === undefined || cfg['head_dim'] === null) {
    head_dim = Math.floor(hidden_size / num_attention_heads);
    if (hidden_size % num_attention_heads !== 0) issues.push({ path: 'head_dim', message: `hidden_size ${hidden_size} is not divisible by num_attention_heads ${num_attention_heads}; set head_dim` });
  } else head_dim = posInt(issues, cfg, 'head_dim');
  if (head_dim % 2 !== 0) issues.push({ path: 'head_dim', message: `RoPE needs an even head_dim, found ${head_dim}` });
  if (num_attention_heads % num_key_value_heads !== 0) {
    issues.push({ path: 'num_key_value_heads', message: `num_attention_heads ${num_attention_heads} must be a multiple of num_key_value_heads, found ${num_key_value_heads}` });
  }
  const rms_norm_eps = posNum(issues, cfg, 'rms_norm_eps', 1e-6);
  const rope_theta = posNum(issues, cfg, 'rope_theta', 10000);
  if (!(rope_theta > 1)) issues.push({ path: 'rope_theta', message: `expected a number > 1, found ${rope_theta}` });
  const tie = cfg['tie_word_embeddings'] ?? false;
  if (typeof tie !== 'boolean') issues.push({ path: 'tie_word_embeddings', message: `expected a boolean, found ${JSON.stringify(tie)}` });
  const max_position_embeddings = cfg['max_position_embeddings'] === undefined ? 2048 : posInt(issues, cfg, 'max_position_embeddings');
  if (issues.length) throw new ConfigError('llama: invalid config', issues);
  return {
    vocab_size,
    hidden_size,
    intermediate_size,
    num_hidden_layers,
    num_attention_heads,
    num_key_value_heads,
    head_dim,
    rms_norm_eps,
    rope_theta,
    tie_word_embeddings: tie === true,
    max_position_embeddings,
  };
}

/**
 * A LlamaConfig from an HF config.json object. Rejects what this host does not implement:
 * attention/MLP biases, rope_scaling, an activation other than SiLU.
 */
export function llamaConfigFromHf(json: Record<string, unknown>): LlamaConfig {
  const issues: ConfigIssue[] = [];
  if (json['attention_bias'] === true) issues.push({ path: 'attention_bias', message: 'expected false (this host has no attention biases), found true' });
  if (json['mlp_bias'] === true) issues.push({ path: 'mlp_bias', message: 'expected false (this host has no MLP biases), found true' });
  if (json['rope_scaling'] !== undefined && json['rope_scaling'] !== null) {
    issues.push({ path: 'rope_scaling', message: `expected null (plain RoPE), found ${JSON.stringify(json['rope_scaling'])}` });
  }
  const act = json['hidden_act'];
  if (act !== undefined && act !== 'silu') issues.push({ path: 'hidden_act', message: `expected 'silu', found ${JSON.stringify(act)}` });
  if (issues.length) throw new ConfigError('llama: unsupported HF config', issues);
  return llamaConfig(json);
}

/** Linear parameters (q, k, v, o, gate, up, down of every block): SkipCat's compressible set. */
export function llamaLinearParams(c: LlamaConfig): number {
  const d = c.hidden_size;
  const q = c.num_attention_heads * c.head_dim;
  const kv = c.num_key_value_heads * c.head_dim;
  return c.num_hidden_layers * (d * q + 2 * d * kv + q * d + 3 * d * c.intermediate_size);
}

/** All parameters: linears, norms, embeddings and the head (absent when tied). */
export function llamaParamCount(c: LlamaConfig): number {
  const d = c.hidden_size;
  const emb = c.vocab_size * d;
  return llamaLinearParams(c) + c.num_hidden_layers * 2 * d + d + emb + (c.tie_word_embeddings ? 0 : emb);
}
