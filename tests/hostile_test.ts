/**
 * Hostile input (reliability scenario 7, see docs/reliability.md): a table of bad
 * flags, configuration files, queue names and URLs, message bodies and attribute
 * names, each with its documented exit code and one-line error; endpoints that
 * answer garbage or never answer; bodies a shell would love to interpret; and S3
 * events malformed in each field. Whatever the input: one line `sqsrun: ...` on
 * stderr, no stack trace, no hang, and never a lost message.
 */
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { join } from "node:path";
import { awsEnv, motoEndpoint, sqsBackends, uniqueName } from "./support/local_aws.ts";
import { assertOneLineError, type CliResult, runCli } from "./support/cli.ts";
import { createQueue, deleteQueue, queueCounts, sendMessages, testClient } from "./support/sqs.ts";
import { s3EventBody, snsEnvelope } from "./support/s3.ts";
import {
  type LogLine,
  processAlive,
  startWorker,
  waitUntil,
  type WorkerProcess,
} from "./support/worker.ts";

const testOptions = { sanitizeOps: false, sanitizeResources: false };
const dir = Deno.makeTempDirSync({ prefix: "sqsrun_hostile_test_" });
const file = (name: string, text: string | Uint8Array): string => {
  const path = join(dir, name);
  if (typeof text === "string") Deno.writeTextFileSync(path, text);
  else Deno.writeFileSync(path, text);
  return path;
};
globalThis.addEventListener("unload", () => {
  try {
    Deno.removeSync(dir, { recursive: true });
  } catch { /* already gone */ }
});

/** One bad input and what sqsrun must answer. */
interface HostileCase {
  /** flag, yaml, queue, body or attribute. */
  kind: string;
  args: string[];
  stdin?: string | Uint8Array;
  code: number;
  /** Words the one stderr line must contain. */
  mentions: string[];
}

const JOB = ["--exec", "/bin/cat", "-q", "jobs"];
const PUSH = ["-q", "jobs", "--push"];
/** Nothing listens here: a case that reached the network would fail differently. */
const NOWHERE = "http://127.0.0.1:9";

// "Billion laughs": nine levels of nine aliases. The YAML parser must refuse, not expand.
const BOMB = ["a: &a [x, x, x, x, x, x, x, x, x]"]
  .concat(
    "bcdefgh".split("").map((name, i) => {
      const previous = "abcdefgh"[i];
      return `${name}: &${name} [${Array(9).fill(`*${previous}`).join(", ")}]`;
    }),
  )
  .concat("queue: *h")
  .join("\n");
const randomBytes = new Uint8Array(4096);
for (let i = 0; i < randomBytes.length; i++) randomBytes[i] = (i * 2654435761) >>> 24;

const yaml = {
  tab: file("tab.yaml", "queue: q\n\ttimeout: 3\n"),
  duplicate: file("duplicate.yaml", "queue: a\nqueue: b\n"),
  bomb: file("bomb.yaml", BOMB + "\n"),
  binary: file("binary.yaml", randomBytes),
  infinity: file("infinity.yaml", "queue: q\ntimeout: .inf\n"),
  nan: file("nan.yaml", "queue: q\ntimeout: .nan\n"),
  fraction: file("fraction.yaml", "queue: q\nconcurrency: 1.5\n"),
  numberQueue: file("number_queue.yaml", "queue: 123\n"),
  nestedEnv: file("nested_env.yaml", "queue: q\nenv:\n  A: [1, 2]\n"),
  numberArgs: file("number_args.yaml", "queue: q\nexec: /bin/cat\nargs: [1, 2]\n"),
  stringBool: file("string_bool.yaml", 'queue: q\nshell: "yes"\n'),
  keyOnly: file("key_only.yaml", "queue: q\nkey-id: AKID\n"),
  twoDocuments: file("two_documents.yaml", "---\nqueue: a\n---\nqueue: b\n"),
  scalar: file("scalar.yaml", "just a scalar\n"),
  proto: file("proto.yaml", "queue: q\n__proto__:\n  timeout: 5\n"),
  nullExec: file("null_exec.yaml", "queue: q\nexec: null\n"),
  listLevel: file("list_level.yaml", "queue: q\nlog-level: [info]\n"),
};

