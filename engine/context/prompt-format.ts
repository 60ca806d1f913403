// How workspace files, questions and fill-in-the-middle requests become tokens,
// in the format the default model was trained on (training/data.py):
//   file   <|file|>{path}\n{content}\n
//   patch  <|file|>{path}:{first}-{last}\n{those lines as edited}
//   FIM    <|file|>{path}\n<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>
//   chat   <|user|>{question}<|end|><|assistant|>
// A model whose tokenizer lacks these tokens gets plain-text equivalents.
// Text from the workspace is encoded so that it can never produce a special token:
// a file that contains "<|end|>" must not end the user's turn.
import type { Tokenizer } from '../model/tokenizer.js';
import { FILE_HEADER } from '../vocabulary.js';

export const SPECIAL = {
  file: '<|file|>',
  fimPrefix: '<|fim_prefix|>',
  fimSuffix: '<|fim_suffix|>',
  fimMiddle: '<|fim_middle|>',
  user: '<|user|>',
  assistant: '<|assistant|>',
  end: '<|end|>',
  endOfText: '<|endoftext|>',
} as const;

export class PromptFormat {
  private readonly specials: Map<string, number>;
  readonly hasFim: boolean;
  readonly hasChat: boolean;

  constructor(private readonly tokenizer: Tokenizer) {
    this.specials = new Map();
    for (const token of Object.values(SPECIAL)) {
      const id = tokenizer.tokenToId(token);
      if (id !== undefined) this.specials.set(token, id);
    }
    this.hasFim = [SPECIAL.file, SPECIAL.fimPrefix, SPECIAL.fimSuffix, SPECIAL.fimMiddle].every((t) => this.specials.has(t));
    this.hasChat = [SPECIAL.user, SPECIAL.assistant, SPECIAL.end].every((t) => this.specials.has(t));
  }

  /** Ids of special tokens that end a turn or a completion. */
  get stopIds(): number[] {
    return [SPECIAL.end, SPECIAL.endOfText].flatMap((t) => (this.specials.has(t) ? [this.specials.get(t) ?? -1] : []));
  }

  /** Ids that end a continued FIM prefix: the turn's and text's ends, and the start of the suffix. */
  get prefixStopIds(): number[] {
    return [...this.stopIds, ...(this.hasFim ? [this.specials.get(SPECIAL.fimSuffix) ?? -1] : [])];
  }

  /** Plain text → ids, never producing a special token from text that spells one. */
  text(text: string): number[] {
    if (text.length === 0) return [];
    const specialStrings = [...this.specials.keys()];
    const ids: number[] = [];
    // A loop, not push(...): a big file has more tokens than a call may take arguments.
    const encode = (piece: string) => {
      for (const id of this.tokenizer.encode(piece, { addSpecialTokens: false })) ids.push(id);
    };
    let rest = text;
    while (rest.length > 0) {
      let at = -1;
      let found = '';
      for (const s of specialStrings) {
        const i = rest.indexOf(s);
        if (i >= 0 && (at < 0 || i < at)) {
          at = i;
          found = s;
        }
      }
      if (at < 0) {
        encode(rest);
        break;
      }
      if (at > 0) encode(rest.slice(0, at));
      // Split the spelled-out special so no piece matches it.
      encode(found.slice(0, 1));
      encode(found.slice(1));
      rest = rest.slice(at + found.length);
    }
    return ids;
  }

  private special(token: string, fallback: string): number[] {
    const id = this.specials.get(token);
    return id !== undefined ? [id] : this.text(fallback);
  }

  /** A workspace file as it sits in the context. Returns the header length too (for line mapping). */
  file(path: string, content: string): { ids: number[]; headerTokens: number } {
    const header = [...this.special(SPECIAL.file, FILE_HEADER), ...this.text(`${path}\n`)];
    const ids = header.concat(this.text(content.endsWith('\n') ? content : `${content}\n`));
    return { ids, headerTokens: header.length };
  }

  /**
   * The header of a patch: lines `first`–`last` of a file as edited, fed after the
   * context while the rest of the file stays where it was (its old lines masked out).
   */
  patchHeader(path: string, first: number, last: number): number[] {
    return [...this.special(SPECIAL.file, FILE_HEADER), ...this.text(`${path}:${first === last ? first : `${first}-${last}`}\n`)];
  }

  /** A question after the context, up to where the answer starts. */
  question(question: string): number[] {
    return [...this.special(SPECIAL.user, '\n### question\n'), ...this.text(question), ...this.special(SPECIAL.end, '\n'), ...this.special(SPECIAL.assistant, '### answer\n')];
  }

  /** FIM request: the part that depends only on the file (start) and on the prefix. */
  fimStart(path: string): number[] {
    return [...this.special(SPECIAL.file, FILE_HEADER), ...this.text(`${path}\n`), ...(this.hasFim ? this.special(SPECIAL.fimPrefix, '') : [])];
  }

  /** What follows the prefix: the suffix and the cue to write the middle. Without FIM tokens, plain continuation. */
  fimEnd(suffix: string): number[] {
    return this.fimEndIds(this.hasFim ? this.text(suffix) : []);
  }

  /** fimEnd() of a suffix already tokenized (e.g. cut to a few tokens). */
  fimEndIds(suffix: readonly number[]): number[] {
    if (!this.hasFim) return [];
    return [...this.special(SPECIAL.fimSuffix, ''), ...suffix, ...this.special(SPECIAL.fimMiddle, '')];
  }

  /** Newlines each token id decodes to, cached per id (the vocabulary is small; files are not). */
  private newlineCounts?: Int16Array;

  /** Number of newlines each token decodes to (for mapping token offsets to lines). */
  newlinesPerToken(ids: readonly number[]): Uint8Array {
    const cache = (this.newlineCounts ??= new Int16Array(this.tokenizer.vocabSize).fill(-1));
    const counts = new Uint8Array(ids.length);
    ids.forEach((id, i) => {
      let n = id < cache.length ? cache[id] : -1;
      if (n < 0) {
        const text = this.tokenizer.decode([id]);
        n = 0;
        for (let j = 0; j < text.length; j++) if (text.charCodeAt(j) === 10) n++;
        if (id < cache.length) cache[id] = n;
      }
      counts[i] = Math.min(n, 255);
    });
    return counts;
  }
}
