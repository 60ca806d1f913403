// Inline completion latency on the CPU with the default model over a ~100K-token
// workspace (eslint's sources from node_modules, as bench:context uses), replaying
// typing the way VS Code drives the extension's provider: a keystroke cancels the
// previous provider call, the provider looks in its suggestion cache, waits out its
// adaptive debounce, then sends one `complete` with its prefix/suffix windows; the
// suggestion is trimmed as the provider trims it. Recorded per request: latency from
// the request to the suggestion text (what the provider shows), the engine's own
// breakdown when it reports one, and how fast a superseded request lets go.
//
// Typing: sessions at code lines of files in the context; each line is retyped from
// its indentation with VS Code's bracket auto-closing (so the cursor is mid-line
// before a closer half of the time), log-normal key gaps (median 150 ms) and
// pauses after some word ends and at the line's end, where the user waits for the
// suggestion (at most 10 s) and reads it; a third of the lines end with Enter and a
// pause on the new, empty line (a block completion). Every fourth session types
// while a chat answer streams (a concurrent `ask`). The trace is a pure function of
// --seed: every engine variant replays the same keystrokes at the same times.
//
// --baseline REV runs the completion path as it was at REV (engine/context and
// engine/server/engine-service.ts from REV over the current engine) side by side with
// the current code in the same process, session by session, alternating which goes
// first. The 100K-token index is built once (3–4 minutes on 2 cores) and reopened
// from --store afterwards.
//
//   npm run bench:completion -- [--baseline REV] [--sessions 24] [--budget 100000] [--out docs/benchmarks/completion-cpu.json]
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { SalaModel } from '../engine/model/sala-model.js';
import { loadTokenizer, type Tokenizer } from '../engine/model/tokenizer.js';
import { ContextStore, modelFingerprint } from '../engine/context/store.js';
import { defaultModelDir } from '../engine/cli/main.js';
import type { EngineService, EngineServiceOptions } from '../engine/server/engine-service.js';
import { WorkspaceContext } from '../engine/context/workspace-context.js';
import { defaultStoreDir } from '../engine/context/workspace-index.js';
import { AdaptiveDebounce } from '../extension/completion/debounce.js';
import { SuggestionCache } from '../extension/completion/cache.js';
import { tidySuggestion } from '../extension/completion/trim.js';
import { DEFAULT_MAX_LINES } from '../engine/context/completion-scope.js';

const { values } = parseArgs({
  options: {
    budget: { type: 'string', default: '100000' },
    root: { type: 'string' },
    store: { type: 'string' },
    model: { type: 'string' },
    sessions: { type: 'string', default: '24' },
    seed: { type: 'string', default: '7' },
    baseline: { type: 'string' },
    out: { type: 'string' },
  },
});
const repo = path.resolve(__dirname, '..');
const budget = Number(values.budget);
const root = path.resolve(values.root ?? path.join(repo, 'node_modules', 'eslint', 'lib'));
const modelDir = path.resolve(values.model ?? defaultModelDir());

// The extension's provider (extension/completion/inline-provider.ts), restated: its windows and request.
const PREFIX_CHARS = 6_000;
const SUFFIX_CHARS = 1_500;
const MAX_TOKENS = 64;
/** The engine stops a block suggestion here (engine/context/completion-scope.ts). */
const MAX_LINES = DEFAULT_MAX_LINES;

// ---------------------------------------------------------------------------- the typing trace

interface Keystroke {
  /** ms after the previous key (or after the suggestion the user paused for was shown). */
  gap: number;
  /** The user pauses after this key: waits for the suggestion (at most 10 s), reads it, then types on. */
  pause: boolean;
  /** The line being typed as the buffer holds it after this key: indentation + typed + auto-closed closers. */
  typed: string;
  closers: string;
}

interface Session {
  path: string;
  /** The file's text with the typed line removed (its indentation kept). */
  before: string;
  after: string;
  indent: string;
  /** The line as the file has it (what the user is typing). */
  target: string;
  keystrokes: Keystroke[];
  /** A chat answer streams while this session types. */
  withAsk: boolean;
}

function random(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    // xorshift32
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
}

const PAIRS: Record<string, string> = { '(': ')', '[': ']', '{': '}' };
const QUOTES = new Set(["'", '"', '`']);

