/**
 * The worker loop: receive, schedule, supervise, settle. (Being written.)
 *
 * @module
 */
import type { Options } from "../config.ts";

/** Runs the worker until a signal ends it; resolves to the process exit code. */
export function runWorker(_options: Options): Promise<number> {
  return Promise.resolve(0);
}
