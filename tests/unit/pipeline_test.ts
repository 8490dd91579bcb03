/**
 * Unit tests of the pipeline: every way through ends in one verdict per message,
 * applied once (delete, release, give back, park, leave), and steps run in order
 * with their follow-ups. Runners, sources and SQS are fakes; time is a fake clock.
 */
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { noMetrics } from "../../src/metrics/metrics.ts";
import type { Job, JobReport, JobRunner, RunningJob } from "../../src/runners/runner.ts";
import { type JobSource, type JobStep, MalformedMessageError } from "../../src/sources/source.ts";
import type { SupervisedJob } from "../../src/worker/job.ts";
import type { JobMessage } from "../../src/worker/message.ts";
import { Pipeline, type PipelineOptions } from "../../src/worker/pipeline.ts";
import { FakeClock, settle } from "../support/fake_clock.ts";
import { RecordingLogger } from "../support/recording_logger.ts";
import { deferred, hasSettled, jobMessage } from "../support/unit.ts";

/** A runner whose jobs end as `decide` says (per message: succeeded), at once. */
function fakeRunner(decide: (job: Job) => boolean[] = (job) => job.items.map(() => true)) {
  const jobs: Job[] = [];
  const stops: string[] = [];
  const runner: JobRunner = {
    maxItems: 10,
    run(job): RunningJob {
      jobs.push(job);
      const results = decide(job).map((succeeded) => ({
        succeeded,
        error: succeeded ? undefined : "it broke",
      }));
      const report: JobReport = { results, fields: { exit_code: results[0].succeeded ? 0 : 3 } };
      return { fields: {}, done: Promise.resolve(report), stop: (mode) => stops.push(mode) };
    },
    close: () => Promise.resolve(),
  };
  return { runner, jobs, stops };
}

/** A source of one step per message (the body), or of the steps `steps` gives. */
function fakeSource(steps?: (message: JobMessage) => JobStep[]): JobSource {
  return {
    steps: steps ?? ((message) => [{
      fields: {},
      open: () => Promise.resolve({ body: message.body, env: {}, context: {} }),
    }]),
  };
}

/** A pipeline on fakes that records what settling did, in order. */
function pipelineOn(options: Partial<PipelineOptions> & { covered?: boolean } = {}) {
  const settled: string[] = [];
  const log = new RecordingLogger();
  const shutdown = { stopping: false, forced: false };
  const record = (what: string) => (message: JobMessage) => {
    settled.push(`${what} ${message.id}`);
    return Promise.resolve(true);
  };
  const running = new Set<SupervisedJob>();
  const pipeline = new Pipeline({
    runner: fakeRunner().runner,
    source: fakeSource(),
    keeper: {
      covered: () => Promise.resolve(options.covered ?? true),
      untrack: (message) => void settled.push(`untrack ${message.id}`),
    },
    settler: {
      succeeded: record("delete"),
      failed: (message) => record("release")(message).then(() => {}),
      giveBack: (message) => record("give back")(message).then(() => {}),
      park: (message) => record("park")(message).then(() => {}),
    },
    shutdown,
    metrics: noMetrics(),
    log,
    fifo: false,
    concurrency: 1,
    policy: { killAfterMs: 60_000, retryMs: 60_000, graceMs: 60_000 },
    running,
    clock: new FakeClock(),
    ...options,
  });
  return { pipeline, settled, log, shutdown, running };
}

/** Processes `messages` and waits for their settles, background ones too. */
async function processAll(pipeline: Pipeline, messages: JobMessage[]): Promise<boolean[]> {
  const succeeded = await pipeline.process(messages);
  await pipeline.settled();
  return succeeded;
}

Deno.test("Pipeline: a job that succeeds deletes its message; one that fails releases it", async () => {
  const { runner, jobs } = fakeRunner((job) => [job.items[0].message.id === "ok"]);
  const { pipeline, settled, log } = pipelineOn({ runner });
  deepStrictEqual(await processAll(pipeline, [jobMessage("ok")]), [true]);
  deepStrictEqual(await processAll(pipeline, [jobMessage("bad")]), [false]);
  deepStrictEqual(settled, ["delete ok", "release bad"]);
  deepStrictEqual(jobs.map((job) => job.items[0].input.body), ["body of ok", "body of bad"]);
  const ends = log.lines.filter((line) => line.msg === "job finished" || line.msg === "job failed");
  deepStrictEqual(
    ends.map((
      line,
    ) => [line.msg, line.fields.message_id, line.fields.exit_code, line.fields.error]),
    [["job finished", "ok", 0, undefined], ["job failed", "bad", 3, "it broke"]],
  );
  strictEqual(ends[1].fields.outcome, "failed");
});

