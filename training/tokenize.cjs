// Encode text files with the engine's JS tokenizer library (@huggingface/tokenizers).
// usage: node training/tokenize.cjs MODEL_DIR FILE...   -> one JSON array of id arrays on stdout
const {Tokenizer} = require('@huggingface/tokenizers');
const fs = require('fs');
const d = process.argv[2];
const tok = new Tokenizer(JSON.parse(fs.readFileSync(d + '/tokenizer.json', 'utf8')),
                          JSON.parse(fs.readFileSync(d + '/tokenizer_config.json', 'utf8')));
console.log(JSON.stringify(process.argv.slice(3).map(f => tok.encode(fs.readFileSync(f, 'utf8'), {add_special_tokens: false}).ids)));
