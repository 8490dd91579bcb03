/**
 * What happens to the messages of one job, top to bottom:
 *
 *     prepare ─────────────> run ──────────────────> settle
 *     (park poison, make     (the runner runs the    (one verdict per message,
 *      sure it is still       job, supervised; the    applied in one place:
 *      hidden, its steps,     follow-ups of the       delete, release, give back,
 *      open each input)       steps that succeeded)   park, or leave it to SQS)
 *
 * A message has one step, or one per S3 record: its steps run in order, each as a
 * job, and it is deleted once all of them succeeded. The messages of a job (one,
 * or a `--lambda` batch) each keep their own steps and their own verdict.
 *
 * @module
 */
import type { Logger } from "../log.ts";
import { describeError } from "../errors.ts";
import { describeAwsError } from "../aws.ts";
import type { WorkerMetrics } from "../metrics/metrics.ts";
import type { JobItem, JobRunner } from "../runners/runner.ts";
import { type JobSource, type JobStep, MalformedMessageError } from "../sources/source.ts";
import type { Clock } from "./clock.ts";
import { type JobEnd, type KillPolicy, SupervisedJob } from "./job.ts";
import type { JobMessage } from "./message.ts";
import type { Settler } from "./settle.ts";
import type { Shutdown } from "./shutdown.ts";
import type { VisibilityKeeper } from "./visibility.ts";

/** What settling does with a message: the one decision every way through ends in. */
export type Verdict =
  /** Every job of the message succeeded (or it had none): delete it. */
  | "delete"
  /** A job failed, or its input could not be had: visible again after the back-off delay. */
  | "release"
  /** The shutdown stopped its job, which is no failure of the message: visible again now. */
  | "give back"
  /** Received more often than `--max-receives`, and no redrive policy: hidden as long as SQS allows. */
  | "park"
  /** Its visibility lapsed before its job could start: SQS may have handed it to someone else. */
  | "leave";

/** What the pipeline works with. */
export interface PipelineOptions {
  runner: JobRunner;
  source: JobSource;
  /** Whether a message is still hidden; forgets one left to SQS. */
  keeper: Pick<VisibilityKeeper, "covered" | "untrack">;
  /** Applies the verdicts that reach SQS. */
  settler: Pick<Settler, "succeeded" | "failed" | "giveBack" | "park">;
  /** Whether the worker is stopping (a stopped job is given back) or forced (jobs are killed). */
  shutdown: Pick<Shutdown, "stopping" | "forced">;
  metrics: WorkerMetrics;
  /** The queue's logger. */
  log: Logger;
  /** FIFO queue: a message holds its group until it is settled. */
  fifo: boolean;
  /** `--max-receives` while it parks poison messages (the queue has no redrive policy). */
  parkAfter?: number;
  /** `-c`, for the slot metrics. */
  concurrency: number;
  policy: KillPolicy;
  /** The jobs running now: the pipeline adds and removes them, the shutdown stops them. */
  running: Set<SupervisedJob>;
  /** The clock of the jobs' kill timers; default the real one. */
  clock?: Clock;
}

/** A message on its way through its steps. */
interface Going {
  message: JobMessage;
  log: Logger;
  steps: JobStep[];
  /** The index of its next step. */
  next: number;
}

/** One step of a message, opened, for the next job. */
interface Opened {
  going: Going;
  step: JobStep;
  item: JobItem;
}

/** Runs and settles the messages the scheduler hands over, one job at a time per call. */
export class Pipeline {
  #options: PipelineOptions;
  /** Settles of standard-queue messages still on their way: the drain waits for them. */
  #settling = new Set<Promise<void>>();

  constructor(options: PipelineOptions) {
    this.#options = options;
  }

