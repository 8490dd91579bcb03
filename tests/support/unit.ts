/**
 * Small helpers of the unit tests: a message to work on, a promise the test
 * settles itself, and whether a promise has settled yet.
 *
 * @module
 */
import type { JobMessage } from "../../src/worker/message.ts";
import { settle } from "./fake_clock.ts";

/** A promise with its resolve and reject at hand. */
export interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
}

/** Returns a promise that the test settles. */
export function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** True when `promise` has settled once the promise callbacks pending now have run. */
export async function hasSettled(promise: Promise<unknown>): Promise<boolean> {
  let settled = false;
  promise.then(() => settled = true, () => settled = true);
  await settle();
  return settled;
}

/** A received message of a standard queue, received at time 0 unless `overrides` say otherwise. */
export function jobMessage(id: string, overrides: Partial<JobMessage> = {}): JobMessage {
  return {
    id,
    receiptHandle: `rh-${id}`,
    body: `body of ${id}`,
    queueUrl: "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs",
    receiveCount: 1,
    attributes: {},
    receiveSentAt: 0,
    ...overrides,
  };
}
