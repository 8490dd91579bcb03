/**
 * Unit tests of what a Lambda SQS handler sees and answers: the event built from
 * SQS's answer compared with the example events of the Lambda developer guide
 * ("Using Lambda with Amazon SQS"), the reading of batchItemFailures with the
 * FIFO cut, runtime errors, and the runtime's environment.
 */
import { deepStrictEqual, equal, match, ok } from "node:assert/strict";
import type { Message } from "@aws-sdk/client-sqs";
import {
  batchResults,
  batchTraceId,
  describeRuntimeError,
  functionArn,
  functionNameFor,
  logStreamName,
  md5Hex,
  queueIdentity,
  readBatchResponse,
  runtimeEnvironment,
  sqsEvent,
} from "../../src/runners/lambda/events.ts";
import { defaultHandler } from "../../src/runners/lambda/runner.ts";
import { toJobMessage } from "../../src/worker/message.ts";

const encode = (text: string) => new TextEncoder().encode(text);

/** The standard queue example event of the Lambda developer guide, as recorded there. */
const DOCS_STANDARD_EVENT = {
  Records: [
    {
      messageId: "059f36b4-87a3-44ab-83d2-661975830a7d",
      receiptHandle: "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
      body: "Test message.",
      attributes: {
        ApproximateReceiveCount: "1",
        SentTimestamp: "1545082649183",
        SenderId: "AIDAIENQZJOLO23YVJ4VO",
        ApproximateFirstReceiveTimestamp: "1545082649185",
      },
      messageAttributes: {
        myAttribute: {
          stringValue: "myValue",
          stringListValues: [],
          binaryListValues: [],
          dataType: "String",
        },
      },
      md5OfBody: "e4e68fb7bd0e697a0ae8f1bb342846b3",
      eventSource: "aws:sqs",
      eventSourceARN: "arn:aws:sqs:us-east-2:123456789012:my-queue",
      awsRegion: "us-east-2",
    },
    {
      messageId: "2e1424d4-f796-459a-8184-9c92662be6da",
      receiptHandle: "AQEBzWwaftRI0KuVm4tP+/7q1rGgNqicHq...",
      body: "Test message.",
      attributes: {
        ApproximateReceiveCount: "1",
        SentTimestamp: "1545082650636",
        SenderId: "AIDAIENQZJOLO23YVJ4VO",
        ApproximateFirstReceiveTimestamp: "1545082650649",
      },
      messageAttributes: {},
      md5OfBody: "e4e68fb7bd0e697a0ae8f1bb342846b3",
      eventSource: "aws:sqs",
      eventSourceARN: "arn:aws:sqs:us-east-2:123456789012:my-queue",
      awsRegion: "us-east-2",
    },
  ],
};

/** The FIFO queue example event of the Lambda developer guide. */
const DOCS_FIFO_EVENT = {
  Records: [
    {
      messageId: "11d6ee51-4cc7-4302-9e22-7cd8afdaadf5",
      receiptHandle: "AQEBBX8nesZEXmkhsmZeyIE8iQAMig7qw...",
      body: "Test message.",
      attributes: {
        ApproximateReceiveCount: "1",
        SentTimestamp: "1573251510774",
        SequenceNumber: "18849496460467696128",
        MessageGroupId: "1",
        SenderId: "AIDAIO23YVJENQZJOL4VO",
        MessageDeduplicationId: "1",
        ApproximateFirstReceiveTimestamp: "1573251510774",
      },
      messageAttributes: {},
      md5OfBody: "e4e68fb7bd0e697a0ae8f1bb342846b3",
      eventSource: "aws:sqs",
      eventSourceARN: "arn:aws:sqs:us-east-2:123456789012:fifo.fifo",
      awsRegion: "us-east-2",
    },
  ],
};

/** The ReceiveMessage answer (SDK shape) that a record of an example event came from. */
function sdkMessage(record: (typeof DOCS_STANDARD_EVENT)["Records"][number]): Message {
  return {
    MessageId: record.messageId,
    ReceiptHandle: record.receiptHandle,
    Body: record.body,
    MD5OfBody: record.md5OfBody,
    Attributes: record.attributes,
    ...(Object.keys(record.messageAttributes).length > 0
      ? {
        MessageAttributes: Object.fromEntries(
          Object.entries(record.messageAttributes).map(([name, value]) => [
            name,
            { DataType: value.dataType, StringValue: value.stringValue },
          ]),
        ),
      }
      : {}),
  };
}

Deno.test("sqsEvent: SQS's answer becomes the developer guide's standard queue event", () => {
  const url = "https://sqs.us-east-2.amazonaws.com/123456789012/my-queue";
  const messages = DOCS_STANDARD_EVENT.Records.map((record) =>
    toJobMessage(sdkMessage(record), url, 0)!
  );
  const event = sqsEvent(messages, queueIdentity(url, "eu-west-1"));
  deepStrictEqual(JSON.parse(JSON.stringify(event)), DOCS_STANDARD_EVENT);
});

