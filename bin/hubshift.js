#!/usr/bin/env -S node --initial-old-space-size=256
// Runs the TypeScript sources directly through tsx, resolved from this package,
// so `npx hubshift` works from any directory without a build step. The option on
// the first line is the agent's (src/agent/node-options.ts); `node bin/hubshift.js`
// leaves it out, and the agent then says so.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
