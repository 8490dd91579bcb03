/**
 * How the worker stops: the first SIGTERM/SIGINT drains (no new receive call, the
 * calls in flight finish, running jobs get `--shutdown-timeout`), a second one
 * kills what still runs. Each step is an abort signal that the parts which must
 * react to it (the receive loop, the Settler) are given.
 *
 * @module
 */
import type { Logger } from "../log.ts";
import { type Clock, REAL_CLOCK } from "./clock.ts";
import type { SupervisedJob } from "./job.ts";

/** How long past `--wait` a drain lets a receive call in flight finish before cancelling it. */
export const RECEIVE_DRAIN_MARGIN_MS = 2_000;

/** The signals that stop the worker: SIGINT, and SIGTERM where there is one. */
export const STOP_SIGNALS: readonly Deno.Signal[] = Deno.build.os === "windows"
  ? ["SIGINT"]
  : ["SIGINT", "SIGTERM"];

/** Calls `listener` for each of `signals` that arrives; returns what stops listening. */
export function listenForSignals(
  signals: readonly Deno.Signal[],
  listener: (signal: Deno.Signal) => void,
): () => void {
  const listeners = signals.map((signal): [Deno.Signal, () => void] => [
    signal,
    () => listener(signal),
  ]);
  for (const [signal, onSignal] of listeners) Deno.addSignalListener(signal, onSignal);
  return () => {
    for (const [signal, onSignal] of listeners) Deno.removeSignalListener(signal, onSignal);
  };
}

/** What a shutdown acts on, and when. */
export interface ShutdownOptions {
  /** The jobs running now (a live set): terminated at the deadline, killed by a second signal. */
  running: ReadonlySet<Pick<SupervisedJob, "terminate" | "kill">>;
  /** `--wait`, seconds: how long a receive call in flight may still take. */
  waitSeconds: number;
  /** `--shutdown-timeout`, seconds: how long running jobs may take to finish. */
  timeoutSeconds: number;
  log: Logger;
  /** The clock of the drain's timers; default the real one. */
  clock?: Clock;
}

/** The worker's way from running to stopped. */
export class Shutdown {
  #options: ShutdownOptions;
  #clock: Clock;
  #draining = new AbortController();
  #receivesCancelled = new AbortController();
  #deadlinePassed = new AbortController();
  #forced = false;
  #timers: unknown[] = [];

  constructor(options: ShutdownOptions) {
    this.#options = options;
    this.#clock = options.clock ?? REAL_CLOCK;
  }

  /** A stop signal arrived: no new message starts. */
  get stopping(): boolean {
    return this.#draining.signal.aborted;
  }

  /** A second stop signal arrived: running jobs were killed, and so is any that starts now. */
  get forced(): boolean {
    return this.#forced;
  }

  /** Aborted by the first stop signal: the receive loop sends no new call. */
  get draining(): AbortSignal {
    return this.#draining.signal;
  }

  /**
   * Aborted `--wait` + 2 s after the first stop signal, or by a second one:
   * receive calls in flight are cancelled.
   */
  get receivesCancelled(): AbortSignal {
    return this.#receivesCancelled.signal;
  }

  /** Aborted at the shutdown deadline: deletes stop retrying without limit. */
  get deadlinePassed(): AbortSignal {
    return this.#deadlinePassed.signal;
  }

  /**
   * A stop signal arrived. The first begins the drain and returns true; a second
   * kills the running jobs; any later one does nothing.
   */
  stop(signal: string): boolean {
    if (this.stopping) {
      this.#force(signal);
      return false;
    }
    const { running, log, timeoutSeconds, waitSeconds } = this.#options;
    log.info("draining: no new messages; waiting for running jobs", {
      signal,
      running: running.size,
      shutdown_timeout: timeoutSeconds,
    });
    // Receive calls in flight are not cancelled: SQS may hand messages to a call
    // whose client went away, and they would stay invisible for -t seconds. They
    // end within --wait, and what they bring is given back at once.
    this.#draining.abort();
    this.#after(waitSeconds * 1000 + RECEIVE_DRAIN_MARGIN_MS, () => {
      this.#receivesCancelled.abort();
    });
    this.#after(timeoutSeconds * 1000, () => {
      this.#deadlinePassed.abort();
      for (const job of running) job.terminate("shutdown timeout");
    });
    return true;
  }

  /** Clears the drain's timers: the worker has stopped. */
  dispose(): void {
    for (const timer of this.#timers) this.#clock.clearTimer(timer);
    this.#timers = [];
  }

  #force(signal: string): void {
    if (this.#forced) return;
    this.#forced = true;
    this.#receivesCancelled.abort();
    this.#options.log.warn("second signal: killing running jobs now", { signal });
    for (const job of this.#options.running) job.kill("second signal");
  }

  #after(ms: number, callback: () => void): void {
    this.#timers.push(this.#clock.setTimer(callback, ms));
  }
}
