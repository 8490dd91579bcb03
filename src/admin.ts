/**
 * The admin commands: `--list`, `--create`, `--delete`, `--attr`, `--push`, `--peek`,
 * `--purge`, and the redrive commands of `redrive.ts`. Each prints a short result a
 * script can use (queue names, a queue URL, a message id), or one line of JSON with
 * `--json`.
 *
 * @module
 */
import {
  CreateQueueCommand,
  DeleteQueueCommand,
  GetQueueAttributesCommand,
  ListQueuesCommand,
  type Message,
  type MessageAttributeValue,
  PurgeQueueCommand,
  QueueAttributeName,
  ReceiveMessageCommand,
  SendMessageCommand,
  SetQueueAttributesCommand,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import {
  createSqsClient,
  errorCode,
  isQueueMissing,
  queueName,
  resolveQueueUrl,
  toRuntimeError,
} from "./aws.ts";
import { MAX_BODY_BYTES, type Options } from "./config.ts";

export { queueName };
import { RuntimeError, UsageError } from "./errors.ts";
import {
  checkQueueEndpoint,
  escapeControls,
  redriveCancel,
  redriveStatus,
  runRedrive,
} from "./redrive.ts";

/** Where admin commands write their result and read a message body. */
export interface AdminIo {
  /** Writes one line of output; the newline is added. */
  print(line: string): void;
  /** Reads stdin up to `limit` bytes; returning more than `limit` means "too large". */
  readStdin(limit: number): Promise<Uint8Array>;
  /** Writes one progress line (no `sqsrun: ` prefix); default: to stderr with the prefix. */
  progress?(line: string): void;
}

/** Hooks of {@linkcode runAdmin}; by default a client is built from the options. */
export interface AdminOptions {
  client?: SQSClient;
}

/** Runs one admin command; resolves to the exit code (0) or throws a one-line error. */
export async function runAdmin(
  options: Options,
  io: AdminIo,
  hooks: AdminOptions = {},
): Promise<number> {
  // Admin calls never long-poll, so the request timeout can stay short.
  const client = hooks.client ?? createSqsClient({ ...options, wait: 0 });
  try {
    switch (options.command) {
      case "list":
        await listQueues(client, options, io);
        break;
      case "create":
        await createQueue(client, options, io);
        break;
      case "delete":
        await deleteQueue(client, options, io);
        break;
      case "attr":
        await setAttributes(client, options, io);
        break;
      case "push":
        await pushMessage(client, options, io);
        break;
      case "peek":
        await peekMessages(client, options, io);
        break;
      case "purge":
        await purgeQueue(client, options, io);
        break;
      case "redrive":
        await runRedrive(client, options, io);
        break;
      case "redrive-status":
        await redriveStatus(client, options, io);
        break;
      case "redrive-cancel":
        await redriveCancel(client, options, io);
        break;
      default:
        throw new UsageError(`--${options.command} is not an admin command`);
    }
    return 0;
  } finally {
    if (!hooks.client) client.destroy();
  }
}

function subject(queue: string): string {
  return `queue '${queueName(queue)}'`;
}

async function queueUrl(client: SQSClient, options: Options): Promise<string> {
  return await resolveQueueUrl(client, options.queue!);
}

/** Approximate message counts of one queue. */
export interface QueueCounts {
  visible: number;
  in_flight: number;
  delayed: number;
}

/** The approximate counts of a queue; undefined when it does not exist (any more). */
export async function queueCounts(
  client: SQSClient,
  url: string,
): Promise<QueueCounts | undefined> {
  try {
    const result = await client.send(
      new GetQueueAttributesCommand({
        QueueUrl: url,
        AttributeNames: [
          QueueAttributeName.ApproximateNumberOfMessages,
          QueueAttributeName.ApproximateNumberOfMessagesNotVisible,
          QueueAttributeName.ApproximateNumberOfMessagesDelayed,
        ],
      }),
    );
    const count = (name: QueueAttributeName) => Number(result.Attributes?.[name] ?? 0);
    return {
      visible: count(QueueAttributeName.ApproximateNumberOfMessages),
      in_flight: count(QueueAttributeName.ApproximateNumberOfMessagesNotVisible),
      delayed: count(QueueAttributeName.ApproximateNumberOfMessagesDelayed),
    };
  } catch (error) {
    // A queue deleted between listing and counting is simply gone from the list.
    if (isQueueMissing(error)) return undefined;
    throw toRuntimeError(error, subject(url));
  }
}

/** Runs `fn` over `items` with at most `limit` calls in flight, keeping the order. */
async function mapLimited<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>) {
  const results: R[] = new Array(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return results;
}

async function listQueues(client: SQSClient, options: Options, io: AdminIo): Promise<void> {
  const prefix = options.queue ? queueName(options.queue) : undefined;
  const urls: string[] = [];
  let token: string | undefined;
  try {
    do {
      const page = await client.send(
        new ListQueuesCommand({ QueueNamePrefix: prefix, MaxResults: 1000, NextToken: token }),
      );
      urls.push(...(page.QueueUrls ?? []));
      token = page.NextToken;
    } while (token);
  } catch (error) {
    throw toRuntimeError(error, "list queues");
  }
  const queues = urls.map((url) => ({ name: queueName(url), url }))
    .sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

  if (!options.counts) {
    if (options.json) io.print(JSON.stringify({ queues }));
    else for (const queue of queues) io.print(queue.name);
    return;
  }
  const counts = await mapLimited(queues, 8, (queue) => queueCounts(client, queue.url));
  const rows = queues.flatMap((queue, i) => counts[i] ? [{ ...queue, ...counts[i] }] : []);
  if (options.json) {
    io.print(JSON.stringify({ queues: rows }));
  } else {
    for (const row of rows) {
      io.print([row.name, row.visible, row.in_flight, row.delayed].join("\t"));
    }
  }
}

async function createQueue(client: SQSClient, options: Options, io: AdminIo): Promise<void> {
  const name = options.queue!;
  const attributes = { ...options.attrs };
  if (name.endsWith(".fifo") && attributes.FifoQueue === undefined) {
    attributes.FifoQueue = "true";
  }
  let url: string | undefined;
  try {
    const result = await client.send(
      new CreateQueueCommand({
        QueueName: name,
        Attributes: Object.keys(attributes).length > 0 ? attributes : undefined,
      }),
    );
    url = result.QueueUrl;
  } catch (error) {
    throw toRuntimeError(error, subject(name));
  }
  if (!url) throw toRuntimeError(new Error("the service returned no queue URL"), subject(name));
  io.print(options.json ? JSON.stringify({ name, url }) : url);
}

async function deleteQueue(client: SQSClient, options: Options, io: AdminIo): Promise<void> {
  const url = await queueUrl(client, options);
  try {
    await client.send(new DeleteQueueCommand({ QueueUrl: url }));
  } catch (error) {
    throw toRuntimeError(error, subject(url));
  }
  io.print(options.json ? JSON.stringify({ name: queueName(url), url, deleted: true }) : url);
}

async function setAttributes(client: SQSClient, options: Options, io: AdminIo): Promise<void> {
  const url = await queueUrl(client, options);
  try {
    await client.send(new SetQueueAttributesCommand({ QueueUrl: url, Attributes: options.attrs }));
  } catch (error) {
    throw toRuntimeError(error, subject(url));
  }
  io.print(
    options.json ? JSON.stringify({ name: queueName(url), url, attributes: options.attrs }) : url,
  );
}

/** Characters SQS accepts in a message body (XML 1.0 characters). */
const INVALID_BODY_CHAR = /[^\t\n\r\u0020-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/u;

/**
 * Checks the bytes of a message body: UTF-8 text of SQS's allowed characters, at
 * most {@linkcode MAX_BODY_BYTES}. The text is returned unchanged, newlines included.
 */
export function decodeBody(bytes: Uint8Array, source: string): string {
  if (bytes.length > MAX_BODY_BYTES) {
    throw new UsageError(`${source}: the message is larger than ${MAX_BODY_BYTES} bytes`);
  }
  if (bytes.length === 0) throw new UsageError(`${source}: the message is empty`);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new UsageError(
      `${source}: the message is not UTF-8 text; SQS bodies are text (base64-encode binary data)`,
    );
  }
  checkBodyText(text, source);
  return text;
}

function checkBodyText(text: string, source: string): void {
  const bad = INVALID_BODY_CHAR.exec(text);
  if (bad) {
    const code = bad[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0");
    throw new UsageError(
      `${source}: the message contains U+${code}, which SQS does not accept (base64-encode binary data)`,
    );
  }
}

/** True when SQS refused a message for its size (SQS, moto and ElasticMQ say it differently). */
function isMessageTooLong(error: unknown): boolean {
  const code = errorCode(error);
  if (code === "MessageTooLong" || code === "AWS.SimpleQueueService.MessageTooLong") return true;
  // ElasticMQ: InvalidAttributeValue "MessageTooLong"; moto: InvalidParameterValue.
  return (code === "InvalidParameterValue" || code === "InvalidAttributeValue") &&
    error instanceof Error &&
    /shorter than|too long|MessageTooLong|MaximumMessageSize/i.test(error.message);
}

/** The queue's `MaximumMessageSize` in bytes, if it can be read (ElasticMQ does not say). */
async function maximumMessageSize(client: SQSClient, url: string): Promise<number | undefined> {
  try {
    const result = await client.send(
      new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ["MaximumMessageSize"] }),
    );
    const size = Number(result.Attributes?.MaximumMessageSize);
    return Number.isInteger(size) && size > 0 ? size : undefined;
  } catch {
    return undefined;
  }
}

