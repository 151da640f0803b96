// Root flat config: typescript-eslint type-checked rules plus Nx module boundaries (DESIGN.md's
// dependency direction). Each project re-exports this file so that Nx infers its lint target.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import nx from '@nx/eslint-plugin';

const libraries = ['scope:core', 'scope:nn', 'scope:linalg', 'scope:data', 'scope:train', 'scope:models', 'scope:zoo', 'type:pass'];

const boundaries = (extraForPasses) => [
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
      { sourceTag: 'scope:zoo', onlyDependOnLibsWithTags: ['scope:core', 'scope:nn', 'scope:models'] },
      { sourceTag: 'type:pass', onlyDependOnLibsWithTags: ['scope:core', 'scope:nn', 'scope:linalg', ...extraForPasses] },
      { sourceTag: 'type:app', onlyDependOnLibsWithTags: [...libraries, 'type:app'] },
      { sourceTag: 'type:tool', onlyDependOnLibsWithTags: [...libraries, 'type:tool'] },
    ],
  },
];

export default tseslint.config(
  {
    ignores: ['**/dist/**', '**/out-tsc/**', '**/node_modules/**', '**/.nx/**', '**/vitest.config.ts', '**/*.mjs', '**/*.cjs', 'tools/generators/**/files/**', 'tools/bench/**'],
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
    // Tests may use host models, the zoo, data and the trainer; library code of a pass may not.
    files: ['**/*.test.ts'],
    rules: {
      '@nx/enforce-module-boundaries': boundaries(['scope:models', 'scope:zoo', 'scope:data', 'scope:train']),
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
    },
  },
  {
    files: ['apps/**/*.ts', 'tools/**/*.ts'],
    rules: { 'no-console': 'off' },
  },
);
