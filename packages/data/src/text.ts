/**
 * Byte-level text corpora for small language models. A corpus is a list of records (a fortune, a
 * WordNet gloss…) stored as UTF-8 bytes and split into train / validation / test BY RECORD: identical
 * records are merged first, then each record goes to the split chosen by a hash of its bytes (90/5/5 by
 * default). The split of a record therefore never depends on the other records or on file order, and no
 * text is shared between splits. Windows of bytes (int32, vocabulary 256) are cut from a split's stream
 * — its records, each followed by a separator — by a seeded sampler that is a pure function of
 * (seed, step), so a resumed run draws the same windows.
 */
import { lstatSync, readdirSync, readFileSync, existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { ConfigError, FormatError, Rng } from '@leanpass/core';
import { DatasetNotInstalledError } from './errors.js';

export type TextSplit = 'train' | 'val' | 'test';
export const TEXT_SPLITS: readonly TextSplit[] = Object.freeze(['train', 'val', 'test'] as const);

/** Fractions of records per split; they must sum to 1. */
export interface SplitFractions {
  train: number;
  val: number;
  test: number;
}

export const DEFAULT_SPLIT_FRACTIONS: Readonly<SplitFractions> = Object.freeze({ train: 0.9, val: 0.05, test: 0.05 });

export interface CorpusOptions {
  /** A label for reports. Default `'records'`. */
  name?: string;
  /** Default 90/5/5. */
  fractions?: SplitFractions;
  /** Mixed into the record hash: a different salt gives a different (equally deterministic) split. Default ''. */
  salt?: string;
  /** Written after every record in a split's byte stream. Default `'\n'`. */
  separator?: string;
}

export interface CorpusStats {
  /** Records given (before removing empty ones and duplicates). */
  input: number;
  /** Records dropped because they were empty. */
  empty: number;
  /** Records dropped because an identical record came earlier. */
  duplicates: number;
  /** Distinct non-empty records kept. */
  unique: number;
  records: Record<TextSplit, number>;
  /** Bytes of the records of each split (separators not counted). */
  bytes: Record<TextSplit, number>;
}

/** A de-duplicated corpus split by record. Records are UTF-8 bytes, in first-occurrence order within each split. */
export interface TextCorpus {
  name: string;
  separator: Uint8Array;
  fractions: SplitFractions;
  salt: string;
  splits: Record<TextSplit, Uint8Array[]>;
  stats: CorpusStats;
}

const encoder = new TextEncoder();

function checkFractions(f: SplitFractions): void {
  const issues: { path: string; message: string }[] = [];
  for (const k of TEXT_SPLITS) {
    const v = f[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > 1) issues.push({ path: `fractions.${k}`, message: `expected a number in [0, 1], found ${String(v)}` });
  }
  const sum = f.train + f.val + f.test;
  if (issues.length === 0 && Math.abs(sum - 1) > 1e-9) issues.push({ path: 'fractions', message: `expected train + val + test = 1, found ${sum}` });
  if (issues.length > 0) throw new ConfigError('invalid split fractions', issues);
}

/** FNV-1a over the salt and the bytes, finished with murmur3's fmix32; a uint32. */
export function recordHash(bytes: Uint8Array, salt = ''): number {
  let h = 0x811c9dc5;
  const mix = (b: number): void => {
    h ^= b;
    h = Math.imul(h, 0x01000193);
  };
  if (salt !== '') {
    for (const b of encoder.encode(salt)) mix(b);
    mix(0xff); // 0xff never occurs in UTF-8, so salt and record cannot run into each other
  }
  for (const b of bytes) mix(b);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The split a record belongs to: a pure function of its bytes, the fractions and the salt. */
export function splitOfRecord(record: Uint8Array | string, fractions: SplitFractions = DEFAULT_SPLIT_FRACTIONS, salt = ''): TextSplit {
  const bytes = typeof record === 'string' ? encoder.encode(record) : record;
  const u = recordHash(bytes, salt) / 4294967296;
  if (u < fractions.train) return 'train';
  if (u < fractions.train + fractions.val) return 'val';
  return 'test';
}

/**
 * Builds a corpus from records (strings are UTF-8 encoded): drops empty records, merges identical ones
 * (byte equality; the first occurrence is kept), and assigns each to a split by {@link splitOfRecord}.
 */
export function corpusFromRecords(records: Iterable<string | Uint8Array>, options: CorpusOptions = {}): TextCorpus {
  const fractions = options.fractions ?? { ...DEFAULT_SPLIT_FRACTIONS };
  checkFractions(fractions);
  const salt = options.salt ?? '';
  const seen = new Set<string>();
  const splits: Record<TextSplit, Uint8Array[]> = { train: [], val: [], test: [] };
  const bytes: Record<TextSplit, number> = { train: 0, val: 0, test: 0 };
  let input = 0;
  let empty = 0;
  let duplicates = 0;
  for (const record of records) {
    input++;
    const b = typeof record === 'string' ? encoder.encode(record) : record;
    if (b.length === 0) {
      empty++;
      continue;
    }
    const key = Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1');
    if (seen.has(key)) {
      duplicates++;
      continue;
    }
    seen.add(key);
    const split = splitOfRecord(b, fractions, salt);
    splits[split].push(b);
    bytes[split] += b.length;
  }
  return {
    name: options.name ?? 'records',
    separator: encoder.encode(options.separator ?? '\n'),
    fractions,
    salt,
    splits,
    stats: {
      input,
      empty,
      duplicates,
      unique: seen.size,
      records: { train: splits.train.length, val: splits.val.length, test: splits.test.length },
      bytes,
    },
  };
}

/** A split as one byte stream: every record followed by the corpus separator. */
export function corpusStream(corpus: TextCorpus, split: TextSplit): Uint8Array {
  const records = corpus.splits[split];
  const sep = corpus.separator;
  let total = 0;
  for (const r of records) total += r.length + sep.length;
  const out = new Uint8Array(total);
  let at = 0;
  for (const r of records) {
    out.set(r, at);
    at += r.length;
    out.set(sep, at);
    at += sep.length;
  }
  return out;
}

/** Decodes UTF-8 bytes (a record, a window) back to text. */
export function bytesToText(bytes: Uint8Array | Int32Array | readonly number[]): string {
  const u8 = bytes instanceof Uint8Array ? bytes : Uint8Array.from(bytes);
  return new TextDecoder().decode(u8);
}

// ---------------------------------------------------------------------------------------------------
// Windows

/** `batchSize` windows of `seqLength` bytes: `inputs[b, t] = stream[start_b + t]`, `targets` shifted by one. */
export interface ByteWindows {
  batchSize: number;
  seqLength: number;
  /** Row-major `[batchSize, seqLength]`, values 0–255. */
  inputs: Int32Array;
  /** Row-major `[batchSize, seqLength]`: the byte after each input byte. */
  targets: Int32Array;
  /** Start offset of each window in the stream. */
  starts: Int32Array;
}

function checkWindowStream(stream: Uint8Array, seqLength: number): void {
  if (!Number.isInteger(seqLength) || seqLength <= 0) throw new ConfigError(`expected a positive integer seqLength, found ${seqLength}`);
  if (stream.length < seqLength + 1) throw new ConfigError(`a window of ${seqLength} bytes plus its next-byte target needs a stream of at least ${seqLength + 1} bytes, found ${stream.length}`);
}

/** The windows starting at `starts` (each needs `seqLength + 1` bytes of stream for its targets). */
export function windowsAt(stream: Uint8Array, starts: ArrayLike<number>, seqLength: number): ByteWindows {
  checkWindowStream(stream, seqLength);
  const b = starts.length;
  const inputs = new Int32Array(b * seqLength);
  const targets = new Int32Array(b * seqLength);
  const s32 = Int32Array.from(starts);
  for (let i = 0; i < b; i++) {
    const s = s32[i] as number;
    if (!Number.isInteger(s) || s < 0 || s + seqLength + 1 > stream.length) {
      throw new ConfigError(`window start ${s} is out of range: expected 0 ≤ start ≤ ${stream.length - seqLength - 1} for seqLength ${seqLength}`);
    }
    for (let t = 0; t < seqLength; t++) {
      inputs[i * seqLength + t] = stream[s + t] as number;
      targets[i * seqLength + t] = stream[s + t + 1] as number;
    }
  }
  return { batchSize: b, seqLength, inputs, targets, starts: s32 };
}

export interface WindowSamplerOptions {
  seqLength: number;
  batchSize: number;
  seed: number;
}

/** Draws training windows uniformly from a stream; `batch(step)` depends only on (seed, step). */
export interface WindowSampler {
  readonly stream: Uint8Array;
  readonly seqLength: number;
  readonly batchSize: number;
  readonly seed: number;
  /** The window starts of step `step`. */
  starts(step: number): Int32Array;
  batch(step: number): ByteWindows;
}

/** A seeded sampler of uniformly placed windows (e.g. calibration: 128 windows × 128 bytes = `batch(0)`). */
export function createWindowSampler(stream: Uint8Array, options: WindowSamplerOptions): WindowSampler {
  const { seqLength, batchSize, seed } = options;
  checkWindowStream(stream, seqLength);
  if (!Number.isInteger(batchSize) || batchSize <= 0) throw new ConfigError(`expected a positive integer batchSize, found ${batchSize}`);
  const root = new Rng(seed);
  const range = stream.length - seqLength; // starts in [0, range)
  const starts = (step: number): Int32Array => {
    if (!Number.isInteger(step) || step < 0) throw new RangeError(`WindowSampler expects a non-negative integer step, got ${step}`);
    const rng = root.fork(`windows/${step}`);
    const out = new Int32Array(batchSize);
    for (let i = 0; i < batchSize; i++) out[i] = rng.int(range);
    return out;
  };
  return {
    stream,
    seqLength,
    batchSize,
    seed,
    starts,
    batch: (step) => windowsAt(stream, starts(step), seqLength),
  };
}

/**
 * Non-overlapping windows covering the stream in order (for evaluation): starts 0, T, 2T, … while a
 * window and its targets fit, grouped into batches of `batchSize` (the last batch may be smaller).
 */
export function sequentialWindows(stream: Uint8Array, options: { seqLength: number; batchSize: number; maxWindows?: number }): ByteWindows[] {
  const { seqLength, batchSize } = options;
  checkWindowStream(stream, seqLength);
  if (!Number.isInteger(batchSize) || batchSize <= 0) throw new ConfigError(`expected a positive integer batchSize, found ${batchSize}`);
  let count = Math.floor((stream.length - 1) / seqLength);
  if (options.maxWindows !== undefined) count = Math.min(count, options.maxWindows);
  const out: ByteWindows[] = [];
  for (let first = 0; first < count; first += batchSize) {
    const starts: number[] = [];
    for (let w = first; w < Math.min(count, first + batchSize); w++) starts.push(w * seqLength);
    out.push(windowsAt(stream, starts, seqLength));
  }
  return out;
}

/** The windows as int32 tensors `[B, T]`; the caller disposes them. */
export function windowTensors(w: ByteWindows): { inputs: tf.Tensor2D; targets: tf.Tensor2D } {
  return {
    inputs: tf.tensor2d(w.inputs, [w.batchSize, w.seqLength], 'int32'),
    targets: tf.tensor2d(w.targets, [w.batchSize, w.seqLength], 'int32'),
  };
}

// ---------------------------------------------------------------------------------------------------
// Files on the system

function isDir(path: string): boolean {
  return existsSync(path) && statSync(path).isDirectory();
}

function decodeUtf8File(path: string): string {
  const buf = readFileSync(path);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(buf);
  } catch {
    throw new FormatError('expected UTF-8 text, found invalid UTF-8 byte sequences', path);
  }
}

// ---- fortunes

/** Where Debian's `fortunes` packages install the cookie files (after `$LEANPASS_FORTUNES_DIR`). */
export const FORTUNES_DIR = '/usr/share/games/fortunes';
export const FORTUNES_DIR_ENV = 'LEANPASS_FORTUNES_DIR';
export const FORTUNES_INSTALL_COMMAND = 'sudo apt-get install -y fortunes';

/**
 * How backspace overstrike (`_\bX` underline, `X\bX` bold, `'\be` accents) is handled: `strip` (default)
 * lets each backspace erase the character before it, so the character typed last wins — underlined and
 * bold text become plain text and accent overstrikes become the bare letter; `keep` leaves the bytes as
 * they are (0x08 included).
 */
export type OverstrikeMode = 'strip' | 'keep';

/** Applies backspaces: each erases the character before it on the same line (a backspace with none is dropped). */
export function stripOverstrike(text: string): string {
  if (!text.includes('\b')) return text;
  const out: string[] = [];
  for (const ch of text) {
    if (ch !== '\b') out.push(ch);
    else if (out.length > 0 && out[out.length - 1] !== '\n') out.pop();
  }
  return out.join('');
}

/**
 * Splits the text of one cookie file into records: records are separated by lines holding only `%`;
 * leading blank lines and trailing whitespace of each record are removed and empty records dropped.
 */
export function parseFortunes(text: string, options: { overstrike?: OverstrikeMode } = {}): string[] {
  const mode = options.overstrike ?? 'strip';
  if (mode !== 'strip' && mode !== 'keep') throw new ConfigError(`expected overstrike 'strip' or 'keep', found ${JSON.stringify(mode)}`);
  const body = mode === 'strip' ? stripOverstrike(text) : text;
  const records: string[] = [];
  let current: string[] = [];
  const flush = (): void => {
    const r = current.join('\n').replace(/^(?:[ \t\r]*\n)+/, '').trimEnd();
    if (r.length > 0) records.push(r);
    current = [];
  };
  for (const line of body.split('\n')) {
    if (line === '%' || line === '%\r') flush();
    else current.push(line);
  }
  flush();
  return records;
}

/** The cookie files of a fortunes folder: regular files only (no symlinks such as `*.u8`, no folders), no `.dat` indexes, no dotfiles; sorted. */
export function listFortuneFiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((f) => !f.startsWith('.') && !f.endsWith('.dat') && lstatSync(join(dir, f)).isFile())
    .sort();
}

