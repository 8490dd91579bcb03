/**
 * Scenario 11: a stalled stdout. One worker logs to its stdout (no `-o`), which the
 * harness reads; its jobs print many lines, each of which it logs. The harness
 * stops reading that stdout for 30 s (quick: 14 s), as a stuck log shipper or a
 * terminal paused with Ctrl-S would: the pipe fills, and a worker that writes its
 * log synchronously freezes. A second worker on the queue logs to a file.
 *
 * During the stall the first worker must go on: its extensions keep going out and
 * its succeeded jobs are deleted (both counted at its own witness), it never falls
 * silent for long, and a SIGTERM sent in the stall is acted on: no receive call
 * after it, and an exit within a bound (its longest job + 5 s) while the stall goes
 * on. The second worker shows whether a message whose visibility lapsed ran twice.
 * Common checks: no two runs at the same time, no duplicate of sqsrun's, no
 * truncated input, nothing lost.
 *
 * @module
 */
import { join } from "node:path";
import { queueCounts } from "../../tests/support/sqs.ts";
import { readLedger, type Run } from "./ledger.ts";
import {
  Checks,
  countLines,
  launchWorker,
  type LogLine,
  observedSuccesses,
  pushBodies,
  queueIsEmpty,
  readLog,
  sample,
  sleep,
  usageFigures,
  waitFor,
  waitForOutcome,
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
import { callsBetween, startSqsWitness, type WitnessCall } from "./witness.ts";

/** The job: prints 150 lines, works, prints 150 more. */
const PRINT = `i=0
while [ $i -lt 150 ]; do
  echo "line $i of $body: the quick brown fox jumps over the lazy dog, again and again"
  i=$((i + 1))
done`;
const JOB = faultJob(`${PRINT}
sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
${PRINT}`);

const EXTENSIONS = ["ChangeMessageVisibility", "ChangeMessageVisibilityBatch"];
const DELETES = ["DeleteMessage", "DeleteMessageBatch"];

/** Longest time a live worker may make no call at all (it polls and extends every 1 s), ms. */
export const SILENCE_LIMIT_MS = 5_000;
/** Time after its job's end by which a succeeded message must be deleted, ms. */
const DELETE_WITHIN_MS = 3_000;

/** The parameters of each form. */
export function stallPlan(quick: boolean) {
  return quick
    ? { messages: 50, jobMinMs: 1_500, jobMaxMs: 3_000, stallMs: 14_000, termAfterMs: 4_000 }
    : { messages: 100, jobMinMs: 2_000, jobMaxMs: 5_000, stallMs: 30_000, termAfterMs: 15_000 };
}

/** Scenario 11. */
export const stalledStdoutScenario: Scenario = {
  id: 11,
  name: "stalled stdout",
  budgetMs: (quick) => (quick ? 120_000 : 240_000),
  run: stall,
};

/**
 * The longest time without any call in [from, to): the gaps between the arrivals
 * of `calls`, and from `from` to the first and from the last to `to`.
 */
export function longestSilence(calls: readonly WitnessCall[], from: number, to: number): number {
  const times = calls.map((call) => call.at).filter((at) => at >= from && at < to).sort((a, b) =>
    a - b
  );
  let longest = 0;
  let last = from;
  for (const at of [...times, to]) {
    longest = Math.max(longest, at - last);
    last = at;
  }
  return longest;
}

async function stall(context: ScenarioContext): Promise<ScenarioOutcome> {
  const { quick, dir, client, witness } = context;
  const plan = stallPlan(quick);
  const exitBoundMs = plan.jobMaxMs + 5_000;
  const url = await context.queue("stall");
  const job = await writeJob(dir, "job.sh", JOB);
  const ledger = join(dir, "ledger");
  const bodies = timedBodies("s", plan.messages, plan.jobMinMs, plan.jobMaxMs);
  const ids = await pushBodies(client, url, bodies);
  // The stalled worker's own witness: its calls are told apart from the other's.
  const own = startSqsWitness(context.backend.endpoint);
  const args = ["-q", url, "--exec", job, "-c", "5", "-t", "3", "-e", "1", "--wait", "1"];
  const stalled = launchWorker({
    args: [...args, "--shutdown-timeout", "30"],
    env: context.workerEnv(own.url),
    logPath: join(dir, "worker-0.log"),
    logToStdout: true,
  });
  const other = launchWorker({
    args,
    env: context.workerEnv(),
    logPath: join(dir, "worker-1.log"),
  });
  const workers = [stalled, other];
  const checks = new Checks();
  let stallStart = 0;
  let stallEnd = 0;
  let termAt = 0;
  let exitAt = 0;
  let logs: LogLine[][] = [];
  const view = witnessView([witness, own]);
  const readLogs = async () =>
    logs = await Promise.all(workers.map((worker) => readLog(worker.logPath)));
  // A success is one sqsrun logged or, since a stalled log may lose lines, a
  // completed run whose message the queue acknowledged deleting.
  const succeeded = (runs: Run[]) => {
    const found = observedSuccesses(logs, ids);
    const ended = new Set(runs.filter((run) => run.endNs).map((run) => run.body));
    for (const [id, body] of ids) if (view.deletedAt(id) && ended.has(body)) found.add(body);
    return found;
  };
  stalled.status.then(() => exitAt = Date.now());
  try {
    await Promise.all(workers.map((worker) => waitStarted(worker, context.signal)));
    await waitFor(
      "the first worker runs 3 jobs",
      async () =>
        (await readLedger(ledger)).filter((run) => run.workerPid === stalled.pid).length >= 3,
      30_000,
      { signal: context.signal, intervalMs: 100 },
    );
    stalled.stdout!.pause();
    stallStart = Date.now();
    stallEnd = stallStart + plan.stallMs;
    context.progress(`stdout of worker ${stalled.pid} not read for ${plan.stallMs / 1000} s`);
    await sleep(plan.termAfterMs);
    stalled.signal("SIGTERM");
    termAt = Date.now();
    await Promise.race([stalled.status, sleep(stallEnd - Date.now())]);
    stalled.stdout!.resume();
    context.progress(`stdout read again; the worker ${exitAt ? "had exited" : "is still up"}`);
    await waitFor("the first worker exited", () => exitAt > 0, 40_000, {
      signal: context.signal,
    });
    await waitForOutcome(
      "every message succeeded and the queue is empty",
      { client, url },
      async () => {
        await readLogs();
        return succeeded(await readLedger(ledger)).size === plan.messages &&
          await queueIsEmpty(client, url);
      },
      quick ? 60_000 : 120_000,
      context.signal,
    );
  } catch (error) {
    checks.that(false, (error as Error).message);
  } finally {
    stalled.stdout!.resume();
  }
  await Promise.all(workers.map((worker) => worker.stop()));
  await own.close();
  await readLogs();
  const runs = await readLedger(ledger);
  const analysis = analyseRuns(bodies, runs, succeeded(runs), ids, view);
  checkFaultRun(checks, analysis);
  const counts = await queueCounts(client, url);
  checks.equal(counts.visible + counts.inFlight + counts.delayed, 0, "messages left in the queue");
  checks.equal(countLines(logs, "job failed"), 0, "failed jobs");

  // What the stalled worker did in its stall, from its witness.
  const until = Math.min(stallEnd || Date.now(), exitAt || Infinity);
  const extensions = callsBetween(own.calls, EXTENSIONS, stallStart, until).length;
  const deletes = callsBetween(own.calls, DELETES, stallStart, until)
    .reduce((sum, call) => sum + call.count, 0);
  const receivesAfterTerm = termAt
    ? callsBetween(own.calls, ["ReceiveMessage"], termAt + 500, Infinity).length
    : 0;
  const silence = stallStart ? longestSilence(own.calls, stallStart, until) : 0;
  const ns = (ms: number) => BigInt(ms) * 1_000_000n;
  const mine = runs.filter((run) => run.workerPid === stalled.pid);
  // Jobs that ran in the stall for longer than -e: each needed an extension then.
  const needingExtension = mine.filter((run) => {
    const from = run.startNs > ns(stallStart) ? run.startNs : ns(stallStart);
    const to = run.endNs !== undefined && run.endNs < ns(until) ? run.endNs : ns(until);
    return to - from > ns(1_500);
  });
  const idOf = new Map([...ids].map(([id, body]) => [body, id]));
  // Jobs that ended in the stall with time to spare: each should be deleted in it.
  const endedInStall = mine.filter((run) =>
    run.endNs !== undefined && run.endNs >= ns(stallStart) &&
    run.endNs < ns(until - DELETE_WITHIN_MS)
  );
  const notDeleted = endedInStall.filter((run) => {
    const at = view.deletedAt(idOf.get(run.body) ?? "");
    return at === undefined || at > Number(run.endNs! / 1_000_000n) + DELETE_WITHIN_MS;
  });
  if (stallStart) {
    checks.that(
      needingExtension.length === 0 || extensions > 0,
      `no extension went out during the stall (${needingExtension.length} jobs needed one)`,
    );
    checks.equal(
      notDeleted.length,
      0,
      `jobs that ended in the stall whose message was not deleted within ` +
        `${DELETE_WITHIN_MS / 1000} s (${sample(notDeleted.map((run) => run.body))})`,
    );
    checks.that(
      silence <= SILENCE_LIMIT_MS,
      `the stalled worker made no call for ${seconds(silence)} s during the stall`,
    );
  }
  if (termAt) {
    checks.equal(receivesAfterTerm, 0, "receive calls after SIGTERM");
    checks.that(
      exitAt > 0 && exitAt - termAt <= exitBoundMs,
      `the stalled worker exited ${exitAt ? seconds(exitAt - termAt) : "never"} s after ` +
        `SIGTERM (bound ${seconds(exitBoundMs)} s, stall left ${seconds(stallEnd - termAt)} s)`,
    );
  }
  checks.equal(stalled.exitStatus()?.code, 0, "exit code of the stalled worker");
  const dropped =
    mine.filter((run) =>
      run.endNs !== undefined && !observedSuccesses([logs[0]], ids).has(run.body)
    ).length;
  return {
    figures: {
      ...usageFigures(workers),
      ...faultFigures(analysis, "stalled stdout", `${seconds(plan.stallMs)} s`, plan.messages),
      notes: [
        `in the stall (${seconds(until - stallStart)} s until its end or the worker's exit): ` +
        `${extensions} extension calls, ${deletes} deletes acknowledged ` +
        `(${endedInStall.length} of its jobs ended then, ${notDeleted.length} not deleted in time), ` +
        `longest silence ${seconds(silence)} s`,
        `SIGTERM ${seconds(plan.termAfterMs)} s into the stall; exit ${
          exitAt ? seconds(exitAt - termAt) : "never"
        } s after it (${exitAt && exitAt < stallEnd ? "during" : "after"} the stall); ` +
        `${receivesAfterTerm} receive calls after it`,
        `stalled worker: ${mine.length} runs, ${dropped} completed without a 'job finished' line ` +
        `in its stdout; ${stalled.stdout!.bytes} bytes read from its stdout`,
        ...queueOverlapNotes(analysis),
      ],
    },
    failures: checks.failures,
  };
}
