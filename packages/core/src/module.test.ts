import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { useBackend } from './backend.js';
import { createRunContext, type RunContext } from './context.js';
import { ConfigError } from './errors.js';
import type { JsonObject } from './json.js';
import { Module, ModuleRegistry, type FlopCount, type InitContext } from './module.js';
import { Rng } from './rng.js';

class Affine extends Module<tf.Tensor, tf.Tensor, { n: number }> {
  readonly kind = 'test.affine';
  constructor(cfg: { n: number }, init: InitContext) {
    super(cfg);
    this.addParam('weight', tf.tensor1d(init.rng.normalArray(cfg.n)));
    this.addParam('bias', tf.zeros([cfg.n]), false);
  }
  forward(x: tf.Tensor): tf.Tensor {
    return tf.add(tf.mul(x, this.param('weight').variable), this.param('bias').variable);
  }
  override flops(x: tf.Tensor): FlopCount {
    return { forward: 2 * x.size, backward: 4 * x.size };
  }
}

class Stack extends Module<tf.Tensor, tf.Tensor, { n: number; depth: number }> {
  readonly kind = 'test.stack';
  constructor(cfg: { n: number; depth: number }, init: InitContext) {
    super(cfg);
    for (let i = 0; i < cfg.depth; i++) this.addChild(String(i), new Affine({ n: cfg.n }, init));
  }
  forward(x: tf.Tensor, ctx: RunContext): tf.Tensor {
    let h = x;
    for (const c of this.children.values()) h = c.call(h, ctx) as tf.Tensor;
    return h;
  }
}

class Net extends Module<tf.Tensor, tf.Tensor, { n: number }> {
  readonly kind = 'test.net';
  constructor(cfg: { n: number }, init: InitContext) {
    super(cfg);
    this.addChild('blocks', new Stack({ n: cfg.n, depth: 2 }, init));
    this.addChild('head', new Affine(cfg, init));
  }
  forward(x: tf.Tensor, ctx: RunContext): tf.Tensor {
    return this.child('head').call(this.child('blocks').call(x, ctx), ctx) as tf.Tensor;
  }
}

const make = (seed = 1) => new Net({ n: 3 }, { rng: new Rng(seed) });

