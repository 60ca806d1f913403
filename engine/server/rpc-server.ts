// The engine's JSON-RPC endpoint over stdio (vscode-jsonrpc): every request in
// protocol.ts, validated at the boundary; ask streams panorama/askDelta
// notifications; $/cancelRequest aborts generation within one token.
import { stat, realpath } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable, type TransformCallback, type Writable } from 'node:stream';
import { ResponseError, type CancellationToken, type MessageConnection } from 'vscode-jsonrpc';
import { createMessageConnection, StreamMessageReader, StreamMessageWriter } from 'vscode-jsonrpc/node';
import type { DeviceRequest } from '../runtime/device.js';
import { EngineService, EngineNotReadyError, RequestCancelledError, workspaceStoreDir, type LogLevel } from './engine-service.js';
import { engineVersion, loadEngineModel, type LoadedModel } from './model-loader.js';
import { EngineErrorCodes, PROTOCOL_VERSION, type EngineNotifications, type InitializeResult, type RequestMethod, type RequestResult } from './protocol.js';
import {
  InvalidParamsError,
  resolveWorkspacePath,
  validateAnswerOverlay,
  validateAsk,
  validateComplete,
  validateEmpty,
  validateInitialize,
  validateSetPaused,
  validateWorkspaceMap,
} from './validate.js';
import { KEPT_OVERLAYS } from './map-state.js';

const HEADER = Buffer.from('Content-Length:', 'ascii');
const HEADER_END = Buffer.from('\r\n\r\n', 'ascii');
const MAX_HEADER_BYTES = 1024;

/**
 * Sits between stdin and vscode-jsonrpc's reader and passes on only well-framed
 * messages (`Content-Length: N\r\n\r\n` + N bytes). Bytes that are not a frame are
 * dropped and reported, and reading resumes at the next header: vscode-jsonrpc's
 * reader alone loses framing for good after garbage without a header.
 */
export class FrameGuard extends Transform {
  private buffer: Buffer = Buffer.alloc(0);
  private garbage = 0;

  constructor(
    private readonly onGarbage: (bytes: number) => void,
    private readonly maxMessageBytes = 64 * 1024 * 1024,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    this.drain();
    callback();
  }

  private skip(bytes: number): void {
    this.garbage += bytes;
    this.buffer = this.buffer.subarray(bytes);
  }

  private drain(): void {
    for (;;) {
      const start = this.buffer.indexOf(HEADER);
      if (start < 0) {
        // Keep a tail that may be the start of a header split across chunks.
        this.skip(Math.max(0, this.buffer.length - (HEADER.length - 1)));
        break;
      }
      if (start > 0) this.skip(start);
      const end = this.buffer.indexOf(HEADER_END);
      if (end < 0) {
        if (this.buffer.length > MAX_HEADER_BYTES) this.skip(1);
        else break;
        continue;
      }
      const length = this.contentLength(this.buffer.subarray(0, end).toString('ascii'));
      if (length === undefined || end > MAX_HEADER_BYTES) {
        this.skip(1); // not a real header: look for the next one
        continue;
      }
      const total = end + HEADER_END.length + length;
      if (this.buffer.length < total) break;
      this.reportGarbage();
      this.push(this.buffer.subarray(0, total));
      this.buffer = this.buffer.subarray(total);
    }
  }

  /** The Content-Length of a header block, or undefined when the block is not a valid header. */
  private contentLength(block: string): number | undefined {
    let length: number | undefined;
    for (const line of block.split('\r\n')) {
      const colon = line.indexOf(':');
      if (colon <= 0) return undefined;
      if (line.slice(0, colon).trim().toLowerCase() !== 'content-length') continue;
      const value = line.slice(colon + 1).trim();
      if (!/^\d{1,10}$/.test(value)) return undefined;
      length = Number(value);
    }
    return length !== undefined && length <= this.maxMessageBytes ? length : undefined;
  }

  private reportGarbage(): void {
    if (this.garbage > 0) this.onGarbage(this.garbage);
    this.garbage = 0;
  }

  override _flush(callback: TransformCallback): void {
    this.garbage += this.buffer.length;
    this.reportGarbage();
    callback();
  }
}

export interface RpcServerOptions {
  input: Readable;
  output: Writable;
  /** The shipped model, used when initialize names none. */
  defaultModelDir: () => string;
  threads?: number;
  chunkSize?: number;
  /** Where log lines go besides panorama/log notifications (stderr). */
  logSink?: (line: string) => void;
  /** Log levels at or above this reach the client and the sink. Default 'info'. */
  logLevel?: LogLevel;
}

const LEVELS: readonly LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error'];

