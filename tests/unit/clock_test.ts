/** Unit tests of sleep on a fake clock: it waits its time, and an abort ends it early. */
import { ok, strictEqual } from "node:assert/strict";
import { sleep } from "../../src/worker/clock.ts";
import { FakeClock } from "../support/fake_clock.ts";
import { hasSettled } from "../support/unit.ts";

Deno.test("sleep: an already aborted signal resolves at once and starts no timer", async () => {
  const clock = new FakeClock();
  const controller = new AbortController();
  controller.abort();
  ok(await hasSettled(sleep(10_000, controller.signal, clock)));
  strictEqual(clock.pending, 0);
});

Deno.test("sleep: aborting during the wait resolves early and clears the timer", async () => {
  const clock = new FakeClock();
  const controller = new AbortController();
  const slept = sleep(10_000, controller.signal, clock);
  await clock.advance(20);
  ok(!(await hasSettled(slept)));
  controller.abort();
  ok(await hasSettled(slept), "abort did not end the sleep");
  strictEqual(clock.pending, 0, "the 10 s timer was left pending");
});

Deno.test("sleep: waits the given time on its clock, and 0 resolves at once", async () => {
  const clock = new FakeClock();
  const slept = sleep(40, undefined, clock);
  await clock.advance(39);
  ok(!(await hasSettled(slept)), "sleep(40) returned too early");
  await clock.advance(1);
  ok(await hasSettled(slept));
  ok(await hasSettled(sleep(0, undefined, clock)));
  strictEqual(clock.pending, 0);
});
