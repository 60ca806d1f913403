// The engine process and its JSON-RPC connection: spawn, initialize, typed
// requests that carry a cancellation token ($/cancelRequest), and restart with
// backoff after a crash (the engine reopens its persisted context, so a restart
// costs no re-index). No vscode import: test/extension/client.test.ts drives it
// against a fake engine process.

import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { createMessageConnection, ResponseError, StreamMessageReader, StreamMessageWriter, type CancellationToken, type MessageConnection } from 'vscode-jsonrpc/node';
import {
  EngineErrorCodes,
  type EngineNotifications,
  type EngineStatus,
  type InitializeParams,
  type InitializeResult,
  type RequestMethod,
  type RequestParams,
  type RequestResult,
} from '../../engine/server/protocol.js';
import { DEFAULT_BACKOFF, restartDelay, type BackoffPolicy } from './backoff.js';
import type { Discovery } from './discovery.js';
import { Emitter, type Disposable } from './emitter.js';

export interface EngineLogger {
  trace(message: string): void;
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export type ClientState =
  | { kind: 'stopped' }
  | { kind: 'starting' }
  | { kind: 'running'; info: InitializeResult }
  | { kind: 'restarting'; attempt: number; delayMs: number }
  | { kind: 'failed'; message: string };

export interface EngineClientOptions {
  /** Re-run on every start, so a changed setting applies on Retry. */
  discover: () => Discovery;
  initializeParams: () => InitializeParams;
  logger: EngineLogger;
  backoff?: BackoffPolicy;
  /** Loading a large model can take a while; a hung start must still end. */
  initializeTimeoutMs?: number;
}

const ENGINE_LOG_LINE = /^panorama: (trace|debug|info|warn|error): /;

/** What went wrong with a request, by kind: no engine to ask, or the engine's answer (its codes are in protocol.ts). */
export type EngineErrorKind = 'unavailable' | 'notInitialized' | 'notReady' | 'cancelled' | 'invalidParams' | 'invalidRequest' | 'methodNotFound' | 'internal';

const KIND_BY_CODE = new Map<number, EngineErrorKind>([
  [EngineErrorCodes.notInitialized, 'notInitialized'],
  [EngineErrorCodes.notReady, 'notReady'],
  [EngineErrorCodes.requestCancelled, 'cancelled'],
  [EngineErrorCodes.invalidParams, 'invalidParams'],
  [EngineErrorCodes.invalidRequest, 'invalidRequest'],
  [EngineErrorCodes.methodNotFound, 'methodNotFound'],
  [EngineErrorCodes.internalError, 'internal'],
]);

/** ask/complete before the workspace is open is not a failure, just too early: this is what the user reads. */
const NOT_READY_MESSAGE = 'Panorama is still reading the workspace. Ask again when the status bar says ready.';

/** A request that failed, told apart by `kind` (never by its message). */
export class EngineRequestError extends Error {
  constructor(
    readonly kind: EngineErrorKind,
    message: string,
    /** The JSON-RPC error code, when the engine answered. */
    readonly code?: number,
  ) {
    super(message);
    this.name = 'EngineRequestError';
  }
}

export class EngineUnavailableError extends EngineRequestError {
  constructor(state: ClientState) {
    super('unavailable', state.kind === 'failed' ? `Panorama's engine is not running: ${state.message}` : `Panorama's engine is ${state.kind}.`);
  }
}

/** The engine's error answer as a typed error; anything else (a closed connection) is internal. */
function toEngineError(error: unknown): EngineRequestError {
  if (error instanceof EngineRequestError) return error;
  if (!(error instanceof ResponseError)) return new EngineRequestError('internal', errorMessage(error));
  const kind = KIND_BY_CODE.get(error.code) ?? 'internal';
  return new EngineRequestError(kind, kind === 'notReady' ? NOT_READY_MESSAGE : error.message, error.code);
}

export class EngineClient implements Disposable {
  private readonly stateEmitter = new Emitter<ClientState>();
  private readonly statusEmitter = new Emitter<EngineStatus>();
  private readonly deltaEmitter = new Emitter<EngineNotifications['panorama/askDelta']>();
  readonly onState = this.stateEmitter.event;
  readonly onStatus = this.statusEmitter.event;
  readonly onAskDelta = this.deltaEmitter.event;

