/**
 * The worker's loop: receive ──> schedule ──> prepare, run, settle (the
 * pipeline), until a stop signal drains it. It wires the parts of one queue
 * together: the receiver, the scheduler, the visibility keeper, the batcher and
 * settler of SQS calls, the pipeline, and the shutdown.
 *
 * @module
 */
import type { SQSClient } from "@aws-sdk/client-sqs";
import { type Options, runnerTargets } from "../config.ts";
import type { LogFields, Logger } from "../log.ts";
import type { WorkerMetrics } from "../metrics/metrics.ts";
import { summaryFields, type Tally } from "../metrics/tally.ts";
import type { JobRunner, RunnerWait } from "../runners/runner.ts";
import type { JobSource } from "../sources/source.ts";
import type { SupervisedJob } from "./job.ts";
import type { JobMessage } from "./message.ts";
import type { QueueSettings } from "./parts.ts";
import { Pipeline } from "./pipeline.ts";
import { Receiver } from "./receiver.ts";
import { AUTO_PREFETCH_GIVE_BACK_MS, prefetchCount, Scheduler, WAIT_OVER } from "./scheduler.ts";
import { Settler } from "./settle.ts";
import { listenForSignals, Shutdown, STOP_SIGNALS } from "./shutdown.ts";
import { SqsBatcher } from "./sqs_batcher.ts";
import { CAP_MARGIN_SECONDS, SQS_MAX_VISIBILITY_SECONDS, VisibilityKeeper } from "./visibility.ts";

/** How long a freed slot waits for others to share one receive call. */
const RECEIVE_COALESCE_MS = 20;
/** How long a standard queue's delete waits for others to share its batch call. */
const STANDARD_DELETE_LINGER_MS = 20;

/** What the loop runs with (see `parts.ts`). */
export interface LoopParts {
  /** The options, with the timings the queue's own visibility timeout gave. */
  options: Options;
  queueUrl: string;
  queue: QueueSettings;
  runner: JobRunner;
  source: JobSource;
  metrics: WorkerMetrics;
  /** The counters inside `metrics`, for the summary in `worker stopped`. */
  tally: Tally;
  /** The metrics' targets for the `worker started` line (statsd, http). */
  metricsFields?: LogFields;
  log: Logger;
  client: SQSClient;
  settleClient: SQSClient;
}

/** Receives, runs and settles the messages of one queue until a stop signal drained it. */
export class WorkerLoop {
  #parts: LoopParts;
  #log: Logger;
  #fifo: boolean;
  #prefetch: number | "auto";
  #running = new Set<SupervisedJob>();
  #shutdown: Shutdown;
  #keeper: VisibilityKeeper;
  #batcher: SqsBatcher;
  #settler: Settler;
  #pipeline: Pipeline;
  #scheduler: Scheduler;
  #receiver: Receiver;

