/**
 * `--s3` end to end on moto: real buckets whose notifications go to a real queue,
 * objects streamed to jobs byte for byte, and every way an event can go wrong.
 * Plus unit tests of the event parser.
 */
import { deepStrictEqual, match, ok, strictEqual, throws } from "node:assert/strict";
import { gzipSync } from "node:zlib";
import type { S3Client } from "@aws-sdk/client-s3";
import type { SQSClient } from "@aws-sdk/client-sqs";
import { awsEnv, motoEndpoint, uniqueName } from "./support/local_aws.ts";
import { createQueue, deleteQueue, queueCounts, sendMessages, testClient } from "./support/sqs.ts";
import {
  createBucket,
  deleteBucket,
  encodeEventKey,
  notifyQueue,
  objectExists,
  putObject,
  s3EventBody,
  snsEnvelope,
  testS3Client,
  uploadLargeObject,
} from "./support/s3.ts";
import { startTcpProxy } from "./support/tcp_proxy.ts";
import { type LogLine, startWorker, waitUntil, type WorkerProcess } from "./support/worker.ts";
import { decodeS3Key, parseS3Event } from "../src/sources/s3_event.ts";
import { MalformedMessageError } from "../src/sources/source.ts";

interface S3Fixture {
  s3: S3Client;
  sqs: SQSClient;
  bucket: string;
  url: string;
  dir: string;
  /** Writes an executable shell script (with $DIR set) into the fixture's folder. */
  script(name: string, body: string): Promise<string>;
  /** Starts `sqsrun -q URL --s3 --wait 1 ARGS`, with `extraEnv` on top of the AWS environment. */
  worker(args: string[], extraEnv?: Record<string, string>): WorkerProcess;
  /** Lines the jobs appended to $DIR/ledger. */
  ledger(): Promise<string[]>;
}

const testOptions = { sanitizeOps: false, sanitizeResources: false };

async function withS3Fixture(
  options: { notify?: boolean; versioned?: boolean },
  body: (fixture: S3Fixture) => Promise<void>,
): Promise<void> {
  const endpoint = motoEndpoint();
  const s3 = testS3Client(endpoint);
  const sqs = testClient(endpoint);
  const bucket = uniqueName("sqsrun-s3").toLowerCase().replaceAll("_", "-");
  const url = await createQueue(sqs, uniqueName("s3"));
  await createBucket(s3, bucket, { versioned: options.versioned });
  if (options.notify) await notifyQueue(s3, sqs, bucket, url);
  const dir = await Deno.makeTempDir({ prefix: "sqsrun-s3-" });
  await Deno.writeTextFile(`${dir}/ledger`, "");
  const env = {
    ...awsEnv(endpoint),
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    HOME: Deno.env.get("HOME") ?? dir,
  };
  const workers: WorkerProcess[] = [];
  const fixture: S3Fixture = {
    s3,
    sqs,
    bucket,
    url,
    dir,
    async script(name, text) {
      const path = `${dir}/${name}`;
      await Deno.writeTextFile(path, `#!/bin/sh\nDIR='${dir}'\n${text}\n`);
      await Deno.chmod(path, 0o755);
      return path;
    },
    worker(args, extraEnv = {}) {
      // The release binary's permissions, not -A: S3, UDP and HTTP must work under them.
      const worker = startWorker(["-q", url, "--s3", "--wait", "1", ...args], {
        env: { ...env, ...extraEnv },
        binaryPermissions: true,
      });
      workers.push(worker);
      return worker;
    },
    async ledger() {
      return (await Deno.readTextFile(`${dir}/ledger`)).split("\n").filter(Boolean);
    },
  };
  try {
    await body(fixture);
  } finally {
    await Promise.all(workers.map((worker) => worker.stop()));
    await deleteQueue(sqs, url);
    await deleteBucket(s3, bucket);
    sqs.destroy();
    s3.destroy();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

async function queueEmpty(fixture: S3Fixture): Promise<boolean> {
  const counts = await queueCounts(fixture.sqs, fixture.url);
  return counts.visible === 0 && counts.inFlight === 0 && counts.delayed === 0;
}

/** Messages still in the queue, whatever their state. */
async function queueTotal(fixture: S3Fixture): Promise<number> {
  const counts = await queueCounts(fixture.sqs, fixture.url);
  return counts.visible + counts.inFlight + counts.delayed;
}

/** A job that records each run: stdin to $DIR/body-N, SQSRUN_S3_* to $DIR/env-N, key to the ledger. */
const RECORDING_JOB = `n=$(date +%s%N)
cat > "$DIR/body-$n"
printf '%s\\n%s\\n%s\\n%s' "$SQSRUN_S3_BUCKET" "$SQSRUN_S3_KEY" "$SQSRUN_S3_VERSION_ID" "$SQSRUN_S3_SIZE" > "$DIR/env-$n"
printf '%s\\n' "$SQSRUN_S3_KEY" >> "$DIR/ledger"`;

interface JobRun {
  bucket: string;
  key: string;
  versionId: string;
  size: string;
  body: Uint8Array;
}

/** Reads what RECORDING_JOB wrote, in the order the jobs ran. */
async function jobRuns(dir: string): Promise<JobRun[]> {
  const stamps: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (entry.name.startsWith("env-")) stamps.push(entry.name.slice(4));
  }
  stamps.sort((a, b) => (BigInt(a) < BigInt(b) ? -1 : 1));
  const runs: JobRun[] = [];
  for (const stamp of stamps) {
    const [bucket, key, versionId, size] = (await Deno.readTextFile(`${dir}/env-${stamp}`))
      .split("\n");
    runs.push({ bucket, key, versionId, size, body: await Deno.readFile(`${dir}/body-${stamp}`) });
  }
  return runs;
}

/** The `serving /metrics` line's URL. */
async function metricsUrl(worker: WorkerProcess): Promise<string> {
  const line = await worker.waitForLine((l) => l.msg === "serving /metrics and /healthz");
  return line.url as string;
}

/** Reads one sample of a Prometheus text page. */
async function scrape(url: string, series: string): Promise<number | undefined> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split("\n").find((l) =>
    l.startsWith(`${series}{`) || l.startsWith(`${series} `)
  );
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
}

