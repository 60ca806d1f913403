// How much an inline completion writes, decided from the cursor's line, and where
// generation stops: a suggestion is worth showing as soon as its unit is complete,
// and every token after that is latency the user waits through for text the editor
// would cut anyway (the provider shows one line mid-line, and stops a block at a
// blank line or where the indentation leaves it).
//   cursor mid-line (code after it)         → the rest of the line
//   end of a line that has code and does
//   not open a block                        → the rest of the line, or the next
//                                             line when this one is complete
//   blank line, or after { ( [ :            → the block: up to a blank line, a line
//                                             indented less than the block's body,
//                                             or maxLines (a closing bracket at the
//                                             cursor's indentation ends it, kept
//                                             when the completion opened the block)
// A line that starts repeating itself (a unit of 4–40 characters three times in a
// row: small models loop) ends after its first occurrence, and no line runs past
// maxLineChars.
// Pure, and the one place that decides where a suggestion ends: the engine stops
// generation with it, and the remote backend cuts a server's continuation with it
// (cutCompletion). Golden cases in test/context/completion-scope.test.ts.

export type CompletionScope = 'line' | 'block';

/** Most lines of a block suggestion unless the caller says otherwise. */
export const DEFAULT_MAX_LINES = 8;

export interface ScopeInput {
  /** The cursor's line before the cursor. */
  linePrefix: string;
  /** The cursor's line after the cursor. */
  lineSuffix: string;
  /** Most lines a block completion writes. */
  maxLines: number;
  /** Longest line, the line's text before the cursor included (default 160). */
  maxLineChars?: number;
}

const REPEAT_MIN = 4;
const REPEAT_MAX = 40;

const OPENS_BLOCK = /[{[(:]\s*$/;
const CLOSES = /^\s*[}\])]/;

function indentOf(line: string): number {
  return line.length - line.trimStart().length;
}

export function completionScope(linePrefix: string, lineSuffix: string): CompletionScope {
  if (lineSuffix.trim() !== '') return 'line';
  return linePrefix.trim() === '' || OPENS_BLOCK.test(linePrefix) ? 'block' : 'line';
}

/**
 * Watches the text of a completion as it streams and says where it ends:
 * `end` is the length of the text worth keeping once the scope's unit is complete
 * (generation can stop there), undefined while it is not.
 */
export class CompletionStopper {
  readonly scope: CompletionScope;
  private readonly midLine: boolean;
  private readonly baseIndent: number;
  private text = '';

  constructor(private readonly input: ScopeInput) {
    this.scope = completionScope(input.linePrefix, input.lineSuffix);
    this.midLine = input.lineSuffix.trim() !== '';
    this.baseIndent = input.linePrefix.trim() === '' ? input.linePrefix.length : indentOf(input.linePrefix);
  }

  /** Adds generated text; returns where the completion ends, once that is known. */
  push(delta: string): number | undefined {
    this.text += delta;
    return (this.scope === 'line' ? this.lineEnd() : this.blockEnd()) ?? this.runawayEnd();
  }

  /** The end of a current line that loops or runs too long. */
  private runawayEnd(): number | undefined {
    const lineStart = this.text.lastIndexOf('\n') + 1;
    const line = this.text.slice(lineStart);
    const before = lineStart === 0 ? this.input.linePrefix.length : 0;
    const limit = (this.input.maxLineChars ?? 160) - before;
    if (line.length > limit) return lineStart + Math.max(0, limit);
    for (let unit = REPEAT_MIN; unit <= REPEAT_MAX && 3 * unit <= line.length; unit++) {
      const last = line.slice(-unit);
      if (line.slice(-2 * unit, -unit) === last && line.slice(-3 * unit, -2 * unit) === last) return this.text.length - 2 * unit;
    }
    return undefined;
  }

  private lineEnd(): number | undefined {
    const first = this.text.indexOf('\n');
    if (first < 0) return undefined;
    // mid-line, or the line's own rest: the first line is the completion
    if (this.midLine || this.text.slice(0, first).trim() !== '') return first;
    // the line was complete: the next non-blank line is the suggestion
    const second = this.text.indexOf('\n', first + 1);
    if (second < 0) return undefined;
    return this.text.slice(first + 1, second).trim() === '' ? first : second;
  }

  private blockEnd(): number | undefined {
    const lines = this.text.split('\n');
    const opensBlock = lines.length > 1 && OPENS_BLOCK.test(this.input.linePrefix + lines[0]);
    const bodyIndent = opensBlock ? this.baseIndent + 1 : this.baseIndent;
    let end = lines[0].length;
    // every line after the first that has started: decide as soon as its indentation is known
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i];
      const complete = i < lines.length - 1;
      if (line.trim() === '') {
        if (complete) return end; // a blank line ends a unit of code
        continue;
      }
      if (i >= this.input.maxLines) return end;
      const indent = indentOf(line);
      const closes = CLOSES.test(line);
      if (indent < bodyIndent) {
        // the bracket that closes the block the completion opened completes it
        if (opensBlock && closes && indent === this.baseIndent) return complete ? end + 1 + line.length : undefined;
        return end;
      }
      if (!opensBlock && closes && indent === this.baseIndent) return end;
      if (!complete) return undefined;
      end += 1 + line.length;
    }
    return undefined;
  }
}

/**
 * A whole continuation cut where the stopper would have stopped it while streaming
 * (fed a character at a time, so a runaway line is caught where it starts): for
 * text generated elsewhere, e.g. by a remote server, that had no stopper.
 */
export function cutCompletion(text: string, input: ScopeInput): string {
  const stopper = new CompletionStopper(input);
  for (let i = 0; i < text.length; i++) {
    const end = stopper.push(text[i]);
    if (end !== undefined) return text.slice(0, end);
  }
  return text;
}
