/**
 * Unit tests of the worker's counters: a finished job counts as exactly one of
 * succeeded, failed or killed; parks are not releases; the stop summary is read
 * from the same counts `/metrics` renders, so the two agree.
 */
import { deepStrictEqual, strictEqual } from "node:assert/strict";
import { startHttpMetrics } from "../../src/metrics/http.ts";
import { fanOut } from "../../src/metrics/metrics.ts";
import { createTally, summaryFields } from "../../src/metrics/tally.ts";
import { quietLogger } from "../support/recording_logger.ts";

Deno.test("tally: each finished job is succeeded, failed or killed; a killed job is not also failed", () => {
  const tally = createTally();
  tally.jobFinished({ durationMs: 1, succeeded: true, killed: false });
  tally.jobFinished({ durationMs: 1, succeeded: false, killed: false });
  tally.jobFinished({ durationMs: 1, succeeded: false, killed: true });
  tally.jobFinished({
    durationMs: 1,
    succeeded: false,
    killed: false,
    messages: 3,
    failedMessages: 1,
  });
  const { jobsSucceeded, jobsFailed, jobsKilled, jobMessages, jobsPartlyFailed } = tally.counts;
  deepStrictEqual(
    { jobsSucceeded, jobsFailed, jobsKilled, jobMessages, jobsPartlyFailed },
    { jobsSucceeded: 1, jobsFailed: 2, jobsKilled: 1, jobMessages: 6, jobsPartlyFailed: 1 },
  );
});

Deno.test("tally: the summary fields, from uptime to lines dropped", () => {
  const tally = createTally();
  tally.messagesReceived(4);
  for (let i = 0; i < 4; i++) tally.jobStarted(undefined);
  tally.jobFinished({ durationMs: 5, succeeded: true, killed: false });
  tally.jobFinished({ durationMs: 5, succeeded: true, killed: false });
  tally.jobFinished({ durationMs: 5, succeeded: false, killed: false });
  tally.jobFinished({ durationMs: 5, succeeded: false, killed: true });
  tally.messageDeleted();
  tally.messageDeleted();
  tally.messageReleased();
  tally.messageReleased();
  tally.messageParked();
  tally.logLinesDropped(5, 2);
  deepStrictEqual(summaryFields(tally.counts, 61_234), {
    uptime_s: 61.2,
    received: 4,
    jobs_run: 4,
    succeeded: 2,
    failed: 1,
    killed: 1,
    deleted: 2,
    released: 2,
    parked: 1,
    lines_dropped: 7,
  });
});

Deno.test("tally: /metrics shows the counts the summary reads, counted once through the fan-out", async () => {
  const tally = createTally();
  const http = startHttpMetrics({
    address: { hostname: "127.0.0.1", port: 0 },
    queue: "q",
    concurrency: 1,
    healthWindowMs: 1_000,
    log: quietLogger,
    tally,
  });
  const metrics = fanOut([tally, http]);
  try {
    metrics.messagesReceived(3);
    metrics.jobStarted(10);
    metrics.jobFinished({ durationMs: 5, succeeded: false, killed: true });
    metrics.messageReleased();
    metrics.messageParked();
    metrics.messageDeleted();
    metrics.s3ObjectDeleted();
    metrics.logLinesDropped(1, 1);
    const page = await (await fetch(`${http.url}/metrics`)).text();
    const value = (name: string) =>
      Number(
        page.split("\n").find((line) => line.startsWith(`${name}{queue="q"} `))?.split(" ")[1],
      );
    const { uptime_s: _uptime, ...summary } = summaryFields(tally.counts, 0);
    deepStrictEqual(
      {
        received: value("sqsrun_messages_received_total"),
        jobs_run: value("sqsrun_jobs_started_total"),
        succeeded: value("sqsrun_jobs_succeeded_total"),
        failed: value("sqsrun_jobs_failed_total"),
        killed: value("sqsrun_jobs_killed_total"),
        deleted: value("sqsrun_messages_deleted_total"),
        released: value("sqsrun_messages_released_total"),
        parked: value("sqsrun_messages_parked_total"),
        lines_dropped: value("sqsrun_log_lines_dropped_job_total") +
          value("sqsrun_log_lines_dropped_worker_total"),
      },
      summary,
    );
    strictEqual(value("sqsrun_s3_objects_deleted_total"), 1);
    strictEqual(summary.killed, 1, "counted once, not once per sink");
  } finally {
    await http.close();
  }
});
