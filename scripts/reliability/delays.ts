/**
 * Scenarios 9 and 10: the endpoint answers late. The witness relays each request
 * to the emulator at once (so the call takes effect there on time) and holds the
 * emulator's answer for a random 3-8 s (9: ReceiveMessage) or 3-10 s (10:
 * ChangeMessageVisibility and its batch form); every call succeeds. Two workers
 * share the queue, `-c 10 -t 10 --wait 5`, with more slots than messages in
 * scenario 10, so a message whose visibility lapses is taken by the other worker.
 *
 * A late receive answer leaves the worker less of the visibility timeout than it
 * thinks (the queue started the clock when it handed the message out); a late
 * extension answer makes a keeper that counts from the answer extend too late. In
 * both cases the message comes back while its job runs, and a second run starts.
 * Checks: no two runs of a message at the same time, no duplicate of sqsrun's, no
 * truncated input, nothing lost, nothing left in the queue.
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
  waitForEverySuccess,
  waitStarted,
  writeJob,
} from "./harness.ts";
import {
  analyseRuns,
  checkFaultRun,
  faultFigures,
  faultJob,
  queueOverlapNotes,
  seconds,
  timedBodies,
  witnessView,
} from "./faults.ts";
import type { Scenario, ScenarioContext, ScenarioOutcome } from "./scenario.ts";
import { randomMs } from "./witness.ts";

/** `-t` of both scenarios. */
const VISIBILITY = 10;

/** What one of the two scenarios delays, and how much. */
export interface DelayPlan {
  prefix: string;
  fault: string;
  /** Actions whose answers are held. */
  actions: readonly string[];
  /** Hold of each answer, ms: drawn in [minMs, maxMs]. */
  minMs: number;
  maxMs: number;
  messages: number;
  /** Job time of each message, ms: drawn in [jobMinMs, jobMaxMs]. */
  jobMinMs: number;
  jobMaxMs: number;
  /** Longest wait for every message to succeed, ms. */
  deadlineMs: number;
}

/** Scenario 9's parameters. */
export function receivePlan(quick: boolean): DelayPlan {
  return {
    prefix: "dr",
    fault: "delayed receive answers",
    actions: ["ReceiveMessage"],
    minMs: 3_000,
    maxMs: 8_000,
    messages: quick ? 30 : 60,
    jobMinMs: 5_000,
    jobMaxMs: 8_000,
    deadlineMs: quick ? 75_000 : 150_000,
  };
}

/** Scenario 10's parameters. */
export function extensionPlan(quick: boolean): DelayPlan {
  return {
    prefix: "de",
    fault: "delayed extension answers",
    actions: ["ChangeMessageVisibility", "ChangeMessageVisibilityBatch"],
    minMs: 3_000,
    maxMs: 10_000,
    // Fewer than the 20 slots: a lapsed message finds a free one at once.
    messages: quick ? 12 : 30,
    // Two extensions or more each: the first one's late answer leaves a lapse.
    jobMinMs: quick ? 20_000 : 24_000,
    jobMaxMs: quick ? 26_000 : 34_000,
    deadlineMs: quick ? 75_000 : 150_000,
  };
}

/** Scenario 9. */
export const delayedReceiveScenario: Scenario = {
  id: 9,
  name: "delayed receive",
  budgetMs: (quick) => (quick ? 150_000 : 300_000),
  run: (context) => delayed(context, receivePlan(context.quick)),
};

/** Scenario 10. */
export const delayedExtensionScenario: Scenario = {
  id: 10,
  name: "delayed extension",
  budgetMs: (quick) => (quick ? 150_000 : 300_000),
  run: (context) => delayed(context, extensionPlan(context.quick)),
};

async function delayed(context: ScenarioContext, plan: DelayPlan): Promise<ScenarioOutcome> {
  const { dir, client, witness } = context;
  const url = await context.queue(plan.prefix);
  const job = await writeJob(dir, "job.sh", faultJob());
  const bodies = timedBodies(plan.prefix, plan.messages, plan.jobMinMs, plan.jobMaxMs);
  const ids = await pushBodies(client, url, bodies);
  witness.faults = {
    delayMs: (action) =>
      plan.actions.includes(action) ? randomMs(plan.minMs, plan.maxMs) : undefined,
  };
  const checks = new Checks();
  const workers = [0, 1].map((n) =>
    launchWorker({
      args: ["-q", url, "--exec", job, "-c", "10", "-t", String(VISIBILITY), "--wait", "5"],
      env: context.workerEnv(),
      logPath: join(dir, `worker-${n}.log`),
    })
  );
  const started = Date.now();
  let logs: LogLine[][] = [];
  try {
    await Promise.all(workers.map((worker) => waitStarted(worker, context.signal)));
    await waitForEverySuccess(
      { client, url },
      ids,
      plan.messages,
      async () => (logs = await Promise.all(workers.map((worker) => readLog(worker.logPath)))),
      plan.deadlineMs,
      context.signal,
    );
    // A message whose visibility lapsed at the very end gets a moment to show up.
    await sleep(2_000);
  } catch (error) {
    checks.that(false, (error as Error).message);
  }
  const elapsed = Date.now() - started;
  witness.faults = {};
  // Jobs (when some still run) are longer than stop()'s default grace.
  await Promise.all(workers.map((worker) => worker.stop(plan.jobMaxMs + 10_000)));
  logs = await Promise.all(workers.map((worker) => readLog(worker.logPath)));
  const runs = await readLedger(join(dir, "ledger"));
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
  for (const worker of workers) {
    checks.that(
      worker.exitStatus()?.code === 0,
      `worker ${worker.pid} exit code ${worker.exitStatus()?.code} after SIGTERM`,
    );
  }
  const held = witness.calls.filter((call) => plan.actions.includes(call.action) && call.heldMs);
  const meanHeld = held.reduce((sum, call) => sum + call.heldMs, 0) / Math.max(1, held.length);
  const again = countLines(logs, "message delivered again while in hand; it runs once");
  const retried = countLines(logs, "visibility extension failed; retrying");
  const undeleted = countLines(
    logs,
    "job succeeded but its message could not be deleted; SQS will deliver it again",
  );
  return {
    figures: {
      ...usageFigures(workers),
      ...faultFigures(
        analysis,
        plan.fault,
        `${seconds(plan.minMs)}-${seconds(plan.maxMs)} s`,
        plan.messages,
      ),
      notes: [
        `${held.length} ${plan.actions.join("/")} answers held ${seconds(meanHeld)} s on average` +
        `; jobs of ${seconds(plan.jobMinMs)}-${seconds(plan.jobMaxMs)} s, -t ${VISIBILITY}; ` +
        `${seconds(elapsed)} s in all`,
        `${again} message(s) delivered again while in hand; ${retried} extension(s) retried; ` +
        `${undeleted} success(es) whose delete failed`,
        ...queueOverlapNotes(analysis),
      ],
    },
    failures: checks.failures,
  };
}
