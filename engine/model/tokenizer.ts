// Text ⇄ token ids for a model directory. One code path: both a shipped tokenizer.json and the
// built-in byte-level fallback go through @huggingface/tokenizers (a pure-JS port of HF tokenizers).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';

export interface Tokenizer {
  /** Size of the tokenizer's id space: highest id it knows + 1 (may be < the model's vocab). */
  readonly vocabSize: number;
  /** Added tokens marked special (`<s>`, `<|fim_prefix|>`, …) → id. */
  readonly specialTokens: Map<string, number>;
  /** Lone surrogates are encoded as U+FFFD. addSpecialTokens (default true) runs the post-processor (e.g. BOS). */
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  /** Ids the tokenizer has no token for (a model vocab padded past the tokenizer's) decode to nothing. */
  decode(ids: readonly number[], opts?: { skipSpecialTokens?: boolean }): string;
  tokenToId(token: string): number | undefined;
  /** The tokenizer.json path, or 'built-in byte-level fallback'. */
  readonly source: string;
}

export class TokenizerError extends Error {
  override name = 'TokenizerError';
}

export const FALLBACK_SOURCE = 'built-in byte-level fallback';

/** <unk>, <s>, </s> come first, so byte b has id b + FALLBACK_BYTE_OFFSET. */
const FALLBACK_SPECIALS = ['<unk>', '<s>', '</s>'] as const;
export const FALLBACK_BYTE_OFFSET = FALLBACK_SPECIALS.length;
const FALLBACK_MIN_VOCAB = FALLBACK_BYTE_OFFSET + 256;

/** Exercises normalizer, pre-tokenizer, model and decoder once at load, so a tokenizer that
 * constructs but cannot run fails here with the file's name rather than mid-request. */
const PROBE_TEXT = 'def f(x):\n\treturn x  # 统一码 é 😀';

/**
 * Loads modelDir/tokenizer.json. When the file is absent, returns byteLevelFallback(modelVocabSize);
 * the caller should warn (check `source`). A present but unreadable, corrupt or unsupported file, or
 * one whose ids do not fit the model's vocab_size, is a TokenizerError naming the file.
 */
export async function loadTokenizer(modelDir: string, modelVocabSize: number): Promise<Tokenizer> {
  checkModelVocabSize(modelVocabSize);
  const path = join(modelDir, 'tokenizer.json');
  let raw: string;
  try {
    raw = await readFile(path, 'utf8');
  } catch (err) {
    if (isNodeError(err) && err.code === 'ENOENT') return byteLevelFallback(modelVocabSize);
    throw new TokenizerError(`Cannot read ${path}: ${errorMessage(err)}.`);
  }
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch (err) {
    throw new TokenizerError(`${path} is not valid JSON (${errorMessage(err)}). Replace it with the model's original tokenizer.json.`);
  }
  return fromTokenizerJson(json, path, modelVocabSize);
}

/**
 * Byte-level tokenizer for checkpoints shipped without one (e.g. the random test fixtures): a real
 * tokenizer.json — ByteLevel pre-tokenizer and decoder, BPE over the 256 byte tokens with no merges —
 * loaded through the same library. Ids 0, 1, 2 = <unk>, <s>, </s>; byte b ↦ b + 3. Encoding adds no
 * BOS/EOS. Model ids ≥ 259 have no token and decode to nothing.
 */
export function byteLevelFallback(modelVocabSize: number): Tokenizer {
  checkModelVocabSize(modelVocabSize);
  if (modelVocabSize < FALLBACK_MIN_VOCAB) {
    throw new TokenizerError(
      `The ${FALLBACK_SOURCE} needs a model vocab_size of at least ${FALLBACK_MIN_VOCAB} (3 specials + 256 bytes), ` +
        `but the model has ${modelVocabSize}. Put the model's tokenizer.json in its directory.`,
    );
  }
  return fromTokenizerJson(fallbackTokenizerJson(), FALLBACK_SOURCE, modelVocabSize);
}

function fallbackTokenizerJson(): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  FALLBACK_SPECIALS.forEach((token, id) => (vocab[token] = id));
  byteToUnicode().forEach((char, byte) => (vocab[char] = byte + FALLBACK_BYTE_OFFSET));
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: FALLBACK_SPECIALS.map((content, id) => ({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: null,
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<unk>',
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: [],
    },
  };
}

/** GPT-2's byte → printable character table, the alphabet of ByteLevel BPE vocabularies. */
function byteToUnicode(): string[] {
  const chars: string[] = new Array(256);
  let shifted = 0;
  for (let byte = 0; byte < 256; byte++) {
    const printable = (byte >= 0x21 && byte <= 0x7e) || (byte >= 0xa1 && byte <= 0xac) || (byte >= 0xae && byte <= 0xff);
    chars[byte] = String.fromCharCode(printable ? byte : 256 + shifted++);
  }
  return chars;
}

