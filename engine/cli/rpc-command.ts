// `panorama rpc`: the engine the editor extension spawns, JSON-RPC 2.0 on stdio
// (protocol: engine/server/protocol.ts).
import { parseArgs } from 'node:util';
import { Writable } from 'node:stream';
import type { LogLevel } from '../server/engine-service.js';
import { RpcServer } from '../server/rpc-server.js';
import { integerFlag, stringFlag, UsageError } from './flags.js';

const LOG_LEVELS: readonly LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error'];

function isLogLevel(value: string): value is LogLevel {
  return LOG_LEVELS.some((level) => level === value);
}

/**
 * `panorama rpc`: the extension's engine. stdout carries JSON-RPC frames only;
 * anything else that would print there (a stray console.log) goes to stderr.
 */
export async function runRpcCommand(argv: string[], defaultModelDir: () => string): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { threads: { type: 'string' }, 'chunk-size': { type: 'string' }, 'log-level': { type: 'string' } } });
  const level = stringFlag(values, 'log-level') ?? 'info';
  if (!isLogLevel(level)) throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}`);
  const writeStdout = process.stdout.write.bind(process.stdout);
  const frames = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      writeStdout(chunk, (err) => callback(err ?? null));
    },
  });
  process.stdout.write = process.stderr.write.bind(process.stderr);
  console.log = console.error;
  console.info = console.error;
  console.debug = console.error;
  const server = new RpcServer({
    input: process.stdin,
    output: frames,
    defaultModelDir,
    threads: integerFlag(values, 'threads', 0),
    chunkSize: integerFlag(values, 'chunk-size', 1),
    logLevel: level,
    logSink: (line) => process.stderr.write(line),
  });
  const stop = () => void server.stop('terminated by a signal');
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  const code = await server.exited;
  process.stdin.destroy();
  // Anything still holding the event loop (a native thread pool) must not keep a dead engine around.
  setTimeout(() => process.exit(code), 2000).unref();
  return code;
}
