// What chat, the palette commands and inline completions ask of "the model": one
// interface, two implementations — the local engine over JSON-RPC (below) and a
// remote OpenAI-compatible server (remote/remote-backend.ts). No vscode import: a
// vscode.CancellationToken fits vscode-jsonrpc's CancellationToken.

import type { CancellationToken } from 'vscode-jsonrpc/node';
import type { AskParams, AskResult, CompleteParams, CompleteResult } from '../engine/server/protocol.js';
import type { EngineClient } from './engine/client.js';

export interface AssistantBackend {
  readonly kind: 'local' | 'remote';
  /** Streams the answer through `onDelta`; rejects when cancelled or failed. */
  ask(params: AskParams, onDelta: (text: string) => void, token: CancellationToken): Promise<AskResult>;
  complete(params: CompleteParams, token: CancellationToken): Promise<CompleteResult>;
}

/** The local engine: requests carry the token ($/cancelRequest), deltas come as notifications. */
export class LocalBackend implements AssistantBackend {
  readonly kind = 'local';

  constructor(private readonly client: EngineClient) {}

  async ask(params: AskParams, onDelta: (text: string) => void, token: CancellationToken): Promise<AskResult> {
    const subscription = this.client.onAskDelta(({ requestId, text }) => {
      if (requestId === params.requestId) onDelta(text);
    });
    try {
      return await this.client.request('ask', params, token);
    } finally {
      subscription.dispose();
    }
  }

  complete(params: CompleteParams, token: CancellationToken): Promise<CompleteResult> {
    return this.client.request('complete', params, token);
  }
}
