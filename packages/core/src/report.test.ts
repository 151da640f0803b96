import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { ConfigError, FormatError } from './errors.js';
import { machineDescription } from './meters.js';
import { benchReport, benchReportIssues, formatBenchTable, formatNumber, parseBenchReport, readBenchReport, validateBenchReport, writeBenchReport, type BenchReport } from './report.js';

const report = (): BenchReport => ({
  pass: '@leanpass/skipcat',
  version: '0.1.0',
  host: 'zoo:llama-tiny',
  backend: 'wasm',
  machine: 'Some CPU, 2 cores, linux/x64, node v20.19.0',
  quick: true,
  seed: 0,
  rows: [
    { label: 'dense', options: {}, quality: { ppl: 9.1 }, cost: { time_ms: 812, flops: 1.2e9, params: 1.1e6, memory_bytes: 3.2e6 } },
    { label: 'skipcat ratio=0.2', options: { ratio: 0.2 }, quality: { ppl: 9.45, acc: 0.5 }, cost: { time_ms: 640.25, flops: 9.6e8, tokens_per_s: 1234 }, extra: { note: 'x' } },
  ],
  summary: { flops_ratio: 0.8, ppl_delta: 0.35 },
});

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'leanpass-report-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('bench report schema', () => {
  it('accepts the DESIGN.md shape and rejects bad fields with their paths', () => {
    expect(validateBenchReport(report())).toEqual(report());
    const bad = report() as unknown as Record<string, unknown> & { rows: Array<Record<string, unknown>> };
    bad['quick'] = 'yes';
    bad['seed'] = 1.5;
    bad['unknownKey'] = 1;
    bad.rows[0]!['quality'] = { ppl: '9' };
    bad.rows[1]!['cost'] = { time_ms: Number.POSITIVE_INFINITY, other: 'x' };
    bad.rows[1]!['label'] = '';
    const paths = benchReportIssues(bad).map((i) => i.path);
    expect(paths).toEqual(expect.arrayContaining(['quick', 'seed', '', 'rows[0].quality.ppl', 'rows[1].cost.time_ms', 'rows[1].cost.other', 'rows[1].label']));
    expect(() => validateBenchReport(bad)).toThrow(ConfigError);
    expect(() => validateBenchReport(bad)).toThrow(/rows\[0\]\.quality\.ppl: /);
    expect(() => validateBenchReport({ ...report(), rows: [] })).toThrow(/rows: /);
  });

  it('rejects duplicate row labels', () => {
    const r = report();
    r.rows[1]!.label = 'dense';
    expect(benchReportIssues(r)).toEqual([{ path: 'rows[1].label', message: 'duplicate row label "dense"' }]);
  });
});

describe('formatBenchTable', () => {
  it('aligns rows × quality/cost columns, marks missing cells, and lists the summary', () => {
    const text = formatBenchTable(report());
    expect(text).toBe(
      [
        '@leanpass/skipcat 0.1.0 on zoo:llama-tiny (wasm, quick, seed 0)',
        'Some CPU, 2 cores, linux/x64, node v20.19.0',
        '',
        'label               ppl  acc  time_ms  flops  params  memory_bytes  tokens_per_s',
        '-----------------  ----  ---  -------  -----  ------  ------------  ------------',
        'dense               9.1    -      812  1.2e9   1.1e6         3.2e6             -',
        'skipcat ratio=0.2  9.45  0.5    640.3  9.6e8       -             -          1234',
        '',
        'summary:',
        '  flops_ratio  0.8',
        '  ppl_delta    0.35',
        '',
      ].join('\n'),
    );
  });

  it('prefixes a name used by both quality and cost', () => {
    const r = report();
    r.rows[0]!.quality['time_ms'] = 1;
    const header = formatBenchTable(r).split('\n')[3]!;
    expect(header).toContain('quality.time_ms');
    expect(header).toContain('cost.time_ms');
  });

  it('formats numbers compactly', () => {
    expect(formatNumber(812)).toBe('812');
    expect(formatNumber(-3)).toBe('-3');
    expect(formatNumber(0)).toBe('0');
    expect(formatNumber(640.25)).toBe('640.3');
    expect(formatNumber(0.5)).toBe('0.5');
    expect(formatNumber(1.2e9)).toBe('1.2e9');
    expect(formatNumber(1234567)).toBe('1.235e6');
    expect(formatNumber(2.5e-5)).toBe('2.5e-5');
    expect(formatNumber(0.001234)).toBe('0.001234');
  });
});

describe('writeBenchReport / readBenchReport', () => {
  it('writes indented JSON atomically and reads it back', async () => {
    const path = join(dir, 'bench.json');
    await writeBenchReport(path, report());
    const text = await readFile(path, 'utf8');
    expect(text).toBe(`${JSON.stringify(report(), null, 2)}\n`);
    expect(await readBenchReport(path)).toEqual(report());
  });

  it('refuses to write an invalid report and leaves the previous file', async () => {
    const path = join(dir, 'keep.json');
    await writeBenchReport(path, report());
    await expect(writeBenchReport(path, { ...report(), seed: Number.NaN })).rejects.toThrow(/seed: /);
    expect(JSON.parse(await readFile(path, 'utf8'))).toEqual(report());
    expect((await readdir(dir)).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });

  it('reading a broken file fails with FormatError naming it', async () => {
    const path = join(dir, 'broken.json');
    await writeFile(path, '{"pass": ');
    await expect(readBenchReport(path)).rejects.toThrow(/broken\.json: not valid JSON/);
    await writeFile(path, JSON.stringify({ ...report(), rows: 'none' }));
    await expect(readBenchReport(path)).rejects.toBeInstanceOf(FormatError);
    expect(() => parseBenchReport({}, 'x.json')).toThrow(/^x\.json: not a valid benchmark report:\n {2}- pass: /);
  });
});

describe('benchReport', () => {
  it('fills the backend and the machine, keeps the schema key order, and leaves out a missing extra', async () => {
    await tf.setBackend('cpu');
    const r = benchReport({ pass: '@x/p', version: '1.0.0', host: 'h', quick: true, seed: 3, rows: [{ label: 'dense', options: {}, quality: {}, cost: {} }], summary: { a: 1 } });
    expect(r.backend).toBe(tf.getBackend());
    expect(r.machine).toBe(machineDescription());
    expect(Object.keys(r)).toEqual(['pass', 'version', 'host', 'backend', 'machine', 'quick', 'seed', 'rows', 'summary']);
    expect(benchReportIssues(r)).toEqual([]);
    expect(validateBenchReport(r)).toEqual(r);
    const given = benchReport({ ...r, backend: 'wasm', machine: 'm', extra: { n: 1 } });
    expect([given.backend, given.machine, given.extra]).toEqual(['wasm', 'm', { n: 1 }]);
  });
});
