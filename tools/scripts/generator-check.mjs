#!/usr/bin/env node
// End-to-end check of the `@leanpass/tools:pass` generator, inside this workspace:
//
//   1. `nx g @leanpass/tools:pass zz-generator-check-<pid> --skipInstall` (a throwaway name),
//   2. `nx sync:check` passes with the new project (its tsconfig references are what Nx expects),
//   3. `tsc -b` (typecheck + build of the generated package and the core it references),
//   4. eslint on the package (the root config's type-checked rules) is clean, and the Nx module
//      boundaries reject an import of @leanpass/data from the pass's library code (type:pass may
//      depend on core, nn and linalg only) while allowing it from a test file,
//   5. vitest runs the generated tests (core's conformance suite included): at least one test, none failing,
//   6. the plugin end to end: `npm pack`s the generated package and every public workspace package,
//      installs the tarballs into an empty project, and checks that the installed `leanpass` CLI lists
//      the generated pass (found by its package.json keyword, no change to the CLI) and runs it in a
//      pipeline from JSON on a zoo model, writing the rewritten model with the new kind,
//   7. removes the package and restores the root tsconfig.json whatever happened.
//
//   node tools/scripts/generator-check.mjs [--keep]
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { projectDirs, workspaceRoot } from './summarize-tests.mjs';

const name = `zz-generator-check-${process.pid}`;
const dir = join(workspaceRoot, 'packages', name);
const rootTsconfig = join(workspaceRoot, 'tsconfig.json');
const savedTsconfig = readFileSync(rootTsconfig, 'utf8');
const keep = process.argv.includes('--keep');
const bin = (tool) => join(workspaceRoot, 'node_modules', '.bin', tool);
const env = { ...process.env, CI: 'true', NX_DAEMON: 'false', NX_NO_CLOUD: 'true', NX_TUI: 'false' };
const failures = [];

