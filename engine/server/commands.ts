// `panorama rpc` (the engine the extension spawns: JSON-RPC on stdio) and
// `panorama serve` (the OpenAI-compatible HTTP API over one or more workspaces).
import { parseArgs } from 'node:util';
import { stat, realpath } from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import { isDeviceRequest } from '../runtime/device.js';
import { defaultStoreDir } from '../context/workspace-index.js';
import { EngineService, workspaceStoreDir } from './engine-service.js';
import { loadEngineModel } from './model-loader.js';
import { resolveModelArgument } from '../hub/model-cache.js';
import { RpcServer } from './rpc-server.js';
import { HTTP_DEFAULTS, PanoramaHttpServer, isLoopback, type ServedWorkspace } from './http-server.js';
import type { LogLevel } from './engine-service.js';

class CommandUsageError extends Error {}

function integerOption(values: Record<string, unknown>, name: string, min: number): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  const value = Number(raw);
  if (typeof raw !== 'string' || !/^\d+$/.test(raw.trim()) || value < min) throw new CommandUsageError(`--${name} must be an integer ≥ ${min}, got "${String(raw)}"`);
  return value;
}

function stringOption(values: Record<string, unknown>, name: string): string | undefined {
  const raw = values[name];
  return typeof raw === 'string' ? raw : undefined;
}

/** Runs a command body, turning usage mistakes into exit code 2 with the message. */
async function withUsage(run: () => Promise<number>): Promise<number> {
  try {
    return await run();
  } catch (err) {
    if (err instanceof CommandUsageError || (err instanceof TypeError && 'code' in err && String(err.code).startsWith('ERR_PARSE_ARGS'))) {
      process.stderr.write(`panorama: error: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
}

const LOG_LEVELS: readonly LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error'];

function isLogLevel(value: string): value is LogLevel {
  return LOG_LEVELS.some((level) => level === value);
}

/**
 * `panorama rpc`: the extension's engine. stdout carries JSON-RPC frames only;
 * anything else that would print there (a stray console.log) goes to stderr.
 */
export function runRpcCommand(argv: string[], defaultModelDir: () => string): Promise<number> {
  return withUsage(async () => {
    const { values } = parseArgs({ args: argv, options: { threads: { type: 'string' }, 'chunk-size': { type: 'string' }, 'log-level': { type: 'string' } } });
    const level = stringOption(values, 'log-level') ?? 'info';
    if (!isLogLevel(level)) throw new CommandUsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}`);
    const writeStdout = process.stdout.write.bind(process.stdout);
    const frames = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        writeStdout(chunk, (err) => callback(err ?? null));
      },
    });
    process.stdout.write = process.stderr.write.bind(process.stderr);
    console.log = console.error;
    console.info = console.error;
    console.debug = console.error;
    const server = new RpcServer({
      input: process.stdin,
      output: frames,
      defaultModelDir,
      threads: integerOption(values, 'threads', 0),
      chunkSize: integerOption(values, 'chunk-size', 1),
      logLevel: level,
      logSink: (line) => process.stderr.write(line),
    });
    const stop = () => void server.stop('terminated by a signal');
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
    const code = await server.exited;
    process.stdin.destroy();
    // Anything still holding the event loop (a native thread pool) must not keep a dead engine around.
    setTimeout(() => process.exit(code), 2000).unref();
    return code;
  });
}

/** Model ids per workspace: panorama/<folder name>, made unique with -2, -3… */
function modelIds(roots: string[]): string[] {
  const seen = new Map<string, number>();
  return roots.map((root) => {
    const base = `panorama/${path.basename(root) || 'workspace'}`;
    const n = (seen.get(base) ?? 0) + 1;
    seen.set(base, n);
    return n === 1 ? base : `${base}-${n}`;
  });
}

