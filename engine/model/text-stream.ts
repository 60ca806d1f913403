// Streaming text out of a token stream: incremental detokenization and stop strings.
import type { Tokenizer } from './tokenizer.js';

const REPLACEMENT_CHAR = '\uFFFD';
/** Tokens kept as left context when the window slides. A UTF-8 character has at most 4 bytes,
 * so an incomplete trailing one spans at most 3 tokens: 4 always covers it. The context also keeps
 * decoder effects tied to the first token (e.g. Llama's stripped leading space) off the new text. */
const CONTEXT_TOKENS = 4;
/** The window slides once it holds this many tokens, bounding the cost of each push. */
const MAX_WINDOW_TOKENS = 16;

/**
 * Turns a stream of token ids into text deltas. A byte-level token can end mid-UTF-8-character,
 * which decodes to a trailing U+FFFD: that character is held back until a later token completes it
 * (or flush()). Each push decodes only a sliding window of recent tokens and emits what grew past
 * the text already emitted, so the cost per token is O(1), not O(text).
 */
export class TextStream {
  private window: number[] = [];
  /** Characters of decode(window) already emitted. */
  private emittedInWindow = 0;
  private emitted = '';

  constructor(
    private readonly tokenizer: Tokenizer,
    private readonly opts: { skipSpecialTokens?: boolean } = {},
  ) {}

  /** All text emitted so far (by push and flush). */
  get text(): string {
    return this.emitted;
  }

  push(id: number): string {
    this.window.push(id);
    const windowText = this.decodeWindow();
    const stableLength = windowText.endsWith(REPLACEMENT_CHAR) ? windowText.length - 1 : windowText.length;
    const delta = this.take(windowText, stableLength);
    if (this.window.length >= MAX_WINDOW_TOKENS) this.slide();
    return delta;
  }

  /** Emits whatever is held back, an incomplete character included (as U+FFFD). */
  flush(): string {
    const windowText = this.decodeWindow();
    return this.take(windowText, windowText.length);
  }

  private take(windowText: string, end: number): string {
    // A decoder could shorten the text (e.g. strip a trailing space): what was emitted stays emitted.
    if (end <= this.emittedInWindow) return '';
    const delta = windowText.slice(this.emittedInWindow, end);
    this.emittedInWindow = end;
    this.emitted += delta;
    return delta;
  }

  /** Drops all but the last CONTEXT_TOKENS tokens. The tail of the shorter window's text is the tail
   * of the longer one's, and only a trailing incomplete character can be unemitted. */
  private slide(): void {
    const heldBack = Math.max(0, this.decodeWindow().length - this.emittedInWindow);
    this.window = this.window.slice(-CONTEXT_TOKENS);
    this.emittedInWindow = Math.max(0, this.decodeWindow().length - heldBack);
  }

  private decodeWindow(): string {
    return this.tokenizer.decode(this.window, { skipSpecialTokens: this.opts.skipSpecialTokens ?? false });
  }
}

/**
 * Stop strings over a stream of text deltas. push() returns the text that is safe to emit now and
 * whether a stop string was hit; on a hit, `emit` ends just before the stop string that completed
 * first (the longest, if several complete at the same character) and everything after is dropped.
 * That choice does not depend on how the text was split into deltas. A suffix that could still grow
 * into a stop string is held back until later text settles it. Empty stop strings are ignored.
 */
export class StopMatcher {
  private readonly stops: string[];
  private pending = '';
  private stopped = false;

  constructor(stops: readonly string[]) {
    this.stops = stops.filter((stop) => stop.length > 0);
  }

  push(delta: string): { emit: string; stopped: boolean } {
    if (this.stopped) return { emit: '', stopped: true };
    const text = this.pending + delta;
    // pending never holds a whole stop string, so any match ends inside delta.
    let stopAt = -1;
    let stopEnd = Infinity;
    for (const stop of this.stops) {
      const at = text.indexOf(stop, Math.max(0, this.pending.length - stop.length + 1));
      if (at < 0) continue;
      const end = at + stop.length;
      if (end < stopEnd || (end === stopEnd && at < stopAt)) {
        stopAt = at;
        stopEnd = end;
      }
    }
    if (stopAt >= 0) {
      this.stopped = true;
      this.pending = '';
      return { emit: text.slice(0, stopAt), stopped: true };
    }
    const held = this.longestStopPrefixSuffix(text);
    this.pending = text.slice(text.length - held);
    return { emit: text.slice(0, text.length - held), stopped: false };
  }

  /** The held-back text: at the end of the stream it cannot become a stop string any more. */
  flush(): string {
    const rest = this.pending;
    this.pending = '';
    return this.stopped ? '' : rest;
  }

  /** Length of the longest suffix of text that is a proper prefix of some stop string. */
  private longestStopPrefixSuffix(text: string): number {
    let longest = 0;
    for (const stop of this.stops) {
      for (let length = Math.min(stop.length - 1, text.length); length > longest; length--) {
        if (text.endsWith(stop.slice(0, length))) {
          longest = length;
          break;
        }
      }
    }
    return longest;
  }
}
