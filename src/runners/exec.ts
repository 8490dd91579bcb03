/**
 * `--exec`: one message, one child process in a process group of its own, the body
 * on stdin and every output line in the worker's log.
 *
 * ## How a job starts
 *
 * A worker that dies (SIGKILL, crash, OOM kill) while its jobs start must leave
 * none running, and above all none that runs on an input it did not fully get: a
 * job that succeeds on an empty stdin is worse than a lost one. So, wherever there
 * are process groups (not on Windows):
 *
 * 1. The child is spawned through a gated wrapper (isolation.ts): it makes its
 *    session, then blocks until it reads one go byte from its stdin; the job's
 *    program does not run before.
 * 2. Its group goes to the watchdog (watchdog.ts). On Linux the `+ PGID` line is
 *    written synchronously, before `spawn()`'s caller goes on; elsewhere the go
 *    byte waits until the write of that line resolved.
 * 3. The go byte and the first 4095 bytes of the body go out in one write of at
 *    most PIPE_BUF (4096) bytes, synchronously on Linux (a write end of the child's
 *    stdin opened at /proc/PID/fd/0: the stdin stream writes only once the event
 *    loop turns, and the job would wait that long); the rest through the stream.
 *
 * What that guarantees when the worker dies (measured with Deno 2.9.6 on Linux 6.18):
 *
 * - No job's program runs before the watchdog's pipe holds its group. The watchdog
 *   reads that pipe to its end, so a line in it counts even if the worker died
 *   right after writing it; it then kills the leader's pid and the group.
 * - A worker that dies before a job's go byte: the wrapper reads end-of-file and
 *   exits 125 without running the job's program. No job runs on an input never
 *   written.
 * - A body of up to 4095 bytes is in the pipe, whole, in the same atomic write as
 *   the go byte: such a job either never runs or reads all of its body.
 * - A longer body, or a streamed one (S3), can be cut by the worker's death: the
 *   job then reads end-of-file early. That end-of-file and the kills come from
 *   the same exit of the worker. Its files close only after its memory is torn
 *   down (3-4 ms after a SIGKILL, for a small worker), and the watchdog, woken by
 *   the same close, had SIGKILLed every group 0.05-0.1 ms later (5 jobs, traced).
 *   With the session helper, PR_SET_PDEATHSIG also SIGKILLs the leader when the
 *   worker's main thread exits: measured both 2.8 ms before that end-of-file and
 *   0.6 ms after it, depending on which of the worker's threads exits last. So a
 *   job that reads a cut body has about a tenth of a millisecond (more on an
 *   overloaded machine, where the watchdog waits to be scheduled) before its
 *   SIGKILL; one that must never act on a cut body compares what it read with
 *   SQSRUN_BODY_BYTES (set for every body that is not streamed).
 * - Where the watchdog could not start (no /bin/sh), the session helper's
 *   PR_SET_PDEATHSIG still kills each leader, not what it started.
 *
 * A job that exits without reading a body of up to 4095 bytes costs no failed
 * write: all of it went into the pipe before the job could run.
 *
 * @module
 */
import type { Logger } from "../log.ts";
import { describeError, UsageError } from "../errors.ts";
import type { JobMessage } from "../worker/message.ts";
import { jobEnvironment } from "./process/job_env.ts";
import { streamLines } from "./process/output_lines.ts";
import type { JobInput } from "../sources/source.ts";
import type { JobRunner, RunningJob } from "./runner.ts";
import {
  canOpenChildStdin,
  findExecutable,
  GO_BYTE,
  isolatedCommand,
  type Isolation,
  isolationName,
  writeToChildStdinNow,
} from "./process/isolation.ts";
import { Spawner } from "./process/spawner.ts";
import { type JobGroups, NO_WATCHDOG, startWatchdog } from "./process/watchdog.ts";
import { jobObjectFor } from "./process/windows_job.ts";

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

/** The two signals a job's process group gets: polite, then final. */
export type ProcessSignal = "SIGTERM" | "SIGKILL";

/** How a job's process ended. */
export interface ProcessResult {
  /** Exit code, or null when the process was ended by a signal or never started. */
  code: number | null;
  /** Signal that ended it, if any. */
  signal: string | null;
  /** Why the job failed besides its exit (it could not start, its input broke off). */
  error?: string;
}

/** The process of one message. */
export interface ProcessJob {
  /** The leader of its process group; undefined when it could not start. */
  pid?: number;
  /** Resolves once it exited and its output was read; never rejects. */
  done: Promise<ProcessResult>;
  /** Sends a signal to its whole process group. */
  signal(name: ProcessSignal): void;
}

