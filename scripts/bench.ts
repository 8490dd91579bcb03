/**
 * `deno task bench`: sqsrun against the leanest possible loops doing the same work
 * (scripts/bench/baseline.ts with the same SDK, and the Go lean loop in
 * scripts/bench/go_lean, built here when `go` is on PATH), side by side in one run on
 * the same local SQS (ElasticMQ), and writes docs/benchmarks.md with the machine,
 * versions, method, figures (medians of several runs, and ratios) and whether the
 * targets are met.
 *
 *     deno task bench            # full: 5,000 messages per run, 3 runs (under 20 minutes)
 *     deno task bench --quick    # smoke: 500 messages, 1 run (under 2 minutes)
 *
 * It prints figures and exits non-zero only when it could not run.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import {
  CreateQueueCommand,
  DeleteQueueCommand,
  GetQueueAttributesCommand,
  SendMessageBatchCommand,
  SQSClient,
} from "@aws-sdk/client-sqs";
import { NodeHttpHandler } from "@smithy/node-http-handler";
import { CreateBucketCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { PROJECT_ROOT, startLocalAws, stopLocalAws } from "./local_aws.ts";
import { uploadLargeObject } from "../tests/support/s3.ts";
import { lambdaBench, lambdaSection } from "./bench/lambda.ts";
import { runtimeFlags } from "../src/permissions.ts";
import meta from "../deno.json" with { type: "json" };

const MAIN = join(PROJECT_ROOT, "src", "main.ts");
const BASELINE = join(PROJECT_ROOT, "scripts", "bench", "baseline.ts");
const GO_LEAN_DIR = join(PROJECT_ROOT, "scripts", "bench", "go_lean");
const POST_APP = join(PROJECT_ROOT, "scripts", "bench", "post_app.ts");
const CLOCK_TICKS_PER_SECOND = 100;

/** What one measured run produced. */
export interface RunFigures {
  seconds: number;
  messagesPerSecond: number;
  /** Peak resident memory of the measured process, in MiB. */
  peakRssMiB: number;
  /** CPU seconds the measured process itself used. */
  cpuSeconds: number;
  /** CPU seconds of the children it reaped (the jobs, and for sqsrun its session helper). */
  jobCpuSeconds: number;
}

/** Returns the median of `values`. */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** Returns the p-th percentile (0..100) of `values`, nearest rank. */
export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1];
}

/**
 * Reads peak RSS (VmHWM), current RSS (VmRSS) in KiB, CPU seconds of a live process
 * and of the children it has reaped.
 */
