// `npm start` end to end: build, package, install into a code-server profile, open
// a workspace, print the URL — which must answer 200 — and exit on
// --exit-when-ready. A fresh profile in a temp folder keeps the user's .e2e/serve
// untouched. Part of the e2e run: packaging alone takes 20–30 s on 2 cores.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { repoRoot } from '../../scripts/code-server.js';

test('npm start opens a workspace in code-server and prints a URL that answers 200', { timeout: 10 * 60_000 }, async () => {
  const profile = mkdtempSync(path.join(tmpdir(), 'panorama-start-'));
  const workspace = path.join(repoRoot, 'test', 'e2e', 'fixture-workspace');
  const started = Date.now();
  try {
    const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/start.ts', '--exit-when-ready', '--port', '0', '--profile', profile, workspace], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    assert.equal(code, 0, output.slice(-3_000));
    const url = /Panorama in VS Code: (http:\/\/127\.0\.0\.1:\d+\/\?folder=\S+)/.exec(output)?.[1];
    assert.ok(url, `a URL was printed:\n${output.slice(-2_000)}`);
    assert.equal(decodeURIComponent(new URL(url).searchParams.get('folder') ?? ''), workspace);
    // the extension went into the profile
    assert.match(output, /install the VSIX into the code-server profile/);
    // it has stopped: nothing answers there any more
    assert.equal(
      await fetch(url).then(
        () => 'answered',
        () => 'refused',
      ),
      'refused',
    );
    console.log(`# npm start → URL answered 200 in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } finally {
    rmSync(profile, { recursive: true, force: true });
  }
});
