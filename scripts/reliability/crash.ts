/**
 * Scenarios 1 and 2: four workers share a queue while, every few seconds, one of
 * them is SIGKILLed (1, crash) or SIGTERMed (2, graceful) and replaced at once.
 *
 * Crash: every message must still run to a success sqsrun saw, nothing may stay in
 * the queue, and every extra run must be explained by a killed worker; duplicates
 * are counted. The jobs of a SIGKILLed worker are in sessions of their own, so only
 * the worker's watchdog (src/runners/process/watchdog.ts) can end them: none of them may run
 * on for more than a second after the kill. Half the jobs write a line to stdout
 * after their work, which an orphan can no longer do.
 *
 * Graceful: the same, and not a single message may run twice.
 *
 * @module
 */
import { join } from "node:path";
import {
  type DeletedAt,
  deliveryReport,
  LEDGER_END,
  LEDGER_START,
  nowNs,
  readLedger,
  type Run,
  runningAt,
  runsByBody,
} from "./ledger.ts";
import {
  assertRunning,
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
  waitForEverySuccess,
  waitStarted,
  type WorkerRun,
  writeJob,
} from "./harness.ts";
import { killProcesses, membersOf } from "./procfs.ts";
import { racedDeliveries, type SqsWitness } from "./witness.ts";
import type { Figures, Scenario, ScenarioContext, ScenarioOutcome } from "./scenario.ts";
import { queueCounts } from "../../tests/support/sqs.ts";

/** Workers sharing the queue. */
const WORKERS = 4;
/** `-c` of each worker. */
const CONCURRENCY = 5;
/** Short, so messages a killed worker held come back within seconds. */
const VISIBILITY = 4;

/**
 * The job: the body is `c-<n>-<ms>`; it sleeps ms milliseconds (0-300). Odd-numbered
 * ("chatty") jobs print a line to stdout after their work, before their ledger end.
 */
export const CRASH_JOB = `body=$(cat)
${LEDGER_START}
ms=\${body##*-}
sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
n=\${body#c-}; n=\${n%%-*}
case $n in *[13579]) echo "done $body" ;; esac
${LEDGER_END}`;

/** `count` unique bodies `c-<n>-<ms>` with a random sleep of 0-300 ms each. */
export function crashBodies(count: number): string[] {
  return Array.from(
    { length: count },
    (_, i) => `c-${String(i + 1).padStart(5, "0")}-${Math.floor(Math.random() * 301)}`,
  );
}

/** True for a body whose job writes to stdout after its work. */
export function isChatty(body: string): boolean {
  return Number(body.split("-")[1]) % 2 === 1;
}

interface Incarnation {
  worker: WorkerRun;
  /** When it was killed or asked to stop, ns since the epoch. */
  stoppedNs?: bigint;
}

/** Scenario 1. */
export const crashScenario: Scenario = {
  id: 1,
  name: "crash (SIGKILL)",
  budgetMs: (quick) => (quick ? 150_000 : 600_000),
  run: (context) => churn(context, "SIGKILL"),
};

/** Scenario 2. */
export const gracefulScenario: Scenario = {
  id: 2,
  name: "graceful (SIGTERM)",
  budgetMs: (quick) => (quick ? 150_000 : 600_000),
  run: (context) => churn(context, "SIGTERM"),
};