function byteLength(text: string): number {
  return new TextEncoder().encode(text).length;
}

async function pushMessage(client: SQSClient, options: Options, io: AdminIo): Promise<void> {
  const queue = options.queue!;
  if (queueName(queue).endsWith(".fifo") && !options.groupId) {
    throw new UsageError(`--push to FIFO queue '${queueName(queue)}' needs --group-id`);
  }
  let body: string;
  if (options.push === "-") {
    body = decodeBody(await io.readStdin(MAX_BODY_BYTES), "--push - (stdin)");
  } else {
    body = options.push ?? "";
    checkBodyText(body, "--push");
  }
  const url = await queueUrl(client, options);
  const attributes: Record<string, MessageAttributeValue> = {};
  for (const { name, value } of options.messageAttrs) {
    attributes[name] = { DataType: "String", StringValue: value };
  }
  let result;
  try {
    result = await client.send(
      new SendMessageCommand({
        QueueUrl: url,
        MessageBody: body,
        MessageGroupId: options.groupId,
        MessageDeduplicationId: options.dedupId,
        MessageAttributes: options.messageAttrs.length > 0 ? attributes : undefined,
      }),
    );
  } catch (error) {
    if (isMessageTooLong(error)) {
      const size = byteLength(body);
      const limit = await maximumMessageSize(client, url);
      throw new RuntimeError(
        limit !== undefined && limit >= size
          ? `${subject(url)}: the endpoint refused the message (${size} bytes) as too long, ` +
            `although the queue's MaximumMessageSize is ${limit} bytes: it enforces a lower limit`
          : `${subject(url)}: the message (${size} bytes) is larger than the queue's ` +
            `MaximumMessageSize${limit === undefined ? "" : ` (${limit} bytes)`}; raise it ` +
            `with --attr MaximumMessageSize=${MAX_BODY_BYTES} (SQS allows up to 1 MiB)`,
      );
    }
    throw toRuntimeError(error, subject(url));
  }
  const id = result.MessageId ?? "";
  if (options.json) {
    io.print(JSON.stringify({
      message_id: id,
      url,
      ...(result.SequenceNumber ? { sequence_number: result.SequenceNumber } : {}),
    }));
  } else {
    io.print(id);
  }
}

