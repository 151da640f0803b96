import { defineConfig } from 'vitest/config';

/** Shared vitest settings: resolve workspace packages to their TypeScript sources, run once. */
export function leanpassVitest(name: string) {
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
    },
  });
}
