/**
 * Scenario 8: many concurrent sleeping jobs in one worker (`-c` = the number of
 * messages): 200 jobs of 20 s with `-t 6 -e 3` (quick: 100 of 8 s). Every message
 * must run exactly once, and the visibility extension must keep up for all of
 * them: once every job has started, a second "spy" client keeps receiving with a
 * 1 s visibility timeout until the first job ends, and must get nothing. The
 * worker's own CPU time (utime + stime) and VmRSS are reported, not checked: a
 * CPU or memory target is a speed figure, held by `deno task bench`, and a
 * timed assertion on a shared machine would fail on noise.
 *
 * @module
 */
import { join } from "node:path";
import { ReceiveMessageCommand } from "@aws-sdk/client-sqs";
import { queueCounts } from "../../tests/support/sqs.ts";
import { deliveryReport, LEDGER_END, LEDGER_START, nowNs, readLedger } from "./ledger.ts";
import {
  Checks,
  countLines,
  deletedAtOf,
  launchWorker,
  type LogLine,
  observedSuccesses,
  pushBodies,
  readLog,
  redeliveryNotes,
  sample,
  waitFor,
  waitForEverySuccess,
  waitStarted,
  writeJob,
} from "./harness.ts";
import { cpuSeconds, RssSampler } from "./procfs.ts";
import type { Scenario, ScenarioContext, ScenarioOutcome } from "./scenario.ts";

/** Scenario 8. */
export const loadScenario: Scenario = {
  id: 8,
  name: "load",
  budgetMs: (quick) => (quick ? 90_000 : 180_000),
  run: load,
};

async function load(context: ScenarioContext): Promise<ScenarioOutcome> {
  const { quick, dir, client } = context;
  const count = quick ? 100 : 200;
  const jobSeconds = quick ? 8 : 20;
  const url = await context.queue("load");
  const job = await writeJob(
    dir,
    "job.sh",
    `body=$(cat)\n${LEDGER_START}\nsleep ${jobSeconds}\n${LEDGER_END}`,
  );
  const ledger = join(dir, "ledger");
  const bodies = Array.from({ length: count }, (_, i) => `load-${i + 1}`);
  const checks = new Checks();
  const worker = launchWorker({
    args: ["-q", url, "--exec", job, "-c", String(count), "-t", "6", "-e", "3", "-x", "120"],
    env: context.workerEnv(),
    logPath: join(dir, "worker.log"),
  });
  await waitStarted(worker, context.signal);
  const rss = new RssSampler(worker.pid, 200);
  const cpuAtStart = cpuSeconds(worker.pid) ?? 0;
  const ids = await pushBodies(client, url, bodies);
  const pushedAt = performance.now();
  let spied = 0;
  let spyCalls = 0;
  let allStartedIn = NaN;
  let cpu = NaN;
  let logs: LogLine[] = [];
  try {
    await waitFor(
      "every job started",
      async () => {
        return (await readLedger(ledger)).length >= count;
      },
      60_000,
      { signal: context.signal, intervalMs: 100 },
    );
    allStartedIn = (performance.now() - pushedAt) / 1000;
    const runs = await readLedger(ledger);
    const firstStart = runs.reduce((min, run) => (run.startNs < min ? run.startNs : min), nowNs());
    // Stop a second before the first job can end, so an ending job's delete is not mistaken.
    const spyUntil = firstStart + BigInt(jobSeconds - 1) * 1_000_000_000n;
    while (nowNs() < spyUntil) {
      context.signal.throwIfAborted();
      const result = await client.send(
        new ReceiveMessageCommand({
          QueueUrl: url,
          MaxNumberOfMessages: 10,
          VisibilityTimeout: 1,
          WaitTimeSeconds: 1,
        }),
      );
      spyCalls++;
      spied += result.Messages?.length ?? 0;
    }
    await waitForEverySuccess(
      { client, url },
      ids,
      count,
      async () => [logs = await readLog(worker.logPath)],
      jobSeconds * 1000 + 60_000,
      context.signal,
    );
    cpu = (cpuSeconds(worker.pid) ?? NaN) - cpuAtStart;
  } catch (error) {
    checks.that(false, (error as Error).message);
  }
  const peakMiB = Math.round(rss.stop() / 1024 / 1024);
  await worker.stop();
  logs = await readLog(worker.logPath);
  const runs = await readLedger(ledger);
  const report = deliveryReport(
    bodies,
    runs,
    observedSuccesses([logs], ids),
    deletedAtOf(context.witness, ids),
  );
  const counts = await queueCounts(client, url);
  const jobSecondsTotal = runs.reduce(
    (sum, run) => sum + (run.endNs ? Number(run.endNs - run.startNs) / 1e9 : 0),
    0,
  );
  const perJobSecond = cpu / jobSecondsTotal;
  checks.equal(
    report.lost.length,
    0,
    `messages without a success sqsrun saw (${sample(report.lost)})`,
  );
  checks.equal(
    report.ownDuplicates,
    0,
    `messages run more than once (${sample(report.runMoreThanOnce)})`,
  );
  checks.equal(spied, 0, "messages the spy received while the jobs ran");
  checks.that(spyCalls > 0, "the spy never got to receive");
  checks.equal(counts.visible + counts.inFlight + counts.delayed, 0, "messages left in the queue");
  const retried = countLines([logs], "visibility extension failed; retrying");
  return {
    figures: {
      messages: count,
      duplicates: report.duplicates,
      lost: report.lost.length,
      peakRssMiB: peakMiB,
      cpu: Number.isFinite(perJobSecond) ? `${perJobSecond.toFixed(5)} s/job-s` : undefined,
      notes: [
        ...redeliveryNotes(report),
        `${count} jobs of ${jobSeconds} s at once: all started ${
          allStartedIn.toFixed(1)
        } s after the push; spy received ${spied} in ${spyCalls} calls; ` +
        `${retried} extension call(s) retried; worker CPU ${cpu.toFixed(2)} s for ` +
        `${jobSecondsTotal.toFixed(0)} job-seconds`,
      ],
    },
    failures: checks.failures,
  };
}
