/**
 * A clock and timers that move only when a test says so, for code that takes
 * `now`, `setTimer` and `clearTimer` options: no test waits on real time or
 * asserts a wall-clock duration.
 *
 * @module
 */

interface PendingTimer {
  at: number;
  callback: () => void;
}

/** Lets promise callbacks run: one real macrotask turn. */
export function settle(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** Fake monotonic time in ms, starting at `start`. */
export class FakeClock {
  #now: number;
  #timers = new Map<number, PendingTimer>();
  #nextId = 1;
  #maxPending = 0;

  constructor(start = 0) {
    this.#now = start;
  }

  /** The current time. */
  now = (): number => this.#now;

  /** Calls `callback` once the clock reaches now + `ms`. */
  setTimer = (callback: () => void, ms: number): number => {
    const id = this.#nextId++;
    this.#timers.set(id, { at: this.#now + Math.max(0, ms), callback });
    this.#maxPending = Math.max(this.#maxPending, this.#timers.size);
    return id;
  };

  /** Cancels a timer (unknown ids are ignored). */
  clearTimer = (id: unknown): void => {
    this.#timers.delete(id as number);
  };

  /** Timers not yet fired nor cleared. */
  get pending(): number {
    return this.#timers.size;
  }

  /** The most timers that were pending at once. */
  get maxPending(): number {
    return this.#maxPending;
  }

  /**
   * Moves time forward by `ms`, firing due timers in time order and letting the
   * promise callbacks they cause run after each.
   */
  async advance(ms: number): Promise<void> {
    const target = this.#now + ms;
    for (;;) {
      await settle();
      let nextId: number | undefined;
      let next: PendingTimer | undefined;
      for (const [id, timer] of this.#timers) {
        if (timer.at <= target && (next === undefined || timer.at < next.at)) {
          nextId = id;
          next = timer;
        }
      }
      if (next === undefined || nextId === undefined) break;
      this.#timers.delete(nextId);
      this.#now = Math.max(this.#now, next.at);
      next.callback();
    }
    this.#now = target;
    await settle();
  }
}
