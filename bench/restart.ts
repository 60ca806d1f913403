// Restart-to-ready of a 1M-token store: a store of the default model's geometry
// (token ids, every sparse layer's K/V, lightning checkpoints, 4,000 file spans) is
// written directly through ContextStore — its load path does no model compute, so
// the values need not come from the model — then reopened and restored, timed.
//
// Then, on the restored context, edit-to-fresh at that length: a real source file of
// about 1,000 lines (eslint's, installed from npm) is added after the whole context
// (what a large edit costs too: the whole new version goes last), then one line of it
// is edited in the middle and one near the end (each a patch: the line goes last).
//
//   npm run bench:restart -- [--tokens 1000000] [--model DIR] [--device cpu|webgpu] [--out FILE.json] [--skip-edit] [--skip-spill] [--file F.js]
import { parseArgs } from 'node:util';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SalaModel } from '../engine/model/sala-model.js';
import { loadTokenizer, type Tokenizer } from '../engine/model/tokenizer.js';
import { ContextStore } from '../engine/context/store.js';
import { WorkspaceContext, type FileSpan } from '../engine/context/workspace-context.js';
import { defaultModelDir } from '../engine/cli/main.js';
import type { DeviceRequest } from '../engine/runtime/device.js';

const { values } = parseArgs({
  options: {
    tokens: { type: 'string', default: '1000000' },
    model: { type: 'string' },
    out: { type: 'string' },
    'skip-edit': { type: 'boolean', default: false },
    'restart-from': { type: 'string' },
    device: { type: 'string', default: 'cpu' },
    file: { type: 'string' },
    'skip-spill': { type: 'boolean', default: false },
  },
});

/** The eslint source file closest to 1,000 lines. */
function thousandLineFile(): { path: string; text: string; lines: number } {
  if (values.file) {
    // Given (a machine without eslint installed gets a copy of the file).
    const text = readFileSync(values.file, 'utf8');
    return { path: path.basename(values.file), text, lines: text.split('\n').length };
  }
  const root = path.resolve(__dirname, '../node_modules/eslint/lib');
  let best: { path: string; text: string; lines: number } | undefined;
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.name.endsWith('.js')) {
        const text = readFileSync(full, 'utf8');
        const lines = text.split('\n').length;
        if (!best || Math.abs(lines - 1000) < Math.abs(best.lines - 1000)) best = { path: path.relative(root, full), text, lines };
      }
    }
  };
  walk(root);
  if (!best) throw new Error('no eslint sources in node_modules (npm ci first)');
  return best;
}
const tokens = Number(values.tokens);

/** Opens a store and restores its context until block selection can run; the time that takes. */
async function restart(model: SalaModel, tokenizer: Tokenizer, dir: string): Promise<{ ms: number; context: WorkspaceContext; store: ContextStore }> {
  const started = performance.now();
  const store = new ContextStore(dir, 'restart-bench');
  const { state, report } = await store.load(model);
  if (!state) throw new Error(`store did not load: ${report.notes.join('; ')}`);
  const context = WorkspaceContext.restore(model, tokenizer, { budget: tokens + 100_000 }, state);
  // Ready = block selection can run: the compressed keys over the whole context are there (restored, not re-pooled).
  for (const cache of context.sequence.sparse.values()) cache.compressedKeys();
  return { ms: performance.now() - started, context, store };
}

