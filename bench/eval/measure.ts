// The measurements themselves, through the engine as it ships: WorkspaceContext.ask for
// lookups and absent names, WorkspaceContext.complete for completions.
import type { SalaModel } from '../../engine/model/sala-model.js';
import type { Tokenizer } from '../../engine/model/tokenizer.js';
import type { AskResult, WorkspaceContext } from '../../engine/context/workspace-context.js';
import { buildContext, contextFile, type FileTokens } from './contexts.js';
import type { AbsentQuestion, CompletionSite, LookupQuestion } from './questions.js';
import { attributionCorrect, completionExact, lookupCorrect, resolveLocations, saysNotFound, type LineIndex, type Location } from './scoring.js';

/** Longest answers, in tokens: a definition line, up to three use lines, a not-found sentence. */
const ANSWER_TOKENS = { defined: 48, used: 96, absent: 48 } as const;
/** Longest completion: a line. */
const COMPLETION_TOKENS = 48;

export interface AskOutcome {
  kind: 'defined' | 'used' | 'absent';
  name: string;
  /** Asked as the engine ships (a lookup held to workspace lines, grounded-lookup.ts), or with the model unaided. */
  grounded: boolean;
  /** Lookups: where the definition sits in the context, 0–1. */
  depth?: number;
  answer: string;
  locations: Location[];
  /** Where the places came from: the engine's AskResult.locations, or resolved here from the answer's text. */
  placesFrom: 'engine' | 'answer';
  firstSource?: { path: string; startLine: number; endLine: number };
  correct: boolean;
  /** Grounded lookups: the workspace lines the answer could choose from (1: right by construction). */
  candidates?: number;
  /** 'defined' only: the first source covers the definition. */
  attributed?: boolean;
  /** 'absent' only: the answer resolves to no place. */
  noLocation?: boolean;
  ms: number;
}

/** How a question is asked: held to the workspace's lines or not, and the sparse layers' block budget (AskOptions.topk; default the engine's). */
export interface AskHow {
  grounded: boolean;
  topk?: number;
}

async function ask(context: WorkspaceContext, question: string, maxTokens: number, how: AskHow): Promise<AskResult & { locations?: Location[] }> {
  const stream = context.ask(question, { maxTokens, grounded: how.grounded, topk: how.topk });
  let next = await stream.next();
  while (!next.done) next = await stream.next();
  return next.value;
}

const placesFrom = (result: { locations?: unknown }) => (Array.isArray(result.locations) ? 'engine' : 'answer');

export async function askLookup(context: WorkspaceContext, q: LookupQuestion, index: LineIndex, how: AskHow): Promise<AskOutcome> {
  const { grounded } = how;
  const started = performance.now();
  const result = await ask(context, q.question, ANSWER_TOKENS[q.kind], how);
  const locations = resolveLocations(result, index);
  const first = result.sources[0];
  return {
    kind: q.kind,
    name: q.name,
    grounded,
    candidates: result.lookup?.candidateLines,
    depth: q.depth,
    answer: result.text,
    locations: locations.slice(0, 3),
    placesFrom: placesFrom(result),
    firstSource: first && { path: first.path, startLine: first.startLine, endLine: first.endLine },
    correct: lookupCorrect(locations, q.gold),
    attributed: q.kind === 'defined' ? attributionCorrect(result.sources, q.definition) : undefined,
    ms: performance.now() - started,
  };
}

export async function askAbsent(context: WorkspaceContext, q: AbsentQuestion, index: LineIndex, how: AskHow): Promise<AskOutcome> {
  const { grounded } = how;
  const started = performance.now();
  const result = await ask(context, q.question, ANSWER_TOKENS.absent, how);
  const locations = resolveLocations(result, index);
  const noLocation = locations.length === 0;
  return {
    kind: 'absent',
    name: q.name,
    grounded,
    answer: result.text,
    locations: locations.slice(0, 3),
    placesFrom: placesFrom(result),
    correct: noLocation && saysNotFound(result.text),
    noLocation,
    ms: performance.now() - started,
  };
}

export interface CompletionOutcome {
  path: string;
  line: number;
  /** How the engine asked the model (CompleteOptions.form). */
  form: MeasuredForm;
  expected: string;
  text: string;
  correct: boolean;
  ms: number;
}

/** Both inline forms are measured on every site, side by side; the report also gives the one the engine picks (inlineForm). */
export const INLINE_FORMS = ['continued', 'fim'] as const;
export type MeasuredForm = (typeof INLINE_FORMS)[number];

/**
 * A cross-file site with the whole workspace in context: the file is edited to its cut
 * version (prefix + suffix, as the editor holds it while the line is typed), completed
 * inline at the cut, then set back.
 */
export async function completeInWorkspace(context: WorkspaceContext, site: CompletionSite, original: string): Promise<Record<MeasuredForm, CompletionOutcome>> {
  await context.update([contextFile(site.path, site.prefix + site.suffix)]);
  try {
    return await eachForm(context, site);
  } finally {
    await context.update([contextFile(site.path, original)]);
  }
}

/** The same site with a context holding only the cut file. */
export async function completeFileAlone(model: SalaModel, tokenizer: Tokenizer, site: CompletionSite, tokens?: FileTokens): Promise<Record<MeasuredForm, CompletionOutcome>> {
  const { context } = await buildContext(model, tokenizer, [{ path: site.path, text: site.prefix + site.suffix }], tokens);
  return eachForm(context, site);
}

async function eachForm(context: WorkspaceContext, site: CompletionSite): Promise<Record<MeasuredForm, CompletionOutcome>> {
  const outcomes: Partial<Record<MeasuredForm, CompletionOutcome>> = {};
  for (const form of INLINE_FORMS) {
    const started = performance.now();
    const result = await context.complete(site.path, site.prefix, site.suffix, { maxTokens: COMPLETION_TOKENS, maxLines: 1, form });
    outcomes[form] = outcome(site, form, result.text, started);
  }
  return outcomes as Record<MeasuredForm, CompletionOutcome>;
}

/**
 * Single-line fill-in-the-middle, the file alone: the prompt is the training format's
 * FIM string (`<|file|>path\n<|fim_prefix|>…<|fim_suffix|>…<|fim_middle|>`) after an
 * empty context, whole (not the inline window); exact when the model writes the middle
 * and ends (training/evaluate.py fim).
 */
export async function fillIn(empty: WorkspaceContext, site: CompletionSite): Promise<CompletionOutcome> {
  const started = performance.now();
  const maxTokens = empty.format.text(site.middle).length + 8;
  const result = await empty.complete(site.path, site.prefix, site.suffix, { inline: false, stop: [], maxTokens });
  return { path: site.path, line: site.line, form: 'fim', expected: site.middle, text: result.text, correct: result.text === site.middle, ms: performance.now() - started };
}

function outcome(site: CompletionSite, form: MeasuredForm, text: string, started: number): CompletionOutcome {
  return { path: site.path, line: site.line, form, expected: site.middle, text, correct: completionExact(text, site.middle), ms: performance.now() - started };
}
