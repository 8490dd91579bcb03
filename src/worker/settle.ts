/**
 * The end of a message's stay: deleted after success, released (now or after a
 * back-off delay) after failure, or parked as poison. Every SQS call is retried;
 * no path deletes a message whose job did not succeed.
 *
 * @module
 */
import type { Backoff } from "../config.ts";
import type { Logger } from "../log.ts";
import { describeAwsError, errorCode } from "../aws.ts";
import { backoffDelay, sleep } from "./backoff.ts";
import type { JobMessage } from "./message.ts";
import { extensionSeconds, releaseVisibility, SQS_MAX_VISIBILITY_SECONDS } from "./visibility.ts";

/** The SQS calls settling needs (an SqsBatcher). */
export interface SettleCalls {
  delete(receiptHandle: string): Promise<void>;
  changeVisibility(receiptHandle: string, seconds: number): Promise<void>;
}

/** What settling needs. */
export interface SettlerOptions {
  calls: SettleCalls;
  /** Stops the extension of a message before it is settled. */
  untrack(message: JobMessage): void;
  log: Logger;
  backoff?: Backoff;
  /** Attempts per call before giving up; default 5. */
  attempts?: number;
  /** Called after each successful delete / release (for metrics). */
  onDeleted?: () => void;
  onReleased?: () => void;
}

/** Codes after which a retry cannot help: the handle is stale or the message is gone. */
const FINAL_CODES = new Set([
  "ReceiptHandleIsInvalid",
  "InvalidReceiptHandle",
  "MessageNotInflight",
  "AWS.SimpleQueueService.MessageNotInflight",
  "QueueDoesNotExist",
  "AWS.SimpleQueueService.NonExistentQueue",
]);

/** Deletes and releases messages with retries. */
export class Settler {
  #options: SettlerOptions;

  constructor(options: SettlerOptions) {
    this.#options = options;
  }

  /** The job succeeded: delete the message. Resolves true once deleted. */
  async succeeded(message: JobMessage): Promise<boolean> {
    const deleted = await this.#retry(
      message,
      "delete",
      () => this.#options.calls.delete(message.receiptHandle),
    );
    this.#options.untrack(message);
    if (deleted) {
      this.#options.onDeleted?.();
    } else {
      this.#options.log.error(
        "job succeeded but its message could not be deleted; SQS will deliver it again",
        { message_id: message.id },
      );
    }
    return deleted;
  }

  /** The job failed: make the message visible again, now or after the back-off delay. */
  async failed(message: JobMessage): Promise<void> {
    const delay = releaseVisibility(message.receiveCount, this.#options.backoff);
    await this.#release(message, delay, "released");
  }

  /** The message will not run (shutdown, or a FIFO predecessor failed): make it visible now. */
  async giveBack(message: JobMessage): Promise<void> {
    await this.#release(message, 0, "given back");
  }

  /**
   * The message was received more often than `--max-receives` and the queue has no
   * redrive policy: do not run it, hide it as long as SQS allows, and leave its end
   * to the queue's retention period.
   */
  async park(message: JobMessage, maxReceives: number): Promise<void> {
    const seconds = extensionSeconds(
      SQS_MAX_VISIBILITY_SECONDS,
      (performance.now() - message.receivedAt) / 1000,
    );
    this.#options.log.error(
      "poison message: received more often than --max-receives; not running it",
      {
        message_id: message.id,
        receive_count: message.receiveCount,
        max_receives: maxReceives,
        hidden_for_s: seconds,
      },
    );
    await this.#release(message, seconds, "parked");
  }

  async #release(message: JobMessage, seconds: number, what: string): Promise<void> {
    this.#options.untrack(message);
    const done = await this.#retry(
      message,
      "release",
      () => this.#options.calls.changeVisibility(message.receiptHandle, seconds),
    );
    if (done) {
      this.#options.onReleased?.();
      this.#options.log.info(`message ${what}`, {
        message_id: message.id,
        visible_in_s: seconds,
      });
    } else {
      this.#options.log.warn(
        "could not change the message's visibility; SQS will deliver it after its timeout",
        { message_id: message.id },
      );
    }
  }

  async #retry(message: JobMessage, what: string, call: () => Promise<void>): Promise<boolean> {
    const attempts = this.#options.attempts ?? 5;
    for (let attempt = 1; attempt <= attempts; attempt++) {
      const handle = message.receiptHandle;
      try {
        await call();
        return true;
      } catch (error) {
        // A delivery of the message that came in meanwhile brought a newer handle,
        // which may work where the stale one did not.
        const handleReplaced = message.receiptHandle !== handle;
        const final = (FINAL_CODES.has(errorCode(error) ?? "") && !handleReplaced) ||
          attempt === attempts;
        this.#options.log.warn(`${what} failed${final ? "" : "; retrying"}`, {
          message_id: message.id,
          attempt,
          error: describeAwsError(error),
        });
        if (final) return false;
        await sleep(backoffDelay(attempt, { floorMs: 250, capMs: 5_000 }));
      }
    }
    return false;
  }
}
