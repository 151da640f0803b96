import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { useBackend, validateModelFile } from '@leanpass/core';
import { exactMatch, makeTaskSet, type TaskName } from '@leanpass/data';
import { DLLM_TINY_RANGES, DiffusionLM, Llama, bitsPerByte, fortunesStream, generateDiffusion } from '@leanpass/models';
import { beforeAll, describe, expect, it } from 'vitest';
import { listZoo, loadZoo, modelCard, zooPath } from './index.js';

beforeAll(async () => {
  await useBackend('wasm');
});

function metadataOf(name: string): Record<string, string> {
  const file = validateModelFile(JSON.parse(readFileSync(join(zooPath(name), 'config.json'), 'utf8')));
  return file.metadata ?? {};
}

describe('bundled models', () => {
  it('every checkpoint loads with its registered kinds, and its card names the seed and the command that reproduces it', async () => {
    const entries = listZoo();
    expect(entries.map((e) => e.name)).toContain('llama-tiny');
    for (const e of entries) {
      const model = await loadZoo(`zoo:${e.name}`);
      try {
        expect(model.paramCount()).toBeGreaterThan(0);
        // F32 weights: the file holds every parameter (plus a small header)
        expect(e.bytes).toBeGreaterThanOrEqual(4 * model.paramCount());
        expect(e.bytes).toBeLessThan(16 * 1024 * 1024);
      } finally {
        model.dispose();
      }
      const card = modelCard(e.name);
      expect(e.summary.length).toBeGreaterThan(0);
      expect(card).toMatch(/seed/i);
      expect(card).toMatch(/tools\/zoo\/[\w-]+\.ts/);
    }
  });

  it("llama-tiny: bits/byte on the card's fixed validation slice is reproduced, and the card quotes the recorded figures", async () => {
    const meta = metadataOf('llama-tiny');
    const windows = Number(meta['llama-tiny.val_slice_windows']);
    const window = Number(meta['llama-tiny.window']);
    const recorded = Number(meta['llama-tiny.val_slice_bits_per_byte']);
    const full = Number(meta['llama-tiny.val_bits_per_byte']);
    expect(windows).toBeGreaterThan(0);
    expect(window).toBeGreaterThan(0);
    const model = await loadZoo('llama-tiny');
    try {
      expect(model).toBeInstanceOf(Llama);
      const val = fortunesStream('val'); // needs `apt-get install -y fortunes` (CI installs it)
      const r = bitsPerByte(model, val.subarray(0, windows * window + 1), { window, batchSize: windows });
      expect(r.tokens).toBe(windows * window);
      expect(Math.abs(r.bitsPerByte - recorded)).toBeLessThan(1e-3);
    } finally {
      model.dispose();
    }
    const card = modelCard('llama-tiny');
    expect(card).toContain(`| ${recorded.toFixed(4)} |`);
    expect(card).toContain(`**${full.toFixed(3)} bits/byte**`);
    // a trained model, not a random one: far below 8 bits (uniform) and below the unigram baseline it quotes
    const unigram = Number(/a unigram byte model: ([\d.]+)/.exec(card)?.[1]);
    expect(full).toBeLessThan(unigram - 1);
  });

  it("dllm-tiny: the plain sampler's exact match on the card's held-out slice is reproduced", async () => {
    const meta = metadataOf('dllm-tiny');
    const task = meta['dllm-tiny.slice_task'] as TaskName;
    const count = Number(meta['dllm-tiny.slice_count']);
    const genLength = Number(meta['dllm-tiny.gen_length']);
    const blockLength = Number(meta['dllm-tiny.block_length']);
    const recorded = Number(meta['dllm-tiny.slice_exact_match']);
    expect(count).toBeGreaterThan(0);
    const problems = makeTaskSet({ tasks: task, count, seed: Number(meta['dllm-tiny.eval_seed']), split: 'test', answerLength: genLength, ...DLLM_TINY_RANGES }).problems.slice(0, count);
    const model = await loadZoo('dllm-tiny');
    try {
      expect(model).toBeInstanceOf(DiffusionLM);
      const r = generateDiffusion(model as DiffusionLM, problems.map((p) => p.prompt), { genLength, blockLength });
      const em = problems.filter((p, i) => exactMatch(r.tokens[i] as number[], p.answer)).length / problems.length;
      expect(em).toBe(recorded);
      expect(em).toBeGreaterThanOrEqual(0.9); // a trained model: the bar, far above chance
    } finally {
      model.dispose();
    }
    const card = modelCard('dllm-tiny');
    expect(card).toContain(`${(100 * recorded).toFixed(2)} %`);
  });
});

