/**
 * Unit tests of the scheduler on a fake clock: slots, messages held ahead, FIFO
 * lanes (one message of a group at a time, in order; a failure gives back the
 * rest of its group), fair-queue tenants that order nothing, jobs of several
 * messages, and the prefetch policy.
 */
import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import {
  AUTO_PREFETCH_HOLD_MS,
  prefetchCount,
  Scheduler,
  type SchedulerOptions,
} from "../../src/worker/scheduler.ts";
import { FakeClock, settle } from "../support/fake_clock.ts";
import { type Deferred, deferred, hasSettled, jobMessage } from "../support/unit.ts";

/**
 * A scheduler whose jobs end only when the test says so; a FIFO queue's unless
 * `fifo: false`.
 */
function schedulerHarness(
  concurrency: number,
  options: Partial<SchedulerOptions> & { holdAbandon?: boolean } = {},
) {
  const clock = new FakeClock();
  const started: string[] = [];
  const batches: string[][] = [];
  const abandoned: string[] = [];
  const jobs = new Map<string, Deferred<boolean[]>>();
  const abandons = new Map<string, Deferred<void>>();
  const runningGroups = new Set<string>();
  let active = 0;
  let maxActive = 0;
  let groupOverlap = false;
  const scheduler = new Scheduler({
    concurrency,
    fifo: true,
    clock,
    ...options,
    run(messages) {
      const job = deferred<boolean[]>();
      batches.push(messages.map((message) => message.id));
      for (const message of messages) {
        started.push(message.id);
        jobs.set(message.id, job);
        if (message.groupId === undefined) continue;
        if (runningGroups.has(message.groupId)) groupOverlap = true;
        runningGroups.add(message.groupId);
      }
      active += 1;
      maxActive = Math.max(maxActive, active);
      return job.promise.then((succeeded) => {
        active -= 1;
        for (const message of messages) {
          if (message.groupId !== undefined) runningGroups.delete(message.groupId);
        }
        return succeeded;
      });
    },
    abandon(message) {
      abandoned.push(message.id);
      if (!options.holdAbandon) return Promise.resolve();
      const held = deferred<void>();
      abandons.set(message.id, held);
      return held.promise;
    },
  });
  return {
    clock,
    scheduler,
    started,
    batches,
    abandoned,
    abandons,
    get maxActive() {
      return maxActive;
    },
    get groupOverlap() {
      return groupOverlap;
    },
    /** Ends the job that holds message `id` (each of its messages as `succeeded` says). */
    async finish(id: string, succeeded: boolean | boolean[]) {
      const job = jobs.get(id);
      if (!job) throw new Error(`job ${id} never started`);
      const batch = batches.find((ids) => ids.includes(id))!;
      job.resolve(Array.isArray(succeeded) ? succeeded : batch.map(() => succeeded));
      await settle();
    },
  };
}

Deno.test("Scheduler: rejects a concurrency or maxItems that is not a positive integer", () => {
  const options = { run: () => Promise.resolve([]), abandon: () => Promise.resolve() };
  throws(() => new Scheduler({ ...options, concurrency: 0 }), RangeError);
  throws(() => new Scheduler({ ...options, concurrency: 1.5 }), RangeError);
  throws(() => new Scheduler({ ...options, concurrency: -1 }), RangeError);
  throws(() => new Scheduler({ ...options, concurrency: 1, maxItems: 0 }), RangeError);
});

Deno.test("Scheduler: freeSlots, inHand and running follow accepted and finished messages", async () => {
  const h = schedulerHarness(3);
  const { scheduler } = h;
  strictEqual(scheduler.freeSlots, 3);
  scheduler.accept(jobMessage("a"));
  scheduler.accept(jobMessage("b"));
  strictEqual(scheduler.freeSlots, 1);
  strictEqual(scheduler.inHand, 2);
  strictEqual(scheduler.running, 2);
  deepStrictEqual(h.started, ["a", "b"]);
  await h.finish("a", true);
  strictEqual(scheduler.freeSlots, 2);
  strictEqual(scheduler.inHand, 1);
  strictEqual(scheduler.running, 1);
  await h.finish("b", false);
  strictEqual(scheduler.freeSlots, 3);
  strictEqual(scheduler.inHand, 0);
  strictEqual(scheduler.running, 0);
});