/** The keystrokes that type `content` with VS Code's default bracket/quote auto-closing and overtyping. */
function typeLine(content: string, next: () => number): Keystroke[] {
  const keys: Keystroke[] = [];
  let typed = '';
  const closers: string[] = [];
  let inString: string | undefined;
  let gap = 0;
  for (let i = 0; i < content.length; i++) {
    const ch = content[i];
    if (closers.length > 0 && closers[closers.length - 1] === ch) {
      closers.pop(); // overtype the auto-inserted closer
      if (QUOTES.has(ch)) inString = undefined;
    } else if (inString !== undefined) {
      if (ch === inString && typed[typed.length - 1] !== '\\') inString = undefined;
    } else if (PAIRS[ch]) closers.push(PAIRS[ch]);
    else if (QUOTES.has(ch) && !/\w/.test(typed[typed.length - 1] ?? '')) {
      closers.push(ch);
      inString = ch;
    }
    typed += ch;
    // a thinking pause after some word ends, and at the end of the line
    const pause = i === content.length - 1 || (/[\s.(,;=]/.test(ch) && next() < 0.12);
    keys.push({ gap, pause, typed, closers: [...closers].reverse().join('') });
    // log-normal gap to the next key, median 150 ms; after a pause, the time to read the suggestion
    gap = Math.min(600, Math.max(45, 150 * Math.exp(0.35 * gaussian(next)))) + (pause ? 300 + 700 * next() : 0);
  }
  return keys;
}

function gaussian(next: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next());
}

function buildTrace(files: { path: string; text: string }[], sessions: number, seed: number): Session[] {
  const next = random(seed);
  const trace: Session[] = [];
  const usable = files.filter((f) => f.text.split('\n').length >= 40);
  while (trace.length < sessions) {
    const file = usable[Math.floor(next() * usable.length)];
    const lines = file.text.split('\n');
    // code lines worth typing: 16–90 characters, not comments
    const candidates = lines
      .map((line, index) => ({ line, index }))
      .filter(({ line }) => {
        const content = line.trim();
        return content.length >= 16 && content.length <= 90 && !/^(\/\/|\*|\/\*)/.test(content);
      });
    if (candidates.length === 0) continue;
    const { line, index } = candidates[Math.floor(next() * candidates.length)];
    const indent = line.slice(0, line.length - line.trimStart().length);
    const content = line.trim();
    const before = lines.slice(0, index).join('\n') + (index > 0 ? '\n' : '') + indent;
    const after = '\n' + lines.slice(index + 1).join('\n');
    const keystrokes = typeLine(content, next);
    // A third of the lines end with Enter and a pause on the new, empty line (a block completion).
    const last = keystrokes[keystrokes.length - 1];
    if (next() < 1 / 3 && last.closers === '') keystrokes.push({ gap: 300 + 700 * next(), pause: true, typed: `${content}\n${indent}`, closers: '' });
    trace.push({ path: file.path, before, after, indent, target: content, keystrokes, withAsk: trace.length % 4 === 3 });
  }
  return trace;
}

// ---------------------------------------------------------------------------- engines

interface Variant {
  label: string;
  service: EngineService;
}

/** The engine-service module of a source tree (the working tree, or a baseline copy). */
interface ServiceModule {
  EngineService: new (options: EngineServiceOptions) => EngineService;
}