export function processUsage(
  pid: number,
): { hwmKiB: number; rssKiB: number; cpuSeconds: number; childCpuSeconds: number } {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const field = (name: string) => Number(new RegExp(`${name}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  // Fields after the command name, which is in parentheses and may contain spaces.
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(rest[11]) + Number(rest[12]);
  const childTicks = Number(rest[13]) + Number(rest[14]);
  return {
    hwmKiB: field("VmHWM"),
    rssKiB: field("VmRSS"),
    cpuSeconds: ticks / CLOCK_TICKS_PER_SECOND,
    childCpuSeconds: childTicks / CLOCK_TICKS_PER_SECOND,
  };
}

interface Bench {
  client: SQSClient;
  env: Record<string, string>;
  dir: string;
  quick: boolean;
  /** moto: SQS and S3 for the S3 mode. */
  motoUrl: string;
  /** The built Go lean loop, or why it was skipped. */
  goLean: { path: string; version: string } | { skipped: string };
}

/**
 * Builds the Go lean loop (scripts/bench/go_lean) into `dir`, or says why not: no `go`
 * on PATH, or the build failed (its last line of output).
 */
async function buildGoLean(dir: string): Promise<Bench["goLean"]> {
  let version: string;
  try {
    const output = await new Deno.Command("go", { args: ["version"], stdout: "piped" }).output();
    version = new TextDecoder().decode(output.stdout).trim();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return { skipped: "go not found on PATH" };
    return { skipped: `go version failed: ${error instanceof Error ? error.message : error}` };
  }
  const path = join(dir, "go_lean");
  let build: Deno.CommandOutput;
  try {
    build = await new Deno.Command("go", {
      args: ["build", "-o", path, "."],
      cwd: GO_LEAN_DIR,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (error) {
    return { skipped: `go build failed: ${error instanceof Error ? error.message : error}` };
  }
  if (!build.success) {
    const lines = new TextDecoder().decode(build.stderr).trim().split("\n");
    return { skipped: `go build failed: ${lines[lines.length - 1] || `exit ${build.code}`}` };
  }
  return { path, version };
}

async function createQueue(bench: Bench, name: string): Promise<string> {
  const result = await bench.client.send(
    new CreateQueueCommand({ QueueName: name, Attributes: { VisibilityTimeout: "60" } }),
  );
  return result.QueueUrl!;
}

async function fill(bench: Bench, url: string, count: number, bodyBytes: number): Promise<void> {
  const body = "x".repeat(bodyBytes);
  const batches: number[] = [];
  for (let start = 0; start < count; start += 10) batches.push(Math.min(10, count - start));
  let next = 0;
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (next < batches.length) {
      const size = batches[next++];
      await bench.client.send(
        new SendMessageBatchCommand({
          QueueUrl: url,
          Entries: Array.from({ length: size }, (_, i) => ({ Id: String(i), MessageBody: body })),
        }),
      );
    }
  }));
}

/**
 * The bench's own SQS client (filling queues, counting what is left). Its calls time
 * out and are tried again: an emulator that never answers one request (ElasticMQ did,
 * once, in a full run) would otherwise hang the whole bench.
 */
function benchSqsClient(endpoint: string): SQSClient {
  return new SQSClient({
    region: "us-east-1",
    endpoint,
    credentials: { accessKeyId: "bench", secretAccessKey: "bench" },
    maxAttempts: 5,
    requestHandler: new NodeHttpHandler({ requestTimeout: 30_000, throwOnRequestTimeout: true }),
  });
}

async function remaining(client: SQSClient, url: string): Promise<number> {
  const result = await client.send(
    new GetQueueAttributesCommand({
      QueueUrl: url,
      AttributeNames: ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    }),
  );
  const attributes = result.Attributes ?? {};
  return Number(attributes.ApproximateNumberOfMessages ?? 0) +
    Number(attributes.ApproximateNumberOfMessagesNotVisible ?? 0);
}

/**
 * sqsrun's arguments for a timed drain: `--exec COMMAND` (or another runner flag and
 * target) at `-c concurrency`, short polls, no log.
 */
function drainArgs(url: string, command: string, concurrency: number, runner = "--exec"): string[] {
  return ["-q", url, runner, command, "-c", String(concurrency), "--wait", "1", "-o", "/dev/null"];
}

function spawnSqsrun(
  bench: Bench,
  args: string[],
  env: Record<string, string> = {},
): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", ...runtimeFlags(), "--quiet", MAIN, ...args],
    env: { ...bench.env, ...env },
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
}

function spawnBaseline(bench: Bench, args: string[]): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", BASELINE, ...args],
    env: bench.env,
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
}

function spawnGoLean(path: string, bench: Bench, args: string[]): Deno.ChildProcess {
  return new Deno.Command(path, {
    args,
    env: bench.env,
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
}

async function stop(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGTERM");
  } catch { /* exited */ }
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
  }, 10_000);
  await child.status;
  clearTimeout(timer);
}

/** Which side a bench process is, from its command line: for the errors. */
function sideName(pid: number): string {
  let command = "";
  try {
    command = Deno.readTextFileSync(`/proc/${pid}/cmdline`).replaceAll("\0", " ");
  } catch { /* gone */ }
  if (command.includes("baseline.ts")) return "the TS baseline";
  if (command.includes("go_lean")) return "the Go lean loop";
  return command.includes("main.ts") ? "sqsrun" : "the measured process";
}

/**
 * Samples `child` until `left()` says the queue is empty (at most 10 minutes), then
 * stops it; the figures count from `started`. A side that exits with messages left,
 * or stalls, fails the run, naming the side and what it left.
 */
async function watchDrain(
  child: Deno.ChildProcess,
  started: number,
  messages: number,
  left: () => Promise<number>,
): Promise<RunFigures> {
  const name = sideName(child.pid);
  let exited: Deno.CommandStatus | undefined;
  child.status.then((status) => exited = status);
  let usage = { hwmKiB: 0, rssKiB: 0, cpuSeconds: 0, childCpuSeconds: 0 };
  const deadline = Date.now() + 600_000;
  let remainingNow = messages;
  while (Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    try {
      usage = processUsage(child.pid);
    } catch { /* exited */ }
    remainingNow = await left();
    if (remainingNow === 0) break;
    // Every side runs until stopped: one that exits with messages left crashed.
    if (exited) {
      throw new Error(
        `${name} exited (code ${exited.code}) with ${remainingNow} of ${messages} messages left`,
      );
    }
  }
  const seconds = (performance.now() - started) / 1000;
  await stop(child);
  if (await left() !== 0) {
    throw new Error(
      `${name}: the queue did not drain in 10 minutes (${remainingNow} of ${messages} left)`,
    );
  }
  return {
    seconds,
    messagesPerSecond: messages / seconds,
    peakRssMiB: usage.hwmKiB / 1024,
    cpuSeconds: usage.cpuSeconds,
    jobCpuSeconds: usage.childCpuSeconds,
  };
}

/** Fills a queue, starts `spawn`, and times it until the queue is empty. */
async function timeDrain(
  bench: Bench,
  count: number,
  bodyBytes: number,
  spawn: (url: string) => Deno.ChildProcess,
): Promise<RunFigures> {
  const url = await createQueue(bench, `bench-${crypto.randomUUID().slice(0, 8)}`);
  try {
    await fill(bench, url, count, bodyBytes);
    const started = performance.now();
    return await watchDrain(spawn(url), started, count, () => remaining(bench.client, url));
  } finally {
    await bench.client.send(new DeleteQueueCommand({ QueueUrl: url })).catch(() => {});
  }
}

/** Medians of one side's runs in one cell, per message where it says so. */
interface SideFigures {
  rate: number;
  /** CPU ms per message of the process itself. */
  cpu: number;
  /** CPU ms per message of the children it reaped. */
  jobCpu: number;
  /** Peak RSS in MiB. */
  rss: number;
}

interface ThroughputRow {
  job: string;
  concurrency: number;
  sqsrun: SideFigures;
  baseline: SideFigures;
  /** The Go lean loop; `null` when it was skipped. */
  go: SideFigures | null;
  /** Lowest and highest ratio of one run pair (sqsrun's run over the baseline's next to it). */
  ratioRange: [number, number];
  /** The same against the Go lean loop. */
  goRatioRange: [number, number] | null;
}

function sideFigures(figures: RunFigures[], count: number): SideFigures {
  return {
    rate: median(figures.map((f) => f.messagesPerSecond)),
    cpu: median(figures.map((f) => f.cpuSeconds / count * 1000)),
    jobCpu: median(figures.map((f) => f.jobCpuSeconds / count * 1000)),
    rss: median(figures.map((f) => f.peakRssMiB)),
  };
}

async function throughput(bench: Bench, runs: number, count: number): Promise<ThroughputRow[]> {
  const rows: ThroughputRow[] = [];
  const jobs = [
    { name: "`/bin/true`", command: ["/bin/true"], body: 100 },
    { name: "`cat` (1 KiB body)", command: ["cat"], body: 1024 },
  ];
  const goLean = "path" in bench.goLean ? bench.goLean.path : null;
  for (const job of jobs) {
    for (const concurrency of [1, 10, 50]) {
      const ours: RunFigures[] = [];
      const theirs: RunFigures[] = [];
      const gos: RunFigures[] = [];
      const sides: { figures: RunFigures[]; spawn: (url: string) => Deno.ChildProcess }[] = [
        {
          figures: ours,
          spawn: (url) => spawnSqsrun(bench, drainArgs(url, job.command[0], concurrency)),
        },
        {
          figures: theirs,
          spawn: (url) => spawnBaseline(bench, [url, String(concurrency), ...job.command]),
        },
      ];
      if (goLean) {
        sides.push({
          figures: gos,
          spawn: (url) => spawnGoLean(goLean, bench, [url, String(concurrency), ...job.command]),
        });
      }
      for (let run = 0; run < runs; run++) {
        // Rotate the order so no side always gets the warmer machine.
        for (let i = 0; i < sides.length; i++) {
          const side = sides[(run + i) % sides.length];
          side.figures.push(await timeDrain(bench, count, job.body, side.spawn));
        }
      }
      const row: ThroughputRow = {
        job: job.name,
        concurrency,
        sqsrun: sideFigures(ours, count),
        baseline: sideFigures(theirs, count),
        go: goLean ? sideFigures(gos, count) : null,
        ratioRange: pairRange(ours, theirs),
        goRatioRange: goLean ? pairRange(ours, gos) : null,
      };
      console.error(
        `throughput ${job.name} -c ${concurrency}: sqsrun ${fmt(row.sqsrun.rate)}/s, ` +
          `baseline ${fmt(row.baseline.rate)}/s, ratio ${
            fmt(row.sqsrun.rate / row.baseline.rate, 2)
          }` +
          (row.go
            ? `; Go ${fmt(row.go.rate)}/s, ratio ${fmt(row.sqsrun.rate / row.go.rate, 2)}`
            : "; Go skipped"),
      );
      rows.push(row);
    }
  }
  return rows;
}

/** The smallest and largest rate ratio over the run pairs (run i of each side). */
function pairRange(ours: RunFigures[], theirs: RunFigures[]): [number, number] {
  const ratios = ours.map((figures, i) => figures.messagesPerSecond / theirs[i].messagesPerSecond);
  return [Math.min(...ratios), Math.max(...ratios)];
}

/** Send-to-start latency with an idle, long-polling worker. */
async function latency(bench: Bench, count: number): Promise<{ p50: number; p99: number }> {
  const url = await createQueue(bench, `bench-latency-${crypto.randomUUID().slice(0, 8)}`);
  const ledger = join(bench.dir, "latency.txt");
  await Deno.writeTextFile(ledger, "");
  const job = join(bench.dir, "latency_job.sh");
  await Deno.writeTextFile(
    job,
    `#!/bin/sh\necho "$SQSRUN_SENT_TIMESTAMP $(date +%s%N)" >> '${ledger}'\n`,
  );
  await Deno.chmod(job, 0o755);
  const child = spawnSqsrun(bench, ["-q", url, "--exec", job, "-c", "4", "-o", "/dev/null"]);
  try {
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    for (let i = 0; i < count; i++) {
      await fill(bench, url, 1, 10);
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && await remaining(bench.client, url) > 0) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const samples = (await Deno.readTextFile(ledger)).trim().split("\n").map((line) => {
      const [sent, started] = line.split(" ");
      return Number(BigInt(started) / 1_000_000n) - Number(sent);
    });
    return { p50: percentile(samples, 50), p99: percentile(samples, 99) };
  } finally {
    await stop(child);
    await bench.client.send(new DeleteQueueCommand({ QueueUrl: url })).catch(() => {});
  }
}

/** CPU share and RSS of a running process over `seconds`, after `warmupMs`. */
async function sampleUsage(
  pid: number,
  warmupMs: number,
  seconds: number,
): Promise<{ cpuPercent: number; rssMiB: number }> {
  await new Promise((resolve) => setTimeout(resolve, warmupMs));
  const before = processUsage(pid);
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  const after = processUsage(pid);
  return {
    cpuPercent: ((after.cpuSeconds - before.cpuSeconds) / seconds) * 100,
    rssMiB: after.rssKiB / 1024,
  };
}

/** CPU and memory of an idle worker over `seconds`. */
async function idle(
  bench: Bench,
  seconds: number,
): Promise<{ cpuPercent: number; rssMiB: number; baselineRssMiB: number; denoRssMiB: number }> {
  const url = await createQueue(bench, `bench-idle-${crypto.randomUUID().slice(0, 8)}`);
  try {
    const ours = await sampleThenStop(
      spawnSqsrun(bench, ["-q", url, "--exec", "/bin/true", "-o", "/dev/null"]),
      2_000,
      seconds,
    );
    // The floors: Deno and the same SQS client long-polling, and nothing else; Deno alone.
    const baseline = await sampleThenStop(
      spawnBaseline(bench, ["--idle", url, "1", "/bin/true"]),
      2_000,
      Math.min(seconds, 20),
    );
    const bare = await sampleThenStop(
      new Deno.Command(Deno.execPath(), {
        args: ["eval", "setTimeout(() => {}, 600_000)"],
        stdin: "null",
        stdout: "null",
        stderr: "inherit",
      }).spawn(),
      1_000,
      3,
    );
    return { ...ours, baselineRssMiB: baseline.rssMiB, denoRssMiB: bare.rssMiB };
  } finally {
    await bench.client.send(new DeleteQueueCommand({ QueueUrl: url })).catch(() => {});
  }
}

/** Samples `child` (see sampleUsage), then stops it, whatever happened. */
async function sampleThenStop(
  child: Deno.ChildProcess,
  warmupMs: number,
  seconds: number,
): Promise<{ cpuPercent: number; rssMiB: number }> {
  try {
    return await sampleUsage(child.pid, warmupMs, seconds);
  } finally {
    await stop(child);
  }
}

/** Most CPU share (of one core) per sleeping job: 200 jobs may cost 0.2 of a core. */
const SLEEPING_JOB_CPU_TARGET = 0.001;

/** One cell of the spawner comparison: jobs started on spawner threads, or on the main thread. */
interface SpawnerRow {
  concurrency: number;
  thread: number;
  main: number;
  threadCpu: number;
  mainCpu: number;
  threadRss: number;
  mainRss: number;
  /** Lowest and highest ratio thread/main of one run pair. */
  ratioRange: [number, number];
}

/** What starting jobs off the main thread buys: `--exec /bin/true` both ways (`SQSRUN_SPAWNER`). */
async function spawnerComparison(
  bench: Bench,
  runs: number,
  count: number,
): Promise<SpawnerRow[]> {
  const rows: SpawnerRow[] = [];
  for (const concurrency of [1, 10, 50]) {
    const thread: RunFigures[] = [];
    const main: RunFigures[] = [];
    const args = (url: string) => drainArgs(url, "/bin/true", concurrency);
    for (let run = 0; run < runs; run++) {
      const pair = [
        () =>
          timeDrain(bench, count, 100, (url) => spawnSqsrun(bench, args(url)))
            .then((figures) => thread.push(figures)),
        () =>
          timeDrain(
            bench,
            count,
            100,
            (url) => spawnSqsrun(bench, args(url), { SQSRUN_SPAWNER: "main" }),
          ).then((figures) => main.push(figures)),
      ];
      if (run % 2) pair.reverse();
      for (const measure of pair) await measure();
    }
    const row = {
      concurrency,
      thread: median(thread.map((f) => f.messagesPerSecond)),
      main: median(main.map((f) => f.messagesPerSecond)),
      threadCpu: median(thread.map((f) => f.cpuSeconds / count * 1000)),
      mainCpu: median(main.map((f) => f.cpuSeconds / count * 1000)),
      threadRss: median(thread.map((f) => f.peakRssMiB)),
      mainRss: median(main.map((f) => f.peakRssMiB)),
      ratioRange: pairRange(thread, main),
    };
    console.error(
      `spawner -c ${concurrency}: threads ${row.thread.toFixed(0)}/s, main ${
        row.main.toFixed(0)
      }/s`,
    );
    rows.push(row);
  }
  return rows;
}

/** How late visibility extensions went out while many jobs started. */
interface Lateness {
  /** Jobs started per second over the run. */
  startsPerSecond: number;
  calls: number;
  /** Share of calls (0..1) that went out within 10 ms and within 100 ms of when they were due. */
  within10ms: number;
  within100ms: number;
  /** The smallest histogram bound that holds every call, in ms (Infinity: beyond the last). */
  slowestBoundMs: number;
}

/**
 * Extension lateness while jobs start fast: `count` jobs of 1.5 s at `-c 80` with
 * `-t 2 -e 1`, so that each job's message is extended once, about a second after
 * it started, while new jobs keep starting (about 50 a second). The worker's
 * `sqsrun_visibility_extension_lateness_seconds` histogram says how late each call was.
 */
async function extensionLateness(
  bench: Bench,
  count: number,
  env: Record<string, string> = {},
): Promise<Lateness> {
  const url = await createQueue(bench, `bench-late-${crypto.randomUUID().slice(0, 8)}`);
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  try {
    await fill(bench, url, count, 100);
    const started = performance.now();
    const child = spawnSqsrun(bench, [
      "-q",
      url,
      "--exec",
      "sleep",
      "-c",
      "80",
      "-t",
      "2",
      "-e",
      "1",
      "--wait",
      "1",
      "--http",
      `127.0.0.1:${port}`,
      "-o",
      "/dev/null",
      "--",
      "1.5",
    ], env);
    let metrics = "";
    try {
      const deadline = Date.now() + 300_000;
      while (Date.now() < deadline && await remaining(bench.client, url) > 0) {
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    } finally {
      await stop(child);
    }
    const seconds = (performance.now() - started) / 1000;
    const buckets = [...metrics.matchAll(
      /^sqsrun_visibility_extension_lateness_seconds_bucket\{[^}]*le="([^"]+)"\} (\d+)$/gm,
    )].map(([, bound, calls]) => ({
      bound: bound === "+Inf" ? Infinity : Number(bound),
      calls: Number(calls),
    }));
    const calls = buckets.find((bucket) => bucket.bound === Infinity)?.calls ?? 0;
    const within = (ms: number) =>
      calls ? (buckets.find((bucket) => bucket.bound === ms / 1000)?.calls ?? 0) / calls : 0;
    const slowest = buckets.find((bucket) => bucket.calls === calls);
    return {
      startsPerSecond: count / seconds,
      calls,
      within10ms: within(10),
      within100ms: within(100),
      slowestBoundMs: slowest ? slowest.bound * 1000 : Infinity,
    };
  } finally {
    await bench.client.send(new DeleteQueueCommand({ QueueUrl: url })).catch(() => {});
  }
}