Deno.test("Scheduler: a receiver that waits for a free slot never exceeds the concurrency", async () => {
  const h = schedulerHarness(2);
  const { scheduler } = h;
  const ids = ["m1", "m2", "m3", "m4", "m5", "m6", "m7"];
  let accepted = 0;
  const receiver = (async () => {
    for (const id of ids) {
      await scheduler.slotsFree(1, Infinity);
      ok(scheduler.freeSlots > 0, "slotsFree resolved without a free slot");
      scheduler.accept(jobMessage(id));
      accepted += 1;
    }
  })();
  await settle();
  strictEqual(accepted, 2, "the receiver took more than the two free slots");
  // Finish jobs out of order: the newest first, then the oldest.
  const finishedIds = new Set<string>();
  for (let finished = 0; finished < ids.length; finished++) {
    const candidates = h.started.filter((id) => !finishedIds.has(id));
    const pick = finished % 2 === 0 ? candidates[candidates.length - 1] : candidates[0];
    finishedIds.add(pick);
    await h.finish(pick, true);
    ok(scheduler.inHand <= 2 && scheduler.running <= 2, "more than 2 in hand");
  }
  await receiver;
  await scheduler.idle();
  strictEqual(h.maxActive, 2);
  deepStrictEqual([...h.started].sort(), [...ids].sort());
});

Deno.test("Scheduler: FIFO lanes run one message of a group at a time, in order", async () => {
  const h = schedulerHarness(10);
  const { scheduler } = h;
  scheduler.accept(jobMessage("a1", { groupId: "A" }));
  scheduler.accept(jobMessage("b1", { groupId: "B" }));
  scheduler.accept(jobMessage("a2", { groupId: "A" }));
  scheduler.accept(jobMessage("n1"));
  scheduler.accept(jobMessage("a3", { groupId: "A" }));
  scheduler.accept(jobMessage("b2", { groupId: "B" }));
  deepStrictEqual(h.started, ["a1", "b1", "n1"]);
  strictEqual(scheduler.inHand, 6, "waiting lane messages hold their slots");
  strictEqual(scheduler.freeSlots, 4);
  strictEqual(scheduler.running, 3);
  await h.finish("a1", true);
  deepStrictEqual(h.started, ["a1", "b1", "n1", "a2"]);
  await h.finish("b1", true);
  deepStrictEqual(h.started, ["a1", "b1", "n1", "a2", "b2"]);
  await h.finish("n1", true);
  await h.finish("a2", true);
  deepStrictEqual(h.started, ["a1", "b1", "n1", "a2", "b2", "a3"]);
  await h.finish("b2", true);
  await h.finish("a3", true);
  strictEqual(h.groupOverlap, false, "two messages of one group ran at once");
  strictEqual(scheduler.inHand, 0);
  deepStrictEqual(h.abandoned, []);
  // The lane is gone once empty: a new message of the group starts at once.
  scheduler.accept(jobMessage("a4", { groupId: "A" }));
  strictEqual(h.started.at(-1), "a4");
  await h.finish("a4", true);
});

Deno.test("Scheduler: on a standard queue a group id (a fair queue's tenant) orders nothing", async () => {
  const h = schedulerHarness(3, { fifo: false });
  for (const id of ["t1", "t2", "t3"]) h.scheduler.accept(jobMessage(id, { groupId: "tenant" }));
  deepStrictEqual(h.started, ["t1", "t2", "t3"], "one tenant's messages did not run in parallel");
  await h.finish("t2", false);
  deepStrictEqual(h.abandoned, [], "a tenant's failure gave back its other messages");
  await h.finish("t1", true);
  await h.finish("t3", true);
  strictEqual(h.scheduler.inHand, 0);
});

Deno.test("Scheduler: a failure abandons the later waiting messages of its group only", async () => {
  const h = schedulerHarness(10, { holdAbandon: true });
  const { scheduler } = h;
  for (const id of ["a1", "a2", "a3", "a4"]) scheduler.accept(jobMessage(id, { groupId: "A" }));
  for (const id of ["b1", "b2"]) scheduler.accept(jobMessage(id, { groupId: "B" }));
  deepStrictEqual(h.started, ["a1", "b1"]);
  await h.finish("a1", false);
  deepStrictEqual(h.abandoned, ["a2", "a3", "a4"], "abandoned in order");
  strictEqual(scheduler.inHand, 5, "abandoned messages hold their slots until given back");
  for (const id of ["a2", "a3", "a4"]) h.abandons.get(id)!.resolve();
  await settle();
  strictEqual(scheduler.inHand, 2);
  // Group B is unaffected.
  await h.finish("b1", true);
  deepStrictEqual(h.started, ["a1", "b1", "b2"]);
  await h.finish("b2", true);
  ok(!h.started.includes("a2") && !h.started.includes("a3") && !h.started.includes("a4"));
  strictEqual(scheduler.inHand, 0);
  // A later delivery of group A starts afresh.
  scheduler.accept(jobMessage("a2-again", { groupId: "A" }));
  strictEqual(h.started.at(-1), "a2-again");
  await h.finish("a2-again", true);
  await scheduler.idle();
});

