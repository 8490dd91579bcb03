/**
 * Unit tests of the worker's pure logic: back-off, message conversion, slots and
 * FIFO lanes, the visibility keeper, kill escalation, output lines, batching and
 * settling. No network and no child processes: every collaborator is a fake.
 */
import { deepStrictEqual, ok, rejects, strictEqual } from "node:assert/strict";
import {
  ChangeMessageVisibilityBatchCommand,
  DeleteMessageBatchCommand,
  type Message,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import { RecordingLogger } from "./support/recording_logger.ts";
import { backoffDelay } from "../src/worker/backoff.ts";
import { sleep } from "../src/worker/clock.ts";
import { type JobMessage, toJobMessage } from "../src/worker/message.ts";
import { attributeEnvName, jobEnvironment } from "../src/runners/process/job_env.ts";
import { streamLines } from "../src/runners/process/output_lines.ts";
import {
  extensionSeconds,
  releaseVisibility,
  SQS_MAX_VISIBILITY_SECONDS,
  type VisibilityChanger,
  VisibilityKeeper,
} from "../src/worker/visibility.ts";
import { commandLine } from "../src/runners/exec.ts";
import { BatchEntryError, SQS_BATCH_LIMIT, SqsBatcher } from "../src/worker/sqs_batcher.ts";
import { type SettleCalls, Settler } from "../src/worker/settle.ts";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

// Captured before any test patches the globals: the timer spy counts the timers
// of the code under test, never the helpers'.
const realSetTimeout = globalThis.setTimeout;
const realClearTimeout = globalThis.clearTimeout;
const realSetInterval = globalThis.setInterval;
const realClearInterval = globalThis.clearInterval;
type TimerId = ReturnType<typeof realSetTimeout>;

interface TimerSpy {
  /** Timers and intervals created and neither fired (timeouts) nor cleared. */
  live: Set<TimerId>;
  created: number;
  /** Most timers pending at once. */
  maxLive: number;
}

/**
 * Runs `body` with setTimeout/setInterval/clear* counted. Deno 2.9's test
 * sanitizer does not report leaked timers, so tests that promise "no timer left"
 * check `spy.live` themselves.
 */
async function withTimerSpy(body: (spy: TimerSpy) => Promise<void>): Promise<void> {
  const spy: TimerSpy = { live: new Set(), created: 0, maxLive: 0 };
  const add = (id: TimerId) => {
    spy.live.add(id);
    spy.created += 1;
    spy.maxLive = Math.max(spy.maxLive, spy.live.size);
    return id;
  };
  const clear = (id?: TimerId) => {
    if (id !== undefined) spy.live.delete(id);
    realClearTimeout(id);
  };
  const patched = {
    setTimeout(callback: (...args: unknown[]) => void, ms?: number, ...args: unknown[]) {
      const id: TimerId = realSetTimeout(() => {
        spy.live.delete(id);
        callback(...args);
      }, ms);
      return add(id);
    },
    setInterval(callback: (...args: unknown[]) => void, ms?: number, ...args: unknown[]) {
      return add(realSetInterval(() => callback(...args), ms));
    },
  };
  globalThis.setTimeout = patched.setTimeout as unknown as typeof setTimeout;
  globalThis.setInterval = patched.setInterval as unknown as typeof setInterval;
  globalThis.clearTimeout = clear as unknown as typeof clearTimeout;
  globalThis.clearInterval = clear as unknown as typeof clearInterval;
  try {
    await body(spy);
  } finally {
    globalThis.setTimeout = realSetTimeout;
    globalThis.setInterval = realSetInterval;
    globalThis.clearTimeout = realClearTimeout;
    globalThis.clearInterval = realClearInterval;
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => realSetTimeout(resolve, ms));
}

/** Polls `condition` every 5 ms; throws after `timeoutMs`. */
async function waitFor(condition: () => boolean, what: string, timeoutMs = 2_000): Promise<void> {
  const start = performance.now();
  while (!condition()) {
    if (performance.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await delay(5);
  }
}

/** True when `promise` has settled after the microtask queue and one macrotask ran. */
async function hasSettled(promise: Promise<unknown>): Promise<boolean> {
  let settled = false;
  promise.then(() => settled = true, () => settled = true);
  await delay(0);
  return settled;
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

function jobMessage(id: string, overrides: Partial<JobMessage> = {}): JobMessage {
  return {
    id,
    receiptHandle: `rh-${id}`,
    body: `body of ${id}`,
    queueUrl: "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs",
    receiveCount: 1,
    attributes: {},
    receiveSentAt: performance.now(),
    ...overrides,
  };
}

const encoder = new TextEncoder();

// ---------------------------------------------------------------------------
// backoff.ts
// ---------------------------------------------------------------------------

Deno.test("backoffDelay: attempt 1 is the floor, each attempt doubles, the cap holds", () => {
  const bounds = { floorMs: 250, capMs: 5_000 };
  deepStrictEqual(
    [1, 2, 3, 4, 5, 6, 7].map((attempt) => backoffDelay(attempt, bounds)),
    [250, 500, 1_000, 2_000, 4_000, 5_000, 5_000],
  );
});

Deno.test("backoffDelay: attempts below 1 give the floor, huge attempts stay finite at the cap", () => {
  const bounds = { floorMs: 100, capMs: 60_000 };
  strictEqual(backoffDelay(0, bounds), 100);
  strictEqual(backoffDelay(-3, bounds), 100);
  strictEqual(backoffDelay(1_000, bounds), 60_000);
  strictEqual(backoffDelay(Number.MAX_SAFE_INTEGER, bounds), 60_000);
});

Deno.test("sleep: an already aborted signal resolves at once and starts no timer", async () => {
  await withTimerSpy(async (spy) => {
    const controller = new AbortController();
    controller.abort();
    const start = performance.now();
    await sleep(10_000, controller.signal);
    ok(performance.now() - start < 200, "sleep with an aborted signal waited");
    strictEqual(spy.created, 0);
  });
});

Deno.test("sleep: aborting during the wait resolves early and clears the timer", async () => {
  await withTimerSpy(async (spy) => {
    const controller = new AbortController();
    realSetTimeout(() => controller.abort(), 20);
    const start = performance.now();
    await sleep(10_000, controller.signal);
    ok(performance.now() - start < 2_000, "abort did not end the sleep");
    strictEqual(spy.created, 1);
    strictEqual(spy.live.size, 0, "the 10 s timer was left pending");
  });
});

Deno.test("sleep: waits about the given time, and 0 resolves at once", async () => {
  let start = performance.now();
  await sleep(40);
  ok(performance.now() - start >= 35, "sleep(40) returned too early");
  start = performance.now();
  await sleep(0);
  ok(performance.now() - start < 200);
});

// ---------------------------------------------------------------------------
// visibility.ts: pure functions
// ---------------------------------------------------------------------------

Deno.test("releaseVisibility: no back-off releases at once", () => {
  strictEqual(releaseVisibility(1, undefined), 0);
  strictEqual(releaseVisibility(7, undefined), 0);
});

Deno.test("releaseVisibility: base 2 max 8 doubles per receive up to the max", () => {
  const backoff = { base: 2, max: 8 };
  deepStrictEqual([1, 2, 3, 4, 10].map((count) => releaseVisibility(count, backoff)), [
    2,
    4,
    8,
    8,
    8,
  ]);
});

Deno.test("releaseVisibility: never above the SQS limit of 43200 s, even with a larger max", () => {
  const backoff = { base: 60, max: 1_000_000 };
  strictEqual(releaseVisibility(1, backoff), 60);
  strictEqual(releaseVisibility(20, backoff), SQS_MAX_VISIBILITY_SECONDS);
  strictEqual(releaseVisibility(1_000, backoff), 43_200);
  for (let count = 1; count < 100; count++) {
    ok(releaseVisibility(count, backoff) <= 43_200, `receive count ${count}`);
  }
});

Deno.test("extensionSeconds: normal extension asks for the full timeout", () => {
  strictEqual(extensionSeconds(30, 0), 30);
  strictEqual(extensionSeconds(30, 3_600), 30);
});

Deno.test("extensionSeconds: near the 12-hour cap asks only for the remaining room", () => {
  // 43200 s cap minus a 5 s safety margin.
  strictEqual(extensionSeconds(30, 43_180), 15);
  strictEqual(extensionSeconds(30, 43_180.5), 14);
  strictEqual(extensionSeconds(30, 43_194), 1);
});

Deno.test("extensionSeconds: at or past the cap there is no room", () => {
  strictEqual(extensionSeconds(30, 43_195), 0);
  strictEqual(extensionSeconds(30, 43_200), 0);
  strictEqual(extensionSeconds(30, 100_000), 0);
});

// ---------------------------------------------------------------------------
// message.ts
// ---------------------------------------------------------------------------

const QUEUE = "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs.fifo";

Deno.test("toJobMessage: system attributes give receiveCount, sentTimestamp and groupId", () => {
  const message: Message = {
    MessageId: "m-1",
    ReceiptHandle: "handle-1",
    Body: "hello",
    Attributes: {
      ApproximateReceiveCount: "3",
      SentTimestamp: "1700000000123",
      MessageGroupId: "orders",
    },
  };
  deepStrictEqual(toJobMessage(message, QUEUE, 42.5), {
    id: "m-1",
    receiptHandle: "handle-1",
    body: "hello",
    queueUrl: QUEUE,
    receiveCount: 3,
    sentTimestamp: 1_700_000_000_123,
    groupId: "orders",
    attributes: {},
    receiveSentAt: 42.5,
  });
});

Deno.test("toJobMessage: missing or unusable system attributes fall back to safe values", () => {
  const bare = toJobMessage({ MessageId: "m", ReceiptHandle: "h", Body: "" }, QUEUE, 0);
  ok(bare, "an empty body is still a message");
  strictEqual(bare.body, "");
  strictEqual(bare.receiveCount, 1);
  strictEqual(bare.sentTimestamp, undefined);
  strictEqual(bare.groupId, undefined);
  const odd = toJobMessage(
    {
      MessageId: "m",
      ReceiptHandle: "h",
      Body: "x",
      Attributes: { ApproximateReceiveCount: "abc", SentTimestamp: "0" },
    },
    QUEUE,
    0,
  );
  strictEqual(odd?.receiveCount, 1);
  strictEqual(odd?.sentTimestamp, undefined);
});

Deno.test("toJobMessage: String, Number and Binary message attributes become strings", () => {
  const converted = toJobMessage(
    {
      MessageId: "m",
      ReceiptHandle: "h",
      Body: "b",
      MessageAttributes: {
        trace: { DataType: "String", StringValue: "abc-123" },
        count: { DataType: "Number", StringValue: "42" },
        blob: { DataType: "Binary", BinaryValue: new Uint8Array([0, 1, 2, 255]) },
        "custom.type": { DataType: "String.json", StringValue: '{"a":1}' },
        empty: { DataType: "String" },
      },
    },
    QUEUE,
    0,
  );
  deepStrictEqual(converted?.attributes, {
    trace: "abc-123",
    count: "42",
    blob: "AAEC/w==",
    "custom.type": '{"a":1}',
  });
});

Deno.test("toJobMessage: a message without id, receipt handle or body is dropped", () => {
  const full: Message = { MessageId: "m", ReceiptHandle: "h", Body: "b" };
  ok(toJobMessage(full, QUEUE, 0));
  strictEqual(toJobMessage({ ...full, MessageId: undefined }, QUEUE, 0), undefined);
  strictEqual(toJobMessage({ ...full, MessageId: "" }, QUEUE, 0), undefined);
  strictEqual(toJobMessage({ ...full, ReceiptHandle: undefined }, QUEUE, 0), undefined);
  strictEqual(toJobMessage({ ...full, Body: undefined }, QUEUE, 0), undefined);
  strictEqual(toJobMessage({}, QUEUE, 0), undefined);
});

Deno.test("attributeEnvName: upper-cases and replaces everything outside A-Z, 0-9 and _", () => {
  strictEqual(attributeEnvName("trace-id"), "TRACE_ID");
  strictEqual(attributeEnvName("Retry.Count"), "RETRY_COUNT");
  strictEqual(attributeEnvName("a b=c"), "A_B_C");
  strictEqual(attributeEnvName("already_OK_9"), "ALREADY_OK_9");
  strictEqual(attributeEnvName("ümlaut"), "_MLAUT");
  for (const name of ["x$y", "ünïcødé", "😀", "a\nb", "ß", "ﬁle"]) {
    ok(/^[A-Z0-9_]*$/.test(attributeEnvName(name)), `unsafe env name for ${name}`);
  }
});

Deno.test("jobEnvironment: SQSRUN_* description, sanitized attribute names, --env pairs", () => {
  const message = jobMessage("m-7", {
    receiveCount: 2,
    sentTimestamp: 1_700_000_000_000,
    groupId: "g1",
    attributes: { "trace-id": "abc", "Retry.Count": "3" },
  });
  deepStrictEqual(jobEnvironment(message, { FOO: "bar", EMPTY: "" }), {
    FOO: "bar",
    EMPTY: "",
    SQSRUN_ATTR_TRACE_ID: "abc",
    SQSRUN_ATTR_RETRY_COUNT: "3",
    SQSRUN_MESSAGE_ID: "m-7",
    SQSRUN_RECEIVE_COUNT: "2",
    SQSRUN_QUEUE_URL: message.queueUrl,
    SQSRUN_SENT_TIMESTAMP: "1700000000000",
    SQSRUN_GROUP_ID: "g1",
  });
});

Deno.test("jobEnvironment: --env cannot override the message's own SQSRUN_* variables", () => {
  const message = jobMessage("real-id");
  const env = jobEnvironment(message, {
    SQSRUN_MESSAGE_ID: "forged",
    SQSRUN_RECEIVE_COUNT: "99",
    SQSRUN_QUEUE_URL: "forged",
    KEEP: "me",
  });
  strictEqual(env.SQSRUN_MESSAGE_ID, "real-id");
  strictEqual(env.SQSRUN_RECEIVE_COUNT, "1");
  strictEqual(env.SQSRUN_QUEUE_URL, message.queueUrl);
  strictEqual(env.KEEP, "me");
  ok(!("SQSRUN_GROUP_ID" in env), "no group id for a standard queue");
  ok(!("SQSRUN_SENT_TIMESTAMP" in env), "no sent timestamp when unknown");
});

// ---------------------------------------------------------------------------
// visibility.ts: VisibilityKeeper
// ---------------------------------------------------------------------------

interface ChangeCall {
  receiptHandle: string;
  seconds: number;
  at: number;
}

/** A changer that records calls; `fail(n)` says whether call number n (0-based) rejects. */
function fakeChanger(fail: (index: number, receiptHandle: string) => boolean = () => false) {
  const calls: ChangeCall[] = [];
  return {
    calls,
    for(receiptHandle: string) {
      return calls.filter((call) => call.receiptHandle === receiptHandle);
    },
    changeVisibility(receiptHandle: string, seconds: number): Promise<void> {
      const index = calls.length;
      calls.push({ receiptHandle, seconds, at: performance.now() });
      if (fail(index, receiptHandle)) return Promise.reject(new Error("Throttling: slow down"));
      return Promise.resolve();
    },
  };
}

/** A keeper asking for 30 s each time, with a log nobody reads. */
function plainKeeper(changer: VisibilityChanger, extendAfterSeconds: number): VisibilityKeeper {
  return new VisibilityKeeper({
    changer,
    timeoutSeconds: 30,
    extendAfterSeconds,
    log: new RecordingLogger(),
  });
}

Deno.test("VisibilityKeeper: extends after extendAfterSeconds with timeoutSeconds, repeatedly", async () => {
  await withTimerSpy(async (spy) => {
    const changer = fakeChanger();
    const log = new RecordingLogger();
    let extended = 0;
    const keeper = new VisibilityKeeper({
      changer,
      timeoutSeconds: 30,
      extendAfterSeconds: 0.1,
      log,
      onExtended: () => extended++,
    });
    try {
      const message = jobMessage("m");
      keeper.track(message);
      strictEqual(keeper.size, 1);
      await delay(20);
      strictEqual(changer.calls.length, 0, "extended before extendAfterSeconds");
      await waitFor(() => changer.calls.length >= 3, "three extensions");
      ok(changer.calls[0].at - message.receiveSentAt >= 90, "first extension came too early");
      for (const call of changer.calls) {
        deepStrictEqual([call.receiptHandle, call.seconds], ["rh-m", 30]);
      }
      for (let i = 1; i < changer.calls.length; i++) {
        ok(changer.calls[i].at - changer.calls[i - 1].at >= 90, "extensions came too often");
      }
      ok(extended >= 3, "onExtended not called per extension");
      deepStrictEqual(log.at("warn"), []);
      keeper.untrack(message);
      strictEqual(spy.live.size, 0, "a timer is left with nothing tracked");
    } finally {
      keeper.stop();
    }
  });
});

Deno.test("VisibilityKeeper: each message is extended on its own schedule, counted from its receipt", async () => {
  const changer = fakeChanger();
  const keeper = plainKeeper(changer, 0.1);
  try {
    const a = jobMessage("a");
    keeper.track(a);
    await delay(150);
    const b = jobMessage("b");
    keeper.track(b);
    await waitFor(() => changer.for("rh-b").length >= 2, "two extensions of b");
    // a is extended at ~100 and ~200 ms; b, received at ~150 ms, at ~250 ms, not
    // early along with a.
    ok(changer.for("rh-a")[0].at - a.receiveSentAt >= 90, "a extended early");
    ok(changer.for("rh-b")[0].at - b.receiveSentAt >= 90, "b extended early, with a");
    ok(changer.for("rh-b")[1].at - changer.for("rh-b")[0].at >= 90, "b extended too often");
  } finally {
    keeper.stop();
  }
});

Deno.test("VisibilityKeeper: a failing change is retried after retryMs, logged, and extension continues", async () => {
  // Calls 0 and 1 fail; later ones succeed.
  const changer = fakeChanger((index) => index < 2);
  const log = new RecordingLogger();
  const keeper = new VisibilityKeeper({
    changer,
    timeoutSeconds: 45,
    extendAfterSeconds: 0.3,
    retryMs: 20,
    log,
  });
  try {
    keeper.track(jobMessage("m"));
    await waitFor(() => changer.calls.length >= 4, "two retries then two extensions");
    const [first, second, third, fourth] = changer.calls;
    // Retries come after retryMs, well before another extendAfterSeconds.
    ok(second.at - first.at >= 15 && second.at - first.at < 250, "retry not after retryMs");
    ok(third.at - second.at >= 15 && third.at - second.at < 250, "retry not after retryMs");
    // After the success, back to the normal period.
    ok(fourth.at - third.at >= 270, "after a success, the next extension came too early");
    ok(changer.calls.every((call) => call.seconds === 45));
    const warnings = log.at("warn");
    strictEqual(warnings.length, 2);
    for (const [index, warning] of warnings.entries()) {
      ok(warning.msg.includes("visibility extension failed"), warning.msg);
      strictEqual(warning.fields.message_id, "m");
      strictEqual(warning.fields.attempt, index + 1);
      ok(String(warning.fields.error).includes("Throttling"));
    }
    strictEqual(keeper.size, 1);
  } finally {
    keeper.stop();
  }
});

Deno.test("VisibilityKeeper: an always-failing changer never stops the retries", async () => {
  const changer = fakeChanger(() => true);
  const log = new RecordingLogger();
  const keeper = new VisibilityKeeper({
    changer,
    timeoutSeconds: 30,
    extendAfterSeconds: 0.05,
    retryMs: 10,
    log,
  });
  try {
    keeper.track(jobMessage("m"));
    await waitFor(() => changer.calls.length >= 6, "six attempts");
    strictEqual(log.at("warn").at(-1)?.fields.attempt, log.at("warn").length);
  } finally {
    keeper.stop();
  }
});

Deno.test("VisibilityKeeper: holds one delivery per message id; a new receipt handle is used from then on", async () => {
  const changer = fakeChanger();
  const keeper = plainKeeper(changer, 0.05);
  try {
    const held = jobMessage("a");
    keeper.track(held);
    strictEqual(keeper.holding("a"), held);
    strictEqual(keeper.holding("b"), undefined);
    // Another delivery of the same message is not the one held: untracking it keeps the held one.
    keeper.untrack({ ...held, receiptHandle: "rh-a2" });
    strictEqual(keeper.holding("a"), held);
    held.receiptHandle = "rh-a2";
    await waitFor(() => changer.for("rh-a2").length >= 1, "an extension with the new handle");
    keeper.untrack(held);
    strictEqual(keeper.holding("a"), undefined);
    strictEqual(keeper.size, 0);
  } finally {
    keeper.stop();
  }
});

Deno.test("VisibilityKeeper: untrack stops extensions for that message only", async () => {
  await withTimerSpy(async (spy) => {
    const changer = fakeChanger();
    const keeper = plainKeeper(changer, 0.05);
    try {
      const a = jobMessage("a");
      const b = jobMessage("b");
      keeper.track(a);
      keeper.track(b);
      await waitFor(() => changer.for("rh-a").length >= 1, "a first extension of a");
      keeper.untrack(a);
      strictEqual(keeper.size, 1);
      const aCount = changer.for("rh-a").length;
      const bCount = changer.for("rh-b").length;
      await waitFor(() => changer.for("rh-b").length >= bCount + 3, "three more extensions of b");
      strictEqual(changer.for("rh-a").length, aCount, "an untracked message was extended");
      keeper.untrack(b);
      strictEqual(keeper.size, 0);
      strictEqual(spy.live.size, 0, "a timer is left with nothing tracked");
      const total = changer.calls.length;
      await delay(120);
      strictEqual(changer.calls.length, total, "extended with nothing tracked");
    } finally {
      keeper.stop();
    }
  });
});

Deno.test("VisibilityKeeper: many tracked messages are all extended, with a single timer", async () => {
  await withTimerSpy(async (spy) => {
    const changer = fakeChanger();
    const keeper = new VisibilityKeeper({
      changer,
      timeoutSeconds: 60,
      extendAfterSeconds: 0.05,
      log: new RecordingLogger(),
    });
    try {
      // Each message is due earlier than the one before, so every track() re-arms.
      const base = performance.now();
      const messages = Array.from(
        { length: 50 },
        (_, i) => jobMessage(`m${i}`, { receiveSentAt: base - i / 2 }),
      );
      for (const message of messages) keeper.track(message);
      strictEqual(keeper.size, 50);
      await waitFor(
        () => messages.every((message) => changer.for(message.receiptHandle).length >= 2),
        "two extensions of every message",
      );
      ok(spy.created > 0, "the keeper's timers were not observed");
      strictEqual(spy.maxLive, 1, "more than one keeper timer was pending at once");
    } finally {
      keeper.stop();
    }
    strictEqual(spy.live.size, 0, "stop() left a timer behind");
  });
});

Deno.test("VisibilityKeeper: stop ends every extension and leaves no timer", async () => {
  await withTimerSpy(async (spy) => {
    const changer = fakeChanger();
    const keeper = plainKeeper(changer, 0.03);
    keeper.track(jobMessage("a"));
    keeper.track(jobMessage("b"));
    await waitFor(() => changer.calls.length >= 2, "first extensions");
    keeper.stop();
    strictEqual(keeper.size, 0);
    strictEqual(spy.live.size, 0);
    const count = changer.calls.length;
    await delay(100);
    strictEqual(changer.calls.length, count);
  });
});

// ---------------------------------------------------------------------------
// exec.ts: streamLines, commandLine
// ---------------------------------------------------------------------------

async function lines(chunks: (string | Uint8Array)[]): Promise<string[]> {
  const out: string[] = [];
  const bytes = chunks.map((chunk) => typeof chunk === "string" ? encoder.encode(chunk) : chunk);
  await streamLines(ReadableStream.from(bytes), (line) => out.push(line));
  return out;
}

const MAX_LINE = 16 * 1024;

Deno.test("streamLines: lines split across chunks are joined", async () => {
  deepStrictEqual(await lines(["hel", "lo\nwor", "ld\nsec", "", "ond\n"]), [
    "hello",
    "world",
    "second",
  ]);
  deepStrictEqual(await lines(["a\nb\nc\n"]), ["a", "b", "c"]);
  deepStrictEqual(await lines(["\n\n"]), ["", ""], "empty lines are lines");
  deepStrictEqual(await lines([]), []);
});

Deno.test("streamLines: CRLF line ends lose their CR, also across chunks", async () => {
  deepStrictEqual(await lines(["one\r\ntwo\r\n"]), ["one", "two"]);
  deepStrictEqual(await lines(["one\r", "\ntwo\r", "\n"]), ["one", "two"]);
  deepStrictEqual(await lines(["a\rb\n"]), ["a\rb"], "a CR inside a line stays");
});

Deno.test("streamLines: a last line without newline is still emitted", async () => {
  deepStrictEqual(await lines(["first\nlast"]), ["first", "last"]);
  deepStrictEqual(await lines(["only"]), ["only"]);
  deepStrictEqual(await lines(["la", "st\r"]), ["last"]);
});

Deno.test("streamLines: a line longer than 16 KiB arriving in small chunks is split into pieces", async () => {
  const long = "x".repeat(40_000);
  const chunks: string[] = [];
  for (let i = 0; i < long.length; i += 1_000) chunks.push(long.slice(i, i + 1_000));
  chunks.push("\nnext\n");
  const out = await lines(chunks);
  deepStrictEqual(out.map((line) => line.length), [MAX_LINE, MAX_LINE, 40_000 - 2 * MAX_LINE, 4]);
  strictEqual(out.slice(0, 3).join(""), long);
  strictEqual(out[3], "next");
});

Deno.test({
  // BUG (src/runners/process/output_lines.ts, streamLines): the `while (newline !== -1)` loop
  // emits every complete line whole, before the `data.length >= MAX_LINE_BYTES`
  // check, so a long line whose newline arrives in the same chunk is never split
  // (a child writing a 40000-byte line in one write() is logged as one line).
  name: "streamLines: a line longer than 16 KiB is split even when it arrives in one chunk",

  fn: async () => {
    const long = "y".repeat(40_000);
    const out = await lines([long + "\nnext\n"]);
    deepStrictEqual(out.map((line) => line.length), [
      MAX_LINE,
      MAX_LINE,
      40_000 - 2 * MAX_LINE,
      4,
    ]);
    strictEqual(out.slice(0, 3).join(""), long);
  },
});

Deno.test({
  // BUG (src/runners/process/output_lines.ts, streamLines): `while (data.length >=
  // MAX_LINE_BYTES)` flushes a line of exactly 16 KiB (or a multiple) as a piece
  // when its newline has not arrived yet; the newline in the next chunk then ends
  // an empty line and a spurious "" is logged.
  name: "streamLines: a line of exactly 16 KiB followed by a late newline adds no empty line",

  fn: async () => {
    const exact = "z".repeat(MAX_LINE);
    deepStrictEqual(await lines([exact, "\nnext\n"]), [exact, "next"]);
  },
});

Deno.test("streamLines: multi-byte UTF-8 split across chunk boundaries decodes correctly", async () => {
  const text = "héllo wörld € 𝄞 日本語";
  const bytes = encoder.encode(text + "\n" + text + "\n");
  // One byte per chunk splits every multi-byte character.
  const oneByteChunks = [...bytes].map((byte) => new Uint8Array([byte]));
  deepStrictEqual(await lines(oneByteChunks), [text, text]);
  // Uneven chunk sizes, too.
  const uneven: Uint8Array[] = [];
  for (let i = 0, size = 1; i < bytes.length; i += size, size = (size % 4) + 1) {
    uneven.push(bytes.slice(i, i + size));
  }
  deepStrictEqual(await lines(uneven), [text, text]);
});

Deno.test({
  // BUG (src/runners/process/output_lines.ts, streamLines): the 16 KiB split
  // `flush(data.subarray(0, MAX_LINE_BYTES))` cuts at a byte offset and `flush`
  // decodes each piece on its own (no `stream: true`), so a multi-byte character
  // straddling the cut becomes U+FFFD ("€" at bytes 16383-16385 is logged as
  // "\uFFFD" at the end of one piece and "\uFFFD\uFFFD" at the start of the next).
  name: "streamLines: splitting a long line never cuts a multi-byte character",

  fn: async () => {
    const head = "x".repeat(MAX_LINE - 1);
    const out = await lines([head + "€", "tail\n"]);
    ok(out.every((line) => !line.includes("\uFFFD")), "a character was cut in two");
    strictEqual(out.join(""), head + "€tail");
    ok(out.every((line) => encoder.encode(line).length <= MAX_LINE));
  },
});

Deno.test("streamLines: a stream that errors still emits what was read and resolves", async () => {
  let step = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      step += 1;
      if (step === 1) controller.enqueue(encoder.encode("complete\npartial"));
      else controller.error(new Error("pipe broke"));
    },
  });
  const out: string[] = [];
  await streamLines(stream, (line) => out.push(line));
  deepStrictEqual(out, ["complete", "partial"]);
});

