// Bytes done, bytes/s and ETA of a pull. The rate counts only bytes received in this run
// over the last few seconds (bytes resumed from disk arrived before), so a resume's ETA
// is the time the rest takes, not the whole file's.

const RATE_WINDOW_MS = 5_000;

export interface PullProgress {
  file: string;
  fileIndex: number;
  files: number;
  bytesDone: number;
  bytesTotal: number;
  bytesPerSecond: number;
  /** Undefined until a rate is known. */
  etaSeconds?: number;
}

export class ProgressMeter {
  private done = 0;
  private readonly samples: { at: number; done: number }[] = [];

  constructor(
    readonly total: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Bytes found on disk (a resumed part, a file fetched earlier): done, but not part of the rate. */
  skip(bytes: number): void {
    this.done += bytes;
    for (const sample of this.samples) sample.done += bytes;
  }

  add(bytes: number): void {
    this.done += bytes;
    const at = this.now();
    this.samples.push({ at, done: this.done });
    while (this.samples.length > 2 && at - this.samples[0].at > RATE_WINDOW_MS) this.samples.shift();
  }

  get bytesDone(): number {
    return this.done;
  }

  get bytesPerSecond(): number {
    if (this.samples.length < 2) return 0;
    const first = this.samples[0];
    const last = this.samples[this.samples.length - 1];
    const seconds = (last.at - first.at) / 1000;
    return seconds > 0 ? (last.done - first.done) / seconds : 0;
  }

  get etaSeconds(): number | undefined {
    const rate = this.bytesPerSecond;
    return rate > 0 ? Math.max(0, this.total - this.done) / rate : undefined;
  }
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value < 10 ? value.toFixed(1) : value.toFixed(0)} ${units[unit]}`;
}
