// `panorama` command line: generate, logits, tokenize, index, ask, rpc, serve.
// Flags and output formats are a stable interface (other tools build on them).
// Exit codes: 0 ok, 1 error, 2 usage error (flags.ts), 130 interrupted.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { existsSync, readdirSync } from 'node:fs';
import { readFile, writeFile, rename } from 'node:fs/promises';
import path from 'node:path';
import { isDeviceRequest, isPrecisionRequest, keepsTensorsOnDevice, type DeviceRequest, type PrecisionRequest } from '../runtime/device.js';
import { SalaModel } from '../model/sala-model.js';
import { GraphSession } from '../runtime/session.js';
import { loadTokenizer, FALLBACK_SOURCE, type Tokenizer } from '../model/tokenizer.js';
import { generate } from '../model/generation.js';
import { WorkspaceIndex, defaultStoreDir, type IndexProgress } from '../context/workspace-index.js';
import { modelFingerprint } from '../context/store.js';
import { integerFlag, isUsageError, numberFlag, stringFlag, UsageError } from './flags.js';
import { runRpcCommand } from './rpc-command.js';
import { runServeCommand } from './serve-command.js';
import { convertReporter, runModelsCommand } from './models-command.js';
import { loadModel } from '../hub/converted-form.js';
import { resolveModelArgument } from '../hub/model-cache.js';

const USAGE = `usage: panorama <command> [options]

commands:
  generate  --prompt TEXT | --prompt-file F   stream a continuation
            [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] [--seed S] [--stop S ...]
            [--gpu-kv-mb N]  on a GPU: device memory for the KV block pools (K/V stay in host memory)
            [--precision fp16|fp32|int4|auto]  weights on the device (auto: fp16 on a GPU that runs it, fp32 on the CPU;
                                          int4: 4-bit blocks, about a third of fp16's bytes, slightly less accurate)
  logits    --ids FILE.json --out FILE [--last N] [--prefill K]
            float32 little-endian logits, one row per position (the last N when given);
            with --prefill K the first K ids are one prefill call, the rest single-token decode steps
  tokenize  --text-file F [--decode]           token ids as a JSON array (--decode: ids JSON → text)
  index     DIR [--store S] [--exclude GLOB ...] [--budget N]
            encode a workspace into a persistent context (resumable; Ctrl-C saves and stops)
  ask       DIR "QUESTION" [--store S] [--max-tokens N]
            answer a question over the whole workspace, with the sources the model attended to
  rpc       [--log-level L]                    the engine the editor extension runs: JSON-RPC 2.0 on stdin/stdout
            (protocol: engine/server/protocol.ts); logs go to stderr
  serve     DIR [DIR...] [--host H] [--port N] [--api-key K] [--store S] [--exclude GLOB ...] [--budget N]
            OpenAI-compatible HTTP API, one model id per workspace (panorama/<folder>): /v1/models,
            /v1/completions, /v1/chat/completions (SSE with stream: true), /health, /metrics.
            Binds 127.0.0.1:8080 by default; another host needs --api-key (or PANORAMA_API_KEY).
            Limits: [--max-body-bytes N] (1 MiB) [--max-tokens-cap N] (4096) [--concurrency N] (1)
            [--queue N] (16, then 429) [--header-timeout-ms N] (10000) [--body-timeout-ms N] (30000)

  models    list | pull ORG/NAME[@REV] | add DIR | info NAME | rm NAME
            models from the Hugging Face Hub (HF_ENDPOINT, HF_TOKEN) and local folders; panorama models help

common options:
  --model DIR|NAME     model directory (config.json, *.safetensors, tokenizer.json) or a name from panorama models list;
                       default: the shipped model
  --device cpu|webgpu|cuda|auto   default cpu
  --chunk-size N       prefill chunk in tokens (default 512)
  --threads N          onnxruntime intra-op threads (default: one per core)
  --host-kv-mb N       host memory for a context's sparse-layer K/V; past it the oldest blocks
                       spill to a temp file and are read back on demand (default: 40% of RAM; 0: never)
`;

const COMMON: ParseArgsConfig['options'] = {
  model: { type: 'string' },
  device: { type: 'string', default: 'cpu' },
  'chunk-size': { type: 'string' },
  threads: { type: 'string' },
  'host-kv-mb': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
};