Deno.test("commandLine: --shell runs sh -c with $0 = sqsrun and the args after it", () => {
  deepStrictEqual(
    commandLine({ command: 'echo "$1" | wc -c', args: ["a", "b c"], shell: true, env: {} }),
    { program: "sh", args: ["-c", 'echo "$1" | wc -c', "sqsrun", "a", "b c"] },
  );
  deepStrictEqual(commandLine({ command: "true", args: [], shell: true, env: {} }), {
    program: "sh",
    args: ["-c", "true", "sqsrun"],
  });
});

Deno.test("commandLine: without --shell the program runs directly with its args", () => {
  deepStrictEqual(
    commandLine({ command: "/usr/bin/job", args: ["--x", "a b"], shell: false, env: { A: "1" } }),
    { program: "/usr/bin/job", args: ["--x", "a b"] },
  );
});

// ---------------------------------------------------------------------------
// sqs_batcher.ts
// ---------------------------------------------------------------------------

interface SentCommand {
  kind: "delete" | "change";
  queueUrl: string | undefined;
  entries: { Id?: string; ReceiptHandle?: string; VisibilityTimeout?: number }[];
}

type FakeReply = (command: SentCommand) => Promise<unknown>;

function fakeClient(reply: FakeReply = () => Promise.resolve({})) {
  const sent: SentCommand[] = [];
  const client = {
    send(command: unknown): Promise<unknown> {
      let record: SentCommand;
      if (command instanceof DeleteMessageBatchCommand) {
        record = {
          kind: "delete",
          queueUrl: command.input.QueueUrl,
          entries: command.input.Entries ?? [],
        };
      } else if (command instanceof ChangeMessageVisibilityBatchCommand) {
        record = {
          kind: "change",
          queueUrl: command.input.QueueUrl,
          entries: command.input.Entries ?? [],
        };
      } else {
        throw new Error("unexpected command");
      }
      sent.push(record);
      return reply(record);
    },
  };
  return { sent, client: client as unknown as SQSClient };
}

