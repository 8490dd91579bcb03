/**
 * `-d/--daemon PIDFILE`: run the worker in the background.
 *
 * The process started by the user (the parent) starts sqsrun again, detached in a
 * new session with no stdin/stdout/stderr, marked as the daemon by an environment
 * variable that names a start-up status file. The daemon checks what can fail at
 * start-up (the log file, the pid file, the job), writes the pid file, says
 * `started PID` in the status file and runs the worker; the parent waits for that
 * (or for the daemon's one-line reason, or its death), prints the pid and exits.
 *
 *     sqsrun -d x.pid ... ──spawn──> sqsrun (daemon) ── log, pid file, job ok? ──> worker
 *             │  prints PID <── status file: "started PID" | "error CODE reason" ─┘
 *
 * Works the same under `deno run` and in a compiled binary: only the command line
 * that starts the daemon differs ({@linkcode daemonCommand}).
 *
 * @module
 */
import { dirname, join } from "node:path";
import type { Options } from "./config.ts";
import {
  describeError,
  describeFsError,
  EXIT_RUNTIME,
  RuntimeError,
  UsageError,
} from "./errors.ts";
import { createLogger } from "./log.ts";
import { runtimeFlags } from "./permissions.ts";

/**
 * Marks the re-spawned daemon; its value is the path of the start-up status file.
 * Removed from the daemon's environment at once, so jobs never inherit it.
 */
export const DAEMON_ENV = "SQSRUN_DAEMON_STATUS";

/** How long the parent waits for the daemon to start (load its module, write its pid file). */
export const DEFAULT_START_TIMEOUT_MS = 90_000;

/** What the daemon needs from the worker. */
export interface DaemonHooks {
  /** Runs the worker in the foreground; the daemon calls it with `daemon` unset and `log` set. */
  run(options: Options): Promise<number>;
  /** Throws (UsageError) when the job cannot run: a missing program, a module that does not load. */
  check(options: Options): Promise<void>;
  /** Where the parent prints the daemon's pid; default stdout. */
  print?: (line: string) => void;
  /** Parent's bound on the daemon's start-up; default {@linkcode DEFAULT_START_TIMEOUT_MS}. */
  startTimeoutMs?: number;
}

/**
 * Runs `-d/--daemon`: in the user's process, starts the daemon and resolves to 0
 * once it runs; in the daemon itself, runs the worker. Throws UsageError or
 * RuntimeError (one line) when the daemon cannot start.
 */
export async function runDaemon(options: Options, hooks: DaemonHooks): Promise<number> {
  if (Deno.build.os === "windows") {
    throw new UsageError("-d/--daemon is not supported on Windows; run sqsrun as a service");
  }
  const statusPath = Deno.env.get(DAEMON_ENV);
  if (statusPath === undefined) return await startDaemon(options, hooks);
  Deno.env.delete(DAEMON_ENV);
  return await runAsDaemon(options, statusPath, hooks);
}

/** The daemon's log file: `-o/--log`, else the pid file's path with `.log` for `.pid`. */
export function daemonLogPath(pidPath: string, log?: string): string {
  if (log) return log;
  return pidPath.endsWith(".pid") ? `${pidPath.slice(0, -4)}.log` : `${pidPath}.log`;
}

/**
 * The command line that starts sqsrun again as the daemon: the binary itself with
 * the same arguments, or under `deno run` the same permissions and main module.
 */
export function daemonCommand(): { program: string; args: string[] } {
  if (Deno.build.standalone) return { program: Deno.execPath(), args: [...Deno.args] };
  return {
    program: Deno.execPath(),
    args: ["run", ...runtimeFlags(), Deno.mainModule, ...Deno.args],
  };
}

// ---------------------------------------------------------------------------
// The user's process