/** The shipped default model: the one model directory under models/ next to the bundle. */
export function defaultModelDir(): string {
  // dist/panorama.js (bundled) and engine/cli/main.ts (source) sit at different depths.
  const root = [path.resolve(__dirname, '..', 'models'), path.resolve(__dirname, '..', '..', 'models')].find((dir) => existsSync(dir)) ?? path.resolve(__dirname, '..', 'models');
  const found = existsSync(root)
    ? readdirSync(root)
        .filter((name) => existsSync(path.join(root, name, 'config.json')))
        .sort()
    : [];
  if (found.length === 0) throw new UsageError(`no --model given and no shipped model found under ${root}; pass --model DIR`);
  return path.join(root, found[0]);
}

async function openModel(values: Record<string, unknown>, precision?: PrecisionRequest): Promise<{ model: SalaModel; modelDir: string }> {
  const device = stringFlag(values, 'device') ?? 'cpu';
  if (!isDeviceRequest(device)) throw new UsageError(`--device must be cpu, webgpu, cuda or auto, got "${device}"`);
  const requested: DeviceRequest = device;
  const modelDir = resolveModelArgument(stringFlag(values, 'model') ?? defaultModelDir());
  if (!existsSync(path.join(modelDir, 'config.json'))) throw new UsageError(`${modelDir} is not a model directory: it has no config.json`);
  const hostKvMb = integerFlag(values, 'host-kv-mb', 0);
  const model = await loadModel(
    modelDir,
    { device: requested, threads: integerFlag(values, 'threads', 0), precision, hostKvBytes: hostKvMb === undefined ? undefined : hostKvMb === 0 ? Infinity : hostKvMb * 2 ** 20 },
    convertReporter(),
  );
  if (model.device.reason !== 'requested') process.stderr.write(`panorama: device ${model.device.kind} (${model.device.reason})\n`);
  if (precision !== undefined && (model.device.kind !== 'cpu' || model.precision.kind === 'int4') && model.precision.reason !== 'requested')
    process.stderr.write(`panorama: precision ${model.precision.kind} (${model.precision.reason})\n`);
  return { model, modelDir };
}

async function openTokenizer(modelDir: string, vocabSize: number): Promise<Tokenizer> {
  const tokenizer = await loadTokenizer(modelDir, vocabSize);
  if (tokenizer.source === FALLBACK_SOURCE) process.stderr.write(`panorama: ${modelDir} has no tokenizer.json; using the ${FALLBACK_SOURCE}\n`);
  return tokenizer;
}

async function runGenerate(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...COMMON,
      prompt: { type: 'string' },
      'prompt-file': { type: 'string' },
      'max-tokens': { type: 'string' },
      temperature: { type: 'string' },
      'top-p': { type: 'string' },
      'top-k': { type: 'string' },
      seed: { type: 'string' },
      stop: { type: 'string', multiple: true },
      'gpu-kv-mb': { type: 'string' },
      precision: { type: 'string' },
    },
  });
  const gpuKvMb = integerFlag(values, 'gpu-kv-mb', 1);
  const precision = stringFlag(values, 'precision') ?? 'auto';
  if (!isPrecisionRequest(precision)) throw new UsageError(`--precision must be fp16, fp32, int4 or auto, got "${precision}"`);
  const promptFile = stringFlag(values, 'prompt-file');
  const prompt = promptFile !== undefined ? await readFile(promptFile, 'utf8') : stringFlag(values, 'prompt');
  if (prompt === undefined) throw new UsageError('generate needs --prompt TEXT or --prompt-file F');
  if (prompt.length === 0) throw new UsageError('the prompt is empty');
  const maxTokens = integerFlag(values, 'max-tokens', 0);
  const chunkSize = integerFlag(values, 'chunk-size', 1);
  const sampling = {
    temperature: numberFlag(values, 'temperature'),
    topP: numberFlag(values, 'top-p'),
    topK: integerFlag(values, 'top-k', 0),
    seed: integerFlag(values, 'seed', Number.MIN_SAFE_INTEGER),
  };
  const { model, modelDir } = await openModel(values, precision);
  const tokenizer = await openTokenizer(modelDir, model.config.vocabSize);

  // Ctrl-C stops generation before the next token; a second Ctrl-C exits at once.
  const interrupt = interruptController();
  try {
    const resident = gpuKvMb !== undefined && keepsTensorsOnDevice(model.device.kind) ? { poolBytes: gpuKvMb * 2 ** 20 } : undefined;
    const stream = generate(model, tokenizer, prompt, { ...sampling, maxTokens, chunkSize, stop: values.stop ?? [], signal: interrupt.signal, resident });
    let next = await stream.next();
    while (!next.done) {
      process.stdout.write(next.value);
      next = await stream.next();
    }
    const result = next.value;
    process.stdout.write('\n');
    process.stderr.write(
      `panorama: ${result.promptTokens} prompt tokens, ${result.tokens.length} generated (${result.finishReason}); ` +
        `prefill ${result.prefillMs.toFixed(0)} ms (${((result.promptTokens / result.prefillMs) * 1000).toFixed(0)} tok/s), ` +
        `decode ${result.decodeMsPerToken.toFixed(1)} ms/token on ${model.device.kind}\n`,
    );
    return result.finishReason === 'cancelled' ? 130 : 0;
  } catch (err) {
    if (interrupt.signal.aborted) {
      process.stdout.write('\n');
      return 130;
    }
    throw err;
  } finally {
    interrupt.dispose();
  }
}

