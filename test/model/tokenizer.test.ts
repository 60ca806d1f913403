import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { byteLevelFallback, loadTokenizer, TokenizerError, type Tokenizer } from '../../engine/model/tokenizer.js';

const ROUND_TRIP_SAMPLES: Record<string, string> = {
  empty: '',
  ascii: 'Hello, world! The quick brown fox.',
  code: 'def main(argv):\n\tif not argv:\n\t\treturn 1  # tab-indented\r\n    x = {"a": [1, 2]}\n\n',
  whitespace: '   leading and trailing   \n\n\n',
  // Tokenizer "clean-up" would rewrite these (" ," → ","): code must come back verbatim.
  spacing: "f(a , b) . c ! d ? it 's don 't",
  cjk: '统一码 日本語のテキスト 한국어',
  emoji: '😀 👍🏽 👨‍👩‍👧 🇫🇷 𝔘𝔫𝔦𝔠𝔬𝔡𝔢',
  combining: 'e\u0301 a\u0308 n\u0303 Z\u0351\u0360\u0489 \u0915\u094D\u0937',
  controls: 'nul\u0000 del\u007f bom\uFEFF nbsp\u00a0 ls\u2028',
};

const tempDirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'panorama-tokenizer-'));
  tempDirs.push(dir);
  return dir;
}
after(() => tempDirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

function modelDirWith(tokenizerJson: string): string {
  const dir = tempDir();
  writeFileSync(join(dir, 'tokenizer.json'), tokenizerJson);
  return dir;
}

function utf8(text: string): number[] {
  return [...new TextEncoder().encode(text)];
}

/** GPT-2's printable stand-ins for bytes, written out independently of the engine's copy. */
function byteChars(): string[] {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let shifted = 0;
  return Array.from({ length: 256 }, (_, b) => String.fromCharCode(printable(b) ? b : 256 + shifted++));
}

const SPECIALS = ['<s>', '</s>', '<|file|>', '<|fim_prefix|>', '<|fim_suffix|>', '<|fim_middle|>'];

/** A small but real byte-level BPE tokenizer.json: 256 byte tokens, merges, added special tokens and a
 * post-processor that prepends <s>. */
function smallBpeTokenizerJson(): { json: Record<string, unknown>; ids: Record<string, number> } {
  const vocab: Record<string, number> = {};
  byteChars().forEach((char, byte) => (vocab[char] = byte));
  const merges: [string, string][] = [
    ['Ġ', 't'],
    ['h', 'e'],
    ['Ġt', 'he'],
    ['Ġ', 'Ġ'],
    ['ĠĠ', 'ĠĠ'],
    ['d', 'e'],
    ['de', 'f'],
    ['r', 'e'],
    ['t', 'u'],
    ['r', 'n'],
    ['re', 'tu'],
    ['retu', 'rn'],
    ['Ġ', 'return'],
  ];
  let nextId = 256;
  for (const [a, b] of merges) vocab[a + b] = nextId++;
  const addedTokens = SPECIALS.map((content) => ({
    id: nextId++,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  const json = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<s>': { id: '<s>', ids: [addedTokens[0].id], tokens: ['<s>'] } },
    },
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: merges.map(([a, b]) => `${a} ${b}`),
    },
  };
  const ids = { ...vocab };
  for (const token of addedTokens) ids[token.content] = token.id;
  return { json, ids };
}

function assertRoundTrips(tokenizer: Tokenizer, opts: { addSpecialTokens?: boolean } = {}): void {
  for (const [name, text] of Object.entries(ROUND_TRIP_SAMPLES)) {
    const ids = tokenizer.encode(text, opts);
    assert.equal(tokenizer.decode(ids, { skipSpecialTokens: true }), text, `round trip of ${name}`);
  }
}

describe('byteLevelFallback', () => {
  const tokenizer = byteLevelFallback(512);

  test('maps byte b to id b + 3 and reserves 0..2 for <unk>, <s>, </s>', () => {
    assert.deepEqual(tokenizer.encode('A'), [65 + 3]);
    assert.deepEqual(tokenizer.encode('\u0000\u00ff'), [3, 0xc3 + 3, 0xbf + 3]);
    for (const text of Object.values(ROUND_TRIP_SAMPLES)) {
      assert.deepEqual(
        tokenizer.encode(text),
        utf8(text).map((b) => b + 3),
      );
    }
    assert.deepEqual(
      [...tokenizer.specialTokens],
      [
        ['<unk>', 0],
        ['<s>', 1],
        ['</s>', 2],
      ],
    );
    assert.equal(tokenizer.tokenToId('<s>'), 1);
    assert.equal(tokenizer.vocabSize, 259);
    assert.equal(tokenizer.source, 'built-in byte-level fallback');
  });

  test('every byte value round-trips through its own id', () => {
    const allBytes = Array.from({ length: 256 }, (_, b) => b + 3);
    const decoded = tokenizer.decode(allBytes);
    // Bytes 0x80..0xff alone are invalid UTF-8; the ASCII half must come back exactly.
    assert.equal(decoded.slice(0, 128), Array.from({ length: 128 }, (_, b) => String.fromCharCode(b)).join(''));
  });

  test('round-trips ASCII, code, CJK, emoji, combining marks and the empty string', () => {
    assertRoundTrips(tokenizer);
  });

  test('decodes specials unless skipped, and ids without a token to nothing', () => {
    assert.equal(tokenizer.decode([1, 68, 2]), '<s>A</s>');
    assert.equal(tokenizer.decode([1, 68, 2], { skipSpecialTokens: true }), 'A');
    assert.equal(tokenizer.decode([300, 68, 511, 259]), 'A');
    assert.equal(tokenizer.decode([]), '');
  });

  test('encodes lone surrogates as U+FFFD instead of throwing', () => {
    assert.equal(tokenizer.decode(tokenizer.encode('a\uD800b')), 'a\uFFFDb');
    assert.equal(tokenizer.decode(tokenizer.encode('\uDC00x\uD83D')), '\uFFFDx\uFFFD');
    assert.deepEqual(
      tokenizer.encode('\uD800'),
      utf8('\uFFFD').map((b) => b + 3),
    );
    assert.equal(tokenizer.decode(tokenizer.encode('ok \uD83D\uDE00')), 'ok 😀');
  });

  test('needs a model vocab of at least 259', () => {
    assert.equal(byteLevelFallback(259).vocabSize, 259);
    assert.throws(
      () => byteLevelFallback(258),
      (err: Error) => err instanceof TokenizerError && /259/.test(err.message) && /258/.test(err.message),
    );
  });
});

describe('loadTokenizer', () => {
  test('returns the byte-level fallback when the model has no tokenizer.json', async () => {
    const tokenizer = await loadTokenizer(tempDir(), 512);
    assert.equal(tokenizer.source, 'built-in byte-level fallback');
    assert.deepEqual(tokenizer.encode('A'), [68]);
  });

  test('loads a BPE tokenizer.json: merges apply, specials encode to their ids, text round-trips', async () => {
    const { json, ids: vocab } = smallBpeTokenizerJson();
    const dir = modelDirWith(JSON.stringify(json));
    const tokenizer = await loadTokenizer(dir, 512);
    assert.equal(tokenizer.source, join(dir, 'tokenizer.json'));
    assert.equal(tokenizer.vocabSize, 256 + 13 + SPECIALS.length);

    for (const special of SPECIALS) {
      assert.equal(tokenizer.specialTokens.get(special), vocab[special], special);
      assert.equal(tokenizer.tokenToId(special), vocab[special], special);
    }
    assert.deepEqual(tokenizer.encode(' the', { addSpecialTokens: false }), [vocab['Ġthe']]);
    assert.deepEqual(tokenizer.encode('def', { addSpecialTokens: false }), [vocab['def']]);
    assert.deepEqual(tokenizer.encode('the', { addSpecialTokens: false }), [vocab['t'], vocab['he']]);
    // "\n   " + " return" after the ByteLevel split; lower-ranked merges apply first.
    assert.deepEqual(tokenizer.encode('\n    return', { addSpecialTokens: false }), [vocab['Ċ'], vocab['ĠĠ'], vocab['Ġ'], vocab['Ġreturn']]);

    const fim = tokenizer.encode('<|fim_prefix|>def f():<|fim_suffix|>\n<|fim_middle|>', { addSpecialTokens: false });
    assert.equal(fim[0], vocab['<|fim_prefix|>']);
    assert.equal(fim[1], vocab['def']);
    assert.ok(fim.includes(vocab['<|fim_suffix|>']));
    assert.equal(fim.at(-1), vocab['<|fim_middle|>']);
    assert.equal(tokenizer.decode(fim), '<|fim_prefix|>def f():<|fim_suffix|>\n<|fim_middle|>');
    assert.equal(tokenizer.decode(fim, { skipSpecialTokens: true }), 'def f():\n');

    // The post-processor prepends <s> unless asked not to.
    assert.deepEqual(tokenizer.encode(' the'), [vocab['<s>'], vocab['Ġthe']]);
    assert.equal(tokenizer.decode(tokenizer.encode(' the')), '<s> the');
    assertRoundTrips(tokenizer);
    assertRoundTrips(tokenizer, { addSpecialTokens: false });
    assert.equal(tokenizer.decode(tokenizer.encode('x\uDFFF', { addSpecialTokens: false })), 'x\uFFFD');
  });

  test('rejects a tokenizer.json that is not JSON, naming the file', async () => {
    const dir = modelDirWith('{"version": "1.0", "model": {');
    await assert.rejects(
      loadTokenizer(dir, 512),
      (err: Error) => err instanceof TokenizerError && err.message.includes(join(dir, 'tokenizer.json')) && /not valid JSON/.test(err.message),
    );
  });

  test('rejects an unsupported or malformed tokenizer.json, naming the file and the problem', async () => {
    const cases: [string, unknown, RegExp][] = [
      ['no model', { version: '1.0', added_tokens: [] }, /no "model"/],
      ['unknown model type', { added_tokens: [], model: { type: 'Bogus' } }, /unsupported or malformed.*Bogus/],
      ['unknown pre-tokenizer', { ...smallBpeTokenizerJson().json, pre_tokenizer: { type: 'Nonsense' } }, /Nonsense/],
      ['negative id', { ...smallBpeTokenizerJson().json, model: { type: 'BPE', vocab: { a: -1 }, merges: [] } }, /invalid id -1/],
      ['added token without content', { ...smallBpeTokenizerJson().json, added_tokens: [{ id: 3 }] }, /added_tokens/],
      ['top-level array', [1, 2, 3], /JSON object/],
    ];
    for (const [name, json, problem] of cases) {
      const dir = modelDirWith(JSON.stringify(json));
      await assert.rejects(loadTokenizer(dir, 512), (err: Error) => {
        assert.ok(err instanceof TokenizerError, `${name}: ${err}`);
        assert.ok(err.message.includes(join(dir, 'tokenizer.json')), `${name}: ${err.message}`);
        assert.match(err.message, problem, name);
        return true;
      });
    }
  });

  test('rejects an unreadable tokenizer.json', async () => {
    const dir = tempDir();
    mkdirSync(join(dir, 'tokenizer.json'));
    await assert.rejects(loadTokenizer(dir, 512), (err: Error) => err instanceof TokenizerError && /Cannot read/.test(err.message));
  });

  test('rejects a tokenizer whose ids do not fit the model vocab, naming both sizes', async () => {
    const { json } = smallBpeTokenizerJson();
    await assert.rejects(
      loadTokenizer(modelDirWith(JSON.stringify(json)), 200),
      (err: Error) => err instanceof TokenizerError && /275 token ids/.test(err.message) && /vocab_size is 200/.test(err.message),
    );
    // An added token past the model's vocab is caught too, not only the base vocab.
    const withFarSpecial = { ...json, added_tokens: [{ id: 600, content: '<|far|>', special: true }] };
    await assert.rejects(
      loadTokenizer(modelDirWith(JSON.stringify(withFarSpecial)), 512),
      (err: Error) => err instanceof TokenizerError && /601 token ids/.test(err.message) && /vocab_size is 512/.test(err.message),
    );
    // Exactly filling the model vocab is fine.
    assert.equal((await loadTokenizer(modelDirWith(JSON.stringify(json)), 275)).vocabSize, 275);
  });
});
