/**
 * Scenario 6: jobs that misbehave, next to ordinary ones on the same worker.
 *
 * | kind       | what the job does                                                    | expected             |
 * | ---------- | -------------------------------------------------------------------- | -------------------- |
 * | `term`     | ignores SIGTERM (so does its child)                                  | SIGKILL at -x + grace |
 * | `forkterm` | forks grandchildren that ignore SIGTERM/SIGHUP, then ignores SIGTERM | same; group gone     |
 * | `fork`     | forks grandchildren and exits 0 at once                              | success; group gone  |
 * | `close`    | closes stdout and stderr, works on, exits 0                          | success              |
 * | `flood`    | writes 50 MiB to stdout in 1 KiB lines                               | success; every line logged |
 * | `longline` | writes 8 MiB without a newline                                       | success; split at 16 KiB |
 * | `nostdin`  | never reads its 256 KiB body                                         | success              |
 * | `ok`       | reads its body, sleeps 0.3 s                                         | success, no stall    |
 *
 * The killed kinds behave on their second delivery, so each runs exactly twice.
 * Jobs record their pids and those of their children; none may be left afterwards.
 * The worker's VmRSS is sampled throughout.
 *
 * @module
 */
import { join } from "node:path";
import { SendMessageBatchCommand } from "@aws-sdk/client-sqs";
import { queueCounts } from "../../tests/support/sqs.ts";
import {
  LEDGER_END,
  LEDGER_START,
  readLedger,
  redeliveredAfterDelete,
  runsByBody,
} from "./ledger.ts";
import {
  Checks,
  deletedAtOf,
  launchWorker,
  type LogLine,
  observedSuccesses,
  readLog,
  sample,
  scanLog,
  sleep,
  waitForEverySuccess,
  waitStarted,
  writeJob,
} from "./harness.ts";
import { cpuSeconds, isAlive, killProcesses, membersOf, RssSampler } from "./procfs.ts";
import type { Scenario, ScenarioContext, ScenarioOutcome } from "./scenario.ts";

/** Bytes the `flood` job writes, in lines of 1023 characters and a newline. */
export const FLOOD_BYTES = 50 * 1024 * 1024;
/** Bytes of the `longline` job's one line. */
export const LONG_LINE_BYTES = 8 * 1024 * 1024;
/** sqsrun's longest logged piece of a line. */
const MAX_LINE_BYTES = 16 * 1024;
/** Kill policy of the worker: SIGTERM at 3 s, again every 1 s, SIGKILL 2 s after the first. */
const KILL = { timeout: 3, retry: 1, grace: 2 };
/** Peak VmRSS the worker may reach, MiB. */
export const RSS_LIMIT_MIB = 400;

const JOB = `body=$SQSRUN_ATTR_TAG
${LEDGER_START}
echo $$ >> "$DIR/pids"
case $SQSRUN_ATTR_KIND in
term|forkterm)
  if [ "$SQSRUN_RECEIVE_COUNT" -ge 2 ]; then ${LEDGER_END}; exit 0; fi
  trap '' TERM
  if [ "$SQSRUN_ATTR_KIND" = forkterm ]; then
    (trap '' TERM HUP; exec sleep 300) & echo $! >> "$DIR/pids"
    (trap '' TERM HUP; exec sleep 300) & echo $! >> "$DIR/pids"
  fi
  sleep 300 & echo $! >> "$DIR/pids"
  wait $!
  ;;
fork)
  (trap '' TERM HUP; exec sleep 300) & echo $! >> "$DIR/pids"
  sleep 300 & echo $! >> "$DIR/pids"
  ;;
close)
  exec >&- 2>&-
  sleep 1
  ;;
flood)
  yes "$(printf '%01023d' 0)" | head -c ${FLOOD_BYTES}
  ;;
longline)
  head -c ${LONG_LINE_BYTES} /dev/zero | tr '\\0' y
  ;;
nostdin)
  sleep 1
  ;;
*)
  cat > /dev/null
  sleep 0.3
  ;;
esac
${LEDGER_END}`;

const RUNAWAY_KINDS = ["term", "forkterm", "fork", "close", "flood", "longline", "nostdin"];
const KILLED_KINDS = new Set(["term", "forkterm"]);