Deno.test("Pipeline: a job the shutdown stopped gives its message back; a timed-out one releases it", async () => {
  const hung = deferred<JobReport>();
  const runner: JobRunner = {
    maxItems: 1,
    run: () => ({ fields: {}, done: hung.promise, stop: () => {} }),
    close: () => Promise.resolve(),
  };
  const { pipeline, settled, shutdown, running } = pipelineOn({ runner });
  const processed = pipeline.process([jobMessage("m")]);
  await settle();
  strictEqual(running.size, 1);
  shutdown.stopping = true;
  for (const job of running) job.terminate("shutdown timeout");
  hung.resolve({ results: [{ succeeded: true }], fields: {} });
  deepStrictEqual(await processed, [false], "a stopped job never succeeds");
  await pipeline.settled();
  deepStrictEqual(settled, ["give back m"]);
  strictEqual(running.size, 0);

  const again = deferred<JobReport>();
  const timedOut = pipelineOn({
    runner: { ...runner, run: () => ({ fields: {}, done: again.promise, stop: () => {} }) },
  });
  const second = timedOut.pipeline.process([jobMessage("n")]);
  await settle();
  for (const job of timedOut.running) job.terminate("kill timeout");
  again.resolve({ results: [{ succeeded: false }], fields: {} });
  await second;
  await timedOut.pipeline.settled();
  deepStrictEqual(timedOut.settled, ["release n"], "a kill timeout is the message's failure");
});

Deno.test("Pipeline: a forced shutdown kills a job the moment it starts", async () => {
  const { runner, stops } = fakeRunner();
  const { pipeline, shutdown } = pipelineOn({ runner });
  shutdown.forced = true;
  await processAll(pipeline, [jobMessage("m")]);
  deepStrictEqual(stops, ["final"]);
});

Deno.test("Pipeline: poison is parked without running; a lapsed message is left to SQS", async () => {
  const poison = pipelineOn({ parkAfter: 3 });
  await processAll(poison.pipeline, [
    jobMessage("fine", { receiveCount: 3 }),
    jobMessage("poison", { receiveCount: 4 }),
  ]);
  deepStrictEqual(poison.settled.sort(), ["delete fine", "park poison"]);

  const { runner, jobs } = fakeRunner();
  const lapsed = pipelineOn({ runner, covered: false });
  deepStrictEqual(await processAll(lapsed.pipeline, [jobMessage("late")]), [false]);
  deepStrictEqual(lapsed.settled, ["untrack late"], "no SQS call for a message that may be gone");
  deepStrictEqual(jobs, [], "a lapsed message must not run");
  ok(lapsed.log.at("warn")[0].msg.includes("visibility lapsed before its job could start"));
});

Deno.test("Pipeline: a malformed message is released without a job; other errors too, logged", async () => {
  const { runner, jobs } = fakeRunner();
  const malformed = pipelineOn({
    runner,
    source: fakeSource(() => {
      throw new MalformedMessageError("not JSON");
    }),
  });
  await processAll(malformed.pipeline, [jobMessage("m")]);
  deepStrictEqual(malformed.settled, ["release m"]);
  strictEqual(malformed.log.at("error")[0].msg, "malformed message; releasing it");

  const broken = pipelineOn({
    runner,
    source: fakeSource(() => {
      throw new TypeError("a bug");
    }),
  });
  await processAll(broken.pipeline, [jobMessage("n")]);
  deepStrictEqual(broken.settled, ["release n"]);
  deepStrictEqual(
    broken.log.at("error").map((line) => [line.msg, line.fields.message_id, line.fields.error]),
    [["internal error while running a job; releasing its message", "n", "a bug"]],
  );
  deepStrictEqual(jobs, []);
});

Deno.test("Pipeline: steps run in order with their follow-ups; one with nothing to run is skipped", async () => {
  const events: string[] = [];
  const step = (name: string, empty = false): JobStep => ({
    fields: { step: name },
    open: () => {
      events.push(`open ${name}`);
      return Promise.resolve(empty ? undefined : { body: name, env: {}, context: {} });
    },
    succeeded: () => {
      events.push(`follow-up ${name}`);
      return Promise.reject(new Error("cannot delete the object"));
    },
  });
  const { runner, jobs } = fakeRunner();
  const { pipeline, settled, log } = pipelineOn({
    runner,
    source: fakeSource(() => [step("a"), step("gone", true), step("b")]),
  });
  deepStrictEqual(await processAll(pipeline, [jobMessage("m")]), [true]);
  deepStrictEqual(events, ["open a", "follow-up a", "open gone", "open b", "follow-up b"]);
  const logged = jobs.map((job) => (job.log as RecordingLogger).base);
  deepStrictEqual(logged, [{ message_id: "m", step: "a" }, { message_id: "m", step: "b" }]);
  ok(jobs.every((job) => job.log === job.items[0].log), "a job of one message logs as it");
  deepStrictEqual(settled, ["delete m"], "a failed follow-up does not fail the message");
  deepStrictEqual(
    log.at("warn").map((line) => [line.msg, line.fields.step]),
    [["the job succeeded but its follow-up failed", "a"], [
      "the job succeeded but its follow-up failed",
      "b",
    ]],
  );
});