const binary = (key: string) => {
  // Every byte value, then the key: catches any text decoding or newline mangling.
  const bytes = new Uint8Array(256 + key.length * 4);
  for (let i = 0; i < 256; i++) bytes[i] = i;
  const tail = new TextEncoder().encode(key);
  bytes.set(tail, 256);
  return bytes.slice(0, 256 + tail.length);
};

const line = (msg: string) => (l: LogLine) => l.msg === msg;

Deno.test({
  name:
    "s3: real notifications: keys with spaces, +, unicode and % reach the job byte-exact; the test event is deleted",
  ...testOptions,
  fn: () =>
    withS3Fixture({ notify: true }, async (fixture) => {
      const keys = [
        "with space.txt",
        "plus+sign.bin",
        "ünïcødé/日本語 ファイル.dat",
        "percent%20literal%.txt",
        "dir/a+b c%2B.txt",
      ];
      for (const key of keys) await putObject(fixture.s3, fixture.bucket, key, binary(key));
      const job = await fixture.script("job.sh", RECORDING_JOB);
      const worker = fixture.worker(["--exec", job]);
      await waitUntil(
        "every object ran",
        async () => (await fixture.ledger()).length >= keys.length,
      );
      await waitUntil("the queue is empty", () => queueEmpty(fixture));

      const runs = await jobRuns(fixture.dir);
      deepStrictEqual(runs.map((run) => run.key).sort(), [...keys].sort());
      for (const run of runs) {
        deepStrictEqual(run.body, binary(run.key), `body of ${run.key}`);
        strictEqual(run.bucket, fixture.bucket);
        strictEqual(run.size, String(binary(run.key).length));
        strictEqual(run.versionId, "", "no version without versioning");
      }
      const test = await worker.waitForLine(line("S3 test event; deleting it"));
      strictEqual(test.s3_bucket, fixture.bucket);
      const started = worker.lines.filter(line("job started"));
      deepStrictEqual(started.map((l) => l.s3_key).sort(), [...keys].sort());
      ok(started.every((l) => l.s3_bucket === fixture.bucket));
    }),
});

Deno.test({
  name: "s3: a versioned bucket: each job gets exactly the version its record names",
  ...testOptions,
  fn: () =>
    withS3Fixture({ versioned: true }, async (fixture) => {
      const key = "report final.csv";
      const v1 = await putObject(fixture.s3, fixture.bucket, key, "version one");
      const v2 = await putObject(fixture.s3, fixture.bucket, key, "version two");
      ok(v1 && v2 && v1 !== v2, "moto versions the object");
      // moto leaves versionId out of its records; S3 puts it in for versioned buckets.
      await sendMessages(fixture.sqs, fixture.url, [
        s3EventBody([{ bucket: fixture.bucket, key, versionId: v1 }]),
        s3EventBody([{ bucket: fixture.bucket, key, versionId: v2 }]),
      ]);
      const job = await fixture.script("job.sh", RECORDING_JOB);
      fixture.worker(["--exec", job]);
      await waitUntil("both ran", async () => (await fixture.ledger()).length >= 2);
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
      const runs = await jobRuns(fixture.dir);
      const byVersion = new Map(
        runs.map((run) => [run.versionId, new TextDecoder().decode(run.body)]),
      );
      deepStrictEqual(Object.fromEntries(byVersion), {
        [v1!]: "version one",
        [v2!]: "version two",
      });
    }),
});

