// `panorama models list|pull|add|info|rm`: the models this machine has, and getting more
// from the Hugging Face Hub with the memory they need said before anything is fetched.
import { parseArgs } from 'node:util';
import path from 'node:path';
import { parseConfig } from '../model/config.js';
import { checkFit, estimateFit, gb, FIT_PRECISIONS, RATE_BASIS, type FitDevice, type FitPrecision, type Machine } from '../hub/fit.js';
import { probeMachine } from '../hub/machine.js';
import { hubSettings, parseRepoRef } from '../hub/hub-endpoint.js';
import { listModels, panoramaHome, partialDownloads, registerModel, removeModel, resolveModelArgument, type ModelEntry } from '../hub/model-cache.js';
import { summarizeModel } from '../hub/model-summary.js';
import { pullModel } from '../hub/pull.js';
import { formatBytes, type PullProgress } from '../hub/download-progress.js';
import type { ConvertEvent } from '../hub/converted-form.js';

export class ModelsUsageError extends Error {}
/** A model that does not fit this machine: an error (exit 1), not a usage mistake. */
export class ModelDoesNotFitError extends Error {}

const USAGE = `usage: panorama models <list|pull|add|info|rm> [options]
  list [--json]                         the shipped model, downloaded and added models (size, precision, folder)
  pull ORG/NAME[@REVISION]              download from the Hugging Face Hub (HF_ENDPOINT, HF_TOKEN) into PANORAMA_HOME;
       [--device cpu|gpu|auto] [--precision fp32|fp16|int4|auto] [--context N]
       [--memory-gb N] [--gpu-memory-gb N] [--force] [--json]
                                        refuses a model that does not fit (--force pulls anyway); resumable
  add DIR [--name NAME]                 register a local model folder under a name
  info NAME|DIR [--context N] [--memory-gb N] [--gpu-memory-gb N]
                                        config, parameters, files, and what it needs on this machine
  rm NAME                               remove a download (or forget an added folder; its files stay)
`;

/** The engine's default token budget for a workspace (engine/context/workspace-index.ts). */
const DEFAULT_CONTEXT = 1_048_576;

function numberOption(values: Record<string, unknown>, name: string, min: number): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  const value = Number(raw);
  if (typeof raw !== 'string' || raw.trim() === '' || !Number.isFinite(value) || value < min)
    throw new ModelsUsageError(`--${name} must be a number ≥ ${min}, got "${String(raw)}"`);
  return value;
}

const MACHINE_OPTIONS = {
  context: { type: 'string' },
  'memory-gb': { type: 'string' },
  'gpu-memory-gb': { type: 'string' },
} as const;

async function machineOf(values: Record<string, unknown>): Promise<Machine> {
  return probeMachine({ memoryGb: numberOption(values, 'memory-gb', 0.1), gpuMemoryGb: numberOption(values, 'gpu-memory-gb', 0.1) });
}

function fitTarget(values: Record<string, unknown>, machine: Machine): { device: FitDevice; precision: FitPrecision } {
  const deviceFlag = typeof values.device === 'string' ? values.device : 'auto';
  if (!['cpu', 'gpu', 'cuda', 'webgpu', 'auto'].includes(deviceFlag)) throw new ModelsUsageError(`--device must be cpu, gpu or auto, got "${deviceFlag}"`);
  const device: FitDevice = deviceFlag === 'cpu' ? 'cpu' : deviceFlag === 'auto' ? (machine.gpuMemoryBytes !== undefined ? 'gpu' : 'cpu') : 'gpu';
  const precisionFlag = typeof values.precision === 'string' ? values.precision : 'auto';
  if (precisionFlag !== 'auto' && !FIT_PRECISIONS.some((p) => p === precisionFlag))
    throw new ModelsUsageError(`--precision must be fp32, fp16, int4 or auto, got "${precisionFlag}"`);
  // 'auto' is what the engine picks: fp16 on a GPU, fp32 on the CPU.
  const precision = FIT_PRECISIONS.find((p) => p === precisionFlag) ?? (device === 'gpu' ? 'fp16' : 'fp32');
  return { device, precision };
}

