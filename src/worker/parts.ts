/**
 * What the worker is built from, at start-up: the runner (from the runner kinds'
 * table), the logger, the metrics, the SQS clients, the queue (resolved while a
 * stop signal may still end the wait) with its own settings, and the source.
 *
 * @module
 */
import { GetQueueAttributesCommand, type SQSClient } from "@aws-sdk/client-sqs";
import { DEFAULTS, deriveTimings, LISTEN_HOST, type Options, parseAddress } from "../config.ts";
import { createLogger, type LogFields, type Logger } from "../log.ts";
import { describeError, RuntimeError } from "../errors.ts";
import {
  createS3Client,
  createSqsClient,
  describeAwsError,
  isPermanentError,
  isQueueMissing,
  queueName,
  resolveQueueUrl,
  toRuntimeError,
} from "../aws.ts";
import { fanOut, type WorkerMetrics } from "../metrics/metrics.ts";
import { createTally, type Tally } from "../metrics/tally.ts";
import { resolveStatsdAddress, statsdMetrics, statsdTags } from "../metrics/statsd.ts";
import { healthWindowMs, startHttpMetrics } from "../metrics/http.ts";
import { buildRunner } from "../runners/kinds.ts";
import type { JobRunner } from "../runners/runner.ts";
import type { JobSource } from "../sources/source.ts";
import { messageSource } from "../sources/sqs_message.ts";
import { backoffDelay } from "./backoff.ts";
import { sleep } from "./clock.ts";
import { listenForSignals, STOP_SIGNALS } from "./shutdown.ts";

/** What the worker needs before its queue is reached, and how to release it. */
export interface OpenedParts {
  runner: JobRunner;
  log: Logger;
  metrics: WorkerMetrics;
  /** The counters inside `metrics`: `/metrics` shows them, the stop summary reads them. */
  tally: Tally;
  /** What the `worker started` line adds about the metrics: the statsd target, the --http URL. */
  metricsFields: LogFields;
  /** For receive calls (long polls). */
  client: SQSClient;
  /** For deletes and extensions, which must not wait behind a long poll's generous timeout. */
  settleClient: SQSClient;
  /** Closes the metrics, the runner and the log. */
  close(): Promise<void>;
}

/**
 * Builds the runner first (a job that cannot run is a usage error before any log
 * or listener opens), then the logger and the metrics, then the SQS clients.
 * Whatever opened is closed again when a later part fails.
 */
export async function openParts(options: Options): Promise<OpenedParts> {
  const runner = await buildRunner(options);
  let metrics: WorkerMetrics | undefined;
  let opened: OpenedMetrics | undefined;
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
  const close = async () => {
    await metrics?.close();
    await runner.close();
    await log.close();
  };
  try {
    // Health answers from the first second, saying why the worker is not receiving
    // yet: a liveness probe must not restart a worker through an SQS outage.
    opened = await createMetrics(options, log);
    metrics = opened.metrics;
  } catch (error) {
    await close();
    throw error;
  }
  return {
    runner,
    log,
    metrics,
    tally: opened.tally,
    metricsFields: opened.fields,
    client: createSqsClient({ ...options, wait: options.wait }),
    settleClient: createSqsClient({ ...options, wait: 0 }),
    close,
  };
}

/** The worker's queue: its URL and what it says about itself. */
export interface ReachedQueue {
  url: string;
  settings: QueueSettings;
}

/**
 * Resolves the queue (retrying while the endpoint is unreachable, health saying
 * why) and reads its settings. Resolves undefined when a stop signal came first.
 */
export async function reachQueue(
  parts: OpenedParts,
  queue: string,
): Promise<ReachedQueue | undefined> {
  const onRetry = parts.metrics.starting.bind(parts.metrics);
  const url = await resolveWorkerQueue(parts.client, queue, parts.log, onRetry);
  if (url === undefined) return undefined;
  return { url, settings: await readQueueSettings(parts.client, url, parts.log) };
}

/**
 * What the daemon checks before it leaves the terminal: the job can run, the
 * queue exists, the credentials are accepted.
 */
export async function checkBeforeDaemon(options: Options): Promise<void> {
  await (await buildRunner(options)).close();
  // A missing queue or refused credentials stop the start; an unreachable
  // endpoint does not: the daemon retries it, as in the foreground.
  const client = createSqsClient({ ...options, wait: 0 });
  try {
    await resolveQueueUrl(client, options.queue ?? "");
  } catch (error) {
    if (isPermanentError(error)) throw error;
  } finally {
    client.destroy();
  }
}

/**
 * Chooses where each job's input comes from (the message body, or S3 objects). The S3
 * source and its SDK are loaded only for `--s3`: see {@linkcode createS3Client}.
 */
export async function createSource(options: Options, metrics: WorkerMetrics): Promise<JobSource> {
  if (!options.s3) return messageSource();
  const { s3EventSource } = await import("../sources/s3_event.ts");
  return s3EventSource({
    client: await createS3Client(options),
    metrics,
    deleteObjects: options.s3Delete,
    gunzip: options.s3Gunzip,
  });
}

/** The metrics sinks, the counters they share, and where they send. */
interface OpenedMetrics {
  metrics: WorkerMetrics;
  tally: Tally;
  fields: LogFields;
}

/**
 * Starts the counters and the metrics sinks the options ask for (DogStatsD,
 * Prometheus/health); a listener that cannot start is a RuntimeError, an absent
 * DogStatsD agent is not.
 */
async function createMetrics(options: Options, log: Logger): Promise<OpenedMetrics> {
  const queue = queueName(options.queue ?? "");
  // Always counted: the stop summary needs the counts with or without --http.
  const tally = createTally();
  const sinks: WorkerMetrics[] = [tally];
  const fields: LogFields = {};
  const statsd = resolveStatsdAddress(options.statsd);
  if (statsd) {
    sinks.push(statsdMetrics({
      address: statsd,
      prefix: options.statsdPrefix,
      tags: statsdTags(options.statsdTags, queue),
      log,
    }));
    const host = statsd.hostname.includes(":") ? `[${statsd.hostname}]` : statsd.hostname;
    fields.statsd = `${host}:${statsd.port}`;
  }
  if (options.http) {
    try {
      const http = startHttpMetrics({
        address: parseAddress(options.http, "--http", LISTEN_HOST),
        queue,
        concurrency: options.concurrency,
        healthWindowMs: healthWindowMs(options.wait, options.interval),
        log,
        tally,
      });
      sinks.push(http);
      fields.http = http.url;
    } catch (error) {
      await Promise.all(sinks.map((sink) => sink.close()));
      throw error;
    }
  }
  return { metrics: fanOut(sinks), tally, fields };
}

/** What the worker takes from the queue's own attributes. */
export interface QueueSettings {
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
export function withQueueTimings(options: Options, queue: QueueSettings): Options {
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
  const stopListening = listenForSignals(STOP_SIGNALS, () => stop.abort());
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
    stopListening();
  }
}
