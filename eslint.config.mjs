// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import noImportCycles from './scripts/lint/no-import-cycles.mjs';
import relativeImportExtension from './scripts/lint/relative-import-extension.mjs';
import kebabCaseFileNames from './scripts/lint/kebab-case-file-names.mjs';

const VSCODE = { name: 'vscode', message: 'engine/ is a plain Node program: it must not import vscode.' };
/**
 * What the extension may import of engine/: the protocol, the shared vocabulary, and
 * the modules declared shared here — pure Node, no model: the remote backend scans
 * and orders the workspace as the engine does (index/scan, index/layout) and ends a
 * server's completion where the engine would (context/completion-scope).
 */
const SHARED_WITH_EXTENSION = ['server/protocol', 'vocabulary', 'index/scan', 'index/layout', 'context/completion-scope'];
/** What the webview may import of engine/: the vocabulary its protocol re-exports. */
const SHARED_WITH_WEBVIEW = ['vocabulary'];

/**
 * A pattern for imports from a file `depth` folders below the repository root that
 * reach into `folder`/ other than the `allowed` modules (with or without `.js`).
 * Import strings are matched per depth because `../engine/client` from extension/chat/
 * is the extension's own engine client, not engine/.
 */
function outside(depth, folder, allowed, message) {
  const up = '\\.\\./'.repeat(depth);
  const except = allowed.map((m) => m.replace(/[/.]/g, (c) => `\\${c}`)).join('|');
  return { regex: `^${up}${folder}/${except ? `(?!(?:${except})(?:\\.js)?$)` : ''}`, message };
}

/** One config per folder depth (1–4) under `root`, each with its own patterns. */
function perDepth(root, rule) {
  return [1, 2, 3, 4].map((depth) => ({ files: [`${root}/${'*/'.repeat(depth - 1)}*.ts`], rules: { 'no-restricted-imports': ['error', rule(depth)] } }));
}

const ENGINE_LAYERS = ['runtime', 'kv', 'model', 'index', 'hub', 'context', 'server', 'cli'];

/**
 * The engine's layers import one way: cli → server → context → model → kv → runtime,
 * with index (the workspace scan) used by context and server. Each layer lists the
 * ones it must not import; nothing in engine/ imports vscode or the editor side.
 */
function engineLayer(layer, forbidden, why) {
  return {
    files: [`engine/${layer}/**/*.ts`],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [VSCODE],
          patterns: [
            ...(forbidden.length > 0
              ? [{ group: forbidden.map((other) => `../${other}/*`), message: `engine/${layer}/ ${why} (imports point one way: cli → server → context → model → kv → runtime).` }]
              : []),
            { group: ['../../extension/**', '../../webview/**'], message: 'the engine knows nothing of the editor side.' },
          ],
        },
      ],
    },
  };
}

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'training/**', '.device/**', 'out/**', '.e2e/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setImmediate: 'readonly', URL: 'readonly' },
    },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    // no two modules of the project import each other, however far round; one naming and import style everywhere
    files: ['**/*.ts'],
    plugins: { panorama: { rules: { 'no-import-cycles': noImportCycles, 'relative-import-extension': relativeImportExtension, 'kebab-case-file-names': kebabCaseFileNames } } },
    rules: { 'panorama/no-import-cycles': 'error', 'panorama/relative-import-extension': 'error', 'panorama/kebab-case-file-names': 'error' },
  },
  {
    // the CommonJS launcher that loads the bundle
    files: ['bin/**/*.js'],
    languageOptions: { sourceType: 'commonjs', globals: { require: 'readonly' } },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    // every engine folder, the ones without a layer rule below included
    files: ['engine/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [VSCODE],
          patterns: [{ group: ['../../extension/**', '../../webview/**', '../extension/**', '../webview/**'], message: 'the engine knows nothing of the editor side.' }],
        },
      ],
    },
  },
  {
    files: ['engine/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [VSCODE],
          patterns: [{ group: ENGINE_LAYERS.map((layer) => `./${layer}/*`), message: 'engine/vocabulary.ts is shared by every layer and the editor side: it imports nothing.' }],
        },
      ],
    },
  },
  engineLayer('runtime', ['model', 'kv', 'index', 'hub', 'context', 'server', 'cli'], 'runs tensors and sessions: it knows nothing of models'),
  engineLayer('kv', ['model', 'index', 'hub', 'context', 'server', 'cli'], 'holds key/value blocks: it knows nothing of the model that fills them'),
  engineLayer('model', ['index', 'hub', 'context', 'server', 'cli'], 'is the model alone: it knows nothing of workspaces, servers or the command line'),
  engineLayer('index', ['runtime', 'kv', 'model', 'hub', 'context', 'server', 'cli'], 'scans and orders workspace files: it knows nothing of the model'),
  engineLayer('hub', ['index', 'context', 'server', 'cli'], 'downloads and reads models: it knows nothing of workspaces, servers or the command line'),
  engineLayer('context', ['server', 'cli', 'hub'], 'knows nothing of HTTP, JSON-RPC, the command line or where models come from'),
  engineLayer('server', ['cli'], 'is driven by the command line, not the other way round'),
  engineLayer('cli', [], 'is the top'),
  // the extension talks to the engine through requests: it imports only what is declared shared above
  ...perDepth('extension', (depth) => ({
    patterns: [
      outside(
        depth,
        'engine',
        SHARED_WITH_EXTENSION,
        `the extension imports only these modules of engine/: ${SHARED_WITH_EXTENSION.join(', ')} (declared shared in eslint.config.mjs); everything else goes through a request.`,
      ),
      { regex: `^${'\\.\\./'.repeat(depth)}webview/(?!(?:.*/)?protocol(?:\\.js)?$)`, message: "the extension imports only the webview's protocol." },
    ],
  })),
  // the webview is a page of its own: messages (webview/protocol.ts) are all it shares with the extension
  ...perDepth('webview', (depth) => ({
    paths: [{ name: 'vscode', message: 'the webview runs in a browser frame: it cannot import vscode.' }],
    patterns: [
      outside(depth, 'extension', [], 'the webview talks to the extension by messages (webview/protocol.ts) only.'),
      outside(depth, 'engine', SHARED_WITH_WEBVIEW, 'the webview imports only engine/vocabulary.ts, through its protocol.'),
    ],
  })),
);