  constructor(parts: LoopParts) {
    this.#parts = parts;
    const { options, queueUrl, metrics } = parts;
    const log = this.#log = parts.log.with({ queue: queueUrl });
    // FIFO queues, and only they, keep group order (SQS requires their names to end in .fifo).
    const fifo = this.#fifo = queueUrl.endsWith(".fifo");
    const parkAfter = parksPoison(options, parts.queue) ? options.maxReceives : undefined;
    this.#prefetch = prefetchSetting(options, parts.queue);
    this.#shutdown = new Shutdown({
      running: this.#running,
      waitSeconds: options.wait,
      timeoutSeconds: options.shutdownTimeout,
      log,
    });
    this.#batcher = new SqsBatcher({
      client: parts.settleClient,
      queueUrl,
      // A FIFO group waits for its delete; a standard message does not.
      deleteLingerMs: fifo ? undefined : STANDARD_DELETE_LINGER_MS,
    });
    this.#keeper = new VisibilityKeeper({
      changer: this.#batcher,
      timeoutSeconds: options.timeout,
      extendAfterSeconds: options.extendTimeout,
      log,
      onExtended: () => metrics.visibilityExtended(),
      onSent: (lateMs) => metrics.extensionSent(lateMs),
      onLapsed: () => metrics.visibilityLapsed(),
    });
    this.#settler = new Settler({
      calls: this.#batcher,
      untrack: (message) => this.#keeper.untrack(message),
      log,
      backoff: options.backoff,
      stop: this.#shutdown.deadlinePassed,
      onDeleted: () => metrics.messageDeleted(),
      onReleased: () => metrics.messageReleased(),
      onParked: () => metrics.messageParked(),
      onDeleteUncertain: () => metrics.deleteUncertain(),
    });
    this.#pipeline = new Pipeline({
      runner: parts.runner,
      source: parts.source,
      keeper: this.#keeper,
      settler: this.#settler,
      shutdown: this.#shutdown,
      metrics,
      log,
      fifo,
      parkAfter,
      concurrency: options.concurrency,
      policy: {
        killAfterMs: options.killTimeout * 1000,
        retryMs: options.killRetry * 1000,
        graceMs: options.killGrace * 1000,
      },
      running: this.#running,
    });
    this.#scheduler = new Scheduler({
      concurrency: options.concurrency,
      maxItems: parts.runner.maxItems,
      fifo,
      groupBatches: parts.runner.groupBatches,
      // Jobs of several messages gather one receive's messages, or --batch-window's.
      batchWindowMs: parts.runner.maxItems > 1 ? (options.batchWindow ?? 0) * 1000 : undefined,
      run: (messages) => this.#pipeline.process(messages),
      abandon: (message) => this.#settler.giveBack(message),
      holdLimitMs: options.prefetch === "auto" ? AUTO_PREFETCH_GIVE_BACK_MS : undefined,
    });
    this.#receiver = new Receiver({
      client: parts.client,
      queueUrl,
      waitSeconds: options.wait,
      visibilityTimeout: options.timeout,
      batchSize: options.batchSize,
      intervalSeconds: options.interval,
      log,
      onPoll: (received) => {
        metrics.polled();
        if (received > 0) metrics.messagesReceived(received);
      },
      onError: () => metrics.receiveError(),
    });
  }

  /** Runs until a stop signal drained the worker; resolves to the exit code. */
  async run(): Promise<number> {
    const stopListening = this.#listenForSignals();
    announceStart(this.#log, this.#parts, this.#prefetch);
    this.#parts.metrics.started();
    try {
      await this.#receiveLoop();
      await this.#drain();
    } finally {
      stopListening();
      this.#shutdown.dispose();
      this.#keeper.stop();
    }
    // Drops not yet reported would be missing from the summary (and /metrics).
    this.#parts.log.reportDrops?.();
    this.#log.info("worker stopped", summaryFields(this.#parts.tally.counts, performance.now()));
    return 0;
  }

  #listenForSignals(): () => void {
    const stopListening = listenForSignals(STOP_SIGNALS, (signal) => this.#onStopSignal(signal));
    if (Deno.build.os === "windows") return stopListening;
    const stopReopening = listenForSignals(["SIGHUP"], () => this.#parts.log.reopen());
    return () => {
      stopListening();
      stopReopening();
    };
  }

  #onStopSignal(signal: string): void {
    if (!this.#shutdown.stop(signal)) return;
    void this.#giveBackWaiting();
    this.#parts.metrics.draining();
  }

  /**
   * Keeps up to one receive call in flight per `--batch-size` places (slots plus
   * messages held ahead). Each call reserves the places it asks for before it is
   * sent, so every message it brings has one: nothing received waits longer than
   * the prefetch allows. A call goes out when a whole batch fits, or, when nothing
   * is ready to start, after slots freeing close together had a moment to gather.
   */
  async #receiveLoop(): Promise<void> {
    const signal = this.#shutdown.draining;
    const cancel = this.#shutdown.receivesCancelled;
    const { batchSize, concurrency } = this.#parts.options;
    const scheduler = this.#scheduler;
    const calls = new Set<Promise<void>>();
    let reserved = 0;
    while (!this.#shutdown.stopping) {
      const held = prefetchCount({
        setting: this.#prefetch,
        concurrency,
        batchSize,
        expectedRunMs: scheduler.expectedRunMs,
      });
      if (held !== scheduler.prefetch) scheduler.prefetch = held;
      const room = scheduler.freeSlots - reserved;
      const fullBatch = Math.min(batchSize, scheduler.capacity);
      // Nothing ready to start and nothing on its way, while a slot is free.
      const starving = room > 0 && reserved === 0 && scheduler.ready === 0;
      if (
        calls.size >= Math.ceil(scheduler.capacity / batchSize) || (room < fullBatch && !starving)
      ) {
        // Wait for a slot to free, or for a call in flight to hand back what it reserved.
        const stopWaiting = new AbortController();
        await Promise.race([
          ...calls,
          scheduler.changed(AbortSignal.any([signal, stopWaiting.signal])),
        ]);
        stopWaiting.abort(WAIT_OVER);
        continue;
      }
      if (room < fullBatch) {
        // Slots that free up close together share one call.
        await scheduler.slotsFree(reserved + fullBatch, RECEIVE_COALESCE_MS, signal);
        if (this.#shutdown.stopping) break;
      }
      const count = Math.min(scheduler.freeSlots - reserved, batchSize);
      if (count <= 0) continue;
      const wait = this.#parts.runner.ready?.(signal, this.#log);
      if (wait) {
        // Nothing could run what this call would bring (the app is down): receive
        // nothing, so no message waits in hand and no receive is counted meanwhile.
        await this.#waitForRunner(wait, signal);
        continue;
      }
      reserved += count;
      const call = this.#receiver.receive(count, cancel, signal).then((messages) => {
        reserved -= count;
        this.#admit(messages);
      });
      calls.add(call);
      call.finally(() => calls.delete(call));
    }
    await Promise.all(calls);
  }

  /** Waits until the runner can take jobs, or the drain began; health says why meanwhile. */
  async #waitForRunner(wait: RunnerWait, signal: AbortSignal): Promise<void> {
    const { metrics } = this.#parts;
    metrics.starting(wait.reason);
    let stopWaiting!: () => void;
    const stopped = new Promise<void>((resolve) => stopWaiting = resolve);
    signal.addEventListener("abort", stopWaiting, { once: true });
    if (signal.aborted) stopWaiting();
    try {
      await Promise.race([wait.done, stopped]);
    } finally {
      signal.removeEventListener("abort", stopWaiting);
    }
    metrics.started();
  }

  #admit(messages: JobMessage[]): void {
    for (const message of messages) {
      // Back while its release is unanswered: that release's line comes first.
      this.#settler.redelivered(message.id);
      const held = this.#keeper.holding(message.id);
      if (held) {
        this.#deliveredAgain(held, message);
        continue;
      }
      this.#keeper.track(message);
      if (this.#shutdown.stopping) {
        // Received while the drain began: it never started, so it goes straight back.
        void this.#settler.giveBack(message);
        continue;
      }
      this.#scheduler.accept(message);
    }
  }

  /**
   * SQS delivered a message this worker already holds: standard queues deliver at
   * least once, and moto can hand one message to two overlapping receive calls.
   * Running it again would do the job twice at once, and giving it back would
   * expose the one in hand: keep that one, and settle it with the newest receipt
   * handle, the one SQS honours.
   */
  #deliveredAgain(held: JobMessage, again: JobMessage): void {
    this.#keeper.renew(held, again);
    held.receiptHandle = again.receiptHandle;
    this.#log.warn("message delivered again while in hand; it runs once", {
      message_id: again.id,
      receive_count: again.receiveCount,
    });
  }

  /** Gives back every message held but not started: a draining worker starts no new job. */
  async #giveBackWaiting(): Promise<void> {
    const waiting = this.#scheduler.takeWaiting();
    await Promise.all(waiting.map((message) => this.#settler.giveBack(message)));
    this.#scheduler.released(waiting.length);
  }

  async #drain(): Promise<void> {
    await this.#giveBackWaiting();
    await this.#scheduler.idle();
    await this.#pipeline.settled();
    await this.#batcher.flush();
  }
}

