export * from './errors.js';
export * from './schedules.js';
export * from './losses.js';
export * from './clip.js';
export * from './optimizers.js';
export * from './checkpoint.js';
export * from './trainer.js';
export * from './evaluate.js';