/** The `--exec` runner, which also starts the process of one message on its own. */
export interface ExecRunner extends JobRunner {
  /** Starts the process of `message`; one that cannot start ends as a failed result, never a throw. */
  start(message: JobMessage, input: JobInput, log: Logger): ProcessJob;
}

/** How long to wait for output still buffered in pipes after the child exited. */
const OUTPUT_DRAIN_MS = 2_000;

const encoder = new TextEncoder();

/** Returns the program and arguments to spawn for `spec`. */
export function commandLine(spec: ExecSpec): { program: string; args: string[] } {
  if (spec.shell) return { program: "sh", args: ["-c", spec.command, "sqsrun", ...spec.args] };
  return { program: spec.command, args: spec.args };
}

/** How the `--exec` runner starts processes. */
export interface ExecRunnerOptions {
  /**
   * Start processes on spawner threads (spawner.ts) rather than the main thread;
   * default: where the watchdog's pipe and the jobs' stdin can be written from
   * another thread (Linux).
   */
  spawner?: boolean;
}

/** Whether jobs can start on spawner threads with every guarantee of the main thread's path. */
function spawnerWorks(isolation: Isolation): boolean {
  return Deno.build.os === "linux" && isolation.kind !== "none" && canOpenChildStdin();
}

/**
 * Returns the runner of `--exec` jobs: one message, one process. Closing it
 * removes what `isolation` installed.
 */
export function execRunner(
  spec: ExecSpec,
  isolation: Isolation,
  options: ExecRunnerOptions = {},
): ExecRunner {
  const programs = new ProgramCache();
  // Started with the first job, whose logger they borrow for their warnings.
  let groups: JobGroups | undefined;
  let spawner: Spawner | undefined;
  const offThread = options.spawner ?? spawnerWorks(isolation);
  const start = (message: JobMessage, input: JobInput, log: Logger): ProcessJob => {
    if (groups === undefined && isolation.kind === "none" && isolation.unavailable) {
      log.warn("no Job Objects: processes a job starts outlive its kill and the worker's death", {
        error: isolation.unavailable,
      });
    }
    groups ??= isolation.kind === "none" ? NO_WATCHDOG : startWatchdog(log);
    const context = { isolation, programs, groups };
    // A streamed body (S3) is read on the main thread, where its source is.
    if (!offThread || input.body instanceof ReadableStream) {
      return startExecJob(message, input, spec, log, context);
    }
    spawner ??= new Spawner(groups.pipePid, log);
    return startSpawnedJob(message, input, spec, log, { ...context, spawner });
  };
  return {
    maxItems: 1,
    details: {
      isolation: isolationName(isolation),
      spawner: offThread ? "thread" : "main",
    },
    start,
    run: ({ items: [item], log }) => processJob(start(item.message, item.input, log)),
    close: async () => {
      spawner?.close();
      await groups?.close();
      if (isolation.kind === "wrapper") isolation.remove();
    },
  };
}

/**
 * A process as a running job: exit code 0 (with its input whole) is its message's
 * success, SIGTERM and SIGKILL to its group are its two stops.
 */
export function processJob(process: ProcessJob): RunningJob {
  return {
    // Read when a line is written: a spawner reports the pid a little later.
    get fields() {
      return { pid: process.pid };
    },
    done: process.done.then(({ code, signal, error }) => ({
      results: [{ succeeded: code === 0 && error === undefined, error }],
      fields: { exit_code: code, signal },
    })),
    stop: (mode) => process.signal(mode === "polite" ? "SIGTERM" : "SIGKILL"),
  };
}

/**
 * Fails at start-up (UsageError) when `command` is neither an executable path nor
 * found on PATH: a job that cannot start would fail every message it gets.
 */
export function assertExecutable(command: string): void {
  if (findExecutable(command, Deno.env.get("PATH") ?? "") !== undefined) return;
  if (command.includes("/") && existsAtAll(command)) {
    throw new UsageError(`--exec: '${command}' is not an executable file`);
  }
  throw new UsageError(
    `--exec: program '${command}' not found (give a path, or --shell for a command line)`,
  );
}

