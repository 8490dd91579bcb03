/**
 * Unit tests of the visibility keeper's timing on a fake clock: deadlines count
 * from send times, extensions are scheduled from send times, slow answers widen
 * the margin and get hedged, a missed deadline is reported once, the 12-hour cap
 * is announced before it is reached, and a new delivery re-arms the entry.
 */
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { VisibilityKeeper, type VisibilityKeeperOptions } from "../../src/worker/visibility.ts";
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
