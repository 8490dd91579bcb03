/**
 * Unit tests of visibility.ts on a fake clock: how long a failed message stays
 * hidden and how long an extension asks for; the keeper's deadlines count from
 * send times, extensions are scheduled from send times, slow answers widen the
 * margin and get hedged, a missed deadline is reported once, the 12-hour cap is
 * announced before it is reached, a new delivery re-arms the entry, and one timer
 * serves every message.
 */
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import {
  extensionSeconds,
  releaseVisibility,
  SQS_MAX_VISIBILITY_SECONDS,
  VisibilityKeeper,
  type VisibilityKeeperOptions,
} from "../../src/worker/visibility.ts";
import type { JobMessage } from "../../src/worker/message.ts";
import { FakeClock } from "../support/fake_clock.ts";
import { RecordingLogger } from "../support/recording_logger.ts";

interface Call {
  receiptHandle: string;
  seconds: number;
  sentAt: number;
}

/**
 * A changer on the fake clock: each call is answered `answerMs` later (never,
 * for Infinity), with the error `fail` returns for it, if any.
 */
function slowChanger(
  clock: FakeClock,
  answerMs: (index: number) => number,
  fail: (index: number) => unknown = () => undefined,
) {
  const calls: Call[] = [];
  return {
    calls,
    changeVisibility(receiptHandle: string, seconds: number): Promise<void> {
      const index = calls.length;
      calls.push({ receiptHandle, seconds, sentAt: clock.now() });
      const ms = answerMs(index);
      if (ms === Infinity) return new Promise(() => {});
      return new Promise((resolve, reject) => {
        clock.setTimer(() => {
          const error = fail(index);
          if (error === undefined) resolve();
          else reject(error);
        }, ms);
      });
    },
  };
}

function message(id: string, receiveSentAt: number): JobMessage {
  return {
    id,
    receiptHandle: `rh-${id}`,
    body: "",
    queueUrl: "http://127.0.0.1/000000000000/q",
    receiveCount: 1,
    attributes: {},
    receiveSentAt,
  };
}

function keeperOn(
  clock: FakeClock,
  changer: VisibilityKeeperOptions["changer"],
  extra: Partial<VisibilityKeeperOptions> = {},
) {
  const log = new RecordingLogger();
  const counts = { extended: 0, lapsed: 0 };
  const keeper = new VisibilityKeeper({
    changer,
    timeoutSeconds: 10,
    extendAfterSeconds: 7.5,
    log,
    clock,
    onExtended: () => counts.extended++,
    onLapsed: () => counts.lapsed++,
    ...extra,
  });
  return { keeper, log, counts };
}

const lapses = (log: RecordingLogger) =>
  log.at("warn").filter((line) => line.msg.includes("may have been missed"));

Deno.test("VisibilityKeeper: the first deadline counts from the receive call's send time", async () => {
  const clock = new FakeClock(100_000);
  const changer = slowChanger(clock, () => 20);
  const { keeper } = keeperOn(clock, changer);
  // The receive was sent 8 s ago (its answer was slow): 2 s of the 10 s are left,
  // less than the 2.5 s margin, so the extension goes out at once.
  keeper.track(message("slow", clock.now() - 8_000));
  await clock.advance(0);
  strictEqual(changer.calls.length, 1);
  strictEqual(changer.calls[0].sentAt, 100_000);
  // A message whose receive answered at once waits its -e.
  keeper.track(message("quick", clock.now()));
  await clock.advance(7_000);
  strictEqual(changer.calls.filter((call) => call.receiptHandle === "rh-quick").length, 0);
  await clock.advance(600);
  strictEqual(changer.calls.filter((call) => call.receiptHandle === "rh-quick").length, 1);
  keeper.stop();
});

