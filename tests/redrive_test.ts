/**
 * Black-box tests of `--redrive`, `--redrive-status` and `--redrive-cancel` against
 * both emulators, with the AWS CLI and an SDK client as independent checks.
 *
 * What the emulators offer (checked here, so a new version that changes it shows):
 * - moto 5.2.1 has no message move tasks: StartMessageMoveTask, ListMessageMoveTasks
 *   and CancelMessageMoveTask answer HTTP 500 (an HTML page). `--redrive` falls back
 *   to the client-side move; `--redrive-status`, `--redrive-cancel` and
 *   `--redrive --no-wait` fail in one line naming the call and the status.
 * - ElasticMQ 1.6.14 has them for standard queues, with quirks: a FIFO task
 *   "completes" having moved nothing (sqsrun then moves client-side), a cancelled
 *   task is no longer listed, ApproximateNumberOfMessagesToMove counts down, and a
 *   task from a queue that is no dead-letter queue hangs ~21 s before HTTP 503 (sqsrun
 *   never asks: such a queue goes client-side at once). Its client-side path is
 *   tested with `--client-side`.
 */
import { deepStrictEqual, equal, ok, rejects } from "node:assert/strict";
import {
  DeleteMessageBatchCommand,
  type Message,
  type MessageAttributeValue,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import { runAdmin } from "../src/admin.ts";
import { createSqsClient } from "../src/aws.ts";
import { parseCli } from "../src/cli.ts";
import { checkQueueEndpoint, moveTaskFallbackReason } from "../src/redrive.ts";
import { RuntimeError, UsageError } from "../src/errors.ts";
import {
  assertOneLineError,
  baseEnv,
  type CliResult,
  lines,
  ROOT,
  runAwsCli,
  runCli,
  sqsrunCommand,
} from "./support/cli.ts";
import {
  awsCliPath,
  awsEnv,
  type SqsBackend,
  sqsBackends,
  uniqueName,
} from "./support/local_aws.ts";
import { createQueue, deleteQueue, sendMessages, testClient } from "./support/sqs.ts";

const LIMIT_MS = 90_000;
const testOptions = { sanitizeOps: false, sanitizeResources: false };

function tools(backend: SqsBackend) {
  const env = awsEnv(backend.endpoint);
  const sqsrun = (args: string[], timeoutMs = LIMIT_MS) => runCli(args, { env, timeoutMs });
  const aws = async (args: string[]): Promise<Record<string, unknown>> => {
    const result = await runAwsCli(
      awsCliPath(),
      ["--endpoint-url", backend.endpoint, "sqs", ...args],
      { env, timeoutMs: 60_000 },
    );
    equal(result.code, 0, `aws sqs ${args.join(" ")}: ${result.stderr}`);
    return result.stdout.trim() === "" ? {} : JSON.parse(result.stdout);
  };
  /** Visible + in flight + delayed, as the AWS CLI reads them. */
  const countAll = async (url: string): Promise<number> => {
    const out = await aws(["get-queue-attributes", "--queue-url", url, "--attribute-names", "All"]);
    const a = out.Attributes as Record<string, string>;
    return Number(a.ApproximateNumberOfMessages) + Number(a.ApproximateNumberOfMessagesNotVisible) +
      Number(a.ApproximateNumberOfMessagesDelayed);
  };
  const arnOf = async (url: string): Promise<string> => {
    const out = await aws([
      "get-queue-attributes",
      "--queue-url",
      url,
      "--attribute-names",
      "QueueArn",
    ]);
    return (out.Attributes as Record<string, string>).QueueArn;
  };
  return { env, sqsrun, aws, countAll, arnOf };
}

/** Creates a DLQ and, unless `sources` is 0, that many queues whose redrive policy names it. */
async function dlqWithSources(
  client: SQSClient,
  arnOf: (url: string) => Promise<string>,
  prefix: string,
  fifo = false,
  sources = 1,
): Promise<{ dlq: string; sources: string[] }> {
  const suffix = fifo ? ".fifo" : "";
  const dlq = await createQueue(client, `${uniqueName(`${prefix}-dlq`)}${suffix}`);
  const policy = JSON.stringify({ deadLetterTargetArn: await arnOf(dlq), maxReceiveCount: "3" });
  const urls: string[] = [];
  for (let i = 0; i < sources; i++) {
    urls.push(
      await createQueue(client, `${uniqueName(`${prefix}-src`)}${suffix}`, {
        RedrivePolicy: policy,
      }),
    );
  }
  return { dlq, sources: urls };
}

/** Sends numbered bodies with String, Number and (every 10th) Binary attributes. */
async function pushNumbered(client: SQSClient, url: string, count: number): Promise<string[]> {
  const bodies = Array.from({ length: count }, (_, i) => `dead letter ${i}`);
  for (let start = 0; start < count; start += 10) {
    await client.send(
      new SendMessageBatchCommand({
        QueueUrl: url,
        Entries: bodies.slice(start, start + 10).map((body, k) => ({
          Id: String(k),
          MessageBody: body,
          MessageAttributes: attributesFor(start + k),
        })),
      }),
    );
  }
  return bodies;
}

function attributesFor(i: number): Record<string, MessageAttributeValue> {
  return {
    kind: { DataType: "String", StringValue: "dead" },
    n: { DataType: "Number", StringValue: String(i) },
    ...(i % 10 === 0
      ? { blob: { DataType: "Binary", BinaryValue: new Uint8Array([i, 0, 255]) } }
      : {}),
  };
}

/** Receives and deletes everything in a queue, in order of arrival, ten at a time. */
async function drain(client: SQSClient, url: string): Promise<Message[]> {
  const all: Message[] = [];
  let empty = 0;
  for (let call = 0; call < 200 && empty < 2; call++) {
    const result = await client.send(
      new ReceiveMessageCommand({
        QueueUrl: url,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: 1,
        VisibilityTimeout: 60,
        MessageAttributeNames: ["All"],
        MessageSystemAttributeNames: ["All"],
      }),
    );
    const messages = result.Messages ?? [];
    empty = messages.length === 0 ? empty + 1 : 0;
    if (messages.length === 0) continue;
    all.push(...messages);
    await client.send(
      new DeleteMessageBatchCommand({
        QueueUrl: url,
        Entries: messages.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle })),
      }),
    );
  }
  return all;
}

