// Latency of the remote backend against a real `panorama serve` on this machine:
// node --import tsx scripts/remote-latency.ts [--workspace DIR] [--context-chars N] [--requests N] [--model DIR]
// Starts the server over the workspace (default: engine/index) with the shipped model,
// then asks through the extension's remote backend with the workspace prefix of
// --context-chars (and with none, 0, as for a server that holds the workspace itself):
// first-token latency, total time, prompt tokens. Prints one line per request.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { CancellationTokenSource } from 'vscode-jsonrpc/node';
import { RemoteBackend, type RemoteRequestInfo } from '../extension/remote/remote-backend.js';
import { RemoteClient } from '../extension/remote/remote-client.js';
import { WorkspacePrefix } from '../extension/remote/workspace-prefix.js';
import { repoRoot } from './code-server.js';

const { values } = parseArgs({
  options: {
    workspace: { type: 'string', default: path.join(repoRoot, 'engine', 'index') },
    'context-chars': { type: 'string', default: '20000' },
    requests: { type: 'string', default: '3' },
    model: { type: 'string' },
  },
});
const workspace = path.resolve(values.workspace);
const key = 'remote-latency-0123456789abcdef';
const questions = ['Which file decides what is ignored?', 'Where is the layout order defined?', 'What does the watcher do after a change?', 'How are symlinks handled?'];

async function main(): Promise<void> {
  const store = mkdtempSync(path.join(tmpdir(), 'panorama-remote-latency-'));
  const server = spawn(
    process.execPath,
    [path.join(repoRoot, 'bin', 'panorama.js'), 'serve', workspace, '--port', '0', '--store', store, '--api-key', key, ...(values.model ? ['--model', values.model] : [])],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  server.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  try {
    let origin: string | undefined;
    for (let i = 0; i < 1_200 && origin === undefined; i++) {
      origin = /serving (http:\/\/127\.0\.0\.1:\d+)/.exec(stderr)?.[1];
      if (origin === undefined) await new Promise((resolve) => setTimeout(resolve, 250));
    }
    if (origin === undefined) throw new Error(`the server did not start:\n${stderr.slice(-2_000)}`);
    const indexStarted = Date.now();
    while ((await fetch(`${origin}/health`)).status !== 200) await new Promise((resolve) => setTimeout(resolve, 500));
    console.log(`server ready (workspace indexed in ${((Date.now() - indexStarted) / 1000).toFixed(1)} s)`);

    for (const contextChars of [Number(values['context-chars']), 0]) {
      const done: RemoteRequestInfo[] = [];
      const backend = new RemoteBackend({
        client: new RemoteClient({ baseUrl: `${origin}/v1`, apiKey: key }),
        prefix: new WorkspacePrefix(workspace, { budgetChars: contextChars }),
        onRequestDone: (info) => done.push(info),
      });
      for (let i = 0; i < Number(values.requests); i++) {
        await backend.ask({ requestId: `r${i}`, question: questions[i % questions.length], maxTokens: 32 }, () => undefined, new CancellationTokenSource().token);
        const info = done[done.length - 1];
        console.log(
          `context ${contextChars.toLocaleString('en')} chars (${info.prefix.files} files, ${info.prefix.chars.toLocaleString('en')} sent): ` +
            `first token ${info.firstTokenMs?.toFixed(0)} ms, total ${info.totalMs.toFixed(0)} ms, ${info.usage?.promptTokens ?? '?'} prompt tokens`,
        );
      }
    }
  } finally {
    server.kill('SIGTERM');
    await new Promise((resolve) => server.once('exit', resolve));
    rmSync(store, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : String(error));
  process.exit(1);
});