type Handler<M extends RequestMethod> = (params: unknown, token: CancellationToken) => Promise<RequestResult<M>>;
type Handlers = { [M in RequestMethod]: Handler<M> };

function isRequestMethod(method: string, handlers: Handlers): method is RequestMethod {
  return Object.prototype.hasOwnProperty.call(handlers, method);
}

/** Maps what a handler threw to the JSON-RPC error the client sees. */
function toResponseError(err: unknown): ResponseError<unknown> {
  if (err instanceof ResponseError) return err;
  if (err instanceof InvalidParamsError) return new ResponseError(EngineErrorCodes.invalidParams, err.message, { field: err.field });
  if (err instanceof EngineNotReadyError) return new ResponseError(EngineErrorCodes.notReady, err.message);
  if (err instanceof RequestCancelledError) return new ResponseError(EngineErrorCodes.requestCancelled, err.message);
  return new ResponseError(EngineErrorCodes.internalError, err instanceof Error ? err.message : String(err));
}

export class RpcServer {
  private readonly connection: MessageConnection;
  private service?: EngineService;
  private loaded?: LoadedModel;
  private initializing?: Promise<InitializeResult>;
  private shuttingDown = false;
  private resolveExit!: (code: number) => void;
  /** Resolves with the process exit code: 0 after shutdown, 1 when the client went away without one. */
  readonly exited: Promise<number>;
  private readonly minLevel: number;

  constructor(private readonly options: RpcServerOptions) {
    this.exited = new Promise((resolve) => (this.resolveExit = resolve));
    this.minLevel = LEVELS.indexOf(options.logLevel ?? 'info');
    const guard = new FrameGuard((bytes) =>
      this.log('warn', `skipped ${bytes} bytes of input that were not a JSON-RPC message (expected "Content-Length: N\\r\\n\\r\\n" framing)`),
    );
    options.input.pipe(guard);
    this.connection = createMessageConnection(new StreamMessageReader(guard), new StreamMessageWriter(options.output));
    this.connection.onRequest((method, params, token) => this.dispatch(method, params, token));
    this.connection.onError(([error]) => this.log('warn', `unreadable message: ${error.message}`));
    this.connection.onClose(() => void this.finish(this.shuttingDown ? 0 : 1, 'the client closed the connection'));
    this.connection.listen();
  }

  private readonly handlers: Handlers = {
    initialize: (params) => this.initialize(params),
    status: async (params) => {
      validateEmpty(params);
      return this.requireService().status();
    },
    ask: (params, token) => this.ask(params, token),
    complete: (params, token) => this.complete(params, token),
    reindex: async (params) => {
      validateEmpty(params);
      return this.requireService().reindex();
    },
    setPaused: async (params) => this.requireService().setPaused(validateSetPaused(params).paused),
    'workspace/map': async (params) => this.requireService().workspaceMap(validateWorkspaceMap(params).maxCells),
    'answer/overlay': async (params) => {
      const { requestId } = validateAnswerOverlay(params);
      const overlay = this.requireService().answerOverlay(requestId);
      if (!overlay) throw new InvalidParamsError('requestId', `names no answer this engine kept (it keeps the last ${KEPT_OVERLAYS} answers since it started): ask again`);
      return overlay;
    },
    shutdown: async () => {
      this.shuttingDown = true;
      await this.service?.close();
      // Exit once the reply is written.
      setImmediate(() => void this.finish(0, 'shutdown requested'));
      return null;
    },
  };

  private async dispatch(method: string, params: unknown, token: CancellationToken): Promise<unknown> {
    if (!isRequestMethod(method, this.handlers)) throw new ResponseError(EngineErrorCodes.methodNotFound, `unknown method "${method}"`);
    if (this.shuttingDown && method !== 'shutdown') throw new ResponseError(EngineErrorCodes.invalidRequest, 'the engine is shutting down');
    try {
      return await this.handlers[method](params, token);
    } catch (err) {
      const response = toResponseError(err);
      if (response.code === EngineErrorCodes.internalError) this.log('error', `${method} failed: ${response.message}`);
      throw response;
    }
  }

  private notify<M extends keyof EngineNotifications>(method: M, params: EngineNotifications[M]): void {
    if (this.shuttingDown && method !== 'panorama/log') return;
    this.connection.sendNotification(method, params).catch(() => undefined);
  }

  log(level: LogLevel, message: string): void {
    if (LEVELS.indexOf(level) < this.minLevel) return;
    this.options.logSink?.(`panorama: ${level}: ${message}\n`);
    this.notify('panorama/log', { level, message });
  }

  private requireService(): EngineService {
    if (!this.service) throw new ResponseError(EngineErrorCodes.notInitialized, 'the engine is not initialized: send initialize first');
    return this.service;
  }

