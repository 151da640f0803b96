import { ConfigError, Rng, type ConfigIssue } from '@leanpass/core';

/**
 * Seeded procedural sequence tasks with exact-match scoring, for masked-diffusion LMs (DARE's host):
 * - `add`: "A12+345=" → "357" (decimal, most significant digit first);
 * - `sort`: "S3142=" → "1234" (single digits, ascending);
 * - `reverse`: "Rab3c=" → "c3ba" (digits and letters a–f);
 * - `copy`: "Cab3c=" → "ab3c".
 * Every answer is padded with EOS to a fixed answer length (EOS is trained like any token, as in
 * LLaDA's SFT). Train and test problems are separated by content: a problem's split is a hash of its
 * text and the split seed, so a test problem never appears in a training set built with the same
 * split seed and test fraction, whatever the sampling seed.
 */

export type TaskName = 'add' | 'sort' | 'reverse' | 'copy';
export const TASK_NAMES: readonly TaskName[] = Object.freeze(['add', 'sort', 'reverse', 'copy']);

const DIGITS = '0123456789';
const LETTERS = 'abcdef';
const TASK_SYMBOL: Record<TaskName, string> = { add: 'A', sort: 'S', reverse: 'R', copy: 'C' };

/**
 * The shared vocabulary: digits 0–9, letters a–f, '+', '=', the task symbols A S R C, then `<pad>`,
 * `<eos>` and `<mask>` (last), 25 ids in all.
 */
export const TASK_TOKENS: readonly string[] = Object.freeze([...DIGITS, ...LETTERS, '+', '=', 'A', 'S', 'R', 'C', '<pad>', '<eos>', '<mask>']);
export const TASK_VOCAB_SIZE = TASK_TOKENS.length;
export const TASK_PAD_ID = TASK_TOKENS.indexOf('<pad>');
export const TASK_EOS_ID = TASK_TOKENS.indexOf('<eos>');
export const TASK_MASK_ID = TASK_TOKENS.indexOf('<mask>');

const CHAR_ID = new Map<string, number>(TASK_TOKENS.slice(0, TASK_PAD_ID).map((t, i) => [t, i]));

/** Token ids of a task text (one id per character; special tokens are not written as text). */
export function encodeTask(text: string): number[] {
  return [...text].map((c, i) => {
    const id = CHAR_ID.get(c);
    if (id === undefined) throw new ConfigError(`tasks: expected characters from '${TASK_TOKENS.slice(0, TASK_PAD_ID).join('')}', found '${c}' at ${i} in '${text}'`);
    return id;
  });
}

/** Text of token ids; `<pad>`, `<eos>`, `<mask>` are written as such unless `stopAtEos` cuts at the first EOS (pads dropped). */
export function decodeTask(ids: ArrayLike<number>, opts: { stopAtEos?: boolean } = {}): string {
  let out = '';
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i] as number;
    if (!Number.isInteger(id) || id < 0 || id >= TASK_VOCAB_SIZE) throw new ConfigError(`tasks: expected ids in [0, ${TASK_VOCAB_SIZE}), found ${id} at ${i}`);
    if (opts.stopAtEos) {
      if (id === TASK_EOS_ID) break;
      if (id === TASK_PAD_ID) continue;
    }
    out += TASK_TOKENS[id] as string;
  }
  return out;
}

/** The answer's content: ids before the first EOS (pads dropped). */
function content(ids: ArrayLike<number>): number[] {
  const out: number[] = [];
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i] as number;
    if (id === TASK_EOS_ID) break;
    if (id !== TASK_PAD_ID) out.push(id);
  }
  return out;
}

