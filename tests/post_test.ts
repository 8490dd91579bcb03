/**
 * `--post` end to end: sqsrun delivers messages to a real web app on loopback
 * (Deno.serve in this process, one per test; a Flask app written the Beanstalk way),
 * against the real emulators, and what the app saw is compared with what was sent.
 */
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { createHmac } from "node:crypto";
import { join } from "node:path";
import { ReceiveMessageCommand, SendMessageCommand, type SQSClient } from "@aws-sdk/client-sqs";
import {
  awsEnv,
  motoEndpoint,
  type SqsBackend,
  sqsBackends,
  uniqueName,
} from "./support/local_aws.ts";
import { createQueue, deleteQueue, queueCounts, sendMessages, testClient } from "./support/sqs.ts";
import { type LogLine, startWorker, waitUntil, type WorkerProcess } from "./support/worker.ts";
import { assertOneLineError, runCli } from "./support/cli.ts";
import { mixedBody } from "./support/bodies.ts";
import { createBucket, deleteBucket, putObject, s3EventBody, testS3Client } from "./support/s3.ts";
import { installationPaths } from "../scripts/local_aws.ts";

const testOptions = { sanitizeOps: false, sanitizeResources: false };

/** One request as the app saw it. */
interface Seen {
  path: string;
  method: string;
  headers: Headers;
  body: Uint8Array;
  /** Date.now() when it arrived. */
  at: number;
  /** The client went away before the app answered. */
  aborted: boolean;
}

/** A web app on loopback that records every request and answers with `handler`. */
interface App {
  port: number;
  url: string;
  seen: Seen[];
  /** Requests to one path. */
  posts(path?: string): Seen[];
  close(): Promise<void>;
}

type Handler = (seen: Seen, request: Request) => Response | Promise<Response>;

/** A loopback port that nothing listens on (now). */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

function startApp(handler: Handler, port = 0): App {
  const seen: Seen[] = [];
  const server = Deno.serve(
    { hostname: "127.0.0.1", port, onListen: () => {} },
    async (request) => {
      const entry: Seen = {
        path: new URL(request.url).pathname,
        method: request.method,
        headers: request.headers,
        body: new Uint8Array(await request.arrayBuffer()),
        at: Date.now(),
        aborted: false,
      };
      seen.push(entry);
      let answered = false;
      // Deno aborts the signal after an answer too: only an abort before it counts.
      request.signal.addEventListener("abort", () => entry.aborted ||= !answered);
      const response = await handler(entry, request);
      answered = true;
      return response;
    },
  );
  return {
    port: server.addr.port,
    url: `http://127.0.0.1:${server.addr.port}`,
    seen,
    posts: (path = "/jobs") => seen.filter((s) => s.method === "POST" && s.path === path),
    // Bounded: a request the app never answers would hold the shutdown forever.
    close: () => Promise.race([server.shutdown(), sleep(3_000)]),
  };
}

/** An answer that never comes: the handler ends only when the client goes away. */
function never(request: Request): Promise<Response> {
  return new Promise((resolve) =>
    request.signal.addEventListener("abort", () => resolve(new Response(null)), { once: true })
  );
}

interface Fixture {
  backend: SqsBackend;
  client: SQSClient;
  url: string;
  dir: string;
  env: Record<string, string>;
  workers: WorkerProcess[];
  apps: App[];
  worker(args: string[], env?: Record<string, string>): WorkerProcess;
  app(handler: Handler, port?: number): App;
}