/** RSS and CPU of one worker holding `jobs` sleeping jobs at once. */
async function manyJobs(
  bench: Bench,
  jobs: number,
): Promise<{ rssMiB: number; cpuPercent: number }> {
  const url = await createQueue(bench, `bench-many-${crypto.randomUUID().slice(0, 8)}`);
  await fill(bench, url, jobs, 10);
  const child = spawnSqsrun(bench, [
    "-q",
    url,
    "--exec",
    "sleep",
    "-c",
    String(jobs),
    "-t",
    "6",
    "-e",
    "3",
    "-o",
    "/dev/null",
    "--",
    "12",
  ]);
  try {
    return await sampleUsage(child.pid, 4_000, 6);
  } finally {
    await stop(child);
    await bench.client.send(new DeleteQueueCommand({ QueueUrl: url })).catch(() => {});
  }
}

/** Throughput of `--run` with a module whose `run` does nothing, per concurrency. */
async function modules(bench: Bench, runs: number, count: number): Promise<[number, number][]> {
  const module = join(bench.dir, "noop_job.ts");
  await Deno.writeTextFile(module, "export function run(_body: string): void {}\n");
  const rows: [number, number][] = [];
  for (const concurrency of [1, 10, 50]) {
    const figures: RunFigures[] = [];
    for (let run = 0; run < runs; run++) {
      figures.push(
        await timeDrain(
          bench,
          count,
          100,
          (url) => spawnSqsrun(bench, drainArgs(url, module, concurrency, "--run")),
        ),
      );
    }
    const rate = median(figures.map((f) => f.messagesPerSecond));
    console.error(`--run no-op module -c ${concurrency}: ${rate.toFixed(0)}/s`);
    rows.push([concurrency, rate]);
  }
  return rows;
}