Deno.test("Scheduler: a failure with an empty lane abandons nothing", async () => {
  const h = schedulerHarness(4);
  h.scheduler.accept(jobMessage("a1", { groupId: "A" }));
  h.scheduler.accept(jobMessage("x"));
  await h.finish("a1", false);
  await h.finish("x", false);
  deepStrictEqual(h.abandoned, []);
  strictEqual(h.scheduler.inHand, 0);
});

Deno.test("Scheduler: takeWaiting removes unstarted lane messages; released frees their slots", async () => {
  const h = schedulerHarness(10);
  const { scheduler } = h;
  for (const id of ["a1", "a2", "a3"]) scheduler.accept(jobMessage(id, { groupId: "A" }));
  for (const id of ["b1", "b2"]) scheduler.accept(jobMessage(id, { groupId: "B" }));
  scheduler.accept(jobMessage("n1"));
  const waiting = scheduler.takeWaiting();
  deepStrictEqual(waiting.map((message) => message.id), ["a2", "a3", "b2"]);
  deepStrictEqual(scheduler.takeWaiting(), [], "a second call finds nothing");
  strictEqual(scheduler.inHand, 6, "taken messages hold slots until released");
  const idle = scheduler.idle();
  scheduler.released(waiting.length);
  strictEqual(scheduler.inHand, 3);
  strictEqual(scheduler.freeSlots, 7);
  await h.finish("a1", true);
  await h.finish("b1", true);
  await h.finish("n1", true);
  deepStrictEqual(h.started, ["a1", "b1", "n1"], "taken messages never ran");
  deepStrictEqual(h.abandoned, [], "takeWaiting does not call abandon");
  ok(await hasSettled(idle), "idle did not resolve");
});

Deno.test("Scheduler: slotsFree resolves at once with a free slot, else when one frees", async () => {
  const h = schedulerHarness(1);
  await h.scheduler.slotsFree(1, Infinity);
  h.scheduler.accept(jobMessage("a"));
  const free = h.scheduler.slotsFree(1, Infinity);
  ok(!(await hasSettled(free)), "slotsFree resolved with no free slot");
  await h.finish("a", true);
  ok(await hasSettled(free), "slotsFree did not resolve when the slot freed");
});

Deno.test("Scheduler: slotsFree gives up after maxWaitMs on its clock", async () => {
  const h = schedulerHarness(1);
  h.scheduler.accept(jobMessage("a"));
  const free = h.scheduler.slotsFree(1, 20);
  await h.clock.advance(19);
  ok(!(await hasSettled(free)), "slotsFree resolved before maxWaitMs");
  await h.clock.advance(1);
  ok(await hasSettled(free), "slotsFree did not resolve at maxWaitMs");
  strictEqual(h.clock.pending, 0);
  await h.finish("a", true);
});

Deno.test("Scheduler: slotsFree resolves when its signal aborts, and at once if aborted", async () => {
  const h = schedulerHarness(1);
  h.scheduler.accept(jobMessage("a"));
  const controller = new AbortController();
  const free = h.scheduler.slotsFree(1, Infinity, controller.signal);
  ok(!(await hasSettled(free)));
  controller.abort();
  ok(await hasSettled(free), "abort did not end slotsFree");
  strictEqual(h.scheduler.freeSlots, 0);
  ok(
    await hasSettled(h.scheduler.slotsFree(1, Infinity, controller.signal)),
    "aborted signal must not wait",
  );
  await h.finish("a", true);
});

