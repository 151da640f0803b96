import { ConfigError } from '@leanpass/core';
import { describe, expect, it } from 'vitest';
import {
  TASK_EOS_ID,
  TASK_MASK_ID,
  TASK_PAD_ID,
  TASK_TOKENS,
  TASK_VOCAB_SIZE,
  decodeTask,
  encodeTask,
  exactMatch,
  makeTaskSet,
  taskBatch,
  taskExtent,
  taskSplitOf,
  type TaskName,
} from './tasks.js';

describe('task vocabulary', () => {
  it('puts pad, EOS and [MASK] last and round-trips text', () => {
    expect([TASK_PAD_ID, TASK_EOS_ID, TASK_MASK_ID]).toEqual([TASK_VOCAB_SIZE - 3, TASK_VOCAB_SIZE - 2, TASK_VOCAB_SIZE - 1]);
    expect(TASK_TOKENS[TASK_MASK_ID]).toBe('<mask>');
    const text = 'A12+345=Sab9f=RC';
    expect(decodeTask(encodeTask(text))).toBe(text);
    expect(decodeTask([...encodeTask('12'), TASK_EOS_ID, 3], { stopAtEos: true })).toBe('12');
    expect(() => encodeTask('1x2')).toThrow(/'x' at 1/);
    expect(() => decodeTask([0, TASK_VOCAB_SIZE])).toThrow(ConfigError);
  });

  it('exact match compares the content up to the first EOS', () => {
    const ans = [...encodeTask('357'), TASK_EOS_ID, TASK_EOS_ID];
    expect(exactMatch(ans, ans)).toBe(true);
    expect(exactMatch([...encodeTask('357'), TASK_EOS_ID, 4], ans)).toBe(true);
    expect(exactMatch([...encodeTask('3574'), TASK_EOS_ID], ans)).toBe(false);
    expect(exactMatch([...encodeTask('35'), TASK_EOS_ID, TASK_EOS_ID, TASK_EOS_ID], ans)).toBe(false);
    expect(exactMatch([...encodeTask('358'), TASK_EOS_ID, TASK_EOS_ID], ans)).toBe(false);
  });
});

