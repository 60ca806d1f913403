// Where the engine comes from, in one explicit order: the user's settings (only
// in a trusted workspace) → the engine bundled in the extension → an error that
// says what to do. Pure: the file system and settings come in as arguments, so
// test/extension/discovery.test.ts covers every branch without VS Code.

import * as path from 'node:path';

export interface DiscoveryInput {
  /** panorama.enginePath / panorama.nodePath, already read from settings ('' = unset). */
  enginePathSetting: string;
  nodePathSetting: string;
  /** panorama.cudaLibraryPath ('' = unset): passed to the engine as PANORAMA_CUDA_LIBS. */
  cudaLibraryPathSetting?: string;
  /** Restricted Mode ignores path settings: a workspace must not choose what we execute. */
  workspaceTrusted: boolean;
  extensionPath: string;
  /** VS Code's own runtime (process.execPath), run as plain Node via ELECTRON_RUN_AS_NODE. */
  hostExecPath: string;
  platform: NodeJS.Platform;
  arch: string;
  isFile: (file: string) => boolean;
  isDirectory: (dir: string) => boolean;
}

export interface EngineLaunch {
  /** The program to spawn and its arguments. */
  command: string;
  args: string[];
  /** Extra environment for the child. */
  env: Record<string, string>;
  /** Which rule found it, for the log. */
  origin: 'setting' | 'bundled';
  enginePath: string;
}

export type Discovery = { ok: true; launch: EngineLaunch; notes: string[] } | { ok: false; message: string; notes: string[] };

export function discoverEngine(input: DiscoveryInput): Discovery {
  const notes: string[] = [];
  let enginePath: string | undefined;
  let origin: EngineLaunch['origin'] = 'bundled';

  const engineSetting = input.enginePathSetting.trim();
  if (engineSetting !== '' && !input.workspaceTrusted) {
    notes.push('panorama.enginePath is ignored in Restricted Mode (untrusted workspace)');
  } else if (engineSetting !== '') {
    if (!input.isFile(engineSetting)) {
      return {
        ok: false,
        notes,
        message: `panorama.enginePath points to "${engineSetting}", which is not a file. Set it to a built dist/panorama.js (npm run build) or clear it to use the bundled engine.`,
      };
    }
    enginePath = engineSetting;
    origin = 'setting';
  }

  if (enginePath === undefined) {
    const bundled = path.join(input.extensionPath, 'dist', 'panorama.js');
    if (!input.isFile(bundled)) {
      return { ok: false, notes, message: `The bundled engine is missing (${bundled}). Reinstall Panorama, or set panorama.enginePath to a built dist/panorama.js.` };
    }
    // The engine loads onnxruntime's native binding at start; without one for this
    // platform it would die with a cryptic dlopen error, so say it plainly here.
    const napiVersions = ['napi-v6', 'napi-v3'];
    const runtimeDirs = napiVersions.map((napi) => path.join(input.extensionPath, 'node_modules', 'onnxruntime-node', 'bin', napi, input.platform, input.arch));
    if (!runtimeDirs.some(input.isDirectory)) {
      return {
        ok: false,
        notes,
        message: `This Panorama package has no onnxruntime binaries for ${input.platform}-${input.arch}. Install the Panorama VSIX built for your platform.`,
      };
    }
    enginePath = bundled;
  }

  const nodeSetting = input.nodePathSetting.trim();
  let command = input.hostExecPath;
  const env: Record<string, string> = { ELECTRON_RUN_AS_NODE: '1' };
  if (nodeSetting !== '' && !input.workspaceTrusted) {
    notes.push('panorama.nodePath is ignored in Restricted Mode (untrusted workspace)');
  } else if (nodeSetting !== '') {
    if (!input.isFile(nodeSetting)) {
      return {
        ok: false,
        notes,
        message: `panorama.nodePath points to "${nodeSetting}", which is not a file. Set it to a Node ≥ 20 executable or clear it to use VS Code's own runtime.`,
      };
    }
    command = nodeSetting;
    delete env.ELECTRON_RUN_AS_NODE;
  }

  const cudaSetting = input.cudaLibraryPathSetting?.trim() ?? '';
  if (cudaSetting !== '' && !input.workspaceTrusted) notes.push('panorama.cudaLibraryPath is ignored in Restricted Mode (untrusted workspace)');
  else if (cudaSetting !== '') env.PANORAMA_CUDA_LIBS = cudaSetting;

  notes.push(`engine: ${enginePath} (${origin}); runtime: ${command}`);
  // dist/panorama.js is a module exporting run(argv) (bin/panorama.js is its CLI launcher), so
  // start it through a one-line loader: the same command works for the bundled and a configured engine.
  const args = ['-e', 'require(process.argv[1]).run(process.argv.slice(2))', enginePath, 'rpc'];
  return { ok: true, notes, launch: { command, args, env, origin, enginePath } };
}