  private currentState: ClientState = { kind: 'stopped' };
  private child: ChildProcess | undefined;
  private connection: MessageConnection | undefined;
  private crashes = 0;
  private runningSince = 0;
  private restartTimer: ReturnType<typeof setTimeout> | undefined;
  /** Last stderr lines, quoted when a start fails. */
  private readonly stderrTail: string[] = [];
  private disposed = false;

  constructor(private readonly options: EngineClientOptions) {}

  get state(): ClientState {
    return this.currentState;
  }

  get isRunning(): boolean {
    return this.currentState.kind === 'running';
  }

  /** Starts the engine unless it is already up or on its way. */
  async start(): Promise<void> {
    if (this.disposed || this.currentState.kind === 'running' || this.currentState.kind === 'starting') return;
    this.clearRestartTimer();
    await this.launch();
  }

  /** Stops whatever runs and starts afresh with the crash count reset (the user's Retry). */
  async restart(): Promise<void> {
    await this.stop();
    this.crashes = 0;
    await this.start();
  }

  async request<M extends RequestMethod>(method: M, params: RequestParams<M>, token?: CancellationToken): Promise<RequestResult<M>> {
    const connection = this.connection;
    if (connection === undefined || this.currentState.kind !== 'running') throw new EngineUnavailableError(this.currentState);
    try {
      // an explicit undefined token would be sent as a second positional parameter
      return await (token === undefined ? connection.sendRequest<RequestResult<M>>(method, params) : connection.sendRequest<RequestResult<M>>(method, params, token));
    } catch (error) {
      throw toEngineError(error);
    }
  }

