/**
 * The smoke suite of a sqsrun binary: starts it as a user would and checks what it
 * does, against a real SQS emulator (moto). The release workflow publishes a binary
 * only after this passed on a runner of the binary's own platform; here it runs the
 * same checks on `deno run src/main.ts` (`--deno`, with the binary's permissions from
 * `src/permissions.ts`), so the suite is tested before it is trusted.
 *
 * ```sh
 * deno run -A scripts/smoke.ts --binary dist/sqsrun-x86_64-unknown-linux-gnu
 * deno run -A scripts/smoke.ts --deno [--endpoint URL] [--only exec,drain] [--timeout SEC]
 * ```
 *
 * The endpoint is `--endpoint`, else `SQSRUN_TEST_MOTO_URL` (set by `deno task test`),
 * else moto is installed into `.cache/smoke/venv` (`python3 -m venv`, pip, the same pin
 * as `scripts/local_aws.ts`) and started on a free loopback port for the run.
 *
 * The checks, in order (`--only` picks some; the names are {@linkcode CHECKS}):
 *
 * - `version`: `--version` prints `sqsrun VERSION`, exit 0.
 * - `help`: `--help` prints the usage, exit 0; `--help worker` prints the page
 *   `docs/worker.md` (embedded in the binary), exit 0.
 * - `usage-error`: an unknown option is one `sqsrun: ` line on stderr, exit 2.
 * - `exec`: `--create`, two `--push`es and a worker `--exec`ing one job that succeeds
 *   (its body on stdin, its output in the log) and one that exits 3; then a stop; the
 *   queue holds exactly the failed message (hidden by its back-off), the other is deleted.
 * - `drain`: a worker with a job running gets its stop signal: it logs the drain, lets the
 *   job finish (the job waits for a file the suite writes only after the drain began),
 *   deletes its message, starts no other job, gives the two messages pushed meanwhile back,
 *   and exits 0.
 * - `tree`: a job that exits leaving a child process behind: the child dies with it; a job
 *   (and its child) running past `-x`: both die at the kill.
 * - `worker-death`: a worker killed outright (SIGKILL; TerminateProcess on Windows) while a
 *   job and its child run: both die with it.
 *
 * The stop signal is SIGTERM, except on Windows, which has none: there sqsrun drains on
 * SIGINT, the console's Ctrl-C, and the suite runs each worker under
 * `scripts/smoke/console_host.ts`, which gives it a console of its own and sends it a
 * CTRL_C_EVENT when told (a console Ctrl-C reaches every process of its console: the jobs
 * get it too, so the drain's job there ignores it). Process trees are watched through
 * heartbeat files (scripts/smoke/job.ts), which no reused pid can fake.
 *
 * Exit code 0 when every check passed, 1 at the first failed one, with the reason as the
 * last line of stderr (`smoke: FAIL CHECK: ...`, after the worker's log for context), 2 for
 * a usage error. Everything is bounded (`--timeout`, default 300 s for the checks; installing
 * moto may take up to 10 minutes more). At the end, and on SIGINT or SIGTERM, the suite
 * stops what it started (its workers, moto, and a heartbeat process a failed check left
 * behind, identified by its still-moving heartbeat), deletes its queues and its temporary
 * directory.
 *
 * @module
 */
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { runtimeFlags } from "../src/permissions.ts";
import { VERSION } from "../src/version.ts";
import { answersSqs, CACHE_DIR } from "./local_aws.ts";
import { HOST_FAILED } from "./smoke/console_host.ts";

/** moto, pinned as in `scripts/local_aws.ts` (a test checks that the two agree). */
export const MOTO_REQUIREMENT = "moto[server]==5.2.1";

/** The checks, in the order they run. */
export const CHECKS = [
  "version",
  "help",
  "usage-error",
  "exec",
  "drain",
  "tree",
  "worker-death",
] as const;

/** One check's name. */
export type CheckName = typeof CHECKS[number];

const NEEDS_SQS: readonly CheckName[] = ["exec", "drain", "tree", "worker-death"];

const isWindows = Deno.build.os === "windows";
const MAIN = fileURLToPath(new URL("../src/main.ts", import.meta.url));
const JOB = fileURLToPath(new URL("./smoke/job.ts", import.meta.url));
const CONSOLE_HOST = fileURLToPath(new URL("./smoke/console_host.ts", import.meta.url));
const REGION = "us-east-1";
const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** A mistake in how the suite was invoked (exit code 2). */
export class UsageError extends Error {
  override name = "UsageError";
}

/** A failed check: the message is the one-line reason. */
export class CheckFailure extends Error {
  override name = "CheckFailure";
}

/** How to start sqsrun: `program` with `prefix` before sqsrun's own arguments. */
export interface Sqsrun {
  program: string;
  prefix: string[];
  /** For the log: the binary's path, or `deno run src/main.ts`. */
  label: string;
}

/** What the command line asked for. */
export interface SmokeOptions {
  sqsrun: Sqsrun;
  /** An SQS endpoint to use instead of starting moto. */
  endpoint?: string;
  /** The checks to run, in {@linkcode CHECKS} order. */
  checks: CheckName[];
  /** Bound of the checks, in seconds. */
  timeoutSec: number;
  /** The Python that creates moto's venv; default `python3`, else `python`. */
  python?: string;
}

