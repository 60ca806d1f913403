// Token healing on the shipped tokenizer: the prompt's last token is taken back when it
// is text, and the constraint lets through only tokens along the text taken back.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { loadTokenizer, type Tokenizer } from '../../engine/model/tokenizer.js';
import { readFileSync } from 'node:fs';
import { StartsWith, healPrompt, tokenTexts } from '../../engine/model/token-healing.js';

const MODEL = path.resolve(__dirname, '../../models/panorama-code-13m');
let tokenizer: Tokenizer;

before(async () => {
  const config = JSON.parse(readFileSync(path.join(MODEL, 'config.json'), 'utf8')) as { vocab_size: number };
  tokenizer = await loadTokenizer(MODEL, config.vocab_size);
});

const ids = (text: string) => tokenizer.encode(text, { addSpecialTokens: false });

test('the last token of a prompt cut after a space is taken back; a special token or a one-token prompt is kept', () => {
  const prompt = ids('    return ');
  const healed = healPrompt(prompt, tokenizer);
  assert.equal(healed.healed, ' ');
  assert.deepEqual(healed.ids, prompt.slice(0, -1));
  const word = healPrompt(ids('x = normalize_'), tokenizer);
  assert.ok(word.healed.length > 0 && 'x = normalize_'.endsWith(word.healed), word.healed);
  assert.equal(tokenizer.decode(word.ids) + word.healed, 'x = normalize_');
  const special = tokenizer.tokenToId('<|fim_prefix|>')!;
  assert.deepEqual(healPrompt([...ids('a'), special], tokenizer), { ids: [...ids('a'), special], healed: '' });
  assert.deepEqual(healPrompt(ids('a'), tokenizer), { ids: ids('a'), healed: '' });
});

test('StartsWith allows only tokens along the healed text, then anything', () => {
  const texts = tokenTexts(tokenizer);
  const constraint = new StartsWith(' ', tokenizer);
  const logits = new Float32Array(texts.length).fill(1);
  constraint.mask(logits, []);
  const allowed = [...logits.keys()].filter((id) => logits[id] > -Infinity);
  assert.ok(allowed.length > 100, `${allowed.length} tokens start with a space`);
  assert.ok(allowed.every((id) => texts[id].startsWith(' ')));
  const strip = ids(' strip');
  assert.equal(strip.length, 1, 'one token spans the cut');
  assert.ok(logits[strip[0]] > -Infinity);
  assert.equal(logits[ids('strip')[0]], -Infinity);
  // A two-token healed text: the first may be a piece of it.
  const two = new StartsWith('_name', tokenizer);
  const after = new Float32Array(texts.length).fill(1);
  two.mask(after, ids('_'));
  assert.ok([...after.keys()].filter((id) => after[id] > -Infinity).every((id) => texts[id].startsWith('name') || 'name'.startsWith(texts[id])));
  // Once written, nothing is masked.
  const free = new Float32Array(texts.length).fill(1);
  constraint.mask(free, strip);
  assert.ok(free.every((x) => x === 1));
});
