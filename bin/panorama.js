#!/usr/bin/env node
// The `panorama` command: the bundled engine CLI (built by `npm install` / `npm run build`).
require('../dist/panorama.js').run(process.argv.slice(2));