Deno.test("VisibilityKeeper: with answers taking 5 s, extensions follow send times and no deadline passes", async () => {
  const clock = new FakeClock();
  const changer = slowChanger(clock, () => 5_000);
  const { keeper, log, counts } = keeperOn(clock, changer);
  const held = message("m", 0);
  keeper.track(held);
  await clock.advance(60_000);
  const sends = changer.calls.map((call) => call.sentAt);
  ok(sends.length >= 8, `only ${sends.length} extensions in 60 s`);
  // Each confirmed extension holds the message 10 s from its send time; the next
  // one is sent before that runs out (the old keeper waited -e after the answer:
  // 12.5 s between sends, a lapse every time).
  let deadline = 10_000;
  for (const sentAt of sends) {
    ok(sentAt < deadline, `extension sent at ${sentAt} after the deadline ${deadline}`);
    deadline = Math.max(deadline, sentAt + 10_000);
  }
  deepStrictEqual(lapses(log), []);
  strictEqual(counts.lapsed, 0);
  ok((keeper.deadlineOf(held) ?? 0) > clock.now(), "the known deadline fell behind the clock");
  keeper.stop();
});

Deno.test("VisibilityKeeper: slow answers widen the margin to twice the slowest, up to half of -t", async () => {
  const clock = new FakeClock();
  const changer = slowChanger(clock, () => 2_000);
  const { keeper } = keeperOn(clock, changer, { timeoutSeconds: 20, extendAfterSeconds: 18 });
  strictEqual(keeper.marginMs, 2_000);
  keeper.track(message("m", 0));
  await clock.advance(20_500);
  ok(
    keeper.marginMs > 3_900 && keeper.marginMs <= 4_000,
    `margin ${keeper.marginMs}: not twice the 2 s answer`,
  );
  const slower = slowChanger(clock, () => 30_000);
  const second = keeperOn(clock, slower, { timeoutSeconds: 20, extendAfterSeconds: 18 });
  second.keeper.track(message("n", clock.now()));
  await clock.advance(60_000);
  strictEqual(second.keeper.marginMs, 10_000, "capped at half of -t");
  keeper.stop();
  second.keeper.stop();
});

Deno.test("VisibilityKeeper: an unanswered extension is hedged, at most three in flight, and the lapse is reported once", async () => {
  const clock = new FakeClock();
  // Every call hangs until the SDK's 10 s request timeout.
  const timedOut = Object.assign(new Error("socket timed out"), { name: "TimeoutError" });
  const changer = slowChanger(clock, () => 10_000, () => timedOut);
  const { keeper, log, counts } = keeperOn(clock, changer);
  keeper.track(message("m", 0));
  await clock.advance(7_500);
  strictEqual(changer.calls.length, 1, "the first extension at -e");
  await clock.advance(1_250);
  strictEqual(changer.calls.length, 2, "a hedge halfway to the deadline");
  await clock.advance(1_000);
  strictEqual(changer.calls.length, 3, "more than three calls in flight");
  strictEqual(counts.lapsed, 0, "a lapse while calls that may prove coverage are in flight");
  await clock.advance(30_000);
  strictEqual(counts.lapsed, 1);
  const [lapse] = lapses(log);
  strictEqual(lapse.fields.message_id, "m");
  strictEqual(lapses(log).length, 1, "the lapse is reported more than once");
  keeper.stop();
});

Deno.test("VisibilityKeeper: a failed extension is retried at once and the message stays covered", async () => {
  const clock = new FakeClock();
  const throttled = Object.assign(new Error("Rate exceeded"), { name: "ThrottlingException" });
  const changer = slowChanger(clock, () => 10, (index) => index < 3 ? throttled : undefined);
  const { keeper, log, counts } = keeperOn(clock, changer);
  keeper.track(message("m", 0));
  await clock.advance(9_000);
  strictEqual(changer.calls.length, 4, "three failures, then a success");
  ok(changer.calls[3].sentAt < 10_000, "the retries ran past the deadline");
  strictEqual(log.at("warn").filter((line) => line.msg.includes("retrying")).length, 3);
  strictEqual(counts.lapsed, 0);
  keeper.stop();
});

