#!/usr/bin/env node
// The leanpass CLI. Ctrl-C cancels the running command: the pipeline unsubscribes, output folders
// are written atomically (nothing half-written remains) and the exit code is 130. A second Ctrl-C
// exits at once.
/* global AbortController */
import { main } from '../dist/main.js';

const controller = new AbortController();
process.on('SIGINT', () => {
  if (controller.signal.aborted) process.exit(130);
  controller.abort();
});
const code = await main(process.argv.slice(2), { signal: controller.signal });
process.exit(code);
