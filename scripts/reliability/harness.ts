/**
 * The reliability suite's tools: workers run as operators run them (`deno run` with
 * the binary's permissions, JSON log to a file), their logs read back, messages
 * pushed with their ids, job scripts written, and conditions waited for with a
 * deadline. Every worker started here is remembered so an interrupted run stops
 * them all.
 *
 * @module
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { SendMessageBatchCommand, type SQSClient } from "@aws-sdk/client-sqs";
import { runtimeFlags } from "../../src/permissions.ts";
import { RssSampler } from "./procfs.ts";
import { assertFolderOf, type DeletedAt, type DeliveryReport } from "./ledger.ts";
import type { SqsWitness } from "./witness.ts";
import { queueCounts } from "../../tests/support/sqs.ts";

const MAIN = fileURLToPath(new URL("../../src/main.ts", import.meta.url));

/** One parsed JSON log line of a worker. */
export type LogLine = Record<string, unknown> & { msg: string; level: string };

/** A worker process started by {@linkcode launchWorker}. */
export interface WorkerRun {
  pid: number;
  /** Its `-o` log file (JSON lines). */
  logPath: string;
  /** Resolves with the exit status; never rejects. */
  status: Promise<Deno.CommandStatus>;
  /** The status once it exited. */
  exitStatus(): Deno.CommandStatus | undefined;
  /** The last 64 KiB the worker wrote to stderr. */
  stderr(): string;
  /** Sends a signal unless the worker already exited. */
  signal(name: Deno.Signal): void;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it exited. */
  stop(graceMs?: number): Promise<void>;
  /** Its peak VmRSS and CPU seconds, sampled every 250 ms while it runs. */
  usage: RssSampler;
  /** The reader of its stdout, for a worker that logs there ({@linkcode LaunchSpec.logToStdout}). */
  stdout?: StdoutTap;
}

/**
 * Copies a worker's stdout (its log, without `-o`) into its log file, and can stop
 * reading it for a while: the pipe then fills and the worker's writes to stdout
 * block, as with a stuck log shipper or a terminal paused with Ctrl-S.
 */
export interface StdoutTap {
  /** Stops reading (what is in the pipe stays there). */
  pause(): void;
  /** Reads again. */
  resume(): void;
  /** True while paused. */
  readonly paused: boolean;
  /** Bytes read so far. */
  readonly bytes: number;
  /** Resolves once stdout reached its end (the worker and everything holding it exited). */
  done: Promise<void>;
}

const live = new Set<WorkerRun>();

/** How to start one worker. */
export interface LaunchSpec {
  /** sqsrun arguments (without the log options, which are added). */
  args: string[];
  /** The worker's whole environment. */
  env: Record<string, string>;
  /** Where its log goes. */
  logPath: string;
  /**
   * Log to stdout (no `-o`), piped to the harness, which copies it to `logPath`
   * and can stop reading it (see {@linkcode WorkerRun.stdout}).
   */
  logToStdout?: boolean;
}

/** Starts `sqsrun --log-format json -o LOG ARGS` with the compiled binary's permissions. */
export function launchWorker(spec: LaunchSpec): WorkerRun {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...runtimeFlags(),
      "--quiet",
      MAIN,
      "--log-format",
      "json",
      ...(spec.logToStdout ? [] : ["-o", spec.logPath]),
      ...spec.args,
    ],
    env: spec.env,
    clearEnv: true,
    stdin: "null",
    stdout: spec.logToStdout ? "piped" : "null",
    stderr: "piped",
  }).spawn();
  const stdout = spec.logToStdout ? tapStdout(child.stdout, spec.logPath) : undefined;
  let stderrText = "";
  let exit: Deno.CommandStatus | undefined;
  const stderrDone = (async () => {
    const decoder = new TextDecoder();
    try {
      for await (const chunk of child.stderr) {
        stderrText = (stderrText + decoder.decode(chunk, { stream: true })).slice(-65_536);
      }
    } catch { /* the pipe broke with the worker */ }
  })();
  const usage = new RssSampler(child.pid, 250);
  const status = child.status.then(async (value) => {
    exit = value;
    usage.stop();
    live.delete(worker);
    // Kept next to the log for the post-mortem of a failed scenario (a crash, a signal).
    await stderrDone;
    const signal = value.signal ?? "none";
    await Deno.writeTextFile(
      `${spec.logPath}.exit`,
      `pid ${child.pid} exit code ${value.code} signal ${signal}\n${stderrText}`,
    ).catch(() => {});
    return value;
  });
  const worker: WorkerRun = {
    pid: child.pid,
    logPath: spec.logPath,
    status,
    exitStatus: () => exit,
    stderr: () => stderrText,
    usage,
    stdout,
    signal(name) {
      if (exit !== undefined) return;
      try {
        child.kill(name);
      } catch { /* exited meanwhile */ }
    },
    async stop(graceMs = 20_000) {
      if (exit !== undefined) return;
      worker.signal("SIGTERM");
      const timer = setTimeout(() => worker.signal("SIGKILL"), graceMs);
      await status;
      clearTimeout(timer);
    },
  };
  live.add(worker);
  return worker;
}

