import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { z } from 'zod';
import { benchReportSchema, formatNumber, type BenchReport, type BenchRow } from '@leanpass/core';
import { InputError } from './errors.js';

/** report.json written by `leanpass run`, `demo` and `bench`; `leanpass report` re-renders it. */
export const cliReportSchema = z
  .object({
    format: z.literal('leanpass-report/1'),
    kind: z.enum(['run', 'demo', 'bench']),
    created: z.string(),
    machine: z.string(),
    backend: z.string(),
    seed: z.number().int(),
    /** For `run`: the pipeline's canonical text, spec and per-step reports. */
    pipeline: z
      .object({
        text: z.string(),
        model: z.string(),
        durationMs: z.number(),
        params: z.object({ before: z.number(), after: z.number() }),
        steps: z.array(
          z.object({ index: z.number().int(), kind: z.string(), name: z.string(), durationMs: z.number(), report: z.json().optional() }),
        ),
      })
      .optional(),
    benches: z.array(benchReportSchema),
    /** Passes whose demo or bench failed: named, with the error, never silently dropped. */
    failures: z.array(z.object({ pass: z.string(), error: z.string() })).default([]),
  })
  .strict();

export type CliReport = z.infer<typeof cliReportSchema>;

export function readCliReport(path: string): CliReport {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new InputError(`cannot read report ${path}: ${(e as Error).message}`);
  }
  const r = cliReportSchema.safeParse(raw);
  if (!r.success) {
    throw new InputError(`${path} is not a leanpass report:\n${r.error.issues.map((i) => `  - ${i.path.join('.') || '(root)'}: ${i.message}`).join('\n')}`);
  }
  return r.data;
}

// ------------------------------------------------------------------------------------------------
// Terminal summary
// ------------------------------------------------------------------------------------------------

function denseRow(b: BenchReport): BenchRow {
  return b.rows.find((r) => /^(dense|full|baseline|plain)/i.test(r.label)) ?? (b.rows[0] as BenchRow);
}

/** The best non-dense row: the last one (benches list rows from mild to aggressive, the pass's default first if any). */
function headlineRow(b: BenchReport): BenchRow | undefined {
  const dense = denseRow(b);
  return b.rows.find((r) => r !== dense && r.extra?.['headline'] === true) ?? b.rows.find((r) => r !== dense);
}

function table(header: string[], rows: string[][]): string {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(w[i] ?? 0)).join('  ').trimEnd();
  return [line(header), w.map((n) => '─'.repeat(n)).join('  '), ...rows.map(line)].join('\n');
}

/** One line per pass: quality dense → pass, and cost ratios against dense from the same run. */
export function summaryTable(benches: BenchReport[]): string {
  const rows = benches.map((b) => {
    const d = denseRow(b);
    const h = headlineRow(b);
    const q = Object.keys(d.quality)[0];
    const quality = q && h ? `${q} ${formatNumber(d.quality[q] ?? NaN)} → ${formatNumber(h.quality[q] ?? NaN)}` : '—';
    const ratios = h
      ? (['time_ms', 'flops', 'params', 'memory_bytes'] as const)
          .filter((k) => typeof d.cost[k] === 'number' && typeof h.cost[k] === 'number' && (d.cost[k] ?? 0) > 0)
          .map((k) => `${k.replace('_ms', '').replace('_bytes', '')} ×${((h.cost[k] ?? 0) / (d.cost[k] ?? 1)).toFixed(2)}`)
          .join(', ')
      : '';
    return [b.pass, b.host, h?.label ?? '—', quality, ratios || '—'];
  });
  return table(['pass', 'host', 'variant', 'quality (dense → pass)', 'cost vs dense'], rows);
}

// ------------------------------------------------------------------------------------------------
// HTML: one self-contained file with vega-lite charts (libraries inlined, no network).
// ------------------------------------------------------------------------------------------------

const require = createRequire(import.meta.url);

/** The text of a file inside an installed package (found through Node's module search paths). */
function inlineLibrary(pkg: string, file: string): string {
  const dirs = require.resolve.paths(pkg) ?? [];
  const path = dirs.map((d) => join(d, pkg, file)).find((f) => existsSync(f));
  if (!path) throw new Error(`cannot find ${pkg}/${file} (is ${pkg} installed?)`);
  return readFileSync(path, 'utf8').replace(/<\/script/gi, '<\\/script');
}

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string);
}

