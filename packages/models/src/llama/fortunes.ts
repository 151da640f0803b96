import { corpusStream, loadFortunes, type FortunesOptions, type TextCorpus, type TextSplit } from '@leanpass/data';

const cache = new Map<string, TextCorpus>();

/**
 * The installed `fortunes` corpus as llama-tiny was trained on it (@leanpass/data's `loadFortunes()`
 * defaults: records split 90/5/5 by hash, joined by `\n%\n`), memoised per directory. Throws
 * DatasetNotInstalledError with the apt command when the package is missing.
 */
export function fortunesCorpus(options: Pick<FortunesOptions, 'dir'> = {}): TextCorpus {
  const key = options.dir ?? '';
  let c = cache.get(key);
  if (!c) {
    c = loadFortunes(options.dir === undefined ? {} : { dir: options.dir });
    cache.set(key, c);
  }
  return c;
}

/** One split of the fortunes corpus as a byte stream (train for calibration, val/test for evaluation). */
export function fortunesStream(split: TextSplit, options: Pick<FortunesOptions, 'dir'> = {}): Uint8Array {
  return corpusStream(fortunesCorpus(options), split);
}