function parseIds(text: string, source: string): number[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`${source} is not valid JSON: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (!Array.isArray(parsed) || !parsed.every((x) => Number.isInteger(x))) throw new UsageError(`${source} must hold a JSON array of integer token ids`);
  return parsed;
}

/** Writes a file atomically: a reader never sees a half-written file. */
async function writeAtomically(file: string, data: Uint8Array | string): Promise<void> {
  const partial = `${file}.partial-${process.pid}`;
  await writeFile(partial, data);
  await rename(partial, file);
}

async function runLogits(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { ...COMMON, ids: { type: 'string' }, out: { type: 'string' }, last: { type: 'string' }, prefill: { type: 'string' } },
  });
  const idsFile = stringFlag(values, 'ids');
  const out = stringFlag(values, 'out');
  if (!idsFile || !out) throw new UsageError('logits needs --ids FILE.json and --out FILE');
  const ids = parseIds(await readFile(idsFile, 'utf8'), idsFile);
  if (ids.length === 0) throw new UsageError(`${idsFile} holds no token ids`);
  const last = integerFlag(values, 'last', 1) ?? ids.length;
  const prefill = integerFlag(values, 'prefill', 1) ?? ids.length;
  if (prefill > ids.length) throw new UsageError(`--prefill ${prefill} is more than the ${ids.length} ids given`);
  const rowsWanted = Math.min(last, ids.length);
  const { model } = await openModel(values);
  const chunkSize = integerFlag(values, 'chunk-size', 1);
  const vocab = model.config.vocabSize;
  const sequence = model.newSequence(ids.length);
  const logits = new Float32Array(rowsWanted * vocab);
  const firstRow = ids.length - rowsWanted; // position of the first row written
  // The prefill call returns the rows among its positions that are wanted.
  const prefillRows = Math.max(0, prefill - firstRow);
  const prefillLogits = await model.forward(sequence, ids.slice(0, prefill), { logits: Math.max(prefillRows, 1), chunkSize });
  if (prefillRows > 0) logits.set(prefillLogits.subarray(prefillLogits.length - prefillRows * vocab));
  for (let position = prefill; position < ids.length; position++) {
    const row = await model.forward(sequence, [ids[position]]);
    if (position >= firstRow) logits.set(row, (position - firstRow) * vocab);
  }
  await writeAtomically(out, new Uint8Array(logits.buffer));
  process.stderr.write(`panorama: wrote ${rowsWanted} × ${vocab} float32 logits to ${out}\n`);
  return 0;
}

async function runTokenize(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { ...COMMON, 'text-file': { type: 'string' }, decode: { type: 'boolean' } } });
  const textFile = stringFlag(values, 'text-file');
  if (!textFile) throw new UsageError('tokenize needs --text-file F');
  const modelDir = resolveModelArgument(stringFlag(values, 'model') ?? defaultModelDir());
  const { loadConfig } = await import('../model/config.js');
  const config = await loadConfig(modelDir);
  const tokenizer = await openTokenizer(modelDir, config.vocabSize);
  const input = await readFile(textFile, 'utf8');
  if (values.decode) {
    const ids = parseIds(input, textFile);
    const bad = ids.find((id) => id < 0 || id >= config.vocabSize);
    if (bad !== undefined) throw new UsageError(`token id ${bad} is outside the vocabulary [0, ${config.vocabSize})`);
    process.stdout.write(tokenizer.decode(ids));
  } else {
    process.stdout.write(`${JSON.stringify(tokenizer.encode(input, { addSpecialTokens: false }))}\n`);
  }
  return 0;
}

const INDEX_OPTIONS = {
  ...COMMON,
  store: { type: 'string' },
  exclude: { type: 'string', multiple: true },
  budget: { type: 'string' },
  'max-file-bytes': { type: 'string' },
} as const;

function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

/** A one-line progress display on stderr (redrawn in place on a terminal, a line every few seconds otherwise). */
function progressPrinter(): (p: IndexProgress) => void {
  let lastLine = 0;
  return (p) => {
    const now = performance.now();
    if (p.phase === 'encode' && !process.stderr.isTTY && now - lastLine < 5000 && p.filesDone < p.filesTotal) return;
    lastLine = now;
    const width = 24;
    const share = p.tokensTotal > 0 ? p.tokensDone / p.tokensTotal : 1;
    const bar = `[${'#'.repeat(Math.round(share * width)).padEnd(width, ' ')}]`;
    const line =
      p.phase === 'scan'
        ? 'scanning…'
        : `${bar} ${p.filesDone}/${p.filesTotal} files · ${p.tokensDone.toLocaleString('en-US')}/${p.tokensTotal.toLocaleString('en-US')} tokens · ` +
          `${Math.round(p.tokensPerSecond).toLocaleString('en-US')} tok/s${p.etaSeconds !== undefined && p.phase === 'encode' ? ` · ETA ${formatDuration(p.etaSeconds)}` : ''}`;
    process.stderr.write(process.stderr.isTTY ? `\r\x1b[2K${line}${p.phase === 'ready' ? '\n' : ''}` : `${line}\n`);
  };
}

async function openIndex(values: Record<string, unknown>, root: string, signal: AbortSignal, onProgress?: (p: IndexProgress) => void) {
  const { stat } = await import('node:fs/promises');
  const info = await stat(root).catch(() => undefined);
  if (!info?.isDirectory()) throw new UsageError(`${root} is not a directory`);
  const { model, modelDir } = await openModel(values);
  const tokenizer = await openTokenizer(modelDir, model.config.vocabSize);
  const storeDir = path.resolve(stringFlag(values, 'store') ?? defaultStoreDir(root));
  const exclude = values.exclude;
  const { index, report } = await WorkspaceIndex.open(root, model, tokenizer, {
    storeDir,
    modelId: await modelFingerprint(modelDir),
    exclude: Array.isArray(exclude) ? exclude.filter((x): x is string => typeof x === 'string') : [],
    budget: integerFlag(values, 'budget', 1),
    maxFileBytes: integerFlag(values, 'max-file-bytes', 1),
    chunkSize: integerFlag(values, 'chunk-size', 1),
    signal,
    onProgress,
    log: (message) => {
      if (process.env.PANORAMA_VERBOSE) process.stderr.write(`panorama: ${message}\n`);
    },
  });
  return { index, report, storeDir };
}

/** Ctrl-C aborts the running work (saved state is kept); a second Ctrl-C exits at once. */
function interruptController(): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  const onInterrupt = () => {
    if (controller.signal.aborted) process.exit(130);
    controller.abort(new Error('interrupted'));
  };
  process.on('SIGINT', onInterrupt);
  return { signal: controller.signal, dispose: () => process.off('SIGINT', onInterrupt) };
}

async function runIndex(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: INDEX_OPTIONS, allowPositionals: true });
  if (positionals.length !== 1) throw new UsageError('index needs exactly one workspace directory');
  const root = path.resolve(positionals[0]);
  const interrupt = interruptController();
  try {
    const { index, report, storeDir } = await openIndex(values, root, interrupt.signal, progressPrinter());
    await index.close();
    const skippedByReason = new Map<string, number>();
    for (const s of report.skipped) skippedByReason.set(s.reason, (skippedByReason.get(s.reason) ?? 0) + 1);
    process.stderr.write(
      `panorama: ${report.files} files, ${report.tokens.toLocaleString('en-US')} tokens in context ` +
        `(${report.encodedTokens.toLocaleString('en-US')} encoded now, ${report.store.restoredTokens.toLocaleString('en-US')} reopened from the store) in ${report.seconds.toFixed(1)} s\n` +
        `panorama: store ${storeDir}\n` +
        (skippedByReason.size ? `panorama: skipped ${[...skippedByReason].map(([r, n]) => `${n} ${r}`).join(', ')}\n` : '') +
        (report.excluded.length
          ? `panorama: left out for the token budget: ${report.excluded.length} files, ${report.excluded.reduce((n, e) => n + e.tokens, 0).toLocaleString('en-US')} tokens ` +
            `(${report.excluded
              .slice(0, 5)
              .map((e) => e.path)
              .join(', ')}${report.excluded.length > 5 ? ', …' : ''}; PANORAMA_VERBOSE=1 lists each)\n`
          : ''),
    );
    return 0;
  } catch (err) {
    if (interrupt.signal.aborted) {
      process.stderr.write('\npanorama: interrupted; what was encoded is saved — run the same command to resume\n');
      return 130;
    }
    throw err;
  } finally {
    interrupt.dispose();
  }
}

async function runAsk(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: { ...INDEX_OPTIONS, 'max-tokens': { type: 'string' } }, allowPositionals: true });
  if (positionals.length !== 2) throw new UsageError('ask needs a workspace directory and a question: panorama ask DIR "QUESTION"');
  const [dir, question] = positionals;
  if (question.trim() === '') throw new UsageError('the question is empty');
  const interrupt = interruptController();
  try {
    const { index } = await openIndex(values, path.resolve(dir), interrupt.signal, process.stderr.isTTY ? progressPrinter() : undefined);
    const stream = index.ask(question, { maxTokens: integerFlag(values, 'max-tokens', 1) ?? 256, signal: interrupt.signal });
    let next = await stream.next();
    while (!next.done) {
      process.stdout.write(next.value);
      next = await stream.next();
    }
    process.stdout.write('\n');
    const { locations, sources } = next.value;
    for (const place of locations) process.stdout.write(`→ ${place.path}:${place.line}  ${place.text}\n`);
    if (sources.length) {
      process.stdout.write('\nsources:\n');
      for (const s of sources) process.stdout.write(`  ${s.path}:${s.startLine}-${s.endLine} (${Math.round(s.weight * 100)}%)\n`);
    }
    await index.close();
    return next.value.finishReason === 'cancelled' ? 130 : 0;
  } catch (err) {
    if (interrupt.signal.aborted) return 130;
    throw err;
  } finally {
    interrupt.dispose();
  }
}

const COMMANDS: Record<string, (argv: string[]) => Promise<number>> = {
  generate: runGenerate,
  logits: runLogits,
  tokenize: runTokenize,
  index: runIndex,
  ask: runAsk,
  rpc: (argv) => runRpcCommand(argv, defaultModelDir),
  serve: (argv) => runServeCommand(argv, defaultModelDir),
  models: (argv) => runModelsCommand(argv, defaultModelDir),
};

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(USAGE);
    return command ? 0 : 2;
  }
  const run = COMMANDS[command];
  if (!run) {
    process.stderr.write(`panorama: unknown command "${command}"\n\n${USAGE}`);
    return 2;
  }
  if (command !== 'models' && (rest.includes('--help') || rest.includes('-h'))) {
    process.stdout.write(USAGE);
    return 0;
  }
  try {
    return await run(rest);
  } catch (err) {
    const usage = isUsageError(err);
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`panorama: error: ${message}\n`);
    if (process.env.PANORAMA_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    return usage ? 2 : 1;
  }
}

/** Runs the CLI as a process: sets the exit code, never throws. */
export function run(argv: string[]): void {
  const started = performance.now();
  main(argv).then(
    (code) => {
      process.exitCode = code;
      if (GraphSession.profile) process.stderr.write(profileReport(performance.now() - started));
    },
    (err: unknown) => {
      process.stderr.write(`panorama: fatal: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}

// `node dist/panorama.js …` runs the CLI too (bin/panorama.js and the extension call run()).
if (require.main === module) run(process.argv.slice(2));

/** PANORAMA_PROFILE_RUNS: where the command's wall time went, by graph (what is left is the engine's own work). */
function profileReport(wallMs: number): string {
  const entries = [...GraphSession.foldedProfile()].sort((a, b) => b[1].ms - a[1].ms);
  const inRuns = entries.reduce((sum, [, entry]) => sum + entry.ms, 0);
  const lines = entries.map(([name, entry]) => `  ${name}: ${entry.runs} runs, ${(entry.ms / 1000).toFixed(2)} s`);
  return `panorama: ${(wallMs / 1000).toFixed(1)} s in all, ${(inRuns / 1000).toFixed(1)} s in session runs:\n${lines.join('\n')}\n`;
}