async function churn(
  context: ScenarioContext,
  signal: "SIGKILL" | "SIGTERM",
): Promise<ScenarioOutcome> {
  const started = Date.now();
  const { quick, dir, client } = context;
  const count = quick ? 200 : 1000;
  // Kills are spread over the run by progress rather than by the clock, so that every
  // run has the same number of them on a fast or a busy machine.
  const kills = quick ? 6 : 12;
  const milestones = Array.from({ length: kills }, (_, i) => Math.ceil(count * (0.08 + 0.07 * i)));
  const minGapMs = quick ? 400 : 800;
  const url = await context.queue(signal === "SIGKILL" ? "crash" : "graceful");
  const job = await writeJob(dir, "job.sh", CRASH_JOB);
  const ledger = join(dir, "ledger");
  const bodies = crashBodies(count);
  const ids = await pushBodies(client, url, bodies);
  context.progress(`pushed ${count} messages`);

  const args = [
    "-q",
    url,
    "--exec",
    job,
    "-c",
    String(CONCURRENCY),
    "-t",
    String(VISIBILITY),
    "--wait",
    "2",
    "--shutdown-timeout",
    "30",
  ];
  const incarnations: Incarnation[] = [];
  const launch = () => {
    const worker = launchWorker({
      args,
      env: context.workerEnv(),
      logPath: join(dir, `worker-${incarnations.length}.log`),
    });
    incarnations.push({ worker });
    return incarnations.at(-1)!;
  };
  const slots = Array.from({ length: WORKERS }, launch);
  await Promise.all(slots.map((slot) => waitStarted(slot.worker, context.signal)));

  let stopped = 0;
  let lastKill = 0;
  const ended = async () =>
    new Set((await readLedger(ledger)).filter((run) => run.endNs).map((run) => run.body)).size;
  while (stopped < kills) {
    await sleep(100);
    context.signal.throwIfAborted();
    assertRunning(slots.map((slot) => slot.worker));
    const done = await ended();
    if (done < milestones[stopped] || Date.now() - lastKill < minGapMs) continue;
    if (done >= count) break;
    const index = stopped % WORKERS;
    const victim = slots[index];
    // A signal that comes before the worker's code runs (Deno still loading it) can
    // only end it the default way: a drain is asked of started workers.
    if (signal !== "SIGKILL") await waitStarted(victim.worker, context.signal);
    victim.stoppedNs = nowNs();
    victim.worker.signal(signal);
    stopped++;
    lastKill = Date.now();
    if (signal === "SIGKILL") await victim.worker.status;
    slots[index] = launch();
    context.progress(`${signal} worker ${victim.worker.pid} (${stopped}); ${done}/${count} ended`);
  }

  const checks = new Checks();
  const deadlineMs = quick ? 90_000 : 300_000;
  let logs: LogLine[][] = [];
  try {
    await waitForEverySuccess(
      { client, url },
      ids,
      count,
      async () => {
        assertRunning(slots.map((slot) => slot.worker));
        return logs = await Promise.all(incarnations.map(({ worker }) => readLog(worker.logPath)));
      },
      deadlineMs,
      context.signal,
    );
  } catch (error) {
    checks.that(false, (error as Error).message);
  }
  await Promise.all(slots.map((slot) => slot.worker.stop()));
  // A last orphan of a SIGKILLed worker may still be writing its end line.
  await sleep(1_000);
  logs = await Promise.all(incarnations.map(({ worker }) => readLog(worker.logPath)));
  const allRuns = await readLedger(ledger);
  const killed = new Map(
    incarnations.filter((i) => i.stoppedNs !== undefined).map((i) => [i.worker.pid, i.stoppedNs!]),
  );
  // A worker SIGKILLed between spawning a job and writing its stdin leaves a job that
  // reads an empty body (its parent may already be init, pid 1): it cannot be tied to
  // a message, so it is counted apart, and only a dead worker may leave one.
  const orphanParents = new Set([...killed.keys(), 1]);
  const inputless = allRuns.filter((run) => run.body === "");
  const runs = allRuns.filter((run) => run.body !== "");
  const succeeded = observedSuccesses(logs, ids);
  const deletedAt = deletedAtOf(context.witness, ids);
  const report = deliveryReport(
    bodies,
    runs,
    succeeded,
    deletedAt,
    undefined,
    racedRuns(runs, ids, context.witness),
  );
  const counts = await queueCounts(client, url);

  checks.that(stopped >= kills / 2, `only ${stopped} workers were stopped; the run was too short`);
  checks.equal(
    report.lost.length,
    0,
    `messages without a success sqsrun saw (${sample(report.lost)})`,
  );
  checks.equal(
    report.unknown.length,
    0,
    `bodies that were never pushed (${sample(report.unknown)})`,
  );
  checks.equal(counts.visible + counts.inFlight + counts.delayed, 0, "messages left in the queue");
  checks.equal(
    inputless.filter((run) => !orphanParents.has(run.workerPid)).length,
    0,
    "jobs of a live worker that got an empty body",
  );
  checkSuccessesRan(checks, logs, incarnations, ids, runs);
  const figures: Figures = {
    ...usageFigures(incarnations.map((incarnation) => incarnation.worker)),
    messages: count,
    kills: stopped,
    duplicates: report.duplicates,
    lost: report.lost.length,
    notes: redeliveryNotes(report),
  };
  if (signal === "SIGKILL") {
    const idOfBody = new Map([...ids].map(([id, body]) => [body, id]));
    const raced = (body: string) => {
      const id = idOfBody.get(body);
      const deliveries = id === undefined ? [] : context.witness.deliveriesOf(id);
      return deliveries.some((d, i) => i > 0 && d.at - deliveries[i - 1].at < RACE_WINDOW_MS);
    };
    checkDuplicatesExplained(checks, runs, orphanParents, deletedAt, raced);
    checks.equal(
      orphansLivingOn(runs, killed).length,
      0,
      "jobs of a SIGKILLed worker that ended more than 1 s after the kill (the watchdog missed them)",
    );
    figures.notes.push(orphanNote(runs, killed));
    if (inputless.length > 0) {
      figures.notes.push(
        `${inputless.length} job(s) started as their worker died and read an empty stdin`,
      );
    }
  } else {
    checks.equal(inputless.length, 0, "jobs that got an empty body");
    checks.equal(
      report.ownDuplicates,
      0,
      `duplicate runs (${sample(report.runMoreThanOnce)})`,
    );
    checks.equal(countLines(logs, "job failed"), 0, "failed jobs");
    for (const { worker, stoppedNs } of incarnations) {
      if (stoppedNs === undefined) continue;
      checks.equal(worker.exitStatus()?.code, 0, `exit code of SIGTERMed worker ${worker.pid}`);
    }
    const drain = await drainStrandsNothing(context, job);
    checks.equal(drain.stranded, 0, "messages pushed during a drain left invisible (stranded)");
    checks.that(
      drain.drainMs < (DRAIN_WAIT + 4) * 1000,
      `the drain of an idle worker took ${drain.drainMs} ms with --wait ${DRAIN_WAIT}`,
    );
    figures.notes.push(
      `drain of an idle worker (--wait ${DRAIN_WAIT}): ${DRAIN_PUSHED} messages pushed during ` +
        `it, ${drain.stranded} stranded, exit ${(drain.drainMs / 1000).toFixed(1)} s after SIGTERM`,
    );
  }
  for (const { worker } of incarnations) {
    checks.that(
      !worker.stderr().includes("    at "),
      `worker ${worker.pid} printed a stack trace: ${worker.stderr().slice(-300)}`,
    );
  }
  const leftovers = membersOf(allRuns.map((run) => run.jobPid));
  checks.equal(
    leftovers.length,
    0,
    `job processes left running (${sample(leftovers.map((p) => p.pid))})`,
  );
  killProcesses(leftovers.map((stat) => stat.pid));
  figures.notes.push(`${(count / ((Date.now() - started) / 1000)).toFixed(0)} messages/s overall`);
  return { figures, failures: checks.failures };
}