/** Returns the way to start the binary at `path`, or sqsrun under `deno run`. */
export function sqsrunSpec(binary: string | undefined): Sqsrun {
  if (binary !== undefined) {
    const program = resolve(binary);
    return { program, prefix: [], label: program };
  }
  return {
    program: Deno.execPath(),
    prefix: ["run", ...runtimeFlags(), "--quiet", MAIN],
    label: "deno run src/main.ts",
  };
}

/** Parses the command line; throws a {@linkcode UsageError} on anything wrong. */
export function parseSmokeArgs(
  args: readonly string[],
  env: (name: string) => string | undefined = (name) => Deno.env.get(name),
): SmokeOptions {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...args],
      options: {
        binary: { type: "string" },
        deno: { type: "boolean" },
        endpoint: { type: "string" },
        only: { type: "string", multiple: true },
        timeout: { type: "string" },
        python: { type: "string" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message.split("\n")[0] : String(error));
  }
  if ((values.binary === undefined) === (values.deno !== true)) {
    throw new UsageError("give exactly one of --binary PATH and --deno");
  }
  if (values.binary === "") throw new UsageError("--binary needs a path");
  const asked = (values.only ?? []).flatMap((list) => list.split(",")).filter(Boolean);
  const unknown = asked.find((name) => !(CHECKS as readonly string[]).includes(name));
  if (unknown !== undefined) {
    throw new UsageError(`unknown check '${unknown}' (known: ${CHECKS.join(", ")})`);
  }
  const timeoutSec = values.timeout === undefined ? 300 : Number(values.timeout);
  if (!Number.isFinite(timeoutSec) || timeoutSec <= 0 || timeoutSec > 3600) {
    throw new UsageError(
      `--timeout must be a number of seconds in (0, 3600], not '${values.timeout}'`,
    );
  }
  const endpoint = values.endpoint ?? (env("SQSRUN_TEST_MOTO_URL") || undefined);
  if (endpoint !== undefined && !/^https?:\/\/[^/]+\/?$/.test(endpoint)) {
    throw new UsageError(`--endpoint must be an http(s) URL without a path, not '${endpoint}'`);
  }
  return {
    sqsrun: sqsrunSpec(values.binary),
    endpoint: endpoint?.replace(/\/$/, ""),
    checks: asked.length === 0 ? [...CHECKS] : CHECKS.filter((name) => asked.includes(name)),
    timeoutSec,
    python: values.python,
  };
}

// ---------------------------------------------------------------------------
// The run: what was started, bounds, and clean-up

/** A line of a worker's output: JSON log lines are parsed. */
interface LogLine {
  stream: "stdout" | "stderr";
  raw: string;
  json?: Record<string, unknown>;
}

class Run {
  readonly deadline: number;
  readonly runId = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
  readonly workers = new Set<Worker>();
  readonly queues = new Set<string>();
  readonly beatFiles = new Set<string>();
  /** The worker started last: its log is a failure's context. */
  lastWorker: Worker | undefined;
  interrupted: string | undefined;
  endpoint = "";
  tmp = "";
  env: Record<string, string> = {};
  #queueCount = 0;

  constructor(readonly options: SmokeOptions, readonly log: (line: string) => void) {
    this.deadline = Date.now() + options.timeoutSec * 1000;
  }

  /** `ms`, or less when the suite's bound comes first; throws once it has passed. */
  bound(ms: number, what: string): number {
    if (this.interrupted) throw new CheckFailure(`interrupted by ${this.interrupted}`);
    const left = this.deadline - Date.now();
    if (left <= 0) {
      throw new CheckFailure(
        `${what}: the suite's --timeout of ${this.options.timeoutSec} s ran out`,
      );
    }
    return Math.min(ms, left);
  }

  queueName(purpose: string): string {
    return `sqsrun-smoke-${this.runId}-${purpose}-${++this.#queueCount}`;
  }

  endpointArgs(): string[] {
    return ["--endpoint-url", this.endpoint, "--region", REGION];
  }

  async sleep(ms: number): Promise<void> {
    await new Promise((resolve) => setTimeout(resolve, this.bound(ms, "sleep")));
  }
}

/** The environment of sqsrun: ours without AWS_*, dummy credentials, no ~/.aws. */
function sqsrunEnv(emptyConfig: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(Deno.env.toObject())) {
    if (!key.toUpperCase().startsWith("AWS_")) env[key] = value;
  }
  return {
    ...env,
    AWS_ACCESS_KEY_ID: "smoke",
    AWS_SECRET_ACCESS_KEY: "smoke",
    AWS_REGION: REGION,
    AWS_CONFIG_FILE: emptyConfig,
    AWS_SHARED_CREDENTIALS_FILE: emptyConfig,
    AWS_EC2_METADATA_DISABLED: "true",
    NO_COLOR: "1",
  };
}

interface Output {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs sqsrun once with `args`, killed after `timeoutMs`. */
async function runSqsrun(run: Run, args: string[], timeoutMs = 30_000): Promise<Output> {
  const { program, prefix } = run.options.sqsrun;
  const what = `sqsrun ${args.join(" ")}`;
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(program, {
      args: [...prefix, ...args],
      env: run.env,
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    throw new CheckFailure(`cannot start ${program}: ${oneLine(error)}`);
  }
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
  }, run.bound(timeoutMs, what));
  try {
    const output = await child.output();
    if (timedOut) throw new CheckFailure(`${what} did not exit within ${timeoutMs / 1000} s`);
    return {
      code: output.code,
      stdout: decoder.decode(output.stdout),
      stderr: decoder.decode(output.stderr),
    };
  } finally {
    clearTimeout(timer);
  }
}

