// Runs the packaged extension in a real VS Code — code-server (from npm, on Node 24
// from npm; scripts/code-server.ts, which `npm start` uses too) with a fresh profile
// per run — for playwright-core and Debian's Chromium to drive. Recipe and
// pitfalls: docs/e2e.md.

import type { ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { CodeServerProfile, e2eRoot, freePort, installTools, packageVsix, repoRoot } from '../../scripts/code-server.js';

export { repoRoot };
export const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const extensionId = 'panorama-dev.panorama';

/**
 * Debian's Chromium, headless, on a run's workbench. The flags keep it from reaching out to this
 * machine's closed network at start (docs/e2e.md).
 */
export async function openWorkbench(url: string): Promise<{ browser: Browser; page: Page }> {
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.setDefaultTimeout(30_000);
  await page.goto(url);
  await page.locator('.monaco-workbench').waitFor();
  return { browser, page };
}

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

/** The shipped default model when the checkout has one, else the fixture (random weights: text is noise). */
export function modelForTest(): string | undefined {
  const models = path.join(repoRoot, 'models');
  const shipped = existsSync(models) && readdirSync(models).some((name) => existsSync(path.join(models, name, 'config.json')));
  return shipped ? undefined : path.join(repoRoot, 'test', 'fixtures', 'sala-tiny-a');
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

export async function startRun(userSettings: Record<string, unknown>, env: NodeJS.ProcessEnv = {}): Promise<Run> {
  installTools();
  const vsix = path.join(e2eRoot, 'panorama.vsix');
  packageVsix(vsix);

  // one run's profile is kept for a look after a failure; older ones go (each holds an unpacked VSIX)
  rmSync(path.join(e2eRoot, 'runs'), { recursive: true, force: true });
  const dir = path.join(e2eRoot, 'runs', new Date().toISOString().replace(/[:.]/g, '-'));
  const workspace = path.join(dir, 'ws');
  const shots = path.join(e2eRoot, 'shots');
  const profile = new CodeServerProfile(dir);
  mkdirSync(shots, { recursive: true });
  cpSync(path.join(repoRoot, 'test', 'e2e', 'fixture-workspace'), workspace, { recursive: true });
  // Sources come from the blocks sparse attention picks beyond the forced ones, so the
  // context must be several times the model's dense_len: add some real code of our own.
  mkdirSync(path.join(workspace, 'lib'));
  for (const file of ['ignore.ts', 'layout.ts', 'watcher.ts']) cpSync(path.join(repoRoot, 'engine', 'index', file), path.join(workspace, 'lib', file));
  writeFileSync(profile.settingsFile, JSON.stringify(userSettings, null, 2));
  profile.installExtension(vsix);

  const marker = path.join(dir, 'activated.txt');
  const serverLogPath = path.join(dir, 'server.log');
  const codeServer = await profile.launch({ workspace, port: await freePort(), env: { ...env, PANORAMA_E2E_MARKER: marker }, extraArgs: ['--disable-workspace-trust'] });
  return {
    dir,
    workspace,
    marker,
    shots,
    server: codeServer.server,
    url: codeServer.url,
    serverLog: () => {
      writeFileSync(serverLogPath, codeServer.log());
      return codeServer.log();
    },
    extensionLog: () => {
      const file = findFile(path.join(dir, 'udd', 'logs'), 'Panorama.log') ?? findFile(path.join(dir, 'udd', 'logs'), '1-Panorama.log');
      return file === undefined ? '(no Panorama.log found)' : readFileSync(file, 'utf8');
    },
    stop: () => codeServer.stop(),
  };
}