/** Scenario 6. */
export const runawayScenario: Scenario = {
  id: 6,
  name: "runaway children",
  budgetMs: () => 150_000,
  run: runaway,
};

interface Pushed {
  /** message id → tag (the ledger body). */
  ids: Map<string, string>;
  /** tag → kind. */
  kinds: Map<string, string>;
}

async function push(
  context: ScenarioContext,
  url: string,
  messages: { kind: string; tag: string; body: string }[],
): Promise<Pushed> {
  const pushed: Pushed = { ids: new Map(), kinds: new Map() };
  // One per call: a 256 KiB body fills a whole batch.
  for (const message of messages) {
    const result = await context.client.send(
      new SendMessageBatchCommand({
        QueueUrl: url,
        Entries: [{
          Id: "0",
          MessageBody: message.body,
          MessageAttributes: {
            kind: { DataType: "String", StringValue: message.kind },
            tag: { DataType: "String", StringValue: message.tag },
          },
        }],
      }),
    );
    if (!result.Successful?.[0]) throw new Error(`cannot push ${message.tag}`);
    pushed.ids.set(result.Successful[0].MessageId!, message.tag);
    pushed.kinds.set(message.tag, message.kind);
  }
  return pushed;
}

async function runaway(context: ScenarioContext): Promise<ScenarioOutcome> {
  const { quick, dir, client } = context;
  const oks = quick ? 40 : 100;
  const url = await context.queue("runaway");
  const job = await writeJob(dir, "job.sh", JOB);
  const ledger = join(dir, "ledger");
  const checks = new Checks();
  const worker = launchWorker({
    args: [
      "-q",
      url,
      "--exec",
      job,
      "-c",
      "12",
      "-t",
      "10",
      "-x",
      String(KILL.timeout),
      "-X",
      String(KILL.retry),
      "--kill-grace",
      String(KILL.grace),
      "--wait",
      "1",
    ],
    env: context.workerEnv(),
    logPath: join(dir, "worker.log"),
  });
  await waitStarted(worker, context.signal);
  const rss = new RssSampler(worker.pid, 100);
  const cpuAtStart = cpuSeconds(worker.pid) ?? 0;
  const started = performance.now();
  const big = "n".repeat(256 * 1024);
  const pushed = await push(context, url, [
    ...RUNAWAY_KINDS.map((kind) => ({ kind, tag: kind, body: kind === "nostdin" ? big : kind })),
    ...Array.from({ length: oks }, (_, i) => ({ kind: "ok", tag: `ok-${i + 1}`, body: `ok ${i}` })),
  ]);
  const total = pushed.ids.size;
  let logs: LogLine[] = [];
  try {
    await waitForEverySuccess(
      { client, url },
      pushed.ids,
      total,
      async () => [logs = await readLog(worker.logPath)],
      100_000,
      context.signal,
    );
  } catch (error) {
    checks.that(false, (error as Error).message);
  }
  const cpu = (cpuSeconds(worker.pid) ?? cpuAtStart) - cpuAtStart;
  const wall = (performance.now() - started) / 1000;
  // Processes that a dying group leaves behind get a moment to be reaped.
  await sleep(500);
  const peakMiB = Math.round(rss.stop() / 1024 / 1024);
  await worker.stop();
  logs = await readLog(worker.logPath);

  const runs = await readLedger(ledger);
  // Runs after an acknowledged delete are the queue's (see witness.ts), not sqsrun's.
  const redelivered = new Set(
    redeliveredAfterDelete(runs, deletedAtOf(context.witness, pushed.ids)),
  );
  const byBody = runsByBody(runs.filter((run) => !redelivered.has(run)));
  for (const [tag, kind] of pushed.kinds) {
    const list = byBody.get(tag) ?? [];
    const expected = KILLED_KINDS.has(kind) ? 2 : 1;
    checks.equal(list.length, expected, `runs of the ${tag} job`);
  }
  checkKills(checks, logs, pushed);
  await checkOutput(checks, worker.logPath, pushed);
  const leftovers = await leftoverProcesses(dir, runs.map((run) => run.jobPid));
  checks.equal(leftovers.length, 0, `processes left behind by jobs (${sample(leftovers)})`);
  killProcesses(leftovers);
  const counts = await queueCounts(client, url);
  checks.equal(counts.visible + counts.inFlight + counts.delayed, 0, "messages left in the queue");
  checks.that(peakMiB <= RSS_LIMIT_MIB, `worker peak VmRSS ${peakMiB} MiB > ${RSS_LIMIT_MIB} MiB`);
  const stall = longestStall(
    runs.filter((run) => run.body.startsWith("ok-")).map((run) => run.startNs),
  );
  checks.that(stall <= 3, `ordinary jobs stalled for ${stall.toFixed(1)} s`);
  return {
    figures: {
      messages: total,
      duplicates: runs.length - runsByBody(runs).size,
      lost: total - observedSuccesses([logs], pushed.ids).size,
      peakRssMiB: peakMiB,
      cpu: `${cpu.toFixed(1)} s in ${wall.toFixed(0)} s`,
      notes: [
        `${oks} ordinary jobs next to the runaways: longest gap between two starts ${
          stall.toFixed(2)
        } s; ${rss.samples} RSS samples`,
        ...(redelivered.size > 0
          ? [`${redelivered.size} run(s) after the queue had acknowledged the delete`]
          : []),
      ],
    },
    failures: checks.failures,
  };
}

