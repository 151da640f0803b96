/**
 * nn benchmark: training speed of @leanpass/nn blocks on tfjs-wasm against PyTorch CPU (1 thread).
 *
 *   npx tsx --conditions=@leanpass/source tools/bench/nn-bench.ts [--quick] [--json out.json]
 *       [--reps N] [--warmup N] [--cpu] [--no-torch] [--no-stock] [--python /usr/bin/python3]
 *
 * Blocks (train mode, loss mean(y²), gradients of every trainable parameter):
 * - ViT: B32, N64, C128, 4 heads, MLP×4, pre-norm (LayerNorm → Attention → residual, LayerNorm →
 *   Mlp(GELU tanh) → residual), from @leanpass/nn's layers;
 * - MobileNetV2 inverted residual: B32, 16×16, 32 → 192 → 32: 1×1 expand + BN + ReLU6, depthwise 3×3 +
 *   BN + ReLU6, 1×1 project + BN, residual (NHWC here, NCHW in PyTorch).
 * Rows: leanpass on wasm (fwd, fwd+bwd), stock tfjs on wasm (plain ops with tfjs's own gradients; the
 * MobileNetV2 block's fwd+bwd fails there for lack of kernels, and the row says so), PyTorch CPU with
 * one thread (tools/bench/nn_bench_torch.py, driven over a pipe so that its repeats interleave with
 * ours), and with --cpu leanpass on tfjs's cpu backend. Every repeat runs all cases once, in rotating
 * order; times are medians of wall-clock (and of process CPU time, less sensitive to other load).
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import {
  Module,
  Rng,
  createRunContext,
  formatBenchTable,
  machineDescription,
  measureFlops,
  useBackend,
  writeBenchReport,
  type BenchReport,
  type BenchRow,
  type InitContext,
  type JsonObject,
  type RunContext,
} from '@leanpass/core';
import { Activation, Attention, BatchNorm, Conv2d, DepthwiseConv2d, LayerNorm, Mlp, addNoSave } from '@leanpass/nn';

const here = dirname(fileURLToPath(import.meta.url));

// ------------------------------------------------------------------------------------------------
// Options

interface Options {
  quick: boolean;
  json?: string;
  reps: number;
  warmup: number;
  cpu: boolean;
  torch: boolean;
  stock: boolean;
  python: string;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { quick: false, reps: 0, warmup: 0, cpu: false, torch: true, stock: true, python: '/usr/bin/python3' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} expects a value`);
      return v;
    };
    if (a === '--quick') o.quick = true;
    else if (a === '--json') o.json = next();
    else if (a === '--reps') o.reps = Number.parseInt(next(), 10);
    else if (a === '--warmup') o.warmup = Number.parseInt(next(), 10);
    else if (a === '--cpu') o.cpu = true;
    else if (a === '--no-torch') o.torch = false;
    else if (a === '--no-stock') o.stock = false;
    else if (a === '--python') o.python = next();
    else if (a === '--help' || a === '-h') {
      process.stdout.write('usage: nn-bench.ts [--quick] [--json out.json] [--reps N] [--warmup N] [--cpu] [--no-torch] [--no-stock] [--python PATH]\n');
      process.exit(0);
    } else throw new Error(`unknown argument ${a} (try --help)`);
  }
  if (!o.reps) o.reps = o.quick ? 10 : 25;
  if (!o.warmup) o.warmup = o.quick ? 2 : 3;
  if (!(o.reps >= 1 && o.warmup >= 0)) throw new Error(`--reps must be ≥ 1 and --warmup ≥ 0, found ${o.reps}, ${o.warmup}`);
  return o;
}

// ------------------------------------------------------------------------------------------------
// The blocks, from @leanpass/nn

const VIT = { batch: 32, tokens: 64, dim: 128, heads: 4, mlpRatio: 4 };
const MBV2 = { batch: 32, size: 16, channels: 32, expand: 6 };

/** Pre-norm transformer block: x + attn(norm1(x)), then h + mlp(norm2(h)). */
class VitBlock extends Module<tf.Tensor, tf.Tensor, JsonObject> {
  readonly kind = 'bench.vit-block';
  constructor(init: InitContext) {
    super({ dim: VIT.dim, heads: VIT.heads, mlpRatio: VIT.mlpRatio });
    this.addChild('norm1', new LayerNorm({ dim: VIT.dim }));
    this.addChild('attn', new Attention({ dim: VIT.dim, heads: VIT.heads }, init));
    this.addChild('norm2', new LayerNorm({ dim: VIT.dim }));
    this.addChild('mlp', new Mlp({ inFeatures: VIT.dim, hiddenFeatures: VIT.dim * VIT.mlpRatio, act: 'gelu' }, init));
  }
  forward(x: tf.Tensor, ctx: RunContext): tf.Tensor {
    const h = addNoSave(x, this.child('attn').call(this.child('norm1').call(x, ctx), ctx) as tf.Tensor);
    return addNoSave(h, this.child('mlp').call(this.child('norm2').call(h, ctx), ctx) as tf.Tensor);
  }
}

