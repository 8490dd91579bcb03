/**
 * `--run`: each job calls `run(body, context)` of the user's module inside a Web
 * Worker. The Web Workers are the slots of a slot pool (`../slot_pool.ts`): one per
 * concurrency slot, created when a job first needs it and reused; one that was
 * killed, exited or had an uncaught error dies, and the next job gets a fresh one.
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
import type { HostReply, HostRequest } from "./host.ts";
import type { Job, JobItem, JobReport, JobRunner, RunningJob, StopMode } from "../runner.ts";
import { SlotPool, type SlotResource } from "../slot_pool.ts";

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
  const runner = new ModuleRunner(url, spec);
  await runner.preload();
  return runner;
}

/**
 * How long a terminate request may stay unanswered before the module counts as
 * stuck. The host answers within milliseconds whenever the module's event loop
 * runs at all; unanswered for this long, its thread is busy in synchronous code.
 */
const TERMINATE_ANSWER_MS = 500;

/** What the Web Workers of one runner share. */
interface SharedByWorkers {
  url: string;
  loadTimeoutMs: number;
  pool: SlotPool<ModuleWorker>;
  /** Lines printed while loading ahead of any job, kept for the first job; undefined after it. */
  loadOutput: { stream: string; line: string }[] | undefined;
  /** Threads that never answered a terminate request: Deno cannot stop them. */
  stuckThreads: number;
}

/** Web Workers running one module, each one job at a time, in a slot pool. */
class ModuleRunner implements JobRunner {
  readonly maxItems = 1;
  #spec: ModuleSpec;
  #shared: SharedByWorkers;
  #nextId = 1;

