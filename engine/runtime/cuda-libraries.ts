// Before the first CUDA session: is onnxruntime's CUDA provider installed, and can
// everything it links against be found (the driver, the CUDA runtime, cuBLAS, cuDNN)?
// onnxruntime's own failure names one library and stops; this names the first missing
// piece, says how to get it, and loads libraries from folders the loader would not
// search (PANORAMA_CUDA_LIBS, a Python environment's NVIDIA wheels) so a user with
// PyTorch installed needs no LD_LIBRARY_PATH. Linux only: elsewhere the probe decides.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readDynamicInfo } from './elf.js';

export const CUDA_PROVIDER = 'libonnxruntime_providers_cuda.so';
const SHARED_PROVIDER = 'libonnxruntime_providers_shared.so';
const DRIVER = 'libcuda.so.1';
const CUDNN = 'libcudnn.so.9';
/** Where drivers put libcuda.so.1 when the loader cache does not list it (containers, WSL). */
export const DRIVER_DIRS = ['/usr/lib/x86_64-linux-gnu', '/usr/lib64', '/usr/local/nvidia/lib64', '/usr/lib/wsl/lib'];

export type CudaCheck = { ok: true; provider: string; preload: string[]; notes: string[] } | { ok: false; problem: string };

/** The minimum Linux driver for each CUDA major version (NVIDIA's CUDA release notes). */
const MIN_DRIVER: Record<number, string> = { 11: '450.80.02', 12: '525.60.13', 13: '580.65.06' };

/** What a missing library is and how a user gets it, by soname prefix. */
const LIBRARY_HINTS: [RegExp, (major: string) => string][] = [
  [/^libcudart\.so\.(\d+)/, (v) => `the CUDA ${v} runtime (NVIDIA's CUDA Toolkit ${v}, or the nvidia-cuda-runtime wheel for CUDA ${v})`],
  [/^libcublas(Lt)?\.so\.(\d+)/, (v) => `cuBLAS for CUDA ${v} (CUDA Toolkit ${v}, or the nvidia-cublas wheel for CUDA ${v})`],
  [/^libcudnn\.so\.(\d+)/, (v) => `cuDNN ${v} (NVIDIA's cuDNN ${v} package, or the nvidia-cudnn wheel)`],
  [/^libcufft\.so\.(\d+)/, () => `cuFFT (CUDA Toolkit, or the nvidia-cufft wheel)`],
  [/^libcurand\.so\.(\d+)/, () => `cuRAND (CUDA Toolkit, or the nvidia-curand wheel)`],
  [/^libnvrtc\.so\.(\d+)/, () => `NVRTC (CUDA Toolkit, or the nvidia-cuda-nvrtc wheel)`],
];

/** Libraries every Linux system has: never reported, never preloaded. */
const SYSTEM = /^(libc|libm|libdl|libpthread|librt|libgcc_s|libstdc\+\+|ld-linux[^.]*)\.so/;

export interface CudaEnvironment {
  /** onnxruntime-node's native folder (where its installer puts the provider). */
  bindingDir: string;
  /** PANORAMA_CUDA_LIBS: ':'-separated folders holding the provider and/or CUDA libraries. */
  extraDirs: string[];
  /** LD_LIBRARY_PATH's folders: the loader searches them itself. */
  loaderDirs: string[];
  /** soname → path from the loader cache (ldconfig -p). */
  cache: Map<string, string>;
  /** Folders of NVIDIA's Python wheels (site-packages/nvidia/…/lib), searched last. */
  wheelDirs: string[];
  /** The NVIDIA kernel driver's version, if one is loaded. */
  driverVersion?: string;
}

export function onnxruntimeBindingDir(): string {
  // dist/index.js → the package folder (its bundled engine keeps onnxruntime-node external, so this resolves in both)
  const root = path.dirname(path.dirname(require.resolve('onnxruntime-node')));
  return path.join(root, 'bin', 'napi-v6', process.platform, process.arch);
}

export function splitDirs(value: string | undefined): string[] {
  return (value ?? '').split(path.delimiter).filter((dir) => dir.trim() !== '');
}

function loaderCache(): Map<string, string> {
  const cache = new Map<string, string>();
  for (const ldconfig of ['ldconfig', '/sbin/ldconfig', '/usr/sbin/ldconfig']) {
    const out = spawnSync(ldconfig, ['-p'], { encoding: 'utf8', timeout: 5000 });
    if (out.status !== 0 || !out.stdout) continue;
    // "	libcudart.so.13 (libc6,x86-64) => /usr/local/cuda/lib64/libcudart.so.13"
    for (const line of out.stdout.split('\n')) {
      const match = /^\s*(\S+) \(([^)]*)\) => (\S+)/.exec(line);
      if (match && match[2].includes('x86-64') === (process.arch === 'x64') && !cache.has(match[1])) cache.set(match[1], match[3]);
    }
    break;
  }
  return cache;
}