Deno.test("VisibilityKeeper: the 12-hour cap is announced with the last extension, before it is reached", async () => {
  const clock = new FakeClock();
  const changer = slowChanger(clock, () => 10);
  const { keeper, log, counts } = keeperOn(clock, changer, {
    timeoutSeconds: 3_600,
    extendAfterSeconds: 3_000,
  });
  keeper.track(message("old", 0));
  await clock.advance(42_100_000);
  const last = changer.calls.at(-1)!;
  // Sent 42,000 s after the receive: 1,195 s of room below the cap and its margin.
  deepStrictEqual([last.sentAt, last.seconds], [42_000_000, 1_195]);
  const warned = log.at("warn").find((line) => line.msg.includes("12-hour limit with this"));
  ok(warned, "no warning with the last extension");
  strictEqual(warned.fields.visible_for_s, 1_195);
  strictEqual(counts.lapsed, 0, "a lapse before the cap");
  await clock.advance(2_000_000);
  strictEqual(changer.calls.at(-1), last, "extended past the cap");
  strictEqual(counts.lapsed, 1);
  ok(log.at("warn").some((line) => line.msg.includes("12-hour visibility limit was reached")));
  strictEqual(keeper.size, 1, "a capped message stays tracked until settled");
  keeper.stop();
});

Deno.test("VisibilityKeeper: a new delivery of a capped message re-arms it with a new window", async () => {
  const clock = new FakeClock();
  const changer = slowChanger(clock, () => 10);
  const { keeper } = keeperOn(clock, changer, { timeoutSeconds: 3_600, extendAfterSeconds: 3_000 });
  const held = message("m", 0);
  keeper.track(held);
  await clock.advance(43_300_000);
  const before = changer.calls.length;
  const again = { ...message("m", clock.now()), receiptHandle: "rh-m-2" };
  keeper.renew(held, again);
  held.receiptHandle = again.receiptHandle;
  await clock.advance(7_000_000);
  const renewed = changer.calls.slice(before);
  ok(renewed.length >= 2, "no extension after the new delivery");
  ok(renewed.every((call) => call.receiptHandle === "rh-m-2" && call.seconds === 3_600));
  keeper.stop();
});

Deno.test("VisibilityKeeper: covered() waits for a confirmed extension once the deadline is past", async () => {
  const clock = new FakeClock(50_000);
  const changer = slowChanger(clock, () => 300);
  const { keeper } = keeperOn(clock, changer);
  const late = message("late", clock.now() - 12_000);
  keeper.track(late);
  let covered: boolean | undefined;
  keeper.covered(late).then((value) => covered = value);
  await clock.advance(100);
  strictEqual(covered, undefined, "covered before any extension answered");
  await clock.advance(300);
  strictEqual(covered, true);
  const fresh = message("fresh", clock.now());
  keeper.track(fresh);
  strictEqual(await keeper.covered(fresh), true);
  keeper.stop();
});

Deno.test("VisibilityKeeper: an extension answered after the deadline proves the message was kept", async () => {
  const clock = new FakeClock();
  const changer = slowChanger(clock, (index) => index === 0 ? 4_000 : 10);
  const { keeper, counts } = keeperOn(clock, changer);
  keeper.track(message("m", 0));
  await clock.advance(30_000);
  strictEqual(counts.lapsed, 0);
  keeper.stop();
});

Deno.test("VisibilityKeeper: covered() is false when SQS calls the receipt stale, or the message is untracked", async () => {
  const clock = new FakeClock(50_000);
  const stale = Object.assign(new Error("handle is stale"), { name: "ReceiptHandleIsInvalid" });
  const changer = slowChanger(clock, () => 10, () => stale);
  const { keeper, log } = keeperOn(clock, changer);
  const late = message("late", clock.now() - 12_000);
  keeper.track(late);
  const verdict = keeper.covered(late);
  await clock.advance(20);
  strictEqual(await verdict, false);
  ok(log.at("warn").some((line) => line.msg.includes("no longer hidden for this worker")));
  const other = message("other", clock.now() - 12_000);
  keeper.track(other);
  const waiting = keeper.covered(other);
  keeper.untrack(other);
  strictEqual(await waiting, false);
  keeper.stop();
  strictEqual(clock.pending, 0, "a timer is left after stop");
});

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