async function withFixture(
  backend: SqsBackend,
  options: { fifo?: boolean; attributes?: Record<string, string> },
  body: (fixture: Fixture) => Promise<void>,
): Promise<void> {
  const client = testClient(backend.endpoint);
  const url = await createQueue(
    client,
    uniqueName("post") + (options.fifo ? ".fifo" : ""),
    options.attributes,
  );
  const dir = await Deno.makeTempDir({ prefix: "sqsrun-post-" });
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
    env,
    workers: [],
    apps: [],
    worker(args, extra = {}) {
      const worker = startWorker(["-q", url, "--wait", "1", ...args], {
        env: { ...env, ...extra },
      });
      fixture.workers.push(worker);
      return worker;
    },
    app(handler, port) {
      const app = startApp(handler, port);
      fixture.apps.push(app);
      return app;
    },
  };
  try {
    await body(fixture);
  } finally {
    await Promise.all(fixture.workers.map((worker) => worker.stop()));
    await Promise.all(fixture.apps.map((app) => app.close().catch(() => {})));
    await deleteQueue(client, url);
    client.destroy();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

const ok200 = () => new Response("ok");
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const line = (msg: string) => (l: LogLine) => l.msg === msg;

async function queueEmpty(fixture: Fixture): Promise<boolean> {
  const counts = await queueCounts(fixture.client, fixture.url);
  return counts.visible === 0 && counts.inFlight === 0 && counts.delayed === 0;
}

const [moto] = sqsBackends();

for (const backend of sqsBackends()) {
  Deno.test({
    name:
      `post [${backend.name}]: every sqsd header and more, the body byte for byte, signed, FIFO order`,
    ...testOptions,
    fn: () =>
      withFixture(backend, { fifo: true }, async (fixture) => {
        const app = fixture.app(async () => {
          await sleep(Math.random() * 30);
          return new Response(null, { status: 204 });
        });
        const bodies = [mixedBody(3000), '{"a":"é ✓ 😀"}', "x", "tab\there\r\nCRLF", "中文", "end"];
        const sent: { id: string; body: string; group: string; dedup: string }[] = [];
        for (const [i, body] of bodies.entries()) {
          const group = i % 2 === 0 ? "even" : "odd";
          const dedup = `d-${i}-${crypto.randomUUID()}`;
          const result = await fixture.client.send(
            new SendMessageCommand({
              QueueUrl: fixture.url,
              MessageBody: body,
              MessageGroupId: group,
              MessageDeduplicationId: dedup,
              MessageAttributes: {
                color: { DataType: "String", StringValue: "rød ✓" },
                count: { DataType: "Number", StringValue: String(i) },
                blob: { DataType: "Binary", BinaryValue: new Uint8Array([0, 1, 254, 255]) },
              },
            }),
          );
          sent.push({ id: result.MessageId!, body, group, dedup });
        }
        const before = Date.now();
        fixture.worker(
          [
            "--post",
            `${app.url}/jobs?tenant=a`,
            "-c",
            "4",
            "--content-type",
            "text/plain; charset=utf-8",
            "--post-hmac",
            "X-Signature",
          ],
          { SQSRUN_POST_HMAC_SECRET: "s3cr3t" },
        );
        await waitUntil("every message was posted", () => app.posts().length >= bodies.length);
        await waitUntil("the queue is empty", () => queueEmpty(fixture));
        const posts = app.posts();
        strictEqual(posts.length, bodies.length, "one request per message");
        const name = fixture.url.slice(fixture.url.lastIndexOf("/") + 1);
        for (const post of posts) {
          const h = post.headers;
          const message = sent.find((s) => s.id === h.get("x-aws-sqsd-msgid"))!;
          ok(message, `an unknown message id ${h.get("x-aws-sqsd-msgid")}`);
          // The body, byte for byte, and its signature.
          deepStrictEqual(post.body, new TextEncoder().encode(message.body));
          strictEqual(
            h.get("x-signature"),
            createHmac("sha256", "s3cr3t").update(post.body).digest("hex"),
          );
          // sqsd's headers, with its names and formats.
          ok(h.get("user-agent")?.startsWith("aws-sqsd/"), `user-agent ${h.get("user-agent")}`);
          strictEqual(h.get("content-type"), "text/plain; charset=utf-8");
          strictEqual(h.get("x-aws-sqsd-queue"), name);
          strictEqual(h.get("x-aws-sqsd-receive-count"), "1");
          const first = h.get("x-aws-sqsd-first-received-at") ?? "";
          ok(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/.test(first), `first-received-at ${first}`);
          ok(Math.abs(Date.parse(first) - before) < 120_000, `first-received-at ${first}`);
          ok((h.get("x-aws-sqsd-sender-id") ?? "") !== "", "a sender id");
          // Attributes: String and Number as sqsd sends them (UTF-8 on the wire, which
          // Deno reads as Latin-1), Binary under sqsrun's name, in base64.
          const wire = h.get("x-aws-sqsd-attr-color") ?? "";
          strictEqual(
            new TextDecoder().decode(Uint8Array.from(wire, (c) => c.charCodeAt(0))),
            "rød ✓",
          );
          strictEqual(h.get("x-aws-sqsd-attr-count"), String(bodies.indexOf(message.body)));
          strictEqual(h.get("x-aws-sqsd-attr-blob"), null);
          strictEqual(h.get("x-sqsrun-binary-attr-blob"), "AAH+/w==");
          // What sqsd does not say.
          strictEqual(h.get("x-sqsrun-queue-url"), fixture.url);
          strictEqual(h.get("x-sqsrun-group-id"), message.group);
          strictEqual(h.get("x-sqsrun-deduplication-id"), message.dedup);
          ok(/^\d+$/.test(h.get("x-sqsrun-sequence-number") ?? ""), "a sequence number");
          ok(Math.abs(Number(h.get("x-sqsrun-sent-timestamp")) - before) < 120_000);
          // Nothing else but what any HTTP client sends.
          const names = [...h.keys()].filter((key) =>
            !["accept", "accept-encoding", "accept-language", "host", "content-length"].includes(
              key,
            )
          ).sort();
          deepStrictEqual(names, [
            "content-type",
            "user-agent",
            "x-aws-sqsd-attr-color",
            "x-aws-sqsd-attr-count",
            "x-aws-sqsd-first-received-at",
            "x-aws-sqsd-msgid",
            "x-aws-sqsd-queue",
            "x-aws-sqsd-receive-count",
            "x-aws-sqsd-sender-id",
            "x-signature",
            "x-sqsrun-binary-attr-blob",
            "x-sqsrun-deduplication-id",
            "x-sqsrun-group-id",
            "x-sqsrun-queue-url",
            "x-sqsrun-sent-timestamp",
            "x-sqsrun-sequence-number",
          ]);
        }
        // FIFO: each group's messages reached the app in the order they were sent.
        for (const group of ["even", "odd"]) {
          deepStrictEqual(
            posts.filter((p) => p.headers.get("x-sqsrun-group-id") === group)
              .map((p) => p.headers.get("x-aws-sqsd-msgid")),
            sent.filter((s) => s.group === group).map((s) => s.id),
          );
        }
      }),
  });
}

Deno.test({
  name: "post: a 2xx deletes, a 500 releases with the back-off, a refused connection never loops",
  ...testOptions,
  fn: () =>
    withFixture(moto, {}, async (fixture) => {
      const port = freePort();
      let app = fixture.app(
        (seen) =>
          new TextDecoder().decode(seen.body) === "fail"
            ? new Response("boom\n  in the app", { status: 500 })
            : new Response("fine", { status: 202 }),
        port,
      );
      await sendMessages(fixture.client, fixture.url, ["fine", "fail"]);
      const worker = fixture.worker([
        "--post",
        `http://127.0.0.1:${port}/jobs`,
        "--http",
        "127.0.0.1:0",
      ]);
      const released = await worker.waitForLine(line("message released"));
      strictEqual(released.visible_in_s, 5);
      const failed = worker.lines.find(line("job failed"))!;
      strictEqual(failed.http_status, 500);
      strictEqual(failed.error, "the app answered 500 Internal Server Error: boom in the app");
      const finished = await worker.waitForLine(line("job finished"));
      strictEqual(finished.http_status, 202);
      await waitUntil("one message is left", async () => {
        const counts = await queueCounts(fixture.client, fixture.url);
        return counts.visible + counts.inFlight === 1;
      });
      // The metrics count requests as jobs, as for --exec.
      const metricsUrl = (await worker.waitForLine(line("serving /metrics and /healthz"))).url;
      const metrics = await (await fetch(`${metricsUrl}/metrics`)).text();
      for (
        const series of ["jobs_started_total", "messages_deleted_total", "messages_released_total"]
      ) {
        ok(new RegExp(`^sqsrun_${series}\\{[^}]*\\} [12]$`, "m").test(metrics), series);
      }
      ok(/^sqsrun_job_duration_seconds_count\{[^}]*success="0"\} 1$/m.test(metrics));

      // The app goes away: the next delivery cannot connect and fails, and then the
      // worker takes nothing until the app's port accepts connections again, so even
      // --backoff off (visibility 0) makes no loop of receives.
      await worker.stop();
      await app.close();
      const again = fixture.worker([
        "--post",
        `http://127.0.0.1:${port}/jobs`,
        "--backoff",
        "off",
        "--http",
        "127.0.0.1:0",
      ]);
      const served = await again.waitForLine(line("serving /metrics and /healthz"));
      const waiting = await again.waitForLine(
        line("waiting for the app; receiving nothing meanwhile"),
      );
      ok(String(waiting.error).includes("Connection refused"), String(waiting.error));
      const health = await fetch(`${served.url}/healthz`);
      strictEqual(health.status, 503);
      strictEqual((await health.json()).reason, "starting: waiting for the app");
      await sleep(2_000);
      strictEqual(again.lines.filter(line("job started")).length, 0, "nothing was received");
      app = fixture.app(ok200, port);
      await again.waitForLine(line("job finished"), 20_000);
      const posts = app.posts();
      deepStrictEqual(posts.map((p) => new TextDecoder().decode(p.body)), ["fail"]);
      // The one receive of the first worker, and this one: no receive was spent meanwhile.
      strictEqual(posts[0].headers.get("x-aws-sqsd-receive-count"), "2");
      strictEqual((await fetch(`${served.url}/healthz`)).status, 200);
      await waitUntil("the queue is empty", () => queueEmpty(fixture));

      // A delivery that cannot connect, to an app that was up when the worker started.
      await app.close();
      await sendMessages(fixture.client, fixture.url, ["refused"]);
      const refused = await again.waitForLine(
        (l) => l.msg === "job failed" && String(l.error).startsWith("cannot connect"),
        20_000,
      );
      strictEqual(refused.error, "cannot connect to the app: Connection refused");
      await again.waitForLine(
        (l) => l.msg === "message released" && l.message_id === refused.message_id,
      );
      await sleep(1_500);
      strictEqual(
        again.lines.filter(line("job started")).length,
        2,
        "no receive while the app is gone",
      );
    }),
});