/** `--wait` of the drain check: its long poll is in flight when the worker is stopped. */
const DRAIN_WAIT = 5;
/** Messages pushed while that worker drains. */
const DRAIN_PUSHED = 5;

/**
 * Issue 13's drain check: an idle worker is SIGTERMed while its long poll waits,
 * and messages are pushed right after. A poll the drain cancelled could still be
 * handed them by SQS, and they would stay invisible for `-t` seconds with a receive
 * spent; a poll that finishes brings them back to the worker, which gives them back
 * at once. Stranded: still in flight 2 s after the worker exited.
 */
async function drainStrandsNothing(
  context: ScenarioContext,
  job: string,
): Promise<{ stranded: number; drainMs: number }> {
  const url = await context.queue("graceful-drain");
  const worker = launchWorker({
    args: ["-q", url, "--exec", job, "-t", "30", "--wait", String(DRAIN_WAIT)],
    env: context.workerEnv(),
    logPath: join(context.dir, "drain-worker.log"),
  });
  await waitStarted(worker, context.signal);
  await sleep(1_000);
  const stoppedAt = Date.now();
  worker.signal("SIGTERM");
  await sleep(300);
  await pushBodies(
    context.client,
    url,
    Array.from({ length: DRAIN_PUSHED }, (_, i) => `drain-${i}-10`),
  );
  await worker.status;
  const drainMs = Date.now() - stoppedAt;
  await sleep(2_000);
  const counts = await queueCounts(context.client, url);
  return { stranded: counts.inFlight, drainMs };
}

/**
 * Every `job finished` a worker logged must match a ledger run of the same body, by
 * that worker, that reached its end: sqsrun deletes only after a real success.
 */
