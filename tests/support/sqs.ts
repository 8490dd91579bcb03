/**
 * A second, independent SQS client for tests: set up queues, push messages and
 * read what is left, against the real emulators.
 *
 * @module
 */
import {
  CreateQueueCommand,
  DeleteQueueCommand,
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
  SendMessageCommand,
  SQSClient,
} from "@aws-sdk/client-sqs";

/** Creates a client for `endpoint` with test credentials. */
export function testClient(endpoint: string): SQSClient {
  return new SQSClient({
    endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
  });
}

/** Creates a queue and returns its URL. */
export async function createQueue(
  client: SQSClient,
  name: string,
  attributes: Record<string, string> = {},
): Promise<string> {
  if (name.endsWith(".fifo")) attributes = { FifoQueue: "true", ...attributes };
  const result = await client.send(
    new CreateQueueCommand({ QueueName: name, Attributes: attributes }),
  );
  return result.QueueUrl!;
}

/** Deletes a queue, ignoring errors (cleanup). */
export async function deleteQueue(client: SQSClient, url: string): Promise<void> {
  try {
    await client.send(new DeleteQueueCommand({ QueueUrl: url }));
  } catch { /* already gone */ }
}

/** A message to send. */
export interface TestMessage {
  body: string;
  groupId?: string;
  attributes?: Record<string, string>;
}

/** Sends messages in order (one call each, so FIFO order is exactly this order). */
export async function sendMessages(
  client: SQSClient,
  url: string,
  messages: (string | TestMessage)[],
): Promise<string[]> {
  const ids: string[] = [];
  for (const item of messages) {
    const message = typeof item === "string" ? { body: item } : item;
    const result = await client.send(
      new SendMessageCommand({
        QueueUrl: url,
        MessageBody: message.body,
        MessageGroupId: message.groupId,
        // A standard queue takes a group id (fair queues), but no deduplication id.
        MessageDeduplicationId: message.groupId && url.endsWith(".fifo")
          ? crypto.randomUUID()
          : undefined,
        MessageAttributes: Object.fromEntries(
          Object.entries(message.attributes ?? {}).map((
            [name, value],
          ) => [name, { DataType: "String", StringValue: value }]),
        ),
      }),
    );
    ids.push(result.MessageId!);
  }
  return ids;
}

/** Sends many plain bodies, ten per call. */
export async function sendBodies(client: SQSClient, url: string, bodies: string[]): Promise<void> {
  for (let start = 0; start < bodies.length; start += 10) {
    await client.send(
      new SendMessageBatchCommand({
        QueueUrl: url,
        Entries: bodies.slice(start, start + 10).map((body, index) => ({
          Id: String(index),
          MessageBody: body,
        })),
      }),
    );
  }
}

/** Visible, in-flight and delayed message counts. */
export interface QueueCounts {
  visible: number;
  inFlight: number;
  delayed: number;
}

/** Reads the approximate counts of a queue. */
export async function queueCounts(client: SQSClient, url: string): Promise<QueueCounts> {
  const result = await client.send(
    new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ["All"] }),
  );
  const attributes = result.Attributes ?? {};
  return {
    visible: Number(attributes.ApproximateNumberOfMessages ?? 0),
    inFlight: Number(attributes.ApproximateNumberOfMessagesNotVisible ?? 0),
    delayed: Number(attributes.ApproximateNumberOfMessagesDelayed ?? 0),
  };
}

/** Receives (and leaves in flight) up to 10 visible messages' bodies, without waiting. */
export async function peekBodies(client: SQSClient, url: string): Promise<string[]> {
  const result = await client.send(
    new ReceiveMessageCommand({ QueueUrl: url, MaxNumberOfMessages: 10, WaitTimeSeconds: 0 }),
  );
  return (result.Messages ?? []).map((message) => message.Body ?? "");
}