/** S3 mode: `objects` objects of `bytes` each, one event message per object, job reads all. */
async function s3Mode(
  bench: Bench,
  objects: number,
  bytes: number,
  concurrency: number,
): Promise<RunFigures & { repeats: number }> {
  const s3 = new S3Client({
    region: "us-east-1",
    endpoint: bench.motoUrl,
    forcePathStyle: true,
    credentials: { accessKeyId: "bench", secretAccessKey: "bench" },
  });
  const sqs = benchSqsClient(bench.motoUrl);
  const bucket = `bench-${crypto.randomUUID().slice(0, 8)}`;
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  const url = (await sqs.send(new CreateQueueCommand({ QueueName: bucket }))).QueueUrl!;
  try {
    const small = new Uint8Array(bytes).fill(120);
    // Large objects go up in parts, so the benchmark itself never holds one whole.
    const upload = (key: string) =>
      bytes > 16 * 1024 * 1024
        ? uploadLargeObject(s3, bucket, key, bytes)
        : s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: small }));
    let next = 0;
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next < objects) await upload(`object-${next++}`);
    }));
    for (let start = 0; start < objects; start += 10) {
      await sqs.send(
        new SendMessageBatchCommand({
          QueueUrl: url,
          Entries: Array.from({ length: Math.min(10, objects - start) }, (_, i) => ({
            Id: String(i),
            MessageBody: JSON.stringify({
              Records: [{
                eventName: "ObjectCreated:Put",
                s3: {
                  bucket: { name: bucket },
                  object: { key: `object-${start + i}`, size: bytes },
                },
              }],
            }),
          })),
        }),
      );
    }
    const logPath = join(bench.dir, `${bucket}.log`);
    const started = performance.now();
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        ...runtimeFlags(),
        "--quiet",
        MAIN,
        "-q",
        url,
        "--s3",
        "--shell",
        "--exec",
        "cat > /dev/null",
        "-c",
        String(concurrency),
        "--wait",
        "1",
        "-o",
        logPath,
      ],
      env: { ...bench.env, AWS_ENDPOINT_URL: bench.motoUrl },
      stdin: "null",
      stdout: "null",
      stderr: "inherit",
    }).spawn();
    const figures = await watchDrain(child, started, objects, () => remaining(sqs, url));
    // A missing object also empties the queue: count the objects whose job really ran.
    // SQS delivers at least once, and moto loses acknowledged deletes under
    // concurrent calls (F10 in docs/reliability.md): a second run is reported, not fatal.
    const finished = (await Deno.readTextFile(logPath)).split("\n")
      .filter((line) => line.includes('"msg":"job finished"'))
      .map((line) => JSON.parse(line))
      .map((line) => String(line.s3_key ?? line.message_id));
    const ran = new Set(finished).size;
    if (ran !== objects) throw new Error(`S3 mode ran jobs for ${ran} of ${objects} objects`);
    if (finished.length > ran) {
      console.error(`bench: S3 mode ran ${finished.length - ran} object(s) more than once`);
    }
    return { ...figures, repeats: finished.length - ran };
  } finally {
    s3.destroy();
    sqs.destroy();
  }
}

async function commandLine(program: string, args: string[]): Promise<string> {
  try {
    const output = await new Deno.Command(program, { args, stdout: "piped", stderr: "piped" })
      .output();
    return new TextDecoder().decode(output.stdout).trim().split("\n")[0];
  } catch {
    return "unknown";
  }
}

/** The Go toolchain and SDK versions of the Go lean loop, or why it was skipped. */
async function goLeanVersions(goLean: Bench["goLean"]): Promise<string> {
  if ("skipped" in goLean) return `- Go lean loop: skipped (${goLean.skipped})`;
  const goMod = await Deno.readTextFile(join(GO_LEAN_DIR, "go.mod")).catch(() => "");
  const sdk = (module: string) =>
    new RegExp(`github\\.com/aws/aws-sdk-go-v2${module} (v\\S+)`).exec(goMod)?.[1] ?? "unknown";
  return `- Go lean loop: ${goLean.version}; aws-sdk-go-v2 ${sdk("")}, service/sqs ${
    sdk("/service/sqs")
  }`;
}

async function machine(): Promise<string[]> {
  const cpu = /model name\s*:\s*(.+)/.exec(await Deno.readTextFile("/proc/cpuinfo"))?.[1] ??
    "unknown";
  const memory = Math.round(Deno.systemMemoryInfo().total / 2 ** 30);
  return [
    `- CPU: ${cpu}, ${navigator.hardwareConcurrency} cores; memory ${memory} GiB; ${Deno.build.os}/${Deno.build.arch}`,
    `- Deno ${Deno.version.deno} (V8 ${Deno.version.v8}); sqsrun ${meta.version}`,
    `- SQS: ElasticMQ 1.6.14 on ${
      await commandLine("java", ["-version"]) || "Java"
    } (same machine, loopback)`,
  ];
}

function verdict(met: boolean): string {
  return met ? "met" : "**missed**";
}

function cell(row: ThroughputRow): string {
  return `${row.job} at -c ${row.concurrency}`;
}

/**
 * The issue's targets, each with the figures it was judged from and whether it is met;
 * when a throughput target is missed, what sqsrun does per job that the loops do not.
 */