function checkSuccessesRan(
  checks: Checks,
  logs: LogLine[][],
  incarnations: Incarnation[],
  ids: ReadonlyMap<string, string>,
  runs: Run[],
): void {
  const ended = new Set(
    runs.filter((run) => run.endNs).map((run) => `${run.body} ${run.workerPid}`),
  );
  const unmatched: string[] = [];
  logs.forEach((lines, index) => {
    const pid = incarnations[index].worker.pid;
    for (const line of lines) {
      if (line.msg !== "job finished") continue;
      const body = ids.get(String(line.message_id));
      if (!ended.has(`${body} ${pid}`)) unmatched.push(`${body}@${pid}`);
    }
  });
  checks.equal(unmatched.length, 0, `successes without a completed run (${sample(unmatched)})`);
}

/**
 * A message may run again only because an earlier run's worker was SIGKILLed
 * before it could delete the message, or because the queue delivered it again after
 * acknowledging its delete: every run but the last of a message must belong to a
 * killed worker (or to init, when the job outlived its worker at once), or be
 * followed by a run that started after the acknowledged delete.
 */
function checkDuplicatesExplained(
  checks: Checks,
  runs: Run[],
  orphanParents: ReadonlySet<number>,
  deletedAt: DeletedAt,
  raced: (body: string) => boolean,
): void {
  const unexplained: string[] = [];
  for (const [body, list] of runsByBody(runs)) {
    if (raced(body)) continue;
    const deleted = deletedAt(body);
    list.slice(0, -1).forEach((run, index) => {
      const redelivered = deleted !== undefined && list[index + 1].startNs > deleted;
      if (!orphanParents.has(run.workerPid) && !redelivered) unexplained.push(body);
    });
  }
  checks.equal(unexplained.length, 0, `duplicates not caused by a kill (${sample(unexplained)})`);
}

/**
 * Two deliveries of one message this close together are the queue's doing: moto
 * hands one message to overlapping receive calls (its race, F10/F13), although the
 * first delivery's visibility timeout (4 s here) had just begun.
 */
const RACE_WINDOW_MS = 1_000;

/**
 * Runs of a delivery the queue handed out twice at once (see `racedDeliveries`): of
 * each message's runs, those whose receive count is a raced delivery's, but never
 * its first run, which stays sqsrun's to answer for.
 */
function racedRuns(runs: Run[], ids: ReadonlyMap<string, string>, witness: SqsWitness): Set<Run> {
  const idOfBody = new Map([...ids].map(([id, body]) => [body, id]));
  const raced = new Set<Run>();
  for (const [body, list] of runsByBody(runs)) {
    const id = idOfBody.get(body);
    if (id === undefined || list.length < 2) continue;
    const counts = new Set(
      racedDeliveries(witness.deliveriesOf(id), witness.visibilityChangesOf(id), RACE_WINDOW_MS)
        .map((d) => d.receiveCount),
    );
    for (const run of list.slice(1)) if (counts.has(run.receiveCount)) raced.add(run);
    // Which of the two raced runs came second is chance: excuse one of them either way.
    if (!list.slice(1).some((run) => raced.has(run)) && counts.has(list[0].receiveCount)) {
      raced.add(list[1]);
    }
  }
  return raced;
}

/** The jobs that were running when their worker was SIGKILLed. */
function orphansOf(runs: Run[], killed: ReadonlyMap<number, bigint>): Run[] {
  return runs.filter((run) => {
    const at = killed.get(run.workerPid);
    return at !== undefined && runningAt(run, at);
  });
}

/** Orphans that still wrote their end line more than a second after their worker's death. */
function orphansLivingOn(runs: Run[], killed: ReadonlyMap<number, bigint>): Run[] {
  return orphansOf(runs, killed).filter((run) =>
    run.endNs !== undefined && run.endNs - killed.get(run.workerPid)! > 1_000_000_000n
  );
}

/** What became of the jobs that were running when their worker was SIGKILLed. */
function orphanNote(runs: Run[], killed: ReadonlyMap<number, bigint>): string {
  const orphans = orphansOf(runs, killed);
  const quiet = orphans.filter((run) => !isChatty(run.body));
  const chatty = orphans.filter((run) => isChatty(run.body));
  const finished = (list: Run[]) => list.filter((run) => run.endNs !== undefined).length;
  return `${orphans.length} jobs orphaned by SIGKILL: ${finished(quiet)}/${quiet.length} silent ` +
    `ones ran to their end, ${finished(chatty)}/${chatty.length} that wrote to stdout did`;
}
