// Bundles the engine CLI (and, once it exists, the extension) with esbuild.
// onnxruntime-node stays external: it carries native binaries that must be loaded from node_modules.
import { build } from 'esbuild';
import { existsSync } from 'node:fs';
import { buildNative } from './build-native.mjs';

const common = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  sourcemap: true,
  external: ['onnxruntime-node', 'vscode'],
  logLevel: 'warning',
};

buildNative();
await build({ ...common, entryPoints: ['engine/cli/main.ts'], outfile: 'dist/panorama.js' });
if (existsSync('extension/extension.ts')) {
  await build({ ...common, entryPoints: ['extension/extension.ts'], outfile: 'dist/extension.js' });
}
if (existsSync('webview/main.ts')) {
  // the views' scripts run in webviews (a browser): one minified IIFE each, no source map shipped
  const view = { bundle: true, platform: 'browser', target: 'es2022', format: 'iife', minify: true, legalComments: 'none', logLevel: 'warning' };
  await build({ ...view, entryPoints: ['webview/main.ts'], outfile: 'dist/webview.js' });
  // the workspace map's script (a treemap on a canvas)
  await build({ ...view, entryPoints: ['webview/map/main.ts'], outfile: 'dist/map.js' });
}
