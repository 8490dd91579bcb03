/**
 * What the reliability suite reads about processes from Linux's `/proc`: resident
 * memory, CPU time, liveness, and which processes belong to a process group. Every
 * function returns `undefined`/`false`/`[]` for a process that is gone, since the
 * processes watched here come and go on purpose.
 *
 * @module
 */

/** Clock ticks per second of `/proc/<pid>/stat` times; 100 on every Linux the suite targets. */
export const CLOCK_TICKS_PER_SECOND = 100;

/** The fields of `/proc/<pid>/stat` the suite uses. */
export interface ProcStat {
  pid: number;
  /** One letter: R running, S sleeping, Z zombie, ... */
  state: string;
  ppid: number;
  /** Process group id. */
  pgrp: number;
  /** Session id. */
  session: number;
  /** CPU seconds spent in user mode. */
  userSeconds: number;
  /** CPU seconds spent in the kernel. */
  systemSeconds: number;
}

/**
 * Parses the text of `/proc/<pid>/stat`. The command name is in parentheses and may
 * itself hold spaces and parentheses, so fields are counted from the last `)`.
 */
export function parseProcStat(text: string): ProcStat | undefined {
  const close = text.lastIndexOf(")");
  const open = text.indexOf("(");
  if (close === -1 || open === -1) return undefined;
  const pid = Number(text.slice(0, open).trim());
  // After ") ": state(3) ppid(4) pgrp(5) session(6) ... utime(14) stime(15).
  const rest = text.slice(close + 2).trim().split(/\s+/);
  const field = (n: number) => Number(rest[n - 3]);
  if (!Number.isInteger(pid) || rest.length < 13) return undefined;
  return {
    pid,
    state: rest[0],
    ppid: field(4),
    pgrp: field(5),
    session: field(6),
    userSeconds: field(14) / CLOCK_TICKS_PER_SECOND,
    systemSeconds: field(15) / CLOCK_TICKS_PER_SECOND,
  };
}

/** Reads `/proc/<pid>/stat`; undefined when the process is gone. */
export function readProcStat(pid: number): ProcStat | undefined {
  try {
    return parseProcStat(Deno.readTextFileSync(`/proc/${pid}/stat`));
  } catch {
    return undefined;
  }
}

/** CPU seconds (user + system) the process has used so far; undefined when it is gone. */
export function cpuSeconds(pid: number): number | undefined {
  const stat = readProcStat(pid);
  return stat === undefined ? undefined : stat.userSeconds + stat.systemSeconds;
}

/** Parses `VmRSS:   12345 kB` out of `/proc/<pid>/status` into bytes. */
export function parseVmRss(status: string): number | undefined {
  const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  return match ? Number(match[1]) * 1024 : undefined;
}

/** Resident memory of the process in bytes; undefined when it is gone (or a zombie). */
export function rssBytes(pid: number): number | undefined {
  try {
    return parseVmRss(Deno.readTextFileSync(`/proc/${pid}/status`));
  } catch {
    return undefined;
  }
}

/** True while `pid` exists and is not a zombie waiting to be reaped. */
export function isAlive(pid: number): boolean {
  const stat = readProcStat(pid);
  return stat !== undefined && stat.state !== "Z" && stat.state !== "X";
}

/** Every live process on the machine, as far as `/proc` can be read. */
export function listProcesses(): ProcStat[] {
  const found: ProcStat[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    const stat = readProcStat(Number(entry.name));
    if (stat && stat.state !== "Z" && stat.state !== "X") found.push(stat);
  }
  return found;
}

/**
 * Live processes whose process group or session is one of `leaders` (the pids of
 * jobs, each of which sqsrun starts as the leader of a new session and group).
 */
export function membersOf(leaders: Iterable<number>): ProcStat[] {
  const wanted = new Set(leaders);
  if (wanted.size === 0) return [];
  return listProcesses().filter((stat) => wanted.has(stat.pgrp) || wanted.has(stat.session));
}

/**
 * SIGKILLs processes a scenario's jobs left behind (after the check that reports
 * them), so the suite never leaves anything running. Only pids the suite's own
 * jobs recorded, or members of their process groups, are ever passed here.
 */
export function killProcesses(pids: Iterable<number>): void {
  for (const pid of pids) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch { /* already gone */ }
  }
}

/**
 * Samples one process every `intervalMs` until stopped: its peak resident memory,
 * and its CPU time as last seen (a process that exited can no longer be read).
 */
export class RssSampler {
  #pid: number;
  #timer: ReturnType<typeof setInterval>;
  #peak = 0;
  #samples = 0;
  #cpu = 0;

  constructor(pid: number, intervalMs = 100) {
    this.#pid = pid;
    this.#timer = setInterval(() => this.sample(), intervalMs);
    this.sample();
  }

  /** Takes one sample now. */
  sample(): void {
    const rss = rssBytes(this.#pid);
    if (rss === undefined) return;
    this.#samples += 1;
    if (rss > this.#peak) this.#peak = rss;
    this.#cpu = cpuSeconds(this.#pid) ?? this.#cpu;
  }

  /** CPU seconds (user + system) at the last sample. */
  get cpuSeconds(): number {
    return this.#cpu;
  }

  /** Highest resident memory seen, in bytes. */
  get peakBytes(): number {
    return this.#peak;
  }

  /** How many samples were taken. */
  get samples(): number {
    return this.#samples;
  }

  /** Stops sampling; returns the peak in bytes. */
  stop(): number {
    clearInterval(this.#timer);
    return this.#peak;
  }
}

/** The command line of a process, its arguments joined by spaces; undefined when it is gone. */
export function readCmdline(pid: number): string | undefined {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0").join(" ").trim();
  } catch {
    return undefined;
  }
}

/**
 * Live processes whose command line contains `text` (a job script's unique path),
 * and every live member of their sessions and process groups (what they started).
 */
export function processesRunning(text: string): ProcStat[] {
  const all = listProcesses();
  const leaders = new Set(
    all.filter((stat) => readCmdline(stat.pid)?.includes(text)).map((stat) => stat.pid),
  );
  if (leaders.size === 0) return [];
  return all.filter((stat) =>
    leaders.has(stat.pid) || leaders.has(stat.session) || leaders.has(stat.pgrp)
  );
}