function tapStdout(stream: ReadableStream<Uint8Array>, logPath: string): StdoutTap {
  let paused = false;
  let bytes = 0;
  let wake: (() => void) | undefined;
  const done = (async () => {
    const file = await Deno.open(logPath, { append: true, create: true });
    const reader = stream.getReader();
    try {
      for (;;) {
        while (paused) await new Promise<void>((resolve) => wake = resolve);
        const { value, done } = await reader.read();
        if (done) break;
        bytes += value.length;
        let offset = 0;
        while (offset < value.length) offset += await file.write(value.subarray(offset));
      }
    } catch {
      /* the pipe broke with the worker */
    } finally {
      file.close();
    }
  })();
  return {
    pause() {
      paused = true;
    },
    resume() {
      paused = false;
      wake?.();
      wake = undefined;
    },
    get paused() {
      return paused;
    },
    get bytes() {
      return bytes;
    },
    done,
  };
}

/** SIGKILLs every worker still running (an interrupted or failed run). */
export async function killAllWorkers(): Promise<void> {
  const running = [...live];
  for (const worker of running) worker.signal("SIGKILL");
  await Promise.all(running.map((worker) => worker.status));
}

/**
 * Reads a worker's log file line by line without holding it whole (a job may have
 * written 50 MB through it). Job output lines (`stream`) are skipped unless
 * `withOutput`; lines that are not JSON are skipped. An absent file reads as empty;
 * an absent folder throws (see {@linkcode assertFolderOf}).
 */
export async function readLog(path: string, withOutput = false): Promise<LogLine[]> {
  const lines: LogLine[] = [];
  await scanLog(path, (line) => {
    lines.push(line);
  }, withOutput);
  return lines;
}

/** Calls `visit` with each JSON line of a log file, streaming; see {@linkcode readLog}. */
export async function scanLog(
  path: string,
  visit: (line: LogLine) => void,
  withOutput = false,
): Promise<void> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    await assertFolderOf(path);
    return;
  }
  let pending = "";
  const take = (text: string) => {
    if (!text || (!withOutput && text.includes('"stream":"std'))) return;
    let line: LogLine;
    try {
      line = JSON.parse(text);
    } catch {
      return; // a torn line
    }
    visit(line);
  };
  for await (const chunk of file.readable.pipeThrough(new TextDecoderStream())) {
    pending += chunk;
    let newline = pending.indexOf("\n");
    let from = 0;
    while (newline !== -1) {
      take(pending.slice(from, newline));
      from = newline + 1;
      newline = pending.indexOf("\n", from);
    }
    pending = pending.slice(from);
  }
  take(pending);
}

/** True when the log file has a line with this `msg` (a cheap text search). */
export async function logHas(path: string, msg: string): Promise<boolean> {
  try {
    return (await Deno.readTextFile(path)).includes(`"msg":${JSON.stringify(msg)}`);
  } catch {
    return false;
  }
}

/** Throws when any of `workers` exited: a worker must only end when told to. */
export function assertRunning(workers: WorkerRun[]): void {
  const exited = workers.filter((worker) => worker.exitStatus() !== undefined);
  if (exited.length === 0) return;
  const what = exited.map((worker) => {
    const status = worker.exitStatus()!;
    const stderr = worker.stderr().trim().split("\n").slice(-3).join(" | ");
    return `${worker.pid} (code ${status.code}, signal ${status.signal ?? "none"}: ${stderr})`;
  });
  throw new Error(`worker(s) exited on their own: ${what.join("; ")}`);
}

