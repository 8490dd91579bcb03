/**
 * Metrics and health: DogStatsD datagrams caught by a UDP socket in the test, the
 * Prometheus page and /healthz scraped while a real worker runs against moto, the
 * start-up errors of `--http`, and the flags and config keys of both.
 */
import { deepStrictEqual, equal, match, ok, strictEqual, throws } from "node:assert/strict";
import dgram from "node:dgram";
import type { SQSClient } from "@aws-sdk/client-sqs";
import { parseCli } from "../src/cli.ts";
import { parseAddress, parseConfigText, parseTags } from "../src/config.ts";
import { UsageError } from "../src/errors.ts";
import { healthWindowMs, startHttpMetrics } from "../src/metrics/http.ts";
import { formatLine, resolveStatsdAddress, statsdTags } from "../src/metrics/statsd.ts";
import { assertOneLineError, runCli } from "./support/cli.ts";
import { awsEnv, motoEndpoint, uniqueName } from "./support/local_aws.ts";
import { createQueue, deleteQueue, queueCounts, sendMessages, testClient } from "./support/sqs.ts";
import { startTcpProxy } from "./support/tcp_proxy.ts";
import { type LogLine, startWorker, waitUntil, type WorkerProcess } from "./support/worker.ts";
import { quietLogger } from "./support/recording_logger.ts";

const testOptions = { sanitizeOps: false, sanitizeResources: false };

interface Fixture {
  sqs: SQSClient;
  url: string;
  name: string;
  dir: string;
  env: Record<string, string>;
  /** A job that fails after 1 s on body `fail`, sleeps 4 s on `slow`, appends the body to $DIR/ledger. */
  job: string;
  worker(args: string[], extraEnv?: Record<string, string>, endpoint?: string): WorkerProcess;
  ledger(): Promise<string[]>;
}