Deno.test({
  name:
    "post: an app that never answers is aborted at -x, sees the abort, and the message is released",
  ...testOptions,
  fn: () =>
    withFixture(moto, {}, async (fixture) => {
      const app = fixture.app((_, request) => never(request));
      await sendMessages(fixture.client, fixture.url, ["stuck"]);
      const worker = fixture.worker(["--post", `${app.url}/jobs`, "-t", "10", "-x", "2"]);
      const failed = await worker.waitForLine(line("job failed"), 20_000);
      strictEqual(failed.outcome, "killed");
      strictEqual(failed.error, "the request was aborted before the app answered");
      ok(Number(failed.duration_ms) >= 2_000 && Number(failed.duration_ms) < 4_000);
      const released = await worker.waitForLine(line("message released"));
      strictEqual(released.visible_in_s, 5);
      await waitUntil("the app saw the abort", () => app.posts()[0]?.aborted === true, 5_000);
      const counts = await queueCounts(fixture.client, fixture.url);
      strictEqual(counts.visible + counts.inFlight, 1, "the message is still there");
    }),
});

Deno.test({
  name:
    "post: a 503 or 429 with Retry-After (seconds or an HTTP date) sets when the message comes back",
  ...testOptions,
  fn: () =>
    withFixture(moto, {}, async (fixture) => {
      const app = fixture.app((seen) => {
        const body = new TextDecoder().decode(seen.body);
        if (body === "seconds") {
          return new Response("busy", { status: 503, headers: { "retry-after": "7" } });
        }
        const at = new Date(Date.now() + 20_000).toUTCString();
        return new Response("slow down", { status: 429, headers: { "retry-after": at } });
      });
      const ids = await sendMessages(fixture.client, fixture.url, ["seconds", "date"]);
      const worker = fixture.worker(["--post", `${app.url}/jobs`]);
      await waitUntil(
        "both were released",
        () => worker.lines.filter(line("message released")).length === 2,
      );
      const visibleIn = (id: string) =>
        worker.lines.find((l) => l.msg === "message released" && l.message_id === id)
          ?.visible_in_s as number;
      strictEqual(visibleIn(ids[0]), 7);
      ok(visibleIn(ids[1]) >= 18 && visibleIn(ids[1]) <= 21, `date: ${visibleIn(ids[1])}`);
      const failed = worker.lines.filter(line("job failed"));
      deepStrictEqual(failed.map((l) => l.http_status).sort(), [429, 503]);
      ok(failed.some((l) => l.retry_after_s === 7));
      await sleep(1_000);
      strictEqual((await queueCounts(fixture.client, fixture.url)).visible, 0, "not back yet");
    }),
});