export interface FortunesOptions {
  /** The folder of cookie files; default `$LEANPASS_FORTUNES_DIR`, else /usr/share/games/fortunes. */
  dir?: string;
  /** Only these files (categories), e.g. `['computers', 'science']`; default all. */
  categories?: readonly string[];
  overstrike?: OverstrikeMode;
}

export interface FortuneRecord {
  category: string;
  text: string;
}

function fortunesDir(dir: string | undefined): string {
  const candidates = dir !== undefined ? [dir] : [...(process.env[FORTUNES_DIR_ENV] ? [process.env[FORTUNES_DIR_ENV]] : []), FORTUNES_DIR];
  const found = candidates.find(isDir);
  if (found === undefined) throw new DatasetNotInstalledError('The fortunes corpus', candidates, FORTUNES_INSTALL_COMMAND, `set ${FORTUNES_DIR_ENV} or pass 'dir'`);
  return found;
}

/** Reads every record of the installed fortunes (or of `dir`), file by file in name order. */
export function readFortuneRecords(options: FortunesOptions = {}): FortuneRecord[] {
  const dir = fortunesDir(options.dir);
  const files = listFortuneFiles(dir);
  if (files.length === 0) throw new DatasetNotInstalledError('The fortunes corpus', [dir], FORTUNES_INSTALL_COMMAND, `set ${FORTUNES_DIR_ENV} or pass 'dir'`);
  let chosen = files;
  if (options.categories !== undefined) {
    const missing = options.categories.filter((c) => !files.includes(c));
    if (missing.length > 0) throw new ConfigError(`unknown fortunes categories ${JSON.stringify(missing)}: expected names from ${dir}: ${files.join(', ')}`);
    chosen = [...options.categories];
  }
  const out: FortuneRecord[] = [];
  const parseOptions = options.overstrike === undefined ? {} : { overstrike: options.overstrike };
  for (const category of chosen) {
    for (const text of parseFortunes(decodeUtf8File(join(dir, category)), parseOptions)) out.push({ category, text });
  }
  return out;
}

