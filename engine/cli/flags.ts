// Reading command-line flags the same way in every command: node:util's parseArgs
// takes them as strings, and these turn them into values or a usage error that
// names the flag and what was given. An integer is decimal digits, nothing else:
// "1e3", "0x10", "1.5" and "" are refused rather than read as something else.

/** A mistake in how the command was called: exit code 2, with the message. */
export class UsageError extends Error {}

const INTEGER = /^[+-]?\d+$/;

/** An integer flag, at least `min` (and at most `max`); undefined when absent. */
export function integerFlag(values: Record<string, unknown>, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  const text = typeof raw === 'string' ? raw.trim() : '';
  const value = Number(text);
  if (!INTEGER.test(text) || !Number.isSafeInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `from ${min} to ${max}`;
    throw new UsageError(`--${name} must be an integer ${range}, got "${String(raw)}"`);
  }
  return value;
}

/** A finite number flag; undefined when absent. */
export function numberFlag(values: Record<string, unknown>, name: string): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  const value = Number(raw);
  if (typeof raw !== 'string' || raw.trim() === '' || !Number.isFinite(value)) throw new UsageError(`--${name} must be a number, got "${String(raw)}"`);
  return value;
}

/** A string flag; undefined when absent. */
export function stringFlag(values: Record<string, unknown>, name: string): string | undefined {
  const raw = values[name];
  return typeof raw === 'string' ? raw : undefined;
}

/** Whether `err` is a usage mistake: ours, or parseArgs' own (an unknown flag, a missing value). */
export function isUsageError(err: unknown): boolean {
  return err instanceof UsageError || (err instanceof TypeError && 'code' in err && String(err.code).startsWith('ERR_PARSE_ARGS'));
}
