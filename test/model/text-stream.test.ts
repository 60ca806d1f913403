import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { byteLevelFallback, loadTokenizer, type Tokenizer } from '../../engine/model/tokenizer.js';
import { StopMatcher, TextStream } from '../../engine/model/text-stream.js';

const tempDirs: string[] = [];
after(() => tempDirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

async function tokenizerFromJson(json: object, modelVocabSize: number): Promise<Tokenizer> {
  const dir = mkdtempSync(join(tmpdir(), 'panorama-text-stream-'));
  tempDirs.push(dir);
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(json));
  return loadTokenizer(dir, modelVocabSize);
}

function byteChars(): string[] {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let shifted = 0;
  return Array.from({ length: 256 }, (_, b) => String.fromCharCode(printable(b) ? b : 256 + shifted++));
}

/** Byte-level BPE whose merges cross character boundaries, so tokens begin and end mid-character:
 * "é" = C3 A9 and "统" = E7 BB 9F are split as [C3] [A9 x] and [E7 BB] [9F E4] …. */
function crossBoundaryBpeJson(): object {
  const chars = byteChars();
  const vocab: Record<string, number> = {};
  chars.forEach((char, byte) => (vocab[char] = byte));
  const pairs: [number, number][] = [
    [0xa9, 0x78],
    [0xe7, 0xbb],
    [0x9f, 0xe4],
    [0x9f, 0x98],
    [0xf0, 0x9f],
    [0x98, 0x80],
  ];
  const merges = pairs.map(([a, b]) => `${chars[a]} ${chars[b]}`);
  pairs.forEach(([a, b], n) => (vocab[chars[a] + chars[b]] = 256 + n));
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false };
  return {
    added_tokens: [{ id: 300, content: '<s>', special: true }],
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: null,
    decoder: byteLevel,
    model: { type: 'BPE', vocab, merges, unk_token: null },
  };
}

/** SentencePiece-style (Llama / MiniCPM): ▁ for spaces, byte fallback, and a decoder that strips the
 * first leading space, an effect tied to the first token decoded. */
function sentencePieceJson(): object {
  const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 };
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = 3 + b;
  const pieces = ['▁', 'a', 'b', 'c', 'e', 'h', 't', 'x', '▁t', 'he', '▁the', '▁a', 'ab', '▁ab', '统', '一'];
  pieces.forEach((piece, n) => (vocab[piece] = 259 + n));
  const merges = ['▁ t', 'h e', '▁t he', '▁ a', 'a b', '▁ ab'];
  return {
    added_tokens: ['<unk>', '<s>', '</s>'].map((content, id) => ({ id, content, special: true })),
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'Prepend', prepend: '▁' },
        { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
      ],
    },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: {
      type: 'Sequence',
      decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }],
    },
    model: { type: 'BPE', vocab, merges, unk_token: '<unk>', byte_fallback: true, fuse_unk: true },
  };
}

function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), state | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** Random valid text mixing 1-, 2-, 3- and 4-byte UTF-8 characters and spaces. */
function randomText(random: () => number, length: number): string {
  const ranges: [number, number][] = [
    [0x20, 0x7e],
    [0x20, 0x20],
    [0xa0, 0x7ff],
    [0x4e00, 0x9fff],
    [0xe000, 0xfefe],
    [0x1f300, 0x1faff],
    [0x10000, 0x10ffff],
  ];
  let text = '';
  for (let n = 0; n < length; n++) {
    const [lo, hi] = ranges[Math.floor(random() * ranges.length)];
    text += String.fromCodePoint(lo + Math.floor(random() * (hi - lo + 1)));
  }
  return text;
}

function streamAll(tokenizer: Tokenizer, ids: readonly number[], opts?: { skipSpecialTokens?: boolean }): { deltas: string[]; stream: TextStream } {
  const stream = new TextStream(tokenizer, opts);
  const deltas = ids.map((id) => stream.push(id));
  deltas.push(stream.flush());
  return { deltas, stream };
}

