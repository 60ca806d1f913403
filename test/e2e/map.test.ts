// The workspace map end to end in a real VS Code (code-server): opened while the
// workspace is being indexed (files waiting, one being encoded, then all encoded),
// arrow keys and Enter, a question in the chat, "Show what it read" for its answer,
// the top place clicked (the editor lands on those lines), Export SVG; then a
// 10,000-file, 1M-token map drawn in the view with performance.now() around it, and
// updates streamed at it while the view's event loop is watched.
// Screenshots: .e2e/shots/map-*.png (gitignored).

import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Browser, type Frame, type Page } from 'playwright-core';
import { buildWorkspaceMap } from '../../engine/context/workspace-map.js';
import type { FileSpan } from '../../engine/context/workspace-context.js';
import { chromiumPath, modelForTest, repoRoot, startRun, type Run, openWorkbench } from './harness.js';

async function until(condition: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** A 10,000-file, ~1M-token workspace as the engine would map it (the view gets at most the default cap of cells). */
function bigMap(waitingFrom = Number.POSITIVE_INFINITY) {
  const spans: FileSpan[] = [];
  const queued: { path: string; tokens: number; contentHash: string }[] = [];
  let at = 0;
  for (let i = 0; i < 10_000; i++) {
    const lines = 4 + ((i * 7919) % 30);
    const filePath = `packages/p${i % 25}/src/m${i % 250}/${i % 4 === 0 ? 'internal/' : ''}file${i}.ts`;
    const tokens = 6 + lines * 5;
    if (i >= waitingFrom) {
      queued.push({ path: filePath, tokens, contentHash: filePath });
      continue;
    }
    spans.push({
      path: filePath,
      start: at,
      end: at + tokens,
      headerTokens: 6,
      contentHash: filePath,
      mtimeMs: 0,
      editCount: 0,
      lineStarts: Array.from({ length: lines }, (_, l) => 6 + l * 5),
    });
    at += tokens;
  }
  return buildWorkspaceMap({
    spans,
    overBudget: new Map(),
    skipped: [],
    queued,
    deadRanges: [],
    deadTokens: 0,
    budget: 1_000_000,
    phase: waitingFrom < 10_000 ? 'indexing' : 'ready',
  });
}

const skip = !existsSync(chromiumPath) && process.env.CI !== 'true' ? `no Chromium at ${chromiumPath} (apt-get install chromium, or set CHROMIUM_PATH)` : false;

describe('the workspace map in VS Code (code-server + Chromium)', { skip, timeout: 20 * 60_000 }, () => {
  let run: Run;
  let browser: Browser;
  let page: Page;
  let map: Frame;
  const started = Date.now();
  const shot = (name: string): Promise<Buffer> => page.screenshot({ path: path.join(run.shots, `${name}.png`) });
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
  /** The webview's inner frame that holds `selector` (the map's #treemap, the chat's #question). */
  const findFrame = async (selector: string): Promise<Frame> => {
    let found: Frame | undefined;
    await until(
      async () => {
        for (const frame of page.frames()) {
          if (!frame.isDetached() && (await frame.$(selector).catch(() => null)) !== null) {
            found = frame;
            return true;
          }
        }
        return false;
      },
      30_000,
      `a view with ${selector} is loaded`,
    );
    if (found === undefined) throw new Error(`no frame with ${selector}`);
    return found;
  };
  const findMapFrame = (): Promise<Frame> => findFrame('#treemap');
  const data = (name: string): Promise<string | null> => map.locator('#treemap').getAttribute(`data-${name}`);
  const activeLine = async (): Promise<number> =>
    Number(
      ((
        await page
          .locator('.statusbar-item', { hasText: /Ln \d+, Col \d+/ })
          .first()
          .innerText()
      ).match(/Ln (\d+)/) ?? [])[1],
    );
  let failures = 0;
  const step = (name: string, timeout: number, body: () => Promise<void>): void => {
    it(name, { timeout }, async () => {
      try {
        await body();
      } catch (error) {
        failures++;
        await shot(`map-error-${failures}`).catch(() => undefined);
        console.log(`# extension log (tail):\n${run.extensionLog().slice(-3_000).replace(/^/gm, '#   ')}`);
        throw error;
      }
    });
  };

  before(async () => {
    const model = modelForTest();
    run = await startRun({
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
      'git.openRepositoryInParentFolders': 'never',
      'editor.inlineSuggest.enabled': false,
      'panorama.inlineCompletions.enabled': false,
      'panorama.device': 'cpu',
      'panorama.maxAnswerTokens': 48,
      ...(model !== undefined ? { 'panorama.modelPath': model } : {}),
    });
    // more code than the harness copies, so indexing lasts long enough to watch (the engine starts once the page connects)
    mkdirSync(path.join(run.workspace, 'server'));
    for (const file of ['http-server.ts', 'rpc-server.ts', 'engine-service.ts']) cpSync(path.join(repoRoot, 'engine', 'server', file), path.join(run.workspace, 'server', file));
    console.log(`# model: ${model ?? 'the shipped default'}; run dir ${run.dir}`);
    ({ browser, page } = await openWorkbench(run.url));
  });

  after(async () => {
    await browser?.close();
    if (run !== undefined) {
      if (failures > 0) console.log(`# server log (tail):\n${run.serverLog().slice(-2_000).replace(/^/gm, '#   ')}`);
      await run.stop();
    }
    console.log(`# e2e total: ${((Date.now() - started) / 1000).toFixed(1)} s`);
  });

  step('opens during indexing: files wait and one is encoded, then all are encoded', 240_000, async () => {
    for (let i = 0; i < 240 && !existsSync(run.marker); i++) await page.waitForTimeout(250);
    assert.ok(existsSync(run.marker), 'the extension wrote its activation marker');
    await palette('>Panorama: Show Workspace Map', 'Panorama: Show Workspace Map');
    map = await findMapFrame();
    let sawIndexing = false;
    let shotTaken = false;
    await until(
      async () => {
        const [phase, waiting] = [await data('phase'), Number(await data('waiting'))];
        if (phase === 'indexing' && waiting > 0) {
          sawIndexing = true;
          if (!shotTaken) {
            shotTaken = true;
            await shot('map-1-indexing');
          }
        }
        return phase === 'ready' && waiting === 0;
      },
      200_000,
      'the map shows the workspace encoded',
    );
    assert.ok(sawIndexing, 'the map showed files waiting while the workspace was indexed');
    assert.match(await map.locator('#summary').innerText(), /files · [\d,]+ of [\d,]+ tokens/);
    assert.match(await map.locator('#legend').innerText(), /encoded \d+/);
    await shot('map-2-ready');
  });

  step('arrow keys walk the files and Enter opens one', 60_000, async () => {
    if (map.isDetached()) map = await findMapFrame();
    await map.focus('#treemap');
    const first = await data('focused');
    await map.locator('#treemap').press('ArrowRight');
    await map.locator('#treemap').press('ArrowDown');
    await until(async () => (await data('focused')) !== first, 5_000, 'the focus moved');
    const target = (await data('focused')) ?? '';
    assert.match(await map.locator('#focus-info').innerText(), new RegExp(target.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
    await map.locator('#treemap').press('Enter');
    const fileName = target.split('/').pop() ?? target;
    await page.locator(`.tabs-container .tab.active:has-text("${fileName}")`).first().waitFor({ timeout: 15_000 });
  });

  step('asks in the chat where a function is defined: the answer names its line; "Show what it read" shows the overlay; the top place opens at its lines', 240_000, async () => {
    await page.locator('.activitybar a[aria-label^="Panorama"], .activitybar li[aria-label^="Panorama"]').first().click();
    const chat = await findFrame('#question');
    const input = chat.locator('#question textarea');
    const before = await chat.locator('article.turn').count();
    await input.fill('Where is `retry` defined?');
    await input.press('Enter');
    const turn = chat.locator('article.turn').nth(before);
    await turn.waitFor();
    await until(async () => !['streaming', null].includes(await turn.getAttribute('data-state')), 180_000, 'the answer finished');
    // The definition's line, resolved to its place (the README's screenshot shows this answer).
    assert.match(await turn.innerText(), /def retry\(action, attempts=3, delay=0\.5\):/);
    assert.equal(await turn.locator('a.place-link').first().innerText(), 'src/retry.py:4');
    // the editors closed (the map too): "Show what it read" opens the map again, alone and as wide as it gets
    await palette('>View: Close All Editor Groups', 'View: Close All Editor Groups');
    await turn.locator('.show-read').click();
    if (map.isDetached()) map = await findMapFrame();
    await until(async () => ((await data('overlay')) ?? '') !== '', 15_000, 'the overlay is drawn');
    const places = map.locator('#places button.place');
    assert.ok((await places.count()) > 0, 'the top places are listed');
    assert.ok((await map.locator('#read-files .strip button.band').count()) > 0, 'each file read has a strip of line ranges');
    await shot('map-3-overlay');

    const label = await places.first().innerText();
    const [, file, start] = label.match(/^(.+?):(\d+)/) ?? [];
    assert.ok(file && start, `a place names a file and a line: ${label}`);
    await places.first().click();
    const fileName = file.split('/').pop() ?? file;
    await page.locator(`.tabs-container .tab.active:has-text("${fileName}")`).first().waitFor({ timeout: 15_000 });
    await until(async () => (await activeLine()) === Number(start), 10_000, `the editor is at line ${start}`);
    console.log(`# top place ${label.replace(/\s+/g, ' ')} opened at line ${await activeLine()}`);
    await shot('map-4-place-opened');
  });

  step('Export SVG saves the map with its heat', 60_000, async () => {
    if (map.isDetached()) map = await findMapFrame();
    await map.locator('#export').click();
    // the simple save dialog proposes a path in the workspace: accept it
    const input = page.locator('.quick-input-widget input');
    await input.waitFor({ timeout: 10_000 });
    await page.keyboard.press('Enter');
    const saved = path.join(run.workspace, 'panorama-answer-map.svg');
    await until(async () => existsSync(saved), 10_000, `${saved} is written`);
    const svg = readFileSync(saved, 'utf8');
    assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assert.match(svg, /read: [\d.]+% of the answer&apos;s selections/);
  });

  step('a 10,000-file, 1M-token map draws in ≤ 200 ms and the view stays responsive while updates stream in', 120_000, async () => {
    if (map.isDetached()) map = await findMapFrame();
    const big = bigMap();
    assert.ok(big.totals.tokens >= 900_000 && big.totals.files === 10_000, `${big.totals.files} files, ${big.totals.tokens} tokens`);
    const message = { type: 'map', map: big, status: { label: 'synthetic 10,000-file workspace', available: true } };
    // back to the plain map, then the big one, posted inside the view as the host would
    await map.locator('#clear-overlay').click();
    const rendersBefore = Number(await data('renders'));
    await map.evaluate((m) => window.postMessage(m, '*'), message);
    await until(async () => Number(await data('renders')) > rendersBefore && Number(await data('cells')) === big.cells.length, 10_000, 'the big map is drawn');
    const renderMs = Number(await data('render-ms'));
    const sinceReceivedMs = Number(await data('since-received-ms'));
    console.log(
      `# 10,000 files, ${big.totals.tokens} tokens, ${big.cells.length} cells: layout + paint ${renderMs} ms; from the message's arrival (validation included) ${sinceReceivedMs} ms`,
    );
    assert.ok(sinceReceivedMs <= 200, `drawn ${sinceReceivedMs} ms after the map arrived`);
    await shot('map-5-10k-files');

    // 20 updates 50 ms apart (indexing moving on), while a 10 ms timer watches the event loop
    const updates = Array.from({ length: 20 }, (_, k) => ({ ...message, map: bigMap(9_000 + k * 50) }));
    const measured = await map.evaluate(async (list) => {
      let last = performance.now();
      let maxGap = 0;
      const watch = setInterval(() => {
        const now = performance.now();
        maxGap = Math.max(maxGap, now - last);
        last = now;
      }, 10);
      for (const update of list) {
        window.postMessage(update, '*');
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
      clearInterval(watch);
      return { maxGap };
    }, updates);
    const maxRenderMs = Number(await data('max-render-ms'));
    const maxHandleMs = Number(await data('max-handle-ms'));
    // the gap includes whatever else the machine runs; the view's own work per update is what it controls
    console.log(
      `# 20 updates 50 ms apart: longest draw ${maxRenderMs} ms, longest message handling (validation included) ${maxHandleMs} ms, ${await data('renders')} draws in all; longest event-loop gap ${measured.maxGap.toFixed(0)} ms (load average ${loadavg()[0].toFixed(1)})`,
    );
    assert.ok(maxRenderMs <= 200 && maxHandleMs <= 200, `no update held the view for more than 200 ms (draw ${maxRenderMs} ms, handling ${maxHandleMs} ms)`);
    assert.equal(await data('phase'), 'indexing');
  });

  step('follows the theme: dark and high contrast colours replace the light ones', 90_000, async () => {
    const seen = new Set([await data('palette')]);
    for (const [theme, kind, name] of [
      ['Dark Modern', 'vscode-dark', 'map-6-dark'],
      ['Dark High Contrast', 'vscode-high-contrast', 'map-7-high-contrast'],
    ] as const) {
      // the theme picker itself (its row, clicked: the first row can be the marketplace's)
      await page.keyboard.press('Escape');
      await page.keyboard.press('F1');
      const input = page.locator('.quick-input-widget input');
      await input.fill('>Preferences: Color Theme');
      await page
        .locator('.quick-input-list .monaco-list-row', { hasText: /Preferences: Color Theme(?!s)/ })
        .first()
        .click();
      await page.locator('.quick-input-widget input[placeholder^="Select Color Theme"]').waitFor({ timeout: 10_000 });
      await input.fill(theme);
      await page
        .locator('.quick-input-list .monaco-list-row', { hasText: new RegExp(`^${theme}`) })
        .first()
        .click();
      await until(async () => (await data('theme')) === kind, 20_000, `the view is in ${theme}`);
      await until(async () => !seen.has(await data('palette')), 5_000, `${theme} gave its own colours`);
      seen.add(await data('palette'));
      await shot(name);
    }
  });
});