async function startDaemon(options: Options, hooks: DaemonHooks): Promise<number> {
  const pidPath = options.daemon!;
  const logPath = daemonLogPath(pidPath, options.log);
  // Fails fast, before anything is started; the daemon checks again under its lock.
  const holder = await readPidFile(pidPath);
  if (holder !== undefined && processAlive(holder)) throw alreadyRunning(pidPath, holder);

  const statusPath = await Deno.makeTempFile({ prefix: "sqsrun-daemon-", suffix: ".status" });
  try {
    const { program, args } = daemonCommand();
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(program, {
        args,
        env: { [DAEMON_ENV]: statusPath },
        stdin: "null",
        stdout: "null",
        stderr: "null",
        // A new session: no controlling terminal, and the user's shell exiting or its
        // Ctrl-C (sent to the foreground process group) never reaches the daemon.
        detached: true,
      }).spawn();
    } catch (error) {
      throw new RuntimeError(`cannot start the daemon: ${describeError(error)}`);
    }
    let exited: Deno.CommandStatus | undefined;
    void child.status.then((status) => exited = status);

    const deadline = Date.now() + (hooks.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS);
    for (;;) {
      const status = await readStatus(statusPath);
      if (status?.kind === "started") {
        (hooks.print ?? printLine)(String(status.pid));
        child.unref();
        return 0;
      }
      if (status?.kind === "error") {
        await Promise.race([child.status, delay(5_000)]);
        throw status.code === 2 ? new UsageError(status.reason) : new RuntimeError(status.reason);
      }
      if (exited) {
        const reason = await lastLoggedError(logPath);
        throw new RuntimeError(
          `the daemon exited with code ${exited.code} before it started` +
            (reason ? `: ${reason}` : `; see ${logPath}`),
        );
      }
      if (Date.now() > deadline) {
        try {
          Deno.kill(-child.pid, "SIGTERM");
        } catch { /* already gone */ }
        throw new RuntimeError(
          `the daemon did not start within ${
            Math.round((hooks.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS) / 1000)
          } s and was stopped; see ${logPath}`,
        );
      }
      await delay(50);
    }
  } finally {
    await Deno.remove(statusPath).catch(() => {});
  }
}

type StartStatus =
  | { kind: "started"; pid: number }
  | { kind: "error"; code: number; reason: string };

async function readStatus(path: string): Promise<StartStatus | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch {
    return undefined;
  }
  // Written in one rename by the daemon, so a line is either whole or absent.
  const started = /^started (\d+)\n/.exec(text);
  if (started) return { kind: "started", pid: Number(started[1]) };
  const error = /^error (\d+) (.*)\n/.exec(text);
  if (error) return { kind: "error", code: Number(error[1]), reason: error[2] };
  return undefined;
}

/** The last error line the daemon logged (JSON or text format), as one line. */
async function lastLoggedError(logPath: string): Promise<string | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(logPath);
  } catch {
    return undefined;
  }
  const lines = text.split("\n").filter((line) => line.trim()).slice(-50).reverse();
  for (const line of lines) {
    try {
      const entry = JSON.parse(line);
      if (entry.level === "error") return [entry.msg, entry.error].filter(Boolean).join(": ");
    } catch {
      if (/^\S+ ERROR /.test(line)) return line.replace(/^\S+ ERROR\s+/, "");
    }
  }
  return undefined;
}

function printLine(line: string): void {
  const data = new TextEncoder().encode(`${line}\n`);
  let offset = 0;
  while (offset < data.length) offset += Deno.stdout.writeSync(data.subarray(offset));
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------------------
// The daemon

async function runAsDaemon(
  options: Options,
  statusPath: string,
  hooks: DaemonHooks,
): Promise<number> {
  const pidPath = options.daemon!;
  const logPath = daemonLogPath(pidPath, options.log);
  const foreground: Options = { ...options, daemon: undefined, log: logPath };
  let ownsPidFile = false;
  const release = () => {
    if (ownsPidFile) releasePidFileSync(pidPath);
    ownsPidFile = false;
  };
  // Deno.exit() (main's last step, or a last-resort handler) still removes the pid file.
  globalThis.addEventListener("unload", release);
  try {
    try {
      Deno.openSync(logPath, { append: true, create: true, mode: 0o640 }).close();
    } catch (error) {
      throw new RuntimeError(`cannot open the log file '${logPath}': ${describeFsError(error)}`);
    }
    await acquirePidFile(pidPath);
    ownsPidFile = true;
    await hooks.check(foreground);
    await writeStatus(statusPath, `started ${Deno.pid}\n`);
  } catch (error) {
    release();
    const code = error instanceof UsageError ? 2 : EXIT_RUNTIME;
    await writeStatus(statusPath, `error ${code} ${describeError(error)}\n`).catch(() => {});
    throw error;
  }
  try {
    return await hooks.run(foreground);
  } catch (error) {
    // Nobody reads the daemon's stderr: the reason it stopped goes to its log.
    const log = createLogger({ path: logPath, format: options.logFormat, level: "error" });
    log.error("worker stopped by an error", { error: describeError(error) });
    await log.close();
    throw error;
  } finally {
    release();
    globalThis.removeEventListener("unload", release);
  }
}

/** Writes the status file in one step (temp file + rename), so the parent never reads half. */
async function writeStatus(path: string, text: string): Promise<void> {
  const temp = `${path}.${Deno.pid}.tmp`;
  await Deno.writeTextFile(temp, text, { mode: 0o600 });
  await Deno.rename(temp, path);
}

// ---------------------------------------------------------------------------
// Pid files

function alreadyRunning(path: string, pid: number | undefined): RuntimeError {
  return new RuntimeError(
    `pid file '${path}' names running process ${pid ?? "(unreadable)"}: is sqsrun already ` +
      "running? (stop it, or use another pid file)",
  );
}

/** The pid in a pid file, or undefined when there is none or it holds no pid. */
export async function readPidFile(path: string): Promise<number | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw new RuntimeError(`cannot read pid file '${path}': ${describeFsError(error)}`);
  }
  const pid = Number(text.trim());
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

