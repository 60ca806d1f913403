// Token healing: a prompt cut mid-word ends on a token the tokenizer would not have
// chosen had the text gone on ("return " ends on " ", where the file has " strip"), and
// a model continuing from there writes what follows a lone space — not the word. The
// prompt's last token is taken back and generation is held to text that starts with
// it, so the model picks the token that spans the cut (Guidance's token healing).
import type { Tokenizer } from './tokenizer.js';

/** Each token id's text, decoded alone ('' for special tokens and partial UTF-8: never offered). */
const tokenTextCache = new WeakMap<Tokenizer, string[]>();
export function tokenTexts(tokenizer: Tokenizer): string[] {
  let texts = tokenTextCache.get(tokenizer);
  if (!texts) {
    texts = [];
    for (let id = 0; id < tokenizer.vocabSize; id++) {
      const text = tokenizer.decode([id], { skipSpecialTokens: true });
      texts.push(text.includes('\uFFFD') ? '' : text);
    }
    tokenTextCache.set(tokenizer, texts);
  }
  return texts;
}

export interface HealedPrompt {
  /** The prompt less its last token (unchanged when that token cannot be healed). */
  ids: number[];
  /** The text taken back: what the generation must start with ('' when none). */
  healed: string;
}

/** Takes back the last token of `ids` when it is plain text (not a special token or part of a character). */
export function healPrompt(ids: readonly number[], tokenizer: Tokenizer): HealedPrompt {
  const last = ids[ids.length - 1];
  const text = last === undefined ? '' : (tokenTexts(tokenizer)[last] ?? '');
  if (ids.length < 2 || text === '') return { ids: [...ids], healed: '' };
  return { ids: ids.slice(0, -1), healed: text };
}

/**
 * Holds generation to text that starts with `prefix`: until it is written, only tokens
 * that extend what has been generated along it are allowed (one that spans its end
 * included); after that, anything.
 */
export class StartsWith {
  private readonly texts: string[];

  constructor(
    private readonly prefix: string,
    tokenizer: Tokenizer,
  ) {
    this.texts = tokenTexts(tokenizer);
  }

  mask(logits: Float32Array, generated: readonly number[]): void {
    let written = 0;
    for (const id of generated) written += (this.texts[id] ?? '').length;
    if (written >= this.prefix.length) return;
    const need = this.prefix.slice(written);
    for (let id = 0; id < logits.length; id++) {
      const text = this.texts[id] ?? '';
      if (text === '' || !(text.startsWith(need) || need.startsWith(text))) logits[id] = -Infinity;
    }
  }
}