/** The table: at least 40 bad inputs that fail before any network call. */
const OFFLINE_CASES: HostileCase[] = [
  // Flags
  { kind: "flag", args: ["--ünknown", "--list"], code: 2, mentions: ["'--ünknown'"] },
  { kind: "flag", args: ["-c", "1e2", ...JOB], code: 2, mentions: ["-c/--concurrency", "1e2"] },
  { kind: "flag", args: ["-c", "0x10", ...JOB], code: 2, mentions: ["-c/--concurrency", "0x10"] },
  { kind: "flag", args: ["-t", "NaN", ...JOB], code: 2, mentions: ["-t/--timeout", "NaN"] },
  { kind: "flag", args: ["-t", "Infinity", ...JOB], code: 2, mentions: ["-t/--timeout"] },
  { kind: "flag", args: ["-t", "-0", ...JOB], code: 2, mentions: ["-t/--timeout", "-0"] },
  { kind: "flag", args: ["-i", "2000001", ...JOB], code: 2, mentions: ["-i/--interval"] },
  { kind: "flag", args: ["--wait", "-1", ...JOB], code: 2, mentions: ["--wait", "-1"] },
  { kind: "flag", args: ["--batch-size", "0", ...JOB], code: 2, mentions: ["--batch-size"] },
  { kind: "flag", args: ["--prefetch", "soon", ...JOB], code: 2, mentions: ["--prefetch", "soon"] },
  { kind: "flag", args: ["--region", "bad region!", "--list"], code: 2, mentions: ["bad region!"] },
  { kind: "flag", args: ["--region", "-east", "--list"], code: 2, mentions: ["--region"] },
  // Queue names SQS would refuse are refused before any call.
  { kind: "queue", args: ["--create", "-q", "bad name!"], code: 2, mentions: ["bad name!"] },
  { kind: "queue", args: ["--create", "-q", "n".repeat(81)], code: 2, mentions: ["up to 80"] },
  { kind: "queue", args: ["-q", "a.b", "--push", "x"], code: 2, mentions: ["'a.b'"] },
  { kind: "queue", args: ["-q", "ftp://host/q", "--push", "x"], code: 2, mentions: ["URL"] },
  { kind: "flag", args: ["-X", "-5", ...JOB], code: 2, mentions: ["-X/--kill-retry", "-5"] },
  { kind: "flag", args: ["--exec", "", "-q", "jobs"], code: 2, mentions: ["--exec", "empty"] },
  {
    kind: "flag",
    args: ["--exec", "/etc/passwd", "-q", "jobs"],
    code: 2,
    mentions: ["/etc/passwd"],
  },
  { kind: "flag", args: ["--exec", "/tmp", "-q", "jobs"], code: 2, mentions: ["'/tmp'"] },
  { kind: "flag", args: ["--env", "PATH", ...JOB], code: 2, mentions: ["--env", "KEY=VALUE"] },
  {
    kind: "flag",
    args: ["--endpoint-url", "not a url", "--list"],
    code: 2,
    mentions: ["not a url"],
  },
  {
    kind: "flag",
    args: ["--endpoint-url", "http://", "--list"],
    code: 2,
    mentions: ["--endpoint-url"],
  },
  { kind: "flag", args: ["--endpoint-url", "http://[::1", "--list"], code: 2, mentions: ["[::1"] },
  // YAML configuration files
  { kind: "yaml", args: ["-f", yaml.tab, "--list"], code: 2, mentions: [yaml.tab, "invalid YAML"] },
  { kind: "yaml", args: ["-f", yaml.duplicate, "--list"], code: 2, mentions: ["unique"] },
  { kind: "yaml", args: ["-f", yaml.bomb, "--list"], code: 2, mentions: [yaml.bomb, "alias"] },
  { kind: "yaml", args: ["-f", yaml.binary, "--list"], code: 2, mentions: [yaml.binary] },
  { kind: "yaml", args: ["-f", yaml.infinity, "--list"], code: 2, mentions: ["'timeout'"] },
  { kind: "yaml", args: ["-f", yaml.nan, "--list"], code: 2, mentions: ["'timeout'", "NaN"] },
  {
    kind: "yaml",
    args: ["-f", yaml.fraction, "--list"],
    code: 2,
    mentions: ["'concurrency'", "1.5"],
  },
  {
    kind: "yaml",
    args: ["-f", yaml.numberQueue, "--list"],
    code: 2,
    mentions: ["'queue'", "string"],
  },
  { kind: "yaml", args: ["-f", yaml.nestedEnv, "--list"], code: 2, mentions: ["'env'", "list"] },
  { kind: "yaml", args: ["-f", yaml.numberArgs], code: 2, mentions: ["'args'", "string"] },
  { kind: "yaml", args: ["-f", yaml.stringBool, "--list"], code: 2, mentions: ["'shell'"] },
  { kind: "yaml", args: ["-f", yaml.keyOnly, "--list"], code: 2, mentions: ["-s/--secret-key"] },
  { kind: "yaml", args: ["-f", yaml.twoDocuments, "--list"], code: 2, mentions: ["invalid YAML"] },
  { kind: "yaml", args: ["-f", yaml.scalar, "--list"], code: 2, mentions: ["mapping"] },
  { kind: "yaml", args: ["-f", yaml.proto, "--list"], code: 2, mentions: ["'__proto__'"] },
  { kind: "yaml", args: ["-f", yaml.nullExec], code: 2, mentions: ["'exec'"] },
  { kind: "yaml", args: ["-f", yaml.listLevel, "--list"], code: 2, mentions: ["'log-level'"] },
  // Queue names given where a push needs a group
  { kind: "queue", args: ["-q", "q.fifo", "--push", "x"], code: 2, mentions: ["--group-id"] },
  // Message bodies
  { kind: "body", args: ["--push", ""], code: 2, mentions: ["--push", "non-empty"] },
  { kind: "body", args: [...PUSH, "a\u0001b"], code: 2, mentions: ["U+0001"] },
  { kind: "body", args: [...PUSH, "a\uFFFFb"], code: 2, mentions: ["U+FFFF"] },
  { kind: "body", args: [...PUSH, "-"], stdin: "", code: 2, mentions: ["empty"] },
  {
    kind: "body",
    args: [...PUSH, "-"],
    stdin: new Uint8Array([0x68, 0xff, 0xfe, 0x69]),
    code: 2,
    mentions: ["not UTF-8"],
  },
  {
    kind: "body",
    args: [...PUSH, "-"],
    stdin: new Uint8Array([0x68, 0xc3]),
    code: 2,
    mentions: ["not UTF-8"],
  },
  { kind: "body", args: [...PUSH, "-"], stdin: "h\u0000i", code: 2, mentions: ["U+0000"] },
  {
    kind: "body",
    args: [...PUSH, "-"],
    stdin: "x".repeat(1_048_577),
    code: 2,
    mentions: ["1048576"],
  },
  // Attribute names and ids
  {
    kind: "attribute",
    args: ["--message-attr", "AWS.x=1", ...PUSH, "x"],
    code: 2,
    mentions: ["'AWS.x'"],
  },
  {
    kind: "attribute",
    args: ["--message-attr", ".x=1", ...PUSH, "x"],
    code: 2,
    mentions: ["'.x'"],
  },
  {
    kind: "attribute",
    args: ["--message-attr", `${"n".repeat(257)}=1`, ...PUSH, "x"],
    code: 2,
    mentions: ["--message-attr"],
  },
  { kind: "attribute", args: ["--message-attr", "x=", ...PUSH, "x"], code: 2, mentions: ["empty"] },
  { kind: "attribute", args: ["--message-attr", "ü=1", ...PUSH, "x"], code: 2, mentions: ["'ü'"] },
  { kind: "attribute", args: ["--attr", "=1", "-q", "q"], code: 2, mentions: ["--attr"] },
  {
    kind: "attribute",
    args: ["--group-id", "has space", "-q", "q.fifo", "--push", "x"],
    code: 2,
    mentions: ["--group-id"],
  },
  {
    kind: "attribute",
    args: ["--dedup-id", "d".repeat(129), "--group-id", "g", "-q", "q.fifo", "--push", "x"],
    code: 2,
    mentions: ["--dedup-id"],
  },
];

