/**
 * Unit tests of how long a succeeded job's delete is retried (for as long as the
 * worker holds the message, until its shutdown deadline), and of what a delete
 * whose answer was lost is called.
 */
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { type SettleCalls, Settler } from "../../src/worker/settle.ts";
import { BatchEntryError } from "../../src/worker/sqs_batcher.ts";
import type { JobMessage } from "../../src/worker/message.ts";
import { RecordingLogger } from "../support/recording_logger.ts";

const held: JobMessage = {
  id: "m",
  receiptHandle: "rh-m",
  body: "",
  queueUrl: "http://127.0.0.1/000000000000/q",
  receiveCount: 1,
  attributes: {},
  receiveSentAt: 0,
};

/** An HTTP 503 from SQS, as the SDK shapes it. */
function unavailable(): Error {
  return Object.assign(new Error("Service Unavailable"), {
    name: "ServiceUnavailable",
    $metadata: { httpStatusCode: 503 },
  });
}

/** A connection reset: the request may or may not have reached SQS. */
function reset(): Error {
  return Object.assign(new Error("socket hang up"), { name: "Error", code: "ECONNRESET" });
}

/** Settle calls whose deletes fail with `errors` in turn, then succeed. */
function deletesFailing(errors: unknown[], onDelete: (attempt: number) => void = () => {}) {
  const queue = [...errors];
  let attempts = 0;
  const calls: SettleCalls = {
    delete() {
      attempts += 1;
      onDelete(attempts);
      const error = queue.shift();
      return error === undefined ? Promise.resolve() : Promise.reject(error);
    },
    changeVisibility: () => Promise.resolve(),
  };
  return { calls, attempts: () => attempts };
}

function settlerWith(calls: SettleCalls, stop: AbortSignal) {
  const log = new RecordingLogger();
  const counts = { deleted: 0, uncertain: 0, untracked: 0 };
  const settler = new Settler({
    calls,
    untrack: () => counts.untracked++,
    log,
    stop,
    maxRetryMs: 1,
    onDeleted: () => counts.deleted++,
    onDeleteUncertain: () => counts.uncertain++,
  });
  return { settler, log, counts };
}

Deno.test("Settler: a succeeded job's delete is retried past five attempts while the worker runs", async () => {
  const failing = deletesFailing(Array.from({ length: 12 }, unavailable));
  const { settler, log, counts } = settlerWith(failing.calls, new AbortController().signal);
  strictEqual(await settler.succeeded(held), true);
  strictEqual(failing.attempts(), 13);
  strictEqual(counts.deleted, 1);
  strictEqual(counts.untracked, 1, "untracked before the delete succeeded");
  deepStrictEqual(log.at("error"), []);
});

Deno.test("Settler: the message stays tracked (extended) until its delete is done", async () => {
  let untrackedBefore = -1;
  let untracked = false;
  const failing = deletesFailing(Array.from({ length: 6 }, unavailable), (attempt) => {
    if (untracked && untrackedBefore === -1) untrackedBefore = attempt;
  });
  const settler = new Settler({
    calls: failing.calls,
    untrack: () => untracked = true,
    log: new RecordingLogger(),
    stop: new AbortController().signal,
    maxRetryMs: 1,
  });
  strictEqual(await settler.succeeded(held), true);
  strictEqual(untrackedBefore, -1, "untracked while the delete was still being retried");
  ok(untracked);
});

Deno.test("Settler: at the shutdown deadline a failing delete stops retrying and says so", async () => {
  const stop = new AbortController();
  const failing = deletesFailing(Array.from({ length: 1_000 }, unavailable), (attempt) => {
    if (attempt === 20) stop.abort();
  });
  const { settler, log } = settlerWith(failing.calls, stop.signal);
  strictEqual(await settler.succeeded(held), false);
  ok(failing.attempts() >= 20 && failing.attempts() < 30, `${failing.attempts()} attempts`);
  ok(log.at("error").some((line) => line.msg.includes("could not be deleted")));
});

Deno.test("Settler: a stale receipt after a lost answer is 'may have succeeded' at warn level, counted", async () => {
  const stale = new BatchEntryError("ReceiptHandleIsInvalid", "The receipt handle is not valid");
  const failing = deletesFailing([reset(), stale]);
  const { settler, log, counts } = settlerWith(failing.calls, new AbortController().signal);
  strictEqual(await settler.succeeded(held), false);
  strictEqual(failing.attempts(), 2);
  strictEqual(counts.uncertain, 1);
  deepStrictEqual(log.at("error"), []);
  ok(log.at("warn").some((line) => line.msg.includes("may have succeeded")));
});

Deno.test("Settler: a stale receipt after refusals SQS answered is a failed delete, not an uncertain one", async () => {
  const stale = new BatchEntryError("ReceiptHandleIsInvalid", "The receipt handle is not valid");
  const throttled = Object.assign(new Error("Rate exceeded"), {
    name: "ThrottlingException",
    $metadata: { httpStatusCode: 400 },
  });
  const failing = deletesFailing([throttled, stale]);
  const { settler, log, counts } = settlerWith(failing.calls, new AbortController().signal);
  strictEqual(await settler.succeeded(held), false);
  strictEqual(counts.uncertain, 0);
  ok(log.at("error").some((line) => line.msg.includes("could not be deleted")));
});