Deno.test({
  name:
    "post: with --post-health nothing is received before the app is healthy, and a crashed app costs no receive",
  ...testOptions,
  fn: () =>
    withFixture(moto, {}, async (fixture) => {
      const port = freePort();
      const ids = await sendMessages(fixture.client, fixture.url, ["a", "b", "c"]);
      const worker = fixture.worker([
        "--post",
        `http://127.0.0.1:${port}/jobs`,
        "--post-health",
        "/health",
        "-c",
        "2",
        "--http",
        "127.0.0.1:0",
      ]);
      const served = await worker.waitForLine(line("serving /metrics and /healthz"));
      await worker.waitForLine(line("waiting for the app; receiving nothing meanwhile"));
      const health = await fetch(`${served.url}/healthz`);
      strictEqual(health.status, 503);
      strictEqual((await health.json()).reason, "starting: waiting for the app");
      // The queue says it: not one message was received while the app was away.
      deepStrictEqual(await queueCounts(fixture.client, fixture.url), {
        visible: 3,
        inFlight: 0,
        delayed: 0,
      });
      // The app starts, and is healthy only at its fourth check.
      let checks = 0;
      let healthyAt = Infinity;
      const handler: Handler = (seen) => {
        if (seen.path !== "/health") return ok200();
        if (++checks < 4) return new Response("starting", { status: 503 });
        healthyAt = Math.min(healthyAt, Date.now());
        return ok200();
      };
      let app = fixture.app(handler, port);
      await waitUntil("every message was posted", () => app.posts().length === 3);
      for (const post of app.posts()) {
        strictEqual(post.headers.get("x-aws-sqsd-receive-count"), "1");
        ok(post.at >= healthyAt, "a request came before the app was healthy");
        const first = Date.parse(post.headers.get("x-aws-sqsd-first-received-at")!);
        ok(first >= Math.floor(healthyAt / 1000) * 1000, "received before the app was healthy");
      }
      deepStrictEqual(app.posts().map((p) => p.headers.get("x-aws-sqsd-msgid")).sort(), ids.sort());
      await waitUntil("the queue is empty", () => queueEmpty(fixture));

      // The app crashes: a delivery that cannot connect waits in hand for the app to be
      // healthy again, and goes out then, with no receive spent.
      await app.close();
      const crashed = app;
      await sendMessages(fixture.client, fixture.url, ["d"]);
      await worker.waitForLine(
        line("cannot connect to the app; holding the message until it is healthy"),
      );
      // Past any receive call already in flight (--wait 1): from now on, none goes out.
      await sleep(1_500);
      await sendMessages(fixture.client, fixture.url, ["e"]);
      await sleep(1_500);
      deepStrictEqual(
        (await queueCounts(fixture.client, fixture.url)).visible,
        1,
        "e stays in the queue while the app is away",
      );
      checks = 10;
      app = fixture.app(handler, port);
      await waitUntil("d and e were posted", () => app.posts().length === 2);
      deepStrictEqual(
        app.posts().map((
          p,
        ) => [new TextDecoder().decode(p.body), p.headers.get("x-aws-sqsd-receive-count")]).sort(),
        [["d", "1"], ["e", "1"]],
      );
      strictEqual(crashed.posts().length, 3);
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
      strictEqual((await fetch(`${served.url}/healthz`)).status, 200);
      strictEqual(worker.lines.filter(line("job failed")).length, 0, "no delivery failed");
    }),
});

