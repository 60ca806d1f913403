// What the status bar says, as a pure function of the client state and the
// engine's last status: a small HUD for a local engine (what the context holds,
// how fresh it is, what the last request cost).

import type { EngineStatus } from '../engine/server/protocol.js';
import type { ClientState } from './engine/client.js';
import type { RemoteRequestInfo } from './remote/remote-backend.js';

export interface StatusView {
  text: string;
  /** Read by screen readers and matched by the e2e test. */
  label: string;
  tooltip: string;
  severity: 'normal' | 'warning' | 'error';
}

export function formatTokens(count: number): string {
  if (count >= 1_000_000) return `${(count / 1_000_000).toFixed(count >= 10_000_000 ? 0 : 1)}M`;
  if (count >= 1_000) return `${(count / 1_000).toFixed(count >= 10_000 ? 0 : 1)}K`;
  return String(count);
}

export function statusView(client: ClientState, status: EngineStatus | undefined): StatusView {
  switch (client.kind) {
    case 'stopped':
      return { text: '$(circle-slash) Panorama', label: 'Panorama: stopped', tooltip: 'The engine is not running. Click for actions.', severity: 'normal' };
    case 'starting':
      return { text: '$(loading~spin) Panorama', label: 'Panorama: starting', tooltip: 'Starting the engine…', severity: 'normal' };
    case 'restarting':
      return {
        text: '$(loading~spin) Panorama',
        label: 'Panorama: restarting',
        tooltip: `The engine stopped; restart ${client.attempt} in ${Math.round(client.delayMs / 100) / 10} s.`,
        severity: 'warning',
      };
    case 'failed':
      return { text: '$(error) Panorama', label: 'Panorama: error', tooltip: `The engine is not running: ${client.message}\nClick for actions.`, severity: 'error' };
    case 'running':
      break;
  }
  const device = status?.device ?? client.info.device.kind;
  if (status === undefined) return { text: `$(check) Panorama · ${device}`, label: `Panorama: ready on ${device}`, tooltip: 'Engine running.', severity: 'normal' };

  const tokens = `${formatTokens(status.liveTokens)} tokens`;
  const lines = [
    `Context: ${status.files} files, ${formatTokens(status.liveTokens)} of ${formatTokens(status.tokenBudget)} tokens` +
      (status.deadTokens > 0 ? ` (${formatTokens(status.deadTokens)} stale, compacted later)` : ''),
    status.excludedFiles > 0 ? `${status.excludedFiles} files left out (ignored or over budget)` : undefined,
    `Device: ${device}`,
    status.tokensPerSecond !== undefined ? `Encoding: ${Math.round(status.tokensPerSecond)} tokens/s` : undefined,
    status.lastRequest !== undefined ? `Last ${status.lastRequest.kind}: ${Math.round(status.lastRequest.latencyMs)} ms, ${status.lastRequest.tokens} tokens` : undefined,
    status.error !== undefined ? `Error: ${status.error}` : undefined,
    'Click for actions.',
  ].filter((line) => line !== undefined);
  const tooltip = lines.join('\n');

  switch (status.state) {
    case 'starting':
      return { text: '$(loading~spin) Panorama', label: 'Panorama: opening the context', tooltip, severity: 'normal' };
    case 'indexing': {
      const percent = Math.floor((status.progress ?? 0) * 100);
      return { text: `$(sync~spin) Panorama ${percent}%`, label: `Panorama: indexing ${percent}%`, tooltip, severity: 'normal' };
    }
    case 'paused':
      return { text: `$(debug-pause) Panorama ${tokens}`, label: `Panorama: paused, ${tokens} in context`, tooltip, severity: 'warning' };
    case 'error':
      return { text: '$(error) Panorama', label: `Panorama: error`, tooltip, severity: 'error' };
    case 'ready':
      return { text: `$(check) Panorama ${tokens} · ${device}`, label: `Panorama: ready, ${tokens} in context on ${device}`, tooltip, severity: 'normal' };
  }
}

export interface RemoteStatusInput {
  /** The normalized API root ('' when unset). */
  baseUrl: string;
  /** The model setting ('' = the server's first). */
  model: string;
  /** A setting that keeps the backend from working. */
  problem?: string;
  last?: RemoteRequestInfo;
  lastError?: string;
}

/** The status bar for the remote backend: where requests go, what the last one cost, the last error. */
export function remoteStatusView(input: RemoteStatusInput): StatusView {
  let host = input.baseUrl;
  try {
    host = new URL(input.baseUrl).host;
  } catch {
    // not a URL: the problem line says so
  }
  if (input.problem !== undefined) {
    return { text: '$(cloud) Panorama: set up', label: 'Panorama: remote backend not set up', tooltip: `${input.problem}\nClick for actions.`, severity: 'warning' };
  }
  const model = input.last?.model ?? (input.model || "the server's first model");
  const last = input.last;
  const lines = [
    `Remote server: ${input.baseUrl}`,
    `Model: ${model}`,
    last !== undefined
      ? `Context sent: ${last.prefix.files} files, ${formatTokens(last.prefix.chars)} chars (prefix ${last.prefix.hash})` +
        (last.prefix.excluded > 0 ? `, ${last.prefix.excluded} files left out for the budget` : '')
      : undefined,
    last !== undefined
      ? `Last ${last.kind}: ${last.firstTokenMs !== undefined ? `first token ${Math.round(last.firstTokenMs)} ms, ` : ''}${Math.round(last.totalMs)} ms` +
        (last.usage !== undefined
          ? `, ${formatTokens(last.usage.promptTokens)} prompt tokens${last.usage.cachedTokens !== undefined ? ` (${formatTokens(last.usage.cachedTokens)} from the prefix cache)` : ''}`
          : '')
      : undefined,
    input.lastError !== undefined ? `Error: ${input.lastError}` : undefined,
    'Click for actions.',
  ].filter((line) => line !== undefined);
  const tooltip = lines.join('\n');
  if (input.lastError !== undefined) return { text: `$(cloud) Panorama · ${host}`, label: `Panorama: remote ${host}, last request failed`, tooltip, severity: 'error' };
  return { text: `$(cloud) Panorama · ${host}`, label: `Panorama: remote ${host}`, tooltip, severity: 'normal' };
}
