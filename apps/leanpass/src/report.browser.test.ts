/// <reference lib="dom" />
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { renderHtml, type CliReport } from './report.js';

const CHROMIUM = process.env['LEANPASS_CHROMIUM'] ?? '/usr/bin/chromium';
const haveChromium = existsSync(CHROMIUM);
// In CI the browser check is mandatory (.ci/run installs Debian's chromium); elsewhere it needs one.
const mustRun = haveChromium || process.env['CI'] === 'true';

const report: CliReport = {
  format: 'leanpass-report/1',
  kind: 'demo',
  created: '2026-11-23T00:00:00.000Z',
  machine: 'test machine, 2 cores',
  backend: 'wasm',
  seed: 0,
  failures: [],
  pipeline: {
    text: 'skipcat{ratio=0.2} | evaluate',
    model: 'zoo:llama-tiny',
    durationMs: 1234,
    params: { before: 1000, after: 800 },
    steps: [
      { index: 0, kind: 'pass', name: '@leanpass/skipcat', durationMs: 1000 },
      { index: 1, kind: 'action', name: 'evaluate', durationMs: 234 },
    ],
  },
  benches: [
    {
      pass: '@leanpass/example',
      version: '0.1.0',
      host: 'zoo:example',
      backend: 'wasm',
      machine: 'test',
      quick: true,
      seed: 0,
      rows: [
        { label: 'dense', options: {}, quality: { accuracy: 0.91 }, cost: { time_ms: 100, params: 1000 } },
        { label: 'rank 4', options: { r: 4 }, quality: { accuracy: 0.9 }, cost: { time_ms: 60, params: 700 } },
        { label: 'rank 2', options: { r: 2 }, quality: { accuracy: 0.86 }, cost: { time_ms: 45, params: 500 } },
      ],
      summary: { time_ratio: 0.6 },
      extra: {
        layers: [
          { path: 'blocks.0.fc1', kind: 'linear', before: { params: 400 }, after: { params: 250 } },
          { path: 'blocks.0.fc2', kind: 'linear', before: { params: 400 }, after: { params: 250 } },
        ],
        curves: [
          { series: 'dense', step: 0, value: 2.3 },
          { series: 'dense', step: 10, value: 1.1 },
          { series: 'rank 4', step: 0, value: 2.3 },
          { series: 'rank 4', step: 10, value: 1.2 },
        ],
      },
    },
  ],
};

describe('HTML report in a real headless browser', () => {
  it.runIf(mustRun)(`renders with no console errors, no network, and every chart has marks (${CHROMIUM})`, async () => {
    expect(haveChromium, `no browser at ${CHROMIUM}: apt-get install -y chromium`).toBe(true);
    const dir = mkdtempSync(join(tmpdir(), 'leanpass-html-'));
    const file = join(dir, 'report.html');
    writeFileSync(file, renderHtml(report));
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      const requests: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'error') errors.push(m.text());
      });
      page.on('pageerror', (e) => errors.push(e.message));
      page.on('request', (r) => {
        if (!r.url().startsWith('file:') && !r.url().startsWith('data:')) requests.push(r.url());
      });
      await page.goto(pathToFileURL(file).href);
      await page.waitForFunction(() => (window as unknown as { __leanpassRendered?: number }).__leanpassRendered !== undefined, undefined, { timeout: 30_000 });
      const rendered = await page.evaluate(() => (window as unknown as { __leanpassRendered: number }).__leanpassRendered);
      const charts = await page.evaluate(() => (window as unknown as { __leanpassCharts: number }).__leanpassCharts);
      expect(errors).toEqual([]);
      expect(requests).toEqual([]);
      expect(charts).toBe(4); // step durations, Pareto, per-layer savings, curves
      expect(rendered).toBe(charts);
      const marks = await page.evaluate(() =>
        Array.from(document.querySelectorAll<HTMLElement>('.chart')).map((c: HTMLElement) => c.querySelectorAll('svg .mark-symbol path, svg .mark-rect path, svg .mark-line path, svg .mark-text text').length),
      );
      expect(marks).toHaveLength(4);
      for (const n of marks) expect(n).toBeGreaterThan(0);
      expect(await page.locator('table').count()).toBeGreaterThanOrEqual(3);
    } finally {
      await browser.close();
    }
  }, 120_000);
});