export function runServeCommand(argv: string[], defaultModelDir: () => string): Promise<number> {
  return withUsage(async () => {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        model: { type: 'string' },
        device: { type: 'string', default: 'cpu' },
        threads: { type: 'string' },
        'chunk-size': { type: 'string' },
        store: { type: 'string' },
        exclude: { type: 'string', multiple: true },
        budget: { type: 'string' },
        host: { type: 'string' },
        port: { type: 'string' },
        'api-key': { type: 'string' },
        'max-tokens-cap': { type: 'string' },
        'max-body-bytes': { type: 'string' },
        concurrency: { type: 'string' },
        queue: { type: 'string' },
        'header-timeout-ms': { type: 'string' },
        'body-timeout-ms': { type: 'string' },
        'no-watch': { type: 'boolean' },
      },
    });
    if (positionals.length === 0) throw new CommandUsageError('serve needs at least one workspace directory: panorama serve DIR [DIR...]');
    const host = stringOption(values, 'host') ?? HTTP_DEFAULTS.host;
    const apiKey = stringOption(values, 'api-key') ?? process.env.PANORAMA_API_KEY;
    if (apiKey !== undefined && apiKey.length < 16) throw new CommandUsageError('the API key must be at least 16 characters');
    if (!isLoopback(host) && !apiKey) throw new CommandUsageError(`refusing to listen on ${host} without an API key: anyone who can reach it could read your workspace. Pass --api-key KEY (or set PANORAMA_API_KEY), or bind 127.0.0.1`);
    const port = integerOption(values, 'port', 0) ?? 8080;
    if (port > 65535) throw new CommandUsageError('--port must be at most 65535');
    const device = stringOption(values, 'device') ?? 'cpu';
    if (!isDeviceRequest(device)) throw new CommandUsageError(`--device must be cpu, webgpu, cuda or auto, got "${device}"`);
    const roots: string[] = [];
    for (const dir of positionals) {
      const info = await stat(dir).catch(() => undefined);
      if (!info?.isDirectory()) throw new CommandUsageError(`${dir} is not a directory`);
      roots.push(await realpath(dir));
    }
    const modelDir = resolveModelArgument(stringOption(values, 'model') ?? defaultModelDir());
    const log = (line: string) => process.stderr.write(line);
    const loaded = await loadEngineModel(modelDir, { device, threads: integerOption(values, 'threads', 0), log: (m) => log(`panorama: ${m}\n`) });
    const store = stringOption(values, 'store');
    const exclude = Array.isArray(values.exclude) ? values.exclude.filter((x): x is string => typeof x === 'string') : [];
    const ids = modelIds(roots);
    const workspaces: ServedWorkspace[] = roots.map((root, i) => {
      const service = new EngineService({
        root,
        storeDir: store ? workspaceStoreDir(path.resolve(store), root) : defaultStoreDir(root),
        model: loaded.model,
        tokenizer: loaded.tokenizer,
        modelId: loaded.modelId,
        exclude,
        budget: integerOption(values, 'budget', 1),
        chunkSize: integerOption(values, 'chunk-size', 1),
        watch: values['no-watch'] !== true,
        log: (level, message) => {
          if (level !== 'trace' && level !== 'debug') log(`panorama: ${ids[i]}: ${message}\n`);
        },
      });
      let announced = false;
      service.onStatus((status) => {
        if (status.state === 'ready' && !announced) {
          announced = true;
          log(`panorama: ${ids[i]} ready (${status.files} files, ${status.liveTokens} tokens)\n`);
        }
      });
      return { id: ids[i], service };
    });
    const server = new PanoramaHttpServer({
      workspaces,
      host,
      port,
      apiKey,
      maxBodyBytes: integerOption(values, 'max-body-bytes', 1),
      maxTokensCap: integerOption(values, 'max-tokens-cap', 1),
      concurrency: integerOption(values, 'concurrency', 1),
      queueSize: integerOption(values, 'queue', 0),
      headersTimeoutMs: integerOption(values, 'header-timeout-ms', 1),
      bodyTimeoutMs: integerOption(values, 'body-timeout-ms', 1),
      log,
    });
    const url = await server.listen();
    log(`panorama: serving ${url} (models: ${ids.join(', ')}) on ${loaded.device.kind}\n`);
    for (const w of workspaces) w.service.start();
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    log('panorama: stopping; saving the indexes\n');
    await server.close();
    await Promise.all(workspaces.map((w) => w.service.close()));
    return 0;
  });
}
