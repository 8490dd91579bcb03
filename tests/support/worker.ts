/**
 * Runs the sqsrun worker as a user would (a child process), collects its JSON log
 * lines, and waits for conditions on them and on the queue.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { runtimeFlags } from "../../src/permissions.ts";

/** Absolute, so a worker may run in any directory (`cwd`), e.g. to resolve `--run ./job.ts`. */
const MAIN = fileURLToPath(new URL("../../src/main.ts", import.meta.url));

/** One parsed JSON log line. */
export type LogLine = Record<string, unknown> & { msg: string; level: string };

/** A worker process under test. */
export interface WorkerProcess {
  child: Deno.ChildProcess;
  pid: number;
  /** Every JSON log line so far. */
  lines: LogLine[];
  /** Text the worker wrote to stderr so far. */
  stderr(): string;
  /** Resolves with the first log line matching `predicate`; rejects after `timeoutMs`. */
  waitForLine(predicate: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** Sends a signal to the worker. */
  signal(name: Deno.Signal): void;
  /** Resolves with the exit status; kills the worker with SIGKILL after `timeoutMs`. */
  exit(timeoutMs?: number): Promise<Deno.CommandStatus>;
  /** Stops the worker (SIGTERM, then SIGKILL) if it still runs; for `finally` blocks. */
  stop(): Promise<void>;
}

/** How to start a worker. */
export interface StartWorkerOptions {
  /** Environment of the worker (AWS endpoint and credentials). */
  env: Record<string, string>;
  /** Working directory. */
  cwd?: string;
  /**
   * Run with the compiled binary's permissions (`runtimeFlags()`) instead of `-A`, so a
   * permission the binary lacks fails the test.
   */
  binaryPermissions?: boolean;
}

/** Starts `sqsrun ARGS` with JSON logs on stdout. */
export function startWorker(args: string[], options: StartWorkerOptions): WorkerProcess {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...(options.binaryPermissions ? runtimeFlags() : ["-A"]),
      "--quiet",
      MAIN,
      "--log-format",
      "json",
      ...args,
    ],
    env: options.env,
    cwd: options.cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: LogLine[] = [];
  const listeners = new Set<() => void>();
  let stderrText = "";
  let exited = false;
  const status = child.status.then((value) => {
    exited = true;
    return value;
  });

  (async () => {
    const decoder = new TextDecoder();
    let pending = "";
    for await (const chunk of child.stdout) {
      pending += decoder.decode(chunk, { stream: true });
      let newline = pending.indexOf("\n");
      while (newline !== -1) {
        const text = pending.slice(0, newline);
        pending = pending.slice(newline + 1);
        newline = pending.indexOf("\n");
        if (!text.trim()) continue;
        try {
          lines.push(JSON.parse(text));
        } catch {
          lines.push({ msg: text, level: "raw" });
        }
      }
      for (const listener of listeners) listener();
    }
  })();
  (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of child.stderr) stderrText += decoder.decode(chunk, { stream: true });
  })();

  const worker: WorkerProcess = {
    child,
    pid: child.pid,
    lines,
    stderr: () => stderrText,
    waitForLine(predicate, timeoutMs = 30_000) {
      const found = lines.find(predicate);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          listeners.delete(check);
          reject(
            new Error(
              `no matching log line within ${timeoutMs} ms; last lines:\n` +
                lines.slice(-15).map((line) => JSON.stringify(line)).join("\n") +
                `\nstderr: ${stderrText.slice(-2000)}`,
            ),
          );
        }, timeoutMs);
        const check = () => {
          const line = lines.find(predicate);
          if (!line) return;
          clearTimeout(timer);
          listeners.delete(check);
          resolve(line);
        };
        listeners.add(check);
      });
    },
    signal(name) {
      if (!exited) child.kill(name);
    },
    async exit(timeoutMs = 60_000) {
      const timer = setTimeout(() => worker.signal("SIGKILL"), timeoutMs);
      try {
        return await status;
      } finally {
        clearTimeout(timer);
      }
    },
    async stop() {
      if (exited) return;
      worker.signal("SIGTERM");
      const timer = setTimeout(() => worker.signal("SIGKILL"), 15_000);
      await status;
      clearTimeout(timer);
    },
  };
  return worker;
}

/**
 * `error` with the last log lines and stderr of each worker added to its message,
 * so that a test failing on a busy CI machine says what its workers were doing.
 */
export function withWorkerTails(error: unknown, workers: readonly WorkerProcess[]): Error {
  const tails = workers.map((worker) =>
    `worker ${worker.pid}, last lines:\n` +
    worker.lines.slice(-15).map((line) => JSON.stringify(line)).join("\n") +
    `\nstderr: ${worker.stderr().slice(-2000)}`
  );
  const message = error instanceof Error ? error.message : String(error);
  return new Error([message, ...tails].join("\n"), { cause: error });
}

/** Polls `condition` every 100 ms until it holds; throws after `timeoutMs`. */
export async function waitUntil(
  what: string,
  condition: () => boolean | Promise<boolean>,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
}

/** Returns true while a process with this pid exists. */
export function processAlive(pid: number): boolean {
  try {
    Deno.kill(pid, "SIGCONT");
    return true;
  } catch {
    return false;
  }
}
