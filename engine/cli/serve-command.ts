// `panorama serve`: the OpenAI-compatible HTTP API over one or more workspaces.
import { parseArgs } from 'node:util';
import { stat, realpath } from 'node:fs/promises';
import path from 'node:path';
import { isDeviceRequest } from '../runtime/device.js';
import { defaultStoreDir } from '../context/workspace-index.js';
import { EngineService, workspaceStoreDir } from '../server/engine-service.js';
import { loadEngineModel } from '../server/model-loader.js';
import { HTTP_DEFAULTS, PanoramaHttpServer, isLoopback, type ServedWorkspace } from '../server/http-server.js';
import { integerFlag, stringFlag, UsageError } from './flags.js';
import { resolveModelArgument } from '../hub/model-cache.js';

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

export async function runServeCommand(argv: string[], defaultModelDir: () => string): Promise<number> {
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
  if (positionals.length === 0) throw new UsageError('serve needs at least one workspace directory: panorama serve DIR [DIR...]');
  const host = stringFlag(values, 'host') ?? HTTP_DEFAULTS.host;
  const apiKey = stringFlag(values, 'api-key') ?? process.env.PANORAMA_API_KEY;
  if (apiKey !== undefined && apiKey.length < 16) throw new UsageError('the API key must be at least 16 characters');
  if (!isLoopback(host) && !apiKey)
    throw new UsageError(
      `refusing to listen on ${host} without an API key: anyone who can reach it could read your workspace. Pass --api-key KEY (or set PANORAMA_API_KEY), or bind 127.0.0.1`,
    );
  const port = integerFlag(values, 'port', 0, 65535) ?? 8080;
  const device = stringFlag(values, 'device') ?? 'cpu';
  if (!isDeviceRequest(device)) throw new UsageError(`--device must be cpu, webgpu, cuda or auto, got "${device}"`);
  const roots: string[] = [];
  for (const dir of positionals) {
    const info = await stat(dir).catch(() => undefined);
    if (!info?.isDirectory()) throw new UsageError(`${dir} is not a directory`);
    roots.push(await realpath(dir));
  }
  const modelDir = resolveModelArgument(stringFlag(values, 'model') ?? defaultModelDir());
  const log = (line: string) => process.stderr.write(line);
  const loaded = await loadEngineModel(modelDir, { device, threads: integerFlag(values, 'threads', 0), log: (m) => log(`panorama: ${m}\n`) });
  const store = stringFlag(values, 'store');
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
      budget: integerFlag(values, 'budget', 1),
      chunkSize: integerFlag(values, 'chunk-size', 1),
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
    maxBodyBytes: integerFlag(values, 'max-body-bytes', 1),
    maxTokensCap: integerFlag(values, 'max-tokens-cap', 1),
    concurrency: integerFlag(values, 'concurrency', 1),
    queueSize: integerFlag(values, 'queue', 0),
    headersTimeoutMs: integerFlag(values, 'header-timeout-ms', 1),
    bodyTimeoutMs: integerFlag(values, 'body-timeout-ms', 1),
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
}
