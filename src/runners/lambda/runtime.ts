/**
 * One Lambda runtime process and the Runtime API it talks to: the resource of one
 * slot of the `--lambda` runner's pool.
 *
 * The process runs in a process group of its own, made the way `--exec` jobs get
 * theirs (`../process/isolation.ts`), gated on the watchdog knowing the group
 * (`../process/watchdog.ts`), so a worker that dies takes its runtimes with it,
 * and a runtime's end (or its kill) takes everything it started. Each process
 * gets a Runtime API of its own on a port of its own: an answer from a runtime
 * that was replaced can never reach its successor.
 *
 * @module
 */
import type { Logger } from "../../log.ts";
import { describeError } from "../../errors.ts";
import { sleep } from "../../worker/clock.ts";
import { GO_BYTE, isolatedCommand, type Isolation } from "../process/isolation.ts";
import { streamLines } from "../process/output_lines.ts";
import type { JobGroups } from "../process/watchdog.ts";
import type { SlotResource } from "../slot_pool.ts";
import {
  describeRuntimeError,
  type FunctionSettings,
  logStreamName,
  runtimeEnvironment,
} from "./events.ts";
import {
  type Invocation,
  type InvocationOutcome,
  RuntimeApi,
  type ServedRuntimeApi,
  serveRuntimeApi,
} from "./runtime_api.ts";

/** What every runtime of one runner runs. */
export interface RuntimeSpec {
  /** The program, as found on PATH (a path). */
  program: string;
  /** How it was given (`--lambda python3`), for messages. */
  command: string;
  /** ARGV given after `--`. */
  args: string[];
  settings: FunctionSettings;
  /** `--env` pairs: they win over the Lambda variables sqsrun sets. */
  env: Record<string, string>;
  /** How long a runtime may take from its start to its first `/next`. */
  loadTimeoutMs: number;
}

/** What the runtimes of one runner share. */
export interface RuntimeShared {
  spec: RuntimeSpec;
  isolation: Isolation;
  groups: JobGroups;
  /** Where output goes while no invocation runs. */
  idleLog(): Logger;
  /** Called once when a runtime was disposed of (the pool's slot died). */
  disposed(runtime: LambdaRuntime): void;
}

/** How a runtime process ended. */
export interface RuntimeExit {
  code: number | null;
  signal: string | null;
}

/**
 * How one invocation ended, from the runtime's side; `delivered` says whether a
 * runtime that exited had taken the invocation at all.
 */
export type RuntimeAnswer =
  | InvocationOutcome
  | { kind: "exited"; exit: RuntimeExit; delivered: boolean };

/** How long to wait for output still in the pipes once the process exited. */
const OUTPUT_DRAIN_MS = 2_000;
/** Output lines kept for the message of a runtime that fails to start. */
const LAST_LINES = 5;

/** Describes a process's end: `exit code 1`, `signal SIGKILL`. */
export function describeExit(exit: RuntimeExit): string {
  return exit.signal ? `signal ${exit.signal}` : `exit code ${exit.code}`;
}

/** One runtime process with its Runtime API. */
export class LambdaRuntime implements SlotResource {
  /** Resolves at the runtime's first `/next`; rejects with the reason it cannot start. */
  readonly ready: Promise<void>;
  /** Resolves once the process exited and its output was read (never before it started). */
  readonly exited: Promise<RuntimeExit>;
  /** Its pid once it was spawned (the leader of its process group). */
  pid: number | undefined;
  #shared: RuntimeShared;
  #api: RuntimeApi;
  #served: ServedRuntimeApi;
  #child: Deno.ChildProcess | undefined;
  #hasExited = false;
  #disposed = false;
  #spawnTimer: ReturnType<typeof setTimeout> | undefined;
  #loadTimer: ReturnType<typeof setTimeout> | undefined;
  #settleReady: (error?: Error) => void = () => {};
  #resolveExited!: (exit: RuntimeExit) => void;
  #invocationLog: Logger | undefined;
  #lastLines: string[] = [];
  #closed: Promise<void> | undefined;