/** Runs sqsrun and returns its one line of stdout; anything else fails `check`. */
async function runForLine(run: Run, args: string[]): Promise<string> {
  const result = await runSqsrun(run, args);
  const lines = result.stdout.split("\n").filter((line) => line !== "");
  if (result.code !== 0 || lines.length !== 1) {
    throw new CheckFailure(
      `sqsrun ${args.join(" ")} exited ${result.code} printing ${JSON.stringify(result.stdout)}` +
        (result.stderr ? `, stderr ${JSON.stringify(result.stderr.trim().split("\n")[0])}` : ""),
    );
  }
  return lines[0];
}

/** A running worker, its output collected line by line. */
class Worker {
  readonly lines: LogLine[] = [];
  status: Deno.CommandStatus | undefined;
  readonly #child: Deno.ChildProcess;
  readonly #commands: WritableStreamDefaultWriter<Uint8Array> | undefined;
  readonly #output: Promise<unknown>;

  constructor(readonly run: Run, args: string[]) {
    const { program, prefix } = run.options.sqsrun;
    // On Windows, the worker runs in a console of its own (see console_host.ts).
    const argv = isWindows
      ? [
        Deno.execPath(),
        "run",
        "--allow-ffi",
        "--allow-run",
        "--allow-read",
        "--allow-env",
        "--quiet",
        CONSOLE_HOST,
        program,
        ...prefix,
        ...args,
      ]
      : [program, ...prefix, ...args];
    try {
      this.#child = new Deno.Command(argv[0], {
        args: argv.slice(1),
        env: run.env,
        clearEnv: true,
        stdin: isWindows ? "piped" : "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    } catch (error) {
      throw new CheckFailure(`cannot start ${argv[0]}: ${oneLine(error)}`);
    }
    this.#commands = isWindows ? this.#child.stdin.getWriter() : undefined;
    run.workers.add(this);
    run.lastWorker = this;
    this.#output = Promise.all([
      readLines(this.#child.stdout, (raw) => this.#add("stdout", raw)),
      readLines(this.#child.stderr, (raw) => this.#add("stderr", raw)),
    ]);
    this.#child.status.then((status) => this.status = status);
  }

  #add(stream: "stdout" | "stderr", raw: string): void {
    let json: Record<string, unknown> | undefined;
    if (raw.startsWith("{")) {
      try {
        json = JSON.parse(raw);
      } catch { /* a plain line */ }
    }
    this.lines.push({ stream, raw, json });
  }

  /** Waits for a line that `match`es; fails when the worker exits or time runs out first. */
  async waitFor(
    what: string,
    match: (line: Record<string, unknown>) => boolean,
    timeoutMs: number,
  ) {
    const deadline = Date.now() + this.run.bound(timeoutMs, what);
    for (;;) {
      const found = this.find(match);
      if (found) return found;
      if (this.status) {
        const host = isWindows && this.status.code === HOST_FAILED
          ? " (the console host could not set up; its lines are above)"
          : "";
        throw new CheckFailure(
          `the worker exited (code ${this.status.code}) before ${what}${host}`,
        );
      }
      if (Date.now() > deadline) {
        throw new CheckFailure(`no ${what} within ${Math.round(timeoutMs / 1000)} s`);
      }
      await this.run.sleep(50);
    }
  }

  find(match: (line: Record<string, unknown>) => boolean): Record<string, unknown> | undefined {
    return this.lines.find((line) => line.json && match(line.json))?.json;
  }

  /** Starts the drain: SIGTERM, or on Windows a console Ctrl-C. Returns the signal's name. */
  async stop(): Promise<string> {
    if (this.#commands) {
      await this.#commands.write(encoder.encode("ctrl-c\n"));
      return "SIGINT";
    }
    try {
      this.#child.kill("SIGTERM");
    } catch { /* exited: waitExit says so */ }
    return "SIGTERM";
  }

  /** Kills the worker outright, as a crash or an OOM kill would. */
  async kill(): Promise<void> {
    if (this.status) return;
    if (this.#commands) {
      await this.#commands.write(encoder.encode("kill\n")).catch(() => {});
      return;
    }
    try {
      this.#child.kill("SIGKILL");
    } catch { /* exited */ }
  }

  /** Waits for the exit and the end of its output; returns the exit code. */
  async waitExit(timeoutMs: number, what = "the worker's exit"): Promise<number> {
    const deadline = Date.now() + this.run.bound(timeoutMs, what);
    while (!this.status) {
      if (Date.now() > deadline) {
        throw new CheckFailure(`the worker did not exit within ${Math.round(timeoutMs / 1000)} s`);
      }
      await this.run.sleep(50);
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([this.#output, new Promise((done) => timer = setTimeout(done, 3_000))]);
    clearTimeout(timer);
    await this.#commands?.close().catch(() => {});
    this.run.workers.delete(this);
    return this.status.code;
  }

  /** Clean-up: kills a worker still running and waits (bounded) for it. */
  async dispose(): Promise<void> {
    await this.kill();
    const deadline = Date.now() + 10_000;
    while (!this.status && Date.now() < deadline) await sleep(50);
    await this.#commands?.close().catch(() => {});
    this.run.workers.delete(this);
  }

  /** The last lines of output, for a failure's context. */
  tail(count = 30): string {
    return this.lines.slice(-count).map((line) => `  ${line.stream}: ${line.raw}`).join("\n");
  }
}

async function readLines(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
): Promise<void> {
  let pending = "";
  try {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      pending += chunk;
      let newline = pending.indexOf("\n");
      while (newline !== -1) {
        onLine(pending.slice(0, newline).replace(/\r$/, ""));
        pending = pending.slice(newline + 1);
        newline = pending.indexOf("\n");
      }
    }
  } catch { /* the pipe broke */ }
  if (pending !== "") onLine(pending);
}

// ---------------------------------------------------------------------------
// SQS, spoken directly (not through the binary under test)

async function sqsCall(
  endpoint: string,
  action: string,
  params: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 10_000);
  try {
    const response = await fetch(endpoint, {
      method: "POST",
      signal: controller.signal,
      headers: {
        "Content-Type": "application/x-amz-json-1.0",
        "X-Amz-Target": `AmazonSQS.${action}`,
        // moto picks the service from the credential scope; it checks no signature.
        "Authorization":
          `AWS4-HMAC-SHA256 Credential=smoke/20240101/${REGION}/sqs/aws4_request, SignedHeaders=host, Signature=0`,
      },
      body: JSON.stringify(params),
    });
    const text = await response.text();
    if (!response.ok) {
      throw new CheckFailure(`SQS ${action}: HTTP ${response.status}: ${text.slice(0, 200)}`);
    }
    return text.trim() === "" ? {} : JSON.parse(text);
  } catch (error) {
    if (error instanceof CheckFailure) throw error;
    throw new CheckFailure(`SQS ${action} at ${endpoint} failed: ${oneLine(error)}`);
  } finally {
    clearTimeout(timer);
  }
}