Deno.test({
  name: "post: a slow app keeps its message: visibility extended, a second consumer gets nothing",
  ...testOptions,
  fn: () =>
    withFixture(moto, {}, async (fixture) => {
      const app = fixture.app(async () => {
        await sleep(5_000);
        return ok200();
      });
      await sendMessages(fixture.client, fixture.url, ["slow"]);
      const worker = fixture.worker(["--post", `${app.url}/jobs`, "-t", "2", "-e", "1"]);
      await waitUntil("the app got the request", () => app.posts().length === 1);
      const stolen: string[] = [];
      const until = Date.now() + 4_500;
      while (Date.now() < until) {
        const result = await fixture.client.send(
          new ReceiveMessageCommand({ QueueUrl: fixture.url, WaitTimeSeconds: 0 }),
        );
        stolen.push(...(result.Messages ?? []).map((m) => m.Body ?? ""));
        await sleep(300);
      }
      deepStrictEqual(stolen, [], "the second consumer received the message");
      const finished = await worker.waitForLine(line("job finished"), 10_000);
      ok(Number(finished.duration_ms) >= 5_000);
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
      strictEqual(app.posts().length, 1);
      ok(worker.lines.every((l) => l.msg !== "visibility deadline may have been missed"));
    }),
});

Deno.test({
  name:
    "post: an app that dies mid-request (connection reset) has its message released, not deleted",
  ...testOptions,
  fn: () =>
    withFixture(moto, {}, async (fixture) => {
      // A "web app" that reads the request and drops the connection without answering.
      const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      let requests = 0;
      const serving = (async () => {
        for await (const connection of listener) {
          const buffer = new Uint8Array(65_536);
          await connection.read(buffer).catch(() => null);
          requests++;
          connection.close();
        }
      })().catch(() => {});
      try {
        await sendMessages(fixture.client, fixture.url, ["reset"]);
        const port = (listener.addr as Deno.NetAddr).port;
        const worker = fixture.worker(["--post", `http://127.0.0.1:${port}/jobs`]);
        const failed = await worker.waitForLine(line("job failed"), 20_000);
        ok(
          String(failed.error).startsWith("the request to the app failed:"),
          String(failed.error),
        );
        strictEqual(failed.http_status, null);
        const released = await worker.waitForLine(line("message released"));
        strictEqual(released.visible_in_s, 5);
        ok(requests >= 1, "the app saw the request");
        strictEqual(worker.lines.filter(line("job finished")).length, 0);
        const counts = await queueCounts(fixture.client, fixture.url);
        strictEqual(counts.visible + counts.inFlight, 1, "the message is still there");
      } finally {
        listener.close();
        await serving;
      }
    }),
});