/** A copy of the current engine with the completion path (engine/context, engine-service) as it was at `rev`. */
function baselineTree(rev: string): string {
  const dir = path.join(os.tmpdir(), `panorama-bench-baseline-${rev.replace(/[^\w.-]/g, '_')}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  execFileSync('cp', ['-r', path.join(repo, 'engine'), path.join(dir, 'engine')]);
  const git = (...args: string[]) => execFileSync('git', ['-C', repo, ...args], { encoding: 'utf8' });
  const old = git('ls-tree', '-r', '--name-only', rev, 'engine/context').split('\n').filter(Boolean);
  rmSync(path.join(dir, 'engine', 'context'), { recursive: true, force: true });
  mkdirSync(path.join(dir, 'engine', 'context'), { recursive: true });
  for (const file of [...old, 'engine/server/engine-service.ts']) writeFileSync(path.join(dir, file), git('show', `${rev}:${file}`));
  symlinkSync(path.join(repo, 'node_modules'), path.join(dir, 'node_modules'));
  return dir;
}

async function openVariant(label: string, tree: string, shared: Omit<EngineServiceOptions, 'root'>): Promise<Variant> {
  const module: ServiceModule = await import(pathToFileURL(path.join(tree, 'engine', 'server', 'engine-service.ts')).href);
  const service = new module.EngineService({ ...shared, root });
  service.start();
  await service.whenSettled();
  const status = service.status();
  if (status.state !== 'ready') throw new Error(`${label}: the workspace did not open: ${status.error ?? status.state}`);
  process.stderr.write(`  ${label}: ${status.files} files, ${status.liveTokens} tokens in context\n`);
  return { label, service };
}

// ---------------------------------------------------------------------------- replaying a session

interface Breakdown {
  queueMs?: number;
  feedMs?: number;
  decodeMs?: number;
  generatedTokens?: number;
  prefixTokens?: number;
  suffixTokens?: number;
  cache?: string;
}

interface RequestRecord {
  session: number;
  withAsk: boolean;
  mode: 'mid-line' | 'end-of-line' | 'blank-line';
  /** Sent after a key the user paused after (waiting for the suggestion). */
  pause: boolean;
  outcome: 'shown' | 'empty' | 'cancelled';
  /** Request sent → suggestion text (shown/empty), or → the cancelled request let go. */
  ms: number;
  /** Last keystroke → suggestion shown (debounce included). */
  keyToShownMs?: number;
  fedTokens?: number;
  reusedTokens?: number;
  engineMs?: number;
  breakdown?: Breakdown;
  /** The line as typed so far (after the indentation), and what was shown after it. */
  typed?: string;
  suggestion?: string;
  /** The suggestion's first line is what the user went on to type. */
  correct?: boolean;
  /** Leading characters of the suggestion's first line that the user went on to type. */
  matchedChars?: number;
}

interface SessionResult {
  requests: RequestRecord[];
  /** Keystrokes answered from the provider's suggestion cache (typing through a suggestion). */
  cacheHits: number;
  keystrokes: number;
}

function matched(suggestion: string, intended: string): number {
  let n = 0;
  while (n < suggestion.length && suggestion[n] === intended[n]) n++;
  return n;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function replay(variant: Variant, session: Session, index: number, tokenizer: Tokenizer): Promise<SessionResult> {
  const { service } = variant;
  const debounce = new AdaptiveDebounce();
  const cache = new SuggestionCache();
  const requests: RequestRecord[] = [];
  const pending: Promise<void>[] = [];
  let cacheHits = 0;
  let current: AbortController | undefined;
  let ask: Promise<unknown> | undefined;
  if (session.withAsk) {
    const question = `How does ${path.basename(session.path, '.js')} work? Explain its main function.`;
    ask = service.ask({ question, maxTokens: 160 }).catch(() => undefined);
  }
  let lastKeyAt = performance.now();
  for (const key of session.keystrokes) {
    const wait = lastKeyAt + key.gap - performance.now();
    if (wait > 0) await sleep(wait);
    // VS Code cancels the previous provider call when the document changes.
    current?.abort(new Error('superseded'));
    const controller = new AbortController();
    current = controller;
    const keyAt = performance.now();
    lastKeyAt = keyAt;
    const text = session.before + key.typed + key.closers + session.after;
    const offset = session.before.length + key.typed.length;
    const prefix = text.slice(Math.max(0, offset - PREFIX_CHARS), offset);
    const suffix = text.slice(offset, offset + SUFFIX_CHARS);
    const fullPrefix = text.slice(0, offset);
    if (cache.lookup(session.path, fullPrefix, suffix) !== undefined) {
      cacheHits++;
      continue;
    }
    const call = (async () => {
      const delay = debounce.next(Date.now());
      await sleep(delay);
      if (controller.signal.aborted) return;
      const lineText = session.indent + key.typed;
      const linePrefix = lineText.slice(lineText.lastIndexOf('\n') + 1);
      const mode = linePrefix.trim() === '' ? 'blank-line' : key.closers.trim() !== '' ? 'mid-line' : 'end-of-line';
      // what the user goes on to type: the rest of the line, or after Enter the file's next line
      const nextLine = session.after.split('\n')[1] ?? '';
      const intended = key.typed.includes('\n')
        ? nextLine.slice(Math.min(session.indent.length, nextLine.length - nextLine.trimStart().length))
        : session.target.slice(key.typed.length);
      const sent = performance.now();
      try {
        const result = await service.complete({ path: session.path, prefix, suffix, maxTokens: MAX_TOKENS }, { signal: controller.signal });
        const ms = performance.now() - sent;
        const nextLines = session.after.split('\n').slice(1, 4);
        const suggestion = tidySuggestion({ completion: result.text, lineSuffix: key.closers, nextLines });
        cache.remember({ documentKey: session.path, prefix: fullPrefix, suffix, text: suggestion });
        const firstLine = suggestion.split('\n')[0];
        const record: RequestRecord = {
          session: index,
          withAsk: session.withAsk,
          mode,
          pause: key.pause,
          outcome: suggestion === '' ? 'empty' : 'shown',
          ms,
          fedTokens: result.fedTokens,
          reusedTokens: result.reusedTokens,
          engineMs: result.latencyMs,
          typed: key.typed,
          suggestion,
          correct: firstLine.length > 0 && intended.startsWith(firstLine),
          matchedChars: matched(firstLine, intended),
          breakdown:
            'breakdown' in result && typeof result.breakdown === 'object'
              ? (result.breakdown as Breakdown)
              : { generatedTokens: tokenizer.encode(result.text, { addSpecialTokens: false }).length },
        };
        if (suggestion !== '') record.keyToShownMs = performance.now() - keyAt;
        requests.push(record);
      } catch (err) {
        if (!controller.signal.aborted) throw err;
        requests.push({ session: index, withAsk: session.withAsk, mode, pause: key.pause, outcome: 'cancelled', ms: performance.now() - sent });
      }
    })();
    pending.push(call);
    if (key.pause) {
      // the user waits for the suggestion (or gives up after 10 s), then reads it
      await Promise.race([call, sleep(10_000)]);
      lastKeyAt = performance.now();
    }
  }
  // The user moves elsewhere: whatever is still running is cancelled.
  current?.abort(new Error('moved away'));
  await Promise.all(pending);
  await ask;
  return { requests, cacheHits, keystrokes: session.keystrokes.length };
}

// ---------------------------------------------------------------------------- statistics

function percentile(values: readonly number[], p: number): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

function summary(values: readonly number[]) {
  const mean = values.length ? values.reduce((a, b) => a + b, 0) / values.length : undefined;
  const round = (x: number | undefined) => (x === undefined ? undefined : Math.round(x * 10) / 10);
  return {
    n: values.length,
    p50: round(percentile(values, 50)),
    p95: round(percentile(values, 95)),
    mean: round(mean),
    max: round(values.length ? Math.max(...values) : undefined),
  };
}

function summarize(results: SessionResult[]) {
  const all = results.flatMap((r) => r.requests);
  const answered = all.filter((r) => r.outcome !== 'cancelled');
  const shown = answered.filter((r) => r.outcome === 'shown');
  // The headline: requests at a pause, where the user waits for the suggestion (between fast keys, most are superseded).
  const atPause = all.filter((r) => r.pause);
  const pauseAnswered = atPause.filter((r) => r.outcome !== 'cancelled');
  const quiet = pauseAnswered.filter((r) => !r.withAsk);
  const duringAsk = pauseAnswered.filter((r) => r.withAsk);
  const field = (records: RequestRecord[], get: (r: RequestRecord) => number | undefined) => summary(records.map(get).filter((x): x is number => x !== undefined));
  return {
    keystrokes: results.reduce((n, r) => n + r.keystrokes, 0),
    servedFromProviderCache: results.reduce((n, r) => n + r.cacheHits, 0),
    requests: all.length,
    answered: answered.length,
    shown: shown.length,
    cancelled: all.length - answered.length,
    correctShown: shown.filter((r) => r.correct).length,
    matchedChars: field(shown, (r) => r.matchedChars),
    pauseRequests: atPause.length,
    pauseTimedOut: atPause.length - pauseAnswered.length,
    latencyPauseMs: field(pauseAnswered, (r) => r.ms),
    latencyPauseShownMs: field(
      pauseAnswered.filter((r) => r.outcome === 'shown'),
      (r) => r.ms,
    ),
    latencyQuietMs: field(quiet, (r) => r.ms),
    latencyDuringAskMs: field(duringAsk, (r) => r.ms),
    latencyMidLineMs: field(
      pauseAnswered.filter((r) => r.mode === 'mid-line'),
      (r) => r.ms,
    ),
    latencyEndOfLineMs: field(
      pauseAnswered.filter((r) => r.mode === 'end-of-line'),
      (r) => r.ms,
    ),
    latencyBlankLineMs: field(
      pauseAnswered.filter((r) => r.mode === 'blank-line'),
      (r) => r.ms,
    ),
    latencyAllAnsweredMs: field(answered, (r) => r.ms),
    keystrokeToShownMs: field(shown, (r) => r.keyToShownMs),
    cancelLetGoMs: field(
      all.filter((r) => r.outcome === 'cancelled'),
      (r) => r.ms,
    ),
    prefixStateReused: answered.filter((r) => (r.reusedTokens ?? 0) > 0).length,
    fedTokens: field(answered, (r) => r.fedTokens),
    reusedTokens: field(answered, (r) => r.reusedTokens),
    generatedTokens: field(answered, (r) => r.breakdown?.generatedTokens),
    queueMs: field(answered, (r) => r.breakdown?.queueMs),
    feedMs: field(answered, (r) => r.breakdown?.feedMs),
    decodeMs: field(answered, (r) => r.breakdown?.decodeMs),
    prefixTokensFed: field(answered, (r) => r.breakdown?.prefixTokens),
    suffixTokensFed: field(answered, (r) => r.breakdown?.suffixTokens),
  };
}

// ---------------------------------------------------------------------------- main

async function main(): Promise<void> {
  const sessions = Number(values.sessions);
  const model = await SalaModel.load(modelDir);
  const tokenizer = await loadTokenizer(modelDir, model.config.vocabSize);
  const modelId = await modelFingerprint(modelDir);
  const storeDir = path.resolve(values.store ?? `${defaultStoreDir(root)}-bench-${budget}`);
  process.stderr.write(
    `bench:completion: ${path.relative(repo, root)}, budget ${budget} tokens, model ${path.basename(modelDir)}, store ${storeDir}${existsSync(storeDir) ? '' : ' (building: 3–4 minutes)'}\n`,
  );
  const shared = { storeDir, model, tokenizer, modelId, budget, watch: false };
  const variants: Variant[] = [];
  if (values.baseline) variants.push(await openVariant(`baseline ${values.baseline}`, baselineTree(values.baseline), shared));
  variants.push(await openVariant('current', repo, shared));

  const { files, cost } = await openStored(storeDir, modelId, model, tokenizer);
  process.stderr.write(`  after this context: prefill ${cost.prefillMsPerToken} ms/token (128 in one call), decode ${cost.decodeMsPerToken} ms/token\n`);
  const trace = buildTrace(files, sessions, Number(values.seed));
  const results = new Map(variants.map((v) => [v.label, [] as SessionResult[]]));
  for (let i = 0; i < trace.length; i++) {
    // alternate which variant goes first, so neither always follows the other's leftovers
    const order = i % 2 === 0 ? variants : [...variants].reverse();
    for (const variant of order) {
      const result = await replay(variant, trace[i], i, tokenizer);
      results.get(variant.label)?.push(result);
      const answered = result.requests.filter((r) => r.outcome !== 'cancelled');
      process.stderr.write(
        `  session ${i + 1}/${trace.length} ${variant.label}: ${trace[i].path}, ${result.keystrokes} keys, ${answered.length} answered (${answered.map((r) => Math.round(r.ms)).join(' ')} ms), ${result.requests.length - answered.length} cancelled${trace[i].withAsk ? ', during an ask' : ''}\n`,
      );
    }
  }
  const { files: contextFileCount, liveTokens } = variants[0].service.status();
  for (const variant of variants) await variant.service.close();

  const report = {
    machine: {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model,
      node: process.version,
      date: new Date().toISOString(),
      loadAverage: os.loadavg().map((x) => Math.round(x * 100) / 100),
    },
    workspace: { root: path.relative(repo, root), budget, tokens: liveTokens, files: contextFileCount },
    model: path.basename(modelDir),
    costAfterContext: cost,
    trace: {
      sessions: trace.length,
      seed: Number(values.seed),
      keystrokes: trace.reduce((n, s) => n + s.keystrokes.length, 0),
      sessionsWithAsk: trace.filter((s) => s.withAsk).length,
    },
    provider: { prefixChars: PREFIX_CHARS, suffixChars: SUFFIX_CHARS, maxTokens: MAX_TOKENS, maxLines: MAX_LINES },
    variants: Object.fromEntries(variants.map((v) => [v.label, summarize(results.get(v.label) ?? [])])),
    requests: Object.fromEntries(variants.map((v) => [v.label, (results.get(v.label) ?? []).flatMap((r) => r.requests)])),
  };
  const table = markdown(report.variants);
  process.stdout.write(`${table}\n`);
  if (values.out) {
    mkdirSync(path.dirname(path.resolve(values.out)), { recursive: true });
    writeFileSync(values.out, JSON.stringify(report, null, 2) + '\n');
    writeFileSync(values.out.replace(/\.json$/, '.md'), document(report, table));
  }
}

/** The files the stored context holds, as they are on disk. */
/** The files the stored context holds, as they are on disk, and the model's cost per token after that context. */
async function openStored(storeDir: string, modelId: string, model: SalaModel, tokenizer: Tokenizer) {
  const { state } = await new ContextStore(storeDir, modelId).load(model);
  if (!state || state.spans.length === 0) throw new Error(`the store ${storeDir} holds no files`);
  const files = state.spans.map((span) => ({ path: span.path, text: readFileSync(path.join(root, span.path), 'utf8') }));
  // What a token costs after this context: a prompt fed in one call, and one decode step.
  const sequence = WorkspaceContext.restore(model, tokenizer, {}, state).sequence;
  const end = sequence.checkpoint();
  const ids = tokenizer.encode(files[files.length - 1].text, { addSpecialTokens: false }).slice(0, 128);
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const prefill: number[] = [];
  for (let run = 0; run < 4; run++) {
    const started = performance.now();
    await model.forward(sequence, ids);
    prefill.push((performance.now() - started) / ids.length);
    sequence.rollback(end);
  }
  await model.forward(sequence, ids.slice(0, 16));
  const decode: number[] = [];
  for (const id of ids.slice(16, 48)) {
    const started = performance.now();
    await model.forward(sequence, [id]);
    decode.push(performance.now() - started);
  }
  sequence.rollback(end);
  const round = (x: number) => Math.round(x * 100) / 100;
  return { files, cost: { prefillMsPerToken: round(median(prefill.slice(1))), decodeMsPerToken: round(median(decode)) } };
}

type Summary = ReturnType<typeof summarize>;

interface Report {
  machine: { cpus: number; cpuModel?: string; node: string; date: string; loadAverage: number[] };
  workspace: { root: string; budget: number; tokens: number; files: number };
  model: string;
  costAfterContext: { prefillMsPerToken: number; decodeMsPerToken: number };
  trace: { sessions: number; seed: number; keystrokes: number; sessionsWithAsk: number };
  variants: Record<string, Summary>;
}

/** The markdown report: what was measured, how, and the table. */
function document(report: Report, table: string): string {
  const { machine, workspace, trace } = report;
  const { prefillMsPerToken, decodeMsPerToken } = report.costAfterContext;
  const estimates = Object.entries(report.variants).map(([label, v]) => {
    const fed = v.fedTokens.p50 ?? 0;
    const generated = v.generatedTokens.p50 ?? 0;
    return `${label}: ${fed} fed × ${prefillMsPerToken} + ${generated} generated × ${decodeMsPerToken} ≈ ${Math.round(fed * prefillMsPerToken + generated * decodeMsPerToken)} ms (measured p50 ${Math.round(v.latencyPauseMs.p50 ?? 0)} ms)`;
  });
  return [
    '# Inline completion latency, CPU',
    '',
    `\`npm run bench:completion -- ${process.argv.slice(2).join(' ')}\` on ${machine.date.slice(0, 10)}: ${machine.cpus} × ${machine.cpuModel ?? 'CPU'}, Node ${machine.node}, ` +
      `load average at the end ${machine.loadAverage.join(' / ')} (the machine is shared). Workspace \`${workspace.root}\`: ${workspace.files} files, ` +
      `${workspace.tokens.toLocaleString('en-US')} tokens in context (budget ${workspace.budget.toLocaleString('en-US')}), model ${report.model}, the engine in process (\`EngineService\`, as \`panorama rpc\` runs it).`,
    '',
    `Typing replayed as VS Code drives the provider: ${trace.sessions} sessions (seed ${trace.seed}), ${trace.keystrokes} keystrokes retyping code lines of files in the context ` +
      `with bracket auto-closing, log-normal key gaps (median 150 ms), pauses after some words and at each line's end where the user waits for the suggestion, ` +
      'a third of the lines ended by Enter and a pause on the new empty line; ' +
      `${trace.sessionsWithAsk} sessions type while a chat answer (160 tokens) streams. Each key cancels the previous provider call; the provider's suggestion cache, ` +
      "adaptive debounce (60–350 ms), prefix/suffix windows (6,000 / 1,500 characters), max 64 tokens and trimming are the extension's. " +
      'Latency is from the `complete` request to the suggestion text the provider would show; the headline counts the requests at pauses, where the user waits for it.',
    '',
    `After this context a prompt token costs ${report.costAfterContext.prefillMsPerToken} ms to feed (128 in one call) and a generated token ${report.costAfterContext.decodeMsPerToken} ms ` +
      `(measured in the same run), so the tokens fed and generated per request are where the time goes; at the medians, ${estimates.join('; ')}.`,
    '',
    table,
    '',
  ].join('\n');
}