/**
 * A changer answered at once, without a timer of its own: call number `n`
 * (0-based) fails when `fail(n)` says so.
 */
function promptChanger(clock: FakeClock, fail: (index: number) => boolean = () => false) {
  const calls: Call[] = [];
  return {
    calls,
    changeVisibility(receiptHandle: string, seconds: number): Promise<void> {
      const index = calls.length;
      calls.push({ receiptHandle, seconds, sentAt: clock.now() });
      return fail(index) ? Promise.reject(new Error("Throttling: slow down")) : Promise.resolve();
    },
  };
}

/** The times of the calls made with `receiptHandle`. */
function callsOf(calls: Call[], receiptHandle: string): number[] {
  return calls.filter((call) => call.receiptHandle === receiptHandle).map((call) => call.sentAt);
}

Deno.test("VisibilityKeeper: extends after extendAfterSeconds with timeoutSeconds, repeatedly", async () => {
  const clock = new FakeClock();
  const changer = promptChanger(clock);
  const { keeper, log, counts } = keeperOn(clock, changer, {
    timeoutSeconds: 30,
    extendAfterSeconds: 0.1,
  });
  const tracked = message("m", 0);
  keeper.track(tracked);
  strictEqual(keeper.size, 1);
  await clock.advance(99);
  strictEqual(changer.calls.length, 0, "extended before extendAfterSeconds");
  await clock.advance(201);
  deepStrictEqual(changer.calls.map((call) => call.sentAt), [100, 200, 300]);
  ok(changer.calls.every((call) => call.receiptHandle === "rh-m" && call.seconds === 30));
  strictEqual(counts.extended, 3, "onExtended is called per extension");
  deepStrictEqual(log.at("warn"), []);
  keeper.untrack(tracked);
  strictEqual(clock.pending, 0, "a timer is left with nothing tracked");
});

Deno.test("VisibilityKeeper: each message is extended on its own schedule, counted from its receipt", async () => {
  const clock = new FakeClock();
  const changer = promptChanger(clock);
  const { keeper } = keeperOn(clock, changer, { timeoutSeconds: 30, extendAfterSeconds: 0.1 });
  keeper.track(message("a", 0));
  await clock.advance(150);
  keeper.track(message("b", 150));
  await clock.advance(200);
  deepStrictEqual(callsOf(changer.calls, "rh-a"), [100, 200, 300]);
  deepStrictEqual(callsOf(changer.calls, "rh-b"), [250, 350], "b was extended early, with a");
  keeper.stop();
});

Deno.test("VisibilityKeeper: a failing change is retried after retryMs, logged, and extension continues", async () => {
  const clock = new FakeClock();
  // Calls 0 and 1 fail; later ones succeed.
  const changer = promptChanger(clock, (index) => index < 2);
  const { keeper, log } = keeperOn(clock, changer, {
    timeoutSeconds: 45,
    extendAfterSeconds: 0.3,
    retryMs: 20,
  });
  keeper.track(message("m", 0));
  await clock.advance(700);
  // Retries come after retryMs; after the success, the normal period again.
  deepStrictEqual(changer.calls.map((call) => call.sentAt), [300, 320, 340, 640]);
  ok(changer.calls.every((call) => call.seconds === 45));
  const warnings = log.at("warn");
  deepStrictEqual(
    warnings.map((line) => [line.msg, line.fields.message_id, line.fields.attempt]),
    [["visibility extension failed; retrying", "m", 1], [
      "visibility extension failed; retrying",
      "m",
      2,
    ]],
  );
  ok(warnings.every((line) => String(line.fields.error).includes("Throttling")));
  strictEqual(keeper.size, 1);
  keeper.stop();
});

