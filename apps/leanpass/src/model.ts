import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { CONFIG_FILE, WEIGHTS_FILE, loadModel, type AnyModule } from '@leanpass/core';
import { listZoo, loadZoo } from '@leanpass/zoo';
import { InputError } from './errors.js';

/** Loads a model from a zoo name (`zoo:vit-tiny` or `vit-tiny`) or a folder with config.json + model.safetensors. */
export async function resolveModel(spec: string, cwd = process.cwd()): Promise<{ model: AnyModule; source: string }> {
  const dir = resolve(cwd, spec);
  const isDir = existsSync(dir) && statSync(dir).isDirectory();
  if (isDir) {
    const missing = [CONFIG_FILE, WEIGHTS_FILE].filter((f) => !existsSync(resolve(dir, f)));
    if (missing.length) throw new InputError(`model folder ${dir} lacks ${missing.join(' and ')} (a model folder holds ${CONFIG_FILE} + ${WEIGHTS_FILE})`);
    return { model: await loadModel(dir), source: dir };
  }
  const name = spec.replace(/^zoo:/, '');
  const zoo = listZoo();
  if (zoo.some((z) => z.name === name)) return { model: await loadZoo(name), source: `zoo:${name}` };
  throw new InputError(
    `no model '${spec}': looked for a folder ${dir} (with ${CONFIG_FILE} + ${WEIGHTS_FILE}) and for a zoo model named '${name}' ` +
      `(bundled: ${zoo.length ? zoo.map((z) => z.name).join(', ') : 'none'})`,
  );
}
