// What this machine has, for the fit check: its RAM, and an NVIDIA GPU's memory when
// nvidia-smi answers (other GPUs, e.g. through WebGPU, do not say: --gpu-memory-gb tells it).
import { execFile } from 'node:child_process';
import os from 'node:os';
import type { Machine } from './fit.js';

const NVIDIA_SMI_TIMEOUT_MS = 3000;

function nvidiaGpu(): Promise<{ name: string; memoryBytes: number } | undefined> {
  return new Promise((resolve) => {
    execFile('nvidia-smi', ['--query-gpu=name,memory.total', '--format=csv,noheader,nounits'], { timeout: NVIDIA_SMI_TIMEOUT_MS }, (err, stdout) => {
      if (err) return resolve(undefined);
      // One line per GPU, "NVIDIA H200, 143771" (MiB); the engine uses one GPU: the first.
      const match = /^(.+),\s*(\d+)\s*$/m.exec(stdout);
      resolve(match ? { name: match[1].trim(), memoryBytes: Number(match[2]) * 2 ** 20 } : undefined);
    });
  });
}

export async function probeMachine(overrides: { memoryGb?: number; gpuMemoryGb?: number } = {}): Promise<Machine> {
  const hostMemoryBytes = overrides.memoryGb !== undefined ? overrides.memoryGb * 1e9 : os.totalmem();
  if (overrides.gpuMemoryGb !== undefined) return { hostMemoryBytes, gpuMemoryBytes: overrides.gpuMemoryGb * 1e9, gpuName: 'the GPU given by --gpu-memory-gb' };
  const gpu = await nvidiaGpu();
  return { hostMemoryBytes, gpuMemoryBytes: gpu?.memoryBytes, gpuName: gpu?.name };
}
