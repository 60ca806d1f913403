// Restart policy for a crashed engine: exponential backoff, a cap on attempts in
// a row, and a stable period after which earlier crashes are forgotten.

export interface BackoffPolicy {
  initialMs: number;
  maxMs: number;
  /** Crashes in a row after which we stop restarting and ask the user. */
  maxAttempts: number;
  /** Running this long without a crash resets the count. */
  stableMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { initialMs: 500, maxMs: 30_000, maxAttempts: 5, stableMs: 60_000 };

/** Delay before restart number `attempt` (1-based), or undefined when we should give up. */
export function restartDelay(attempt: number, policy: BackoffPolicy = DEFAULT_BACKOFF): number | undefined {
  if (attempt < 1 || attempt > policy.maxAttempts) return undefined;
  return Math.min(policy.maxMs, policy.initialMs * 2 ** (attempt - 1));
}
