export * from './llama/index.js';
export * from './vit/index.js';
export * from './dllm/index.js';
