// Questions after the whole context: an answer streamed with its sources, or the
// score of a given answer. Both run after the context end and roll back to it, so
// they never change the context; an answer being written yields to completions
// between tokens.
import type { SelectionRecord } from '../model/sala-model.js';
import { generate } from '../model/generation.js';
import type { ContextCore } from './context-core.js';
import { ContextError, type AskOptions, type AskResult } from './context-types.js';
import { countHits, locationSearch, sourcesOf } from './sources.js';
import { resolveLocations } from './answer-locations.js';
import { canonicalQuestion, candidateLines, lookupConstraint, parseLookup } from './grounded-lookup.js';
import { settleTail, yieldToCompletions } from './tail-parking.js';

/**
 * Blocks a question's queries select at least (beyond the local window; the model's own topk
 * where that is more). A question and its answer are a few dozen rows, so reading more of the
 * context costs little beside the prefill (13–21% more per question at 128K for the default
 * model); with its trained 16 the sparse layers more often left the definition's block unread
 * (eval:model at 128K, three contexts: the first source covered the definition for 52 of 60
 * questions at topk 16, 55 of 60 at 48 and 56 of 60 at 96 for 4–38% more time, the same answers;
 * docs/benchmarks/model-eval-question-topk.md). A model trained with more (the 9B: 64) keeps
 * its own: that was not measured, and on a GPU every extra block is a gather.
 */
export const QUESTION_TOPK = 48;

/** See WorkspaceContext.ask. */
export async function* askStream(core: ContextCore, question: string, options: AskOptions = {}): AsyncGenerator<string, AskResult> {
  const queue: string[] = [];
  let wake: (() => void) | undefined;
  let done = false;
  let failure: unknown;
  let result: AskResult | undefined;
  const work = core.foreground.run(() =>
    core.lock.run(async () => {
      settleTail(core);
      const start = core.sequence.length;
      // A lookup ("Where is `X` defined?") on a model trained on workspace questions is
      // asked in the trained form and answered with one of the workspace's lines that hold X.
      // It names what it looks for, so an attached file or selection (the chat attaches the
      // open editor's) does not change it: that code is in the workspace already.
      const lookup = options.grounded !== false && core.format.hasChat ? parseLookup(question) : undefined;
      let text = question;
      if (options.selection && !lookup) {
        const where = options.selection.startLine !== undefined ? `${options.selection.path}:${options.selection.startLine}` : options.selection.path;
        text += `\n\nSelected code (${where}):\n${options.selection.text}`;
      }
      const hits = new Map<number, number>();
      const candidates = lookup
        ? candidateLines(
            livePaths(core).map((path) => locationSearch(core, hits).lines(path)),
            lookup,
          )
        : [];
      const prompt = core.format.question(lookup ? canonicalQuestion(lookup) : text);
      const onSelection = (record: SelectionRecord) => countHits(core, record, start, hits);
      try {
        const stream = generate(core.model, core.tokenizer, prompt, {
          sequence: core.sequence,
          maxTokens: options.maxTokens ?? 256,
          temperature: options.temperature ?? 0,
          stopIds: core.format.stopIds,
          signal: options.signal,
          onSelection,
          topk: options.topk ?? Math.max(QUESTION_TOPK, core.model.config.sparse.topk),
          constraint: lookup && lookupConstraint(lookup, candidates, core.tokenizer, core.format.stopIds),
        });
        let next = await stream.next();
        while (!next.done) {
          queue.push(next.value);
          wake?.();
          // A completion waiting goes first: the answer so far is set aside and brought back exactly.
          await yieldToCompletions(core);
          next = await stream.next();
        }
        const text = next.value.text;
        const locations = resolveLocations(text, locationSearch(core, hits));
        result = {
          text,
          finishReason: next.value.finishReason,
          promptTokens: prompt.length,
          locations,
          sources: sourcesOf(core, hits, 5, locations[0]),
          blockHits: [...hits],
          layout: core.layout(),
          lookup: lookup && { ...lookup, candidateLines: candidates.length },
        };
      } finally {
        core.sequence.rollback(core.contextEnd);
      }
    }),
  );
  work.then(
    () => {
      done = true;
      wake?.();
    },
    (err: unknown) => {
      failure = err;
      done = true;
      wake?.();
    },
  );
  for (;;) {
    while (queue.length > 0) yield queue.shift() ?? '';
    if (done) break;
    await new Promise<void>((resolve) => (wake = resolve));
    wake = undefined;
  }
  if (failure !== undefined) throw failure;
  if (!result) throw new ContextError('internal: ask finished without a result');
  return result;
}

/** See WorkspaceContext.score. */
export function scoreAnswer(core: ContextCore, question: string, answer: string, signal?: AbortSignal): Promise<{ logProb: number; tokens: number }> {
  return core.foreground.run(() =>
    core.lock.run(async () => {
      settleTail(core);
      const prompt = core.format.question(question);
      const target = [...core.format.text(answer), ...core.format.stopIds.slice(0, 1)];
      try {
        // Rows from the prompt's last position on: row i predicts target[i].
        const logits = await core.model.forward(core.sequence, [...prompt, ...target], { logits: target.length + 1, signal });
        const vocab = core.model.config.vocabSize;
        let logProb = 0;
        target.forEach((id, row) => {
          const values = logits.subarray(row * vocab, (row + 1) * vocab);
          let max = -Infinity;
          for (const v of values) max = Math.max(max, v);
          let sum = 0;
          for (const v of values) sum += Math.exp(v - max);
          logProb += values[id] - max - Math.log(sum);
        });
        return { logProb, tokens: target.length };
      } finally {
        core.sequence.rollback(core.contextEnd);
      }
    }),
  );
}

const livePaths = (core: ContextCore) => core.layout().map((span) => span.path);