/** MobileNetV2 inverted residual block, stride 1, with the residual. */
class InvertedResidual extends Module<tf.Tensor, tf.Tensor, JsonObject> {
  readonly kind = 'bench.inverted-residual';
  constructor(init: InitContext) {
    const c = MBV2.channels;
    const e = c * MBV2.expand;
    super({ channels: c, expand: MBV2.expand });
    this.addChild('expand', new Conv2d({ inChannels: c, outChannels: e, kernelSize: 1, bias: false }, init));
    this.addChild('bn1', new BatchNorm({ channels: e }));
    this.addChild('act1', new Activation({ fn: 'relu6' }));
    this.addChild('dw', new DepthwiseConv2d({ channels: e, kernelSize: 3, stride: 1, padding: 1, bias: false }, init));
    this.addChild('bn2', new BatchNorm({ channels: e }));
    this.addChild('act2', new Activation({ fn: 'relu6' }));
    this.addChild('project', new Conv2d({ inChannels: e, outChannels: c, kernelSize: 1, bias: false }, init));
    this.addChild('bn3', new BatchNorm({ channels: c }));
  }
  forward(x: tf.Tensor, ctx: RunContext): tf.Tensor {
    let h = x;
    for (const name of ['expand', 'bn1', 'act1', 'dw', 'bn2', 'act2', 'project', 'bn3']) h = this.child(name).call(h, ctx) as tf.Tensor;
    return addNoSave(x, h);
  }
}

function trainableVars(m: Module<tf.Tensor, tf.Tensor, JsonObject>): tf.Variable[] {
  return [...m.namedParams()].filter(([, p]) => p.trainable).map(([, p]) => p.variable);
}

// ------------------------------------------------------------------------------------------------
// Stock tfjs blocks: plain ops, tfjs's own gradients

function uniformVar(rng: Rng, shape: number[], bound: number): tf.Variable {
  const n = shape.reduce((a, b) => a * b, 1);
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = rng.uniform(-bound, bound);
  return tf.variable(tf.tensor(v, shape));
}

interface StockBlock {
  vars: tf.Variable[];
  forward(x: tf.Tensor): tf.Tensor;
}