describe('TextStream', () => {
  const fallback = byteLevelFallback(512);

  test('holds back an emoji split across byte tokens until its last byte arrives', () => {
    const ids = fallback.encode('a😀b');
    assert.equal(ids.length, 6);
    const { deltas, stream } = streamAll(fallback, ids);
    assert.deepEqual(deltas, ['a', '', '', '', '😀', 'b', '']);
    assert.equal(stream.text, 'a😀b');
    assert.equal(deltas.join(''), fallback.decode(ids));
  });

  test('flush emits an incomplete trailing character as U+FFFD, like a full decode', () => {
    const ids = fallback.encode('ok😀').slice(0, -2);
    const stream = new TextStream(fallback);
    assert.equal(ids.map((id) => stream.push(id)).join(''), 'ok');
    assert.equal(stream.flush(), '\uFFFD');
    assert.equal(stream.text, fallback.decode(ids));
    assert.equal(stream.flush(), '');
  });

  test('streams long random valid UTF-8 exactly, with no U+FFFD in any delta', () => {
    const random = mulberry32(7);
    for (let round = 0; round < 5; round++) {
      const text = randomText(random, 800);
      const ids = fallback.encode(text);
      const { deltas, stream } = streamAll(fallback, ids);
      assert.ok(
        deltas.every((delta) => !delta.includes('\uFFFD')),
        `round ${round}`,
      );
      assert.equal(stream.text, text, `round ${round}`);
      assert.equal(deltas.join(''), fallback.decode(ids));
    }
  });

  test('handles tokens that begin and end mid-character, across window slides', async () => {
    const tokenizer = await tokenizerFromJson(crossBoundaryBpeJson(), 512);
    const text = 'éxé统一😀😀统x '.repeat(40) + randomText(mulberry32(3), 400);
    const ids = tokenizer.encode(text);
    assert.ok(
      ids.some((id) => id >= 256),
      'the cross-boundary merges must apply',
    );
    const { deltas, stream } = streamAll(tokenizer, ids);
    assert.ok(deltas.every((delta) => !delta.includes('\uFFFD')));
    assert.equal(stream.text, text);
  });

  test('matches a full decode for a SentencePiece-style tokenizer (byte fallback, stripped first space)', async () => {
    const tokenizer = await tokenizerFromJson(sentencePieceJson(), 512);
    const text = ' the ab the  統 统一 😀 x\n\tthe'.repeat(30) + randomText(mulberry32(11), 300);
    const ids = tokenizer.encode(text);
    assert.equal(ids[0], 1, 'starts with <s>');
    assert.equal(tokenizer.decode(ids, { skipSpecialTokens: true }), text);

    const skipped = streamAll(tokenizer, ids, { skipSpecialTokens: true });
    assert.equal(skipped.stream.text, text);
    const kept = streamAll(tokenizer, ids);
    assert.equal(kept.stream.text, tokenizer.decode(ids));
    assert.ok(kept.stream.text.startsWith('<s>'));
  });

  test('decodes a bounded window per token, not the whole text', () => {
    let longestDecode = 0;
    const counting: Tokenizer = {
      ...fallback,
      encode: (text, opts) => fallback.encode(text, opts),
      tokenToId: (token) => fallback.tokenToId(token),
      decode(ids, opts) {
        longestDecode = Math.max(longestDecode, ids.length);
        return fallback.decode(ids, opts);
      },
    };
    const text = randomText(mulberry32(5), 3000);
    const ids = fallback.encode(text);
    const { stream } = streamAll(counting, ids);
    assert.equal(stream.text, text);
    assert.ok(ids.length > 5000);
    assert.ok(longestDecode <= 16, `longest decode was ${longestDecode} tokens`);
  });
});

function runStops(stops: string[], deltas: string[]): { emitted: string; stoppedAt: number } {
  const matcher = new StopMatcher(stops);
  let emitted = '';
  let stoppedAt = -1;
  deltas.forEach((delta, n) => {
    const { emit, stopped } = matcher.push(delta);
    emitted += emit;
    if (stopped && stoppedAt < 0) stoppedAt = n;
  });
  return { emitted: emitted + matcher.flush(), stoppedAt };
}