/** Waits until the worker logged `worker started`, or fails when it exits first. */
export async function waitStarted(
  worker: WorkerRun,
  signal?: AbortSignal,
  timeoutMs = 60_000,
): Promise<void> {
  await waitFor(
    `worker ${worker.pid} started`,
    async () => {
      if (worker.exitStatus()) {
        throw new Error(
          `worker ${worker.pid} exited (${worker.exitStatus()!.code}) before starting: ` +
            worker.stderr().trim().slice(-500),
        );
      }
      return await logHas(worker.logPath, "worker started");
    },
    timeoutMs,
    { signal },
  );
}

/** How {@linkcode waitFor} polls. */
export interface WaitOptions {
  /** Pause between checks; default 200 ms. */
  intervalMs?: number;
  /** Stops waiting (with the signal's reason) when aborted: the scenario ran out of time. */
  signal?: AbortSignal;
}

/** Polls `condition` until it holds; throws after `timeoutMs` or when the signal aborts. */
export async function waitFor(
  what: string,
  condition: () => boolean | Promise<boolean>,
  timeoutMs: number,
  options: WaitOptions = {},
): Promise<void> {
  const intervalMs = options.intervalMs ?? 200;
  const deadline = Date.now() + timeoutMs;
  while (true) {
    options.signal?.throwIfAborted();
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s: ${what}`);
    await sleep(intervalMs);
  }
}

/**
 * Waits until `done` holds, or until the queue has been empty at two checks in a
 * row: then nothing more can run (a message leaves a queue only by a delete) and
 * the scenario's checks say what went wrong, instead of waiting out `timeoutMs`.
 */
export async function waitForOutcome(
  what: string,
  queue: { client: SQSClient; url: string },
  done: () => Promise<boolean>,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<void> {
  let emptyChecks = 0;
  await waitFor(
    what,
    async () => {
      if (await done()) return true;
      emptyChecks = await queueIsEmpty(queue.client, queue.url) ? emptyChecks + 1 : 0;
      return emptyChecks >= 2;
    },
    timeoutMs,
    { intervalMs: 500, signal },
  );
}

/**
 * Waits until sqsrun logged a success for `count` distinct pushed bodies and the
 * queue is empty (or has stayed empty). `readLogs` reads the workers' logs; callers
 * keep what it read last for their checks.
 */
export function waitForEverySuccess(
  queue: { client: SQSClient; url: string },
  ids: ReadonlyMap<string, string>,
  count: number,
  readLogs: () => Promise<LogLine[][]>,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<void> {
  return waitForOutcome(
    "every message succeeded and the queue is empty",
    queue,
    async () =>
      observedSuccesses(await readLogs(), ids).size === count &&
      await queueIsEmpty(queue.client, queue.url),
    timeoutMs,
    signal,
  );
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Sends bodies ten per call and returns message id → body. Throws when SQS refused
 * any entry: a scenario must know exactly what it pushed.
 */
export async function pushBodies(
  client: SQSClient,
  url: string,
  bodies: string[],
  options: PushOptions = {},
): Promise<Map<string, string>> {
  const perCall = options.perCall ?? 10;
  const keyOf = options.keyOf ?? ((body: string) => body);
  const ids = new Map<string, string>();
  for (let start = 0; start < bodies.length; start += perCall) {
    const batch = bodies.slice(start, start + perCall);
    const result = await client.send(
      new SendMessageBatchCommand({
        QueueUrl: url,
        Entries: batch.map((body, index) => ({ Id: String(index), MessageBody: body })),
      }),
    );
    if (result.Failed?.length) {
      throw new Error(`SQS refused ${result.Failed.length} message(s): ${result.Failed[0].Code}`);
    }
    for (const entry of result.Successful ?? []) {
      ids.set(entry.MessageId!, keyOf(batch[Number(entry.Id)]));
    }
  }
  return ids;
}

/** How {@linkcode pushBodies} sends. */
export interface PushOptions {
  /** Messages per SendMessageBatch call (at most 10, and 256 KiB in all); default 10. */
  perCall?: number;
  /** What the returned map holds for a body (default the body itself). */
  keyOf?: (body: string) => string;
}

/** True when the queue holds no visible, in-flight or delayed message. */
export async function queueIsEmpty(client: SQSClient, url: string): Promise<boolean> {
  const counts = await queueCounts(client, url);
  return counts.visible === 0 && counts.inFlight === 0 && counts.delayed === 0;
}

/**
 * Bodies whose job sqsrun logged as `job finished` (succeeded), by any worker whose
 * log is in `logs`; `ids` maps message ids back to bodies.
 */
export function observedSuccesses(
  logs: LogLine[][],
  ids: ReadonlyMap<string, string>,
): Set<string> {
  const bodies = new Set<string>();
  for (const lines of logs) {
    for (const line of lines) {
      if (line.msg !== "job finished" || line.outcome !== "succeeded") continue;
      const body = ids.get(String(line.message_id));
      if (body !== undefined) bodies.add(body);
    }
  }
  return bodies;
}

/** When the witness saw the queue acknowledge deleting each body's message; `ids`: id → body. */
export function deletedAtOf(witness: SqsWitness, ids: ReadonlyMap<string, string>): DeletedAt {
  const idOfBody = new Map([...ids].map(([id, body]) => [body, id]));
  return (body) => {
    const id = idOfBody.get(body);
    const at = id === undefined ? undefined : witness.deletedAt(id);
    return at === undefined ? undefined : BigInt(at) * 1_000_000n;
  };
}

/** A note for the report when the queue delivered deleted messages again; else none. */
export function redeliveryNotes(report: DeliveryReport): string[] {
  if (report.redelivered === 0) return [];
  return [
    `${report.redelivered} of the duplicates were the queue's: it delivered a message again ` +
    "after acknowledging its delete (at-least-once; moto loses concurrent deletes), or " +
    "handed one message to two receive calls at once (moto's race)",
  ];
}