  /**
   * Prepares, runs and settles `messages` (the messages of one job); resolves, per
   * message, true when it succeeded and is deleted or being deleted. Never rejects.
   */
  async process(messages: JobMessage[]): Promise<boolean[]> {
    const verdicts = new Map<JobMessage, Verdict>();
    // When a failed job said when to try again (Retry-After), instead of the back-off.
    const retryAfter = new Map<JobMessage, number>();
    try {
      const going: Going[] = [];
      for (const message of messages) {
        const log = this.#options.log.with({ message_id: message.id });
        const prepared = await this.#prepare(message, log);
        if (Array.isArray(prepared)) going.push({ message, log, steps: prepared, next: 0 });
        else verdicts.set(message, prepared);
      }
      await this.#run(going, verdicts, retryAfter);
    } catch (error) {
      // A bug here must cost one attempt of the messages, never the worker.
      for (const message of messages.filter((message) => !verdicts.has(message))) {
        this.#options.log.error("internal error while running a job; releasing its message", {
          message_id: message.id,
          error: describeError(error),
        });
        verdicts.set(message, "release");
      }
    }
    await Promise.all(
      messages.map((message) =>
        this.#settle(message, verdicts.get(message)!, retryAfter.get(message))
      ),
    );
    return messages.map((message) => verdicts.get(message) === "delete");
  }

  /** Resolves once every settle still on its way is done. */
  async settled(): Promise<void> {
    while (this.#settling.size > 0) await Promise.all([...this.#settling]);
  }

  /** The verdict of a message that will not run, or the steps of one that will. */
  async #prepare(message: JobMessage, log: Logger): Promise<Verdict | JobStep[]> {
    const { parkAfter, keeper, source } = this.#options;
    if (parkAfter !== undefined && message.receiveCount > parkAfter) return "park";
    if (!await keeper.covered(message)) {
      // Its deadline passed before an extension could be confirmed: SQS may have
      // handed it to someone else. Starting it could run it twice at once.
      log.warn("the message's visibility lapsed before its job could start; leaving it to SQS", {
        receive_count: message.receiveCount,
      });
      return "leave";
    }
    try {
      return source.steps(message, log);
    } catch (error) {
      if (!(error instanceof MalformedMessageError)) throw error;
      log.error("malformed message; releasing it", {
        receive_count: message.receiveCount,
        error: error.message,
      });
      return "release";
    }
  }

  /**
   * Runs the messages' steps in rounds, the next step of each message still going
   * making one job, until every message has its verdict.
   */
  async #run(
    going: Going[],
    verdicts: Map<JobMessage, Verdict>,
    retryAfter: Map<JobMessage, number>,
  ): Promise<void> {
    while (going.length > 0) {
      const round: Opened[] = [];
      for (const entry of going) {
        const opened = await this.#openNext(entry);
        if (opened === "done") verdicts.set(entry.message, "delete");
        else if (opened === "unavailable") verdicts.set(entry.message, "release");
        else round.push(opened);
      }
      if (round.length === 0) return;
      const end = await this.#runJob(round.map((opened) => opened.item));
      going = [];
      for (const [index, { going: entry, step, item }] of round.entries()) {
        if (!end.succeeded[index]) {
          // A job the shutdown ended is not the message's failure: no back-off delay.
          const stopped = end.killed && this.#options.shutdown.stopping;
          verdicts.set(entry.message, stopped ? "give back" : "release");
          // A job stopped by the supervisor gave no answer of its own to honour.
          const after = end.killed ? undefined : end.report.results[index]?.retryAfterSeconds;
          if (after !== undefined) retryAfter.set(entry.message, after);
          continue;
        }
        if (step.succeeded) {
          await step.succeeded().catch((error) =>
            item.log.warn("the job succeeded but its follow-up failed", {
              error: describeAwsError(error),
            })
          );
        }
        going.push(entry);
      }
    }
  }

  /**
   * Opens the input of the message's next step that has something to run:
   * "done" when no step is left, "unavailable" when an input cannot be had now.
   */
  async #openNext(going: Going): Promise<Opened | "done" | "unavailable"> {
    while (going.next < going.steps.length) {
      const step = going.steps[going.next++];
      const log = going.log.with(step.fields);
      try {
        const input = await step.open();
        if (input !== undefined) {
          return { going, step, item: { message: going.message, input, log } };
        }
      } catch (error) {
        log.warn("cannot open the job's input; releasing the message", {
          error: describeAwsError(error),
        });
        return "unavailable";
      }
    }
    return "done";
  }

  /** Runs one job to its end, supervised, with its start and end lines and metrics. */
  async #runJob(items: JobItem[]): Promise<JobEnd> {
    const { runner, metrics, running, shutdown } = this.#options;
    for (const { message, log } of items) {
      log.info("job started", { receive_count: message.receiveCount });
      metrics.jobStarted(
        message.sentTimestamp === undefined ? undefined : Date.now() - message.sentTimestamp,
      );
    }
    const log = items.length === 1
      ? items[0].log
      : this.#options.log.with({ message_ids: items.map((item) => item.message.id) });
    const killAfterMs = this.#options.policy.killAfterMs;
    const job = new SupervisedJob(runner.run({ items, log, killAfterMs }), {
      policy: this.#options.policy,
      log,
      clock: this.#options.clock,
    });
    running.add(job);
    this.#reportSlots();
    if (shutdown.forced) job.kill("second signal");
    const end = await job.ended;
    running.delete(job);
    metrics.jobFinished({
      durationMs: end.durationMs,
      succeeded: end.succeeded.every((succeeded) => succeeded),
      killed: end.killed,
      messages: items.length,
      failedMessages: end.succeeded.filter((succeeded) => !succeeded).length,
    });
    this.#reportSlots();
    for (const [index, { message, log }] of items.entries()) {
      const succeeded = end.succeeded[index];
      const fields = {
        receive_count: message.receiveCount,
        ...end.report.fields,
        duration_ms: end.durationMs,
        outcome: succeeded ? "succeeded" : end.killed ? "killed" : "failed",
        error: end.report.results[index]?.error,
        // A failure is one line: where it happened rides on it (a --run module's frames).
        stack: succeeded ? undefined : end.report.results[index]?.stack,
      };
      if (succeeded) log.info("job finished", fields);
      else log.warn("job failed", fields);
    }
    return end;
  }

  /**
   * Settles a message from its verdict. A standard queue's message frees its slot
   * at once and is settled in the background (the drain waits for it); a FIFO
   * message holds its group until it is settled, so order survives a failed delete.
   */
  async #settle(
    message: JobMessage,
    verdict: Verdict,
    retryAfterSeconds: number | undefined,
  ): Promise<void> {
    if (verdict === "leave") return this.#options.keeper.untrack(message);
    const settling = this.#apply(message, verdict, retryAfterSeconds).then(() => {});
    if (this.#options.fifo) return await settling;
    this.#settling.add(settling);
    settling.finally(() => this.#settling.delete(settling));
  }

  #apply(
    message: JobMessage,
    verdict: Exclude<Verdict, "leave">,
    retryAfterSeconds: number | undefined,
  ): Promise<unknown> {
    const { settler, parkAfter } = this.#options;
    switch (verdict) {
      case "delete":
        return settler.succeeded(message);
      case "release":
        return settler.failed(message, retryAfterSeconds);
      case "give back":
        return settler.giveBack(message);
      case "park":
        return settler.park(message, parkAfter!);
    }
  }

  #reportSlots(): void {
    const { running, concurrency, metrics } = this.#options;
    metrics.slots(running.size, Math.max(0, concurrency - running.size));
  }
}
