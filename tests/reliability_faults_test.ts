/**
 * Unit tests of the fault-injection scenarios' own logic (scripts/reliability/,
 * scenarios 9-13): what a job read on stdin, whose a run at the same time is, burst
 * windows, silences, and the witness's faults (against a fake upstream on
 * loopback, no emulator).
 */
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import {
  findOverlaps,
  parseLedger,
  splitOverlaps,
  truncatedInputs,
} from "../scripts/reliability/ledger.ts";
import {
  analyseRuns,
  bodyMs,
  burstWindows,
  inWindows,
  lapsedRuns,
  timedBodies,
  witnessView,
} from "../scripts/reliability/faults.ts";
import { longestSilence } from "../scripts/reliability/stall.ts";
import { BODY_BYTES, paddedBody } from "../scripts/reliability/batchkill.ts";
import { formatFaultTable } from "../scripts/reliability.ts";
import {
  callsBetween,
  racedDeliveries,
  type RelayedAnswer,
  startSqsWitness,
  type WitnessCall,
} from "../scripts/reliability/witness.ts";

Deno.test("reliability faults: start lines with what the job read; truncated and empty inputs", () => {
  const runs = parseLedger([
    "S a 100 10 1000 1 5 5", // whole
    "S b 101 10 1100 1 65536 100000", // cut short
    "S  102 1 1200 1 0 100000", // empty: the worker died before writing
    "S c 103 10 1300 1 0 -", // SQSRUN_BODY_BYTES unset, nothing read
    "S d 104 10 1400 1 3 -", // unset, something read: not judged
    "S e 105 10 1500 2", // an old start line: not judged
  ].join("\n"));
  deepStrictEqual(runs.map((run) => [run.body, run.readBytes, run.bodyBytes]), [
    ["a", 5, 5],
    ["b", 65536, 100000],
    ["", 0, 100000],
    ["c", 0, undefined],
    ["d", 3, undefined],
    ["e", undefined, undefined],
  ]);
  deepStrictEqual(truncatedInputs(runs).map((run) => run.jobPid), [101, 102, 103]);
});

Deno.test("reliability faults: a run at the same time is the queue's only for one delivery handed out twice", () => {
  const overlaps = findOverlaps(parseLedger([
    "S a 1 10 100 2",
    "S a 2 20 150 2", // same receive count as the first: one delivery, twice
    "E a 1 10 300",
    "E a 2 20 320",
    "S b 3 10 100 1",
    "S b 4 20 200 2", // a lapsed visibility: a new delivery
    "E b 3 10 300",
    "E b 4 20 400",
    "S c 5 10 100 1",
    "S c 6 20 150 1", // same count, but the witness saw it once: sqsrun's
    "E c 5 10 300",
    "E c 6 20 400",
  ].join("\n")));
  const split = splitOverlaps(overlaps, (body, count) => body === "a" && count === 2);
  deepStrictEqual(split.queue.map((o) => o.body), ["a"]);
  deepStrictEqual(split.own.map((o) => o.body), ["b", "c"]);
});

Deno.test("reliability faults: a visibility lapsed when the queue delivered the message again during its run", () => {
  const ms = 1_000_000n;
  const runs = parseLedger([
    `S a 1 10 ${1000n * ms} 1`,
    `E a 1 10 ${5000n * ms}`,
    `S b 2 10 ${1000n * ms} 1`,
    `E b 2 10 ${5000n * ms}`,
    `S c 3 10 ${1000n * ms} 2`, // never ends: counts until now
    `S d 4 10 ${1000n * ms} 1`,
    `E d 4 10 ${5000n * ms}`,
  ].join("\n"));
  const deliveries: Record<string, { receiveCount: number; at: number }[]> = {
    A: [{ receiveCount: 1, at: 900 }, { receiveCount: 2, at: 3000 }], // lapsed mid-run
    B: [{ receiveCount: 1, at: 900 }, { receiveCount: 2, at: 6000 }], // after the run: no
    C: [{ receiveCount: 2, at: 900 }, { receiveCount: 3, at: 99_000 }], // open run: lapsed
    D: [{ receiveCount: 1, at: 900 }, { receiveCount: 1, at: 2000 }], // same count: the queue's race
  };
  const ids = new Map([["a", "A"], ["b", "B"], ["c", "C"], ["d", "D"]]);
  deepStrictEqual(lapsedRuns(runs, ids, (id) => deliveries[id] ?? []).map((run) => run.body), [
    "a",
    "c",
  ]);
});

