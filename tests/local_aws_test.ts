/**
 * The local AWS emulators the other tests rely on: both answer SQS through the
 * AWS SDK, the AWS CLI works with `awsEnv`, moto comes back on the same port, and
 * `deno task local-aws env` prints exports that point sqsrun and the AWS CLI at moto.
 */
import {
  CreateQueueCommand,
  DeleteMessageCommand,
  DeleteQueueCommand,
  ListQueuesCommand,
  ReceiveMessageCommand,
  SendMessageCommand,
  SQSClient,
} from "@aws-sdk/client-sqs";
import assert from "node:assert/strict";
import { motoEndpoint, runAwsCli, sqsBackends, uniqueName } from "./support/local_aws.ts";
import {
  emptyAwsConfigPath,
  envLines,
  operatorEnv,
  readState,
  restartServer,
  startLocalAws,
  startServer,
  stopLocalAws,
  stopServer,
  testEnv,
} from "../scripts/local_aws.ts";
import { childEnv, TEST_ENV_NAMES } from "../scripts/test.ts";

function sqsClient(endpoint: string): SQSClient {
  return new SQSClient({
    endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
    // One attempt: the outage test expects a refused connection to fail at once.
    maxAttempts: 1,
  });
}

for (const backend of sqsBackends()) {
  Deno.test(`${backend.name} creates a queue, sends and receives`, async () => {
    const client = sqsClient(backend.endpoint);
    try {
      const { QueueUrl } = await client.send(
        new CreateQueueCommand({ QueueName: uniqueName("local-aws") }),
      );
      assert(QueueUrl, "CreateQueue returned no URL");
      await client.send(new SendMessageCommand({ QueueUrl, MessageBody: "hello" }));
      const received = await client.send(
        new ReceiveMessageCommand({ QueueUrl, MaxNumberOfMessages: 1, WaitTimeSeconds: 5 }),
      );
      const message = received.Messages?.[0];
      assert.equal(message?.Body, "hello");
      await client.send(
        new DeleteMessageCommand({ QueueUrl, ReceiptHandle: message.ReceiptHandle }),
      );
      await client.send(new DeleteQueueCommand({ QueueUrl }));
    } finally {
      client.destroy();
    }
  });
}

Deno.test("the venv's AWS CLI lists moto's queues", async () => {
  const queue = uniqueName("cli");
  const client = sqsClient(motoEndpoint());
  try {
    await client.send(new CreateQueueCommand({ QueueName: queue }));
  } finally {
    client.destroy();
  }
  const result = await runAwsCli(motoEndpoint(), ["sqs", "list-queues", "--output", "json"]);
  assert.equal(result.code, 0, `aws failed: ${result.stderr}`);
  assert(result.stdout.includes(queue), `queue ${queue} not in: ${result.stdout}`);
});

// A moto of its own: stopping the shared one would empty it under the test files that
// `deno task test` runs at the same time.
Deno.test("moto stops and starts again on the same port, empty", async () => {
  const stateDir = await Deno.makeTempDir({ prefix: "sqsrun-local-aws-" });
  const state = await startLocalAws({ stateDir, servers: ["moto"], log: () => {} });
  const client = sqsClient(state.moto.url);
  try {
    const queue = uniqueName("outage");
    await client.send(new CreateQueueCommand({ QueueName: queue }));

    await stopServer(state, "moto");
    await assert.rejects(client.send(new ListQueuesCommand({})), "moto should be down");

    await startServer(state, "moto", { log: () => {} });
    const after = await client.send(new ListQueuesCommand({}));
    assert(
      !(after.QueueUrls ?? []).some((url) => url.endsWith(`/${queue}`)),
      "a restarted moto should have no queues",
    );

    await restartServer(state, "moto", { log: () => {} });
    const again = await client.send(new ListQueuesCommand({}));
    assert.equal(again.$metadata.httpStatusCode, 200);
  } finally {
    client.destroy();
    await stopLocalAws((await readState(state.stateFile)) ?? state);
    await stopLocalAws(state);
    await Deno.remove(stateDir, { recursive: true });
  }
});

Deno.test("local-aws env prints ready-to-eval exports that point sqsrun and the AWS CLI at moto", async () => {
  const stateFile = Deno.env.get("SQSRUN_TEST_STATE")!;
  const state = await readState(stateFile);
  assert(state, `no state file at ${stateFile}`);
  const printed = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", "scripts/local_aws.ts", "env", stateFile],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(printed.stdout);
  assert.equal(printed.code, 0, new TextDecoder().decode(printed.stderr));
  assert.deepEqual(text.trimEnd().split("\n"), envLines(state));
  for (const name of [...TEST_ENV_NAMES, ...Object.keys(operatorEnv(state))]) {
    assert.match(text, new RegExp(`^export ${name}='[^']+'$`, "m"), name);
  }
  assert.equal(operatorEnv(state).AWS_ENDPOINT_URL, motoEndpoint());

  // Evaluated by a shell with nothing else of AWS set, the exports reach moto.
  const queue = uniqueName("operator-env");
  const empty = emptyAwsConfigPath(stateFile);
  const script = [
    'eval "$EXPORTS"',
    `"$DENO" run -A --quiet src/main.ts --create -q ${queue} >/dev/null`,
    `"$DENO" run -A --quiet src/main.ts --list -q ${queue}`,
    `"$AWS_CLI" --endpoint-url "$AWS_ENDPOINT_URL" sqs get-queue-url --queue-name ${queue} --output text`,
    `"$DENO" run -A --quiet src/main.ts --delete -q ${queue} >/dev/null`,
  ].join(" && ");
  const denoDir = Deno.env.get("DENO_DIR");
  const run = await new Deno.Command("sh", {
    args: ["-c", script],
    clearEnv: true,
    env: {
      PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
      HOME: Deno.env.get("HOME") ?? "/tmp",
      ...(denoDir ? { DENO_DIR: denoDir } : {}),
      AWS_CONFIG_FILE: empty,
      AWS_SHARED_CREDENTIALS_FILE: empty,
      EXPORTS: text,
      DENO: Deno.execPath(),
      AWS_CLI: state.awsCli,
      NO_COLOR: "1",
    },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const out = new TextDecoder().decode(run.stdout);
  assert.equal(run.code, 0, out + new TextDecoder().decode(run.stderr));
  const lines = out.trimEnd().split("\n");
  assert.equal(lines[0], queue);
  assert(lines[1].endsWith(`/${queue}`), lines[1]);
});

Deno.test("the operator's AWS_* exports never reach the tests: scripts/test.ts drops them", () => {
  const state = {
    moto: { pid: 1, url: "http://127.0.0.1:1", port: 1, log: "" },
    elasticmq: { pid: 2, url: "http://127.0.0.1:2", port: 2, log: "" },
    awsCli: "/venv/bin/aws",
    stateFile: Deno.env.get("SQSRUN_TEST_STATE")!,
  };
  const env = childEnv({ ...operatorEnv(state), KEEP: "1" }, testEnv(state));
  assert.equal(env.KEEP, "1");
  for (const name of Object.keys(operatorEnv(state))) assert.equal(env[name], undefined, name);
  assert.equal(env.SQSRUN_TEST_MOTO_URL, "http://127.0.0.1:1");
});