  constructor(url: string, spec: ModuleSpec) {
    this.#spec = spec;
    const pool = new SlotPool(() => new ModuleWorker(this.#shared));
    this.#shared = {
      url,
      loadTimeoutMs: spec.loadTimeoutMs ?? DEFAULT_LOAD_TIMEOUT_MS,
      pool,
      loadOutput: [],
      stuckThreads: 0,
    };
  }

  /** Loads the module in the first slot; throws a UsageError when that fails. */
  async preload(): Promise<void> {
    const { pool } = this.#shared;
    const worker = pool.spawn();
    try {
      await worker.loaded;
    } catch (error) {
      pool.kill(worker);
      throw new UsageError(`--run ${this.#spec.path}: ${(error as Error).message}`);
    }
    pool.loaded(worker);
  }

  run({ items: [item], log }: Job): RunningJob {
    const { loadOutput } = this.#shared;
    if (loadOutput) {
      // Output of the module's top-level code at start-up, logged with the first job's
      // logger but without its message id: no job was running then.
      const loadLog = log.with({ message_id: undefined, phase: "module load" });
      for (const { stream, line } of loadOutput) loadLog.info(line, { stream });
      this.#shared.loadOutput = undefined;
    }
    return this.#shared.pool.acquire().run(this.#nextId++, item, this.#spec, log);
  }

  close(): Promise<void> {
    this.#shared.pool.close();
    return Promise.resolve();
  }
}

/** The job a module slot runs. */
interface ModuleJob {
  id: number;
  log: Logger;
  /** When the oldest terminate request not answered yet was sent (`performance.now()`). */
  unansweredSince: number | undefined;
  /** Resolves the job's `done`. */
  end(report: JobReport): void;
}

/**
 * How a module job ended: the reason it failed (and the module's stack, when it
 * threw), or that its Web Worker was ended.
 */
export type ModuleEnding = { error?: string; stack?: string; killed?: boolean };

/**
 * A job's report: its message succeeded when `run()` returned. A Web Worker ended
 * by a final stop gets `signal: "SIGKILL"` in the end line, as an `--exec` job
 * killed after its grace does, so one query finds both (README). A module has no
 * exit code, so the end line has none; a thrown error's stack rides on it, so a
 * failure is one line.
 */
export function moduleReport({ error, stack, killed = false }: ModuleEnding): JobReport {
  return {
    results: [{
      succeeded: error === undefined && !killed,
      error,
      stack: killed ? undefined : moduleStack(stack),
    }],
    fields: { signal: killed ? "SIGKILL" : null },
  };
}

/** Where sqsrun's own sources are (in a compiled binary too: its virtual root). */
const SQSRUN_SOURCES = new URL("../../", import.meta.url).href;

/**
 * The stack of an error a module threw, with only the module's own frames: those
 * of sqsrun's host (`src/`) and of Deno's internals (`ext:`, `node:`) say nothing
 * to the module's author. Undefined when nothing is left of it.
 */
export function moduleStack(
  stack: string | undefined,
  internal: string = SQSRUN_SOURCES,
): string | undefined {
  if (stack === undefined) return undefined;
  const kept = stack.split("\n").filter((line) => {
    if (!/^\s+at /.test(line)) return true;
    return !line.includes(internal) && !/[( ](ext|node):/.test(line);
  });
  const text = kept.join("\n").trimEnd();
  return text === "" ? undefined : text;
}

/** One Web Worker with the module loaded, running at most one job at a time. */
class ModuleWorker implements SlotResource {
  /** Resolves once the module is loaded; rejects with the reason it cannot be. */
  readonly loaded: Promise<void>;
  #shared: SharedByWorkers;
  #worker: Worker;
  /** Settles `loaded`; a no-op once it did. */
  #settleLoad: (error?: Error) => void = () => {};
  /** The job running, while the slot is busy. */
  #job: ModuleJob | undefined;
  /** Where output goes between jobs: the last job's logger, without its message id. */
  #idleLog: Logger | undefined;

  constructor(shared: SharedByWorkers) {
    this.#shared = shared;
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
    this.loaded = new Promise<void>((resolve, reject) => {
      const { loadTimeoutMs } = shared;
      const timer = setTimeout(() => {
        this.#settleLoad(
          new Error(`the module did not finish loading within ${loadTimeoutMs / 1000} s`),
        );
      }, loadTimeoutMs);
      this.#settleLoad = (error) => {
        this.#settleLoad = () => {};
        clearTimeout(timer);
        if (error) reject(error);
        else resolve();
      };
    });
    // A slot created for a job reports a failed load through that job.
    this.loaded.catch(() => {});
    this.#post({ type: "load", url: shared.url });
  }

  /** Runs one job; its `done` resolves after the slot was given back to the pool. */
  run(id: number, item: JobItem, spec: ModuleSpec, log: Logger): RunningJob {
    this.#idleLog = log.with({ message_id: undefined });
    let end!: (report: JobReport) => void;
    const done = new Promise<JobReport>((resolve) => end = resolve);
    const job: ModuleJob = { id, log, unansweredSince: undefined, end };
    this.#job = job;
    void this.#begin(job, item, spec);
    return { fields: {}, done, stop: (mode) => this.#stop(job, mode) };
  }

  /** Ends the Web Worker now (the pool calls this once the slot is dead). */
  dispose(): void {
    this.#settleLoad(new Error("the module's worker was stopped"));
    this.#worker.terminate();
  }

  /** Ends `job`, if it is still this slot's, and gives the slot back to the pool. */
  #finish(job: ModuleJob, ending: ModuleEnding, reusable: boolean): void {
    if (this.#job !== job) return;
    this.#job = undefined;
    this.#shared.pool.release(this, reusable);
    job.end(moduleReport(ending));
  }

  async #begin(job: ModuleJob, { message, input }: JobItem, spec: ModuleSpec) {
    try {
      await this.loaded;
    } catch (error) {
      return this.#finish(job, { error: `--run ${spec.path}: ${(error as Error).message}` }, false);
    }
    let body: string;
    let bytes: Uint8Array;
    try {
      ({ body, bytes } = await readBody(input.body));
    } catch (error) {
      const reason = `cannot read the job's input: ${(error as Error).message}`;
      return this.#finish(job, { error: reason }, true);
    }
    if (this.#job !== job) return;
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
      const reason = `cannot pass the job to the module: ${(error as Error).message}`;
      this.#finish(job, { error: reason }, true);
    }
  }