function markdown(variants: Record<string, Summary>): string {
  const labels = Object.keys(variants);
  const cell = (s: { p50?: number; p95?: number }) => (s.p50 === undefined ? '–' : `${Math.round(s.p50)} / ${Math.round(s.p95 ?? 0)}`);
  const rows: [string, (s: Summary) => string][] = [
    ['**request → suggestion at a pause, p50 / p95 ms**', (s) => `**${cell(s.latencyPauseMs)}**`],
    ['… where a suggestion was shown', (s) => cell(s.latencyPauseShownMs)],
    ['… typing alone / while a chat answer streams', (s) => `${cell(s.latencyQuietMs)} · ${cell(s.latencyDuringAskMs)}`],
    ['… cursor mid-line / at the end of a line / on a new empty line', (s) => `${cell(s.latencyMidLineMs)} · ${cell(s.latencyEndOfLineMs)} · ${cell(s.latencyBlankLineMs)}`],
    ['any answered request (pauses and between keys), p50 / p95 ms', (s) => cell(s.latencyAllAnsweredMs)],
    ['keystroke → shown (debounce included), p50 / p95 ms', (s) => cell(s.keystrokeToShownMs)],
    ['superseded request answered after, p50 / p95 ms', (s) => cell(s.cancelLetGoMs)],
    ['requests: sent / superseded / at a pause (over 10 s)', (s) => `${s.requests} / ${s.cancelled} / ${s.pauseRequests} (${s.pauseTimedOut})`],
    ['suggestions shown / first line is what was typed next / mean characters right', (s) => `${s.shown} / ${s.correctShown} / ${s.matchedChars.mean ?? '–'}`],
    ['keystrokes: total / served by the provider cache', (s) => `${s.keystrokes} / ${s.servedFromProviderCache}`],
    ['requests reusing the prefix state', (s) => `${s.prefixStateReused} of ${s.answered}`],
    ['tokens fed per request, p50 / p95', (s) => cell(s.fedTokens)],
    ['… of it prefix / suffix, p50', (s) => `${s.prefixTokensFed.p50 ?? '–'} / ${s.suffixTokensFed.p50 ?? '–'}`],
    ['tokens generated per request, p50 / p95', (s) => cell(s.generatedTokens)],
    ['queue / feed / decode ms, p50', (s) => `${s.queueMs.p50 ?? '–'} / ${s.feedMs.p50 ?? '–'} / ${s.decodeMs.p50 ?? '–'}`],
  ];
  return [
    `| measure | ${labels.join(' | ')} |`,
    `|---|${labels.map(() => '---:').join('|')}|`,
    ...rows.map(([name, get]) => `| ${name} | ${labels.map((l) => get(variants[l])).join(' | ')} |`),
  ].join('\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:completion failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
