/**
 * The benchmark report every pass writes (`leanpass bench <pass> --json <file>`), its schema, a
 * plain-text table for terminals and READMEs, and atomic writing/reading.
 */
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { ConfigError, FormatError, type ConfigIssue } from './errors.js';
import * as tf from '@tensorflow/tfjs';
import { machineDescription } from './meters.js';
import { writeFileAtomic } from './safetensors.js';

const finite = z.number(); // zod 4 numbers are finite: NaN and ±Infinity fail
const jsonValue = z.json();

export const benchRowSchema = z
  .object({
    /** What this row measures: `dense`, `skipcat ratio=0.2`… */
    label: z.string().min(1),
    /** The pass options of this row (`{}` for the unmodified model). */
    options: z.record(z.string(), jsonValue),
    /** The host's own metrics (accuracy, ppl, exact match…), against the same data for every row. */
    quality: z.record(z.string(), finite),
    /** Costs: time_ms (median), flops, params, memory_bytes, and any other number. */
    cost: z
      .object({
        time_ms: finite.optional(),
        flops: finite.optional(),
        params: finite.optional(),
        memory_bytes: finite.optional(),
      })
      .catchall(finite),
    /** Anything else worth keeping (per-step figures, notes). */
    extra: z.record(z.string(), jsonValue).optional(),
  })
  .strict();

export const benchReportSchema = z
  .object({
    /** Package name of the pass (`@leanpass/skipcat`). */
    pass: z.string().min(1),
    version: z.string().min(1),
    /** The host model (`zoo:llama-tiny`). */
    host: z.string().min(1),
    backend: z.string().min(1),
    /** `machineDescription()`: cpu model and cores; absolute times mean nothing without it. */
    machine: z.string().min(1),
    quick: z.boolean(),
    seed: z.number().int(),
    rows: z.array(benchRowSchema).min(1),
    /** Headline figures: ratios against the dense row of the same run, quality deltas. */
    summary: z.record(z.string(), finite),
    extra: z.record(z.string(), jsonValue).optional(),
  })
  .strict()
  .superRefine((r, ctx) => {
    const seen = new Set<string>();
    r.rows.forEach((row, i) => {
      if (seen.has(row.label)) ctx.addIssue({ code: 'custom', path: ['rows', i, 'label'], message: `duplicate row label ${JSON.stringify(row.label)}` });
      seen.add(row.label);
    });
  });

export type BenchRow = z.infer<typeof benchRowSchema>;
export type BenchReport = z.infer<typeof benchReportSchema>;

/**
 * A bench report with the run's environment filled in: `backend` (the active tfjs backend) and `machine`
 * (`machineDescription()`) unless given. Not validated here (a long run should not fail at its very end);
 * `writeBenchReport` and the CLI validate.
 */
export function benchReport(fields: Omit<BenchReport, 'backend' | 'machine'> & { backend?: string; machine?: string }): BenchReport {
  const { pass, version, host, quick, seed, rows, summary, extra } = fields;
  const report: BenchReport = { pass, version, host, backend: fields.backend ?? tf.getBackend(), machine: fields.machine ?? machineDescription(), quick, seed, rows, summary };
  if (extra !== undefined) report.extra = extra;
  return report;
}

function pathOf(segments: readonly PropertyKey[]): string {
  let out = '';
  for (const s of segments) out += typeof s === 'number' ? `[${s}]` : out ? `.${String(s)}` : String(s);
  return out;
}

/** Every problem of a would-be report, with its JSON path (empty when valid). */
export function benchReportIssues(v: unknown): ConfigIssue[] {
  const r = benchReportSchema.safeParse(v);
  return r.success ? [] : r.error.issues.map((i) => ({ path: pathOf(i.path), message: i.message }));
}

/** Validates a report about to be written; throws ConfigError listing every problem. */
export function validateBenchReport(v: unknown): BenchReport {
  const r = benchReportSchema.safeParse(v);
  if (!r.success) throw new ConfigError('invalid benchmark report', benchReportIssues(v));
  return r.data;
}

