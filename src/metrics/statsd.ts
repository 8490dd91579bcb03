/**
 * DogStatsD over UDP (`--statsd`, or the Datadog agent named by `DD_AGENT_HOST`).
 * Fire and forget: lines are batched into datagrams and sent without waiting, so
 * an absent or slow agent never delays or fails a job. `job.time` is named and
 * tagged exactly as sqsexec sent it (`job.time:<ms>|ms|#success:0|1`).
 *
 * @module
 */
import dgram from "node:dgram";
import { type Address, parseAddress } from "../config.ts";
import { describeError, UsageError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { type JobFinished, partlyFailed, type WorkerMetrics } from "./metrics.ts";

/** The DogStatsD port when `DD_DOGSTATSD_PORT` does not say. */
export const DEFAULT_STATSD_PORT = 8125;

/**
 * Largest datagram sent: fits one Ethernet frame (1500) minus IP and UDP headers
 * with room to spare, so no datagram is ever fragmented (the Datadog clients' choice).
 */
const MAX_DATAGRAM_BYTES = 1432;
/** How long a line may wait for others to share its datagram. */
const FLUSH_INTERVAL_MS = 100;
/** How long `close()` waits for the last datagrams to leave. */
const CLOSE_TIMEOUT_MS = 1_000;

/** How to reach the agent and what every metric carries. */
export interface StatsdOptions {
  /** The agent's host and UDP port. */
  address: Address;
  /** Prepended to every metric name (`--statsd-prefix`, default empty). */
  prefix: string;
  /** Tags of every metric: `--statsd-tags`, DD_* tags and `queue:<name>`. */
  tags: string[];
  log: Logger;
  /** How long lines are batched, in ms (tests set it to 0 to send each at once). */
  flushIntervalMs?: number;
}

/** Where DogStatsD goes: `--statsd`, else `DD_AGENT_HOST`:`DD_DOGSTATSD_PORT`, else nowhere. */
export function resolveStatsdAddress(
  setting: string | undefined,
  env: (name: string) => string | undefined = Deno.env.get,
): Address | undefined {
  if (setting === "off") return undefined;
  if (setting !== undefined) return parseAddress(setting, "--statsd");
  const host = env("DD_AGENT_HOST");
  if (!host) return undefined;
  const portText = env("DD_DOGSTATSD_PORT") || String(DEFAULT_STATSD_PORT);
  const port = Number(portText);
  if (!/^[0-9]+$/.test(portText) || port < 1 || port > 65535) {
    throw new UsageError(`DD_DOGSTATSD_PORT must be a port from 1 to 65535, got '${portText}'`);
  }
  // An IPv6 agent address comes bare in DD_AGENT_HOST.
  return { hostname: host.replace(/^\[(.*)\]$/, "$1"), port };
}

/**
 * The tags every metric carries: `--statsd-tags`, then `env`, `service`, `version`
 * from `DD_ENV`, `DD_SERVICE`, `DD_VERSION` (Datadog's unified service tagging),
 * the agent's origin detection id from `DD_ENTITY_ID`, then `queue:<name>`.
 */
export function statsdTags(
  given: string[],
  queue: string,
  env: (name: string) => string | undefined = Deno.env.get,
): string[] {
  const tags = [...given];
  for (
    const [tag, name] of [["env", "DD_ENV"], ["service", "DD_SERVICE"], ["version", "DD_VERSION"]]
  ) {
    const value = env(name);
    if (value) tags.push(`${tag}:${cleanTag(value)}`);
  }
  const entity = env("DD_ENTITY_ID");
  if (entity) tags.push(`dd.internal.entity_id:${cleanTag(entity)}`);
  tags.push(`queue:${cleanTag(queue)}`);
  return tags;
}

/** Replaces what would break the line format (`|`, `,`, `#`, blanks) with `_`. */
function cleanTag(value: string): string {
  return value.replace(/[|,#\s]/g, "_");
}

/** One DogStatsD line: `name:value|type|#tag1,tag2` (no `|#` part without tags). */
export function formatLine(
  name: string,
  value: number,
  type: "c" | "g" | "ms" | "h",
  tags: readonly string[],
): string {
  const tagPart = tags.length > 0 ? `|#${tags.join(",")}` : "";
  return `${name}:${value}|${type}${tagPart}`;
}

/** Starts the DogStatsD sink. Never throws after start; send failures are logged once. */
export function statsdMetrics(options: StatsdOptions): WorkerMetrics {
  const { address, prefix, tags, log } = options;
  const flushMs = options.flushIntervalMs ?? FLUSH_INTERVAL_MS;
  const socket = dgram.createSocket(address.hostname.includes(":") ? "udp6" : "udp4");
  // The socket must never keep the process alive, nor crash it with an unhandled error.
  socket.unref();
  let failing = false;
  const reportFailure = (error: unknown) => {
    if (failing) return;
    failing = true;
    log.warn("cannot send DogStatsD metrics; dropping them until the agent is back", {
      statsd: `${address.hostname}:${address.port}`,
      error: describeError(error),
    });
  };
  socket.on("error", reportFailure);

  let buffer: string[] = [];
  let bufferBytes = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let pending = 0;
  let closed = false;
  let idle: (() => void) | undefined;
  const encoder = new TextEncoder();

  const send = (payload: string) => {
    pending += 1;
    try {
      socket.send(encoder.encode(payload), address.port, address.hostname, (error) => {
        pending -= 1;
        if (error) reportFailure(error);
        else failing = false;
        if (pending === 0) idle?.();
      });
    } catch (error) {
      pending -= 1;
      reportFailure(error);
    }
  };
  const flush = () => {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    if (buffer.length === 0) return;
    const payload = buffer.join("\n");
    buffer = [];
    bufferBytes = 0;
    send(payload);
  };
  const emit = (name: string, value: number, type: "c" | "g" | "ms" | "h", own: string[] = []) => {
    if (closed) return;
    const line = formatLine(prefix + name, value, type, [...own, ...tags]);
    const bytes = encoder.encode(line).length;
    if (bufferBytes > 0 && bufferBytes + 1 + bytes > MAX_DATAGRAM_BYTES) flush();
    buffer.push(line);
    bufferBytes += (bufferBytes > 0 ? 1 : 0) + bytes;
    if (flushMs <= 0) return flush();
    if (timer === undefined) {
      const id = setTimeout(flush, flushMs);
      Deno.unrefTimer(id as unknown as number);
      timer = id;
    }
  };
  const count = (name: string, value = 1, own: string[] = []) => emit(name, value, "c", own);

  return {
    starting: () => {},
    started: () => {},
    polled: () => {},
    messagesReceived: (n) => count("messages.received", n),
    receiveError: () => count("receive.errors"),
    jobStarted: (ageMs) => {
      if (ageMs !== undefined) emit("job.age", Math.max(0, Math.round(ageMs)), "ms");
    },
    jobFinished: (job: JobFinished) => {
      emit("job.time", Math.round(job.durationMs), "ms", [`success:${job.succeeded ? 1 : 0}`]);
      if (job.killed) count("jobs.killed");
      if ((job.messages ?? 1) > 1) emit("job.messages", job.messages!, "h");
      if (partlyFailed(job)) count("jobs.partly_failed");
    },
    messageDeleted: () => count("messages.deleted"),
    messageReleased: () => count("messages.released"),
    messageParked: () => count("messages.parked"),
    visibilityExtended: () => count("visibility.extended"),
    extensionSent: (lateMs) => emit("visibility.lateness", Math.max(0, Math.round(lateMs)), "ms"),
    visibilityLapsed: () => count("visibility.lapsed"),
    deleteUncertain: () => count("messages.delete_uncertain"),
    logLinesDropped: (jobOutput, worker) => {
      if (jobOutput > 0) count("log.dropped", jobOutput, ["source:job"]);
      if (worker > 0) count("log.dropped", worker, ["source:worker"]);
    },
    s3ObjectMissing: () => count("s3.object_missing"),
    s3ObjectDeleted: () => count("s3.object_deleted"),
    slots: (running, free) => {
      emit("jobs.running", running, "g");
      emit("slots.free", free, "g");
    },
    draining: () => {},
    close: async () => {
      flush();
      closed = true;
      if (pending > 0) {
        let timeout: ReturnType<typeof setTimeout> | undefined;
        await new Promise<void>((resolve) => {
          idle = resolve;
          timeout = setTimeout(resolve, CLOSE_TIMEOUT_MS);
        });
        clearTimeout(timeout);
      }
      try {
        socket.close();
      } catch {
        // Already closed.
      }
    },
  };
}
