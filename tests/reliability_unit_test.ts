/**
 * Unit tests of the reliability suite's own logic (scripts/reliability/): the
 * ledger analysis that decides lost, duplicate and overlapping runs, the /proc
 * parsers, and the command line. A wrong verdict here would let a lost message
 * pass, so these are tested without any emulator.
 */
import { deepStrictEqual, ok, rejects, strictEqual, throws } from "node:assert/strict";
import { join } from "node:path";
import {
  deliveryReport,
  findOverlaps,
  FolderGoneError,
  parseLedger,
  readLedger,
  redeliveredAfterDelete,
  runningAt,
} from "../scripts/reliability/ledger.ts";
import { readLog } from "../scripts/reliability/harness.ts";
import { parseProcStat, parseVmRss } from "../scripts/reliability/procfs.ts";
import { maxReceiveFailures } from "../scripts/reliability/outage.ts";
import { longestStall } from "../scripts/reliability/runaway.ts";
import { parseTestSummary } from "../scripts/reliability/hostile.ts";
import { crashBodies, isChatty } from "../scripts/reliability/crash.ts";
import { formatTable, parseSuiteArgs } from "../scripts/reliability.ts";

const LEDGER = [
  "S a 100 10 1000 1",
  "S b 101 10 1100 1",
  "E a 100 10 2000",
  "S a 200 20 1500 2", // a again, while the first run of a was still running
  "E a 200 20 2500",
  "S c 300 10 3000 1", // never ends (its worker died, say)
  "S b 400 20 9000 2",
  "E b 400 20 9500",
  "E b 101 10 5000", // the first run of b ends late: runs of b overlap
  "garbage line",
  "E x 999 1 1", // an end without a start is ignored
  "S d 500 1", // a torn last line: too few fields, skipped
].join("\n");

Deno.test("reliability ledger: starts and ends pair by body and job pid", () => {
  const runs = parseLedger(LEDGER);
  deepStrictEqual(
    runs.map((run) => [run.body, run.jobPid, run.workerPid, run.startNs, run.endNs]),
    [
      ["a", 100, 10, 1000n, 2000n],
      ["b", 101, 10, 1100n, 5000n],
      ["a", 200, 20, 1500n, 2500n],
      ["c", 300, 10, 3000n, undefined],
      ["b", 400, 20, 9000n, 9500n],
    ],
  );
  deepStrictEqual(runs.map((run) => run.receiveCount), [1, 1, 2, 1, 2]);
});

Deno.test("reliability ledger: overlapping runs of one message are found; an open run overlaps", () => {
  const overlaps = findOverlaps(parseLedger(LEDGER));
  deepStrictEqual(overlaps.map((o) => [o.body, o.first.jobPid, o.second.jobPid]), [
    ["a", 100, 200],
  ]);
  const open = parseLedger("S z 1 1 100 1\nS z 2 1 200 2\nE z 2 1 300");
  strictEqual(findOverlaps(open).length, 1, "a run without an end may still be running");
  strictEqual(findOverlaps(parseLedger("S y 1 1 100 1\nE y 1 1 200\nS y 2 1 200 2")).length, 0);
});

Deno.test("reliability ledger: lost means no success sqsrun saw, whatever orphans wrote", () => {
  const runs = parseLedger(LEDGER);
  const report = deliveryReport(["a", "b", "c", "e"], runs, new Set(["a", "b"]));
  strictEqual(report.pushed, 4);
  strictEqual(report.runs, 5);
  strictEqual(report.duplicates, 2);
  deepStrictEqual(report.runMoreThanOnce.sort(), ["a", "b"]);
  deepStrictEqual(report.lost, ["c", "e"], "c only has a run without an observed success");
  deepStrictEqual(report.unknown, []);
  const stray = deliveryReport(["a"], parseLedger("S q 1 1 1 1\nE q 1 1 2"), new Set(["a"]));
  deepStrictEqual(stray.unknown, ["q"]);
  const [first] = runs;
  ok(runningAt(first, 1500n));
  ok(!runningAt(first, 2000n));
  ok(runningAt(runs[3], 10_000n), "an open run is running at any later time");
});

Deno.test("reliability ledger: a run after an acknowledged delete is the queue's duplicate", () => {
  // b ran at 1100 and 9000; the queue acknowledged deleting b at 6000: the second run
  // is the queue's. a's delete came after both runs: its duplicate is sqsrun's.
  const runs = parseLedger(LEDGER);
  const deletedAt = (body: string) => ({ a: 3000n, b: 6000n } as Record<string, bigint>)[body];
  deepStrictEqual(
    redeliveredAfterDelete(runs, deletedAt).map((run) => [run.body, run.jobPid]),
    [["b", 400]],
  );
  const report = deliveryReport(["a", "b", "c"], runs, new Set(["a", "b"]), deletedAt);
  strictEqual(report.duplicates, 2);
  strictEqual(report.redelivered, 1);
  strictEqual(report.ownDuplicates, 1);
  deepStrictEqual(report.runMoreThanOnce, ["a"]);
});

