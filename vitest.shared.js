// Shared vitest settings for every project's vitest.config.ts (`leanpassVitest('<name>')`).
//
// Plain JavaScript with a hand-written vitest.shared.d.ts on purpose: each project's tsconfig.spec.json
// type-checks its vitest.config.ts, which imports this file from outside the project's rootDir. A
// TypeScript source here would fail those typechecks (TS6059/TS6307) and be emitted as a stray
// vitest.shared.js beside it; a declaration file is neither checked against rootDir nor emitted.
import { defineConfig } from 'vitest/config';

/**
 * Resolves workspace packages to their TypeScript sources (the `@leanpass/source` export condition),
 * runs once (no watch), and besides the console output writes a JSON report to
 * `<project>/out-tsc/vitest-report.json` (an Nx output of the `test` target, so cached runs restore
 * it); `tools/scripts/summarize-tests.mjs` sums the reports into the `N passed, N failed` line CI reads.
 * @param {string} name the project's short name, shown in vitest's output
 */
export function leanpassVitest(name) {
  return defineConfig({
    resolve: { conditions: ['@leanpass/source'] },
    ssr: { resolve: { conditions: ['@leanpass/source'], externalConditions: [] } },
    test: {
      name,
      include: ['src/**/*.test.ts'],
      watch: false,
      testTimeout: 120_000,
      hookTimeout: 120_000,
      pool: 'forks',
      reporters: ['default', 'json'],
      outputFile: { json: 'out-tsc/vitest-report.json' },
    },
  });
}
