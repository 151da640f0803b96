#!/usr/bin/env node
// `npm test`: the whole workspace check, the same locally and in CI.
//
//   1. nx run-many -t build typecheck lint test   (every project; Nx caches what did not change)
//   2. nx sync:check                              (TypeScript project references follow the graph)
//   3. tools/scripts/pack-check.mjs               (npm pack, install the tarballs, import; publint; attw)
//   4. tools/scripts/generator-check.mjs          (the `pass` generator's output lints, typechecks, tests)
//
// Every step runs even when an earlier one failed, so one run shows every problem. The last line is
// `tests: N passed, N failed`: the vitest tests of every project plus one entry per other check
// (a failed build/typecheck/lint task, a failed step). The exit code is 1 when anything failed.
//
// Options: --skip-pack, --skip-generator (local shortcuts; CI runs everything).
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { collectReports, formatRows, removeReports, totals, workspaceRoot } from './summarize-tests.mjs';

const nx = `${workspaceRoot}node_modules/.bin/nx`;
const env = { ...process.env, NX_DAEMON: 'false', NX_NO_CLOUD: 'true', NX_TUI: 'false', FORCE_COLOR: process.env.FORCE_COLOR ?? '0' };

/** Runs a command with its output streamed through; resolves to { code, output }. */
function run(cmd, argv) {
  console.log(`\n$ ${[cmd.replace(workspaceRoot, ''), ...argv].join(' ')}`);
  return new Promise((resolve) => {
    const child = spawn(cmd, argv, { cwd: workspaceRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => {
      output += d;
      process.stdout.write(d);
    });
    child.stderr.on('data', (d) => {
      output += d;
      process.stderr.write(d);
    });
    child.on('error', (e) => resolve({ code: 127, output: String(e) }));
    child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), output }));
  });
}

const stripAnsi = (text) => text.replace(/\u001b\[[0-9;]*m/g, ''); // eslint-disable-line no-control-regex
const taskLines = (text) => [...text.matchAll(/^\s*-\s+(\S+:[\w:-]+)\s*$/gm)].map((m) => m[1]);

/** Task ids (`project:target`) that Nx lists as failed at the end of a run. */
export function failedNxTasks(output) {
  const text = stripAnsi(output);
  const at = text.search(/Failed tasks:|targets? failed/);
  return at < 0 ? [] : taskLines(text.slice(at));
}

/** Task ids that Nx did not run because a dependency failed. */
export function notRunNxTasks(output) {
  const text = stripAnsi(output);
  const at = text.search(/Tasks not run because/);
  if (at < 0) return [];
  const end = text.indexOf('Failed tasks:', at);
  return taskLines(text.slice(at, end < 0 ? undefined : end));
}

async function main() {
  const args = new Set(process.argv.slice(2));
  const checks = [];
  const check = (name, ok, detail = '') => checks.push({ name, ok, detail });

  removeReports();
  const started = Date.now();

  const many = await run(nx, ['run-many', '-t', 'build', 'typecheck', 'lint', 'test', '--outputStyle=static', '--skipSync']);
  const failedTasks = failedNxTasks(many.output);
  if (many.code !== 0 && failedTasks.length === 0) check('nx run-many', false, `exit ${many.code}, no failed task listed`);

  const sync = await run(nx, ['sync:check']);
  check('nx sync:check', sync.code === 0);

  if (!args.has('--skip-pack')) {
    const pack = await run(process.execPath, ['tools/scripts/pack-check.mjs']);
    check('pack check (npm pack + install + import, publint, attw)', pack.code === 0);
  }
  if (!args.has('--skip-generator')) {
    const gen = await run(process.execPath, ['tools/scripts/generator-check.mjs']);
    check('pass generator check (generate, typecheck, lint, test, remove)', gen.code === 0);
  }

  const rows = collectReports();
  const reported = new Set(rows.filter((r) => r.found).map((r) => r.project));
  for (const task of failedTasks) {
    const cut = task.lastIndexOf(':');
    const [project, target] = [task.slice(0, cut), task.slice(cut + 1)];
    // A failed test task with failing tests is already counted through its report.
    const row = rows.find((r) => r.project === project);
    if (target === 'test' && row?.found && row.failed > 0) continue;
    check(`nx ${task}`, false, target === 'test' && !reported.has(project) ? 'no test report' : '');
  }

  // A test suite that never ran (its build dependency failed) counts as a failure too.
  for (const task of notRunNxTasks(many.output)) {
    if (task.endsWith(':test')) check(`nx ${task}`, false, 'not run: a dependency failed');
  }

  console.log('\nSummary');
  for (const line of formatRows(rows)) console.log(line);
  for (const c of checks) console.log(`  ${c.ok ? 'ok    ' : 'FAILED'} ${c.name}${c.detail ? ` (${c.detail})` : ''}`);
  const t = totals(rows);
  const passed = t.passed + checks.filter((c) => c.ok).length;
  const failed = t.failed + checks.filter((c) => !c.ok).length;
  console.log(`  time: ${((Date.now() - started) / 1000).toFixed(0)} s`);
  console.log(`tests: ${passed} passed, ${failed} failed`);
  process.exitCode = failed > 0 || many.code !== 0 ? 1 : 0;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await main();
