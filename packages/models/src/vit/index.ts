export * from './ops.js';
export * from './vit.js';