function duration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  return s >= 3600
    ? `${Math.floor(s / 3600)}:${String(Math.floor(s / 60) % 60).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`
    : `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

function progressLine(p: PullProgress): string {
  const width = 24;
  const share = p.bytesTotal > 0 ? p.bytesDone / p.bytesTotal : 1;
  const bar = `[${'#'.repeat(Math.round(share * width)).padEnd(width, ' ')}]`;
  const eta = p.etaSeconds !== undefined ? ` · ETA ${duration(p.etaSeconds)}` : '';
  return `${bar} ${formatBytes(p.bytesDone)} / ${formatBytes(p.bytesTotal)} · ${formatBytes(p.bytesPerSecond)}/s${eta} · ${p.file} (${p.fileIndex + 1}/${p.files})`;
}

/** Ctrl-C (or SIGTERM) stops the pull; what arrived is kept for the next run. */
function interruptible(): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  const stop = () => {
    if (controller.signal.aborted) process.exit(130);
    controller.abort(new Error('interrupted'));
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  return { signal: controller.signal, dispose: () => (process.off('SIGINT', stop), process.off('SIGTERM', stop)) };
}

interface Listed {
  name: string;
  kind: 'default' | ModelEntry['kind'];
  dir: string;
  parameters?: number;
  precision?: string;
  diskBytes?: number;
  problem?: string;
}

async function describe(entry: { name: string; kind: Listed['kind']; dir: string }): Promise<Listed> {
  try {
    const s = await summarizeModel(entry.dir);
    return { ...entry, parameters: s.parameters, precision: s.precision, diskBytes: s.diskBytes };
  } catch (err) {
    return { ...entry, problem: err instanceof Error ? err.message : String(err) };
  }
}

function parametersText(n: number | undefined): string {
  if (n === undefined) return '?';
  return n >= 1e9 ? `${(n / 1e9).toFixed(2)}B` : `${(n / 1e6).toFixed(1)}M`;
}

async function runList(argv: string[], defaultModelDir: () => string): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { json: { type: 'boolean' } } });
  const home = panoramaHome();
  const shipped = (() => {
    try {
      const dir = defaultModelDir();
      return [{ name: path.basename(dir), kind: 'default' as const, dir }];
    } catch {
      return [];
    }
  })();
  const models = await Promise.all([...shipped, ...listModels(home)].map(describe));
  const partial = partialDownloads(home);
  if (values.json) {
    process.stdout.write(`${JSON.stringify({ home, models, partial })}\n`);
    return 0;
  }
  for (const m of models) {
    const detail = m.problem ? `unreadable: ${m.problem}` : `${parametersText(m.parameters)} parameters, ${m.precision}, ${formatBytes(m.diskBytes ?? 0)}`;
    process.stdout.write(`${m.name.padEnd(32)} ${m.kind.padEnd(8)} ${detail}\n${''.padEnd(42)}${m.dir}\n`);
  }
  for (const p of partial)
    process.stdout.write(`${p.repo.padEnd(32)} partial  ${formatBytes(p.bytes)} so far, not usable: panorama models pull ${p.repo} resumes it\n${''.padEnd(42)}${p.dir}\n`);
  return 0;
}

function printNeeds(out: (line: string) => void, config: ReturnType<typeof parseConfig>, machine: Machine, context: number): void {
  const gpu = machine.gpuMemoryBytes !== undefined ? `${machine.gpuName ?? 'GPU'}, ${gb(machine.gpuMemoryBytes)} GB` : 'no GPU found';
  out(`needs at ${context.toLocaleString('en-US')} tokens of context (this machine: ${gb(machine.hostMemoryBytes)} GB of memory, ${gpu}):`);
  out('  device precision  weights  memory(load/run)  GPU memory  index tok/s  decode ms/token  here');
  for (const device of ['cpu', 'gpu'] as const) {
    for (const precision of FIT_PRECISIONS) {
      const e = estimateFit(config, device, precision, context);
      const verdict = checkFit(config, machine, device, precision, context);
      const here = verdict.fits ? 'fits' : device === 'gpu' && machine.gpuMemoryBytes === undefined ? '–' : 'does not fit';
      out(
        `  ${device.padEnd(6)} ${precision.padEnd(9)} ${`${gb(e.weightBytes)} GB`.padStart(8)}  ${`${gb(e.hostLoadBytes)}/${gb(e.hostRunBytes)} GB`.padStart(16)}  ${(device === 'gpu' ? `${gb(e.gpuBytes)} GB` : '–').padStart(10)}  ` +
          `${e.indexTokensPerSecond.toFixed(e.indexTokensPerSecond < 10 ? 1 : 0).padStart(11)}  ${e.decodeMsPerToken.toFixed(0).padStart(15)}  ${here}`,
      );
    }
  }
  out(
    `  memory(run) counts the sparse layers' K/V of the whole context (${formatBytes(estimateFit(config, 'cpu', 'fp32', 1).kvBytesPerToken)} a token); past 40% of RAM it spills to disk.`,
  );
  out(`  speed: CPU ${RATE_BASIS.cpu}; GPU ${RATE_BASIS.gpu}.`);
}