Deno.test("reliability faults: a duplicate is the queue's only when its delivery came after the delete", () => {
  const ms = 1_000_000n;
  const runs = parseLedger([
    // a: delivered again at 2 s (a lapse), its run held until after the delete at 3 s
    `S a 1 10 ${1000n * ms} 1`,
    `E a 1 10 ${2500n * ms}`,
    `S a 2 20 ${4000n * ms} 2`,
    `E a 2 20 ${4500n * ms}`,
    // b: delivered again at 6 s, after its delete at 3 s was acknowledged (the queue's)
    `S b 3 10 ${1000n * ms} 1`,
    `E b 3 10 ${2500n * ms}`,
    `S b 4 20 ${6100n * ms} 2`,
    `E b 4 20 ${6500n * ms}`,
  ].join("\n"));
  const deliveries: Record<string, { receiveCount: number; at: number }[]> = {
    A: [{ receiveCount: 1, at: 900 }, { receiveCount: 2, at: 2000 }],
    B: [{ receiveCount: 1, at: 900 }, { receiveCount: 2, at: 6000 }],
  };
  const ids = new Map([["A", "a"], ["B", "b"]]);
  const analysis = analyseRuns(["a", "b"], runs, new Set(["a", "b"]), ids, {
    deletedAt: () => 3000,
    timesDelivered: () => 1,
    deliveriesOf: (id) => deliveries[id] ?? [],
  });
  strictEqual(analysis.report.duplicates, 2);
  strictEqual(analysis.report.redelivered, 1);
  deepStrictEqual(analysis.report.runMoreThanOnce, ["a"]);
  deepStrictEqual(analysis.lapsed.map((run) => run.body), ["a"]);
});

Deno.test("reliability faults: two runs of one delivery the queue handed out twice are the queue's", () => {
  const runs = parseLedger([
    "S a 1 10 100 2",
    "S a 2 20 110 2",
    "E a 1 10 300",
    "E a 2 20 310",
  ].join("\n"));
  const view = (times: number) => ({
    deletedAt: () => undefined,
    timesDelivered: () => times,
    deliveriesOf: () => [],
  });
  const twice = analyseRuns(["a"], runs, new Set(["a"]), new Map([["A", "a"]]), view(2));
  strictEqual(twice.report.ownDuplicates, 0);
  strictEqual(twice.report.redelivered, 1);
  strictEqual(twice.overlaps.queue.length, 1);
  strictEqual(twice.overlaps.own.length, 0);
  // Seen once by the witness: the worker ran one delivery twice, sqsrun's.
  const once = analyseRuns(["a"], runs, new Set(["a"]), new Map([["A", "a"]]), view(1));
  strictEqual(once.report.ownDuplicates, 1);
  strictEqual(once.overlaps.own.length, 1);
});

Deno.test("reliability faults: bodies, bursts, silences", () => {
  const bodies = timedBodies("x", 50, 3_000, 8_000);
  strictEqual(new Set(bodies).size, 50);
  ok(bodies.every((body) => bodyMs(body) >= 3_000 && bodyMs(body) <= 8_000), bodies.join());
  const padded = paddedBody("k1-01");
  strictEqual(padded.length, BODY_BYTES);
  strictEqual(padded.split(".")[0], "k1-01");

  const windows = burstWindows(1_000, 3, 8_000, 4_000);
  deepStrictEqual(windows, [
    { from: 1_000, to: 9_000 },
    { from: 13_000, to: 21_000 },
    { from: 25_000, to: 33_000 },
  ]);
  ok(inWindows(windows, 1_000) && inWindows(windows, 8_999) && inWindows(windows, 20_000));
  ok(!inWindows(windows, 9_000) && !inWindows(windows, 12_999) && !inWindows(windows, 33_000));

  const call = (at: number, action = "ReceiveMessage"): WitnessCall => ({
    action,
    at,
    answeredAt: at,
    status: 200,
    outcome: "relayed",
    heldMs: 0,
    count: 0,
  });
  const calls = [call(1_500), call(2_000, "DeleteMessageBatch"), call(9_000), call(20_000)];
  // Gaps in [1000, 10000): 500 to the first call, 500, 7000, then 1000 to the end.
  strictEqual(longestSilence(calls, 1_000, 10_000), 7_000);
  strictEqual(longestSilence([], 1_000, 4_000), 3_000);
  strictEqual(callsBetween(calls, ["ReceiveMessage"], 1_000, 9_000).length, 1);
  strictEqual(callsBetween(calls, ["ReceiveMessage", "DeleteMessageBatch"], 0, 9_001).length, 3);
});

Deno.test("reliability faults: the fault table names the fault and whose the duplicates are", () => {
  const scenario = { id: 12, name: "5xx", budgetMs: () => 1, run: () => Promise.reject() };
  const table = formatFaultTable([
    {
      scenario: { id: 1, name: "crash", budgetMs: () => 1, run: () => Promise.reject() },
      backend: "moto",
      ok: true,
      seconds: 1,
      figures: { messages: 1, notes: [] },
      failures: [],
    },
    {
      scenario,
      backend: "elasticmq",
      ok: false,
      seconds: 30.04,
      figures: {
        fault: "HTTP 500/503 on deletes",
        magnitude: "3 bursts of 8.0 s",
        messages: 100,
        duplicates: 12,
        duplicatesWhose: "11 sqsrun's, 1 queue's",
        overlaps: 1,
        queueOverlaps: 1,
        truncated: 0,
        lost: 0,
        notes: [],
      },
      failures: ["x"],
    },
  ]).split("\n");
  strictEqual(table.length, 3, "only the fault scenario's row");
  ok(table[0].startsWith("| #  | fault "), table[0]);
  for (
    const part of ["FAIL", "3 bursts of 8.0 s", "12 (11 sqsrun's, 1 queue's)", "1 (1 queue's)"]
  ) {
    ok(table[2].includes(part), `${part} in ${table[2]}`);
  }
});