/** A message as `--peek --json` prints it. */
interface PeekedMessage {
  message_id: string;
  body: string;
  /** SQS's own attributes (SentTimestamp, ApproximateReceiveCount, MessageGroupId...). */
  attributes: Record<string, string>;
  /** Message attributes: type and value, a Binary value in base64. */
  message_attributes: Record<string, { type: string; value: string }>;
}

function base64(bytes: Uint8Array): string {
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text);
}

function toPeeked(message: Message): PeekedMessage {
  const attributes: PeekedMessage["message_attributes"] = {};
  for (const [name, value] of Object.entries(message.MessageAttributes ?? {})) {
    const binary = value.BinaryValue;
    attributes[name] = {
      type: value.DataType ?? "String",
      value: binary ? base64(binary) : value.StringValue ?? "",
    };
  }
  return {
    message_id: message.MessageId ?? "",
    body: message.Body ?? "",
    attributes: { ...message.Attributes },
    message_attributes: attributes,
  };
}

/**
 * `--peek`: receives with visibility timeout 0, so every message stays where it is
 * for everyone else, and deletes nothing. Each receive still counts toward the
 * queue's maxReceiveCount. Receives stop at -n messages, or when one brings nothing new.
 */
async function peekMessages(client: SQSClient, options: Options, io: AdminIo): Promise<void> {
  checkQueueEndpoint(options, options.queue!, "-q/--queue");
  const url = await queueUrl(client, options);
  const wanted = options.maxMessages ?? 10;
  const seen = new Map<string, PeekedMessage>();
  for (let call = 0; seen.size < wanted && call < Math.ceil(wanted / 10) + 3; call++) {
    let messages: Message[];
    try {
      const result = await client.send(
        new ReceiveMessageCommand({
          QueueUrl: url,
          MaxNumberOfMessages: Math.min(10, wanted - seen.size),
          VisibilityTimeout: 0,
          WaitTimeSeconds: 1,
          MessageSystemAttributeNames: ["All"],
          MessageAttributeNames: ["All"],
        }),
      );
      messages = result.Messages ?? [];
    } catch (error) {
      throw toRuntimeError(error, subject(url));
    }
    const before = seen.size;
    for (const message of messages) {
      const id = message.MessageId ?? "";
      if (!seen.has(id) && seen.size < wanted) seen.set(id, toPeeked(message));
    }
    if (seen.size === before) break;
  }
  const messages = [...seen.values()];
  if (options.json) {
    io.print(JSON.stringify({ name: queueName(url), url, messages }));
    return;
  }
  for (const message of messages) {
    const system = message.attributes;
    const sent = Number(system.SentTimestamp);
    const header = [
      `== message ${message.message_id}`,
      system.ApproximateReceiveCount && `received ${system.ApproximateReceiveCount} times`,
      Number.isFinite(sent) && sent > 0 && `sent ${new Date(sent).toISOString()}`,
      system.MessageGroupId && `group ${system.MessageGroupId}`,
    ].filter(Boolean).join("  ");
    io.print(escapeControls(header));
    for (const [name, { type, value }] of Object.entries(message.message_attributes)) {
      io.print(escapeControls(`   attribute ${name} (${type}): ${value}`));
    }
    io.print(escapeControls(message.body));
  }
}

/** `--purge`: PurgeQueue, every message of the queue is gone (SQS: once per 60 s). */
async function purgeQueue(client: SQSClient, options: Options, io: AdminIo): Promise<void> {
  checkQueueEndpoint(options, options.queue!, "-q/--queue");
  const url = await queueUrl(client, options);
  try {
    await client.send(new PurgeQueueCommand({ QueueUrl: url }));
  } catch (error) {
    if (
      errorCode(error) === "PurgeQueueInProgress" ||
      errorCode(error) === "AWS.SimpleQueueService.PurgeQueueInProgress"
    ) {
      throw new RuntimeError(
        `${subject(url)}: a purge is already under way (SQS allows one per queue every 60 s)`,
        { cause: error },
      );
    }
    throw toRuntimeError(error, subject(url));
  }
  io.print(options.json ? JSON.stringify({ name: queueName(url), url, purged: true }) : url);
}
