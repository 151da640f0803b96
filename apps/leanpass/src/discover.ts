import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ConfigError, PASS_KEYWORD, isPassPackage, registry, type AnyPass, type PassPackage } from '@leanpass/core';
import { InputError } from './errors.js';

/** A package found on disk whose package.json carries the `leanpass-pass` keyword. */
export interface FoundPackage {
  packageName: string;
  version: string;
  dir: string;
  entry: string;
  /** The './bench' subpath entry, where bench and demo live when kept apart from the pass. */
  benchEntry?: string;
}

/** A discovered and imported pass package. */
export interface InstalledPass extends FoundPackage {
  pass: AnyPass;
  module: PassPackage;
}

interface PackageJson {
  name?: string;
  version?: string;
  keywords?: unknown;
  exports?: unknown;
  main?: string;
}

function readPackageJson(dir: string): PackageJson | undefined {
  try {
    return JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as PackageJson;
  } catch {
    return undefined;
  }
}

/** Every `node_modules` folder from `start` up to the filesystem root. */
function nodeModulesChain(start: string): string[] {
  const out: string[] = [];
  let dir = resolve(start);
  for (;;) {
    const nm = join(dir, 'node_modules');
    if (existsSync(nm)) out.push(nm);
    const up = dirname(dir);
    if (up === dir) return out;
    dir = up;
  }
}

function wantsSource(): boolean {
  const flags = [...process.execArgv, process.env['NODE_OPTIONS'] ?? ''].join(' ');
  return flags.includes('@leanpass/source');
}

/** The file an import of the package (or of a subpath such as './bench') resolves to. */
function entryOf(dir: string, pkg: PackageJson, subpath = '.'): string | undefined {
  const candidates: string[] = [];
  const exportsMap = typeof pkg.exports === 'object' && pkg.exports !== null && Object.keys(pkg.exports).some((k) => k.startsWith('.')) ? (pkg.exports as Record<string, unknown>) : undefined;
  const root: unknown = exportsMap ? exportsMap[subpath] : subpath === '.' ? pkg.exports : undefined;
  if (typeof root === 'string') candidates.push(root);
  else if (root && typeof root === 'object') {
    const conds = root as Record<string, unknown>;
    const order = wantsSource() ? ['@leanpass/source', 'import', 'node', 'default'] : ['import', 'node', 'default'];
    for (const c of order) if (typeof conds[c] === 'string') candidates.push(conds[c]);
  }
  if (subpath === '.') {
    if (pkg.main) candidates.push(pkg.main);
    candidates.push('index.js');
  }
  for (const c of candidates) {
    const f = join(dir, c);
    if (existsSync(f) && statSync(f).isFile()) return f;
  }
  return undefined;
}

function isPassPackageJson(pkg: PackageJson | undefined): boolean {
  return !!pkg && Array.isArray(pkg.keywords) && pkg.keywords.includes(PASS_KEYWORD);
}

function found(dir: string): FoundPackage | undefined {
  const pkg = readPackageJson(dir);
  if (!pkg || !isPassPackageJson(pkg) || !pkg.name) return undefined;
  const entry = entryOf(dir, pkg);
  if (!entry) return undefined;
  const benchEntry = entryOf(dir, pkg, './bench');
  return { packageName: pkg.name, version: pkg.version ?? '0.0.0', dir, entry, ...(benchEntry ? { benchEntry } : {}) };
}

/**
 * Finds pass packages: every package with the `leanpass-pass` keyword in the node_modules folders
 * above the working directory and above this CLI, plus explicit plugin folders. The first one found
 * of a name wins (the working directory's project comes first).
 */
export function findPassPackages(opts: { cwd?: string; plugins?: string[] } = {}): FoundPackage[] {
  const out = new Map<string, FoundPackage>();
  for (const p of opts.plugins ?? []) {
    const dir = resolve(opts.cwd ?? process.cwd(), p);
    const pkg = readPackageJson(dir);
    if (!pkg) throw new InputError(`--plugin ${p}: no package.json in ${dir}`);
    if (!isPassPackageJson(pkg)) throw new InputError(`--plugin ${p}: ${pkg.name ?? dir} lacks the "${PASS_KEYWORD}" keyword in package.json`);
    const f = found(dir);
    if (!f) throw new InputError(`--plugin ${p}: cannot find the entry file of ${pkg.name ?? dir} (is it built?)`);
    out.set(f.packageName, f);
  }
  const roots = [...nodeModulesChain(opts.cwd ?? process.cwd()), ...nodeModulesChain(dirname(fileURLToPath(import.meta.url)))];
  for (const nm of roots) {
    let names: string[];
    try {
      names = readdirSync(nm);
    } catch {
      continue;
    }
    for (const name of names) {
      if (name.startsWith('.')) continue;
      const dirs = name.startsWith('@') ? safeList(join(nm, name)).map((n) => join(nm, name, n)) : [join(nm, name)];
      for (const d of dirs) {
        const f = found(d);
        if (f && !out.has(f.packageName)) out.set(f.packageName, f);
      }
    }
  }
  return [...out.values()].sort((a, b) => a.packageName.localeCompare(b.packageName));
}

