import { availableParallelism } from 'node:os';
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { useBackend } from './backend.js';
import { createRunContext, type RunContext } from './context.js';
import { ConfigError } from './errors.js';
import { bytesPerElement, compareTimings, FlopMeter, machineDescription, measureFlops, savedForBackward, timeIt } from './meters.js';
import { Module, type FlopCount, type InitContext } from './module.js';
import { Rng } from './rng.js';

class Lin extends Module<tf.Tensor, tf.Tensor, { i: number; o: number }> {
  readonly kind = 'meter.lin';
  constructor(cfg: { i: number; o: number }, init: InitContext) {
    super(cfg);
    this.addParam('w', tf.tensor2d(init.rng.normalArray(cfg.i * cfg.o), [cfg.i, cfg.o]));
  }
  forward(x: tf.Tensor): tf.Tensor {
    return tf.matMul(x, this.param('w').variable);
  }
  override flops(x: tf.Tensor): FlopCount {
    const rows = x.shape[0];
    return { forward: 2 * rows * this.config.i * this.config.o, backward: 4 * rows * this.config.i * this.config.o };
  }
}

class Net extends Module<tf.Tensor, tf.Tensor, { d: number }> {
  readonly kind = 'meter.net';
  constructor(cfg: { d: number }, init: InitContext) {
    super(cfg);
    this.addChild('a', new Lin({ i: cfg.d, o: 2 * cfg.d }, init));
    this.addChild('b', new Lin({ i: 2 * cfg.d, o: cfg.d }, init));
  }
  forward(x: tf.Tensor, ctx: RunContext): tf.Tensor {
    // `a` is called twice: its cost must be counted twice.
    const a = this.child<Lin>('a');
    const h = a.call(x, ctx);
    const h2 = a.call(x, ctx);
    return this.child<Lin>('b').call(tf.relu(tf.add(h, h2)), ctx);
  }
}

/** Builds a module under tidy so that its initial-value tensors are freed (variables survive). */
function build<T>(make: () => T): T {
  let m: T | undefined;
  tf.tidy(() => {
    m = make();
  });
  return m as T;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  await useBackend('cpu');
});

describe('FLOP meter', () => {
  it('sums analytic costs by path, counting every call', () => {
    const net = build(() => new Net({ d: 3 }, { rng: new Rng(1) }));
    const before = tf.memory().numTensors;
    const { total, byPath } = measureFlops(net, (ctx) => net.call(tf.ones([5, 3]), ctx));
    expect(tf.memory().numTensors).toBe(before);
    const a = 2 * 5 * 3 * 6;
    const b = 2 * 5 * 6 * 3;
    expect(total).toEqual({ forward: 2 * a + b, backward: 2 * (2 * a + b) });
    expect([...byPath]).toEqual([
      ['a', { kind: 'meter.lin', forward: 2 * a, backward: 4 * a, calls: 2 }],
      ['b', { kind: 'meter.lin', forward: b, backward: 2 * b, calls: 1 }],
    ]);
    net.dispose();
  });

  it('follows replacements, labels detached modules, and resets', () => {
    const net = build(() => new Net({ d: 2 }, { rng: new Rng(2) }));
    const meter = new FlopMeter(net);
    const ctx = createRunContext({ meter });
    const replacement = build(() => new Lin({ i: 4, o: 2 }, { rng: new Rng(3) }));
    net.replace('b', replacement).dispose();
    const stray = build(() => new Lin({ i: 2, o: 2 }, { rng: new Rng(4) }));
    tf.tidy(() => {
      net.call(tf.ones([1, 2]), ctx);
      stray.call(tf.ones([1, 2]), ctx);
    });
    expect(meter.byPath().get('b')).toEqual({ kind: 'meter.lin', forward: 16, backward: 32, calls: 1 });
    expect(meter.byPath().get('?meter.lin')).toEqual({ kind: 'meter.lin', forward: 8, backward: 16, calls: 1 });
    // byPath returns copies.
    meter.byPath().get('b')!.forward = 0;
    expect(meter.byPath().get('b')!.forward).toBe(16);
    meter.reset();
    expect(meter.total()).toEqual({ forward: 0, backward: 0 });
    expect(meter.byPath().size).toBe(0);
    net.dispose();
    stray.dispose();
  });
});