Deno.test({
  name: "s3: an SNS-wrapped event runs like a direct one",
  ...testOptions,
  fn: () =>
    withS3Fixture({}, async (fixture) => {
      const key = "via sns+topic.txt";
      await putObject(fixture.s3, fixture.bucket, key, "from sns");
      await sendMessages(fixture.sqs, fixture.url, [
        snsEnvelope(s3EventBody([{ bucket: fixture.bucket, key }])),
      ]);
      const job = await fixture.script("job.sh", RECORDING_JOB);
      fixture.worker(["--exec", job]);
      await waitUntil("the job ran", async () => (await fixture.ledger()).length >= 1);
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
      const [run] = await jobRuns(fixture.dir);
      strictEqual(run.key, key);
      strictEqual(new TextDecoder().decode(run.body), "from sns");
    }),
});

Deno.test({
  name: "s3: a record for an object that is gone is logged, counted, and its message deleted",
  ...testOptions,
  fn: () =>
    withS3Fixture({}, async (fixture) => {
      await sendMessages(fixture.sqs, fixture.url, [
        s3EventBody([{ bucket: fixture.bucket, key: "never uploaded.txt" }]),
      ]);
      const job = await fixture.script("job.sh", RECORDING_JOB);
      const worker = fixture.worker(["--exec", job, "--http", "127.0.0.1:0"]);
      const url = await metricsUrl(worker);
      const gone = await worker.waitForLine(line("the S3 object no longer exists; nothing to run"));
      strictEqual(gone.s3_key, "never uploaded.txt");
      strictEqual(gone.level, "warn");
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
      await waitUntil(
        "the missing object is counted",
        async () => (await scrape(url, "sqsrun_s3_objects_missing_total")) === 1,
        5_000,
      );
      strictEqual(await scrape(url, "sqsrun_messages_deleted_total"), 1);
      deepStrictEqual(await fixture.ledger(), [], "no job ran");
      ok(!worker.lines.some(line("job started")));
    }),
});

Deno.test({
  name: "s3: malformed bodies are logged and released, never deleted",
  ...testOptions,
  fn: () =>
    withS3Fixture({}, async (fixture) => {
      const bodies = [
        "not json at all",
        JSON.stringify({ hello: "world" }),
        JSON.stringify({ Records: [{ eventName: "ObjectCreated:Put", s3: { bucket: {} } }] }),
        JSON.stringify({ Type: "Notification", Message: "{broken" }),
      ];
      await sendMessages(fixture.sqs, fixture.url, bodies);
      const job = await fixture.script("job.sh", RECORDING_JOB);
      // A long back-off keeps released messages out of sight, so each is seen once.
      const worker = fixture.worker(["--exec", job, "--backoff", "60", "-c", "4"]);
      await waitUntil(
        "all four were found malformed",
        () => worker.lines.filter(line("malformed message; releasing it")).length >= 4,
      );
      const errors = worker.lines.filter(line("malformed message; releasing it")).map((l) =>
        l.error as string
      ).sort();
      deepStrictEqual(errors, [
        "not an S3 event (no Records list)",
        "record 0 has no s3.bucket.name",
        "the SNS notification's Message is not JSON",
        "the message body is not JSON",
      ]);
      await waitUntil(
        "all four released",
        () => worker.lines.filter(line("message released")).length >= 4,
        5_000,
      );
      await worker.stop();
      strictEqual(await queueTotal(fixture), 4, "every malformed message is still in the queue");
      deepStrictEqual(await fixture.ledger(), []);
    }),
});

