/**
 * The runner seam of the job lifecycle: a runner runs jobs (a child process per
 * message, a module in a Web Worker), and the worker's loop in `src/worker/` is
 * written once for all of them; a source (`src/sources/`) says what the inputs are.
 *
 * A job carries one message or several (up to {@linkcode JobRunner.maxItems}: 1
 * for `--exec` and `--run`, a batch for `--lambda`), and its runner says what
 * became of each message, so settling stays per message. The runner also names
 * the fields of the job's end line in its own terms: an exit code and a signal
 * for a process, the error a module threw. It is told to stop in two modes,
 * never with signal names.
 *
 * @module
 */
import type { LogFields, Logger } from "../log.ts";
import type { JobMessage } from "../worker/message.ts";
import type { JobInput } from "../sources/source.ts";

/**
 * How a job is told to stop: `polite` asks it to end (SIGTERM to a process,
 * `terminate()` of a module), `final` ends it now (SIGKILL, the end of the Web
 * Worker).
 */
export type StopMode = "polite" | "final";

/** One message of a job, with the input its source opened. */
export interface JobItem {
  message: JobMessage;
  input: JobInput;
  /** The message's logger (its id, and the fields of its step). */
  log: Logger;
}

/** What a runner is given to run: 1..maxItems messages. */
export interface Job {
  items: JobItem[];
  /** Where the job's own lines go (its output): its item's logger when it has one. */
  log: Logger;
  /**
   * When the supervisor's polite stop comes (`-x`), in ms after the start: what a
   * runner tells a job that wants to know its deadline (a Lambda runtime's).
   */
  killAfterMs?: number;
}

/** What became of one message of a job, as its runner sees it. */
export interface MessageResult {
  succeeded: boolean;
  /** Why it failed, when the runner can say (logged as `error`). */
  error?: string;
  /** Where it failed: the job's own stack frames, when it threw (logged as `stack`). */
  stack?: string;
  /**
   * A failed message's next delivery, in seconds from now, when the job said when
   * to try again (an HTTP answer's `Retry-After`): it replaces the `--backoff`
   * delay. Settling caps it at what SQS allows (12 hours after the receive).
   */
  retryAfterSeconds?: number;
}

/** How a job ended, in its runner's words. */
export interface JobReport {
  /** One per item of the job, in its order. */
  results: MessageResult[];
  /** The runner's own fields of the job's end line (`exit_code` and `signal` of a process). */
  fields: LogFields;
}

/** A started job, as its runner hands it over. */
export interface RunningJob {
  /** What names the job in the supervisor's lines (`pid` for a process). */
  readonly fields: LogFields;
  /** Resolves once the job ended; never rejects. */
  readonly done: Promise<JobReport>;
  /** Asks the job to stop (`polite`), or ends it (`final`). */
  stop(mode: StopMode): void;
}

/** What a runner that cannot take a job now waits for. */
export interface RunnerWait {
  /** What it waits for, in a few words: health says it (`starting: waiting for the app`). */
  reason: string;
  /** Resolves once the runner can take jobs again, or its signal aborted; never rejects. */
  done: Promise<void>;
}

/** Runs jobs. */
export interface JobRunner {
  /** Most messages one job carries. */
  readonly maxItems: number;
  /** Starts a job; one that cannot start ends as a failed report, never a throw. */
  run(job: Job): RunningJob;
  /**
   * Whether a job could run now: undefined when it could, else what the runner
   * waits for (the web app to answer its health check, a runtime to come up). The
   * receive loop asks before each receive call and sends none until the wait is
   * over, so no message is taken, and no receive counted, while nothing could run
   * it. `signal` aborts when the worker stops; `log` is the queue's logger. A
   * runner without this method is always ready.
   */
  ready?(signal: AbortSignal, log: Logger): RunnerWait | undefined;
  /** Releases what the runner holds (module workers); running jobs are already over. */
  close(): Promise<void>;
  /** What the start-up log says about how jobs run (e.g. how they get a process group). */
  readonly details?: Record<string, string>;
  /**
   * On a FIFO queue, a job may carry several messages of one group, in order
   * (a Lambda batch): the runner runs them in order and fails every message of
   * the group after a failed one. Unset: a job never holds two of one group.
   */
  readonly groupBatches?: boolean;
}

/** Returns a job's report in which every message met the same `result`. */
export function reportAll(job: Job, result: MessageResult, fields: LogFields): JobReport {
  return { results: job.items.map(() => ({ ...result })), fields };
}
