// A definition lookup's answer chosen as a whole line. Token by token under LineChoice,
// the model commits to a line at its first token: among `const AType = z.object({` and
// `type A = z.infer<typeof AType>;` the first token ("const" / "type") decides before
// the name is even written. Here every candidate line is scored whole, as the model
// would write it after the question (the sum of its tokens' log-probabilities and the
// end of the turn), and the likeliest is the answer: the model's own choice, made over
// the whole line. Each candidate runs from the state after the question and is rolled
// back; the sources count only what the chosen line's queries selected.
import type { SelectionRecord } from '../model/sala-model.js';
import type { ContextCore } from './context-core.js';
import type { ScoredLine } from './context-types.js';
import { yieldToCompletions } from './tail-parking.js';

/** Lines scored whole at most; with more, the likeliest by their first token go on. */
export const MAX_SCORED_LINES = 24;

export interface WholeLineChoice {
  chosen: ScoredLine;
  /** Every line scored, likeliest first. */
  scored: ScoredLine[];
}

/** log softmax(values)[id]. */
function logProbOf(values: Float32Array, id: number): number {
  let max = -Infinity;
  for (const v of values) if (v > max) max = v;
  let sum = 0;
  for (const v of values) sum += Math.exp(v - max);
  return values[id] - max - Math.log(sum);
}

/**
 * Feeds `prompt` after the context end and scores each of `candidates` (non-empty) as
 * the answer. The sequence ends after the prompt on return. `onSelection` sees the
 * prompt's selections and, once the choice is made, the chosen line's.
 */
export async function chooseWholeLine(
  core: ContextCore,
  prompt: readonly number[],
  candidates: readonly string[],
  onSelection: (record: SelectionRecord) => void,
  signal?: AbortSignal,
): Promise<WholeLineChoice> {
  if (candidates.length === 0) throw new Error('internal: chooseWholeLine needs at least one candidate');
  const { model, format } = core;
  const vocab = model.config.vocabSize;
  const end = format.stopIds[0];
  const first = await model.forward(core.sequence, prompt, { signal, onSelection });
  const afterPrompt = core.sequence.checkpoint();
  const encoded = candidates.map((line) => ({ line, ids: format.text(line) })).filter((c) => c.ids.length > 0);
  // The cheap cut first: the likeliest first tokens, from the prompt's own logits.
  const kept = encoded
    .map((c) => ({ ...c, head: logProbOf(first, c.ids[0]) }))
    .sort((a, b) => b.head - a.head)
    .slice(0, MAX_SCORED_LINES);
  const scored: (ScoredLine & { records: SelectionRecord[] })[] = [];
  for (const c of kept) {
    const records: SelectionRecord[] = [];
    const rows = await model.forward(core.sequence, c.ids, {
      logits: c.ids.length,
      signal,
      onSelection: (r) => records.push({ ...r, selected: r.selected.slice() }),
    });
    // Row i of the line's logits predicts its token i + 1; the last row, the end of the turn.
    let logProb = c.head;
    for (let i = 0; i < c.ids.length; i++) logProb += logProbOf(rows.subarray(i * vocab, (i + 1) * vocab), i + 1 < c.ids.length ? c.ids[i + 1] : end);
    scored.push({ line: c.line, logProb, tokens: c.ids.length + 1, records });
    core.sequence.rollback(afterPrompt);
    // A completion waiting goes first; the question's state is set aside and brought back.
    await yieldToCompletions(core);
  }
  scored.sort((a, b) => b.logProb - a.logProb);
  for (const record of scored[0].records) onSelection(record);
  return { chosen: strip(scored[0]), scored: scored.map(strip) };
}

const strip = ({ line, logProb, tokens }: ScoredLine): ScoredLine => ({ line, logProb, tokens });
