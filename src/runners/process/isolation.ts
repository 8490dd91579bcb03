/**
 * How a job's child gets a session (and so a process group) of its own, so that
 * one signal to the group reaches every process the job started. Chosen once at
 * start-up, fastest first: the session helper, util-linux `setsid`, then Deno's
 * `detached` spawn, each kept only if a probe shows it really makes a session leader.
 * Windows has no sessions of that kind: there each job's processes go into a Job
 * Object of their own instead (windows_job.ts), if one can be made (`job-object`).
 *
 * Every choice but Windows' is gated: the job's program does not run until the
 * worker writes one "go" byte ({@linkcode GO_BYTE}) to its stdin, which it does
 * once the job's group is known to the watchdog (see exec.ts). A wrapper
 * whose stdin ends before the go byte (the worker died first) exits
 * {@linkcode NO_GO_STATUS} without running anything. The session helper waits by
 * itself; `setsid` and a `detached` spawn run the program through
 * {@linkcode SH_GATE}, a `sh` that reads the go line and execs it (about 0.5 ms of
 * CPU more per job, on systems that have no helper anyway). Without `/bin/sh`
 * (then there is no watchdog either) they run ungated.
 *
 * @module
 */
import { installSessionHelper } from "./session_helper.ts";
import { jobObjectsUnavailable } from "./windows_job.ts";

const isWindows = Deno.build.os === "windows";

/** Where a `setsid` program is commonly installed (util-linux, busybox). */
const SETSID_PATHS = ["/usr/bin/setsid", "/bin/setsid", "/usr/sbin/setsid", "/sbin/setsid"];

/**
 * The byte a gated wrapper reads from the job's stdin before it runs the job's
 * program: a newline, which `sh`'s `read` takes as one empty line.
 */
export const GO_BYTE = 0x0a;

/** Exit status of a gated wrapper whose stdin ended before the go byte: the program never ran. */
export const NO_GO_STATUS = 125;

/**
 * The gate of the wrappers that cannot wait by themselves, followed by the job's
 * program and arguments. `sh` reads a pipe one byte at a time (it must not take
 * input meant for the program it execs), so `read` consumes exactly the go line
 * and the program reads its body untouched.
 */
export const SH_GATE = [
  "/bin/sh",
  "-c",
  `read -r go || exit ${NO_GO_STATUS}; exec "$@"`,
  "sqsrun-gate",
];

/** How a job's child gets a process group of its own. */
export type Isolation =
  | {
    /** A program that makes itself a session leader, then execs `PROGRAM ARGS...`. */
    kind: "wrapper";
    /** What it is, for the start-up log. */
    name: "session-helper" | "setsid";
    path: string;
    /** Arguments before the job's program (`--` for setsid, then the gate). */
    prefix: string[];
    /** The program runs only after the go byte (false: setsid without /bin/sh). */
    gated: boolean;
    /** Removes what start-up installed (the helper's directory). */
    remove(): void;
  }
  /**
   * Deno forks the worker and calls setsid() in the child (slower: copies the
   * worker's page tables); `prefix` is the gate, or empty without /bin/sh.
   */
  | { kind: "detached"; prefix: string[]; gated: boolean }
  /**
   * Windows: no process groups to speak of. With `jobObjects`, each job's
   * processes go into a Job Object of their own (windows_job.ts), which ends
   * them all; without, only the job's own process is ended, and `unavailable`
   * says why.
   */
  | { kind: "none"; jobObjects?: boolean; unavailable?: string };

/** The isolation's name in the start-up log: `session-helper`, `setsid`, `detached`, `job-object`, `none`. */
export function isolationName(isolation: Isolation): string {
  if (isolation.kind === "wrapper") return isolation.name;
  if (isolation.kind === "none" && isolation.jobObjects) return "job-object";
  return isolation.kind;
}

/**
 * Returns what to spawn to run the program at `path` (as findExecutable found it)
 * with `args` in a session of its own.
 */
export function isolatedCommand(
  isolation: Exclude<Isolation, { kind: "none" }>,
  path: string,
  args: string[],
): { program: string; args: string[] } {
  if (isolation.kind === "wrapper") {
    return { program: isolation.path, args: [...isolation.prefix, path, ...args] };
  }
  const [program, ...rest] = [...isolation.prefix, path, ...args];
  return { program, args: rest };
}

/** Whether /proc shows this process's own pid namespace (undefined: not checked yet). */
let procIsOurs: boolean | undefined;

/**
 * Opens a new write end of child `pid`'s stdin pipe, at /proc/PID/fd/0, for
 * writes that are done when they return (the stream Deno gives for a child's
 * stdin writes only once the event loop turns). Like every file Deno opens, it is
 * close-on-exec: no other child inherits it. Returns undefined where there is no
 * /proc, where it shows another pid namespace (the number would name someone
 * else's process), or when the child is gone.
 */
