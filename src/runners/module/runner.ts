/**
 * `--run`: each job calls `run(body, context)` of the user's module inside a Web
 * Worker. One worker per concurrency slot, created when a slot first needs it and
 * reused; a worker that was killed, exited or had an uncaught error is dropped and
 * the slot gets a fresh one for its next job.
 *
 * The module is loaded once at start-up, before anything is received, so a
 * missing file, a syntax error or a missing `run` export is a usage error.
 *
 * What a module gets is documented in the README ("Modules (--run)").
 *
 * @module
 */
import { isAbsolute, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { describeFsError, UsageError } from "../../errors.ts";
import type { Logger } from "../../log.ts";
import type { JobHandle, JobResult, KillSignal } from "../../worker/job.ts";
import type { JobMessage } from "../../worker/message.ts";
import type { JobInput } from "../../sources/source.ts";
import type { HostReply, HostRequest } from "./host.ts";
import type { JobRunner } from "../runner.ts";

/** What `--run` runs. */
export interface ModuleSpec {
  /** The module's path, relative to the current directory or absolute. */
  path: string;
  /** ARGV given after `--` (`context.args`). */
  args: string[];
  /** `--env` pairs (`context.env`). */
  env: Record<string, string>;
  /** How long one worker may take to import the module; default 60 s. */
  loadTimeoutMs?: number;
}

/** Default of {@linkcode ModuleSpec.loadTimeoutMs}: a module may connect to things at top level. */
export const DEFAULT_LOAD_TIMEOUT_MS = 60_000;

/** Most lines printed at load time (before any job) kept until the first job can log them. */
const MAX_PENDING_LINES = 200;

/** The host script: a separate file that `deno compile --include` must embed. */
const HOST_URL = new URL("./host.ts", import.meta.url).href;

/**
 * Resolves a `--run` path against the current directory to the absolute `file:`
 * URL it is imported by; throws a UsageError when it is not a readable file.
 */
export async function resolveModuleUrl(path: string): Promise<string> {
  const absolute = isAbsolute(path) ? path : resolve(Deno.cwd(), path);
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(absolute);
  } catch (error) {
    throw new UsageError(`--run ${path}: ${describeFsError(error)}`);
  }
  if (info.isDirectory) throw new UsageError(`--run ${path}: is a directory`);
  return pathToFileURL(absolute).href;
}

/** True when an import failure names a specifier a compiled binary cannot load. */
function namesUnbundledImport(reason: string): boolean {
  return /\b(npm|jsr):|https?:\/\/|import access/.test(reason);
}

/** The advice appended to an import failure that involves npm:, jsr: or remote modules. */
export const IMPORT_ADVICE =
  "a --run module may import only local files (relative paths) and node: built-ins; " +
  "bundle npm:, jsr: and remote imports into one file first (e.g. deno bundle)";

/** Turns a host's load failure into the reason shown after `--run PATH: `. */
export function loadFailureReason(reason: string, importFailed: boolean): string {
  if (!importFailed) return reason;
  if (!namesUnbundledImport(reason)) return `cannot load the module: ${reason}`;
  // Deno's advice to pass --allow-import cannot be followed with a compiled binary.
  const cause = reason.replace(/,? run again with the --allow-[\w-]+ flag/, "");
  return `cannot load the module: ${cause}; ${IMPORT_ADVICE}`;
}

/**
 * Returns the runner of `--run` jobs after loading the module once; throws a
 * UsageError (`--run PATH: <reason>`) when it cannot be loaded.
 */
export async function moduleRunner(spec: ModuleSpec): Promise<JobRunner> {
  const url = await resolveModuleUrl(spec.path);
  const pool = new ModulePool(url, spec);
  await pool.preload();
  return pool;
}

/** Slots of Web Workers running one module. */
class ModulePool implements JobRunner {
  #url: string;
  #spec: ModuleSpec;
  #idle: ModuleSlot[] = [];
  #slots = new Set<ModuleSlot>();
  #nextId = 1;
  #pending: { stream: string; line: string }[] | undefined = [];
  #stuck = 0;

  constructor(url: string, spec: ModuleSpec) {
    this.#url = url;
    this.#spec = spec;
  }

  /** Loads the module in the first slot; throws a UsageError when that fails. */
  async preload(): Promise<void> {
    const slot = this.#spawn();
    try {
      await slot.ready;
    } catch (error) {
      this.#drop(slot);
      throw new UsageError(`--run ${this.#spec.path}: ${(error as Error).message}`);
    }
    this.#idle.push(slot);
  }

