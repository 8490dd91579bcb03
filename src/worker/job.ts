/**
 * One job's life as an explicit state machine:
 *
 *     running ──(-x elapsed / shutdown)──> terminating ──(--kill-grace)──> killing
 *        │                                    │  SIGTERM every -X              │ SIGKILL
 *        └────────────────────────────────────┴───────────────> exited <──────┘
 *
 * The runner behind a job (a child process, later a module) only needs to start,
 * report its end, and take two signals.
 *
 * @module
 */
import type { Logger } from "../log.ts";

/** The two signals the supervisor sends: polite, then final. */
export type KillSignal = "SIGTERM" | "SIGKILL";

/** How a runner's job ended. */
export interface JobResult {
  /** Exit code, or null when the job was ended by a signal or never started. */
  code: number | null;
  /** Signal that ended it, if any. */
  signal: string | null;
  /** Why the job could not run at all. */
  error?: string;
}

/** A started job, as its runner hands it over. */
export interface JobHandle {
  pid?: number;
  /** Resolves once the job ended; never rejects. */
  done: Promise<JobResult>;
  /** Sends a signal to the job (its whole process group, for a child). */
  signal(name: KillSignal): void;
}

/** When to end a job that runs too long, in milliseconds. */
export interface KillPolicy {
  /** `-x`: first SIGTERM this long after the start. */
  killAfterMs: number;
  /** `-X`: SIGTERM again this often. */
  retryMs: number;
  /** `--kill-grace`: SIGKILL this long after the first SIGTERM. */
  graceMs: number;
}

/** The states of a supervised job. */
export type JobState = "running" | "terminating" | "killing" | "exited";

/** The final word on a job. */
export interface JobOutcome {
  succeeded: boolean;
  result: JobResult;
  /** The supervisor had to signal it (timeout or shutdown). */
  killed: boolean;
  durationMs: number;
}

/** Watches one job and escalates from SIGTERM to SIGKILL on schedule. */
export class SupervisedJob {
  #handle: JobHandle;
  #policy: KillPolicy;
  #log: Logger;
  #state: JobState = "running";
  #killed = false;
  #timers: ReturnType<typeof setTimeout>[] = [];
  #startedAt = performance.now();
  /** Resolves when the job has exited; never rejects. */
  readonly outcome: Promise<JobOutcome>;

  constructor(handle: JobHandle, policy: KillPolicy, log: Logger) {
    this.#handle = handle;
    this.#policy = policy;
    this.#log = log;
    this.#timers.push(setTimeout(() => this.terminate("kill timeout"), policy.killAfterMs));
    this.outcome = handle.done.then((result) => {
      this.#state = "exited";
      for (const timer of this.#timers) clearTimeout(timer);
      const succeeded = !this.#killed && result.error === undefined && result.code === 0;
      return {
        succeeded,
        result,
        killed: this.#killed,
        durationMs: Math.round(performance.now() - this.#startedAt),
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
    this.#log.warn("terminating job", { reason, pid: this.#handle.pid });
    this.#handle.signal("SIGTERM");
    this.#timers.push(setInterval(() => {
      if (this.#state === "terminating") this.#handle.signal("SIGTERM");
    }, this.#policy.retryMs));
    this.#timers.push(setTimeout(() => this.kill("kill grace elapsed"), this.#policy.graceMs));
  }

  /** Sends SIGKILL now. */
  kill(reason: string): void {
    if (this.#state === "exited" || this.#state === "killing") return;
    this.#state = "killing";
    this.#killed = true;
    this.#log.warn("killing job", { reason, pid: this.#handle.pid });
    this.#handle.signal("SIGKILL");
  }
}