Deno.test("Pipeline: a failed step ends the message; an input that cannot be opened releases it", async () => {
  const opened: string[] = [];
  const steps = (message: JobMessage): JobStep[] =>
    ["1", "2"].map((name) => ({
      fields: {},
      open: () => {
        opened.push(`${message.id}/${name}`);
        if (message.id === "unreadable") return Promise.reject(new Error("AccessDenied"));
        return Promise.resolve({ body: name, env: {}, context: {} });
      },
    }));
  const { runner } = fakeRunner((job) => [job.items[0].input.body !== "1"]);
  const { pipeline, settled } = pipelineOn({ runner, source: fakeSource(steps) });
  await processAll(pipeline, [jobMessage("fails")]);
  await processAll(pipeline, [jobMessage("unreadable")]);
  deepStrictEqual(opened, ["fails/1", "unreadable/1"], "no step after a failure");
  deepStrictEqual(settled, ["release fails", "release unreadable"]);
});

Deno.test("Pipeline: a message without steps (an S3 test event) is deleted, no job run", async () => {
  const { runner, jobs } = fakeRunner();
  const { pipeline, settled } = pipelineOn({ runner, source: fakeSource(() => []) });
  deepStrictEqual(await processAll(pipeline, [jobMessage("test-event")]), [true]);
  deepStrictEqual(settled, ["delete test-event"]);
  deepStrictEqual(jobs, []);
});

Deno.test("Pipeline: the messages of one job each get their own verdict", async () => {
  const { runner, jobs } = fakeRunner((job) => job.items.map((item) => item.input.body !== "bad"));
  const { pipeline, settled } = pipelineOn({
    runner,
    source: fakeSource((message) => [{
      fields: {},
      open: () => Promise.resolve({ body: message.id, env: {}, context: {} }),
    }]),
    parkAfter: 5,
  });
  const messages = [
    jobMessage("good"),
    jobMessage("bad"),
    jobMessage("poison", { receiveCount: 9 }),
    jobMessage("fine"),
  ];
  deepStrictEqual(await processAll(pipeline, messages), [true, false, false, true]);
  deepStrictEqual(jobs.length, 1, "one job for the messages that run");
  deepStrictEqual(jobs[0].items.map((item) => item.message.id), ["good", "bad", "fine"]);
  deepStrictEqual((jobs[0].log as RecordingLogger).base, {
    message_ids: ["good", "bad", "fine"],
  });
  deepStrictEqual(settled.sort(), ["delete fine", "delete good", "park poison", "release bad"]);
});

Deno.test("Pipeline: a FIFO message holds its slot until settled; a standard one is settled behind", async () => {
  const deleted = deferred<boolean>();
  const settler = {
    succeeded: () => deleted.promise,
    failed: () => Promise.resolve(),
    giveBack: () => Promise.resolve(),
    park: () => Promise.resolve(),
  };
  const standard = pipelineOn({ settler });
  ok(await hasSettled(standard.pipeline.process([jobMessage("s")])), "the slot waited");
  const behind = standard.pipeline.settled();
  ok(!(await hasSettled(behind)), "the drain would not wait for the delete");

  const fifo = pipelineOn({ settler, fifo: true });
  const processed = fifo.pipeline.process([jobMessage("f", { groupId: "g" })]);
  ok(!(await hasSettled(processed)), "the group went on before its delete");
  deleted.resolve(true);
  deepStrictEqual(await processed, [true]);
  await behind;
});

Deno.test("Pipeline: a failed job's Retry-After goes to the release, unless the supervisor stopped it", async () => {
  const releases: [string, number | undefined][] = [];
  const answered = (retryAfterSeconds: number) => ({
    maxItems: 1,
    run: (): RunningJob => ({
      fields: {},
      done: Promise.resolve({ results: [{ succeeded: false, retryAfterSeconds }], fields: {} }),
      stop: () => {},
    }),
    close: () => Promise.resolve(),
  });
  const settler = {
    succeeded: () => Promise.resolve(true),
    failed: (message: JobMessage, seconds?: number) => {
      releases.push([message.id, seconds]);
      return Promise.resolve();
    },
    giveBack: () => Promise.resolve(),
    park: () => Promise.resolve(),
  };
  const { pipeline } = pipelineOn({ runner: answered(7), settler });
  deepStrictEqual(await processAll(pipeline, [jobMessage("busy")]), [false]);
  deepStrictEqual(releases, [["busy", 7]]);

  // Killed at its kill timeout, a job's own word no longer counts: the back-off does.
  const hung = deferred<JobReport>();
  const stopped = pipelineOn({
    runner: {
      maxItems: 1,
      run: () => ({ fields: {}, done: hung.promise, stop: () => {} }),
      close: () => Promise.resolve(),
    },
    settler,
  });
  const processed = stopped.pipeline.process([jobMessage("late")]);
  await settle();
  for (const job of stopped.running) job.terminate("kill timeout");
  hung.resolve({ results: [{ succeeded: false, retryAfterSeconds: 30 }], fields: {} });
  await processed;
  await stopped.pipeline.settled();
  deepStrictEqual(releases, [["busy", 7], ["late", undefined]]);
});