describe('makeTaskSet', () => {
  const check = (task: TaskName, prompt: string, answer: string): void => {
    const body = prompt.slice(1, -1);
    switch (task) {
      case 'add': {
        const [a, b] = body.split('+').map(Number) as [number, number];
        expect(Number(answer)).toBe(a + b);
        break;
      }
      case 'sort':
        expect(answer).toBe([...body].sort().join(''));
        expect(answer.length).toBe(body.length);
        break;
      case 'reverse':
        expect([...answer].reverse().join('')).toBe(body);
        break;
      case 'copy':
        expect(answer).toBe(body);
    }
  };

  it('draws correct, EOS-padded problems of every task, reproducibly from the seed', () => {
    const set = makeTaskSet({ tasks: ['add', 'sort', 'reverse', 'copy'], count: 50, seed: 3 });
    expect(set.problems).toHaveLength(200);
    expect(set.answerLength).toBe(taskExtent(['add', 'sort', 'reverse', 'copy']).answerLength);
    for (const p of set.problems) {
      expect(p.prompt[0]).toBe(encodeTask({ add: 'A', sort: 'S', reverse: 'R', copy: 'C' }[p.task])[0]);
      expect(p.prompt.length).toBeLessThanOrEqual(set.promptLength);
      expect(p.answer).toHaveLength(set.answerLength);
      expect(p.answer).toContain(TASK_EOS_ID);
      expect(decodeTask(p.answer, { stopAtEos: true })).toBe(p.text.answer);
      expect(decodeTask(p.prompt)).toBe(p.text.prompt);
      check(p.task, p.text.prompt, p.text.answer);
    }
    const again = makeTaskSet({ tasks: ['add', 'sort', 'reverse', 'copy'], count: 50, seed: 3 });
    expect(again.problems.map((p) => p.text)).toEqual(set.problems.map((p) => p.text));
    const other = makeTaskSet({ tasks: ['add', 'sort', 'reverse', 'copy'], count: 50, seed: 4 });
    expect(other.problems.map((p) => p.text.prompt)).not.toEqual(set.problems.map((p) => p.text.prompt));
  });

  it('respects the digit and length ranges', () => {
    const set = makeTaskSet({ tasks: ['add', 'sort'], count: 100, seed: 1, addDigits: { min: 2, max: 2 }, sortLength: { min: 5, max: 5 } });
    for (const p of set.problems) {
      if (p.task === 'add') {
        for (const op of p.text.prompt.slice(1, -1).split('+')) expect(op).toMatch(/^[1-9]\d$/);
      } else expect(p.text.answer).toHaveLength(5);
    }
    expect(set.answerLength).toBe(6);
  });

  it('separates train and test by content: no test prompt appears in any training set', () => {
    const test = makeTaskSet({ tasks: ['add', 'reverse'], count: 300, seed: 9, split: 'test', addDigits: { min: 2, max: 2 } });
    const testPrompts = new Set(test.problems.map((p) => p.text.prompt));
    expect(testPrompts.size).toBe(600); // distinct by default for test sets
    for (const seed of [0, 1, 2]) {
      const train = makeTaskSet({ tasks: ['add', 'reverse'], count: 2000, seed, addDigits: { min: 2, max: 2 } });
      for (const p of train.problems) expect(testPrompts.has(p.text.prompt)).toBe(false);
    }
    for (const p of test.problems) expect(taskSplitOf(p.text.prompt)).toBe('test');
    // about testFraction of the space lands in the test split
    const all = makeTaskSet({ tasks: 'add', count: 4000, seed: 5, split: 'all', addDigits: { min: 2, max: 2 } });
    const frac = all.problems.filter((p) => taskSplitOf(p.text.prompt) === 'test').length / all.problems.length;
    expect(frac).toBeGreaterThan(0.15);
    expect(frac).toBeLessThan(0.25);
  });

  it('rejects bad options with ConfigErrors naming the field', () => {
    expect(() => makeTaskSet({ tasks: 'mul' as TaskName, count: 1, seed: 0 })).toThrow(/tasks/);
    expect(() => makeTaskSet({ tasks: 'add', count: 0, seed: 0 })).toThrow(ConfigError);
    expect(() => makeTaskSet({ tasks: 'add', count: 1, seed: 0, addDigits: { min: 3, max: 2 } })).toThrow(/addDigits/);
    expect(() => makeTaskSet({ tasks: 'add', count: 1, seed: 0, answerLength: 2 })).toThrow(/answerLength/);
    expect(() => makeTaskSet({ tasks: 'add', count: 1, seed: 0, testFraction: 1 })).toThrow(/testFraction/);
    // a tiny space cannot give 200 distinct test problems
    expect(() => makeTaskSet({ tasks: 'copy', count: 200, seed: 0, split: 'test', stringLength: { min: 1, max: 1 } })).toThrow(/distinct/);
  });
});

describe('taskBatch', () => {
  it('left-pads prompts to a common width and appends answers or masks', () => {
    const set = makeTaskSet({ tasks: ['add', 'sort'], count: 3, seed: 2 });
    const b = taskBatch(set.problems, { promptWidth: set.promptLength });
    expect(b.length).toBe(set.promptLength + set.answerLength);
    expect(b.answerStart).toBe(set.promptLength);
    set.problems.forEach((p, i) => {
      const row = Array.from(b.ids.slice(i * b.length, (i + 1) * b.length));
      const pad = b.pad[i] as number;
      expect(pad).toBe(set.promptLength - p.prompt.length);
      expect(row.slice(0, pad).every((x) => x === TASK_PAD_ID)).toBe(true);
      expect(row.slice(pad, b.answerStart)).toEqual(p.prompt);
      expect(row.slice(b.answerStart)).toEqual(p.answer);
    });
    const g = taskBatch(set.problems, { maskAnswers: true });
    expect(Array.from(g.ids.slice(g.answerStart, g.length)).every((x) => x === TASK_MASK_ID)).toBe(true);
    expect(() => taskBatch(set.problems, { promptWidth: 2 })).toThrow(/promptWidth/);
    expect(() => taskBatch([])).toThrow(ConfigError);
  });
});
