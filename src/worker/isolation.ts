/**
 * How a job's child gets a session (and so a process group) of its own, so that
 * one signal to the group reaches every process the job started. Chosen once at
 * start-up, fastest first: the session helper, util-linux `setsid`, then Deno's
 * `detached` spawn, each kept only if a probe shows it really makes a session leader.
 *
 * @module
 */
import { installSessionHelper } from "./session_helper.ts";

const isWindows = Deno.build.os === "windows";

/** Where a `setsid` program is commonly installed (util-linux, busybox). */
const SETSID_PATHS = ["/usr/bin/setsid", "/bin/setsid", "/usr/sbin/setsid", "/sbin/setsid"];

/** How a job's child gets a process group of its own. */
export type Isolation =
  | {
    /** A program that makes itself a session leader, then execs `PROGRAM ARGS...`. */
    kind: "wrapper";
    /** What it is, for the start-up log. */
    name: "session-helper" | "setsid";
    path: string;
    /** Arguments before the job's program (`--` for setsid). */
    prefix: string[];
    /** Removes what start-up installed (the helper's directory). */
    remove(): void;
  }
  /** Deno forks the worker and calls setsid() in the child (slower: copies the worker's page tables). */
  | { kind: "detached" }
  /** Windows: no process groups to speak of. */
  | { kind: "none" };

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
 * group and session must be one number.
 */
export async function makesSessionLeader(path: string, prefix: string[]): Promise<boolean> {
  try {
    const probe = await new Deno.Command(path, {
      args: [...prefix, "/bin/sh", "-c", 'read -r stat </proc/self/stat && echo "$stat"'],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).output();
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
 * is tried.
 */
export async function detectIsolation(): Promise<Isolation> {
  if (isWindows) return { kind: "none" };
  const helper = await installSessionHelper();
  if (helper) {
    if (await makesSessionLeader(helper.path, [])) {
      return {
        kind: "wrapper",
        name: "session-helper",
        path: helper.path,
        prefix: [],
        remove: helper.remove,
      };
    }
    helper.remove();
  }
  const setsid = findSetsid();
  if (setsid && await makesSessionLeader(setsid, ["--"])) {
    return { kind: "wrapper", name: "setsid", path: setsid, prefix: ["--"], remove: () => {} };
  }
  return { kind: "detached" };
}