/** Exact match: the predicted ids up to their first EOS equal the answer's up to its first EOS. */
export function exactMatch(pred: ArrayLike<number>, answer: ArrayLike<number>): boolean {
  const a = content(pred);
  const b = content(answer);
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export interface TaskProblem {
  task: TaskName;
  /** Prompt ids (task symbol … '='), unpadded. */
  prompt: number[];
  /** Answer ids padded with EOS to the set's answer length. */
  answer: number[];
  text: { prompt: string; answer: string };
}

export interface TaskRanges {
  /** Operand digits of `add` (each operand's digit count drawn in [min, max]); default 2–3. */
  addDigits?: { min: number; max: number };
  /** List length of `sort`; default 4–6. */
  sortLength?: { min: number; max: number };
  /** String length of `reverse` and `copy`; default 3–6. */
  stringLength?: { min: number; max: number };
}

export interface TaskSetOptions extends TaskRanges {
  /** One task or a mixture (problems are drawn round-robin in the order given). */
  tasks: TaskName | readonly TaskName[];
  /** Problems per task. */
  count: number;
  /** Sampling seed. */
  seed: number;
  /** Which side of the content split to draw from; default 'train'. */
  split?: 'train' | 'test' | 'all';
  /** Fraction of the problem space assigned to the test split; default 0.2. */
  testFraction?: number;
  /** Seed of the content split (keep it fixed between the training and the test sets); default 0. */
  splitSeed?: number;
  /** Answer length (EOS-padded); default the longest answer the ranges allow (+1 for a final EOS). */
  answerLength?: number;
  /** Draw distinct problems only (default: true for 'test', false otherwise). */
  distinct?: boolean;
}

export interface TaskSet {
  problems: TaskProblem[];
  /** The answer length every answer is padded to. */
  answerLength: number;
  /** The longest prompt the ranges allow (the prompt width to pad batches to). */
  promptLength: number;
}

interface Ranges {
  addDigits: { min: number; max: number };
  sortLength: { min: number; max: number };
  stringLength: { min: number; max: number };
}

function ranges(opts: TaskRanges, issues: ConfigIssue[]): Ranges {
  const r = (key: keyof TaskRanges, dflt: { min: number; max: number }, lo: number, hi: number): { min: number; max: number } => {
    const v = opts[key] ?? dflt;
    if (!Number.isInteger(v.min) || !Number.isInteger(v.max) || v.min < lo || v.max > hi || v.min > v.max) {
      issues.push({ path: key, message: `expected integers ${lo} <= min <= max <= ${hi}, found ${JSON.stringify(v)}` });
      return dflt;
    }
    return { min: v.min, max: v.max };
  };
  return { addDigits: r('addDigits', { min: 2, max: 3 }, 1, 6), sortLength: r('sortLength', { min: 4, max: 6 }, 2, 16), stringLength: r('stringLength', { min: 3, max: 6 }, 1, 16) };
}

/** Longest prompt and answer (without EOS) of a task under the given ranges. */
function extent(task: TaskName, r: Ranges): { prompt: number; answer: number } {
  switch (task) {
    case 'add':
      return { prompt: 3 + 2 * r.addDigits.max, answer: r.addDigits.max + 1 };
    case 'sort':
      return { prompt: 2 + r.sortLength.max, answer: r.sortLength.max };
    default:
      return { prompt: 2 + r.stringLength.max, answer: r.stringLength.max };
  }
}

function draw(task: TaskName, r: Ranges, rng: Rng): { prompt: string; answer: string } {
  const between = (range: { min: number; max: number }): number => range.min + rng.int(range.max - range.min + 1);
  switch (task) {
    case 'add': {
      const operand = (): number => {
        const d = between(r.addDigits);
        const lo = d === 1 ? 0 : 10 ** (d - 1);
        return lo + rng.int(10 ** d - lo);
      };
      const a = operand();
      const b = operand();
      return { prompt: `A${a}+${b}=`, answer: String(a + b) };
    }
    case 'sort': {
      const n = between(r.sortLength);
      const xs = Array.from({ length: n }, () => rng.int(10));
      return { prompt: `S${xs.join('')}=`, answer: [...xs].sort((x, y) => x - y).join('') };
    }
    case 'reverse':
    case 'copy': {
      const alphabet = DIGITS + LETTERS;
      const n = between(r.stringLength);
      const s = Array.from({ length: n }, () => alphabet[rng.int(alphabet.length)] as string).join('');
      return { prompt: `${TASK_SYMBOL[task]}${s}=`, answer: task === 'copy' ? s : [...s].reverse().join('') };
    }
  }
}

/** FNV-1a of the prompt text and the split seed, as a number in [0, 1). */
function splitHash(text: string, splitSeed: number): number {
  let h = 0x811c9dc5 ^ (splitSeed >>> 0);
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d) >>> 0;
  h ^= h >>> 12;
  return (h >>> 0) / 2 ** 32;
}

/** Which split a problem (its prompt text) belongs to. */
export function taskSplitOf(promptText: string, opts: { testFraction?: number; splitSeed?: number } = {}): 'train' | 'test' {
  return splitHash(promptText, opts.splitSeed ?? 0) < (opts.testFraction ?? 0.2) ? 'test' : 'train';
}

/** Prompt and answer widths of a task mixture (the answer length includes at least one final EOS). */
export function taskExtent(tasks: TaskName | readonly TaskName[], r: TaskRanges = {}): { promptLength: number; answerLength: number } {
  const issues: ConfigIssue[] = [];
  const rr = ranges(r, issues);
  if (issues.length) throw new ConfigError('tasks: invalid ranges', issues);
  const list = typeof tasks === 'string' ? [tasks] : tasks;
  let promptLength = 0;
  let answerLength = 0;
  for (const t of list) {
    const e = extent(t, rr);
    promptLength = Math.max(promptLength, e.prompt);
    answerLength = Math.max(answerLength, e.answer + 1);
  }
  return { promptLength, answerLength };
}

/**
 * A seeded set of `count` problems per task from one side of the content split. The same options give
 * the same problems on every machine. Throws a ConfigError for unknown tasks or bad options, and when
 * a split cannot supply `count` distinct problems.
 */
