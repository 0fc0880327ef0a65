import { defineConfig } from 'vitest/config';

const shared = { testTimeout: 120_000, hookTimeout: 120_000 };

export default defineConfig({
  test: {
    reporters: ['default'],
    // Two projects: npm test runs them as two vitest runs at once (test/run-suites.sh); a plain `vitest run` runs
    // the integration files and then the unit files.
    projects: [
      {
        test: {
          ...shared,
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          // Integration tests drive real CRIU and network namespaces on a 2-core machine: their files run one at
          // a time so they do not fight over CPU, disk and addresses.
          fileParallelism: false,
        },
      },
      {
        test: {
          ...shared,
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          // Pure logic, helpers and files of their own: one file at a time beside the integration files, whose waits
          // on timeouts and processes leave a core to spare; 45-60 s of a suite that took 16-19 min in one line.
          maxWorkers: 1,
        },
      },
    ],
  },
});