function safeList(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/**
 * Imports the found packages, registers their module kinds, and checks that pass names are unique.
 * A package that fails to import throws, unless `onError` is given: then it is reported and skipped.
 */
export async function loadPassPackages(found: FoundPackage[], opts: { onError?: (pkg: FoundPackage, error: Error) => void } = {}): Promise<InstalledPass[]> {
  const out: InstalledPass[] = [];
  for (const f of found) {
    try {
      let mod: unknown;
      try {
        mod = await import(pathToFileURL(f.entry).href);
      } catch (e) {
        throw new InputError(`cannot import pass package ${f.packageName} from ${f.entry}: ${(e as Error).message}`);
      }
      if (!isPassPackage(mod)) {
        throw new InputError(`${f.packageName} has the "${PASS_KEYWORD}" keyword but its entry does not export a \`pass\` (with name, options, plan, apply)`);
      }
      mod.pass.registerKinds(registry);
      out.push({ ...f, pass: mod.pass, module: mod });
    } catch (e) {
      if (!opts.onError) throw e;
      opts.onError(f, e as Error);
    }
  }
  const byName = new Map<string, InstalledPass[]>();
  for (const p of out) byName.set(p.pass.name, [...(byName.get(p.pass.name) ?? []), p]);
  const dups = [...byName.entries()].filter(([, v]) => v.length > 1);
  if (dups.length) {
    throw new ConfigError(
      'duplicate pass names among installed packages',
      dups.map(([name, v]) => ({ path: name, message: `provided by ${v.map((p) => `${p.packageName}@${p.version} (${p.dir})`).join(' and ')}` })),
    );
  }
  return out;
}

/** Whether a name given by a user (package name, pass name or short name) designates this package. */
export function nameMatches(name: string, packageName: string): boolean {
  return name === packageName || packageName.replace(/^@[^/]+\//, '') === name;
}

/**
 * Finds and loads in one go. `only` restricts the packages imported (by package or short name);
 * unknown names fail listing what is installed.
 */
export async function installedPasses(
  opts: { cwd?: string; plugins?: string[]; only?: string[]; onError?: (pkg: FoundPackage, error: Error) => void } = {},
): Promise<InstalledPass[]> {
  let found = findPassPackages(opts);
  if (opts.only) {
    const missing = opts.only.filter((n) => !found.some((f) => nameMatches(n, f.packageName)));
    if (missing.length) {
      throw new InputError(`unknown pass ${missing.map((m) => `'${m}'`).join(', ')}. Installed passes: ${found.length ? found.map((f) => f.packageName).join(', ') : 'none (install a package with the "leanpass-pass" keyword)'}`);
    }
    found = found.filter((f) => opts.only?.some((n) => nameMatches(n, f.packageName)));
  }
  return loadPassPackages(found, opts.onError ? { onError: opts.onError } : {});
}

/** The bench and demo functions of a pass package: from its entry, else from its './bench' subpath. */
export async function benchFunctions(p: InstalledPass): Promise<Pick<PassPackage, 'bench' | 'demo'>> {
  let bench = p.module.bench;
  let demo = p.module.demo;
  if ((!bench || !demo) && p.benchEntry) {
    let mod: Partial<PassPackage>;
    try {
      mod = (await import(pathToFileURL(p.benchEntry).href)) as Partial<PassPackage>;
    } catch (e) {
      throw new InputError(`cannot import ${p.packageName}/bench from ${p.benchEntry}: ${(e as Error).message}`);
    }
    bench ??= typeof mod.bench === 'function' ? mod.bench : undefined;
    demo ??= typeof mod.demo === 'function' ? mod.demo : undefined;
  }
  return { ...(bench ? { bench } : {}), ...(demo ? { demo } : {}) };
}

/** Finds an installed pass by package name, pass name or short name (`skipcat`). */
export function findPass(passes: InstalledPass[], name: string): InstalledPass {
  const hit = passes.find((p) => p.pass.name === name || p.packageName === name || p.pass.name.replace(/^@[^/]+\//, '') === name);
  if (!hit) {
    throw new InputError(`unknown pass '${name}'. Installed passes: ${passes.length ? passes.map((p) => p.pass.name).join(', ') : 'none (install a package with the "leanpass-pass" keyword)'}`);
  }
  return hit;
}
