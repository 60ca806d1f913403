// eval:model's command line: flags to settings, bad values refused with what to write.
import { parseArgs } from 'node:util';

export interface EvalOptions {
  model?: string;
  sizes: number[];
  /** Per size and kind. */
  questions: number;
  /** Cross-file sites per size, and fill-in-the-middle sites. */
  completions: number;
  bpbRows: number;
  /** Tokens a bits-per-byte row. */
  bpbRowTokens: number;
  quick: boolean;
  out?: string;
  seed: number;
  dumpQuestions?: string;
  dumpOnly: boolean;
  repos?: string[];
  cache?: string;
  /** Blocks a question's queries select beyond the local window (AskOptions.topk); absent, the engine's default. */
  questionTopk?: number;
}

export class OptionsError extends Error {}

export function parseSize(text: string): number {
  const m = /^(\d+)([km])$/i.exec(text.trim());
  if (!m || Number(m[1]) === 0) throw new OptionsError(`--sizes: "${text}" is not a size like 8k, 32k, 128k or 1m`);
  return Number(m[1]) * (m[2].toLowerCase() === 'k' ? 1024 : 1 << 20);
}

function whole(name: string, text: string, min = 1): number {
  const n = Number(text);
  if (text.trim() === '' || !Number.isInteger(n) || n < min) throw new OptionsError(`--${name}: "${text}" is not a whole number ≥ ${min}`);
  return n;
}

export function parseOptions(argv: string[]): EvalOptions {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        model: { type: 'string' },
        sizes: { type: 'string', default: '8k,32k,128k' },
        questions: { type: 'string', default: '20' },
        completions: { type: 'string', default: '20' },
        quick: { type: 'boolean', default: false },
        out: { type: 'string' },
        seed: { type: 'string', default: '0' },
        'dump-questions': { type: 'string' },
        'dump-only': { type: 'boolean', default: false },
        repos: { type: 'string' },
        cache: { type: 'string' },
        'bpb-rows': { type: 'string' },
        'question-topk': { type: 'string' },
      },
    }));
  } catch (err) {
    throw new OptionsError(
      `${err instanceof Error ? err.message : String(err)} (flags: --model DIR --sizes 8k,32k,128k[,1m] --questions N --completions N --quick --out FILE --seed N --dump-questions FILE [--dump-only] --repos DIR,DIR --cache DIR --bpb-rows N --question-topk N)`,
    );
  }
  if (values['dump-only'] && !values['dump-questions']) throw new OptionsError('--dump-only writes the question set: name its file with --dump-questions FILE');
  const quick = values.quick ?? false;
  // --quick: development and the smoke test (8K only, 3 items of each kind, one short bits-per-byte row).
  return {
    model: values.model,
    sizes: (quick ? '8k' : (values.sizes ?? '')).split(',').map(parseSize),
    questions: quick ? 3 : whole('questions', values.questions ?? ''),
    completions: quick ? 3 : whole('completions', values.completions ?? ''),
    bpbRows: values['bpb-rows'] !== undefined ? whole('bpb-rows', values['bpb-rows']) : quick ? 1 : 8,
    bpbRowTokens: quick ? 1024 : 4096,
    quick,
    out: values.out,
    seed: whole('seed', values.seed ?? '', 0),
    dumpQuestions: values['dump-questions'],
    dumpOnly: values['dump-only'] ?? false,
    repos: values.repos?.split(',').filter((d) => d !== ''),
    cache: values.cache,
    questionTopk: values['question-topk'] !== undefined ? whole('question-topk', values['question-topk']) : undefined,
  };
}
