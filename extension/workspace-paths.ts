// Workspace-relative paths as the engine and the webview speak them ('/'
// separators), and the one check that keeps them inside the workspace.

import * as path from 'node:path';

/** The absolute path of `relative` under `root`, or undefined if it would leave the root. */
export function resolveInside(root: string, relative: string): string | undefined {
  if (path.isAbsolute(relative) || relative.includes('\0')) return undefined;
  const resolved = path.resolve(root, ...relative.split('/'));
  const fromRoot = path.relative(root, resolved);
  if (fromRoot === '' || fromRoot.startsWith('..') || path.isAbsolute(fromRoot)) return undefined;
  return resolved;
}

/** `absolute` relative to `root` with '/' separators, or undefined outside the root. */
export function toWorkspacePath(root: string, absolute: string): string | undefined {
  const fromRoot = path.relative(root, absolute);
  if (fromRoot === '' || fromRoot.startsWith('..') || path.isAbsolute(fromRoot)) return undefined;
  return fromRoot.split(path.sep).join('/');
}