Deno.test({
  name: "s3: with --max-receives a malformed message ends as a poison message",
  ...testOptions,
  fn: () =>
    withS3Fixture({}, async (fixture) => {
      await sendMessages(fixture.sqs, fixture.url, ["{}"]);
      const job = await fixture.script("job.sh", RECORDING_JOB);
      const worker = fixture.worker(["--exec", job, "--max-receives", "2"]);
      const poison = await worker.waitForLine((l) => l.msg.startsWith("poison message"));
      strictEqual(poison.receive_count, 3);
      strictEqual(worker.lines.filter(line("malformed message; releasing it")).length, 2);
      await worker.stop();
      strictEqual(await queueTotal(fixture), 1, "parked, not deleted");
    }),
});

Deno.test({
  name: "s3: records run in order, other events are skipped, and one failure keeps the message",
  ...testOptions,
  fn: () =>
    withS3Fixture({}, async (fixture) => {
      for (const key of ["c", "a", "b", "fail", "after"]) {
        await putObject(fixture.s3, fixture.bucket, key, `body ${key}`);
      }
      const job = await fixture.script(
        "job.sh",
        `${RECORDING_JOB}\n[ "$SQSRUN_S3_KEY" != fail ]`,
      );
      await sendMessages(fixture.sqs, fixture.url, [
        s3EventBody([
          { bucket: fixture.bucket, key: "c" },
          { bucket: fixture.bucket, key: "gone", eventName: "ObjectRemoved:Delete" },
          { bucket: fixture.bucket, key: "a" },
          { bucket: fixture.bucket, key: "b" },
        ]),
      ]);
      const worker = fixture.worker(["--exec", job, "--log-level", "debug", "--backoff", "60"]);
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
      deepStrictEqual(await fixture.ledger(), ["c", "a", "b"]);
      const skipped = await worker.waitForLine(
        line("skipping an S3 record that is not ObjectCreated"),
      );
      strictEqual(skipped.s3_event, "ObjectRemoved:Delete");
      strictEqual(skipped.level, "debug");

      await sendMessages(fixture.sqs, fixture.url, [
        s3EventBody([
          { bucket: fixture.bucket, key: "a" },
          { bucket: fixture.bucket, key: "fail" },
          { bucket: fixture.bucket, key: "after" },
        ]),
      ]);
      await worker.waitForLine((l) => l.msg === "job failed" && l.s3_key === "fail");
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      deepStrictEqual(await fixture.ledger(), ["c", "a", "b", "a", "fail"], "'after' never ran");
      strictEqual(await queueTotal(fixture), 1, "the message stays for another try");
    }),
});

Deno.test({
  name: "s3: --s3-delete deletes the object after success and keeps it after failure",
  ...testOptions,
  fn: () =>
    withS3Fixture({ notify: true }, async (fixture) => {
      const job = await fixture.script(
        "job.sh",
        `${RECORDING_JOB}\ncase "$SQSRUN_S3_KEY" in *fail*) exit 3;; esac`,
      );
      await putObject(fixture.s3, fixture.bucket, "done with it.txt", "ok");
      await putObject(fixture.s3, fixture.bucket, "will fail.txt", "no");
      const worker = fixture.worker(["--exec", job, "--s3-delete", "--backoff", "60"]);
      await worker.waitForLine((l) => l.msg === "job failed" && l.s3_key === "will fail.txt");
      await waitUntil(
        "the succeeded object is deleted",
        async () => !await objectExists(fixture.s3, fixture.bucket, "done with it.txt"),
        10_000,
      );
      ok(await objectExists(fixture.s3, fixture.bucket, "will fail.txt"), "kept after failure");
      await waitUntil(
        "only the failed message is left",
        async () => await queueTotal(fixture) === 1,
      );
      ok(worker.lines.every((l) => l.msg !== "the job succeeded but its follow-up failed"));
      // Each deletion leaves one line, and the start line names the mode.
      const deleted = worker.lines.filter((l) => l.msg === "S3 object deleted");
      deepStrictEqual(deleted.map((l) => [l.s3_bucket, l.s3_key]), [
        [fixture.bucket, "done with it.txt"],
      ]);
      ok(typeof deleted[0].message_id === "string", "the line names the message");
      const started = worker.lines.find((l) => l.msg === "worker started");
      deepStrictEqual([started?.s3, started?.s3_delete, started?.s3_gunzip], [true, true, false]);
    }),
});

Deno.test({
  name: "s3: without --s3-delete objects are kept",
  ...testOptions,
  fn: () =>
    withS3Fixture({ notify: true }, async (fixture) => {
      const job = await fixture.script("job.sh", RECORDING_JOB);
      await putObject(fixture.s3, fixture.bucket, "keep me.txt", "ok");
      fixture.worker(["--exec", job]);
      await waitUntil("the job ran", async () => (await fixture.ledger()).length >= 1);
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
      ok(await objectExists(fixture.s3, fixture.bucket, "keep me.txt"));
    }),
});

