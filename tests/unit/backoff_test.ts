/** Unit tests of the capped exponential back-off. */
import { deepStrictEqual, strictEqual } from "node:assert/strict";
import { backoffDelay } from "../../src/worker/backoff.ts";

Deno.test("backoffDelay: attempt 1 is the floor, each attempt doubles, the cap holds", () => {
  const bounds = { floorMs: 250, capMs: 5_000 };
  deepStrictEqual(
    [1, 2, 3, 4, 5, 6, 7].map((attempt) => backoffDelay(attempt, bounds)),
    [250, 500, 1_000, 2_000, 4_000, 5_000, 5_000],
  );
});

Deno.test("backoffDelay: attempts below 1 give the floor, huge attempts stay finite at the cap", () => {
  const bounds = { floorMs: 100, capMs: 60_000 };
  strictEqual(backoffDelay(0, bounds), 100);
  strictEqual(backoffDelay(-3, bounds), 100);
  strictEqual(backoffDelay(1_000, bounds), 60_000);
  strictEqual(backoffDelay(Number.MAX_SAFE_INTEGER, bounds), 60_000);
});
