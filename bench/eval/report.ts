// The evaluation's results as JSON and as a markdown table (docs/benchmarks/model-eval.*).
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { BitsPerByte } from './bits-per-byte.js';
import type { AskOutcome, CompletionOutcome, MeasuredForm } from './measure.js';
import type { Rate } from './scoring.js';

export interface SizeResult {
  /** Target size in tokens. */
  size: number;
  tokens: number;
  files: number;
  repos: string[];
  lookupDefined: Rate;
  lookupUsed: Rate;
  attribution: Rate;
  honesty: Rate;
  /** Absent names whose answer resolves to no place (said not found or not). */
  honestyNoLocation: Rate;
  /** Median wall time of one question, held to the workspace's lines and unaided. */
  askMs: { grounded: number; unaided: number };
  /** Grounded "defined" lookups whose answer had at least two workspace lines to choose from (one is right by construction). */
  definedWithChoice: Rate;
  /** The same questions with the model unaided (AskOptions.grounded false): what the model writes by itself. */
  unaided: { lookupDefined: Rate; lookupUsed: Rate; attribution: Rate; honesty: Rate };
  crossFileWorkspace: Rate;
  crossFileAlone: Rate;
  /** Workspace over file alone (null where the file-alone figure is 0). */
  crossFileRatio: number | null;
  /** Both inline forms on every site (the rows above are the form the engine picks). */
  crossFileByForm: Record<MeasuredForm, { workspace: Rate; alone: Rate }>;
  seconds: { index: number; lookup: number; absent: number; crossFile: number };
  items: { asks: AskOutcome[]; crossFile: { shipped: MeasuredForm; workspace: Record<MeasuredForm, CompletionOutcome>; alone: Record<MeasuredForm, CompletionOutcome> }[] };
}

export interface EvalResult {
  model: { name: string; dir: string };
  date: string;
  /** The command line, as it would be typed. */
  command: string;
  machine: { cpus: number; cpuModel?: string; node: string; platform: string; loadAverage: number[] };
  seed: number;
  quick: boolean;
  /** --question-topk: the block budget questions were asked with; absent, the engine's default. */
  questionTopk?: number;
  heldout: { name: string; lang: string; version?: string; files: number; chars: number }[];
  sizes: SizeResult[];
  /** The model's fill-in-the-middle: the training format's FIM string, whole. */
  fillIn: Rate & { seconds: number; items: CompletionOutcome[] };
  /** The same lines completed inline as the engine ships it (the cut file alone in the context). */
  fillInInline: Rate & { byForm: Record<MeasuredForm, Rate>; seconds: number; items: CompletionOutcome[] };
  bitsPerByte: BitsPerByte & { seconds: number };
  seconds: { fetch: number; load: number; total: number };
}

export const sizeLabel = (n: number) => (n >= 1 << 20 ? `${n / (1 << 20)}M` : `${n / 1024}K`);
const cell = (r: Rate) => (r.n === 0 ? 'n/a (0 items)' : `${(r.rate * 100).toFixed(1)}% (${r.correct}/${r.n})`);
const secs = (s: number) => (s >= 100 ? `${s.toFixed(0)} s` : `${s.toFixed(1)} s`);

