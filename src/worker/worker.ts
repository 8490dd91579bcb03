/**
 * The worker: receive ──> schedule ──> supervise one job ──> settle, until a
 * signal asks it to drain. It exits only on a signal or a start-up configuration
 * error, never because of one job, one message or a passing AWS error.
 *
 * @module
 */
import { GetQueueAttributesCommand, type SQSClient } from "@aws-sdk/client-sqs";
import {
  DEFAULTS,
  deriveTimings,
  LISTEN_HOST,
  type Options,
  parseAddress,
  runnerTargets,
} from "../config.ts";
import { createLogger, type Logger } from "../log.ts";
import { describeError, RuntimeError, UsageError } from "../errors.ts";
import {
  createS3Client,
  createSqsClient,
  describeAwsError,
  isPermanentError,
  isQueueMissing,
  resolveQueueUrl,
  toRuntimeError,
} from "../aws.ts";
import { backoffDelay } from "./backoff.ts";
import { sleep } from "./clock.ts";
import { buildRunner } from "../runners/kinds.ts";
import { runDaemon } from "../daemon.ts";
import type { JobRunner } from "../runners/runner.ts";
import {
  type JobInput,
  type JobSource,
  type JobStep,
  MalformedMessageError,
} from "../sources/source.ts";
import { messageSource } from "../sources/sqs_message.ts";
import { fanOut, noMetrics, type WorkerMetrics } from "../metrics/metrics.ts";
import { resolveStatsdAddress, statsdMetrics, statsdTags } from "../metrics/statsd.ts";
import { healthWindowMs, startHttpMetrics } from "../metrics/http.ts";
import { s3EventSource } from "../sources/s3_event.ts";
import { queueName } from "../admin.ts";
import { type KillPolicy, SupervisedJob } from "./job.ts";
import type { JobMessage } from "./message.ts";
import { Receiver } from "./receiver.ts";
import { AUTO_PREFETCH_GIVE_BACK_MS, prefetchCount, Scheduler } from "./scheduler.ts";
import { Settler } from "./settle.ts";
import { SqsBatcher } from "./sqs_batcher.ts";
import { CAP_MARGIN_SECONDS, SQS_MAX_VISIBILITY_SECONDS, VisibilityKeeper } from "./visibility.ts";

/** How long a freed slot waits for others to share one receive call. */
const RECEIVE_COALESCE_MS = 20;
/** How long past `--wait` a drain lets a receive call in flight finish before cancelling it. */
const RECEIVE_DRAIN_MARGIN_MS = 2_000;
/** How long a standard queue's delete waits for others to share its batch call. */
const STANDARD_DELETE_LINGER_MS = 20;

/** Chooses where each job's input comes from (the message body, or S3 objects). */
function createSource(options: Options, deps: { metrics: WorkerMetrics }): JobSource {
  if (!options.s3) return messageSource();
  return s3EventSource({
    client: createS3Client(options),
    metrics: deps.metrics,
    deleteObjects: options.s3Delete,
    gunzip: options.s3Gunzip,
  });
}

/**
 * Starts the metrics sinks the options ask for (DogStatsD, Prometheus/health); a
 * listener that cannot start is a RuntimeError, an absent DogStatsD agent is not.
 */
async function createMetrics(options: Options, log: Logger): Promise<WorkerMetrics> {
  const queue = queueName(options.queue ?? "");
  const sinks: WorkerMetrics[] = [];
  const statsd = resolveStatsdAddress(options.statsd);
  if (statsd) {
    sinks.push(statsdMetrics({
      address: statsd,
      prefix: options.statsdPrefix,
      tags: statsdTags(options.statsdTags, queue),
      log,
    }));
  }
  if (options.http) {
    try {
      sinks.push(startHttpMetrics({
        address: parseAddress(options.http, "--http", LISTEN_HOST),
        queue,
        concurrency: options.concurrency,
        healthWindowMs: healthWindowMs(options.wait, options.interval),
        log,
      }));
    } catch (error) {
      await Promise.all(sinks.map((sink) => sink.close()));
      throw error;
    }
  }
  return sinks.length === 0 ? noMetrics() : fanOut(sinks);
}

