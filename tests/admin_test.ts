/**
 * Black-box tests of the admin commands (`--list`, `--create`, `--delete`, `--attr`,
 * `--push`, `--peek`, `--purge`) against both emulators, with the AWS CLI as the independent check of
 * what sqsrun did.
 */
import { deepStrictEqual, equal, match, ok, throws } from "node:assert/strict";
import { join } from "node:path";
import { decodeBody, queueName } from "../src/admin.ts";
import { regionFromEndpoint, resolveRegion } from "../src/aws.ts";
import { UsageError } from "../src/errors.ts";
import { assertOneLineError, type CliResult, lines, runAwsCli, runCli } from "./support/cli.ts";
import {
  awsCliPath,
  awsEnv,
  type SqsBackend,
  sqsBackends,
  uniqueName,
} from "./support/local_aws.ts";

const LIMIT_MS = 30_000;

/** Runs sqsrun and the AWS CLI against one backend. */
function clients(backend: SqsBackend) {
  const env = awsEnv(backend.endpoint);
  const sqsrun = (args: string[], stdin?: string | Uint8Array, extraEnv = {}) =>
    runCli(args, { env: { ...env, ...extraEnv }, stdin, timeoutMs: LIMIT_MS });
  const aws = async (args: string[]): Promise<Record<string, unknown>> => {
    const result = await runAwsCli(
      awsCliPath(),
      ["--endpoint-url", backend.endpoint, "sqs", ...args],
      { env, timeoutMs: 60_000 },
    );
    equal(result.code, 0, `aws sqs ${args.join(" ")}: ${result.stderr}`);
    return result.stdout.trim() === "" ? {} : JSON.parse(result.stdout);
  };
  return { env, sqsrun, aws };
}

/** Asserts success with exactly these stdout lines and nothing on stderr. */
function assertOk(result: CliResult, context: string): string[] {
  equal(result.timedOut, false, `${context}: timed out`);
  equal(result.code, 0, `${context}: exit ${result.code}, stderr ${result.stderr}`);
  equal(result.stderr, "", `${context}: stderr`);
  return lines(result.stdout);
}

async function queueAttributes(
  aws: (args: string[]) => Promise<Record<string, unknown>>,
  url: string,
): Promise<Record<string, string>> {
  const out = await aws(["get-queue-attributes", "--queue-url", url, "--attribute-names", "All"]);
  return out.Attributes as Record<string, string>;
}

interface ReceivedMessage {
  MessageId: string;
  Body: string;
  Attributes?: Record<string, string>;
  MessageAttributes?: Record<string, { DataType: string; StringValue: string }>;
}

async function receiveOne(
  aws: (args: string[]) => Promise<Record<string, unknown>>,
  url: string,
): Promise<ReceivedMessage> {
  const out = await aws([
    "receive-message",
    "--queue-url",
    url,
    "--wait-time-seconds",
    "5",
    "--max-number-of-messages",
    "1",
    "--attribute-names",
    "All",
    "--message-attribute-names",
    "All",
  ]);
  const messages = (out.Messages ?? []) as ReceivedMessage[];
  equal(messages.length, 1, `one message in ${url}`);
  return messages[0];
}

