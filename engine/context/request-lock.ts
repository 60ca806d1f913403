// One model sequence serves every request, so requests take turns. Inline
// completions are what a user waits on while typing: they go ahead of queued
// questions and updates, and a holder doing long work (an answer being written,
// a file being encoded) hands the lock over at its next step when one waits, then
// resumes ahead of everything else queued. A request whose signal aborts while it
// waits leaves the queue at once.

export type LockPriority = 'interactive' | 'normal';

/** Queue order: interactive work, then holders resuming after a yield, then the rest; first come first served within each. */
const RANK = { interactive: 0, resume: 1, normal: 2 } as const;

interface Waiter {
  rank: number;
  grant: () => void;
}

export class RequestLock {
  private held = false;
  private readonly waiting: Waiter[] = [];

  async run<T>(work: () => Promise<T>, options: { priority?: LockPriority; signal?: AbortSignal } = {}): Promise<T> {
    await this.acquire(RANK[options.priority ?? 'normal'], options.signal);
    try {
      return await work();
    } finally {
      this.release();
    }
  }

  /** Work is waiting for the lock. */
  get contended(): boolean {
    return this.waiting.length > 0;
  }

  /** Interactive work is waiting: a holder at a safe point should yield(). */
  get interactiveWaiting(): boolean {
    return this.waiting.length > 0 && this.waiting[0].rank === RANK.interactive;
  }

  /** Lets the waiting interactive work run, then takes the lock back before anything else queued. Only for the holder. */
  async yield(): Promise<void> {
    if (!this.interactiveWaiting) return;
    const back = this.acquire(RANK.resume);
    this.release();
    await back;
  }

  private acquire(rank: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason ?? new Error('aborted'));
    if (!this.held) {
      this.held = true;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        const at = this.waiting.indexOf(waiter);
        if (at >= 0) this.waiting.splice(at, 1);
        reject(signal?.reason ?? new Error('aborted'));
      };
      const waiter: Waiter = {
        rank,
        grant: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      let at = this.waiting.length;
      while (at > 0 && this.waiting[at - 1].rank > rank) at--;
      this.waiting.splice(at, 0, waiter);
    });
  }

  private release(): void {
    const next = this.waiting.shift();
    // handed straight over: the lock stays held
    if (next) next.grant();
    else this.held = false;
  }
}
