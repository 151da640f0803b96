import { registry } from '@leanpass/core';
import { pass } from './pass.js';
import { registerToyKinds } from './toy.js';

export * from './math.js';
export * from './modules.js';
export * from './calibrate.js';
export * from './pass.js';

// Register the kinds on import so compressed models load without running the pass.
pass.registerKinds(registry);
registerToyKinds(registry);
export * from './toy.js';
