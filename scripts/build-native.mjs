// Compiles native/panorama_ort.cc and native/host_copies.cc (IO-bound sessions for the CUDA provider, see
// engine/runtime/native-session.ts) into native/build/panorama_ort.node. It needs a C++
// compiler and Node's headers, nothing from the network: Node-API addons link against
// nothing, and onnxruntime is opened at run time from onnxruntime-node's own folder.
// Without a compiler the engine still runs CUDA, feeding every run from host memory.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';

const sources = ['native/panorama_ort.cc', 'native/host_copies.cc'];
// A change to any of these rebuilds.
const inputs = [...sources, 'native/addon.h', 'native/cuda_runtime.h', 'scripts/build-native.mjs'];
const target = 'native/build/panorama_ort.node';
const headers = [join(dirname(process.execPath), '..', 'include', 'node'), '/usr/include/node', '/usr/local/include/node'].find((dir) => existsSync(join(dir, 'node_api.h')));

export function buildNative() {
  // The CUDA provider of onnxruntime-node is Linux x64 only; elsewhere there is nothing to bind.
  if (process.platform !== 'linux') return;
  const fresh = existsSync(target) && statSync(target).mtimeMs > Math.max(...inputs.map((file) => statSync(file).mtimeMs));
  if (!fresh) {
    const compiler = process.env.CXX ?? 'c++';
    if (!headers) {
      console.warn(`build-native: Node's headers (node_api.h) were not found beside ${process.execPath}; CUDA sessions will feed every run from host memory`);
      return;
    }
    mkdirSync(dirname(target), { recursive: true });
    const args = [
      '-std=c++17',
      '-O2',
      '-shared',
      '-fPIC',
      '-static-libstdc++',
      '-Wall',
      '-DNODE_GYP_MODULE_NAME=panorama_ort',
      `-I${headers}`,
      '-Inative/onnxruntime/include',
      ...sources,
      '-o',
      target,
      '-ldl',
    ];
    const result = spawnSync(compiler, args, { stdio: 'inherit' });
    if (result.error || result.status !== 0) {
      console.warn(
        `build-native: ${compiler} ${result.error ? `did not start (${result.error.message})` : `failed (exit ${result.status})`}; CUDA sessions will feed every run from host memory`,
      );
      return;
    }
  }
}