interface Counts {
  visible: number;
  inFlight: number;
  delayed: number;
}

async function queueCounts(run: Run, url: string): Promise<Counts> {
  const answer = await sqsCall(run.endpoint, "GetQueueAttributes", {
    QueueUrl: url,
    AttributeNames: [
      "ApproximateNumberOfMessages",
      "ApproximateNumberOfMessagesNotVisible",
      "ApproximateNumberOfMessagesDelayed",
    ],
  });
  const attributes = (answer.Attributes ?? {}) as Record<string, string>;
  return {
    visible: Number(attributes.ApproximateNumberOfMessages ?? NaN),
    inFlight: Number(attributes.ApproximateNumberOfMessagesNotVisible ?? NaN),
    delayed: Number(attributes.ApproximateNumberOfMessagesDelayed ?? NaN),
  };
}

/** Waits (bounded) until the queue's counts are `want`; fails naming what it saw. */
async function expectCounts(run: Run, url: string, want: Counts, why: string): Promise<void> {
  const deadline = Date.now() + run.bound(15_000, "the queue's counts");
  let counts = await queueCounts(run, url);
  const same = (a: Counts) =>
    a.visible === want.visible && a.inFlight === want.inFlight && a.delayed === want.delayed;
  while (!same(counts) && Date.now() < deadline) {
    await run.sleep(250);
    counts = await queueCounts(run, url);
  }
  if (!same(counts)) {
    throw new CheckFailure(
      `the queue holds ${describeCounts(counts)}; want ${describeCounts(want)} (${why})`,
    );
  }
}

function describeCounts(counts: Counts): string {
  return `${counts.visible} visible, ${counts.inFlight} in flight, ${counts.delayed} delayed`;
}

// ---------------------------------------------------------------------------
// Heartbeats: is a process of a job's tree still running?

function readBeat(file: string): { pid: number; count: number } | undefined {
  try {
    const [pid, count] = Deno.readTextFileSync(file).trim().split(" ").map(Number);
    return Number.isInteger(pid) && Number.isInteger(count) ? { pid, count } : undefined;
  } catch {
    return undefined;
  }
}

/** Waits until the heartbeat in `file` moves: its process runs. */
async function expectBeating(run: Run, file: string, what: string): Promise<void> {
  run.beatFiles.add(file);
  const deadline = Date.now() + run.bound(30_000, what);
  let first = readBeat(file);
  for (;;) {
    await run.sleep(300);
    const now = readBeat(file);
    if (first && now && now.count > first.count) return;
    first ??= now;
    if (Date.now() > deadline) throw new CheckFailure(`${what}: no heartbeat in ${file}`);
  }
}

/**
 * Waits until the heartbeat in `file` stands still for 2 s (20 beats missed): its process
 * is gone. Fails with `what` if it still moves after `timeoutMs`.
 */