/** Runs the worker until a signal ends it; resolves to the process exit code. */
export async function runWorker(options: Options): Promise<number> {
  if (options.daemon !== undefined) {
    // Starts the daemon (and returns once it runs), or, inside it, calls runWorker
    // again in the foreground with the log going to a file.
    return await runDaemon(options, {
      run: runWorker,
      check: async (daemonOptions) => {
        await (await buildRunner(daemonOptions)).close();
        // A missing queue or refused credentials stop the start; an unreachable
        // endpoint does not: the daemon retries it, as in the foreground.
        const client = createSqsClient({ ...daemonOptions, wait: 0 });
        try {
          await resolveQueueUrl(client, daemonOptions.queue ?? "");
        } catch (error) {
          if (isPermanentError(error)) throw error;
        } finally {
          client.destroy();
        }
      },
    });
  }
  if (!options.queue) throw new UsageError(`--${options.command} needs -q/--queue`);
  const runner = await buildRunner(options);
  let metrics: WorkerMetrics | undefined;
  let log: Logger;
  try {
    log = createLogger({
      format: options.logFormat,
      level: options.logLevel,
      path: options.log,
      // Drops before the metrics exist still get their log line.
      onDropped: (jobOutput, worker) => metrics?.logLinesDropped(jobOutput, worker),
    });
  } catch (error) {
    await runner.close();
    throw error;
  }
  try {
    // Health answers from the first second, saying why the worker is not receiving
    // yet: a liveness probe must not restart a worker through an SQS outage.
    metrics = await createMetrics(options, log);
    const client = createSqsClient({ ...options, wait: options.wait });
    // Deletes and extensions must not wait behind a long poll's generous timeout.
    const settleClient = createSqsClient({ ...options, wait: 0 });
    const onRetry = metrics.starting.bind(metrics);
    const queueUrl = await resolveWorkerQueue(client, options.queue, log, onRetry);
    if (queueUrl === undefined) {
      log.info("stopped by a signal before the queue could be reached");
      return 0;
    }
    const queue = await readQueueSettings(client, queueUrl, log);
    const workerOptions = withQueueTimings(options, queue);
    const source = createSource(workerOptions, { metrics });
    // One stray rejection (a library's, or ours) must not end a worker that holds
    // other people's messages: log it and carry on.
    const onUnhandled = (event: PromiseRejectionEvent) => {
      event.preventDefault();
      log.error("unhandled error", { error: describeError(event.reason) });
    };
    globalThis.addEventListener("unhandledrejection", onUnhandled);
    try {
      return await new Worker({
        options: workerOptions,
        queue,
        runner,
        source,
        metrics,
        log,
        client,
        settleClient,
        queueUrl,
      }).run();
    } finally {
      globalThis.removeEventListener("unhandledrejection", onUnhandled);
    }
  } finally {
    await metrics?.close();
    await runner.close();
    await log.close();
  }
}

/** What the worker takes from the queue's own attributes. */
interface QueueSettings {
  /** `VisibilityTimeout`, seconds; undefined when it could not be read. */
  visibilityTimeout?: number;
  /** The redrive policy's `maxReceiveCount`, if the queue has one. */
  redriveLimit?: number;
}

/**
 * Reads the queue's visibility timeout and redrive policy. A missing queue and
 * refused credentials are fatal; any other failure leaves the defaults (logged).
 */
async function readQueueSettings(
  client: SQSClient,
  queueUrl: string,
  log: Logger,
): Promise<QueueSettings> {
  try {
    const result = await client.send(
      new GetQueueAttributesCommand({
        QueueUrl: queueUrl,
        AttributeNames: ["RedrivePolicy", "VisibilityTimeout"],
      }),
    );
    const settings: QueueSettings = {};
    const visibility = Number(result.Attributes?.VisibilityTimeout);
    if (result.Attributes?.VisibilityTimeout !== undefined && Number.isInteger(visibility)) {
      settings.visibilityTimeout = visibility;
    }
    const policy = result.Attributes?.RedrivePolicy;
    if (policy) {
      try {
        const limit = Number(JSON.parse(policy).maxReceiveCount);
        if (Number.isFinite(limit)) settings.redriveLimit = limit;
      } catch {
        log.warn("the queue's redrive policy is not JSON; ignoring it", { redrive_policy: policy });
      }
    }
    return settings;
  } catch (error) {
    if (isQueueMissing(error)) throw new RuntimeError(`queue ${queueUrl} does not exist`);
    if (isPermanentError(error)) throw toRuntimeError(error, "queue attributes");
    log.warn("could not read the queue's attributes; using the defaults", {
      error: describeAwsError(error),
    });
    return {};
  }
}

