import { registry } from '@leanpass/core';
import { pass } from './pass.js';

export * from './decide.js';
export * from './options.js';
export * from './stats.js';
export * from './module.js';
export * from './calibrate.js';
export * from './pass.js';

// Register 'dare.attention' on import so rewritten models load without running the pass.
pass.registerKinds(registry);

export default pass;
