#!/usr/bin/env node
// Checks that every publishable (non-private) workspace package works as a published package:
//
//   1. builds them (`nx run-many -t build`, cached),
//   2. `npm pack`s each one and checks the tarball's file list (dist entry points and types present;
//      no tests, tsbuildinfo or out-tsc),
//   3. installs ALL the tarballs together into an empty temporary project (their registry
//      dependencies such as @tensorflow/tfjs come from the npm cache / registry), then imports every
//      `exports` subpath of every package from Node as ESM, outside the workspace (a pass package —
//      keyword leanpass-pass — must export the `pass` the CLI discovers, named after the package),
//   4. runs publint (--strict) and attw (Are the Types Wrong, --profile esm-only) on each tarball.
//
// Why `--profile esm-only` for attw: the packages are ESM only ("type": "module", `import`/`default`
// conditions, no CommonJS build). The strict profile would report `require()` resolution from CJS
// (node16-cjs: "cjs-resolves-to-esm") and node10 resolution, which an ESM-only package does not
// offer by design; esm-only ignores exactly those two and keeps every ESM check (types found,
// no false ESM/CJS, named exports, internal resolution errors).
//
//   node tools/scripts/pack-check.mjs [--keep] [--only @leanpass/core,@leanpass/nn] [--skip-build]
//
// Exits 1 on any problem; prints one line per package and check.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { projectDirs, workspaceRoot } from './summarize-tests.mjs';

const argv = process.argv.slice(2);
const keep = argv.includes('--keep');
const onlyAt = argv.indexOf('--only');
const only = onlyAt >= 0 ? new Set((argv[onlyAt + 1] ?? '').split(',').filter(Boolean)) : undefined;
const bin = (name) => join(workspaceRoot, 'node_modules', '.bin', name);
const env = { ...process.env, NX_DAEMON: 'false', NX_NO_CLOUD: 'true', NX_TUI: 'false', npm_config_update_notifier: 'false', npm_config_fund: 'false', npm_config_audit: 'false' };

const problems = [];
const fail = (pkg, msg) => {
  problems.push(`${pkg}: ${msg}`);
  console.log(`  FAIL ${pkg}: ${msg}`);
};
const ok = (pkg, msg) => console.log(`  ok   ${pkg}: ${msg}`);

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env, maxBuffer: 64 * 1024 * 1024, ...opts });
  return { code: r.status ?? 1, stdout: r.stdout ?? '', stderr: r.stderr ?? '', out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
}
/** npm prints "Unknown user config" warnings on this machine; keep the rest. */
const quiet = (text) => text.split('\n').filter((l) => !/npm warn Unknown user config/.test(l)).join('\n').trim();

const packages = projectDirs()
  .map((dir) => ({ dir, json: JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) }))
  .filter((p) => p.json.private !== true && (!only || only.has(p.json.name)));
if (packages.length === 0) {
  console.log('pack-check: no publishable packages selected');
  process.exit(only ? 1 : 0);
}
console.log(`pack-check: ${packages.map((p) => p.json.name).join(', ')}`);

// 1. Build (Nx caches it; the test pipeline has usually built everything already).
if (!argv.includes('--skip-build')) {
  const b = sh(bin('nx'), ['run-many', '-t', 'build', '-p', ...packages.map((p) => p.json.name), '--outputStyle=static', '--skipSync'], { cwd: workspaceRoot });
  if (b.code !== 0) {
    console.log(quiet(b.out));
    console.log('pack-check: build failed');
    process.exit(1);
  }
}

const work = mkdtempSync(join(tmpdir(), 'leanpass-pack-'));
const tarDir = join(work, 'tarballs');
const app = join(work, 'app');
mkdirSync(tarDir);
mkdirSync(app);