const BATCH_QUEUE = "https://sqs.us-east-1.amazonaws.com/1/q";

Deno.test("SqsBatcher: groups up to 10 entries per call and resolves every caller", async () => {
  const { sent, client } = fakeClient();
  const batcher = new SqsBatcher({ client, queueUrl: BATCH_QUEUE, lingerMs: 20 });
  strictEqual(SQS_BATCH_LIMIT, 10);
  const handles = Array.from({ length: 25 }, (_, i) => `h${i}`);
  const results = handles.map((handle) => batcher.delete(handle));
  strictEqual(sent.length, 2, "full batches go out at once");
  await Promise.all(results);
  deepStrictEqual(sent.map((command) => command.entries.length), [10, 10, 5]);
  ok(sent.every((command) => command.kind === "delete" && command.queueUrl === BATCH_QUEUE));
  deepStrictEqual(sent.flatMap((command) => command.entries.map((e) => e.ReceiptHandle)), handles);
  deepStrictEqual(
    sent[0].entries.map((entry) => entry.Id),
    ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
  );
  await batcher.flush();
});

Deno.test("SqsBatcher: entries wait lingerMs for company; deletes and changes go apart", async () => {
  const { sent, client } = fakeClient();
  const batcher = new SqsBatcher({ client, queueUrl: BATCH_QUEUE, lingerMs: 150 });
  const results = [batcher.delete("d1"), batcher.changeVisibility("c1", 12.9)];
  await delay(20);
  strictEqual(sent.length, 0, "sent before lingerMs");
  results.push(batcher.changeVisibility("c2", -4), batcher.delete("d2"));
  await Promise.all(results);
  deepStrictEqual(sent, [
    {
      kind: "delete",
      queueUrl: BATCH_QUEUE,
      entries: [{ Id: "0", ReceiptHandle: "d1" }, { Id: "1", ReceiptHandle: "d2" }],
    },
    {
      kind: "change",
      queueUrl: BATCH_QUEUE,
      entries: [
        { Id: "0", ReceiptHandle: "c1", VisibilityTimeout: 12 },
        { Id: "1", ReceiptHandle: "c2", VisibilityTimeout: 0 },
      ],
    },
  ]);
});

