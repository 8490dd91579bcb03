/**
 * Unit tests of settling on a fake clock: a succeeded job's delete is retried
 * with back-off for as long as the worker holds the message (until its shutdown
 * deadline), a delete whose answer was lost is called uncertain, failures are
 * released after the back-off delay, give-backs at once, poison is parked for as
 * long as SQS allows, and no path deletes a message whose job did not succeed.
 */
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { type SettleCalls, Settler, type SettlerOptions } from "../../src/worker/settle.ts";
import { BatchEntryError } from "../../src/worker/sqs_batcher.ts";
import { FakeClock, settle } from "../support/fake_clock.ts";
import { RecordingLogger } from "../support/recording_logger.ts";
import { deferred, jobMessage } from "../support/unit.ts";

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

/** A stale receipt handle, as SQS refuses it in a batch. */
function stale(): BatchEntryError {
  return new BatchEntryError("ReceiptHandleIsInvalid", "The receipt handle is not valid");
}

/**
 * Fake SettleCalls on `clock`: deletes and visibility changes throw the errors of
 * `deleteErrors` and `changeErrors` in turn, then succeed; `onDelete` hears each
 * delete attempt (numbered from 1).
 */
function fakeCalls(
  clock: FakeClock,
  options: {
    deleteErrors?: unknown[];
    changeErrors?: unknown[];
    onDelete?: (attempt: number) => void;
  } = {},
) {
  const deleteErrors = [...(options.deleteErrors ?? [])];
  const changeErrors = [...(options.changeErrors ?? [])];
  const events: string[] = [];
  const deletes: { receiptHandle: string; at: number }[] = [];
  const changes: { receiptHandle: string; seconds: number }[] = [];
  const calls: SettleCalls = {
    delete(receiptHandle) {
      events.push(`delete ${receiptHandle}`);
      deletes.push({ receiptHandle, at: clock.now() });
      options.onDelete?.(deletes.length);
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

/** A settler on a fake clock whose counters and log the test reads. */
function settlerOn(
  options: Parameters<typeof fakeCalls>[1] & Partial<SettlerOptions> = {},
) {
  const clock = new FakeClock();
  const fake = fakeCalls(clock, options);
  const log = new RecordingLogger();
  const counts = { deleted: 0, released: 0, uncertain: 0, untracked: [] as string[] };
  const settler = new Settler({
    calls: fake.calls,
    untrack: (message) => {
      counts.untracked.push(message.id);
      fake.events.push(`untrack ${message.id}`);
    },
    log,
    clock,
    onDeleted: () => counts.deleted++,
    onReleased: () => counts.released++,
    onDeleteUncertain: () => counts.uncertain++,
    ...options,
  });
  return { clock, settler, log, counts, ...fake };
}

/** Runs `settling` to its end on `clock`: the pauses between attempts pass at once. */
async function finish<T>(clock: FakeClock, settling: Promise<T>): Promise<T> {
  await clock.advance(3_600_000);
  return await settling;
}

Deno.test("Settler: success deletes the message, then untracks it and counts it", async () => {
  const { settler, events, changes, log, counts } = settlerOn();
  strictEqual(await settler.succeeded(jobMessage("m")), true);
  deepStrictEqual(events, ["delete rh-m", "untrack m"]);
  deepStrictEqual(changes, []);
  strictEqual(counts.deleted, 1);
  deepStrictEqual(log.at("warn"), []);
  deepStrictEqual(log.at("error"), []);
});

Deno.test("Settler: a delete failing twice then succeeding is retried after 250 and 500 ms", async () => {
  const throttled = Object.assign(new Error("Rate exceeded"), { name: "ThrottlingException" });
  const { clock, settler, deletes, changes, log, counts } = settlerOn({
    deleteErrors: [throttled, throttled],
  });
  strictEqual(await finish(clock, settler.succeeded(jobMessage("m"))), true);
  deepStrictEqual(deletes.map((call) => [call.receiptHandle, call.at]), [
    ["rh-m", 0],
    ["rh-m", 250],
    ["rh-m", 750],
  ]);
  deepStrictEqual(changes, []);
  strictEqual(counts.deleted, 1);
  deepStrictEqual(counts.untracked, ["m"]);
  deepStrictEqual(
    log.at("warn").map((line) => [line.msg, line.fields.attempt]),
    [["delete failed; retrying", 1], ["delete failed; retrying", 2]],
  );
  deepStrictEqual(log.at("error"), []);
});

Deno.test("Settler: a succeeded job's delete is retried past five attempts while the worker runs", async () => {
  const { clock, settler, deletes, log, counts } = settlerOn({
    deleteErrors: Array.from({ length: 12 }, unavailable),
    stop: new AbortController().signal,
  });
  strictEqual(await finish(clock, settler.succeeded(jobMessage("m"))), true);
  strictEqual(deletes.length, 13);
  const pauses = deletes.slice(1).map((call, i) => call.at - deletes[i].at);
  deepStrictEqual(pauses, [
    250,
    500,
    1_000,
    2_000,
    4_000,
    5_000,
    5_000,
    5_000,
    5_000,
    5_000,
    5_000,
    5_000,
  ]);
  strictEqual(counts.deleted, 1);
  deepStrictEqual(counts.untracked, ["m"], "untracked once, after the delete succeeded");
  deepStrictEqual(log.at("error"), []);
});

Deno.test("Settler: the message stays tracked (extended) until its delete is done", async () => {
  let untrackedAt = -1;
  const { clock, settler, counts } = settlerOn({
    deleteErrors: Array.from({ length: 6 }, unavailable),
    stop: new AbortController().signal,
    onDelete: (attempt) => {
      if (counts.untracked.length > 0 && untrackedAt === -1) untrackedAt = attempt;
    },
  });
  strictEqual(await finish(clock, settler.succeeded(jobMessage("m"))), true);
  strictEqual(untrackedAt, -1, "untracked while the delete was still being retried");
  deepStrictEqual(counts.untracked, ["m"]);
});

Deno.test("Settler: at the shutdown deadline a failing delete stops retrying and says so", async () => {
  const stop = new AbortController();
  const { clock, settler, deletes, log } = settlerOn({
    deleteErrors: Array.from({ length: 1_000 }, unavailable),
    stop: stop.signal,
    onDelete: (attempt) => {
      if (attempt === 20) stop.abort();
    },
  });
  strictEqual(await finish(clock, settler.succeeded(jobMessage("m"))), false);
  strictEqual(deletes.length, 20, "past the deadline, the attempts already made are enough");
  ok(log.at("error").some((line) => line.msg.includes("could not be deleted")));
});

Deno.test("Settler: a ReceiptHandleIsInvalid entry error is final: no retry, false, an error line", async () => {
  const { clock, settler, deletes, changes, log, counts } = settlerOn({
    deleteErrors: [new BatchEntryError("ReceiptHandleIsInvalid", "stale handle")],
  });
  strictEqual(await settler.succeeded(jobMessage("m")), false);
  strictEqual(clock.pending, 0, "a final error was waited on");
  deepStrictEqual(deletes.map((call) => call.receiptHandle), ["rh-m"]);
  deepStrictEqual(changes, []);
  strictEqual(counts.deleted, 0);
  deepStrictEqual(counts.untracked, ["m"], "untracked even when the delete failed");
  deepStrictEqual(log.at("warn").map((line) => line.msg), ["delete failed"]);
  strictEqual(log.at("error").length, 1);
  ok(log.at("error")[0].msg.includes("could not be deleted"));
  strictEqual(log.at("error")[0].fields.message_id, "m");
});

Deno.test("Settler: a stale handle replaced by a newer delivery meanwhile is retried with the new one", async () => {
  const { clock, settler, deletes, log, counts } = settlerOn({ deleteErrors: [stale()] });
  const message = jobMessage("m");
  const deleted = settler.succeeded(message);
  // The worker received the message again while the delete was on its way.
  message.receiptHandle = "rh-m2";
  strictEqual(await finish(clock, deleted), true);
  deepStrictEqual(deletes.map((call) => call.receiptHandle), ["rh-m", "rh-m2"]);
  strictEqual(counts.deleted, 1);
  deepStrictEqual(log.at("error"), []);
});

Deno.test("Settler: without a stop signal a delete failing every attempt gives up after `attempts`", async () => {
  const { clock, settler, deletes, log } = settlerOn({
    deleteErrors: [new Error("down"), new Error("down"), new Error("down")],
    attempts: 2,
  });
  strictEqual(await finish(clock, settler.succeeded(jobMessage("m"))), false);
  strictEqual(deletes.length, 2);
  deepStrictEqual(log.at("warn").map((line) => line.msg), [
    "delete failed; retrying",
    "delete failed",
  ]);
  strictEqual(log.at("error").length, 1);
});

Deno.test("Settler: a stale receipt after a lost answer is 'may have succeeded' at warn level, counted", async () => {
  const { clock, settler, deletes, log, counts } = settlerOn({
    deleteErrors: [reset(), stale()],
    stop: new AbortController().signal,
  });
  strictEqual(await finish(clock, settler.succeeded(jobMessage("m"))), false);
  strictEqual(deletes.length, 2);
  strictEqual(counts.uncertain, 1);
  deepStrictEqual(log.at("error"), []);
  ok(log.at("warn").some((line) => line.msg.includes("may have succeeded")));
});

Deno.test("Settler: a stale receipt after refusals SQS answered is a failed delete, not an uncertain one", async () => {
  const throttled = Object.assign(new Error("Rate exceeded"), {
    name: "ThrottlingException",
    $metadata: { httpStatusCode: 400 },
  });
  const { clock, settler, log, counts } = settlerOn({
    deleteErrors: [throttled, stale()],
    stop: new AbortController().signal,
  });
  strictEqual(await finish(clock, settler.succeeded(jobMessage("m"))), false);
  strictEqual(counts.uncertain, 0);
  ok(log.at("error").some((line) => line.msg.includes("could not be deleted")));
});

Deno.test("Settler: failure untracks, then releases with the back-off delay, and never deletes", async () => {
  const { settler, events, deletes, changes, log, counts } = settlerOn({
    backoff: { base: 10, max: 100 },
  });
  await settler.failed(jobMessage("m", { receiveCount: 3 }));
  deepStrictEqual(events, ["untrack m", "change rh-m 40"]);
  deepStrictEqual(deletes, [], "a failed message was deleted");
  strictEqual(counts.released, 1);
  const info = log.at("info");
  strictEqual(info.length, 1);
  strictEqual(info[0].msg, "message released");
  strictEqual(info[0].fields.visible_in_s, 40);
  await settler.failed(jobMessage("n", { receiveCount: 9 }));
  deepStrictEqual(changes.at(-1), { receiptHandle: "rh-n", seconds: 100 });
  deepStrictEqual(deletes, []);
});

Deno.test("Settler: failure without back-off makes the message visible at once", async () => {
  const { settler, deletes, changes } = settlerOn();
  await settler.failed(jobMessage("m", { receiveCount: 5 }));
  deepStrictEqual(changes, [{ receiptHandle: "rh-m", seconds: 0 }]);
  deepStrictEqual(deletes, []);
});

Deno.test("Settler: a release that keeps failing warns and still never deletes", async () => {
  const { clock, settler, deletes, changes, log, counts } = settlerOn({
    changeErrors: [new Error("down"), new Error("down")],
    attempts: 2,
  });
  await finish(clock, settler.failed(jobMessage("m")));
  strictEqual(changes.length, 2);
  deepStrictEqual(deletes, []);
  strictEqual(counts.released, 0);
  ok(log.at("warn").at(-1)?.msg.includes("could not change the message's visibility"));
});

Deno.test("Settler: giveBack makes the message visible at once, whatever the back-off", async () => {
  const { settler, events, deletes, log } = settlerOn({ backoff: { base: 30, max: 600 } });
  await settler.giveBack(jobMessage("m", { receiveCount: 4 }));
  deepStrictEqual(events, ["untrack m", "change rh-m 0"]);
  deepStrictEqual(deletes, []);
  strictEqual(log.at("info")[0].msg, "message given back");
});

Deno.test("Settler: park hides the message as long as SQS allows and logs an error line", async () => {
  const { clock, settler, deletes, changes, log } = settlerOn();
  await clock.advance(2_500);
  await settler.park(jobMessage("poison", { receiveCount: 7 }), 5);
  deepStrictEqual(deletes, [], "a parked message was deleted");
  // 12 hours less the 5 s margin, counted from the receive call 2.5 s ago.
  deepStrictEqual(changes, [{ receiptHandle: "rh-poison", seconds: 43_192 }]);
  const errors = log.at("error");
  strictEqual(errors.length, 1);
  ok(errors[0].msg.includes("poison message"));
  deepStrictEqual(
    [errors[0].fields.message_id, errors[0].fields.receive_count, errors[0].fields.max_receives],
    ["poison", 7, 5],
  );
  strictEqual(errors[0].fields.hidden_for_s, 43_192);
  strictEqual(log.at("info")[0].msg, "message parked");
});

Deno.test("Settler: a park is counted as parked, not as released", async () => {
  let parked = 0;
  const { settler, counts } = settlerOn({ onParked: () => parked++ });
  await settler.park(jobMessage("poison", { receiveCount: 7 }), 5);
  deepStrictEqual([parked, counts.released], [1, 0]);
});

Deno.test("Settler: a message back while its release is unanswered logs its release first, once", async () => {
  const clock = new FakeClock();
  const answer = deferred<void>();
  const log = new RecordingLogger();
  const settler = new Settler({
    calls: { delete: () => Promise.resolve(), changeVisibility: () => answer.promise },
    untrack: () => {},
    log,
    clock,
    backoff: { base: 0, max: 0 },
  });
  const releasing = settler.failed(jobMessage("m"));
  await settle();
  strictEqual(log.lines.length, 0, "nothing said before SQS answered");
  // The next delivery: the loop tells the settler before its job can start.
  settler.redelivered("m");
  settler.redelivered("other");
  deepStrictEqual(log.lines.map((line) => [line.msg, line.fields.message_id]), [
    ["message released", "m"],
  ]);
  answer.resolve();
  await releasing;
  strictEqual(log.lines.length, 1, "said once");
  settler.redelivered("m");
  strictEqual(log.lines.length, 1, "a later delivery says nothing more");
});

Deno.test("Settler: park of a message received long ago hides it only for the room left", async () => {
  const { clock, settler, changes, deletes } = settlerOn();
  await clock.advance(43_000_000);
  await settler.park(jobMessage("old"), 3);
  deepStrictEqual(changes, [{ receiptHandle: "rh-old", seconds: 195 }]);
  deepStrictEqual(deletes, []);
});

Deno.test("Settler: a job's Retry-After replaces the back-off, within SQS's 12 hours", async () => {
  const { clock, settler, changes, deletes, log } = settlerOn({ backoff: { base: 5, max: 900 } });
  await settler.failed(jobMessage("busy", { receiveCount: 3 }), 7);
  deepStrictEqual(changes, [{ receiptHandle: "rh-busy", seconds: 7 }]);
  strictEqual(log.at("info")[0].fields.visible_in_s, 7);
  await settler.failed(jobMessage("now"), 0);
  deepStrictEqual(changes.at(-1), { receiptHandle: "rh-now", seconds: 0 });
  // Received 2 hours ago: at most 10 hours (less the margin) are left.
  await clock.advance(7_200_000);
  await settler.failed(jobMessage("long"), 43_200);
  deepStrictEqual(changes.at(-1), { receiptHandle: "rh-long", seconds: 35_995 });
  deepStrictEqual(deletes, []);
});