async function expectStopped(run: Run, file: string, what: string, timeoutMs = 20_000) {
  run.beatFiles.add(file);
  if (readBeat(file) === undefined) {
    throw new CheckFailure(`${what}: it never wrote its heartbeat ${file}`);
  }
  const deadline = Date.now() + run.bound(timeoutMs, what);
  for (;;) {
    const before = readBeat(file);
    await run.sleep(2_000);
    const after = readBeat(file);
    if (before && after && before.count === after.count) return;
    if (Date.now() > deadline) {
      throw new CheckFailure(`${what} (pid ${after?.pid}: its heartbeat still moves)`);
    }
  }
}

/** Clean-up: kills each heartbeat process still beating (its pid, as it wrote it). */
async function killBeating(files: Iterable<string>): Promise<void> {
  const before = new Map([...files].map((file) => [file, readBeat(file)]));
  if (before.size === 0) return;
  await sleep(500);
  for (const [file, first] of before) {
    const now = readBeat(file);
    if (!first || !now || now.count <= first.count || now.pid !== first.pid) continue;
    try {
      Deno.kill(now.pid, "SIGKILL");
    } catch { /* gone meanwhile */ }
  }
}

// ---------------------------------------------------------------------------
// The checks

type Json = Record<string, unknown>;
const msg = (text: string) => (line: Json) => line.msg === text;
const forMessage = (id: string, ...texts: string[]) => (line: Json) =>
  line.message_id === id && texts.includes(String(line.msg));
const jobSaid = (id: string, text: string) => (line: Json) =>
  line.message_id === id && line.stream === "stdout" && String(line.msg).includes(text);

/** A job's end line, short: `job failed (outcome killed, exit code null, signal SIGTERM)`. */
function describeEnd(line: Json): string {
  return `${line.msg} (outcome ${line.outcome}, exit code ${line.exit_code}, signal ${line.signal})`;
}

function jobCommand(): string[] {
  return ["--exec", Deno.execPath(), "--", "run", "-A", "--quiet", JOB];
}

/** Fast polling: a short long poll and interval, so the checks take seconds. */
const FAST = ["--wait", "1", "-i", "0.2"];

async function checkVersion(run: Run): Promise<void> {
  const result = await runSqsrun(run, ["--version"]);
  const want = `sqsrun ${VERSION}`;
  if (result.code !== 0 || result.stdout.trim() !== want) {
    throw new CheckFailure(
      `--version exited ${result.code} printing ${JSON.stringify(result.stdout.trim())}; ` +
        `want exit 0 and ${JSON.stringify(want)}` +
        (result.stderr ? ` (stderr ${JSON.stringify(result.stderr.trim().split("\n")[0])})` : ""),
    );
  }
}

async function checkHelp(run: Run): Promise<void> {
  const result = await runSqsrun(run, ["--help"]);
  const text = result.stdout;
  if (
    result.code !== 0 || !text.startsWith("Usage: sqsrun") || !text.includes("--exec") ||
    !text.includes("--push")
  ) {
    throw new CheckFailure(
      `--help exited ${result.code} printing ${JSON.stringify(text.slice(0, 60))}...; ` +
        "want exit 0 and the usage (Usage: sqsrun ..., --exec, --push)",
    );
  }
  const page = await runSqsrun(run, ["--help", "worker"]);
  if (page.code !== 0 || !page.stdout.startsWith("# The worker\n")) {
    throw new CheckFailure(
      `--help worker exited ${page.code} printing ${JSON.stringify(page.stdout.slice(0, 60))}` +
        `...; want exit 0 and the page docs/worker.md (# The worker ...)` +
        (page.stderr ? ` (stderr ${JSON.stringify(page.stderr.trim().split("\n")[0])})` : ""),
    );
  }
}

async function checkUsageError(run: Run): Promise<void> {
  const result = await runSqsrun(run, ["--no-such-option"]);
  const lines = result.stderr.split("\n").filter((line) => line !== "");
  if (
    result.code !== 2 || result.stdout !== "" || lines.length !== 1 ||
    !lines[0].startsWith("sqsrun: ") || !lines[0].includes("--no-such-option")
  ) {
    throw new CheckFailure(
      `an unknown option exited ${result.code} with stderr ${JSON.stringify(result.stderr)}; ` +
        "want exit 2 and one line 'sqsrun: ...' naming it",
    );
  }
}

async function createQueue(run: Run, purpose: string): Promise<string> {
  const name = run.queueName(purpose);
  const url = await runForLine(run, ["--create", "-q", name, ...run.endpointArgs()]);
  if (!url.endsWith(`/${name}`)) {
    throw new CheckFailure(`--create printed ${JSON.stringify(url)}, not the queue's URL`);
  }
  run.queues.add(url);
  return url;
}

async function push(run: Run, url: string, body: Json): Promise<string> {
  // Known before the job runs, so clean-up finds a heartbeat whatever check fails.
  if (typeof body.beat === "string") {
    run.beatFiles.add(`${body.beat}.job`);
    run.beatFiles.add(`${body.beat}.child`);
  }
  const id = await runForLine(run, [
    "-q",
    url,
    ...run.endpointArgs(),
    "--push",
    JSON.stringify(body),
  ]);
  if (!/^[A-Za-z0-9-]{8,}$/.test(id)) {
    throw new CheckFailure(`--push printed ${JSON.stringify(id)}, not a message id`);
  }
  return id;
}

function startWorker(run: Run, url: string, options: string[]): Worker {
  return new Worker(run, ["-q", url, ...run.endpointArgs(), ...FAST, ...options, ...jobCommand()]);
}

