/**
 * Time as the worker's parts see it: a monotonic clock and one-shot timers,
 * passed in where a unit test needs to control them (`tests/support/fake_clock.ts`),
 * and a sleep that an abort signal cuts short.
 *
 * @module
 */

/** A monotonic clock in milliseconds, and timers on it. */
export interface Clock {
  /** Now, in ms (`performance.now()` for the real clock). */
  now(): number;
  /** Calls `callback` once, `ms` from now; returns what cancels it. */
  setTimer(callback: () => void, ms: number): unknown;
  /** Cancels a timer (one already fired or cancelled is ignored). */
  clearTimer(id: unknown): void;
}

/** The real clock: `performance.now()`, `setTimeout` and `clearTimeout`. */
export const REAL_CLOCK: Clock = Object.freeze({
  now: () => performance.now(),
  setTimer: (callback: () => void, ms: number): unknown => setTimeout(callback, ms),
  clearTimer: (id: unknown) => clearTimeout(id as number),
});

/** Resolves after `ms` on `clock`, or at once when `signal` aborts (never rejects). */
export function sleep(ms: number, signal?: AbortSignal, clock: Clock = REAL_CLOCK): Promise<void> {
  if (signal?.aborted || ms <= 0) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = clock.setTimer(done, ms);
    function done() {
      clock.clearTimer(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
