/**
 * Scenario 12: bursts of server errors against deletes. While the jobs run, the
 * witness answers every DeleteMessage and DeleteMessageBatch with an SQS HTTP 500
 * or 503 (drawn per call) during 8-second windows, 4 s apart; every other call, and
 * every delete between the bursts, goes through. Every job succeeds.
 *
 * A worker that gives up on a delete within the burst leaves a succeeded message
 * to come back after its visibility timeout, and it runs again. Checks: no message
 * whose job succeeded ran again (duplicates of sqsrun's: 0), no two runs at the
 * same time, no truncated input, nothing lost, nothing left in the queue.
 *
 * @module
 */
import { join } from "node:path";
import { queueCounts } from "../../tests/support/sqs.ts";
import { readLedger } from "./ledger.ts";
import {
  Checks,
  countLines,
  launchWorker,
  type LogLine,
  observedSuccesses,
  pushBodies,
  readLog,
  sleep,
  usageFigures,
  waitFor,
  waitForEverySuccess,
  waitStarted,
  writeJob,
} from "./harness.ts";
import {
  analyseRuns,
  burstWindows,
  checkFaultRun,
  faultFigures,
  faultJob,
  inWindows,
  queueOverlapNotes,
  seconds,
  timedBodies,
  type Window,
  witnessView,
} from "./faults.ts";
import type { Scenario, ScenarioContext, ScenarioOutcome } from "./scenario.ts";

/** Length of one burst, ms. */
const BURST_MS = 8_000;
/** Pause between bursts, ms. */
const GAP_MS = 4_000;
/** `-t` of the workers: a message whose delete was given up comes back within it. */
const VISIBILITY = 5;
const DELETES = ["DeleteMessage", "DeleteMessageBatch"];

/** Scenario 12. */
export const deleteBurstScenario: Scenario = {
  id: 12,
  name: "5xx on deletes",
  budgetMs: (quick) => (quick ? 120_000 : 240_000),
  run: bursts,
};

async function bursts(context: ScenarioContext): Promise<ScenarioOutcome> {
  const { quick, dir, client, witness } = context;
  const count = quick ? 40 : 100;
  const burstCount = quick ? 2 : 3;
  // Enough work to outlast the bursts: 8 slots, 4 s (quick) or 3 s per job on average.
  const bodies = quick
    ? timedBodies("b", count, 3_000, 5_000)
    : timedBodies("b", count, 2_000, 4_000);
  const url = await context.queue("bursts");
  const job = await writeJob(dir, "job.sh", faultJob());
  const ids = await pushBodies(client, url, bodies);
  const ledger = join(dir, "ledger");
  const checks = new Checks();
  const workers = [0, 1].map((n) =>
    launchWorker({
      args: ["-q", url, "--exec", job, "-c", "4", "-t", String(VISIBILITY), "--wait", "1"],
      env: context.workerEnv(),
      logPath: join(dir, `worker-${n}.log`),
    })
  );
  let windows: Window[] = [];
  let logs: LogLine[][] = [];
  try {
    await Promise.all(workers.map((worker) => waitStarted(worker, context.signal)));
    await waitFor(
      "a tenth of the messages ran",
      async () => (await readLedger(ledger)).filter((run) => run.endNs).length >= count / 10,
      60_000,
      { signal: context.signal, intervalMs: 100 },
    );
    windows = burstWindows(Date.now(), burstCount, BURST_MS, GAP_MS);
    witness.faults = {
      fail: (action) =>
        DELETES.includes(action) && inWindows(windows, Date.now())
          ? (Math.random() < 0.5 ? 500 : 503)
          : undefined,
    };
    context.progress(`${burstCount} bursts of ${BURST_MS / 1000} s of 5xx on deletes`);
    await sleep(windows.at(-1)!.to - Date.now());
    await waitForEverySuccess(
      { client, url },
      ids,
      count,
      async () => (logs = await Promise.all(workers.map((worker) => readLog(worker.logPath)))),
      quick ? 60_000 : 120_000,
      context.signal,
    );
    // A message whose delete was given up comes back within the visibility timeout.
    await sleep(2_000);
  } catch (error) {
    checks.that(false, (error as Error).message);
  }
  witness.faults = {};
  await Promise.all(workers.map((worker) => worker.stop()));
  logs = await Promise.all(workers.map((worker) => readLog(worker.logPath)));
  const runs = await readLedger(ledger);
  const analysis = analyseRuns(
    bodies,
    runs,
    observedSuccesses(logs, ids),
    ids,
    witnessView([witness]),
  );
  checkFaultRun(checks, analysis);
  const counts = await queueCounts(client, url);
  checks.equal(counts.visible + counts.inFlight + counts.delayed, 0, "messages left in the queue");
  checks.equal(countLines(logs, "job failed"), 0, "failed jobs");
  const refused = witness.calls.filter((call) => call.outcome === "failed");
  checks.that(refused.length > 0, "no delete met a burst: the run was too short");
  const undeleted = countLines(
    logs,
    "job succeeded but its message could not be deleted; SQS will deliver it again",
  );
  const retried = countLines(logs, "delete failed; retrying");
  return {
    figures: {
      ...usageFigures(workers),
      ...faultFigures(
        analysis,
        "HTTP 500/503 on deletes",
        `${burstCount} bursts of ${seconds(BURST_MS)} s`,
        count,
      ),
      notes: [
        `${refused.length} delete calls answered 5xx (${
          refused.filter((call) => call.status === 503).length
        } of them 503); ${retried} delete attempt(s) retried; ${undeleted} success(es) whose ` +
        `delete was given up; -t ${VISIBILITY}, 2 workers -c 4`,
        ...queueOverlapNotes(analysis),
      ],
    },
    failures: checks.failures,
  };
}
