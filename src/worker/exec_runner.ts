/**
 * `--exec`: one message, one child process in a process group of its own, the body
 * on stdin and every output line in the worker's log.
 *
 * @module
 */
import type { Logger } from "../log.ts";
import { describeError } from "../errors.ts";
import type { JobMessage } from "./message.ts";
import { jobEnvironment } from "./message.ts";
import type { JobHandle, JobResult, KillSignal } from "./job.ts";
import type { JobInput, JobRunner } from "./runner.ts";

/** What `--exec` runs. */
export interface ExecSpec {
  /** Program path (or, with `shell`, a shell command line). */
  command: string;
  /** ARGV given after `--`. */
  args: string[];
  /** Run `command` through `sh -c`. */
  shell: boolean;
  /** `--env` pairs. */
  env: Record<string, string>;
}

/** Longest piece of output logged as one line; longer lines are split. */
const MAX_LINE_BYTES = 16 * 1024;
/** How long to wait for output still buffered in pipes after the child exited. */
const OUTPUT_DRAIN_MS = 2_000;

const isWindows = Deno.build.os === "windows";
const encoder = new TextEncoder();

/** Returns the program and arguments to spawn for `spec`. */
export function commandLine(spec: ExecSpec): { program: string; args: string[] } {
  if (spec.shell) return { program: "sh", args: ["-c", spec.command, "sqsrun", ...spec.args] };
  return { program: spec.command, args: spec.args };
}

/** Where a `setsid` program is commonly installed (util-linux, busybox). */
const SETSID_PATHS = ["/usr/bin/setsid", "/bin/setsid", "/usr/sbin/setsid", "/sbin/setsid"];

/**
 * Returns the path of `setsid`, if this system has one. Deno's `detached` spawn
 * has to fork the whole worker to call setsid() in the child, which blocks the
 * event loop for milliseconds per job once the worker is large; spawning the
 * small `setsid` program, which makes itself a session leader and then execs
 * the job, uses the fast spawn path with the same result.
 */
export function findSetsid(): string | undefined {
  if (isWindows) return undefined;
  for (const path of SETSID_PATHS) {
    try {
      const info = Deno.statSync(path);
      if (info.isFile && (info.mode === null || (info.mode & 0o111) !== 0)) return path;
    } catch {
      // Not there; try the next place.
    }
  }
  return undefined;
}

/** How a job's child gets a process group of its own. */
export type Isolation = { kind: "setsid"; path: string } | { kind: "detached" } | { kind: "none" };

/**
 * Chooses the isolation for this system: `setsid` if present and it runs a job
 * in place (it must exec, not fork and return at once), else a detached spawn.
 */
export async function detectIsolation(): Promise<Isolation> {
  if (isWindows) return { kind: "none" };
  const path = findSetsid();
  if (!path) return { kind: "detached" };
  try {
    const probe = await new Deno.Command(path, {
      args: ["--", "/bin/sh", "-c", "exit 7"],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).output();
    if (probe.code === 7) return { kind: "setsid", path };
  } catch {
    // An unusable setsid: fall through.
  }
  return { kind: "detached" };
}

/** Returns the runner of `--exec` jobs. */
export function execRunner(spec: ExecSpec, isolation: Isolation): JobRunner {
  return {
    start: (message, input, log) => startExecJob(message, input, spec, log, isolation),
    close: () => Promise.resolve(),
  };
}

/** Starts the job for `message`; a child that cannot be spawned ends as a failed job. */
export function startExecJob(
  message: JobMessage,
  input: JobInput,
  spec: ExecSpec,
  log: Logger,
  isolation: Isolation,
): JobHandle {
  const { program, args } = commandLine(spec);
  // A new session makes the child a process-group leader, so one signal to the
  // group reaches every process the job started.
  const [spawnProgram, spawnArgs] = isolation.kind === "setsid"
    ? [isolation.path, ["--", program, ...args]]
    : [program, args];
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(spawnProgram, {
      args: spawnArgs,
      env: jobEnvironment(message, { ...spec.env, ...input.env }),
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      detached: isolation.kind === "detached",
    }).spawn();
  } catch (error) {
    const failure = `cannot start ${program}: ${describeError(error)}`;
    return {
      pid: undefined,
      done: Promise.resolve({ code: null, signal: null, error: failure }),
      signal: () => {},
    };
  }

  const pid = child.pid;
  let exited = false;
  const signal = (name: KillSignal) => {
    if (exited && name !== "SIGKILL") return;
    try {
      if (isolation.kind === "none") child.kill(name);
      else Deno.kill(-pid, name);
    } catch {
      // The group is already gone.
    }
  };

  // An input that breaks off (an S3 download cut short) must fail the job: the
  // child may well exit 0 on a truncated stdin, and its message must not be deleted.
  let inputError: string | undefined;
  writeBody(child.stdin, input.body, log).then((error) => {
    if (error === undefined) return;
    inputError = `the job's input broke off: ${error}`;
    log.warn("the job's input broke off; failing the job", { error });
    signal("SIGTERM");
  });
  const output = Promise.all([
    streamLines(child.stdout, (line) => log.info(line, { stream: "stdout" })),
    streamLines(child.stderr, (line) => log.info(line, { stream: "stderr" })),
  ]);

  const done = child.status.then(async (status): Promise<JobResult> => {
    exited = true;
    // The job is over when its leader exits: whatever it left running goes too.
    signal("SIGKILL");
    let drainTimer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      output,
      new Promise((resolve) => drainTimer = setTimeout(resolve, OUTPUT_DRAIN_MS)),
    ]);
    clearTimeout(drainTimer);
    return {
      code: status.signal ? null : status.code,
      signal: status.signal ?? null,
      error: inputError,
    };
  });
  return { pid, done, signal };
}

