/** Unit tests of turning an SDK message into the worker's JobMessage. */
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import type { Message } from "@aws-sdk/client-sqs";
import { toJobMessage } from "../../src/worker/message.ts";

const QUEUE = "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs.fifo";

Deno.test("toJobMessage: system attributes give receiveCount, sentTimestamp and groupId", () => {
  const message: Message = {
    MessageId: "m-1",
    ReceiptHandle: "handle-1",
    Body: "hello",
    Attributes: {
      ApproximateReceiveCount: "3",
      SentTimestamp: "1700000000123",
      MessageGroupId: "orders",
    },
  };
  deepStrictEqual(toJobMessage(message, QUEUE, 42.5), {
    id: "m-1",
    receiptHandle: "handle-1",
    body: "hello",
    queueUrl: QUEUE,
    receiveCount: 3,
    sentTimestamp: 1_700_000_000_123,
    groupId: "orders",
    attributes: {},
    receiveSentAt: 42.5,
    raw: message,
  });
});

Deno.test("toJobMessage: missing or unusable system attributes fall back to safe values", () => {
  const bare = toJobMessage({ MessageId: "m", ReceiptHandle: "h", Body: "" }, QUEUE, 0);
  ok(bare, "an empty body is still a message");
  strictEqual(bare.body, "");
  strictEqual(bare.receiveCount, 1);
  strictEqual(bare.sentTimestamp, undefined);
  strictEqual(bare.groupId, undefined);
  const odd = toJobMessage(
    {
      MessageId: "m",
      ReceiptHandle: "h",
      Body: "x",
      Attributes: { ApproximateReceiveCount: "abc", SentTimestamp: "0" },
    },
    QUEUE,
    0,
  );
  strictEqual(odd?.receiveCount, 1);
  strictEqual(odd?.sentTimestamp, undefined);
});

Deno.test("toJobMessage: String, Number and Binary message attributes become strings", () => {
  const converted = toJobMessage(
    {
      MessageId: "m",
      ReceiptHandle: "h",
      Body: "b",
      MessageAttributes: {
        trace: { DataType: "String", StringValue: "abc-123" },
        count: { DataType: "Number", StringValue: "42" },
        blob: { DataType: "Binary", BinaryValue: new Uint8Array([0, 1, 2, 255]) },
        "custom.type": { DataType: "String.json", StringValue: '{"a":1}' },
        empty: { DataType: "String" },
      },
    },
    QUEUE,
    0,
  );
  deepStrictEqual(converted?.attributes, {
    trace: "abc-123",
    count: "42",
    blob: "AAEC/w==",
    "custom.type": '{"a":1}',
  });
});

Deno.test("toJobMessage: a message without id, receipt handle or body is dropped", () => {
  const full: Message = { MessageId: "m", ReceiptHandle: "h", Body: "b" };
  ok(toJobMessage(full, QUEUE, 0));
  strictEqual(toJobMessage({ ...full, MessageId: undefined }, QUEUE, 0), undefined);
  strictEqual(toJobMessage({ ...full, MessageId: "" }, QUEUE, 0), undefined);
  strictEqual(toJobMessage({ ...full, ReceiptHandle: undefined }, QUEUE, 0), undefined);
  strictEqual(toJobMessage({ ...full, Body: undefined }, QUEUE, 0), undefined);
  strictEqual(toJobMessage({}, QUEUE, 0), undefined);
});