function fromTokenizerJson(json: unknown, source: string, modelVocabSize: number): Tokenizer {
  if (!isRecord(json)) throw new TokenizerError(`${source}: expected a JSON object at the top level.`);
  if (!isRecord(json.model)) throw new TokenizerError(`${source}: no "model" object; this is not a Hugging Face tokenizer.json.`);
  const addedTokens: unknown = json.added_tokens ?? [];
  if (!Array.isArray(addedTokens)) throw new TokenizerError(`${source}: "added_tokens" must be an array.`);
  const specialTokens = new Map<string, number>();
  let addedMaxId = -1;
  for (const token of addedTokens) {
    if (!isRecord(token) || typeof token.content !== 'string' || !isTokenId(token.id)) {
      throw new TokenizerError(`${source}: malformed entry in "added_tokens": ${JSON.stringify(token)}.`);
    }
    if (token.special === true) specialTokens.set(token.content, token.id);
    addedMaxId = Math.max(addedMaxId, token.id);
  }
  // The library requires these keys to exist; older files omit the ones that are unused.
  const normalized = {
    ...json,
    added_tokens: addedTokens,
    normalizer: json.normalizer ?? null,
    pre_tokenizer: json.pre_tokenizer ?? null,
    post_processor: json.post_processor ?? null,
    decoder: json.decoder ?? null,
  };

  let hf: HfTokenizer;
  try {
    hf = new HfTokenizer(normalized, {});
  } catch (err) {
    throw new TokenizerError(`${source}: unsupported or malformed tokenizer (${errorMessage(err)}).`);
  }

  const maxId = Math.max(modelMaxId(json.model, source), addedMaxId);
  if (maxId < 0) throw new TokenizerError(`${source}: the vocabulary is empty.`);
  const vocabSize = maxId + 1;
  if (vocabSize > modelVocabSize) {
    throw new TokenizerError(
      `${source} has ${vocabSize} token ids (up to ${maxId}), but the model's vocab_size is ${modelVocabSize}: ` +
        'the tokenizer does not belong to this model. Use the tokenizer.json released with the checkpoint.',
    );
  }

  const tokenizer = new LibraryTokenizer(hf, vocabSize, specialTokens, source);
  try {
    tokenizer.decode(tokenizer.encode(PROBE_TEXT));
  } catch (err) {
    throw new TokenizerError(`${source}: the tokenizer fails on sample text (${errorMessage(err)}).`);
  }
  return tokenizer;
}

class LibraryTokenizer implements Tokenizer {
  constructor(
    private readonly hf: HfTokenizer,
    readonly vocabSize: number,
    readonly specialTokens: Map<string, number>,
    readonly source: string,
  ) {}

  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): number[] {
    const encoding = this.hf.encode(toWellFormed(text), { add_special_tokens: opts.addSpecialTokens ?? true });
    // The library yields undefined for a token missing from the vocab (e.g. a template's BOS).
    const missing = encoding.ids.findIndex((id: number) => !Number.isInteger(id));
    if (missing >= 0) {
      throw new TokenizerError(`${this.source}: encoding produced token ${JSON.stringify(encoding.tokens[missing])}, which has no id in the vocabulary.`);
    }
    return encoding.ids;
  }

  decode(ids: readonly number[], opts: { skipSpecialTokens?: boolean } = {}): string {
    const known = ids.filter((id) => Number.isInteger(id) && id >= 0 && this.hf.id_to_token(id) !== undefined);
    if (known.length === 0) return ''; // the library rejects an empty list
    // Clean-up would rewrite " ." as "." and the like: wrong for code, and it would let a later
    // token change text already streamed out.
    return this.hf.decode(known, { skip_special_tokens: opts.skipSpecialTokens ?? false, clean_up_tokenization_spaces: false });
  }

  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }
}

/** Highest id in a tokenizer model's vocab: a token → id object (BPE, WordPiece), or a list
 * whose index is the id (Unigram). */
function modelMaxId(model: Record<string, unknown>, source: string): number {
  const { vocab } = model;
  if (Array.isArray(vocab)) return vocab.length - 1;
  if (!isRecord(vocab)) throw new TokenizerError(`${source}: "model.vocab" is missing or not an object.`);
  let maxId = -1;
  for (const [token, id] of Object.entries(vocab)) {
    if (!isTokenId(id)) throw new TokenizerError(`${source}: token ${JSON.stringify(token)} has invalid id ${JSON.stringify(id)}.`);
    maxId = Math.max(maxId, id);
  }
  return maxId;
}

/** Replaces lone UTF-16 surrogates with U+FFFD (String#toWellFormed, which ES2023 typings lack). */
function toWellFormed(text: string): string {
  return text.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD');
}

function checkModelVocabSize(modelVocabSize: number): void {
  if (!Number.isSafeInteger(modelVocabSize) || modelVocabSize <= 0) {
    throw new RangeError(`modelVocabSize must be a positive integer, got ${modelVocabSize}`);
  }
}

function isTokenId(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isNodeError(err: unknown): err is NodeJS.ErrnoException {
  return err instanceof Error && 'code' in err;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