describe('savedForBackward', () => {
  it('a matMul saves both inputs, a sum saves its input', () => {
    const a = tf.ones([4, 8]);
    const b = tf.ones([8, 16]);
    const start = tf.memory().numTensors;
    const s = savedForBackward(() => tf.sum(tf.matMul(a, b)));
    expect(s.byKernel).toEqual({ BatchMatMul: (32 + 128) * 4, Sum: 64 * 4 });
    expect(s.bytes).toBe((32 + 128 + 64) * 4);
    expect(s.tensors).toBe(3);
    expect(tf.memory().numTensors).toBe(start);
    tf.dispose([a, b]);
  });

  it('gives the same answer on wasm', async () => {
    await useBackend('wasm');
    try {
      const a = tf.ones([4, 8]);
      const b = tf.ones([8, 16]);
      const start = tf.memory().numTensors;
      expect(savedForBackward(() => tf.sum(tf.matMul(a, b)))).toEqual({ bytes: (32 + 128 + 64) * 4, tensors: 3, byKernel: { BatchMatMul: 640, Sum: 256 } });
      expect(tf.memory().numTensors).toBe(start);
      tf.dispose([a, b]);
    } finally {
      await useBackend('cpu');
    }
  });

  it('a relu saves its input; x·x saves x once (buffers are de-duplicated)', () => {
    const x = tf.tensor1d([-1, 2, -3, 4, 5]);
    const start = tf.memory().numTensors;
    expect(savedForBackward(() => tf.sum(tf.relu(x)))).toEqual({ bytes: 40, tensors: 2, byKernel: { Relu: 20, Sum: 20 } });
    expect(savedForBackward(() => tf.sum(tf.mul(x, x)))).toEqual({ bytes: 40, tensors: 2, byKernel: { Multiply: 20, Sum: 20 } });
    expect(tf.memory().numTensors).toBe(start);
    x.dispose();
  });

  it('counts bool tensors at 1 byte per element', () => {
    const c = tf.tensor1d([true, false, true, true, false, false, true, false], 'bool');
    const a = tf.ones([8]);
    const b = tf.zeros([8]);
    const start = tf.memory().numTensors;
    expect(savedForBackward(() => tf.sum(tf.where(c, a, b)))).toEqual({ bytes: 8 + 32, tensors: 2, byKernel: { Select: 8, Sum: 32 } });
    expect(tf.memory().numTensors).toBe(start);
    tf.dispose([c, a, b]);
    expect(bytesPerElement('bool')).toBe(1);
    expect(bytesPerElement('int32')).toBe(4);
  });

  it('counts what a customGrad saves, and runs the backward through trainable variables', () => {
    const w = tf.variable(tf.ones([6, 3]));
    const x = tf.ones([2, 6]);
    let backwards = 0;
    // Saves only its [2, 3] output, whatever it computes.
    const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
      const [xi, wi, save] = args as [tf.Tensor, tf.Tensor, tf.GradSaveFunc];
      const y = tf.matMul(xi, wi);
      save([y]);
      return {
        value: y,
        gradFunc: (dy: tf.Tensor) => {
          backwards++;
          return [tf.matMul(dy, wi, false, true), tf.matMul(xi, dy, true, false)];
        },
      };
    });
    const start = tf.memory().numTensors;
    const s = savedForBackward(() => tf.sum(op(x, w)));
    // On cpu the saved output and the Sum's saved input are one buffer: counted once (tf.memory() would count two).
    expect(s.bytes).toBe(2 * 3 * 4);
    expect(s.tensors).toBe(1);
    expect(backwards).toBe(1);
    expect(tf.memory().numTensors).toBe(start);
    tf.dispose([w, x]);
  });
});

describe('timing', () => {
  it('timeIt warms up, repeats, awaits async work and disposes returned tensors', async () => {
    let calls = 0;
    const start = tf.memory().numTensors;
    const t = await timeIt(
      () => {
        calls++;
        return [tf.ones([3]), tf.zeros([2])];
      },
      { warmup: 3, repeats: 5 },
    );
    expect(calls).toBe(8);
    expect(t.samples).toHaveLength(5);
    expect(t.minMs).toBeLessThanOrEqual(t.medianMs);
    expect(t.medianMs).toBeLessThanOrEqual(t.maxMs);
    expect(tf.memory().numTensors).toBe(start);
    const slow = await timeIt(() => sleep(12), { warmup: 0, repeats: 3 });
    expect(slow.minMs).toBeGreaterThanOrEqual(10);
    expect(slow.medianMs).toBe([...slow.samples].sort((a, b) => a - b)[1]);
    await expect(timeIt(() => undefined, { repeats: 0 })).rejects.toBeInstanceOf(ConfigError);
    await expect(timeIt(() => undefined, { warmup: -1 })).rejects.toThrow(/warmup: expected an integer ≥ 0, found -1/);
  });

  it('compareTimings interleaves baseline and variant (ABBA) and reports the ratio of medians', async () => {
    const order: string[] = [];
    const r = await compareTimings(
      () => {
        order.push('A');
      },
      async () => {
        order.push('B');
        await sleep(12);
      },
      { warmup: 1, repeats: 4 },
    );
    expect(order.join('')).toBe('AB' + 'AB' + 'BA' + 'AB' + 'BA');
    expect(r.baseline.samples).toHaveLength(4);
    expect(r.variant.samples).toHaveLength(4);
    expect(r.ratio).toBe(r.variant.medianMs / r.baseline.medianMs);
    expect(r.variant.minMs).toBeGreaterThanOrEqual(10);
  });

  it('machineDescription names the cpu, cores and node version', () => {
    const d = machineDescription();
    expect(d).toContain(`${availableParallelism()} cores`);
    expect(d).toContain(`node ${process.version}`);
    expect(d.split(',')[0]!.length).toBeGreaterThan(0);
  });
});
