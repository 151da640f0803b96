import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { ConfigError, loadModel, type AnyModule, type DeserializeOptions } from '@leanpass/core';
// Importing the host families registers their module kinds, so zoo checkpoints load.
import '@leanpass/models';

/** The folder holding the bundled checkpoints (works from src/ and from dist/). */
export function zooDir(): string {
  return fileURLToPath(new URL('../models/', import.meta.url));
}

export interface ZooEntry {
  name: string;
  dir: string;
  /** The first paragraph of MODEL_CARD.md. */
  summary: string;
  bytes: number;
}

/** Every bundled checkpoint (folders with config.json, model.safetensors and MODEL_CARD.md). */
export function listZoo(): ZooEntry[] {
  const root = zooDir();
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .filter((n) => ['config.json', 'model.safetensors', 'MODEL_CARD.md'].every((f) => existsSync(join(root, n, f))))
    .sort()
    .map((name) => {
      const dir = join(root, name);
      const card = readFileSync(join(dir, 'MODEL_CARD.md'), 'utf8');
      const summary = card.split(/\n\s*\n/).find((p) => p.trim() && !p.trim().startsWith('#'))?.trim() ?? '';
      return { name, dir, summary, bytes: statSync(join(dir, 'model.safetensors')).size };
    });
}

/** The folder of one bundled checkpoint; names the available ones when it is missing. */
export function zooPath(name: string): string {
  const entry = listZoo().find((e) => e.name === name);
  if (!entry) {
    const have = listZoo().map((e) => e.name);
    throw new ConfigError(`no zoo model '${name}': bundled models are ${have.length ? have.join(', ') : 'none'}`);
  }
  return entry.dir;
}

/** Loads a bundled checkpoint by name (`zoo:` prefix allowed). */
export async function loadZoo(name: string, opts: DeserializeOptions = {}): Promise<AnyModule> {
  return loadModel(zooPath(name.replace(/^zoo:/, '')), opts);
}

/** The model card (markdown) of a bundled checkpoint. */
export function modelCard(name: string): string {
  return readFileSync(join(zooPath(name.replace(/^zoo:/, '')), 'MODEL_CARD.md'), 'utf8');
}
