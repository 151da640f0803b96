// Tests of the CI scripts' parsing: the vitest-report sums behind `tests: N passed, N failed` and the
// failed-task list read from Nx's output.
import { describe, expect, it } from 'vitest';

interface Counts {
  passed: number;
  failed: number;
  skipped: number;
  files: number;
  failures: string[];
}
const summarize = (await import(new URL('../scripts/summarize-tests.mjs', import.meta.url).href)) as {
  countReport(report: unknown): Counts;
  totals(rows: Counts[]): { passed: number; failed: number; skipped: number };
  projectDirs(): string[];
};
const testAll = (await import(new URL('../scripts/test-all.mjs', import.meta.url).href)) as {
  failedNxTasks(output: string): string[];
  notRunNxTasks(output: string): string[];
};

describe('summarize-tests', () => {
  it('counts passed, failed and skipped tests, and a file that failed to load as one failure', () => {
    const counts = summarize.countReport({
      testResults: [
        {
          name: '/w/packages/a/src/x.test.ts',
          status: 'failed',
          assertionResults: [
            { status: 'passed', fullName: 'x one' },
            { status: 'failed', fullName: 'x two' },
            { status: 'passed', fullName: 'x three' },
            { status: 'skipped', fullName: 'x four' },
          ],
        },
        { name: '/w/packages/a/src/broken.test.ts', status: 'failed', message: "Cannot find module './gone.js'\n  at …", assertionResults: [] },
        { name: '/w/packages/a/src/y.test.ts', status: 'passed', assertionResults: [{ status: 'passed', fullName: 'y' }] },
      ],
    });
    expect(counts).toEqual({
      passed: 3,
      failed: 2,
      skipped: 1,
      files: 3,
      failures: ['/w/packages/a/src/x.test.ts: x two', "/w/packages/a/src/broken.test.ts: Cannot find module './gone.js'"],
    });
    expect(summarize.totals([counts, { ...counts, passed: 10 }])).toEqual({ passed: 13, failed: 4, skipped: 2 });
  });

  it('finds every workspace project folder', () => {
    const dirs = summarize.projectDirs().map((d) => d.replace(/\\/g, '/'));
    expect(dirs.some((d) => d.endsWith('/packages/core'))).toBe(true);
    expect(dirs.some((d) => d.endsWith('/tools'))).toBe(true);
  });
});

describe('test-all', () => {
  it("reads the failed tasks from Nx's closing summary (colours included)", () => {
    const output = [
      '\u001b[2m> nx run @leanpass/core:lint\u001b[22m',
      '  - not a task line: prose',
      '\u001b[7m\u001b[1m\u001b[31m NX \u001b[39m\u001b[22m\u001b[27m  \u001b[31mRunning targets build, lint, test for 6 projects failed\u001b[39m',
      '',
      '\u001b[2mTasks not run because their dependencies failed or --nx-bail=true:\u001b[22m',
      '',
      '\u001b[2m-\u001b[22m @leanpass/skipcat:test',
      '\u001b[2m-\u001b[22m @leanpass/models:build',
      '',
      '\u001b[2mFailed tasks:\u001b[22m',
      '',
      '\u001b[2m-\u001b[22m @leanpass/core:lint',
      '\u001b[2m-\u001b[22m @leanpass/nn:test',
      '',
      '  Run duration:      14.3s',
    ].join('\n');
    expect(testAll.failedNxTasks(output)).toEqual(['@leanpass/core:lint', '@leanpass/nn:test']);
    expect(testAll.notRunNxTasks(output)).toEqual(['@leanpass/skipcat:test', '@leanpass/models:build']);
    expect(testAll.failedNxTasks('NX   Successfully ran targets build for 4 projects')).toEqual([]);
    expect(testAll.notRunNxTasks('NX   Successfully ran targets build for 4 projects')).toEqual([]);
  });
});