/** The killed kinds end as `killed` by SIGKILL at -x + grace (within 2.5 s), others succeed. */
function checkKills(checks: Checks, logs: LogLine[], pushed: Pushed): void {
  const expectedMs = (KILL.timeout + KILL.grace) * 1000;
  for (const line of logs) {
    if (line.msg !== "job failed") continue;
    const tag = pushed.ids.get(String(line.message_id)) ?? "?";
    checks.that(KILLED_KINDS.has(pushed.kinds.get(tag) ?? ""), `the ${tag} job failed`);
    checks.equal(line.outcome, "killed", `outcome of the ${tag} job`);
    checks.equal(line.signal, "SIGKILL", `signal that ended the ${tag} job`);
    const duration = Number(line.duration_ms);
    checks.that(
      duration >= expectedMs - 100 && duration <= expectedMs + 2_500,
      `the ${tag} job was killed after ${duration} ms, expected about ${expectedMs} ms`,
    );
  }
}

/** Every byte of the flood and the long line reached the log, split as documented. */
async function checkOutput(checks: Checks, logPath: string, pushed: Pushed): Promise<void> {
  const idOf = (tag: string) => [...pushed.ids].find(([, value]) => value === tag)?.[0];
  const flood = idOf("flood");
  const long = idOf("longline");
  let floodLines = 0;
  let floodBytes = 0;
  let longPieces = 0;
  let longBytes = 0;
  let longest = 0;
  await scanLog(logPath, (line) => {
    if (line.stream !== "stdout") return;
    const size = line.msg.length;
    if (line.message_id === flood) {
      floodLines++;
      floodBytes += size + 1;
    } else if (line.message_id === long) {
      longPieces++;
      longBytes += size;
      longest = Math.max(longest, size);
    }
  }, true);
  checks.equal(floodLines, FLOOD_BYTES / 1024, "flood lines in the log");
  checks.equal(floodBytes, FLOOD_BYTES, "flood bytes in the log");
  checks.equal(longBytes, LONG_LINE_BYTES, "bytes of the long line in the log");
  checks.equal(longPieces, LONG_LINE_BYTES / MAX_LINE_BYTES, "pieces of the long line");
  checks.that(longest <= MAX_LINE_BYTES, `a logged piece of ${longest} bytes`);
}

/** Pids the jobs recorded (and members of their groups) that are still alive. */
async function leftoverProcesses(dir: string, jobPids: number[]): Promise<number[]> {
  let recorded: number[] = [];
  try {
    recorded = (await Deno.readTextFile(join(dir, "pids"))).split("\n").filter(Boolean).map(Number);
  } catch { /* no job ran */ }
  const alive = new Set(recorded.filter(isAlive));
  for (const member of membersOf(jobPids)) alive.add(member.pid);
  return [...alive];
}

/** The longest gap, in seconds, between consecutive start times (ns). */
export function longestStall(startsNs: bigint[]): number {
  const sorted = [...startsNs].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  let longest = 0;
  for (let i = 1; i < sorted.length; i++) {
    longest = Math.max(longest, Number(sorted[i] - sorted[i - 1]) / 1e9);
  }
  return longest;
}