Deno.test({
  name: "s3: --s3-gunzip decompresses Content-Encoding: gzip objects only",
  ...testOptions,
  fn: () =>
    withS3Fixture({ notify: true }, async (fixture) => {
      const text = "line one\nline two\n".repeat(1000);
      const zipped = gzipSync(text);
      await putObject(fixture.s3, fixture.bucket, "encoded.json", zipped, {
        contentEncoding: "gzip",
      });
      await putObject(fixture.s3, fixture.bucket, "archive.gz", zipped);
      const job = await fixture.script("job.sh", RECORDING_JOB);
      fixture.worker(["--exec", job, "--s3-gunzip"]);
      await waitUntil("both ran", async () => (await fixture.ledger()).length >= 2);
      const runs = new Map((await jobRuns(fixture.dir)).map((run) => [run.key, run]));
      strictEqual(new TextDecoder().decode(runs.get("encoded.json")!.body), text);
      deepStrictEqual(runs.get("archive.gz")!.body, new Uint8Array(zipped), "no header, no gunzip");
      strictEqual(runs.get("encoded.json")!.size, String(zipped.length), "the stored size");
    }),
});

Deno.test({
  name: "s3: a large object streams through with back-pressure: the worker never holds it",
  ...testOptions,
  fn: () =>
    withS3Fixture({ notify: true }, async (fixture) => {
      const size = 64 * 1024 * 1024;
      const job = await fixture.script(
        "job.sh",
        `[ "$SQSRUN_S3_KEY" = large ] && sleep 4
sha256sum | cut -d' ' -f1 > "$DIR/sum-$SQSRUN_S3_KEY"`,
      );
      const worker = fixture.worker(["--exec", job, "-t", "120"]);
      const status = async (field: string) => {
        const text = await Deno.readTextFile(`/proc/${worker.pid}/status`);
        return Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(text)![1]) * 1024;
      };
      await putObject(fixture.s3, fixture.bucket, "small", "warm-up");
      await worker.waitForLine((l) => l.msg === "job finished" && l.s3_key === "small");
      const idleRss = await status("VmRSS");
      const smallHwm = await status("VmHWM");

      const sha = await uploadLargeObject(fixture.s3, fixture.bucket, "large", size);
      await worker.waitForLine((l) => l.msg === "job started" && l.s3_key === "large");
      // The job sleeps before it reads: a worker that read ahead would fill up now.
      let sleepingRss = 0;
      for (let i = 0; i < 12; i++) {
        await new Promise((resolve) => setTimeout(resolve, 250));
        sleepingRss = Math.max(sleepingRss, await status("VmRSS"));
      }
      await worker.waitForLine((l) => l.msg === "job finished" && l.s3_key === "large", 60_000);
      const largeHwm = await status("VmHWM");
      strictEqual((await Deno.readTextFile(`${fixture.dir}/sum-large`)).trim(), sha);
      const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`;
      console.log(
        `  64 MB object: RSS idle ${mb(idleRss)}, while the job slept ${mb(sleepingRss)}; ` +
          `VmHWM after the small object ${mb(smallHwm)}, after the large one ${mb(largeHwm)}`,
      );
      ok(
        sleepingRss - idleRss < 16 * 1024 * 1024,
        `the worker read ahead while the job did not read: ${mb(sleepingRss - idleRss)}`,
      );
    }),
});

Deno.test({
  name: "s3: a download that breaks off fails the job: the message is released, the object kept",
  ...testOptions,
  fn: () =>
    withS3Fixture({ notify: true }, async (fixture) => {
      const proxy = startTcpProxy(motoEndpoint());
      try {
        const job = await fixture.script(
          "job.sh",
          `sleep 3; wc -c < /dev/stdin | tr -d ' ' > "$DIR/got"; echo done >> "$DIR/ledger"`,
        );
        const size = 32 * 1024 * 1024;
        await uploadLargeObject(fixture.s3, fixture.bucket, "big", size);
        // S3 through a relay the test can cut; SQS direct.
        const worker = fixture.worker(["--exec", job, "--s3-delete"], {
          AWS_ENDPOINT_URL_S3: proxy.url,
        });
        await worker.waitForLine((l) => l.msg === "job started" && l.s3_key === "big");
        await new Promise((resolve) => setTimeout(resolve, 500));
        proxy.cut();
        const broke = await worker.waitForLine(
          line("reading the S3 object failed part way; the job got only part of it"),
        );
        strictEqual(broke.level, "error");
        strictEqual(broke.s3_key, "big");
        const failed = await worker.waitForLine(line("job failed"), 30_000);
        match(failed.error as string, /^the job's input broke off/);
        strictEqual(failed.s3_key, "big");
        ok(!worker.lines.some((l) => l.msg === "job finished"), "a truncated input never succeeds");
        const released = await worker.waitForLine(line("message released"));
        strictEqual(released.message_id, failed.message_id);
        ok(await objectExists(fixture.s3, fixture.bucket, "big"), "the object is kept");
      } finally {
        proxy.close();
      }
    }),
});

Deno.test({
  name: "s3: an S3 endpoint that cannot be reached releases the message with a one-line reason",
  ...testOptions,
  fn: () =>
    withS3Fixture({}, async (fixture) => {
      const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const port = (closed.addr as Deno.NetAddr).port;
      closed.close();
      await putObject(fixture.s3, fixture.bucket, "here.txt", "x");
      await sendMessages(fixture.sqs, fixture.url, [
        s3EventBody([{ bucket: fixture.bucket, key: "here.txt" }]),
      ]);
      const job = await fixture.script("job.sh", RECORDING_JOB);
      const worker = fixture.worker(["--exec", job, "--backoff", "60"], {
        AWS_ENDPOINT_URL_S3: `http://127.0.0.1:${port}`,
      });
      const failed = await worker.waitForLine(
        line("cannot open the job's input; releasing the message"),
      );
      strictEqual(
        failed.error,
        `cannot get s3://${fixture.bucket}/here.txt: cannot reach the S3 endpoint (connection refused)`,
      );
      await worker.waitForLine(line("message released"));
      strictEqual(await queueTotal(fixture), 1);
      deepStrictEqual(await fixture.ledger(), []);
    }),
});

