/**
 * A spawner thread (see spawner.ts): it spawns job processes, writes the
 * watchdog's `+` line, the go byte and the body, reads the output and reaps the
 * children, in the order exec.ts explains. It is told what to start and reports
 * what happened; it decides nothing about messages.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { streamChunks } from "./output_lines.ts";
import { openChildStdin, writeToChildStdinNow } from "./isolation.ts";
import { describeError } from "../../errors.ts";
import type { FromSpawner, SpawnRequest, ToSpawner } from "./spawner.ts";

/**
 * Output chunks (up to 64 KiB each) a job may have on their way to the main
 * thread before its pipes wait: enough to keep a flooding job's pipe moving while
 * the main thread logs, few enough to bound what a stalled log holds.
 */
const OUTPUT_CREDIT = 16;
/** How long to wait for output still buffered in pipes after the child exited. */
const OUTPUT_DRAIN_MS = 2_000;

const encoder = new TextEncoder();

interface Child {
  process: Deno.ChildProcess;
  grouped: boolean;
  exited: boolean;
  /** Output messages it may still send before the main thread says there is room. */
  credit: number;
  wake: (() => void)[];
}

const children = new Map<number, Child>();
/** The watchdog's pipe, through a write end of this thread's own. */
let watchdog: Deno.FsFile | undefined;

const post = (message: FromSpawner, transfer: Transferable[] = []) =>
  self.postMessage(message, transfer);

self.onmessage = (event: MessageEvent<ToSpawner>) => {
  const message = event.data;
  switch (message.op) {
    case "init":
      if (message.watchdogPid !== undefined) watchdog = openChildStdin(message.watchdogPid);
      break;
    case "spawn":
      spawn(message.id, message);
      break;
    case "signal":
      signal(message.id, message.name);
      break;
    case "room": {
      const child = children.get(message.id);
      if (child) {
        child.credit++;
        for (const wake of child.wake.splice(0)) wake();
      }
      break;
    }
  }
};

function spawn(id: number, request: SpawnRequest): void {
  let process: Deno.ChildProcess;
  try {
    process = new Deno.Command(request.program, {
      args: request.args,
      env: request.env,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      detached: request.detached,
    }).spawn();
  } catch (error) {
    post({ op: "failed", id, error: `cannot start ${request.program}: ${describeError(error)}` });
    return;
  }
  const pid = process.pid;
  const child: Child = {
    process,
    grouped: request.grouped,
    exited: false,
    credit: OUTPUT_CREDIT,
    wake: [],
  };
  children.set(id, child);
  if (request.grouped) tellWatchdog(`+ ${pid}\n`);
  let first = request.first;
  if (first) {
    const written = writeToChildStdinNow(pid, first);
    first = written === first.length ? undefined : first.subarray(written);
  }
  post({ op: "spawned", id, pid });
  writeBody(process.stdin, first, request.rest);
  const output = Promise.all([
    streamChunks(process.stdout, forward(id, "stdout", child), room(child)),
    streamChunks(process.stderr, forward(id, "stderr", child), room(child)),
  ]);
  process.status.then(async (status) => {
    child.exited = true;
    // The job is over when its leader exits: whatever it left running goes too.
    if (child.grouped) killGroup(pid);
    let drainTimer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      output,
      new Promise((resolve) => drainTimer = setTimeout(resolve, OUTPUT_DRAIN_MS)),
    ]);
    clearTimeout(drainTimer);
    children.delete(id);
    post({
      op: "exited",
      id,
      code: status.signal ? null : status.code,
      signal: status.signal ?? null,
    });
  });
}

/** Writes a line into the watchdog's pipe before returning; a gone watchdog is the main thread's to report. */
function tellWatchdog(line: string): void {
  if (!watchdog) return;
  try {
    watchdog.writeSync(encoder.encode(line));
  } catch {
    watchdog.close();
    watchdog = undefined;
  }
}

function killGroup(pid: number): void {
  try {
    Deno.kill(-pid, "SIGKILL");
  } catch {
    // Gone.
  }
}

function signal(id: number, name: Deno.Signal): void {
  const child = children.get(id);
  if (!child || child.exited) return;
  try {
    if (!child.grouped) throw new Error("no group");
    Deno.kill(-child.process.pid, name);
  } catch {
    // No group yet: a wrapper that has not made its session is signalled itself,
    // through the handle, which refuses once the child was reaped.
    try {
      child.process.kill(name);
    } catch {
      // Gone.
    }
  }
}

/**
 * Returns the taker of one stream's chunks: each goes to the main thread as it
 * was read (moved, not copied), using up one of the job's credits.
 */
function forward(
  id: number,
  stream: "stdout" | "stderr",
  child: Child,
): (chunk: Uint8Array) => void {
  return (chunk) => {
    child.credit--;
    const whole = chunk.byteOffset === 0 && chunk.byteLength === chunk.buffer.byteLength;
    const bytes = whole ? chunk : chunk.slice();
    post({ op: "output", id, stream, chunk: bytes }, [bytes.buffer as ArrayBuffer]);
  };
}

/** The wait before a job's next read: none while it has credit, else until the main thread gives some. */
function room(child: Child): () => Promise<void> | undefined {
  return () => {
    if (child.credit > 0) return undefined;
    return new Promise((resolve) => child.wake.push(resolve));
  };
}

/** Writes the rest of the input through the stdin stream; a job that stops reading is its own business. */
async function writeBody(
  stdin: WritableStream<Uint8Array>,
  first: Uint8Array | undefined,
  rest: Uint8Array,
): Promise<void> {
  const writer = stdin.getWriter();
  try {
    if (first?.length) await writer.write(first);
    if (rest.length) await writer.write(rest);
    await writer.close();
  } catch {
    writer.abort().catch(() => {});
  }
}