function stockVit(rng: Rng): StockBlock {
  const { dim, heads, mlpRatio } = VIT;
  const hid = dim * mlpRatio;
  const lin = (i: number, o: number): [tf.Variable, tf.Variable] => [uniformVar(rng, [i, o], 1 / Math.sqrt(i)), uniformVar(rng, [o], 1 / Math.sqrt(i))];
  const g1 = tf.variable(tf.ones([dim]));
  const b1 = tf.variable(tf.zeros([dim]));
  const g2 = tf.variable(tf.ones([dim]));
  const b2 = tf.variable(tf.zeros([dim]));
  const [wq, bq] = lin(dim, dim);
  const [wk, bk] = lin(dim, dim);
  const [wv, bv] = lin(dim, dim);
  const [wo, bo] = lin(dim, dim);
  const [w1, c1] = lin(dim, hid);
  const [w2, c2] = lin(hid, dim);
  const ln = (x: tf.Tensor, g: tf.Tensor, b: tf.Tensor): tf.Tensor => {
    const { mean, variance } = tf.moments(x, -1, true);
    return tf.add(tf.mul(tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, 1e-5))), g), b);
  };
  const k0 = Math.sqrt(2 / Math.PI);
  const gelu = (x: tf.Tensor): tf.Tensor => tf.mul(tf.mul(x, 0.5), tf.add(tf.tanh(tf.mul(tf.add(x, tf.mul(tf.mul(tf.mul(x, x), x), 0.044715)), k0)), 1));
  const d = dim / heads;
  return {
    vars: [g1, b1, g2, b2, wq, bq, wk, bk, wv, bv, wo, bo, w1, c1, w2, c2],
    forward(x) {
      const [B, N] = x.shape as [number, number, number];
      const rows = B * N;
      const y = tf.reshape(ln(x, g1, b1), [rows, dim]);
      const heads4 = (w: tf.Tensor, b: tf.Tensor): tf.Tensor => tf.transpose(tf.reshape(tf.add(tf.matMul(y as tf.Tensor2D, w as tf.Tensor2D), b), [B, N, heads, d]), [0, 2, 1, 3]);
      const q = heads4(wq, bq);
      const k = heads4(wk, bk);
      const v = heads4(wv, bv);
      const att = tf.softmax(tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(d)));
      const o = tf.reshape(tf.transpose(tf.matMul(att, v), [0, 2, 1, 3]), [rows, dim]);
      const h = tf.add(x, tf.reshape(tf.add(tf.matMul(o as tf.Tensor2D, wo), bo), [B, N, dim]));
      const z = tf.reshape(ln(h, g2, b2), [rows, dim]);
      const m = tf.add(tf.matMul(gelu(tf.add(tf.matMul(z as tf.Tensor2D, w1), c1)) as tf.Tensor2D, w2), c2);
      return tf.add(h, tf.reshape(m, [B, N, dim]));
    },
  };
}

function stockMbv2(rng: Rng): StockBlock {
  const c = MBV2.channels;
  const e = c * MBV2.expand;
  const w1 = uniformVar(rng, [1, 1, c, e], 1 / Math.sqrt(c));
  const wd = uniformVar(rng, [3, 3, e, 1], 1 / 3);
  const w3 = uniformVar(rng, [1, 1, e, c], 1 / Math.sqrt(e));
  const bn = (ch: number): [tf.Variable, tf.Variable] => [tf.variable(tf.ones([ch])), tf.variable(tf.zeros([ch]))];
  const [g1, b1] = bn(e);
  const [g2, b2] = bn(e);
  const [g3, b3] = bn(c);
  const norm = (x: tf.Tensor4D, g: tf.Tensor, b: tf.Tensor): tf.Tensor4D => {
    const { mean, variance } = tf.moments(x, [0, 1, 2]);
    return tf.batchNorm4d(x, mean as tf.Tensor1D, variance as tf.Tensor1D, b as tf.Tensor1D, g as tf.Tensor1D, 1e-5);
  };
  return {
    vars: [w1, wd, w3, g1, b1, g2, b2, g3, b3],
    forward(x) {
      const x4 = x as tf.Tensor4D;
      let h = tf.relu6(norm(tf.conv2d(x4, w1 as tf.Tensor4D, 1, 'valid'), g1, b1));
      h = tf.relu6(norm(tf.depthwiseConv2d(h, wd as tf.Tensor4D, 1, 'same'), g2, b2));
      return tf.add(x4, norm(tf.conv2d(h, w3 as tf.Tensor4D, 1, 'valid'), g3, b3));
    },
  };
}