function existsAtAll(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** What an exec job shares with the others of its worker. */
export interface ExecContext {
  isolation: Isolation;
  /** Where programs were found; default: a new cache. */
  programs?: ProgramCache;
  /** The watchdog that kills the job's group if the worker dies; default: none. */
  groups?: JobGroups;
}

/**
 * Remembers where programs were found, per search path: a wrapper that execs the
 * job without a PATH search (the session helper) needs the full path, and looking
 * it up for every job would cost a few stat calls each. Only hits are kept, so a
 * program installed later is found.
 */
export class ProgramCache {
  #found = new Map<string, string>();

  /** Returns the path `program` runs from under `searchPath`, or undefined if there is none. */
  find(program: string, searchPath: string): string | undefined {
    const key = `${searchPath}\0${program}`;
    const cached = this.#found.get(key);
    if (cached !== undefined) return cached;
    const found = findExecutable(program, searchPath);
    if (found !== undefined) this.#found.set(key, found);
    return found;
  }
}

/** A job ready to spawn, or why it cannot start. */
type Launch =
  | {
    /** The job's program, as the operator named it. */
    program: string;
    /** What is spawned: the program, or its isolation wrapper. */
    spawnProgram: string;
    spawnArgs: string[];
    env: Record<string, string>;
    body: Uint8Array | ReadableStream<Uint8Array>;
    isolation: Isolation;
  }
  | { failure: string };

/** Works out what to spawn for `message`, shared by both ways a job starts. */
function prepareLaunch(
  message: JobMessage,
  input: JobInput,
  spec: ExecSpec,
  context: ExecContext,
): Launch {
  const { isolation, programs = new ProgramCache() } = context;
  const { program, args } = commandLine(spec);
  const env = jobEnvironment(message, { ...spec.env, ...input.env });
  // Encoded once: what stdin gets, and its length, which lets a job tell a whole
  // body from one cut short (its worker died while writing it).
  const body = typeof input.body === "string" ? encoder.encode(input.body) : input.body;
  if (body instanceof Uint8Array) env.SQSRUN_BODY_BYTES = String(body.length);
  // A new session makes the child a process-group leader, so one signal to the
  // group reaches every process the job started.
  let spawnProgram = program;
  let spawnArgs = args;
  if (isolation.kind !== "none") {
    const path = programs.find(program, env.PATH ?? Deno.env.get("PATH") ?? "");
    if (path === undefined) return { failure: `cannot start ${program}: no such executable file` };
    ({ program: spawnProgram, args: spawnArgs } = isolatedCommand(isolation, path, args));
  }
  return { program, spawnProgram, spawnArgs, env, body, isolation };
}

function failedJob(failure: string): ProcessJob {
  return {
    pid: undefined,
    done: Promise.resolve({ code: null, signal: null, error: failure }),
    signal: () => {},
  };
}

/**
 * Splits a gated job's input into its first write (the go byte and as much of
 * the body as fits in one atomic write) and the rest; an ungated job's input is
 * all rest.
 */
function splitInput<Body extends Uint8Array | ReadableStream<Uint8Array>>(
  body: Body,
  gated: boolean,
): { first: Uint8Array | undefined; rest: Body | Uint8Array } {
  if (!gated) return { first: undefined, rest: body };
  const head = body instanceof Uint8Array ? body.subarray(0, ATOMIC_WRITE_BYTES - 1) : EMPTY;
  const first = new Uint8Array(head.length + 1);
  first[0] = GO_BYTE;
  first.set(head, 1);
  return { first, rest: body instanceof Uint8Array ? body.subarray(head.length) : body };
}

/**
 * Starts the job for `message` on a spawner thread (spawner.ts), for a body in
 * memory: the same steps in the same order as {@linkcode startExecJob}, there.
 */
export function startSpawnedJob(
  message: JobMessage,
  input: JobInput,
  spec: ExecSpec,
  log: Logger,
  context: ExecContext & { spawner: Spawner },
): ProcessJob {
  const { groups = NO_WATCHDOG, spawner } = context;
  const launch = prepareLaunch(message, input, spec, context);
  if ("failure" in launch) return failedJob(launch.failure);
  const { spawnProgram, spawnArgs, env, body, isolation } = launch;
  if (!(body instanceof Uint8Array)) throw new TypeError("a spawner takes bodies in memory");
  const grouped = isolation.kind !== "none";
  const { first, rest } = splitInput(body, grouped && isolation.gated);
  const spawned = spawner.spawn({
    program: spawnProgram,
    args: spawnArgs,
    env,
    detached: isolation.kind === "detached",
    grouped,
    first,
    rest: rest as Uint8Array,
  }, { log });
  return {
    get pid() {
      return spawned.pid;
    },
    done: spawned.done.then((exit) => {
      if (grouped && spawned.pid !== undefined) groups.remove(spawned.pid);
      return { code: exit.code, signal: exit.signal, error: exit.error };
    }),
    signal: (name) => spawned.signal(name),
  };
}

/** Starts the job for `message`; a child that cannot be spawned ends as a failed job. */
export function startExecJob(
  message: JobMessage,
  input: JobInput,
  spec: ExecSpec,
  log: Logger,
  context: ExecContext,
): ProcessJob {
  const { groups = NO_WATCHDOG } = context;
  const launch = prepareLaunch(message, input, spec, context);
  if ("failure" in launch) return failedJob(launch.failure);
  const { program, spawnProgram, spawnArgs, env, body, isolation } = launch;
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(spawnProgram, {
      args: spawnArgs,
      env,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      detached: isolation.kind === "detached",
    }).spawn();
  } catch (error) {
    return failedJob(`cannot start ${program}: ${describeError(error)}`);
  }

  const pid = child.pid;
  // Windows: the job's processes go into a Job Object of their own, right away
  // (see windows_job.ts for what may start before).
  const tree = isolation.kind === "none" && isolation.jobObjects
    ? jobObjectFor(pid, (error) => {
      log.warn("the job is not in a Job Object: processes it starts may outlive it", { error });
    })
    : undefined;
  const grouped = isolation.kind !== "none";
  // The job's program waits for its go byte, written once the watchdog's pipe
  // holds the group's `+` line (see the module's comment).
  const covered = grouped ? groups.add(pid) : undefined;
  const gated = isolation.kind !== "none" && isolation.gated;
  let exited = false;
  const signal = (name: ProcessSignal) => {
    if (exited && name !== "SIGKILL") return;
    try {
      // Windows has no polite signal for a console program: both end the whole tree.
      if (isolation.kind === "none") {
        if (!tree?.kill()) child.kill(name);
      } else Deno.kill(-pid, name);
    } catch {
      // The group is gone, or not there yet: a wrapper that has not made its
      // session yet is signalled itself (through the child's handle, which
      // refuses once Deno reaped it and the pid may name another process).
      if (grouped && !exited) {
        try {
          child.kill(name);
        } catch {
          // Gone.
        }
      }
    }
  };

  // The go byte goes out with the head of the body, written at once where it can
  // be (see the module's comment); the rest flows through the stdin stream.
  let { first, rest } = splitInput(body, gated);
  if (first && covered === undefined) {
    const written = writeToChildStdinNow(pid, first);
    first = written === first.length ? undefined : first.subarray(written);
  }

  // An input that breaks off (an S3 download cut short) must fail the job: the
  // child may well exit 0 on a truncated stdin, and its message must not be deleted.
  let inputError: string | undefined;
  writeBody(child.stdin, rest, { covered, first }, log).then((error) => {
    if (error === undefined) return;
    inputError = `the job's input broke off: ${error}`;
    log.warn("the job's input broke off; failing the job", { error });
    signal("SIGTERM");
  });
  const output = Promise.all([
    streamLines(child.stdout, (line) => log.info(line, { stream: "stdout" }), log.outputRoom),
    streamLines(child.stderr, (line) => log.info(line, { stream: "stderr" }), log.outputRoom),
  ]);

  const done = child.status.then(async (status): Promise<ProcessResult> => {
    exited = true;
    // The job is over when its leader exits: whatever it left running goes too.
    signal("SIGKILL");
    tree?.close();
    if (grouped) groups.remove(pid);
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
 * PIPE_BUF: a write of up to this many bytes to a pipe with room for them goes in
 * whole or not at all, and a new pipe (one page at the least) has room for them.
 */
const ATOMIC_WRITE_BYTES = 4096;
const EMPTY = new Uint8Array(0);

/**
 * Writes the job's input to its stdin: once `covered` resolved (the watchdog knows
 * the job), `first` (the go byte and the head of the body, when they could not be
 * written at once), then `body`. Resolves to a description of a failure of the
 * input itself, or undefined when all of it was written or the job stopped
 * reading (which is the job's business, not an error).
 */
async function writeBody(
  stdin: WritableStream<Uint8Array>,
  body: Uint8Array | ReadableStream<Uint8Array>,
  start: { covered: Promise<void> | undefined; first: Uint8Array | undefined },
  log: Logger,
): Promise<string | undefined> {
  const writer = stdin.getWriter();
  const stoppedReading = (error: unknown) => {
    log.debug("job did not read all of its stdin", { error: describeError(error) });
    writer.abort().catch(() => {});
  };
  if (start.covered) await start.covered;
  if (body instanceof Uint8Array) {
    try {
      if (start.first) await writer.write(start.first);
      if (body.length) await writer.write(body);
      await writer.close();
    } catch (error) {
      stoppedReading(error);
    }
    return undefined;
  }
  // Streamed input (an S3 object) flows chunk by chunk with back-pressure, never
  // whole in memory; a read failure and a write failure mean different things.
  const reader = body.getReader();
  if (start.first) {
    try {
      await writer.write(start.first);
    } catch (error) {
      stoppedReading(error);
      await reader.cancel().catch(() => {});
      return undefined;
    }
  }
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
