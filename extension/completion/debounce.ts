// Adaptive debounce for inline completions (after Tabby's): wait about as long
// as the user's recent pause between keystrokes, so a fast typist does not fire
// a request per key and a slow one does not wait for nothing.

export interface DebounceConfig {
  /** Used until enough keystrokes were seen. */
  baseMs: number;
  minMs: number;
  maxMs: number;
  /** How many recent intervals to average. */
  window: number;
  /** Intervals longer than this are pauses, not typing, and are ignored. */
  ignoreAboveMs: number;
}

export const DEFAULT_DEBOUNCE: DebounceConfig = { baseMs: 150, minMs: 60, maxMs: 350, window: 8, ignoreAboveMs: 2_000 };

export class AdaptiveDebounce {
  private lastEventAt: number | undefined;
  private readonly intervals: number[] = [];

  constructor(private readonly config: DebounceConfig = DEFAULT_DEBOUNCE) {}

  /** Records a keystroke (a provider call) at `now` and returns how long to wait before requesting. */
  next(now: number): number {
    if (this.lastEventAt !== undefined) {
      const interval = now - this.lastEventAt;
      if (interval >= 0 && interval <= this.config.ignoreAboveMs) {
        this.intervals.push(interval);
        if (this.intervals.length > this.config.window) this.intervals.shift();
      }
    }
    this.lastEventAt = now;
    return this.delayMs();
  }

  delayMs(): number {
    const { baseMs, minMs, maxMs } = this.config;
    if (this.intervals.length < 3) return baseMs;
    const average = this.intervals.reduce((sum, value) => sum + value, 0) / this.intervals.length;
    // a little longer than the typical gap between keys: the next key usually comes before it
    return Math.round(Math.min(maxMs, Math.max(minMs, average * 1.5)));
  }
}

/** Resolves true after `ms`, or false as soon as the token is cancelled. */
export function sleepUnlessCancelled(
  ms: number,
  token: { isCancellationRequested: boolean; onCancellationRequested: (listener: () => void) => { dispose(): void } },
): Promise<boolean> {
  if (token.isCancellationRequested) return Promise.resolve(false);
  return new Promise((resolve) => {
    const subscription = token.onCancellationRequested(() => {
      clearTimeout(timer);
      subscription.dispose();
      resolve(false);
    });
    const timer = setTimeout(() => {
      subscription.dispose();
      resolve(true);
    }, ms);
  });
}