Deno.test({
  name: "post: SIGTERM lets a request finish and deletes its message; a second signal aborts it",
  ...testOptions,
  fn: () =>
    withFixture(moto, {}, async (fixture) => {
      const app = fixture.app(async (seen, request) => {
        if (new TextDecoder().decode(seen.body) === "stuck") return await never(request);
        await sleep(2_000);
        return ok200();
      });
      await sendMessages(fixture.client, fixture.url, ["slow"]);
      const draining = fixture.worker(["--post", `${app.url}/jobs`]);
      await waitUntil("the app got the request", () => app.posts().length === 1);
      draining.signal("SIGTERM");
      strictEqual((await draining.exit(20_000)).code, 0);
      strictEqual(draining.lines.find(line("job finished"))?.http_status, 200);
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
      strictEqual(app.posts()[0].aborted, false);

      await sendMessages(fixture.client, fixture.url, ["stuck"]);
      const forced = fixture.worker(["--post", `${app.url}/jobs`]);
      await waitUntil("the app got the second request", () => app.posts().length === 2);
      forced.signal("SIGTERM");
      await forced.waitForLine(line("draining: no new messages; waiting for running jobs"));
      forced.signal("SIGTERM");
      strictEqual((await forced.exit(20_000)).code, 0);
      strictEqual(forced.lines.find(line("job failed"))?.outcome, "killed");
      strictEqual(forced.lines.find(line("message given back"))?.visible_in_s, 0);
      await waitUntil("the app saw the abort", () => app.posts()[1].aborted, 5_000);
      strictEqual((await queueCounts(fixture.client, fixture.url)).visible, 1);
    }),
});

