export * from './image-store.js';
export * from './dir-store.js';
export * from './manifest.js';
export * from './s3-store.js';
export * from './open-store.js';
export * from './checkpoint-writer.js';
export * from './checkpoint-reader.js';
