// The CUDA pre-flight check on real shared libraries: onnxruntime's own, and stand-ins
// for the provider and the CUDA libraries built here with gcc (same ELF dynamic
// sections as the real ones, a few bytes each), so every branch runs without a GPU.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { CUDA_PROVIDER, DRIVER_DIRS, checkCuda, loadLibraries, nvidiaWheelDirs, onnxruntimeBindingDir, type CudaEnvironment } from '../../engine/runtime/cuda-libraries.js';
import { ElfError, readDynamicInfo } from '../../engine/runtime/elf.js';
import { resolveDevice } from '../../engine/runtime/device.js';

const hasGcc = spawnSync('gcc', ['--version']).status === 0;

/** A shared library with this soname that links against `needs` (found in `libDir`). */
function buildLibrary(file: string, soname: string, needs: string[] = [], libDir?: string): void {
  const args = ['-shared', '-x', 'c', '-', '-o', file, `-Wl,-soname,${soname}`, '-Wl,--no-as-needed'];
  if (libDir) args.push(`-L${libDir}`, ...needs.map((name) => `-l:${name}`));
  const out = spawnSync('gcc', args, { input: 'int panorama_stub(void) { return 1; }\n', encoding: 'utf8' });
  assert.equal(out.status, 0, out.stderr);
}

/** A provider stand-in needing the CUDA 13 libraries the real 1.29 provider needs, and those libraries in `libs/`. */
function fakeInstall(root: string, options: { omit?: string[] } = {}) {
  const binding = path.join(root, 'binding');
  const libs = path.join(root, 'libs');
  fs.mkdirSync(binding, { recursive: true });
  fs.mkdirSync(libs, { recursive: true });
  const needs = ['libcublasLt.so.13', 'libcublas.so.13', 'libcudart.so.13'];
  for (const name of [...needs, 'libcudnn.so.9', 'libcuda.so.1']) buildLibrary(path.join(libs, name), name);
  buildLibrary(path.join(binding, CUDA_PROVIDER), CUDA_PROVIDER, [...needs, 'libcuda.so.1'], libs);
  buildLibrary(path.join(binding, 'libonnxruntime_providers_shared.so'), 'libonnxruntime_providers_shared.so');
  for (const name of options.omit ?? []) fs.rmSync(path.join(libs, name));
  return { binding, libs };
}

function machine(overrides: Partial<CudaEnvironment>): CudaEnvironment {
  return { bindingDir: '/nonexistent', extraDirs: [], loaderDirs: [], cache: new Map(), wheelDirs: [], driverVersion: '580.159.04', ...overrides };
}

function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'panorama-cuda-'));
}

test("readDynamicInfo reads onnxruntime's binding: what it needs, its soname and search path", () => {
  const info = readDynamicInfo(path.join(onnxruntimeBindingDir(), 'onnxruntime_binding.node'));
  assert.ok(info.needed.includes('libonnxruntime.so.1'), info.needed.join(','));
  assert.ok(info.needed.includes('libc.so.6'));
  assert.equal(info.soname, 'onnxruntime_binding.node');
  assert.match(info.runpath ?? '', /^\$ORIGIN/);
});

test('readDynamicInfo refuses a file that is not a shared library', () => {
  const dir = tempDir();
  const file = path.join(dir, 'not-elf.so');
  fs.writeFileSync(file, 'hello, this is text and long enough to hold an ELF header of sixty-four bytes......');
  assert.throws(() => readDynamicInfo(file), ElfError);
  fs.writeFileSync(file, '\x7fELF');
  assert.throws(() => readDynamicInfo(file), /truncated/);
});

test('no provider beside onnxruntime: the one line says how to install it', () => {
  const check = checkCuda(machine({ bindingDir: tempDir() }));
  assert.ok(!check.ok);
  assert.match(check.problem, /libonnxruntime_providers_cuda\.so\) is not installed/);
  assert.match(check.problem, /--onnxruntime-node-install=cuda12/);
  assert.match(check.problem, /PANORAMA_CUDA_LIBS/);
  assert.ok(!check.problem.includes('\n'));
});

test('each missing CUDA library is named with what it is and how to get it', { skip: !hasGcc && 'gcc is not installed' }, () => {
  for (const [omit, what] of [
    ['libcudart.so.13', /libcudart\.so\.13 is missing.*the CUDA 13 runtime/],
    ['libcublasLt.so.13', /libcublasLt\.so\.13 is missing.*cuBLAS for CUDA 13/],
    ['libcudnn.so.9', /libcudnn\.so\.9 is missing.*cuDNN 9/],
  ] as const) {
    const { binding, libs } = fakeInstall(tempDir(), { omit: [omit] });
    const check = checkCuda(machine({ bindingDir: binding, extraDirs: [libs], cache: new Map([['libcuda.so.1', path.join(libs, 'libcuda.so.1')]]) }));
    assert.ok(!check.ok, omit);
    assert.match(check.problem, what);
    assert.match(check.problem, /PANORAMA_CUDA_LIBS.*LD_LIBRARY_PATH/);
  }
});