/** The queue's redrive policy is missing and --max-receives parks messages instead. */
function parksPoison(options: Options, queue: QueueSettings): boolean {
  return options.maxReceives !== undefined && queue.redriveLimit === undefined;
}

/**
 * `--prefetch`, as it applies: while --max-receives parks messages, "auto" holds
 * none ahead. A drain gives held messages back, and each give-back is a receive
 * that SQS counts and the next worker cannot tell from a failed run; held
 * messages are also given back when jobs turn slow.
 */
function prefetchSetting(options: Options, queue: QueueSettings): number | "auto" {
  return options.prefetch === "auto" && parksPoison(options, queue) ? 0 : options.prefetch;
}

/**
 * Logs the start: a note when the queue's redrive policy, not --max-receives,
 * ends poison messages; warnings about settings SQS's own limits will defeat; then
 * the `worker started` line with the runner kind's target and what was decided.
 */
function announceStart(log: Logger, parts: LoopParts, prefetch: number | "auto"): void {
  const { options, queue, queueUrl } = parts;
  const { killTimeout, killGrace, maxReceives } = options;
  if (maxReceives !== undefined && queue.redriveLimit !== undefined) {
    log.info(
      "the queue's redrive policy moves failing messages; --max-receives is unused",
      { max_receive_count: queue.redriveLimit },
    );
  }
  const room = SQS_MAX_VISIBILITY_SECONDS - CAP_MARGIN_SECONDS;
  if (killTimeout + killGrace > room) {
    log.warn(
      "-x/--kill-timeout plus --kill-grace is beyond SQS's 12-hour visibility limit: " +
        "a job still running then has its message visible again",
      { kill_timeout: killTimeout, kill_grace: killGrace, visibility_limit: room },
    );
  }
  if (parksPoison(options, queue) && typeof options.prefetch === "number" && options.prefetch > 0) {
    log.warn(
      "--max-receives with --prefetch: each drain gives held messages back, adding a " +
        "receive to each (at most --prefetch per drain) that a restarted worker counts",
      { prefetch: options.prefetch, max_receives: maxReceives },
    );
  }
  log.info("worker started", {
    // Its own field, not the logger's: text lines name the queue here only.
    queue: queueUrl,
    ...runnerTargets(options),
    concurrency: options.concurrency,
    prefetch,
    visibility_timeout: options.timeout,
    visibility_timeout_from: options.givenTimings.timeout !== undefined
      ? "-t"
      : queue.visibilityTimeout === undefined || queue.visibilityTimeout < 1
      ? "default"
      : "queue",
    max_receive_count: queue.redriveLimit,
    extend_after: options.extendTimeout,
    kill_timeout: options.killTimeout,
    wait: options.wait,
    ...parts.runner.details,
    ...sourceFields(options),
    ...parts.metricsFields,
  });
}

/** The `worker started` fields of the message source: `--s3` and its switches, when on. */
export function sourceFields(options: Pick<Options, "s3" | "s3Delete" | "s3Gunzip">): LogFields {
  if (!options.s3) return {};
  return { s3: true, s3_delete: options.s3Delete, s3_gunzip: options.s3Gunzip };
}
