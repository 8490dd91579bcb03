/**
 * One job's life as an explicit state machine:
 *
 *     running ──(-x elapsed / shutdown)──> terminating ──(--kill-grace)──> killing
 *        │                                    │  polite stop every -X          │ final stop
 *        └────────────────────────────────────┴───────────────> exited <──────┘
 *
 * The runner behind a job (a child process, a module) only needs to start it,
 * report its end, and take the two stops ({@linkcode StopMode}). Which of its
 * messages succeeded is the runner's word, overruled only when the supervisor had
 * to stop the job.
 *
 * @module
 */
import type { Logger } from "../log.ts";
import type { JobReport, RunningJob } from "../runners/runner.ts";
import { type Clock, REAL_CLOCK } from "./clock.ts";

/** When to end a job that runs too long, in milliseconds. */
export interface KillPolicy {
  /** `-x`: the first polite stop this long after the start. */
  killAfterMs: number;
  /** `-X`: the polite stop again this often. */
  retryMs: number;
  /** `--kill-grace`: the final stop this long after the first polite one. */
  graceMs: number;
}

/** How a job is watched. */
export interface SupervisionOptions {
  policy: KillPolicy;
  /** The job's logger: the supervisor's own lines about it go there. */
  log: Logger;
  /** The clock of the kill timers and the duration; default the real one. */
  clock?: Clock;
}

/** The states of a supervised job. */
export type JobState = "running" | "terminating" | "killing" | "exited";

/** How a supervised job ended. */
export interface JobEnd {
  /** What its runner said. */
  report: JobReport;
  /** The supervisor had to stop it (kill timeout or shutdown): none of its messages succeeded. */
  killed: boolean;
  /** Per message of the job, in its order: the runner said it succeeded, and it was not killed. */
  succeeded: boolean[];
  durationMs: number;
}

/** Watches one job and escalates from the polite stop to the final one on schedule. */
export class SupervisedJob {
  #job: RunningJob;
  #policy: KillPolicy;
  #log: Logger;
  #clock: Clock;
  #state: JobState = "running";
  #killed = false;
  #timers = new Set<unknown>();
  #startedAt: number;
  /** Resolves when the job has exited; never rejects. */
  readonly ended: Promise<JobEnd>;

  constructor(job: RunningJob, options: SupervisionOptions) {
    this.#job = job;
    this.#policy = options.policy;
    this.#log = options.log;
    this.#clock = options.clock ?? REAL_CLOCK;
    this.#startedAt = this.#clock.now();
    this.#after(this.#policy.killAfterMs, () => this.terminate("kill timeout"));
    this.ended = job.done.then((report) => {
      this.#state = "exited";
      for (const timer of this.#timers) this.#clock.clearTimer(timer);
      this.#timers.clear();
      return {
        report,
        killed: this.#killed,
        succeeded: report.results.map((result) => result.succeeded && !this.#killed),
        durationMs: Math.round(this.#clock.now() - this.#startedAt),
      };
    });
  }

  /** The current state. */
  get state(): JobState {
    return this.#state;
  }

  /** Starts the kill sequence now, unless it has started already. */
  terminate(reason: string): void {
    if (this.#state !== "running") return;
    this.#state = "terminating";
    this.#killed = true;
    this.#log.warn("terminating job", { reason, ...this.#job.fields });
    this.#job.stop("polite");
    this.#repeatPoliteStop();
    this.#after(this.#policy.graceMs, () => this.kill("kill grace elapsed"));
  }

  /** Stops the job for good now. */
  kill(reason: string): void {
    if (this.#state === "exited" || this.#state === "killing") return;
    this.#state = "killing";
    this.#killed = true;
    this.#log.warn("killing job", { reason, ...this.#job.fields });
    this.#job.stop("final");
  }

  /** Asks again every `-X` while the job is terminating. */
  #repeatPoliteStop(): void {
    this.#after(this.#policy.retryMs, () => {
      if (this.#state !== "terminating") return;
      this.#job.stop("polite");
      this.#repeatPoliteStop();
    });
  }

  #after(ms: number, callback: () => void): void {
    const timer = this.#clock.setTimer(() => {
      this.#timers.delete(timer);
      callback();
    }, ms);
    this.#timers.add(timer);
  }
}
