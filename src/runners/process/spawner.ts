/**
 * Job processes started off the main thread. Spawning a child is a synchronous
 * call of about a millisecond (fork, exec, three pipes), and on the thread of the
 * worker's timers and SQS calls it was more than half of that thread's time at
 * `-c 50`: every visibility extension and receive waited behind the spawns. Here
 * a few Web Workers ({@linkcode SPAWNER_THREADS}) own the children: they spawn
 * them, write the watchdog's `+` line and the go byte, write the body, read the
 * output and reap them; the main thread only sends requests and hears back lines
 * and exits.
 *
 * Every guarantee of exec.ts holds, because each step happens in the same order on
 * the spawner's thread that it did on the main one: the `+ PGID` line goes into
 * the watchdog's pipe (through a write end of its own at /proc/PID/fd/0) before
 * the go byte, and the go byte and head of the body go out in one atomic write.
 * The session helper's PR_SET_PDEATHSIG is tied to the thread that spawned the
 * job: a spawner thread lives until the runner closes, after every job ended, and
 * one that dies takes its jobs with it, as the worker's death would.
 *
 * Signals do not wait for a spawner: the main thread signals a job's group
 * itself, and asks the spawner (which holds the child's handle) only for a job
 * whose group does not exist yet.
 *
 * Used on Linux for bodies in memory; a streamed body (S3) and other systems take
 * the main thread's path in exec.ts.
 *
 * @module
 */
import type { Logger } from "../../log.ts";
import { describeError } from "../../errors.ts";
import { LineSplitter } from "./output_lines.ts";

/** Spawner threads: one besides the main thread leaves the second core to the jobs and SQS. */
export const SPAWNER_THREADS = 1;

/** How a job's process is to be started, as a spawner is told. */
export interface SpawnRequest {
  program: string;
  args: string[];
  /** Added to the worker's environment. */
  env: Record<string, string>;
  /** Deno's own setsid() in the child (the `detached` isolation). */
  detached: boolean;
  /** Its group goes to the watchdog before anything is written to its stdin. */
  grouped: boolean;
  /** Written at once after the spawn: the go byte and the head of the body. */
  first?: Uint8Array;
  /** Written through the child's stdin stream after `first`. */
  rest: Uint8Array;
}

/** Main thread to spawner. */
export type ToSpawner =
  | { op: "init"; watchdogPid?: number }
  | ({ op: "spawn"; id: number } & SpawnRequest)
  | { op: "signal"; id: number; name: Deno.Signal }
  | { op: "room"; id: number };

/** Spawner to main thread. */
export type FromSpawner =
  | { op: "spawned"; id: number; pid: number }
  | { op: "failed"; id: number; error: string }
  | { op: "output"; id: number; stream: "stdout" | "stderr"; chunk: Uint8Array }
  | { op: "exited"; id: number; code: number | null; signal: string | null };

/** How a process started by a spawner ended. */
export interface SpawnedExit {
  code: number | null;
  signal: string | null;
  /** Set when it could not start. */
  error?: string;
}

/** A process a spawner started (or is about to). */
export interface SpawnedProcess {
  /** The leader's pid, once the spawner reported it. */
  readonly pid: number | undefined;
  /** Resolves once it exited and its output was read (or it could not start); never rejects. */
  readonly done: Promise<SpawnedExit>;
  /** Signals its whole group (or the child itself, before it made its group). */
  signal(name: Deno.Signal): void;
}

/** What a spawner tells the job's owner as it goes. */
export interface SpawnEvents {
  /** The pid is known (the `+` line is in the watchdog's pipe, if grouped). */
  spawned?(pid: number): void;
  /** Where its output lines go; the room it awaits slows the job's pipes. */
  log: Logger;
}

interface Pending {
  events: SpawnEvents;
  /** Its output, split into lines here: the spawner moves the chunks as they were read. */
  lines: Record<"stdout" | "stderr", LineSplitter>;
  pid?: number;
  exited: boolean;
  resolve(exit: SpawnedExit): void;
  thread: Thread;
}

interface Thread {
  worker: Worker;
  jobs: number;
}

/** Starts job processes on spawner threads (started with the first job). */
export class Spawner {
  #threads: Thread[] = [];
  #pending = new Map<number, Pending>();
  #nextId = 1;
  #watchdogPid: number | undefined;
  #log: Logger;