/** The fortunes as a corpus (separator `'\n%\n'`, as in the cookie files; split 90/5/5 by record). */
export function loadFortunes(options: FortunesOptions & CorpusOptions = {}): TextCorpus {
  const records = readFortuneRecords(options);
  return corpusFromRecords(
    records.map((r) => r.text),
    { ...options, name: options.name ?? 'fortunes', separator: options.separator ?? '\n%\n' },
  );
}

// ---- WordNet glosses

/** Where Debian's `wordnet-base` installs its database (after `$LEANPASS_WORDNET_DIR`). */
export const WORDNET_DIR = '/usr/share/wordnet';
export const WORDNET_DIR_ENV = 'LEANPASS_WORDNET_DIR';
export const WORDNET_INSTALL_COMMAND = 'sudo apt-get install -y wordnet-base';
export type WordnetPart = 'noun' | 'verb' | 'adj' | 'adv';
export const WORDNET_PARTS: readonly WordnetPart[] = Object.freeze(['noun', 'verb', 'adj', 'adv'] as const);

/**
 * The glosses of a WordNet `data.*` file: the text after `' | '` on every synset line (trailing spaces
 * removed). Lines starting with two spaces are the licence header and are skipped; a synset line
 * without a gloss is a FormatError naming the file and line.
 */
