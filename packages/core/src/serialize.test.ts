import type * as fsp from 'node:fs/promises';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { useBackend } from './backend.js';
import { createRunContext, type RunContext } from './context.js';
import { ConfigError, FormatError } from './errors.js';
import { Module, ModuleRegistry, registry as globalRegistry, type AnyModule, type InitContext, type ModuleNode } from './module.js';
import { Rng } from './rng.js';
import { parseSafetensors, serializeSafetensors } from './safetensors.js';
import { cloneModel, deserializeModel, loadModel, saveModel, serializeModel, validateModelFile, type ModelFile } from './serialize.js';

// File-system failures are injected by wrapping node:fs/promises (as root, permissions cannot make writes fail).
const fsHooks = vi.hoisted(() => ({
  failRename: undefined as undefined | ((to: string) => boolean),
  failOpen: undefined as undefined | ((path: string) => boolean),
}));
vi.mock('node:fs/promises', async (importOriginal) => {
  const orig = await importOriginal<typeof fsp>();
  const simulated = (what: string): Error => Object.assign(new Error(`EIO: simulated failure, ${what}`), { code: 'EIO' });
  return {
    ...orig,
    rename: async (from: string, to: string) => {
      if (fsHooks.failRename?.(String(to))) throw simulated(`rename '${String(to)}'`);
      return orig.rename(from, to);
    },
    open: async (path: string, ...rest: [string, number]) => {
      if (fsHooks.failOpen?.(String(path))) throw simulated(`open '${String(path)}'`);
      return orig.open(path, ...rest);
    },
  };
});

type LinearCfg = { inDim: number; outDim: number; bias: boolean };
class TLinear extends Module<tf.Tensor, tf.Tensor, LinearCfg> {
  readonly kind = 'ser.linear';
  constructor(cfg: LinearCfg, init: InitContext) {
    super(cfg);
    this.addParam('weight', tf.tensor2d(init.rng.normalArray(cfg.inDim * cfg.outDim, 0.5), [cfg.inDim, cfg.outDim]));
    if (cfg.bias) this.addParam('bias', tf.tensor1d(init.rng.normalArray(cfg.outDim, 0.1)));
  }
  forward(x: tf.Tensor): tf.Tensor {
    const y = tf.matMul(x, this.param('weight').variable);
    return this.config.bias ? tf.add(y, this.param('bias').variable) : y;
  }
}

/** What a pass might turn a linear into: two factors. */
type LowRankCfg = { inDim: number; outDim: number; rank: number };
class TLowRank extends Module<tf.Tensor, tf.Tensor, LowRankCfg> {
  readonly kind = 'ser.lowrank';
  constructor(cfg: LowRankCfg, init: InitContext) {
    super(cfg);
    this.addParam('a', tf.tensor2d(init.rng.normalArray(cfg.inDim * cfg.rank), [cfg.inDim, cfg.rank]));
    this.addParam('b', tf.tensor2d(init.rng.normalArray(cfg.rank * cfg.outDim), [cfg.rank, cfg.outDim]));
  }
  forward(x: tf.Tensor): tf.Tensor {
    return tf.matMul(tf.matMul(x as tf.Tensor2D, this.param('a').variable as tf.Tensor2D), this.param('b').variable);
  }
}

/** An int32, non-trainable parameter (a step counter) that scales nothing: output = input. */
class TCounter extends Module<tf.Tensor, tf.Tensor, { n: number }> {
  readonly kind = 'ser.counter';
  constructor(cfg: { n: number }) {
    super(cfg);
    this.addParam('steps', tf.zeros([cfg.n], 'int32'), false);
  }
  forward(x: tf.Tensor): tf.Tensor {
    return x;
  }
}

type SeqCfg = { dim: number; names: string[] };
class TSeq extends Module<tf.Tensor, tf.Tensor, SeqCfg> {
  readonly kind = 'ser.seq';
  constructor(cfg: SeqCfg, init: InitContext) {
    super(cfg);
    for (const n of cfg.names) this.addChild(n, new TLinear({ inDim: cfg.dim, outDim: cfg.dim, bias: true }, init));
    this.addChild('counter', new TCounter({ n: 2 }));
  }
  forward(x: tf.Tensor, ctx: RunContext): tf.Tensor {
    let h = x;
    for (const n of this.config.names) h = tf.relu(this.child(n).call(h, ctx) as tf.Tensor);
    return this.child('counter').call(h, ctx) as tf.Tensor;
  }
}