export function makeTaskSet(opts: TaskSetOptions): TaskSet {
  const issues: ConfigIssue[] = [];
  const list = typeof opts.tasks === 'string' ? [opts.tasks] : [...opts.tasks];
  if (list.length === 0) issues.push({ path: 'tasks', message: 'expected at least one task, found none' });
  for (const t of list) if (!TASK_NAMES.includes(t)) issues.push({ path: 'tasks', message: `expected one of ${TASK_NAMES.join(', ')}, found ${JSON.stringify(t)}` });
  if (new Set(list).size !== list.length) issues.push({ path: 'tasks', message: `expected distinct tasks, found ${list.join(', ')}` });
  if (!Number.isInteger(opts.count) || opts.count < 1) issues.push({ path: 'count', message: `expected a positive integer, found ${opts.count}` });
  if (!Number.isInteger(opts.seed) || opts.seed < 0) issues.push({ path: 'seed', message: `expected a non-negative integer, found ${opts.seed}` });
  const split = opts.split ?? 'train';
  if (!['train', 'test', 'all'].includes(split)) issues.push({ path: 'split', message: `expected 'train', 'test' or 'all', found ${JSON.stringify(split)}` });
  const testFraction = opts.testFraction ?? 0.2;
  if (!(testFraction > 0 && testFraction < 1)) issues.push({ path: 'testFraction', message: `expected a number in (0, 1), found ${testFraction}` });
  const splitSeed = opts.splitSeed ?? 0;
  const r = ranges(opts, issues);
  if (issues.length) throw new ConfigError('tasks: invalid task-set options', issues);
  const ext = taskExtent(list, r);
  const answerLength = opts.answerLength ?? ext.answerLength;
  if (!Number.isInteger(answerLength) || answerLength < ext.answerLength) {
    throw new ConfigError('tasks: invalid task-set options', [{ path: 'answerLength', message: `expected an integer >= ${ext.answerLength} (longest answer + EOS), found ${answerLength}` }]);
  }
  const distinct = opts.distinct ?? split === 'test';
  const problems: TaskProblem[] = [];
  const rngs = list.map((t) => new Rng(opts.seed).fork(`task:${t}`));
  const seen = list.map(() => new Set<string>());
  const maxTries = 200 * opts.count + 10_000;
  for (let n = 0; n < opts.count; n++) {
    list.forEach((task, ti) => {
      const rng = rngs[ti] as Rng;
      const used = seen[ti] as Set<string>;
      for (let tries = 0; ; tries++) {
        if (tries > maxTries) {
          throw new ConfigError(`tasks: could not draw ${opts.count} ${distinct ? 'distinct ' : ''}'${task}' problems from the ${split} split (got ${n}); widen the ranges or lower count`);
        }
        const p = draw(task, r, rng);
        if (split !== 'all' && taskSplitOf(p.prompt, { testFraction, splitSeed }) !== split) continue;
        if (distinct && used.has(p.prompt)) continue;
        used.add(p.prompt);
        const answer = encodeTask(p.answer);
        while (answer.length < answerLength) answer.push(TASK_EOS_ID);
        problems.push({ task, prompt: encodeTask(p.prompt), answer, text: p });
        break;
      }
    });
  }
  return { problems, answerLength, promptLength: ext.promptLength };
}

export interface TaskBatch {
  /** Row-major ids [batch, length]: left pads, the prompt, the answer (or `<mask>`s when `maskAnswers`). */
  ids: Int32Array;
  batch: number;
  /** promptWidth + answerLength. */
  length: number;
  /** Canvas column where the answers start (= promptWidth). */
  answerStart: number;
  /** Left pads per sequence. */
  pad: Int32Array;
}

/**
 * Left-pads the prompts to `promptWidth` (default: the longest prompt in `problems`) and appends the
 * answers (or as many `<mask>`s, for generation): the layout a diffusion LM trains and samples on.
 */
export function taskBatch(problems: readonly TaskProblem[], opts: { promptWidth?: number; maskAnswers?: boolean } = {}): TaskBatch {
  if (problems.length === 0) throw new ConfigError('tasks: expected at least one problem for a batch, found none');
  const A = (problems[0] as TaskProblem).answer.length;
  const longest = Math.max(...problems.map((p) => p.prompt.length));
  const P = opts.promptWidth ?? longest;
  if (P < longest) throw new ConfigError(`tasks: promptWidth ${P} is shorter than the longest prompt (${longest})`);
  const L = P + A;
  const ids = new Int32Array(problems.length * L);
  const pad = new Int32Array(problems.length);
  problems.forEach((p, b) => {
    if (p.answer.length !== A) throw new ConfigError(`tasks: expected every answer of length ${A}, found ${p.answer.length} at ${b}`);
    const np = P - p.prompt.length;
    pad[b] = np;
    const row = b * L;
    ids.fill(TASK_PAD_ID, row, row + np);
    ids.set(p.prompt, row + np);
    if (opts.maskAnswers) ids.fill(TASK_MASK_ID, row + P, row + L);
    else ids.set(p.answer, row + P);
  });
  return { ids, batch: problems.length, length: L, answerStart: P, pad };
}