/**
 * Checks the `worker started` line: the isolation this platform should use (on Windows a
 * Job Object per job: `none` there means the process-tree checks cannot pass).
 */
async function expectStarted(worker: Worker): Promise<void> {
  const started = await worker.waitFor("'worker started' line", msg("worker started"), 30_000);
  const isolation = String(started.isolation);
  const fine = isWindows
    ? isolation === "job-object"
    : isolation !== "none" && isolation !== "undefined" && isolation !== "job-object";
  if (!fine) {
    // Why a Windows worker has no Job Objects is in the warning of its first job, if any.
    const why = isWindows && isolation === "none"
      ? await worker.waitFor(
        "'no Job Objects' warning",
        (line) => String(line.msg).startsWith("no Job Objects"),
        10_000,
      ).then((line) => `: ${line.error}`, () => "")
      : "";
    throw new CheckFailure(`the worker reports isolation '${isolation}' on ${Deno.build.os}${why}`);
  }
  worker.run.log(`worker isolation on ${Deno.build.os}: ${isolation}`);
}

/** Stops the worker with its drain signal and expects exit code 0. */
async function stopWorker(worker: Worker, timeoutMs = 30_000): Promise<void> {
  await worker.stop();
  const code = await worker.waitExit(timeoutMs);
  if (code !== 0) throw new CheckFailure(`the stopped worker exited ${code}, not 0`);
}

async function checkExec(run: Run): Promise<Worker> {
  const url = await createQueue(run, "exec");
  const word = `hello-${run.runId}`;
  const ok = await push(run, url, { do: "ok", say: word });
  const fail = await push(run, url, { do: "fail" });
  const worker = startWorker(run, url, ["-c", "2", "--backoff", "60"]);
  await expectStarted(worker);
  const okEnd = await worker.waitFor(
    "end of the succeeding job",
    forMessage(ok, "job finished", "job failed"),
    40_000,
  );
  if (okEnd.msg !== "job finished" || okEnd.exit_code !== 0) {
    throw new CheckFailure(`the job that exits 0 ended: ${describeEnd(okEnd)}`);
  }
  if (!worker.find(jobSaid(ok, `smoke-job ok: ${word}`))) {
    throw new CheckFailure(
      "the succeeding job's output (its body, read from stdin) is not in the log",
    );
  }
  const failEnd = await worker.waitFor(
    "end of the failing job",
    forMessage(fail, "job finished", "job failed"),
    40_000,
  );
  if (failEnd.msg !== "job failed" || failEnd.exit_code !== 3 || failEnd.outcome !== "failed") {
    throw new CheckFailure(`the job that exits 3 ended: ${describeEnd(failEnd)}`);
  }
  await stopWorker(worker);
  await expectCounts(
    run,
    url,
    { visible: 0, inFlight: 1, delayed: 0 },
    "the succeeded message deleted, the failed one hidden for its 60 s back-off",
  );
  return worker;
}

async function checkDrain(run: Run): Promise<Worker> {
  const url = await createQueue(run, "drain");
  const go = join(run.tmp, "drain-go");
  const waiting = await push(run, url, { do: "wait", file: go });
  const worker = startWorker(run, url, ["-c", "1", "--shutdown-timeout", "60"]);
  await expectStarted(worker);
  await worker.waitFor("the waiting job's start", jobSaid(waiting, "smoke-job waiting"), 40_000);
  const later = [
    await push(run, url, { do: "ok", say: "after the drain began 1" }),
    await push(run, url, { do: "ok", say: "after the drain began 2" }),
  ];
  // Time for the worker to receive them (or not): either way they must be given back.
  await run.sleep(1_500);
  const signal = await worker.stop();
  const draining = await worker.waitFor(
    "'draining' line",
    (line) => String(line.msg).startsWith("draining"),
    20_000,
  );
  if (draining.signal !== signal) {
    throw new CheckFailure(`the drain names signal ${draining.signal}; the suite sent ${signal}`);
  }
  // The running job is still running: let it finish now.
  await run.sleep(500);
  const early = worker.find(forMessage(waiting, "job finished", "job failed"));
  if (early) throw new CheckFailure(`the drain ended the running job: ${describeEnd(early)}`);
  Deno.writeTextFileSync(go, "go\n");
  const end = await worker.waitFor(
    "end of the running job",
    forMessage(waiting, "job finished", "job failed"),
    40_000,
  );
  if (end.msg !== "job finished" || end.outcome !== "succeeded") {
    throw new CheckFailure(`the job running at the drain did not finish: ${describeEnd(end)}`);
  }
  const code = await worker.waitExit(30_000);
  if (code !== 0) throw new CheckFailure(`the drained worker exited ${code}, not 0`);
  if (!worker.find(msg("worker stopped"))) throw new CheckFailure("no 'worker stopped' line");
  const started = later.filter((id) => worker.find(forMessage(id, "job started")));
  if (started.length > 0) {
    throw new CheckFailure(`the draining worker started ${started.length} new job(s)`);
  }
  await expectCounts(
    run,
    url,
    { visible: 2, inFlight: 0, delayed: 0 },
    "the finished job's message deleted, the two not started given back",
  );
  return worker;
}