/**
 * Writes the job's input to its stdin. Resolves to a description of a failure of
 * the input itself, or undefined when all of it was written or the job stopped
 * reading (which is the job's business, not an error).
 */
async function writeBody(
  stdin: WritableStream<Uint8Array>,
  body: string | ReadableStream<Uint8Array>,
  log: Logger,
): Promise<string | undefined> {
  const writer = stdin.getWriter();
  const stoppedReading = (error: unknown) => {
    log.debug("job did not read all of its stdin", { error: describeError(error) });
    writer.abort().catch(() => {});
  };
  if (typeof body === "string") {
    try {
      await writer.write(encoder.encode(body));
      await writer.close();
    } catch (error) {
      stoppedReading(error);
    }
    return undefined;
  }
  // Streamed input (an S3 object) flows chunk by chunk with back-pressure, never
  // whole in memory; a read failure and a write failure mean different things.
  const reader = body.getReader();
  for (;;) {
    let chunk: ReadableStreamReadResult<Uint8Array>;
    try {
      chunk = await reader.read();
    } catch (error) {
      writer.abort().catch(() => {});
      return describeError(error);
    }
    try {
      if (chunk.done) {
        await writer.close();
        return undefined;
      }
      await writer.write(chunk.value);
    } catch (error) {
      stoppedReading(error);
      await reader.cancel().catch(() => {});
      return undefined;
    }
  }
}

/** Reads `stream` and calls `emit` per line (split at MAX_LINE_BYTES), without keeping it whole. */
export async function streamLines(
  stream: ReadableStream<Uint8Array>,
  emit: (line: string) => void,
): Promise<void> {
  const decoder = new TextDecoder();
  const emitBytes = (bytes: Uint8Array) => {
    const text = decoder.decode(bytes);
    emit(text.endsWith("\r") ? text.slice(0, -1) : text);
  };
  // Emits the longest head of `data` under the limit that ends on a character boundary.
  const emitPiece = (data: Uint8Array): Uint8Array => {
    let cut = MAX_LINE_BYTES;
    while (cut > 0 && (data[cut] & 0xc0) === 0x80) cut--;
    if (cut === 0) cut = MAX_LINE_BYTES;
    emitBytes(data.subarray(0, cut));
    return data.subarray(cut);
  };
  let pending: Uint8Array = new Uint8Array(0);
  try {
    for await (const chunk of stream) {
      let data = pending.length ? concat(pending, chunk) : chunk;
      let newline = data.indexOf(10);
      while (newline !== -1) {
        let line = data.subarray(0, newline);
        while (line.length > MAX_LINE_BYTES) line = emitPiece(line);
        emitBytes(line);
        data = data.subarray(newline + 1);
        newline = data.indexOf(10);
      }
      // A line without an end yet is cut too, so one endless line cannot grow memory.
      while (data.length > MAX_LINE_BYTES) data = emitPiece(data);
      pending = data.slice();
    }
  } catch {
    // The pipe broke; what was read has been logged.
  }
  while (pending.length > MAX_LINE_BYTES) pending = emitPiece(pending);
  if (pending.length) emitBytes(pending);
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const joined = new Uint8Array(a.length + b.length);
  joined.set(a);
  joined.set(b, a.length);
  return joined;
}