// ------------------------------------------------------------------------------------------------
// PyTorch over a pipe

interface TorchReply {
  ok: boolean;
  error?: string;
  wall_ms?: number[];
  cpu_ms?: number[];
  [k: string]: unknown;
}

class TorchProcess {
  private readonly proc: ChildProcessWithoutNullStreams;
  private readonly lines: Interface;
  private readonly waiting: Array<(line: string) => void> = [];
  private stderr = '';
  private exited = false;

  constructor(python: string) {
    this.proc = spawn(python, [join(here, 'nn_bench_torch.py')], {
      env: { ...process.env, OMP_NUM_THREADS: '1', OPENBLAS_NUM_THREADS: '1', MKL_NUM_THREADS: '1' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.lines = createInterface({ input: this.proc.stdout });
    this.lines.on('line', (l) => this.waiting.shift()?.(l));
    this.proc.stderr.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.proc.on('exit', () => {
      this.exited = true;
      for (const w of this.waiting.splice(0)) w(JSON.stringify({ ok: false, error: `python exited: ${this.stderr.trim().slice(-500)}` }));
    });
  }

  request(req: JsonObject): Promise<TorchReply> {
    if (this.exited) return Promise.resolve({ ok: false, error: `python exited: ${this.stderr.trim().slice(-500)}` });
    return new Promise((resolve) => {
      this.waiting.push((line) => resolve(JSON.parse(line) as TorchReply));
      this.proc.stdin.write(`${JSON.stringify(req)}\n`);
    });
  }

  async close(): Promise<void> {
    if (!this.exited) await this.request({ cmd: 'quit' }).catch(() => undefined);
    this.lines.close();
    this.proc.kill();
  }
}

function torchAvailable(python: string): { ok: boolean; why?: string } {
  const r = spawnSync(python, ['-c', 'import torch'], { encoding: 'utf8' });
  if (r.error) return { ok: false, why: `${python} not runnable: ${r.error.message}` };
  if (r.status !== 0) return { ok: false, why: `${python} -c 'import torch' failed: ${(r.stderr || '').trim().split('\n').slice(-1)[0] ?? ''}` };
  return { ok: true };
}

// ------------------------------------------------------------------------------------------------
// Timing

function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

interface Case {
  label: string;
  block: 'vit' | 'mbv2';
  impl: 'leanpass' | 'stock' | 'torch';
  backend: 'wasm' | 'cpu' | 'torch-cpu-1t';
  phase: 'fwd' | 'fwdbwd';
  flops?: number;
  /** Runs once and returns its wall and CPU milliseconds. */
  run(): Promise<{ wall: number; cpu: number }>;
  wall: number[];
  cpu: number[];
  error?: string;
}

function jsCase(c: Omit<Case, 'run' | 'wall' | 'cpu'>, body: () => void): Case {
  return {
    ...c,
    wall: [],
    cpu: [],
    run: () => {
      const c0 = cpuMs();
      const t0 = performance.now();
      body();
      return Promise.resolve({ wall: performance.now() - t0, cpu: cpuMs() - c0 });
    },
  };
}

function forwardBody(forward: (x: tf.Tensor) => tf.Tensor, x: tf.Tensor): () => void {
  return () => tf.dispose(tf.tidy(() => forward(x)));
}

function trainBody(forward: (x: tf.Tensor) => tf.Tensor, x: tf.Tensor, vars: tf.Variable[]): () => void {
  return () => {
    const { value, grads } = tf.variableGrads(() => tf.mean(tf.square(forward(x))) as tf.Scalar, vars);
    value.dispose();
    tf.dispose(grads);
  };
}

function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

async function runInterleaved(cases: Case[], reps: number, warmup: number, log: (s: string) => void): Promise<void> {
  const live = (): Case[] => cases.filter((c) => !c.error);
  for (let w = 0; w < warmup; w++) {
    for (const c of live()) {
      try {
        await c.run();
      } catch (e) {
        c.error = (e as Error).message.split('\n')[0];
      }
    }
  }
  for (let r = 0; r < reps; r++) {
    const order = live();
    for (let i = 0; i < order.length; i++) {
      const c = order[(i + r) % order.length] as Case;
      const t = await c.run();
      c.wall.push(t.wall);
      c.cpu.push(t.cpu);
    }
    log(`  repeat ${r + 1}/${reps} done`);
  }
}

// ------------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const log = (s: string): void => void process.stderr.write(`${s}\n`);
  const load0 = os.loadavg();
  await useBackend('wasm');
  const seed = 0;
  const rng = new Rng(seed);
  const init: InitContext = { rng };
  const ctx = createRunContext({ mode: 'train', seed });

  const vit = new VitBlock(init);
  const mbv2 = new InvertedResidual(init);
  const xVit = tf.randomNormal([VIT.batch, VIT.tokens, VIT.dim], 0, 1, 'float32', seed);
  const xMb = tf.randomNormal([MBV2.batch, MBV2.size, MBV2.size, MBV2.channels], 0, 1, 'float32', seed + 1);
  const flopsOf = (m: VitBlock | InvertedResidual, x: tf.Tensor): { forward: number; backward: number } =>
    measureFlops(m, (c) => m.call(x, { ...c, mode: 'train' })).total;
  const fVit = flopsOf(vit, xVit);
  const fMb = flopsOf(mbv2, xMb);

  const cases: Case[] = [];
  const blocks = [
    { block: 'vit' as const, model: vit, x: xVit, f: fVit, stock: opts.stock ? stockVit(new Rng(seed)) : undefined },
    { block: 'mbv2' as const, model: mbv2, x: xMb, f: fMb, stock: opts.stock ? stockMbv2(new Rng(seed)) : undefined },
  ];
  for (const b of blocks) {
    const fwd = (x: tf.Tensor): tf.Tensor => b.model.call(x, ctx);
    cases.push(jsCase({ label: `${b.block} leanpass wasm fwd`, block: b.block, impl: 'leanpass', backend: 'wasm', phase: 'fwd', flops: b.f.forward }, forwardBody(fwd, b.x)));
    cases.push(
      jsCase({ label: `${b.block} leanpass wasm fwd+bwd`, block: b.block, impl: 'leanpass', backend: 'wasm', phase: 'fwdbwd', flops: b.f.forward + b.f.backward }, trainBody(fwd, b.x, trainableVars(b.model))),
    );
    if (b.stock) {
      const s = b.stock;
      cases.push(jsCase({ label: `${b.block} stock-tfjs wasm fwd`, block: b.block, impl: 'stock', backend: 'wasm', phase: 'fwd', flops: b.f.forward }, forwardBody((x) => s.forward(x), b.x)));
      cases.push(jsCase({ label: `${b.block} stock-tfjs wasm fwd+bwd`, block: b.block, impl: 'stock', backend: 'wasm', phase: 'fwdbwd', flops: b.f.forward + b.f.backward }, trainBody((x) => s.forward(x), b.x, s.vars)));
    }
  }

  let torch: TorchProcess | undefined;
  let torchInfo: TorchReply | undefined;
  let torchNote = '';
  if (opts.torch) {
    const avail = torchAvailable(opts.python);
    if (!avail.ok) {
      torchNote = `PyTorch not measured: ${avail.why ?? 'unavailable'}`;
    } else {
      torch = new TorchProcess(opts.python);
      torchInfo = await torch.request({ cmd: 'info' });
      if (!torchInfo.ok) {
        torchNote = `PyTorch not measured: ${torchInfo.error ?? 'info failed'}`;
        await torch.close();
        torch = undefined;
      }
    }
  } else torchNote = 'PyTorch not measured (--no-torch)';
  if (torchNote) log(torchNote);
  if (torch) {
    const t = torch;
    for (const b of blocks) {
      for (const phase of ['fwd', 'fwdbwd'] as const) {
        const c: Case = {
          label: `${b.block} pytorch cpu-1t ${phase === 'fwd' ? 'fwd' : 'fwd+bwd'}`,
          block: b.block,
          impl: 'torch',
          backend: 'torch-cpu-1t',
          phase,
          flops: phase === 'fwd' ? b.f.forward : b.f.forward + b.f.backward,
          wall: [],
          cpu: [],
          run: async () => {
            const r = await t.request({ cmd: 'time', block: b.block, phase, reps: 1 });
            if (!r.ok || !r.wall_ms || !r.cpu_ms) throw new Error(r.error ?? 'no timing returned');
            return { wall: r.wall_ms[0] as number, cpu: r.cpu_ms[0] as number };
          },
        };
        cases.push(c);
      }
    }
  }

  log(`nn-bench: ${cases.length} cases, ${opts.warmup} warm-up + ${opts.reps} interleaved repeats (${machineDescription()})`);
  await runInterleaved(cases, opts.reps, opts.warmup, log);

  if (opts.cpu) {
    // cpu rows run apart (switching backends inside a repeat would move every variable each time).
    await useBackend('cpu');
    const cpuInit: InitContext = { rng: new Rng(seed) };
    const cpuCases: Case[] = [];
    for (const [block, model, shape] of [
      ['vit', new VitBlock(cpuInit), [VIT.batch, VIT.tokens, VIT.dim]],
      ['mbv2', new InvertedResidual(cpuInit), [MBV2.batch, MBV2.size, MBV2.size, MBV2.channels]],
    ] as const) {
      const x = tf.randomNormal([...shape], 0, 1, 'float32', seed);
      const f = flopsOf(model, x);
      const fwd = (t: tf.Tensor): tf.Tensor => model.call(t, ctx);
      cpuCases.push(jsCase({ label: `${block} leanpass cpu fwd`, block, impl: 'leanpass', backend: 'cpu', phase: 'fwd', flops: f.forward }, forwardBody(fwd, x)));
      cpuCases.push(jsCase({ label: `${block} leanpass cpu fwd+bwd`, block, impl: 'leanpass', backend: 'cpu', phase: 'fwdbwd', flops: f.forward + f.backward }, trainBody(fwd, x, trainableVars(model))));
    }
    log('cpu backend rows (3 repeats, 1 warm-up)');
    await runInterleaved(cpuCases, 3, 1, log);
    cases.push(...cpuCases);
    await useBackend('wasm');
  }
  await torch?.close();
  const load1 = os.loadavg();

  // ----------------------------------------------------------------------------------------------
  // Report
  const torchMedian = new Map<string, number>();
  for (const c of cases) if (c.impl === 'torch' && c.wall.length) torchMedian.set(`${c.block}/${c.phase}`, median(c.wall));
  const torchCpuMedian = new Map<string, number>();
  for (const c of cases) if (c.impl === 'torch' && c.cpu.length) torchCpuMedian.set(`${c.block}/${c.phase}`, median(c.cpu));
  const rows: BenchRow[] = cases.map((c) => {
    const row: BenchRow = { label: c.label, options: { block: c.block, impl: c.impl, backend: c.backend, phase: c.phase }, quality: {}, cost: {} };
    if (c.error || !c.wall.length) {
      row.extra = { error: c.error ?? 'not run' };
      return row;
    }
    const t = median(c.wall);
    row.cost = { time_ms: t, cpu_ms: median(c.cpu), min_ms: Math.min(...c.wall), repeats: c.wall.length };
    if (c.flops !== undefined) {
      row.cost.flops = c.flops;
      row.cost.gflops_per_s = c.flops / t / 1e6;
    }
    const tm = torchMedian.get(`${c.block}/${c.phase}`);
    if (tm !== undefined && c.impl !== 'torch') row.cost.x_torch = t / tm;
    const tc = torchCpuMedian.get(`${c.block}/${c.phase}`);
    if (tc !== undefined && c.impl !== 'torch') row.cost.x_torch_cpu_time = median(c.cpu) / tc;
    return row;
  });
  const summary: Record<string, number> = {};
  for (const c of cases) {
    if (c.impl === 'torch' || c.backend !== 'wasm' || c.error || !c.wall.length) continue;
    const tm = torchMedian.get(`${c.block}/${c.phase}`);
    if (tm !== undefined) summary[`${c.block}_${c.impl}_wasm_${c.phase}_x_torch`] = median(c.wall) / tm;
    const tc = torchCpuMedian.get(`${c.block}/${c.phase}`);
    if (tc !== undefined) summary[`${c.block}_${c.impl}_wasm_${c.phase}_x_torch_cpu_time`] = median(c.cpu) / tc;
  }
  const lp = (b: string, p: string): number | undefined => {
    const c = cases.find((k) => k.block === b && k.impl === 'leanpass' && k.backend === 'wasm' && k.phase === p);
    return c && c.wall.length ? median(c.wall) : undefined;
  };
  const st = (b: string, p: string): number | undefined => {
    const c = cases.find((k) => k.block === b && k.impl === 'stock' && k.phase === p);
    return c && c.wall.length ? median(c.wall) : undefined;
  };
  const vitSpeedup = st('vit', 'fwdbwd') !== undefined && lp('vit', 'fwdbwd') !== undefined ? (st('vit', 'fwdbwd') as number) / (lp('vit', 'fwdbwd') as number) : undefined;
  if (vitSpeedup !== undefined) summary['vit_fwdbwd_speedup_vs_stock_tfjs'] = vitSpeedup;

  const pkg = JSON.parse(readFileSync(join(here, '../../packages/nn/package.json'), 'utf8')) as { version: string };
  const report: BenchReport = {
    pass: '@leanpass/nn',
    version: pkg.version,
    host: `vit-block B${VIT.batch} N${VIT.tokens} C${VIT.dim} h${VIT.heads} mlp×${VIT.mlpRatio}; mbv2-block B${MBV2.batch} ${MBV2.size}×${MBV2.size} ${MBV2.channels}→${MBV2.channels * MBV2.expand}→${MBV2.channels}`,
    backend: 'wasm',
    machine: machineDescription(),
    quick: opts.quick,
    seed,
    rows,
    summary,
    extra: {
      tfjs: tf.version.tfjs,
      cpus: os.cpus().length,
      cpu_model: os.cpus()[0]?.model ?? 'unknown',
      total_mem_bytes: os.totalmem(),
      loadavg_start: load0,
      loadavg_end: load1,
      reps: opts.reps,
      warmup: opts.warmup,
      timing: 'median wall-clock ms (time_ms) and process CPU ms (cpu_ms) over interleaved repeats; x_torch = time_ms / PyTorch time_ms of the same block and phase',
      shapes: { vit: { ...VIT }, mbv2: { ...MBV2 } },
      torch: torchInfo ? (JSON.parse(JSON.stringify(torchInfo)) as JsonObject) : torchNote,
      targets: { vit_fwdbwd_x_torch: 6, mbv2_fwdbwd_x_torch: 8 },
    },
  };
  process.stdout.write(formatBenchTable(report));
  process.stdout.write(`\nload average ${load0.map((v) => v.toFixed(2)).join(' ')} → ${load1.map((v) => v.toFixed(2)).join(' ')} (${os.cpus().length} cores)\n`);
  if (torchNote) process.stdout.write(`${torchNote}\n`);
  for (const c of cases) if (c.error) process.stdout.write(`${c.label}: ${c.error}\n`);
  if (opts.json) {
    await writeBenchReport(opts.json, report);
    process.stdout.write(`wrote ${opts.json}\n`);
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`nn-bench failed: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
