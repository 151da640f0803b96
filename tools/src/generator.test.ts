// Unit tests of the `pass` generator on an in-memory Nx tree (fast). The end-to-end check — generate
// into the real workspace, typecheck, lint, run the generated tests, remove — is
// tools/scripts/generator-check.mjs, run by `npm test`.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { Tree } from '@nx/devkit';
import { createTreeWithEmptyWorkspace } from '@nx/devkit/testing';
import { beforeEach, describe, expect, it } from 'vitest';

type Generator = (tree: Tree, options: Record<string, unknown>) => Promise<() => void>;
const require = createRequire(import.meta.url);
const generator = require('../generators/pass/index.cjs') as Generator;

const root = fileURLToPath(new URL('../..', import.meta.url));
const corePackage = readFileSync(`${root}packages/core/package.json`, 'utf8');
const core = JSON.parse(corePackage) as { version: string; peerDependencies: Record<string, string>; dependencies: Record<string, string> };

let tree: Tree;
beforeEach(() => {
  tree = createTreeWithEmptyWorkspace();
  tree.write('packages/core/package.json', corePackage);
  tree.write('LICENSE', 'MIT License\n');
  tree.write('tsconfig.json', JSON.stringify({ extends: './tsconfig.base.json', files: [], references: [{ path: './packages/core' }] }));
});

const read = (path: string): string => {
  const text = tree.read(path, 'utf-8');
  if (text === null) throw new Error(`${path} was not generated`);
  return text;
};
const readJson = <T>(path: string): T => JSON.parse(read(path)) as T;

interface PackageJson {
  name: string;
  keywords: string[];
  license: string;
  engines: Record<string, string>;
  files: string[];
  exports: Record<string, unknown>;
  publishConfig: { access: string };
  repository: { directory: string };
  peerDependencies: Record<string, string>;
  dependencies: Record<string, string>;
  nx: { tags: string[] };
}

describe('pass generator', () => {
  it('writes a complete package with the discovery keyword, the type:pass tag and the peers', async () => {
    await generator(tree, { name: 'my-pass', skipInstall: true });
    const dir = 'packages/my-pass';
    for (const f of ['package.json', 'README.md', 'LICENSE', 'src/index.ts', 'src/index.test.ts', 'tsconfig.json', 'tsconfig.lib.json', 'tsconfig.spec.json', 'vitest.config.ts', 'eslint.config.mjs']) {
      expect(tree.exists(`${dir}/${f}`), f).toBe(true);
      expect(read(`${dir}/${f}`), f).not.toMatch(/<%|%>/);
    }
    const pkg = readJson<PackageJson>(`${dir}/package.json`);
    expect(pkg.name).toBe('@leanpass/my-pass');
    expect(pkg.keywords).toContain('leanpass-pass');
    expect(pkg.nx.tags).toEqual(['type:pass']);
    expect(pkg.peerDependencies).toEqual({ '@leanpass/core': `^${core.version}`, '@tensorflow/tfjs': core.peerDependencies['@tensorflow/tfjs'] });
    expect(pkg.dependencies).toEqual({ zod: core.dependencies['zod'] });
    expect(pkg.publishConfig.access).toBe('public');
    expect(pkg.license).toBe('MIT');
    expect(pkg.engines['node']).toBeDefined();
    expect(pkg.repository.directory).toBe(dir);
    expect(pkg.exports['.']).toEqual({ '@leanpass/source': './src/index.ts', types: './dist/index.d.ts', import: './dist/index.js', default: './dist/index.js' });
    expect(pkg.files).toEqual(expect.arrayContaining(['dist', 'README.md', 'LICENSE', '!src/**/*.test.ts']));

    expect(readJson<{ references: Array<{ path: string }> }>(`${dir}/tsconfig.lib.json`).references).toEqual([{ path: '../core/tsconfig.lib.json' }]);
    expect(readJson<{ references: Array<{ path: string }> }>('tsconfig.json').references).toEqual([{ path: './packages/core' }, { path: './packages/my-pass' }]);
    expect(read(`${dir}/vitest.config.ts`)).toContain("from '../../vitest.shared.js'");
    expect(read(`${dir}/eslint.config.mjs`)).toBe("export { default } from '../../eslint.config.mjs';\n");
    expect(read(`${dir}/LICENSE`)).toBe('MIT License\n');

    const src = read(`${dir}/src/index.ts`);
    expect(src).toContain("export const SCALED_KIND = 'my-pass.scaled';");
    expect(src).toContain('export function myPass(input: MyPassInput = {}): PassStep {');
    expect(src).toContain("stage: 'compress',");
    expect(read(`${dir}/src/index.test.ts`)).toContain("import { passConformance } from '@leanpass/core/testing';");
  });

  it('escapes the description in code and honours --scope, --stage and --directory', async () => {
    await generator(tree, { name: 'fancy', scope: '@acme', stage: 'inference', directory: 'packages/passes/fancy', description: "It's a */ `test` \\ pass", skipInstall: true });
    const dir = 'packages/passes/fancy';
    const src = read(`${dir}/src/index.ts`);
    expect(src).toContain("description: 'It\\'s a */ `test` \\\\ pass',");
    expect(src).toContain(' * It\'s a * / `test` \\ pass');
    expect(src).toContain("stage: 'inference',");
    expect(readJson<PackageJson>(`${dir}/package.json`).name).toBe('@acme/fancy');
    expect(read(`${dir}/tsconfig.json`)).toContain('"extends": "../../../tsconfig.base.json"');
    expect(readJson<{ references: Array<{ path: string }> }>(`${dir}/tsconfig.lib.json`).references).toEqual([{ path: '../../core/tsconfig.lib.json' }]);
  });

  it.each([
    [{ name: 'MyPass' }, /kebab-case/],
    [{ name: 'my_pass' }, /kebab-case/],
    [{ name: '1pass' }, /kebab-case/],
    [{ name: 'ok', scope: 'acme' }, /npm scope/],
    [{ name: 'ok', stage: 'train' }, /one of finetune, compress, inference/],
    [{ name: 'ok', directory: '../outside' }, /inside the workspace/],
    [{ name: 'core' }, /packages\/core already exists/],
  ])('rejects %j', async (options, message) => {
    await expect(generator(tree, { skipInstall: true, ...options })).rejects.toThrow(message);
  });
});
