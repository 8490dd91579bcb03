/**
 * The job watchdog: a small `sh` process, one per worker, that knows the process
 * groups of the running jobs and SIGKILLs them when the worker dies. A worker that
 * is SIGKILLed (or crashes, or is OOM-killed) cannot kill its jobs itself, and each
 * job runs in a session of its own, so nothing else reaches them: without the
 * watchdog they would run on as orphans, next to the redelivered copies of their
 * messages.
 *
 * The worker writes `+ PGID` when a job starts and `- PGID` when its group was
 * killed at its end, over the watchdog's stdin; the watchdog's only way out of its
 * read loop is the end of that pipe, which the kernel gives it the moment the
 * worker is gone, however it went. A line the worker wrote is in the pipe's buffer
 * and is read even if the worker died right after writing it (a blocking write
 * waits only if the watchdog stopped reading with its 64 KiB pipe full, thousands
 * of lines behind). A graceful exit closes the pipe with no group left, and the
 * watchdog ends without killing anything. It ignores SIGINT, SIGTERM and SIGHUP:
 * a Ctrl-C or a service manager's SIGTERM meant for the worker must not end it
 * before the worker's drain.
 *
 * Coverage comes before the job runs: the exec runner lets a job's program start
 * (its go byte, see exec.ts) only once {@linkcode JobGroups.add} put its
 * `+` line in the pipe. On Linux that write is synchronous, through a second write
 * end of the pipe opened at /proc/PID/fd/0 (the stream Deno gives would write only
 * once the event loop turns, and every job would wait that long for its go); it
 * costs the worker a write(2) per job and the watchdog a wake-up. Elsewhere add()
 * returns a promise of that write. `-` lines wait {@linkcode WATCHDOG_FLUSH_MS} or
 * ride along with the next `+`: a dead group still listed costs nothing, since
 * the watchdog's kill of it simply fails.
 *
 * At the worker's death the watchdog kills, in one `kill`, each listed leader's
 * pid and then its group. The pid covers a leader that has not made its session
 * yet (a wrapper between its spawn and its setsid(): its group does not exist, but
 * it may already hold its go byte); the group covers everything else. A number is
 * listed only while its job runs, plus at most WATCHDOG_FLUSH_MS after its group
 * was killed: within that, it cannot plausibly be reused.
 *
 * @module
 */
import type { Logger } from "../../log.ts";
import { describeError } from "../../errors.ts";
import { openChildStdin } from "./isolation.ts";

/** A pipe write of at most this many bytes is atomic. */
const PIPE_BUF = 4096;
const NEWLINE = 0x0a;

/** How long `-` lines wait to be written together. */
export const WATCHDOG_FLUSH_MS = 5;

/** The watchdog's program; $1 is the worker's pid, for `ps` and tests. */
export const WATCHDOG_SCRIPT = `trap '' INT TERM HUP
groups=' '
while read -r op pgid; do
  case $op in
    +) groups="$groups$pgid " ;;
    -) case $groups in *" $pgid "*) groups="\${groups%% "$pgid" *} \${groups#* "$pgid" }" ;; esac ;;
  esac
done
targets=
for group in $groups; do targets="$targets $group -$group"; done
if [ -n "$targets" ]; then kill -s KILL -- $targets 2>/dev/null; fi
`;

/** What the exec runner tells the watchdog. */
export interface JobGroups {
  /**
   * A job's process group exists, or will once its leader (pid `pgid`) made its
   * session. Returns undefined when the watchdog's pipe already holds its line
   * (from then on, the worker's death kills the job) or there is no watchdog to
   * tell; else a promise that resolves once the line is in the pipe (or the
   * watchdog turned out to be gone) and never rejects.
   */
  add(pgid: number): Promise<void> | undefined;
  /** A job's process group was killed at its end: forget it. */
  remove(pgid: number): void;
  /** Ends the watchdog (graceful exit: no group is left to kill). */
  close(): Promise<void>;
  /**
   * The watchdog's pid where its pipe is written through /proc/PID/fd/0 (Linux),
   * so that a spawner thread can open a write end of its own; else undefined.
   */
  readonly pipePid?: number;
}

