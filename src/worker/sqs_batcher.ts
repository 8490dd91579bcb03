/**
 * Groups deletes and visibility changes into SQS batch calls (up to 10 entries),
 * while every caller still gets its own promise for its own entry.
 *
 * @module
 */
import {
  ChangeMessageVisibilityBatchCommand,
  DeleteMessageBatchCommand,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import { type Clock, REAL_CLOCK } from "./clock.ts";

/** SQS accepts at most this many entries in one batch call. */
export const SQS_BATCH_LIMIT = 10;

/** An entry that SQS refused, with its error code. */
export class BatchEntryError extends Error {
  override name = "BatchEntryError";
  constructor(readonly code: string, message: string) {
    super(`${code}: ${message}`);
  }
}

interface Entry {
  receiptHandle: string;
  visibility?: number;
  resolve(): void;
  reject(error: unknown): void;
}

/** How the batcher reaches SQS. */
export interface SqsBatcherOptions {
  client: SQSClient;
  queueUrl: string;
  /** How long an entry may wait for others to share its call; default 5 ms. */
  lingerMs?: number;
  /**
   * The same for deletes, which nothing waits for on a standard queue (the slot is
   * already free): a longer wait fills more batches. Default: `lingerMs`.
   */
  deleteLingerMs?: number;
  /** The clock of the linger timers; default the real one. */
  clock?: Clock;
}

/** Entries of one kind waiting for their call. */
interface Pending {
  entries: Entry[];
  lingerMs: number;
  timer: unknown;
}

/** Sends deletes and visibility changes in batches. */
export class SqsBatcher {
  #client: SQSClient;
  #queueUrl: string;
  #clock: Clock;
  #deletes: Pending;
  #changes: Pending;
  #inFlight = new Set<Promise<void>>();

  constructor(options: SqsBatcherOptions) {
    this.#client = options.client;
    this.#queueUrl = options.queueUrl;
    this.#clock = options.clock ?? REAL_CLOCK;
    const lingerMs = options.lingerMs ?? 5;
    this.#deletes = { entries: [], lingerMs: options.deleteLingerMs ?? lingerMs, timer: undefined };
    this.#changes = { entries: [], lingerMs, timer: undefined };
  }

  /** Deletes one message; rejects when SQS refused it or could not be reached. */
  delete(receiptHandle: string): Promise<void> {
    return this.#enqueue(this.#deletes, receiptHandle, undefined);
  }

  /** Sets one message's visibility timeout, in seconds from now. */
  changeVisibility(receiptHandle: string, seconds: number): Promise<void> {
    return this.#enqueue(this.#changes, receiptHandle, Math.max(0, Math.floor(seconds)));
  }

  /** Sends everything queued and waits for all calls in flight. */
  async flush(): Promise<void> {
    this.#send(this.#deletes);
    this.#send(this.#changes);
    while (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight]);
  }

  #enqueue(pending: Pending, receiptHandle: string, visibility: number | undefined): Promise<void> {
    return new Promise((resolve, reject) => {
      pending.entries.push({ receiptHandle, visibility, resolve, reject });
      if (pending.entries.length >= SQS_BATCH_LIMIT) this.#send(pending);
      else if (pending.timer === undefined) {
        pending.timer = this.#clock.setTimer(() => this.#send(pending), pending.lingerMs);
      }
    });
  }

  #send(pending: Pending): void {
    if (pending.timer !== undefined) this.#clock.clearTimer(pending.timer);
    pending.timer = undefined;
    const send = pending === this.#deletes
      ? (entries: Entry[]) => this.#sendDeletes(entries)
      : (entries: Entry[]) => this.#sendChanges(entries);
    while (pending.entries.length > 0) {
      this.#track(send(pending.entries.splice(0, SQS_BATCH_LIMIT)));
    }
  }

  #track(call: Promise<void>): void {
    this.#inFlight.add(call);
    call.finally(() => this.#inFlight.delete(call));
  }

  async #sendDeletes(entries: Entry[]): Promise<void> {
    await this.#settle(entries, () =>
      this.#client.send(
        new DeleteMessageBatchCommand({
          QueueUrl: this.#queueUrl,
          Entries: entries.map((entry, index) => ({
            Id: String(index),
            ReceiptHandle: entry.receiptHandle,
          })),
        }),
      ));
  }

  async #sendChanges(entries: Entry[]): Promise<void> {
    await this.#settle(entries, () =>
      this.#client.send(
        new ChangeMessageVisibilityBatchCommand({
          QueueUrl: this.#queueUrl,
          Entries: entries.map((entry, index) => ({
            Id: String(index),
            ReceiptHandle: entry.receiptHandle,
            VisibilityTimeout: entry.visibility ?? 0,
          })),
        }),
      ));
  }

  async #settle(
    entries: Entry[],
    call: () => Promise<{
      Failed?: { Id?: string; Code?: string; Message?: string }[];
    }>,
  ): Promise<void> {
    try {
      const result = await call();
      const failed = new Map((result.Failed ?? []).map((failure) => [failure.Id, failure]));
      entries.forEach((entry, index) => {
        const failure = failed.get(String(index));
        if (failure) {
          entry.reject(
            new BatchEntryError(failure.Code ?? "Failed", failure.Message ?? "refused by SQS"),
          );
        } else entry.resolve();
      });
    } catch (error) {
      for (const entry of entries) entry.reject(error);
    }
  }
}