function makeRegistry(): ModuleRegistry {
  const reg = new ModuleRegistry();
  reg.register('ser.linear', (c, i) => new TLinear(c as LinearCfg, i));
  reg.register('ser.lowrank', (c, i) => new TLowRank(c as LowRankCfg, i));
  reg.register('ser.counter', (c) => new TCounter(c as { n: number }));
  reg.register('ser.seq', (c, i) => new TSeq(c as SeqCfg, i));
  return reg;
}
const reg = makeRegistry();

const NAMES = ['l0', '__proto__', 'constructor', 'l3'];
function makeModel(seed = 7): TSeq {
  return new TSeq({ dim: 4, names: NAMES }, { rng: new Rng(seed) });
}

/** Simulates a pass: rewrites two children and records provenance, as a pass would. */
function rewrite(m: AnyModule): void {
  m.replace('__proto__', new TLowRank({ inDim: 4, outDim: 4, rank: 2 }, { rng: new Rng(99) })).dispose();
  m.get('__proto__').mark = 'test-pass';
  m.replace('l3', new TLinear({ inDim: 4, outDim: 4, bias: false }, { rng: new Rng(98) })).dispose();
  m.provenance.push({ pass: 'test-pass', version: '1.0.0', options: { rank: 2, nested: { a: [1, 'x'] } }, seed: 3, paths: ['__proto__', 'l3'] });
}

const X = (): tf.Tensor2D => tf.tensor2d([[0.5, -1, 2, 0.25], [1, 1, -0.5, 3]]);

async function outputs(m: AnyModule): Promise<number[]> {
  const y = tf.tidy(() => m.call(X(), createRunContext()) as tf.Tensor);
  const v = Array.from(await y.data());
  y.dispose();
  return v;
}

async function paramValues(m: AnyModule): Promise<Record<string, number[]>> {
  const out: Record<string, number[]> = {};
  for (const [p, param] of m.namedParams()) out[p] = Array.from(await param.variable.data());
  return out;
}

function withoutDigest(c: ModelFile): ModelFile {
  const copy = structuredClone(c);
  delete copy.weights;
  return copy;
}

function expectThrows(fn: () => unknown, type: new (...a: never[]) => Error, pattern: RegExp): Error {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(type);
  expect((caught as Error).message).toMatch(pattern);
  return caught as Error;
}

