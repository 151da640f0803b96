import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { pathToFileURL } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { BackendError } from './errors.js';

/** The backends leanpass knows. `tensorflow` needs @tensorflow/tfjs-node-gpu or @tensorflow/tfjs-node. */
export type BackendName = 'wasm' | 'cpu' | 'tensorflow';
export const BACKENDS: readonly BackendName[] = ['wasm', 'cpu', 'tensorflow'];

const require = createRequire(import.meta.url);

/** Folder holding tfjs-backend-wasm's .wasm binaries inside node_modules (no network needed). */
export function wasmBinaryDir(): string {
  const main = require.resolve('@tensorflow/tfjs-backend-wasm');
  // main is .../tfjs-backend-wasm/dist/tf-backend-wasm.node.js (or similar) — the binaries sit in dist/.
  return dirname(main);
}

let wasmPathsSet = false;

export interface BackendInfo {
  name: BackendName;
  /** Which package provides it (for reports). */
  provider: string;
  threads: number;
}

/**
 * Selects and initialises a backend. `wasm` (default) loads its binaries from node_modules; `cpu` is
 * the pure-JS fallback; `tensorflow` uses @tensorflow/tfjs-node-gpu or @tensorflow/tfjs-node when
 * installed and otherwise fails with the command to install one.
 */
export async function useBackend(name: BackendName = 'wasm'): Promise<BackendInfo> {
  if (!BACKENDS.includes(name)) {
    throw new BackendError(`unknown backend '${String(name)}': expected one of ${BACKENDS.join(', ')}`);
  }
  if (name === 'wasm') {
    if (!wasmPathsSet && typeof process !== 'undefined' && process.versions?.node) {
      setWasmPaths(pathToFileURL(wasmBinaryDir() + '/').href.replace(/^file:\/\//, ''));
      wasmPathsSet = true;
    }
    await setOrThrow('wasm');
    return { name, provider: '@tensorflow/tfjs-backend-wasm', threads: 1 };
  }
  if (name === 'cpu') {
    await setOrThrow('cpu');
    return { name, provider: '@tensorflow/tfjs-backend-cpu', threads: 1 };
  }
  let provider: string | undefined;
  for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
    try {
      await import(pkg);
      provider = pkg;
      break;
    } catch {
      // not installed (or its native binary is missing): try the next one
    }
  }
  if (!provider) {
    throw new BackendError(
      "backend 'tensorflow' needs @tensorflow/tfjs-node-gpu (CUDA) or @tensorflow/tfjs-node, and neither could be loaded. " +
        'Install one beside leanpass: `npm install @tensorflow/tfjs-node@4.22.0` (or `@tensorflow/tfjs-node-gpu@4.22.0`), ' +
        "or choose --backend wasm (the default) or cpu.",
    );
  }
  await setOrThrow('tensorflow');
  return { name, provider, threads: 0 };
}

async function setOrThrow(name: string): Promise<void> {
  let ok: boolean;
  try {
    ok = await tf.setBackend(name);
    await tf.ready();
  } catch (e) {
    throw new BackendError(`backend '${name}' failed to initialise: ${(e as Error).message}`);
  }
  if (!ok || tf.getBackend() !== name) throw new BackendError(`backend '${name}' failed to initialise (tfjs is on '${tf.getBackend()}')`);
}

/** Kernels a code path needs; fails with the missing ones named (e.g. conv gradients on wasm). */
export function assertKernels(kernels: readonly string[], backend = tf.getBackend()): void {
  const missing = kernels.filter((k) => tf.getKernel(k, backend) === undefined);
  if (missing.length) {
    throw new BackendError(`backend '${backend}' lacks kernels ${missing.join(', ')}; use a leanpass layer that supplies them or --backend cpu`);
  }
}