function subdirs(dir: string): string[] {
  try {
    return fs
      .readdirSync(dir, { withFileTypes: true })
      .filter((entry) => entry.isDirectory())
      .map((entry) => path.join(dir, entry.name));
  } catch {
    return [];
  }
}

/** site-packages/nvidia/<package>/lib (and nvidia/cu13/lib) of the usual Python prefixes. */
export function nvidiaWheelDirs(prefixes: string[]): string[] {
  const dirs: string[] = [];
  for (const prefix of prefixes) {
    for (const python of subdirs(path.join(prefix, 'lib')).filter((dir) => /python3/.test(path.basename(dir)))) {
      for (const packages of ['site-packages', 'dist-packages']) {
        for (const pkg of subdirs(path.join(python, packages, 'nvidia'))) {
          const lib = path.join(pkg, 'lib');
          if (fs.existsSync(lib)) dirs.push(lib);
        }
      }
    }
  }
  return dirs;
}

function pythonPrefixes(env: NodeJS.ProcessEnv): string[] {
  const prefixes = [env.VIRTUAL_ENV, env.CONDA_PREFIX, path.join(os.homedir(), '.local'), '/usr/local', '/usr'];
  for (const dir of subdirs('/opt')) prefixes.push(dir, path.join(dir, '.venv'));
  return prefixes.filter((prefix): prefix is string => !!prefix && fs.existsSync(prefix));
}

export function driverVersion(): string | undefined {
  try {
    const text = fs.readFileSync('/proc/driver/nvidia/version', 'utf8');
    const match = /Kernel Module\s+(?:for\s+\S+\s+)?(\d+\.\d+(?:\.\d+)?)/.exec(text);
    if (match) return match[1];
  } catch {
    // not readable in some containers: ask nvidia-smi
  }
  const out = spawnSync('nvidia-smi', ['--query-gpu=driver_version', '--format=csv,noheader'], { encoding: 'utf8', timeout: 10000 });
  const version = out.status === 0 ? /(\d+\.\d+(?:\.\d+)?)/.exec(out.stdout)?.[1] : undefined;
  return version;
}

/** What this machine has, read once (the checks below are pure over it). */
export function cudaEnvironment(env: NodeJS.ProcessEnv = process.env): CudaEnvironment {
  return {
    bindingDir: onnxruntimeBindingDir(),
    extraDirs: splitDirs(env.PANORAMA_CUDA_LIBS),
    loaderDirs: splitDirs(env.LD_LIBRARY_PATH),
    cache: loaderCache(),
    wheelDirs: nvidiaWheelDirs(pythonPrefixes(env)),
    driverVersion: driverVersion(),
  };
}

function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

function hintFor(soname: string): string {
  for (const [pattern, hint] of LIBRARY_HINTS) {
    const match = pattern.exec(soname);
    if (match) return hint(match[match.length - 1]);
  }
  return soname;
}

const INSTALL_PROVIDER =
  "install it with onnxruntime-node's installer (`npm install onnxruntime-node --onnxruntime-node-install=cuda12`, or ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node), or set PANORAMA_CUDA_LIBS (the panorama.cudaLibraryPath setting) to a folder holding libonnxruntime_providers_cuda.so";

/**
 * Checks the provider and what it links against. `ok` lists the libraries found
 * outside the loader's own search path: loadLibraries() must load them before the
 * first CUDA session. A provider found only in PANORAMA_CUDA_LIBS is linked beside
 * onnxruntime's library, where onnxruntime looks for it.
 */