/**
 * Starts sqsrun as a user would, and SIGKILLs it `killAfterMs` after its stderr said
 * how many messages it will move (the move has begun). Resolves to what it printed.
 */
async function runAndKill(
  args: string[],
  env: Record<string, string>,
  killAfterMs: number,
): Promise<{ killed: boolean; stderr: string; stdout: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: sqsrunCommand(args),
    cwd: ROOT,
    env: { ...baseEnv(), NO_COLOR: "1", ...env },
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let killed = false;
  const kill = () => {
    try {
      child.kill("SIGKILL");
      killed = true;
    } catch { /* it has ended */ }
  };
  const bound = setTimeout(kill, 60_000);
  let stderr = "";
  let timer: ReturnType<typeof setTimeout> | undefined;
  const reading = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      stderr += chunk;
      if (timer === undefined && /messages to move/.test(stderr)) {
        timer = setTimeout(kill, killAfterMs);
      }
    }
  })();
  const stdout = new Response(child.stdout).text();
  const status = await child.status;
  await reading;
  clearTimeout(bound);
  clearTimeout(timer);
  return { killed: killed && status.signal === "SIGKILL", stderr, stdout: await stdout };
}

function assertOk(result: CliResult, context: string): string[] {
  equal(result.timedOut, false, `${context}: timed out; stderr ${result.stderr}`);
  equal(result.code, 0, `${context}: exit ${result.code}, stderr ${result.stderr}`);
  return lines(result.stdout);
}

