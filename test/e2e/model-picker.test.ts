// End to end in a real VS Code (code-server): Panorama: Select Model… downloads a small
// random MiniCPM-SALA checkpoint from a Hub on 127.0.0.1 (HF_ENDPOINT), the status bar shows
// it, the engine restarts with it and answers in the sidebar; then the shipped model is
// selected again and reopens its own index.

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Browser, type Page } from 'playwright-core';
import { chromiumPath, extensionId, startRun, type Run, openWorkbench } from './harness.js';
import { FakeHub } from '../hub/fake-hub.js';
import { writeSalaCheckpoint } from '../hub/sala-checkpoint.js';

async function until(condition: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const skip = !existsSync(chromiumPath) && process.env.CI !== 'true' ? `no Chromium at ${chromiumPath} (apt-get install chromium, or set CHROMIUM_PATH)` : false;

describe('Panorama: Select Model… in VS Code (code-server + Chromium)', { skip, timeout: 15 * 60_000 }, () => {
  let run: Run;
  let browser: Browser;
  let page: Page;
  let hub: FakeHub;
  const source = mkdtempSync(path.join(os.tmpdir(), 'panorama-e2e-hub-'));
  const shot = (name: string): Promise<Buffer> => page.screenshot({ path: path.join(run.shots, `model-${name}.png`) });
  const palette = async (query: string, row: string | RegExp): Promise<void> => {
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
  /** Opens the picker and chooses the row matching `row`. */
  const pickModel = async (row: string | RegExp): Promise<void> => {
    await palette('>Panorama: Select Model', 'Panorama: Select Model');
    await page.locator('.quick-input-widget', { hasText: 'Panorama: Select Model' }).waitFor();
    await page.locator('.quick-input-list .monaco-list-row', { hasText: row }).first().click();
  };
  let failures = 0;
  const step = (name: string, timeout: number, body: () => Promise<void>): void => {
    it(name, { timeout }, async () => {
      try {
        await body();
      } catch (error) {
        failures++;
        await shot(`error-${failures}`).catch(() => undefined);
        console.log(`# extension log (tail):\n${run.extensionLog().slice(-3_000).replace(/^/gm, '#   ')}`);
        throw error;
      }
    });
  };
  const ready = () => page.locator('[aria-label^="Panorama: ready"]').first();

  before(async () => {
    const names = await writeSalaCheckpoint(source);
    hub = await new FakeHub().start();
    hub.addRepo('openbmb/MiniCPM-SALA', source, names);
    run = await startRun(
      {
        'workbench.startupEditor': 'none',
        'security.workspace.trust.enabled': false,
        'workbench.tips.enabled': false,
        'telemetry.telemetryLevel': 'off',
        'update.mode': 'none',
        'extensions.autoCheckUpdates': false,
        'extensions.autoUpdate': false,
        'chat.disableAIFeatures': true,
        'workbench.secondarySideBar.defaultVisibility': 'hidden',
        'files.hotExit': 'off',
        'git.enabled': false,
        'panorama.device': 'cpu',
        'panorama.maxAnswerTokens': 24,
        'panorama.inlineCompletions.enabled': false,
      },
      { HF_ENDPOINT: hub.endpoint, HF_TOKEN: '' },
    );
    ({ browser, page } = await openWorkbench(run.url));
  });

  after(async () => {
    await browser?.close();
    if (run !== undefined) {
      if (failures > 0) console.log(`# server log (tail):\n${run.serverLog().slice(-2_000).replace(/^/gm, '#   ')}`);
      await run.stop();
    }
    await hub?.close();
    rmSync(source, { recursive: true, force: true });
  });

  step('starts on the shipped model, and the status bar says so', 180_000, async () => {
    for (let i = 0; i < 240 && !existsSync(run.marker); i++) await page.waitForTimeout(250);
    await ready().waitFor({ timeout: 150_000 });
    await page.locator('[aria-label="Panorama model: default model"]').first().waitFor();
  });

  step('Download MiniCPM-SALA… pulls it from the Hub with a progress notification and selects it', 240_000, async () => {
    await pickModel('Download MiniCPM-SALA');
    const input = page.locator('.quick-input-widget input');
    await page.locator('.quick-input-widget', { hasText: 'Hugging Face model id' }).waitFor();
    assert.equal(await input.inputValue(), 'openbmb/MiniCPM-SALA');
    await page.keyboard.press('Enter');
    await page.locator('.notifications-toasts', { hasText: 'is downloaded and selected' }).first().waitFor({ timeout: 180_000 });
    await shot('1-downloaded');
    assert.ok(
      hub.log.some((r) => r.server === 'storage' && r.status === 200),
      'the weights came from the storage host',
    );
    await page.locator('[aria-label="Panorama model: openbmb/MiniCPM-SALA"]').first().waitFor({ timeout: 30_000 });
    // the engine restarts with it and indexes the workspace into the new model's own index
    await ready().waitFor({ timeout: 150_000 });
  });

  step('the downloaded model answers in the sidebar', 180_000, async () => {
    await page.locator('.activitybar a[aria-label^="Panorama"], .activitybar li[aria-label^="Panorama"]').first().click();
    const chat = page.frameLocator(`iframe.webview[src*="extensionId=${extensionId}"]`).frameLocator('#active-frame');
    const question = chat.locator('#question textarea');
    const turns = await chat.locator('article.turn').count();
    await question.fill('What does this workspace do?');
    await question.press('Enter');
    const turn = chat.locator('article.turn').nth(turns);
    await turn.waitFor();
    await until(async () => !['streaming', null].includes(await turn.getAttribute('data-state')), 150_000, 'the answer finished');
    assert.notEqual(await turn.getAttribute('data-state'), 'error', await turn.locator('.turn-footer').innerText());
    assert.notEqual((await turn.locator('.answer').innerText()).trim(), '', 'the answer has text');
    await shot('2-answer');
    assert.match(run.extensionLog(), /openbmb--MiniCPM-SALA/, 'the engine was initialized with the downloaded model');
  });

  step('selecting the shipped model switches back', 180_000, async () => {
    await pickModel('panorama-code-13m');
    await page.locator('[aria-label="Panorama model: default model"]').first().waitFor({ timeout: 30_000 });
    await ready().waitFor({ timeout: 150_000 });
    // each model has its own index: the shipped model's is reopened, nothing is encoded again
    await until(async () => /\(0 encoded now, [1-9]\d* reopened\)/.test(run.extensionLog()), 30_000, 'the shipped model reopened its own index');
    await shot('3-back');
  });
});