Deno.test("Scheduler: idle resolves at once when empty, else after the last message settles", async () => {
  const h = schedulerHarness(2, { holdAbandon: true });
  ok(await hasSettled(h.scheduler.idle()));
  h.scheduler.accept(jobMessage("a1", { groupId: "A" }));
  h.scheduler.accept(jobMessage("a2", { groupId: "A" }));
  const idle = h.scheduler.idle();
  await h.finish("a1", false);
  ok(!(await hasSettled(idle)), "idle before the abandoned message was given back");
  h.abandons.get("a2")!.resolve();
  ok(await hasSettled(idle), "idle did not resolve");
});

Deno.test("Scheduler: with a prefetch, messages beyond -c wait ready and start as jobs end", async () => {
  const h = schedulerHarness(2);
  const { scheduler } = h;
  scheduler.prefetch = 3;
  strictEqual(scheduler.capacity, 5);
  strictEqual(scheduler.freeSlots, 5);
  for (const id of ["m1", "m2", "m3", "m4", "m5"]) scheduler.accept(jobMessage(id));
  deepStrictEqual(h.started, ["m1", "m2"], "more jobs started than -c");
  strictEqual(scheduler.ready, 3);
  strictEqual(scheduler.freeSlots, 0);
  await h.clock.advance(40);
  await h.finish("m2", true);
  deepStrictEqual(h.started, ["m1", "m2", "m3"], "the oldest held message starts next");
  strictEqual(scheduler.running, 2);
  strictEqual(scheduler.meanRunMs, 40);
  // Lowering the prefetch drops nothing already held.
  scheduler.prefetch = 0;
  strictEqual(scheduler.ready, 2);
  strictEqual(scheduler.freeSlots, -2);
  deepStrictEqual(scheduler.takeWaiting().map((message) => message.id), ["m4", "m5"]);
  scheduler.released(2);
  await h.finish("m1", true);
  await h.finish("m3", true);
  strictEqual(h.maxActive, 2);
  strictEqual(scheduler.inHand, 0);
});

Deno.test("Scheduler: a held FIFO successor waits for a free slot, not only for its group", async () => {
  const h = schedulerHarness(1);
  const { scheduler } = h;
  scheduler.prefetch = 2;
  scheduler.accept(jobMessage("a1", { groupId: "A" }));
  scheduler.accept(jobMessage("b1", { groupId: "B" }));
  scheduler.accept(jobMessage("a2", { groupId: "A" }));
  deepStrictEqual(h.started, ["a1"]);
  await h.finish("a1", true);
  // b1 was ready first; a2 became ready when a1 ended and must wait its turn.
  deepStrictEqual(h.started, ["a1", "b1"]);
  await h.finish("b1", true);
  deepStrictEqual(h.started, ["a1", "b1", "a2"]);
  await h.finish("a2", true);
  strictEqual(h.maxActive, 1);
  strictEqual(h.groupOverlap, false);
});

Deno.test("Scheduler: a standard message held past holdLimitMs is given back; a FIFO one is not", async () => {
  const h = schedulerHarness(1, { holdLimitMs: 60 });
  const { scheduler } = h;
  scheduler.prefetch = 3;
  scheduler.accept(jobMessage("running"));
  scheduler.accept(jobMessage("held"));
  scheduler.accept(jobMessage("fifo", { groupId: "G" }));
  await h.clock.advance(59);
  deepStrictEqual(h.abandoned, [], "given back before the limit");
  await h.clock.advance(1);
  deepStrictEqual(h.abandoned, ["held"]);
  await h.clock.advance(1_000);
  deepStrictEqual(h.abandoned, ["held"], "the FIFO message was given back");
  strictEqual(scheduler.inHand, 2);
  await h.finish("running", true);
  deepStrictEqual(h.started, ["running", "fifo"]);
  await h.finish("fifo", true);
  strictEqual(scheduler.inHand, 0);
});

Deno.test("Scheduler: changed resolves when a slot frees or the prefetch changes, and on abort", async () => {
  const h = schedulerHarness(1);
  h.scheduler.accept(jobMessage("a"));
  const change = h.scheduler.changed();
  ok(!(await hasSettled(change)));
  await h.finish("a", true);
  ok(await hasSettled(change), "a freed slot is a change");
  const another = h.scheduler.changed();
  h.scheduler.prefetch = 4;
  ok(await hasSettled(another), "a new prefetch is a change");
  const controller = new AbortController();
  const aborted = h.scheduler.changed(controller.signal);
  controller.abort();
  ok(await hasSettled(aborted), "abort did not end changed");
  ok(await hasSettled(h.scheduler.changed(controller.signal)), "an aborted signal must not wait");
});