let dir: string;
beforeAll(async () => {
  await useBackend('cpu');
  dir = await mkdtemp(join(tmpdir(), 'leanpass-ser-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});
afterEach(() => {
  fsHooks.failRename = undefined;
  fsHooks.failOpen = undefined;
});

describe('serializeModel / deserializeModel', () => {
  it('stores parameters by path as F32 (I32 for ints) with the tree, provenance and frozen flags', async () => {
    const m = makeModel();
    m.get('l0').mark = 'marked';
    const { config, weights } = await serializeModel(m, { metadata: { note: 'hello' } });
    expect(config.format).toBe('leanpass-model/1');
    expect(config.metadata).toEqual({ note: 'hello' });
    expect(Object.keys(config.root.children!)).toEqual([...NAMES, 'counter']);
    expect(config.root.children!['l0']!.mark).toBe('marked');
    expect(config.frozen).toEqual(['counter.steps']);
    const st = parseSafetensors(weights);
    expect([...st.tensors.keys()].sort()).toEqual([...m.namedParams()].map(([p]) => p).sort());
    expect(st.tensors.get('__proto__.weight')!.dtype).toBe('F32');
    expect(st.tensors.get('__proto__.weight')!.shape).toEqual([4, 4]);
    expect(st.tensors.get('counter.steps')!.dtype).toBe('I32');
    // The JSON text keeps the child literally named __proto__.
    const text = JSON.stringify(config);
    expect(text).toContain('"__proto__":{"kind":"ser.linear"');
    expect(validateModelFile(JSON.parse(text))).toBeTruthy();
    m.dispose();
  });

  it('round-trips a rewritten model: structure, marks, provenance, weights, outputs and trainable flags', async () => {
    const m = makeModel();
    rewrite(m);
    m.get('l0').setTrainable(false);
    const before = tf.memory().numTensors;
    const { config, weights } = await serializeModel(m);
    expect(tf.memory().numTensors).toBe(before);
    // Through JSON text, as a file would be.
    const loaded = deserializeModel(JSON.parse(JSON.stringify(config)), weights, { registry: reg, seed: 12345 });
    // Only the loaded model's own variables remain: the default-built children it replaced were disposed.
    expect(tf.memory().numTensors - before).toBe([...loaded.namedParams()].length);
    expect(loaded.toNode()).toEqual(m.toNode());
    expect(loaded.get('__proto__').kind).toBe('ser.lowrank');
    expect(loaded.get('__proto__').mark).toBe('test-pass');
    expect(loaded.get('l3').config).toEqual({ inDim: 4, outDim: 4, bias: false });
    expect(loaded.provenance).toEqual(m.provenance);
    expect(loaded.provenance).not.toBe(m.provenance);
    expect(await paramValues(loaded)).toEqual(await paramValues(m));
    expect(await outputs(loaded)).toEqual(await outputs(m));
    expect([...loaded.namedParams()].map(([p, x]) => [p, x.trainable])).toEqual([...m.namedParams()].map(([p, x]) => [p, x.trainable]));
    expect(loaded.get('l0').params.get('weight')!.trainable).toBe(false);
    m.dispose();
    loaded.dispose();
    expect(tf.memory().numTensors).toBe(before - [...m.namedParams()].length);
  });

  it('cloneModel gives an independent copy with equal outputs', async () => {
    const m = makeModel(3);
    rewrite(m);
    const c = await cloneModel(m, { registry: reg });
    expect(await outputs(c)).toEqual(await outputs(m));
    c.get('l0').param('weight').assign(tf.zeros([4, 4]));
    expect(await outputs(c)).not.toEqual(await outputs(m));
    m.dispose();
    c.dispose();
  });

  it('round-trips on the wasm backend too', async () => {
    await useBackend('wasm');
    try {
      const m = makeModel(11);
      rewrite(m);
      const before = tf.memory().numTensors;
      const c = await cloneModel(m, { registry: reg });
      expect(await outputs(c)).toEqual(await outputs(m));
      expect(await paramValues(c)).toEqual(await paramValues(m));
      c.dispose();
      expect(tf.memory().numTensors).toBe(before);
      m.dispose();
    } finally {
      await useBackend('cpu');
    }
  });

  it('loads int parameters and F16/BF16 weights written by other tools', async () => {
    const m = makeModel();
    const { config, weights } = await serializeModel(m);
    const st = parseSafetensors(weights);
    const w = st.tensors.get('l0.weight')!;
    const vals = new Float32Array(w.data.slice().buffer);
    const { rawFromFloat32 } = await import('./safetensors.js');
    st.tensors.set('l0.weight', rawFromFloat32(vals, w.shape, 'F16'));
    st.tensors.set('counter.steps', rawFromFloat32([5, -6], [2], 'I64'));
    const loaded = deserializeModel(withoutDigest(config), serializeSafetensors(st.tensors), { registry: reg });
    const got = Array.from(await loaded.get('l0').param('weight').variable.data());
    got.forEach((g, i) => expect(Math.abs(g - (vals[i] as number))).toBeLessThanOrEqual(Math.abs(vals[i] as number) * 2 ** -11 + 1e-7));
    expect(loaded.get('counter').param('steps').dtype).toBe('int32');
    expect(Array.from(await loaded.get('counter').param('steps').variable.data())).toEqual([5, -6]);
    m.dispose();
    loaded.dispose();
  });
});

describe('deserializeModel rejects bad input', () => {
  it('lists missing, unexpected, misshapen and mistyped tensors together, and leaks nothing', async () => {
    const m = makeModel();
    const { config, weights } = await serializeModel(m);
    const st = parseSafetensors(weights);
    st.tensors.delete('l0.bias');
    st.tensors.delete('l3.weight');
    st.tensors.set('extra.weight', st.tensors.get('l0.weight')!);
    st.tensors.set('l0.weight', { dtype: 'F32', shape: [2, 8], data: st.tensors.get('l0.weight')!.data });
    st.tensors.set('counter.steps', { dtype: 'F32', shape: [2], data: new Uint8Array(8) });
    const before = tf.memory().numTensors;
    const err = expectThrows(() => deserializeModel(withoutDigest(config), serializeSafetensors(st.tensors), { registry: reg }), FormatError, /5 problems/);
    expect(err.message).toMatch(/l0\.weight: expected shape \[4, 4\], found \[2, 8\]/);
    expect(err.message).toMatch(/l0\.bias: missing from model\.safetensors \(expected float32 \[4\]\)/);
    expect(err.message).toMatch(/l3\.weight: missing/);
    expect(err.message).toMatch(/counter\.steps: a int32 parameter cannot be loaded from F32/);
    expect(err.message).toMatch(/extra\.weight: unexpected tensor/);
    expect(tf.memory().numTensors).toBe(before);
    m.dispose();
  });

  it('refuses weights that do not match the digest in config.json', async () => {
    const m = makeModel();
    const other = makeModel(8);
    const { config } = await serializeModel(m);
    const { weights } = await serializeModel(other);
    expectThrows(() => deserializeModel(config, weights, { registry: reg }), FormatError, /model\.safetensors does not belong to this config\.json/);
    m.dispose();
    other.dispose();
  });

  it('validates config.json and names every bad field by its path', () => {
    const bad = {
      format: 'leanpass-model/2',
      root: { kind: 'ser.seq', config: { dim: 4, names: ['l0'] }, children: { l0: { kind: 5, config: [] }, 'bad.name': { kind: 'x', config: {} } } },
      provenance: [{ pass: 'p', version: '1', options: {}, seed: 'one', paths: [] }],
      metadata: { a: 1 },
      weights: { bytes: -1, sha256: 'zz' },
    };
    const err = expectThrows(() => deserializeModel(bad, new Uint8Array(16)), FormatError, /^config\.json: not a valid leanpass-model\/1 file/);
    for (const p of [
      /format: expected "leanpass-model\/1", found string "leanpass-model\/2"/,
      /root\.children\.l0\.kind: expected a non-empty string, found number 5/,
      /root\.children\.l0\.config: expected an object, found an array/,
      /root\.children\.bad\.name: child names must match/,
      /provenance\[0\]\.seed: /,
      /metadata\.a: /,
      /weights\.bytes: /,
      /weights\.sha256: expected 64 lowercase hex digits/,
    ]) {
      expect(err.message).toMatch(p);
    }
    expectThrows(() => validateModelFile([]), FormatError, /expected an object, found an array/);
    expectThrows(() => validateModelFile({ format: 'leanpass-model/1', root: { kind: 'x', config: { v: Number.NaN } }, provenance: [] }), FormatError, /root\.config\.v: expected a finite number, found NaN/);
  });

  it('names unknown kinds and tree mismatches, and leaks nothing', async () => {
    const m = makeModel();
    const { config, weights } = await serializeModel(m);
    const before = tf.memory().numTensors;
    const unknown = structuredClone(config);
    (unknown.root.children!['l3'] as ModuleNode).kind = 'ser.nope';
    expectThrows(() => deserializeModel(unknown, weights, { registry: reg }), ConfigError, /cannot build module 'l3': unknown module kind 'ser\.nope'/);
    const extra = withoutDigest(config);
    extra.root.children!['ghost'] = { kind: 'ser.counter', config: { n: 1 } };
    delete extra.root.children!['l0'];
    const err = expectThrows(() => deserializeModel(extra, weights, { registry: reg }), FormatError, /module tree does not match/);
    expect(err.message).toMatch(/ghost: config\.json has a child 'ghost' \(ser\.counter\) that ser\.seq does not build/);
    expect(err.message).toMatch(/l0: ser\.seq builds a child 'l0' that config\.json does not have/);
    expect(tf.memory().numTensors).toBe(before);
    expectThrows(() => deserializeModel(config, weights.subarray(0, 40), { registry: reg }), FormatError, /model\.safetensors/);
    m.dispose();
  });
});

describe('saveModel / loadModel', () => {
  it('saves into a new directory and loads back identical outputs, using the global registry by default', async () => {
    for (const [k, f] of [
      ['ser.linear', (c: never, i: InitContext) => new TLinear(c, i)],
      ['ser.lowrank', (c: never, i: InitContext) => new TLowRank(c, i)],
      ['ser.counter', (c: never) => new TCounter(c)],
      ['ser.seq', (c: never, i: InitContext) => new TSeq(c, i)],
    ] as const) {
      if (!globalRegistry.has(k)) globalRegistry.register(k, f as never);
    }
    const m = makeModel();
    rewrite(m);
    const target = join(dir, 'nested', 'model-a');
    await saveModel(m, target, { metadata: { task: 'unit' } });
    expect((await readdir(target)).sort()).toEqual(['config.json', 'model.safetensors']);
    const text = await readFile(join(target, 'config.json'), 'utf8');
    expect(text.endsWith('\n')).toBe(true);
    expect(JSON.parse(text).metadata).toEqual({ task: 'unit' });
    const loaded = await loadModel(target);
    expect(await outputs(loaded)).toEqual(await outputs(m));
    expect(loaded.provenance).toEqual(m.provenance);
    m.dispose();
    loaded.dispose();
  });

  it('a config.json that is not JSON fails with FormatError naming the file', async () => {
    const target = join(dir, 'broken');
    const m = makeModel();
    await saveModel(m, target);
    await writeFile(join(target, 'config.json'), '{"format": ');
    await expect(loadModel(target, { registry: reg })).rejects.toThrow(/broken\/config\.json: not valid JSON/);
    await saveModel(m, target);
    const other = makeModel(5);
    await saveModel(other, join(dir, 'other'));
    await writeFile(join(target, 'model.safetensors'), await readFile(join(dir, 'other', 'model.safetensors')));
    await expect(loadModel(target, { registry: reg })).rejects.toThrow(/broken: config\.json: model\.safetensors does not belong to this config\.json/);
    other.dispose();
    m.dispose();
  });

  describe('a failed save leaves the previous files intact', () => {
    async function savedOnce(name: string): Promise<{ target: string; m: TSeq; expected: number[] }> {
      const target = join(dir, name);
      const m = makeModel(1);
      await saveModel(m, target);
      return { target, m, expected: await outputs(m) };
    }
    async function expectIntact(target: string, expected: number[]): Promise<void> {
      expect((await readdir(target)).sort()).toEqual(['config.json', 'model.safetensors']);
      const loaded = await loadModel(target, { registry: reg });
      expect(await outputs(loaded)).toEqual(expected);
      loaded.dispose();
    }

    it('when a parameter cannot be read', async () => {
      const { target, m, expected } = await savedOnce('fail-param');
      m.get('l0').param('weight').assign(tf.zeros([4, 4]));
      m.get('l3').param('bias').variable.dispose();
      await expect(saveModel(m, target)).rejects.toThrow(/cannot save: parameter 'l3\.bias' cannot be read/);
      await expectIntact(target, expected);
      m.dispose();
    });

    it('when a temporary file cannot be created', async () => {
      const { target, m, expected } = await savedOnce('fail-open');
      m.get('l0').param('weight').assign(tf.zeros([4, 4]));
      fsHooks.failOpen = (p) => p.includes('.config.json.');
      await expect(saveModel(m, target)).rejects.toThrow(/EIO: simulated failure, open/);
      await expectIntact(target, expected);
      m.dispose();
    });

    it('when the config cannot be renamed after the weights were (the old weights are put back)', async () => {
      const { target, m, expected } = await savedOnce('fail-rename');
      m.get('l0').param('weight').assign(tf.zeros([4, 4]));
      fsHooks.failRename = (to) => to.endsWith('config.json');
      await expect(saveModel(m, target)).rejects.toThrow(/EIO: simulated failure, rename/);
      fsHooks.failRename = undefined;
      await expectIntact(target, expected);
      m.dispose();
    });

    it('when the weights cannot be renamed; and a first save that fails leaves nothing', async () => {
      const { target, m, expected } = await savedOnce('fail-rename-w');
      m.get('l0').param('weight').assign(tf.zeros([4, 4]));
      fsHooks.failRename = (to) => to.endsWith('model.safetensors');
      await expect(saveModel(m, target)).rejects.toThrow(/EIO/);
      fsHooks.failRename = (to) => to.endsWith('config.json');
      const fresh = join(dir, 'fresh');
      await expect(saveModel(m, fresh)).rejects.toThrow(/EIO/);
      fsHooks.failRename = undefined;
      await expectIntact(target, expected);
      expect(await readdir(fresh)).toEqual([]);
      m.dispose();
    });
  });
});
