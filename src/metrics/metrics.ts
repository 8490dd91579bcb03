/**
 * What the worker reports while it runs. Sinks (DogStatsD, Prometheus, health)
 * implement this interface; the worker calls it without knowing which are on.
 *
 * @module
 */

/** A job that just ended. */
export interface JobFinished {
  durationMs: number;
  succeeded: boolean;
  /** The supervisor had to signal it. */
  killed: boolean;
  /** How many messages it carried (a `--lambda` batch: up to `--batch-size`); default 1. */
  messages?: number;
  /** How many of them failed; fewer than `messages` but more than 0 is a partial failure. */
  failedMessages?: number;
}

/** True when some but not all messages of a finished job failed (a partial batch failure). */
export function partlyFailed(job: JobFinished): boolean {
  const failed = job.failedMessages ?? (job.succeeded ? 0 : 1);
  return failed > 0 && failed < (job.messages ?? 1);
}

/** Events and levels the worker reports. Every method must be cheap and never throw. */
export interface WorkerMetrics {
  /**
   * The worker cannot start receiving yet (the queue does not resolve): health
   * answers 503 `starting` with `reason` until {@linkcode WorkerMetrics.started}.
   */
  starting(reason: string): void;
  /** The receive loop runs: health follows the receive calls from now on. */
  started(): void;
  /** A receive call answered (health: the receive loop is alive). */
  polled(): void;
  /** Messages received by one call. */
  messagesReceived(count: number): void;
  /** A receive call failed. */
  receiveError(): void;
  /** A job is starting; `ageMs` is the time since SQS accepted the message. */
  jobStarted(ageMs: number | undefined): void;
  /** A job ended. */
  jobFinished(job: JobFinished): void;
  messageDeleted(): void;
  /** Made visible again: after a failure (with its back-off delay), or given back at once. */
  messageReleased(): void;
  /** Hidden as poison (`--max-receives` without a redrive policy): not run, not released. */
  messageParked(): void;
  visibilityExtended(): void;
  /**
   * An extension call went out `lateMs` after it was due (what a busy main thread
   * costs the deadlines).
   */
  extensionSent(lateMs: number): void;
  /** A message's visibility deadline passed, or may have, while sqsrun held it (once per delivery). */
  visibilityLapsed(): void;
  /** A delete may have succeeded although SQS answered its retry with a stale receipt. */
  deleteUncertain(): void;
  /** The log sink fell behind and dropped lines: job output, then the worker's own. */
  logLinesDropped(jobOutput: number, worker: number): void;
  /** An S3 record named an object that no longer exists. */
  s3ObjectMissing(): void;
  /** `--s3-delete` deleted a succeeded job's S3 object. */
  s3ObjectDeleted(): void;
  /** Jobs running and slots free, after every change. */
  slots(running: number, free: number): void;
  /** The worker stopped receiving (drain); health turns unready. */
  draining(): void;
  /** Flushes and closes the sinks. */
  close(): Promise<void>;
}

/** Metrics that go nowhere. */
export function noMetrics(): WorkerMetrics {
  const nothing = () => {};
  return {
    starting: nothing,
    started: nothing,
    polled: nothing,
    messagesReceived: nothing,
    receiveError: nothing,
    jobStarted: nothing,
    jobFinished: nothing,
    messageDeleted: nothing,
    messageReleased: nothing,
    messageParked: nothing,
    visibilityExtended: nothing,
    extensionSent: nothing,
    visibilityLapsed: nothing,
    deleteUncertain: nothing,
    logLinesDropped: nothing,
    s3ObjectMissing: nothing,
    s3ObjectDeleted: nothing,
    slots: nothing,
    draining: nothing,
    close: () => Promise.resolve(),
  };
}

/** Sends every event to each of `sinks`. */
export function fanOut(sinks: WorkerMetrics[]): WorkerMetrics {
  if (sinks.length === 1) return sinks[0];
  const each = <K extends keyof WorkerMetrics>(key: K) => (...args: unknown[]) => {
    for (const sink of sinks) (sink[key] as (...values: unknown[]) => unknown)(...args);
  };
  return {
    starting: each("starting"),
    started: each("started"),
    polled: each("polled"),
    messagesReceived: each("messagesReceived"),
    receiveError: each("receiveError"),
    jobStarted: each("jobStarted"),
    jobFinished: each("jobFinished"),
    messageDeleted: each("messageDeleted"),
    messageReleased: each("messageReleased"),
    messageParked: each("messageParked"),
    visibilityExtended: each("visibilityExtended"),
    extensionSent: each("extensionSent"),
    visibilityLapsed: each("visibilityLapsed"),
    deleteUncertain: each("deleteUncertain"),
    logLinesDropped: each("logLinesDropped"),
    s3ObjectMissing: each("s3ObjectMissing"),
    s3ObjectDeleted: each("s3ObjectDeleted"),
    slots: each("slots"),
    draining: each("draining"),
    close: async () => {
      await Promise.all(sinks.map((sink) => sink.close()));
    },
  };
}
