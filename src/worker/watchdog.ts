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
 * worker is gone, however it went. A graceful exit closes the pipe with no group
 * left, and the watchdog ends without killing anything. It ignores SIGINT, SIGTERM
 * and SIGHUP: a Ctrl-C or a service manager's SIGTERM meant for the worker must not
 * end it before the worker's drain.
 *
 * Lines are coalesced for a few milliseconds (a job that starts and ends within
 * that time costs the watchdog nothing), so a job is covered from at most
 * {@linkcode WATCHDOG_FLUSH_MS} after it started.
 *
 * @module
 */
import type { Logger } from "../log.ts";
import { describeError } from "../errors.ts";

/** How long `+`/`-` lines wait to be written together. */
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
for group in $groups; do kill -s KILL -- "-$group" 2>/dev/null; done
`;

/** What the exec runner tells the watchdog. */
export interface JobGroups {
  /** A job's process group now exists. */
  add(pgid: number): void;
  /** A job's process group was killed at its end: forget it. */
  remove(pgid: number): void;
  /** Ends the watchdog (graceful exit: no group is left to kill). */
  close(): Promise<void>;
}

/** Used where no watchdog could start (no /bin/sh, Windows): jobs are still killed on every graceful path. */
export const NO_WATCHDOG: JobGroups = {
  add: () => {},
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
  const writer = child.stdin.getWriter();
  const encoder = new TextEncoder();
  // Groups added and not yet written; a "-" for one of them just drops it.
  const added = new Set<number>();
  const removed = new Set<number>();
  let timer: ReturnType<typeof setTimeout> | undefined;
  let broken = false;

  const flush = () => {
    timer = undefined;
    if (broken || (added.size === 0 && removed.size === 0)) return;
    let text = "";
    for (const pgid of added) text += `+ ${pgid}\n`;
    for (const pgid of removed) text += `- ${pgid}\n`;
    added.clear();
    removed.clear();
    writer.write(encoder.encode(text)).catch((error) => {
      if (broken) return;
      broken = true;
      log.warn("the job watchdog is gone; jobs of a killed worker would outlive it", {
        error: describeError(error),
      });
    });
  };
  const schedule = () => {
    if (timer === undefined) timer = setTimeout(flush, WATCHDOG_FLUSH_MS);
  };

  return {
    add(pgid) {
      added.add(pgid);
      schedule();
    },
    remove(pgid) {
      if (!added.delete(pgid)) removed.add(pgid);
      schedule();
    },
    async close() {
      clearTimeout(timer);
      flush();
      await writer.close().catch(() => {});
      await child.status.catch(() => {});
    },
  };
}