Deno.test("SqsBatcher: deletes wait deleteLingerMs, visibility changes only lingerMs", async () => {
  const { sent, client } = fakeClient();
  const batcher = new SqsBatcher({
    client,
    queueUrl: BATCH_QUEUE,
    lingerMs: 20,
    deleteLingerMs: 300,
  });
  const deleted = batcher.delete("d1");
  const changed = batcher.changeVisibility("c1", 5);
  await changed;
  deepStrictEqual(sent.map((command) => command.kind), ["change"], "the delete went early");
  ok(!(await hasSettled(deleted)), "the delete resolved before its call");
  await deleted;
  deepStrictEqual(sent.map((command) => command.kind), ["change", "delete"]);
});

Deno.test("SqsBatcher: failed entries reject with BatchEntryError and their code; others resolve", async () => {
  const { client } = fakeClient(() =>
    Promise.resolve({
      Successful: [{ Id: "0" }, { Id: "2" }],
      Failed: [
        {
          Id: "1",
          Code: "ReceiptHandleIsInvalid",
          Message: "The handle is invalid",
          SenderFault: true,
        },
        { Id: "3", SenderFault: false },
      ],
    })
  );
  const batcher = new SqsBatcher({ client, queueUrl: BATCH_QUEUE });
  const results = await Promise.allSettled(["a", "b", "c", "d"].map((h) => batcher.delete(h)));
  deepStrictEqual(results.map((result) => result.status), [
    "fulfilled",
    "rejected",
    "fulfilled",
    "rejected",
  ]);
  const first = (results[1] as PromiseRejectedResult).reason;
  ok(first instanceof BatchEntryError);
  strictEqual(first.code, "ReceiptHandleIsInvalid");
  strictEqual(first.message, "ReceiptHandleIsInvalid: The handle is invalid");
  strictEqual(first.name, "BatchEntryError");
  const second = (results[3] as PromiseRejectedResult).reason;
  ok(second instanceof BatchEntryError);
  strictEqual(second.code, "Failed");
});