  start(message: JobMessage, input: JobInput, log: Logger): JobHandle {
    if (this.#pending) {
      // Output of the module's top-level code at start-up, logged with the first job's
      // logger but without its message id: no job was running then.
      const loadLog = log.with({ message_id: undefined, phase: "module load" });
      for (const { stream, line } of this.#pending) loadLog.info(line, { stream });
      this.#pending = undefined;
    }
    const slot = this.#idle.pop() ?? this.#spawn();
    return slot.start(this.#nextId++, message, input, this.#spec, log);
  }

  close(): Promise<void> {
    for (const slot of this.#slots) slot.dispose();
    this.#slots.clear();
    this.#idle = [];
    return Promise.resolve();
  }

  #spawn(): ModuleSlot {
    const slot = new ModuleSlot(this.#url, this.#spec.loadTimeoutMs ?? DEFAULT_LOAD_TIMEOUT_MS, {
      released: (reusable) => {
        if (reusable) this.#idle.push(slot);
        else this.#drop(slot);
      },
      lost: () => this.#drop(slot),
      stuck: () => ++this.#stuck,
      orphanOutput: (stream, line) => {
        if (this.#pending && this.#pending.length < MAX_PENDING_LINES) {
          this.#pending.push({ stream, line });
        }
      },
    });
    this.#slots.add(slot);
    return slot;
  }

  #drop(slot: ModuleSlot): void {
    slot.dispose();
    this.#slots.delete(slot);
    this.#idle = this.#idle.filter((other) => other !== slot);
  }
}

/** How a slot tells its pool what happened to it. */
interface SlotEvents {
  /** The job ended; `reusable` is false when the worker must not run another job. */
  released(reusable: boolean): void;
  /** The worker ended between jobs (exit, uncaught error). */
  lost(): void;
  /** A killed worker never answered: Deno cannot stop its thread. Returns how many so far. */
  stuck(): number;
  /** Output printed while no job had ever run in this slot. */
  orphanOutput(stream: string, line: string): void;
}

/** The job a slot is running. */
interface SlotJob {
  id: number;
  log: Logger;
  finish(result: JobResult, reusable: boolean): void;
  /** When the oldest terminate request not answered yet was sent (`performance.now()`). */
  unansweredSince: number | undefined;
  finished: boolean;
}

/** One Web Worker with the module loaded, running at most one job at a time. */
class ModuleSlot {
  /** Resolves once the module is loaded; rejects with the reason it cannot be. */
  readonly ready: Promise<void>;
  #worker: Worker;
  #events: SlotEvents;
  #job: SlotJob | undefined;
  #lastLog: Logger | undefined;
  #dead = false;
  #settleLoad: { resolve(): void; reject(error: Error): void } | undefined;

