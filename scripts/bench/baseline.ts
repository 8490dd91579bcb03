/**
 * The leanest loop that does sqsrun's job, for the benchmark to compare against:
 * receive(10) -> spawn one child per message (body on stdin) -> delete-batch.
 * No visibility extension, no kill timeout, no retries, no logs, no slot rule.
 *
 *     deno run -A scripts/bench/baseline.ts QUEUE_URL CONCURRENCY COMMAND [ARGS...]
 *
 * Runs until the queue stays empty for two receives, then exits.
 *
 * @module
 */
import {
  DeleteMessageBatchCommand,
  type Message,
  ReceiveMessageCommand,
  SQSClient,
} from "@aws-sdk/client-sqs";

const [queueUrl, concurrencyText, command, ...args] = Deno.args;
const concurrency = Number(concurrencyText);
const client = new SQSClient({});
const encoder = new TextEncoder();

async function runOne(message: Message): Promise<boolean> {
  const child = new Deno.Command(command, {
    args,
    stdin: "piped",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(encoder.encode(message.Body ?? "")).catch(() => {});
  await writer.close().catch(() => {});
  return (await child.status).success;
}

/** One receive loop: up to 10 messages in hand, each batch run with its own parallelism. */
async function loop(parallel: number): Promise<void> {
  let empty = 0;
  while (empty < 2) {
    const result = await client.send(
      new ReceiveMessageCommand({
        QueueUrl: queueUrl,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: 1,
      }),
    );
    const messages = result.Messages ?? [];
    if (messages.length === 0) {
      empty += 1;
      continue;
    }
    empty = 0;
    const done: Message[] = [];
    let next = 0;
    await Promise.all(Array.from({ length: Math.min(parallel, messages.length) }, async () => {
      while (next < messages.length) {
        const message = messages[next++];
        if (await runOne(message)) done.push(message);
      }
    }));
    if (done.length > 0) {
      await client.send(
        new DeleteMessageBatchCommand({
          QueueUrl: queueUrl,
          Entries: done.map((message, index) => ({
            Id: String(index),
            ReceiptHandle: message.ReceiptHandle!,
          })),
        }),
      );
    }
  }
}

const loops = Math.ceil(concurrency / 10);
await Promise.all(
  Array.from({ length: loops }, (_, i) => loop(Math.min(10, concurrency - i * 10))),
);
