/**
 * Unit tests of the shutdown on a fake clock: the first signal drains (no new
 * receive, calls in flight cancelled after --wait + 2 s, running jobs terminated
 * at the deadline, when deletes stop retrying), a second one kills.
 */
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { RECEIVE_DRAIN_MARGIN_MS, Shutdown } from "../../src/worker/shutdown.ts";
import { FakeClock } from "../support/fake_clock.ts";
import { RecordingLogger } from "../support/recording_logger.ts";

function shutdownOn() {
  const clock = new FakeClock();
  const log = new RecordingLogger();
  const stops: string[] = [];
  const job = {
    terminate: (reason: string) => void stops.push(`terminate: ${reason}`),
    kill: (reason: string) => void stops.push(`kill: ${reason}`),
  };
  const running = new Set([job]);
  const shutdown = new Shutdown({ running, waitSeconds: 20, timeoutSeconds: 60, log, clock });
  return { clock, log, stops, running, shutdown };
}

Deno.test("Shutdown: the first signal drains; receives are cancelled after --wait + 2 s", async () => {
  const { clock, log, stops, shutdown } = shutdownOn();
  strictEqual(shutdown.stopping, false);
  strictEqual(shutdown.stop("SIGTERM"), true, "the first signal begins the drain");
  strictEqual(shutdown.stopping, true);
  ok(shutdown.draining.aborted, "the receive loop may still send calls");
  deepStrictEqual(
    log.at("info").map((line) => [line.msg, line.fields]),
    [["draining: no new messages; waiting for running jobs", {
      signal: "SIGTERM",
      running: 1,
      shutdown_timeout: 60,
    }]],
  );
  await clock.advance(20_000 + RECEIVE_DRAIN_MARGIN_MS - 1);
  ok(!shutdown.receivesCancelled.aborted, "a receive call in flight was cancelled early");
  await clock.advance(1);
  ok(shutdown.receivesCancelled.aborted);
  deepStrictEqual(stops, []);
});

Deno.test("Shutdown: at the deadline running jobs are terminated and deletes stop retrying", async () => {
  const { clock, stops, shutdown } = shutdownOn();
  shutdown.stop("SIGINT");
  await clock.advance(59_999);
  ok(!shutdown.deadlinePassed.aborted);
  await clock.advance(1);
  ok(shutdown.deadlinePassed.aborted);
  deepStrictEqual(stops, ["terminate: shutdown timeout"]);
  strictEqual(clock.pending, 0);
});

Deno.test("Shutdown: a second signal kills at once; later ones do nothing", () => {
  const { log, stops, shutdown } = shutdownOn();
  shutdown.stop("SIGTERM");
  strictEqual(shutdown.stop("SIGINT"), false);
  strictEqual(shutdown.forced, true);
  ok(shutdown.receivesCancelled.aborted, "receive calls in flight are cancelled too");
  shutdown.stop("SIGTERM");
  deepStrictEqual(stops, ["kill: second signal"]);
  deepStrictEqual(log.at("warn").map((line) => [line.msg, line.fields.signal]), [
    ["second signal: killing running jobs now", "SIGINT"],
  ]);
});

Deno.test("Shutdown: dispose clears the drain's timers", () => {
  const { clock, shutdown } = shutdownOn();
  shutdown.stop("SIGTERM");
  strictEqual(clock.pending, 2);
  shutdown.dispose();
  strictEqual(clock.pending, 0);
});
