/**
 * Concurrency slots and FIFO group lanes. A message holds a slot from the moment
 * it is received until it is settled, so the receiver never takes more messages
 * than it can start; messages of one FIFO group run one at a time, in order.
 *
 * @module
 */
import type { JobMessage } from "./message.ts";

/** How the scheduler runs and gives back messages. */
export interface SchedulerOptions {
  /** Most messages in hand (running or waiting in a FIFO lane) at once. */
  concurrency: number;
  /** Runs and settles one message; resolves true when its job succeeded. Never rejects. */
  run(message: JobMessage): Promise<boolean>;
  /**
   * Gives back a message that will not run: a later message of a FIFO group whose
   * earlier message failed, or one still waiting at shutdown. Never rejects.
   */
  abandon(message: JobMessage): Promise<void>;
}

/** Admits messages into slots and lanes. */
export class Scheduler {
  #options: SchedulerOptions;
  #inHand = 0;
  #running = 0;
  #lanes = new Map<string, JobMessage[]>();
  #waiters: (() => void)[] = [];

  constructor(options: SchedulerOptions) {
    if (!Number.isInteger(options.concurrency) || options.concurrency < 1) {
      throw new RangeError("concurrency must be a positive integer");
    }
    this.#options = options;
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
    return this.#options.concurrency - this.#inHand;
  }

  /** Takes a received message: starts it, or queues it behind its FIFO group. */
  accept(message: JobMessage): void {
    this.#inHand += 1;
    const group = message.groupId;
    if (group === undefined) {
      this.#start(message);
      return;
    }
    const lane = this.#lanes.get(group);
    if (lane) {
      lane.push(message);
      return;
    }
    this.#lanes.set(group, []);
    this.#start(message);
  }

  /** Removes and returns every message not yet started (for shutdown). */
  takeWaiting(): JobMessage[] {
    const waiting: JobMessage[] = [];
    for (const lane of this.#lanes.values()) waiting.push(...lane.splice(0));
    return waiting;
  }

  /** Marks messages taken with `takeWaiting` as given back. */
  released(count: number): void {
    this.#free(count);
  }

  /** Resolves when a slot is free (at once if one is), or when `signal` aborts. */
  slotFree(signal?: AbortSignal): Promise<void> {
    if (this.freeSlots > 0 || signal?.aborted) return Promise.resolve();
    return this.#wait(() => this.freeSlots > 0, signal);
  }

  /**
   * Resolves once `count` slots are free, or `maxWaitMs` after the call (never,
   * for Infinity), or when
   * `signal` aborts: lets one receive call fill several slots that free up close
   * together instead of one call per slot.
   */
  async slotsFree(count: number, maxWaitMs: number, signal?: AbortSignal): Promise<void> {
    if (this.freeSlots >= count || signal?.aborted) return;
    if (maxWaitMs === Infinity) return this.#wait(() => this.freeSlots >= count, signal);
    const timeout = new AbortController();
    const timer = setTimeout(() => timeout.abort(), maxWaitMs);
    const either = signal ? AbortSignal.any([signal, timeout.signal]) : timeout.signal;
    try {
      await this.#wait(() => this.freeSlots >= count, either);
    } finally {
      clearTimeout(timer);
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
    for (const wake of [...this.#waiters]) wake();
  }

  #start(message: JobMessage): void {
    this.#running += 1;
    this.#options.run(message).then((succeeded) => {
      this.#running -= 1;
      this.#free(1);
      this.#next(message, succeeded);
    });
  }

  #next(finished: JobMessage, succeeded: boolean): void {
    const group = finished.groupId;
    if (group === undefined) return;
    const lane = this.#lanes.get(group);
    if (!lane) return;
    if (lane.length === 0) {
      this.#lanes.delete(group);
      return;
    }
    if (succeeded) {
      this.#start(lane.shift()!);
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