for (const backend of sqsBackends()) {
  const { name } = backend;

  Deno.test({
    name: `create, list, delete a standard queue (${name})`,
    sanitizeResources: true,
    fn: async () => {
      const { sqsrun } = clients(backend);
      const queue = uniqueName("admin-std");
      const [url] = assertOk(await sqsrun(["--create", "-q", queue]), "create");
      ok(url.startsWith("http://") && url.endsWith(`/${queue}`), url);
      try {
        deepStrictEqual(assertOk(await sqsrun(["--list", "-q", queue]), "list prefix"), [queue]);
        ok(assertOk(await sqsrun(["--list"]), "list all").includes(queue));
        const json = JSON.parse(
          assertOk(await sqsrun(["--list", "-q", queue, "--json"]), "list json").join("\n"),
        );
        deepStrictEqual(json, { queues: [{ name: queue, url }] });
        // Creating it again with the same attributes is not an error and gives the same URL.
        deepStrictEqual(assertOk(await sqsrun(["--create", "-q", queue]), "create again"), [url]);
      } finally {
        deepStrictEqual(assertOk(await sqsrun(["--delete", "-q", queue]), "delete"), [url]);
      }
      deepStrictEqual(assertOk(await sqsrun(["--list", "-q", queue]), "list after delete"), []);
    },
  });

  Deno.test(`create a FIFO queue with attributes and --json (${name})`, async () => {
    const { sqsrun, aws } = clients(backend);
    const queue = `${uniqueName("admin-fifo")}.fifo`;
    const result = await sqsrun([
      "--create",
      "-q",
      queue,
      "--attr",
      "ContentBasedDeduplication=true",
      "--attr",
      "VisibilityTimeout=45",
      "--json",
    ]);
    const out = JSON.parse(assertOk(result, "create fifo").join("\n"));
    try {
      deepStrictEqual(Object.keys(out).sort(), ["name", "url"]);
      equal(out.name, queue);
      ok(out.url.endsWith(`/${queue}`), out.url);
      const attributes = await queueAttributes(aws, out.url);
      equal(attributes.FifoQueue, "true");
      equal(attributes.ContentBasedDeduplication, "true");
      equal(attributes.VisibilityTimeout, "45");
    } finally {
      await sqsrun(["--delete", "-q", queue]);
    }
  });

  Deno.test(`--create with -t sets the visibility timeout (${name})`, async () => {
    const { sqsrun, aws } = clients(backend);
    const queue = uniqueName("admin-timeout");
    const [url] = assertOk(await sqsrun(["--create", "-q", queue, "-t", "77"]), "create");
    try {
      equal((await queueAttributes(aws, url)).VisibilityTimeout, "77");
      // The same name with other attributes is refused, in one line.
      assertOneLineError(await sqsrun(["--create", "-q", queue, "-t", "78"]), 1, [
        `queue '${queue}'`,
        "already exists",
      ]);
    } finally {
      await sqsrun(["--delete", "-q", queue]);
    }
  });

  Deno.test(`--attr sets attributes of an existing queue (${name})`, async () => {
    const { sqsrun, aws } = clients(backend);
    const queue = uniqueName("admin-attr");
    const [url] = assertOk(await sqsrun(["--create", "-q", queue]), "create");
    try {
      const set = await sqsrun([
        "-q",
        queue,
        "--attr",
        "ReceiveMessageWaitTimeSeconds=3",
        "--attr",
        "DelaySeconds=2",
      ]);
      deepStrictEqual(assertOk(set, "attr"), [url]);
      let attributes = await queueAttributes(aws, url);
      equal(attributes.ReceiveMessageWaitTimeSeconds, "3");
      equal(attributes.DelaySeconds, "2");

      const json = await sqsrun(["-q", url, "--attr", "DelaySeconds=0", "--json"]);
      deepStrictEqual(JSON.parse(assertOk(json, "attr json").join("\n")), {
        name: queue,
        url,
        attributes: { DelaySeconds: "0" },
      });
      attributes = await queueAttributes(aws, url);
      equal(attributes.DelaySeconds, "0");
    } finally {
      await sqsrun(["--delete", "-q", queue]);
    }
  });

  Deno.test(`--push a message with attributes, read back by the AWS CLI (${name})`, async () => {
    const { sqsrun, aws } = clients(backend);
    const queue = uniqueName("admin-push");
    const [url] = assertOk(await sqsrun(["--create", "-q", queue]), "create");
    try {
      const body = '{"a":"b","n":1}';
      const pushed = await sqsrun([
        "-q",
        queue,
        "--push",
        body,
        "--message-attr",
        "kind=test",
        "--message-attr",
        "trace-id=abc=def",
        "--json",
      ]);
      const out = JSON.parse(assertOk(pushed, "push").join("\n"));
      deepStrictEqual(Object.keys(out).sort(), ["message_id", "url"]);
      equal(out.url, url);
      match(out.message_id, /^[0-9a-f-]{36}$/);
      const message = await receiveOne(aws, url);
      equal(message.MessageId, out.message_id);
      equal(message.Body, body);
      deepStrictEqual(message.MessageAttributes, {
        kind: { DataType: "String", StringValue: "test" },
        "trace-id": { DataType: "String", StringValue: "abc=def" },
      });
      // The text form prints the message id alone.
      const [id] = assertOk(await sqsrun(["-q", queue, "--push", "second"]), "push text");
      match(id, /^[0-9a-f-]{36}$/);
    } finally {
      await sqsrun(["--delete", "-q", queue]);
    }
  });

  Deno.test(`--push up to 1 MiB: a queue whose limit is lower says so in one line (${name})`, async () => {
    const { sqsrun, aws } = clients(backend);
    // moto honours a queue's own MaximumMessageSize; ElasticMQ (sqs-limits = strict)
    // ignores it and refuses anything above 256 KiB.
    const [attrs, size] = backend.name === "moto"
      ? [["--attr", "MaximumMessageSize=1024"], 2_000]
      : [[], 300_000];
    const small = uniqueName("admin-small");
    const [smallUrl] = assertOk(await sqsrun(["--create", "-q", small, ...attrs]), "create");
    try {
      const body = new Uint8Array(size).fill(0x62);
      assertOneLineError(await sqsrun(["-q", small, "--push", "-"], body), 1, [
        `${size} bytes`,
        "MaximumMessageSize",
      ]);
    } finally {
      await sqsrun(["--delete", "-q", smallUrl]);
    }
    // The 1 MiB path on moto, which behaves as SQS does.
    if (backend.name !== "moto") return;
    const large = uniqueName("admin-1mib");
    const [largeUrl] = assertOk(
      await sqsrun(["--create", "-q", large, "--attr", "MaximumMessageSize=1048576"]),
      "create a 1 MiB queue",
    );
    try {
      const mib = "m".repeat(1024 * 1024);
      const [id] = assertOk(await sqsrun(["-q", large, "--push", "-"], mib), "push 1 MiB");
      const message = await receiveOne(aws, largeUrl);
      equal(message.MessageId, id);
      equal(message.Body, mib);
    } finally {
      await sqsrun(["--delete", "-q", largeUrl]);
    }
  });

  Deno.test(`--push - sends stdin unchanged, and refuses what SQS cannot take (${name})`, async () => {
    const { sqsrun, aws } = clients(backend);
    const queue = uniqueName("admin-stdin");
    const [url] = assertOk(await sqsrun(["--create", "-q", queue]), "create");
    try {
      const body = "line one\r\n\ttabbed — ünïcødé 🚀\n\n  trailing spaces  \n\n";
      const [id] = assertOk(await sqsrun(["-q", queue, "--push", "-"], body), "push stdin");
      const message = await receiveOne(aws, url);
      equal(message.MessageId, id);
      equal(message.Body, body);

      // 256 KiB passes anywhere; more than SQS's 1 MiB is a usage error before any call.
      const classic = new Uint8Array(256 * 1024).fill(0x61);
      assertOk(await sqsrun(["-q", queue, "--push", "-"], classic), "push 256 KiB");
      const tooLarge = new Uint8Array(1024 * 1024 + 1).fill(0x61);
      assertOneLineError(await sqsrun(["-q", queue, "--push", "-"], tooLarge), 2, [
        "stdin",
        "1048576 bytes",
      ]);
      assertOneLineError(
        await sqsrun(["-q", queue, "--push", "-"], new Uint8Array([0x61, 0xff, 0xfe])),
        2,
        ["stdin", "UTF-8"],
      );
      assertOneLineError(
        await sqsrun(["-q", queue, "--push", "-"], new Uint8Array([0x61, 0x00, 0x62])),
        2,
        ["stdin", "U+0000"],
      );
      assertOneLineError(await sqsrun(["-q", queue, "--push", "-"], ""), 2, ["stdin", "empty"]);
    } finally {
      await sqsrun(["--delete", "-q", queue]);
    }
  });

  Deno.test(`--push to a FIFO queue with group and deduplication ids (${name})`, async () => {
    const { sqsrun, aws } = clients(backend);
    const queue = `${uniqueName("admin-pushfifo")}.fifo`;
    const [url] = assertOk(await sqsrun(["--create", "-q", queue]), "create");
    try {
      assertOneLineError(await sqsrun(["-q", queue, "--push", "x"]), 2, ["--group-id", queue]);
      const pushed = await sqsrun([
        "-q",
        queue,
        "--push",
        "fifo body",
        "--group-id",
        "group-1",
        "--dedup-id",
        "dedup-1",
        "--json",
      ]);
      const out = JSON.parse(assertOk(pushed, "push fifo").join("\n"));
      deepStrictEqual(Object.keys(out).sort(), ["message_id", "sequence_number", "url"]);
      match(out.sequence_number, /^[0-9]+$/);
      const message = await receiveOne(aws, url);
      equal(message.MessageId, out.message_id);
      equal(message.Body, "fifo body");
      equal(message.Attributes?.MessageGroupId, "group-1");
      equal(message.Attributes?.MessageDeduplicationId, "dedup-1");
    } finally {
      await sqsrun(["--delete", "-q", queue]);
    }
  });

  Deno.test(`a queue URL works wherever a name does (${name})`, async () => {
    const { sqsrun, aws } = clients(backend);
    const queue = uniqueName("admin-url");
    const [url] = assertOk(await sqsrun(["--create", "-q", queue]), "create");
    try {
      deepStrictEqual(assertOk(await sqsrun(["--list", "-q", url]), "list by url"), [queue]);
      deepStrictEqual(
        assertOk(await sqsrun(["-q", url, "--attr", "DelaySeconds=1"]), "attr by url"),
        [url],
      );
      equal((await queueAttributes(aws, url)).DelaySeconds, "1");
      assertOk(await sqsrun(["-q", url, "--push", "by url"]), "push by url");
    } finally {
      deepStrictEqual(assertOk(await sqsrun(["--delete", "-q", url]), "delete by url"), [url]);
    }
    deepStrictEqual(assertOk(await sqsrun(["--list", "-q", queue]), "gone"), []);
  });

  Deno.test(`--list --counts shows visible, in-flight and delayed messages (${name})`, async () => {
    const { sqsrun, aws } = clients(backend);
    const queue = uniqueName("admin-counts");
    const [url] = assertOk(await sqsrun(["--create", "-q", queue]), "create");
    try {
      deepStrictEqual(assertOk(await sqsrun(["--list", "--counts", "-q", queue]), "empty"), [
        `${queue}\t0\t0\t0`,
      ]);
      for (const body of ["one", "two", "three"]) {
        assertOk(await sqsrun(["-q", queue, "--push", body]), `push ${body}`);
      }
      await aws([
        "receive-message",
        "--queue-url",
        url,
        "--visibility-timeout",
        "300",
        "--max-number-of-messages",
        "1",
        "--wait-time-seconds",
        "5",
      ]);
      await aws([
        "send-message",
        "--queue-url",
        url,
        "--message-body",
        "later",
        "--delay-seconds",
        "600",
      ]);
      deepStrictEqual(assertOk(await sqsrun(["--list", "--counts", "-q", queue]), "counts"), [
        `${queue}\t2\t1\t1`,
      ]);
      const json = await sqsrun(["--list", "--counts", "-q", queue, "--json"]);
      deepStrictEqual(JSON.parse(assertOk(json, "counts json").join("\n")), {
        queues: [{ name: queue, url, visible: 2, in_flight: 1, delayed: 1 }],
      });
    } finally {
      await sqsrun(["--delete", "-q", queue]);
    }
  });

  Deno.test(`a queue that does not exist is one line, exit 1 (${name})`, async () => {
    const { sqsrun } = clients(backend);
    const queue = uniqueName("admin-missing");
    for (
      const args of [
        ["-q", queue, "--push", "x"],
        ["-q", queue, "--delete"],
        ["-q", queue, "--attr", "DelaySeconds=1"],
      ]
    ) {
      assertOneLineError(await sqsrun(args), 1, [`queue '${queue}'`, "does not exist"]);
    }
    const [url] = assertOk(await sqsrun(["--create", "-q", queue]), "create");
    assertOk(await sqsrun(["--delete", "-q", queue]), "delete");
    assertOneLineError(await sqsrun(["-q", url, "--push", "x"]), 1, [`queue '${queue}'`]);
  });

  Deno.test(`--endpoint-url overrides the environment (${name})`, async () => {
    const { sqsrun } = clients(backend);
    const queue = uniqueName("admin-endpoint");
    const wrong = { AWS_ENDPOINT_URL: "http://127.0.0.1:1" };
    assertOneLineError(await sqsrun(["--list", "-q", queue], undefined, wrong), 1, [
      "cannot reach the SQS endpoint",
    ]);
    const flag = ["--endpoint-url", backend.endpoint];
    const [url] = assertOk(await sqsrun([...flag, "--create", "-q", queue], undefined, wrong), "c");
    ok(url.endsWith(`/${queue}`));
    assertOk(await sqsrun([...flag, "--delete", "-q", queue], undefined, wrong), "delete");
  });

  // --peek and --purge. Both emulators implement PurgeQueue; neither enforces SQS's one
  // purge per 60 s.
  Deno.test(`--peek shows bodies and attributes and leaves the messages (${name})`, async () => {
    const { sqsrun, aws } = clients(backend);
    const queue = uniqueName("peek");
    const [url] = assertOk(await sqsrun(["--create", "-q", queue]), "create");
    try {
      deepStrictEqual(assertOk(await sqsrun(["--peek", "-q", queue]), "empty"), [], "nothing");
      assertOk(
        await sqsrun(["-q", queue, "--push", "first\nsecond line", "--message-attr", "kind=a"]),
        "push",
      );
      await aws([
        "send-message",
        "--queue-url",
        url,
        "--message-body",
        "carriage\rreturn",
        "--message-attributes",
        '{"n":{"DataType":"Number","StringValue":"42"},"raw":{"DataType":"Binary","BinaryValue":"hi"}}',
      ]);

      const text = assertOk(await sqsrun(["--peek", "-q", queue]), "peek");
      const headers = text.filter((line) => line.startsWith("== message "));
      equal(headers.length, 2, text.join("\n"));
      ok(headers.every((line) => /received \d+ times {2}sent \d{4}-\d\d-\d\dT/.test(line)));
      ok(text.includes("   attribute kind (String): a"), text.join("\n"));
      ok(text.includes("   attribute n (Number): 42"), text.join("\n"));
      // AWS CLI v1 sends a blob argument as its bytes: "hi", shown in base64.
      ok(text.includes("   attribute raw (Binary): aGk="), text.join("\n"));
      ok(text.includes("first") && text.includes("second line"), "the body as it is");
      ok(text.includes("carriage\\x0dreturn"), "a carriage return is escaped");

      const json = assertOk(await sqsrun(["--peek", "-q", url, "--json"]), "peek json");
      equal(json.length, 1, "one JSON object");
      const out = JSON.parse(json[0]);
      deepStrictEqual(Object.keys(out).sort(), ["messages", "name", "url"]);
      equal(out.name, queue);
      equal(out.messages.length, 2);
      const bodies = out.messages.map((m: { body: string }) => m.body).sort();
      deepStrictEqual(bodies, ["carriage\rreturn", "first\nsecond line"]);
      const binary = out.messages.find((m: { body: string }) => m.body.startsWith("carriage"));
      deepStrictEqual(binary.message_attributes, {
        n: { type: "Number", value: "42" },
        raw: { type: "Binary", value: "aGk=" },
      });
      ok(Number(binary.attributes.ApproximateReceiveCount) >= 2, "a peek is a receive");

      equal(
        assertOk(await sqsrun(["--peek", "-q", queue, "-n", "1"]), "-n 1")[0].slice(0, 11),
        "== message ",
      );
      const one = JSON.parse(
        assertOk(await sqsrun(["--peek", "-q", queue, "-n", "1", "--json"]), "-n 1 json")[0],
      );
      equal(one.messages.length, 1);

      // Nothing was deleted, and the messages are visible at once to anyone else.
      equal((await queueAttributes(aws, url)).ApproximateNumberOfMessages, "2");
      const received = await aws([
        "receive-message",
        "--queue-url",
        url,
        "--max-number-of-messages",
        "10",
        "--wait-time-seconds",
        "2",
        "--attribute-names",
        "All",
      ]);
      const messages = received.Messages as { Attributes: Record<string, string> }[];
      equal(messages.length, 2);
      ok(messages.every((m) => Number(m.Attributes.ApproximateReceiveCount) >= 4));
    } finally {
      await sqsrun(["--delete", "-q", queue]);
    }
  });

  Deno.test(`--peek counts toward maxReceiveCount, as --help says (${name})`, async () => {
    const { sqsrun, aws } = clients(backend);
    const dlq = uniqueName("peek-dlq");
    const queue = uniqueName("peek-src");
    const [dlqUrl] = assertOk(await sqsrun(["--create", "-q", dlq]), "create dlq");
    const arn = (await queueAttributes(aws, dlqUrl)).QueueArn;
    const policy = JSON.stringify({ deadLetterTargetArn: arn, maxReceiveCount: "1" });
    const [url] = assertOk(
      await sqsrun(["--create", "-q", queue, "--attr", `RedrivePolicy=${policy}`]),
      "create",
    );
    try {
      assertOk(await sqsrun(["-q", queue, "--push", "fragile"]), "push");
      for (let i = 0; i < 3; i++) assertOk(await sqsrun(["--peek", "-q", queue]), `peek ${i}`);
      // The second receive went past maxReceiveCount 1: the message is in the DLQ.
      equal((await queueAttributes(aws, url)).ApproximateNumberOfMessages, "0");
      equal((await queueAttributes(aws, dlqUrl)).ApproximateNumberOfMessages, "1");
    } finally {
      await sqsrun(["--delete", "-q", queue]);
      await sqsrun(["--delete", "-q", dlq]);
    }
  });

  Deno.test(`--purge empties a queue (${name})`, async () => {
    const { sqsrun, aws } = clients(backend);
    const queue = uniqueName("purge");
    const [url] = assertOk(await sqsrun(["--create", "-q", queue]), "create");
    try {
      for (let i = 0; i < 5; i++) assertOk(await sqsrun(["-q", queue, "--push", `m${i}`]), "push");
      equal((await queueAttributes(aws, url)).ApproximateNumberOfMessages, "5");
      deepStrictEqual(assertOk(await sqsrun(["--purge", "-q", queue]), "purge"), [url]);
      const after = await queueAttributes(aws, url);
      equal(after.ApproximateNumberOfMessages, "0");
      equal(after.ApproximateNumberOfMessagesNotVisible, "0");
      const json = assertOk(await sqsrun(["--purge", "-q", url, "--json"]), "purge json");
      deepStrictEqual(JSON.parse(json[0]), { name: queue, url, purged: true });
    } finally {
      await sqsrun(["--delete", "-q", queue]);
    }
    for (const command of ["--purge", "--peek", "--redrive-status"]) {
      assertOneLineError(await sqsrun([command, "-q", queue]), 1, [
        `queue '${queue}'`,
        "does not exist",
      ], command);
    }
  });

  Deno.test(`no credentials at all is one line, exit 1 (${name})`, async () => {
    // Both emulators accept any key, so "bad credentials" cannot be provoked; a
    // machine with no credentials anywhere can.
    const home = await Deno.makeTempDir({ prefix: "sqsrun_admin_home_" });
    try {
      const empty = join(home, "empty");
      await Deno.writeTextFile(empty, "");
      const result = await runCli(["--endpoint-url", backend.endpoint, "--list"], {
        env: {
          HOME: home,
          AWS_EC2_METADATA_DISABLED: "true",
          AWS_CONFIG_FILE: empty,
          AWS_SHARED_CREDENTIALS_FILE: empty,
        },
        timeoutMs: LIMIT_MS,
      });
      assertOneLineError(result, 1, ["no AWS credentials"]);
      ok(result.durationMs < 20_000, `took ${result.durationMs} ms`);
    } finally {
      await Deno.remove(home, { recursive: true });
    }
  });
}

