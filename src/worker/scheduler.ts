/**
 * Concurrency slots, messages received ahead, and FIFO group lanes. A message is
 * in hand from the moment it is received until it is settled; at most
 * `concurrency` jobs run at once, each with up to `maxItems` messages (one for
 * `--exec` and `--run`, a batch for `--lambda`), and at most `prefetch` more
 * messages wait, ready to start the moment a job ends. On a FIFO queue, messages
 * of one group run one at a time, in order: a group's next message becomes ready
 * only once the job of the one before it ended, so no job holds two messages of
 * one group, unless `groupBatches` lets a job take a run of one group's messages
 * in order (a Lambda batch). On a standard queue a group id names a tenant (fair
 * queues): it orders nothing, and a tenant's messages run in parallel like any
 * others.
 *
 * @module
 */
import { type Clock, REAL_CLOCK } from "./clock.ts";
import type { JobMessage } from "./message.ts";

/**
 * The reason internal waits are ended with: an abort without one builds a
 * DOMException with a stack, and the loop ends such a wait for every free slot.
 */
export const WAIT_OVER = "wait over";

/** How the scheduler runs and gives back messages. */
export interface SchedulerOptions {
  /** Most jobs running at once. */
  concurrency: number;
  /** Most messages one job takes (the runner's `maxItems`); default 1. */
  maxItems?: number;
  /** The queue is a FIFO queue: group ids make lanes. Default false. */
  fifo?: boolean;
  /**
   * Runs and settles the messages of one job (1..maxItems, oldest first); resolves,
   * per message in that order, true when it succeeded. Never rejects.
   */
  run(messages: JobMessage[]): Promise<boolean[]>;
  /**
   * Gives back a message that will not run: a later message of a FIFO group whose
   * earlier message failed, one held ahead for longer than `holdLimitMs`, or one
   * still waiting at shutdown. Never rejects.
   */
  abandon(message: JobMessage): Promise<void>;
  /**
   * Longest time a standard-queue message may wait ready (held ahead) before it is
   * given back for another worker; undefined: no limit. FIFO messages are never
   * given back this way (their group's order depends on them).
   */
  holdLimitMs?: number;
  /** The clock of run times, hold limits and coalescing waits; default the real one. */
  clock?: Clock;
  /**
   * On a FIFO queue, a job takes up to maxItems messages of one group, in order
   * (a Lambda batch), instead of one message of each of several groups. Default false.
   */
  groupBatches?: boolean;
  /**
   * For jobs of several messages: a job that would start with fewer than maxItems
   * waits up to this long (ms, from when its oldest message became ready) for
   * more to arrive, and 0 still gathers all the messages of one receive into one
   * job. Undefined: a job starts at once with what is ready.
   */
  batchWindowMs?: number;
}

/** Admits messages into slots and lanes. */
export class Scheduler {
  #options: SchedulerOptions;
  #clock: Clock;
  #maxItems: number;
  #inHand = 0;
  #running = 0;
  #prefetch = 0;
  /** Received messages free to start, oldest first, with when each became ready. */
  #ready: { message: JobMessage; since: number }[] = [];
  #holdTimer: unknown;
  #lanes = new Map<string, JobMessage[]>();
  #waiters: (() => void)[] = [];
  #meanRunMs: number | undefined;
  /** When each running job started, on the scheduler's clock. */
  #startedAt = new Map<JobMessage[], number>();
  /** A start is due once the messages being accepted now are all in (a batch window is set). */
  #startQueued = false;
  /** A slot is free and the ready messages wait for the batch window to fill a job. */
  #gathering = false;
  #windowTimer: unknown;

  constructor(options: SchedulerOptions) {
    if (!Number.isInteger(options.concurrency) || options.concurrency < 1) {
      throw new RangeError("concurrency must be a positive integer");
    }
    const maxItems = options.maxItems ?? 1;
    if (!Number.isInteger(maxItems) || maxItems < 1) {
      throw new RangeError("maxItems must be a positive integer");
    }
    this.#maxItems = maxItems;
    this.#options = options;
    this.#clock = options.clock ?? REAL_CLOCK;
  }

  /** Most messages held beyond the running jobs; lowering it never drops one already held. */
  get prefetch(): number {
    return this.#prefetch;
  }