Deno.test("s3: event parsing: keys, SNS envelopes, test events, skipped and malformed records", () => {
  strictEqual(decodeS3Key("a+b%2Bc%2F%C3%BC%2520x.txt"), "a b+c/ü%20x.txt");
  strictEqual(decodeS3Key(encodeEventKey("x y+z%ä/日")), "x y+z%ä/日");
  const event = s3EventBody([
    { bucket: "b", key: "one two", versionId: "v1", size: 5 },
    { bucket: "b", key: "x", eventName: "ObjectRemoved:Delete" },
    { bucket: "b", key: "three", eventName: "ObjectCreated:CompleteMultipartUpload" },
  ]);
  for (const body of [event, snsEnvelope(event)]) {
    const parsed = parseS3Event(body);
    if (parsed.kind !== "records") throw new Error("records expected");
    deepStrictEqual(parsed.objects.map((o) => [o.bucket, o.key, o.versionId, o.size]), [
      ["b", "one two", "v1", 5],
      ["b", "three", undefined, 0],
    ]);
    deepStrictEqual(parsed.skipped, ["ObjectRemoved:Delete"]);
  }
  deepStrictEqual(
    parseS3Event(JSON.stringify({ Service: "Amazon S3", Event: "s3:TestEvent", Bucket: "b" })),
    { kind: "test", bucket: "b" },
  );
  deepStrictEqual(parseS3Event(JSON.stringify({ Records: [] })), {
    kind: "records",
    objects: [],
    skipped: [],
  });
  const nullVersion = JSON.parse(s3EventBody([{ bucket: "b", key: "k", versionId: "null" }]));
  const parsed = parseS3Event(JSON.stringify(nullVersion));
  strictEqual(parsed.kind === "records" && parsed.objects[0].versionId, undefined);
  for (
    const body of [
      "",
      "[]",
      "null",
      JSON.stringify({ Records: "no" }),
      JSON.stringify({ Records: [1] }),
      JSON.stringify({ Records: [{ s3: {} }] }),
      JSON.stringify({
        Records: [{ eventName: "ObjectCreated:Put", s3: { bucket: { name: "b" } } }],
      }),
      JSON.stringify({
        Records: [{
          eventName: "ObjectCreated:Put",
          s3: { bucket: { name: "b" }, object: { key: "%E0" } },
        }],
      }),
      JSON.stringify({ Type: "Notification", Message: { Records: [] } }),
      JSON.stringify({
        Type: "SubscriptionConfirmation",
        TopicArn: "arn",
        SubscribeURL: "https://x",
      }),
    ]
  ) {
    throws(() => parseS3Event(body), MalformedMessageError, body);
  }
});
