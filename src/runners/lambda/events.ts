/**
 * What a Lambda SQS handler sees and answers, as pure functions: the invocation
 * event (`{"Records": [...]}`, exactly the shape Lambda's SQS event source
 * sends), the reading of its response (`{"batchItemFailures": [...]}`, with the
 * FIFO cut), the reading of an invocation or init error, and the environment a
 * runtime client expects.
 *
 * The event keeps what SQS said about each message (its system attributes, its
 * typed message attributes, its MD5) rather than what sqsrun made of it, so a
 * handler written against real Lambda events reads the same fields here.
 *
 * @module
 */
import type { Message, MessageAttributeValue } from "@aws-sdk/client-sqs";
import { createHash } from "node:crypto";
import { regionFromQueueUrl } from "../../aws.ts";
import type { MessageResult } from "../runner.ts";
import type { JobMessage } from "../../worker/message.ts";

/** One message attribute as Lambda writes it: lower camel case, binary values in base64. */
export interface LambdaMessageAttribute {
  stringValue?: string;
  binaryValue?: string;
  stringListValues: string[];
  binaryListValues: string[];
  dataType: string;
}

/** One record of an SQS event. */
export interface SqsEventRecord {
  messageId: string;
  receiptHandle: string;
  body: string;
  attributes: Record<string, string>;
  messageAttributes: Record<string, LambdaMessageAttribute>;
  md5OfBody: string;
  /** Present when SQS computed one (the message has attributes). */
  md5OfMessageAttributes?: string;
  eventSource: "aws:sqs";
  eventSourceARN: string;
  awsRegion: string;
}

/** The invocation event of one batch. */
export interface SqsEvent {
  Records: SqsEventRecord[];
}

/** Where a queue is, as an event names it. */
export interface QueueIdentity {
  arn: string;
  region: string;
  account: string;
  partition: string;
}

/** The account every emulator URL without one gets (Lambda's own examples use 123456789012). */
const UNKNOWN_ACCOUNT = "000000000000";

/**
 * Works out the queue's ARN from its URL (`https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`,
 * an emulator's `http://HOST:PORT/ACCOUNT/NAME`); the region of an AWS URL wins
 * over `fallbackRegion` (the one the SQS client was given).
 */
export function queueIdentity(queueUrl: string, fallbackRegion: string): QueueIdentity {
  let host = "";
  let segments: string[] = [];
  try {
    const url = new URL(queueUrl);
    host = url.hostname.toLowerCase();
    segments = url.pathname.split("/").filter((part) => part !== "").map(decodeURIComponent);
  } catch {
    segments = [queueUrl];
  }
  const name = segments.at(-1) ?? queueUrl;
  const account = segments.length >= 2 && /^\d{12}$/.test(segments.at(-2)!)
    ? segments.at(-2)!
    : UNKNOWN_ACCOUNT;
  const region = regionFromQueueUrl(queueUrl) ?? fallbackRegion;
  const partition = host.endsWith(".amazonaws.com.cn") ? "aws-cn" : "aws";
  return { arn: `arn:${partition}:sqs:${region}:${account}:${name}`, region, account, partition };
}

function base64(bytes: Uint8Array): string {
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text);
}

/** One SDK message attribute in Lambda's shape. */
export function lambdaMessageAttribute(value: MessageAttributeValue): LambdaMessageAttribute {
  const attribute: LambdaMessageAttribute = {
    stringListValues: [...(value.StringListValues ?? [])],
    binaryListValues: (value.BinaryListValues ?? []).map(base64),
    dataType: value.DataType ?? "String",
  };
  // Lambda lists the scalar value first; build the object in that order.
  const scalar: Partial<LambdaMessageAttribute> = {};
  if (value.StringValue !== undefined) scalar.stringValue = value.StringValue;
  if (value.BinaryValue !== undefined) scalar.binaryValue = base64(value.BinaryValue);
  return { ...scalar, ...attribute };
}

/** The MD5 of a body, hex, as SQS computes `MD5OfBody` (of its UTF-8 bytes). */
export function md5Hex(text: string): string {
  return createHash("md5").update(text, "utf8").digest("hex");
}

/**
 * The record of one message: what SQS answered (`message.raw`), with the receipt
 * handle the worker holds now (a redelivery while in hand replaces it). A message
 * without its SQS answer (built in a test) gets what the worker knows of it.
 */