export function openChildStdin(pid: number): Deno.FsFile | undefined {
  procIsOurs ??= procShowsUs();
  if (!procIsOurs) return undefined;
  try {
    return Deno.openSync(`/proc/${pid}/fd/0`, { write: true });
  } catch {
    return undefined;
  }
}

/**
 * Writes `bytes` (at most PIPE_BUF) to the stdin pipe of child `pid` before
 * returning, through a write end of its own, closed at once: the stream behind a
 * child's stdin writes only once the event loop turns, and a gated job would wait
 * that long for its go byte. The pipe is new and empty, so the write cannot
 * block. Returns how many bytes were written: 0 where that write end cannot be had.
 */
export function writeToChildStdinNow(pid: number, bytes: Uint8Array): number {
  const file = openChildStdin(pid);
  if (file === undefined) return 0;
  try {
    return file.writeSync(bytes);
  } catch {
    return 0;
  } finally {
    file.close();
  }
}

/** Whether /proc/PID/fd/0 opens the stdin of this process's children (Linux, our pid namespace). */
export function canOpenChildStdin(): boolean {
  procIsOurs ??= procShowsUs();
  return procIsOurs;
}

function procShowsUs(): boolean {
  if (Deno.build.os !== "linux") return false;
  try {
    return Deno.readLinkSync("/proc/self") === String(Deno.pid);
  } catch {
    return false;
  }
}

/** Returns true when `path` is a regular file someone may execute. */
function isExecutableFile(path: string): boolean {
  try {
    const info = Deno.statSync(path);
    return info.isFile && (info.mode === null || (info.mode & 0o111) !== 0);
  } catch {
    return false;
  }
}

/** Returns the path of `setsid`, if this system has one. */
export function findSetsid(): string | undefined {
  if (isWindows) return undefined;
  return SETSID_PATHS.find(isExecutableFile);
}

/**
 * Finds `program` as execvp(3) would: a name with a slash is taken as it is,
 * any other is looked up in `searchPath` (colon-separated; an empty entry is the
 * current directory). Returns undefined when there is no executable file.
 */
export function findExecutable(program: string, searchPath: string): string | undefined {
  if (program.includes("/")) return isExecutableFile(program) ? program : undefined;
  for (const dir of searchPath.split(":")) {
    const candidate = `${dir || "."}/${program}`;
    if (isExecutableFile(candidate)) return candidate;
  }
  return undefined;
}

/**
 * Returns true when `path` (with `prefix`) starts its command as the leader of a
 * new session: the probed shell reads its own /proc/self/stat, whose pid, process
 * group and session must be one number. Its stdin holds the go byte of a gated
 * wrapper (a wrapper that waits for none leaves it unread).
 */
export async function makesSessionLeader(path: string, prefix: string[]): Promise<boolean> {
  try {
    const child = new Deno.Command(path, {
      args: [...prefix, "/bin/sh", "-c", 'read -r stat </proc/self/stat && echo "$stat"'],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const stdin = child.stdin.getWriter();
    await stdin.write(new Uint8Array([GO_BYTE])).catch(() => {});
    await stdin.close().catch(() => {});
    const probe = await child.output();
    if (!probe.success) return false;
    const stat = new TextDecoder().decode(probe.stdout);
    const pid = stat.slice(0, stat.indexOf(" "));
    // Fields after the command name, which is in parentheses and may contain spaces.
    const [, , group, session] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return pid !== "" && pid === group && pid === session;
  } catch {
    return false;
  }
}

/**
 * Chooses the isolation for this system. The helper is written to a private
 * temporary directory; a `noexec` one makes its probe fail, and the next choice
 * is tried. On Windows, a job object is made and closed to see that jobs can
 * have them.
 */
export async function detectIsolation(): Promise<Isolation> {
  if (isWindows) {
    const unavailable = jobObjectsUnavailable();
    return unavailable === undefined
      ? { kind: "none", jobObjects: true }
      : { kind: "none", jobObjects: false, unavailable };
  }
  const helper = await installSessionHelper();
  if (helper) {
    if (await makesSessionLeader(helper.path, [])) {
      return {
        kind: "wrapper",
        name: "session-helper",
        path: helper.path,
        prefix: [],
        gated: true,
        remove: helper.remove,
      };
    }
    helper.remove();
  }
  const gate = isExecutableFile(SH_GATE[0]) ? SH_GATE : [];
  const gated = gate.length > 0;
  const setsid = findSetsid();
  if (setsid && await makesSessionLeader(setsid, ["--", ...gate])) {
    const prefix = ["--", ...gate];
    return { kind: "wrapper", name: "setsid", path: setsid, prefix, gated, remove: () => {} };
  }
  return { kind: "detached", prefix: gate, gated };
}
