/**
 * The leanest loop that does sqsrun's job, for the benchmark to compare against:
 * receive(10) -> spawn one child per message (body on stdin) -> delete-batch.
 * No visibility extension, no kill timeout, no retries, no logs, no slot rule.
 *
 *     deno run -A scripts/bench/baseline.ts QUEUE_URL CONCURRENCY COMMAND [ARGS...]
 *     deno run -A scripts/bench/baseline.ts --post URL QUEUE_URL CONCURRENCY
 *
 * With `--post URL` each body is POSTed to URL with `fetch` (one keep-alive
 * client, a 2xx is a success) instead, by one receive loop per request in
 * flight as the Go lean loop does: the leanest `--post` on the same runtime and
 * SDK.
 *
 * Runs until the queue stays empty for two receives, then exits; with `--idle`
 * first it long-polls its (empty) queue until killed: the runtime and SDK's
 * resident memory when there is nothing to do.
 *
 * @module
 */
import {
  DeleteMessageBatchCommand,
  type Message,
  ReceiveMessageCommand,
  SQSClient,
} from "@aws-sdk/client-sqs";

const idleOnly = Deno.args[0] === "--idle";
const flags = idleOnly ? Deno.args.slice(1) : Deno.args;
const postUrl = flags[0] === "--post" ? flags[1] : undefined;
const [queueUrl, concurrencyText, command, ...args] = postUrl ? flags.slice(2) : flags;
const concurrency = Number(concurrencyText);
const client = new SQSClient({});
const encoder = new TextEncoder();

async function runOne(message: Message): Promise<boolean> {
  if (postUrl) {
    const response = await fetch(postUrl, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: message.Body ?? "",
    }).catch(() => undefined);
    await response?.body?.cancel();
    return response?.ok ?? false;
  }
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
  while (idleOnly || empty < 2) {
    const result = await client.send(
      new ReceiveMessageCommand({
        QueueUrl: queueUrl,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: idleOnly ? 20 : 1,
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

// `--post` mirrors the Go lean loop's: one receive loop per request in flight.
const loops = postUrl ? concurrency : Math.ceil(concurrency / 10);
await Promise.all(
  Array.from(
    { length: loops },
    (_, i) => loop(postUrl ? 1 : Math.min(10, concurrency - i * 10)),
  ),
);
