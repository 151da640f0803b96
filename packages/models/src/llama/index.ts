export * from './config.js';
export * from './model.js';
export * from './eval.js';
export * from './generate.js';
export * from './hf.js';
export * from './fortunes.js';
export * from './decode.js';
