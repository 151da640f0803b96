import { describe, expect, it } from 'vitest';
import { ConfigError } from './errors.js';
import { compilePattern, layerSelectorSchema, matchesSelector, selectOrThrow } from './selector.js';

describe('LayerSelector patterns', () => {
  it('* matches within one segment, ** across segments', () => {
    expect(compilePattern('blocks.*.attn.q').test('blocks.3.attn.q')).toBe(true);
    expect(compilePattern('blocks.*.attn.q').test('blocks.3.x.attn.q')).toBe(false);
    expect(compilePattern('blocks.**.q').test('blocks.3.x.attn.q')).toBe(true);
    expect(compilePattern('**.q').test('q')).toBe(true);
    expect(compilePattern('**').test('a.b.c')).toBe(true);
    expect(compilePattern('fc?').test('fc1')).toBe(true);
    expect(compilePattern('fc?').test('fc12')).toBe(false);
  });
  it('escapes regex metacharacters in globs', () => {
    expect(compilePattern('a+b').test('a+b')).toBe(true);
    expect(compilePattern('a+b').test('aab')).toBe(false);
  });
  it('re: patterns match the whole path', () => {
    expect(compilePattern('re:blocks\\.[0-2]\\..*').test('blocks.1.mlp.fc1')).toBe(true);
    expect(compilePattern('re:blocks\\.[0-2]\\..*').test('xblocks.1.mlp')).toBe(false);
    expect(() => compilePattern('re:(')).toThrow(ConfigError);
  });
  it('kinds, include and exclude combine', () => {
    const sel = { kinds: ['linear'], include: ['blocks.**'], exclude: ['**.o'] };
    expect(matchesSelector(sel, 'blocks.0.attn.q', 'linear')).toBe(true);
    expect(matchesSelector(sel, 'blocks.0.attn.o', 'linear')).toBe(false);
    expect(matchesSelector(sel, 'blocks.0.attn.q', 'conv2d')).toBe(false);
    expect(matchesSelector(sel, 'head', 'linear')).toBe(false);
    expect(matchesSelector({}, 'head', 'conv2d', ['linear'])).toBe(false);
    expect(matchesSelector({ kinds: ['conv2d'] }, 'head', 'conv2d', ['linear'])).toBe(true);
  });
  it('a selector that matches nothing is an error naming kinds looked for and present', () => {
    const entries: Array<[string, { kind: string }]> = [
      ['', { kind: 'net' }],
      ['a', { kind: 'conv2d' }],
    ];
    expect(() => selectOrThrow(entries, {}, ['linear'], '@leanpass/x')).toThrow(/Looked for kinds \[linear\].*the model has kinds \[conv2d\]/);
    expect(selectOrThrow(entries, { kinds: ['conv2d'] }, ['linear'], 'x')).toHaveLength(1);
  });
  it('the zod schema is strict and checks regexes', () => {
    expect(layerSelectorSchema.safeParse({ include: ['re:('] }).success).toBe(false);
    expect(layerSelectorSchema.safeParse({ includes: ['a'] }).success).toBe(false);
    expect(layerSelectorSchema.parse({ kinds: ['linear'] })).toEqual({ kinds: ['linear'] });
  });
});