Deno.test("reliability ledger and logs: an absent file is empty, an absent folder is an error", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sqsrun-reliability-unit-" });
  try {
    // No job has written yet: an empty ledger, an empty log.
    deepStrictEqual(await readLedger(join(dir, "ledger")), []);
    deepStrictEqual(await readLog(join(dir, "worker-0.log")), []);
    await Deno.writeTextFile(join(dir, "ledger"), "S a 100 10 1000 1\nE a 100 10 2000\n");
    await Deno.writeTextFile(
      join(dir, "worker-0.log"),
      '{"level":"info","msg":"job finished","message_id":"m1","outcome":"succeeded"}\n',
    );
    strictEqual((await readLedger(join(dir, "ledger"))).length, 1);
    strictEqual((await readLog(join(dir, "worker-0.log"))).length, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  // The folder removed under the scenario (the one failed run of scenario 4 on
  // ElasticMQ): reading it as empty would report every message lost and no job run.
  await rejects(readLedger(join(dir, "ledger")), FolderGoneError);
  await rejects(readLog(join(dir, "worker-0.log")), FolderGoneError);
  await rejects(readLedger(join(dir, "ledger")), /was removed while the scenario ran/);
});

Deno.test("reliability procfs: stat fields after a command name with spaces and parentheses", () => {
  const stat = parseProcStat(
    "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0 99 0 0",
  );
  deepStrictEqual(stat, {
    pid: 4242,
    state: "S",
    ppid: 1,
    pgrp: 4242,
    session: 4242,
    userSeconds: 2.5,
    systemSeconds: 0.75,
  });
  strictEqual(parseProcStat("nonsense"), undefined);
  strictEqual(parseVmRss("Name:\tdeno\nVmRSS:\t  102400 kB\n"), 100 * 1024 * 1024);
  strictEqual(parseVmRss("Name:\tzombie\n"), undefined);
});

Deno.test("reliability: small helpers of the scenarios", () => {
  strictEqual(maxReceiveFailures(8), 7);
  strictEqual(maxReceiveFailures(30), 8);
  strictEqual(longestStall([3_000_000_000n, 1_000_000_000n, 1_500_000_000n]), 1.5);
  strictEqual(longestStall([]), 0);
  const bodies = crashBodies(20);
  strictEqual(new Set(bodies).size, 20);
  ok(bodies.every((body) => /^c-\d{5}-(\d|[1-9]\d|[12]\d\d|300)$/.test(body)), bodies.join());
  ok(isChatty("c-00007-12") && !isChatty("c-00010-3"));
  deepStrictEqual(
    parseTestSummary("\x1b[32mok\x1b[0m | 10 passed (85 steps) | 0 failed | 3 ignored"),
    {
      passed: 10,
      steps: 85,
      failed: 0,
      ignored: 3,
    },
  );
  strictEqual(parseTestSummary("no summary"), undefined);
});

Deno.test("reliability: command line and table", () => {
  const quick = parseSuiteArgs(["--quick"]);
  deepStrictEqual(quick.backends, ["moto", "elasticmq"]);
  ok(!quick.scenarios.includes(7), "the quick form leaves scenario 7 to deno task test");
  deepStrictEqual(parseSuiteArgs([]).scenarios, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
  deepStrictEqual(parseSuiteArgs(["--scenario", "3", "--scenario", "1"]).scenarios, [1, 3]);
  deepStrictEqual(parseSuiteArgs(["--backend", "moto"]).backends, ["moto"]);
  throws(() => parseSuiteArgs(["--backend", "sqs"]), /moto, elasticmq or both/);
  throws(() => parseSuiteArgs(["--scenario", "15"]), /one of 1, 2/);
  throws(() => parseSuiteArgs(["--bogus"]));
  const table = formatTable([{
    scenario: { id: 1, name: "crash", budgetMs: () => 1, run: () => Promise.reject() },
    backend: "moto",
    ok: true,
    seconds: 12.34,
    figures: { messages: 10, kills: 2, duplicates: 3, lost: 0, notes: [] },
    failures: [],
  }]).split("\n");
  strictEqual(table.length, 3);
  ok(table[2].startsWith("| 1 | crash    | moto    | pass   | 10       | 2     | 3 "), table[2]);
});
