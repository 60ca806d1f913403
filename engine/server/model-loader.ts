// Loading the model once per engine process, with what a client is told about it.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { SalaModel } from '../model/sala-model.js';
import { expectedWeights } from '../model/config.js';
import { loadTokenizer, FALLBACK_SOURCE, type Tokenizer } from '../model/tokenizer.js';
import { modelFingerprint } from '../context/store.js';
import type { DeviceRequest } from '../runtime/device.js';
import type { InitializeResult } from './protocol.js';

export interface LoadedModel {
  model: SalaModel;
  tokenizer: Tokenizer;
  /** Fingerprint the store keys its contents by. */
  modelId: string;
  info: InitializeResult['model'];
  device: InitializeResult['device'];
}

export class ModelLoadError extends Error {}

export async function loadEngineModel(modelDir: string, options: { device?: DeviceRequest; threads?: number; log?: (message: string) => void } = {}): Promise<LoadedModel> {
  if (!existsSync(path.join(modelDir, 'config.json')))
    throw new ModelLoadError(`${modelDir} is not a model directory: it has no config.json. Point the engine at a folder with config.json, *.safetensors and tokenizer.json.`);
  const model = await SalaModel.load(modelDir, { device: options.device ?? 'cpu', threads: options.threads });
  const tokenizer = await loadTokenizer(modelDir, model.config.vocabSize);
  if (tokenizer.source === FALLBACK_SOURCE) options.log?.(`${modelDir} has no tokenizer.json; using the ${FALLBACK_SOURCE}`);
  let parameters = 0;
  for (const shape of expectedWeights(model.config).values()) parameters += shape.reduce((a, b) => a * b, 1);
  return {
    model,
    tokenizer,
    modelId: await modelFingerprint(modelDir),
    info: { dir: modelDir, name: path.basename(modelDir), parameters, vocabSize: model.config.vocabSize },
    device: { kind: model.device.kind, reason: model.device.reason },
  };
}

/** The engine's version: package.json's, found next to the bundle (dist/) or the sources (engine/server/). */
export function engineVersion(): string {
  for (const candidate of [path.resolve(__dirname, '..', 'package.json'), path.resolve(__dirname, '..', '..', 'package.json')]) {
    try {
      const parsed: unknown = JSON.parse(readFileSync(candidate, 'utf8'));
      if (typeof parsed === 'object' && parsed !== null && 'name' in parsed && parsed.name === 'panorama' && 'version' in parsed && typeof parsed.version === 'string')
        return parsed.version;
    } catch {
      // not this one
    }
  }
  return '0.0.0-unknown';
}