Deno.test("SqsBatcher: a thrown error rejects every entry of the call with that error", async () => {
  const failure = Object.assign(new Error("socket hang up"), { name: "TimeoutError" });
  const { client } = fakeClient((command) =>
    command.kind === "change" ? Promise.reject(failure) : Promise.resolve({})
  );
  const batcher = new SqsBatcher({ client, queueUrl: BATCH_QUEUE });
  const changes = ["a", "b", "c"].map((h) => batcher.changeVisibility(h, 5));
  const del = batcher.delete("d");
  for (const change of changes) await rejects(change, (error) => error === failure);
  await del;
});

Deno.test("SqsBatcher: flush sends at once and waits for the calls in flight", async () => {
  const replies: Deferred<unknown>[] = [];
  const { sent, client } = fakeClient(() => {
    const reply = deferred<unknown>();
    replies.push(reply);
    return reply.promise;
  });
  const batcher = new SqsBatcher({ client, queueUrl: BATCH_QUEUE, lingerMs: 10_000 });
  const results = [batcher.delete("a"), batcher.changeVisibility("b", 3)];
  const flushed = batcher.flush();
  strictEqual(sent.length, 2, "flush did not send the queued entries");
  ok(!(await hasSettled(flushed)), "flush resolved with calls in flight");
  replies[0].resolve({});
  ok(!(await hasSettled(flushed)), "flush resolved with a call still in flight");
  replies[1].resolve({});
  ok(await hasSettled(flushed), "flush did not resolve");
  await Promise.all(results);
  await batcher.flush();
});