/** Runs `cases` two at a time (the machine is shared) and checks each. */
async function checkCases(
  t: Deno.TestContext,
  cases: HostileCase[],
  env: Record<string, string>,
): Promise<void> {
  const results: CliResult[] = new Array(cases.length);
  let next = 0;
  const lane = async () => {
    while (next < cases.length) {
      const index = next++;
      const item = cases[index];
      results[index] = await runCli(item.args, { env, stdin: item.stdin, timeoutMs: 30_000 });
    }
  };
  await Promise.all([lane(), lane()]);
  for (const [index, item] of cases.entries()) {
    const name = `${item.kind}: sqsrun ${item.args.join(" ")}`.slice(0, 110);
    await t.step(name, () => {
      assertOneLineError(results[index], item.code, item.mentions, JSON.stringify(item.args));
    });
  }
}

Deno.test({
  name: "hostile: every bad flag, file, body and attribute is one line with its exit code",
  ...testOptions,
  async fn(t) {
    const env = {
      AWS_ACCESS_KEY_ID: "test",
      AWS_SECRET_ACCESS_KEY: "test",
      AWS_REGION: "us-east-1",
      AWS_ENDPOINT_URL: NOWHERE,
    };
    await checkCases(t, OFFLINE_CASES, env);
  },
});

