export * from './errors.js';
export * from './idx.js';
export * from './dataset.js';
export * from './fashion-mnist.js';
export * from './text.js';
export * from './tasks.js';
