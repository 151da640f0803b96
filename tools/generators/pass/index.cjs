// Nx generator `@leanpass/tools:pass`: a new pass package.
//
//   npx nx g @leanpass/tools:pass my-pass [--scope @acme] [--stage compress] [--description "…"]
//
// Writes packages/<name>/ (package.json with the `leanpass-pass` discovery keyword and nx tag
// `type:pass`, a Pass skeleton that compiles and works, its test, README, tsconfigs, vitest and eslint
// configs, LICENSE), adds the project to the root tsconfig.json references, then runs `npm install`
// (unless --skipInstall) so the lockfile and node_modules know the new workspace package.
//
// Plain CommonJS on purpose: Nx loads local generators with require(), and no TypeScript
// transpiler (ts-node / @swc-node) is installed for it in this workspace.
'use strict';

const path = require('node:path');
const { generateFiles, installPackagesTask, names, offsetFromRoot, readJson, updateJson, writeJson } = require('@nx/devkit');

const NAME = /^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$/;
const SCOPE = /^@[a-z0-9][a-z0-9._-]*$/;
const STAGES = ['finetune', 'compress', 'inference'];

/** Checks the options and fills in the defaults; throws an Error naming what was expected. */
function normalizeOptions(tree, raw) {
  const name = String(raw.name ?? '').trim();
  if (!NAME.test(name)) throw new Error(`pass name: expected lower-case kebab-case such as 'my-pass', found '${name}'`);
  const scope = raw.scope ?? '@leanpass';
  if (!SCOPE.test(scope)) throw new Error(`--scope: expected an npm scope such as '@leanpass', found '${scope}'`);
  const stage = raw.stage ?? 'compress';
  if (!STAGES.includes(stage)) throw new Error(`--stage: expected one of ${STAGES.join(', ')}, found '${stage}'`);
  const directory = (raw.directory ?? `packages/${name}`).replace(/\\/g, '/').replace(/\/+$/, '');
  if (path.posix.isAbsolute(directory) || directory.split('/').includes('..')) {
    throw new Error(`--directory: expected a folder inside the workspace, found '${directory}'`);
  }
  if (tree.exists(directory)) throw new Error(`${directory} already exists; choose another name or --directory`);
  const packageName = `${scope}/${name}`;
  const description = String(raw.description ?? `A leanpass pass (${name})`).replace(/\s+/g, ' ').trim();
  return { name, scope, stage, directory, packageName, description, skipInstall: raw.skipInstall === true };
}

/** A single-quoted TypeScript string literal. */
function tsString(text) {
  return `'${text.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

async function passGenerator(tree, raw) {
  const o = normalizeOptions(tree, raw);
  const corePath = 'packages/core/package.json';
  if (!tree.exists(corePath)) throw new Error(`${corePath} not found: run the generator at the root of the leanpass workspace`);
  const core = readJson(tree, corePath);
  const tfjs = core.peerDependencies?.['@tensorflow/tfjs'];
  const zod = core.dependencies?.zod;
  if (!tfjs || !zod) throw new Error(`${corePath}: expected a peerDependency on @tensorflow/tfjs and a dependency on zod, found ${JSON.stringify({ tfjs, zod })}`);

  const offset = offsetFromRoot(o.directory);
  const repoUrl = core.repository?.url;
  const n = names(o.name);
  generateFiles(tree, path.join(__dirname, 'files'), o.directory, {
    tmpl: '',
    name: o.name,
    packageName: o.packageName,
    className: n.className,
    propertyName: n.propertyName,
    stage: o.stage,
    description: o.description,
    descriptionLiteral: tsString(o.description),
    descriptionComment: o.description.replace(/\*\//g, '* /'),
    offset,
    coreLibRef: path.posix.relative(o.directory, 'packages/core/tsconfig.lib.json'),
    repositoryHome: (repoUrl ?? 'https://www.npmjs.com/org/leanpass').replace(/^git\+/, '').replace(/\.git$/, ''),
  });

  const pkg = {
    name: o.packageName,
    version: '0.1.0',
    description: o.description,
    type: 'module',
    license: core.license ?? 'MIT',
    author: core.author ?? 'leanpass contributors',
    ...(repoUrl ? { repository: { type: 'git', url: repoUrl, directory: o.directory } } : {}),
    keywords: ['leanpass', 'leanpass-pass', 'tensorflowjs', 'model-efficiency', o.name],
    engines: core.engines ?? { node: '>=20.19.0' },
    sideEffects: false,
    exports: {
      '.': {
        '@leanpass/source': './src/index.ts',
        types: './dist/index.d.ts',
        import: './dist/index.js',
        default: './dist/index.js',
      },
      './package.json': './package.json',
    },
    main: './dist/index.js',
    types: './dist/index.d.ts',
    files: ['dist', 'src', '!src/**/*.test.ts', '!dist/**/*.test.*', '!dist/**/*.tsbuildinfo', 'README.md', 'LICENSE'],
    publishConfig: { access: 'public' },
    dependencies: { zod },
    peerDependencies: { '@leanpass/core': `^${core.version}`, '@tensorflow/tfjs': tfjs },
    nx: { tags: ['type:pass'] },
  };
  writeJson(tree, `${o.directory}/package.json`, pkg);
  if (tree.exists('LICENSE')) tree.write(`${o.directory}/LICENSE`, tree.read('LICENSE'));

  if (tree.exists('tsconfig.json')) {
    updateJson(tree, 'tsconfig.json', (json) => {
      const refs = json.references ?? [];
      if (!refs.some((r) => r.path === `./${o.directory}`)) refs.push({ path: `./${o.directory}` });
      return { ...json, references: refs };
    });
  }

  return () => {
    if (!o.skipInstall) installPackagesTask(tree, true);
  };
}

module.exports = passGenerator;
module.exports.default = passGenerator;
module.exports.normalizeOptions = normalizeOptions;