/** Used where no watchdog could start (no /bin/sh, Windows): jobs are still killed on every graceful path. */
export const NO_WATCHDOG: JobGroups = {
  add: () => undefined,
  remove: () => {},
  close: () => Promise.resolve(),
};

/**
 * Starts the watchdog. Returns {@linkcode NO_WATCHDOG} where it cannot run (after
 * a warning, unless on Windows, which has no process groups to watch).
 */
export function startWatchdog(log: Logger): JobGroups {
  if (Deno.build.os === "windows") return NO_WATCHDOG;
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("/bin/sh", {
      args: ["-c", WATCHDOG_SCRIPT, "sqsrun-watchdog", String(Deno.pid)],
      stdin: "piped",
      stdout: "null",
      stderr: "null",
      // Not in the worker's session: a terminal's Ctrl-C reaches the worker's
      // foreground process group, and the watchdog must outlive the worker.
      detached: true,
    }).spawn();
  } catch (error) {
    log.warn("cannot start the job watchdog; jobs of a killed worker would outlive it", {
      error: describeError(error),
    });
    return NO_WATCHDOG;
  }
  child.unref();
  const encoder = new TextEncoder();
  // Linux: a second write end of the watchdog's stdin pipe, written synchronously,
  // so that a job's line is in the pipe when add() returns. Elsewhere (or if /proc
  // cannot be opened), the stream, whose writes settle on a later turn.
  const pipe = openChildStdin(child.pid);
  const writer = pipe ? undefined : child.stdin.getWriter();
  if (pipe) child.stdin.close().catch(() => {});
  // Groups killed at their job's end and not yet written.
  const removed = new Set<number>();
  let timer: ReturnType<typeof setTimeout> | undefined;
  let broken = false;
  let closed = false;

  const gone = (error: unknown) => {
    if (broken) return;
    broken = true;
    log.warn("the job watchdog is gone; jobs of a killed worker would outlive it", {
      error: describeError(error),
    });
  };
  // Writes `text` with the pending `-` lines; undefined once it is in the pipe.
  const write = (text: string): Promise<void> | undefined => {
    clearTimeout(timer);
    timer = undefined;
    for (const pgid of removed) text += `- ${pgid}\n`;
    removed.clear();
    if (broken || text === "") return undefined;
    const bytes = encoder.encode(text);
    if (!pipe) return writer!.write(bytes).catch(gone);
    try {
      // Spawner threads write `+` lines into the same pipe: a write of up to
      // PIPE_BUF bytes cannot interleave with theirs, so longer text goes out in
      // pieces that end on a line.
      for (let at = 0; at < bytes.length;) {
        let end = Math.min(bytes.length, at + PIPE_BUF);
        if (end < bytes.length) end = Math.max(bytes.lastIndexOf(NEWLINE, end - 1) + 1, at + 1);
        while (at < end) at += pipe.writeSync(bytes.subarray(at, end));
      }
    } catch (error) {
      gone(error);
    }
    return undefined;
  };

  return {
    pipePid: pipe ? child.pid : undefined,
    add: (pgid) => broken ? undefined : write(`+ ${pgid}\n`),
    remove(pgid) {
      if (broken) return;
      removed.add(pgid);
      timer ??= setTimeout(() => write(""), WATCHDOG_FLUSH_MS);
    },
    async close() {
      write("");
      if (broken && closed) return;
      broken = closed = true;
      if (pipe) pipe.close();
      else await writer!.close().catch(() => {});
      // Waited for (and so referenced): an unreferenced child's status alone
      // would let the event loop end with this promise pending.
      child.ref();
      await child.status.catch(() => {});
    },
  };
}
