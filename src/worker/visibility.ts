/**
 * Keeps every message in hand invisible while sqsrun holds it, with one timer for
 * all of them, and decides how long a failed message stays hidden.
 *
 * Time is kept so that sqsrun's idea of a message's deadline is never later than
 * SQS's:
 *
 * - SQS starts a message's visibility clock somewhere between the moment the
 *   receive call was sent and the moment its answer arrived, so a delivery's first
 *   deadline counts from the call's send time ({@linkcode JobMessage.receiveSentAt}).
 *   A receive whose answer was slow leaves little of the timeout: its message is
 *   extended at once.
 * - An extension is applied somewhere between its send time and its answer, so a
 *   confirmed extension moves the deadline to its send time plus the seconds it
 *   asked for, and the next one is due a margin before that deadline, not `-e`
 *   after the previous answer.
 * - The margin is `-t` minus `-e`, widened (up to half of `-t`) while SQS answers
 *   slowly: twice the slowest recent answer.
 * - An extension without an answer is not waited for: another one is sent
 *   ("hedged") halfway to the deadline, a few at most in flight per message, so
 *   one hung request cannot use up the margin. The slow one is still welcome when
 *   it answers.
 * - SQS refuses to change the visibility of a message that is visible again or
 *   was received by someone else since, so an extension that succeeds proves the
 *   message stayed this worker's, even when its answer came after the deadline.
 *   When the deadline has passed and every call since failed (or SQS called the
 *   receipt stale), the message may be visible again: that is logged once per
 *   delivery and counted. Its job runs on; a job not yet started waits for a
 *   confirmed extension ({@linkcode VisibilityKeeper.covered}).
 *
 * @module
 */
import type { Backoff } from "../config.ts";
import type { Logger } from "../log.ts";
import { describeAwsError, isStaleReceipt } from "../aws.ts";
import { type Clock, REAL_CLOCK } from "./clock.ts";
import type { JobMessage } from "./message.ts";

/** SQS never keeps a message invisible for more than 12 hours after it was received. */
export const SQS_MAX_VISIBILITY_SECONDS = 43_200;

/** Safety margin kept below the 12-hour cap, so a late call is not refused. */
export const CAP_MARGIN_SECONDS = 5;

/** Extension calls of one message in flight at once, at most (one plus two hedges). */
const MAX_CALLS_IN_FLIGHT = 3;

/** A hedge goes out no sooner than this after the call it backs up. */
const MIN_HEDGE_MS = 250;

/** How fast the memory of a slow answer fades: it halves every minute. */
const SLOW_ANSWER_HALF_LIFE_MS = 60_000;

/** A job starts only while its message is known to be hidden for at least this long. */
const START_GUARD_MS = 250;

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
  /** `-e`: how long after a deadline starts the next extension is due (`-t - -e` before it ends). */
  extendAfterSeconds: number;
  log: Logger;
  /** Delay before retrying a failed extension; default min(250 ms, margin/4). */
  retryMs?: number;
  /** The clock and timers; default the real ones (tests pass a fake clock). */
  clock?: Clock;
  /** Called after each successful extension (for metrics). */
  onExtended?: () => void;
  /** Called as each extension call goes out, with how late it is (for metrics). */
  onSent?: (lateMs: number) => void;
  /** Called once per delivery whose deadline passed, or may have, while in hand (for metrics). */
  onLapsed?: () => void;
}

interface Tracked {
  message: JobMessage;
  /** Start of this delivery's 12-hour window (its receive call's send time). */
  windowStart: number;
  /** The latest moment SQS surely still hides the message. */
  deadline: number;
  /** When the next call goes out: a margin before the deadline, a hedge, or a retry. */
  dueAt: number;
  /** Extension calls sent and not answered. */
  calls: number;
  /** Of those, the ones sent before the deadline: a success of one proves it was kept. */
  hopeful: number;
  /** The 12-hour cap leaves no room for another extension (the last one was confirmed). */
  capped: boolean;
  /** The warning that the cap is near was logged. */
  capWarned: boolean;
  /** The deadline passed without a confirmed extension (logged once per delivery). */
  lapsed: boolean;
  failures: number;
  /** Jobs waiting for the message to be known hidden before they start. */
  waiters: ((covered: boolean) => void)[];
}

/** Extends the visibility of every tracked message before its deadline, with a single timer. */
export class VisibilityKeeper {
  #options: VisibilityKeeperOptions;
  #now: () => number;
  #setTimer: (callback: () => void, ms: number) => unknown;
  #clearTimer: (id: unknown) => void;
  #timeoutMs: number;
  #baseMarginMs: number;
  #retryMs: number | undefined;
  /** By message id: a worker holds one delivery of a message at a time. */
  #tracked = new Map<string, Tracked>();
  #timer: unknown;
  #armedFor = Infinity;
  /** The slowest recent extension answer, fading with time. */
  #slowMs = 0;
  #slowAt = 0;

