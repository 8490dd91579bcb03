/**
 * `--lambda` against the real SQS emulators, with real Lambda runtime clients
 * run as the binary runs them (`deno run <runtimeFlags()>`): the shell
 * `bootstrap` of the Lambda docs (curl), Python's awslambdaric with Powertools'
 * BatchProcessor (standard and FIFO), aws-lambda-go, and Node's aws-lambda-ric
 * when it installed. The event is Lambda's SQS event, batchItemFailures release
 * exactly their messages, and every way a runtime can misbehave (crash, deadline,
 * init error, no /next, garbage, /next twice) ends clearly with no message lost
 * or wrongly deleted. A missing toolchain skips its tests with a printed reason.
 */
import { deepStrictEqual, equal, match, ok } from "node:assert/strict";
import { createHash } from "node:crypto";
import { SendMessageCommand, type SQSClient } from "@aws-sdk/client-sqs";
import { awsEnv, type SqsBackend, sqsBackends, uniqueName } from "./support/local_aws.ts";
import { assertOneLineError, runCli } from "./support/cli.ts";
import { createQueue, deleteQueue, queueCounts, sendMessages, testClient } from "./support/sqs.ts";
import {
  type LogLine,
  processAlive,
  startWorker,
  waitUntil,
  withWorkerTails,
  type WorkerProcess,
} from "./support/worker.ts";
import { goHandler, nodeRuntime, pythonRuntime, shellTools, skipped } from "./support/lambda.ts";
import { RuntimeApi, serveRuntimeApi } from "../src/runners/lambda/runtime_api.ts";

interface Fixture {
  client: SQSClient;
  url: string;
  name: string;
  dir: string;
  env: Record<string, string>;
  /** Writes a file into the fixture's folder (`LEDGER` and `DIR` become their paths); returns `./name`. */
  file(name: string, text: string, mode?: number): Promise<string>;
  /** The lines the handlers appended to `$dir/ledger`. */
  ledger(): Promise<string[]>;
  /** Starts a worker on the fixture's queue, in its folder, with the binary's permissions. */
  worker(args: string[]): WorkerProcess;
}