  /**
   * @param watchdogPid the watchdog whose /proc/PID/fd/0 takes the `+` lines, if any
   * @param log where a spawner's own failure is reported
   */
  constructor(watchdogPid: number | undefined, log: Logger) {
    this.#watchdogPid = watchdogPid;
    this.#log = log;
  }

  /** Asks a spawner to start `request`; a process that cannot start ends with `error`. */
  spawn(request: SpawnRequest, events: SpawnEvents): SpawnedProcess {
    const id = this.#nextId++;
    const thread = this.#pick();
    let resolve!: (exit: SpawnedExit) => void;
    const done = new Promise<SpawnedExit>((settle) => resolve = settle);
    const lines = (stream: "stdout" | "stderr") =>
      new LineSplitter((line) => events.log.info(line, { stream }));
    const pending: Pending = {
      events,
      lines: { stdout: lines("stdout"), stderr: lines("stderr") },
      exited: false,
      resolve,
      thread,
    };
    this.#pending.set(id, pending);
    thread.jobs++;
    // Copied, not transferred: the caller's body may be a view of a buffer it keeps.
    thread.worker.postMessage({ op: "spawn", id, ...request } satisfies ToSpawner);
    return {
      get pid() {
        return pending.pid;
      },
      done,
      signal: (name) => {
        if (pending.exited && name !== "SIGKILL") return;
        if (pending.pid !== undefined) {
          try {
            Deno.kill(-pending.pid, name);
            return;
          } catch {
            // No group (yet, or any more): the spawner holds the child's handle.
          }
        }
        if (!pending.exited) thread.worker.postMessage({ op: "signal", id, name });
      },
    };
  }

  /** Ends the spawner threads; every job they started is over. */
  close(): void {
    for (const thread of this.#threads) thread.worker.terminate();
    this.#threads = [];
  }

  #pick(): Thread {
    if (this.#threads.length < SPAWNER_THREADS) {
      const thread = this.#startThread();
      this.#threads.push(thread);
      return thread;
    }
    return this.#threads.reduce((least, thread) => thread.jobs < least.jobs ? thread : least);
  }

  #startThread(): Thread {
    const worker = new Worker(new URL("./spawner_worker.ts", import.meta.url), {
      type: "module",
      name: "sqsrun-spawner",
    });
    const thread: Thread = { worker, jobs: 0 };
    worker.postMessage({ op: "init", watchdogPid: this.#watchdogPid } satisfies ToSpawner);
    worker.onmessage = (event: MessageEvent<FromSpawner>) => this.#hear(event.data);
    worker.onerror = (event) => {
      event.preventDefault();
      this.#lost(thread, event.message);
    };
    return thread;
  }

  #hear(message: FromSpawner): void {
    const pending = this.#pending.get(message.id);
    if (!pending) return;
    switch (message.op) {
      case "spawned":
        pending.pid = message.pid;
        pending.events.spawned?.(message.pid);
        break;
      case "output": {
        const { log } = pending.events;
        pending.lines[message.stream].push(message.chunk);
        const room = log.outputRoom?.();
        const ack = () => pending.thread.worker.postMessage({ op: "room", id: message.id });
        if (room) room.then(ack);
        else ack();
        break;
      }
      case "failed":
        this.#end(message.id, pending, { code: null, signal: null, error: message.error });
        break;
      case "exited":
        this.#end(message.id, pending, { code: message.code, signal: message.signal });
        break;
    }
  }

  #end(id: number, pending: Pending, exit: SpawnedExit): void {
    pending.exited = true;
    pending.lines.stdout.end();
    pending.lines.stderr.end();
    pending.thread.jobs--;
    this.#pending.delete(id);
    pending.resolve(exit);
  }

  /**
   * A spawner thread died: its jobs died with it (their parent thread is gone,
   * and the session helper's PR_SET_PDEATHSIG fired); their groups are killed
   * for what they started, and each job fails. The next job starts a new thread.
   */
  #lost(thread: Thread, reason: string): void {
    this.#log.error("a job spawner thread failed; failing its jobs", { error: reason });
    this.#threads = this.#threads.filter((other) => other !== thread);
    thread.worker.terminate();
    for (const [id, pending] of this.#pending) {
      if (pending.thread !== thread) continue;
      if (pending.pid !== undefined) {
        try {
          Deno.kill(-pending.pid, "SIGKILL");
        } catch (error) {
          this.#log.debug("job group already gone", { error: describeError(error) });
        }
      }
      this.#end(id, pending, {
        code: null,
        signal: null,
        error: `its spawner thread failed: ${reason}`,
      });
    }
  }
}
