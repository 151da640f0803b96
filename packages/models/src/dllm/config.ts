import { ConfigError, type ConfigIssue, type JsonObject } from '@leanpass/core';

/**
 * Config of the LLaDA-style masked-diffusion LM (kind 'dllm'): a LLaMA without the causal mask
 * (RMSNorm, rotate-half RoPE, SwiGLU, no biases, untied head) plus its special token ids.
 */
export interface DiffusionLMConfig extends JsonObject {
  vocabSize: number;
  dim: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  /** SwiGLU hidden features. */
  hidden: number;
  /** RMSNorm epsilon. */
  eps: number;
  ropeTheta: number;
  /** The `[MASK]` id (the last id of the task vocabulary). */
  maskId: number;
  /** EOS (answers are EOS-padded; the sampler may stop on it). */
  eosId: number;
  /** Left-pad id. */
  padId: number;
  /** Longest canvas (prompt + generation) the model is meant for; checked by the sampler. */
  maxLength: number;
}

export type DiffusionLMConfigInput = Pick<DiffusionLMConfig, 'vocabSize' | 'dim' | 'layers' | 'heads' | 'hidden' | 'maskId' | 'eosId' | 'padId'> &
  Partial<Pick<DiffusionLMConfig, 'kvHeads' | 'headDim' | 'eps' | 'ropeTheta' | 'maxLength'>>;

/** The spec's small tiny host (D 64, 2 layers, F 172, 4 heads) over the 25-symbol task vocabulary. */
export const DLLM_SMALL_CONFIG: Readonly<DiffusionLMConfigInput> = Object.freeze({ vocabSize: 25, dim: 64, layers: 2, heads: 4, hidden: 172, maskId: 24, eosId: 23, padId: 22, maxLength: 48 });
/** The spec's base tiny host (D 128, 4 layers, F 344, 4 heads). */
export const DLLM_BASE_CONFIG: Readonly<DiffusionLMConfigInput> = Object.freeze({ vocabSize: 25, dim: 128, layers: 4, heads: 4, hidden: 344, maskId: 24, eosId: 23, padId: 22, maxLength: 48 });

/** Validates and completes a config; every problem is listed in the ConfigError's issues. */
export function dllmConfig(input: DiffusionLMConfigInput | Record<string, unknown>): DiffusionLMConfig {
  const cfg = input as Record<string, unknown>;
  const issues: ConfigIssue[] = [];
  const int = (key: string, min: number, dflt?: number): number => {
    const v = cfg[key] ?? dflt;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
      issues.push({ path: key, message: `expected an integer >= ${min}, found ${JSON.stringify(v)}` });
      return Math.max(min, 1);
    }
    return v;
  };
  const vocabSize = int('vocabSize', 2);
  const dim = int('dim', 1);
  const layers = int('layers', 1);
  const heads = int('heads', 1);
  const kvHeads = int('kvHeads', 1, heads);
  const hidden = int('hidden', 1);
  const headDim = int('headDim', 2, dim % heads === 0 ? dim / heads : undefined);
  if (headDim % 2 !== 0) issues.push({ path: 'headDim', message: `RoPE needs an even head dimension, found ${headDim}` });
  if (heads % kvHeads !== 0) issues.push({ path: 'kvHeads', message: `expected a divisor of heads ${heads}, found ${kvHeads}` });
  const maskId = int('maskId', 0);
  const eosId = int('eosId', 0);
  const padId = int('padId', 0);
  for (const [k, v] of [['maskId', maskId], ['eosId', eosId], ['padId', padId]] as const) {
    if (v >= vocabSize) issues.push({ path: k, message: `expected an id below vocabSize ${vocabSize}, found ${v}` });
  }
  if (new Set([maskId, eosId, padId]).size !== 3) issues.push({ path: 'maskId', message: `expected distinct mask, EOS and pad ids, found ${maskId}, ${eosId}, ${padId}` });
  const maxLength = int('maxLength', 1, 512);
  const num = (key: string, dflt: number, min: number): number => {
    const v = cfg[key] ?? dflt;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= min) {
      issues.push({ path: key, message: `expected a finite number > ${min}, found ${JSON.stringify(v)}` });
      return dflt;
    }
    return v;
  };
  const eps = num('eps', 1e-5, 0);
  const ropeTheta = num('ropeTheta', 10000, 1);
  if (issues.length) throw new ConfigError('dllm: invalid config', issues);
  return { vocabSize, dim, layers, heads, kvHeads, headDim, hidden, eps, ropeTheta, maskId, eosId, padId, maxLength };
}

/** Parameter count: embeddings, per-layer attention (q, k, v, o), SwiGLU, two norms, final norm, head. */
export function dllmParamCount(c: DiffusionLMConfig): number {
  const q = c.heads * c.headDim;
  const kv = c.kvHeads * c.headDim;
  const perLayer = c.dim * q + 2 * c.dim * kv + q * c.dim + 3 * c.dim * c.hidden + 2 * c.dim;
  return 2 * c.vocabSize * c.dim + c.layers * perLayer + c.dim;
}
