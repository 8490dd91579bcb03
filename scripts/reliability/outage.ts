/**
 * Scenario 3: the SQS endpoint goes away mid-run and comes back. The workers talk
 * to the emulator through a TCP relay (tests/support/tcp_proxy.ts) that is cut, so
 * every connection is refused while the emulator keeps its queues and messages.
 * The workers must stay up, back off (few attempts, not a hot loop), resume on
 * their own and finish every message; duplicates (a job that ended during the
 * outage could not delete its message) are counted.
 *
 * @module
 */
import { join } from "node:path";
import { startTcpProxy } from "../../tests/support/tcp_proxy.ts";
import { queueCounts } from "../../tests/support/sqs.ts";
import { CRASH_JOB, crashBodies } from "./crash.ts";
import { deliveryReport, readLedger } from "./ledger.ts";
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
  sleep,
  usageFigures,
  waitFor,
  waitForEverySuccess,
  waitStarted,
  writeJob,
} from "./harness.ts";
import type { Scenario, ScenarioContext, ScenarioOutcome } from "./scenario.ts";

/** Most receive failures a worker may log for an outage of `seconds` with back-off from 1 s. */
export function maxReceiveFailures(seconds: number): number {
  // Back-off 1, 2, 4, ... s: an outage of T s sees about log2(T) + 1 attempts.
  return Math.floor(Math.log2(Math.max(1, seconds))) + 4;
}

/** Scenario 3. */
export const outageScenario: Scenario = {
  id: 3,
  name: "outage",
  budgetMs: (quick) => (quick ? 120_000 : 300_000),
  run: outage,
};

async function outage(context: ScenarioContext): Promise<ScenarioOutcome> {
  const { quick, dir, client } = context;
  const count = quick ? 150 : 400;
  const outageSeconds = quick ? 8 : 30;
  const url = await context.queue("outage");
  const job = await writeJob(dir, "job.sh", CRASH_JOB);
  const ledger = join(dir, "ledger");
  const bodies = crashBodies(count);
  const ids = await pushBodies(client, url, bodies);
  // Workers -> relay (cut here) -> witness -> emulator.
  const proxy = startTcpProxy(context.witness.url);
  const checks = new Checks();
  const workers = [0, 1].map((n) =>
    launchWorker({
      args: ["-q", url, "--exec", job, "-c", "5", "-t", "4", "--wait", "2"],
      env: context.workerEnv(proxy.url),
      logPath: join(dir, `worker-${n}.log`),
    })
  );
  let restoredAt = 0;
  let logs: LogLine[][] = [];
  try {
    await Promise.all(workers.map((worker) => waitStarted(worker, context.signal)));
    await waitFor(
      "a third of the messages ran",
      async () => {
        const ended = (await readLedger(ledger)).filter((run) => run.endNs).length;
        return ended >= count / 3;
      },
      60_000,
      { signal: context.signal, intervalMs: 100 },
    );
    proxy.cut();
    context.progress(`endpoint cut for ${outageSeconds} s`);
    await sleep(outageSeconds * 1000);
    context.signal.throwIfAborted();
    proxy.restore();
    restoredAt = Date.now();
    context.progress("endpoint restored");
    await waitForEverySuccess(
      { client, url },
      ids,
      count,
      async () => (logs = await Promise.all(workers.map((worker) => readLog(worker.logPath)))),
      quick ? 60_000 : 120_000,
      context.signal,
    );
  } catch (error) {
    checks.that(false, (error as Error).message);
  } finally {
    proxy.close();
  }
  const alive = workers.filter((worker) => worker.exitStatus() === undefined).length;
  await Promise.all(workers.map((worker) => worker.stop()));
  logs = await Promise.all(workers.map((worker) => readLog(worker.logPath)));
  const runs = await readLedger(ledger);
  const report = deliveryReport(
    bodies,
    runs,
    observedSuccesses(logs, ids),
    deletedAtOf(context.witness, ids),
  );
  const counts = await queueCounts(client, url);

  checks.equal(alive, workers.length, "workers alive after the outage");
  checks.equal(
    report.lost.length,
    0,
    `messages without a success sqsrun saw (${sample(report.lost)})`,
  );
  checks.equal(counts.visible + counts.inFlight + counts.delayed, 0, "messages left in the queue");
  const resumedAfter: number[] = [];
  workers.forEach((worker, index) => {
    const lines = logs[index];
    const failures = lines.filter((line) => line.msg === "receive failed; backing off").length;
    checks.that(failures >= 1, `worker ${worker.pid} never saw the outage`);
    checks.that(
      failures <= maxReceiveFailures(outageSeconds),
      `worker ${worker.pid} tried ${failures} receives in a ${outageSeconds} s outage: no back-off`,
    );
    const again = lines.find((line) => line.msg === "receiving again");
    checks.that(again !== undefined, `worker ${worker.pid} never logged 'receiving again'`);
    if (again) resumedAfter.push((Date.parse(String(again.ts)) - restoredAt) / 1000);
    checks.equal(worker.exitStatus()?.code, 0, `exit code of worker ${worker.pid} after SIGTERM`);
  });
  // The longest back-off is 30 s: a worker must be receiving again within it.
  checks.that(
    resumedAfter.every((seconds) => seconds <= 32),
    `resumed ${resumedAfter.join(", ")} s after the endpoint came back`,
  );
  const undeleted = countLines(
    logs,
    "job succeeded but its message could not be deleted; SQS will deliver it again",
  );
  return {
    figures: {
      ...usageFigures(workers),
      messages: count,
      duplicates: report.duplicates,
      lost: report.lost.length,
      notes: [
        `${outageSeconds} s outage; workers receiving again ${
          resumedAfter.map((s) => s.toFixed(1)).join(" and ")
        } s after it ended`,
        `receive attempts failed during the outage: ${
          logs.map((lines) =>
            lines.filter((line) => line.msg === "receive failed; backing off").length
          ).join(" and ")
        }; ${undeleted} successful job(s) could not delete their message (run again later)`,
        ...redeliveryNotes(report),
      ],
    },
    failures: checks.failures,
  };
}