export function parseWordnetGlosses(text: string, name = 'WordNet data'): string[] {
  const out: string[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] as string;
    if (line.trim() === '' || line.startsWith('  ')) continue;
    if (!/^\d{8} /.test(line)) throw new FormatError(`line ${i + 1}: expected a synset line starting with an 8-digit offset, found ${JSON.stringify(line.slice(0, 40))}`, name);
    const bar = line.indexOf(' | ');
    if (bar < 0) throw new FormatError(`line ${i + 1}: expected a gloss after ' | ', found none`, name);
    const gloss = line.slice(bar + 3).trim();
    if (gloss.length > 0) out.push(gloss);
  }
  return out;
}

export interface WordnetOptions {
  /** Default `$LEANPASS_WORDNET_DIR`, else /usr/share/wordnet. */
  dir?: string;
  /** Default all four. */
  parts?: readonly WordnetPart[];
}

/** Reads the glosses of the installed WordNet (noun, verb, adj, adv in that order unless `parts` says otherwise). */
export function readWordnetGlosses(options: WordnetOptions = {}): string[] {
  const candidates = options.dir !== undefined ? [options.dir] : [...(process.env[WORDNET_DIR_ENV] ? [process.env[WORDNET_DIR_ENV]] : []), WORDNET_DIR];
  const parts = options.parts ?? WORDNET_PARTS;
  for (const p of parts) if (!WORDNET_PARTS.includes(p)) throw new ConfigError(`unknown WordNet part ${JSON.stringify(p)}: expected one of ${WORDNET_PARTS.join(', ')}`);
  const dir = candidates.find((d) => parts.every((p) => existsSync(join(d, `data.${p}`))));
  if (dir === undefined) {
    throw new DatasetNotInstalledError('WordNet', candidates.map((d) => join(d, `data.{${parts.join(',')}}`)), WORDNET_INSTALL_COMMAND, `set ${WORDNET_DIR_ENV} or pass 'dir'`);
  }
  return parts.flatMap((p) => parseWordnetGlosses(decodeUtf8File(join(dir, `data.${p}`)), join(dir, `data.${p}`)));
}

/** The WordNet glosses as a corpus (separator `'\n'`; split 90/5/5 by record after merging identical glosses). */
export function loadWordnetGlosses(options: WordnetOptions & CorpusOptions = {}): TextCorpus {
  return corpusFromRecords(readWordnetGlosses(options), { ...options, name: options.name ?? 'wordnet-glosses', separator: options.separator ?? '\n' });
}