/**
 * Without `-t`, the visibility timeout is the queue's own (as set by whoever made
 * the queue), and `-e`, `-x` and the shutdown timeout follow it unless given. A
 * queue timeout that could not be read, or of 0 (which no extension can beat),
 * leaves the default. Throws a UsageError when a given `-e` does not fit.
 */
function withQueueTimings(options: Options, queue: QueueSettings): Options {
  if (options.givenTimings.timeout !== undefined) return options;
  const fromQueue = queue.visibilityTimeout;
  const usable = fromQueue !== undefined && fromQueue >= 1;
  return {
    ...options,
    ...deriveTimings(
      usable ? fromQueue : DEFAULTS.timeout,
      options.givenTimings,
      usable ? "the queue's VisibilityTimeout" : "-t/--timeout",
    ),
  };
}

/**
 * Resolves the queue, retrying while the endpoint is unreachable; a missing queue
 * is fatal. Resolves undefined when SIGTERM/SIGINT arrives first: an operator may
 * stop a worker that is still waiting for its endpoint.
 */
async function resolveWorkerQueue(
  client: SQSClient,
  queue: string,
  log: Logger,
  onRetry: (reason: string) => void,
): Promise<string | undefined> {
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  for (const signal of signals) Deno.addSignalListener(signal, onSignal);
  const stopped = new Promise<undefined>((resolve) =>
    stop.signal.addEventListener("abort", () => resolve(undefined), { once: true })
  );
  try {
    for (let attempt = 1; !stop.signal.aborted; attempt++) {
      try {
        return await Promise.race([resolveQueueUrl(client, queue), stopped]);
      } catch (error) {
        if (isPermanentError(error)) throw error;
        const delay = backoffDelay(attempt, { floorMs: 1_000, capMs: 30_000 });
        const reason = describeError(error);
        onRetry(reason);
        log.warn("cannot resolve the queue yet; retrying", { error: reason, retry_in_ms: delay });
        await sleep(delay, stop.signal);
      }
    }
    return undefined;
  } finally {
    for (const signal of signals) Deno.removeSignalListener(signal, onSignal);
  }
}

interface WorkerParts {
  options: Options;
  queue: QueueSettings;
  metrics: WorkerMetrics;
  runner: JobRunner;
  source: JobSource;
  log: Logger;
  client: SQSClient;
  settleClient: SQSClient;
  queueUrl: string;
}

class Worker {
  #parts: WorkerParts;
  #log: Logger;
  #keeper: VisibilityKeeper;
  #batcher: SqsBatcher;
  #settler: Settler;
  #scheduler: Scheduler;
  #receiver: Receiver;
  #running = new Set<SupervisedJob>();
  #settling = new Set<Promise<void>>();
  #stopping = false;
  #forced = false;
  /** Aborted by the first stop signal: the receive loop sends no new call. */
  #drainStart = new AbortController();
  /** Aborted by a second stop signal: receive calls in flight are cancelled too. */
  #receiveAbort = new AbortController();
  #shutdownTimer: ReturnType<typeof setTimeout> | undefined;
  #receiveDrainTimer: ReturnType<typeof setTimeout> | undefined;
  #killPolicy: KillPolicy;
  #source: JobSource;
  /** Aborts at the shutdown deadline: deletes stop retrying without limit. */
  #settleStop = new AbortController();