  set prefetch(count: number) {
    this.#prefetch = Math.max(0, Math.floor(count));
    this.#wakeAll();
  }

  /** Most messages in hand at once: those of the running jobs, and those held ahead. */
  get capacity(): number {
    return this.#options.concurrency * this.#maxItems + this.#prefetch;
  }

  /**
   * Messages received and free to start as soon as a job ends. Those gathering
   * for a batch window while a slot is free are not counted: they wait for more
   * messages, which the receive loop should fetch, not for a slot.
   */
  get ready(): number {
    return this.#gathering ? 0 : this.#ready.length;
  }

  /**
   * Average time from start to end of a job's run (exponentially weighted, in ms),
   * or undefined before the first one ended: what a message held ahead waits.
   */
  get meanRunMs(): number | undefined {
    return this.#meanRunMs;
  }

  /**
   * What a message held ahead can expect one run to take, in ms: {@linkcode meanRunMs},
   * or the median time the running jobs have taken so far when that is longer. Jobs
   * that suddenly got slower show here long before the first of them ends, so a
   * worker stops taking messages it would only hold and give back. The median, so
   * that one hung job among many does not stop the prefetch of the others.
   */
  get expectedRunMs(): number | undefined {
    if (this.#meanRunMs === undefined || this.#startedAt.size === 0) return this.#meanRunMs;
    const now = this.#clock.now();
    const elapsed = [...this.#startedAt.values()].map((start) => now - start).sort((a, b) => a - b);
    return Math.max(this.#meanRunMs, elapsed[Math.floor((elapsed.length - 1) / 2)]);
  }

  /** Messages received and not yet settled. */
  get inHand(): number {
    return this.#inHand;
  }

  /** Jobs running right now. */
  get running(): number {
    return this.#running;
  }

  /** How many more messages may be received now. */
  get freeSlots(): number {
    return this.capacity - this.#inHand;
  }

  /** Takes a received message: starts it when a slot is free, or holds it (behind its FIFO group). */
  accept(message: JobMessage): void {
    this.#inHand += 1;
    const group = this.#laneOf(message);
    if (group !== undefined) {
      const lane = this.#lanes.get(group);
      if (lane) {
        lane.push(message);
        // A batch of this group gathering for its window may take it.
        if (this.#options.groupBatches && this.#gathering) this.#queueStart();
        return;
      }
      this.#lanes.set(group, []);
    }
    this.#makeReady(message);
    if (this.#options.batchWindowMs === undefined) this.#startReady();
    else this.#queueStart();
  }

  /** Starts jobs once the current turn's messages are all accepted (one receive, one batch). */
  #queueStart(): void {
    if (this.#startQueued) return;
    this.#startQueued = true;
    queueMicrotask(() => {
      this.#startQueued = false;
      this.#startReady();
    });
  }

  /** Removes and returns every message not yet started (for shutdown). */
  takeWaiting(): JobMessage[] {
    const waiting = this.#ready.splice(0).map((entry) => entry.message);
    if (this.#holdTimer !== undefined) this.#clock.clearTimer(this.#holdTimer);
    this.#holdTimer = undefined;
    this.#stopGathering();
    for (const lane of this.#lanes.values()) waiting.push(...lane.splice(0));
    return waiting;
  }

  /** Resolves at the next change of slots (a message settled or given back, or `prefetch` set), or when `signal` aborts. */
  changed(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.resolve();
    return this.#wait(() => true, signal);
  }

  /** Marks messages taken with `takeWaiting` as given back. */
  released(count: number): void {
    this.#free(count);
  }

  /**
   * Resolves once `count` slots are free, or `maxWaitMs` after the call (never,
   * for Infinity), or when `signal` aborts: lets one receive call fill several
   * slots that free up close together instead of one call per slot.
   */
  async slotsFree(count: number, maxWaitMs: number, signal?: AbortSignal): Promise<void> {
    if (this.freeSlots >= count || signal?.aborted) return;
    if (maxWaitMs === Infinity) return this.#wait(() => this.freeSlots >= count, signal);
    const timeout = new AbortController();
    const timer = this.#clock.setTimer(() => timeout.abort(WAIT_OVER), maxWaitMs);
    const either = signal ? AbortSignal.any([signal, timeout.signal]) : timeout.signal;
    try {
      await this.#wait(() => this.freeSlots >= count, either);
    } finally {
      this.#clock.clearTimer(timer);
    }
  }

  /** Resolves when no message is in hand. */
  idle(): Promise<void> {
    if (this.#inHand === 0) return Promise.resolve();
    return this.#wait(() => this.#inHand === 0);
  }

  #wait(condition: () => boolean, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const check = () => {
        if (!condition() && !signal?.aborted) return false;
        signal?.removeEventListener("abort", onAbort);
        resolve();
        return true;
      };
      const onAbort = () => {
        this.#waiters = this.#waiters.filter((waiter) => waiter !== wake);
        resolve();
      };
      const wake = () => {
        if (check()) this.#waiters = this.#waiters.filter((waiter) => waiter !== wake);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#waiters.push(wake);
    });
  }

  #free(count: number): void {
    this.#inHand -= count;
    this.#wakeAll();
  }

  #wakeAll(): void {
    for (const wake of [...this.#waiters]) wake();
  }

  /**
   * Starts jobs of the oldest ready messages while a slot is free. Ready messages
   * hold at most one of each FIFO group, so a job never gets two of one group,
   * except the run of one group that `groupBatches` takes from its lane. A job
   * that would be short of maxItems waits for the batch window, if there is one.
   */
  #startReady(): void {
    this.#stopGathering();
    while (this.#running < this.#options.concurrency && this.#ready.length > 0) {
      if (this.#nextBatchSize() < this.#maxItems && this.#windowOpen()) {
        this.#gatherUntilWindowEnds();
        break;
      }
      this.#start(this.#takeBatch());
    }
    this.#scheduleHoldCheck();
  }

  /** The messages of the next job: the oldest ready ones, or the oldest group's run. */
  #takeBatch(): JobMessage[] {
    const group = this.#options.groupBatches ? this.#laneOf(this.#ready[0].message) : undefined;
    if (group === undefined) {
      return this.#ready.splice(0, this.#maxItems).map((entry) => entry.message);
    }
    const head = this.#ready.shift()!.message;
    return [head, ...(this.#lanes.get(group)?.splice(0, this.#maxItems - 1) ?? [])];
  }

  /** How many messages the next job would take now. */
  #nextBatchSize(): number {
    const group = this.#options.groupBatches ? this.#laneOf(this.#ready[0].message) : undefined;
    const available = group === undefined
      ? this.#ready.length
      : 1 + (this.#lanes.get(group)?.length ?? 0);
    return Math.min(available, this.#maxItems);
  }

  /** The batch window of the oldest ready message has not passed yet. */
  #windowOpen(): boolean {
    const window = this.#options.batchWindowMs;
    if (window === undefined || window <= 0) return false;
    return this.#clock.now() - this.#ready[0].since < window;
  }

  /** Waits for the batch window of the oldest ready message, then starts what is there. */
  #gatherUntilWindowEnds(): void {
    this.#gathering = true;
    const due = this.#ready[0].since + this.#options.batchWindowMs! - this.#clock.now();
    this.#windowTimer = this.#clock.setTimer(() => {
      this.#windowTimer = undefined;
      this.#startReady();
    }, Math.max(0, due));
    // The receive loop fetches more for a job gathering its batch.
    this.#wakeAll();
  }

  #stopGathering(): void {
    this.#gathering = false;
    if (this.#windowTimer !== undefined) this.#clock.clearTimer(this.#windowTimer);
    this.#windowTimer = undefined;
  }

  #makeReady(message: JobMessage): void {
    this.#ready.push({ message, since: this.#clock.now() });
  }

  /** Arms one timer for the oldest held standard message, if any and if there is a limit. */
  #scheduleHoldCheck(): void {
    const limit = this.#options.holdLimitMs;
    // Messages gathering for a batch window wait for more messages, not for a slot.
    if (limit === undefined || this.#holdTimer !== undefined || this.#gathering) return;
    const oldest = this.#ready.find((entry) => this.#laneOf(entry.message) === undefined);
    if (!oldest) return;
    const due = oldest.since + limit - this.#clock.now();
    this.#holdTimer = this.#clock.setTimer(() => {
      this.#holdTimer = undefined;
      this.#giveBackHeldTooLong(limit);
      this.#scheduleHoldCheck();
    }, Math.max(0, due));
  }

  /**
   * A held message waited far longer than the prefetch expected (the jobs got
   * slower): give it back so that another worker can run it now.
   */
  #giveBackHeldTooLong(limit: number): void {
    const now = this.#clock.now();
    const expired = (entry: { message: JobMessage; since: number }) =>
      !this.#gathering && this.#laneOf(entry.message) === undefined && now - entry.since >= limit;
    for (const { message } of this.#ready.filter(expired)) {
      this.#options.abandon(message).then(() => this.#free(1));
    }
    this.#ready = this.#ready.filter((entry) => !expired(entry));
  }

  #start(messages: JobMessage[]): void {
    this.#running += 1;
    const started = this.#clock.now();
    this.#startedAt.set(messages, started);
    this.#options.run(messages).then((succeeded) => {
      this.#startedAt.delete(messages);
      const ms = this.#clock.now() - started;
      this.#meanRunMs = this.#meanRunMs === undefined
        ? ms
        : this.#meanRunMs + (ms - this.#meanRunMs) / 5;
      this.#running -= 1;
      // Once per group of the job (a group batch holds several of one group): its
      // lane goes on if all of them succeeded, else the rest of it is given back.
      const groups = new Map<string | undefined, { last: JobMessage; ok: boolean }>();
      messages.forEach((message, index) => {
        const key = this.#laneOf(message) ?? `\0${index}`;
        const seen = groups.get(key);
        groups.set(key, { last: message, ok: (seen?.ok ?? true) && succeeded[index] });
      });
      for (const { last, ok } of groups.values()) this.#next(last, ok);
      this.#free(messages.length);
      this.#startReady();
    });
  }

  /** The FIFO group whose order `message` keeps; none on a standard queue. */
  #laneOf(message: JobMessage): string | undefined {
    return this.#options.fifo ? message.groupId : undefined;
  }

  #next(finished: JobMessage, succeeded: boolean): void {
    const group = this.#laneOf(finished);
    if (group === undefined) return;
    const lane = this.#lanes.get(group);
    if (!lane) return;
    if (lane.length === 0) {
      this.#lanes.delete(group);
      return;
    }
    if (succeeded) {
      this.#makeReady(lane.shift()!);
      return;
    }
    // Running a later message of the group after a failure would break FIFO order:
    // give them all back so SQS redelivers the group from the failed message on.
    const later = lane.splice(0);
    this.#lanes.delete(group);
    for (const message of later) {
      this.#options.abandon(message).then(() => this.#free(1));
    }
  }
}

