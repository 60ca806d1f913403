const {Tokenizer} = require('@huggingface/tokenizers');
const fs = require('fs');
const dir = process.argv[2];
const tj = JSON.parse(fs.readFileSync(dir + '/tokenizer.json', 'utf8'));
const tc = JSON.parse(fs.readFileSync(dir + '/tokenizer_config.json', 'utf8'));
const tok = new Tokenizer(tj, tc);
const probe = JSON.parse(fs.readFileSync(process.argv[3], 'utf8'));
let ok = true;
for (const p of probe) {
  const ids = tok.encode(p.text, {add_special_tokens: false}).ids;
  const same = JSON.stringify(ids) === JSON.stringify(p.ids);
  const dec = tok.decode(ids, {skip_special_tokens: false});
  console.log(same ? 'ids match' : 'IDS DIFFER', dec === p.text ? 'roundtrip ok' : 'ROUNDTRIP DIFF', ids.length);
  if (!same) { console.log(JSON.stringify(ids)); console.log(JSON.stringify(p.ids)); }
  ok = ok && same && dec === p.text;
}
// round-trip on real source files
for (const f of ['engine/model/sala-model.ts', 'training/model.py', 'node_modules/typescript/lib/lib.es5.d.ts']) {
  const t = fs.readFileSync(f, 'utf8');
  const ids = tok.encode(t, {add_special_tokens: false}).ids;
  const back = tok.decode(ids, {skip_special_tokens: false});
  console.log(f, ids.length, 'tokens', (t.length / ids.length).toFixed(2), 'chars/token', back === t ? 'roundtrip ok' : 'ROUNDTRIP DIFF');
  ok = ok && back === t;
}
console.log(ok ? 'ALL OK' : 'FAIL');
