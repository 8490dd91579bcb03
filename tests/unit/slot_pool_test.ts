/**
 * Unit tests of the slot pool: named states, the transitions it allows and the
 * ones it refuses, the most recently used idle slot first, and one disposal per
 * dead slot.
 */
import { deepStrictEqual, strictEqual } from "node:assert/strict";
import { SlotPool, type SlotResource } from "../../src/runners/slot_pool.ts";

class Resource implements SlotResource {
  disposed = 0;
  constructor(readonly id: number) {}
  dispose() {
    this.disposed++;
  }
}

function pool() {
  let next = 1;
  const made: Resource[] = [];
  const slots = new SlotPool(() => {
    const resource = new Resource(next++);
    made.push(resource);
    return resource;
  });
  return { slots, made };
}

Deno.test("SlotPool: a slot spawned ahead loads, then is idle, then busy once acquired", () => {
  const { slots } = pool();
  const first = slots.spawn();
  strictEqual(slots.stateOf(first), "loading");
  strictEqual(slots.count("loading"), 1);
  slots.loaded(first);
  strictEqual(slots.stateOf(first), "idle");
  strictEqual(slots.acquire(), first, "the idle slot is taken, not a new one");
  strictEqual(slots.stateOf(first), "busy");
  slots.release(first, true);
  strictEqual(slots.stateOf(first), "idle");
});

Deno.test("SlotPool: with no idle slot, acquire makes one that is busy from its start", () => {
  const { slots, made } = pool();
  const slot = slots.acquire();
  strictEqual(slots.stateOf(slot), "busy");
  slots.loaded(slot);
  strictEqual(slots.stateOf(slot), "busy", "a slot loading for a job stays that job's");
  strictEqual(made.length, 1);
});

Deno.test("SlotPool: the most recently used idle slot is acquired first", () => {
  const { slots } = pool();
  const [a, b] = [slots.acquire(), slots.acquire()];
  slots.release(a, true);
  slots.release(b, true);
  strictEqual(slots.acquire(), b);
  strictEqual(slots.acquire(), a);
});

Deno.test("SlotPool: a job that leaves its slot unusable kills it: disposed once, never reused", () => {
  const { slots, made } = pool();
  const slot = slots.acquire();
  slots.release(slot, false);
  strictEqual(slots.stateOf(slot), "dead");
  strictEqual(slot.disposed, 1);
  const next = slots.acquire();
  strictEqual(made.length, 2, "a dead slot is replaced by a new one");
  strictEqual(slots.stateOf(next), "busy");
});

Deno.test("SlotPool: transitions the diagram does not show are refused", () => {
  const { slots } = pool();
  const loading = slots.spawn();
  slots.release(loading, true);
  strictEqual(slots.stateOf(loading), "loading", "a loading slot has no job to end");
  const idle = slots.spawn();
  slots.loaded(idle);
  slots.release(idle, false);
  strictEqual(slots.stateOf(idle), "idle", "an idle slot has no job to end");
  slots.kill(idle);
  slots.kill(idle);
  slots.release(idle, true);
  slots.loaded(idle);
  strictEqual(slots.stateOf(idle), "dead", "nothing comes back from dead");
  strictEqual(idle.disposed, 1, "disposed once, however often it is killed");
});

Deno.test("SlotPool: a slot lost while idle is not acquired again", () => {
  const { slots } = pool();
  const slot = slots.acquire();
  slots.release(slot, true);
  slots.kill(slot);
  strictEqual(slots.count("idle"), 0);
  const next = slots.acquire();
  strictEqual(next === slot, false);
});

Deno.test("SlotPool: close kills every slot, whatever its state", () => {
  const { slots, made } = pool();
  slots.spawn();
  const busy = slots.acquire();
  const idle = slots.acquire();
  slots.release(idle, true);
  slots.close();
  deepStrictEqual(made.map((resource) => resource.disposed), [1, 1, 1]);
  strictEqual(slots.stateOf(busy), "dead");
  deepStrictEqual([slots.count("loading"), slots.count("idle"), slots.count("busy")], [0, 0, 0]);
});
