/**
 * sqsrun and the AWS CLI, as two independent clients of the same queue, agree on
 * queues, bodies, attributes and counts, on both emulators.
 */
import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { createHash } from "node:crypto";
import { type CliResult, lines, runAwsCli, runCli } from "./support/cli.ts";
import {
  awsCliPath,
  awsEnv,
  type SqsBackend,
  sqsBackends,
  uniqueName,
} from "./support/local_aws.ts";

const LIMIT_MS = 30_000;

function tools(backend: SqsBackend) {
  const env = awsEnv(backend.endpoint);
  const sqsrun = async (args: string[], stdin?: string): Promise<string[]> => {
    const result: CliResult = await runCli(args, { env, stdin, timeoutMs: LIMIT_MS });
    equal(result.code, 0, `sqsrun ${args.join(" ")}: ${result.stderr}`);
    equal(result.stderr, "");
    return lines(result.stdout);
  };
  const aws = async (args: string[], expectCode = 0): Promise<Record<string, unknown>> => {
    const result = await runAwsCli(
      awsCliPath(),
      ["--endpoint-url", backend.endpoint, "sqs", ...args],
      { env, timeoutMs: 60_000 },
    );
    equal(result.code, expectCode, `aws sqs ${args.join(" ")}: ${result.stderr}`);
    return expectCode === 0 && result.stdout.trim() ? JSON.parse(result.stdout) : {};
  };
  return { sqsrun, aws };
}

interface Message {
  MessageId: string;
  Body: string;
  MD5OfBody: string;
  MessageAttributes?: Record<string, { DataType: string; StringValue: string }>;
}

function md5(text: string): string {
  return createHash("md5").update(text, "utf8").digest("hex");
}

for (const backend of sqsBackends()) {
  const { name } = backend;

  Deno.test(`sqsrun --push, then aws sqs receive-message reads it (${name})`, async () => {
    const { sqsrun, aws } = tools(backend);
    const queue = uniqueName("interop-push");
    const [url] = await sqsrun(["--create", "-q", queue]);
    try {
      const argBody = '{"job":"resize","size":[640,480],"note":"naïve café ☕"}';
      const [argId] = await sqsrun([
        "-q",
        queue,
        "--push",
        argBody,
        "--message-attr",
        "origin=interop",
        "--message-attr",
        "Priority=high",
      ]);
      const stdinBody = "multi\nline\r\nbody\twith tabs\n";
      const [stdinId] = await sqsrun(["-q", queue, "--push", "-"], stdinBody);

      const received: Message[] = [];
      for (let attempt = 0; attempt < 5 && received.length < 2; attempt++) {
        const out = await aws([
          "receive-message",
          "--queue-url",
          url,
          "--max-number-of-messages",
          "10",
          "--wait-time-seconds",
          "2",
          "--message-attribute-names",
          "All",
        ]);
        received.push(...((out.Messages ?? []) as Message[]));
      }
      equal(received.length, 2);
      const byId = new Map(received.map((message) => [message.MessageId, message]));
      const fromArg = byId.get(argId)!;
      const fromStdin = byId.get(stdinId)!;
      ok(fromArg && fromStdin, "both message ids were received");
      equal(fromArg.Body, argBody);
      equal(fromArg.MD5OfBody, md5(argBody));
      deepStrictEqual(fromArg.MessageAttributes, {
        origin: { DataType: "String", StringValue: "interop" },
        Priority: { DataType: "String", StringValue: "high" },
      });
      equal(fromStdin.Body, stdinBody);
      equal(fromStdin.MD5OfBody, md5(stdinBody));
      equal(fromStdin.MessageAttributes, undefined);
    } finally {
      await sqsrun(["--delete", "-q", queue]);
    }
  });

  Deno.test(`aws sqs send-message, then sqsrun --list --counts sees it (${name})`, async () => {
    const { sqsrun, aws } = tools(backend);
    const queue = uniqueName("interop-counts");
    const created = await aws(["create-queue", "--queue-name", queue]);
    const url = created.QueueUrl as string;
    try {
      deepStrictEqual(await sqsrun(["--list", "-q", queue]), [queue]);
      await aws([
        "send-message",
        "--queue-url",
        url,
        "--message-body",
        "from the AWS CLI",
        "--message-attributes",
        '{"origin":{"DataType":"String","StringValue":"aws-cli"}}',
      ]);
      deepStrictEqual(await sqsrun(["--list", "--counts", "-q", queue]), [`${queue}\t1\t0\t0`]);
      const [json] = await sqsrun(["--list", "--counts", "--json", "-q", queue]);
      deepStrictEqual(JSON.parse(json), {
        queues: [{ name: queue, url, visible: 1, in_flight: 0, delayed: 0 }],
      });
    } finally {
      await aws(["delete-queue", "--queue-url", url]);
    }
  });

  Deno.test(`queues made by one client are seen and removed by the other (${name})`, async () => {
    const { sqsrun, aws } = tools(backend);
    const ours = `${uniqueName("interop-ours")}.fifo`;
    const [url] = await sqsrun([
      "--create",
      "-q",
      ours,
      "--attr",
      "ContentBasedDeduplication=true",
    ]);
    const found = await aws(["get-queue-url", "--queue-name", ours]);
    equal(found.QueueUrl, url);
    const attributes = await aws([
      "get-queue-attributes",
      "--queue-url",
      url,
      "--attribute-names",
      "FifoQueue",
      "ContentBasedDeduplication",
    ]);
    deepStrictEqual(attributes.Attributes, {
      FifoQueue: "true",
      ContentBasedDeduplication: "true",
    });
    await aws(["delete-queue", "--queue-url", url]);
    deepStrictEqual(await sqsrun(["--list", "-q", ours]), []);

    const theirs = uniqueName("interop-theirs");
    const created = await aws(["create-queue", "--queue-name", theirs]);
    deepStrictEqual(await sqsrun(["--delete", "-q", theirs]), [created.QueueUrl]);
    await aws(["get-queue-url", "--queue-name", theirs], 255);
  });
}
