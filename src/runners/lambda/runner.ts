/**
 * `--lambda`: an unchanged AWS Lambda SQS handler, run by its own runtime client
 * (awslambdaric, aws-lambda-ric, aws-lambda-go, a shell `bootstrap`) through the
 * Lambda Runtime API that sqsrun serves on loopback.
 *
 * `-c N` runtime processes are the slots of a slot pool (`../slot_pool.ts`), each
 * with its own Runtime API and one invocation at a time, as in Lambda. A job is
 * one invocation: a batch of up to `--batch-size` messages as the SQS event
 * Lambda sends (`events.ts`), and the handler's answer says what became of each
 * message (`batchItemFailures`, with the FIFO cut).
 *
 * The runtimes start before anything is received, and the receive loop asks
 * {@linkcode JobRunner.ready} before each receive, so no message is taken while
 * no runtime can run it. A runtime that exits, crashes, overruns its deadline or
 * breaks the protocol fails its batch, dies, and is replaced, with a back-off
 * while replacements keep dying.
 *
 * @module
 */
import { resolveRegion } from "../../aws.ts";
import { describeError, UsageError } from "../../errors.ts";
import type { LogFields } from "../../log.ts";
import { backoffDelay } from "../../worker/backoff.ts";
import { detectIsolation, findExecutable, type Isolation } from "../process/isolation.ts";
import { type JobGroups, NO_WATCHDOG, startWatchdog } from "../process/watchdog.ts";
import type {
  Job,
  JobReport,
  JobRunner,
  MessageResult,
  RunnerWait,
  RunningJob,
  StopMode,
} from "../runner.ts";
import { SlotPool } from "../slot_pool.ts";
import { DeferredLogger } from "./deferred_log.ts";
import {
  batchResults,
  batchTraceId,
  describeRuntimeError,
  functionArn,
  functionNameFor,
  type FunctionSettings,
  queueIdentity,
  sqsEvent,
} from "./events.ts";
import {
  describeExit,
  LambdaRuntime,
  type RuntimeAnswer,
  type RuntimeShared,
  type RuntimeSpec,
} from "./runtime.ts";

/** What `--lambda` runs, and how. */
export interface LambdaSpec {
  /** The runtime's program (`python3`, `./bootstrap`), found on PATH like `--exec`'s. */
  command: string;
  /** ARGV given after `--` (`-m awslambdaric app.handler`). */
  args: string[];
  /** `--env` pairs: they override the Lambda variables sqsrun sets. */
  env: Record<string, string>;
  /** `--handler`: `_HANDLER`; default: the last ARGV word, else the program's file name. */
  handler?: string;
  /** `-c`: how many runtimes run. */
  concurrency: number;
  /** `--batch-size`: most messages per invocation. */
  batchSize: number;
  /** `--kill-grace`, seconds: how long a runtime has between SIGTERM and SIGKILL at exit. */
  killGrace: number;
  /** `-q`: the queue (name or URL), for the function's name. */
  queue?: string;
  /** What the SQS client's region is resolved from. */
  region?: string;
  endpointUrl?: string;
  /**
   * How long a runtime may take to ask for its first invocation (`-x`, as for an
   * invocation: an init that hangs is killed like a job that does); default 60 s.
   */
  loadTimeoutMs?: number;
}

/** Default of {@linkcode LambdaSpec.loadTimeoutMs}. */
export const DEFAULT_LOAD_TIMEOUT_MS = 60_000;

/** Back-off of restarts while replacement runtimes keep dying. */
const RESTART_BACKOFF = { floorMs: 250, capMs: 30_000 };

/** The deadline given without a kill timeout (unit tests): Lambda's own limit, 15 minutes. */
const DEFAULT_DEADLINE_MS = 15 * 60_000;

const encoder = new TextEncoder();

/** The `_HANDLER` a runtime gets: `--handler`, else the last ARGV word, else the program's name. */
export function defaultHandler(spec: Pick<LambdaSpec, "command" | "args" | "handler">): string {
  if (spec.handler !== undefined) return spec.handler;
  const last = spec.args.at(-1);
  if (last !== undefined && !last.startsWith("-")) return last;
  return spec.command.slice(spec.command.lastIndexOf("/") + 1);
}