Deno.test("hostile: the table has at least 40 bad inputs", () => {
  ok(OFFLINE_CASES.length >= 40, `${OFFLINE_CASES.length} cases`);
});

for (const backend of sqsBackends()) {
  Deno.test({
    name: `hostile [${backend.name}]: queues SQS does not know are one line, exit 1`,
    ...testOptions,
    async fn(t) {
      const missing = `missing-${Date.now()}`;
      const cases: HostileCase[] = [
        {
          kind: "queue",
          args: ["-q", missing, "--push", "x"],
          code: 1,
          mentions: ["does not exist"],
        },
        {
          kind: "queue",
          args: ["-q", `${backend.endpoint}/000000000000/${missing}`, "--push", "x"],
          code: 1,
          mentions: ["does not exist"],
        },
        {
          kind: "queue",
          args: ["-q", `${backend.endpoint}/not/a/queue/url`, "--push", "x"],
          code: 1,
          mentions: ["does not exist"],
        },
        { kind: "queue", args: ["--delete", "-q", missing], code: 1, mentions: ["does not exist"] },
        {
          kind: "queue",
          args: ["-q", missing, "--exec", "/bin/cat"],
          code: 1,
          mentions: ["does not exist"],
        },
      ];
      await checkCases(t, cases, awsEnv(backend.endpoint));
    },
  });

  Deno.test({
    name:
      `hostile [${backend.name}]: bodies at the edges of what SQS takes run verbatim, none lost`,
    ...testOptions,
    async fn() {
      const client = testClient(backend.endpoint);
      const url = await createQueue(client, uniqueName("hostile-bodies"));
      const work = await Deno.makeTempDir({ prefix: "sqsrun-hostile-" });
      const bodies = [
        " ",
        "\t",
        "\r\n",
        "-",
        "--help",
        "-rf /",
        "$(touch pwned-1)",
        "`touch pwned-2`",
        "; touch pwned-3",
        "| touch pwned-4 &&",
        "'\"\\",
        "\uFEFFbom",
        "\u{10FFFF}\u{1F600}\uFFFD",
        "é".repeat(131_072),
      ];
      const job = join(work, "job.sh");
      await Deno.writeTextFile(
        job,
        `#!/bin/sh\ncd '${work}' || exit 9\ncat > "body-$SQSRUN_MESSAGE_ID"\n`,
      );
      await Deno.chmod(job, 0o755);
      const worker = startWorker(["-q", url, "--exec", job, "-c", "4", "--wait", "1"], {
        env: { ...awsEnv(backend.endpoint), PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" },
        cwd: work,
      });
      try {
        const ids = await sendMessages(client, url, bodies);
        await waitUntil("every body ran", () => finishedCount(worker) === bodies.length, 60_000);
        await waitUntil("the queue is empty", async () => {
          const counts = await queueCounts(client, url);
          return counts.visible + counts.inFlight === 0;
        });
        for (const [index, id] of ids.entries()) {
          const received = await Deno.readFile(join(work, `body-${id}`));
          deepStrictEqual(received, new TextEncoder().encode(bodies[index]), `body ${index}`);
        }
        for (const name of ["pwned-1", "pwned-2", "pwned-3", "pwned-4"]) {
          ok(!exists(join(work, name)), `a body was run by a shell: ${name} exists`);
        }
      } finally {
        await worker.stop();
        await deleteQueue(client, url);
        client.destroy();
        await Deno.remove(work, { recursive: true });
      }
    },
  });
}

function finishedCount(worker: WorkerProcess): number {
  return worker.lines.filter((line) => line.msg === "job finished").length;
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** What a fake endpoint answers to every request. */
type Answer = (request: Request) => Response | Promise<Response>;

const JSON_TYPE = { "content-type": "application/x-amz-json-1.0" };
const ANSWERS: Record<string, Answer> = {
  junk: () => new Response("%%garbage{{{ \x7f", { status: 200 }),
  html: () =>
    new Response("<!doctype html><html><body>502 Bad Gateway</body></html>", {
      status: 200,
      headers: { "content-type": "text/html" },
    }),
  "500": () => new Response("", { status: 500 }),
  "503 JSON": () =>
    new Response(JSON.stringify({ __type: "ServiceUnavailable", message: "down" }), {
      status: 503,
      headers: JSON_TYPE,
    }),
  truncated: () =>
    new Response(
      new ReadableStream({
        start(controller) {
          controller.enqueue(new TextEncoder().encode('{"QueueUrls":["http://x/'));
          controller.error(new Error("connection cut"));
        },
      }),
      { status: 200, headers: { ...JSON_TYPE, "content-length": "400" } },
    ),
};

/** What the error line must say about each answer (beyond the command's subject). */
const ANSWER_SAYS: Record<string, string[]> = {
  junk: ["answer (HTTP 200) is not SQS"],
  html: ["answer (HTTP 200) is not SQS"],
  "500": ["endpoint failed (HTTP 500)"],
  "503 JSON": ["ServiceUnavailable"],
};

/** An SQS error in the XML of the query protocol (older endpoints, proxies in front of SQS). */
const xmlError = (status: number, code: string) => () =>
  new Response(
    `<?xml version="1.0"?><ErrorResponse><Error><Type>Sender</Type><Code>${code}</Code>` +
      `<Message>refused</Message></Error><RequestId>r</RequestId></ErrorResponse>`,
    { status, headers: { "content-type": "text/xml" } },
  );

/** Refused credentials, in each shape they come in, and what the error line must say. */
const REFUSALS: Record<string, [Answer, string]> = {
  "403 XML InvalidClientTokenId": [
    xmlError(403, "InvalidClientTokenId"),
    "AWS rejected the credentials (InvalidClientTokenId)",
  ],
  "403 XML SignatureDoesNotMatch": [
    xmlError(403, "SignatureDoesNotMatch"),
    "AWS rejected the credentials (SignatureDoesNotMatch)",
  ],
  "400 XML AccessDenied": [
    xmlError(400, "AccessDenied"),
    "AWS rejected the credentials (AccessDenied)",
  ],
  "403 JSON UnrecognizedClientException": [
    () =>
      new Response(
        JSON.stringify({ __type: "UnrecognizedClientException", message: "bad token" }),
        { status: 403, headers: JSON_TYPE },
      ),
    "AWS rejected the credentials (UnrecognizedClientException)",
  ],
  "403 HTML": [
    () =>
      new Response("<html>Forbidden</html>", {
        status: 403,
        headers: { "content-type": "text/html" },
      }),
    "the endpoint refused the request (HTTP 403)",
  ],
};

/** Starts a loopback HTTP server answering every request with `answer`. */
function fakeEndpoint(answer: Answer): { url: string; close(): Promise<void> } {
  const server = Deno.serve(
    {
      hostname: "127.0.0.1",
      port: 0,
      onListen() {},
      onError: () => new Response("", { status: 500 }),
    },
    answer,
  );
  return { url: `http://127.0.0.1:${server.addr.port}`, close: () => server.shutdown() };
}

/**
 * A loopback TCP server that accepts connections and never answers: a hung endpoint.
 * (A Deno.serve handler that never resolves would keep its shutdown waiting forever.)
 */
function hangingEndpoint(): { url: string; close(): void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  (async () => {
    try {
      for await (const conn of listener) held.push(conn);
    } catch { /* closed */ }
  })();
  return {
    url: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    close() {
      listener.close();
      for (const conn of held) {
        try {
          conn.close();
        } catch { /* closed */ }
      }
    },
  };
}

const fakeEnv = (url: string) => ({
  AWS_ACCESS_KEY_ID: "test",
  AWS_SECRET_ACCESS_KEY: "test",
  AWS_REGION: "us-east-1",
  AWS_ENDPOINT_URL: url,
  PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
});

Deno.test({
  name: "hostile: endpoints answering junk, HTML, 500, 503 or a cut body are one line, exit 1",
  ...testOptions,
  async fn(t) {
    for (const [name, answer] of Object.entries(ANSWERS)) {
      const endpoint = fakeEndpoint(answer);
      try {
        const cases: HostileCase[] = [
          {
            kind: `endpoint ${name}`,
            args: ["--list"],
            code: 1,
            mentions: ["list queues", ...(ANSWER_SAYS[name] ?? [])],
          },
          {
            kind: `endpoint ${name}`,
            args: ["-q", "q", "--push", "x"],
            code: 1,
            mentions: ["'q'"],
          },
          {
            kind: `endpoint ${name}`,
            args: ["-q", `${endpoint.url}/000000000000/q`, "--push", "x"],
            code: 1,
            mentions: ["'q'"],
          },
        ];
        await checkCases(t, cases, fakeEnv(endpoint.url));
      } finally {
        await endpoint.close();
      }
    }
  },
});

Deno.test({
  name: "hostile: refused credentials are named as such; a worker refused at start-up exits 1",
  ...testOptions,
  async fn(t) {
    for (const [name, [answer, says]] of Object.entries(REFUSALS)) {
      await t.step(name, async () => {
        const endpoint = fakeEndpoint(answer);
        try {
          const env = fakeEnv(endpoint.url);
          assertOneLineError(await runCli(["--list"], { env }), 1, ["list queues", says]);
          const worker = startWorker(
            ["-q", "q", "--exec", "/bin/cat", "--wait", "1"],
            { env },
          );
          try {
            const status = await worker.exit(30_000);
            strictEqual(status.code, 1, worker.stderr());
            const stderr = worker.stderr().trim();
            strictEqual(stderr.split("\n").length, 1, stderr);
            ok(stderr.includes(says), stderr);
            ok(!stderr.includes("not SQS"), stderr);
          } finally {
            await worker.stop();
          }
        } finally {
          await endpoint.close();
        }
      });
    }
  },
});

Deno.test({
  name:
    "hostile: credentials refused while the worker runs are retried with back-off, never an exit",
  ...testOptions,
  async fn() {
    // The queue's attributes answer (start-up passes), then every receive is refused.
    const endpoint = fakeEndpoint((request) => {
      const action = request.headers.get("x-amz-target") ?? "";
      if (action.endsWith("GetQueueAttributes")) {
        return new Response(JSON.stringify({ Attributes: {} }), { headers: JSON_TYPE });
      }
      return xmlError(403, "ExpiredToken")();
    });
    const worker = startWorker(
      ["-q", `${endpoint.url}/000000000000/q`, "--exec", "/bin/cat", "--wait", "1"],
      { env: fakeEnv(endpoint.url) },
    );
    try {
      const failures = () => worker.lines.filter(receiveFailed);
      await waitUntil("two failed receives", () => failures().length >= 2, 30_000);
      ok(String(failures()[0].error).includes("AWS rejected the credentials (ExpiredToken)"));
      ok(processAlive(worker.pid), "the worker exited on refused credentials while running");
      await assertStopsCleanly(worker);
    } finally {
      await worker.stop();
      await endpoint.close();
    }
  },
});

Deno.test({
  name: "hostile: a worker facing a garbage endpoint backs off, lives on and stops on SIGTERM",
  ...testOptions,
  async fn(t) {
    for (const [name, answer] of Object.entries(ANSWERS)) {
      await t.step(name, async () => {
        const endpoint = fakeEndpoint(answer);
        const worker = startWorker(
          ["-q", `${endpoint.url}/000000000000/q`, "--exec", "/bin/cat", "--wait", "1"],
          { env: fakeEnv(endpoint.url) },
        );
        try {
          const failures = () => worker.lines.filter(receiveFailed);
          await waitUntil("three failed receives", () => failures().length >= 3, 30_000);
          deepStrictEqual(
            failures().slice(0, 3).map((line) => line.retry_in_ms),
            [1_000, 2_000, 4_000],
            "the back-off doubles",
          );
          ok(failures().every((line) => !String(line.error).includes("    at ")));
          await assertStopsCleanly(worker);
        } finally {
          await worker.stop();
          await endpoint.close();
        }
      });
    }
  },
});

Deno.test({
  name: "hostile: a hung endpoint times out: admin commands fail in one line, the worker backs off",
  ...testOptions,
  async fn() {
    const endpoint = hangingEndpoint();
    // The worker's calls time out after --wait + 10 s, tried twice; admin calls after 10 s, twice.
    const worker = startWorker(
      ["-q", `${endpoint.url}/000000000000/q`, "--exec", "/bin/cat", "--wait", "1"],
      { env: fakeEnv(endpoint.url) },
    );
    try {
      const list = await runCli(["--list"], { env: fakeEnv(endpoint.url), timeoutMs: 60_000 });
      assertOneLineError(list, 1, ["did not answer in time"]);
      ok(list.durationMs < 40_000, `--list took ${list.durationMs} ms`);
      const redrive = await worker.waitForLine(
        (line) => line.msg === "could not read the queue's attributes; using the defaults",
        40_000,
      );
      ok(String(redrive.error).includes("did not answer in time"), String(redrive.error));
      await worker.waitForLine((line) => line.msg === "worker started", 5_000);
      const failed = await worker.waitForLine(receiveFailed, 40_000);
      ok(String(failed.error).includes("did not answer in time"), String(failed.error));
      strictEqual(failed.retry_in_ms, 1_000);
      // A receive is hanging again right now: SIGTERM must not wait for it.
      await assertStopsCleanly(worker);
    } finally {
      await worker.stop();
      endpoint.close();
    }
  },
});

const receiveFailed = (line: LogLine) => line.msg === "receive failed; backing off";

async function assertStopsCleanly(worker: WorkerProcess): Promise<void> {
  const started = Date.now();
  worker.signal("SIGTERM");
  const status = await worker.exit(20_000);
  strictEqual(status.code, 0, `exit code; stderr: ${worker.stderr()}`);
  ok(Date.now() - started < 5_000, `SIGTERM took ${Date.now() - started} ms`);
  strictEqual(worker.stderr(), "");
}

Deno.test({
  name: "hostile: S3 events malformed in each field are released, never deleted, never run",
  ...testOptions,
  async fn() {
    const endpoint = motoEndpoint();
    const client = testClient(endpoint);
    const url = await createQueue(client, uniqueName("hostile-s3"));
    // deno-lint-ignore no-explicit-any
    const record = (patch: (record: any) => void) => {
      const event = JSON.parse(s3EventBody([{ bucket: "b", key: "k" }]));
      patch(event.Records[0]);
      return JSON.stringify(event);
    };
    const malformed: [string, string][] = [
      ["not JSON", "{Records"],
      ["JSON but not an object", "[1, 2]"],
      ["Records not a list", JSON.stringify({ Records: { a: 1 } })],
      ["a record that is not an object", JSON.stringify({ Records: ["x"] })],
      ["no eventName", record((r) => delete r.eventName)],
      ["eventName not a string", record((r) => r.eventName = 7)],
      ["no s3", record((r) => delete r.s3)],
      ["bucket name missing", record((r) => delete r.s3.bucket.name)],
      ["bucket name empty", record((r) => r.s3.bucket.name = "")],
      ["bucket name a number", record((r) => r.s3.bucket.name = 5)],
      ["object key missing", record((r) => delete r.s3.object.key)],
      ["object key empty", record((r) => r.s3.object.key = "")],
      ["object key a list", record((r) => r.s3.object.key = ["k"])],
      ["object key badly URL-encoded", record((r) => r.s3.object.key = "%E0%A4%A")],
      ["SNS Message not a string", JSON.stringify({ Type: "Notification", Message: { x: 1 } })],
      ["SNS Message not JSON", JSON.stringify({ Type: "Notification", Message: "{" })],
      [
        "SNS subscription confirmation",
        JSON.stringify({
          Type: "SubscriptionConfirmation",
          TopicArn: "arn:aws:sns:x",
          Message: "",
        }),
      ],
      ["SNS envelope of a malformed event", snsEnvelope(record((r) => delete r.s3.object))],
    ];
    const work = await Deno.makeTempDir({ prefix: "sqsrun-hostile-s3-" });
    const job = join(work, "job.sh");
    await Deno.writeTextFile(job, `#!/bin/sh\necho ran >> '${work}/ledger'\n`);
    await Deno.chmod(job, 0o755);
    // --backoff keeps each released message away long enough to be counted once.
    const worker = startWorker(
      ["-q", url, "--s3", "--exec", job, "-c", "4", "--wait", "1", "--backoff", "600"],
      { env: { ...awsEnv(endpoint), PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" } },
    );
    try {
      const ids = await sendMessages(client, url, malformed.map(([, body]) => body));
      const released = () =>
        worker.lines.filter((line) => line.msg === "malformed message; releasing it");
      await waitUntil(
        "every malformed message was released",
        () => new Set(released().map((line) => line.message_id)).size === malformed.length,
        60_000,
      );
      for (const [index, [what]] of malformed.entries()) {
        const line = released().find((candidate) => candidate.message_id === ids[index]);
        ok(line && typeof line.error === "string" && line.error.length > 0, `${what}: a reason`);
      }
      const counts = await queueCounts(client, url);
      strictEqual(
        counts.visible + counts.inFlight + counts.delayed,
        malformed.length,
        "every malformed message is still in the queue",
      );
      ok(!exists(join(work, "ledger")), "no job ran for a malformed message");
      ok(!worker.lines.some((line) => line.msg === "job started"), "no job started");
      await assertStopsCleanly(worker);
    } finally {
      await worker.stop();
      await deleteQueue(client, url);
      client.destroy();
      await Deno.remove(work, { recursive: true });
    }
  },
});

// Known gaps (docs/reliability.md, "Findings"): ignored until fixed.

Deno.test({
  name: "hostile: control characters an endpoint sends never reach stderr raw (finding F4)",
  ...testOptions,
  async fn() {
    const endpoint = fakeEndpoint(() => new Response("\x1b[2J\x1b]0;owned\x07", { status: 200 }));
    try {
      const result = await runCli(["--list"], { env: fakeEnv(endpoint.url), timeoutMs: 30_000 });
      assertOneLineError(result, 1, ["list queues"]);
      // deno-lint-ignore no-control-regex
      ok(!/[\x00-\x08\x0b-\x1f\x7f]/.test(result.stderr), JSON.stringify(result.stderr));
    } finally {
      await endpoint.close();
    }
  },
});

Deno.test({
  name: "hostile: a YAML tag sqsrun does not know is a one-line usage error (finding F3)",
  ...testOptions,
  async fn() {
    const path = file("tag.yaml", 'queue: q\nexec: !!js/function "function(){}"\n');
    const result = await runCli(["-f", path], { timeoutMs: 30_000 });
    assertOneLineError(result, 2, [path]);
  },
});

Deno.test({
  name: "hostile: SIGTERM while the worker waits for its endpoint at start-up exits 0 (finding F2)",
  ...testOptions,
  async fn() {
    const endpoint = fakeEndpoint(ANSWERS["500"]);
    const worker = startWorker(["-q", "q", "--exec", "/bin/cat", "--wait", "1"], {
      env: fakeEnv(endpoint.url),
    });
    try {
      await worker.waitForLine((line) => line.msg === "cannot resolve the queue yet; retrying");
      worker.signal("SIGTERM");
      strictEqual((await worker.exit(20_000)).code, 0);
    } finally {
      await worker.stop();
      await endpoint.close();
    }
  },
});

Deno.test({
  name: "hostile: -f of a device, a FIFO or a huge file is a one-line usage error (finding F5)",
  ...testOptions,
  async fn() {
    const huge = file("huge.yaml", "# " + "x".repeat(1024 * 1024 + 10) + "\nqueue: q\n");
    const fifo = join(Deno.makeTempDirSync(), "fifo");
    await new Deno.Command("mkfifo", { args: [fifo] }).output();
    for (
      const [path, words] of [
        ["/dev/zero", ["not a regular file"]],
        [fifo, ["not a regular file"]],
        [huge, ["at most 1048576"]],
      ] as const
    ) {
      const result = await runCli(["-f", path, "--list"], { timeoutMs: 30_000 });
      assertOneLineError(result, 2, [path, ...words]);
    }
  },
});

Deno.test({
  name: "hostile: a -o log that cannot be opened names -o/--log, exit 1 (finding F7)",
  ...testOptions,
  async fn() {
    const [backend] = sqsBackends();
    const result = await runCli(
      [
        "-q",
        `${backend.endpoint}/000000000000/q`,
        "--exec",
        "/bin/cat",
        "-o",
        "/nonexistent/x.log",
      ],
      { env: awsEnv(backend.endpoint), timeoutMs: 30_000 },
    );
    assertOneLineError(result, 1, ["-o/--log", "/nonexistent/x.log"]);
    ok(!result.stderr.includes("unexpected error"), result.stderr);
  },
});
