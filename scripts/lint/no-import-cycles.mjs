// ESLint rule: no import cycles among the project's own modules. Each file's static
// imports (type-only ones too: a cycle of types is still two modules that cannot be
// read apart) are resolved as TypeScript resolves them (`./x.js` → x.ts, extensionless
// paths); a cycle is reported at the import that starts it, with the whole path.
// Dynamic import() is left out: it is the way to load something lazily on purpose.
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

const RESOLUTION = { moduleResolution: ts.ModuleResolutionKind.Bundler, module: ts.ModuleKind.ESNext, allowJs: true, resolveJsonModule: false };

/** file → { mtimeMs, imports } for files read from disk (the one being linted is read from ESLint's text). */
const cache = new Map();

function resolve(specifier, fromFile) {
  if (!specifier.startsWith('.')) return undefined;
  const resolved = ts.resolveModuleName(specifier, fromFile, RESOLUTION, ts.sys).resolvedModule;
  if (!resolved || resolved.isExternalLibraryImport || resolved.extension === ts.Extension.Dts) return undefined;
  return path.resolve(resolved.resolvedFileName);
}

function importsIn(file, text) {
  const { importedFiles } = ts.preProcessFile(text, true, false);
  return [...new Set(importedFiles.map((f) => resolve(f.fileName, file)).filter((f) => f !== undefined))];
}

function importsOf(file) {
  let mtimeMs;
  try {
    mtimeMs = statSync(file).mtimeMs;
  } catch {
    return [];
  }
  const hit = cache.get(file);
  if (hit && hit.mtimeMs === mtimeMs) return hit.imports;
  const imports = importsIn(file, readFileSync(file, 'utf8'));
  cache.set(file, { mtimeMs, imports });
  return imports;
}

/** A path of imports from `start` back to `target`, or undefined. */
function pathBack(start, target) {
  const seen = new Set([start]);
  const stack = [[start, [start]]];
  while (stack.length > 0) {
    const [file, trail] = stack.pop();
    for (const next of importsOf(file)) {
      if (next === target) return trail;
      if (seen.has(next)) continue;
      seen.add(next);
      stack.push([next, [...trail, next]]);
    }
  }
  return undefined;
}

export default {
  meta: {
    type: 'problem',
    docs: { description: 'Disallow import cycles between the modules of this project' },
    schema: [],
    messages: { cycle: 'Import cycle: {{cycle}}. Move what both need into a module of its own, or invert one import.' },
  },
  create(context) {
    const file = path.resolve(context.filename);
    const root = context.cwd;
    const name = (f) => path.relative(root, f).split(path.sep).join('/');
    const check = (node) => {
      if (!node.source || typeof node.source.value !== 'string') return;
      const target = resolve(node.source.value, file);
      if (target === undefined || target === file) return;
      const back = pathBack(target, file);
      if (back) context.report({ node: node.source, messageId: 'cycle', data: { cycle: [file, ...back, file].map(name).join(' → ') } });
    };
    return { ImportDeclaration: check, ExportNamedDeclaration: check, ExportAllDeclaration: check };
  },
};
