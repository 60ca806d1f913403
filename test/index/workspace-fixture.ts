// Real workspaces in temp directories for the index tests.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export type Tree = Record<string, string | Buffer>;

/** Creates a temp directory holding `tree` (paths with '/'); removed by `cleanup`. */
export function makeWorkspace(tree: Tree = {}): string {
  const root = mkdtempSync(path.join(os.tmpdir(), 'panorama-index-'));
  writeTree(root, tree);
  return root;
}

export function writeTree(root: string, tree: Tree): void {
  for (const [relativePath, content] of Object.entries(tree)) {
    const file = path.join(root, ...relativePath.split('/'));
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, content);
  }
}

export function cleanup(root: string): void {
  rmSync(root, { recursive: true, force: true });
}

/** Polls `condition` until it holds; fails with `what` after `timeoutMs` (generous: CI machines are slow and shared). */
export async function waitFor(what: string, condition: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