Deno.test({
  name: "post: --s3 streams the object as the body, with its bucket, key and size in headers",
  ...testOptions,
  fn: () =>
    withFixture(moto, {}, async (fixture) => {
      const s3 = testS3Client(motoEndpoint());
      const bucket = uniqueName("sqsrun-post").toLowerCase().replaceAll("_", "-");
      await createBucket(s3, bucket);
      try {
        const object = new Uint8Array(300_000).map((_, i) => (i * 7 + 3) % 256);
        const key = "in/ré port+1 %.bin";
        await putObject(s3, bucket, key, object);
        await sendMessages(fixture.client, fixture.url, [
          s3EventBody([{ bucket, key, size: object.length }]),
        ]);
        const app = fixture.app(ok200);
        const worker = fixture.worker(["--s3", "--post", `${app.url}/jobs`]);
        await worker.waitForLine(line("job finished"), 20_000);
        const [post] = app.posts();
        deepStrictEqual(post.body, object);
        strictEqual(post.headers.get("x-sqsrun-s3-bucket"), bucket);
        strictEqual(decodeURIComponent(post.headers.get("x-sqsrun-s3-key")!), key);
        strictEqual(post.headers.get("x-sqsrun-s3-size"), String(object.length));
        strictEqual(post.headers.get("x-sqsrun-s3-event-name"), "ObjectCreated:Put");
        ok(post.headers.get("x-aws-sqsd-msgid"));
        await waitUntil("the queue is empty", () => queueEmpty(fixture));
        await worker.stop();

        // Signed, the object is read whole first (the signature goes before the body).
        await sendMessages(fixture.client, fixture.url, [
          s3EventBody([{ bucket, key, size: object.length }]),
        ]);
        const signed = fixture.worker(
          ["--s3", "--post", `${app.url}/jobs`, "--post-hmac", "X-Signature"],
          { SQSRUN_POST_HMAC_SECRET: "k" },
        );
        await signed.waitForLine(line("job finished"), 20_000);
        const second = app.posts()[1];
        deepStrictEqual(second.body, object);
        strictEqual(
          second.headers.get("x-signature"),
          createHmac("sha256", "k").update(object).digest("hex"),
        );
        await waitUntil("the queue is empty", () => queueEmpty(fixture));
      } finally {
        await deleteBucket(s3, bucket);
        s3.destroy();
      }
    }),
});

/** The venv's Python when it has Flask, or why the Flask test cannot run. */
async function flaskPython(): Promise<string | { skip: string }> {
  const python = installationPaths().python;
  try {
    const check = await new Deno.Command(python, {
      args: ["-c", "import flask"],
      stdout: "null",
      stderr: "null",
    }).output();
    if (check.success) return python;
    return { skip: `Flask is not installed in ${python} (deno task local-aws install adds it)` };
  } catch {
    return { skip: `no Python at ${python} (deno task local-aws install)` };
  }
}

/** A worker app written the Beanstalk way: it reads sqsd's headers and nothing of sqsrun. */
const FLASK_APP = `
import json, sys
from flask import Flask, request

app = Flask(__name__)
ledger = sys.argv[2]

@app.get("/health")
def health():
    return "ok"

@app.post("/")
def work():
    job = request.get_json()
    with open(ledger, "a") as out:
        out.write(json.dumps({
            "id": request.headers["X-Aws-Sqsd-Msgid"],
            "queue": request.headers["X-Aws-Sqsd-Queue"],
            "count": request.headers["X-Aws-Sqsd-Receive-Count"],
            "first": request.headers["X-Aws-Sqsd-First-Received-At"],
            "agent": request.headers["User-Agent"],
            "priority": request.headers.get("X-Aws-Sqsd-Attr-priority"),
            "job": job,
        }) + "\\n")
    if job.get("fail"):
        return "no", 500
    return "", 200

app.run(host="127.0.0.1", port=int(sys.argv[1]))
`;