Deno.test("SqsBatcher: flush sends a lingering entry at once and cancels the linger timer", async () => {
  await withTimerSpy(async (spy) => {
    const { sent, client } = fakeClient();
    const batcher = new SqsBatcher({ client, queueUrl: BATCH_QUEUE, lingerMs: 10_000 });
    const result = batcher.delete("a");
    strictEqual(spy.live.size, 1, "no linger timer");
    await batcher.flush();
    await result;
    strictEqual(sent.length, 1);
    strictEqual(spy.live.size, 0, "the linger timer is still pending");
  });
});

// ---------------------------------------------------------------------------
// settle.ts
// ---------------------------------------------------------------------------

/** Fake SettleCalls: `deleteErrors` / `changeErrors` are thrown by the calls, in order. */
function fakeCalls(options: { deleteErrors?: unknown[]; changeErrors?: unknown[] } = {}) {
  const deleteErrors = [...(options.deleteErrors ?? [])];
  const changeErrors = [...(options.changeErrors ?? [])];
  const events: string[] = [];
  const deletes: string[] = [];
  const changes: { receiptHandle: string; seconds: number }[] = [];
  const calls: SettleCalls = {
    delete(receiptHandle) {
      events.push(`delete ${receiptHandle}`);
      deletes.push(receiptHandle);
      const error = deleteErrors.shift();
      return error === undefined ? Promise.resolve() : Promise.reject(error);
    },
    changeVisibility(receiptHandle, seconds) {
      events.push(`change ${receiptHandle} ${seconds}`);
      changes.push({ receiptHandle, seconds });
      const error = changeErrors.shift();
      return error === undefined ? Promise.resolve() : Promise.reject(error);
    },
  };
  return { calls, events, deletes, changes };
}

