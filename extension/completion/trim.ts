// What an inline suggestion shows of a completion whose end the engine already
// decided (engine/context/completion-scope.ts decides where a suggestion stops,
// for the local engine and the remote backend alike): the text cleaned for the
// editor. Pure, with golden cases in test/extension/trim.test.ts.

export interface TidyInput {
  /** The completion, already cut where its line or block ends. */
  completion: string;
  /** Text of the cursor's line after the cursor. */
  lineSuffix: string;
  /** The lines after the cursor's line (a few suffice), to drop a repeat of what follows. */
  nextLines: string[];
}

export function tidySuggestion(input: TidyInput): string {
  const { lineSuffix, nextLines } = input;
  // control characters (other than tab and newline) are never what the user wants typed
  // eslint-disable-next-line no-control-regex
  const text = input.completion.replace(/\r\n/g, '\n').replace(/[\u0000-\u0008\u000b-\u001f\u007f\ufffd]/g, '');
  const lines = text.split('\n').map((line) => line.trimEnd());
  // mid-line: do not repeat the closing characters already after the cursor
  const suffixStart = lineSuffix.trim();
  if (suffixStart !== '' && lines.length === 1 && lines[0].endsWith(suffixStart)) lines[0] = lines[0].slice(0, lines[0].length - suffixStart.length);
  // drop a tail that repeats the code that follows the cursor
  const nextNonBlank = nextLines.find((line) => line.trim() !== '');
  while (lines.length > 1 && nextNonBlank !== undefined && lines[lines.length - 1].trim() === nextNonBlank.trim()) lines.pop();
  const tidied = lines.join('\n');
  return tidied.trim() === '' ? '' : tidied;
}
