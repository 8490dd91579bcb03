/**
 * The worker's counters, always kept (with or without `--http`): `/metrics`
 * renders them and the `worker stopped` line sums them up, so the two can never
 * disagree.
 *
 * @module
 */
import type { LogFields } from "../log.ts";
import { type JobFinished, partlyFailed, type WorkerMetrics } from "./metrics.ts";

/** Every counter of the worker, by its key in `/metrics`' table (`http.ts`). */
export interface Counts {
  messagesReceived: number;
  messagesDeleted: number;
  messagesReleased: number;
  messagesParked: number;
  jobsStarted: number;
  jobsSucceeded: number;
  jobsFailed: number;
  jobsKilled: number;
  jobMessages: number;
  jobsPartlyFailed: number;
  visibilityExtended: number;
  visibilityLapsed: number;
  deletesUncertain: number;
  logLinesDroppedJob: number;
  logLinesDroppedWorker: number;
  receiveCalls: number;
  receiveErrors: number;
  s3ObjectsMissing: number;
  s3ObjectsDeleted: number;
}

/** The name of one counter. */
export type CounterName = keyof Counts;

/** A metrics sink that only counts; the other sinks and the summary read it. */
export interface Tally extends WorkerMetrics {
  /** The counts so far (live: read, never written, by others). */
  readonly counts: Readonly<Counts>;
}

/** All counters at zero. */
export function zeroCounts(): Counts {
  return {
    messagesReceived: 0,
    messagesDeleted: 0,
    messagesReleased: 0,
    messagesParked: 0,
    jobsStarted: 0,
    jobsSucceeded: 0,
    jobsFailed: 0,
    jobsKilled: 0,
    jobMessages: 0,
    jobsPartlyFailed: 0,
    visibilityExtended: 0,
    visibilityLapsed: 0,
    deletesUncertain: 0,
    logLinesDroppedJob: 0,
    logLinesDroppedWorker: 0,
    receiveCalls: 0,
    receiveErrors: 0,
    s3ObjectsMissing: 0,
    s3ObjectsDeleted: 0,
  };
}

/** Adds one finished job to `counts`: succeeded, failed or killed (one of the three). */
export function countJob(counts: Counts, job: JobFinished): void {
  if (job.killed) counts.jobsKilled += 1;
  else if (job.succeeded) counts.jobsSucceeded += 1;
  else counts.jobsFailed += 1;
  counts.jobMessages += job.messages ?? 1;
  if (partlyFailed(job)) counts.jobsPartlyFailed += 1;
}

/** Creates the counting sink. */
export function createTally(): Tally {
  const counts = zeroCounts();
  const nothing = () => {};
  return {
    counts,
    starting: nothing,
    started: nothing,
    polled: () => void counts.receiveCalls++,
    messagesReceived: (n) => void (counts.messagesReceived += n),
    receiveError: () => void counts.receiveErrors++,
    jobStarted: () => void counts.jobsStarted++,
    jobFinished: (job) => countJob(counts, job),
    messageDeleted: () => void counts.messagesDeleted++,
    messageReleased: () => void counts.messagesReleased++,
    messageParked: () => void counts.messagesParked++,
    visibilityExtended: () => void counts.visibilityExtended++,
    extensionSent: nothing,
    visibilityLapsed: () => void counts.visibilityLapsed++,
    deleteUncertain: () => void counts.deletesUncertain++,
    logLinesDropped: (jobOutput, worker) => {
      counts.logLinesDroppedJob += jobOutput;
      counts.logLinesDroppedWorker += worker;
    },
    s3ObjectMissing: () => void counts.s3ObjectsMissing++,
    s3ObjectDeleted: () => void counts.s3ObjectsDeleted++,
    slots: nothing,
    draining: nothing,
    close: () => Promise.resolve(),
  };
}

/**
 * The fields of the `worker stopped` line: uptime and what happened meanwhile,
 * each a counter of `/metrics` (named in the comments) or a sum of them.
 */
export function summaryFields(counts: Readonly<Counts>, uptimeMs: number): LogFields {
  return {
    uptime_s: Math.round(uptimeMs / 100) / 10,
    received: counts.messagesReceived, // sqsrun_messages_received_total
    jobs_run: counts.jobsStarted, // sqsrun_jobs_started_total
    succeeded: counts.jobsSucceeded, // sqsrun_jobs_succeeded_total
    failed: counts.jobsFailed, // sqsrun_jobs_failed_total
    killed: counts.jobsKilled, // sqsrun_jobs_killed_total
    deleted: counts.messagesDeleted, // sqsrun_messages_deleted_total
    released: counts.messagesReleased, // sqsrun_messages_released_total
    parked: counts.messagesParked, // sqsrun_messages_parked_total
    // sqsrun_log_lines_dropped_job_total + sqsrun_log_lines_dropped_worker_total
    lines_dropped: counts.logLinesDroppedJob + counts.logLinesDroppedWorker,
  };
}