Deno.test("Scheduler: expectedRunMs grows with the median running job, not one hung job", async () => {
  const h = schedulerHarness(3);
  const { scheduler, clock } = h;
  strictEqual(scheduler.expectedRunMs, undefined, "nothing ran yet");
  scheduler.accept(jobMessage("quick"));
  await clock.advance(2);
  await h.finish("quick", true);
  strictEqual(scheduler.expectedRunMs, 2, "no job running: the mean");
  scheduler.accept(jobMessage("slow"));
  await clock.advance(120);
  strictEqual(scheduler.expectedRunMs, 120, "one slow job running: how long it has taken");
  scheduler.accept(jobMessage("new1"));
  scheduler.accept(jobMessage("new2"));
  strictEqual(scheduler.expectedRunMs, 2, "the median of three ignores the one hung job");
  for (const id of ["slow", "new1", "new2"]) await h.finish(id, true);
});

Deno.test("Scheduler: a job takes up to maxItems ready messages, oldest first", async () => {
  const h = schedulerHarness(2, { maxItems: 3, fifo: false });
  const { scheduler } = h;
  strictEqual(scheduler.capacity, 6, "every slot takes a whole job's messages");
  for (const id of ["m1", "m2", "m3", "m4", "m5", "m6", "m7"]) {
    if (scheduler.freeSlots > 0) scheduler.accept(jobMessage(id));
  }
  // m1 started alone (it was the only one ready); the next job took what was ready then.
  deepStrictEqual(h.batches, [["m1"], ["m2"]]);
  await h.finish("m1", true);
  deepStrictEqual(h.batches.at(-1), ["m3", "m4", "m5"]);
  strictEqual(scheduler.ready, 1);
  await h.finish("m3", [true, false, true]);
  deepStrictEqual(h.batches.at(-1), ["m6"]);
  strictEqual(scheduler.inHand, 2, "each message of a job is freed when the job ends");
  await h.finish("m2", true);
  await h.finish("m6", true);
  strictEqual(scheduler.inHand, 0);
});

Deno.test("Scheduler: a job never holds two messages of one FIFO group", async () => {
  const h = schedulerHarness(1, { maxItems: 10 });
  const { scheduler } = h;
  scheduler.prefetch = 10;
  scheduler.accept(jobMessage("x1", { groupId: "X" }));
  for (const [id, groupId] of [["a1", "A"], ["a2", "A"], ["b1", "B"], ["a3", "A"], ["b2", "B"]]) {
    scheduler.accept(jobMessage(id, { groupId }));
  }
  await h.finish("x1", true);
  deepStrictEqual(h.batches.at(-1), ["a1", "b1"], "one message of each group, the oldest");
  await h.finish("a1", [true, true]);
  deepStrictEqual(h.batches.at(-1), ["a2", "b2"], "each group's next, once the one before ended");
  await h.finish("a2", [false, true]);
  deepStrictEqual(h.abandoned, ["a3"], "a failure gives back the rest of its group");
  strictEqual(h.groupOverlap, false);
  strictEqual(scheduler.inHand, 0);
});

Deno.test("prefetchCount: auto holds about a second of work, at most a batch; a number is kept", () => {
  const auto = { setting: "auto" as const, concurrency: 1, batchSize: 10 };
  strictEqual(
    prefetchCount({ ...auto, expectedRunMs: undefined }),
    0,
    "before any run time is known",
  );
  strictEqual(prefetchCount({ ...auto, expectedRunMs: 2 }), 10, "short jobs: one batch");
  strictEqual(
    prefetchCount({ ...auto, batchSize: 3, expectedRunMs: 2 }),
    3,
    "never beyond a batch",
  );
  strictEqual(prefetchCount({ ...auto, expectedRunMs: AUTO_PREFETCH_HOLD_MS / 4 }), 4);
  strictEqual(
    prefetchCount({ ...auto, concurrency: 8, expectedRunMs: 2_000 }),
    4,
    "spread over slots",
  );
  strictEqual(prefetchCount({ ...auto, expectedRunMs: AUTO_PREFETCH_HOLD_MS + 1 }), 0, "long jobs");
  strictEqual(prefetchCount({ ...auto, expectedRunMs: 0 }), 10);
  strictEqual(prefetchCount({ ...auto, setting: 0, expectedRunMs: 1 }), 0);
  strictEqual(prefetchCount({ ...auto, setting: 25, expectedRunMs: 60_000 }), 25);
});