  /** Starts the runtime `delayMs` from now (a restart's back-off), or at once. */
  constructor(shared: RuntimeShared, delayMs = 0) {
    this.#shared = shared;
    this.ready = new Promise<void>((resolve, reject) => {
      this.#settleReady = (error) => {
        this.#settleReady = () => {};
        clearTimeout(this.#loadTimer);
        if (error) reject(error);
        else resolve();
      };
    });
    // A runtime started for the pool reports a failed start through its owner.
    this.ready.catch(() => {});
    this.exited = new Promise((resolve) => this.#resolveExited = resolve);
    this.#api = new RuntimeApi({
      ready: () => this.#settleReady(),
      initError: (error) => {
        const reason = describeRuntimeError(error.payload, error.errorType);
        this.#log().error("the Lambda runtime reported an init error", { error: reason });
        this.#settleReady(new Error(`the runtime reported an init error: ${reason}`));
      },
      refused: (method, path, status, errorType) => {
        this.#log().warn("the Lambda runtime made a request the Runtime API refused", {
          method,
          path,
          status,
          error_type: errorType,
          pid: this.pid,
        });
      },
    });
    this.#served = serveRuntimeApi(this.#api);
    if (delayMs > 0) this.#spawnTimer = setTimeout(() => this.#spawn(), delayMs);
    else this.#spawn();
  }

  /** `127.0.0.1:PORT` of its Runtime API. */
  get address(): string {
    return this.#served.address;
  }

  /**
   * Hands one invocation to the runtime; resolves with its answer, or with its
   * exit if it died first. Its output meanwhile goes to `log`.
   */
  async invoke(invocation: Invocation, log: Logger): Promise<RuntimeAnswer> {
    this.#invocationLog = log;
    try {
      return await Promise.race([
        this.#api.invoke(invocation),
        this.exited.then((exit): RuntimeAnswer => ({
          kind: "exited",
          exit,
          delivered: this.#api.delivered,
        })),
      ]);
    } finally {
      this.#api.cancel();
      this.#invocationLog = undefined;
    }
  }

  /** Sends `name` to the runtime's whole process group (its own process on Windows). */
  signal(name: "SIGTERM" | "SIGKILL"): void {
    const child = this.#child;
    if (!child || (this.#hasExited && name !== "SIGKILL")) return;
    const grouped = this.#shared.isolation.kind !== "none";
    try {
      if (!grouped) child.kill(name);
      else Deno.kill(-child.pid, name);
    } catch {
      // No group yet (a wrapper that has not made its session): signal the wrapper,
      // through the handle, which refuses once Deno reaped it.
      if (grouped && !this.#hasExited) {
        try {
          child.kill(name);
        } catch {
          // Gone.
        }
      }
    }
  }

  /** SIGTERM to its group, SIGKILL `graceMs` later if it still runs; resolves once it exited. */
  async stop(graceMs: number): Promise<void> {
    if (!this.#child) return;
    this.signal("SIGTERM");
    const ended = this.exited.then(() => true);
    if (await Promise.race([ended, sleep(graceMs).then(() => false)])) return;
    this.signal("SIGKILL");
    await Promise.race([ended, sleep(OUTPUT_DRAIN_MS)]);
  }

  /** Kills the process group now and closes the Runtime API (the pool calls this once). */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    clearTimeout(this.#spawnTimer);
    this.#settleReady(new Error("the runtime was stopped"));
    this.signal("SIGKILL");
    if (!this.#child) this.#resolveExited({ code: null, signal: null });
    this.#closed = this.#served.close();
    this.#shared.disposed(this);
  }

  /** Resolves once the Runtime API's listener is closed (after dispose). */
  closed(): Promise<void> {
    return this.#closed ?? Promise.resolve();
  }

  /** The last lines the runtime printed, for the message of a failed start. */
  get lastLines(): readonly string[] {
    return this.#lastLines;
  }

  #log(): Logger {
    return this.#invocationLog ?? this.#shared.idleLog();
  }

  #spawn(): void {
    this.#spawnTimer = undefined;
    if (this.#disposed) return;
    const { spec, isolation, groups } = this.#shared;
    const env = runtimeEnvironment(
      spec.settings,
      this.address,
      logStreamName(new Date()),
      spec.env,
    );
    let program = spec.program;
    let args = spec.args;
    if (isolation.kind !== "none") ({ program, args } = isolatedCommand(isolation, program, args));
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(program, {
        args,
        env,
        stdin: isolation.kind === "none" ? "null" : "piped",
        stdout: "piped",
        stderr: "piped",
        detached: isolation.kind === "detached",
      }).spawn();
    } catch (error) {
      this.#hasExited = true;
      this.#resolveExited({ code: null, signal: null });
      this.#settleReady(new Error(`cannot start ${spec.command}: ${describeError(error)}`));
      return;
    }
    this.#child = child;
    this.pid = child.pid;
    const grouped = isolation.kind !== "none";
    if (grouped) {
      // The go byte waits until the watchdog's pipe holds the group (see exec.ts):
      // from then on, sqsrun's death kills the runtime.
      const covered = groups.add(child.pid);
      const gated = isolation.gated;
      void (async () => {
        await covered;
        const writer = child.stdin.getWriter();
        if (gated) await writer.write(new Uint8Array([GO_BYTE]));
        await writer.close();
      })().catch(() => {});
    }
    this.#loadTimer = setTimeout(() => {
      this.#settleReady(
        new Error(
          `the runtime did not ask for an invocation (GET /${"2018-06-01"}/runtime/invocation/next) ` +
            `within ${spec.loadTimeoutMs / 1000} s of its start`,
        ),
      );
    }, spec.loadTimeoutMs);
    const emit = (stream: string) => (line: string) => {
      this.#lastLines.push(line.length > 300 ? `${line.slice(0, 300)}...` : line);
      if (this.#lastLines.length > LAST_LINES) this.#lastLines.shift();
      const log = this.#log();
      log.info(line, this.#api.initialized ? { stream } : { stream, phase: "init" });
    };
    const outputRoom = () => this.#log().outputRoom?.();
    const output = Promise.all([
      streamLines(child.stdout, emit("stdout"), outputRoom),
      streamLines(child.stderr, emit("stderr"), outputRoom),
    ]);
    child.status.then(async (status) => {
      this.#hasExited = true;
      // Whatever the runtime left running goes with it.
      this.signal("SIGKILL");
      if (grouped) groups.remove(child.pid);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        output,
        new Promise((resolve) => timer = setTimeout(resolve, OUTPUT_DRAIN_MS)),
      ]);
      clearTimeout(timer);
      const exit = { code: status.signal ? null : status.code, signal: status.signal ?? null };
      const last = this.#lastLines.at(-1);
      this.#settleReady(
        new Error(
          `the runtime exited (${describeExit(exit)}) before asking for an invocation` +
            (last ? `; its last line: ${JSON.stringify(last)}` : ""),
        ),
      );
      this.#resolveExited(exit);
    });
  }
}