/**
 * True while `pid` names a live process. On Linux /proc tells without sending a
 * signal, and a zombie (exited, not yet reaped) counts as gone; elsewhere a
 * harmless SIGCONT probes it.
 */
export function processAlive(pid: number): boolean {
  if (Deno.build.os === "linux") {
    try {
      const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
      const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
      return state !== "Z" && state !== "X";
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return false;
      // No /proc (a container without it): fall through to the signal probe.
    }
  }
  try {
    Deno.kill(pid, "SIGCONT");
    return true;
  } catch (error) {
    // EPERM: it exists but belongs to someone else.
    return error instanceof Deno.errors.PermissionDenied;
  }
}

/**
 * True when live process `pid` looks like sqsrun by its command line: a pid file
 * of an older sqsrun holds no lock, and a live pid alone may be another program's
 * after a reboot. Without /proc, a live pid is taken as sqsrun.
 */
export function looksLikeSqsrun(pid: number): boolean {
  if (!processAlive(pid)) return false;
  let cmdline: string;
  try {
    cmdline = Deno.readTextFileSync(`/proc/${pid}/cmdline`);
  } catch (error) {
    return !(error instanceof Deno.errors.NotFound) && Deno.build.os !== "linux";
  }
  return /sqsrun/i.test(cmdline.replaceAll("\0", " "));
}

/** Pid files this process holds, with the open file that holds the lock. */
const heldPidFiles = new Map<string, { file: Deno.FsFile; pid: number }>();

/**
 * Writes this process's pid into `path` atomically and holds an exclusive lock on
 * it for as long as this process lives: a temporary file, locked, then
 * hard-linked into place, which fails if the pid file exists, so two daemons
 * starting at once cannot both win. An existing pid file is in use while its lock
 * is held (the kernel drops it with its holder, however that died); an unlocked
 * one is stale and replaced, unless it names a live process that looks like an
 * older sqsrun (which held no lock). A reused pid after a reboot does not block.
 */
export async function acquirePidFile(path: string, pid: number = Deno.pid): Promise<void> {
  const temp = join(dirname(path), `.${path.split("/").pop()}.${pid}.tmp`);
  let file: Deno.FsFile;
  try {
    file = await Deno.open(temp, { write: true, create: true, truncate: true, mode: 0o644 });
    await file.write(new TextEncoder().encode(`${pid}\n`));
    await file.lock(true);
  } catch (error) {
    throw new RuntimeError(`cannot write pid file '${path}': ${describeFsError(error)}`);
  }
  let linked = false;
  try {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        await Deno.link(temp, path);
        linked = true;
        heldPidFiles.set(path, { file, pid });
        return;
      } catch (error) {
        if (!(error instanceof Deno.errors.AlreadyExists)) {
          throw new RuntimeError(`cannot write pid file '${path}': ${describeFsError(error)}`);
        }
      }
      const holder = await readPidFile(path);
      if (
        await pidFileLocked(path) ||
        (holder !== undefined && holder !== pid && looksLikeSqsrun(holder))
      ) {
        throw alreadyRunning(path, holder);
      }
      // Stale: remove it and link again (a racing daemon may win; the loop sees it).
      await Deno.remove(path).catch(() => {});
    }
    throw new RuntimeError(`cannot write pid file '${path}': it keeps changing`);
  } finally {
    await Deno.remove(temp).catch(() => {});
    if (!linked) file.close();
  }
}

/** True while some process holds the lock of the pid file at `path`. */
async function pidFileLocked(path: string): Promise<boolean> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch {
    return false;
  }
  try {
    if (!await file.tryLock(true)) return true;
    await file.unlock();
    return false;
  } catch {
    // A file system without locks: the pid and its command line decide.
    return false;
  } finally {
    file.close();
  }
}

/** Removes the pid file if it still holds this process's pid (never another daemon's). */
export function releasePidFileSync(path: string, pid: number = Deno.pid): void {
  try {
    if (Number(Deno.readTextFileSync(path).trim()) === pid) Deno.removeSync(path);
  } catch {
    // Already gone, or unreadable: nothing of ours to remove.
  }
  const held = heldPidFiles.get(path);
  if (held?.pid === pid) {
    heldPidFiles.delete(path);
    try {
      held.file.close();
    } catch { /* already closed */ }
  }
}