function targetLines(
  rows: ThroughputRow[],
  goLean: Bench["goLean"],
  idle: { rssMiB: number; baselineRssMiB: number },
): string[] {
  const lines: string[] = [];
  let throughputMissed = false;
  for (const [concurrency, target] of [[1, 0.8], [10, 0.9], [50, 0.9]] as const) {
    const row = rows.find((row) => row.job === "`/bin/true`" && row.concurrency === concurrency)!;
    const head = `- \`--exec /bin/true\` at -c ${concurrency} ≥ ${
      fmt(target, 1)
    } × the Go lean loop`;
    if (!row.go) {
      lines.push(`${head}: not measured, the Go lean loop was skipped (${skipReason(goLean)}).`);
      continue;
    }
    const ratio = row.sqsrun.rate / row.go.rate;
    throughputMissed ||= ratio < target;
    lines.push(
      `${head}: ${fmt(ratio, 2)} (run pairs ${range(row.goRatioRange!)}), ${
        verdict(ratio >= target)
      }; the TS baseline itself reached ${fmt(row.baseline.rate / row.go.rate, 2)} of it.`,
    );
  }
  const tsRatios = rows.map((row) => ({ row, ratio: row.sqsrun.rate / row.baseline.rate }));
  const tsMissed = tsRatios.filter(({ ratio }) => ratio < 1);
  const lowest = tsRatios.reduce((a, b) => (b.ratio < a.ratio ? b : a));
  throughputMissed ||= tsMissed.length > 0;
  lines.push(
    "- Throughput ≥ 1.0 × the TS baseline in every cell: " +
      (tsMissed.length === 0
        ? `lowest ${fmt(lowest.ratio, 2)} (${cell(lowest.row)}), met.`
        : `below in ${
          tsMissed.map(({ row, ratio }) => `${cell(row)} (${fmt(ratio, 2)})`).join(", ")
        }; **missed**.`),
  );
  const at50 = rows.filter((row) => row.concurrency === 50);
  lines.push(
    "- Peak RSS at -c 50 at most the TS baseline's: " +
      at50.map((row) => `${row.job} ${fmt(row.sqsrun.rss)} vs ${fmt(row.baseline.rss)} MiB`)
        .join(", ") +
      `, ${verdict(at50.every((row) => row.sqsrun.rss <= row.baseline.rss))}.`,
  );
  lines.push(
    `- Idle RSS at most 50 MiB: ${fmt(idle.rssMiB)} MiB, ${verdict(idle.rssMiB <= 50)}; ` +
      `the TS baseline idling holds ${fmt(idle.baselineRssMiB)} MiB.`,
  );
  const cpuRatios = rows.map((row) => ({ row, ratio: row.sqsrun.cpu / row.baseline.cpu }));
  const cpuMissed = cpuRatios.filter(({ ratio }) => ratio > 1.2);
  const highest = cpuRatios.reduce((a, b) => (b.ratio > a.ratio ? b : a));
  lines.push(
    "- Worker CPU per message at most 1.2 × the TS baseline's (the process itself, not its jobs): " +
      (cpuMissed.length === 0
        ? `highest ${fmt(highest.ratio, 2)} × (${cell(highest.row)}), met.`
        : `above in ${
          cpuMissed.map(({ row, ratio }) => `${cell(row)} (${fmt(ratio, 2)} ×)`).join(", ")
        }; **missed**.`),
  );
  if (!throughputMissed) return lines;
  return [
    ...lines,
    "",
    "What sqsrun does per job that the loops do not, with its cost on this machine:",
    "",
    "- It streams the job's stdout and stderr into its log: two more pipes per job, read through",
    "  Deno's streams. Turning the capture off (an experiment, not an option) took the worker's own",
    "  CPU from about 0.69 to 0.55 ms per job at `-c 50` and the rate from about 975 to 1,100-1,140/s.",
    "- It runs each job in a session of its own (the helper's exec, about 0.04 ms), kills the job's",
    "  group when the job ends, tells the watchdog about it (coalesced: the watchdog `sh` used 20 ms",
    "  of CPU for 3,000 jobs at `-c 50`, not in the columns above), tracks its visibility and writes",
    "  two log lines per job, their writes coalesced (change 7 above).",
    "- On a 2-core machine shared with the SQS emulator (a JVM) and the jobs, the CPU per message is",
    "  the throughput: the cells where the jobs run back to back are bound by it. The figures compare",
    "  the loops side by side; they are not absolute capacities.",
    "",
    "Where the remaining gap to the Go loops is: the TS lean loops do nothing but what the Go loops",
    "do, on Deno with the AWS SDK for JavaScript, and they reach only the fraction of the Go loops",
    "named after each target above. That part of the gap is the runtime's and the SDK's (the",
    "design keeps both): one thread runs every SDK call's middleware, signing and JSON, every",
    "`fetch` and every spawn, where Go spreads the same work over both cores at a fifth of the CPU",
    "per message. Only the rest, sqsrun against its TS baseline, is sqsrun's own: the supervision",
    "above. The same holds for memory: the Resources table shows Deno alone and the TS baseline",
    "idling (the SQS client long-polling) beside sqsrun idle.",
  ];
}

function skipReason(goLean: Bench["goLean"]): string {
  return "skipped" in goLean ? goLean.skipped : "";
}

function range([low, high]: [number, number]): string {
  return `${fmt(low, 2)}-${fmt(high, 2)}`;
}

function fmt(value: number, digits = 0): string {
  return value.toFixed(digits);
}

/** One `--post` row: sqsrun and the Go lean POST loop delivering to the same trivial app. */
interface PostRow {
  concurrency: number;
  sqsrun: SideFigures;
  /** The TS lean loop's `--post` mode: the same runtime and SDK, nothing else. */
  ts: SideFigures;
  tsRatioRange: [number, number];
  /** The Go lean loop's `-post` mode; `null` when it was skipped. */
  go: SideFigures | null;
  goRatioRange: [number, number] | null;
  /** CPU ms per message of the web app while sqsrun delivered to it. */
  appCpu: number;
}

/**
 * `--post` throughput: a trivial web app (scripts/bench/post_app.ts, Deno.serve in a
 * process of its own) takes every message; sqsrun `--post`, the TS lean loop's
 * `--post` mode and the Go lean loop's `-post` mode deliver to it in turns, at
 * -c 1, 10 and 50.
 */
async function postThroughput(bench: Bench, runs: number, count: number): Promise<PostRow[]> {
  const portFile = join(bench.dir, "post_app.port");
  const app = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", POST_APP, portFile],
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const rows: PostRow[] = [];
  try {
    let port = "";
    for (let i = 0; i < 100 && port === ""; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      port = await Deno.readTextFile(portFile).catch(() => "");
    }
    if (port === "") throw new Error("the --post bench app did not start");
    const appUrl = `http://127.0.0.1:${port}/jobs`;
    const goLean = "path" in bench.goLean ? bench.goLean.path : null;
    for (const concurrency of [1, 10, 50]) {
      const ours: RunFigures[] = [];
      const leans: RunFigures[] = [];
      const gos: RunFigures[] = [];
      const appCpu: number[] = [];
      const sides = [
        {
          figures: ours,
          spawn: (url: string) =>
            spawnSqsrun(bench, [
              "-q",
              url,
              "--post",
              appUrl,
              "-c",
              String(concurrency),
              "--wait",
              "1",
              "-o",
              "/dev/null",
            ]),
        },
        {
          figures: leans,
          spawn: (url: string) =>
            spawnBaseline(bench, ["--post", appUrl, url, String(concurrency)]),
        },
        ...(goLean
          ? [{
            figures: gos,
            spawn: (url: string) =>
              spawnGoLean(goLean, bench, ["-post", appUrl, url, String(concurrency)]),
          }]
          : []),
      ];
      for (let run = 0; run < runs; run++) {
        for (let i = 0; i < sides.length; i++) {
          const side = sides[(run + i) % sides.length];
          const before = processUsage(app.pid).cpuSeconds;
          side.figures.push(await timeDrain(bench, count, 100, side.spawn));
          if (side.figures === ours) {
            appCpu.push((processUsage(app.pid).cpuSeconds - before) / count * 1000);
          }
        }
      }
      const row: PostRow = {
        concurrency,
        sqsrun: sideFigures(ours, count),
        ts: sideFigures(leans, count),
        tsRatioRange: pairRange(ours, leans),
        go: goLean ? sideFigures(gos, count) : null,
        goRatioRange: goLean ? pairRange(ours, gos) : null,
        appCpu: median(appCpu),
      };
      console.error(
        `--post -c ${concurrency}: sqsrun ${fmt(row.sqsrun.rate)}/s, TS ${fmt(row.ts.rate)}/s` +
          (row.go
            ? `, Go ${fmt(row.go.rate)}/s, ratio ${fmt(row.sqsrun.rate / row.go.rate, 2)}`
            : ", Go skipped"),
      );
      rows.push(row);
    }
  } finally {
    await stop(app);
  }
  return rows;
}

