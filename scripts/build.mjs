// Bundles the engine CLI (and, once it exists, the extension) with esbuild.
// onnxruntime-node stays external: it carries native binaries that must be loaded from node_modules.
import { build } from 'esbuild';
import { existsSync } from 'node:fs';

const common = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  sourcemap: true,
  external: ['onnxruntime-node', 'vscode'],
  logLevel: 'warning',
};

await build({ ...common, entryPoints: ['engine/cli/main.ts'], outfile: 'dist/panorama.js' });
if (existsSync('extension/extension.ts')) {
  await build({ ...common, entryPoints: ['extension/extension.ts'], outfile: 'dist/extension.js' });
}
if (existsSync('webview/main.ts')) {
  // the chat view's script runs in the webview (a browser): one minified IIFE, no source map shipped
  await build({ bundle: true, platform: 'browser', target: 'es2022', format: 'iife', minify: true, legalComments: 'none', logLevel: 'warning', entryPoints: ['webview/main.ts'], outfile: 'dist/webview.js' });
}
