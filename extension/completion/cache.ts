// Typing through a shown suggestion reuses it: when the new prefix is the old
// prefix plus the first characters of the old suggestion, the rest of the
// suggestion is still right and needs no request.

export interface CachedSuggestion {
  documentKey: string;
  prefix: string;
  suffix: string;
  text: string;
}

export class SuggestionCache {
  private last: CachedSuggestion | undefined;

  remember(entry: CachedSuggestion): void {
    this.last = entry.text === '' ? undefined : entry;
  }

  /** The remaining suggestion when the user typed a prefix of it, else undefined. */
  lookup(documentKey: string, prefix: string, suffix: string): string | undefined {
    const last = this.last;
    if (last === undefined || last.documentKey !== documentKey || last.suffix !== suffix) return undefined;
    if (!prefix.startsWith(last.prefix)) return undefined;
    const typed = prefix.slice(last.prefix.length);
    if (!last.text.startsWith(typed)) return undefined;
    const rest = last.text.slice(typed.length);
    return rest === '' ? undefined : rest;
  }

  clear(): void {
    this.last = undefined;
  }
}