export function checkCuda(machine: CudaEnvironment): CudaCheck {
  const besideBinding = path.join(machine.bindingDir, CUDA_PROVIDER);
  const notes: string[] = [];
  let provider = besideBinding;
  if (!fs.existsSync(besideBinding)) {
    const elsewhere = machine.extraDirs.map((dir) => path.join(dir, CUDA_PROVIDER)).find((file) => fs.existsSync(file));
    if (!elsewhere) return { ok: false, problem: `onnxruntime's CUDA provider (${CUDA_PROVIDER}) is not installed beside ${machine.bindingDir}: ${INSTALL_PROVIDER}` };
    const linked = linkBeside(machine.bindingDir, path.dirname(elsewhere));
    if (linked) return { ok: false, problem: linked };
    notes.push(`linked the CUDA provider from ${path.dirname(elsewhere)}`);
    provider = besideBinding;
  }
  if (!fs.existsSync(path.join(machine.bindingDir, SHARED_PROVIDER))) {
    return { ok: false, problem: `${SHARED_PROVIDER}, which onnxruntime loads before its CUDA provider, is missing beside ${machine.bindingDir}: ${INSTALL_PROVIDER}` };
  }
  let needed: string[];
  try {
    needed = readDynamicInfo(provider).needed.filter((name) => !SYSTEM.test(name) && name !== DRIVER && name !== SHARED_PROVIDER && !/^libonnxruntime/.test(name));
  } catch (err) {
    return { ok: false, problem: `${provider} cannot be read as a shared library (${(err as Error).message}): reinstall it (${INSTALL_PROVIDER})` };
  }
  const cudaMajor = needed.map((name) => /^libcudart\.so\.(\d+)/.exec(name)?.[1]).find((v) => v !== undefined);
  // onnxruntime opens cuDNN itself when the provider starts (it is not a link-time dependency).
  if (cudaMajor && Number(cudaMajor) >= 12) needed.push(CUDNN);
  const driverOnPath = machine.cache.has(DRIVER) || machine.loaderDirs.some((dir) => fs.existsSync(path.join(dir, DRIVER)));
  const driverLib = driverOnPath ? undefined : DRIVER_DIRS.map((dir) => path.join(dir, DRIVER)).find((file) => fs.existsSync(file));
  if (!driverOnPath && !driverLib) return { ok: false, problem: `no NVIDIA driver found (${DRIVER} is not installed): install the NVIDIA driver for this GPU` };
  if (cudaMajor && machine.driverVersion && MIN_DRIVER[Number(cudaMajor)] && compareVersions(machine.driverVersion, MIN_DRIVER[Number(cudaMajor)]) < 0) {
    return {
      ok: false,
      problem: `the NVIDIA driver ${machine.driverVersion} is older than CUDA ${cudaMajor} needs (≥ ${MIN_DRIVER[Number(cudaMajor)]}): update the driver, or use an onnxruntime CUDA provider built for an older CUDA`,
    };
  }
  const preload: string[] = driverLib ? [driverLib] : [];
  const searchDirs = [...machine.extraDirs, ...machine.wheelDirs];
  for (const soname of needed) {
    const onLoaderPath = machine.loaderDirs.some((dir) => fs.existsSync(path.join(dir, soname))) || machine.cache.has(soname);
    if (onLoaderPath) continue;
    const found = searchDirs.map((dir) => path.join(dir, soname)).find((file) => fs.existsSync(file));
    if (!found) {
      return {
        ok: false,
        problem: `${soname} is missing, which onnxruntime's CUDA provider needs: install ${hintFor(soname)}, then put its folder in PANORAMA_CUDA_LIBS (the panorama.cudaLibraryPath setting) or LD_LIBRARY_PATH`,
      };
    }
    preload.push(found);
  }
  if (preload.length > 0) notes.push(`CUDA libraries from ${[...new Set(preload.map((file) => path.dirname(file)))].join(', ')}`);
  return { ok: true, provider, preload, notes };
}

/** Symlinks the provider libraries of `from` beside onnxruntime's; undefined when done, else why not. */
function linkBeside(bindingDir: string, from: string): string | undefined {
  for (const name of [CUDA_PROVIDER, SHARED_PROVIDER]) {
    const source = path.join(from, name);
    const target = path.join(bindingDir, name);
    if (!fs.existsSync(source) || fs.existsSync(target)) continue;
    try {
      fs.symlinkSync(source, target);
    } catch (err) {
      return `onnxruntime looks for its CUDA provider beside ${bindingDir}, which is not writable here (${(err as NodeJS.ErrnoException).code}): copy ${source} there`;
    }
  }
  return undefined;
}

/**
 * Loads shared libraries by path into this process (global symbols, never unloaded), so
 * the provider's dependencies resolve by soname when onnxruntime opens it. Node's dlopen
 * refuses a library that is not a Node module after loading it; with RTLD_NODELETE the
 * library stays. A library whose own dependency is not loaded yet is retried after the rest.
 */
export function loadLibraries(files: readonly string[]): string | undefined {
  const { RTLD_NOW, RTLD_GLOBAL, RTLD_NODELETE } = os.constants.dlopen as Record<string, number>;
  let pending = [...files];
  let lastError = '';
  while (pending.length > 0) {
    const failed: string[] = [];
    for (const file of pending) {
      try {
        process.dlopen({ exports: {} } as NodeJS.Module, file, RTLD_NOW | RTLD_GLOBAL | RTLD_NODELETE);
      } catch (err) {
        const message = (err as Error).message;
        if (/did not self-register|Module did not/.test(message)) continue; // loaded: it is just not a Node module
        failed.push(file);
        lastError = message.split('\n')[0];
      }
    }
    if (failed.length === pending.length) return `could not load ${path.basename(failed[0])}: ${lastError}`;
    pending = failed;
  }
  return undefined;
}