function settlerFor(
  fake: ReturnType<typeof fakeCalls>,
  extra: { backoff?: { base: number; max: number }; attempts?: number } = {},
) {
  const log = new RecordingLogger();
  const counters = { deleted: 0, released: 0, untracked: [] as string[] };
  const settler = new Settler({
    calls: fake.calls,
    untrack: (message) => {
      counters.untracked.push(message.id);
      fake.events.push(`untrack ${message.id}`);
    },
    log,
    onDeleted: () => counters.deleted++,
    onReleased: () => counters.released++,
    ...extra,
  });
  return { settler, log, counters };
}

Deno.test("Settler: success deletes the message, untracks it and counts it", async () => {
  const fake = fakeCalls();
  const { settler, log, counters } = settlerFor(fake);
  strictEqual(await settler.succeeded(jobMessage("m")), true);
  deepStrictEqual(fake.events, ["delete rh-m", "untrack m"]);
  deepStrictEqual(fake.changes, []);
  strictEqual(counters.deleted, 1);
  deepStrictEqual(log.at("warn"), []);
  deepStrictEqual(log.at("error"), []);
});

Deno.test("Settler: a delete failing twice then succeeding is retried with back-off and returns true", async () => {
  const throttled = Object.assign(new Error("Rate exceeded"), { name: "ThrottlingException" });
  const fake = fakeCalls({ deleteErrors: [throttled, throttled] });
  const { settler, log, counters } = settlerFor(fake);
  const start = performance.now();
  strictEqual(await settler.succeeded(jobMessage("m")), true);
  // Back-off of 250 ms then 500 ms between the three attempts.
  ok(performance.now() - start >= 700, "retries did not back off");
  deepStrictEqual(fake.deletes, ["rh-m", "rh-m", "rh-m"]);
  deepStrictEqual(fake.changes, []);
  strictEqual(counters.deleted, 1);
  deepStrictEqual(counters.untracked, ["m"]);
  deepStrictEqual(
    log.at("warn").map((line) => [line.msg, line.fields.attempt]),
    [["delete failed; retrying", 1], ["delete failed; retrying", 2]],
  );
  deepStrictEqual(log.at("error"), []);
});