const COST_KEYS = ['time_ms', 'flops', 'params', 'memory_bytes'];

/** Vega-lite specs for one bench: Pareto (quality vs cost relative to dense), per-layer savings, curves. */
export function chartsFor(b: BenchReport): Array<{ title: string; spec: Record<string, unknown> }> {
  const charts: Array<{ title: string; spec: Record<string, unknown> }> = [];
  const d = denseRow(b);
  const q = Object.keys(d.quality)[0];
  const costKey = COST_KEYS.find((k) => b.rows.filter((r) => typeof r.cost[k] === 'number').length >= 2 && (d.cost[k] ?? 0) > 0);
  if (q && costKey) {
    const values = b.rows
      .filter((r) => typeof r.quality[q] === 'number' && typeof r.cost[costKey] === 'number')
      .map((r) => ({ label: r.label, quality: r.quality[q], cost: (r.cost[costKey] ?? 0) / (d.cost[costKey] ?? 1) }));
    charts.push({
      title: `${b.pass}: ${q} against ${costKey} (relative to dense)`,
      spec: {
        width: 420,
        height: 260,
        data: { values },
        layer: [
          { mark: { type: 'point', filled: true, size: 90 }, encoding: { x: { field: 'cost', type: 'quantitative', title: `${costKey} / dense` }, y: { field: 'quality', type: 'quantitative', title: q, scale: { zero: false } }, color: { field: 'label', type: 'nominal', title: 'row' }, tooltip: [{ field: 'label' }, { field: 'quality' }, { field: 'cost', format: '.3f' }] } },
          { mark: { type: 'text', dy: -10, fontSize: 10 }, encoding: { x: { field: 'cost', type: 'quantitative' }, y: { field: 'quality', type: 'quantitative' }, text: { field: 'label' } } },
        ],
      },
    });
  }
  const layers = b.extra?.['layers'];
  if (Array.isArray(layers) && layers.length) {
    const values: Array<{ path: string; series: string; value: number }> = [];
    for (const l of layers as Array<Record<string, unknown>>) {
      const before = l['before'] as Record<string, number> | undefined;
      const after = l['after'] as Record<string, number> | undefined;
      const key = before ? COST_KEYS.find((k) => typeof before[k] === 'number') ?? Object.keys(before)[0] : undefined;
      if (!key || !before || !after) continue;
      values.push({ path: String(l['path']), series: `before (${key})`, value: Number(before[key]) }, { path: String(l['path']), series: `after (${key})`, value: Number(after[key]) });
    }
    if (values.length) {
      charts.push({
        title: `${b.pass}: per-layer savings`,
        spec: { width: 420, height: { step: 12 }, data: { values }, mark: 'bar', encoding: { y: { field: 'path', type: 'nominal', sort: null, title: 'layer' }, yOffset: { field: 'series' }, x: { field: 'value', type: 'quantitative', title: 'cost' }, color: { field: 'series', type: 'nominal' } } },
      });
    }
  }
  const curves = b.extra?.['curves'];
  if (Array.isArray(curves) && curves.length) {
    charts.push({
      title: `${b.pass}: training curves`,
      spec: { width: 420, height: 220, data: { values: curves }, mark: { type: 'line', point: false }, encoding: { x: { field: 'step', type: 'quantitative' }, y: { field: 'value', type: 'quantitative', scale: { zero: false } }, color: { field: 'series', type: 'nominal' } } },
    });
  }
  return charts;
}

