/**
 * Long-polls SQS for at most as many messages as there are free slots, and backs
 * off after errors instead of giving up.
 *
 * @module
 */
import { ReceiveMessageCommand, type SQSClient } from "@aws-sdk/client-sqs";
import type { Logger } from "../log.ts";
import { describeAwsError } from "../aws.ts";
import { backoffDelay } from "./backoff.ts";
import { sleep } from "./clock.ts";
import { type JobMessage, toJobMessage } from "./message.ts";

/** Longest pause between receive attempts after repeated errors. */
const MAX_ERROR_BACKOFF_MS = 30_000;

/** How to receive. */
export interface ReceiverOptions {
  client: SQSClient;
  queueUrl: string;
  /** `--wait`: long-poll seconds (0 = short polling). */
  waitSeconds: number;
  /** `-t`: visibility timeout given to received messages. */
  visibilityTimeout: number;
  /** `--batch-size`: most messages per call. */
  batchSize: number;
  /** `-i`: pause after an empty short poll, and the floor of the error back-off. */
  intervalSeconds: number;
  log: Logger;
  /** Called after every receive call that answered, with the number of messages (health, metrics). */
  onPoll?: (received: number) => void;
  /** Called after every failed receive call (for metrics). */
  onError?: () => void;
}

/** Receives messages one call at a time. */
export class Receiver {
  #options: ReceiverOptions;
  #failures = 0;

  constructor(options: ReceiverOptions) {
    this.#options = options;
  }

  /**
   * Receives up to `max` messages. Resolves to [] after an error (having waited
   * out the back-off), after an empty short poll (having waited `-i`), or when
   * `signal` aborts the call; never rejects. `pauseSignal` (default `signal`) cuts
   * short only the waits after the call (the back-off, the `-i` pause).
   */
  async receive(
    max: number,
    signal: AbortSignal,
    pauseSignal: AbortSignal = signal,
  ): Promise<JobMessage[]> {
    const options = this.#options;
    const count = Math.max(1, Math.min(max, options.batchSize, 10));
    // SQS starts the messages' visibility clock after this, however late the answer comes.
    const sentAt = performance.now();
    try {
      const result = await options.client.send(
        new ReceiveMessageCommand({
          QueueUrl: options.queueUrl,
          MaxNumberOfMessages: count,
          WaitTimeSeconds: options.waitSeconds,
          VisibilityTimeout: options.visibilityTimeout,
          MessageSystemAttributeNames: ["All"],
          MessageAttributeNames: ["All"],
        }),
        { abortSignal: signal },
      );
      if (this.#failures > 0) {
        options.log.info("receiving again", { after_failures: this.#failures });
      }
      this.#failures = 0;
      options.onPoll?.(result.Messages?.length ?? 0);
      const messages: JobMessage[] = [];
      for (const raw of result.Messages ?? []) {
        const message = toJobMessage(raw, options.queueUrl, sentAt);
        if (message) messages.push(message);
        else options.log.error("ignoring a malformed message from SQS", { raw_id: raw.MessageId });
      }
      if (messages.length === 0 && options.waitSeconds === 0) {
        await sleep(options.intervalSeconds * 1000, AbortSignal.any([signal, pauseSignal]));
      }
      return messages;
    } catch (error) {
      if (signal.aborted) return [];
      this.#failures += 1;
      options.onError?.();
      const delay = backoffDelay(this.#failures, {
        floorMs: Math.max(options.intervalSeconds * 1000, 200),
        capMs: MAX_ERROR_BACKOFF_MS,
      });
      options.log.warn("receive failed; backing off", {
        error: describeAwsError(error),
        attempt: this.#failures,
        retry_in_ms: delay,
      });
      await sleep(delay, AbortSignal.any([signal, pauseSignal]));
      return [];
    }
  }
}
