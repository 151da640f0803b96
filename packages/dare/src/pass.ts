import { ConfigError, definePass, selectOrThrow, step, type AnyModule, type PassStep, type PlanEntry } from '@leanpass/core';
import { DareAttention, canvasConfigOf, registerDareKinds } from './module.js';
import { CANVAS_KIND, DARE_KIND, PASS_NAME, PASS_VERSION, dareOptions, settingsLabel, settingsOf, usesKV, usesO, type DareOptions, type DareOptionsInput } from './options.js';

/** Kinds of hosts that are causal (autoregressive): DARE needs a bidirectional masked-diffusion LM. */
const CAUSAL_HINT = /llama|gpt|causal|decoder/i;

function plan(model: AnyModule, o: DareOptions): PlanEntry[] {
  const all = [...model.modules()].filter(([p]) => p !== '');
  const hasCanvas = all.some(([, m]) => m.kind === CANVAS_KIND);
  if (!hasCanvas && !(o.select.kinds && o.select.kinds.length)) {
    const done = all.filter(([, m]) => m.kind === DARE_KIND).map(([p]) => p);
    if (done.length) {
      throw new ConfigError(
        `${PASS_NAME}: expected '${CANVAS_KIND}' layers to rewrite, found none: ${done.length} layer(s) are already '${DARE_KIND}' (${done.slice(0, 3).join(', ')}${done.length > 3 ? ', …' : ''}); change their knobs with DareAttention.updateSettings instead of applying DARE again`,
      );
    }
    const kinds = [...new Set(all.map(([, m]) => m.kind))].sort();
    const causal = CAUSAL_HINT.test(model.kind) || all.some(([, m]) => m.kind === 'attention' && (m.config as { causal?: unknown }).causal === true);
    throw new ConfigError(
      `${PASS_NAME}: expected a bidirectional masked-diffusion LM (kind 'dllm') whose blocks use '${CANVAS_KIND}' layers, ` +
        `found a model of kind '${model.kind}'${causal ? ' (a causal, autoregressive host)' : ''} with kinds [${kinds.join(', ')}]`,
    );
  }
  const chosen = selectOrThrow(model.modules(), o.select, [CANVAS_KIND], PASS_NAME);
  const entries: PlanEntry[] = [];
  for (const [path, m] of chosen) {
    if (m.kind !== CANVAS_KIND) throw new ConfigError(`${PASS_NAME}: '${path}' is of kind '${m.kind}'; DARE rewrites '${CANVAS_KIND}' modules of a diffusion LM (kind 'dllm')`);
    const c = canvasConfigOf(m);
    const kvMacs = 2 * c.dim * c.kvHeads * c.headDim;
    entries.push({
      path,
      kind: m.kind,
      action: DARE_KIND,
      reason: `${settingsLabel(o)}: reuse ${[usesKV(o.mode) ? 'K/V' : '', usesO(o.mode) ? `attention outputs (${o.oCachePoint})` : ''].filter(Boolean).join(' and ')} of rows whose query drift (${o.metric}, ${o.reference}) is small`,
      detail: { kvMacsPerReusedRow: kvMacs, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim },
    });
  }
  return entries;
}

export const pass = definePass({
  name: PASS_NAME,
  version: PASS_VERSION,
  stage: 'inference',
  description:
    'DARE (arXiv 2605.08134): in a masked-diffusion LM sampler, reuse cached K/V rows (DARE-KV) and/or attention-output rows (DARE-O) of tokens whose query barely drifted; threshold or budget, forced refreshes, per-layer/step reuse statistics',
  options: dareOptions,
  targets: [CANVAS_KIND],
  restacks: ['@leanpass/skipcat'],
  registerKinds: registerDareKinds,
  plan: (model, o) => plan(model, o),
  build: (_entry, module, tools) => {
    const children = { q: module.child('q'), k: module.child('k'), v: module.child('v'), o: module.child('o') };
    const maskId = (tools.model.config as { maskId?: unknown }).maskId;
    return new DareAttention({ ...canvasConfigOf(module), maskId: typeof maskId === 'number' ? maskId : null, dare: settingsOf(tools.options) }, { rng: tools.rng }, children);
  },
  measure: (model, { options }) => ({
    layers: [...model.modules()].filter(([, m]) => m.kind === DARE_KIND).length,
    settings: settingsLabel(options),
  }),
});

/** A pipeline step running DARE: `pipeline(dare({ mode: 'kv', threshold: 0.01 }), …)`. */
export function dare(input: DareOptionsInput = {}): PassStep {
  return step(pass, input);
}
