// Root flat config: typescript-eslint type-checked rules plus Nx module boundaries (DESIGN.md's
// dependency direction). Each project re-exports this file so that Nx infers its lint target.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import nx from '@nx/eslint-plugin';

const nodeGlobals = Object.fromEntries(
  ['process', 'console', 'Buffer', 'URL', 'setTimeout', 'clearTimeout', 'performance', 'structuredClone'].map((g) => [g, 'readonly']),
);

const libraries = ['scope:core', 'scope:nn', 'scope:linalg', 'scope:data', 'scope:train', 'scope:models', 'scope:zoo', 'type:pass'];

const boundaries = (extraForPasses, extraForZoo = []) => [
  'error',
  {
    enforceBuildableLibDependency: true,
    allow: [],
    depConstraints: [
      { sourceTag: 'scope:core', onlyDependOnLibsWithTags: ['scope:core'] },
      { sourceTag: 'scope:nn', onlyDependOnLibsWithTags: ['scope:core'] },
      { sourceTag: 'scope:linalg', onlyDependOnLibsWithTags: ['scope:core'] },
      { sourceTag: 'scope:data', onlyDependOnLibsWithTags: ['scope:core'] },
      { sourceTag: 'scope:train', onlyDependOnLibsWithTags: ['scope:core', 'scope:data'] },
      { sourceTag: 'scope:models', onlyDependOnLibsWithTags: ['scope:core', 'scope:nn', 'scope:linalg', 'scope:data'] },
      { sourceTag: 'scope:zoo', onlyDependOnLibsWithTags: ['scope:core', 'scope:nn', 'scope:models', ...extraForZoo] },
      { sourceTag: 'type:pass', onlyDependOnLibsWithTags: ['scope:core', 'scope:nn', 'scope:linalg', ...extraForPasses] },
      { sourceTag: 'type:app', onlyDependOnLibsWithTags: [...libraries, 'type:app'] },
      { sourceTag: 'type:tool', onlyDependOnLibsWithTags: [...libraries, 'type:tool'] },
    ],
  },
];

const config = tseslint.config(
  {
    ignores: [
      '**/dist/**',
      '**/out-tsc/**',
      '**/node_modules/**',
      '**/.nx/**',
      '**/vitest.config.ts',
      '**/*.mjs',
      '**/*.cjs',
      // The workspace scripts and the generator are linted, as plain JavaScript (see below).
      '!tools/scripts/*.mjs',
      '!tools/generators/*/*.cjs',
      'tools/generators/**/files/**',
      'tools/bench/**',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    files: ['**/*.ts'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    plugins: { '@nx': nx },
    rules: {
      '@nx/enforce-module-boundaries': boundaries([]),
      'no-console': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    // Tests (and test helpers: *.test-util.ts, files under test/) may use host models, the zoo, data and the trainer;
    // library code of a pass may not. The zoo's tests may use data (to rebuild a card's evaluation slice).
    files: ['**/*.test.ts', '**/*.test-util.ts', '**/test/**/*.ts'],
    rules: {
      '@nx/enforce-module-boundaries': boundaries(['scope:models', 'scope:zoo', 'scope:data', 'scope:train'], ['scope:data']),
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
    },
  },
  {
    files: ['apps/**/*.ts', 'tools/**/*.ts'],
    rules: { 'no-console': 'off' },
  },
  {
    // Type-checked rules need TypeScript's type information: plain JavaScript gets the untyped rules.
    files: ['**/*.js', '**/*.mjs', '**/*.cjs'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: { globals: nodeGlobals },
  },
  {
    files: ['**/*.cjs'],
    languageOptions: { sourceType: 'commonjs', globals: { require: 'readonly', module: 'writable', exports: 'writable', __dirname: 'readonly' } },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
);

// ESLint 10 looks up the config file from each linted file's directory, so this file is loaded
// through each project's eslint.config.mjs and its patterns would be relative to that project.
// Anchoring every block at the workspace root keeps `apps/**`, `tools/**` and the ignores meaningful.
export default config.map((block) => ({ ...block, basePath: import.meta.dirname }));