Deno.test("an unreachable endpoint fails every admin command quickly, exit 1", async () => {
  const env = {
    AWS_ACCESS_KEY_ID: "test",
    AWS_SECRET_ACCESS_KEY: "test",
    AWS_REGION: "us-east-1",
    AWS_EC2_METADATA_DISABLED: "true",
  };
  for (
    const args of [
      ["--list"],
      ["--list", "--counts"],
      ["--create", "-q", "q"],
      ["--delete", "-q", "q"],
      ["--attr", "DelaySeconds=1", "-q", "q"],
      ["--push", "x", "-q", "q"],
      ["--peek", "-q", "q"],
      ["--purge", "-q", "q"],
      ["--redrive", "-q", "q"],
      ["--redrive", "-q", "q", "--to", "t", "--client-side"],
      ["--redrive-status", "-q", "q"],
      ["--redrive-cancel", "handle"],
    ]
  ) {
    const result = await runCli(["--endpoint-url", "http://127.0.0.1:1", ...args], {
      env,
      timeoutMs: LIMIT_MS,
    });
    assertOneLineError(result, 1, ["cannot reach the SQS endpoint"], args.join(" "));
    ok(result.durationMs < 15_000, `${args.join(" ")} took ${result.durationMs} ms`);
  }
});

Deno.test("the region comes from flags, environment, queue URL, endpoint host, in that order", () => {
  const none = () => undefined;
  const env = (values: Record<string, string>) => (name: string) => values[name];
  equal(resolveRegion({}, none), undefined, "left to the SDK and the profile");
  equal(resolveRegion({ region: "eu-west-3" }, env({ AWS_REGION: "x" })), "eu-west-3");
  equal(
    resolveRegion({}, env({ AWS_REGION: "ap-south-1", AWS_DEFAULT_REGION: "x" })),
    "ap-south-1",
  );
  equal(resolveRegion({}, env({ AWS_DEFAULT_REGION: "sa-east-1" })), "sa-east-1");
  equal(
    resolveRegion({ queue: "https://sqs.eu-north-1.amazonaws.com/123456789012/jobs" }, none),
    "eu-north-1",
  );
  equal(resolveRegion({ endpointUrl: "http://127.0.0.1:9324" }, none), "us-east-1");
  equal(resolveRegion({}, env({ AWS_ENDPOINT_URL: "http://localhost:4566" })), "us-east-1");
  const vpce = "https://vpce-0a1b2c3d-xyz.sqs.eu-central-1.vpce.amazonaws.com";
  equal(resolveRegion({ endpointUrl: vpce }, none), "eu-central-1");
  equal(regionFromEndpoint("https://sqs.us-gov-west-1.amazonaws.com"), "us-gov-west-1");
  equal(regionFromEndpoint("https://sqs.cn-north-1.amazonaws.com.cn"), "cn-north-1");
  equal(regionFromEndpoint("http://127.0.0.1:9324"), undefined);
  // An AWS host without a region must not be signed for the emulator default.
  equal(resolveRegion({ endpointUrl: "https://sqs.amazonaws.com" }, none), undefined);
});

Deno.test("queue names from URLs, and message bodies SQS accepts", () => {
  equal(queueName("jobs"), "jobs");
  equal(queueName("https://sqs.eu-west-1.amazonaws.com/123456789012/jobs.fifo"), "jobs.fifo");
  equal(queueName("http://127.0.0.1:9324/000000000000/q/"), "q");
  const text = "tab\there\r\nünï ✓ 🚀\n";
  equal(decodeBody(new TextEncoder().encode(text), "stdin"), text);
  for (
    const bytes of [
      new Uint8Array(),
      new Uint8Array([0xc3]),
      new Uint8Array([0x01]),
      new Uint8Array(1024 * 1024 + 1).fill(0x20),
    ]
  ) {
    throws(() => decodeBody(bytes, "stdin"), UsageError);
  }
});