Deno.test("VisibilityKeeper: an always-failing changer never stops the retries", async () => {
  const clock = new FakeClock();
  const changer = promptChanger(clock, () => true);
  const { keeper, log } = keeperOn(clock, changer, {
    timeoutSeconds: 30,
    extendAfterSeconds: 0.05,
    retryMs: 10,
  });
  keeper.track(message("m", 0));
  await clock.advance(100);
  deepStrictEqual(changer.calls.map((call) => call.sentAt), [50, 60, 70, 80, 90, 100]);
  strictEqual(log.at("warn").at(-1)?.fields.attempt, 6);
  keeper.stop();
});

Deno.test("VisibilityKeeper: holds one delivery per message id; a new receipt handle is used from then on", async () => {
  const clock = new FakeClock();
  const changer = promptChanger(clock);
  const { keeper } = keeperOn(clock, changer, { timeoutSeconds: 30, extendAfterSeconds: 0.05 });
  const held = message("a", 0);
  keeper.track(held);
  strictEqual(keeper.holding("a"), held);
  strictEqual(keeper.holding("b"), undefined);
  // Another delivery of the same message is not the one held: untracking it keeps the held one.
  keeper.untrack({ ...held, receiptHandle: "rh-a2" });
  strictEqual(keeper.holding("a"), held);
  held.receiptHandle = "rh-a2";
  await clock.advance(50);
  deepStrictEqual(callsOf(changer.calls, "rh-a2"), [50]);
  keeper.untrack(held);
  strictEqual(keeper.holding("a"), undefined);
  strictEqual(keeper.size, 0);
});

Deno.test("VisibilityKeeper: untrack stops extensions for that message only", async () => {
  const clock = new FakeClock();
  const changer = promptChanger(clock);
  const { keeper } = keeperOn(clock, changer, { timeoutSeconds: 30, extendAfterSeconds: 0.05 });
  const a = message("a", 0);
  const b = message("b", 0);
  keeper.track(a);
  keeper.track(b);
  await clock.advance(50);
  keeper.untrack(a);
  strictEqual(keeper.size, 1);
  await clock.advance(150);
  deepStrictEqual(callsOf(changer.calls, "rh-a"), [50], "an untracked message was extended");
  deepStrictEqual(callsOf(changer.calls, "rh-b"), [50, 100, 150, 200]);
  keeper.untrack(b);
  strictEqual(keeper.size, 0);
  strictEqual(clock.pending, 0, "a timer is left with nothing tracked");
  await clock.advance(1_000);
  strictEqual(changer.calls.length, 5, "extended with nothing tracked");
});

Deno.test("VisibilityKeeper: many tracked messages are all extended, with a single timer", async () => {
  const clock = new FakeClock(1_000);
  const changer = promptChanger(clock);
  const { keeper } = keeperOn(clock, changer, { timeoutSeconds: 60, extendAfterSeconds: 0.05 });
  // Each message is due earlier than the one before, so every track() re-arms.
  const messages = Array.from({ length: 50 }, (_, i) => message(`m${i}`, 1_000 - i / 2));
  for (const each of messages) keeper.track(each);
  strictEqual(keeper.size, 50);
  await clock.advance(200);
  ok(messages.every((each) => callsOf(changer.calls, each.receiptHandle).length >= 2));
  strictEqual(clock.maxPending, 1, "more than one keeper timer was pending at once");
  keeper.stop();
  strictEqual(clock.pending, 0, "stop() left a timer behind");
});

Deno.test("VisibilityKeeper: stop ends every extension and leaves no timer", async () => {
  const clock = new FakeClock();
  const changer = promptChanger(clock);
  const { keeper } = keeperOn(clock, changer, { timeoutSeconds: 30, extendAfterSeconds: 0.03 });
  keeper.track(message("a", 0));
  keeper.track(message("b", 0));
  await clock.advance(30);
  strictEqual(changer.calls.length, 2);
  keeper.stop();
  strictEqual(keeper.size, 0);
  strictEqual(clock.pending, 0);
  await clock.advance(1_000);
  strictEqual(changer.calls.length, 2);
});
