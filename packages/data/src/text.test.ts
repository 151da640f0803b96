import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, FormatError, Rng } from '@leanpass/core';
import { DatasetNotInstalledError } from './errors.js';
import {
  FORTUNES_DIR,
  WORDNET_DIR,
  bytesToText,
  corpusFromRecords,
  corpusStream,
  createWindowSampler,
  listFortuneFiles,
  loadFortunes,
  loadWordnetGlosses,
  parseFortunes,
  parseWordnetGlosses,
  readFortuneRecords,
  readWordnetGlosses,
  sequentialWindows,
  splitOfRecord,
  stripOverstrike,
  windowTensors,
  windowsAt,
} from './text.js';
import type { TextCorpus, TextSplit } from './text.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});
const tmp = mkdtempSync(join(tmpdir(), 'leanpass-text-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** `count` distinct pseudo-sentences from a seeded generator. */
function sentences(count: number, seed: number): string[] {
  const rng = new Rng(seed);
  const words = ['the', 'cat', 'sat', 'on', 'a', 'mat', 'quietly', 'never', 'blue', 'river', 'ran', 'under', 'stars'];
  return Array.from({ length: count }, (_, i) => `${i}: ${Array.from({ length: 3 + rng.int(8) }, () => words[rng.int(words.length)]).join(' ')}.`);
}

const splitsOf = (c: TextCorpus): Record<TextSplit, Set<string>> => ({
  train: new Set(c.splits.train.map((r) => bytesToText(r))),
  val: new Set(c.splits.val.map((r) => bytesToText(r))),
  test: new Set(c.splits.test.map((r) => bytesToText(r))),
});

describe('corpus splits by record', () => {
  it('merges identical records, drops empty ones, and never puts one text in two splits', () => {
    const base = sentences(300, 1);
    const records = [...base, '', base[3]!, base[17]!, new TextEncoder().encode(base[5]), new Uint8Array(0)];
    const c = corpusFromRecords(records, { name: 'gen' });
    expect(c.stats).toMatchObject({ input: 305, empty: 2, duplicates: 3, unique: 300 });
    expect(c.stats.records.train + c.stats.records.val + c.stats.records.test).toBe(300);
    const s = splitsOf(c);
    const all = [...s.train, ...s.val, ...s.test];
    expect(new Set(all).size).toBe(300);
    expect(all.length).toBe(300);
    expect(c.stats.bytes.train).toBe([...s.train].reduce((a, r) => a + new TextEncoder().encode(r).length, 0));
  });

  it("a record's split depends only on its text (not on order or on the other records)", () => {
    const recs = sentences(2000, 2);
    const a = corpusFromRecords(recs);
    const shuffled = new Rng(5).shuffle([...recs]);
    const b = corpusFromRecords([...shuffled.slice(0, 1000), 'extra record', ...shuffled.slice(1000)]);
    const sa = splitsOf(a);
    const sb = splitsOf(b);
    for (const split of ['train', 'val', 'test'] as const) {
      for (const r of sa[split]) expect(sb[split].has(r)).toBe(true);
    }
    for (const r of recs.slice(0, 50)) expect(sa[splitOfRecord(r)].has(r)).toBe(true);
    // within a split, first-occurrence order is kept
    const order = a.splits.val.map((r) => recs.indexOf(bytesToText(r)));
    expect(order).toEqual([...order].sort((x, y) => x - y));
  });

  it('sends about 90/5/5 of the records to train/val/test; the salt reshuffles them', () => {
    const n = 20000;
    const c = corpusFromRecords(sentences(n, 3));
    // binomial tolerance: 5 standard deviations
    const tol = (p: number): number => 5 * Math.sqrt(n * p * (1 - p));
    expect(Math.abs(c.stats.records.train - 0.9 * n)).toBeLessThan(tol(0.9));
    expect(Math.abs(c.stats.records.val - 0.05 * n)).toBeLessThan(tol(0.05));
    expect(Math.abs(c.stats.records.test - 0.05 * n)).toBeLessThan(tol(0.05));
    const salted = corpusFromRecords(sentences(n, 3), { salt: 'other' });
    const trainA = splitsOf(c).train;
    const moved = salted.splits.val.filter((r) => trainA.has(bytesToText(r))).length;
    expect(moved).toBeGreaterThan(0.8 * salted.stats.records.val); // a fresh draw: ~90 % of the new val came from old train
    const allTrain = corpusFromRecords(sentences(100, 4), { fractions: { train: 1, val: 0, test: 0 } });
    expect(allTrain.stats.records).toEqual({ train: 100, val: 0, test: 0 });
    expect(() => corpusFromRecords([], { fractions: { train: 0.9, val: 0.05, test: 0.1 } })).toThrow(/train \+ val \+ test = 1, found 1.05/);
    expect(() => corpusFromRecords([], { fractions: { train: 1.2, val: -0.1, test: -0.1 } })).toThrow(ConfigError);
  });

  it('corpusStream writes every record followed by the separator', () => {
    const c = corpusFromRecords(['alpha', 'beta', 'gamma', 'delta', 'é'], { fractions: { train: 1, val: 0, test: 0 }, separator: '\n%\n' });
    const text = bytesToText(corpusStream(c, 'train'));
    expect(text).toBe('alpha\n%\nbeta\n%\ngamma\n%\ndelta\n%\né\n%\n');
    expect(corpusStream(c, 'val').length).toBe(0);
  });
});

describe('byte windows', () => {
  const stream = Uint8Array.from({ length: 1000 }, (_, i) => (i * 7 + (i >> 3)) % 256);

  it('windowsAt: targets are the inputs shifted by one byte', () => {
    const w = windowsAt(stream, [0, 500, 1000 - 17], 16);
    expect([w.batchSize, w.seqLength]).toEqual([3, 16]);
    for (let b = 0; b < 3; b++) {
      const s = w.starts[b]!;
      for (let t = 0; t < 16; t++) {
        expect(w.inputs[b * 16 + t]).toBe(stream[s + t]);
        expect(w.targets[b * 16 + t]).toBe(stream[s + t + 1]);
      }
    }
    expect(() => windowsAt(stream, [1000 - 16], 16)).toThrow(/window start 984 is out of range: expected 0 ≤ start ≤ 983/);
    expect(() => windowsAt(stream.subarray(0, 16), [0], 16)).toThrow(/at least 17 bytes, found 16/);
  });

  it('the seeded sampler is a pure function of (seed, step) and reaches both ends of the stream', () => {
    const short = stream.subarray(0, 40);
    const s1 = createWindowSampler(short, { seqLength: 8, batchSize: 16, seed: 3 });
    const s2 = createWindowSampler(short, { seqLength: 8, batchSize: 16, seed: 3 });
    expect(Array.from(s1.starts(7))).toEqual(Array.from(s2.starts(7)));
    expect(Array.from(s1.batch(7).inputs)).toEqual(Array.from(s2.batch(7).inputs));
    expect(Array.from(s1.starts(8))).not.toEqual(Array.from(s1.starts(7)));
    expect(Array.from(createWindowSampler(short, { seqLength: 8, batchSize: 16, seed: 4 }).starts(7))).not.toEqual(Array.from(s1.starts(7)));
    const seen = new Set<number>();
    for (let step = 0; step < 50; step++) for (const s of s1.starts(step)) seen.add(s);
    expect(Math.min(...seen)).toBe(0);
    expect(Math.max(...seen)).toBe(40 - 8 - 1);
    expect(seen.size).toBe(32); // every legal start [0, 31] is drawn
  });

  it('sequentialWindows tile the stream without overlap; the last batch may be partial', () => {
    const ws = sequentialWindows(stream, { seqLength: 64, batchSize: 4 });
    expect(ws.map((w) => w.batchSize)).toEqual([4, 4, 4, 3]); // floor(999 / 64) = 15 windows
    const inputs = ws.flatMap((w) => Array.from(w.inputs));
    const targets = ws.flatMap((w) => Array.from(w.targets));
    expect(inputs).toEqual(Array.from(stream.subarray(0, 15 * 64)));
    expect(targets).toEqual(Array.from(stream.subarray(1, 15 * 64 + 1)));
    expect(sequentialWindows(stream, { seqLength: 64, batchSize: 4, maxWindows: 5 }).map((w) => w.batchSize)).toEqual([4, 1]);
  });

  it('windowTensors gives int32 [B, T] tensors holding the bytes', () => {
    const w = createWindowSampler(stream, { seqLength: 12, batchSize: 5, seed: 1 }).batch(0);
    const before = tf.memory().numTensors;
    const { inputs, targets } = windowTensors(w);
    expect(inputs.shape).toEqual([5, 12]);
    expect(inputs.dtype).toBe('int32');
    expect(Array.from(inputs.dataSync())).toEqual(Array.from(w.inputs));
    expect(Array.from(targets.dataSync())).toEqual(Array.from(w.targets));
    tf.dispose([inputs, targets]);
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('fortunes', () => {
  it('stripOverstrike lets each backspace erase the character before it', () => {
    expect(stripOverstrike('whole ____\b\b\b\bBODY!')).toBe('whole BODY!');
    expect(stripOverstrike('what *___\b\b\bcan*')).toBe('what *can*');
    expect(stripOverstrike('_\bn+1 and I\bI win')).toBe('n+1 and I win');
    expect(stripOverstrike("Ren'\be Descartes")).toBe('Rene Descartes');
    expect(stripOverstrike('\bstart\n\bnext')).toBe('start\nnext');
    expect(stripOverstrike('plain')).toBe('plain');
  });

  it("parseFortunes splits on '%' lines and tidies each record", () => {
    const text = 'First one.\n%\n\n  Indented poem,\n  second line.  \n\n%\n%\n   \n%\nBold B\bBy\n%\r\nLast\n';
    expect(parseFortunes(text)).toEqual(['First one.', '  Indented poem,\n  second line.', 'Bold By', 'Last']);
    expect(parseFortunes(text, { overstrike: 'keep' })[2]).toBe('Bold B\bBy');
    expect(parseFortunes('50% off\n%\n100%')).toEqual(['50% off', '100%']);
    expect(() => parseFortunes('x', { overstrike: 'drop' as 'keep' })).toThrow(ConfigError);
  });

  it('reads regular cookie files only: no .dat, no symlinks, no folders, no dotfiles', () => {
    const dir = join(tmp, 'fortunes');
    mkdirSync(join(dir, 'off'), { recursive: true });
    writeFileSync(join(dir, 'zen'), 'Be here.\n%\nBe _\b_\bnow.\n%\n');
    writeFileSync(join(dir, 'apples'), 'An apple a day.\n%\nBe here.\n');
    writeFileSync(join(dir, 'zen.dat'), Uint8Array.from([0, 0, 0, 2, 0, 0, 0, 2]));
    symlinkSync('zen', join(dir, 'zen.u8'));
    writeFileSync(join(dir, '.hidden'), 'secret\n');
    writeFileSync(join(dir, 'off', 'rude'), 'Rude.\n');
    expect(listFortuneFiles(dir)).toEqual(['apples', 'zen']);
    const records = readFortuneRecords({ dir });
    expect(records).toEqual([
      { category: 'apples', text: 'An apple a day.' },
      { category: 'apples', text: 'Be here.' },
      { category: 'zen', text: 'Be here.' },
      { category: 'zen', text: 'Be now.' },
    ]);
    expect(readFortuneRecords({ dir, categories: ['zen'], overstrike: 'keep' }).map((r) => r.text)).toEqual(['Be here.', 'Be _\b_\bnow.']);
    expect(() => readFortuneRecords({ dir, categories: ['nope'] })).toThrow(/unknown fortunes categories \["nope"\]: expected names from .*: apples, zen/);
    const c = loadFortunes({ dir, fractions: { train: 1, val: 0, test: 0 } });
    expect(c.name).toBe('fortunes');
    expect(c.stats).toMatchObject({ input: 4, duplicates: 1, unique: 3 });
    expect(bytesToText(corpusStream(c, 'train'))).toBe('An apple a day.\n%\nBe here.\n%\nBe now.\n%\n');
    writeFileSync(join(dir, 'latin1'), Uint8Array.from([0x63, 0x61, 0x66, 0xe9, 0x0a]));
    expect(() => readFortuneRecords({ dir })).toThrow(new FormatError('expected UTF-8 text, found invalid UTF-8 byte sequences', join(dir, 'latin1')));
  });

  it('the installed fortunes (when present) match strfile’s record counts; otherwise the error gives the apt command', () => {
    if (existsSync(FORTUNES_DIR) && listFortuneFiles(FORTUNES_DIR).length > 0) {
      const files = listFortuneFiles(FORTUNES_DIR);
      expect(files.some((f) => f.endsWith('.dat') || f.endsWith('.u8'))).toBe(false);
      const records = readFortuneRecords();
      // strfile's .dat index stores the record count of its text file in bytes 4–7 (big-endian)
      let fromDat = 0;
      for (const f of files) {
        const dat = join(FORTUNES_DIR, `${f}.dat`);
        if (existsSync(dat)) fromDat += readFileSync(dat).readUInt32BE(4);
        else fromDat += parseFortunes(readFileSync(join(FORTUNES_DIR, f), 'utf8')).length;
      }
      expect(records.length).toBe(fromDat);
      expect(records.length).toBeGreaterThan(10000);
      expect(records.some((r) => r.text.includes('\b'))).toBe(false);
      expect(readFortuneRecords({ overstrike: 'keep' }).some((r) => r.text.includes('\b'))).toBe(true);
      const c = loadFortunes();
      expect(c.stats.unique + c.stats.duplicates + c.stats.empty).toBe(c.stats.input);
      expect(c.stats.unique).toBeGreaterThan(0.95 * records.length);
      const u = c.stats.unique;
      expect(Math.abs(c.stats.records.val - 0.05 * u)).toBeLessThan(5 * Math.sqrt(u * 0.05 * 0.95));
    } else {
      expect(() => readFortuneRecords()).toThrow(DatasetNotInstalledError);
      expect(() => readFortuneRecords()).toThrow('sudo apt-get install -y fortunes');
    }
    expect(() => readFortuneRecords({ dir: join(tmp, 'missing') })).toThrow(/The fortunes corpus is not installed: looked in .*missing\. Install it with `sudo apt-get install -y fortunes`/);
  });
});

describe('WordNet glosses', () => {
  const header = '  1 This software and database is being provided to you, the LICENSEE, by  \n  2 Princeton University under the following license. | not a gloss  \n';
  const data =
    header +
    '00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived or known or inferred to have its own distinct existence (living or nonliving)  \n' +
    '00001930 03 n 01 physical_entity 0 007 @ 00001740 n 0000 | an entity that has physical existence  \n';

  it('takes the text after " | " on every synset line and skips the licence header', () => {
    expect(parseWordnetGlosses(data)).toEqual([
      'that which is perceived or known or inferred to have its own distinct existence (living or nonliving)',
      'an entity that has physical existence',
    ]);
    expect(() => parseWordnetGlosses(header + '00001740 03 n 01 entity 0 000\n', 'data.noun')).toThrow(new FormatError("line 3: expected a gloss after ' | ', found none", 'data.noun'));
    expect(() => parseWordnetGlosses('garbage line\n', 'data.verb')).toThrow(/data\.verb: line 1: expected a synset line/);
  });

  it('reads the parts asked for from a folder, and fails with the apt command when they are missing', () => {
    const dir = join(tmp, 'wordnet');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'data.noun'), data);
    writeFileSync(join(dir, 'data.verb'), header + '00001740 29 v 01 breathe 0 000 | draw air into, and expel out of, the lungs  \n');
    expect(readWordnetGlosses({ dir, parts: ['verb', 'noun'] })).toEqual([
      'draw air into, and expel out of, the lungs',
      'that which is perceived or known or inferred to have its own distinct existence (living or nonliving)',
      'an entity that has physical existence',
    ]);
    const err = (() => {
      try {
        readWordnetGlosses({ dir });
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(DatasetNotInstalledError);
    expect((err as Error).message).toContain('sudo apt-get install -y wordnet-base');
    expect(() => readWordnetGlosses({ dir, parts: ['nouns' as 'noun'] })).toThrow(/unknown WordNet part "nouns"/);
  });

  it('the installed WordNet (when present) gives one gloss per synset line; otherwise the error gives the apt command', () => {
    const installed = ['noun', 'verb', 'adj', 'adv'].every((p) => existsSync(join(WORDNET_DIR, `data.${p}`)));
    if (installed) {
      let synsets = 0;
      for (const f of readdirSync(WORDNET_DIR).filter((name) => /^data\.(noun|verb|adj|adv)$/.test(name))) {
        synsets += readFileSync(join(WORDNET_DIR, f), 'utf8').split('\n').filter((l) => /^\d{8} /.test(l)).length;
      }
      const c = loadWordnetGlosses();
      expect(c.stats.input).toBe(synsets);
      expect(c.stats.input).toBeGreaterThan(100000);
      expect(c.splits.train.length + c.splits.val.length + c.splits.test.length).toBe(c.stats.unique);
      expect(c.stats.duplicates).toBeGreaterThan(0); // some glosses repeat verbatim
      const all = splitsOf(c);
      const entity = 'that which is perceived or known or inferred to have its own distinct existence (living or nonliving)';
      expect(all[splitOfRecord(entity)].has(entity)).toBe(true);
    } else {
      expect(() => readWordnetGlosses()).toThrow(DatasetNotInstalledError);
      expect(() => readWordnetGlosses()).toThrow('sudo apt-get install -y wordnet-base');
    }
  });
});