Deno.test("sqsEvent: a FIFO message keeps its group, deduplication id and sequence number", () => {
  const url = "https://sqs.us-east-2.amazonaws.com/123456789012/fifo.fifo";
  const [record] = DOCS_FIFO_EVENT.Records;
  const message = toJobMessage(sdkMessage(record), url, 0)!;
  deepStrictEqual(JSON.parse(JSON.stringify(sqsEvent([message], queueIdentity(url, "x")))), {
    Records: [record],
  });
});

Deno.test("sqsEvent: binary, list and custom-typed attributes in Lambda's shape; MD5s from SQS", () => {
  const url = "http://127.0.0.1:4566/000000000000/jobs";
  const message = toJobMessage(
    {
      MessageId: "m",
      ReceiptHandle: "old-handle",
      Body: "héllo",
      MD5OfMessageAttributes: "582c92c5c5b6ac403040a4f3ab3115c9",
      Attributes: { ApproximateReceiveCount: "2", AWSTraceHeader: "Root=1-5e1b4151-5ac6c58f" },
      MessageAttributes: {
        Attribute3: {
          DataType: "Binary",
          BinaryValue: encode("1100"),
          StringListValues: ["abc", "123"],
          BinaryListValues: [encode("0"), encode("1"), encode("0")],
        },
        Attribute2: { DataType: "Number.float", StringValue: "123" },
      },
    },
    url,
    0,
  )!;
  // A redelivery while in hand gave the worker a newer handle: the event carries that one.
  message.receiptHandle = "new-handle";
  const [record] = sqsEvent([message], queueIdentity(url, "eu-central-1")).Records;
  deepStrictEqual(record.messageAttributes, {
    Attribute3: {
      binaryValue: "MTEwMA==",
      stringListValues: ["abc", "123"],
      binaryListValues: ["MA==", "MQ==", "MA=="],
      dataType: "Binary",
    },
    Attribute2: {
      stringValue: "123",
      stringListValues: [],
      binaryListValues: [],
      dataType: "Number.float",
    },
  });
  equal(record.receiptHandle, "new-handle");
  equal(record.md5OfBody, md5Hex("héllo"), "computed when SQS gave none");
  equal(record.md5OfMessageAttributes, "582c92c5c5b6ac403040a4f3ab3115c9");
  equal(record.eventSourceARN, "arn:aws:sqs:eu-central-1:000000000000:jobs");
  equal(record.awsRegion, "eu-central-1");
  equal(batchTraceId([message]), "Root=1-5e1b4151-5ac6c58f");
  equal(md5Hex("Test message."), "e4e68fb7bd0e697a0ae8f1bb342846b3");
});

Deno.test("queueIdentity: region, account and partition from the queue URL", () => {
  deepStrictEqual(queueIdentity("https://sqs.us-west-2.amazonaws.com/123456789012/q", "x"), {
    arn: "arn:aws:sqs:us-west-2:123456789012:q",
    region: "us-west-2",
    account: "123456789012",
    partition: "aws",
  });
  equal(
    queueIdentity("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q", "x").arn,
    "arn:aws-cn:sqs:cn-north-1:123456789012:q",
  );
  equal(queueIdentity("http://localhost:9324/queue/q", "r").arn, "arn:aws:sqs:r:000000000000:q");
  const identity = queueIdentity("http://127.0.0.1:5000/123456789012/orders.fifo", "eu-west-1");
  equal(
    functionArn("orders-fifo", "eu-west-1", identity),
    "arn:aws:lambda:eu-west-1:123456789012:function:orders-fifo",
  );
});

const batch = (ids: string[], group?: string) => ids.map((id) => ({ id, fifoGroup: group }));
const outcome = (payload: string, entries = batch(["a", "b", "c"])) =>
  batchResults(encode(payload), entries).map((result) => result.succeeded);

Deno.test("batchResults: Lambda's complete successes", () => {
  for (
    const payload of [
      "",
      "  ",
      "null",
      "{}",
      '{"batchItemFailures": []}',
      '{"batchItemFailures": null}',
      '{"statusCode": 200}',
    ]
  ) {
    deepStrictEqual(outcome(payload), [true, true, true], payload);
  }
});

Deno.test("batchResults: batchItemFailures fail exactly the messages named", () => {
  deepStrictEqual(
    outcome('{"batchItemFailures": [{"itemIdentifier": "c"}, {"itemIdentifier": "a"}]}'),
    [false, true, false],
  );
  const [first] = batchResults(
    encode('{"batchItemFailures":[{"itemIdentifier":"a"}]}'),
    batch(["a"]),
  );
  match(first.error!, /batchItemFailures/);
});