/** Peak VmRSS (MiB) and total CPU seconds of a set of workers, for the table. */
export function usageFigures(workers: WorkerRun[]): { peakRssMiB: number; cpu: string } {
  const peak = Math.max(0, ...workers.map((worker) => worker.usage.peakBytes));
  const cpu = workers.reduce((sum, worker) => sum + worker.usage.cpuSeconds, 0);
  const count = workers.length;
  return {
    peakRssMiB: Math.round(peak / 1024 / 1024),
    cpu: `${cpu.toFixed(1)} s, ${count} worker${count === 1 ? "" : "s"}`,
  };
}

/** Counts log lines with this `msg` across logs. */
export function countLines(logs: LogLine[][], msg: string): number {
  let count = 0;
  for (const lines of logs) for (const line of lines) if (line.msg === msg) count++;
  return count;
}

/** Writes an executable `#!/bin/sh` script with `LEDGER` and `DIR` set; returns its path. */
export async function writeJob(dir: string, name: string, body: string): Promise<string> {
  const path = join(dir, name);
  await Deno.writeTextFile(
    path,
    `#!/bin/sh\nLEDGER='${join(dir, "ledger")}'\nDIR='${dir}'\n${body}\n`,
  );
  await Deno.chmod(path, 0o755);
  return path;
}

/** Collects a scenario's failed checks instead of stopping at the first. */
export class Checks {
  readonly failures: string[] = [];

  /** Records `message` as a failure unless `condition` holds. */
  that(condition: boolean, message: string): void {
    if (!condition) this.failures.push(message);
  }

  /** Records a failure unless `actual === expected`. */
  equal<T>(actual: T, expected: T, what: string): void {
    if (actual !== expected) {
      this.failures.push(
        `${what}: ${JSON.stringify(actual)}, expected ${JSON.stringify(expected)}`,
      );
    }
  }

  /** True when no check failed. */
  get ok(): boolean {
    return this.failures.length === 0;
  }
}

/** A short, readable sample of a list for failure messages. */
export function sample(items: Iterable<unknown>, count = 5): string {
  const list = [...items];
  const head = list.slice(0, count).map((item) => String(item)).join(", ");
  return list.length > count ? `${head}, ... (${list.length} in all)` : head;
}
