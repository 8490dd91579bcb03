/**
 * The end of a message's stay: deleted after success, released (now or after a
 * back-off delay) after failure, or parked as poison. Every SQS call is retried;
 * no path deletes a message whose job did not succeed.
 *
 * A succeeded job's delete is retried with back-off for as long as the worker
 * holds the message (its visibility is still extended meanwhile): until SQS
 * deletes it, says the receipt is stale, or the worker's shutdown deadline
 * passes. Giving up early would hand a finished job to SQS to run again.
 *
 * @module
 */
import type { Backoff } from "../config.ts";
import type { Logger } from "../log.ts";
import { describeAwsError, isStaleReceipt } from "../aws.ts";
import { backoffDelay } from "./backoff.ts";
import { type Clock, REAL_CLOCK, sleep } from "./clock.ts";
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
  /** Attempts per release (and per delete once `stop` aborted) before giving up; default 5. */
  attempts?: number;
  /**
   * Aborts when the worker's shutdown deadline passed: deletes stop retrying
   * without limit. Until then a delete is retried until it succeeds or is stale.
   */
  stop?: AbortSignal;
  /** Longest pause between two delete attempts; default 5 s. */
  maxRetryMs?: number;
  /** Time for the park computation and the pauses between retries; default the real clock. */
  clock?: Clock;
  /** Called after each successful delete / release / park (for metrics). */
  onDeleted?: () => void;
  onReleased?: () => void;
  onParked?: () => void;
  /** Called when a delete may have succeeded although SQS said otherwise (for metrics). */
  onDeleteUncertain?: () => void;
}

/** Deletes and releases messages with retries. */
export class Settler {
  #options: SettlerOptions;
  #clock: Clock;
  /** Releases sent but not answered yet, by message id: each logs its line once. */
  #unanswered = new Map<string, () => void>();

  constructor(options: SettlerOptions) {
    this.#options = options;
    this.#clock = options.clock ?? REAL_CLOCK;
  }

  /** The job succeeded: delete the message. Resolves true once deleted. */
  async succeeded(message: JobMessage): Promise<boolean> {
    const result = await this.#retry(
      message,
      "delete",
      () => this.#options.calls.delete(message.receiptHandle),
      { untilStopped: true },
    );
    this.#options.untrack(message);
    if (result === "done") {
      this.#options.onDeleted?.();
    } else if (result === "uncertain") {
      // An earlier attempt reached SQS but its answer was lost: the stale handle
      // now is most likely that delete's own doing.
      this.#options.onDeleteUncertain?.();
      this.#options.log.warn(
        "the delete may have succeeded: an earlier attempt's answer was lost and SQS now calls the receipt stale",
        { message_id: message.id },
      );
    } else {
      this.#options.log.error(
        "job succeeded but its message could not be deleted; SQS will deliver it again",
        { message_id: message.id },
      );
    }
    return result === "done";
  }

  /**
   * The job failed: make the message visible again, now or after the back-off
   * delay; or after `retryAfterSeconds` when the job said when to try again, as
   * long as SQS allows (12 hours from the receive, less a margin).
   */
  async failed(message: JobMessage, retryAfterSeconds?: number): Promise<void> {
    const delay = retryAfterSeconds === undefined
      ? releaseVisibility(message.receiveCount, this.#options.backoff)
      : extensionSeconds(
        retryAfterSeconds,
        (this.#clock.now() - message.receiveSentAt) / 1000,
      );
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
      (this.#clock.now() - message.receiveSentAt) / 1000,
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

  /**
   * A message came back from SQS while its release was still unanswered: SQS
   * applied it, and the answer is on its way. Its `message released` line goes
   * out now, so the log never shows the next delivery's job before it.
   */
  redelivered(messageId: string): void {
    this.#unanswered.get(messageId)?.();
  }

  async #release(
    message: JobMessage,
    seconds: number,
    what: "released" | "given back" | "parked",
  ): Promise<void> {
    this.#options.untrack(message);
    let said = false;
    const say = () => {
      if (said) return;
      said = true;
      this.#options.log.info(`message ${what}`, { message_id: message.id, visible_in_s: seconds });
    };
    this.#unanswered.set(message.id, say);
    let result: "done" | "failed" | "uncertain";
    try {
      result = await this.#retry(
        message,
        "release",
        () => this.#options.calls.changeVisibility(message.receiptHandle, seconds),
        { untilStopped: false },
      );
    } finally {
      if (this.#unanswered.get(message.id) === say) this.#unanswered.delete(message.id);
    }
    if (result === "done") {
      if (what === "parked") this.#options.onParked?.();
      else this.#options.onReleased?.();
      say();
    } else {
      this.#options.log.warn(
        "could not change the message's visibility; SQS will deliver it after its timeout",
        { message_id: message.id },
      );
    }
  }

  /**
   * Makes `call` until it succeeds. Resolves "done"; "failed" once the receipt is
   * stale or the attempts ran out; "uncertain" when the receipt turned stale after
   * an attempt whose answer never came (that attempt may have done the work).
   * With `untilStopped`, attempts run out only once the `stop` signal aborted.
   */
  async #retry(
    message: JobMessage,
    what: string,
    call: () => Promise<void>,
    { untilStopped }: { untilStopped: boolean },
  ): Promise<"done" | "failed" | "uncertain"> {
    const attempts = this.#options.attempts ?? 5;
    const stop = this.#options.stop;
    let unanswered = false;
    for (let attempt = 1;; attempt++) {
      const handle = message.receiptHandle;
      try {
        await call();
        return "done";
      } catch (error) {
        // A delivery of the message that came in meanwhile brought a newer handle,
        // which may work where the stale one did not.
        const handleReplaced = message.receiptHandle !== handle;
        const stale = isStaleReceipt(error) && !handleReplaced;
        const limited = !untilStopped || stop === undefined || stop.aborted;
        const final = stale || (limited && attempt >= attempts);
        this.#options.log.warn(`${what} failed${final ? "" : "; retrying"}`, {
          message_id: message.id,
          attempt,
          error: describeAwsError(error),
        });
        if (final) return stale && unanswered ? "uncertain" : "failed";
        // A refusal with a status came from SQS; anything else may have reached it.
        unanswered ||= !answeredBySqs(error);
        await sleep(
          backoffDelay(attempt, { floorMs: 250, capMs: this.#options.maxRetryMs ?? 5_000 }),
          untilStopped ? stop : undefined,
          this.#clock,
        );
      }
    }
  }
}

/** True when SQS itself answered (an HTTP status, or a batch entry it refused). */
function answeredBySqs(error: unknown): boolean {
  if (typeof error !== "object" || error === null) return false;
  if ((error as { name?: unknown }).name === "BatchEntryError") return true;
  const status = (error as { $metadata?: { httpStatusCode?: unknown } }).$metadata?.httpStatusCode;
  return typeof status === "number" && status < 500;
}
