// The remote backend in a real VS Code (code-server + Chromium): the user settings
// point Panorama at a real `panorama serve` with a bearer key; the key is entered
// through "Panorama: Set Remote API Key…" (a password box, into SecretStorage);
// an answer streams into the sidebar from the server; after "Clear Remote API Key"
// the next question ends with the 401 message. The local engine never starts.

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser, type FrameLocator, type Page } from 'playwright-core';
import { freePort } from '../../scripts/code-server.js';
import { FIXTURE, spawnPanorama, waitFor, within } from '../server/helpers.js';
import { chromiumPath, extensionId, repoRoot, startRun, type Run } from './harness.js';

const KEY = 'e2e-remote-key-5b1d9a7c';
const skip = !existsSync(chromiumPath) && process.env.CI !== 'true' ? `no Chromium at ${chromiumPath} (apt-get install chromium, or set CHROMIUM_PATH)` : false;

describe('the remote backend in VS Code (panorama serve as the server)', { skip, timeout: 15 * 60_000 }, () => {
  let run: Run;
  let browser: Browser;
  let page: Page;
  let chat: FrameLocator;
  let port: number;
  let stopServer: () => Promise<void> = async () => undefined;
  const store = mkdtempSync(path.join(tmpdir(), 'panorama-e2e-remote-'));

  const palette = async (query: string, row: string): Promise<void> => {
    for (let attempt = 1; ; attempt++) {
      try {
        await page.keyboard.press('Escape');
        await page.keyboard.press('F1');
        await page.locator('.quick-input-widget input').fill(query, { timeout: 5_000 });
        await page.locator('.quick-input-list .monaco-list-row', { hasText: row }).first().waitFor({ timeout: 10_000 });
        await page.keyboard.press('Enter');
        return;
      } catch (error) {
        if (attempt === 3) throw error;
        await page.waitForTimeout(500);
      }
    }
  };
  /** Asks in the sidebar and waits for the turn to end; returns its state and footer text. */
  const ask = async (question: string): Promise<{ state: string | null; footer: string; answer: string; deltas: number }> => {
    const input = chat.locator('#question textarea');
    const turns = chat.locator('article.turn');
    const before = await turns.count();
    await input.fill(question);
    await input.press('Enter');
    // The new turn, not the last one on screen: right after Enter that can still be the previous answer.
    const turn = turns.nth(before);
    await turn.waitFor();
    const deadline = Date.now() + 120_000;
    while (['streaming', null].includes(await turn.getAttribute('data-state'))) {
      if (Date.now() > deadline) throw new Error('the answer did not finish');
      await page.waitForTimeout(100);
    }
    return {
      state: await turn.getAttribute('data-state'),
      footer: await turn.locator('.turn-footer').innerText(),
      answer: await turn.locator('.answer').innerText(),
      deltas: Number(await turn.getAttribute('data-deltas')),
    };
  };

  before(async () => {
    port = await freePort();
    const served = path.join(repoRoot, 'test', 'e2e', 'fixture-workspace');
    const { child, stderr, exited } = spawnPanorama(['serve', served, '--model', FIXTURE, '--port', String(port), '--store', store, '--api-key', KEY, '--max-tokens-cap', '512']);
    stopServer = async () => {
      child.kill('SIGTERM');
      await within(10_000, 'server exit', exited).catch(() => child.kill('SIGKILL'));
    };
    await waitFor(
      'panorama serve to be ready',
      async () =>
        /serving/.test(stderr()) &&
        (await fetch(`http://127.0.0.1:${port}/health`).then(
          (response) => response.status,
          () => 0,
        )) === 200
          ? true
          : undefined,
      60_000,
      200,
    );
    run = await startRun({
      'workbench.startupEditor': 'none',
      'security.workspace.trust.enabled': false,
      'workbench.tips.enabled': false,
      'telemetry.telemetryLevel': 'off',
      'update.mode': 'none',
      'extensions.autoCheckUpdates': false,
      'chat.disableAIFeatures': true,
      'workbench.secondarySideBar.defaultVisibility': 'hidden',
      'git.enabled': false,
      'panorama.backend': 'remote',
      'panorama.remote.baseUrl': `http://127.0.0.1:${port}/v1`,
      'panorama.remote.contextChars': 20_000,
      'panorama.maxAnswerTokens': 48,
    });
    browser = await chromium.launch({
      executablePath: chromiumPath,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    page.setDefaultTimeout(30_000);
    await page.goto(run.url);
    await page.locator('.monaco-workbench').waitFor();
  });

  after(async () => {
    await browser?.close();
    await run?.stop();
    await stopServer();
    rmSync(store, { recursive: true, force: true });
  });

  it('shows the remote server in the status bar and starts no local engine', async () => {
    await page.locator(`[aria-label^="Panorama: remote 127.0.0.1:${port}"]`).first().waitFor({ timeout: 120_000 });
    assert.match(run.extensionLog(), /backend: remote http:\/\/127\.0\.0\.1:\d+\/v1/);
    assert.doesNotMatch(run.extensionLog(), /engine .* ready: model/);
  });

  it('takes the API key from a password box and streams an answer from the server', async () => {
    await palette('>Panorama: Set Remote API Key', 'Set Remote API Key');
    const box = page.locator('.quick-input-widget input[type="password"]');
    await box.waitFor();
    await box.fill(KEY);
    await page.keyboard.press('Enter');
    await page.locator('.notifications-toasts', { hasText: 'remote API key is saved' }).first().waitFor();
    await page.locator('.activitybar a[aria-label^="Panorama"], .activitybar li[aria-label^="Panorama"]').first().click();
    chat = page.frameLocator(`iframe.webview[src*="extensionId=${extensionId}"]`).frameLocator('#active-frame');
    const started = Date.now();
    const turn = await ask('What does main.ts do?');
    assert.notEqual(turn.state, 'error', turn.footer);
    assert.ok(turn.deltas > 1, `the answer streamed in ${turn.deltas} deltas`);
    assert.notEqual(turn.answer.trim(), '');
    await page.screenshot({ path: path.join(run.shots, 'remote-1-answer.png') });
    console.log(`# remote answer in VS Code: ${turn.deltas} deltas, ${Date.now() - started} ms from Enter to the end`);
  });

  it('without the key, the answer ends with the 401 message and the command to run', async () => {
    await palette('>Panorama: Clear Remote API Key', 'Clear Remote API Key');
    await page.locator('.notifications-toasts', { hasText: 'remote API key is cleared' }).first().waitFor();
    const turn = await ask('And now?');
    assert.equal(turn.state, 'error');
    assert.match(turn.footer, /needs an API key \(401/);
    assert.match(turn.footer, /Set Remote API Key/);
    await page.screenshot({ path: path.join(run.shots, 'remote-2-no-key.png') });
  });
});