function sh(label, cmd, args, cwd = workspaceRoot, judge = true) {
  const started = Date.now();
  const r = spawnSync(cmd, args, { cwd, env, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, stdio: ['ignore', 'pipe', 'pipe'] });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`
    .split('\n')
    .filter((l) => !/npm warn Unknown user config/.test(l))
    .join('\n')
    .trim();
  const code = r.status ?? 1;
  const time = `${((Date.now() - started) / 1000).toFixed(1)} s`;
  console.log(judge ? `  ${code === 0 ? 'ok  ' : 'FAIL'} ${label} (${time})` : `  ran  ${label} (exit ${code}, ${time})`);
  return { code, out };
}

function expectOk(label, r) {
  if (r.code !== 0) {
    failures.push(label);
    console.log(r.out.split('\n').slice(-40).join('\n'));
  }
  return r.code === 0;
}

function cleanup() {
  if (keep) return;
  rmSync(dir, { recursive: true, force: true });
  if (readFileSync(rootTsconfig, 'utf8') !== savedTsconfig) writeFileSync(rootTsconfig, savedTsconfig);
}
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    cleanup();
    process.exit(130);
  });
}

/** Step 6: the generated pass as a tarball, installed beside the CLI, discovered and run. */
function pluginEndToEnd() {
  const work = mkdtempSync(join(tmpdir(), 'leanpass-plugin-'));
  const tars = join(work, 'tarballs');
  const app = join(work, 'app');
  mkdirSync(tars);
  mkdirSync(app);
  try {
    const dirs = [...new Set([...projectDirs().filter((d) => !JSON.parse(readFileSync(join(d, 'package.json'), 'utf8')).private), dir])];
    const tarballs = [];
    for (const d of dirs) {
      const r = sh(`npm pack ${relative(workspaceRoot, d)}`, 'npm', ['pack', '--json', '--pack-destination', tars], d, false);
      if (r.code !== 0) return void expectOk(`npm pack ${d}`, r);
      // The new file in the tarball folder (npm's --json output can be followed by notices).
      const made = readdirSync(tars).map((f) => join(tars, f)).filter((f) => !tarballs.includes(f));
      if (made.length !== 1) return void failures.push(`npm pack ${d}: expected one new tarball, found ${made.length}`);
      tarballs.push(made[0]);
    }
    writeFileSync(join(app, 'package.json'), `${JSON.stringify({ name: 'plugin-e2e', private: true, type: 'module' }, null, 2)}\n`);
    if (!expectOk('npm install (tarballs)', sh(`npm install ${tarballs.length} tarballs`, 'npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', ...tarballs, '@tensorflow/tfjs@4.22.0'], app))) return;
    const cli = join(app, 'node_modules', '@leanpass', 'cli', 'bin', 'leanpass.js');
    const listed = sh('leanpass --json passes (installed CLI)', process.execPath, [cli, '--json', 'passes'], app);
    let names = [];
    try {
      names = JSON.parse(listed.out.slice(listed.out.indexOf('['))).map((p) => p.name);
    } catch {
      // reported below
    }
    const found = names.includes(`@leanpass/${name}`);
    console.log(`  ${found ? 'ok  ' : 'FAIL'} the installed CLI discovers @leanpass/${name} (found: ${names.join(', ') || 'none'})`);
    if (!found) return void failures.push('plugin discovery');
    writeFileSync(join(app, 'pipeline.json'), JSON.stringify({ model: 'zoo:vit-tiny', seed: 1, steps: [{ pass: `@leanpass/${name}`, options: { scale: 0.5, select: { include: ['head'] } } }] }));
    const run = sh('leanpass run pipeline.json (installed CLI, generated pass)', process.execPath, [cli, '--backend', 'cpu', '--passes', `@leanpass/${name}`, 'run', 'pipeline.json', '--out', 'out'], app);
    if (!expectOk('plugin run', run)) return;
    const config = readFileSync(join(app, 'out', 'model', 'config.json'), 'utf8');
    const rewritten = config.includes(`"${name}.scaled"`);
    const provenance = JSON.parse(config).provenance?.[0]?.pass === `@leanpass/${name}`;
    console.log(`  ${rewritten && provenance ? 'ok  ' : 'FAIL'} the pipeline rewrote the model (kind ${name}.scaled, provenance recorded)`);
    if (!(rewritten && provenance)) failures.push('plugin run output');
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

console.log(`generator-check: packages/${name}`);
try {
  if (existsSync(dir)) throw new Error(`${dir} exists already`);
  const gen = sh('nx g @leanpass/tools:pass', bin('nx'), ['g', '@leanpass/tools:pass', name, '--skipInstall', '--description', "Generator check: it's a throwaway pass", '--no-interactive']);
  if (!expectOk('generate', gen)) throw new Error('the generator failed');
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  const problems = [];
  if (pkg.name !== `@leanpass/${name}`) problems.push(`name is ${pkg.name}`);
  if (!pkg.keywords?.includes('leanpass-pass')) problems.push('keywords lack leanpass-pass');
  if (!pkg.nx?.tags?.includes('type:pass')) problems.push('nx tags lack type:pass');
  if (!pkg.peerDependencies?.['@leanpass/core'] || !pkg.peerDependencies?.['@tensorflow/tfjs']) problems.push('peerDependencies lack @leanpass/core or @tensorflow/tfjs');
  for (const f of ['README.md', 'LICENSE', 'src/index.ts', 'src/index.test.ts', 'tsconfig.json', 'tsconfig.lib.json', 'tsconfig.spec.json', 'vitest.config.ts', 'eslint.config.mjs']) {
    if (!existsSync(join(dir, f))) problems.push(`${f} missing`);
    else if (readFileSync(join(dir, f), 'utf8').includes('<%')) problems.push(`${f} has an unexpanded template tag`);
  }
  console.log(`  ${problems.length ? 'FAIL' : 'ok  '} package.json and files${problems.length ? `: ${problems.join('; ')}` : ''}`);
  if (problems.length) failures.push('package.json and files');

  // Only the generated project must be in sync here (the rest of the workspace is `npm test`'s own check).
  const sync = sh('nx sync:check', bin('nx'), ['sync:check'], workspaceRoot, false);
  if (sync.code !== 0 && sync.out.includes(`packages/${name}`)) {
    failures.push('nx sync:check');
    console.log(sync.out);
  }
  console.log(`  ${failures.includes('nx sync:check') ? 'FAIL' : 'ok  '} nx sync:check: the generated project's references are in sync`);
  expectOk('tsc -b', sh('tsc -b (typecheck and build)', bin('tsc'), ['-b', join(dir, 'tsconfig.json'), '--pretty', 'false']));

  // eslint on the package, with two probes that exercise the Nx module boundaries on a real type:pass
  // project (the graph was refreshed by the nx calls above): @leanpass/data is off limits to a pass's
  // library code (type:pass may depend on core, nn and linalg) and allowed in its tests.
  const probe = "import * as data from '@leanpass/data';\nexport const probe: unknown = data;\n";
  writeFileSync(join(dir, 'src', 'boundary-probe.ts'), probe);
  writeFileSync(join(dir, 'src', 'boundary-probe.test.ts'), probe);
  let lint;
  try {
    lint = sh('eslint . --format json (with the probes)', bin('eslint'), ['.', '--format', 'json'], dir, false);
  } finally {
    rmSync(join(dir, 'src', 'boundary-probe.ts'), { force: true });
    rmSync(join(dir, 'src', 'boundary-probe.test.ts'), { force: true });
  }
  let results;
  try {
    results = JSON.parse(lint.out.slice(lint.out.indexOf('[')));
  } catch {
    failures.push('eslint');
    console.log(lint.out);
    throw new Error('eslint did not produce a JSON report');
  }
  const byFile = new Map(results.map((r) => [r.filePath.slice(dir.length + 1), r.messages]));
  const lintProblems = [];
  for (const [file, messages] of byFile) {
    if (file.startsWith('src/boundary-probe')) continue;
    for (const m of messages) lintProblems.push(`${file}:${m.line}:${m.column} ${m.ruleId ?? ''} ${m.message}`);
  }
  console.log(`  ${lintProblems.length ? 'FAIL' : 'ok  '} eslint: the generated files are clean (${byFile.size - 2} files)`);
  if (lintProblems.length) {
    failures.push('eslint');
    console.log(lintProblems.join('\n'));
  }
  const boundary = (file) => (byFile.get(file) ?? []).filter((m) => m.ruleId === '@nx/enforce-module-boundaries').map((m) => m.message);
  const rejected = boundary('src/boundary-probe.ts').some((m) => /A project tagged with "type:pass" can only depend on libs tagged with/.test(m));
  console.log(`  ${rejected ? 'ok  ' : 'FAIL'} boundaries: a pass's library code importing @leanpass/data is rejected`);
  if (!rejected) failures.push('boundary rejection');
  const accepted = byFile.has('src/boundary-probe.test.ts') && boundary('src/boundary-probe.test.ts').length === 0;
  console.log(`  ${accepted ? 'ok  ' : 'FAIL'} boundaries: a pass's test importing @leanpass/data is allowed`);
  if (!accepted) failures.push('boundary allowance');

  const test = sh('vitest run', bin('vitest'), ['run'], dir);
  const reportFile = join(dir, 'out-tsc', 'vitest-report.json');
  const report = existsSync(reportFile) ? JSON.parse(readFileSync(reportFile, 'utf8')) : undefined;
  if (test.code !== 0 || !report || report.numPassedTests === 0 || report.numFailedTests > 0) {
    failures.push('vitest');
    console.log(test.out.split('\n').slice(-40).join('\n'));
  } else {
    console.log(`       ${report.numPassedTests} generated tests passed`);
  }
  pluginEndToEnd();
} catch (e) {
  if (!failures.length) failures.push(String(e));
  console.log(`  FAIL ${e instanceof Error ? e.message : String(e)}`);
} finally {
  cleanup();
}

console.log(failures.length ? `generator-check: FAILED (${failures.join(', ')})` : 'generator-check: ok');
process.exitCode = failures.length ? 1 : 0;
