/**
 * Scenario 4: jobs that run five times the visibility timeout, on two workers
 * sharing the queue (`-t 2 -e 1`). Only the visibility extension keeps a message
 * from the other worker: the ledger must show exactly one run per message and no
 * two runs of a message at the same time.
 *
 * @module
 */
import { join } from "node:path";
import { queueCounts } from "../../tests/support/sqs.ts";
import { deliveryReport, findOverlaps, LEDGER_END, LEDGER_START, readLedger } from "./ledger.ts";
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
  usageFigures,
  waitForEverySuccess,
  waitStarted,
  writeJob,
} from "./harness.ts";
import type { Scenario, ScenarioContext, ScenarioOutcome } from "./scenario.ts";

/** `-t`: the visibility timeout of the scenario. */
const VISIBILITY = 2;
/** How long each job runs: five visibility timeouts. */
const JOB_SECONDS = VISIBILITY * 5;

/** Scenario 4. */
export const slowScenario: Scenario = {
  id: 4,
  name: "slow jobs",
  budgetMs: (quick) => (quick ? 90_000 : 180_000),
  run: slow,
};

async function slow(context: ScenarioContext): Promise<ScenarioOutcome> {
  const { quick, dir, client } = context;
  const count = quick ? 6 : 12;
  const url = await context.queue("slow");
  const job = await writeJob(
    dir,
    "job.sh",
    `body=$(cat)\n${LEDGER_START}\nsleep ${JOB_SECONDS}\n${LEDGER_END}`,
  );
  const ledger = join(dir, "ledger");
  const bodies = Array.from({ length: count }, (_, i) => `slow-${i + 1}`);
  const ids = await pushBodies(client, url, bodies);
  const checks = new Checks();
  // More slots than messages: each worker keeps polling while its jobs run, so a
  // message whose visibility lapsed would be taken by the other one at once.
  const slots = String(Math.ceil((count * 2) / 3));
  const args = ["-q", url, "--exec", job, "-c", slots, "-t", String(VISIBILITY), "-e", "1"];
  const workers = [0, 1].map((n) =>
    launchWorker({
      args: [...args, "-x", String(JOB_SECONDS * 3), "--wait", "1"],
      env: context.workerEnv(),
      logPath: join(dir, `worker-${n}.log`),
    })
  );
  let logs: LogLine[][] = [];
  try {
    await Promise.all(workers.map((worker) => waitStarted(worker, context.signal)));
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
  }
  // Give a message whose visibility lapsed every chance to show up at the other worker.
  await new Promise((resolve) => setTimeout(resolve, VISIBILITY * 1500));
  await Promise.all(workers.map((worker) => worker.stop()));
  logs = await Promise.all(workers.map((worker) => readLog(worker.logPath)));
  const runs = await readLedger(ledger);
  const report = deliveryReport(
    bodies,
    runs,
    observedSuccesses(logs, ids),
    deletedAtOf(context.witness, ids),
  );
  const overlaps = findOverlaps(runs);
  const counts = await queueCounts(client, url);
  checks.equal(
    report.lost.length,
    0,
    `messages without a success sqsrun saw (${sample(report.lost)})`,
  );
  checks.equal(
    overlaps.length,
    0,
    `messages run twice at once (${sample(overlaps.map((o) => o.body))})`,
  );
  checks.equal(
    report.ownDuplicates,
    0,
    `messages run more than once (${sample(report.runMoreThanOnce)})`,
  );
  checks.equal(counts.visible + counts.inFlight + counts.delayed, 0, "messages left in the queue");
  checks.equal(countLines(logs, "job failed"), 0, "failed jobs");
  const extended = logs.flat().filter((line) => line.msg === "job finished").length;
  const failedExtensions = countLines(logs, "visibility extension failed; retrying");
  const perWorker = [...new Set(runs.map((run) => run.workerPid))].length;
  return {
    figures: {
      ...usageFigures(workers),
      messages: count,
      duplicates: report.duplicates,
      lost: report.lost.length,
      notes: [
        ...redeliveryNotes(report),
        `${count} jobs of ${JOB_SECONDS} s with -t ${VISIBILITY} -e 1 on 2 workers ` +
        `(${perWorker} ran jobs); ${extended} finished; ${failedExtensions} extension call(s) retried`,
      ],
    },
    failures: checks.failures,
  };
}