  constructor(options: VisibilityKeeperOptions) {
    this.#options = options;
    const clock = options.clock ?? REAL_CLOCK;
    this.#now = () => clock.now();
    this.#setTimer = (callback, ms) => clock.setTimer(callback, ms);
    this.#clearTimer = (id) => clock.clearTimer(id);
    this.#timeoutMs = options.timeoutSeconds * 1000;
    this.#baseMarginMs = (options.timeoutSeconds - options.extendAfterSeconds) * 1000;
    this.#retryMs = options.retryMs;
  }

  /** Number of messages being kept invisible. */
  get size(): number {
    return this.#tracked.size;
  }

  /**
   * How long before a deadline the next extension goes out: `-t - -e`, or twice the
   * slowest recent answer when SQS is slow, up to half of `-t`.
   */
  get marginMs(): number {
    const age = this.#now() - this.#slowAt;
    const slow = this.#slowMs * 0.5 ** (Math.max(0, age) / SLOW_ANSWER_HALF_LIFE_MS);
    return Math.max(this.#baseMarginMs, Math.min(this.#timeoutMs / 2, 2 * slow));
  }

  /** Returns the tracked message with this id, if one is in hand. */
  holding(id: string): JobMessage | undefined {
    return this.#tracked.get(id)?.message;
  }

  /** The latest moment (on the keeper's clock) the message is known to be hidden, if tracked. */
  deadlineOf(message: JobMessage): number | undefined {
    const entry = this.#tracked.get(message.id);
    return entry?.message === message ? entry.deadline : undefined;
  }

  /** Starts keeping `message` invisible, counting from the send time of its receive call. */
  track(message: JobMessage): void {
    const deadline = message.receiveSentAt + this.#timeoutMs;
    this.#tracked.set(message.id, {
      message,
      windowStart: message.receiveSentAt,
      deadline,
      dueAt: deadline - this.marginMs,
      calls: 0,
      hopeful: 0,
      capped: false,
      capWarned: false,
      lapsed: false,
      failures: 0,
      waiters: [],
    });
    this.#arm();
  }

  /**
   * The message in hand was delivered again (`again`, whose handle the worker now
   * uses): SQS gave it a new visibility timeout and a new 12-hour window.
   */
  renew(held: JobMessage, again: JobMessage): void {
    const entry = this.#tracked.get(held.id);
    if (entry?.message !== held) return;
    entry.windowStart = again.receiveSentAt;
    entry.deadline = Math.max(entry.deadline, again.receiveSentAt + this.#timeoutMs);
    entry.dueAt = Math.min(entry.dueAt, entry.deadline - this.marginMs);
    entry.capped = false;
    entry.capWarned = false;
    entry.lapsed = false;
    this.#arm();
  }

  /**
   * Resolves true while the message is known to be hidden for a moment longer, so
   * its job may start; otherwise waits for an extension to confirm it. Resolves
   * false when that cannot happen: SQS refused the extension (the message is
   * visible or someone else received it), the message was untracked, or one
   * timeout went by past its deadline without a confirmation (SQS has shown it
   * again by then).
   */
  covered(message: JobMessage): Promise<boolean> {
    const entry = this.#tracked.get(message.id);
    if (entry?.message !== message) return Promise.resolve(false);
    if (entry.deadline - this.#now() >= START_GUARD_MS) return Promise.resolve(true);
    return new Promise((resolve) => {
      const giveUp = this.#setTimer(
        () => settle(false),
        Math.max(0, entry.deadline + this.#timeoutMs - this.#now()),
      );
      const settle = (covered: boolean) => {
        this.#clearTimer(giveUp);
        const index = entry.waiters.indexOf(settle);
        if (index !== -1) entry.waiters.splice(index, 1);
        resolve(covered);
      };
      entry.waiters.push(settle);
      entry.dueAt = Math.min(entry.dueAt, this.#now());
      this.#arm();
    });
  }

  /** Stops extending `message` (it is settled or about to be). */
  untrack(message: JobMessage): void {
    const entry = this.#tracked.get(message.id);
    if (entry?.message === message) {
      this.#tracked.delete(message.id);
      for (const waiter of [...entry.waiters]) waiter(false);
    }
    if (this.#tracked.size === 0) this.#disarm();
  }

  /** Stops all extensions. */
  stop(): void {
    const entries = [...this.#tracked.values()];
    this.#tracked.clear();
    for (const entry of entries) for (const waiter of [...entry.waiters]) waiter(false);
    this.#disarm();
  }

  #disarm(): void {
    if (this.#timer !== undefined) this.#clearTimer(this.#timer);
    this.#timer = undefined;
    this.#armedFor = Infinity;
  }

  /** The next moment something is due for `entry`: a call, or noticing its deadline passed. */
  #nextFor(entry: Tracked): number {
    let next = Infinity;
    if (!entry.capped && entry.calls < MAX_CALLS_IN_FLIGHT) next = entry.dueAt;
    if (!entry.lapsed && entry.hopeful === 0 && entry.deadline < next) next = entry.deadline;
    return next;
  }

  /** True when the deadline passed with no call left that could still prove it was kept. */
  #lapsedNow(entry: Tracked, now: number): boolean {
    return !entry.lapsed && entry.hopeful === 0 && entry.deadline <= now;
  }

  #arm(): void {
    let next = Infinity;
    for (const entry of this.#tracked.values()) next = Math.min(next, this.#nextFor(entry));
    if (next === Infinity) return this.#disarm();
    if (this.#timer !== undefined && next >= this.#armedFor) return;
    if (this.#timer !== undefined) this.#clearTimer(this.#timer);
    this.#armedFor = next;
    this.#timer = this.#setTimer(() => {
      this.#timer = undefined;
      this.#armedFor = Infinity;
      this.#tick();
    }, Math.max(0, next - this.#now()));
  }

  #tick(): void {
    const now = this.#now();
    for (const entry of this.#tracked.values()) {
      if (this.#lapsedNow(entry, now)) this.#lapse(entry, now);
      if (entry.capped || entry.calls >= MAX_CALLS_IN_FLIGHT || entry.dueAt > now + 2) continue;
      this.#extend(entry, now);
    }
    this.#arm();
  }

  #lapse(entry: Tracked, now: number): void {
    entry.lapsed = true;
    this.#options.onLapsed?.();
    this.#options.log.warn(
      entry.capped
        ? "the message is visible again: SQS's 12-hour visibility limit was reached"
        : "visibility deadline may have been missed; SQS may deliver the message to another consumer",
      {
        message_id: entry.message.id,
        late_ms: Math.round(now - entry.deadline),
        extensions_in_flight: entry.calls,
      },
    );
  }

  #extend(entry: Tracked, now: number): void {
    const { message } = entry;
    const seconds = extensionSeconds(
      this.#options.timeoutSeconds,
      (now - entry.windowStart) / 1000,
    );
    if (seconds <= 0) {
      entry.capped = true;
      return;
    }
    if (seconds < this.#options.timeoutSeconds && !entry.capWarned) {
      entry.capWarned = true;
      this.#options.log.warn(
        "visibility reaches SQS's 12-hour limit with this extension; the message becomes visible again while its job runs",
        { message_id: message.id, visible_for_s: seconds },
      );
    }
    const sentAt = now;
    this.#options.onSent?.(now - entry.dueAt);
    const hopeful = sentAt < entry.deadline;
    entry.calls += 1;
    if (hopeful) entry.hopeful += 1;
    // Unanswered by then, the call gets a hedge; an answer reschedules before that.
    entry.dueAt = now + Math.max(MIN_HEDGE_MS, (entry.deadline - now) / 2);
    this.#options.changer.changeVisibility(message.receiptHandle, seconds).then(
      () => this.#confirmed(entry, sentAt, seconds),
      (error) => this.#refused(entry, sentAt, error),
    ).finally(() => {
      entry.calls -= 1;
      if (hopeful) entry.hopeful -= 1;
      if (this.#tracked.get(message.id) !== entry) return;
      if (this.#lapsedNow(entry, this.#now())) this.#lapse(entry, this.#now());
      this.#arm();
    });
  }

  #noteAnswerTime(sentAt: number): void {
    const now = this.#now();
    const sample = now - sentAt;
    const age = now - this.#slowAt;
    const faded = this.#slowMs * 0.5 ** (Math.max(0, age) / SLOW_ANSWER_HALF_LIFE_MS);
    if (sample >= faded) {
      this.#slowMs = sample;
      this.#slowAt = now;
    }
  }

  #confirmed(entry: Tracked, sentAt: number, seconds: number): void {
    this.#noteAnswerTime(sentAt);
    if (this.#tracked.get(entry.message.id) !== entry) return;
    entry.failures = 0;
    entry.deadline = Math.max(entry.deadline, sentAt + seconds * 1000);
    // One cut short by the 12-hour cap was the last: no later one can reach further.
    if (seconds < this.#options.timeoutSeconds) entry.capped = true;
    entry.dueAt = entry.deadline - this.marginMs;
    this.#options.log.debug("visibility extended", {
      message_id: entry.message.id,
      visibility_timeout: seconds,
      answer_ms: Math.round(this.#now() - sentAt),
    });
    this.#options.onExtended?.();
    if (entry.deadline - this.#now() >= START_GUARD_MS) {
      for (const waiter of [...entry.waiters]) waiter(true);
    }
  }

  #refused(entry: Tracked, sentAt: number, error: unknown): void {
    this.#noteAnswerTime(sentAt);
    if (this.#tracked.get(entry.message.id) !== entry) return;
    entry.failures += 1;
    const retryMs = this.#retryMs ?? Math.min(250, this.marginMs / 4);
    entry.dueAt = Math.min(entry.dueAt, this.#now() + retryMs);
    const stale = isStaleReceipt(error);
    this.#options.log.warn(
      stale
        ? "SQS refused to extend the message's visibility: it is no longer hidden for this worker"
        : "visibility extension failed; retrying",
      {
        message_id: entry.message.id,
        attempt: entry.failures,
        error: describeAwsError(error),
      },
    );
    if (stale) {
      if (!entry.lapsed) this.#lapse(entry, this.#now());
      // A stale handle stays stale until a new delivery renews it: no need to hurry.
      entry.dueAt = this.#now() + this.#options.extendAfterSeconds * 1000;
      for (const waiter of [...entry.waiters]) waiter(false);
    }
  }
}