  constructor(parts: WorkerParts) {
    this.#source = parts.source;
    this.#parts = parts;
    const { options, queueUrl } = parts;
    this.#log = parts.log.with({ queue: queueUrl });
    this.#batcher = new SqsBatcher({
      client: parts.settleClient,
      queueUrl,
      // A FIFO group waits for its delete; a standard message does not.
      deleteLingerMs: this.#fifo ? undefined : STANDARD_DELETE_LINGER_MS,
    });
    this.#keeper = new VisibilityKeeper({
      changer: this.#batcher,
      timeoutSeconds: options.timeout,
      extendAfterSeconds: options.extendTimeout,
      log: this.#log,
      onExtended: () => parts.metrics.visibilityExtended(),
      onLapsed: () => parts.metrics.visibilityLapsed(),
    });
    this.#settler = new Settler({
      calls: this.#batcher,
      untrack: (message) => this.#keeper.untrack(message),
      log: this.#log,
      backoff: options.backoff,
      stop: this.#settleStop.signal,
      onDeleted: () => parts.metrics.messageDeleted(),
      onReleased: () => parts.metrics.messageReleased(),
      onDeleteUncertain: () => parts.metrics.deleteUncertain(),
    });
    this.#scheduler = new Scheduler({
      concurrency: options.concurrency,
      fifo: this.#fifo,
      run: (message) => this.#runMessage(message),
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
      log: this.#log,
      onPoll: (received) => {
        parts.metrics.polled();
        if (received > 0) parts.metrics.messagesReceived(received);
      },
      onError: () => parts.metrics.receiveError(),
    });
    this.#killPolicy = {
      killAfterMs: options.killTimeout * 1000,
      retryMs: options.killRetry * 1000,
      graceMs: options.killGrace * 1000,
    };
  }

  async run(): Promise<number> {
    const { options } = this.#parts;
    this.#noteRedrivePolicy();
    const removeSignals = this.#listenForSignals();
    this.#warnAboutLimits();
    this.#log.info("worker started", {
      ...runnerTargets(options),
      concurrency: options.concurrency,
      prefetch: this.#prefetchSetting,
      visibility_timeout: options.timeout,
      visibility_timeout_from: options.givenTimings.timeout !== undefined
        ? "-t"
        : this.#parts.queue.visibilityTimeout === undefined ||
            this.#parts.queue.visibilityTimeout < 1
        ? "default"
        : "queue",
      max_receive_count: this.#parts.queue.redriveLimit,
      extend_after: options.extendTimeout,
      kill_timeout: options.killTimeout,
      wait: options.wait,
      ...this.#parts.runner.details,
    });
    this.#parts.metrics.started();
    try {
      await this.#receiveLoop();
      await this.#drain();
    } finally {
      removeSignals();
      if (this.#shutdownTimer !== undefined) clearTimeout(this.#shutdownTimer);
      if (this.#receiveDrainTimer !== undefined) clearTimeout(this.#receiveDrainTimer);
      this.#keeper.stop();
    }
    this.#log.info("worker stopped");
    return 0;
  }

  /** FIFO queues, and only they, keep group order (SQS requires their names to end in .fifo). */
  get #fifo(): boolean {
    return this.#parts.queueUrl.endsWith(".fifo");
  }

  /** The queue's redrive policy is missing and --max-receives parks messages instead. */
  get #parking(): boolean {
    const { maxReceives } = this.#parts.options;
    return maxReceives !== undefined && this.#parts.queue.redriveLimit === undefined;
  }

  /**
   * `--prefetch`, as it applies: while --max-receives parks messages, "auto" holds
   * none ahead. A drain gives held messages back, and each give-back is a receive
   * that SQS counts and the next worker cannot tell from a failed run; held
   * messages are also given back when jobs turn slow.
   */
  get #prefetchSetting(): number | "auto" {
    const { prefetch } = this.#parts.options;
    return prefetch === "auto" && this.#parking ? 0 : prefetch;
  }

  /** Says at start-up that the queue's redrive policy, not --max-receives, ends poison messages. */
  #noteRedrivePolicy(): void {
    const { redriveLimit } = this.#parts.queue;
    if (this.#parts.options.maxReceives !== undefined && redriveLimit !== undefined) {
      this.#log.info(
        "the queue's redrive policy moves failing messages; --max-receives is unused",
        { max_receive_count: redriveLimit },
      );
    }
  }

  /** Warns at start-up about settings that SQS's own limits will defeat. */
  #warnAboutLimits(): void {
    const { killTimeout, killGrace, prefetch } = this.#parts.options;
    const room = SQS_MAX_VISIBILITY_SECONDS - CAP_MARGIN_SECONDS;
    if (killTimeout + killGrace > room) {
      this.#log.warn(
        "-x/--kill-timeout plus --kill-grace is beyond SQS's 12-hour visibility limit: " +
          "a job still running then has its message visible again",
        { kill_timeout: killTimeout, kill_grace: killGrace, visibility_limit: room },
      );
    }
    if (this.#parking && typeof prefetch === "number" && prefetch > 0) {
      this.#log.warn(
        "--max-receives with --prefetch: each drain gives held messages back, adding a " +
          "receive to each (at most --prefetch per drain) that a restarted worker counts",
        { prefetch, max_receives: this.#parts.options.maxReceives },
      );
    }
  }

  #listenForSignals(): () => void {
    const listeners: [Deno.Signal, () => void][] = [["SIGINT", () => this.#onStopSignal("SIGINT")]];
    if (Deno.build.os !== "windows") {
      listeners.push(["SIGTERM", () => this.#onStopSignal("SIGTERM")]);
      listeners.push(["SIGHUP", () => this.#parts.log.reopen()]);
    }
    for (const [signal, listener] of listeners) Deno.addSignalListener(signal, listener);
    return () => {
      for (const [signal, listener] of listeners) Deno.removeSignalListener(signal, listener);
    };
  }

  #onStopSignal(signal: string): void {
    if (this.#stopping) {
      if (this.#forced) return;
      this.#forced = true;
      this.#receiveAbort.abort();
      this.#log.warn("second signal: killing running jobs now", { signal });
      for (const job of this.#running) job.kill("second signal");
      return;
    }
    this.#stopping = true;
    const timeout = this.#parts.options.shutdownTimeout;
    this.#log.info("draining: no new messages; waiting for running jobs", {
      signal,
      running: this.#running.size,
      shutdown_timeout: timeout,
    });
    // Receive calls in flight are not cancelled: SQS may hand messages to a call
    // whose client went away, and they would stay invisible for -t seconds. They
    // end within --wait, and what they bring is given back at once.
    this.#drainStart.abort();
    this.#receiveDrainTimer = setTimeout(
      () => this.#receiveAbort.abort(),
      this.#parts.options.wait * 1000 + RECEIVE_DRAIN_MARGIN_MS,
    );
    void this.#giveBackWaiting();
    this.#parts.metrics.draining();
    this.#shutdownTimer = setTimeout(() => {
      this.#settleStop.abort();
      for (const job of this.#running) job.terminate("shutdown timeout");
    }, timeout * 1000);
  }

  /**
   * Keeps up to one receive call in flight per `--batch-size` places (slots plus
   * messages held ahead). Each call reserves the places it asks for before it is
   * sent, so every message it brings has one: nothing received waits longer than
   * the prefetch allows. A call goes out when a whole batch fits, or, when nothing
   * is ready to start, after slots freeing close together had a moment to gather.
   */
  async #receiveLoop(): Promise<void> {
    const signal = this.#drainStart.signal;
    const cancel = this.#receiveAbort.signal;
    const { batchSize, concurrency } = this.#parts.options;
    const prefetch = this.#prefetchSetting;
    const scheduler = this.#scheduler;
    const calls = new Set<Promise<void>>();
    let reserved = 0;
    while (!this.#stopping) {
      const held = prefetchCount({
        setting: prefetch,
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
        stopWaiting.abort();
        continue;
      }
      if (room < fullBatch) {
        // Slots that free up close together share one call.
        await scheduler.slotsFree(reserved + fullBatch, RECEIVE_COALESCE_MS, signal);
        if (this.#stopping) break;
      }
      const count = Math.min(scheduler.freeSlots - reserved, batchSize);
      if (count <= 0) continue;
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

  #admit(messages: JobMessage[]): void {
    for (const message of messages) {
      const held = this.#keeper.holding(message.id);
      if (held) {
        this.#deliveredAgain(held, message);
        continue;
      }
      this.#keeper.track(message);
      if (this.#stopping) {
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
    while (this.#settling.size > 0) await Promise.all([...this.#settling]);
    await this.#batcher.flush();
  }

  async #runMessage(message: JobMessage): Promise<boolean> {
    try {
      return await this.#superviseMessage(message);
    } catch (error) {
      // A bug here must cost one message's attempt, never the worker.
      this.#log.error("internal error while running a job; releasing its message", {
        message_id: message.id,
        error: describeError(error),
      });
      await this.#settle(() => this.#settler.failed(message));
      return false;
    }
  }

  async #superviseMessage(message: JobMessage): Promise<boolean> {
    const { options } = this.#parts;
    const log = this.#log.with({ message_id: message.id });
    if (
      options.maxReceives !== undefined && this.#parking &&
      message.receiveCount > options.maxReceives
    ) {
      await this.#settler.park(message, options.maxReceives);
      return false;
    }
    if (!await this.#keeper.covered(message)) {
      // Its deadline passed before an extension could be confirmed: SQS may have
      // handed it to someone else. Starting it could run it twice at once.
      log.warn("the message's visibility lapsed before its job could start; leaving it to SQS", {
        receive_count: message.receiveCount,
      });
      this.#keeper.untrack(message);
      return false;
    }
    let steps: JobStep[];
    try {
      steps = this.#source.steps(message, log);
    } catch (error) {
      if (!(error instanceof MalformedMessageError)) throw error;
      log.error("malformed message; releasing it", {
        receive_count: message.receiveCount,
        error: error.message,
      });
      await this.#settle(() => this.#settler.failed(message));
      return false;
    }
    for (const step of steps) {
      const stepLog = log.with(step.fields);
      let input: JobInput | undefined;
      try {
        input = await step.open();
      } catch (error) {
        stepLog.warn("cannot open the job's input; releasing the message", {
          error: describeAwsError(error),
        });
        await this.#settle(() => this.#settler.failed(message));
        return false;
      }
      if (input === undefined) continue;
      const ended = await this.#runJob(message, input, stepLog);
      if (ended !== "succeeded") {
        // A job the shutdown ended is not the message's failure: no back-off delay.
        const release = ended === "stopped"
          ? () => this.#settler.giveBack(message)
          : () => this.#settler.failed(message);
        await this.#settle(release);
        return false;
      }
      if (step.succeeded) {
        await step.succeeded().catch((error) =>
          stepLog.warn("the job succeeded but its follow-up failed", {
            error: describeAwsError(error),
          })
        );
      }
    }
    await this.#settle(() => this.#settler.succeeded(message));
    return true;
  }

  /**
   * Settles a message. A standard queue's message frees its slot at once and is
   * deleted or released in the background (the drain waits for it); a FIFO
   * message holds its group until it is settled, so order survives a failed delete.
   */
  async #settle(settle: () => Promise<unknown>): Promise<void> {
    const settling = settle().then(() => {});
    if (this.#fifo) return await settling;
    this.#settling.add(settling);
    settling.finally(() => this.#settling.delete(settling));
  }

  #reportSlots(): void {
    this.#parts.metrics.slots(
      this.#running.size,
      Math.max(0, this.#parts.options.concurrency - this.#running.size),
    );
  }

  /**
   * Runs one job to its end; resolves to how it ended: "stopped" when the worker's
   * shutdown had to kill it.
   */
  async #runJob(
    message: JobMessage,
    input: JobInput,
    log: Logger,
  ): Promise<"succeeded" | "failed" | "stopped"> {
    const { metrics } = this.#parts;
    log.info("job started", { receive_count: message.receiveCount });
    metrics.jobStarted(
      message.sentTimestamp === undefined ? undefined : Date.now() - message.sentTimestamp,
    );
    const handle = this.#parts.runner.start(message, input, log);
    const job = new SupervisedJob(handle, this.#killPolicy, log);
    this.#running.add(job);
    this.#reportSlots();
    if (this.#forced) job.kill("second signal");
    const outcome = await job.outcome;
    this.#running.delete(job);
    metrics.jobFinished({
      durationMs: outcome.durationMs,
      succeeded: outcome.succeeded,
      killed: outcome.killed,
    });
    this.#reportSlots();
    const fields = {
      receive_count: message.receiveCount,
      exit_code: outcome.result.code,
      signal: outcome.result.signal,
      duration_ms: outcome.durationMs,
      outcome: outcome.succeeded ? "succeeded" : outcome.killed ? "killed" : "failed",
      error: outcome.result.error,
    };
    if (outcome.succeeded) log.info("job finished", fields);
    else log.warn("job failed", fields);
    if (outcome.succeeded) return "succeeded";
    return outcome.killed && this.#stopping ? "stopped" : "failed";
  }
}