Deno.test({
  name: "post: a Flask app written for a Beanstalk worker runs unchanged",
  ...testOptions,
  fn: async (t) => {
    const python = await flaskPython();
    if (typeof python !== "string") {
      console.log(`skipped: ${python.skip}`);
      t.step({ name: python.skip, ignore: true, fn: () => {} });
      return;
    }
    await withFixture(moto, {}, async (fixture) => {
      const script = join(fixture.dir, "app.py");
      const ledger = join(fixture.dir, "ledger.jsonl");
      await Deno.writeTextFile(script, FLASK_APP);
      const port = freePort();
      const flask = new Deno.Command(python, {
        args: [script, String(port), ledger],
        stdout: "null",
        stderr: "null",
      }).spawn();
      try {
        const ids = await sendMessages(fixture.client, fixture.url, [
          { body: '{"task": "resize", "size": 100}', attributes: { priority: "high" } },
          '{"task": "fail", "fail": true}',
        ]);
        const worker = fixture.worker([
          "--post",
          `http://127.0.0.1:${port}/`,
          "--post-health",
          "/health",
        ]);
        const failed = await worker.waitForLine(line("job failed"), 30_000);
        strictEqual(failed.message_id, ids[1]);
        strictEqual(failed.http_status, 500);
        await worker.waitForLine(line("job finished"), 30_000);
        const rows = (await Deno.readTextFile(ledger)).trim().split("\n").map((l) => JSON.parse(l));
        const resize = rows.find((row) => row.id === ids[0]);
        const name = fixture.url.slice(fixture.url.lastIndexOf("/") + 1);
        deepStrictEqual(
          [resize.queue, resize.count, resize.priority, resize.job],
          [name, "1", "high", { task: "resize", size: 100 }],
        );
        ok(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/.test(resize.first), resize.first);
        ok(String(resize.agent).startsWith("aws-sqsd/"));
        const counts = await queueCounts(fixture.client, fixture.url);
        strictEqual(counts.visible + counts.inFlight, 1, "the failed message is kept");
      } finally {
        flask.kill("SIGTERM");
        await flask.status;
      }
    });
  },
});

Deno.test({
  name: "post: every bad input is a one-line usage error (exit 2)",
  ...testOptions,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "sqsrun-post-usage-" });
    try {
      const env = { ...awsEnv(moto.endpoint), SQSRUN_POST_HMAC_SECRET: "" };
      const cases: [string[], string[], Record<string, string>?][] = [
        [["--post", "not a url"], ["--post must be an http:// or https:// URL"]],
        [["--post", "ftp://127.0.0.1/jobs"], ["--post must be an http:// or https:// URL"]],
        [["--post", "http://user:pw@127.0.0.1/"], ["must not hold a user name or password"]],
        [["--exec", "/bin/true", "--post-health", "/health"], [
          "--post-health only applies with --post",
        ]],
        [["--post", "http://127.0.0.1/", "--post-health", "health"], [
          "--post-health must be a path",
        ]],
        [["--post", "http://127.0.0.1/", "--post-health", "//evil/x"], [
          "--post-health must be a path",
        ]],
        [["--post", "http://127.0.0.1/", "--content-type", ""], [
          "--content-type must not be empty",
        ]],
        [["--post", "http://127.0.0.1/", "--content-type", "json"], [
          "--content-type must be a media type",
        ]],
        [["--post", "http://127.0.0.1/", "--post-hmac", "X-Sig"], [
          "SQSRUN_POST_HMAC_SECRET is empty",
        ]],
        [
          [
            "--post",
            "http://127.0.0.1/",
            "--post-hmac",
            "X-Sig",
            "--post-hmac-secret-file",
            join(dir, "none"),
          ],
          ["--post-hmac-secret-file", "cannot read: no such file"],
        ],
        [["--post", "http://127.0.0.1/", "--post-hmac", "Content-Type"], [
          "sets that header itself",
        ]],
        [["--post", "http://127.0.0.1/", "--post-hmac-secret-file", "/etc/hostname"], [
          "only applies with --post-hmac",
        ]],
        [["--post", "http://127.0.0.1/", "--", "arg"], ["nothing may follow --"]],
        [["--post", "http://127.0.0.1/", "--env", "A=b"], ["--env"]],
      ];
      const results = await Promise.all(
        cases.map(([args]) => runCli(["-q", "q", ...args], { env, timeoutMs: 20_000 })),
      );
      results.forEach((result, i) =>
        assertOneLineError(result, 2, cases[i][1], cases[i][0].join(" "))
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
