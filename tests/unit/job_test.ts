/**
 * Unit tests of SupervisedJob on a fake clock: the polite stop at the kill
 * timeout, repeated every retryMs, the final stop after graceMs, timers cleared at
 * exit, and a verdict per message that a stop overrules.
 */
import { deepStrictEqual, strictEqual } from "node:assert/strict";
import type { JobReport, RunningJob, StopMode } from "../../src/runners/runner.ts";
import { SupervisedJob } from "../../src/worker/job.ts";
import { FakeClock } from "../support/fake_clock.ts";
import { RecordingLogger } from "../support/recording_logger.ts";
import { deferred } from "../support/unit.ts";

/** A running job whose end the test decides; it records its stops with their times. */
function fakeJob(clock: FakeClock) {
  const done = deferred<JobReport>();
  const stops: { mode: StopMode; at: number }[] = [];
  const job: RunningJob = {
    fields: { pid: 4242 },
    done: done.promise,
    stop: (mode) => stops.push({ mode, at: clock.now() }),
  };
  return { job, done, stops, modes: () => stops.map((stop) => stop.mode) };
}

/** A report of one message. */
function report(succeeded: boolean, fields = {}): JobReport {
  return { results: [{ succeeded }], fields };
}

const LONG_POLICY = { killAfterMs: 60_000, retryMs: 60_000, graceMs: 60_000 };

function supervise(policy = LONG_POLICY) {
  const clock = new FakeClock();
  const fake = fakeJob(clock);
  const log = new RecordingLogger();
  const supervised = new SupervisedJob(fake.job, { policy, log, clock });
  return { clock, ...fake, log, supervised };
}

Deno.test("SupervisedJob: polite at the kill timeout, again every retryMs, final after graceMs", async () => {
  const { clock, stops, modes, done, log, supervised } = supervise({
    killAfterMs: 80,
    retryMs: 30,
    graceMs: 200,
  });
  strictEqual(supervised.state, "running");
  await clock.advance(79);
  strictEqual(stops.length, 0, "stopped before killAfterMs");
  await clock.advance(1);
  deepStrictEqual(stops, [{ mode: "polite", at: 80 }]);
  strictEqual(supervised.state, "terminating");
  await clock.advance(200);
  strictEqual(supervised.state, "killing");
  deepStrictEqual(stops.map((stop) => stop.at), [80, 110, 140, 170, 200, 230, 260, 280]);
  deepStrictEqual(modes().at(-1), "final");
  await clock.advance(1_000);
  strictEqual(stops.length, 8, "stops after the final one");
  done.resolve(report(false, { signal: "SIGKILL" }));
  const end = await supervised.ended;
  strictEqual(supervised.state, "exited");
  deepStrictEqual([end.killed, end.succeeded, end.durationMs], [true, [false], 1280]);
  strictEqual(clock.pending, 0, "timers left after the job exited");
  deepStrictEqual(
    log.at("warn").map((line) => [line.msg, line.fields.reason, line.fields.pid]),
    [["terminating job", "kill timeout", 4242], ["killing job", "kill grace elapsed", 4242]],
  );
});

Deno.test("SupervisedJob: an exit before the kill timeout is never stopped and clears the timer", async () => {
  const { clock, stops, done, supervised } = supervise({
    killAfterMs: 60,
    retryMs: 20,
    graceMs: 100,
  });
  await clock.advance(25);
  done.resolve(report(true));
  const end = await supervised.ended;
  strictEqual(clock.pending, 0, "the kill timeout is still pending after exit");
  await clock.advance(1_000);
  strictEqual(stops.length, 0);
  deepStrictEqual([end.succeeded, end.killed, end.durationMs], [[true], false, 25]);
});

Deno.test("SupervisedJob: an exit during terminating clears the timers (no stop after)", async () => {
  const { clock, stops, modes, done, supervised } = supervise({
    killAfterMs: 60_000,
    retryMs: 20,
    graceMs: 80,
  });
  supervised.terminate("shutdown");
  deepStrictEqual(modes(), ["polite"], "terminate stops politely at once");
  strictEqual(clock.pending, 3, "kill timeout, repeat and grace timers");
  done.resolve(report(false, { exit_code: 143 }));
  await supervised.ended;
  strictEqual(clock.pending, 0, "timers left after the job exited");
  await clock.advance(1_000);
  deepStrictEqual(stops.length, 1, "stops after the job exited");
  strictEqual(supervised.state, "exited");
});

Deno.test("SupervisedJob: terminate() and kill() are idempotent, and no-ops after exit", async () => {
  const { clock, modes, done, log, supervised } = supervise();
  supervised.terminate("shutdown");
  supervised.terminate("shutdown again");
  deepStrictEqual(modes(), ["polite"]);
  strictEqual(clock.pending, 3, "a second terminate() started more timers");
  supervised.kill("now");
  supervised.kill("now again");
  supervised.terminate("too late");
  deepStrictEqual(modes(), ["polite", "final"]);
  strictEqual(log.at("warn").length, 2);
  done.resolve(report(false));
  await supervised.ended;
  supervised.terminate("after exit");
  supervised.kill("after exit");
  deepStrictEqual(modes(), ["polite", "final"]);
  strictEqual(supervised.state, "exited");
  strictEqual(clock.pending, 0, "terminate() after exit started timers");
});

Deno.test("SupervisedJob: kill() straight from running stops only finally, and the job is killed", async () => {
  const { clock, modes, done, supervised } = supervise();
  supervised.kill("shutdown timeout");
  strictEqual(supervised.state, "killing");
  supervised.terminate("later");
  deepStrictEqual(modes(), ["final"]);
  done.resolve(report(true));
  const end = await supervised.ended;
  deepStrictEqual([end.killed, end.succeeded], [true, [false]], "killed, even though it succeeded");
  strictEqual(clock.pending, 0);
});

Deno.test("SupervisedJob: each message's verdict is its runner's, unless the job was stopped", async () => {
  const batch: JobReport = {
    results: [{ succeeded: true }, { succeeded: false, error: "bad" }, { succeeded: true }],
    fields: { request_id: "r-1" },
  };
  const ran = supervise();
  ran.done.resolve(batch);
  const end = await ran.supervised.ended;
  deepStrictEqual(end.succeeded, [true, false, true]);
  strictEqual(end.report, batch, "the runner's report, fields and errors included");

  const stopped = supervise();
  stopped.supervised.terminate("test");
  stopped.done.resolve(batch);
  deepStrictEqual((await stopped.supervised.ended).succeeded, [false, false, false]);
});