test('a driver older than the provider’s CUDA is refused with the version it needs', { skip: !hasGcc && 'gcc is not installed' }, () => {
  const { binding, libs } = fakeInstall(tempDir());
  const check = checkCuda(machine({ bindingDir: binding, extraDirs: [libs], cache: new Map([['libcuda.so.1', '/x']]), driverVersion: '535.104.05' }));
  assert.ok(!check.ok);
  assert.match(check.problem, /driver 535\.104\.05 is older than CUDA 13 needs \(≥ 580\.65\.06\)/);
  // libcuda.so.1 only in libs/, which is not where drivers live: no driver (unless this machine has one).
  if (DRIVER_DIRS.some((dir) => fs.existsSync(path.join(dir, 'libcuda.so.1')))) return;
  const noDriver = checkCuda(machine({ bindingDir: binding, extraDirs: [libs] }));
  assert.ok(!noDriver.ok);
  assert.match(noDriver.problem, /no NVIDIA driver found/);
});

test('libraries outside the loader path are found (PANORAMA_CUDA_LIBS, NVIDIA wheels) and load by path', { skip: !hasGcc && 'gcc is not installed' }, () => {
  const { binding, libs } = fakeInstall(tempDir());
  const cache = new Map([['libcuda.so.1', path.join(libs, 'libcuda.so.1')]]);
  const fromSetting = checkCuda(machine({ bindingDir: binding, extraDirs: [libs], cache }));
  assert.ok(fromSetting.ok, !fromSetting.ok ? fromSetting.problem : '');
  assert.deepEqual(fromSetting.preload.map((file) => path.basename(file)).sort(), ['libcublas.so.13', 'libcublasLt.so.13', 'libcudart.so.13', 'libcudnn.so.9']);
  // On LD_LIBRARY_PATH the loader finds them itself: nothing to preload.
  const onPath = checkCuda(machine({ bindingDir: binding, loaderDirs: [libs], cache }));
  assert.ok(onPath.ok);
  assert.deepEqual(onPath.preload, []);
  // A Python environment's wheels: <prefix>/lib/python3.x/site-packages/nvidia/<pkg>/lib.
  const prefix = tempDir();
  const wheel = path.join(prefix, 'lib', 'python3.12', 'site-packages', 'nvidia', 'cu13', 'lib');
  fs.mkdirSync(wheel, { recursive: true });
  for (const name of fs.readdirSync(libs)) fs.copyFileSync(path.join(libs, name), path.join(wheel, name));
  assert.deepEqual(nvidiaWheelDirs([prefix]), [wheel]);
  const fromWheels = checkCuda(machine({ bindingDir: binding, wheelDirs: nvidiaWheelDirs([prefix]), cache }));
  assert.ok(fromWheels.ok);
  assert.equal(new Set(fromWheels.preload.map((file) => path.dirname(file))).size, 1);
  assert.equal(loadLibraries(fromWheels.preload), undefined);
  const bad = path.join(prefix, 'libbroken.so');
  fs.writeFileSync(bad, 'not a library');
  assert.match(loadLibraries([bad]) ?? '', /could not load libbroken\.so/);
});

test('a provider only in PANORAMA_CUDA_LIBS is linked beside onnxruntime, where onnxruntime looks for it', { skip: !hasGcc && 'gcc is not installed' }, () => {
  const { binding, libs } = fakeInstall(tempDir());
  const elsewhere = path.join(path.dirname(binding), 'provider');
  fs.mkdirSync(elsewhere);
  for (const name of [CUDA_PROVIDER, 'libonnxruntime_providers_shared.so']) fs.renameSync(path.join(binding, name), path.join(elsewhere, name));
  const check = checkCuda(machine({ bindingDir: binding, extraDirs: [elsewhere, libs], cache: new Map([['libcuda.so.1', '/x']]) }));
  assert.ok(check.ok, !check.ok ? check.problem : '');
  assert.equal(fs.readlinkSync(path.join(binding, CUDA_PROVIDER)), path.join(elsewhere, CUDA_PROVIDER));
  assert.ok(check.notes.some((note) => note.includes(elsewhere)));
});

test('--device cuda without a usable CUDA falls back to the CPU and says why in one line', async () => {
  const device = await resolveDevice('cuda');
  if (device.kind === 'cuda') return; // a machine with CUDA: nothing to fall back from
  assert.equal(device.kind, 'cpu');
  assert.match(device.reason, /^cuda unavailable \(cuda: .*(CUDA provider|NVIDIA driver|is missing)/);
  assert.match(device.reason, /using cpu$/);
  assert.ok(!device.reason.includes('\n'));
});
