#!/usr/bin/env node
// `npm run demo [-- args]`: builds every package with Nx (cached), then runs the orchestrator CLI's
// `leanpass demo [args]` (apps/leanpass, from its built output).
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { workspaceRoot } from './summarize-tests.mjs';

const appDir = join(workspaceRoot, 'apps', 'leanpass');
const pkgFile = join(appDir, 'package.json');
if (!existsSync(pkgFile)) {
  console.error('npm run demo: the leanpass CLI (apps/leanpass) is not in this checkout, so there is no `leanpass demo` to run.');
  process.exit(1);
}
const pkg = JSON.parse(readFileSync(pkgFile, 'utf8'));
const binField = typeof pkg.bin === 'string' ? pkg.bin : (pkg.bin?.leanpass ?? Object.values(pkg.bin ?? {})[0]);
if (!binField) {
  console.error(`npm run demo: ${pkg.name} (apps/leanpass/package.json) declares no "bin"; expected "bin": { "leanpass": "./dist/…" }.`);
  process.exit(1);
}

const env = { ...process.env, NX_DAEMON: 'false', NX_NO_CLOUD: 'true', NX_TUI: 'false' };
// Every package, not only the CLI's dependencies: the CLI finds the pass packages at run time (their
// package.json keyword) and imports their built dist/.
console.log('building every package (Nx caches what did not change)…');
const build = spawnSync(join(workspaceRoot, 'node_modules', '.bin', 'nx'), ['run-many', '-t', 'build', '--outputStyle=static', '--skipSync'], { cwd: workspaceRoot, env, stdio: 'inherit' });
if (build.status !== 0) process.exit(build.status ?? 1);

const bin = join(appDir, binField);
if (!existsSync(bin)) {
  console.error(`npm run demo: the build did not produce ${binField} (the "bin" of ${pkg.name}).`);
  process.exit(1);
}
const run = spawnSync(process.execPath, [bin, 'demo', ...process.argv.slice(2)], { cwd: workspaceRoot, env: process.env, stdio: 'inherit' });
process.exit(run.status ?? 1);
