import { defineConfig } from 'vitest/config';

const shared = { testTimeout: 120_000, hookTimeout: 120_000 };

/**
 * Integration files that use only servers of their own on loopback (Redis, an
 * S3-compatible server, an EC2 query endpoint, a metadata endpoint, a
 * scheduler without nodes read by a headless browser): no criu, agent,
 * namespace or bridge, so they can run beside the rest.
 */
const LOOPBACK_ONLY = ['dashboard', 'ec2-query-protocol', 'image-store-conformance', 'metadata-service', 'node-lanes', 's3-production', 'scheduler-api'].map((n) => `test/integration/${n}.test.ts`);

export default defineConfig({
  test: {
    reporters: ['default'],
    // npm test runs the two projects as two vitest runs at once (test/run-suites.sh): vitest itself runs a config's
    // project groups one after another.
    projects: [
      {
        test: {
          ...shared,
          name: 'exclusive',
          include: ['test/integration/**/*.test.ts'],
          exclude: LOOPBACK_ONLY,
          // criu, agents, network namespaces and bridges on a 2-core machine: one file at a time, so that they do not
          // fight over CPU, disk and addresses.
          fileParallelism: false,
        },
      },
      {
        test: {
          ...shared,
          name: 'beside',
          include: ['test/unit/**/*.test.ts', ...LOOPBACK_ONLY],
          // Pure logic, helpers, and servers of their own: one file at a time beside the exclusive files, whose waits
          // on timeouts and processes leave a core to spare (about 80 s of a suite that took 16-19 min in one line).
          maxWorkers: 1,
        },
      },
    ],
  },
});