async function main(): Promise<void> {
  const modelDir = path.resolve(values.model ?? defaultModelDir());
  const model = await SalaModel.load(modelDir, { device: values['restart-from'] ? 'cpu' : (values.device as DeviceRequest) });
  const tokenizer = await loadTokenizer(modelDir, model.config.vocabSize);
  if (values['restart-from']) {
    // A restart is a new process: this one only opens the store (the parent built it).
    const { ms, context } = await restart(model, tokenizer, values['restart-from']);
    process.stdout.write(`${JSON.stringify({ restartMs: ms, restored: context.stats().sequenceTokens })}\n`);
    return;
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'panorama-restart-'));
  try {
    // Build the state in memory: KV rows appended straight into the caches.
    const sequence = model.newSequence(tokens);
    const rowFloats = model.config.numKeyValueHeads * model.sizes.sparseHeadDim;
    const step = 65_536;
    for (let at = 0; at < tokens; at += step) {
      const n = Math.min(step, tokens - at);
      const rows = new Float32Array(n * rowFloats).map((_, i) => Math.sin(at + i));
      for (const cache of sequence.sparse.values()) cache.append(rows, rows);
      for (let i = 0; i < n; i++) sequence.tokens.push((at + i) % model.config.vocabSize);
    }
    const files = 4000;
    const per = Math.floor(tokens / files);
    const spans: FileSpan[] = Array.from({ length: files }, (_, i) => ({
      path: `src/f${i}.ts`,
      start: i * per,
      end: i === files - 1 ? tokens : (i + 1) * per,
      headerTokens: 8,
      contentHash: String(i),
      mtimeMs: 0,
      editCount: 0,
      lineStarts: Array.from({ length: 40 }, (_, l) => 8 + l * 10),
    }));
    const end = sequence.checkpoint();
    const checkpoints = Array.from({ length: Math.floor(tokens / 16_384) }, (_, i) => ({ length: i * 16_384, lightning: end.lightning }));
    const store = new ContextStore(dir, 'restart-bench');
    const saveStarted = performance.now();
    await store.save(model, { length: tokens, tokens: sequence.tokens, sequence, spans, excluded: [], dead: [], checkpoints, end, dirtyFrom: 0 });
    const saveSeconds = (performance.now() - saveStarted) / 1000;
    const diskBytes = await store.diskBytes();

    // Timed in a fresh process, as a restart is (this one holds the 1.5 GB it just saved); twice: the
    // first reads what the OS kept of the files just written, the second finds them all in its cache.
    const restartOnce = (): number => {
      const child = spawnSync(
        process.execPath,
        [...(__filename.endsWith('.ts') ? ['--import', 'tsx'] : []), __filename, '--tokens', String(tokens), '--model', modelDir, '--restart-from', dir],
        { encoding: 'utf8' },
      );
      if (child.status !== 0) throw new Error(`restart process failed: ${child.stderr}`);
      const { restartMs, restored } = JSON.parse(child.stdout.trim().split('\n').pop() ?? '{}') as { restartMs: number; restored: number };
      if (restored !== tokens) throw new Error(`the restarted context holds ${restored} tokens, not ${tokens}`);
      return restartMs;
    };
    const firstRestartMs = restartOnce();
    const restartMs = restartOnce();
    // In this process too: the context the edits below run on, and the in-memory side of the spill comparison.
    const inProcess = await restart(model, tokenizer, dir);
    const context = inProcess.context;
    const result: Record<string, unknown> = {
      tokens,
      files,
      diskBytes,
      saveSeconds,
      restartToReadyMs: restartMs,
      firstRestartToReadyMs: firstRestartMs,
      restored: context.stats().sequenceTokens,
    };
    let table = `| store | restart-to-ready (new process: load + restore + compressed keys) | first restart after the save | disk | full save |\n|---|---:|---:|---:|---:|\n| ${tokens.toLocaleString('en-US')} tokens, ${files} files | ${restartMs.toFixed(0)} ms | ${firstRestartMs.toFixed(0)} ms | ${(diskBytes / 2 ** 30).toFixed(2)} GiB | ${saveSeconds.toFixed(1)} s |`;
    if (!values['skip-edit']) {
      const file = thousandLineFile();
      const version = (text: string) => ({ path: `eslint/${file.path}`, text, contentHash: createHash('sha256').update(text).digest('hex'), mtimeMs: Date.now() });
      const started = performance.now();
      await context.update([version(file.text)]);
      const addMs = performance.now() - started;
      const lines = file.text.split('\n');
      // One-line edits: each a patch (the changed line goes last, the file stays where it is).
      const edit = async (line: number): Promise<{ line: number; ms: number; refedTokens: number }> => {
        lines[line] += ' // edited';
        const encodedBefore = context.stats().encodedTokens;
        const started = performance.now();
        await context.update([version(lines.join('\n'))]);
        return { line: line + 1, ms: performance.now() - started, refedTokens: context.stats().encodedTokens - encodedBefore };
      };
      const middle = await edit(Math.floor(lines.length / 2));
      const nearEnd = await edit(Math.floor(lines.length * 0.9));
      const fileTokens = context.fileIds(`eslint/${file.path}`)?.length ?? 0;
      // Saved (incrementally) and restarted: the first edit after a restart, timed from the restored context.
      await context.withState((state) => inProcess.store.save(model, state));
      const again = await restart(model, tokenizer, dir);
      lines[Math.floor(lines.length * 0.3)] += ' // edited after the restart';
      const afterRestartStarted = performance.now();
      const encodedBefore = again.context.stats().encodedTokens;
      await again.context.update([version(lines.join('\n'))]);
      const afterRestart = {
        line: Math.floor(lines.length * 0.3) + 1,
        ms: performance.now() - afterRestartStarted,
        refedTokens: again.context.stats().encodedTokens - encodedBefore,
      };
      result.editToFresh = { file: file.path, lines: file.lines, tokens: fileTokens, addMs, editMs: middle.ms, middle, nearEnd, afterRestart };
      result.device = `${model.device.kind} (${model.device.reason})`;
      process.stderr.write(
        `  at ${tokens} tokens (${result.device}): add ${file.path} (${file.lines} lines, ${fileTokens} tokens) ${addMs.toFixed(0)} ms; one-line edit at line ${middle.line}: ${middle.ms.toFixed(0)} ms (${middle.refedTokens} tokens re-fed), at line ${nearEnd.line}: ${nearEnd.ms.toFixed(0)} ms (${nearEnd.refedTokens}); first edit after a restart (line ${afterRestart.line}): ${afterRestart.ms.toFixed(0)} ms (${afterRestart.refedTokens})\n`,
      );
      table +=
        `\n\n| at ${tokens.toLocaleString('en-US')} tokens of context, eslint/lib/${file.path} (${file.lines} lines) | tokens fed | ms |\n|---|---:|---:|\n` +
        `| add the file, or a large edit of it (the whole new version goes last) | ${fileTokens} | ${addMs.toFixed(0)} |\n` +
        `| edit-to-fresh, one-line edit at line ${middle.line} (a patch: the line goes last under a path:line header) | ${middle.refedTokens} | ${middle.ms.toFixed(0)} |\n` +
        `| edit-to-fresh, one-line edit at line ${nearEnd.line} (a patch) | ${nearEnd.refedTokens} | ${nearEnd.ms.toFixed(0)} |\n` +
        `| edit-to-fresh, the first one-line edit after a restart (line ${afterRestart.line}, a patch) | ${afterRestart.refedTokens} | ${afterRestart.ms.toFixed(0)} |`;

      if (!values['skip-spill']) {
        // Side by side: the same store restored with its host K/V budget at a quarter of the K/V, so three
        // quarters of every sparse layer's blocks live in the spill file; the same add and near-end edit.
        const kvBytes = tokens * model.config.numKeyValueHeads * model.sizes.sparseHeadDim * 2 * 4 * model.sizes.sparseLayers.length;
        model.setHostKvBudget(kvBytes / 4);
        try {
          const { ms: spilledRestartMs, context: spilledContext } = await restart(model, tokenizer, dir);
          const spilledLines = file.text.split('\n');
          let started2 = performance.now();
          await spilledContext.update([version(file.text)]);
          const spilledAddMs = performance.now() - started2;
          spilledLines[Math.floor(spilledLines.length * 0.9)] += ' // edited';
          started2 = performance.now();
          await spilledContext.update([version(spilledLines.join('\n'))]);
          const spilledEditMs = performance.now() - started2;
          const spilledBlocks = [...spilledContext.sequence.sparse.values()].reduce((n, c) => n + c.spilledBlocks, 0);
          const blocks = [...spilledContext.sequence.sparse.values()].reduce((n, c) => n + c.blockCount, 0);
          result.spilled = { budgetBytes: kvBytes / 4, spilledBlocks, blocks, restartMs: spilledRestartMs, addMs: spilledAddMs, nearEndEditMs: spilledEditMs };
          process.stderr.write(
            `  spilled (${spilledBlocks} of ${blocks} blocks on disk): restart ${spilledRestartMs.toFixed(0)} ms, add ${spilledAddMs.toFixed(0)} ms, near-end edit ${spilledEditMs.toFixed(0)} ms\n`,
          );
          table +=
            `\n\n| host K/V budget a quarter of the K/V (${((100 * spilledBlocks) / blocks).toFixed(0)}% of the blocks in the spill file) | in memory | spilled | spilled ÷ in memory |\n|---|---:|---:|---:|\n` +
            `| restart-to-ready, in the bench's process | ${inProcess.ms.toFixed(0)} ms | ${spilledRestartMs.toFixed(0)} ms | ${(spilledRestartMs / inProcess.ms).toFixed(2)}× |\n` +
            `| add the file (${fileTokens} tokens) | ${addMs.toFixed(0)} ms | ${spilledAddMs.toFixed(0)} ms | ${(spilledAddMs / addMs).toFixed(2)}× |\n` +
            `| one-line edit at line ${nearEnd.line} | ${nearEnd.ms.toFixed(0)} ms | ${spilledEditMs.toFixed(0)} ms | ${(spilledEditMs / nearEnd.ms).toFixed(2)}× |`;
        } finally {
          model.setHostKvBudget(Infinity);
        }
      }
    }
    process.stdout.write(`${table}\n`);
    if (values.out) {
      writeFileSync(values.out, JSON.stringify({ machine: { cpus: os.cpus().length, node: process.version, date: new Date().toISOString() }, ...result }, null, 2));
      writeFileSync(values.out.replace(/\.json$/, '.md'), `${table}\n`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:restart failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
