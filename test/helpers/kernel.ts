export * from '../../src/agent/kernel-state.js';
