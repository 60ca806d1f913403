// Child process for the kill -9 test: builds a context file by file and saves
// after each, printing "saved <tokens>" once a save has returned (acknowledged).
import path from 'node:path';
import { createHash } from 'node:crypto';
import { SalaModel } from '../../../engine/model/sala-model.js';
import { loadTokenizer } from '../../../engine/model/tokenizer.js';
import { WorkspaceContext } from '../../../engine/context/workspace-context.js';
import { ContextStore } from '../../../engine/context/store.js';

/** The content written in round i (the test checks restored spans against it). */
export function fileText(i: number): string {
  return `// file ${i}\n${'let x = 1;\n'.repeat(10 + (i % 7))}`;
}

async function main(): Promise<void> {
  const [fixture, storeDir, modelId] = process.argv.slice(2);
  const model = await SalaModel.load(path.resolve(fixture));
  const tokenizer = await loadTokenizer(fixture, model.config.vocabSize);
  const context = new WorkspaceContext(model, tokenizer, { checkpointEvery: 200, compactAt: 0.3 });
  const store = new ContextStore(storeDir, modelId, 300);
  for (let i = 0; ; i++) {
    const text = fileText(i);
    const name = `f${i % 6}.ts`; // later rounds edit earlier files: tombstones and compactions happen
    await context.update([{ path: name, text, contentHash: createHash('sha256').update(text).digest('hex'), mtimeMs: i }]);
    await context.withState((state) => store.save(model, state));
    process.stdout.write(`saved ${i}\n`);
  }
}
if (require.main === module)
  main().catch((err: unknown) => {
    process.stderr.write(String(err));
    process.exit(1);
  });