/** The report's `--post` section: the table, and the targets at -c 10 and 50. */
function postSection(rows: PostRow[], goLean: Bench["goLean"]): string[] {
  const targets = rows.filter((row) => row.concurrency >= 10).map((row) => {
    const head = `- \`--post\` at -c ${row.concurrency} ≥ 0.9 × the Go lean POST loop`;
    if (!row.go) {
      return `${head}: not measured, the Go lean loop was skipped (${skipReason(goLean)}).`;
    }
    const ratio = row.sqsrun.rate / row.go.rate;
    return `${head}: ${fmt(ratio, 2)} (run pairs ${range(row.goRatioRange!)}), ${
      verdict(ratio >= 0.9)
    }; the TS lean POST loop itself reached ${fmt(row.ts.rate / row.go.rate, 2)} of it.`;
  });
  const skipped = (text: string | null | undefined) => text ?? "skipped";
  return [
    "## `--post` to a web app (messages/s)",
    "",
    "A trivial app (`scripts/bench/post_app.ts`: Deno.serve in a process of its own, reading each",
    "body and answering 200) takes every message; sqsrun `--post URL` (`--wait 1 -o /dev/null`), the",
    "TS lean loop's `--post` mode (`scripts/bench/baseline.ts`: one receive loop per request in",
    "flight, receive(10) -> `fetch` each -> delete-batch, the same runtime and SDK as sqsrun and",
    "nothing else) and the Go lean loop's `-post` mode (the same loop in Go, one keep-alive",
    "`http.Client`) deliver to it in turns. The app's CPU per message shows it is not the limit.",
    "",
    "| concurrency | sqsrun `--post` | TS lean POST loop | Go lean POST loop | ratio vs TS | run pairs vs TS | ratio vs Go | run pairs vs Go | TS lean vs Go | CPU ms/msg: sqsrun | TS lean | Go | the app | peak RSS MiB: sqsrun | TS lean | Go |",
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ...rows.map((row) => {
      const go = row.go;
      return `| ${row.concurrency} | ${fmt(row.sqsrun.rate)} | ${fmt(row.ts.rate)} | ${
        skipped(go && fmt(go.rate))
      } | ${fmt(row.sqsrun.rate / row.ts.rate, 2)} | ${range(row.tsRatioRange)} | ` +
        `${skipped(go && fmt(row.sqsrun.rate / go.rate, 2))} | ` +
        `${skipped(row.goRatioRange ? range(row.goRatioRange) : undefined)} | ` +
        `${skipped(go && fmt(row.ts.rate / go.rate, 2))} | ${fmt(row.sqsrun.cpu, 2)} | ` +
        `${fmt(row.ts.cpu, 2)} | ${skipped(go && fmt(go.cpu, 2))} | ${fmt(row.appCpu, 2)} | ` +
        `${fmt(row.sqsrun.rss)} | ${fmt(row.ts.rss)} | ${skipped(go && fmt(go.rss))} |`;
    }),
    "",
    ...targets,
    "",
  ];
}