Deno.test("Settler: a ReceiptHandleIsInvalid entry error is final: no retry, false, an error line", async () => {
  const fake = fakeCalls({
    deleteErrors: [new BatchEntryError("ReceiptHandleIsInvalid", "stale handle")],
  });
  const { settler, log, counters } = settlerFor(fake);
  const start = performance.now();
  strictEqual(await settler.succeeded(jobMessage("m")), false);
  ok(performance.now() - start < 200, "a final error was waited on");
  deepStrictEqual(fake.deletes, ["rh-m"]);
  deepStrictEqual(fake.changes, []);
  strictEqual(counters.deleted, 0);
  deepStrictEqual(counters.untracked, ["m"], "untracked even when the delete failed");
  deepStrictEqual(log.at("warn").map((line) => line.msg), ["delete failed"]);
  strictEqual(log.at("error").length, 1);
  ok(log.at("error")[0].msg.includes("could not be deleted"));
  strictEqual(log.at("error")[0].fields.message_id, "m");
});

Deno.test("Settler: a stale handle replaced by a newer delivery meanwhile is retried with the new one", async () => {
  const fake = fakeCalls({
    deleteErrors: [new BatchEntryError("ReceiptHandleIsInvalid", "stale handle")],
  });
  const { settler, log, counters } = settlerFor(fake);
  const message = jobMessage("m");
  const deleted = settler.succeeded(message);
  // The worker received the message again while the delete was on its way.
  message.receiptHandle = "rh-m2";
  strictEqual(await deleted, true);
  deepStrictEqual(fake.deletes, ["rh-m", "rh-m2"]);
  strictEqual(counters.deleted, 1);
  deepStrictEqual(log.at("error"), []);
});

Deno.test("Settler: a delete failing every attempt gives up after `attempts` and returns false", async () => {
  const fake = fakeCalls({
    deleteErrors: [new Error("down"), new Error("down"), new Error("down")],
  });
  const { settler, log } = settlerFor(fake, { attempts: 2 });
  strictEqual(await settler.succeeded(jobMessage("m")), false);
  deepStrictEqual(fake.deletes, ["rh-m", "rh-m"]);
  deepStrictEqual(log.at("warn").map((line) => line.msg), [
    "delete failed; retrying",
    "delete failed",
  ]);
  strictEqual(log.at("error").length, 1);
});

Deno.test("Settler: failure untracks, then releases with the back-off delay, and never deletes", async () => {
  const fake = fakeCalls();
  const { settler, log, counters } = settlerFor(fake, { backoff: { base: 10, max: 100 } });
  await settler.failed(jobMessage("m", { receiveCount: 3 }));
  deepStrictEqual(fake.events, ["untrack m", "change rh-m 40"]);
  deepStrictEqual(fake.deletes, [], "a failed message was deleted");
  strictEqual(counters.released, 1);
  const info = log.at("info");
  strictEqual(info.length, 1);
  strictEqual(info[0].msg, "message released");
  strictEqual(info[0].fields.visible_in_s, 40);
  await settler.failed(jobMessage("n", { receiveCount: 9 }));
  deepStrictEqual(fake.changes.at(-1), { receiptHandle: "rh-n", seconds: 100 });
  deepStrictEqual(fake.deletes, []);
});

Deno.test("Settler: failure without back-off makes the message visible at once", async () => {
  const fake = fakeCalls();
  const { settler } = settlerFor(fake);
  await settler.failed(jobMessage("m", { receiveCount: 5 }));
  deepStrictEqual(fake.changes, [{ receiptHandle: "rh-m", seconds: 0 }]);
  deepStrictEqual(fake.deletes, []);
});

Deno.test("Settler: a release that keeps failing warns and still never deletes", async () => {
  const fake = fakeCalls({ changeErrors: [new Error("down"), new Error("down")] });
  const { settler, log, counters } = settlerFor(fake, { attempts: 2 });
  await settler.failed(jobMessage("m"));
  deepStrictEqual(fake.changes.length, 2);
  deepStrictEqual(fake.deletes, []);
  strictEqual(counters.released, 0);
  ok(log.at("warn").at(-1)?.msg.includes("could not change the message's visibility"));
});

Deno.test("Settler: giveBack makes the message visible at once, whatever the back-off", async () => {
  const fake = fakeCalls();
  const { settler, log } = settlerFor(fake, { backoff: { base: 30, max: 600 } });
  await settler.giveBack(jobMessage("m", { receiveCount: 4 }));
  deepStrictEqual(fake.events, ["untrack m", "change rh-m 0"]);
  deepStrictEqual(fake.deletes, []);
  strictEqual(log.at("info")[0].msg, "message given back");
});

Deno.test("Settler: park hides the message as long as SQS allows and logs an error line", async () => {
  const fake = fakeCalls();
  const { settler, log } = settlerFor(fake);
  await settler.park(jobMessage("poison", { receiveCount: 7 }), 5);
  deepStrictEqual(fake.deletes, [], "a parked message was deleted");
  strictEqual(fake.changes.length, 1);
  const { receiptHandle, seconds } = fake.changes[0];
  strictEqual(receiptHandle, "rh-poison");
  ok(seconds >= 43_190 && seconds <= 43_195, `parked for ${seconds} s`);
  const errors = log.at("error");
  strictEqual(errors.length, 1);
  ok(errors[0].msg.includes("poison message"));
  strictEqual(errors[0].fields.message_id, "poison");
  strictEqual(errors[0].fields.receive_count, 7);
  strictEqual(errors[0].fields.max_receives, 5);
  strictEqual(errors[0].fields.hidden_for_s, seconds);
  strictEqual(log.at("info")[0].msg, "message parked");
});

Deno.test("Settler: park of a message received long ago hides it only for the room left", async () => {
  const fake = fakeCalls();
  const { settler } = settlerFor(fake);
  // Received 43000 s ago (receiveSentAt may be negative on a young process's clock).
  await settler.park(jobMessage("old", { receiveSentAt: performance.now() - 43_000_000 }), 3);
  const seconds = fake.changes[0].seconds;
  ok(seconds >= 190 && seconds <= 195, `parked for ${seconds} s`);
  deepStrictEqual(fake.deletes, []);
});