  private initialize(raw: unknown): Promise<InitializeResult> {
    if (this.initializing) throw new ResponseError(EngineErrorCodes.invalidRequest, 'initialize was already called; start a new engine for another workspace');
    const params = validateInitialize(raw);
    if (params.protocolVersion !== PROTOCOL_VERSION) {
      throw new InvalidParamsError(
        'protocolVersion',
        `is ${params.protocolVersion}, but this engine speaks protocol ${PROTOCOL_VERSION}; update the extension or the engine so they match`,
      );
    }
    const run = (async (): Promise<InitializeResult> => {
      const info = await stat(params.workspaceRoot).catch(() => undefined);
      if (!info?.isDirectory()) throw new InvalidParamsError('workspaceRoot', 'is not a directory');
      const root = await realpath(params.workspaceRoot);
      const modelDir = params.modelDir ?? this.options.defaultModelDir();
      if (params.modelDir !== undefined && !(await stat(path.join(modelDir, 'config.json')).catch(() => undefined))) {
        throw new InvalidParamsError('modelDir', 'is not a model directory: it has no config.json (expected config.json, *.safetensors and tokenizer.json)');
      }
      this.loaded = await loadEngineModel(modelDir, { device: params.device satisfies DeviceRequest | undefined, threads: this.options.threads, log: (m) => this.log('warn', m) });
      const { model, tokenizer, modelId } = this.loaded;
      const service = new EngineService({
        root,
        // One index per model: switching models and back reopens each one's context. The
        // shipped model keeps the folder it always had.
        storeDir: workspaceStoreDir(params.modelDir === undefined ? params.storeDir : path.join(params.storeDir, 'models', modelId.slice(0, 16)), root),
        model,
        tokenizer,
        modelId,
        exclude: params.exclude,
        budget: params.tokenBudget,
        chunkSize: this.options.chunkSize,
        log: (level, message) => this.log(level, message),
      });
      service.onStatus((status) => this.notify('panorama/status', status));
      this.service = service;
      service.start();
      this.log('info', `engine ${engineVersion()} serving ${root} with ${this.loaded.info.name} on ${model.device.kind}`);
      return { protocolVersion: PROTOCOL_VERSION, engineVersion: engineVersion(), model: this.loaded.info, device: this.loaded.device };
    })();
    this.initializing = run;
    // A failed initialize (bad folder, missing model) may be retried.
    run.catch(() => {
      if (this.initializing === run) this.initializing = undefined;
    });
    return run;
  }

  /** An AbortSignal that fires when the client cancels the request. */
  private static signalOf(token: CancellationToken): { signal: AbortSignal; dispose: () => void } {
    const controller = new AbortController();
    if (token.isCancellationRequested) controller.abort(new Error('cancelled by the client'));
    const listener = token.onCancellationRequested(() => controller.abort(new Error('cancelled by the client')));
    return { signal: controller.signal, dispose: () => listener.dispose() };
  }

  private async ask(raw: unknown, token: CancellationToken): Promise<RequestResult<'ask'>> {
    const service = this.requireService();
    const params = validateAsk(raw);
    const selection = params.selection && { ...params.selection, path: await resolveWorkspacePath(service.root, params.selection.path, 'selection.path') };
    const { signal, dispose } = RpcServer.signalOf(token);
    try {
      return await service.ask(
        { question: params.question, selection, maxTokens: params.maxTokens, temperature: params.temperature },
        { signal, requestId: params.requestId, onDelta: (text) => this.notify('panorama/askDelta', { requestId: params.requestId, text }) },
      );
    } finally {
      dispose();
    }
  }

  private async complete(raw: unknown, token: CancellationToken): Promise<RequestResult<'complete'>> {
    const service = this.requireService();
    const params = validateComplete(raw);
    const file = await resolveWorkspacePath(service.root, params.path, 'path');
    const { signal, dispose } = RpcServer.signalOf(token);
    try {
      return await service.complete({ ...params, path: file }, { signal });
    } finally {
      dispose();
    }
  }

  /** Stops the engine as a shutdown would (a signal, or the host going away). */
  stop(reason: string): Promise<void> {
    this.shuttingDown = true;
    return this.finish(0, reason);
  }

  private finishing = false;

  /** Closes the workspace (saving it) and resolves `exited`. */
  private async finish(code: number, reason: string): Promise<void> {
    if (this.finishing) return;
    this.finishing = true;
    this.options.logSink?.(`panorama: ${reason}; stopping\n`);
    try {
      await this.service?.close();
    } catch (err) {
      this.options.logSink?.(`panorama: error while closing: ${err instanceof Error ? err.message : String(err)}\n`);
    }
    this.connection.dispose();
    this.resolveExit(code);
  }
}
