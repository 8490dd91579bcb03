/**
 * Capped exponential back-off, shared by receive errors, settle retries and the
 * resolution of the queue at start-up.
 *
 * @module
 */

/** Bounds of a capped exponential back-off, in milliseconds. */
export interface BackoffBounds {
  /** Delay of the first retry. */
  floorMs: number;
  /** Largest delay. */
  capMs: number;
}

/** Returns the delay before retry number `attempt` (1 = first retry): floor * 2^(attempt-1), capped. */
export function backoffDelay(attempt: number, bounds: BackoffBounds): number {
  const exponent = Math.max(0, Math.min(attempt - 1, 30));
  return Math.min(bounds.capMs, bounds.floorMs * 2 ** exponent);
}
