/**
 * `--http`: `/metrics` in the Prometheus text format (0.0.4) and `/healthz` for
 * load balancers and orchestrators (Kubernetes probes, KEDA, systemd watchdogs).
 *
 * @module
 */
import type { Address } from "../config.ts";
import { describeError, RuntimeError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { JobFinished, WorkerMetrics } from "./metrics.ts";
import { type CounterName, createTally, type Tally } from "./tally.ts";

/**
 * Upper bounds of the job duration histogram, in seconds: jobs range from a few
 * milliseconds (a webhook) to an hour (a video transcode), so the buckets do too.
 */
export const DURATION_BUCKETS: readonly number[] = [
  0.01,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
  60,
  120,
  300,
  600,
  1800,
  3600,
];

/**
 * Upper bounds of the extension lateness histogram, in seconds: an extension is
 * due a margin (seconds) before its deadline, so lateness matters from tens of
 * milliseconds on.
 */
export const LATENESS_BUCKETS: readonly number[] = [
  0.001,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
];

/**
 * Slack added to the health window: the SQS client lets a long poll run 10 s past
 * `--wait` before it gives up, so a poll may legitimately answer that late.
 */
const REQUEST_SLACK_MS = 10_000;

/**
 * How long the receive loop may go without an answered receive call and still be
 * healthy: two polling periods (a long poll of `--wait`, or the `-i` pause between
 * short polls, at least 1 s) plus the request timeout slack.
 */
export function healthWindowMs(waitSeconds: number, intervalSeconds: number): number {
  return 2 * Math.max(waitSeconds, intervalSeconds, 1) * 1000 + REQUEST_SLACK_MS;
}

/** How to serve. */
export interface HttpMetricsOptions {
  /** Where to listen (port 0: any free port). */
  address: Address;
  /** The queue's name, the `queue` label of every series. */
  queue: string;
  /** `-c`: slots free before the first job. */
  concurrency: number;
  /** See {@linkcode healthWindowMs}. */
  healthWindowMs: number;
  log: Logger;
  /**
   * The worker's counters, which `/metrics` shows as they are (the worker counts
   * into it; the stop summary reads it too). Default: a tally of this sink's own.
   */
  tally?: Tally;
  /** Monotonic clock in ms, for tests. */
  now?: () => number;
}

/** The HTTP sink: the metrics interface plus where it listens. */
export interface HttpMetrics extends WorkerMetrics {
  /** e.g. `http://127.0.0.1:9090`. */
  url: string;
}

/** A set of histogram buckets for one label set. */
class Histogram {
  readonly bounds: readonly number[];
  counts: number[];
  count = 0;
  sum = 0;

  constructor(bounds: readonly number[] = DURATION_BUCKETS) {
    this.bounds = bounds;
    this.counts = bounds.map(() => 0);
  }

  observe(seconds: number): void {
    this.count += 1;
    this.sum += seconds;
    this.bounds.forEach((bound, index) => {
      if (seconds <= bound) this.counts[index] += 1;
    });
  }
}

/** Escapes a label value as the text format requires. */
export function escapeLabel(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll("\n", "\\n").replaceAll('"', '\\"');
}

/** Formats a number as the text format spells it. */
function formatNumber(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

/** Each counter of the tally: its Prometheus name and help. */
const COUNTERS: Record<CounterName, readonly [string, string]> = {
  messagesReceived: ["sqsrun_messages_received_total", "Messages received from SQS."],
  messagesDeleted: [
    "sqsrun_messages_deleted_total",
    "Messages deleted after their jobs succeeded.",
  ],
  messagesReleased: [
    "sqsrun_messages_released_total",
    "Messages given back to the queue (failed job, malformed message, shutdown).",
  ],
  messagesParked: [
    "sqsrun_messages_parked_total",
    "Poison messages hidden instead of run (--max-receives without a redrive policy).",
  ],
  jobsStarted: ["sqsrun_jobs_started_total", "Jobs started (--lambda: invocations)."],
  jobsSucceeded: ["sqsrun_jobs_succeeded_total", "Jobs that finished and succeeded."],
  jobsFailed: [
    "sqsrun_jobs_failed_total",
    "Jobs that finished and failed, not counting those killed.",
  ],
  jobMessages: [
    "sqsrun_job_messages_total",
    "Messages carried by the jobs that finished (per job: the --lambda batch size).",
  ],
  jobsPartlyFailed: [
    "sqsrun_jobs_partly_failed_total",
    "Jobs some but not all of whose messages failed (--lambda: batchItemFailures).",
  ],
  jobsKilled: [
    "sqsrun_jobs_killed_total",
    "Jobs the supervisor had to signal (timeouts, shutdown).",
  ],
  visibilityExtended: [
    "sqsrun_visibility_extended_total",
    "Visibility timeout extensions of running jobs' messages.",
  ],
  visibilityLapsed: [
    "sqsrun_visibility_lapsed_total",
    "Deliveries whose visibility deadline passed, or may have, while sqsrun held them.",
  ],
  deletesUncertain: [
    "sqsrun_deletes_uncertain_total",
    "Deletes that may have succeeded although SQS called the receipt stale on a retry.",
  ],
  logLinesDroppedJob: [
    "sqsrun_log_lines_dropped_job_total",
    "Job output lines dropped because the log sink fell behind.",
  ],
  logLinesDroppedWorker: [
    "sqsrun_log_lines_dropped_worker_total",
    "sqsrun's own log lines dropped because the log sink fell behind.",
  ],
  receiveCalls: ["sqsrun_receive_calls_total", "ReceiveMessage calls that answered."],
  receiveErrors: ["sqsrun_receive_errors_total", "ReceiveMessage calls that failed."],
  s3ObjectsMissing: [
    "sqsrun_s3_objects_missing_total",
    "S3 records whose object no longer existed (--s3).",
  ],
  s3ObjectsDeleted: [
    "sqsrun_s3_objects_deleted_total",
    "S3 objects deleted after their jobs succeeded (--s3-delete).",
  ],
};

/**
 * Starts serving `/metrics` and `/healthz`. A port in use or an unusable host is a
 * RuntimeError (exit 1) naming `--http`.
 */
export function startHttpMetrics(options: HttpMetricsOptions): HttpMetrics {
  const now = options.now ?? (() => performance.now());
  const labels = `queue="${escapeLabel(options.queue)}"`;
  // Given one, the worker feeds it; otherwise this sink counts into its own.
  const ownTally = options.tally === undefined ? createTally() : undefined;
  const counters = (options.tally ?? ownTally!).counts;
  const durations = { "0": new Histogram(), "1": new Histogram() };
  const ages = new Histogram();
  const lateness = new Histogram(LATENESS_BUCKETS);
  let running = 0;
  let free = options.concurrency;
  let draining = false;
  /** Why the worker is not receiving yet; undefined once it started. */
  let startingReason: string | undefined = "resolving the queue";
  let lastAlive = now();
  let lastReceiveEpoch: number | undefined;

  const health = () => {
    const silentMs = now() - lastAlive;
    // A worker whose every slot holds a running job does not poll, and is healthy.
    const busy = running > 0 && free === 0;
    const status = draining
      ? "draining"
      : startingReason !== undefined
      ? "starting"
      : busy || silentMs <= options.healthWindowMs
      ? "ok"
      : "not receiving";
    return {
      status,
      ...(status === "starting" ? { reason: `starting: ${startingReason}` } : {}),
      seconds_since_receive: Math.round(silentMs / 100) / 10,
      running,
      slots_free: free,
    };
  };

  const render = (): string => {
    const out: string[] = [];
    const family = (name: string, help: string, type: string) => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    };
    for (const [key, [name, help]] of Object.entries(COUNTERS)) {
      family(name, help, "counter");
      out.push(`${name}{${labels}} ${counters[key as CounterName]}`);
    }
    const histogram = (name: string, extra: string, h: Histogram) => {
      const set = extra ? `${labels},${extra}` : labels;
      h.bounds.forEach((bound, index) => {
        out.push(`${name}_bucket{${set},le="${formatNumber(bound)}"} ${h.counts[index]}`);
      });
      out.push(`${name}_bucket{${set},le="+Inf"} ${h.count}`);
      out.push(`${name}_sum{${set}} ${formatNumber(h.sum)}`);
      out.push(`${name}_count{${set}} ${h.count}`);
    };
    family(
      "sqsrun_job_duration_seconds",
      "How long jobs ran, by outcome (success 1 or 0).",
      "histogram",
    );
    histogram("sqsrun_job_duration_seconds", 'success="1"', durations["1"]);
    histogram("sqsrun_job_duration_seconds", 'success="0"', durations["0"]);
    family(
      "sqsrun_job_age_seconds",
      "Time from SQS accepting a message to its job starting.",
      "histogram",
    );
    histogram("sqsrun_job_age_seconds", "", ages);
    family(
      "sqsrun_visibility_extension_lateness_seconds",
      "How long after it was due each visibility extension call went out.",
      "histogram",
    );
    histogram("sqsrun_visibility_extension_lateness_seconds", "", lateness);
    const gauge = (name: string, help: string, value: number) => {
      family(name, help, "gauge");
      out.push(`${name}{${labels}} ${formatNumber(value)}`);
    };
    gauge("sqsrun_jobs_running", "Jobs running now.", running);
    gauge(
      "sqsrun_slots_free",
      "Messages the worker could take on now (-c minus those in hand).",
      free,
    );
    gauge(
      "sqsrun_draining",
      "1 once a signal asked the worker to stop receiving.",
      draining ? 1 : 0,
    );
    if (lastReceiveEpoch !== undefined) {
      gauge(
        "sqsrun_last_receive_timestamp_seconds",
        "When a ReceiveMessage call last answered (Unix time).",
        lastReceiveEpoch / 1000,
      );
    }
    return out.join("\n") + "\n";
  };

  const handler = (request: Request): Response => {
    const path = new URL(request.url).pathname;
    if (path !== "/metrics" && path !== "/healthz") {
      return new Response("not found: try /metrics or /healthz\n", { status: 404 });
    }
    if (request.method !== "GET" && request.method !== "HEAD") {
      return new Response("method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
    }
    if (path === "/metrics") {
      return new Response(request.method === "HEAD" ? null : render(), {
        headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
      });
    }
    const state = health();
    return new Response(request.method === "HEAD" ? null : JSON.stringify(state) + "\n", {
      status: state.status === "ok" ? 200 : 503,
      headers: { "content-type": "application/json", "cache-control": "no-store" },
    });
  };

  const { hostname, port } = options.address;
  const shown = hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({ hostname, port, onListen: () => {} }, handler);
  } catch (error) {
    const reason = error instanceof Deno.errors.AddrInUse
      ? "the address is already in use"
      : error instanceof Deno.errors.AddrNotAvailable
      ? "the address is not available on this host"
      : describeError(error);
    throw new RuntimeError(`--http ${shown}: cannot listen: ${reason}`);
  }
  const bound = server.addr;
  const host = bound.hostname.includes(":") ? `[${bound.hostname}]` : bound.hostname;
  const url = `http://${host}:${bound.port}`;
  options.log.info("serving /metrics and /healthz", {
    url,
    health_window_s: options.healthWindowMs / 1000,
  });

  // Counting is the tally's: fed by the worker, this sink adds histograms, gauges and health only.
  const counted =
    <A extends unknown[]>(count: ((...args: A) => void) | undefined) => (...args: A) => {
      count?.(...args);
    };
  return {
    url,
    starting: (reason) => {
      startingReason = reason;
    },
    started: () => {
      startingReason = undefined;
      lastAlive = now();
    },
    polled: () => {
      ownTally?.polled();
      lastAlive = now();
      lastReceiveEpoch = Date.now();
    },
    messagesReceived: counted(ownTally?.messagesReceived),
    receiveError: counted(ownTally?.receiveError),
    jobStarted: (ageMs) => {
      ownTally?.jobStarted(ageMs);
      if (ageMs !== undefined) ages.observe(Math.max(0, ageMs) / 1000);
    },
    jobFinished: (job: JobFinished) => {
      durations[job.succeeded ? "1" : "0"].observe(job.durationMs / 1000);
      ownTally?.jobFinished(job);
    },
    messageDeleted: counted(ownTally?.messageDeleted),
    messageReleased: counted(ownTally?.messageReleased),
    messageParked: counted(ownTally?.messageParked),
    visibilityExtended: counted(ownTally?.visibilityExtended),
    extensionSent: (lateMs) => lateness.observe(Math.max(0, lateMs) / 1000),
    visibilityLapsed: counted(ownTally?.visibilityLapsed),
    deleteUncertain: counted(ownTally?.deleteUncertain),
    logLinesDropped: counted(ownTally?.logLinesDropped),
    s3ObjectMissing: counted(ownTally?.s3ObjectMissing),
    s3ObjectDeleted: counted(ownTally?.s3ObjectDeleted),
    slots: (runningNow, freeNow) => {
      // Leaving the all-busy state restarts the clock: the loop polls again from here.
      if (running > 0 && free === 0 && !(runningNow > 0 && freeNow === 0)) lastAlive = now();
      running = runningNow;
      free = freeNow;
    },
    draining: () => {
      draining = true;
    },
    close: async () => {
      await server.shutdown();
    },
  };
}