async function checkTree(run: Run): Promise<Worker> {
  const url = await createQueue(run, "tree");
  const leaves = join(run.tmp, "tree-leaves");
  const killed = join(run.tmp, "tree-killed");
  const leaving = await push(run, url, { do: "tree", beat: leaves, stay: false });
  const staying = await push(run, url, { do: "tree", beat: killed, stay: true });
  const worker = startWorker(run, url, [
    "-c",
    "2",
    "-x",
    "8",
    "--kill-grace",
    "1",
    "--backoff",
    "60",
  ]);
  await expectStarted(worker);

  const leftEnd = await worker.waitFor(
    "end of the job that leaves a child behind",
    forMessage(leaving, "job finished", "job failed"),
    40_000,
  );
  if (leftEnd.msg !== "job finished") {
    throw new CheckFailure(`the job that exits at once ended: ${describeEnd(leftEnd)}`);
  }
  await expectStopped(
    run,
    `${leaves}.child`,
    "the child process a job left behind kept running after the job exited",
  );

  const killedEnd = await worker.waitFor(
    "end of the job killed at -x",
    forMessage(staying, "job finished", "job failed"),
    60_000,
  );
  if (!worker.find(jobSaid(staying, "smoke-job tree: child pid"))) {
    throw new CheckFailure("the job was killed before its child started (raise -x?)");
  }
  if (killedEnd.msg !== "job failed" || killedEnd.outcome !== "killed") {
    throw new CheckFailure(`the job running past -x ended: ${describeEnd(killedEnd)}`);
  }
  await expectStopped(run, `${killed}.job`, "the job kept running after its kill at -x");
  await expectStopped(
    run,
    `${killed}.child`,
    "the job's child process kept running after the job's kill at -x",
  );
  await stopWorker(worker);
  return worker;
}

async function checkWorkerDeath(run: Run): Promise<Worker> {
  const url = await createQueue(run, "death");
  const beat = join(run.tmp, "death");
  const id = await push(run, url, { do: "tree", beat, stay: true });
  const worker = startWorker(run, url, ["-c", "1", "-x", "120"]);
  await expectStarted(worker);
  await worker.waitFor("the job's child", jobSaid(id, "smoke-job tree: child pid"), 40_000);
  await expectBeating(run, `${beat}.job`, "the job");
  await expectBeating(run, `${beat}.child`, "the job's child");
  await worker.kill();
  await worker.waitExit(15_000, "the killed worker's exit");
  await expectStopped(
    run,
    `${beat}.job`,
    "the job kept running after its worker died",
  );
  await expectStopped(
    run,
    `${beat}.child`,
    "the job's child process kept running after its worker died",
  );
  return worker;
}

const RUNNERS: Record<CheckName, (run: Run) => Promise<unknown>> = {
  version: checkVersion,
  help: checkHelp,
  "usage-error": checkUsageError,
  exec: checkExec,
  drain: checkDrain,
  tree: checkTree,
  "worker-death": checkWorkerDeath,
};

// ---------------------------------------------------------------------------
// moto

interface Moto {
  url: string;
  stop(): Promise<void>;
}

async function runTool(program: string, args: string[], timeoutMs: number): Promise<void> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(program, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    throw new CheckFailure(`cannot run ${program}: ${oneLine(error)}`);
  }
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
  }, timeoutMs);
  try {
    const output = await child.output();
    if (!output.success) {
      const text = (decoder.decode(output.stdout) + decoder.decode(output.stderr)).trim();
      throw new CheckFailure(
        `${program} ${args.join(" ")} exited ${output.code}: ${
          text.split("\n").slice(-3).join(" | ")
        }`,
      );
    }
  } finally {
    clearTimeout(timer);
  }
}

