// Inline completion latency as the extension sees it: the engine started by the
// extension's own EngineClient, a workspace indexed, then keystrokes replayed at
// sampled positions (three characters typed per position, so prefix reuse shows)
// with the provider's prefix/suffix windows. Prints p50/p95 of the request
// round trip; add the adaptive debounce (60–350 ms, 150 ms at first) for
// "keystroke to suggestion shown".
//
//   node --import tsx scripts/e2e-completion-latency.ts [--workspace DIR] [--samples N] [--model DIR] [--out FILE]

import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { EngineClient } from '../extension/engine/client.js';
import { discoverEngine } from '../extension/engine/discovery.js';
import { tidySuggestion } from '../extension/completion/trim.js';

const { values } = parseArgs({
  options: {
    workspace: { type: 'string', default: 'engine' },
    samples: { type: 'string', default: '40' },
    model: { type: 'string' },
    out: { type: 'string' },
    threads: { type: 'string' },
  },
});
const repo = path.resolve(__dirname, '..');
const workspace = path.resolve(values.workspace);
const samples = Number(values.samples);
const isFile = (file: string): boolean => statSync(file, { throwIfNoEntry: false })?.isFile() ?? false;
const isDirectory = (dir: string): boolean => statSync(dir, { throwIfNoEntry: false })?.isDirectory() ?? false;

const engine = new EngineClient({
  logger: { trace() {}, debug() {}, info() {}, warn: (m) => console.error(`warn: ${m}`), error: (m) => console.error(`error: ${m}`) },
  discover: () =>
    discoverEngine({
      enginePathSetting: path.join(repo, 'dist', 'panorama.js'),
      nodePathSetting: process.execPath,
      workspaceTrusted: true,
      extensionPath: repo,
      hostExecPath: process.execPath,
      platform: process.platform,
      arch: process.arch,
      isFile,
      isDirectory,
    }),
  initializeParams: () => ({
    protocolVersion: 1,
    workspaceRoot: workspace,
    storeDir: mkdtempSync(path.join(tmpdir(), 'panorama-latency-')),
    device: 'cpu',
    ...(values.model ? { modelDir: path.resolve(values.model) } : {}),
  }),
  initializeTimeoutMs: 600_000,
});

async function main(): Promise<void> {
  const startedAt = Date.now();
  await engine.start();
  if (engine.state.kind !== 'running') throw new Error(`engine did not start: ${JSON.stringify(engine.state)}`);
  let status = await engine.request('status', {});
  while (status.state !== 'ready') {
    if (status.state === 'error') throw new Error(`indexing failed: ${status.error}`);
    await new Promise((resolve) => setTimeout(resolve, 500));
    status = await engine.request('status', {});
  }
  const indexSeconds = (Date.now() - startedAt) / 1000;
  const modelName = engine.state.info.model.name;
  console.error(`indexed ${status.files} files, ${status.liveTokens} tokens in ${indexSeconds.toFixed(1)} s (${engine.state.info.model.name} on ${status.device})`);

  // deterministic positions: mid-line in code files, spread over the workspace
  function codeFiles(dir: string): string[] {
    return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) return entry.name === 'node_modules' || entry.name.startsWith('.') ? [] : codeFiles(full);
      return /\.(ts|js|py)$/.test(entry.name) ? [full] : [];
    });
  }
  const files = codeFiles(workspace).sort();
  let seed = 12345;
  const random = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;

  const roundTrips: number[] = [];
  const engineLatencies: number[] = [];
  const shown: number[] = [];
  let reused = 0;
  for (let sample = 0; sample < samples; sample++) {
    const file = files[Math.floor(random() * files.length)];
    const text = readFileSync(file, 'utf8');
    const lines = text.split('\n');
    const candidates = lines.map((line, index) => ({ line, index })).filter(({ line }) => line.trim().length > 12);
    if (candidates.length === 0) continue;
    const { line, index } = candidates[Math.floor(random() * candidates.length)];
    const lineStart = lines.slice(0, index).join('\n').length + (index > 0 ? 1 : 0);
    const column = Math.floor(line.length * 0.5);
    for (let typed = 0; typed < 3; typed++) {
      const offset = lineStart + column + typed;
      const prefix = text.slice(Math.max(0, offset - 6_000), offset);
      const suffix = text.slice(offset, offset + 1_500);
      const sent = performance.now();
      const result = await engine.request('complete', { path: path.relative(workspace, file).split(path.sep).join('/'), prefix, suffix, maxTokens: 64 });
      roundTrips.push(performance.now() - sent);
      console.error(
        `complete ${roundTrips.length}: ${Math.round(roundTrips.at(-1) ?? 0)} ms round trip, engine ${Math.round(result.latencyMs)} ms, ${result.fedTokens} tokens fed, ${result.reusedTokens} reused`,
      );
      engineLatencies.push(result.latencyMs);
      if (result.reusedTokens > 0) reused++;
      const lineText = lines[index];
      const suggestion = tidySuggestion({ completion: result.text, lineSuffix: lineText.slice(column + typed), nextLines: lines.slice(index + 1, index + 4) });
      if (suggestion !== '') shown.push(1);
    }
  }
  await engine.stop();

  const percentile = (values: number[], p: number): number => {
    const sorted = [...values].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
  };
  const report = {
    workspace: path.basename(workspace),
    model: modelName,
    threads: 'one per core',
    files: status.files,
    contextTokens: status.liveTokens,
    indexSeconds: Math.round(indexSeconds),
    requests: roundTrips.length,
    roundTripMs: { p50: Math.round(percentile(roundTrips, 50)), p95: Math.round(percentile(roundTrips, 95)) },
    engineMs: { p50: Math.round(percentile(engineLatencies, 50)), p95: Math.round(percentile(engineLatencies, 95)) },
    requestsReusingPrefix: reused,
    nonEmptySuggestions: shown.length,
  };
  console.log(JSON.stringify(report, null, 2));
  if (values.out) writeFileSync(values.out, JSON.stringify(report, null, 2) + '\n');
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