async function main(): Promise<void> {
  const flags = parseArgs({
    args: Deno.args,
    options: {
      quick: { type: "boolean", default: false },
      runs: { type: "string" },
      out: { type: "string", default: join(PROJECT_ROOT, "docs", "benchmarks.md") },
    },
  });
  const quick = flags.values.quick!;
  const runs = Number(flags.values.runs ?? (quick ? 1 : 3));
  const count = quick ? 500 : 5_000;
  const state = await startLocalAws({ stateDir: join(PROJECT_ROOT, ".cache", "bench") });
  const dir = await Deno.makeTempDir({ prefix: "sqsrun-bench-" });
  const env = {
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    HOME: Deno.env.get("HOME") ?? dir,
    AWS_ACCESS_KEY_ID: "bench",
    AWS_SECRET_ACCESS_KEY: "bench",
    AWS_REGION: "us-east-1",
    AWS_ENDPOINT_URL: state.elasticmq.url,
  };
  const client = benchSqsClient(state.elasticmq.url);
  try {
    const goLean = await buildGoLean(dir);
    if ("skipped" in goLean) console.error(`bench: Go lean loop skipped: ${goLean.skipped}`);
    const bench: Bench = { client, env, dir, quick, motoUrl: state.moto.url, goLean };
    const started = performance.now();
    const rows = await throughput(bench, runs, count);
    const moduleRows = await modules(bench, runs, count);
    const lambdaOptions = {
      dir,
      runs,
      // More messages: the handlers' runs are short, and the start-up is in the time.
      count: Math.max(count * 2, 3_000),
      slowCount: count / 5,
      drain: async (n: number, args: (url: string) => string[]) =>
        (await timeDrain(bench, n, 100, (url) => spawnSqsrun(bench, args(url)))).messagesPerSecond,
    };
    const lambda = await lambdaBench(lambdaOptions);
    const postRows = await postThroughput(bench, runs, count);
    const smallCount = quick ? 200 : 1_000;
    const small = await s3Mode(bench, smallCount, 10 * 1024, 10);
    console.error(
      `S3 small objects: ${fmt(small.messagesPerSecond)}/s, ${fmt(small.peakRssMiB)} MiB`,
    );
    const largeBytes = (quick ? 20 : 100) * 1024 * 1024;
    const largeCount = quick ? 3 : 10;
    const large = await s3Mode(bench, largeCount, largeBytes, 2);
    console.error(
      `S3 large objects: ${fmt(large.seconds, 1)} s, ${fmt(large.peakRssMiB)} MiB peak`,
    );
    const lat = await latency(bench, quick ? 50 : 500);
    console.error(`latency p50 ${lat.p50} ms, p99 ${lat.p99} ms`);
    const rest = await idle(bench, quick ? 10 : 60);
    console.error(`idle: ${fmt(rest.cpuPercent, 2)}% CPU, ${fmt(rest.rssMiB)} MiB`);
    const many = await manyJobs(bench, quick ? 100 : 200);
    console.error(
      `${quick ? 100 : 200} jobs: ${fmt(many.rssMiB)} MiB, ${fmt(many.cpuPercent, 1)}% CPU`,
    );
    const lateCount = quick ? 400 : 1_500;
    const late = await extensionLateness(bench, lateCount);
    const lateMain = await extensionLateness(bench, lateCount, { SQSRUN_SPAWNER: "main" });
    for (const [where, figures] of [["threads", late], ["main", lateMain]] as const) {
      console.error(
        `extension lateness (${where}): ${figures.calls} calls at ${
          fmt(figures.startsPerSecond)
        } starts/s, ${fmt(figures.within100ms * 100, 1)}% within 100 ms`,
      );
    }
    const spawnerRows = await spawnerComparison(bench, runs, count);
    const minutes = (performance.now() - started) / 60_000;
    const report = [
      "# Benchmarks",
      "",
      `Written by \`deno task bench${quick ? " --quick" : ""}\` on ${
        new Date().toISOString().slice(0, 10)
      }` +
      ` in ${
        fmt(minutes, 1)
      } minutes. Rerun: \`deno task bench\` (full) or \`deno task bench --quick\`.`,
      "",
      "## Machine and versions",
      "",
      ...(await machine()),
      await goLeanVersions(goLean),
      "",
      "## Method",
      "",
      `- Throughput: a queue is filled with ${count} messages, then one process is started and timed until`,
      "  the queue is empty (polled every 100 ms). sqsrun runs as the compiled binary would",
      "  (`deno run` with the baked permissions), `--wait 1 -o /dev/null`. The TS baseline",
      "  (`scripts/bench/baseline.ts`) does only receive(10) -> spawn -> delete-batch with the same SDK:",
      "  no visibility extension, no kill timer, no process group, no output capture, no retries, no",
      "  logs. It holds 10 messages even at concurrency 1; sqsrun runs with its defaults, where",
      "  `--prefetch auto` holds at most one batch ahead, and only while jobs are short.",
      "- The Go lean loop (`scripts/bench/go_lean`, aws-sdk-go-v2, built by this script with `go build`",
      "  when `go` is on PATH): N goroutines for concurrency N, each one receive(10, wait 1 s) -> one",
      "  `exec.Command` per message in turn (a process group of its own, the body on stdin, stdout and",
      "  stderr to /dev/null) -> delete-batch of the successes; nothing else. It too holds up to 10",
      "  messages per goroutine; it keeps an idle connection per goroutine.",
      `- ${runs} run(s) per cell, medians; the sides rotate who goes first. \"Run pairs\" is the lowest`,
      "  and highest ratio of one sqsrun run to the TS baseline's (or the Go loop's) run of the same",
      "  round: the noise. A lean loop holds what it received and extends nothing, so a receive",
      "  answer lost on the way (the Go SDK's `failed to discard remaining HTTP response body` warnings",
      "  on stderr) leaves its messages invisible until the visibility timeout (30 s): that run is",
      "  slow, its run pairs spread far above 1, and the median of three may be one of them.",
      "- Latency: an idle worker (long polling, `--wait 20`); messages are sent one by one 25 ms apart; the",
      "  job records its start time; latency = start − SQS `SentTimestamp`.",
      "- Resources: `/proc/<pid>/stat` (utime+stime) and `/proc/<pid>/status` (VmRSS, VmHWM) of the",
      '  worker process itself; "its jobs" is the CPU of the children it reaped (cutime+cstime).',
      "",
      "## Throughput (messages/s)",
      "",
      "| job | concurrency | sqsrun | TS baseline | Go lean loop | ratio vs TS | run pairs vs TS | ratio vs Go | run pairs vs Go | CPU ms/msg: sqsrun, its jobs | TS baseline, its jobs | Go, its jobs | peak RSS MiB: sqsrun | TS baseline | Go |",
      "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
      ...rows.map((row) => {
        const cpu = (side: SideFigures) => `${fmt(side.cpu, 2)}, ${fmt(side.jobCpu, 2)}`;
        const go = row.go;
        return `| ${row.job} | ${row.concurrency} | ${fmt(row.sqsrun.rate)} | ` +
          `${fmt(row.baseline.rate)} | ${go ? fmt(go.rate) : "skipped"} | ` +
          `${fmt(row.sqsrun.rate / row.baseline.rate, 2)} | ${range(row.ratioRange)} | ` +
          `${go ? fmt(row.sqsrun.rate / go.rate, 2) : "skipped"} | ` +
          `${row.goRatioRange ? range(row.goRatioRange) : "skipped"} | ` +
          `${cpu(row.sqsrun)} | ${cpu(row.baseline)} | ${go ? cpu(go) : "skipped"} | ` +
          `${fmt(row.sqsrun.rss)} | ${fmt(row.baseline.rss)} | ${go ? fmt(go.rss) : "skipped"} |`;
      }),
      "",
      ("skipped" in goLean ? `The Go lean loop columns were skipped: ${goLean.skipped}. ` : "") +
      "Targets: see [Targets](#targets).",
      "",
      "## `--run` modules (messages/s, a `run` that does nothing)",
      "",
      "| concurrency | `--run` | `--exec /bin/true` | ratio |",
      "| ---: | ---: | ---: | ---: |",
      ...moduleRows.map(([concurrency, rate]) => {
        const exec = rows.find((row) => row.concurrency === concurrency)!.sqsrun.rate;
        return `| ${concurrency} | ${fmt(rate)} | ${fmt(exec)} | ${fmt(rate / exec, 2)} |`;
      }),
      "",
      ...lambdaSection(lambda, lambdaOptions),
      ...postSection(postRows, goLean),
      "## S3 mode (moto: SQS and S3; job `cat > /dev/null` through `--shell`)",
      "",
      "| objects | size | concurrency | seconds | objects/s | MB/s | worker CPU ms/object | worker peak RSS MiB | objects run twice |",
      "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
      `| ${smallCount} | 10 KB | 10 | ${fmt(small.seconds, 1)} | ${
        fmt(small.messagesPerSecond)
      } | ${fmt((small.messagesPerSecond * 10 * 1024) / 1e6, 1)} | ${
        fmt(small.cpuSeconds / smallCount * 1000, 2)
      } | ${fmt(small.peakRssMiB)} | ${small.repeats} |`,
      `| ${largeCount} | ${largeBytes / 1024 / 1024} MiB | 2 | ${fmt(large.seconds, 1)} | ${
        fmt(large.messagesPerSecond, 2)
      } | ${fmt((largeCount * largeBytes) / large.seconds / 1e6)} | ${
        fmt(large.cpuSeconds / largeCount * 1000, 1)
      } | ${fmt(large.peakRssMiB)} | ${large.repeats} |`,
      "",
      "Peak memory must stay flat: the object is streamed to the job, never held whole. The CPU is",
      "the worker's own, start-up included. An object run twice is moto's: traced once (1,000 objects,",
      "9 run twice), every delete of a first run had been sent and acknowledged, none failed; moto",
      "loses acknowledged deletes under concurrent calls (finding F10 in [reliability](reliability.md)).",
      "",
      "## Where the time goes, and what was changed",
      "",
      "`deno run -A scripts/bench/profile.ts ENDPOINT` samples the worker with the V8 inspector while",
      "it runs `/bin/true` jobs at `-c 10`; `deno run --cpu-prof` gives the same for the baseline.",
      "Changes made from what the profiles and the CPU columns showed, in order:",
      "",
      "1. A `detached` spawn forks the whole worker to call setsid() in the child: 62 % of the main",
      "   thread. Jobs then started through util-linux `setsid` (fast spawn path, 161 -> 290 jobs/s).",
      "2. That `setsid` costs one more dynamically linked exec per job: 0.75 ms of CPU on this",
      "   machine, as much as the job itself (the jobs' CPU column doubled). sqsrun now writes a",
      "   300-byte static helper (setsid + execve, `scripts/session_helper/*.s`) at start-up and",
      "   starts jobs through it: the jobs' CPU is back to the baseline's, and `-c 10` went from 0.6",
      "   to 0.9-1.3 of the baseline.",
      "3. At `-c 1` sqsrun received one message per job (one receive round trip per job, 0.46 of the",
      "   baseline). `--prefetch auto` now holds up to one batch ahead while jobs are short (about one",
      "   second of work, by the recent run times or the running jobs' time so far), so short jobs",
      "   run back to back; long jobs hold nothing. A held message's visibility is extended like a",
      "   running one's.",
      "4. Earlier: a standard-queue message frees its slot as soon as its job ends (the delete is",
      "   batched and finishes in the background; shutdown waits for it); slots freeing within 20 ms",
      "   share one receive call; deletes and visibility changes go out in batches of ten; one timer",
      "   serves every message's visibility; no busy waits.",
      "5. At `-c 50` `op_spawn_child` was 54 % of the main thread's samples and the main thread was",
      "   idle 2.8 % of the time: every timer and SQS call waited behind the spawns. Jobs now start on a",
      "   spawner thread (`src/runners/process/spawner.ts`): a Web Worker spawns, writes the watchdog's",
      "   line, the go byte and the body, reads the output (moved to the main thread's line splitter",
      "   chunk by chunk, with credits for back-pressure) and reaps. The profile at `-c 10` afterwards:",
      '   the main thread idle about 42 % of the time. The tables "Jobs started off the main thread"',
      '   and "Visibility extensions while jobs start" below measure both ways in this run.',
      "6. Each free slot ended an internal wait with `AbortController.abort()`, which builds a",
      "   `DOMException` with a stack: 1.5 % of the main thread's samples. Those waits end with a plain",
      "   reason now.",
      "7. The log wrote each task's lines as soon as the task ended: at a thousand messages a second",
      "   that was a write per line or two, `op_write` about 6 % of the main thread's samples in a",
      "   `--post` profile. A line after an idle spell now waits 5 ms for others to share its write.",
      "   A/B, `--post` at `-c 10`, 10,000 messages, three alternating pairs: 786-863 -> 928-986",
      "   messages/s, worker CPU 0.96-1.02 -> 0.85-0.92 ms per message.",
      "8. Each of a job's two output pipes was read into a new 64 KiB buffer: 128 KiB allocated and",
      "   zeroed per message, though most jobs write nothing. A buffer now goes back to its thread's",
      "   idle ones (at most 32) at the end of its stream, for the next pipe.",
      "9. The young generation's semi-spaces are capped at 4 MiB instead of 8 (`RUNTIME_V8_FLAGS` in",
      "   `src/permissions.ts`; the worker has two isolates, the main thread's and the spawner's).",
      "   A/B of 8 and 9 together (5,000 `/bin/true` messages at `-c 50`, three alternating runs",
      "   each): 403-414 -> 399-431 messages/s (medians 411 -> 430), worker CPU 2.21-2.29 -> 2.10-2.24",
      "   ms per message, peak RSS 208-220 -> 182-183 MiB; the spawner thread's CPU 1.03-1.09 ->",
      "   0.95-1.02 ms per message. The flag alone, in its own A/B: 203-213 -> 184-192 MiB.",
      "10. Tried and not kept: the SDK's `fetch` HTTP handler instead of `node:http` (three alternating",
      "    pairs, 892-1005 against 932-1011 messages/s: no winner); fewer `--post` headers and no",
      "    abort signal per request (within the noise); V8 flags for idle memory",
      "    (`--max-semi-space-size=1`, `--optimize-for-size`: 64-66 MiB against 68 MiB without them, for",
      "    a bare SDK receive loop); asking for no message attributes, and `--log-level warn` (each",
      "    within 0.03 ms per message of the worker's CPU).",
      "",
      "### Where sqsrun's CPU goes, against the TS baseline",
      "",
      "CPU per message of each thread (`/proc/PID/task/*/stat`), 5,000 `/bin/true` messages at `-c 50`",
      "on ElasticMQ, medians of three runs of a separate A/B on the day of the change (so the rates are",
      "not this run's); then what switching off one piece at a time in a scratch copy saved:",
      "",
      "| | main thread | spawner thread | V8 GC threads | messages/s |",
      "| --- | ---: | ---: | ---: | ---: |",
      "| TS baseline (spawns on its main thread) | 0.85-0.88 | - | 0.11-0.12 | 687-708 |",
      "| sqsrun | 0.89-0.95 | 0.95-1.02 | 0.24-0.26 | 399-431 |",
      "| sqsrun, `--run` of a module that does nothing (its 50 module threads: 1.1 more) | 0.53 | - | 0.23-0.24 | 698-726 |",
      "| TS baseline, no process at all (receive and delete only) | 0.39-0.47 | - | 0.11-0.13 | 1636-1965 |",
      "",
      "- The job's output pipes (read through Deno's streams, to log each line): about 0.2 ms per",
      "  message on the spawner thread after change 8 (0.25 before it), and 20-25 MiB of peak RSS.",
      "  The baseline gives its jobs no output pipes.",
      "- Moving each job between the threads (a request, a `spawned` and an `exited` message): about",
      "  0.12 ms of CPU per job in a bare `postMessage` round trip of the same shapes (0.08 when ten",
      "  go in one message).",
      "- The watchdog's `+` line and the group kill at the job's end: about 0.03 ms; the job's",
      "  environment and the write at /proc/PID/fd/0: within the noise.",
      "- The main thread spends about 0.45 ms per message beyond the SQS calls (a module runner's",
      "  main thread spends 0.1): the spawner's messages, the job's promise chain, visibility",
      "  tracking, the log line per job; no one frame of it is above 1 % of the thread's samples.",
      "- The second isolate and its allocations double the GC threads' CPU.",
      "",
      "## Latency, send to job start",
      "",
      `| messages | p50 ms | p99 ms |`,
      "| ---: | ---: | ---: |",
      `| ${quick ? 50 : 500} | ${lat.p50} | ${lat.p99} |`,
      "",
      "Target: p50 < 50 ms with long polling (the Ruby sqsrun polled every second: ~500 ms on average).",
      "",
      "## Jobs started off the main thread",
      "",
      `\`--exec /bin/true\`, ${count} messages, ${runs} run(s) per cell, the two alternating: jobs started`,
      "on spawner threads (the default on Linux) against the main thread (`SQSRUN_SPAWNER=main`, the",
      "path before this change and the one streamed S3 bodies and other systems take).",
      "",
      "| concurrency | spawner threads | main thread | ratio | run pairs | worker CPU ms/msg: threads, main | peak RSS MiB: threads, main |",
      "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
      ...spawnerRows.map((row) =>
        `| ${row.concurrency} | ${fmt(row.thread)} | ${fmt(row.main)} | ${
          fmt(row.thread / row.main, 2)
        } | ${fmt(row.ratioRange[0], 2)}-${fmt(row.ratioRange[1], 2)} | ${fmt(row.threadCpu, 2)}, ${
          fmt(row.mainCpu, 2)
        } | ${fmt(row.threadRss)}, ${fmt(row.mainRss)} |`
      ),
      "",
      "## Visibility extensions while jobs start",
      "",
      `${
        quick ? 400 : 1_500
      } jobs of 1.5 s at \`-c 80 -t 2 -e 1\`: each message is extended once, about a`,
      "second after its job started, while others start. From the worker's",
      "`sqsrun_visibility_extension_lateness_seconds` histogram (how long after it was due each call went out):",
      "",
      "| jobs start on | jobs started/s | extension calls | within 10 ms | within 100 ms | all within |",
      "| --- | ---: | ---: | ---: | ---: | ---: |",
      ...([["spawner threads", late], [
        "the main thread (`SQSRUN_SPAWNER=main`)",
        lateMain,
      ]] as const)
        .map(([where, figures]) =>
          `| ${where} | ${fmt(figures.startsPerSecond)} | ${figures.calls} | ${
            fmt(figures.within10ms * 100, 1)
          } % | ${fmt(figures.within100ms * 100, 1)} % | ${
            Number.isFinite(figures.slowestBoundMs)
              ? `${fmt(figures.slowestBoundMs)} ms`
              : "> 2.5 s"
          } |`
        ),
      "",
      `Target: every extension within 100 ms of when it is due while about 50 jobs a second start: ${
        late.calls > 0 && late.within100ms === 1 ? "met" : "**missed**"
      }.`,
      "",
      "## Resources",
      "",
      "| state | worker CPU | worker RSS MiB |",
      "| --- | ---: | ---: |",
      `| idle, ${quick ? 10 : 60} s | ${fmt(rest.cpuPercent, 2)} % | ${fmt(rest.rssMiB)} |`,
      `| the TS baseline idle (Deno and the SQS client long-polling, nothing else) | | ${
        fmt(rest.baselineRssMiB)
      } |`,
      `| Deno alone (\`deno eval\` of one timer) | | ${fmt(rest.denoRssMiB)} |`,
      `| ${quick ? 100 : 200} sleeping jobs, visibility extended every 3 s | ${
        fmt(many.cpuPercent, 1)
      } % | ${fmt(many.rssMiB)} |`,
      "",
      `Target for sleeping jobs: at most ${
        fmt(SLEEPING_JOB_CPU_TARGET * 100 * 100, 1)
      } % of a core per 100 jobs (0.001 CPU s per job-second), ` +
      (many.cpuPercent / 100 / (quick ? 100 : 200) <= SLEEPING_JOB_CPU_TARGET
        ? "met."
        : "**missed**."),
      "`deno task reliability --scenario 8` reports the same figure over a whole run.",
      "",
      "## Targets",
      "",
      "Judged from the medians above (issue 15); the run pairs show how far one round strays.",
      "",
      ...targetLines(rows, goLean, rest),
      "",
    ];
    await Deno.mkdir(join(PROJECT_ROOT, "docs"), { recursive: true });
    await Deno.writeTextFile(flags.values.out!, report.join("\n"));
    // The tables are written loosely; `deno fmt` aligns them as `deno task check` expects.
    await new Deno.Command(Deno.execPath(), { args: ["fmt", "--quiet", flags.values.out!] })
      .output();
    console.log(report.join("\n"));
  } finally {
    client.destroy();
    await stopLocalAws(state);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  try {
    await main();
  } catch (error) {
    console.error(`bench: ${error instanceof Error ? error.message : error}`);
    Deno.exit(1);
  }
}