  /** Asks the engine to shut down (it saves its context), then makes sure the process is gone. */
  async stop(): Promise<void> {
    this.clearRestartTimer();
    const child = this.child;
    const connection = this.connection;
    this.child = undefined;
    this.connection = undefined;
    if (child !== undefined) {
      const exited = new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) resolve();
        else child.once('exit', () => resolve());
      });
      if (connection !== undefined && this.currentState.kind === 'running') {
        await withTimeout(Promise.race([connection.sendRequest('shutdown', {}).catch(() => undefined), exited]), 3_000);
      }
      connection?.dispose();
      child.stdin?.end();
      await withTimeout(exited, 2_000);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    this.setState({ kind: 'stopped' });
  }

  dispose(): void {
    this.disposed = true;
    void this.stop();
    this.stateEmitter.dispose();
    this.statusEmitter.dispose();
    this.deltaEmitter.dispose();
  }

  private async launch(): Promise<void> {
    const { logger } = this.options;
    this.setState({ kind: 'starting' });
    const found = this.options.discover();
    for (const note of found.notes) logger.info(note);
    if (!found.ok) {
      logger.error(found.message);
      this.setState({ kind: 'failed', message: found.message });
      return;
    }
    const { launch } = found;
    this.stderrTail.length = 0;
    const child = spawn(launch.command, launch.args, {
      env: { ...process.env, ...launch.env },
      stdio: ['pipe', 'pipe', 'pipe'],
      windowsHide: true,
    });
    this.child = child;
    const connection = createMessageConnection(new StreamMessageReader(child.stdout), new StreamMessageWriter(child.stdin));
    this.connection = connection;

    createInterface({ input: child.stderr }).on('line', (line) => {
      this.stderrTail.push(line);
      if (this.stderrTail.length > 20) this.stderrTail.shift();
      // the engine's own log lines also arrive as panorama/log: keep them out of sight, but
      // anything else on stderr (a native crash, a stack trace) is worth reading
      if (ENGINE_LOG_LINE.test(line)) logger.trace(`[stderr] ${line}`);
      else logger.info(`[engine] ${line}`);
    });
    connection.onNotification('panorama/status', (status: EngineNotifications['panorama/status']) => this.statusEmitter.fire(status));
    connection.onNotification('panorama/askDelta', (delta: EngineNotifications['panorama/askDelta']) => this.deltaEmitter.fire(delta));
    connection.onNotification('panorama/log', ({ level, message }: EngineNotifications['panorama/log']) => logger[level](message));
    connection.onError(([error]) => logger.warn(`engine connection: ${error.message}`));

    const exited = new Promise<string>((resolve) => {
      child.once('error', (error) => resolve(`could not start ${launch.command}: ${error.message}`));
      child.once('exit', (code, signal) => resolve(signal !== null ? `killed by ${signal}` : `exited with code ${code}`));
    });
    void exited.then((reason) => this.onExit(child, reason));
    connection.listen();

    let initializeTimer: ReturnType<typeof setTimeout> | undefined;
    try {
      const info = await Promise.race([
        connection.sendRequest<InitializeResult>('initialize', this.options.initializeParams()),
        exited.then((reason) => Promise.reject(new Error(`the engine ${reason} during start`))),
        new Promise<never>((_resolve, reject) => {
          initializeTimer = setTimeout(() => reject(new Error('the engine did not answer initialize in time')), this.options.initializeTimeoutMs ?? 180_000);
        }),
      ]);
      clearTimeout(initializeTimer);
      if (this.child !== child) return;
      logger.info(`engine ${info.engineVersion} ready: model ${info.model.name} (${info.model.parameters} parameters), device ${info.device.kind} (${info.device.reason})`);
      this.runningSince = Date.now();
      this.setState({ kind: 'running', info });
    } catch (error) {
      clearTimeout(initializeTimer);
      if (this.child !== child) return;
      const tail = this.stderrTail
        .filter((line) => line.trim() !== '')
        .slice(-3)
        .join(' | ');
      const message = `${errorMessage(error)}${tail ? ` — ${tail}` : ''}`;
      logger.error(`engine start failed: ${message}`);
      this.child = undefined;
      this.connection = undefined;
      connection.dispose();
      child.kill('SIGKILL');
      this.setState({ kind: 'failed', message });
    }
  }

  private onExit(child: ChildProcess, reason: string): void {
    // a stop() or a failed start handles its own exit; so does launch() while initialize is pending
    if (this.child !== child || this.currentState.kind === 'starting') return;
    const { logger } = this.options;
    this.connection?.dispose();
    this.child = undefined;
    this.connection = undefined;
    if (this.disposed) return;
    const policy = this.options.backoff ?? DEFAULT_BACKOFF;
    if (Date.now() - this.runningSince > policy.stableMs) this.crashes = 0;
    this.crashes++;
    const delayMs = restartDelay(this.crashes, policy);
    logger.error(`engine ${reason}`);
    if (delayMs === undefined) {
      this.setState({ kind: 'failed', message: `the engine crashed ${this.crashes - 1} times in a row (last: ${reason})` });
      return;
    }
    logger.info(`restarting the engine in ${delayMs} ms (attempt ${this.crashes} of ${policy.maxAttempts})`);
    this.setState({ kind: 'restarting', attempt: this.crashes, delayMs });
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      void this.launch();
    }, delayMs);
  }

  private clearRestartTimer(): void {
    if (this.restartTimer !== undefined) clearTimeout(this.restartTimer);
    this.restartTimer = undefined;
  }

  private setState(state: ClientState): void {
    this.currentState = state;
    this.stateEmitter.fire(state);
  }
}

/** Waits for `promise` or `ms`, whichever comes first, and leaves no timer behind. */
async function withTimeout(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([promise, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

/** ask/complete before the workspace is open: not a failure, just too early. */
export function isNotReady(error: unknown): boolean {
  return error instanceof EngineRequestError && error.kind === 'notReady';
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