export function sqsEventRecord(message: JobMessage, queue: QueueIdentity): SqsEventRecord {
  const raw: Message | undefined = message.raw;
  const attributes: Record<string, string> = raw?.Attributes ? { ...raw.Attributes } : {
    ApproximateReceiveCount: String(message.receiveCount),
    ...(message.sentTimestamp !== undefined
      ? { SentTimestamp: String(message.sentTimestamp) }
      : {}),
    ...(message.groupId !== undefined ? { MessageGroupId: message.groupId } : {}),
  };
  const messageAttributes: Record<string, LambdaMessageAttribute> = {};
  if (raw?.MessageAttributes) {
    for (const [name, value] of Object.entries(raw.MessageAttributes)) {
      messageAttributes[name] = lambdaMessageAttribute(value);
    }
  } else if (!raw) {
    for (const [name, value] of Object.entries(message.attributes)) {
      messageAttributes[name] = lambdaMessageAttribute({ DataType: "String", StringValue: value });
    }
  }
  return {
    messageId: message.id,
    receiptHandle: message.receiptHandle,
    body: message.body,
    attributes,
    messageAttributes,
    md5OfBody: raw?.MD5OfBody ?? md5Hex(message.body),
    ...(raw?.MD5OfMessageAttributes ? { md5OfMessageAttributes: raw.MD5OfMessageAttributes } : {}),
    eventSource: "aws:sqs",
    eventSourceARN: queue.arn,
    awsRegion: queue.region,
  };
}

/** The invocation event of a batch, oldest message first. */
export function sqsEvent(messages: readonly JobMessage[], queue: QueueIdentity): SqsEvent {
  return { Records: messages.map((message) => sqsEventRecord(message, queue)) };
}

/** The X-Ray trace header of a batch: its first message's `AWSTraceHeader`, if any. */
export function batchTraceId(messages: readonly JobMessage[]): string | undefined {
  for (const message of messages) {
    const header = message.raw?.Attributes?.AWSTraceHeader;
    if (header) return header;
  }
  return undefined;
}

/** What one message of a batch is, for reading the response. */
export interface BatchEntry {
  id: string;
  /** Its FIFO group: set only on a FIFO queue, where a failure holds back the rest of the group. */
  fifoGroup?: string;
}

/** Why a handler's response failed the whole batch, or undefined when it is one Lambda accepts. */
export type ResponseVerdict =
  | { ok: true; failed: ReadonlySet<string> }
  | { ok: false; reason: string };

const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Reads a handler's response as Lambda does with ReportBatchItemFailures on:
 * an empty body, `null`, an object without `batchItemFailures` (or with it null
 * or empty) is a complete success; `{"batchItemFailures": [{"itemIdentifier":
 * ID}, ...]}` fails exactly those messages; anything else (not JSON, not an
 * object, an entry without a string `itemIdentifier`, an id that is not in the
 * batch) fails the whole batch, so a garbled answer never deletes a message.
 */
export function readBatchResponse(payload: Uint8Array, ids: ReadonlySet<string>): ResponseVerdict {
  let text: string;
  try {
    text = decoder.decode(payload);
  } catch {
    return { ok: false, reason: "the response is not UTF-8 text" };
  }
  if (text.trim() === "") return { ok: true, failed: new Set() };
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, reason: `the response is not JSON: ${excerpt(text)}` };
  }
  if (value === null) return { ok: true, failed: new Set() };
  if (typeof value !== "object" || Array.isArray(value)) {
    return {
      ok: false,
      reason: `the response is not a JSON object ({"batchItemFailures": [...]}): ${excerpt(text)}`,
    };
  }
  const failures = (value as Record<string, unknown>).batchItemFailures;
  if (failures === undefined || failures === null) return { ok: true, failed: new Set() };
  if (!Array.isArray(failures)) {
    return { ok: false, reason: "batchItemFailures is not a list" };
  }
  const failed = new Set<string>();
  for (const entry of failures) {
    const id = typeof entry === "object" && entry !== null
      ? (entry as Record<string, unknown>).itemIdentifier
      : undefined;
    if (typeof id !== "string" || id === "") {
      return {
        ok: false,
        reason: `a batchItemFailures entry has no itemIdentifier: ${
          excerpt(JSON.stringify(entry))
        }`,
      };
    }
    if (!ids.has(id)) {
      return {
        ok: false,
        reason: `batchItemFailures names ${excerpt(id)}, which is not in the batch`,
      };
    }
    failed.add(id);
  }
  return { ok: true, failed };
}

/**
 * The result of each message of a batch (in its order) from the handler's
 * response. On a FIFO queue a failed message fails every later message of its
 * group too: they must not be deleted ahead of it, or the group's order breaks.
 */
