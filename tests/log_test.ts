/**
 * The logger without emulators: the bounded buffer between the worker and its log
 * sink (a stalled sink never blocks the caller, job output is dropped first and
 * counted, one line reports it), the flush bound of close(), write errors, the
 * file sink and SIGHUP's reopen, the rendering; and, black-box, a process whose
 * stdout (or `-o` FIFO) nobody reads keeps its timers and signals alive, and the
 * text log of a worker against the emulator.
 *
 * Every wait has a generous deadline; nothing asserts tight wall-clock times.
 */
import { deepStrictEqual, match, ok, strictEqual } from "node:assert/strict";
import {
  createLogger,
  type LogFields,
  type LoggerOptions,
  type LogSink,
  OUTPUT_STALL_MS,
} from "../src/log.ts";
import { awsEnv, sqsBackends, uniqueName } from "./support/local_aws.ts";
import { createQueue, deleteQueue, sendMessages, testClient } from "./support/sqs.ts";
import { startWorker } from "./support/worker.ts";

const decoder = new TextDecoder();

/** Resolves once `condition` holds; throws after `timeoutMs` (generous: the machine is shared). */
async function waitFor(
  what: string,
  condition: () => boolean | Promise<boolean>,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!await condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A sink whose writes hang until `release()`; keeps what it was given, in order. */
function stalledSink() {
  const chunks: string[] = [];
  let gate: PromiseWithResolvers<void> | undefined = Promise.withResolvers<void>();
  const first = Promise.withResolvers<void>();
  let closed = false;
  const state = {
    writes: 0,
    get closed() {
      return closed;
    },
    /** The first write arrived (and hangs). */
    firstWrite: first.promise,
    release() {
      gate?.resolve();
      gate = undefined;
    },
    text: () => chunks.join(""),
    lines: () => jsonLines(chunks.join("")),
    sink: {
      async write(data: Uint8Array): Promise<number> {
        state.writes++;
        const text = decoder.decode(data); // a copy: the logger reuses `data`
        first.resolve();
        if (gate) await gate.promise;
        chunks.push(text);
        return data.length;
      },
      close() {
        closed = true;
      },
    } satisfies LogSink,
  };
  return state;
}

function jsonLines(text: string): Record<string, unknown>[] {
  return text.split("\n").filter((line) => line !== "").map((line) => JSON.parse(line));
}

const DROP_MSG = "log lines dropped: the log could not keep up";

Deno.test("log: a stalled sink never blocks; job output is dropped first, then the worker's lines, counted and reported once", async () => {
  const sink = stalledSink();
  const dropped = { output: 0, worker: 0 };
  const bufferChars = 20_000;
  const log = createLogger({
    format: "json",
    sink: sink.sink,
    bufferChars,
    fields: { queue: "q" },
    onDropped: (output, worker) => {
      dropped.output += output;
      dropped.worker += worker;
    },
  });
  const job = log.with({ message_id: "m1" });
  log.info("first");
  await sink.firstWrite; // the writer now hangs on "first"

  const filler = "o".repeat(100);
  for (let i = 0; i < 1_000; i++) job.info(filler, { stream: i % 2 ? "stderr" : "stdout", seq: i });
  for (let i = 0; i < 1_000; i++) job.info("worker line", { seq: i, pad: filler });
  strictEqual(sink.writes, 1, "the logger only queued while the sink hung");

  sink.release();
  await waitFor("the drop report", () => sink.lines().some((line) => line.msg === DROP_MSG));
  await log.close();

  const lines = sink.lines();
  ok(sink.text().length <= bufferChars + 1_000, "no more than the bound was kept");
  strictEqual(lines[0].msg, "first");
  const output = lines.filter((line) => line.stream !== undefined);
  const own = lines.filter((line) => line.msg === "worker line");
  ok(output.length > 0 && output.length < 1_000, `some job output kept: ${output.length}`);
  ok(own.length > 0 && own.length < 1_000, `some worker lines kept: ${own.length}`);
  // Job output stops at half the buffer, the worker's lines go on to the full bound.
  const outputChars = output.length * (JSON.stringify(output[0]).length + 1);
  ok(outputChars <= bufferChars / 2, "job output filled no more than half");
  ok(own.length > output.length / 2, "the worker's lines had the other half");
  // In order, and what was kept is a prefix of what was logged.
  deepStrictEqual(output.map((line) => line.seq), output.map((_, i) => i));
  deepStrictEqual(own.map((line) => line.seq), own.map((_, i) => i));
  deepStrictEqual(lines.slice(1, 1 + output.length), output, "output before the worker lines");

  const reports = lines.filter((line) => line.msg === DROP_MSG);
  strictEqual(reports.length, 1, "one report");
  deepStrictEqual(reports[0], {
    ts: reports[0].ts,
    level: "warn",
    msg: DROP_MSG,
    queue: "q",
    job_output_lines: 1_000 - output.length,
    worker_lines: 1_000 - own.length,
  });
  strictEqual(lines.at(-1), reports[0], "reported after what was kept");
  deepStrictEqual(dropped, { output: 1_000 - output.length, worker: 1_000 - own.length });
  ok(sink.closed);
});

Deno.test("log: without drops there is no report, no callback; lines are batched", async () => {
  const sink = stalledSink();
  sink.release();
  let calls = 0;
  const log = createLogger({ format: "json", sink: sink.sink, onDropped: () => calls++ });
  for (let i = 0; i < 2_000; i++) log.info("line", { stream: "stdout", i });
  await log.close();
  strictEqual(sink.lines().length, 2_000);
  ok(!sink.lines().some((line) => line.msg === DROP_MSG));
  strictEqual(calls, 0);
  ok(sink.writes < 2_000, `lines are batched into fewer writes (${sink.writes})`);
});

Deno.test("log: lines logged by separate tasks a moment apart share one write", async () => {
  // One write per task was about 6 % of the main thread at a thousand jobs a second.
  const sink = stalledSink();
  sink.release();
  const log = createLogger({ format: "json", sink: sink.sink });
  for (let i = 0; i < 20; i++) {
    log.info("job finished", { i });
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  await waitFor("the lines", () => sink.lines().length === 20);
  ok(sink.writes <= 10, `20 lines from 20 tasks took ${sink.writes} writes`);
  await log.close();
  deepStrictEqual(sink.lines().map((line) => line.i), Array.from({ length: 20 }, (_, i) => i));
});

Deno.test("log: close() flushes what is buffered, in order, then closes the sink", async () => {
  const received: string[] = [];
  let closedAfter = -1;
  const sink: LogSink = {
    async write(data) {
      const text = decoder.decode(data);
      await delay(5);
      received.push(text);
      return data.length;
    },
    close() {
      closedAfter = received.length;
    },
  };
  const log = createLogger({ format: "json", sink });
  for (let i = 0; i < 50; i++) {
    log.info("line", { i });
    if (i % 10 === 0) await delay(1);
  }
  await log.close();
  deepStrictEqual(jsonLines(received.join("")).map((line) => line.i), [...Array(50).keys()]);
  strictEqual(closedAfter, received.length, "closed after the last write");
  log.info("after close"); // ignored, never throws
  strictEqual(jsonLines(received.join("")).length, 50);
});

Deno.test("log: close() on a stalled sink gives up after its bound", async () => {
  const sink = stalledSink();
  const log = createLogger({ format: "json", sink: sink.sink, closeTimeoutMs: 100 });
  log.info("stuck");
  await sink.firstWrite;
  const closed = await Promise.race([log.close().then(() => "closed"), delay(15_000)]);
  strictEqual(closed, "closed");
  ok(sink.closed, "the sink is closed all the same");
  log.error("after close");
  sink.release(); // the hung write ends late: nothing more is written
  await delay(20);
  strictEqual(sink.writes, 1);
});

Deno.test("log: short writes and failing writes: all bytes go out, retries back off instead of spinning", async () => {
  let healthy = false;
  let calls = 0;
  const bytes: number[] = [];
  const sink: LogSink = {
    write(data) {
      calls++;
      if (!healthy) return Promise.reject(new Error("No space left on device (os error 28)"));
      const n = Math.min(7, data.length); // at most 7 bytes a call
      bytes.push(...data.subarray(0, n));
      return Promise.resolve(n);
    },
  };
  const log = createLogger({ format: "text", sink, now: () => new Date(0) });
  log.info("disk full", { path: "/var/log/x.log" });
  await delay(400);
  // 50, 100, 200 ms... between attempts: a handful, not thousands.
  ok(calls >= 1 && calls <= 10, `${calls} attempts in 400 ms`);
  healthy = true;
  log.warn("ünïcode ✓");
  await waitFor("both lines", () => decoder.decode(new Uint8Array(bytes)).split("\n").length === 3);
  await log.close();
  strictEqual(
    decoder.decode(new Uint8Array(bytes)),
    "1970-01-01T00:00:00.000Z INFO  disk full path=/var/log/x.log\n" +
      "1970-01-01T00:00:00.000Z WARN  ünïcode ✓\n",
  );
});

Deno.test("log: a closed stdout (EPIPE) stops the writes; logging goes on without throwing, drops counted", async () => {
  let calls = 0;
  const sink: LogSink = {
    write() {
      calls++;
      return Promise.reject(new Deno.errors.BrokenPipe("Broken pipe (os error 32)"));
    },
  };
  const dropped = { output: 0, worker: 0 };
  const log = createLogger({
    format: "json",
    sink,
    onDropped: (output, worker) => {
      dropped.output += output;
      dropped.worker += worker;
    },
  });
  log.info("first");
  await waitFor("the first write", () => calls === 1);
  await delay(50);
  for (let i = 0; i < 100; i++) log.info("job says", { stream: "stdout" });
  for (let i = 0; i < 10; i++) log.warn("worker says");
  await delay(100);
  await log.close();
  strictEqual(calls, 1, "no write after EPIPE");
  deepStrictEqual(dropped, { output: 100, worker: 10 });
});

Deno.test("log: the file sink appends, and reopen() follows logrotate", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sqsrun-log-" });
  try {
    const path = `${dir}/worker.log`;
    await Deno.writeTextFile(path, "kept\n");
    const log = createLogger({ path, format: "json", fields: { queue: "q" } });
    log.info("before");
    await waitFor("the first line", async () => (await Deno.readTextFile(path)).includes("before"));
    await Deno.rename(path, `${path}.1`);
    log.info("still old"); // logged before the reopen: may land in either file, never lost
    log.reopen();
    await waitFor("the new file", async () => {
      try {
        await Deno.stat(path);
        return true;
      } catch {
        return false;
      }
    });
    log.info("after");
    await log.close();
    const old = await Deno.readTextFile(`${path}.1`);
    const next = await Deno.readTextFile(path);
    ok(old.startsWith("kept\n"), "appended to what was there");
    deepStrictEqual(jsonLines(old.slice(5)).map((line) => line.msg).slice(0, 1), ["before"]);
    ok(next.includes('"msg":"after"'));
    deepStrictEqual(
      jsonLines(next).filter((line) => line.msg === "log reopened").map((line) => line.path),
      [path],
      "the new file says why it begins",
    );
    ok(!old.includes('"msg":"after"'));
    strictEqual((old + next).split('"msg":"still old"').length, 2, "exactly once");
    strictEqual(jsonLines(next).at(-1)?.queue, "q");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("log: a reopen that fails keeps writing to the old file and says why", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sqsrun-log-" });
  const outside = await Deno.makeTempDir({ prefix: "sqsrun-log-kept-" });
  try {
    const path = `${dir}/sub/worker.log`;
    await Deno.mkdir(`${dir}/sub`);
    const log = createLogger({ path, format: "json" });
    log.info("before");
    await waitFor("the first line", async () => (await Deno.readTextFile(path)).includes("before"));
    // Move the file out and remove its folder: reopening the path must fail.
    await Deno.rename(path, `${outside}/worker.log`);
    await Deno.remove(`${dir}/sub`);
    log.reopen();
    log.info("after");
    await log.close();
    const lines = jsonLines(await Deno.readTextFile(`${outside}/worker.log`));
    const msgs = lines.map((line) => line.msg);
    ok(msgs.includes("cannot reopen the log"), msgs.join(", "));
    ok(msgs.includes("after"));
    strictEqual(lines.find((line) => line.msg === "cannot reopen the log")?.level, "error");
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(outside, { recursive: true });
  }
});

/**
 * The reference rendering: JSON as the logger printed it before it went
 * asynchronous; text with the message id (shortened) and the output stream
 * leading, and the base's `queue` left out unless the line gave it itself.
 */
function reference(
  format: "json" | "text",
  level: string,
  msg: string,
  base: LogFields,
  own: LogFields = {},
) {
  const ts = "2024-05-06T07:08:09.010Z";
  const fields = { ...base, ...own };
  if (format === "json") return JSON.stringify({ ts, level, msg, ...fields }) + "\n";
  let id = "";
  let tag = "";
  const extras: string[] = [];
  for (const [key, value] of Object.entries(fields)) {
    if (value === undefined || (key === "queue" && !Object.hasOwn(own, key))) continue;
    if (key === "message_id" && typeof value === "string") {
      id = value.slice(0, 8).padEnd(8) + " ";
      continue;
    }
    if (key === "stream" && typeof value === "string") {
      tag = `${value}| `;
      continue;
    }
    const text = typeof value === "string" ? value : JSON.stringify(value);
    extras.push(`${key}=${/[\s"=]/.test(text) ? JSON.stringify(text) : text}`);
  }
  return [ts, level.toUpperCase().padEnd(5), `${id}${tag}${msg}`, ...extras].join(" ") + "\n";
}

Deno.test("log: lines render as before, whatever the fields", async () => {
  const cases: { base: LogFields; fields?: LogFields; msg: string }[] = [
    { base: {}, msg: "plain" },
    { base: { queue: "https://x/q" }, fields: { stream: "stdout" }, msg: 'a "quoted"\tline' },
    {
      base: { queue: "q", message_id: "2042bd8a-d39e-41f8-b394-2ea376f176e6" },
      fields: { stream: "stderr" },
      msg: "job output",
    },
    { base: { message_id: "short" }, fields: { receive_count: 1 }, msg: "job started" },
    { base: { queue: "q" }, fields: { message_id: "a729cef6-c195" }, msg: "released" },
    {
      base: { queue: "q", message_id: "m" },
      fields: { exit_code: 0, duration_ms: 12.5 },
      msg: "m",
    },
    { base: { queue: "q" }, fields: { queue: "other", extra: undefined }, msg: "override" },
    { base: {}, fields: { msg: "field wins", ts: "x", level: "y" }, msg: "reserved" },
    { base: { msg: "base wins" }, fields: { a: 1 }, msg: "reserved base" },
    { base: { nested: { a: [1, "two"] } }, fields: { error: "x = y", empty: "" }, msg: "ünï" },
    { base: { n: null, t: true }, fields: { f: () => 1 }, msg: "odd values" },
  ];
  for (const format of ["json", "text"] as const) {
    for (const level of ["debug", "info", "warn", "error"] as const) {
      const sink = stalledSink();
      sink.release();
      const options: LoggerOptions = {
        format,
        level: "debug",
        sink: sink.sink,
        now: () => new Date("2024-05-06T07:08:09.010Z"),
      };
      const root = createLogger(options);
      const expected: string[] = [];
      for (const { base, fields, msg } of cases) {
        root.with(base)[level](msg, fields);
        expected.push(reference(format, level, msg, base, fields));
      }
      await root.close();
      strictEqual(sink.text(), expected.join(""), `${format} ${level}`);
    }
  }
});

Deno.test("log: text names the queue only where a line gives it; ids short, streams leading", async () => {
  const sink = stalledSink();
  sink.release();
  const log = createLogger({ format: "text", sink: sink.sink, now: () => new Date(0) });
  const queue = log.with({ queue: "https://sqs/1/q" });
  queue.info("worker started", { queue: "https://sqs/1/q", run: "job.ts" });
  const job = queue.with({ message_id: "2042bd8a-d39e-41f8-b394-2ea376f176e6" });
  job.info("job started", { receive_count: 1 });
  job.info("hello", { stream: "stdout" });
  queue.info("batch", { message_ids: ["2042bd8a-d39e", "f3948bfa-2a5a"] });
  await log.close();
  const ts = "1970-01-01T00:00:00.000Z";
  strictEqual(
    sink.text(),
    `${ts} INFO  worker started queue=https://sqs/1/q run=job.ts\n` +
      `${ts} INFO  2042bd8a job started receive_count=1\n` +
      `${ts} INFO  2042bd8a stdout| hello\n` +
      `${ts} INFO  batch message_ids=2042bd8a,f3948bfa\n`,
  );
});

Deno.test("log: JSON keeps the queue and the whole message id on every line", async () => {
  const sink = stalledSink();
  sink.release();
  const log = createLogger({ format: "json", sink: sink.sink });
  const id = "2042bd8a-d39e-41f8-b394-2ea376f176e6";
  const job = log.with({ queue: "q" }).with({ message_id: id });
  job.info("job started", { receive_count: 1 });
  log.with({ queue: "q" }).info("worker started", { queue: "q", run: "x" });
  await log.close();
  const [started, worker] = sink.lines();
  deepStrictEqual([started.queue, started.message_id], ["q", id]);
  deepStrictEqual(Object.keys(worker), ["ts", "level", "msg", "queue", "run"]);
});

Deno.test("log: SIGHUP on stdout still leaves a line", async () => {
  const sink = stalledSink();
  sink.release();
  const log = createLogger({ format: "json", sink: sink.sink, fields: { queue: "q" } });
  log.reopen();
  await waitFor("the line", () => sink.lines().length === 1);
  await log.close();
  deepStrictEqual(sink.lines().map((line) => [line.msg, line.queue]), [
    ["log not reopened: it goes to stdout", "q"],
  ]);
});

Deno.test("log: reportDrops() tells onDropped at once, not at its next report", async () => {
  const sink = stalledSink();
  const dropped: number[][] = [];
  const log = createLogger({
    format: "json",
    sink: sink.sink,
    bufferChars: 2_000,
    onDropped: (output, worker) => dropped.push([output, worker]),
  });
  for (let i = 0; i < 100; i++) log.info("job says something", { stream: "stdout" });
  await sink.firstWrite;
  log.reportDrops?.();
  strictEqual(dropped.length, 1);
  ok(dropped[0][0] > 0 && dropped[0][1] === 0, JSON.stringify(dropped));
  sink.release();
  await log.close();
});

Deno.test("log: lines below the level are not written", async () => {
  const sink = stalledSink();
  sink.release();
  const log = createLogger({ format: "json", level: "warn", sink: sink.sink });
  log.debug("d");
  log.info("i", { stream: "stdout" });
  log.warn("w");
  log.error("e");
  await log.close();
  deepStrictEqual(sink.lines().map((line) => line.msg), ["w", "e"]);
});

// ---------------------------------------------------------------------------
// Black box: a process that logs to stdout (or a FIFO via -o) nobody reads.

/**
 * The child: logs more job output than a pipe holds (and than half the buffer),
 * then every 20 ms says `tick N` on stderr and logs a worker line; on SIGTERM
 * says so, closes the logger and exits. With a blocking logger it never ticks.
 */
const CHILD = `
const [logModule, target, closeTimeoutMs] = Deno.args;
const { createLogger } = await import(logModule);
const encoder = new TextEncoder();
const say = (text) => Deno.stderr.writeSync(encoder.encode(text + "\\n"));
say("started");
const log = createLogger({
  format: "json",
  path: target === "stdout" ? undefined : target,
  closeTimeoutMs: Number(closeTimeoutMs),
});
const filler = "x".repeat(240);
for (let i = 0; i < 12000; i++) log.info(filler, { stream: "stdout", seq: i });
let ticks = 0;
setInterval(() => {
  ticks++;
  log.info("tick", { ticks });
  say("tick " + ticks);
}, 20);
Deno.addSignalListener("SIGTERM", async () => {
  say("SIGTERM");
  await log.close();
  say("closed");
  Deno.exit(0);
});
`;

/**
 * The module the child logs with. SQSRUN_LOG_TEST_MODULE points it at another
 * copy (e.g. the old blocking logger, to see these tests fail on it).
 */
const LOG_MODULE = Deno.env.get("SQSRUN_LOG_TEST_MODULE") ??
  new URL("../src/log.ts", import.meta.url).href;

interface Child {
  process: Deno.ChildProcess;
  /** stderr so far, line by line. */
  said: string[];
  saw(line: string): boolean;
  ticks(): number;
}

async function spawnChild(dir: string, target: string, closeTimeoutMs: number): Promise<Child> {
  const script = `${dir}/child.js`;
  await Deno.writeTextFile(script, CHILD);
  const process = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", script, LOG_MODULE, target, String(closeTimeoutMs)],
    stdin: "null",
    stdout: target === "stdout" ? "piped" : "null",
    stderr: "piped",
  }).spawn();
  const said: string[] = [];
  void (async () => {
    let rest = "";
    for await (const chunk of process.stderr.pipeThrough(new TextDecoderStream())) {
      const parts = (rest + chunk).split("\n");
      rest = parts.pop() ?? "";
      said.push(...parts);
    }
  })().catch(() => {});
  return {
    process,
    said,
    saw: (line) => said.includes(line),
    ticks: () => said.filter((line) => line.startsWith("tick ")).length,
  };
}

async function stopChild(child: Child, piped: boolean): Promise<void> {
  try {
    child.process.kill("SIGKILL");
  } catch { /* already gone */ }
  await child.process.status;
  if (piped) await child.process.stdout.cancel().catch(() => {});
}

/** Ticks and SIGTERM while nothing reads the sink; exits within close()'s bound. */
async function assertAliveWhileStalled(child: Child): Promise<void> {
  await waitFor("the child to start", () => child.saw("started"));
  await waitFor("timer ticks while the log sink is stalled", () => child.ticks() >= 25);
  child.process.kill("SIGTERM");
  await waitFor("the SIGTERM listener", () => child.saw("SIGTERM"));
  await waitFor("close() to give up on the stalled sink", () => child.saw("closed"));
  strictEqual((await child.process.status).code, 0);
}

Deno.test({
  name: "log (black box): stdout nobody reads stalls neither timers nor signals",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "sqsrun-log-" });
    const child = await spawnChild(dir, "stdout", 300);
    try {
      await assertAliveWhileStalled(child);
    } finally {
      await stopChild(child, true);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "log (black box): -o FILE on a sink that does not take writes (a FIFO nobody reads)",
  ignore: Deno.build.os === "windows",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "sqsrun-log-" });
    const fifo = `${dir}/log.fifo`;
    const made = await new Deno.Command("mkfifo", { args: [fifo] }).output();
    ok(made.success, "mkfifo");
    const child = await spawnChild(dir, fifo, 300);
    // Opened for reading (so the child's open succeeds) and never read.
    const reader = await Deno.open(fifo, { read: true });
    try {
      await assertAliveWhileStalled(child);
    } finally {
      await stopChild(child, false);
      reader.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "log (black box): once stdout is read again, lines come in order with one drop report",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "sqsrun-log-" });
    const child = await spawnChild(dir, "stdout", 60_000);
    try {
      await waitFor("the child to start", () => child.saw("started"));
      await waitFor("timer ticks while stdout is stalled", () => child.ticks() >= 10);
      child.process.kill("SIGTERM");
      await waitFor("the SIGTERM listener", () => child.saw("SIGTERM"));
      // Only now read: close() flushes what was kept, and the child exits.
      const text = await new Response(child.process.stdout).text();
      strictEqual((await child.process.status).code, 0);
      ok(child.saw("closed"));
      const lines = jsonLines(text);
      const output = lines.filter((line) => line.stream === "stdout");
      const ticks = lines.filter((line) => line.msg === "tick");
      const reports = lines.filter((line) => line.msg === DROP_MSG);
      ok(output.length > 0 && output.length < 12_000, `job output kept: ${output.length}`);
      deepStrictEqual(output.map((line) => line.seq), output.map((_, i) => i));
      ok(ticks.length >= 10, "the worker's lines during the stall were kept");
      deepStrictEqual(ticks.map((line) => line.ticks), ticks.map((_, i) => i + 1));
      strictEqual(reports.length, 1);
      strictEqual(reports[0].job_output_lines, 12_000 - output.length);
      strictEqual(reports[0].worker_lines, 0);
    } finally {
      await stopChild(child, true);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("log: outputRoom holds job output while a slow sink writes, and lets go of a stalled one", async () => {
  // A slow sink: every write takes 30 ms, but the writer makes progress.
  const written: string[] = [];
  const slow: LogSink = {
    async write(data: Uint8Array): Promise<number> {
      await new Promise((resolve) => setTimeout(resolve, 30));
      written.push(decoder.decode(data));
      return data.length;
    },
  };
  const log = createLogger({ format: "json", sink: slow, bufferChars: 20_000 });
  const job = log.with({ message_id: "m1" });
  const line = "x".repeat(500);
  let paced = 0;
  // A job that floods: its reader awaits outputRoom before each chunk, as the exec runner does.
  for (let i = 0; i < 200; i++) {
    const waiting = log.outputRoom?.();
    if (waiting) {
      paced++;
      await waiting;
    }
    job.info(line, { stream: "stdout", seq: i });
  }
  await log.close();
  const seqs = jsonLines(written.join("")).filter((l) => l.stream === "stdout").map((l) => l.seq);
  strictEqual(seqs.length, 200, "job output was dropped although the sink kept writing");
  ok(paced > 0, "the reader was never held");
  ok(!written.join("").includes(DROP_MSG));

  // A stalled sink: the reader is let go after OUTPUT_STALL_MS, and the lines are dropped.
  const sink = stalledSink();
  const stalled = createLogger({ format: "json", sink: sink.sink, bufferChars: 20_000 });
  stalled.info("first");
  await sink.firstWrite;
  for (let i = 0; i < 100; i++) stalled.info(line, { stream: "stdout" });
  const started = performance.now();
  await stalled.outputRoom?.();
  ok(performance.now() - started >= OUTPUT_STALL_MS - 50, "let go before the stall bound");
  strictEqual(stalled.outputRoom?.(), undefined, "a stalled sink holds readers again");
  sink.release();
  await stalled.close();
});

// ---------------------------------------------------------------------------
// Black box against the emulator: the text log a worker writes, as an operator reads it.

Deno.test({
  name: "log: a text log names the queue once, shortens ids, orders releases, sums up at stop",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    // ElasticMQ: its long poll answers the moment a release makes the message visible,
    // often before the release's own answer arrives (moto's polling seldom does).
    const backend = sqsBackends().find((entry) => entry.name === "elasticmq")!;
    const client = testClient(backend.endpoint);
    const url = await createQueue(client, uniqueName("log-text"));
    const dir = await Deno.makeTempDir({ prefix: "sqsrun-log-text-" });
    const job = `${dir}/job.sh`;
    // Fails its first two deliveries: with --backoff off each release is visible at once,
    // so the next delivery races the release's answer.
    await Deno.writeTextFile(
      job,
      '#!/bin/sh\necho "run $SQSRUN_RECEIVE_COUNT"\n[ "$SQSRUN_RECEIVE_COUNT" -ge 3 ]\n',
    );
    await Deno.chmod(job, 0o755);
    const env = { ...awsEnv(backend.endpoint), PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" };
    const worker = startWorker(
      [
        "-q",
        url,
        "--exec",
        job,
        "-c",
        "2",
        "--wait",
        "5",
        "--backoff",
        "off",
        "--log-format",
        "text",
      ],
      { env },
    );
    try {
      const [id] = await sendMessages(client, url, ["flaky"]);
      const text = () => worker.lines.map((line) => line.msg);
      await waitFor("the third run", () => text().some((line) => line.includes("job finished")));
      worker.signal("SIGTERM");
      strictEqual((await worker.exit(30_000)).code, 0);
      const lines = text();
      const withQueue = lines.filter((line) => line.includes(url));
      strictEqual(withQueue.length, 1, withQueue.join("\n"));
      match(withQueue[0], / INFO {2}worker started queue=\S+ exec=/);
      const short = id.slice(0, 8);
      const jobLines = lines.filter((line) => line.includes(` ${short} `));
      ok(jobLines.length >= 9, lines.join("\n"));
      ok(!lines.some((line) => line.includes(id)), "the whole id is in no line");
      // The id column starts each job line at the same place: the message follows it.
      const at = jobLines[0].indexOf(` ${short} `);
      ok(jobLines.every((line) => line.indexOf(` ${short} `) === at), jobLines.join("\n"));
      ok(jobLines.some((line) => line.includes(`${short} stdout| run 1`)), jobLines.join("\n"));
      // Each release is logged before the next delivery's job starts.
      const events = jobLines.map((line) =>
        line.includes("message released")
          ? "released"
          : line.includes("job started")
          ? "started"
          : ""
      ).filter(Boolean);
      deepStrictEqual(events, ["started", "released", "started", "released", "started"]);
      const stopped = lines.find((line) => line.includes("worker stopped"))!;
      match(
        stopped,
        / worker stopped uptime_s=[\d.]+ received=3 jobs_run=3 succeeded=1 failed=2 killed=0 deleted=1 released=2 parked=0 lines_dropped=0$/,
      );
    } finally {
      await worker.stop();
      await deleteQueue(client, url);
      client.destroy();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