async function works(program: string): Promise<boolean> {
  try {
    const output = await new Deno.Command(program, {
      args: ["--version"],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).output();
    return output.success;
  } catch {
    return false;
  }
}

function freeLoopbackPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Installs moto into `.cache/smoke/venv` when needed and starts it on a free port. */
async function startMoto(options: SmokeOptions, log: (line: string) => void): Promise<Moto> {
  const venv = join(CACHE_DIR, "smoke", "venv");
  const python = isWindows ? join(venv, "Scripts", "python.exe") : join(venv, "bin", "python");
  const marker = join(venv, ".sqsrun_smoke_installed");
  let installed = false;
  try {
    installed = Deno.readTextFileSync(marker) === MOTO_REQUIREMENT && await works(python);
  } catch { /* not yet */ }
  if (!installed) {
    let base = options.python;
    if (base === undefined) {
      for (const candidate of ["python3", "python"]) {
        if (await works(candidate)) {
          base = candidate;
          break;
        }
      }
    }
    if (base === undefined) {
      throw new CheckFailure("no python3 or python on PATH to install moto with (or --python)");
    }
    log(`installing ${MOTO_REQUIREMENT} into ${venv} with ${base}`);
    await Deno.remove(venv, { recursive: true }).catch(() => {});
    await runTool(base, ["-m", "venv", venv], 180_000);
    await runTool(python, [
      "-m",
      "pip",
      "install",
      "--quiet",
      "--disable-pip-version-check",
      MOTO_REQUIREMENT,
    ], 600_000);
    Deno.writeTextFileSync(marker, MOTO_REQUIREMENT);
  }
  const port = freeLoopbackPort();
  const url = `http://127.0.0.1:${port}`;
  const child = new Deno.Command(python, {
    args: ["-m", "moto.server", "-H", "127.0.0.1", "-p", String(port)],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const tail: string[] = [];
  const keep = (line: string) => {
    tail.push(line);
    if (tail.length > 20) tail.shift();
  };
  const output = Promise.all([readLines(child.stdout, keep), readLines(child.stderr, keep)]);
  let exited: Deno.CommandStatus | undefined;
  const status = child.status.then((status) => exited = status);
  const stop = async () => {
    if (!exited) {
      if (isWindows) {
        // moto's python may be a launcher's child: end the tree we started.
        await runTool("taskkill", ["/T", "/F", "/PID", String(child.pid)], 15_000).catch(() => {});
      }
      try {
        child.kill(isWindows ? "SIGKILL" : "SIGTERM");
      } catch { /* exited */ }
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise((done) => timer = setTimeout(done, 5_000));
    if (await Promise.race([status.then(() => true), late.then(() => false)]) === false) {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
      await Promise.race([status, new Promise((done) => setTimeout(done, 5_000))]);
    }
    clearTimeout(timer);
    await Promise.race([output, new Promise((done) => setTimeout(done, 2_000))]);
  };
  const deadline = Date.now() + 90_000;
  while (!(await answersSqs(url))) {
    if (exited || Date.now() > deadline) {
      await stop();
      throw new CheckFailure(
        `moto ${exited ? `exited (code ${exited.code})` : "did not answer within 90 s"}: ` +
          tail.slice(-3).join(" | "),
      );
    }
    await sleep(200);
  }
  log(`moto at ${url} (pid ${child.pid})`);
  return { url, stop };
}

// ---------------------------------------------------------------------------
// Main

/** Runs the suite; resolves to the names that passed, throws {@linkcode CheckFailure}. */
export async function runSmoke(
  options: SmokeOptions,
  log: (line: string) => void = (line) => console.error(`smoke: ${line}`),
): Promise<string[]> {
  const run = new Run(options, log);
  const passed: string[] = [];
  let moto: Moto | undefined;
  let current: CheckName | "set-up" = "set-up";
  const onSignal = (signal: Deno.Signal) => () => run.interrupted ??= signal;
  const signals: [Deno.Signal, () => void][] = (isWindows ? ["SIGINT"] : ["SIGINT", "SIGTERM"])
    .map((signal) => [signal as Deno.Signal, onSignal(signal as Deno.Signal)]);
  for (const [signal, handler] of signals) Deno.addSignalListener(signal, handler);
  try {
    run.tmp = await Deno.makeTempDir({ prefix: "sqsrun-smoke-" });
    const emptyConfig = join(run.tmp, "empty_aws_config");
    Deno.writeTextFileSync(emptyConfig, "");
    run.env = sqsrunEnv(emptyConfig);
    log(`testing ${options.sqsrun.label} on ${Deno.build.os}/${Deno.build.arch}`);
    if (options.checks.some((name) => NEEDS_SQS.includes(name))) {
      if (options.endpoint) {
        if (!(await answersSqs(options.endpoint, 5_000))) {
          throw new CheckFailure(`the SQS endpoint ${options.endpoint} does not answer`);
        }
        run.endpoint = options.endpoint;
        log(`SQS at ${run.endpoint}`);
      } else {
        moto = await startMoto(options, log);
        run.endpoint = moto.url;
      }
    }
    for (const name of options.checks) {
      current = name;
      run.lastWorker = undefined;
      const started = Date.now();
      await RUNNERS[name](run);
      passed.push(name);
      log(`ok ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
    }
    return passed;
  } catch (error) {
    const context = run.lastWorker;
    if (context && context.lines.length > 0) {
      log(`the worker's last lines:\n${context.tail()}`);
    }
    const reason = error instanceof CheckFailure ? error.message : `unexpected: ${oneLine(error)}`;
    throw new CheckFailure(`${current}: ${reason}`);
  } finally {
    for (const worker of [...run.workers]) await worker.dispose();
    await killBeating(run.beatFiles);
    if (run.endpoint) {
      for (const url of run.queues) {
        await sqsCall(run.endpoint, "DeleteQueue", { QueueUrl: url }).catch(() => {});
      }
    }
    await moto?.stop();
    if (run.tmp) await Deno.remove(run.tmp, { recursive: true }).catch(() => {});
    for (const [signal, handler] of signals) Deno.removeSignalListener(signal, handler);
  }
}

function oneLine(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split("\n")[0];
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

if (import.meta.main) {
  let options: SmokeOptions;
  try {
    options = parseSmokeArgs(Deno.args);
  } catch (error) {
    console.error(`smoke: ${oneLine(error)}`);
    console.error(
      "usage: deno run -A scripts/smoke.ts (--binary PATH | --deno) [--endpoint URL] " +
        `[--only ${CHECKS.join(",")}] [--timeout SEC] [--python PATH]`,
    );
    Deno.exit(2);
  }
  try {
    const passed = await runSmoke(options);
    console.error(`smoke: ${passed.length} passed, 0 failed`);
    Deno.exit(0);
  } catch (error) {
    console.error(`smoke: FAIL ${oneLine(error)}`);
    Deno.exit(1);
  }
}
