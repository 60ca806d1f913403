// Cuts a raw model continuation down to what an inline suggestion should show.
// Pure, with golden cases in test/extension/trim.test.ts.

export interface TrimInput {
  completion: string;
  /** Text of the cursor's line before the cursor. */
  linePrefix: string;
  /** Text of the cursor's line after the cursor. */
  lineSuffix: string;
  /** The lines after the cursor's line (a few suffice), to drop a repeat of what follows. */
  nextLines: string[];
  maxLines: number;
}

function indentOf(line: string): number {
  return line.length - line.trimStart().length;
}

export function trimCompletion(input: TrimInput): string {
  const { linePrefix, lineSuffix, nextLines, maxLines } = input;
  // control characters (other than tab and newline) are never what the user wants typed
  // eslint-disable-next-line no-control-regex
  let text = input.completion.replace(/\r\n/g, '\n').replace(/[\u0000-\u0008\u000b-\u001f\u007f\ufffd]/g, '');
  // Mid-line (code after the cursor): only the rest of this line makes sense.
  if (lineSuffix.trim() !== '') {
    const firstLine = text.split('\n')[0] ?? '';
    const trimmed = firstLine.trimEnd();
    // do not repeat the closing characters already after the cursor
    const suffixStart = lineSuffix.trim();
    return trimmed.endsWith(suffixStart) ? trimmed.slice(0, trimmed.length - suffixStart.length) : trimmed;
  }

  const lines = text.split('\n');
  const kept: string[] = [lines[0] ?? ''];
  // the block the cursor is in: its indentation, or the next line's when the cursor opens a block
  const baseIndent = linePrefix.trim() === '' ? linePrefix.length : indentOf(linePrefix);
  const opensBlock = /[{[(:]\s*$/.test(linePrefix + (lines[0] ?? ''));
  // lines of the block's body must sit deeper than the line that opened it
  const bodyIndent = opensBlock ? baseIndent + 1 : baseIndent;
  for (const line of lines.slice(1)) {
    if (kept.length >= maxLines) break;
    if (line.trim() === '') break; // a blank line ends a unit of code
    const closes = /^\s*[}\])]/.test(line);
    const indent = indentOf(line);
    if (indent < bodyIndent) {
      // the bracket that closes the block we opened completes it; anything else leaves it
      if (opensBlock && closes && indent === baseIndent) kept.push(line);
      break;
    }
    if (!opensBlock && closes && indent === baseIndent) break; // closes a block we did not open
    kept.push(line);
  }
  // drop a tail that repeats the code that follows the cursor
  const nextNonBlank = nextLines.find((line) => line.trim() !== '');
  while (kept.length > 1 && nextNonBlank !== undefined && kept[kept.length - 1].trim() === nextNonBlank.trim()) kept.pop();
  text = kept.map((line) => line.trimEnd()).join('\n');
  return text.trim() === '' ? '' : text;
}
