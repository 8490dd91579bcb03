/**
 * Unit tests of the scheduler's batches for runners whose jobs carry several
 * messages (`--lambda`), on a fake clock: one receive's messages make one job,
 * `--batch-window` waits for a fuller one (and the receive loop sees those
 * messages as not ready, so it fetches more), and on a FIFO queue a job takes a
 * run of one group's messages in order, the group going on only once all of
 * them succeeded.
 */
import { deepStrictEqual, strictEqual } from "node:assert/strict";
import { Scheduler, type SchedulerOptions } from "../../src/worker/scheduler.ts";
import { FakeClock, settle } from "../support/fake_clock.ts";
import { type Deferred, deferred, jobMessage } from "../support/unit.ts";

function harness(options: Partial<SchedulerOptions>) {
  const clock = new FakeClock();
  const batches: string[][] = [];
  const abandoned: string[] = [];
  const jobs = new Map<string, Deferred<boolean[]>>();
  const scheduler = new Scheduler({
    concurrency: 1,
    maxItems: 10,
    clock,
    ...options,
    run(messages) {
      const job = deferred<boolean[]>();
      batches.push(messages.map((message) => message.id));
      for (const message of messages) jobs.set(message.id, job);
      return job.promise;
    },
    abandon(message) {
      abandoned.push(message.id);
      return Promise.resolve();
    },
  });
  return {
    clock,
    scheduler,
    batches,
    abandoned,
    async finish(id: string, succeeded: boolean[]) {
      jobs.get(id)!.resolve(succeeded);
      await settle();
    },
  };
}

const fifo = (id: string, groupId: string) =>
  jobMessage(id, { groupId, queueUrl: "https://sqs.eu-west-1.amazonaws.com/1/q.fifo" });

Deno.test("Scheduler batches: the messages of one receive make one job", async () => {
  const h = harness({ batchWindowMs: 0 });
  for (const id of ["m1", "m2", "m3"]) h.scheduler.accept(jobMessage(id));
  deepStrictEqual(h.batches, [], "the start waits until the receive's messages are all in");
  await settle();
  deepStrictEqual(h.batches, [["m1", "m2", "m3"]]);
  await h.finish("m1", [true, true, true]);
  strictEqual(h.scheduler.inHand, 0);
});

Deno.test("Scheduler batches: a batch window waits for a full job, or for its end", async () => {
  const h = harness({ batchWindowMs: 500, maxItems: 4 });
  h.scheduler.accept(jobMessage("a"));
  await settle();
  deepStrictEqual(h.batches, []);
  strictEqual(h.scheduler.ready, 0, "gathering messages are not ready: the loop fetches more");
  await h.clock.advance(200);
  h.scheduler.accept(jobMessage("b"));
  await settle();
  deepStrictEqual(h.batches, []);
  await h.clock.advance(300);
  deepStrictEqual(h.batches, [["a", "b"]], "the window of the oldest message ended");
  // A full job starts at once, window or not.
  for (const id of ["c", "d", "e", "f"]) h.scheduler.accept(jobMessage(id));
  await h.finish("a", [true, true]);
  deepStrictEqual(h.batches.at(-1), ["c", "d", "e", "f"]);
  strictEqual(h.clock.pending, 0, "no timer left behind");
});

Deno.test("Scheduler batches: a gathering job is not given back by the prefetch's hold limit", async () => {
  const h = harness({ batchWindowMs: 8_000, holdLimitMs: 5_000 });
  h.scheduler.accept(jobMessage("a"));
  await h.clock.advance(6_000);
  deepStrictEqual(h.abandoned, []);
  await h.clock.advance(2_000);
  deepStrictEqual(h.batches, [["a"]]);
});

Deno.test("Scheduler batches: a FIFO job takes a run of one group, in order", async () => {
  const h = harness({ fifo: true, groupBatches: true, batchWindowMs: 0, maxItems: 3 });
  for (
    const [id, group] of [["a1", "A"], ["b1", "B"], ["a2", "A"], ["a3", "A"], ["a4", "A"], [
      "b2",
      "B",
    ]]
  ) h.scheduler.accept(fifo(id, group));
  await settle();
  deepStrictEqual(h.batches, [["a1", "a2", "a3"]], "at most maxItems, oldest first");
  await h.finish("a1", [true, true, true]);
  deepStrictEqual(h.batches.at(-1), ["b1", "b2"], "the oldest ready group next");
  await h.finish("b1", [true, true]);
  deepStrictEqual(h.batches.at(-1), ["a4"], "the group goes on once its run succeeded");
  await h.finish("a4", [true]);
  strictEqual(h.scheduler.inHand, 0);
});

Deno.test("Scheduler batches: a FIFO job with a failure gives back the rest of its group", async () => {
  const h = harness({ fifo: true, groupBatches: true, batchWindowMs: 0, maxItems: 2 });
  for (const id of ["a1", "a2", "a3", "a4"]) h.scheduler.accept(fifo(id, "A"));
  h.scheduler.accept(fifo("b1", "B"));
  await settle();
  deepStrictEqual(h.batches, [["a1", "a2"]]);
  await h.finish("a1", [true, false]);
  deepStrictEqual(h.abandoned, ["a3", "a4"], "SQS redelivers the group from a2 on");
  deepStrictEqual(h.batches.at(-1), ["b1"]);
  await h.finish("b1", [true]);
  strictEqual(h.scheduler.inHand, 0);
});

Deno.test("Scheduler batches: a FIFO run gathering for its window takes its group's later messages", async () => {
  const h = harness({ fifo: true, groupBatches: true, batchWindowMs: 1_000, maxItems: 3 });
  h.scheduler.accept(fifo("a1", "A"));
  await settle();
  h.scheduler.accept(fifo("a2", "A"));
  h.scheduler.accept(fifo("a3", "A"));
  await settle();
  deepStrictEqual(h.batches, [["a1", "a2", "a3"]], "full before the window ended");
  strictEqual(h.clock.pending, 0);
});
