export * from '../../src/hub/local-hub.js';