/** Parses a report read from a file; throws FormatError listing every problem. */
export function parseBenchReport(v: unknown, source = 'report'): BenchReport {
  const r = benchReportSchema.safeParse(v);
  if (!r.success) {
    throw new FormatError(`not a valid benchmark report:\n${benchReportIssues(v).map((i) => `  - ${i.path ? `${i.path}: ` : ''}${i.message}`).join('\n')}`, source);
  }
  return r.data;
}

/** Validates, then writes the report as indented JSON, atomically. */
export async function writeBenchReport(path: string, report: BenchReport): Promise<void> {
  const valid = validateBenchReport(report);
  await writeFileAtomic(path, `${JSON.stringify(valid, null, 2)}\n`);
}

export async function readBenchReport(path: string): Promise<BenchReport> {
  const text = await readFile(path, 'utf8');
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new FormatError(`not valid JSON: ${(e as Error).message}`, path);
  }
  return parseBenchReport(v, path);
}

/** A number for a table cell: integers below 1e6 as they are, otherwise 4 significant digits. */
export function formatNumber(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v) && Math.abs(v) < 1e6) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) {
    const [m, e] = v.toExponential(3).split('e') as [string, string];
    return `${trimZeros(m)}e${e.replace('+', '')}`;
  }
  return trimZeros(v.toPrecision(4));
}

function trimZeros(s: string): string {
  return s.includes('.') ? s.replace(/\.?0+$/, '') : s;
}

const COST_ORDER = ['time_ms', 'flops', 'params', 'memory_bytes'];

function unionKeys(records: ReadonlyArray<Record<string, unknown>>, first: readonly string[] = []): string[] {
  const keys: string[] = [];
  const seen = new Set<string>();
  const present = new Set(records.flatMap((r) => Object.keys(r)));
  const add = (k: string): void => {
    if (seen.has(k)) return;
    seen.add(k);
    keys.push(k);
  };
  for (const k of first) if (present.has(k)) add(k);
  for (const r of records) for (const k of Object.keys(r)) add(k);
  return keys;
}

/**
 * An aligned plain-text table: a title line, one row per bench row with its quality then cost columns
 * (`-` where a row has no value), then the summary figures.
 */
export function formatBenchTable(report: BenchReport): string {
  const q = unionKeys(report.rows.map((r) => r.quality));
  const c = unionKeys(
    report.rows.map((r) => r.cost),
    COST_ORDER,
  );
  const clash = new Set(q.filter((k) => c.includes(k)));
  const header = ['label', ...q.map((k) => (clash.has(k) ? `quality.${k}` : k)), ...c.map((k) => (clash.has(k) ? `cost.${k}` : k))];
  const cell = (v: number | undefined): string => (v === undefined ? '-' : formatNumber(v));
  const body = report.rows.map((r) => [r.label, ...q.map((k) => cell(r.quality[k])), ...c.map((k) => cell(r.cost[k]))]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => (row[i] as string).length)));
  const line = (cells: string[]): string =>
    cells
      .map((s, i) => (i === 0 ? s.padEnd(widths[i] as number) : s.padStart(widths[i] as number)))
      .join('  ')
      .trimEnd();
  const out = [
    `${report.pass} ${report.version} on ${report.host} (${report.backend}${report.quick ? ', quick' : ''}, seed ${report.seed})`,
    report.machine,
    '',
    line(header),
    line(widths.map((w) => '-'.repeat(w))),
    ...body.map(line),
  ];
  const sk = Object.keys(report.summary);
  if (sk.length) {
    const kw = Math.max(...sk.map((k) => k.length));
    out.push('', 'summary:');
    for (const k of sk) out.push(`  ${k.padEnd(kw)}  ${formatNumber(report.summary[k] as number)}`);
  }
  return `${out.join('\n')}\n`;
}
