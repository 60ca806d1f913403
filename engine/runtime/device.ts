// Execution providers: which one a session runs on, and the probe that tells
// whether a requested one can actually start on this machine.
import * as ort from 'onnxruntime-node';
import { GraphBuilder } from './graph-builder.js';

export type DeviceKind = 'cpu' | 'webgpu' | 'cuda';
export type DeviceRequest = DeviceKind | 'auto';
export const DEVICE_REQUESTS: readonly DeviceRequest[] = ['cpu', 'webgpu', 'cuda', 'auto'];

export interface ResolvedDevice {
  kind: DeviceKind;
  /** Why this device: shown to the user (CLI stderr, status bar). */
  reason: string;
}

export class DeviceError extends Error {}

export function isDeviceRequest(value: string): value is DeviceRequest {
  return (DEVICE_REQUESTS as readonly string[]).includes(value);
}

const probes = new Map<DeviceKind, Promise<string | undefined>>();

/** Starts a one-op session on `kind`; resolves to undefined when it works, else the provider's error. */
export function probeDevice(kind: DeviceKind): Promise<string | undefined> {
  let probe = probes.get(kind);
  if (!probe) {
    probe = (async () => {
      if (kind === 'cpu') return undefined;
      const g = new GraphBuilder('probe');
      const x = g.input('x', 'float', [1]);
      g.output(g.add(x, x), 'y', 'float', [1]);
      try {
        const session = await ort.InferenceSession.create(g.toModel(), { executionProviders: [kind], logSeverityLevel: 4 });
        await session.run({ x: new ort.Tensor('float32', Float32Array.of(1), [1]) });
        await session.release();
        return undefined;
      } catch (err) {
        return err instanceof Error ? err.message.split('\n')[0].trim() : String(err);
      }
    })();
    probes.set(kind, probe);
  }
  return probe;
}

/**
 * Turns a user's --device into a provider. 'auto' takes a GPU when an adapter
 * exists and says which; an explicit GPU request that cannot start falls back to
 * the CPU with the provider's reason, so a session never dies on a missing driver.
 */
export async function resolveDevice(request: DeviceRequest): Promise<ResolvedDevice> {
  if (request === 'cpu') return { kind: 'cpu', reason: 'requested' };
  const candidates: DeviceKind[] = request === 'auto' ? ['cuda', 'webgpu'] : [request];
  const failures: string[] = [];
  for (const kind of candidates) {
    const failure = await probeDevice(kind);
    if (failure === undefined) return { kind, reason: request === 'auto' ? `auto: ${kind} adapter available` : 'requested' };
    failures.push(`${kind}: ${failure}`);
  }
  return { kind: 'cpu', reason: `${request === 'auto' ? 'auto: no GPU provider started' : `${request} unavailable`} (${failures.join('; ')}); using cpu` };
}
