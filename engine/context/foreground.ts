// Questions and completions are foreground work: a compaction, which rebuilds the
// sequence in the background, pauses between pieces while any waits or runs.

export class Foreground {
  private running = 0;
  private idle: (() => void)[] = [];

  /** Runs `work` counted as foreground. */
  async run<T>(work: () => Promise<T>): Promise<T> {
    this.running++;
    try {
      return await work();
    } finally {
      if (--this.running === 0) for (const resolve of this.idle.splice(0)) resolve();
    }
  }

  /** Resolves once no question or completion waits or runs. */
  async settled(): Promise<void> {
    while (this.running > 0) await new Promise<void>((resolve) => this.idle.push(resolve));
  }
}
