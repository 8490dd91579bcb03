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
 * Runs until killed: the bench stops it once the queue is empty. (Stopping after
 * empty receives ended runs early: an answer lost on a dropped connection, retried
 * by the SDK, leaves its messages invisible for a visibility timeout.) With
 * `--idle` first it long-polls (20 s): the runtime and SDK's resident memory when
 * there is nothing to do.
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

/** A failed call is said on stderr and the loop goes on, as the Go lean loop's does. */
function trouble(what: string, error: unknown): void {
  console.error(`baseline: ${what}: ${error instanceof Error ? error.message : error}`);
}

/** One receive loop: up to 10 messages in hand, each batch run with its own parallelism. */
async function loop(parallel: number): Promise<void> {
  for (;;) {
    let messages: Message[];
    try {
      const result = await client.send(
        new ReceiveMessageCommand({
          QueueUrl: queueUrl,
          MaxNumberOfMessages: 10,
          WaitTimeSeconds: idleOnly ? 20 : 1,
        }),
      );
      messages = result.Messages ?? [];
    } catch (error) {
      trouble("receive", error);
      await new Promise((resolve) => setTimeout(resolve, 100));
      continue;
    }
    if (messages.length === 0) continue;
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
      ).catch((error) => trouble("delete", error));
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