async function runPull(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { ...MACHINE_OPTIONS, device: { type: 'string' }, precision: { type: 'string' }, force: { type: 'boolean' }, json: { type: 'boolean' } },
  });
  if (positionals.length !== 1) throw new ModelsUsageError('pull needs one model id: panorama models pull ORG/NAME[@REVISION], e.g. openbmb/MiniCPM-SALA');
  const ref = parseRepoRef(positionals[0]);
  const machine = await machineOf(values);
  const target = fitTarget(values, machine);
  const context = numberOption(values, 'context', 1) ?? DEFAULT_CONTEXT;
  const json = values.json === true;
  const emit = (event: object) => process.stdout.write(`${JSON.stringify(event)}\n`);
  const say = (line: string) => (json ? emit({ type: 'log', message: line }) : process.stderr.write(`panorama: ${line}\n`));
  let lastDraw = 0;
  const interrupt = interruptible();
  try {
    const result = await pullModel(ref, {
      settings: hubSettings(),
      home: panoramaHome(),
      signal: interrupt.signal,
      log: say,
      checkFit: (raw) => {
        const config = parseConfig(raw, `${ref.repo}/config.json`);
        const verdict = checkFit(config, machine, target.device, target.precision, context);
        const e = verdict.estimate;
        say(
          `${ref.repo}: ${parametersText(e.parameters)} parameters; on the ${target.device === 'gpu' ? 'GPU' : 'CPU'} in ${target.precision} at ${context.toLocaleString('en-US')} tokens: ` +
            `${gb(e.hostLoadBytes)} GB of memory to load${target.device === 'gpu' ? `, ${gb(e.gpuBytes)} GB of GPU memory` : `, ${gb(e.hostRunBytes)} GB to run`}; ` +
            `about ${e.indexTokensPerSecond.toFixed(e.indexTokensPerSecond < 10 ? 1 : 0)} tok/s to index, ${e.decodeMsPerToken.toFixed(0)} ms a token to answer`,
        );
        if (json) emit({ type: 'fit', fits: verdict.fits, reason: verdict.reason, estimate: e });
        if (verdict.fits) return;
        if (values.force) say(`warning: ${verdict.reason} (pulling anyway: --force)`);
        else throw new ModelDoesNotFitError(`${ref.repo} ${verdict.reason}. Nothing was downloaded but its config; --force pulls it anyway`);
      },
      onProgress: (p) => {
        const now = performance.now();
        const last = p.bytesDone >= p.bytesTotal;
        if (json) {
          if (now - lastDraw > 250 || last) emit({ type: 'progress', ...p });
        } else if (process.stderr.isTTY ? now - lastDraw > 100 || last : now - lastDraw > 2000) {
          process.stderr.write(process.stderr.isTTY ? `\r\x1b[2K${progressLine(p)}` : `${progressLine(p)}\n`);
        } else return;
        lastDraw = now;
      },
    });
    if (!json && process.stderr.isTTY && lastDraw > 0) process.stderr.write('\n');
    const { model } = result;
    if (json) emit({ type: 'done', name: model.name, dir: model.dir, commit: model.commit, alreadyThere: result.alreadyThere });
    else
      process.stdout.write(
        `${result.alreadyThere ? 'already downloaded' : 'downloaded'}: ${model.name} (commit ${model.commit?.slice(0, 12)}) in ${model.dir}\nuse it with --model ${model.name}\n`,
      );
    return 0;
  } catch (err) {
    if (interrupt.signal.aborted) {
      const message = `interrupted; what arrived is kept: run \`panorama models pull ${positionals[0]}\` again to resume`;
      if (json) emit({ type: 'error', message });
      else process.stderr.write(`\npanorama: ${message}\n`);
      return 130;
    }
    if (json) emit({ type: 'error', message: err instanceof Error ? err.message : String(err) });
    throw err;
  } finally {
    interrupt.dispose();
  }
}

async function runAdd(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { name: { type: 'string' } } });
  if (positionals.length !== 1) throw new ModelsUsageError('add needs one model folder: panorama models add DIR [--name NAME]');
  const dir = path.resolve(positionals[0]);
  await summarizeModel(dir); // refuses a folder the engine cannot read, before it is listed
  const entry = registerModel(panoramaHome(), dir, typeof values.name === 'string' ? values.name : undefined);
  process.stdout.write(`added ${entry.name}: ${entry.dir}\nuse it with --model ${entry.name}\n`);
  return 0;
}

