/**
 * `--run` modules against the real SQS emulators, run as the binary runs them
 * (`deno run <runtimeFlags()>`, not -A): results decide deletion, the context a
 * module gets, terminate() at the kill timeout, runaway modules (busy loops,
 * Deno.exit) contained in their Web Worker, console output in the log, and the
 * one-line start-up errors of modules that cannot load.
 */
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { fileURLToPath } from "node:url";
import type { SQSClient } from "@aws-sdk/client-sqs";
import { awsEnv, type SqsBackend, sqsBackends, uniqueName } from "./support/local_aws.ts";
import { assertOneLineError, runCli } from "./support/cli.ts";
import { createQueue, deleteQueue, queueCounts, sendMessages, testClient } from "./support/sqs.ts";
import { type LogLine, startWorker, waitUntil, type WorkerProcess } from "./support/worker.ts";
import { readBody } from "../src/runners/module/runner.ts";
import { mixedBody } from "./support/bodies.ts";

interface Fixture {
  client: SQSClient;
  url: string;
  dir: string;
  /** Writes a module (or any file) into the fixture's folder; returns `./name`. */
  file(name: string, text: string): Promise<string>;
  /** Lines the jobs appended to `$dir/ledger` (the modules get its path as `LEDGER`). */
  ledger(): Promise<string[]>;
  /** Starts a worker in the fixture's folder, with the binary's permissions. */
  worker(args: string[]): WorkerProcess;
}

