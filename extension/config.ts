// Typed access to the few settings. Paths that choose what we execute or load
// are only honoured in a trusted workspace (they are also declared as
// restrictedConfigurations in package.json).

import * as vscode from 'vscode';
import type { DevicePreference } from '../engine/server/protocol.js';

const DEVICES: readonly DevicePreference[] = ['auto', 'cpu', 'webgpu', 'cuda'];
export const DEFAULT_REMOTE_CONTEXT_CHARS = 400_000;
/** The SecretStorage key of the remote server's API key (never a setting: settings sync and get committed). */
export const REMOTE_API_KEY_SECRET = 'panorama.remote.apiKey';

export type BackendKind = 'local' | 'remote';

export interface RemoteSettings {
  /** An OpenAI-compatible API root, e.g. http://gpu-box:8000/v1 ('' = unset). */
  baseUrl: string;
  /** '' = the first model the server lists. */
  model: string;
  /** Budget of the workspace prefix sent with every request, in characters; 0 sends none. */
  contextChars: number;
}

export interface PanoramaSettings {
  /** Where questions and completions go: the local engine or a remote server. */
  backend: BackendKind;
  remote: RemoteSettings;
  enginePath: string;
  nodePath: string;
  /** panorama.cudaLibraryPath: folders holding onnxruntime's CUDA provider and/or the CUDA libraries. */
  cudaLibraryPath: string;
  modelPath: string;
  device: DevicePreference;
  inlineEnabled: boolean;
  /** language id → enabled; '*' is the default. */
  inlineLanguages: Record<string, boolean>;
  maxAnswerTokens: number;
}

export function readSettings(): PanoramaSettings {
  const config = vscode.workspace.getConfiguration('panorama');
  const trusted = vscode.workspace.isTrusted;
  const pathSetting = (key: string): string => (trusted ? config.get<string>(key, '') : '');
  const device = config.get<string>('device', 'auto');
  const languages = config.get<unknown>('inlineCompletions.languages', {});
  const inlineLanguages: Record<string, boolean> = {};
  if (typeof languages === 'object' && languages !== null) {
    for (const [language, enabled] of Object.entries(languages)) if (typeof enabled === 'boolean') inlineLanguages[language] = enabled;
  }
  return {
    backend: config.get<string>('backend', 'local') === 'remote' ? 'remote' : 'local',
    remote: {
      baseUrl: config.get<string>('remote.baseUrl', '').trim(),
      model: config.get<string>('remote.model', '').trim(),
      contextChars: Math.max(0, Math.floor(config.get<number>('remote.contextChars', DEFAULT_REMOTE_CONTEXT_CHARS))),
    },
    enginePath: pathSetting('enginePath'),
    nodePath: pathSetting('nodePath'),
    cudaLibraryPath: pathSetting('cudaLibraryPath'),
    modelPath: pathSetting('modelPath'),
    device: DEVICES.find((known) => known === device) ?? 'auto',
    inlineEnabled: config.get<boolean>('inlineCompletions.enabled', true),
    inlineLanguages,
    maxAnswerTokens: config.get<number>('maxAnswerTokens', 512),
  };
}

export function isLanguageEnabled(settings: PanoramaSettings, languageId: string): boolean {
  return settings.inlineEnabled && (settings.inlineLanguages[languageId] ?? settings.inlineLanguages['*'] ?? true);
}

export { DEVICES };