  /** A polite stop is a terminate request; a final one ends the Web Worker. */
  #stop(job: ModuleJob, mode: StopMode): void {
    if (this.#job !== job) return;
    if (mode === "polite") {
      job.unansweredSince ??= performance.now();
      this.#post({ type: "terminate", id: job.id });
      return;
    }
    if (
      job.unansweredSince !== undefined &&
      performance.now() - job.unansweredSince > TERMINATE_ANSWER_MS
    ) {
      // The module never got to see the terminate request: its thread is busy in
      // synchronous code. Deno 2.9's Worker.terminate() cannot interrupt that
      // (denoland/deno#35657), so the thread keeps a CPU until sqsrun exits.
      const count = ++this.#shared.stuckThreads;
      job.log.error(
        "the module did not answer terminate requests; its thread cannot be stopped " +
          "and keeps running until sqsrun restarts",
        { stuck_threads: count },
      );
    }
    this.#finish(job, { killed: true }, false);
  }

  #log(): Logger | undefined {
    return this.#job?.log ?? this.#idleLog;
  }

  #post(request: HostRequest, transfer: Transferable[] = []): void {
    this.#worker.postMessage(request, transfer);
  }

  #onReply(reply: HostReply): void {
    const job = this.#job;
    switch (reply.type) {
      case "loaded":
        this.#settleLoad();
        return;
      case "load-error":
        this.#settleLoad(new Error(loadFailureReason(reply.reason, reply.importFailed)));
        return;
      case "output": {
        const log = this.#log();
        if (log) log.info(reply.line, { stream: reply.stream });
        else this.#keepLoadOutput(reply.stream, reply.line);
        return;
      }
      case "done":
        if (!job || job.id !== reply.id) return;
        if (reply.ok) return this.#finish(job, {}, true);
        // One line: the job's end line carries the error and the module's stack.
        return this.#finish(
          job,
          { error: `run() threw: ${reply.error}`, stack: reply.stack },
          true,
        );
      case "terminated":
        if (!job || job.id !== reply.id) return;
        job.unansweredSince = undefined;
        if (reply.error) job.log.warn("terminate() threw", { error: reply.error });
        return;
      case "exit": {
        // The worker is ending: Deno ends only the Web Worker, never sqsrun.
        const what = `the module called ${reply.how}(${reply.how === "close" ? "" : reply.code})`;
        this.#settleLoad(new Error(`${what} while loading`));
        if (job) return this.#finish(job, { error: what }, false);
        this.#log()?.warn(`${what} outside a job; its worker is replaced`);
        this.#shared.pool.kill(this);
        return;
      }
      case "uncaught":
        return this.#onUncaught(reply.error, reply.stack);
    }
  }

  /** Output while no job ever ran in this slot: the first job logs it. */
  #keepLoadOutput(stream: string, line: string): void {
    const kept = this.#shared.loadOutput;
    if (kept && kept.length < MAX_PENDING_LINES) kept.push({ stream, line });
  }

  #onUncaught(error: string, stack: string | undefined): void {
    this.#settleLoad(new Error(`uncaught error while loading: ${error}`));
    const job = this.#job;
    if (job) {
      // A stray error while a job runs is that job's: it fails (its end line says
      // why), and the worker, whose state is now unknown, is replaced before the next job.
      this.#finish(job, { error: `uncaught error in the module: ${error}`, stack }, false);
      return;
    }
    this.#log()?.error("uncaught error in the module outside a job; its worker is replaced", {
      error,
      stack: moduleStack(stack),
    });
    this.#shared.pool.kill(this);
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