/** A fake SQS upstream: answers ReceiveMessage with one message, everything else with {}. */
function fakeUpstream() {
  const seen: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const action = (request.headers.get("x-amz-target") ?? "").replace(/^AmazonSQS\./, "");
    seen.push(action);
    if (action === "ReceiveMessage") {
      return Response.json({
        Messages: [{
          MessageId: "m1",
          ReceiptHandle: `h${seen.length}`,
          Body: "b",
          Attributes: { ApproximateReceiveCount: "1" },
        }],
      });
    }
    if (action === "DeleteMessage") return Response.json({});
    return Response.json({});
  });
  return { url: `http://127.0.0.1:${server.addr.port}`, seen, close: () => server.shutdown() };
}

async function call(url: string, action: string, body: unknown = {}) {
  const response = await fetch(url, {
    method: "POST",
    headers: {
      "x-amz-target": `AmazonSQS.${action}`,
      "content-type": "application/x-amz-json-1.0",
    },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

Deno.test("reliability faults: the witness holds answers, fails calls with SQS 5xx, and reports relayed answers", async () => {
  const upstream = fakeUpstream();
  const witness = startSqsWitness(upstream.url);
  try {
    const relayed: RelayedAnswer[] = [];
    witness.faults = {
      delayMs: (action) => (action === "ReceiveMessage" ? 300 : undefined),
      fail: (action) => (action === "DeleteMessage" ? 503 : undefined),
      onRelayed: (answer) => relayed.push(answer),
    };
    const started = performance.now();
    const received = await call(witness.url, "ReceiveMessage", { QueueUrl: "q" });
    const took = performance.now() - started;
    strictEqual(received.status, 200);
    ok(took >= 280, `the answer was held ${took} ms`);
    // The request reached the upstream at once, before the answer was handed back.
    deepStrictEqual(upstream.seen, ["ReceiveMessage"]);

    const refused = await call(witness.url, "DeleteMessage", { ReceiptHandle: "h1" });
    strictEqual(refused.status, 503);
    strictEqual(refused.body.__type, "com.amazonaws.sqs#ServiceUnavailable");
    deepStrictEqual(upstream.seen, ["ReceiveMessage"], "a failed call never reaches the emulator");
    strictEqual(witness.deletedAt("m1"), undefined);

    witness.faults = {};
    await call(witness.url, "ReceiveMessage", { QueueUrl: "q" });
    strictEqual((await call(witness.url, "DeleteMessage", { ReceiptHandle: "h2" })).status, 200);
    ok(witness.deletedAt("m1") !== undefined);
    strictEqual(witness.timesDelivered("m1", 1), 2, "two answers carried receive count 1");
    strictEqual(witnessView([witness]).timesDelivered("m1", 1), 2);
    deepStrictEqual(witness.deliveriesOf("m1").map((d) => d.receiveCount), [1, 1]);

    strictEqual(relayed.length, 1);
    strictEqual(relayed[0].call.action, "ReceiveMessage");
    strictEqual(relayed[0].call.count, 1);
    ok(relayed[0].call.heldMs >= 280);
    ok(relayed[0].request.includes('"QueueUrl":"q"'));
    deepStrictEqual(witness.calls.map((c) => [c.action, c.outcome, c.status]), [
      ["ReceiveMessage", "relayed", 200],
      ["DeleteMessage", "failed", 503],
      ["ReceiveMessage", "relayed", 200],
      ["DeleteMessage", "relayed", 200],
    ]);
  } finally {
    await witness.close();
    await upstream.close();
  }
});

Deno.test("reliability faults: a second delivery is the queue's race only while nothing released the first", () => {
  // moto answered two overlapping calls with one message, with counts 2 and 1 (F13)
  const raced = [{ receiveCount: 2, at: 1_000 }, { receiveCount: 1, at: 1_010 }];
  deepStrictEqual(racedDeliveries(raced, [], 1_000), [raced[1]]);
  // a worker released it (a visibility change at 1,005) before the second delivery
  deepStrictEqual(racedDeliveries(raced, [1_005], 1_000), []);
  // the first delivery's visibility had had time to lapse
  deepStrictEqual(
    racedDeliveries([{ receiveCount: 1, at: 1_000 }, { receiveCount: 2, at: 5_500 }], [], 1_000),
    [],
  );
});
