#!/usr/bin/env node
// Sums the vitest JSON reports that each project writes to <project>/out-tsc/vitest-report.json
// (see vitest.shared.ts) and prints one line per project plus `tests: N passed, N failed`.
//
//   node tools/scripts/summarize-tests.mjs [--json]
//
// A test file that fails to load (import error, syntax error) has no failed test inside it; it is
// counted as one failure so that a broken file can never read as "0 failed".
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

export const workspaceRoot = fileURLToPath(new URL('../..', import.meta.url));
export const REPORT = 'out-tsc/vitest-report.json';

/** Project folders of the npm workspaces (`packages/*`, `apps/*`, `tools`). */
export function projectDirs(root = workspaceRoot) {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  const dirs = [];
  for (const pattern of pkg.workspaces ?? []) {
    if (pattern.endsWith('/*')) {
      const parent = join(root, pattern.slice(0, -2));
      if (!existsSync(parent)) continue;
      for (const entry of readdirSync(parent, { withFileTypes: true })) {
        if (entry.isDirectory() && existsSync(join(parent, entry.name, 'package.json'))) dirs.push(join(parent, entry.name));
      }
    } else if (existsSync(join(root, pattern, 'package.json'))) {
      dirs.push(join(root, pattern));
    }
  }
  return dirs.sort();
}

/** Deletes the reports of earlier runs (Nx restores the current ones from its cache). */
export function removeReports(root = workspaceRoot) {
  for (const dir of projectDirs(root)) rmSync(join(dir, REPORT), { force: true });
}

/** Reads one vitest JSON report into counts. */
export function countReport(report) {
  let passed = 0;
  let failed = 0;
  let skipped = 0;
  const failures = [];
  for (const file of report.testResults ?? []) {
    let failedInFile = 0;
    for (const a of file.assertionResults ?? []) {
      if (a.status === 'passed') passed++;
      else if (a.status === 'failed') {
        failed++;
        failedInFile++;
        failures.push(`${file.name}: ${a.fullName ?? a.title}`);
      } else skipped++;
    }
    if (file.status === 'failed' && failedInFile === 0) {
      failed++;
      failures.push(`${file.name}: ${(file.message || 'failed to run').split('\n')[0]}`);
    }
  }
  return { passed, failed, skipped, files: (report.testResults ?? []).length, failures };
}

/** Every project's report: `{ project, dir, found, passed, failed, skipped, files, failures }`. */
export function collectReports(root = workspaceRoot) {
  return projectDirs(root).map((dir) => {
    const name = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')).name;
    const file = join(dir, REPORT);
    if (!existsSync(file)) return { project: name, dir: relative(root, dir), found: false, passed: 0, failed: 0, skipped: 0, files: 0, failures: [] };
    const counts = countReport(JSON.parse(readFileSync(file, 'utf8')));
    return { project: name, dir: relative(root, dir), found: true, ...counts };
  });
}

export function totals(rows) {
  return rows.reduce((t, r) => ({ passed: t.passed + r.passed, failed: t.failed + r.failed, skipped: t.skipped + r.skipped }), { passed: 0, failed: 0, skipped: 0 });
}

export function formatRows(rows) {
  const lines = [];
  for (const r of rows) {
    if (!r.found) lines.push(`  ${r.project}: no test report`);
    else lines.push(`  ${r.project}: ${r.passed} passed, ${r.failed} failed${r.skipped ? `, ${r.skipped} skipped` : ''} (${r.files} files)`);
    for (const f of r.failures) lines.push(`    FAILED ${f}`);
  }
  return lines;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const rows = collectReports();
  if (process.argv.includes('--json')) {
    console.log(JSON.stringify({ projects: rows, ...totals(rows) }, null, 2));
  } else {
    for (const line of formatRows(rows)) console.log(line);
    const t = totals(rows);
    console.log(`tests: ${t.passed} passed, ${t.failed} failed`);
  }
  process.exitCode = totals(rows).failed > 0 ? 1 : 0;
}
