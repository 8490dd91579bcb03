/**
 * One received SQS message, as the worker holds it from receipt to settling.
 *
 * @module
 */
import type { Message } from "@aws-sdk/client-sqs";

/** One received message, as the rest of the worker needs it. */
export interface JobMessage {
  id: string;
  receiptHandle: string;
  body: string;
  queueUrl: string;
  receiveCount: number;
  /** Milliseconds since the epoch, when SQS accepted the message. */
  sentTimestamp?: number;
  /** FIFO queues only. */
  groupId?: string;
  /** String and Number message attributes (Binary ones are base64). */
  attributes: Record<string, string>;
  /** The names among `attributes` whose values are Binary (base64); absent when none is. */
  binaryAttributes?: string[];
  /** `ApproximateFirstReceiveTimestamp`: ms since the epoch, when SQS first delivered it. */
  firstReceivedAt?: number;
  /** `SenderId`: the account or principal that sent it. */
  senderId?: string;
  /** `MessageDeduplicationId` (FIFO queues). */
  deduplicationId?: string;
  /** `SequenceNumber` (FIFO queues). */
  sequenceNumber?: string;
  /**
   * `performance.now()` when the ReceiveMessage call that brought it was sent. SQS
   * started the visibility clock no earlier, so deadlines count from here, not
   * from when the answer arrived.
   */
  receiveSentAt: number;
  /**
   * The message as SQS answered (system attributes, typed message attributes,
   * MD5s): what a runner that hands records on as they came, as Lambda does, needs.
   */
  raw?: Message;
}

/** Converts an SDK message; returns undefined for one without id, handle or body. */
export function toJobMessage(
  message: Message,
  queueUrl: string,
  receiveSentAt: number,
): JobMessage | undefined {
  if (!message.MessageId || !message.ReceiptHandle || message.Body === undefined) return undefined;
  const system = message.Attributes ?? {};
  const attributes: Record<string, string> = {};
  const binary: string[] = [];
  for (const [name, value] of Object.entries(message.MessageAttributes ?? {})) {
    if (value.StringValue !== undefined) attributes[name] = value.StringValue;
    else if (value.BinaryValue !== undefined) {
      attributes[name] = toBase64(value.BinaryValue);
      binary.push(name);
    }
  }
  const sent = Number(system.SentTimestamp);
  const firstReceived = Number(system.ApproximateFirstReceiveTimestamp);
  // The facts only some runners describe (`--post` headers) are set only when SQS
  // gave them, so a message without them looks as it always did.
  const facts: Partial<JobMessage> = {};
  if (binary.length > 0) facts.binaryAttributes = binary;
  if (Number.isFinite(firstReceived) && firstReceived > 0) facts.firstReceivedAt = firstReceived;
  if (system.SenderId) facts.senderId = system.SenderId;
  if (system.MessageDeduplicationId) facts.deduplicationId = system.MessageDeduplicationId;
  if (system.SequenceNumber) facts.sequenceNumber = system.SequenceNumber;
  return {
    id: message.MessageId,
    receiptHandle: message.ReceiptHandle,
    body: message.Body,
    queueUrl,
    receiveCount: Number(system.ApproximateReceiveCount ?? 1) || 1,
    sentTimestamp: Number.isFinite(sent) && sent > 0 ? sent : undefined,
    groupId: system.MessageGroupId,
    attributes,
    receiveSentAt,
    raw: message,
    ...facts,
  };
}

function toBase64(bytes: Uint8Array): string {
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text);
}
