/**
 * The worker against both real SQS emulators: one test per behaviour the worker
 * promises, each failing when that behaviour breaks.
 */
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import {
  GetQueueAttributesCommand,
  SetQueueAttributesCommand,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import { awsEnv, type SqsBackend, sqsBackends, uniqueName } from "./support/local_aws.ts";
import {
  createQueue,
  deleteQueue,
  peekBodies,
  queueCounts,
  sendMessages,
  testClient,
} from "./support/sqs.ts";
import {
  type LogLine,
  processAlive,
  startWorker,
  waitUntil,
  type WorkerProcess,
} from "./support/worker.ts";
import { startTcpProxy } from "./support/tcp_proxy.ts";
import { mixedBody } from "./support/bodies.ts";
import { startSqsWitness } from "../scripts/reliability/witness.ts";

interface Fixture {
  backend: SqsBackend;
  client: SQSClient;
  url: string;
  dir: string;
  ledger: string;
  env: Record<string, string>;
  /** Writes an executable shell script into the fixture's folder. */
  script(name: string, body: string): Promise<string>;
  /** Lines of the ledger file the jobs append to. */
  ledgerLines(): Promise<string[]>;
  workers: WorkerProcess[];
  /** Run after the workers stopped, before the queue is deleted. */
  cleanup: (() => Promise<void>)[];
  /** Starts a worker on the fixture's queue. */
  worker(args: string[], endpoint?: string): WorkerProcess;
}

async function withFixture(
  backend: SqsBackend,
  options: { fifo?: boolean; attributes?: Record<string, string> },
  body: (fixture: Fixture) => Promise<void>,
): Promise<void> {
  const client = testClient(backend.endpoint);
  const name = uniqueName("worker") + (options.fifo ? ".fifo" : "");
  const url = await createQueue(client, name, options.attributes);
  const dir = await Deno.makeTempDir({ prefix: "sqsrun-worker-" });
  const ledger = `${dir}/ledger`;
  await Deno.writeTextFile(ledger, "");
  const env = {
    ...awsEnv(backend.endpoint),
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    HOME: Deno.env.get("HOME") ?? dir,
  };
  const fixture: Fixture = {
    backend,
    client,
    url,
    dir,
    ledger,
    env,
    workers: [],
    cleanup: [],
    async script(scriptName, text) {
      const path = `${dir}/${scriptName}`;
      await Deno.writeTextFile(path, `#!/bin/sh\nLEDGER='${ledger}'\nDIR='${dir}'\n${text}\n`);
      await Deno.chmod(path, 0o755);
      return path;
    },
    async ledgerLines() {
      const text = await Deno.readTextFile(ledger);
      return text.split("\n").filter((line) => line.length > 0);
    },
    worker(args, endpoint) {
      const workerEnv = endpoint ? { ...env, ...awsEnv(endpoint) } : env;
      const process = startWorker(["-q", url, ...args], { env: workerEnv });
      fixture.workers.push(process);
      return process;
    },
  };
  try {
    await body(fixture);
  } finally {
    await Promise.all(fixture.workers.map((worker) => worker.stop()));
    for (const step of fixture.cleanup) await step();
    await deleteQueue(client, url);
    client.destroy();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

async function queueEmpty(fixture: Fixture): Promise<boolean> {
  const counts = await queueCounts(fixture.client, fixture.url);
  return counts.visible === 0 && counts.inFlight === 0 && counts.delayed === 0;
}

/** Parses ledger lines "WORD ... NANOS" into [word, rest, ms]. */
function timed(line: string): { word: string; rest: string; ms: number } {
  const parts = line.split(" ");
  return {
    word: parts[0],
    rest: parts.slice(1, -1).join(" "),
    ms: Number(BigInt(parts[parts.length - 1]) / 1_000_000n),
  };
}

/** Pids of the job watchdogs of worker `pid` (their command line ends with it). */
function watchdogsOf(pid: number): number[] {
  const found: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const args = Deno.readTextFileSync(`/proc/${entry.name}/cmdline`).split("\0").slice(0, -1);
      if (args.at(-2) === "sqsrun-watchdog" && args.at(-1) === String(pid)) {
        found.push(Number(entry.name));
      }
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}

const testOptions = { sanitizeOps: false, sanitizeResources: false };

for (const backend of sqsBackends()) {
  const test = (name: string, fn: () => Promise<void>) =>
    Deno.test({ name: `worker [${backend.name}]: ${name}`, fn, ...testOptions });

  test("a job that exits 0 deletes its message; env, stdin and output reach where they should", async () => {
    await withFixture(backend, {}, async (fixture) => {
      const job = await fixture.script(
        "job.sh",
        `cat > "$DIR/body-$SQSRUN_MESSAGE_ID"
echo "$SQSRUN_MESSAGE_ID|$SQSRUN_RECEIVE_COUNT|$SQSRUN_ATTR_COLOR|$GREETING|$SQSRUN_QUEUE_URL|$SQSRUN_SENT_TIMESTAMP|$1|$SQSRUN_BODY_BYTES" >> "$LEDGER"
echo "hello from the job"
echo "complaint" >&2`,
      );
      const ids = await sendMessages(fixture.client, fixture.url, [
        { body: "first", attributes: { color: "red" } },
        { body: "sécond ✓", attributes: { color: "blue" } },
      ]);
      const worker = fixture.worker([
        "--exec",
        job,
        "--env",
        "GREETING=hi",
        "--wait",
        "1",
        "--",
        "arg1",
      ]);
      await waitUntil("both jobs ran", async () => (await fixture.ledgerLines()).length === 2);
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
      const rows = (await fixture.ledgerLines()).map((line) => line.split("|")).sort((a, b) =>
        ids.indexOf(a[0]) - ids.indexOf(b[0])
      );
      deepStrictEqual(
        rows.map((row) => [row[0], row[1], row[2], row[3], row[4], row[6], row[7]]),
        [
          [ids[0], "1", "red", "hi", fixture.url, "arg1", "5"],
          [ids[1], "1", "blue", "hi", fixture.url, "arg1", "11"],
        ],
      );
      ok(Number(rows[0][5]) > Date.now() - 600_000, "SQSRUN_SENT_TIMESTAMP is epoch ms");
      strictEqual(await Deno.readTextFile(`${fixture.dir}/body-${ids[0]}`), "first");
      strictEqual(await Deno.readTextFile(`${fixture.dir}/body-${ids[1]}`), "sécond ✓");
      const finished = worker.lines.filter((line) => line.msg === "job finished");
      deepStrictEqual(finished.map((line) => line.exit_code), [0, 0]);
      ok(finished.every((line) => typeof line.duration_ms === "number" && line.signal === null));
      const output = worker.lines.find((line) => line.msg === "hello from the job");
      strictEqual(output?.stream, "stdout");
      ok(ids.includes(output?.message_id as string), "output lines carry the message id");
      ok(worker.lines.some((line) => line.msg === "complaint" && line.stream === "stderr"));
      ok(
        worker.lines.every((line) => typeof line.ts === "string" && typeof line.level === "string"),
      );
    });
  });

  test("by default a failed message comes back after a back-off of 5 s, doubling per receive", async () => {
    await withFixture(backend, {}, async (fixture) => {
      const job = await fixture.script("job.sh", `echo ran >> "$LEDGER"; exit 1`);
      await sendMessages(fixture.client, fixture.url, ["fails"]);
      const worker = fixture.worker(["--exec", job, "--wait", "1"]);
      const released = await worker.waitForLine((line) => line.msg === "message released");
      strictEqual(released.visible_in_s, 5);
      // Not a hot loop: no second run within the back-off.
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      deepStrictEqual(await fixture.ledgerLines(), ["ran"]);
    });
  });

  test("a failing job releases its message, which runs again with a growing receive count", async () => {
    await withFixture(backend, {}, async (fixture) => {
      const job = await fixture.script(
        "job.sh",
        `echo "$SQSRUN_RECEIVE_COUNT" >> "$LEDGER"; [ "$SQSRUN_RECEIVE_COUNT" -ge 3 ] || exit 7`,
      );
      await sendMessages(fixture.client, fixture.url, ["retry me"]);
      const worker = fixture.worker(["--exec", job, "--backoff", "off", "--wait", "1"]);
      await waitUntil("the third run", async () => (await fixture.ledgerLines()).length >= 3);
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
      deepStrictEqual(await fixture.ledgerLines(), ["1", "2", "3"]);
      const failed = worker.lines.filter((line) => line.msg === "job failed");
      deepStrictEqual(failed.map((line) => [line.exit_code, line.receive_count]), [[7, 1], [7, 2]]);
    });
  });

  test("a job longer than 3x the visibility timeout never runs twice at once across two workers", async () => {
    await withFixture(backend, {}, async (fixture) => {
      const job = await fixture.script(
        "job.sh",
        `echo "start $(date +%s%N)" >> "$LEDGER"; sleep 7; echo "end $(date +%s%N)" >> "$LEDGER"`,
      );
      await sendMessages(fixture.client, fixture.url, ["long"]);
      const args = ["--exec", job, "-t", "2", "-e", "1", "-x", "30", "--wait", "1"];
      fixture.worker(args);
      fixture.worker(args);
      await waitUntil(
        "the job ended",
        async () => (await fixture.ledgerLines()).length >= 2,
        20_000,
      );
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
      // Give a lapsed message every chance to show up at the other worker.
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      deepStrictEqual((await fixture.ledgerLines()).map((line) => line.split(" ")[0]), [
        "start",
        "end",
      ]);
    });
  });

  test("a job ignoring SIGTERM is killed with its whole process group and its message comes back", async () => {
    await withFixture(backend, {}, async (fixture) => {
      const job = await fixture.script(
        "job.sh",
        `if [ "$SQSRUN_RECEIVE_COUNT" -ge 2 ]; then echo second >> "$LEDGER"; exit 0; fi
trap '' TERM
sh -c 'echo $$ > "$0/grandchild"; exec sleep 300' "$DIR" &
echo first >> "$LEDGER"
sleep 300`,
      );
      await sendMessages(fixture.client, fixture.url, ["stubborn"]);
      const worker = fixture.worker([
        "--exec",
        job,
        "-t",
        "10",
        "-e",
        "5",
        "-x",
        "2",
        "-X",
        "1",
        "--kill-grace",
        "2",
        "--wait",
        "1",
      ]);
      await waitUntil("the grandchild started", async () => {
        try {
          return (await Deno.readTextFile(`${fixture.dir}/grandchild`)).trim().length > 0;
        } catch {
          return false;
        }
      });
      const grandchild = Number((await Deno.readTextFile(`${fixture.dir}/grandchild`)).trim());
      ok(processAlive(grandchild));
      const killed = await worker.waitForLine((line) => line.msg === "job failed", 20_000);
      strictEqual(killed.outcome, "killed");
      strictEqual(killed.signal, "SIGKILL");
      ok(worker.lines.some((line) => line.msg === "terminating job"));
      ok(worker.lines.some((line) => line.msg === "killing job"));
      await waitUntil("the grandchild is gone", () => !processAlive(grandchild), 5_000);
      await waitUntil(
        "the second run",
        async () => (await fixture.ledgerLines()).includes("second"),
      );
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
      deepStrictEqual(await fixture.ledgerLines(), ["first", "second"]);
    });
  });

  test("a SIGKILLed worker's jobs die with it, children too; a graceful exit leaves no watchdog", async () => {
    await withFixture(backend, {}, async (fixture) => {
      const job = await fixture.script(
        "job.sh",
        `sh -c 'echo $$ > "$0/grandchild.$1"; exec sleep 300' "$DIR" "$SQSRUN_MESSAGE_ID" &
echo "$$" >> "$LEDGER"
sleep 300`,
      );
      await sendMessages(fixture.client, fixture.url, ["one", "two"]);
      const worker = fixture.worker(["--exec", job, "-c", "2", "--wait", "1", "-t", "60"]);
      await waitUntil("both jobs and grandchildren started", async () => {
        const names = [...Deno.readDirSync(fixture.dir)].map((entry) => entry.name);
        return (await fixture.ledgerLines()).length === 2 &&
          names.filter((name) => name.startsWith("grandchild.")).length === 2;
      });
      // Past the watchdog's coalescing of a few ms.
      await new Promise((resolve) => setTimeout(resolve, 200));
      const jobs = (await fixture.ledgerLines()).map(Number);
      const grandchildren = [...Deno.readDirSync(fixture.dir)]
        .filter((entry) => entry.name.startsWith("grandchild."))
        .map((entry) => Number(Deno.readTextFileSync(`${fixture.dir}/${entry.name}`).trim()));
      const all = [...jobs, ...grandchildren];
      ok(all.every(processAlive), "a job process was not running");
      const watchdogs = watchdogsOf(worker.pid);
      strictEqual(watchdogs.length, 1, "one watchdog per worker");
      worker.signal("SIGKILL");
      await waitUntil("every job process is gone", () => !all.some(processAlive), 5_000);
      await waitUntil("the watchdog is gone", () => watchdogsOf(worker.pid).length === 0, 5_000);

      // A worker that exits gracefully takes its watchdog along and kills nothing else.
      const quick = await fixture.script("quick.sh", `echo done >> "$LEDGER"`);
      await sendMessages(fixture.client, fixture.url, ["three"]);
      const second = fixture.worker(["--exec", quick, "--wait", "1"]);
      await second.waitForLine((line) => line.msg === "job finished", 20_000);
      strictEqual(watchdogsOf(second.pid).length, 1);
      second.signal("SIGTERM");
      strictEqual((await second.exit(20_000)).code, 0);
      await waitUntil("the watchdog ended", () => watchdogsOf(second.pid).length === 0, 5_000);
    });
  });

  test("no more jobs run at once than -c allows", async () => {
    await withFixture(backend, {}, async (fixture) => {
      const job = await fixture.script(
        "job.sh",
        `echo "s $(date +%s%N)" >> "$LEDGER"; sleep 0.7; echo "e $(date +%s%N)" >> "$LEDGER"`,
      );
      await sendMessages(fixture.client, fixture.url, Array.from({ length: 9 }, (_, i) => `m${i}`));
      fixture.worker(["--exec", job, "-c", "3", "--wait", "1"]);
      await waitUntil(
        "all jobs ran",
        async () => (await fixture.ledgerLines()).length === 18,
        30_000,
      );
      const events = (await fixture.ledgerLines()).map(timed).sort((a, b) =>
        a.ms - b.ms || (a.word === "e" ? -1 : 1)
      );
      let running = 0;
      let most = 0;
      for (const event of events) {
        running += event.word === "s" ? 1 : -1;
        most = Math.max(most, running);
      }
      strictEqual(most, 3);
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
    });
  });

  test("FIFO: one group runs in order, one at a time, even across a failure; groups run in parallel", async () => {
    await withFixture(backend, { fifo: true }, async (fixture) => {
      const job = await fixture.script(
        "job.sh",
        `body=$(cat)
echo "start $body $(date +%s%N)" >> "$LEDGER"
sleep 0.3
if [ "$body" = "A-2" ] && [ "$SQSRUN_RECEIVE_COUNT" = 1 ]; then echo "fail $body $(date +%s%N)" >> "$LEDGER"; exit 1; fi
echo "done $body $(date +%s%N)" >> "$LEDGER"`,
      );
      const messages = [];
      for (let i = 1; i <= 4; i++) {
        messages.push({ body: `A-${i}`, groupId: "A" }, { body: `B-${i}`, groupId: "B" });
      }
      await sendMessages(fixture.client, fixture.url, messages);
      fixture.worker(["--exec", job, "-c", "4", "--backoff", "off", "--wait", "1"]);
      await waitUntil(
        "all done",
        async () =>
          (await fixture.ledgerLines()).filter((line) => line.startsWith("done")).length === 8,
        40_000,
      );
      const events = (await fixture.ledgerLines()).map(timed);
      for (const group of ["A", "B"]) {
        const mine = events.filter((event) => event.rest.startsWith(group));
        deepStrictEqual(
          mine.filter((event) => event.word === "done").map((event) => event.rest),
          [1, 2, 3, 4].map((i) => `${group}-${i}`),
        );
        // Within a group, each start follows the previous end: never two at once.
        for (let i = 1; i < mine.length; i++) {
          if (mine[i].word === "start") {
            ok(mine[i - 1].word !== "start", `${group}: ${mine[i].rest} overlapped`);
          }
        }
      }
      const aStarts = events.filter((event) =>
        event.word === "start" && event.rest.startsWith("A")
      );
      deepStrictEqual(aStarts.map((event) => event.rest), ["A-1", "A-2", "A-2", "A-3", "A-4"]);
      const aSpan = [aStarts[0].ms, events.filter((e) => e.rest === "A-4").at(-1)!.ms];
      ok(
        events.some((e) =>
          e.word === "start" && e.rest.startsWith("B") && e.ms > aSpan[0] && e.ms < aSpan[1]
        ),
        "group B ran while group A was running",
      );
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
    });
  });

  test("--backoff delays each retry exponentially by receive count", async () => {
    await withFixture(backend, {}, async (fixture) => {
      const job = await fixture.script(
        "job.sh",
        `echo "run $SQSRUN_RECEIVE_COUNT $(date +%s%N)" >> "$LEDGER"; [ "$SQSRUN_RECEIVE_COUNT" -ge 3 ]`,
      );
      await sendMessages(fixture.client, fixture.url, ["flaky"]);
      const worker = fixture.worker(["--exec", job, "--backoff", "2,8", "--wait", "1"]);
      await waitUntil("three runs", async () => (await fixture.ledgerLines()).length === 3, 30_000);
      const runs = (await fixture.ledgerLines()).map(timed);
      deepStrictEqual(runs.map((run) => run.rest), ["1", "2", "3"]);
      ok(runs[1].ms - runs[0].ms >= 1_800, `first retry after ${runs[1].ms - runs[0].ms} ms`);
      ok(runs[2].ms - runs[1].ms >= 3_800, `second retry after ${runs[2].ms - runs[1].ms} ms`);
      const released = worker.lines.filter((line) => line.msg === "message released");
      deepStrictEqual(released.map((line) => line.visible_in_s), [2, 4]);
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
    });
  });

  test("SIGTERM drains: the running job finishes and is deleted, nothing new starts, exit 0", async () => {
    await withFixture(backend, {}, async (fixture) => {
      const job = await fixture.script(
        "job.sh",
        `body=$(cat); echo "start $body" >> "$LEDGER"; sleep 2; echo "end $body" >> "$LEDGER"`,
      );
      await sendMessages(fixture.client, fixture.url, ["one"]);
      const worker = fixture.worker(["--exec", job, "-c", "1", "--wait", "1"]);
      await worker.waitForLine((line) => line.msg === "job started");
      await sendMessages(fixture.client, fixture.url, ["two"]);
      worker.signal("SIGTERM");
      const status = await worker.exit(20_000);
      strictEqual(status.code, 0);
      deepStrictEqual(await fixture.ledgerLines(), ["start one", "end one"]);
      ok(worker.lines.some((line) => line.msg.startsWith("draining")));
      ok(worker.lines.some((line) => line.msg === "worker stopped"));
      deepStrictEqual(await peekBodies(fixture.client, fixture.url), ["two"]);
    });
  });

  test("SIGTERM lets the long poll in flight finish and gives back what it brings: nothing stranded", async () => {
    await withFixture(backend, {}, async (fixture) => {
      const job = await fixture.script("job.sh", `cat >/dev/null; echo ran >> "$LEDGER"`);
      const worker = fixture.worker(["--exec", job, "--wait", "5"]);
      await worker.waitForLine((line) => line.msg === "worker started");
      // Let the first long poll start, then stop the worker and send while it waits.
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      const stoppedAt = Date.now();
      worker.signal("SIGTERM");
      await new Promise((resolve) => setTimeout(resolve, 500));
      await sendMessages(fixture.client, fixture.url, ["sent during the drain"]);
      const status = await worker.exit(20_000);
      strictEqual(status.code, 0);
      const took = Date.now() - stoppedAt;
      ok(took < 5_000 + 4_000, `the drain took ${took} ms with --wait 5`);
      deepStrictEqual(await fixture.ledgerLines(), [], "a job started during the drain");
      // Stranded, it would stay in flight for -t (30 s) with its receive count spent.
      await waitUntil("the message is visible again", async () => {
        const counts = await queueCounts(fixture.client, fixture.url);
        return counts.visible === 1 && counts.inFlight === 0;
      }, 5_000);
    });
  });

  test("SIGTERM with FIFO messages waiting in hand gives them back at once", async () => {
    await withFixture(backend, { fifo: true }, async (fixture) => {
      const job = await fixture.script(
        "job.sh",
        `body=$(cat); echo "start $body" >> "$LEDGER"; sleep 2; echo "end $body" >> "$LEDGER"`,
      );
      await sendMessages(
        fixture.client,
        fixture.url,
        [1, 2, 3, 4].map((i) => ({ body: `G-${i}`, groupId: "G" })),
      );
      const worker = fixture.worker(["--exec", job, "-c", "4", "--wait", "1", "-t", "60"]);
      await worker.waitForLine((line) => line.msg === "job started");
      // Let the rest of the group arrive in hand (they wait in the lane).
      await new Promise((resolve) => setTimeout(resolve, 700));
      const givenBackExpected = worker.lines.length; // snapshot, for the message below
      worker.signal("SIGTERM");
      strictEqual((await worker.exit(20_000)).code, 0);
      deepStrictEqual(await fixture.ledgerLines(), ["start G-1", "end G-1"]);
      const givenBack = worker.lines.filter((line) => line.msg === "message given back").length;
      ok(givenBack >= 1, `no message was prefetched (${givenBackExpected} lines before SIGTERM)`);
      const counts = await queueCounts(fixture.client, fixture.url);
      // With -t 60, only an explicit release makes them visible this soon.
      strictEqual(counts.visible + counts.inFlight, 3);
      strictEqual(counts.inFlight, 0);
    });
  });

  test("--prefetch: held messages stay invisible past -t and none runs twice across two workers", async () => {
    await withFixture(backend, {}, async (fixture) => {
      const job = await fixture.script(
        "job.sh",
        `body=$(cat); echo "start $body" >> "$LEDGER"; sleep 1; echo "end $body" >> "$LEDGER"`,
      );
      const bodies = Array.from({ length: 8 }, (_, i) => `p${i}`);
      await sendMessages(fixture.client, fixture.url, bodies);
      // Each worker may hold 4 messages behind its one slot: the last waits about
      // 4 s, twice the visibility timeout, so only the extension keeps it hidden.
      const args = [
        "--exec",
        job,
        "-c",
        "1",
        "--prefetch",
        "4",
        "-t",
        "2",
        "-e",
        "1",
        "--wait",
        "1",
      ];
      fixture.worker(args);
      fixture.worker(args);
      await waitUntil(
        "every job ended",
        async () => (await fixture.ledgerLines()).filter((l) => l.startsWith("end")).length >= 8,
        30_000,
      );
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
      // Give a lapsed message every chance to show up again.
      await new Promise((resolve) => setTimeout(resolve, 2_500));
      const started = (await fixture.ledgerLines())
        .filter((line) => line.startsWith("start"))
        .map((line) => line.split(" ")[1])
        .sort();
      deepStrictEqual(started, bodies, "a message ran twice, or not at all");
    });
  });

  test("--prefetch auto gives back what it held once the jobs got much slower", async () => {
    await withFixture(backend, {}, async (fixture) => {
      // The first five runs are instant (auto then holds a full batch); later ones take 9 s.
      const job = await fixture.script(
        "job.sh",
        `body=$(cat); echo "start $body" >> "$LEDGER"
if [ "$(grep -c start "$LEDGER")" -gt 5 ]; then sleep 9; fi`,
      );
      await sendMessages(fixture.client, fixture.url, ["f1", "f2", "f3", "f4", "f5"]);
      const worker = fixture.worker(["--exec", job, "-c", "1", "--wait", "1", "-t", "60"]);
      await waitUntil("the fast jobs ran", async () => (await fixture.ledgerLines()).length === 5);
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
      await sendMessages(fixture.client, fixture.url, ["s1", "s2", "s3", "s4"]);
      await worker.waitForLine((line) => line.msg === "message given back", 12_000);
      // The running job has taken 5 s by now: a worker that took the given-back
      // messages again would only hold them and give them back once more (each
      // time a receive, counted towards a dead-letter queue's limit). Its receive
      // calls wait 1 s; give it two.
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      // With -t 60, only the give-back makes a held message visible while the slow job runs.
      const counts = await queueCounts(fixture.client, fixture.url);
      deepStrictEqual(
        { visible: counts.visible, inFlight: counts.inFlight },
        { visible: 3, inFlight: 1 },
        "the held messages were not given back, or were taken again",
      );
      strictEqual((await fixture.ledgerLines()).length, 6, "a held message ran");
    });
  });

  test("a message delivered again while its job runs runs once, deleted by its newest receipt", async () => {
    await withFixture(backend, {}, async (fixture) => {
      // With every extension refused, the message shows again after -t while its
      // job still runs, and the worker (a slot free) receives it again.
      const witness = startSqsWitness(backend.endpoint, {
        refuse: (action) => action.startsWith("ChangeMessageVisibility"),
      });
      try {
        const job = await fixture.script(
          "job.sh",
          `body=$(cat); echo "start $body" >> "$LEDGER"; sleep 5; echo "end $body" >> "$LEDGER"`,
        );
        await sendMessages(fixture.client, fixture.url, ["twice"]);
        const worker = fixture.worker(
          ["--exec", job, "-c", "2", "--wait", "1", "-t", "2", "-e", "1"],
          witness.url,
        );
        const again = await worker.waitForLine(
          (line) => line.msg === "message delivered again while in hand; it runs once",
          10_000,
        );
        ok(Number(again.receive_count) >= 2, `receive count ${again.receive_count}`);
        await waitUntil(
          "the job ended",
          async () => (await fixture.ledgerLines()).includes("end twice"),
          15_000,
        );
        // Only the newest receipt deletes it for sure: the queue empties at once,
        // not after another delivery and run.
        await waitUntil("the queue is empty", () => queueEmpty(fixture), 5_000);
        deepStrictEqual(await fixture.ledgerLines(), ["start twice", "end twice"]);
        strictEqual(witness.acknowledgedDeletes, 1);
      } finally {
        await witness.close();
      }
    });
  });

  test("SIGTERM gives back the messages held ahead at once; they never ran", async () => {
    await withFixture(backend, {}, async (fixture) => {
      const job = await fixture.script(
        "job.sh",
        `body=$(cat); echo "start $body" >> "$LEDGER"; sleep 2; echo "end $body" >> "$LEDGER"`,
      );
      await sendMessages(fixture.client, fixture.url, ["h1", "h2", "h3", "h4"]);
      const worker = fixture.worker([
        "--exec",
        job,
        "-c",
        "1",
        "--prefetch",
        "3",
        "--wait",
        "1",
        "-t",
        "60",
      ]);
      await worker.waitForLine((line) => line.msg === "job started");
      await new Promise((resolve) => setTimeout(resolve, 700));
      worker.signal("SIGTERM");
      strictEqual((await worker.exit(20_000)).code, 0);
      const lines = await fixture.ledgerLines();
      strictEqual(lines.length, 2, `one job only: ${lines.join(", ")}`);
      ok(worker.lines.some((line) => line.msg === "message given back"), "nothing was held");
      const counts = await queueCounts(fixture.client, fixture.url);
      // With -t 60, only an explicit release makes them visible this soon.
      deepStrictEqual([counts.visible, counts.inFlight], [3, 0]);
    });
  });

  test("the endpoint going away and coming back loses no message and the worker lives on", async () => {
    await withFixture(backend, {}, async (fixture) => {
      const proxy = startTcpProxy(backend.endpoint);
      try {
        const job = await fixture.script(
          "job.sh",
          `body=$(cat); sleep 0.5; echo "$body" >> "$LEDGER"`,
        );
        await sendMessages(fixture.client, fixture.url, ["a1", "a2"]);
        const worker = fixture.worker(
          ["--exec", job, "-c", "1", "--wait", "1", "-t", "4", "-e", "2"],
          proxy.url,
        );
        await waitUntil("the first job ran", async () => (await fixture.ledgerLines()).length >= 1);
        proxy.cut();
        await sendMessages(fixture.client, fixture.url, ["b1", "b2", "b3"]);
        await worker.waitForLine((line) => line.msg === "receive failed; backing off", 15_000);
        await new Promise((resolve) => setTimeout(resolve, 3_000));
        proxy.restore();
        await waitUntil("every message ran", async () => {
          const ran = new Set(await fixture.ledgerLines());
          return ["a1", "a2", "b1", "b2", "b3"].every((body) => ran.has(body));
        }, 60_000);
        await waitUntil("the queue is empty", () => queueEmpty(fixture), 30_000);
        ok(processAlive(worker.pid), "the worker survived the outage");
        ok(worker.lines.some((line) => line.msg === "receiving again"));
      } finally {
        proxy.close();
      }
    });
  });

  test("--max-receives without a redrive policy stops running a poison message and never deletes it", async () => {
    await withFixture(backend, {}, async (fixture) => {
      const job = await fixture.script(
        "job.sh",
        `echo "run $SQSRUN_RECEIVE_COUNT" >> "$LEDGER"; exit 1`,
      );
      await sendMessages(fixture.client, fixture.url, ["poison"]);
      const worker = fixture.worker(
        ["--exec", job, "--max-receives", "2", "--backoff", "off", "--wait", "1"],
      );
      const parked = await worker.waitForLine((line) => line.msg.startsWith("poison message"));
      strictEqual(parked.receive_count, 3);
      strictEqual(parked.max_receives, 2);
      deepStrictEqual(await fixture.ledgerLines(), ["run 1", "run 2"]);
      const counts = await queueCounts(fixture.client, fixture.url);
      strictEqual(counts.visible + counts.inFlight, 1, "the poison message is still in the queue");
    });
  });

  test("fair queue: a tenant's messages on a standard queue run in parallel, and the job sees the group id", async () => {
    await withFixture(backend, {}, async (fixture) => {
      const job = await fixture.script(
        "job.sh",
        `echo "S $SQSRUN_GROUP_ID $(date +%s%N)" >> "$LEDGER"; sleep 2; ` +
          `echo "E $SQSRUN_GROUP_ID $(date +%s%N)" >> "$LEDGER"`,
      );
      await sendMessages(
        fixture.client,
        fixture.url,
        Array.from({ length: 4 }, (_, i) => ({ body: `t${i}`, groupId: "tenant-a" })),
      );
      fixture.worker(["--exec", job, "-c", "4", "--wait", "1"]);
      await waitUntil(
        "four jobs ended",
        async () =>
          (await fixture.ledgerLines()).filter((line) => line.startsWith("E")).length === 4,
        30_000,
      );
      const lines = (await fixture.ledgerLines()).map((line) => line.split(" "));
      ok(lines.every(([, group]) => group === "tenant-a"), "SQSRUN_GROUP_ID missing");
      // Ran one at a time (a FIFO lane), the last would start after the first ended.
      const starts = lines.filter(([kind]) => kind === "S").map(([, , ns]) => BigInt(ns));
      const firstEnd = lines.filter(([kind]) => kind === "E").map(([, , ns]) => BigInt(ns))
        .reduce((a, b) => a < b ? a : b);
      strictEqual(starts.filter((ns) => ns < firstEnd).length, 4, "the tenant's jobs ran in turn");
    });
  });

  test("without -t the queue's own VisibilityTimeout is the visibility timeout, and -e/-x follow it", async () => {
    await withFixture(backend, { attributes: { VisibilityTimeout: "300" } }, async (fixture) => {
      const dlq = await createQueue(fixture.client, uniqueName("worker-dlq"));
      try {
        const { Attributes } = await fixture.client.send(
          new GetQueueAttributesCommand({ QueueUrl: dlq, AttributeNames: ["QueueArn"] }),
        );
        await fixture.client.send(
          new SetQueueAttributesCommand({
            QueueUrl: fixture.url,
            Attributes: {
              RedrivePolicy: JSON.stringify({
                deadLetterTargetArn: Attributes!.QueueArn,
                maxReceiveCount: "4",
              }),
            },
          }),
        );
      } catch (error) {
        await deleteQueue(fixture.client, dlq);
        throw error;
      }
      fixture.cleanup.push(() => deleteQueue(fixture.client, dlq));
      const job = await fixture.script("job.sh", "cat > /dev/null");
      const started = (line: LogLine) => line.msg === "worker started";
      const own = await fixture.worker(["--exec", job, "--wait", "1"]).waitForLine(started);
      deepStrictEqual(
        [own.visibility_timeout, own.visibility_timeout_from, own.extend_after, own.kill_timeout],
        [300, "queue", 225, 1500],
      );
      strictEqual(own.max_receive_count, 4);
      const flag = await fixture.worker(["--exec", job, "-t", "20", "--wait", "1"]).waitForLine(
        started,
      );
      deepStrictEqual([flag.visibility_timeout, flag.visibility_timeout_from], [20, "-t"]);
      const tooLate = fixture.worker(["--exec", job, "-e", "400", "--wait", "1"]);
      strictEqual((await tooLate.exit(20_000)).code, 2);
      ok(tooLate.stderr().includes("the queue's VisibilityTimeout (300)"), tooLate.stderr());
      strictEqual(tooLate.stderr().trim().split("\n").length, 1, tooLate.stderr());
    });
  });

  test("--max-receives without a redrive policy holds nothing ahead; an explicit --prefetch is warned about", async () => {
    await withFixture(backend, {}, async (fixture) => {
      const job = await fixture.script("job.sh", "cat > /dev/null");
      const auto = fixture.worker(["--exec", job, "--max-receives", "3", "--wait", "1"]);
      strictEqual((await auto.waitForLine((line) => line.msg === "worker started")).prefetch, 0);
      const held = fixture.worker(
        ["--exec", job, "--max-receives", "3", "--prefetch", "10", "--wait", "1"],
      );
      const warning = await held.waitForLine((line) =>
        line.msg.startsWith("--max-receives with --prefetch")
      );
      strictEqual(warning.prefetch, 10);
      strictEqual((await held.waitForLine((line) => line.msg === "worker started")).prefetch, 10);
    });
  });

  test("a kill timeout beyond SQS's 12-hour visibility limit is warned about at start-up", async () => {
    await withFixture(backend, {}, async (fixture) => {
      const job = await fixture.script("job.sh", "cat > /dev/null");
      const beyond = (line: LogLine) => line.msg.startsWith("-x/--kill-timeout plus --kill-grace");
      const long = fixture.worker(["--exec", job, "-t", "43200", "-x", "50000", "--wait", "1"]);
      strictEqual((await long.waitForLine(beyond)).kill_timeout, 50_000);
      const derived = fixture.worker(["--exec", job, "-t", "43200", "--wait", "1"]);
      const started = await derived.waitForLine((line) => line.msg === "worker started");
      strictEqual(started.kill_timeout, 43_140, "the derived -x stops a minute short of the limit");
      ok(!derived.lines.some(beyond), "the derived kill timeout was warned about");
    });
  });

  test("credentials given with -k/-s reach neither the job's environment nor the log", async () => {
    await withFixture(backend, {}, async (fixture) => {
      const job = await fixture.script("job.sh", `env > "$DIR/env"; echo ran >> "$LEDGER"`);
      await sendMessages(fixture.client, fixture.url, ["secretive"]);
      const secret = "SuperSecret-4f1c9e";
      const env = { ...fixture.env };
      delete env.AWS_ACCESS_KEY_ID;
      delete env.AWS_SECRET_ACCESS_KEY;
      const worker = startWorker(
        ["-q", fixture.url, "-k", "test", "-s", secret, "--exec", job, "--wait", "1"],
        { env },
      );
      fixture.workers.push(worker);
      await waitUntil("the job ran", async () => (await fixture.ledgerLines()).length === 1);
      const childEnv = await Deno.readTextFile(`${fixture.dir}/env`);
      ok(!childEnv.includes(secret), "the secret leaked into the job's environment");
      ok(!childEnv.includes("AWS_SECRET_ACCESS_KEY"), childEnv);
      await worker.stop();
      ok(!JSON.stringify(worker.lines).includes(secret), "the secret leaked into the log");
      ok(!worker.stderr().includes(secret));
    });
  });

  test("--shell runs a command line through sh -c with ARGV as $1...", async () => {
    await withFixture(backend, {}, async (fixture) => {
      await sendMessages(fixture.client, fixture.url, ["via shell"]);
      fixture.worker([
        "--exec",
        `read line; echo "$line|$1|$2" >> '${fixture.ledger}'`,
        "--shell",
        "--wait",
        "1",
        "--",
        "x y",
        "z",
      ]);
      await waitUntil("the job ran", async () => (await fixture.ledgerLines()).length === 1);
      deepStrictEqual(await fixture.ledgerLines(), ["via shell|x y|z"]);
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
    });
  });

  test("a second signal during the drain kills the running job now and releases its message", async () => {
    await withFixture(backend, {}, async (fixture) => {
      const job = await fixture.script(
        "job.sh",
        `trap '' TERM; echo start >> "$LEDGER"; sleep 60; echo end >> "$LEDGER"`,
      );
      await sendMessages(fixture.client, fixture.url, ["slow"]);
      const worker = fixture.worker(["--exec", job, "--wait", "1", "-t", "60"]);
      await waitUntil("the job runs", async () => (await fixture.ledgerLines()).includes("start"));
      worker.signal("SIGTERM");
      await worker.waitForLine((line) => line.msg.startsWith("draining"));
      worker.signal("SIGINT");
      const started = Date.now();
      strictEqual((await worker.exit(20_000)).code, 0);
      ok(Date.now() - started < 15_000, "the second signal did not wait for the job");
      deepStrictEqual(await fixture.ledgerLines(), ["start"]);
      const failed = worker.lines.find((line) => line.msg === "job failed");
      strictEqual(failed?.signal, "SIGKILL");
      deepStrictEqual(await peekBodies(fixture.client, fixture.url), ["slow"]);
    });
  });

  test("SIGHUP reopens the -o log file after it was moved away", async () => {
    await withFixture(backend, {}, async (fixture) => {
      const job = await fixture.script("job.sh", `body=$(cat); echo "$body" >> "$LEDGER"`);
      const logPath = `${fixture.dir}/worker.log`;
      const worker = fixture.worker(["--exec", job, "--wait", "1", "-o", logPath]);
      await waitUntil("the log file has the start line", async () => {
        try {
          return (await Deno.readTextFile(logPath)).includes("worker started");
        } catch {
          return false;
        }
      });
      await Deno.rename(logPath, `${logPath}.1`);
      worker.signal("SIGHUP");
      await new Promise((resolve) => setTimeout(resolve, 300));
      await sendMessages(fixture.client, fixture.url, ["after rotation"]);
      await waitUntil("the job ran", async () => (await fixture.ledgerLines()).length === 1);
      await waitUntil("the new log file has the job", async () => {
        try {
          return (await Deno.readTextFile(logPath)).includes("job finished");
        } catch {
          return false;
        }
      });
      ok((await Deno.readTextFile(`${logPath}.1`)).includes("worker started"));
      ok(!(await Deno.readTextFile(`${logPath}.1`)).includes("job finished"));
      // The reopen leaves one line, in the new file: the operator sees SIGHUP arrived.
      const reopened = (await Deno.readTextFile(logPath)).split("\n").filter((text) =>
        text.includes('"msg":"log reopened"')
      );
      strictEqual(reopened.length, 1);
      strictEqual(JSON.parse(reopened[0]).path, logPath);
    });
  });

  // ElasticMQ (sqs-limits = strict) refuses bodies above 256 KiB whatever the queue
  // says; moto takes SQS's 1 MiB on a queue that allows it.
  const sizes = backend.name === "moto" ? [262_144, 1_048_576] : [262_144];
  for (const total of sizes) {
    test(`a ${total / 1024} KiB body with any allowed characters arrives on stdin byte-exact`, async () => {
      const attributes = { MaximumMessageSize: String(total) };
      await withFixture(backend, { attributes }, async (fixture) => {
        const body = mixedBody(total);
        const job = await fixture.script("job.sh", `cat > "$DIR/body"; echo done >> "$LEDGER"`);
        await sendMessages(fixture.client, fixture.url, [body]);
        fixture.worker(["--exec", job, "--wait", "1"]);
        await waitUntil("the job ran", async () => (await fixture.ledgerLines()).length === 1);
        const received = await Deno.readFile(`${fixture.dir}/body`);
        strictEqual(received.length, total);
        deepStrictEqual(received, new TextEncoder().encode(body));
        await waitUntil("the queue is empty", () => queueEmpty(fixture));
      });
    });
  }
}

Deno.test({
  name: "worker: an --exec program that does not exist is a one-line start-up error, exit 2",
  ...testOptions,
  async fn() {
    const [backend] = sqsBackends();
    const worker = startWorker(
      ["-q", `${backend.endpoint}/000000000000/none`, "--exec", "/no/such/program"],
      { env: { ...awsEnv(backend.endpoint), PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" } },
    );
    const status = await worker.exit(20_000);
    strictEqual(status.code, 2);
    const stderr = worker.stderr().trim();
    strictEqual(stderr.split("\n").length, 1, stderr);
    ok(stderr.startsWith("sqsrun: ") && stderr.includes("/no/such/program"), stderr);
  },
});

for (const backend of sqsBackends()) {
  Deno.test({
    name:
      `worker [${backend.name}]: a queue that does not exist is a one-line start-up error, exit 1`,
    ...testOptions,
    async fn() {
      const worker = startWorker(["-q", uniqueName("missing"), "--exec", "/bin/true"], {
        env: { ...awsEnv(backend.endpoint), PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" },
      });
      strictEqual((await worker.exit(30_000)).code, 1);
      const stderr = worker.stderr().trim();
      strictEqual(stderr.split("\n").length, 1, stderr);
      ok(/^sqsrun: .*does not exist/.test(stderr), stderr);
    },
  });

  Deno.test({
    name:
      `worker [${backend.name}]: an endpoint down at start-up is waited for, not a reason to exit`,
    ...testOptions,
    async fn() {
      await withFixture(backend, {}, async (fixture) => {
        const proxy = startTcpProxy(backend.endpoint);
        try {
          proxy.cut();
          const job = await fixture.script("job.sh", `cat >> "$LEDGER"; echo >> "$LEDGER"`);
          const name = fixture.url.split("/").at(-1)!;
          const worker = startWorker(["-q", name, "--exec", job, "--wait", "1"], {
            env: { ...fixture.env, ...awsEnv(proxy.url) },
          });
          fixture.workers.push(worker);
          await worker.waitForLine((line) => line.msg === "cannot resolve the queue yet; retrying");
          proxy.restore();
          await sendMessages(fixture.client, fixture.url, ["late"]);
          await waitUntil(
            "the job ran",
            async () => (await fixture.ledgerLines()).includes("late"),
          );
          ok(processAlive(worker.pid));
        } finally {
          proxy.close();
        }
      });
    },
  });
}