function benchTableHtml(b: BenchReport): string {
  const qKeys = [...new Set(b.rows.flatMap((r) => Object.keys(r.quality)))];
  const cKeys = [...new Set(b.rows.flatMap((r) => Object.keys(r.cost)))];
  const head = ['row', ...qKeys, ...cKeys].map((h) => `<th>${esc(h)}</th>`).join('');
  const body = b.rows
    .map((r) => `<tr><td>${esc(r.label)}</td>${qKeys.map((k) => `<td>${r.quality[k] === undefined ? '' : esc(formatNumber(r.quality[k]))}</td>`).join('')}${cKeys.map((k) => `<td>${r.cost[k] === undefined ? '' : esc(formatNumber(r.cost[k]))}</td>`).join('')}</tr>`)
    .join('\n');
  const summary = Object.entries(b.summary)
    .map(([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(formatNumber(v))}</td></tr>`)
    .join('');
  return `<table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>${summary ? `<h4>Summary</h4><table class="summary"><tbody>${summary}</tbody></table>` : ''}`;
}

/** Renders a report as one self-contained HTML file. */
export function renderHtml(r: CliReport): string {
  const charts: Array<{ title: string; spec: Record<string, unknown> }> = [];
  const sections: string[] = [];
  if (r.pipeline) {
    const p = r.pipeline;
    charts.push({
      title: 'Step durations',
      spec: { width: 420, height: { step: 18 }, data: { values: p.steps.map((s) => ({ step: `${s.index + 1}. ${s.name}`, ms: s.durationMs })) }, mark: 'bar', encoding: { y: { field: 'step', type: 'nominal', sort: null }, x: { field: 'ms', type: 'quantitative', title: 'ms' } } },
    });
    sections.push(
      `<section><h2>Pipeline</h2><p><code>${esc(p.text)}</code> on <code>${esc(p.model)}</code>: ${esc(formatNumber(p.durationMs))} ms; parameters ${esc(formatNumber(p.params.before))} → ${esc(formatNumber(p.params.after))}.</p>` +
        `<table><thead><tr><th>#</th><th>step</th><th>kind</th><th>ms</th></tr></thead><tbody>${p.steps.map((s) => `<tr><td>${s.index + 1}</td><td>${esc(s.name)}</td><td>${esc(s.kind)}</td><td>${esc(formatNumber(s.durationMs))}</td></tr>`).join('')}</tbody></table>` +
        `<div class="chart" id="chart-0"></div></section>`,
    );
  }
  for (const b of r.benches) {
    const own = chartsFor(b);
    const ids = own.map((_, i) => `chart-${charts.length + i}`);
    charts.push(...own);
    sections.push(
      `<section><h2>${esc(b.pass)} <small>${esc(b.version)} on ${esc(b.host)}${b.quick ? ' (quick)' : ''}</small></h2>${benchTableHtml(b)}` +
        ids.map((id, i) => `<h4>${esc(own[i]?.title ?? '')}</h4><div class="chart" id="${id}"></div>`).join('') +
        `</section>`,
    );
  }
  if (r.failures.length) {
    sections.push(`<section><h2>Failures</h2><ul>${r.failures.map((f) => `<li><b>${esc(f.pass)}</b>: ${esc(f.error)}</li>`).join('')}</ul></section>`);
  }
  if (!sections.length) sections.push('<section><p>Nothing was measured: no installed pass package provided a demo or bench.</p></section>');
  const specs = JSON.stringify(charts.map((c) => c.spec)).replace(/</g, '\\u003c');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>leanpass ${esc(r.kind)} report</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}small{color:#777;font-weight:normal}
.chart{margin:.5rem 0 1.5rem}code{background:#f6f6f6;padding:0 .25rem}
</style>
<script>${inlineLibrary('vega', 'build/vega.min.js')}</script>
<script>${inlineLibrary('vega-lite', 'build/vega-lite.min.js')}</script>
<script>${inlineLibrary('vega-embed', 'build/vega-embed.min.js')}</script>
</head><body>
<h1>leanpass ${esc(r.kind)} report</h1>
<p>${esc(r.created)} · backend <b>${esc(r.backend)}</b> · seed ${r.seed} · ${esc(r.machine)}</p>
${sections.join('\n')}
<script>
(function(){
  var specs = ${specs};
  window.__leanpassCharts = specs.length;
  var jobs = specs.map(function(spec, i){
    return vegaEmbed('#chart-' + i, Object.assign({ $schema: 'https://vega.github.io/schema/vega-lite/v6.json' }, spec), { renderer: 'svg', actions: false });
  });
  Promise.all(jobs).then(function(){ window.__leanpassRendered = jobs.length; }, function(e){ console.error(e); window.__leanpassRendered = -1; });
})();
</script>
</body></html>
`;
}