for (const backend of sqsBackends()) {
  const { name } = backend;
  const motoLacksMoveTasks = name === "moto";

  Deno.test({
    name: `client-side redrive killed in the middle, then run again: nothing lost (${name})`,
    ...testOptions,
    fn: async () => {
      const { env, sqsrun, countAll, arnOf } = tools(backend);
      const client = testClient(backend.endpoint);
      const { dlq, sources: [source] } = await dlqWithSources(client, arnOf, "kill");
      try {
        const bodies = await pushNumbered(client, dlq, 200);
        // moto falls back by itself; ElasticMQ has move tasks, so the path is forced.
        const args = [
          "--redrive",
          "-q",
          dlq,
          "--rate",
          "50",
          "-t",
          "5",
          ...(motoLacksMoveTasks ? [] : ["--client-side"]),
        ];
        // About 1.5 s in; the jitter lands the kill at other points of a batch on other runs.
        const killAfterMs = 1_300 + Math.floor(Math.random() * 400);
        const first = await runAndKill(args, env, killAfterMs);
        ok(first.killed, `the first run was killed in the middle; stderr ${first.stderr}`);
        equal(first.stdout, "", "a killed run printed no result");
        const pathLine = lines(first.stderr).find((line) => line.includes("client-side move"));
        ok(pathLine, `one line names the path: ${first.stderr}`);
        ok(
          motoLacksMoveTasks
            ? pathLine.includes("StartMessageMoveTask is not available") &&
              pathLine.includes("HTTP 500")
            : pathLine.includes("(--client-side)"),
          pathLine,
        );
        const movedFirst = await countAll(source);
        const leftFirst = await countAll(dlq);
        ok(movedFirst > 0 && movedFirst < 200, `the kill came in the middle: ${movedFirst} moved`);

        const second = await sqsrun([...args, "--json"]);
        const [line] = assertOk(second, "second run");
        const result = JSON.parse(line);
        equal(result.path, "client-side");
        equal(result.failed, 0);
        equal(result.remaining, 0);
        equal(await countAll(dlq), 0, "the DLQ ends empty");

        const received = await drain(client, source);
        const counts = new Map<string, number>();
        for (const message of received) {
          counts.set(message.Body!, (counts.get(message.Body!) ?? 0) + 1);
          const i = Number(message.Body!.split(" ").pop());
          deepStrictEqual(
            message.MessageAttributes,
            attributesFor(i),
            `attributes of ${message.Body}`,
          );
        }
        const lost = bodies.filter((body) => !counts.has(body));
        const duplicates = received.length - counts.size;
        console.log(
          `${name}: pushed ${bodies.length}; first run killed after ${killAfterMs} ms had ` +
            `moved ${movedFirst}, ` +
            `left ${leftFirst} in the DLQ; second run moved ${result.moved}; target got ` +
            `${received.length}: ${duplicates} duplicates, ${lost.length} lost`,
        );
        deepStrictEqual(lost, [], "nothing lost");
        equal(counts.size, 200);
        ok(duplicates <= 10, `at most one batch moved twice, got ${duplicates}`);
      } finally {
        await deleteQueue(client, dlq);
        await deleteQueue(client, source);
        client.destroy();
      }
    },
  });

  Deno.test({
    name: `a FIFO DLQ moves back to its FIFO source in order per group (${name})`,
    ...testOptions,
    fn: async () => {
      const { sqsrun, arnOf } = tools(backend);
      const client = testClient(backend.endpoint);
      const { dlq, sources: [source] } = await dlqWithSources(client, arnOf, "fifo", true);
      try {
        const sent = [];
        for (let i = 0; i < 8; i++) {
          for (const group of ["a", "b", "c"]) sent.push({ body: `${group}${i}`, groupId: group });
        }
        await sendMessages(client, dlq, sent);
        const result = await sqsrun(["--redrive", "-q", dlq]);
        const [line] = assertOk(result, "redrive fifo");
        ok(line.startsWith("moved 24 of "), line);
        const pathLine = lines(result.stderr).find((l) => l.includes("client-side move"));
        // moto: no move tasks; ElasticMQ: its FIFO move task moves nothing.
        ok(
          pathLine?.includes(motoLacksMoveTasks ? "HTTP 500" : "ended having moved nothing"),
          result.stderr,
        );

        const received = await drain(client, source);
        equal(received.length, 24, "no duplicates, nothing lost");
        for (const group of ["a", "b", "c"]) {
          const order = received
            .filter((m) => m.Attributes?.MessageGroupId === group)
            .map((m) => m.Body);
          deepStrictEqual(order, Array.from({ length: 8 }, (_, i) => `${group}${i}`), group);
        }
      } finally {
        await deleteQueue(client, dlq);
        await deleteQueue(client, source);
        client.destroy();
      }
    },
  });

  Deno.test({
    name: `--redrive picks the one source queue, else asks for --to (${name})`,
    ...testOptions,
    fn: async () => {
      const { sqsrun, arnOf, countAll } = tools(backend);
      const client = testClient(backend.endpoint);
      const lonely = await dlqWithSources(client, arnOf, "none", false, 0);
      const shared = await dlqWithSources(client, arnOf, "two", false, 2);
      const fifoTarget = await createQueue(client, `${uniqueName("to-fifo")}.fifo`);
      const missing = uniqueName("redrive-missing");
      try {
        await sendMessages(client, lonely.dlq, ["one", "two", "three"]);
        assertOneLineError(await sqsrun(["--redrive", "-q", lonely.dlq]), 2, [
          "dead-letter queue of no queue",
          "--to",
        ]);
        assertOneLineError(await sqsrun(["--redrive", "-q", shared.dlq]), 2, [
          "dead-letter queue of 2 queues",
          "--to",
        ]);
        assertOneLineError(await sqsrun(["--redrive", "-q", lonely.dlq, "--to", missing]), 1, [
          `queue '${missing}'`,
          "does not exist",
        ]);
        assertOneLineError(await sqsrun(["--redrive", "-q", missing]), 1, [
          `queue '${missing}'`,
          "does not exist",
        ]);
        // A queue that is no DLQ moves with --to, client-side: move tasks would refuse it.
        // The client-side move cannot run in the background.
        assertOneLineError(
          await sqsrun(["--redrive", "-q", lonely.dlq, "--to", shared.dlq, "--no-wait"]),
          1,
          ["dead-letter queue of no queue", "without --no-wait"],
        );
        const moved = await sqsrun([
          "--redrive",
          "-q",
          lonely.dlq,
          "--to",
          fifoTarget,
          "--group-id",
          "from-standard",
        ]);
        const [line] = assertOk(moved, "standard to FIFO");
        ok(line.startsWith("moved 3 of 3 messages"), line);
        ok(moved.stderr.includes("client-side move"), moved.stderr);
        equal(await countAll(lonely.dlq), 0);
        const received = await drain(client, fifoTarget);
        deepStrictEqual(received.map((m) => m.Body).sort(), ["one", "three", "two"]);
        ok(received.every((m) => m.Attributes?.MessageGroupId === "from-standard"));

        // FIFO to standard: allowed, and said to lose the groups.
        await sendMessages(client, fifoTarget, [{ body: "f1", groupId: "g" }, {
          body: "f2",
          groupId: "g",
        }]);
        const back = await sqsrun(["--redrive", "-q", fifoTarget, "--to", lonely.dlq]);
        ok(assertOk(back, "FIFO to standard")[0].startsWith("moved 2 of 2"), back.stdout);
        ok(back.stderr.includes("groups and order are not kept"), back.stderr);
        deepStrictEqual((await drain(client, lonely.dlq)).map((m) => m.Body).sort(), ["f1", "f2"]);
      } finally {
        for (const url of [lonely.dlq, shared.dlq, ...shared.sources, fifoTarget]) {
          await deleteQueue(client, url);
        }
        client.destroy();
      }
    },
  });

  Deno.test({
    name: `move tasks: --redrive, --no-wait, --redrive-status, --redrive-cancel (${name})`,
    ...testOptions,
    fn: async () => {
      const { sqsrun, arnOf, countAll } = tools(backend);
      const client = testClient(backend.endpoint);
      const { dlq, sources: [source] } = await dlqWithSources(client, arnOf, "task");
      try {
        await pushNumbered(client, dlq, 30);
        if (motoLacksMoveTasks) {
          assertOneLineError(await sqsrun(["--redrive-status", "-q", dlq]), 1, [
            "ListMessageMoveTasks is not available",
            "HTTP 500",
          ]);
          assertOneLineError(await sqsrun(["--redrive-cancel", "some-handle"]), 1, [
            "CancelMessageMoveTask is not available",
            "HTTP 500",
          ]);
          assertOneLineError(await sqsrun(["--redrive", "-q", dlq, "--no-wait"]), 1, [
            "StartMessageMoveTask is not available",
            "HTTP 500",
            "without --no-wait",
          ]);
          equal(await countAll(dlq), 30, "nothing moved");
          return;
        }
        // Waiting: the handle and the progress on stderr, the result on stdout.
        const done = await sqsrun(["--redrive", "-q", dlq, "--json"]);
        const result = JSON.parse(assertOk(done, "redrive")[0]);
        equal(result.path, "move-task");
        equal(result.status, "COMPLETED");
        equal(result.moved, 30);
        equal(result.total, 30);
        ok(done.stderr.includes(`handle ${result.task_handle}`), done.stderr);
        ok(done.stderr.includes("COMPLETED, moved 30 of 30"), done.stderr);
        equal(await countAll(dlq), 0);
        equal(await countAll(source), 30);

        // --no-wait: the handle alone; a second task is refused while it runs.
        await pushNumbered(client, dlq, 20);
        const started = await sqsrun(["--redrive", "-q", dlq, "--rate", "1", "--no-wait"]);
        const [handle] = assertOk(started, "no-wait");
        ok(handle.length > 0 && !handle.includes(" "), handle);
        assertOneLineError(await sqsrun(["--redrive", "-q", dlq]), 1, ["already running"]);
        const status = await sqsrun(["--redrive-status", "-q", dlq, "--json"]);
        const tasks = JSON.parse(assertOk(status, "status")[0]).tasks;
        const mine = tasks.find((task: { task_handle: string }) => task.task_handle === handle);
        equal(mine?.status, "RUNNING", JSON.stringify(tasks));
        const text = assertOk(await sqsrun(["--redrive-status", "-q", dlq]), "status text");
        ok(text.some((row) => row.startsWith(`${handle}\tRUNNING\t`)), text.join("\n"));

        const cancelled = await sqsrun(["--redrive-cancel", handle, "--json"]);
        const answer = JSON.parse(assertOk(cancelled, "cancel")[0]);
        equal(answer.cancelled, true);
        ok(answer.moved < 20, `cancelled before the end: ${answer.moved}`);
        ok(await countAll(dlq) > 0, "what was not moved stays");
        assertOneLineError(await sqsrun(["--redrive-cancel", "no-such-handle"]), 1, [
          "no such move task",
        ]);
      } finally {
        await deleteQueue(client, dlq);
        await deleteQueue(client, source);
        client.destroy();
      }
    },
  });
}

