// Typed access to the few settings. Paths that choose what we execute or load
// are only honoured in a trusted workspace (they are also declared as
// restrictedConfigurations in package.json).

import * as vscode from 'vscode';
import type { DevicePreference } from '../engine/server/protocol';

const DEVICES: readonly DevicePreference[] = ['auto', 'cpu', 'webgpu', 'cuda'];

export interface PanoramaSettings {
  enginePath: string;
  nodePath: string;
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
    enginePath: pathSetting('enginePath'),
    nodePath: pathSetting('nodePath'),
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