export function batchResults(payload: Uint8Array, batch: readonly BatchEntry[]): MessageResult[] {
  const verdict = readBatchResponse(payload, new Set(batch.map((entry) => entry.id)));
  if (!verdict.ok) return batch.map(() => ({ succeeded: false, error: verdict.reason }));
  const brokenGroups = new Set<string>();
  return batch.map(({ id, fifoGroup }) => {
    if (verdict.failed.has(id)) {
      if (fifoGroup !== undefined) brokenGroups.add(fifoGroup);
      return { succeeded: false, error: "the handler reported it in batchItemFailures" };
    }
    if (fifoGroup !== undefined && brokenGroups.has(fifoGroup)) {
      return { succeeded: false, error: "an earlier message of its FIFO group failed" };
    }
    return { succeeded: true };
  });
}

/**
 * Describes an error a runtime posted (`/invocation/{id}/error`, `/init/error`):
 * `errorType: errorMessage` from Lambda's error JSON, else the error type header
 * and the start of the body.
 */
export function describeRuntimeError(payload: Uint8Array, typeHeader?: string | null): string {
  const text = new TextDecoder().decode(payload);
  let type = typeHeader ?? undefined;
  let message: string | undefined;
  try {
    const value = JSON.parse(text);
    if (typeof value === "object" && value !== null) {
      if (typeof value.errorType === "string" && value.errorType !== "") type = value.errorType;
      if (typeof value.errorMessage === "string") message = value.errorMessage;
    }
  } catch {
    // Not Lambda's error JSON: the raw text says what there is.
  }
  message ??= text.trim();
  const line = oneLine(message);
  if (type && line) return `${type}: ${line}`;
  return type ?? (line || "no details given");
}

/** At most this many characters of a runtime's text go into an error line. */
const EXCERPT_CHARS = 200;

function oneLine(text: string): string {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length > EXCERPT_CHARS ? `${flat.slice(0, EXCERPT_CHARS)}...` : flat;
}

function excerpt(text: string): string {
  return JSON.stringify(oneLine(text));
}

/** What a runtime's environment says about its function. */
export interface FunctionSettings {
  /** AWS_LAMBDA_FUNCTION_NAME. */
  name: string;
  /** _HANDLER; unset when undefined. */
  handler?: string;
  /** AWS_REGION. */
  region: string;
  /** LAMBDA_TASK_ROOT: where the code is (sqsrun's working directory). */
  taskRoot: string;
}

/** Lambda's default memory size, in MB: reported, never enforced. */
export const DEFAULT_MEMORY_MB = 128;

/**
 * The ARN of the function, as `Lambda-Runtime-Invoked-Function-Arn` gives it: in
 * the account and partition of its queue.
 */
export function functionArn(name: string, region: string, queue: QueueIdentity): string {
  return `arn:${queue.partition}:lambda:${region}:${queue.account}:function:${name}`;
}

/**
 * Turns a queue name into a function name Lambda would accept (letters, digits,
 * `-` and `_`, at most 64): `orders.fifo` becomes `orders-fifo`.
 */
export function functionNameFor(queueName: string): string {
  const name = queueName.replace(/[^A-Za-z0-9_-]/g, "-").slice(0, 64);
  return name === "" ? "sqsrun" : name;
}

/**
 * The log stream name of one runtime, in Lambda's form
 * `YYYY/MM/DD/[$LATEST]<32 hex digits>`: one per runtime process.
 */
export function logStreamName(now: Date, version = "$LATEST"): string {
  const day = now.toISOString().slice(0, 10).replaceAll("-", "/");
  const hex = crypto.randomUUID().replaceAll("-", "");
  return `${day}/[${version}]${hex}`;
}

/**
 * The variables a runtime client reads, with Lambda's defaults where sqsrun has
 * nothing better; `overrides` (`--env`) win over every one of them, and the
 * Runtime API's address (`AWS_LAMBDA_RUNTIME_API`) is set last: it is sqsrun's.
 */
export function runtimeEnvironment(
  settings: FunctionSettings,
  runtimeApi: string,
  logStream: string,
  overrides: Record<string, string>,
): Record<string, string> {
  const env: Record<string, string> = {
    AWS_LAMBDA_FUNCTION_NAME: settings.name,
    AWS_LAMBDA_FUNCTION_VERSION: "$LATEST",
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE: String(DEFAULT_MEMORY_MB),
    AWS_LAMBDA_LOG_GROUP_NAME: `/aws/lambda/${settings.name}`,
    AWS_LAMBDA_LOG_STREAM_NAME: logStream,
    AWS_LAMBDA_INITIALIZATION_TYPE: "on-demand",
    AWS_REGION: settings.region,
    AWS_DEFAULT_REGION: settings.region,
    LAMBDA_TASK_ROOT: settings.taskRoot,
    ...(settings.handler !== undefined ? { _HANDLER: settings.handler } : {}),
    ...overrides,
  };
  env.AWS_LAMBDA_RUNTIME_API = runtimeApi;
  return env;
}
