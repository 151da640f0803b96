// Proves that the root eslint config really enforces DESIGN.md's dependency direction: the real
// config (eslint.config.mjs at the workspace root) lints in-memory probe files placed in real
// projects, and the Nx module-boundaries rule must reject the wrong-direction imports. If the rule
// were skipped (no project graph), misconfigured (tags, depConstraints) or dropped from the config,
// the "rejects" cases would come back clean and these tests would fail.
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ESLint } from 'eslint';
import tseslint from 'typescript-eslint';
import { beforeAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../..', import.meta.url));
const RULE = '@nx/enforce-module-boundaries';
// The probes exist only in memory, so the type-aware parser (projectService) cannot see them; every
// other part of the root config, the boundaries rule included, applies unchanged.
const PROBE = '__boundary_probe__';

let eslint: ESLint;

beforeAll(() => {
  // The rule reads Nx's cached project graph and silently skips when there is none: make sure it exists.
  const projects = JSON.parse(
    execFileSync(`${root}node_modules/.bin/nx`, ['show', 'projects', '--json'], {
      cwd: root,
      env: { ...process.env, NX_DAEMON: 'false', NX_NO_CLOUD: 'true' },
      stdio: ['ignore', 'pipe', 'pipe'],
    }).toString(),
  ) as string[];
  expect(projects).toEqual(expect.arrayContaining(['@leanpass/core', '@leanpass/nn', '@leanpass/data', '@leanpass/train']));
  eslint = new ESLint({
    cwd: root,
    overrideConfig: [{ files: [`**/${PROBE}*.ts`], ...tseslint.configs.disableTypeChecked }],
  });
});

async function boundaryErrors(project: string, code: string, file = `${PROBE}.ts`): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath: `${root}packages/${project}/src/${file}` });
  if (!result) throw new Error('eslint returned no result');
  const fatal = result.messages.filter((m) => m.fatal);
  if (fatal.length) throw new Error(`probe did not parse: ${fatal.map((m) => m.message).join('; ')}`);
  return result.messages.filter((m) => m.ruleId === RULE).map((m) => m.message);
}

const importOf = (spec: string) => `import * as probe from '${spec}';\nexport const used: unknown = probe;\n`;

describe('Nx module boundaries (root eslint config)', () => {
  it('rejects core importing nn (wrong direction: core <- nn)', async () => {
    const errors = await boundaryErrors('core', importOf('@leanpass/nn'));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/Circular dependency between "@leanpass\/core" and "@leanpass\/nn"/);
  });

  it('rejects nn importing data (scope:nn may only depend on scope:core)', async () => {
    const errors = await boundaryErrors('nn', importOf('@leanpass/data'));
    expect(errors).toEqual(['A project tagged with "scope:nn" can only depend on libs tagged with "scope:core"']);
  });

  it('rejects train importing nn (scope:train may depend on core and data only)', async () => {
    const errors = await boundaryErrors('train', importOf('@leanpass/nn'));
    expect(errors).toEqual(['A project tagged with "scope:train" can only depend on libs tagged with "scope:core", "scope:data"']);
  });

  it('rejects a relative import into another project', async () => {
    const errors = await boundaryErrors('nn', importOf('../../core/src/index.js'));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/relative or absolute path/);
  });

  it('accepts the allowed directions (nn -> core, train -> data, train -> core)', async () => {
    expect(await boundaryErrors('nn', importOf('@leanpass/core'))).toEqual([]);
    expect(await boundaryErrors('train', importOf('@leanpass/data'))).toEqual([]);
    expect(await boundaryErrors('train', importOf('@leanpass/core'))).toEqual([]);
  });

  it("lets a pass's tests and test helpers use host models and the zoo, but not its library code", async () => {
    const pass = 'lbp-wht'; // a type:pass project (DESIGN.md's LBP-WHT)
    const lib = await boundaryErrors(pass, importOf('@leanpass/models'));
    expect(lib).toHaveLength(1);
    expect(lib[0]).toMatch(/^A project tagged with "type:pass" can only depend on libs tagged with "scope:core", "scope:nn", "scope:linalg"/);
    expect(await boundaryErrors(pass, importOf('@leanpass/models'), `${PROBE}.test.ts`)).toEqual([]);
    expect(await boundaryErrors(pass, importOf('@leanpass/zoo'), `${PROBE}.test-util.ts`)).toEqual([]);
    // Another pass stays off limits, tests included.
    expect(await boundaryErrors(pass, importOf('@leanpass/skipcat'), `${PROBE}.test.ts`)).toHaveLength(1);
  });

  it('applies the same rule to test files', async () => {
    const errors = await boundaryErrors('nn', importOf('@leanpass/data'), `${PROBE}.test.ts`);
    expect(errors).toEqual(['A project tagged with "scope:nn" can only depend on libs tagged with "scope:core"']);
  });
});

describe('root eslint config', () => {
  it('ignores build and typecheck outputs', async () => {
    for (const path of ['packages/core/dist/index.js', 'packages/core/dist/index.d.ts', 'packages/core/out-tsc/spec/x.d.ts', 'tools/out-tsc/spec/y.d.ts']) {
      expect(await eslint.isPathIgnored(`${root}${path}`), path).toBe(true);
    }
    expect(await eslint.isPathIgnored(`${root}packages/core/src/index.ts`)).toBe(false);
  });

  it('lints the workspace scripts and the generator as plain JavaScript', async () => {
    const code = "import { x } from './y.mjs';\nconsole.log(undefinedThing, process.argv);\n";
    const [script] = await eslint.lintText(code, { filePath: `${root}tools/scripts/${PROBE}.mjs` });
    expect(script?.messages.map((m) => `${m.ruleId}: ${m.message}`)).toEqual(["@typescript-eslint/no-unused-vars: 'x' is defined but never used.", "no-undef: 'undefinedThing' is not defined."]);
    const [generator] = await eslint.lintText("'use strict';\nconst path = require('node:path');\nmodule.exports = path;\n", { filePath: `${root}tools/generators/pass/${PROBE}.cjs` });
    expect(generator?.messages).toEqual([]);
  });

  it('forbids console in library code but not in tools', async () => {
    const code = 'export function f(): void {\n  console.log(1);\n}\n';
    const lib = await eslint.lintText(code, { filePath: `${root}packages/core/src/${PROBE}.ts` });
    expect(lib[0]?.messages.map((m) => m.ruleId)).toContain('no-console');
    const tool = await eslint.lintText(code, { filePath: `${root}tools/src/${PROBE}.ts` });
    expect(tool[0]?.messages.map((m) => m.ruleId)).not.toContain('no-console');
  });
});