/** Reference on the whole text: cut before the stop string that completes first (longest on a tie). */
function cutAtFirstStop(text: string, stops: string[]): string {
  let best: { at: number; end: number } | undefined;
  for (const stop of stops) {
    const at = text.indexOf(stop);
    if (at < 0) continue;
    const end = at + stop.length;
    if (!best || end < best.end || (end === best.end && at < best.at)) best = { at, end };
  }
  return best ? text.slice(0, best.at) : text;
}

describe('StopMatcher', () => {
  test('finds a stop string split across deltas and drops it and everything after', () => {
    const matcher = new StopMatcher(['</end>']);
    assert.deepEqual(matcher.push('hello </e'), { emit: 'hello ', stopped: false });
    assert.deepEqual(matcher.push('nd> more'), { emit: '', stopped: true });
    assert.deepEqual(matcher.push('after'), { emit: '', stopped: true });
    assert.equal(matcher.flush(), '');
  });

  test('stops on a stop string at the very start', () => {
    assert.deepEqual(new StopMatcher(['###']).push('###x'), { emit: '', stopped: true });
    assert.deepEqual(runStops(['\n'], ['\n', 'a']), { emitted: '', stoppedAt: 0 });
  });

  test('emits a held-back prefix once it turns out not to be a stop', () => {
    const matcher = new StopMatcher(['STOP']);
    assert.deepEqual(matcher.push('aST'), { emit: 'a', stopped: false });
    assert.deepEqual(matcher.push('O'), { emit: '', stopped: false });
    assert.deepEqual(matcher.push('Xb'), { emit: 'STOXb', stopped: false });
    assert.deepEqual(matcher.push('S'), { emit: '', stopped: false });
    assert.equal(matcher.flush(), 'S');
  });

  test('watches several stops at once', () => {
    assert.deepEqual(runStops(['\n\n', '```'], ['code``', '`\n\nrest']), { emitted: 'code', stoppedAt: 1 });
    assert.deepEqual(runStops(['\n\n', '```'], ['x\n', '\ny```']), { emitted: 'x', stoppedAt: 1 });
    assert.deepEqual(runStops(['\n\n', '```'], ['no stop here\n', '`` `']), { emitted: 'no stop here\n`` `', stoppedAt: -1 });
  });

  test('overlapping stops ("ab", "b"): the first to complete wins, the longer on a tie', () => {
    assert.deepEqual(runStops(['ab', 'b'], ['a', 'b']), { emitted: '', stoppedAt: 1 });
    assert.deepEqual(runStops(['ab', 'b'], ['xb']), { emitted: 'x', stoppedAt: 0 });
    assert.deepEqual(runStops(['ab', 'b'], ['aab']), { emitted: 'a', stoppedAt: 0 });
    assert.deepEqual(runStops(['b', 'ab'], ['a', 'a', 'c', 'ab']), { emitted: 'aac', stoppedAt: 3 });
    assert.deepEqual(runStops(['abcd', 'bc'], ['abcd']), { emitted: 'a', stoppedAt: 0 });
  });

  test('ignores empty stop strings', () => {
    assert.deepEqual(runStops(['', 'zz'], ['abc', 'z']), { emitted: 'abcz', stoppedAt: -1 });
  });

  test('gives the same result however the text is split into deltas', () => {
    const random = mulberry32(42);
    const stopSets = [['ab', 'b'], ['abcd', 'bc', 'cab'], ['aaa'], ['c\n', '\n\n'], ['😀x', 'x😀']];
    for (let round = 0; round < 400; round++) {
      const stops = stopSets[round % stopSets.length];
      const alphabet = ['a', 'b', 'c', 'd', '\n', '😀', 'x'];
      let text = '';
      for (let n = 0; n < 24; n++) text += alphabet[Math.floor(random() * (round % 2 ? 4 : alphabet.length))];
      const deltas: string[] = [];
      for (let at = 0; at < text.length;) {
        const size = Math.floor(random() * 5);
        deltas.push(text.slice(at, at + size));
        at += size;
      }
      assert.equal(runStops(stops, deltas).emitted, cutAtFirstStop(text, stops), `${JSON.stringify(stops)} over ${JSON.stringify(deltas)}`);
    }
  });
});
