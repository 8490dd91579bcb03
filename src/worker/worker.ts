/**
 * The worker: receive ──> schedule ──> prepare, run, settle, until a signal asks
 * it to drain. It exits only on a signal or a start-up configuration error, never
 * because of one job, one message or a passing AWS error.
 *
 * This module is the worker's life from start to end; `parts.ts` builds what it
 * runs with, `loop.ts` is the loop, `pipeline.ts` what happens to the messages of
 * one job.
 *
 * @module
 */
import type { Options } from "../config.ts";
import { describeError, UsageError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { WorkerLoop } from "./loop.ts";
import {
  checkBeforeDaemon,
  createSource,
  openParts,
  reachQueue,
  withQueueTimings,
} from "./parts.ts";

/** Runs the worker until a signal ends it; resolves to the process exit code. */
export async function runWorker(options: Options): Promise<number> {
  if (options.daemon !== undefined) {
    // Starts the daemon (and returns once it runs), or, inside it, calls runWorker
    // again in the foreground with the log going to a file.
    // Loaded only with -d: a worker would keep its code in memory for as long as it runs.
    const { runDaemon } = await import("../daemon.ts");
    return await runDaemon(options, { run: runWorker, check: checkBeforeDaemon });
  }
  if (!options.queue) throw new UsageError(`--${options.command} needs -q/--queue`);
  const parts = await openParts(options);
  try {
    const queue = await reachQueue(parts, options.queue);
    if (queue === undefined) {
      parts.log.info("stopped by a signal before the queue could be reached");
      return 0;
    }
    const timed = withQueueTimings(options, queue.settings);
    const loop = new WorkerLoop({
      ...parts,
      options: timed,
      queueUrl: queue.url,
      queue: queue.settings,
      source: await createSource(timed, parts.metrics),
    });
    return await keepingStrayRejections(parts.log, () => loop.run());
  } finally {
    await parts.close();
  }
}

/**
 * Runs `body` with stray rejections logged instead of ending the process: one
 * (a library's, or ours) must not end a worker that holds other people's messages.
 */
async function keepingStrayRejections<T>(log: Logger, body: () => Promise<T>): Promise<T> {
  const onUnhandled = (event: PromiseRejectionEvent) => {
    event.preventDefault();
    log.error("unhandled error", { error: describeError(event.reason) });
  };
  globalThis.addEventListener("unhandledrejection", onUnhandled);
  try {
    return await body();
  } finally {
    globalThis.removeEventListener("unhandledrejection", onUnhandled);
  }
}