try {
  // 2. npm pack + file list.
  for (const p of packages) {
    const name = p.json.name;
    const r = sh('npm', ['pack', '--json', '--pack-destination', tarDir], { cwd: p.dir });
    if (r.code !== 0) {
      fail(name, `npm pack failed:\n${quiet(r.out)}`);
      continue;
    }
    const info = JSON.parse(r.stdout)[0];
    p.tarball = join(tarDir, info.filename);
    const files = info.files.map((f) => f.path);
    const want = ['package.json', 'README.md', 'LICENSE', ...entryFiles(p.json)];
    const missing = want.filter((f) => !files.includes(f));
    const unwanted = files.filter((f) => /\.test\.[cm]?[jt]s$|\.test\.d\.ts|tsbuildinfo$|(^|\/)out-tsc\//.test(f));
    if (missing.length) fail(name, `tarball lacks ${missing.join(', ')}`);
    if (unwanted.length) fail(name, `tarball has files that must not ship: ${unwanted.slice(0, 5).join(', ')}${unwanted.length > 5 ? '…' : ''}`);
    for (const field of ['license', 'repository', 'engines', 'exports', 'files']) if (!p.json[field]) fail(name, `package.json has no "${field}"`);
    if (p.json.publishConfig?.access !== 'public') fail(name, 'package.json publishConfig.access is not "public"');
    if (!missing.length && !unwanted.length) ok(name, `packed ${info.filename}: ${files.length} files, ${(info.size / 1024).toFixed(0)} kB packed, ${(info.unpackedSize / 1024).toFixed(0)} kB unpacked`);
  }
  const packed = packages.filter((p) => p.tarball);

  // 3. Install every tarball together into an empty project, plus the packages' peers that the
  //    workspace itself uses (tfjs; vitest for `@leanpass/core/testing`). Optional peers the
  //    workspace does not install (tfjs-node, tfjs-node-gpu) stay out, as for most users.
  const rootJson = JSON.parse(readFileSync(join(workspaceRoot, 'package.json'), 'utf8'));
  const rootDev = { ...rootJson.dependencies, ...rootJson.devDependencies };
  const local = new Set(packed.map((p) => p.json.name));
  const peers = new Map();
  for (const p of packed) {
    for (const [dep, range] of Object.entries(p.json.peerDependencies ?? {})) {
      if (local.has(dep)) continue;
      const optional = p.json.peerDependenciesMeta?.[dep]?.optional === true;
      if (optional && !rootDev[dep]) continue;
      peers.set(dep, rootDev[dep] ?? range);
    }
  }
  writeFileSync(join(app, 'package.json'), `${JSON.stringify({ name: 'leanpass-pack-check', private: true, type: 'module' }, null, 2)}\n`);
  const specs = [...packed.map((p) => p.tarball), ...[...peers].map(([d, v]) => `${d}@${v}`)];
  console.log(`  installing ${packed.length} tarballs + ${[...peers.keys()].join(', ') || 'no peers'} into ${app}`);
  const inst = sh('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', ...specs], { cwd: app });
  if (inst.code !== 0) {
    fail('install', `npm install of the tarballs failed:\n${quiet(inst.out)}`);
  } else {
    for (const p of packed) {
      for (const sub of subpaths(p.json)) {
        const spec = sub === '.' ? p.json.name : `${p.json.name}/${sub.slice(2)}`;
        // A pass package (keyword leanpass-pass) must export the `pass` the CLI discovers, named after the package.
        const passCheck =
          sub === '.' && p.json.keywords?.includes('leanpass-pass')
            ? `if (typeof m.pass?.apply !== 'function' || m.pass.name !== ${JSON.stringify(p.json.name)}) throw new Error('expected export const pass with name ${p.json.name}, found ' + String(m.pass?.name));`
            : '';
        const code = `const m = await import(${JSON.stringify(spec)}); const n = Object.keys(m).length; if (n === 0) throw new Error('no exports'); ${passCheck} console.log(n);`;
        const r = sh(process.execPath, ['--input-type=module', '-e', code], { cwd: app });
        if (r.code !== 0) fail(spec, `import failed in a clean project:\n${quiet(r.out).split('\n').slice(0, 12).join('\n')}`);
        else ok(spec, `imports as ESM from the installed tarball (${r.stdout.trim().split('\n').pop()} exports)`);
      }
    }
  }

  // 4. publint and attw on the tarballs.
  for (const p of packed) {
    const name = p.json.name;
    const pl = sh(bin('publint'), ['run', p.tarball, '--strict'], { cwd: p.dir });
    if (pl.code !== 0) fail(name, `publint:\n${quiet(pl.out)}`);
    else ok(name, 'publint --strict: no problems');
    const at = sh(bin('attw'), [p.tarball, '--profile', 'esm-only', '--format', 'ascii', '--no-emoji', '--no-color'], { cwd: p.dir });
    if (at.code !== 0) fail(name, `attw --profile esm-only:\n${quiet(at.out)}`);
    else ok(name, 'attw --profile esm-only: no problems');
  }
} finally {
  if (keep) console.log(`  kept ${relative(process.cwd(), work) || work}`);
  else rmSync(work, { recursive: true, force: true });
}

console.log(problems.length ? `pack-check: ${problems.length} problem(s)` : `pack-check: ${packages.length} package(s) ok`);
process.exitCode = problems.length ? 1 : 0;

/** The `exports` subpaths to import ('.', './testing'…), without './package.json' and patterns. */
function subpaths(json) {
  if (!json.exports || typeof json.exports === 'string') return ['.'];
  return Object.keys(json.exports).filter((k) => k.startsWith('.') && !k.endsWith('.json') && !k.includes('*'));
}

/** The dist files named by `exports` (import/default/types targets), relative to the package. */
function entryFiles(json) {
  const out = new Set();
  const walk = (v) => {
    if (typeof v === 'string') {
      if (v.startsWith('./dist/')) out.add(v.slice(2));
    } else if (v && typeof v === 'object') for (const x of Object.values(v)) walk(x);
  };
  walk(json.exports);
  return [...out];
}