export function markdown(result: EvalResult): string {
  const head = `| measure | ${result.sizes.map((s) => sizeLabel(s.size)).join(' | ')} |`;
  const rule = `|---|${result.sizes.map(() => '---:').join('|')}|`;
  const row = (name: string, f: (s: SizeResult) => string) => `| ${name} | ${result.sizes.map(f).join(' | ')} |`;
  const m = result.machine;
  const lines = [
    '# Model evaluation through the engine',
    '',
    `\`${result.command}\` on ${result.date.slice(0, 10)}: model \`${result.model.name}\`, ${m.cpus} × ${m.cpuModel ?? 'unknown CPU'}, Node ${m.node}, load average at the end ${m.loadAverage.map((l) => l.toFixed(2)).join(' / ')}, seed ${result.seed}${result.quick ? ', --quick' : ''}${result.questionTopk !== undefined ? `, questions asked with topk ${result.questionTopk}` : ''}.`,
    `Held-out code (never trained on): ${result.heldout.map((r) => `${r.name}${r.version ? `@${r.version}` : ''} (${r.files} file${r.files === 1 ? '' : 's'})`).join(', ')}.`,
    '',
    "The engine as it ships, on the CPU: `WorkspaceContext.ask` for the questions, `complete` for the completions, the model's forward for bits per byte. " +
      "Lookup: names defined exactly once in the context (training/data.py's definition regexes), their files spread over its depth; right when the answer's first place is the gold file within ±2 lines of the definition (defined) or of a line using the name (used). " +
      'Lookups are asked as the engine ships them, the answer held to a workspace line that holds the name, chosen by the model (engine/context/grounded-lookup.ts), and again with the model unaided (`grounded: false`): the unaided rows are what the model writes by itself. ' +
      'Attribution: the first source covers the definition line. Honesty: names made of identifier pieces of other code, absent from the context; right when the answer says so and names no place. ' +
      'Cross-file completion: a line cut just before a name defined in another file of the same repository, exact match of the rest of the line, the whole workspace in context vs a context of the file alone. ' +
      'Inline completions are asked in both forms on every site, side by side: continued (the prefix goes on from the cursor) and fill-in-the-middle before the restated suffix (`CompleteOptions.form`); the first rows are the form the engine picks (`inlineForm`). ' +
      'Fill-in-the-middle: a random line of 6–100 characters, prefix ≤ 3,000 and suffix ≤ 1,000 characters, no other file. Each figure is followed by its count.',
    '',
    placesNote(result),
    '',
    head,
    rule,
    row('context (tokens, files)', (s) => `${s.tokens.toLocaleString('en-US')}, ${s.files}`),
    row('lookup "Where is `X` defined?" (±2 lines)', (s) => cell(s.lookupDefined)),
    row('… of those with ≥ 2 candidate lines (the model chose)', (s) => cell(s.definedWithChoice)),
    row('lookup "Where is `X` used?" (±2 lines)', (s) => cell(s.lookupUsed)),
    row('attribution (first source covers the definition)', (s) => cell(s.attribution)),
    row('honesty (absent name: says not found, no place)', (s) => cell(s.honesty)),
    row('*model unaided:* lookup defined', (s) => cell(s.unaided.lookupDefined)),
    row('*model unaided:* lookup used', (s) => cell(s.unaided.lookupUsed)),
    row('*model unaided:* attribution', (s) => cell(s.unaided.attribution)),
    row('*model unaided:* honesty', (s) => cell(s.unaided.honesty)),
    row('absent name resolves to no place', (s) => cell(s.honestyNoLocation)),
    row('median ms per question, grounded / unaided', (s) => `${s.askMs.grounded.toFixed(0)} / ${s.askMs.unaided.toFixed(0)}`),
    row('cross-file completion, whole workspace', (s) => cell(s.crossFileWorkspace)),
    row('cross-file completion, file alone', (s) => cell(s.crossFileAlone)),
    row('cross-file ratio (workspace / file alone)', (s) => (s.crossFileRatio === null ? 'n/a' : `${s.crossFileRatio.toFixed(2)}×`)),
    row('… whole workspace, continued / fill-in-the-middle', (s) => `${cell(s.crossFileByForm.continued.workspace)} / ${cell(s.crossFileByForm.fim.workspace)}`),
    row('… file alone, continued / fill-in-the-middle', (s) => `${cell(s.crossFileByForm.continued.alone)} / ${cell(s.crossFileByForm.fim.alone)}`),
    row(
      'wall time: index / lookups / absent / completions',
      (s) => `${secs(s.seconds.index)} / ${secs(s.seconds.lookup)} / ${secs(s.seconds.absent)} / ${secs(s.seconds.crossFile)}`,
    ),
    '',
    '| measure | value | wall time |',
    '|---|---:|---:|',
    `| in-file completion: single-line fill-in-the-middle, file alone | ${cell(result.fillIn)} | ${secs(result.fillIn.seconds)} |`,
    `| … the same lines completed inline as the engine ships, file alone | ${cell(result.fillInInline)} | ${secs(result.fillInInline.seconds)} |`,
    `| … inline, continued / fill-in-the-middle (the restated suffix) | ${cell(result.fillInInline.byForm.continued)} / ${cell(result.fillInInline.byForm.fim)} | |`,
    `| bits per byte (${result.bitsPerByte.rows} row${result.bitsPerByte.rows === 1 ? '' : 's'} of ${result.bitsPerByte.rowTokens} tokens, ${result.bitsPerByte.bytes.toLocaleString('en-US')} bytes) | ${result.bitsPerByte.bitsPerByte.toFixed(3)} | ${secs(result.bitsPerByte.seconds)} |`,
    '',
    `Total ${secs(result.seconds.total)} (fetching held-out code ${secs(result.seconds.fetch)}, loading the model ${secs(result.seconds.load)}).`,
  ];
  return `${lines.join('\n')}\n`;
}

/** Says where the answers' places came from: the engine, or the harness's own resolution of the text. */
function placesNote(result: EvalResult): string {
  const asks = result.sizes.flatMap((s) => s.items.asks);
  const fromEngine = asks.filter((a) => a.placesFrom === 'engine').length;
  if (asks.length === 0) return '';
  if (fromEngine === asks.length) return "Places are the engine's own (`AskResult.locations`).";
  return `Places: ${fromEngine} of ${asks.length} answers from the engine's \`AskResult.locations\`; the rest resolved from the answer's text (a \`path:line\` it spells out, else each answer line found verbatim in the workspace, the occurrence inside the answer's sources first).`;
}

/** Writes FILE.json and FILE.md beside it. */
export function writeReport(out: string, result: EvalResult): void {
  mkdirSync(path.dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify(result)}\n`); // compact: the items make it hundreds of KB, and every clone carries it
  writeFileSync(out.replace(/\.json$/, '') + '.md', markdown(result));
}
