/**
 * Keeps every message in hand invisible while sqsrun holds it, with one timer for
 * all of them, and decides how long a failed message stays hidden.
 *
 * @module
 */
import type { Backoff } from "../config.ts";
import type { Logger } from "../log.ts";
import { describeError } from "../errors.ts";
import type { JobMessage } from "./message.ts";

/** SQS never keeps a message invisible for more than 12 hours after it was received. */
export const SQS_MAX_VISIBILITY_SECONDS = 43_200;

/** Safety margin kept below the 12-hour cap, so a late call is not refused. */
const CAP_MARGIN_SECONDS = 5;

/** Returns the visibility timeout of a failed message: 0, or the `--backoff` delay. */
export function releaseVisibility(receiveCount: number, backoff: Backoff | undefined): number {
  if (!backoff) return 0;
  const exponent = Math.max(0, Math.min(receiveCount - 1, 30));
  return Math.min(
    backoff.max,
    SQS_MAX_VISIBILITY_SECONDS,
    Math.round(backoff.base * 2 ** exponent),
  );
}

/**
 * Returns the visibility timeout to ask for in an extension made `elapsedSeconds`
 * after receipt, or 0 when the 12-hour cap leaves no room.
 */
export function extensionSeconds(timeoutSeconds: number, elapsedSeconds: number): number {
  const room = SQS_MAX_VISIBILITY_SECONDS - CAP_MARGIN_SECONDS - elapsedSeconds;
  return Math.max(0, Math.floor(Math.min(timeoutSeconds, room)));
}

/** What the keeper needs to change a message's visibility. */
export interface VisibilityChanger {
  changeVisibility(receiptHandle: string, seconds: number): Promise<void>;
}

/** How to keep messages invisible. */
export interface VisibilityKeeperOptions {
  changer: VisibilityChanger;
  /** `-t`: the visibility each extension asks for. */
  timeoutSeconds: number;
  /** `-e`: seconds after receipt (and after each extension) before the next one. */
  extendAfterSeconds: number;
  log: Logger;
  /** Delay before retrying a failed extension; default min(1 s, e/2). */
  retryMs?: number;
  /** Monotonic clock in ms; default `performance.now`. */
  now?: () => number;
  /** Called after each successful extension (for metrics). */
  onExtended?: () => void;
}

interface Tracked {
  message: JobMessage;
  dueAt: number;
  calling: boolean;
  capped: boolean;
  failures: number;
}

/** Extends the visibility of every tracked message every `-e` seconds, with a single timer. */
export class VisibilityKeeper {
  #options: VisibilityKeeperOptions;
  #now: () => number;
  #retryMs: number;
  /** By message id: a worker holds one delivery of a message at a time. */
  #tracked = new Map<string, Tracked>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #armedFor = Infinity;

  constructor(options: VisibilityKeeperOptions) {
    this.#options = options;
    this.#now = options.now ?? (() => performance.now());
    this.#retryMs = options.retryMs ?? Math.min(1000, (options.extendAfterSeconds * 1000) / 2);
  }

  /** Number of messages being kept invisible. */
  get size(): number {
    return this.#tracked.size;
  }

  /** Returns the tracked message with this id, if one is in hand. */
  holding(id: string): JobMessage | undefined {
    return this.#tracked.get(id)?.message;
  }

  /** Starts keeping `message` invisible, counting from its receipt. */
  track(message: JobMessage): void {
    this.#tracked.set(message.id, {
      message,
      dueAt: message.receivedAt + this.#options.extendAfterSeconds * 1000,
      calling: false,
      capped: false,
      failures: 0,
    });
    this.#arm();
  }

  /** Stops extending `message` (it is settled or about to be). */
  untrack(message: JobMessage): void {
    if (this.#tracked.get(message.id)?.message === message) this.#tracked.delete(message.id);
    if (this.#tracked.size === 0) this.#disarm();
  }

  /** Stops all extensions. */
  stop(): void {
    this.#tracked.clear();
    this.#disarm();
  }

  #disarm(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#armedFor = Infinity;
  }

  #arm(): void {
    let next = Infinity;
    for (const entry of this.#tracked.values()) {
      if (!entry.calling && !entry.capped && entry.dueAt < next) next = entry.dueAt;
    }
    if (next === Infinity) return this.#disarm();
    if (this.#timer !== undefined && next >= this.#armedFor) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#armedFor = next;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#armedFor = Infinity;
      this.#extendDue();
    }, Math.max(0, next - this.#now()));
  }

  #extendDue(): void {
    const now = this.#now();
    for (const entry of this.#tracked.values()) {
      if (entry.calling || entry.capped || entry.dueAt > now + 2) continue;
      this.#extend(entry, now);
    }
    this.#arm();
  }

  #extend(entry: Tracked, now: number): void {
    const { message } = entry;
    const seconds = extensionSeconds(
      this.#options.timeoutSeconds,
      (now - message.receivedAt) / 1000,
    );
    if (seconds <= 0) {
      entry.capped = true;
      this.#options.log.warn(
        "visibility reached the SQS 12-hour limit; the message will become visible again",
        { message_id: message.id },
      );
      return;
    }
    entry.calling = true;
    this.#options.changer.changeVisibility(message.receiptHandle, seconds).then(
      () => {
        entry.failures = 0;
        entry.dueAt = this.#now() + this.#options.extendAfterSeconds * 1000;
        if (this.#tracked.get(message.id) === entry) {
          this.#options.log.debug("visibility extended", {
            message_id: message.id,
            visibility_timeout: seconds,
          });
          this.#options.onExtended?.();
        }
      },
      (error) => {
        entry.failures += 1;
        entry.dueAt = this.#now() + this.#retryMs;
        if (this.#tracked.get(message.id) === entry) {
          this.#options.log.warn("visibility extension failed; retrying", {
            message_id: message.id,
            attempt: entry.failures,
            error: describeError(error),
          });
        }
      },
    ).finally(() => {
      entry.calling = false;
      if (this.#tracked.get(message.id) === entry) this.#arm();
    });
  }
}