/** The shipped model answers to its folder's name too. */
function shippedDir(name: string, defaultModelDir: () => string): string | undefined {
  try {
    const dir = defaultModelDir();
    return path.basename(dir) === name ? dir : undefined;
  } catch {
    return undefined;
  }
}

async function runInfo(argv: string[], defaultModelDir: () => string): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: MACHINE_OPTIONS });
  if (positionals.length !== 1) throw new ModelsUsageError('info needs a model name or folder: panorama models info NAME');
  const dir = shippedDir(positionals[0], defaultModelDir) ?? resolveModelArgument(positionals[0]);
  const s = await summarizeModel(dir);
  const c = s.config;
  const sparse = c.mixerTypes.flatMap((m, i) => (m === 'minicpm4' ? [i] : []));
  const out = (line: string) => process.stdout.write(`${line}\n`);
  out(`${positionals[0]}  (${dir})`);
  out(`  ${parametersText(s.parameters)} parameters (${s.parameters.toLocaleString('en-US')}), stored as ${s.precision}, ${formatBytes(s.diskBytes)} on disk`);
  out(`  ${c.numHiddenLayers} layers: sparse (minicpm4) ${sparse.join(', ')}; the other ${c.numHiddenLayers - sparse.length} Lightning`);
  out(
    `  width ${c.hiddenSize}, MLP ${c.intermediateSize}, ${c.numAttentionHeads} heads (${c.numKeyValueHeads} KV heads in sparse layers), head dim ${c.headDim}, vocabulary ${c.vocabSize}`,
  );
  out(`  sparse attention: blocks of ${c.sparse.blockSize}, top ${c.sparse.topk} + a ${c.sparse.windowSize}-token window, dense below ${c.sparse.denseLen} tokens`);
  out('  files:');
  for (const f of s.files) out(`    ${f.name.padEnd(40)} ${formatBytes(f.bytes).padStart(10)}`);
  printNeeds(out, c, await machineOf(values), numberOption(values, 'context', 1) ?? DEFAULT_CONTEXT);
  return 0;
}

function runRemove(argv: string[]): number {
  const { positionals } = parseArgs({ args: argv, allowPositionals: true, options: {} });
  if (positionals.length !== 1) throw new ModelsUsageError('rm needs one model name: panorama models rm NAME (panorama models list shows them)');
  const { removed, deletedFiles } = removeModel(panoramaHome(), positionals[0]);
  for (const m of removed) process.stdout.write(`${deletedFiles ? 'removed' : 'forgot'} ${m.name}: ${m.dir}${deletedFiles ? '' : ' (its files stay)'}\n`);
  return 0;
}

/** stderr lines for the first int4 load's conversion (and the fast path after it). */
export function convertReporter(): (event: ConvertEvent) => void {
  let last = 0;
  return (event) => {
    const now = performance.now();
    if (event.phase === 'convert' && now - last > 1000) process.stderr.write(`panorama: converting to int4 once: ${event.done} matrices so far\n`);
    else if (event.phase === 'read' && event.done === event.total) process.stderr.write(`panorama: int4 form read from ${event.file}\n`);
    else if (event.phase === 'written') process.stderr.write(`panorama: wrote the int4 form (${formatBytes(event.bytes ?? 0)}) to ${event.file}; later loads read it\n`);
    else if (event.phase === 'unwritable') process.stderr.write(`panorama: could not keep the int4 form at ${event.file} (${event.reason}); every load converts again\n`);
    else return;
    last = now;
  };
}

export async function runModelsCommand(argv: string[], defaultModelDir: () => string): Promise<number> {
  const [sub, ...rest] = argv;
  if (!sub || sub === 'help' || argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(USAGE);
    return sub ? 0 : 2;
  }
  try {
    switch (sub) {
      case 'list':
        return await runList(rest, defaultModelDir);
      case 'pull':
        return await runPull(rest);
      case 'add':
        return await runAdd(rest);
      case 'info':
        return await runInfo(rest, defaultModelDir);
      case 'rm':
        return runRemove(rest);
      default:
        throw new ModelsUsageError(`unknown models command "${sub}"\n\n${USAGE}`);
    }
  } catch (err) {
    if (err instanceof ModelsUsageError || (err instanceof TypeError && 'code' in err && String(err.code).startsWith('ERR_PARSE_ARGS'))) {
      process.stderr.write(`panorama: error: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
}
