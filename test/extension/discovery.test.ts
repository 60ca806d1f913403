import assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { discoverEngine, type DiscoveryInput } from '../../extension/engine/discovery.js';

const ext = path.resolve('/ext');
const bundled = path.join(ext, 'dist', 'panorama.js');
const runtime = path.join(ext, 'node_modules', 'onnxruntime-node', 'bin', 'napi-v6', 'linux', 'x64');

function input(overrides: Partial<DiscoveryInput> & { files?: string[]; dirs?: string[] } = {}): DiscoveryInput {
  const files = new Set(overrides.files ?? [bundled]);
  const dirs = new Set(overrides.dirs ?? [runtime]);
  return {
    enginePathSetting: '',
    nodePathSetting: '',
    workspaceTrusted: true,
    extensionPath: ext,
    hostExecPath: '/opt/vscode/code',
    platform: 'linux',
    arch: 'x64',
    isFile: (file) => files.has(file),
    isDirectory: (dir) => dirs.has(dir),
    ...overrides,
  };
}

test('by default the bundled engine runs on VS Code’s own runtime as Node', () => {
  const found = discoverEngine(input());
  assert.ok(found.ok);
  assert.equal(found.launch.origin, 'bundled');
  assert.equal(found.launch.command, '/opt/vscode/code');
  assert.deepEqual(found.launch.env, { ELECTRON_RUN_AS_NODE: '1' });
  assert.equal(found.launch.args.at(-2), bundled);
  assert.equal(found.launch.args.at(-1), 'rpc');
});

test('the settings win in a trusted workspace', () => {
  const found = discoverEngine(
    input({ enginePathSetting: '/src/dist/panorama.js', nodePathSetting: '/usr/bin/node', files: ['/src/dist/panorama.js', '/usr/bin/node'], dirs: [] }),
  );
  assert.ok(found.ok);
  assert.equal(found.launch.origin, 'setting');
  assert.equal(found.launch.enginePath, '/src/dist/panorama.js');
  assert.equal(found.launch.command, '/usr/bin/node');
  assert.deepEqual(found.launch.env, {});
});

test('Restricted Mode ignores the path settings and says so', () => {
  const found = discoverEngine(input({ workspaceTrusted: false, enginePathSetting: '/evil.js', nodePathSetting: '/evil', files: [bundled, '/evil.js', '/evil'] }));
  assert.ok(found.ok);
  assert.equal(found.launch.origin, 'bundled');
  assert.equal(found.launch.command, '/opt/vscode/code');
  assert.equal(found.notes.filter((note) => note.includes('Restricted Mode')).length, 2);
});

test('a setting that points nowhere is an error with the remedy, not a silent fallback', () => {
  const engine = discoverEngine(input({ enginePathSetting: '/missing.js' }));
  assert.ok(!engine.ok);
  assert.match(engine.message, /panorama\.enginePath.*not a file.*clear it/);
  const node = discoverEngine(input({ nodePathSetting: '/missing-node' }));
  assert.ok(!node.ok);
  assert.match(node.message, /panorama\.nodePath/);
});

test('a missing bundle or missing runtime binaries for this platform are named', () => {
  const noBundle = discoverEngine(input({ files: [] }));
  assert.ok(!noBundle.ok);
  assert.match(noBundle.message, /bundled engine is missing.*Reinstall/);
  const otherPlatform = discoverEngine(input({ platform: 'darwin', arch: 'arm64' }));
  assert.ok(!otherPlatform.ok);
  assert.match(otherPlatform.message, /no onnxruntime binaries for darwin-arm64/);
});

test('panorama.cudaLibraryPath reaches the engine as PANORAMA_CUDA_LIBS, except in Restricted Mode', () => {
  const trusted = discoverEngine(input({ cudaLibraryPathSetting: ' /opt/cuda-libs:/opt/cudnn ' }));
  assert.ok(trusted.ok);
  assert.equal(trusted.launch.env.PANORAMA_CUDA_LIBS, '/opt/cuda-libs:/opt/cudnn');
  const restricted = discoverEngine(input({ workspaceTrusted: false, cudaLibraryPathSetting: '/evil' }));
  assert.ok(restricted.ok);
  assert.equal(restricted.launch.env.PANORAMA_CUDA_LIBS, undefined);
  assert.ok(restricted.notes.some((note) => /cudaLibraryPath is ignored in Restricted Mode/.test(note)));
});
