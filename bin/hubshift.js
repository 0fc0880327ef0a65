#!/usr/bin/env node
// Runs the TypeScript sources directly through tsx, resolved from this package,
// so `npx hubshift` works from any directory without a build step.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