  constructor(url: string, loadTimeoutMs: number, events: SlotEvents) {
    this.#events = events;
    this.#worker = new Worker(HOST_URL, { type: "module", name: "sqsrun --run" });
    this.#worker.onmessage = (event: MessageEvent<HostReply>) => this.#onReply(event.data);
    this.#worker.onerror = (event) => {
      // Never let a worker's error reach the main thread's default handler: it would
      // end sqsrun. The host catches the module's errors itself; this is the backstop.
      event.preventDefault();
      this.#onUncaught(event.message || "error in the module's worker", undefined);
    };
    this.#worker.onmessageerror = () => {
      this.#log()?.warn("a message from the module's worker could not be read");
    };
    this.ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`the module did not finish loading within ${loadTimeoutMs / 1000} s`));
      }, loadTimeoutMs);
      this.#settleLoad = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
    });
    // A slot created for a job reports a failed load through that job.
    this.ready.catch(() => {});
    this.#post({ type: "load", url });
  }

  /** Runs one job; the handle's `done` resolves after the slot was given back. */
  start(
    id: number,
    message: JobMessage,
    input: JobInput,
    spec: ModuleSpec,
    log: Logger,
  ): JobHandle {
    this.#lastLog = log;
    let resolveDone!: (result: JobResult) => void;
    const done = new Promise<JobResult>((resolve) => resolveDone = resolve);
    const job: SlotJob = {
      id,
      log,
      unansweredSince: undefined,
      finished: false,
      finish: (result, reusable) => {
        if (job.finished) return;
        job.finished = true;
        if (this.#job === job) this.#job = undefined;
        this.#events.released(reusable && !this.#dead);
        resolveDone(result);
      },
    };
    this.#job = job;
    void this.#begin(job, message, input, spec);
    return { pid: undefined, done, signal: (name) => this.#signal(job, name) };
  }

  /** Ends the worker now. */
  dispose(): void {
    this.#dead = true;
    this.#settleLoad?.reject(new Error("the module's worker was stopped"));
    this.#worker.terminate();
  }

  async #begin(job: SlotJob, message: JobMessage, input: JobInput, spec: ModuleSpec) {
    try {
      await this.ready;
    } catch (error) {
      return job.finish({
        code: null,
        signal: null,
        error: `--run ${spec.path}: ${(error as Error).message}`,
      }, false);
    }
    let body: string;
    let bytes: Uint8Array;
    try {
      ({ body, bytes } = await readBody(input.body));
    } catch (error) {
      return job.finish({
        code: null,
        signal: null,
        error: `cannot read the job's input: ${(error as Error).message}`,
      }, true);
    }
    if (job.finished) return;
    const context: Record<string, unknown> = {
      ...input.context,
      messageId: message.id,
      receiveCount: message.receiveCount,
      attributes: { ...message.attributes },
      queueUrl: message.queueUrl,
      sentTimestamp: message.sentTimestamp,
      groupId: message.groupId,
      args: [...spec.args],
      env: { ...spec.env, ...input.env },
    };
    try {
      this.#post({ type: "run", id: job.id, body, bytes, context }, [bytes.buffer as ArrayBuffer]);
    } catch (error) {
      job.finish({
        code: null,
        signal: null,
        error: `cannot pass the job to the module: ${(error as Error).message}`,
      }, true);
    }
  }

  #signal(job: SlotJob, name: KillSignal): void {
    if (job.finished) return;
    if (name === "SIGTERM") {
      job.unansweredSince ??= performance.now();
      this.#post({ type: "terminate", id: job.id });
      return;
    }
    // An answer takes milliseconds when the module's event loop runs at all.
    if (job.unansweredSince !== undefined && performance.now() - job.unansweredSince > 500) {
      // The module never got to see the terminate request: its thread is busy in
      // synchronous code. Deno 2.9's Worker.terminate() cannot interrupt that
      // (denoland/deno#35657), so the thread keeps a CPU until sqsrun exits.
      const count = this.#events.stuck();
      job.log.error(
        "the module did not answer terminate requests; its thread cannot be stopped " +
          "and keeps running until sqsrun restarts",
        { stuck_threads: count },
      );
    }
    this.dispose();
    job.finish({ code: null, signal: "SIGKILL" }, false);
  }

  #log(): Logger | undefined {
    return this.#job?.log ?? this.#lastLog?.with({ message_id: undefined });
  }

  #post(request: HostRequest, transfer: Transferable[] = []): void {
    this.#worker.postMessage(request, transfer);
  }

  #onReply(reply: HostReply): void {
    const job = this.#job;
    switch (reply.type) {
      case "loaded":
        this.#settleLoad?.resolve();
        return;
      case "load-error":
        this.#settleLoad?.reject(new Error(loadFailureReason(reply.reason, reply.importFailed)));
        return;
      case "output": {
        const log = this.#log();
        if (log) log.info(reply.line, { stream: reply.stream });
        else this.#events.orphanOutput(reply.stream, reply.line);
        return;
      }
      case "done":
        if (!job || job.id !== reply.id) return;
        if (reply.ok) return job.finish({ code: 0, signal: null }, true);
        job.log.warn("run() threw", { error: reply.error, stack: reply.stack });
        return job.finish({ code: 1, signal: null, error: `run() threw: ${reply.error}` }, true);
      case "terminated":
        if (!job || job.id !== reply.id) return;
        job.unansweredSince = undefined;
        if (reply.error) job.log.warn("terminate() threw", { error: reply.error });
        return;
      case "exit": {
        // The worker is ending: Deno ends only the Web Worker, never sqsrun.
        this.#dead = true;
        const what = `the module called ${reply.how}(${reply.how === "close" ? "" : reply.code})`;
        this.#settleLoad?.reject(new Error(`${what} while loading`));
        if (job) {
          job.finish({ code: reply.code, signal: null, error: what }, false);
        } else {
          this.#log()?.warn(`${what} outside a job; its worker is replaced`);
          this.#events.lost();
        }
        return;
      }
      case "uncaught":
        return this.#onUncaught(reply.error, reply.stack);
    }
  }

  #onUncaught(error: string, stack: string | undefined): void {
    this.#settleLoad?.reject(new Error(`uncaught error while loading: ${error}`));
    const job = this.#job;
    if (job) {
      // A stray error while a job runs is that job's: it fails, and the worker,
      // whose state is now unknown, is replaced before the next job.
      job.log.warn("uncaught error in the module", { error, stack });
      job.finish({ code: 1, signal: null, error: `uncaught error in the module: ${error}` }, false);
      return;
    }
    this.#log()?.error("uncaught error in the module outside a job; its worker is replaced", {
      error,
      stack,
    });
    this.#events.lost();
  }
}

/**
 * Reads a job's body: the text given to `run`, and its raw bytes for `context.bytes`.
 * A stream (an S3 object) is read whole: modules get no streaming input.
 */
export async function readBody(
  body: string | ReadableStream<Uint8Array>,
): Promise<{ body: string; bytes: Uint8Array }> {
  if (typeof body === "string") return { body, bytes: new TextEncoder().encode(body) };
  // Modules get S3 objects whole: run() takes a string, so the object is read into memory.
  const bytes = new Uint8Array(await new Response(body).arrayBuffer());
  return { body: new TextDecoder().decode(bytes), bytes };
}
