import { z } from 'zod';
import { ConfigError } from './errors.js';

/**
 * Which layers a pass touches. Shared by every pass.
 * - `kinds`: module kinds to consider (empty or absent: the pass's own default kinds).
 * - `include`: path patterns; a module must match at least one (absent: every path).
 * - `exclude`: path patterns; a module matching any is skipped.
 * A pattern is a glob over dotted paths (`*` = one segment or part of it, `**` = any number of
 * segments, `?` = one character) or a regular expression written `re:<regex>` (matched against the
 * whole path).
 */
export interface LayerSelectorSpec {
  kinds?: string[] | undefined;
  include?: string[] | undefined;
  exclude?: string[] | undefined;
}

const patternSchema = z.string().min(1).superRefine((p, ctx) => {
  try {
    compilePattern(p);
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message });
  }
});

/** The zod schema passes embed in their options (`select`). */
export const layerSelectorSchema = z
  .object({
    kinds: z.array(z.string().min(1)).optional().describe('module kinds to rewrite (default: the kinds the pass knows)'),
    include: z.array(patternSchema).optional().describe('path globs or re:regex; a layer must match one'),
    exclude: z.array(patternSchema).optional().describe('path globs or re:regex; matching layers are skipped'),
  })
  .strict();

const cache = new Map<string, RegExp>();

/** Compiles a glob or `re:` pattern to an anchored RegExp. Throws ConfigError on a bad regex. */
export function compilePattern(pattern: string): RegExp {
  const hit = cache.get(pattern);
  if (hit) return hit;
  let re: RegExp;
  if (pattern.startsWith('re:')) {
    const body = pattern.slice(3);
    try {
      re = new RegExp(`^(?:${body})$`);
    } catch (e) {
      throw new ConfigError(`bad regular expression in selector pattern '${pattern}': ${(e as Error).message}`);
    }
  } else {
    let out = '';
    for (let i = 0; i < pattern.length; i++) {
      const ch = pattern[i] as string;
      if (ch === '*') {
        if (pattern[i + 1] === '*') {
          i++;
          if (pattern[i + 1] === '.') {
            i++;
            out += '(?:[^]*\\.)?';
          } else out += '[^]*';
        } else out += '[^.]*';
      } else if (ch === '?') out += '[^.]';
      else out += ch.replace(/[.+^${}()|[\]\\]/g, '\\$&');
    }
    re = new RegExp(`^${out}$`);
  }
  cache.set(pattern, re);
  return re;
}

/** Whether a module (path, kind) is chosen by a selector. */
export function matchesSelector(sel: LayerSelectorSpec, path: string, kind: string, defaultKinds?: readonly string[]): boolean {
  const kinds = sel.kinds && sel.kinds.length ? sel.kinds : defaultKinds;
  if (kinds && !kinds.includes(kind)) return false;
  if (sel.include && sel.include.length && !sel.include.some((p) => compilePattern(p).test(path))) return false;
  if (sel.exclude && sel.exclude.some((p) => compilePattern(p).test(path))) return false;
  return true;
}

/**
 * Selects modules and fails when nothing matches, naming what was looked for and what exists.
 */
export function selectOrThrow<M extends { kind: string }>(
  entries: Iterable<[string, M]>,
  sel: LayerSelectorSpec,
  defaultKinds: readonly string[],
  who: string,
): Array<[string, M]> {
  const all = [...entries].filter(([p]) => p !== '');
  const chosen = all.filter(([p, m]) => matchesSelector(sel, p, m.kind, defaultKinds));
  if (chosen.length === 0) {
    const kinds = sel.kinds && sel.kinds.length ? sel.kinds : defaultKinds;
    const present = [...new Set(all.map(([, m]) => m.kind))].sort();
    throw new ConfigError(
      `${who}: the layer selector matched no module. Looked for kinds [${kinds.join(', ')}]` +
        `${sel.include?.length ? `, include [${sel.include.join(', ')}]` : ''}${sel.exclude?.length ? `, exclude [${sel.exclude.join(', ')}]` : ''}; ` +
        `the model has kinds [${present.join(', ')}]`,
    );
  }
  return chosen;
}