Deno.test("batchResults: Lambda's complete failures, each with its reason", () => {
  const cases: [string, RegExp][] = [
    ["not json", /not JSON/],
    ['"ok"', /not a JSON object/],
    ["[1]", /not a JSON object/],
    ['{"batchItemFailures": {"itemIdentifier": "a"}}', /not a list/],
    ['{"batchItemFailures": [{"itemIdentifier": ""}]}', /no itemIdentifier/],
    ['{"batchItemFailures": [{"itemIdentifier": null}]}', /no itemIdentifier/],
    ['{"batchItemFailures": [{"itemId": "a"}]}', /no itemIdentifier/],
    ['{"batchItemFailures": ["a"]}', /no itemIdentifier/],
    ['{"batchItemFailures": [{"itemIdentifier": "zz"}]}', /"zz", which is not in the batch/],
  ];
  for (const [payload, reason] of cases) {
    const results = batchResults(encode(payload), batch(["a", "b"]));
    deepStrictEqual(results.map((result) => result.succeeded), [false, false], payload);
    match(results[0].error!, reason, payload);
  }
  const invalidUtf8 = batchResults(new Uint8Array([0xff, 0xfe]), batch(["a"]));
  match(invalidUtf8[0].error!, /UTF-8/);
});

Deno.test("batchResults: on a FIFO queue a failure fails every later message of its group", () => {
  const entries = [
    { id: "a1", fifoGroup: "A" },
    { id: "b1", fifoGroup: "B" },
    { id: "a2", fifoGroup: "A" },
    { id: "a3", fifoGroup: "A" },
    { id: "b2", fifoGroup: "B" },
  ];
  const results = batchResults(encode('{"batchItemFailures":[{"itemIdentifier":"a2"}]}'), entries);
  deepStrictEqual(results.map((result) => result.succeeded), [true, true, false, false, true]);
  match(results[3].error!, /earlier message of its FIFO group/);
  // A standard queue's group id (a fair queue's tenant) orders nothing: no cut.
  deepStrictEqual(
    outcome('{"batchItemFailures":[{"itemIdentifier":"a"}]}', batch(["a", "b", "c"])),
    [false, true, true],
  );
});

Deno.test("readBatchResponse: the failed ids", () => {
  const verdict = readBatchResponse(
    encode('{"batchItemFailures":[{"itemIdentifier":"x"}]}'),
    new Set(["x", "y"]),
  );
  ok(verdict.ok);
  deepStrictEqual([...verdict.failed], ["x"]);
});

Deno.test("describeRuntimeError: Lambda's error JSON, the type header, raw text", () => {
  equal(
    describeRuntimeError(
      encode(
        '{"errorMessage": "division by zero", "errorType": "ZeroDivisionError", "stackTrace": []}',
      ),
      "Unhandled",
    ),
    "ZeroDivisionError: division by zero",
  );
  equal(
    describeRuntimeError(encode("it broke\n  badly"), "Runtime.Crash"),
    "Runtime.Crash: it broke badly",
  );
  equal(describeRuntimeError(encode(""), null), "no details given");
  ok(describeRuntimeError(encode("x".repeat(1000)), null).length < 260);
});

Deno.test("runtimeEnvironment: Lambda's variables, --env wins, the API address is sqsrun's", () => {
  const settings = {
    name: "jobs",
    handler: "app.handler",
    region: "eu-west-1",
    taskRoot: "/srv/app",
  };
  const env = runtimeEnvironment(settings, "127.0.0.1:4000", "2026/01/02/[$LATEST]abc", {
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE: "512",
    AWS_LAMBDA_RUNTIME_API: "elsewhere:1",
  });
  deepStrictEqual(env, {
    AWS_LAMBDA_FUNCTION_NAME: "jobs",
    AWS_LAMBDA_FUNCTION_VERSION: "$LATEST",
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE: "512",
    AWS_LAMBDA_LOG_GROUP_NAME: "/aws/lambda/jobs",
    AWS_LAMBDA_LOG_STREAM_NAME: "2026/01/02/[$LATEST]abc",
    AWS_LAMBDA_INITIALIZATION_TYPE: "on-demand",
    AWS_REGION: "eu-west-1",
    AWS_DEFAULT_REGION: "eu-west-1",
    LAMBDA_TASK_ROOT: "/srv/app",
    _HANDLER: "app.handler",
    AWS_LAMBDA_RUNTIME_API: "127.0.0.1:4000",
  });
  match(
    logStreamName(new Date("2026-03-04T05:06:07Z")),
    /^2026\/03\/04\/\[\$LATEST\][0-9a-f]{32}$/,
  );
  equal(functionNameFor("orders.fifo"), "orders-fifo");
  equal(functionNameFor(""), "sqsrun");
});

Deno.test("defaultHandler: --handler, else the last ARGV word, else the program's name", () => {
  equal(
    defaultHandler({ command: "python3", args: ["-m", "awslambdaric", "app.handler"] }),
    "app.handler",
  );
  equal(defaultHandler({ command: "python3", args: ["-m", "x"], handler: "h.f" }), "h.f");
  equal(defaultHandler({ command: "./build/bootstrap", args: [] }), "bootstrap");
  equal(defaultHandler({ command: "./bootstrap", args: ["--verbose"] }), "bootstrap");
});
