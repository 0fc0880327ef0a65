export * from './errors.js';
export * from './session.js';
export * from './checkpoint.js';
export * from './ids.js';
export * from './cluster.js';
export * from './decision.js';
export * from './control.js';
export * from './cloud.js';
