export * from './config.js';
export * from './model.js';
export * from './objective.js';
export * from './sampler.js';
export * from './tasks.js';