/** How much work `--prefetch auto` holds beyond the running jobs, in ms (by recent run times). */
export const AUTO_PREFETCH_HOLD_MS = 1_000;

/**
 * How long `--prefetch auto` lets a message wait ready before giving it back: five
 * times the work it meant to hold, so only jobs that suddenly got much slower trip it.
 */
export const AUTO_PREFETCH_GIVE_BACK_MS = 5 * AUTO_PREFETCH_HOLD_MS;

/** What decides the number of messages held ahead. */
export interface PrefetchPolicy {
  /** `--prefetch`: a fixed count, or "auto". */
  setting: number | "auto";
  concurrency: number;
  batchSize: number;
  /** {@linkcode Scheduler.expectedRunMs}. */
  expectedRunMs: number | undefined;
}

/**
 * Returns how many messages to hold ahead. "auto" holds none until a run time is
 * known, then about {@linkcode AUTO_PREFETCH_HOLD_MS} of work spread over the
 * slots, at most one receive batch: short jobs run back to back without waiting
 * for a receive call, and a long job never keeps messages from other workers.
 */
export function prefetchCount(policy: PrefetchPolicy): number {
  if (policy.setting !== "auto") return policy.setting;
  if (policy.expectedRunMs === undefined) return 0;
  const held = Math.floor(
    policy.concurrency * AUTO_PREFETCH_HOLD_MS / Math.max(policy.expectedRunMs, 1),
  );
  return Math.min(policy.batchSize, held);
}