describe('Module tree', () => {
  beforeAll(async () => {
    await useBackend('cpu');
  });

  it('iterates modules and params with dotted paths', () => {
    const m = make();
    expect([...m.modules()].map(([p, x]) => `${p}:${x.kind}`)).toEqual([
      ':test.net',
      'blocks:test.stack',
      'blocks.0:test.affine',
      'blocks.1:test.affine',
      'head:test.affine',
    ]);
    expect([...m.namedParams()].map(([p]) => p)).toEqual([
      'blocks.0.weight',
      'blocks.0.bias',
      'blocks.1.weight',
      'blocks.1.bias',
      'head.weight',
      'head.bias',
    ]);
  });

  it('counts parameters, honouring the trainable flag', () => {
    const m = make();
    expect(m.paramCount()).toBe(18);
    expect(m.paramCount({ trainableOnly: true })).toBe(9);
    m.get('blocks').setTrainable(false);
    expect(m.paramCount({ trainableOnly: true })).toBe(3);
  });

  it('gets and replaces by path; the parent sees the new child at call time', () => {
    const m = make();
    const ctx = createRunContext();
    const x = tf.tensor1d([1, 2, 3]);
    const before = m.call(x, ctx).arraySync() as number[];
    const replacement = new Affine({ n: 3 }, { rng: new Rng(99) });
    const old = m.replace('blocks.1', replacement);
    expect(old.kind).toBe('test.affine');
    expect(m.get('blocks.1')).toBe(replacement);
    const after = m.call(x, ctx).arraySync() as number[];
    expect(after).not.toEqual(before);
    m.replace('blocks.1', old);
    expect(m.call(x, ctx).arraySync()).toEqual(before);
  });

  it('names what exists when a path is wrong', () => {
    const m = make();
    expect(() => m.get('blocks.7')).toThrow(/'blocks' \(test.stack\) has no child '7' \(has: 0, 1\)/);
    expect(() => m.replace('', make())).toThrow(ConfigError);
    expect(() => m.param('nope')).toThrow(/has no parameter 'nope'/);
  });

  it('selects by kind and glob, excluding the root', () => {
    const m = make();
    expect(m.select({ kinds: ['test.affine'] }).map(([p]) => p)).toEqual(['blocks.0', 'blocks.1', 'head']);
    expect(m.select({ kinds: ['test.affine'], include: ['blocks.*'] }).map(([p]) => p)).toEqual(['blocks.0', 'blocks.1']);
    expect(m.select({ include: ['**'], exclude: ['re:blocks(\\..*)?'] }).map(([p]) => p)).toEqual(['head']);
  });

  it('reports own FLOPs through the meter, children included once', () => {
    const m = make();
    const seen: Array<[string, number]> = [];
    const ctx = createRunContext({ meter: { record: (mod, e) => seen.push([mod.kind, e.flops ?? 0]) } });
    m.call(tf.ones([4, 3]), ctx);
    expect(seen).toEqual([
      ['test.affine', 24],
      ['test.affine', 24],
      ['test.affine', 24],
    ]);
  });

  it('a child named __proto__ is a plain key of the serialised tree', () => {
    class Holder extends Module<tf.Tensor, tf.Tensor, { n: number }> {
      readonly kind = 'test.holder';
      constructor(init: InitContext) {
        super({ n: 1 });
        this.addChild('__proto__', new Affine({ n: 1 }, init));
      }
      forward(x: tf.Tensor): tf.Tensor {
        return x;
      }
    }
    const node = new Holder({ rng: new Rng(0) }).toNode();
    expect(Object.keys(node.children ?? {})).toEqual(['__proto__']);
    expect(JSON.parse(JSON.stringify(node)).children.__proto__.kind).toBe('test.affine');
    expect(({} as Record<string, unknown>)['kind']).toBeUndefined();
  });

  it('serialises its tree as kinds, configs and marks', () => {
    const m = make();
    m.get('head').mark = '@leanpass/example';
    const node = m.toNode();
    expect(node.kind).toBe('test.net');
    expect(node.children?.['head']).toEqual({ kind: 'test.affine', config: { n: 3 }, mark: '@leanpass/example' });
    expect(Object.keys(node.children?.['blocks']?.children ?? {})).toEqual(['0', '1']);
  });

  it('Param.assign checks the shape', () => {
    const m = make();
    expect(() => m.param('blocks')).toThrow(/has no parameter 'blocks'/);
    const p = m.get('head').param('weight');
    expect(() => p.assign(tf.zeros([4]), 'head.weight')).toThrow(/head.weight: expected shape \[3\], found \[4\]/);
    p.assign(tf.tensor1d([1, 2, 3]));
    expect(Array.from(p.variable.dataSync())).toEqual([1, 2, 3]);
  });

  it('the same seed gives the same initial weights', () => {
    const a = make(7).get('head').param('weight').variable.dataSync();
    const b = make(7).get('head').param('weight').variable.dataSync();
    const c = make(8).get('head').param('weight').variable.dataSync();
    expect(Array.from(a)).toEqual(Array.from(b));
    expect(Array.from(a)).not.toEqual(Array.from(c));
  });
});

describe('ModuleRegistry', () => {
  it('creates registered kinds and lists known kinds for unknown ones', () => {
    const r = new ModuleRegistry();
    r.register('test.affine', (cfg, init) => new Affine(cfg as { n: number }, init));
    const m = r.create('test.affine', { n: 2 }, { rng: new Rng(0) });
    expect(m.kind).toBe('test.affine');
    expect(() => r.create('nope', {}, { rng: new Rng(0) })).toThrow(/unknown module kind 'nope'.*Known kinds: test.affine/);
    expect(() => r.register('test.affine', () => make())).toThrow(/already registered/);
  });
  it('rejects a factory that builds the wrong kind', () => {
    const r = new ModuleRegistry();
    r.register('test.other', (cfg: JsonObject, init) => new Affine(cfg as { n: number }, init));
    expect(() => r.create('test.other', { n: 1 }, { rng: new Rng(0) })).toThrow(/built a module of kind 'test.affine'/);
  });
});