async function withFixture(
  backend: SqsBackend,
  options: { fifo?: boolean },
  body: (fixture: Fixture) => Promise<void>,
): Promise<void> {
  const client = testClient(backend.endpoint);
  const name = uniqueName("lambda") + (options.fifo ? ".fifo" : "");
  const url = await createQueue(
    client,
    name,
    options.fifo ? { ContentBasedDeduplication: "true" } : {},
  );
  const dir = await Deno.makeTempDir({ prefix: "sqsrun-lambda-" });
  const ledgerPath = `${dir}/ledger`;
  await Deno.writeTextFile(ledgerPath, "");
  const env = {
    ...awsEnv(backend.endpoint),
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    HOME: Deno.env.get("HOME") ?? dir,
  };
  const workers: WorkerProcess[] = [];
  const fixture: Fixture = {
    client,
    url,
    name,
    dir,
    env,
    async file(fileName, text, mode = 0o644) {
      const path = `${dir}/${fileName}`;
      await Deno.writeTextFile(
        path,
        text.replaceAll("LEDGER", ledgerPath).replaceAll("$DIR", dir),
        { mode },
      );
      await Deno.chmod(path, mode);
      return `./${fileName}`;
    },
    async ledger() {
      return (await Deno.readTextFile(ledgerPath)).split("\n").filter((line) => line.length > 0);
    },
    worker(args) {
      const worker = startWorker(["-q", url, "--wait", "1", ...args], {
        env,
        cwd: dir,
        binaryPermissions: true,
      });
      workers.push(worker);
      return worker;
    },
  };
  try {
    await body(fixture).catch((error) => {
      throw withWorkerTails(error, workers);
    });
    await Promise.all(workers.map((worker) => worker.stop()));
    for (const worker of workers) {
      // sqsrun writes nothing but its log: no Deno warning, no stack trace.
      equal(worker.stderr(), "", "the worker's stderr");
    }
  } finally {
    await Promise.all(workers.map((worker) => worker.stop()));
    await deleteQueue(client, url);
    client.destroy();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

async function queueEmpty(fixture: Fixture): Promise<boolean> {
  const counts = await queueCounts(fixture.client, fixture.url);
  return counts.visible === 0 && counts.inFlight === 0 && counts.delayed === 0;
}

/** True when every message in `ids` has a `job finished` line. */
function allFinished(worker: WorkerProcess, ids: string[]): boolean {
  const done = new Set(
    worker.lines.filter((line) => line.msg === "job finished").map((line) => line.message_id),
  );
  return ids.every((id) => done.has(id));
}

const byMessage = (lines: LogLine[], msg: string) =>
  lines.filter((line) => line.msg === msg).map((line) => line.message_id as string);

/**
 * A custom runtime as in the Lambda docs' tutorial: bash and curl. Each record
 * goes to the ledger as `BODY RECEIVE_COUNT`; `handler` (bash, with $EVENT, $ID,
 * $API, $HEADERS) may set RESPONSE, or do worse; `init` runs once first.
 */
function bootstrap(handler: string, init = ""): string {
  return `#!/bin/bash
set -uo pipefail
API="http://\${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
# first BODY: the batch holds BODY on its first receive.
first() { echo "$EVENT" | jq -e --arg b "$1" 'any(.Records[]; .body == $b and .attributes.ApproximateReceiveCount == "1")' >/dev/null; }
${init}
while true; do
  HEADERS="$(mktemp)"
  EVENT=$(curl -sS -D "$HEADERS" "$API/invocation/next") || exit 1
  ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  echo "$EVENT" | jq -r '.Records[] | "\\(.body) \\(.attributes.ApproximateReceiveCount)"' >> "LEDGER"
  RESPONSE='{}'
  ${handler}
  curl -sS -o /dev/null "$API/invocation/$ID/response" -d "$RESPONSE"
  rm -f "$HEADERS"
done
`;
}

/** Reports the records whose body starts with "fail", on their first receive. */
const FAIL_FIRST_TRY =
  `RESPONSE=$(echo "$EVENT" | jq -c '{batchItemFailures: [.Records[] | select((.body | startswith("fail")) and .attributes.ApproximateReceiveCount == "1") | {itemIdentifier: .messageId}]}')`;

const testOptions = { sanitizeOps: false, sanitizeResources: false };
const [moto] = sqsBackends();
const shell = shellTools();
const skipShell = skipped("shell bootstrap", shell);

function test(name: string, fn: () => Promise<void>, ignore = skipShell): void {
  Deno.test({ name: `--lambda: ${name}`, fn, ignore, ...testOptions });
}

for (const backend of sqsBackends()) {
  test(`[${backend.name}] the event, its headers and the runtime's environment are Lambda's`, async () => {
    await withFixture(backend, {}, async (fixture) => {
      const runtime = await fixture.file(
        "bootstrap",
        bootstrap(
          `printf '%s' "$EVENT" > "$DIR/event.json"; tr -d '\\r' < "$HEADERS" > "$DIR/headers"`,
          `env | grep -E '^(AWS_LAMBDA_|_HANDLER=|LAMBDA_TASK_ROOT=|AWS_REGION=|AWS_DEFAULT_REGION=)' | sort > "$DIR/env"`,
        ),
        0o755,
      );
      const body = `{"order": 42, "text": "héllo"}`;
      const sent = await fixture.client.send(
        new SendMessageCommand({
          QueueUrl: fixture.url,
          MessageBody: body,
          MessageAttributes: {
            color: { DataType: "String", StringValue: "blue" },
            blob: { DataType: "Binary", BinaryValue: new Uint8Array([0, 1, 254]) },
          },
        }),
      );
      const before = Date.now();
      const worker = fixture.worker([
        "--lambda",
        runtime,
        "--handler",
        "function.handler",
        "-x",
        "120",
        "--env",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256",
      ]);
      await waitUntil("the message is deleted", () => queueEmpty(fixture));
      await worker.waitForLine((line) => line.msg === "job finished");
      const event = JSON.parse(await Deno.readTextFile(`${fixture.dir}/event.json`));
      equal(event.Records.length, 1);
      const [record] = event.Records;
      const account = new URL(fixture.url).pathname.split("/").filter(Boolean).at(-2);
      deepStrictEqual(
        Object.keys(record).sort(),
        [
          "attributes",
          "awsRegion",
          "body",
          "eventSource",
          "eventSourceARN",
          "md5OfBody",
          "messageAttributes",
          "messageId",
          "receiptHandle",
          ...(record.md5OfMessageAttributes !== undefined ? ["md5OfMessageAttributes"] : []),
        ].sort(),
      );
      equal(record.messageId, sent.MessageId);
      equal(record.body, body);
      equal(record.md5OfBody, createHash("md5").update(body).digest("hex"));
      equal(record.eventSource, "aws:sqs");
      equal(record.awsRegion, "us-east-1");
      equal(record.eventSourceARN, `arn:aws:sqs:us-east-1:${account}:${fixture.name}`);
      ok(typeof record.receiptHandle === "string" && record.receiptHandle.length > 0);
      equal(record.attributes.ApproximateReceiveCount, "1");
      match(record.attributes.SentTimestamp, /^\d{13}$/);
      deepStrictEqual(record.messageAttributes, {
        color: {
          stringValue: "blue",
          stringListValues: [],
          binaryListValues: [],
          dataType: "String",
        },
        blob: {
          binaryValue: "AAH+",
          stringListValues: [],
          binaryListValues: [],
          dataType: "Binary",
        },
      });
      const headers = Object.fromEntries(
        (await Deno.readTextFile(`${fixture.dir}/headers`)).split("\n").slice(1)
          .filter((line) => line.includes(":"))
          .map((
            line,
          ) => [
            line.slice(0, line.indexOf(":")).toLowerCase(),
            line.slice(line.indexOf(":") + 1).trim(),
          ]),
      );
      equal(headers["lambda-runtime-aws-request-id"].length, 36);
      const deadline = Number(headers["lambda-runtime-deadline-ms"]);
      ok(deadline >= before + 115_000 && deadline <= Date.now() + 120_000, `deadline ${deadline}`);
      const functionName = fixture.name;
      equal(
        headers["lambda-runtime-invoked-function-arn"],
        `arn:aws:lambda:us-east-1:${account}:function:${functionName}`,
      );
      const env = Object.fromEntries(
        (await Deno.readTextFile(`${fixture.dir}/env`)).trim().split("\n").map((line) => [
          line.slice(0, line.indexOf("=")),
          line.slice(line.indexOf("=") + 1),
        ]),
      );
      match(env.AWS_LAMBDA_RUNTIME_API, /^127\.0\.0\.1:\d+$/);
      match(env.AWS_LAMBDA_LOG_STREAM_NAME, /^\d{4}\/\d{2}\/\d{2}\/\[\$LATEST\][0-9a-f]{32}$/);
      delete env.AWS_LAMBDA_RUNTIME_API;
      delete env.AWS_LAMBDA_LOG_STREAM_NAME;
      deepStrictEqual(env, {
        AWS_DEFAULT_REGION: "us-east-1",
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE: "256",
        AWS_LAMBDA_FUNCTION_NAME: functionName,
        AWS_LAMBDA_FUNCTION_VERSION: "$LATEST",
        AWS_LAMBDA_INITIALIZATION_TYPE: "on-demand",
        AWS_LAMBDA_LOG_GROUP_NAME: `/aws/lambda/${functionName}`,
        AWS_REGION: "us-east-1",
        LAMBDA_TASK_ROOT: await Deno.realPath(fixture.dir),
        _HANDLER: "function.handler",
      });
      const started = worker.lines.find((line) => line.msg === "worker started")!;
      equal(started.lambda, runtime);
      equal(started.function_name, functionName);
    });
  });
}

test("[moto] a FIFO record carries its group, deduplication id and sequence number", async () => {
  await withFixture(moto, { fifo: true }, async (fixture) => {
    const runtime = await fixture.file(
      "bootstrap",
      bootstrap(`printf '%s' "$EVENT" > "$DIR/event.json"`),
      0o755,
    );
    await sendMessages(fixture.client, fixture.url, [{ body: "first", groupId: "g1" }]);
    fixture.worker(["--lambda", runtime]);
    await waitUntil("the message is deleted", () => queueEmpty(fixture));
    const { attributes } = JSON.parse(await Deno.readTextFile(`${fixture.dir}/event.json`))
      .Records[0];
    equal(attributes.MessageGroupId, "g1");
    ok(typeof attributes.MessageDeduplicationId === "string", JSON.stringify(attributes));
    match(attributes.SequenceNumber, /^\d+$/);
  });
});

test("[moto] batchItemFailures release exactly their messages; the rest are deleted", async () => {
  await withFixture(moto, {}, async (fixture) => {
    const runtime = await fixture.file("bootstrap", bootstrap(FAIL_FIRST_TRY), 0o755);
    const ids = await sendMessages(fixture.client, fixture.url, [
      "ok1",
      "fail1",
      "ok2",
      "fail2",
      "ok3",
    ]);
    const worker = fixture.worker(["--lambda", runtime, "--backoff", "off"]);
    await waitUntil("every message ran", () => allFinished(worker, ids));
    await waitUntil("the queue is empty", () => queueEmpty(fixture));
    deepStrictEqual((await fixture.ledger()).sort(), [
      "fail1 1",
      "fail1 2",
      "fail2 1",
      "fail2 2",
      "ok1 1",
      "ok2 1",
      "ok3 1",
    ]);
    deepStrictEqual(byMessage(worker.lines, "job failed").sort(), [ids[1], ids[3]].sort());
    const failed = worker.lines.find((line) => line.msg === "job failed")!;
    match(String(failed.error), /batchItemFailures/);
    ok(typeof failed.request_id === "string");
  });
});

test("[moto] a runtime that crashes fails its batch and is restarted", async () => {
  await withFixture(moto, {}, async (fixture) => {
    const runtime = await fixture.file(
      "bootstrap",
      bootstrap(`if first crash; then echo "crashing" >&2; exit 3; fi`),
      0o755,
    );
    const ids = await sendMessages(fixture.client, fixture.url, ["crash", "ok"]);
    const worker = fixture.worker(["--lambda", runtime, "--backoff", "off"]);
    await waitUntil("both messages ran", () => allFinished(worker, ids));
    await waitUntil("the queue is empty", () => queueEmpty(fixture));
    const ledger = await fixture.ledger();
    ok(ledger.includes("crash 1") && ledger.includes("crash 2"), ledger.join(", "));
    const failed = worker.lines.filter((line) => line.msg === "job failed");
    ok(failed.length >= 1);
    for (const line of failed) {
      match(String(line.error), /the runtime exited \(exit code 3\) during the invocation/);
    }
    ok(worker.lines.some((line) => line.msg === "crashing" && line.stream === "stderr"));
    ok(
      worker.lines.some((line) =>
        line.msg === "starting a Lambda runtime in place of one that ended"
      ),
    );
  });
});

test("[moto] nothing is received while no runtime is ready (a replacement still in its init)", async () => {
  await withFixture(moto, {}, async (fixture) => {
    const runtime = await fixture.file(
      "bootstrap",
      bootstrap(
        `if first crash; then touch "$DIR/crashed"; exit 3; fi`,
        `if [ -e "$DIR/crashed" ]; then sleep 6; touch "$DIR/init-done"; fi`,
      ),
      0o755,
    );
    const exists = (name: string) =>
      Deno.stat(`${fixture.dir}/${name}`).then(() => true, () => false);
    const ids = await sendMessages(fixture.client, fixture.url, ["crash"]);
    const worker = fixture.worker(["--lambda", runtime, "--backoff", "3,3"]);
    await worker.waitForLine((line) => line.msg === "job failed");
    // A long poll sent before the crash ends within --wait (1 s); any later one must wait.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    ids.push(...await sendMessages(fixture.client, fixture.url, ["later"]));
    let samples = 0;
    while (!await exists("init-done")) {
      const counts = await queueCounts(fixture.client, fixture.url);
      if (await exists("init-done")) break;
      ok(
        counts.visible >= 1,
        `nothing is taken while no runtime can run it: ${JSON.stringify(counts)}`,
      );
      samples++;
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
    ok(samples >= 2, `sampled ${samples} times during the replacement's init`);
    await waitUntil("both ran", () => allFinished(worker, ids), 20_000);
    await waitUntil("the queue is empty", () => queueEmpty(fixture));
  });
});

test("[moto] a deadline overrun kills the runtime's group and restarts it", async () => {
  await withFixture(moto, {}, async (fixture) => {
    const runtime = await fixture.file(
      "bootstrap",
      bootstrap(
        `if first slow; then trap '' TERM; sleep 60 & echo $! > "$DIR/sleeper"; wait; fi`,
      ),
      0o755,
    );
    const [id] = await sendMessages(fixture.client, fixture.url, ["slow"]);
    const worker = fixture.worker([
      "--lambda",
      runtime,
      "-x",
      "3",
      "--kill-grace",
      "1",
      "--backoff",
      "off",
    ]);
    const failed = await worker.waitForLine((line) => line.msg === "job failed", 20_000);
    equal(failed.outcome, "killed");
    await worker.waitForLine((line) => line.msg === "killing job");
    const sleeper = Number(await Deno.readTextFile(`${fixture.dir}/sleeper`));
    await waitUntil(
      "the sleeping child died with its runtime",
      () => !processAlive(sleeper),
      5_000,
    );
    await waitUntil("it ran again and was deleted", () => allFinished(worker, [id]));
    deepStrictEqual(await fixture.ledger(), ["slow 1", "slow 2"]);
  });
});

test("[moto] garbage, an answer to the wrong request id, /next twice: clear failures, then retries", async () => {
  await withFixture(moto, {}, async (fixture) => {
    const runtime = await fixture.file(
      "bootstrap",
      bootstrap(`
  if first garbage; then RESPONSE="this is not JSON"; fi
  if first wrongid; then
    curl -sS -o /dev/null -w '%{http_code}\\n' "$API/invocation/not-$ID/response" -d '{}' >> "$DIR/codes"
  fi
  if first abandon; then curl -sS "$API/invocation/next" > /dev/null; fi`),
      0o755,
    );
    const ids = await sendMessages(fixture.client, fixture.url, ["garbage", "wrongid", "abandon"]);
    const worker = fixture.worker(["--lambda", runtime, "--batch-size", "1", "--backoff", "off"]);
    await waitUntil("every message ran", () => allFinished(worker, ids), 40_000);
    await waitUntil("the queue is empty", () => queueEmpty(fixture));
    const ledger = await fixture.ledger();
    for (const body of ["garbage", "abandon"]) {
      ok(ledger.includes(`${body} 1`) && ledger.includes(`${body} 2`), ledger.join(", "));
    }
    equal(
      ledger.filter((line) => line.startsWith("wrongid")).length,
      1,
      "a wrong id is refused, the right one counts",
    );
    equal((await Deno.readTextFile(`${fixture.dir}/codes`)).trim(), "400");
    const errors = worker.lines.filter((line) => line.msg === "job failed").map((line) =>
      String(line.error)
    );
    ok(errors.some((error) => /the response is not JSON/.test(error)), errors.join("\n"));
    ok(errors.some((error) => /without answering this one/.test(error)), errors.join("\n"));
    const refused = worker.lines.find((line) => line.msg.includes("the Runtime API refused"))!;
    equal(refused.status, 400);
    equal(refused.error_type, "InvalidRequestID");
  });
});

test("[moto] SIGTERM drains: the running invocation finishes, then the runtimes stop", async () => {
  await withFixture(moto, {}, async (fixture) => {
    const runtime = await fixture.file(
      "bootstrap",
      bootstrap(`sleep 2`, `echo $$ > "$DIR/pid"`),
      0o755,
    );
    const [id] = await sendMessages(fixture.client, fixture.url, ["slow"]);
    const worker = fixture.worker(["--lambda", runtime]);
    await worker.waitForLine((line) => line.msg === "job started");
    worker.signal("SIGTERM");
    const status = await worker.exit(20_000);
    equal(status.code, 0);
    ok(allFinished(worker, [id]), "the invocation in progress finished");
    ok(await queueEmpty(fixture));
    const pid = Number(await Deno.readTextFile(`${fixture.dir}/pid`));
    ok(!processAlive(pid), "the runtime was stopped");
  });
});

test("[moto] a worker killed with SIGKILL takes its runtimes (and what they started) with it", async () => {
  await withFixture(moto, {}, async (fixture) => {
    const runtime = await fixture.file(
      "bootstrap",
      bootstrap("", `echo $$ > "$DIR/pid"; sleep 300 & echo $! > "$DIR/child"`),
      0o755,
    );
    const worker = fixture.worker(["--lambda", runtime, "-c", "2"]);
    await worker.waitForLine((line) => line.msg === "worker started");
    const pid = Number(await Deno.readTextFile(`${fixture.dir}/pid`));
    const child = Number(await Deno.readTextFile(`${fixture.dir}/child`));
    ok(processAlive(pid) && processAlive(child));
    worker.signal("SIGKILL");
    await worker.exit();
    await waitUntil(
      "the runtime and its child are gone",
      () => !processAlive(pid) && !processAlive(child),
      5_000,
    );
  });
});

Deno.test({
  name: "--lambda: start-up failures are one line, exit 2, with the runtime's own message",
  ignore: skipShell,
  ...testOptions,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "sqsrun-lambda-start-" });
    const env = { ...awsEnv(moto.endpoint) };
    try {
      const write = async (name: string, text: string) => {
        await Deno.writeTextFile(`${dir}/${name}`, text, { mode: 0o755 });
        await Deno.chmod(`${dir}/${name}`, 0o755);
        return `${dir}/${name}`;
      };
      const initError = await write(
        "init_error",
        `#!/bin/bash
curl -sS -o /dev/null -H 'Lambda-Runtime-Function-Error-Type: Runtime.ImportModuleError' \\
  "http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime/init/error" \\
  -d '{"errorMessage": "Unable to import module app: No module named app", "errorType": "Runtime.ImportModuleError"}'
exit 1
`,
      );
      const neverAsks = await write("never_asks", "#!/bin/sh\nsleep 30\n");
      const exits = await write("exits", "#!/bin/sh\necho 'cannot find libfoo.so' >&2\nexit 4\n");
      await Deno.writeTextFile(`${dir}/plain`, "not a program\n", { mode: 0o644 });
      const queue = ["-q", "never-reached"];
      const cases: [string[], string[]][] = [
        [["--lambda", initError], [
          "--lambda",
          "the runtime reported an init error: Runtime.ImportModuleError: Unable to import module app: No module named app",
        ]],
        [["--lambda", neverAsks, "-x", "1"], ["did not ask for an invocation", "within 1 s"]],
        [["--lambda", exits], [
          "the runtime exited (exit code 4) before asking for an invocation",
          "cannot find libfoo.so",
        ]],
        [["--lambda", `${dir}/missing`], ["--lambda: program", "not found"]],
        [["--lambda", `${dir}/plain`], ["is not an executable file"]],
        [["--lambda", exits, "--shell"], ["--shell only applies to --exec"]],
        [["--lambda", exits, "--s3"], ["--s3 does not apply to --lambda"]],
        [["--exec", exits, "--handler", "x.y"], ["--handler only applies to --lambda"]],
        [["--lambda", exits, "--batch-window", "301"], ["--batch-window"]],
      ];
      for (const [args, mentions] of cases) {
        const result = await runCli([...queue, ...args], { env, cwd: dir });
        assertOneLineError(result, 2, mentions, args.join(" "));
      }
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test("--lambda: the Runtime API listens on 127.0.0.1; closing answers a waiting /next", async () => {
  const api = new RuntimeApi();
  const served = serveRuntimeApi(api);
  ok(/^127\.0\.0\.1:\d+$/.test(served.address), served.address);
  const waiting = fetch(`http://${served.address}/2018-06-01/runtime/invocation/next`);
  await new Promise((resolve) => setTimeout(resolve, 50));
  ok(api.initialized);
  await served.close();
  const response = await waiting;
  equal(response.status, 410);
  await response.body?.cancel();
});

// ---------------------------------------------------------------------------
// Python: awslambdaric with Powertools' batch processors.

const python = await pythonRuntime();
const skipPython = skipped("Python awslambdaric", python);

const PYTHON_HANDLER = `import os
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    SqsFifoPartialProcessor,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

processor = BatchProcessor(event_type=EventType.SQS)
fifo_processor = SqsFifoPartialProcessor()


def record_handler(record: SQSRecord):
    if record.body.startswith("fail") and record.attributes.approximate_receive_count == "1":
        raise ValueError(f"cannot process {record.body}")
    print(f"processed {record.body}", flush=True)


def handler(event, context):
    assert context.get_remaining_time_in_millis() > 0
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )


def fifo_handler(event, context):
    return process_partial_response(
        event=event, record_handler=record_handler, processor=fifo_processor, context=context
    )
`;

function processed(worker: WorkerProcess): string[] {
  return worker.lines
    .filter((line) => line.stream === "stdout" && line.msg.startsWith("processed "))
    .map((line) => line.msg.slice("processed ".length));
}

test(
  "[moto] Python awslambdaric + Powertools BatchProcessor: failed records retried, the rest deleted",
  async () => {
    await withFixture(moto, {}, async (fixture) => {
      await fixture.file("app.py", PYTHON_HANDLER);
      const ids = await sendMessages(fixture.client, fixture.url, ["a", "fail-b", "c", "fail-d"]);
      const worker = fixture.worker([
        "--lambda",
        (python as { path: string }).path,
        "--backoff",
        "off",
        "--",
        "-m",
        "awslambdaric",
        "app.handler",
      ]);
      await waitUntil("every message ran", () => allFinished(worker, ids), 40_000);
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
      deepStrictEqual(byMessage(worker.lines, "job failed").sort(), [ids[1], ids[3]].sort());
      deepStrictEqual(processed(worker).sort(), ["a", "c", "fail-b", "fail-d"]);
      const started = worker.lines.filter((line) =>
        line.msg === "job started" && line.receive_count === 2
      );
      deepStrictEqual(started.map((line) => line.message_id).sort(), [ids[1], ids[3]].sort());
    });
  },
  skipPython,
);

test(
  "[moto] Python awslambdaric + SqsFifoPartialProcessor: a FIFO group keeps its order",
  async () => {
    await withFixture(moto, { fifo: true }, async (fixture) => {
      await fixture.file("app.py", PYTHON_HANDLER);
      const ids = await sendMessages(fixture.client, fixture.url, [
        { body: "a1", groupId: "A" },
        { body: "b1", groupId: "B" },
        { body: "fail-a2", groupId: "A" },
        { body: "a3", groupId: "A" },
        { body: "b2", groupId: "B" },
      ]);
      const worker = fixture.worker([
        "--lambda",
        (python as { path: string }).path,
        "-c",
        "2",
        "--backoff",
        "off",
        "--",
        "-m",
        "awslambdaric",
        "app.fifo_handler",
      ]);
      await waitUntil("every message ran", () => allFinished(worker, ids), 40_000);
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
      const order = processed(worker);
      deepStrictEqual(order.filter((body) => body.startsWith("b")), ["b1", "b2"]);
      deepStrictEqual(order.filter((body) => body.includes("a")), ["a1", "fail-a2", "a3"]);
      // a3 came after the failed fail-a2 in its batch: released with it, never run before it.
      const a3 = ids[3];
      deepStrictEqual(
        worker.lines.filter((line) => line.msg === "job started" && line.message_id === a3)
          .map((line) => line.receive_count),
        [1, 2],
      );
      // One group's messages share an invocation, in order.
      const firstBatch = worker.lines.find((line) =>
        line.msg === "job failed" && line.message_id === ids[2]
      )!;
      ok(firstBatch.request_id);
    });
  },
  skipPython,
);

// ---------------------------------------------------------------------------
// Go: aws-lambda-go, events.SQSEventResponse.

const go = await goHandler();
const skipGo = skipped("Go aws-lambda-go", go);

test(
  "[moto] Go aws-lambda-go SQSEventResponse: failed records retried, the rest deleted",
  async () => {
    await withFixture(moto, {}, async (fixture) => {
      const bodies = ["g1", "fail-g2", "g3", "g4", "fail-g5", "g6"];
      const ids = await sendMessages(fixture.client, fixture.url, bodies);
      const worker = fixture.worker([
        "--lambda",
        (go as { path: string }).path,
        "-c",
        "2",
        "--backoff",
        "off",
        "--env",
        "SQSRUN_TEST_ECHO=1",
      ]);
      await waitUntil("every message ran", () => allFinished(worker, ids), 30_000);
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
      deepStrictEqual(byMessage(worker.lines, "job failed").sort(), [ids[1], ids[4]].sort());
      deepStrictEqual(processed(worker).sort(), [...bodies].sort());
    });
  },
  skipGo,
);

// ---------------------------------------------------------------------------
// Node: aws-lambda-ric, when it installed with its native part.

const node = await nodeRuntime();
const skipNode = skipped("Node aws-lambda-ric", node);

test("[moto] Node aws-lambda-ric: batchItemFailures from an async handler", async () => {
  await withFixture(moto, {}, async (fixture) => {
    await fixture.file(
      "index.mjs",
      `export const handler = async (event) => {
  const batchItemFailures = [];
  for (const record of event.Records) {
    if (record.body.startsWith("fail") && record.attributes.ApproximateReceiveCount === "1") {
      batchItemFailures.push({ itemIdentifier: record.messageId });
    } else {
      console.log("processed " + record.body);
    }
  }
  return { batchItemFailures };
};
`,
    );
    const ids = await sendMessages(fixture.client, fixture.url, ["n1", "fail-n2", "n3"]);
    const found = node as { path: string; node: string };
    const worker = fixture.worker([
      "--lambda",
      found.node,
      "--backoff",
      "off",
      "--",
      found.path,
      "index.handler",
    ]);
    await waitUntil("every message ran", () => allFinished(worker, ids), 40_000);
    await waitUntil("the queue is empty", () => queueEmpty(fixture));
    deepStrictEqual(byMessage(worker.lines, "job failed"), [ids[1]]);
    // aws-lambda-ric writes console.log as `TIME\tREQUEST_ID\tINFO\tTEXT`: the same id as sqsrun's.
    const printed = worker.lines.find((line) =>
      line.stream !== undefined && line.msg.includes("processed n1")
    );
    ok(printed, JSON.stringify(worker.lines.filter((line) => line.stream !== undefined)));
    ok(printed.msg.includes(String(printed.request_id)), printed.msg);
  });
}, skipNode);
