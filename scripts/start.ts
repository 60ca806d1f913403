// `npm start`: Panorama in VS Code. Builds the extension, packages the VSIX, installs
// it into a code-server profile kept in .e2e/serve/ and opens a workspace (this
// repository unless a folder is given), prints the URL and runs until Ctrl-C.
//
//   npm start                      this repository, http://127.0.0.1:8123
//   npm start -- ~/src/project     another folder
//   npm start -- --port 9000       another port (0: any free one)
//   npm start -- --cli [DIR]       the terminal flow instead: panorama ask over engine/model (or DIR)
//
// --profile DIR keeps the code-server profile elsewhere; --exit-when-ready stops as soon
// as the workbench URL answers 200 (what test/e2e/start.test.ts runs).

import { spawn } from 'node:child_process';
import { existsSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { CodeServerProfile, e2eRoot, freePort, installTools, packageVsix, repoRoot, step } from './code-server.js';

const CLI_QUESTION = 'Where is the InfLLM-V2 block selection graph built?';
const DEFAULT_PORT = 8123;

/** A quiet profile: no welcome page, tips, telemetry or update checks, no built-in AI panel. */
const DEFAULT_SETTINGS = {
  'workbench.startupEditor': 'none',
  'workbench.tips.enabled': false,
  'telemetry.telemetryLevel': 'off',
  'update.mode': 'none',
  'extensions.autoCheckUpdates': false,
  'chat.disableAIFeatures': true,
  'workbench.secondarySideBar.defaultVisibility': 'hidden',
};

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      cli: { type: 'boolean', default: false },
      port: { type: 'string' },
      profile: { type: 'string' },
      'exit-when-ready': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log('usage: npm start -- [DIR] [--port N] [--profile DIR] [--exit-when-ready] | --cli [DIR]');
    return 0;
  }
  if (positionals.length > 1) throw new UsageError(`one folder at most, got ${positionals.length}: ${positionals.join(' ')}`);
  if (values.cli) return cli(positionals[0] ?? 'engine/model');

  const workspace = path.resolve(positionals[0] ?? repoRoot);
  if (!existsSync(workspace) || !statSync(workspace).isDirectory()) throw new UsageError(`${workspace} is not a folder`);
  const port = values.port === undefined ? DEFAULT_PORT : Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65_535) throw new UsageError(`--port must be a port number, got "${values.port}"`);

  installTools();
  const vsix = path.join(e2eRoot, 'panorama.vsix');
  packageVsix(vsix);
  const profile = new CodeServerProfile(path.resolve(values.profile ?? path.join(e2eRoot, 'serve')));
  if (!existsSync(profile.settingsFile)) writeFileSync(profile.settingsFile, `${JSON.stringify(DEFAULT_SETTINGS, null, 2)}\n`);
  profile.installExtension(vsix);

  const run = await profile.launch({ workspace, port: port === 0 ? await freePort() : port });
  const page = await fetch(run.url).then(
    (response) => response.status,
    (error: unknown) => String(error),
  );
  if (page !== 200) {
    await run.stop();
    throw new Error(`code-server is up but ${run.url} answered ${page}:\n${run.log().slice(-2_000)}`);
  }
  console.log(`\nPanorama in VS Code: ${run.url}\n(workspace ${workspace}; profile ${profile.dir}; Ctrl-C stops)`);
  if (values['exit-when-ready']) {
    await run.stop();
    return 0;
  }

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (): void => {
      stopping = true;
      console.log('\nstopping code-server…');
      void run.stop().then(() => resolve(0));
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    run.server.once('exit', (code, signal) => {
      if (stopping) return;
      console.error(`code-server exited on its own (${signal ?? `code ${code}`}):\n${run.log().slice(-2_000)}`);
      resolve(1);
    });
  });
}

/** The terminal flow: build the engine, then `panorama ask DIR "…"` with the shipped default model. */
function cli(dir: string): Promise<number> {
  step('build', process.execPath, ['scripts/build.mjs']);
  const child = spawn(process.execPath, [path.join(repoRoot, 'bin', 'panorama.js'), 'ask', dir, CLI_QUESTION, '--max-tokens', '64'], { cwd: repoRoot, stdio: 'inherit' });
  // Ctrl-C reaches the child too (same process group): it saves its index and exits 130
  process.on('SIGINT', () => undefined);
  return new Promise((resolve) => child.on('exit', (code, signal) => resolve(code ?? (signal === 'SIGINT' ? 130 : 1))));
}

class UsageError extends Error {}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(`npm start: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(error instanceof UsageError ? 2 : 1);
  },
);
