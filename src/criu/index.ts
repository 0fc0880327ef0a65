export * from './binary.js';
export * from './driver.js';
export * from './log.js';
export * from './network-lock.js';
export * from './probe.js';
export * from './select.js';
export * from './tcp-repair.js';
export * from './lazy-pages.js';
