/**
 * Scenario 5: a message whose job always fails, on a queue with a redrive policy
 * (`maxReceiveCount` 3) to a dead-letter queue. It must run exactly three times
 * (receive counts 1, 2, 3) and end in the dead-letter queue, never deleted by
 * sqsrun; the other messages run once each and are deleted.
 *
 * @module
 */
import { join } from "node:path";
import { GetQueueAttributesCommand, ReceiveMessageCommand } from "@aws-sdk/client-sqs";
import { queueCounts } from "../../tests/support/sqs.ts";
import { deliveryReport, LEDGER_END, LEDGER_START, readLedger, runsByBody } from "./ledger.ts";
import {
  Checks,
  deletedAtOf,
  launchWorker,
  type LogLine,
  observedSuccesses,
  pushBodies,
  readLog,
  redeliveryNotes,
  sample,
  usageFigures,
  waitForOutcome,
  waitStarted,
  writeJob,
} from "./harness.ts";
import type { Scenario, ScenarioContext, ScenarioOutcome } from "./scenario.ts";

/** The redrive policy's `maxReceiveCount`. */
const MAX_RECEIVES = 3;
const POISON = "poison-pill";

/** Scenario 5. */
export const poisonScenario: Scenario = {
  id: 5,
  name: "poison message",
  budgetMs: () => 120_000,
  run: poison,
};

async function poison(context: ScenarioContext): Promise<ScenarioOutcome> {
  const { quick, dir, client } = context;
  const good = quick ? 20 : 50;
  const dlq = await context.queue("poison-dlq");
  const attributes = await client.send(
    new GetQueueAttributesCommand({ QueueUrl: dlq, AttributeNames: ["QueueArn"] }),
  );
  const url = await context.queue("poison", {
    RedrivePolicy: JSON.stringify({
      deadLetterTargetArn: attributes.Attributes!.QueueArn,
      maxReceiveCount: String(MAX_RECEIVES),
    }),
  });
  const job = await writeJob(
    dir,
    "job.sh",
    `body=$(cat)
${LEDGER_START}
if [ "$body" = "${POISON}" ]; then echo "failing on purpose" >&2; exit 3; fi
sleep 0.05
${LEDGER_END}`,
  );
  const ledger = join(dir, "ledger");
  const bodies = [POISON, ...Array.from({ length: good }, (_, i) => `good-${i + 1}`)];
  const ids = await pushBodies(client, url, bodies);
  const checks = new Checks();
  const worker = launchWorker({
    // Immediate retries: the scenario is about the redrive, not the back-off.
    args: ["-q", url, "--exec", job, "-c", "4", "-t", "5", "--backoff", "off", "--wait", "1"],
    env: context.workerEnv(),
    logPath: join(dir, "worker.log"),
  });
  let logs: LogLine[] = [];
  try {
    await waitStarted(worker, context.signal);
    await waitForOutcome(
      "the good messages succeeded and the poison is in the dead-letter queue",
      { client, url },
      async () => {
        logs = await readLog(worker.logPath);
        const main = await queueCounts(client, url);
        const dead = await queueCounts(client, dlq);
        return observedSuccesses([logs], ids).size === good &&
          main.visible + main.inFlight === 0 && dead.visible === 1;
      },
      90_000,
      context.signal,
    );
  } catch (error) {
    checks.that(false, (error as Error).message);
  }
  await worker.stop();
  logs = await readLog(worker.logPath);
  const runs = await readLedger(ledger);
  const byBody = runsByBody(runs);
  const poisonRuns = byBody.get(POISON) ?? [];
  const report = deliveryReport(
    bodies.slice(1),
    runs.filter((run) => run.body !== POISON),
    observedSuccesses([logs], ids),
    deletedAtOf(context.witness, ids),
  );
  const dead = await client.send(
    new ReceiveMessageCommand({ QueueUrl: dlq, MaxNumberOfMessages: 10, WaitTimeSeconds: 1 }),
  );
  const main = await queueCounts(client, url);
  const failed = logs.filter((line) => line.msg === "job failed");
  checks.equal(
    poisonRuns.map((run) => run.receiveCount).join(","),
    "1,2,3",
    "receive counts of the poison message's runs",
  );
  checks.equal(
    (dead.Messages ?? []).map((message) => message.Body).join(","),
    POISON,
    "the dead-letter queue's messages",
  );
  checks.equal(main.visible + main.inFlight + main.delayed, 0, "messages left in the main queue");
  checks.equal(report.lost.length, 0, `good messages without a success (${sample(report.lost)})`);
  checks.equal(
    report.ownDuplicates,
    0,
    `good messages run more than once (${sample(report.runMoreThanOnce)})`,
  );
  checks.equal(failed.length, MAX_RECEIVES, "failed jobs in the log");
  checks.that(
    failed.every((line) => ids.get(String(line.message_id)) === POISON),
    "a good message failed",
  );
  return {
    figures: {
      ...usageFigures([worker]),
      messages: bodies.length,
      duplicates: report.duplicates,
      lost: report.lost.length,
      notes: [
        ...redeliveryNotes(report),
        `poison message ran ${poisonRuns.length} times (receive counts ${
          poisonRuns.map((run) => run.receiveCount).join(", ")
        }), then ${(dead.Messages ?? []).length} message in the dead-letter queue`,
      ],
    },
    failures: checks.failures,
  };
}