async function withFixture(body: (fixture: Fixture) => Promise<void>): Promise<void> {
  const endpoint = motoEndpoint();
  const sqs = testClient(endpoint);
  const name = uniqueName("metrics");
  const url = await createQueue(sqs, name);
  const dir = await Deno.makeTempDir({ prefix: "sqsrun-metrics-" });
  await Deno.writeTextFile(`${dir}/ledger`, "");
  const job = `${dir}/job.sh`;
  await Deno.writeTextFile(
    job,
    `#!/bin/sh
body=$(cat)
case "$body" in slow) sleep 4;; fail) sleep 1;; esac
printf '%s\\n' "$body" >> '${dir}/ledger'
[ "$body" != fail ]
`,
  );
  await Deno.chmod(job, 0o755);
  const env = {
    ...awsEnv(endpoint),
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    HOME: Deno.env.get("HOME") ?? dir,
  };
  const workers: WorkerProcess[] = [];
  try {
    await body({
      sqs,
      url,
      name,
      dir,
      env,
      job,
      worker(args, extraEnv = {}, workerEndpoint) {
        const workerEnv = {
          ...env,
          ...extraEnv,
          ...(workerEndpoint ? awsEnv(workerEndpoint) : {}),
        };
        // The release binary's permissions, not -A: UDP and HTTP must work under them.
        const worker = startWorker(["-q", url, "--exec", job, "--wait", "1", ...args], {
          env: workerEnv,
          binaryPermissions: true,
        });
        workers.push(worker);
        return worker;
      },
      async ledger() {
        return (await Deno.readTextFile(`${dir}/ledger`)).split("\n").filter(Boolean);
      },
    });
  } finally {
    await Promise.all(workers.map((worker) => worker.stop()));
    await deleteQueue(sqs, url);
    sqs.destroy();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

async function queueEmpty(fixture: Fixture): Promise<boolean> {
  const counts = await queueCounts(fixture.sqs, fixture.url);
  return counts.visible === 0 && counts.inFlight === 0 && counts.delayed === 0;
}

/** A UDP socket that collects every datagram sent to it. */
async function listenUdp(): Promise<{ port: number; datagrams: string[]; close(): void }> {
  const socket = dgram.createSocket("udp4");
  const datagrams: string[] = [];
  socket.on("message", (message) => datagrams.push(new TextDecoder().decode(message)));
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", () => resolve()));
  return {
    port: (socket.address() as { port: number }).port,
    datagrams,
    close: () => socket.close(),
  };
}

/** The metric lines of all datagrams. */
const statsdLines = (datagrams: string[]) => datagrams.flatMap((d) => d.split("\n"));

const line = (msg: string) => (l: LogLine) => l.msg === msg;

async function metricsUrl(worker: WorkerProcess): Promise<string> {
  return (await worker.waitForLine(line("serving /metrics and /healthz"))).url as string;
}

/** Parses a Prometheus text page into `series{labels}` -> value, checking every line's shape. */
function parsePrometheus(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  ok(text.endsWith("\n"), "the page ends with a newline");
  for (const row of text.slice(0, -1).split("\n")) {
    if (row.startsWith("# HELP ") || row.startsWith("# TYPE ")) {
      match(row, /^# (HELP|TYPE) sqsrun_[a-z0-9_]+ \S/);
      continue;
    }
    const sample = /^(sqsrun_[a-z0-9_]+(?:\{[^}]*\})?) (-?[0-9.]+(?:e[+-]?[0-9]+)?|\+Inf|NaN)$/
      .exec(row);
    ok(sample, `a well-formed sample: ${JSON.stringify(row)}`);
    samples.set(sample[1], Number(sample[2]));
  }
  return samples;
}

async function scrape(url: string): Promise<Map<string, number>> {
  const response = await fetch(`${url}/metrics`);
  strictEqual(response.status, 200);
  strictEqual(response.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  return parsePrometheus(await response.text());
}

async function health(url: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`${url}/healthz`);
  return { status: response.status, body: await response.json() };
}

Deno.test({
  name: "statsd: job.time, job.age and the counters in the exact DogStatsD format, with all tags",
  ...testOptions,
  fn: () =>
    withFixture(async (fixture) => {
      const agent = await listenUdp();
      try {
        await sendMessages(fixture.sqs, fixture.url, ["ok", "fail"]);
        const worker = fixture.worker(
          [
            "--statsd",
            `127.0.0.1:${agent.port}`,
            "--statsd-tags",
            "team:jobs,canary",
            "--backoff",
            "60",
          ],
          { DD_ENV: "test", DD_SERVICE: "thumbs", DD_VERSION: "1.2.3" },
        );
        await waitUntil("both ran", async () => (await fixture.ledger()).length >= 2);
        await waitUntil(
          "the settlements were sent",
          () =>
            statsdLines(agent.datagrams).some((l) => l.startsWith("messages.deleted:")) &&
            statsdLines(agent.datagrams).some((l) => l.startsWith("messages.released:")),
          5_000,
        );
        const tags = `team:jobs,canary,env:test,service:thumbs,version:1.2.3,queue:${fixture.name}`;
        const lines = statsdLines(agent.datagrams);
        const only = (name: string) => lines.filter((l) => l.startsWith(`${name}:`));
        const timings = only("job.time");
        strictEqual(timings.length, 2, lines.join("\n"));
        const escaped = tags.replaceAll(".", "\\.");
        // The failing job takes a second, the other a few ms: each tag goes with its own job.
        const timing = (success: number) => {
          const found = timings.map((l) =>
            new RegExp(`^job\\.time:(\\d+)\\|ms\\|#success:${success},${escaped}$`).exec(l)
          ).find(Boolean);
          ok(found, `a job.time with success:${success} in ${timings}`);
          return Number(found[1]);
        };
        ok(timing(1) < 1_000, "the succeeded job was quick");
        ok(timing(0) >= 1_000, "the failed job took its second");
        const ages = only("job.age");
        strictEqual(ages.length, 2);
        ok(ages.every((l) => new RegExp(`^job\\.age:\\d+\\|ms\\|#${escaped}$`).test(l)), ages[0]);
        deepStrictEqual(only("messages.deleted"), [`messages.deleted:1|c|#${tags}`]);
        deepStrictEqual(only("messages.released"), [`messages.released:1|c|#${tags}`]);
        const received = only("messages.received").map((l) => Number(/:(\d+)\|/.exec(l)![1]));
        strictEqual(received.reduce((a, b) => a + b, 0), 2);
        ok(only("messages.received").every((l) => l.endsWith(`|c|#${tags}`)));
        ok(agent.datagrams.every((d) => new TextEncoder().encode(d).length <= 1432));
        const started = worker.lines.find(line("worker started"));
        strictEqual(started?.statsd, `127.0.0.1:${agent.port}`, "the start names the target");
        ok(
          !worker.lines.some((l) => l !== started && /statsd/i.test(JSON.stringify(l))),
          "no complaint",
        );
      } finally {
        agent.close();
      }
    }),
});

Deno.test({
  name: "statsd: DD_AGENT_HOST and DD_DOGSTATSD_PORT turn it on; --statsd-prefix prefixes names",
  ...testOptions,
  fn: () =>
    withFixture(async (fixture) => {
      const agent = await listenUdp();
      try {
        await sendMessages(fixture.sqs, fixture.url, ["ok"]);
        fixture.worker(["--statsd-prefix", "sqsrun."], {
          DD_AGENT_HOST: "127.0.0.1",
          DD_DOGSTATSD_PORT: String(agent.port),
        });
        await waitUntil(
          "job.time arrived",
          () => statsdLines(agent.datagrams).some((l) => l.startsWith("sqsrun.job.time:")),
        );
        const timing = statsdLines(agent.datagrams).find((l) => l.startsWith("sqsrun.job.time:"))!;
        match(
          timing,
          new RegExp(`^sqsrun\\.job\\.time:\\d+\\|ms\\|#success:1,queue:${fixture.name}$`),
        );
        ok(statsdLines(agent.datagrams).every((l) => l.startsWith("sqsrun.")));
      } finally {
        agent.close();
      }
    }),
});

Deno.test({
  name:
    "statsd: an absent agent (closed port, unresolvable host) never holds up a job; one warning",
  ...testOptions,
  fn: () =>
    withFixture(async (fixture) => {
      const closed = await listenUdp();
      closed.close();
      await sendMessages(fixture.sqs, fixture.url, ["a", "b", "c"]);
      // -t 2: a long poll cut short by the stop below may still take a message of the
      // next batch on the server's side; it must come back quickly.
      const toClosedPort = fixture.worker(["--statsd", `127.0.0.1:${closed.port}`, "-t", "2"]);
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
      ok(!toClosedPort.lines.some((l) => l.level === "warn" || l.level === "error"));
      await toClosedPort.stop();

      // Spaced out, so that several datagrams fail to go.
      await sendMessages(fixture.sqs, fixture.url, ["slow", "d", "e"]);
      const toNowhere = fixture.worker(["--statsd", "no-such-host.invalid:8125"]);
      await waitUntil("the queue is empty", () => queueEmpty(fixture), 30_000);
      const warnings = toNowhere.lines.filter((l) => l.level === "warn");
      strictEqual(warnings.length, 1, JSON.stringify(warnings));
      strictEqual(
        warnings[0].msg,
        "cannot send DogStatsD metrics; dropping them until the agent is back",
      );
      match(warnings[0].error as string, /no-such-host\.invalid|ENOTFOUND|lookup/i);
      strictEqual(toNowhere.lines.filter(line("job finished")).length, 3);
      deepStrictEqual((await fixture.ledger()).length, 6);
    }),
});

Deno.test({
  name: "http: /metrics counts a run, /healthz is 200 while running and 503 while draining",
  ...testOptions,
  fn: () =>
    withFixture(async (fixture) => {
      await sendMessages(fixture.sqs, fixture.url, ["ok", "ok", "fail"]);
      const worker = fixture.worker(["--http", ":0", "-c", "2", "--backoff", "60"]);
      const url = await metricsUrl(worker);
      match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
      await waitUntil("three jobs finished", () =>
        worker.lines.filter((l) =>
          l.msg === "job finished" || l.msg === "job failed"
        ).length >= 3);
      // The failed message's release is counted just before its line is logged.
      await worker.waitForLine(line("message released"));
      await waitUntil("settled", async () =>
        (await queueCounts(fixture.sqs, fixture.url)).inFlight === 1);

      const q = `queue="${fixture.name}"`;
      const samples = await scrape(url);
      const value = (series: string) =>
        samples.get(series);
      strictEqual(value(`sqsrun_messages_received_total{${q}}`), 3);
      strictEqual(value(`sqsrun_messages_deleted_total{${q}}`), 2);
      strictEqual(value(`sqsrun_messages_released_total{${q}}`), 1);
      strictEqual(value(`sqsrun_jobs_started_total{${q}}`), 3);
      strictEqual(value(`sqsrun_jobs_killed_total{${q}}`), 0);
      strictEqual(value(`sqsrun_receive_errors_total{${q}}`), 0);
      strictEqual(value(`sqsrun_s3_objects_missing_total{${q}}`), 0);
      strictEqual(value(`sqsrun_jobs_succeeded_total{${q}}`), 2);
      strictEqual(value(`sqsrun_jobs_failed_total{${q}}`), 1);
      strictEqual(value(`sqsrun_messages_parked_total{${q}}`), 0);
      ok(value(`sqsrun_receive_calls_total{${q}}`)! >= 1);
      strictEqual(worker.lines.find(line("worker started"))?.http, url, "the start names it");
      strictEqual(value(`sqsrun_job_duration_seconds_count{${q},success="1"}`), 2);
      strictEqual(value(`sqsrun_job_duration_seconds_count{${q},success="0"}`), 1);
      strictEqual(value(`sqsrun_job_duration_seconds_bucket{${q},success="1",le="+Inf"}`), 2);
      strictEqual(value(`sqsrun_job_duration_seconds_bucket{${q},success="1",le="3600"}`), 2);
      ok(value(`sqsrun_job_duration_seconds_sum{${q},success="1"}`)! > 0);
      strictEqual(value(`sqsrun_job_age_seconds_count{${q}}`), 3);
      strictEqual(value(`sqsrun_jobs_running{${q}}`), 0);
      strictEqual(value(`sqsrun_draining{${q}}`), 0);
      ok(Math.abs(value(`sqsrun_last_receive_timestamp_seconds{${q}}`)! - Date.now() / 1000) < 30);
      // Buckets are cumulative.
      const buckets = [...samples].filter(([k]) =>
        k.startsWith(`sqsrun_job_duration_seconds_bucket{${q},success="1"`)
      ).map(([, v]) =>
        v
      );
      deepStrictEqual(buckets, [...buckets].sort((a, b) => a - b));

      const ok200 = await health(url);
      strictEqual(ok200.status, 200);
      strictEqual(ok200.body.status, "ok");
      strictEqual(
        await fetch(`${url}/nope`).then(async (r) => (await r.body?.cancel(), r.status)),
        404,
      );

      await sendMessages(fixture.sqs, fixture.url, ["slow"]);
      await waitUntil("the slow job started", () =>
        worker.lines.filter(line("job started")).length >= 4);
      strictEqual((await scrape(url)).get(`sqsrun_jobs_running{${q}}`), 1);
      strictEqual((await health(url)).status, 200, "healthy while a job runs");
      worker.signal("SIGTERM");
      await worker.waitForLine(line("draining: no new messages; waiting for running jobs"));
      const draining = await health(url);
      strictEqual(draining.status, 503);
      strictEqual(draining.body.status, "draining");
      strictEqual(draining.body.running, 1);
      strictEqual((await scrape(url)).get(`sqsrun_draining{${q}}`), 1);
      const status = await worker.exit(20_000);
      strictEqual(status.code, 0);
      ok((await fixture.ledger()).includes("slow"), "the running job finished during the drain");
      // The summary: what /metrics said above, plus the slow job.
      const stopped = worker.lines.find(line("worker stopped"))!;
      ok(typeof stopped.uptime_s === "number" && stopped.uptime_s > 0, JSON.stringify(stopped));
      deepStrictEqual(
        Object.fromEntries(
          ["received", "jobs_run", "succeeded", "failed", "killed", "deleted", "released"]
            .concat(["parked", "lines_dropped"]).map((key) => [key, stopped[key]]),
        ),
        {
          received: value(`sqsrun_messages_received_total{${q}}`)! + 1,
          jobs_run: value(`sqsrun_jobs_started_total{${q}}`)! + 1,
          succeeded: value(`sqsrun_jobs_succeeded_total{${q}}`)! + 1,
          failed: value(`sqsrun_jobs_failed_total{${q}}`),
          killed: value(`sqsrun_jobs_killed_total{${q}}`),
          deleted: value(`sqsrun_messages_deleted_total{${q}}`)! + 1,
          released: value(`sqsrun_messages_released_total{${q}}`),
          parked: value(`sqsrun_messages_parked_total{${q}}`),
          lines_dropped: 0,
        },
      );
      await fetch(`${url}/healthz`).then(
        () =>
          ok(false, "the listener is closed after the worker stopped"),
        () => {},
      );
    }),
});

Deno.test({
  name: "http: /healthz turns 503 when receive calls keep failing, and 200 again when they work",
  ...testOptions,
  fn: () =>
    withFixture(async (fixture) => {
      const proxy = startTcpProxy(motoEndpoint());
      try {
        const worker = fixture.worker(["--http", "127.0.0.1:0", "-i", "1"], {}, proxy.url);
        const url = await metricsUrl(worker);
        const window = (await worker.waitForLine(line("serving /metrics and /healthz")))
          .health_window_s;
        strictEqual(window, healthWindowMs(1, 1) / 1000);
        await waitUntil("polling", async () =>
          (await scrape(url)).get(
            `sqsrun_receive_calls_total{queue="${fixture.name}"}`,
          )! >= 1);
        strictEqual((await health(url)).status, 200);
        proxy.cut();
        await waitUntil("unhealthy", async () => (await health(url)).status === 503, 25_000);
        const stalled = await health(url);
        strictEqual(stalled.body.status, "not receiving");
        ok((stalled.body.seconds_since_receive as number) >= 12);
        ok((await scrape(url)).get(`sqsrun_receive_errors_total{queue="${fixture.name}"}`)! >= 1);
        proxy.restore();
        await waitUntil("healthy again", async () => (await health(url)).status === 200, 40_000);
      } finally {
        proxy.close();
      }
    }),
});

Deno.test({
  name:
    "http: /healthz answers 503 'starting' with the reason while SQS cannot be reached at start-up",
  ...testOptions,
  fn: () =>
    withFixture(async (fixture) => {
      const proxy = startTcpProxy(motoEndpoint());
      proxy.cut();
      try {
        // A queue name (not its URL) must be resolved before anything else can happen.
        const worker = fixture.worker(["--http", "127.0.0.1:0", "-q", fixture.name], {}, proxy.url);
        const url = await metricsUrl(worker);
        await worker.waitForLine(line("cannot resolve the queue yet; retrying"), 20_000);
        const starting = await health(url);
        strictEqual(starting.status, 503);
        strictEqual(starting.body.status, "starting");
        ok(String(starting.body.reason).startsWith("starting: "), String(starting.body.reason));
        ok(String(starting.body.reason).includes("SQS"), String(starting.body.reason));
        ok(!worker.lines.some(line("worker started")));
        proxy.restore();
        await worker.waitForLine(line("worker started"), 40_000);
        await waitUntil("healthy once receiving", async () => (await health(url)).status === 200);
      } finally {
        proxy.close();
      }
    }),
});

Deno.test({
  name: "http: a bad --http value is a usage error, a port in use a runtime error, each one line",
  ...testOptions,
  fn: async () => {
    for (const value of ["nope", "host:", "127.0.0.1:70000", "[::1", "a:b:c"]) {
      const result = await runCli(["-q", "jobs", "--exec", "true", "--http", value]);
      assertOneLineError(result, 2, ["--http", value], value);
    }
    const endpoint = motoEndpoint();
    const sqs = testClient(endpoint);
    const url = await createQueue(sqs, uniqueName("metrics-busy"));
    const holder = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    try {
      const port = (holder.addr as Deno.NetAddr).port;
      const result = await runCli(
        ["-q", url, "--exec", "true", "--http", `127.0.0.1:${port}`],
        { env: awsEnv(endpoint) },
      );
      assertOneLineError(result, 1, [`--http 127.0.0.1:${port}`, "already in use"]);
    } finally {
      holder.close();
      await deleteQueue(sqs, url);
      sqs.destroy();
    }
  },
});

Deno.test("http: health follows polls, busy slots and the drain (fake clock)", async () => {
  let now = 0;
  const metrics = startHttpMetrics({
    address: { hostname: "127.0.0.1", port: 0 },
    queue: 'q"x',
    concurrency: 1,
    healthWindowMs: 1_000,
    log: quietLogger,
    now: () => now,
  });
  const status = async () => (await fetch(`${metrics.url}/healthz`).then(async (r) => {
    await r.body?.cancel();
    return r.status;
  }));
  try {
    strictEqual(await status(), 503, "healthy before the worker started receiving");
    metrics.starting("cannot reach SQS (connection refused)");
    const starting = await (await fetch(`${metrics.url}/healthz`)).json();
    strictEqual(starting.status, "starting");
    strictEqual(starting.reason, "starting: cannot reach SQS (connection refused)");
    metrics.started();
    metrics.polled();
    now = 900;
    strictEqual(await status(), 200);
    now = 1_100;
    strictEqual(await status(), 503, "no poll for longer than the window");
    metrics.slots(1, 0);
    strictEqual(await status(), 200, "every slot busy: not polling is fine");
    now = 5_000;
    strictEqual(await status(), 200);
    metrics.slots(0, 0);
    strictEqual(await status(), 200, "a slot just came free: the clock starts again");
    now = 6_100;
    strictEqual(await status(), 503);
    metrics.polled();
    strictEqual(await status(), 200);
    metrics.draining();
    strictEqual(await status(), 503);
    const page = await (await fetch(`${metrics.url}/metrics`)).text();
    ok(page.includes('sqsrun_jobs_running{queue="q\\"x"} 0'), "label values are escaped");
    strictEqual(
      await fetch(`${metrics.url}/metrics`, { method: "POST" }).then(async (r) => {
        await r.body?.cancel();
        return r.status;
      }),
      405,
    );
  } finally {
    await metrics.close();
  }
});

Deno.test("metrics: flags, config keys and their errors", async () => {
  const options = async (argv: string[], files: Record<string, string> = {}) => {
    const result = await parseCli(argv, {
      loadFile: (path) => Promise.resolve(parseConfigText(files[path], path)),
    });
    if (result.kind !== "options") throw new Error("options expected");
    return result.options;
  };
  const fromFlags = await options([
    "-q",
    "jobs",
    "--exec",
    "./job",
    "--s3",
    "--s3-delete",
    "--s3-gunzip",
    "--statsd",
    "agent:8125",
    "--statsd-prefix",
    "sqsrun.",
    "--statsd-tags",
    "team:a,canary",
    "--statsd-tags",
    "tier:2",
    "--http",
    "9090",
  ]);
  deepStrictEqual(
    [
      fromFlags.s3,
      fromFlags.s3Delete,
      fromFlags.s3Gunzip,
      fromFlags.statsd,
      fromFlags.statsdPrefix,
      fromFlags.statsdTags,
      fromFlags.http,
    ],
    [true, true, true, "agent:8125", "sqsrun.", ["team:a", "canary", "tier:2"], "9090"],
  );
  const yaml = `queue: jobs
exec: ./job
s3: true
s3-delete: true
s3-gunzip: true
statsd: agent:8125
statsd-prefix: sqsrun.
statsd-tags: [team:a, canary, "tier:2"]
http: 9090
`;
  const fromFile = await options(["-f", "c.yaml"], { "c.yaml": yaml });
  deepStrictEqual({ ...fromFile, files: [] }, { ...fromFlags, files: [] });
  strictEqual(
    (await options(["-f", "c.yaml"], { "c.yaml": "exec: x\nqueue: q\nstatsd-tags: a:b,c\n" }))
      .statsdTags.join(),
    "a:b,c",
  );

  for (
    const [argv, mention] of [
      [["--s3-delete"], "--s3-delete only applies with --s3"],
      [["--s3-gunzip"], "--s3-gunzip only applies with --s3"],
      [["--statsd", "agent"], "--statsd must be HOST:PORT"],
      [["--statsd", ":8125"], "--statsd must be HOST:PORT with a host"],
      [["--statsd", "agent:0"], "port from 1 to 65535"],
      [["--statsd-tags", "a|b"], "--statsd-tags must be tags"],
      [["--statsd-tags", "a,,b"], "--statsd-tags must be tags"],
      [["--http", "127.0.0.1:99999"], "--http must be [HOST:]PORT with a port from 0 to 65535"],
    ] as const
  ) {
    await options(["-q", "q", "--exec", "x", ...argv]).then(
      () => ok(false, `${argv.join(" ")} must fail`),
      (error) => {
        ok(error instanceof UsageError, String(error));
        ok(error.message.includes(mention), `${error.message} mentions ${mention}`);
      },
    );
  }
  throws(() => parseConfigText("http: [1]\n", "c.yaml"), /key 'http' must be \[HOST:\]PORT/);
});

Deno.test("metrics: address, tag and line helpers", () => {
  deepStrictEqual(parseAddress("agent:8125", "x"), { hostname: "agent", port: 8125 });
  deepStrictEqual(parseAddress("[::1]:9090", "x", "127.0.0.1"), { hostname: "::1", port: 9090 });
  deepStrictEqual(parseAddress(":9090", "x", "127.0.0.1"), { hostname: "127.0.0.1", port: 9090 });
  deepStrictEqual(parseAddress("9090", "x", "127.0.0.1"), { hostname: "127.0.0.1", port: 9090 });
  deepStrictEqual(parseAddress("0.0.0.0:0", "x", "127.0.0.1"), { hostname: "0.0.0.0", port: 0 });
  throws(() => parseAddress("9090", "x"), UsageError);
  deepStrictEqual(parseTags("a:b, c", "x"), ["a:b", "c"]);
  equal(
    formatLine("job.time", 12, "ms", ["success:1", "queue:q"]),
    "job.time:12|ms|#success:1,queue:q",
  );
  equal(formatLine("messages.deleted", 1, "c", []), "messages.deleted:1|c");
  const env = (values: Record<string, string>) => (name: string) => values[name];
  deepStrictEqual(resolveStatsdAddress(undefined, env({})), undefined);
  deepStrictEqual(resolveStatsdAddress(undefined, env({ DD_AGENT_HOST: "10.0.0.7" })), {
    hostname: "10.0.0.7",
    port: 8125,
  });
  deepStrictEqual(
    resolveStatsdAddress(undefined, env({ DD_AGENT_HOST: "dd", DD_DOGSTATSD_PORT: "9125" })),
    { hostname: "dd", port: 9125 },
  );
  deepStrictEqual(resolveStatsdAddress("off", env({ DD_AGENT_HOST: "dd" })), undefined);
  deepStrictEqual(resolveStatsdAddress("a:1", env({ DD_AGENT_HOST: "dd" })), {
    hostname: "a",
    port: 1,
  });
  throws(
    () => resolveStatsdAddress(undefined, env({ DD_AGENT_HOST: "dd", DD_DOGSTATSD_PORT: "x" })),
    /DD_DOGSTATSD_PORT/,
  );
  deepStrictEqual(
    statsdTags(["t:1"], "jobs", env({ DD_ENV: "prod", DD_SERVICE: "my svc", DD_VERSION: "1|2" })),
    ["t:1", "env:prod", "service:my_svc", "version:1_2", "queue:jobs"],
  );
  strictEqual(healthWindowMs(20, 1), 50_000);
  strictEqual(healthWindowMs(0, 0.5), 12_000);
  strictEqual(healthWindowMs(0, 30), 70_000);
});