async function withFixture(
  backend: SqsBackend,
  options: { fifo?: boolean; attributes?: Record<string, string> },
  body: (fixture: Fixture) => Promise<void>,
): Promise<void> {
  const client = testClient(backend.endpoint);
  const url = await createQueue(
    client,
    uniqueName("module") + (options.fifo ? ".fifo" : ""),
    options.attributes,
  );
  const dir = await Deno.makeTempDir({ prefix: "sqsrun-module-" });
  const ledgerPath = `${dir}/ledger`;
  await Deno.writeTextFile(ledgerPath, "");
  const env = {
    ...awsEnv(backend.endpoint),
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    HOME: Deno.env.get("HOME") ?? dir,
  };
  const workers: WorkerProcess[] = [];
  const fixture: Fixture = {
    client,
    url,
    dir,
    async file(name, text) {
      const path = `${dir}/${name}`;
      await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
      await Deno.writeTextFile(path, text.replaceAll("LEDGER", JSON.stringify(ledgerPath)));
      return `./${name}`;
    },
    async ledger() {
      return (await Deno.readTextFile(ledgerPath)).split("\n").filter((line) => line.length > 0);
    },
    worker(args) {
      const worker = startWorker(["-q", url, "--wait", "1", ...args], {
        env,
        cwd: dir,
        binaryPermissions: true,
      });
      workers.push(worker);
      return worker;
    },
  };
  try {
    await body(fixture);
  } finally {
    await Promise.all(workers.map((worker) => worker.stop()));
    await deleteQueue(client, url);
    client.destroy();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

async function queueEmpty(fixture: Fixture): Promise<boolean> {
  const counts = await queueCounts(fixture.client, fixture.url);
  return counts.visible === 0 && counts.inFlight === 0 && counts.delayed === 0;
}

/** A module helper the jobs use to append one line to the ledger. */
const RECORD = `const record = (line: string) =>
  Deno.writeTextFileSync(LEDGER, line + "\\n", { append: true });`;

const testOptions = { sanitizeOps: false, sanitizeResources: false };
const [moto] = sqsBackends();

for (const backend of sqsBackends()) {
  const test = (name: string, fn: () => Promise<void>) =>
    Deno.test({ name: `--run [${backend.name}]: ${name}`, fn, ...testOptions });

  test("run() returning deletes the message; throwing releases it and it runs again", async () => {
    await withFixture(backend, {}, async (fixture) => {
      await fixture.file("lib/words.ts", `export const failing = "fail";\n`);
      const job = await fixture.file(
        "job.ts",
        `import { failing } from "./lib/words.ts";
${RECORD}
export async function run(body: string, context: { receiveCount: number }): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, 10));
  record(body + " " + context.receiveCount);
  if (body === failing && context.receiveCount < 2) throw new Error("first try fails");
}
`,
      );
      const [okId, failId] = await sendMessages(fixture.client, fixture.url, ["fine", "fail"]);
      const worker = fixture.worker(["--run", job, "--backoff", "off"]);
      await waitUntil("three runs", async () => (await fixture.ledger()).length >= 3);
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
      deepStrictEqual((await fixture.ledger()).sort(), ["fail 1", "fail 2", "fine 1"]);
      const failed = worker.lines.filter((line) => line.msg === "job failed");
      // No exit code: a module has none (its failure is the error run() threw).
      deepStrictEqual(failed.map((line) => [line.message_id, line.receive_count, line.exit_code]), [
        [failId, 1, undefined],
      ]);
      ok(String(failed[0].error).includes("first try fails"), JSON.stringify(failed[0]));
      // One line per failure: the end line carries the module's own stack, nothing of sqsrun's.
      const stack = String(failed[0].stack);
      ok(stack.startsWith("Error: first try fails") && stack.includes("job.ts:"), stack);
      ok(!/host\.ts|ext:|\/src\//.test(stack), stack);
      const warnings = worker.lines.filter((line) => line.level === "warn");
      deepStrictEqual(warnings.map((line) => line.msg), ["job failed"]);
      const finished = worker.lines.filter((line) => line.msg === "job finished");
      deepStrictEqual(finished.map((line) => line.message_id).sort(), [okId, failId].sort());
    });
  });

  test("the context carries the message, ARGV, --env, the raw bytes and an AbortSignal", async () => {
    await withFixture(backend, { fifo: true }, async (fixture) => {
      const job = await fixture.file(
        "job.js",
        `export function run(body, context) {
  const { signal, bytes, ...rest } = context;
  Deno.writeTextFileSync(LEDGER, JSON.stringify({
    body,
    typeOfBody: typeof body,
    ...rest,
    signal: signal instanceof AbortSignal ? (signal.aborted ? "aborted" : "live") : "missing",
    bytes: bytes instanceof Uint8Array ? Array.from(bytes) : "missing",
  }) + "\\n", { append: true });
}
`,
      );
      const body = 'héllo ✓ {"a":1}';
      const [id] = await sendMessages(fixture.client, fixture.url, [
        { body, groupId: "g1", attributes: { color: "red" } },
      ]);
      fixture.worker(["--run", job, "--env", "GREETING=hi", "--", "a1", "a 2"]);
      await waitUntil("the job ran", async () => (await fixture.ledger()).length === 1);
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
      const seen = JSON.parse((await fixture.ledger())[0]);
      ok(typeof seen.sentTimestamp === "number" && seen.sentTimestamp > Date.now() - 600_000);
      delete seen.sentTimestamp;
      deepStrictEqual(seen, {
        body,
        typeOfBody: "string",
        messageId: id,
        receiveCount: 1,
        attributes: { color: "red" },
        queueUrl: fixture.url,
        groupId: "g1",
        args: ["a1", "a 2"],
        env: { GREETING: "hi" },
        signal: "live",
        bytes: Array.from(new TextEncoder().encode(body)),
      });
    });
  });

  test("Deno.exit(0) inside run() fails the job, not the worker, and keeps the message", async () => {
    await withFixture(backend, {}, async (fixture) => {
      const job = await fixture.file(
        "job.ts",
        `import process from "node:process";
${RECORD}
export function run(body: string, context: { receiveCount: number }): void {
  record(body + " " + context.receiveCount);
  if (context.receiveCount > 1) return;
  if (body === "deno") Deno.exit(0);
  if (body === "close") (globalThis as unknown as { close(): void }).close();
  else process.exit(3);
}
`,
      );
      const ids = await sendMessages(fixture.client, fixture.url, ["deno", "node", "close"]);
      const worker = fixture.worker(["--run", job]);
      await waitUntil("all ran twice", async () => (await fixture.ledger()).length >= 6);
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
      deepStrictEqual((await fixture.ledger()).sort(), [
        "close 1",
        "close 2",
        "deno 1",
        "deno 2",
        "node 1",
        "node 2",
      ]);
      const failed = worker.lines.filter((line) => line.msg === "job failed");
      const reasons = Object.fromEntries(failed.map((line) => [line.message_id, line.error]));
      deepStrictEqual(reasons, {
        [ids[0]]: "the module called Deno.exit(0)",
        [ids[1]]: "the module called process.exit(3)",
        [ids[2]]: "the module called close()",
      });
      strictEqual(worker.lines.filter((line) => line.msg === "job finished").length, 3);
      ok(!worker.lines.some((line) => line.msg === "worker stopped"), "the worker still runs");
    });
  });

  test("an unhandled rejection or an error thrown in a timer fails the job, not the worker", async () => {
    await withFixture(backend, {}, async (fixture) => {
      const job = await fixture.file(
        "job.ts",
        `${RECORD}
export async function run(body: string, context: { receiveCount: number }): Promise<void> {
  record(body + " " + context.receiveCount);
  if (context.receiveCount > 1) return;
  if (body === "reject") void Promise.reject(new Error("stray rejection"));
  else setTimeout(() => { throw new Error("thrown in a timer"); }, 0);
  await new Promise((resolve) => setTimeout(resolve, 200));
}
`,
      );
      const ids = await sendMessages(fixture.client, fixture.url, ["reject", "timer"]);
      const worker = fixture.worker(["--run", job]);
      await waitUntil("both ran twice", async () => (await fixture.ledger()).length >= 4);
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
      const failed = worker.lines.filter((line) => line.msg === "job failed");
      const reasons = Object.fromEntries(failed.map((line) => [line.message_id, line.error]));
      deepStrictEqual(reasons, {
        [ids[0]]: "uncaught error in the module: Error: stray rejection",
        [ids[1]]: "uncaught error in the module: Error: thrown in a timer",
      });
      strictEqual(worker.lines.filter((line) => line.msg === "job finished").length, 2);
      strictEqual(worker.stderr(), "", "nothing reaches stderr");
      ok(
        !worker.lines.some((line) => line.msg === "uncaught error in the module"),
        "one line each",
      );
    });
  });

  test("console output lands in the log with the message id and stream, never raw on stdout", async () => {
    await withFixture(backend, {}, async (fixture) => {
      const job = await fixture.file(
        "job.ts",
        `console.log("module loaded");
export function run(body: string): void {
  console.log("hello from", body, { n: 1 });
  console.error("complaint");
  console.warn("two\\nlines");
  Deno.stdout.writeSync(new TextEncoder().encode("raw write\\n"));
}
`,
      );
      const [id] = await sendMessages(fixture.client, fixture.url, ["m1"]);
      const worker = fixture.worker(["--run", job]);
      await worker.waitForLine((line) => line.msg === "job finished");
      const of = (msg: string) => worker.lines.find((line) => line.msg === msg);
      const fields = (line: LogLine | undefined) => [line?.message_id, line?.stream];
      deepStrictEqual(fields(of("hello from m1 { n: 1 }")), [id, "stdout"]);
      deepStrictEqual(fields(of("complaint")), [id, "stderr"]);
      deepStrictEqual(fields(of("two")), [id, "stderr"]);
      deepStrictEqual(fields(of("lines")), [id, "stderr"]);
      deepStrictEqual(fields(of("raw write")), [id, "stdout"]);
      // Printed at start-up, before any job: logged without a message id.
      deepStrictEqual(fields(of("module loaded")), [undefined, "stdout"]);
      strictEqual(of("module loaded")?.phase, "module load");
      deepStrictEqual(worker.lines.filter((line) => line.level === "raw"), []);
      strictEqual(worker.stderr(), "");
    });
  });
}

Deno.test({
  name:
    `--run [${moto.name}]: terminate() runs at the kill timeout and again every -X; the signal aborts`,
  ...testOptions,
  fn: async () => {
    await withFixture(moto, {}, async (fixture) => {
      const job = await fixture.file(
        "job.ts",
        `${RECORD}
let calls = 0;
let finish: (() => void) | undefined;
export async function run(_body: string, context: { receiveCount: number; signal: AbortSignal }) {
  if (context.receiveCount > 1) return record("second run");
  record("start " + Date.now());
  context.signal.addEventListener("abort", () => record("abort " + Date.now()));
  await new Promise<void>((resolve) => finish = resolve);
}
export function terminate(): void {
  record("terminate " + Date.now());
  if (++calls === 3) finish?.();
}
`,
      );
      await sendMessages(fixture.client, fixture.url, ["slow"]);
      const worker = fixture.worker([
        "--run",
        job,
        "-x",
        "1.5",
        "-X",
        "1",
        "--kill-grace",
        "30",
      ]);
      await waitUntil(
        "the second run",
        async () => (await fixture.ledger()).includes("second run"),
      );
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
      const entries = (await fixture.ledger()).map((line) => line.split(" "));
      const at = (word: string) => entries.filter((e) => e[0] === word).map((e) => Number(e[1]));
      const [start] = at("start");
      const terminates = at("terminate");
      strictEqual(terminates.length, 3, JSON.stringify(entries));
      ok(terminates[0] - start >= 1_400, `first terminate after -x: ${terminates[0] - start} ms`);
      for (let i = 1; i < terminates.length; i++) {
        const gap = terminates[i] - terminates[i - 1];
        ok(gap >= 800 && gap <= 1_600, `terminate repeated every -X: ${gap} ms`);
      }
      const aborts = at("abort");
      strictEqual(aborts.length, 1);
      ok(aborts[0] <= terminates[0] + 50, "the signal fires with the first terminate");
      const failed = worker.lines.find((line) => line.msg === "job failed");
      deepStrictEqual([failed?.outcome, failed?.signal, failed?.exit_code], [
        "killed",
        null,
        undefined,
      ]);
      ok(!worker.lines.some((line) => line.msg === "killing job"), "no SIGKILL was needed");
    });
  },
});

Deno.test({
  name:
    `--run [${moto.name}]: a busy loop is killed after the grace while the other slot keeps working`,
  ...testOptions,
  fn: async () => {
    await withFixture(moto, {}, async (fixture) => {
      const job = await fixture.file(
        "job.ts",
        `${RECORD}
export function run(body: string, context: { receiveCount: number }): void {
  if (body === "spin" && context.receiveCount === 1) {
    record("spin " + Date.now());
    while (true) { /* never yields */ }
  }
  record(body + " " + Date.now());
}
`,
      );
      await sendMessages(fixture.client, fixture.url, ["spin"]);
      const worker = fixture.worker([
        "--run",
        job,
        "-c",
        "2",
        "-x",
        "3",
        "-X",
        "1",
        "--kill-grace",
        "2",
      ]);
      await waitUntil("the spin began", async () => (await fixture.ledger()).length === 1);
      await sendMessages(fixture.client, fixture.url, ["quick-1", "quick-2", "quick-3"]);
      await waitUntil("the spin ran again", async () => {
        return (await fixture.ledger()).filter((line) => line.startsWith("spin")).length === 2;
      }, 20_000);
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
      const killed = worker.lines.find((line) => line.msg === "job failed");
      deepStrictEqual([killed?.signal, killed?.outcome, killed?.exit_code], [
        "SIGKILL",
        "killed",
        undefined,
      ]);
      ok(
        worker.lines.some((line) => String(line.msg).includes("its thread cannot be stopped")),
        "the stuck thread is reported",
      );
      const entries = (await fixture.ledger()).map((line) => line.split(" "));
      const spinStart = Number(entries[0][1]);
      const killedAt = Date.parse(String(killed?.ts));
      const quick = entries.filter((entry) => entry[0].startsWith("quick"));
      strictEqual(quick.length, 3);
      for (const [name, when] of quick) {
        ok(Number(when) < killedAt, `${name} finished during the busy loop`);
        ok(Number(when) > spinStart);
      }
      ok(killedAt - spinStart >= 4_500, `SIGKILL after -x + grace: ${killedAt - spinStart} ms`);
    });
  },
});

// ---------------------------------------------------------------------------
// Start-up errors: no emulator is reached, the module is checked before anything else.

const LOAD_ERRORS: { name: string; file?: [string, string]; run: string; mentions: string[] }[] = [
  { name: "missing file", run: "./missing.ts", mentions: ["--run ./missing.ts: no such file"] },
  { name: "a directory", run: "./", mentions: ["--run ./: is a directory"] },
  {
    name: "syntax error",
    file: ["syntax.ts", "export function run( {\n"],
    run: "./syntax.ts",
    mentions: ["--run ./syntax.ts: cannot load the module: SyntaxError", "syntax.ts:1:"],
  },
  {
    name: "no run export",
    file: ["norun.ts", "export const x = 1;\n"],
    run: "./norun.ts",
    mentions: ["--run ./norun.ts: the module has no 'run' export"],
  },
  {
    name: "run is not a function",
    file: ["notfn.js", 'export const run = "nope";\n'],
    run: "./notfn.js",
    mentions: ["'run' must be a function, but it is a string"],
  },
  {
    name: "terminate is not a function",
    file: ["badterm.js", "export function run() {}\nexport const terminate = 1;\n"],
    run: "./badterm.js",
    mentions: ["'terminate' must be a function, but it is a number"],
  },
  {
    name: "throws at top level",
    file: ["throws.ts", 'throw new Error("boom at load");\nexport function run() {}\n'],
    run: "./throws.ts",
    mentions: ["cannot load the module: Error: boom at load", "throws.ts:1:"],
  },
  {
    name: "Deno.exit at top level",
    file: ["exits.ts", "Deno.exit(3);\nexport function run() {}\n"],
    run: "./exits.ts",
    mentions: ["the module called Deno.exit(3) while loading"],
  },
  {
    name: "a relative import that is missing",
    file: ["relative.ts", 'import "./nope.ts";\nexport function run() {}\n'],
    run: "./relative.ts",
    mentions: ["cannot load the module", "Module not found", "nope.ts"],
  },
  {
    // An invalid name fails without asking the registry; in a binary every npm: import fails.
    name: "an npm: import",
    file: ["npm.ts", 'import x from "npm:@@not valid";\nexport function run() { x; }\n'],
    run: "./npm.ts",
    mentions: ["npm:@@not valid", "may import only local files"],
  },
  {
    name: "a remote import",
    file: [
      "remote.ts",
      'import x from "http://127.0.0.1:9/mod.ts";\nexport function run() { x; }\n',
    ],
    run: "./remote.ts",
    mentions: ["127.0.0.1:9", "may import only local files"],
  },
];

Deno.test("--run: a module that cannot load is one line on stderr, exit 2, before any AWS call", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "sqsrun-load-" });
  try {
    for (const { name, file, run, mentions } of LOAD_ERRORS) {
      await t.step(name, async () => {
        if (file) await Deno.writeTextFile(`${dir}/${file[0]}`, file[1]);
        // A dead endpoint: an error must come from the module check, never from AWS.
        const result = await runCli(["-q", "jobs", "--run", run], {
          cwd: dir,
          env: { ...awsEnv("http://127.0.0.1:9"), HOME: dir },
        });
        assertOneLineError(result, 2, mentions, name);
        ok(!result.stderr.includes("--allow-import"), "no advice the user cannot follow");
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: `--run [${moto.name}]: a 1 MiB body reaches run() byte-exact, as text and as bytes`,
  ...testOptions,
  async fn() {
    // moto takes SQS's 1 MiB on a queue that allows it; ElasticMQ refuses over 256 KiB.
    await withFixture(moto, { attributes: { MaximumMessageSize: "1048576" } }, async (fixture) => {
      const job = await fixture.file(
        "job.ts",
        `export function run(body: string, context: { bytes: Uint8Array }) {
  Deno.writeTextFileSync(LEDGER + ".body", body);
  Deno.writeFileSync(LEDGER + ".bytes", context.bytes);
  Deno.writeTextFileSync(LEDGER, "ran\\n", { append: true });
}
`,
      );
      const body = mixedBody(1_048_576);
      await sendMessages(fixture.client, fixture.url, [body]);
      fixture.worker(["--run", job]);
      await waitUntil("the job ran", async () => (await fixture.ledger()).length === 1);
      const expected = new TextEncoder().encode(body);
      const ledger = `${fixture.dir}/ledger`;
      deepStrictEqual(await Deno.readFile(`${ledger}.body`), expected, "body text");
      deepStrictEqual(await Deno.readFile(`${ledger}.bytes`), expected, "context.bytes");
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
    });
  },
});

Deno.test({
  name: `--run [${moto.name}]: the examples run: ts_job.ts and js_job_with_terminate.js`,
  ...testOptions,
  fn: async () => {
    await withFixture(moto, {}, async (fixture) => {
      const examples = fileURLToPath(new URL("../examples/", import.meta.url));
      await sendMessages(fixture.client, fixture.url, ['{"image":"cat.png","width":100}']);
      const ts = fixture.worker([
        "--run",
        `${examples}ts_job.ts`,
        "--env",
        "GREETING=hello",
        "--",
        "--dry-run",
      ]);
      await ts.waitForLine((line) => line.msg === "job finished");
      ok(ts.lines.some((line) => String(line.msg).startsWith("hello: resizing cat.png to 100px")));
      await ts.stop();

      await sendMessages(fixture.client, fixture.url, ["30"]);
      const js = fixture.worker([
        "--run",
        `${examples}js_job_with_terminate.js`,
        "-x",
        "1",
        "--kill-grace",
        "20",
      ]);
      const failed = await js.waitForLine((line) => line.msg === "job failed");
      strictEqual(failed.outcome, "killed");
      ok(js.lines.some((line) => line.msg === "terminate(): stopping early"));
      ok(!js.lines.some((line) => line.msg === "killing job"), "terminate() ended it in time");
    });
  },
});

Deno.test("readBody(): a stream (an S3 object) is read whole into text and bytes", async () => {
  const text = "ünïcode\nacross chunks";
  const encoded = new TextEncoder().encode(text);
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      for (let i = 0; i < encoded.length; i += 3) controller.enqueue(encoded.slice(i, i + 3));
      controller.close();
    },
  });
  const read = await readBody(stream);
  strictEqual(read.body, text);
  deepStrictEqual(Array.from(read.bytes), Array.from(encoded));
  deepStrictEqual(await readBody("plain"), {
    body: "plain",
    bytes: new TextEncoder().encode("plain"),
  });
});