for (const backend of sqsBackends()) {
  Deno.test({
    name:
      `a delete that fails after the send moves those messages twice, never loses them (${backend.name})`,
    ...testOptions,
    fn: async () => {
      const { arnOf, countAll } = tools(backend);
      const client = testClient(backend.endpoint);
      const { dlq, sources: [source] } = await dlqWithSources(client, arnOf, "nodelete");
      const parsed = await parseCli([
        "--redrive",
        "-q",
        dlq,
        "--client-side",
        "-t",
        "2",
        "--json",
        "--endpoint-url",
        backend.endpoint,
        "--region",
        "us-east-1",
        "-k",
        "test",
        "-s",
        "test",
      ]);
      if (parsed.kind !== "options") throw new Error(parsed.kind);
      const failing = createSqsClient(parsed.options);
      let failed = 0;
      failing.middlewareStack.add(
        (next, context) => (args) => {
          if (context.commandName === "DeleteMessageBatchCommand" && failed++ === 1) {
            return Promise.reject(
              Object.assign(new Error("socket hang up"), { code: "ECONNRESET" }),
            );
          }
          return next(args);
        },
        { step: "initialize", name: "failSecondDelete" },
      );
      const printed: string[] = [];
      const progress: string[] = [];
      const io = {
        print: (line: string) => printed.push(line),
        progress: (line: string) => progress.push(line),
        readStdin: () => Promise.resolve(new Uint8Array()),
      };
      try {
        const bodies = await pushNumbered(client, dlq, 30);
        await rejects(runAdmin(parsed.options, io, { client: failing }), (error) => {
          ok(error instanceof RuntimeError, String(error));
          ok(/delete \(10 messages sent will be moved again\)/.test(error.message), error.message);
          ok(error.message.includes("after 10 moved"), error.message);
          return true;
        });
        equal(printed.length, 0, "no result line after a failure");
        // The second run waits for the 10 messages whose delete failed (-t 2).
        await runAdmin(parsed.options, io, { client });
        const result = JSON.parse(printed[0]);
        // 10 never received, and the 10 sent whose delete failed, once visible again.
        equal(result.moved, 20, JSON.stringify(result));
        equal(result.total, 20, "in flight at the start counts");
        equal(await countAll(dlq), 0);
        const received = await drain(client, source);
        const unique = new Set(received.map((m) => m.Body));
        deepStrictEqual([...unique].sort(), [...bodies].sort(), "nothing lost");
        equal(received.length - unique.size, 10, "the batch whose delete failed came twice");
      } finally {
        failing.destroy();
        await deleteQueue(client, dlq);
        await deleteQueue(client, source);
        client.destroy();
      }
    },
  });
}

