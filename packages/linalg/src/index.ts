export * from './matrix.js';
export * from './decomp.js';