/**
 * Returns the `--lambda` runner after its runtimes started and asked for their
 * first invocation; throws a UsageError (`--lambda COMMAND: <reason>`) when the
 * program is missing or a runtime cannot start (its init error, its exit).
 */
export async function lambdaRunner(spec: LambdaSpec): Promise<JobRunner> {
  const env = Deno.env.get("PATH") ?? "";
  const program = findExecutable(spec.command, spec.env.PATH ?? env);
  if (program === undefined) {
    if (spec.command.includes("/") && exists(spec.command)) {
      throw new UsageError(`--lambda: '${spec.command}' is not an executable file`);
    }
    throw new UsageError(
      `--lambda: program '${spec.command}' not found (give a path or a program on PATH)`,
    );
  }
  const isolation = await detectIsolation();
  const runner = new LambdaRunner(spec, program, isolation);
  await runner.preload();
  return runner;
}

/** The queue's name in `-q` (a name, or the last part of a URL's path). */
function lastPathPart(queue: string | undefined): string {
  if (!queue) return "sqsrun";
  return queue.replace(/\/+$/, "").slice(queue.replace(/\/+$/, "").lastIndexOf("/") + 1);
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** A job's progress, as its stop sees it. */
interface InvocationState {
  runtime: LambdaRuntime | undefined;
  /** The supervisor asked the job to stop. */
  stopped: boolean;
  ended: boolean;
  /** Aborted once the job ended: a wait for a free runtime gives up. */
  over: AbortController;
}

/** Lambda runtimes in a slot pool, one invocation each at a time. */
class LambdaRunner implements JobRunner {
  readonly maxItems: number;
  readonly groupBatches = true;
  readonly details: Record<string, string>;
  #spec: LambdaSpec;
  #settings: FunctionSettings;
  #isolation: Isolation;
  #groups: JobGroups;
  #pool: SlotPool<LambdaRuntime>;
  #shared: RuntimeShared;
  /** The worker's log, once the first job brought it; lines before that wait. */
  #log = new DeferredLogger();
  #live = new Set<LambdaRuntime>();
  #started = false;
  #closing = false;
  /** Runtimes that died since the last invocation that got an answer. */
  #deaths = 0;
  #nextDelayMs = 0;
  /** Jobs waiting for an idle runtime, and receive loops waiting for a live one. */
  #waiters: (() => void)[] = [];

  constructor(spec: LambdaSpec, program: string, isolation: Isolation) {
    this.#spec = spec;
    this.maxItems = spec.batchSize;
    this.#isolation = isolation;
    const name = spec.env.AWS_LAMBDA_FUNCTION_NAME ?? functionNameFor(lastPathPart(spec.queue));
    const region = spec.env.AWS_REGION ??
      resolveRegion({ region: spec.region, queue: spec.queue, endpointUrl: spec.endpointUrl }) ??
      "us-east-1";
    this.#settings = { name, handler: defaultHandler(spec), region, taskRoot: Deno.cwd() };
    this.#groups = isolation.kind === "none" ? NO_WATCHDOG : startWatchdog(this.#log);
    const runtimeSpec: RuntimeSpec = {
      program,
      command: spec.command,
      args: spec.args,
      settings: this.#settings,
      env: spec.env,
      loadTimeoutMs: spec.loadTimeoutMs ?? DEFAULT_LOAD_TIMEOUT_MS,
    };
    this.#shared = {
      spec: runtimeSpec,
      isolation,
      groups: this.#groups,
      idleLog: () => this.#log,
      disposed: (runtime) => this.#disposed(runtime),
    };
    this.#pool = new SlotPool(() => new LambdaRuntime(this.#shared, this.#nextDelayMs));
    this.details = {
      isolation: isolation.kind === "wrapper" ? isolation.name : isolation.kind,
      function_name: name,
      handler: this.#settings.handler ?? "",
      batch_size: String(spec.batchSize),
    };
  }

  /** Starts `-c` runtimes and waits until each asked for work; a UsageError if one cannot. */
  async preload(): Promise<void> {
    const runtimes = Array.from({ length: this.#spec.concurrency }, () => this.#spawn(0));
    try {
      await Promise.all(runtimes.map((runtime) => runtime.ready));
    } catch (error) {
      await this.close();
      throw new UsageError(`--lambda ${this.#spec.command}: ${(error as Error).message}`);
    }
    this.#started = true;
  }

  ready(): RunnerWait | undefined {
    if (this.#closing || this.#pool.count("idle") + this.#pool.count("busy") > 0) return undefined;
    return {
      reason: "waiting for a Lambda runtime",
      done: new Promise((resolve) => this.#waiters.push(resolve)),
    };
  }

  run(job: Job): RunningJob {
    if (!this.#log.attached) {
      this.#log.attach(job.log.with({ message_id: undefined, message_ids: undefined }));
    }
    const requestId = crypto.randomUUID();
    // The supervisor's kill timer started now: the deadline the handler sees.
    const deadlineMs = Date.now() + (job.killAfterMs ?? DEFAULT_DEADLINE_MS);
    const fields: LogFields = { request_id: requestId };
    const state: InvocationState = {
      runtime: undefined,
      stopped: false,
      ended: false,
      over: new AbortController(),
    };
    let end!: (report: JobReport) => void;
    const done = new Promise<JobReport>((resolve) => end = resolve);
    const finish = (results: MessageResult[] | string, extra: LogFields = {}) => {
      if (state.ended) return;
      state.ended = true;
      state.over.abort();
      const all = typeof results === "string"
        ? job.items.map(() => ({ succeeded: false, error: results }))
        : results;
      end({ results: all, fields: { request_id: requestId, ...extra } });
    };
    this.#invoke(job, { requestId, deadlineMs }, state, fields, finish).catch((error) => {
      // A bug here costs this batch one attempt and its runtime, never the worker.
      const runtime = state.runtime;
      if (runtime && this.#pool.stateOf(runtime) === "busy") this.#pool.release(runtime, false);
      finish(`internal error while invoking the handler: ${describeError(error)}`);
    });
    return { fields, done, stop: (mode) => this.#stop(state, mode, finish) };
  }

  async close(): Promise<void> {
    this.#closing = true;
    this.#wake();
    const live = [...this.#live];
    // Drained: no invocation runs any more. The runtimes get SIGTERM, and SIGKILL
    // after --kill-grace if they are still there.
    await Promise.all(live.map((runtime) => runtime.stop(this.#spec.killGrace * 1000)));
    this.#pool.close();
    await Promise.all(live.map((runtime) => runtime.closed()));
    await this.#groups.close();
    if (this.#isolation.kind === "wrapper") this.#isolation.remove();
  }

  /** A new runtime, loading `delayMs` from now; idle once it asked for work. */
  #spawn(delayMs: number): LambdaRuntime {
    this.#nextDelayMs = delayMs;
    const runtime = this.#pool.spawn();
    this.#live.add(runtime);
    runtime.ready.then(
      () => {
        if (this.#pool.stateOf(runtime) !== "loading") return;
        this.#pool.loaded(runtime);
        if (this.#started) this.#log.info("Lambda runtime ready", { pid: runtime.pid });
        this.#wake();
      },
      (error: Error) => {
        // At start-up, preload reports it; later, the runtime is replaced.
        if (!this.#started || this.#closing) return;
        this.#log.error("a Lambda runtime could not start; it is replaced", {
          error: error.message,
          pid: runtime.pid,
        });
        this.#pool.kill(runtime);
      },
    );
    runtime.exited.then((exit) => {
      if (this.#closing || this.#pool.stateOf(runtime) !== "idle") return;
      this.#log.warn("a Lambda runtime exited between invocations; it is replaced", {
        pid: runtime.pid,
        exit: describeExit(exit),
      });
      this.#pool.kill(runtime);
    });
    return runtime;
  }

  /** A runtime's slot died: once started, a replacement takes its place, later each time. */
  #disposed(runtime: LambdaRuntime): void {
    this.#live.delete(runtime);
    // At start-up, preload reports the runtimes that fail; one that ended after it
    // was ready is replaced like any other.
    if (this.#closing) return;
    this.#deaths += 1;
    const delayMs = this.#deaths <= 1 ? 0 : backoffDelay(this.#deaths - 1, RESTART_BACKOFF);
    // Not from inside the pool's own transition.
    queueMicrotask(() => {
      if (this.#closing) return;
      const replacement = this.#spawn(delayMs);
      this.#log.info("starting a Lambda runtime in place of one that ended", {
        delay_ms: delayMs,
        port: replacement.address,
      });
    });
  }

  #wake(): void {
    for (const wake of this.#waiters.splice(0)) wake();
  }

  /** Resolves with an idle runtime, now busy, or undefined once `signal` aborted. */
  async #takeIdle(signal: AbortSignal): Promise<LambdaRuntime | undefined> {
    for (;;) {
      if (signal.aborted) return undefined;
      if (this.#pool.count("idle") > 0) return this.#pool.acquire();
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        signal.addEventListener("abort", () => resolve(), { once: true });
      });
    }
  }

  async #invoke(
    job: Job,
    { requestId, deadlineMs }: { requestId: string; deadlineMs: number },
    state: InvocationState,
    fields: LogFields,
    finish: (results: MessageResult[] | string, extra?: LogFields) => void,
  ): Promise<void> {
    const messages = job.items.map((item) => item.message);
    const queue = queueIdentity(messages[0].queueUrl, this.#settings.region);
    const fifo = messages[0].queueUrl.endsWith(".fifo");
    const invocation = {
      id: requestId,
      event: encoder.encode(JSON.stringify(sqsEvent(messages, queue))),
      deadlineMs,
      functionArn: functionArn(this.#settings.name, this.#settings.region, queue),
      traceId: batchTraceId(messages),
    };
    const log = job.log.with({ request_id: requestId });
    let runtime: LambdaRuntime | undefined;
    let answer: RuntimeAnswer;
    for (;;) {
      runtime = await this.#takeIdle(state.over.signal);
      if (runtime === undefined) return;
      state.runtime = runtime;
      fields.pid = runtime.pid;
      answer = await runtime.invoke(invocation, log);
      // A runtime that exited before it took the invocation (it ended right after
      // its last answer) never ran the batch: another runtime gets it.
      if (answer.kind !== "exited" || answer.delivered || state.stopped) break;
      this.#pool.release(runtime, false);
      state.runtime = undefined;
    }
    if (state.stopped) {
      // The supervisor is ending the job (its deadline, the shutdown): the runtime
      // goes with it whatever it answered, and is replaced.
      const exit = await runtime.exited;
      this.#pool.release(runtime, false);
      return finish("the invocation was stopped", { signal: exit.signal });
    }
    switch (answer.kind) {
      case "response": {
        this.#deaths = 0;
        this.#pool.release(runtime, true);
        const batch = messages.map((message) => ({
          id: message.id,
          fifoGroup: fifo ? message.groupId : undefined,
        }));
        return finish(batchResults(answer.payload, batch));
      }
      case "error":
        this.#deaths = 0;
        this.#pool.release(runtime, true);
        return finish(
          `the handler failed: ${describeRuntimeError(answer.payload, answer.errorType)}`,
        );
      case "too large":
        this.#pool.release(runtime, true);
        return finish("the handler's response was larger than Lambda's 6 MiB limit");
      case "broken":
        this.#pool.release(runtime, false);
        return finish("the runtime's answer broke off; it is replaced");
      case "abandoned":
        // It may still be working on the batch: it must not run it twice at once
        // with a retry, so it is killed and replaced.
        this.#pool.release(runtime, false);
        return finish(
          "the runtime asked for its next invocation without answering this one; it is replaced",
        );
      case "exited":
        this.#pool.release(runtime, false);
        return finish(`the runtime exited (${describeExit(answer.exit)}) during the invocation`, {
          signal: answer.exit.signal,
        });
    }
  }

  #stop(
    state: InvocationState,
    mode: StopMode,
    finish: (results: string, extra?: LogFields) => void,
  ): void {
    if (state.ended) return;
    state.stopped = true;
    const runtime = state.runtime;
    if (runtime === undefined) {
      // Still waiting for a runtime: there is nothing to stop but the wait.
      return finish("stopped before a runtime was free to run it");
    }
    runtime.signal(mode === "polite" ? "SIGTERM" : "SIGKILL");
  }
}