Deno.test("which StartMessageMoveTask failures call for the client-side move", () => {
  const answer = (status: number, code?: string, message = "x") =>
    Object.assign(new Error(message), {
      name: code ?? "SyntaxError",
      $metadata: { httpStatusCode: status },
    });
  ok(moveTaskFallbackReason(answer(500))?.includes("HTTP 500"), "moto's HTML page");
  ok(moveTaskFallbackReason(answer(503, "Unknown"))?.includes("HTTP 503"), "a bare 503");
  ok(moveTaskFallbackReason(answer(400, "InvalidAction")), "an unknown action");
  ok(moveTaskFallbackReason(answer(403, "AccessDeniedException"))?.includes("refused"));
  equal(
    moveTaskFallbackReason(
      answer(400, "UnsupportedOperation", "A message move task is already running"),
    ),
    undefined,
    "a task already running is an error, not a reason to move twice",
  );
  equal(moveTaskFallbackReason(answer(400, "QueueDoesNotExist")), undefined);
  equal(moveTaskFallbackReason(Object.assign(new Error("t"), { name: "TimeoutError" })), undefined);
});

Deno.test("a queue URL must be on the endpoint sqsrun talks to", async () => {
  const check = async (args: string[], queue: string) => {
    const parsed = await parseCli(["--peek", "-q", queue, ...args]);
    if (parsed.kind !== "options") throw new Error(parsed.kind);
    checkQueueEndpoint(parsed.options, queue, "-q/--queue");
  };
  const url = "http://localhost:9324/000000000000/q";
  await check(["--endpoint-url", "http://127.0.0.1:9324"], url); // loopback names agree
  await check([], url); // the URL is the endpoint
  await check(["--region", "eu-west-1"], "https://sqs.eu-west-1.amazonaws.com/1/q");
  await check(["--region", "eu-west-1"], "q"); // a name is always on the endpoint
  for (
    const [args, queue] of [
      [["--endpoint-url", "http://127.0.0.1:9325"], url],
      [["--endpoint-url", "https://127.0.0.1:9324"], url],
      [["--endpoint-url", "http://127.0.0.1:9324"], "https://sqs.us-east-1.amazonaws.com/1/q"],
      [["--region", "us-east-1"], "https://sqs.eu-west-1.amazonaws.com/1/q"],
    ] as const
  ) {
    await rejects(check([...args], queue), UsageError, `${args.join(" ")} ${queue}`);
  }
});
