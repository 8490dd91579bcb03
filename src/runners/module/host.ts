/**
 * The inside of one `--run` slot: a Web Worker that imports the user's module
 * once and calls its `run(body, context)` for each job the main thread posts.
 *
 * It keeps the worker process safe from the module: console output and raw
 * stdout/stderr writes become messages (the main thread logs them with the
 * message id), uncaught errors and stray rejections are caught here instead of
 * reaching the main thread, and `Deno.exit()`/`process.exit()`/`close()` are
 * reported before they end this Web Worker (Deno 2.9 ends only the worker, and
 * silently: the main thread would never hear of it).
 *
 * Loaded with `new Worker(new URL("./host.ts", import.meta.url))`; a
 * compiled binary must embed it with `deno compile --include` (see
 * `scripts/build.ts`). It imports only `node:` built-ins for that reason.
 *
 * @module
 */
import { Console } from "node:console";
import process from "node:process";
import { Writable } from "node:stream";

/** What the main thread sends. */
export type HostRequest =
  | { type: "load"; url: string }
  | { type: "run"; id: number; body: string; bytes: Uint8Array; context: Record<string, unknown> }
  | { type: "terminate"; id: number };

/** What this host sends back. */
export type HostReply =
  | { type: "loaded" }
  | { type: "load-error"; reason: string; importFailed: boolean }
  | { type: "output"; stream: "stdout" | "stderr"; line: string }
  | { type: "done"; id: number; ok: true }
  | { type: "done"; id: number; ok: false; error: string; stack?: string }
  | { type: "terminated"; id: number; called: boolean; error?: string }
  | { type: "exit"; code: number; how: string }
  | { type: "uncaught"; error: string; stack?: string };

/** The part of a worker's global scope this host uses (typed apart from the window lib). */
interface WorkerScope {
  postMessage(message: HostReply, transfer?: Transferable[]): void;
  onmessage: ((event: MessageEvent<HostRequest>) => void) | null;
  close(): void;
  addEventListener(type: "error", listener: (event: ErrorEvent) => void): void;
  addEventListener(
    type: "unhandledrejection",
    listener: (event: PromiseRejectionEvent) => void,
  ): void;
}

/** The user's module, as far as the host needs it. */
interface UserModule {
  run(body: string, context: Record<string, unknown>): unknown;
  terminate?: () => unknown;
}

/** Longest piece of output sent as one line; longer lines are split (as for --exec). */
const MAX_LINE_CHARS = 16 * 1024;

const scope = globalThis as unknown as WorkerScope;
const post = (message: HostReply, transfer?: Transferable[]) =>
  scope.postMessage(message, transfer);

/** One line of text: `Name: message` without stack frames. */
function describe(error: unknown): string {
  if (error instanceof Error) {
    const message = (error.message || "").split("\n")[0].trim();
    return message ? `${error.name}: ${message}` : error.name;
  }
  if (error instanceof ErrorEvent) return error.message.split("\n")[0];
  return String(error).split("\n")[0];
}

/**
 * One line for a failed import: Deno's parse errors put "SyntaxError: ..." inside a
 * TypeError and the location on a later line; the location is kept, the frame is not.
 */
function describeLoadError(error: unknown): string {
  if (!(error instanceof Error)) return describe(error);
  let first = (error.message || "").split("\n")[0].trim();
  if (!/^\w*Error: /.test(first)) first = first ? `${error.name}: ${first}` : error.name;
  const lines = [...error.message.split("\n"), ...(error.stack ?? "").split("\n")];
  const at = lines
    .map((line) => /^\s*at (?:.*\()?(file:\/\/[^\s)]+)\)?$/.exec(line)?.[1])
    .find((location) => location !== undefined && !location.includes("/module/host.ts:"));
  return at && !first.includes(at) ? `${first} (at ${at})` : first;
}

function stackOf(error: unknown): string | undefined {
  return error instanceof Error && typeof error.stack === "string" ? error.stack : undefined;
}

// ---------------------------------------------------------------------------
// Output: everything the module prints becomes `output` messages, line by line.

function lineBuffer(stream: "stdout" | "stderr") {
  let pending = "";
  const emit = (line: string) => {
    for (let at = 0; at < line.length || at === 0; at += MAX_LINE_CHARS) {
      post({ type: "output", stream, line: line.slice(at, at + MAX_LINE_CHARS) });
      if (line.length === 0) break;
    }
  };
  return {
    write(text: string) {
      pending += text;
      let newline = pending.indexOf("\n");
      while (newline !== -1) {
        emit(pending.slice(0, newline).replace(/\r$/, ""));
        pending = pending.slice(newline + 1);
        newline = pending.indexOf("\n");
      }
      while (pending.length >= MAX_LINE_CHARS) {
        emit(pending.slice(0, MAX_LINE_CHARS));
        pending = pending.slice(MAX_LINE_CHARS);
      }
    },
    flush() {
      if (pending) emit(pending);
      pending = "";
    },
  };
}

const outputs = { stdout: lineBuffer("stdout"), stderr: lineBuffer("stderr") };
const flushOutput = () => {
  outputs.stdout.flush();
  outputs.stderr.flush();
};

function redirect(stream: "stdout" | "stderr", target: object) {
  const buffer = outputs[stream];
  const decoder = new TextDecoder();
  const writeSync = (data: Uint8Array) => {
    buffer.write(decoder.decode(data, { stream: true }));
    return data.length;
  };
  // Own properties shadow the prototype's methods; node's process.stdout writes through them too.
  Object.defineProperty(target, "writeSync", { value: writeSync, configurable: true });
  Object.defineProperty(target, "write", {
    value: (data: Uint8Array) => Promise.resolve(writeSync(data)),
    configurable: true,
  });
  Object.defineProperty(target, "writable", {
    value: new WritableStream<Uint8Array>({ write: (chunk) => void writeSync(chunk) }),
    configurable: true,
  });
  return new Writable({
    write(chunk: Uint8Array | string, _encoding, callback) {
      buffer.write(typeof chunk === "string" ? chunk : decoder.decode(chunk, { stream: true }));
      callback();
    },
  });
}

// A console of our own: node's Console formats like Deno's and writes to streams we own.
(globalThis as { console: unknown }).console = new Console({
  stdout: redirect("stdout", Deno.stdout),
  stderr: redirect("stderr", Deno.stderr),
});

// ---------------------------------------------------------------------------
// Ways out of the worker: reported first, so the main thread can fail the job
// and replace this worker instead of waiting for the kill timeout.

const realExit = Deno.exit;
const realProcessExit = process.exit.bind(process);
const realClose = scope.close.bind(scope);

function reportExit(code: number, how: string): void {
  flushOutput();
  post({ type: "exit", code, how });
}

Object.defineProperty(Deno, "exit", {
  value: (code?: number): never => {
    reportExit(code ?? 0, "Deno.exit");
    return realExit(code);
  },
  configurable: true,
  writable: true,
});
Object.defineProperty(process, "exit", {
  value: (code?: number): never => {
    const value = typeof code === "number" ? code : 0;
    reportExit(value, "process.exit");
    return realProcessExit(value);
  },
  configurable: true,
  writable: true,
});
scope.close = () => {
  reportExit(0, "close");
  realClose();
};

scope.addEventListener("error", (event) => {
  // Handled here, never passed on: an error reaching the main thread would end sqsrun.
  event.preventDefault();
  flushOutput();
  const error = event.error ?? event;
  post({ type: "uncaught", error: describe(error), stack: stackOf(event.error) });
});
scope.addEventListener("unhandledrejection", (event) => {
  event.preventDefault();
  flushOutput();
  post({ type: "uncaught", error: describe(event.reason), stack: stackOf(event.reason) });
});

// ---------------------------------------------------------------------------
// Requests

let userModule: UserModule | undefined;
let current: { id: number; controller: AbortController } | undefined;

function typeName(value: unknown): string {
  if (value === null) return "null";
  return Array.isArray(value) ? "an array" : `a ${typeof value}`;
}

async function load(url: string): Promise<void> {
  let namespace: Record<string, unknown>;
  try {
    namespace = await import(url);
  } catch (error) {
    flushOutput();
    post({ type: "load-error", reason: describeLoadError(error), importFailed: true });
    return;
  }
  flushOutput();
  const fail = (reason: string) => post({ type: "load-error", reason, importFailed: false });
  if (!("run" in namespace)) {
    return fail(
      "the module has no 'run' export (export function run(body, context) { ... })",
    );
  }
  if (typeof namespace.run !== "function") {
    return fail(`'run' must be a function, but it is ${typeName(namespace.run)}`);
  }
  if (namespace.terminate !== undefined && typeof namespace.terminate !== "function") {
    return fail(`'terminate' must be a function, but it is ${typeName(namespace.terminate)}`);
  }
  userModule = namespace as unknown as UserModule;
  post({ type: "loaded" });
}

async function run(request: Extract<HostRequest, { type: "run" }>): Promise<void> {
  const controller = new AbortController();
  current = { id: request.id, controller };
  const context = { ...request.context, signal: controller.signal, bytes: request.bytes };
  let reply: HostReply;
  try {
    await userModule!.run(request.body, context);
    reply = { type: "done", id: request.id, ok: true };
  } catch (error) {
    reply = {
      type: "done",
      id: request.id,
      ok: false,
      error: describe(error),
      stack: stackOf(error),
    };
  }
  if (current?.id === request.id) current = undefined;
  flushOutput();
  post(reply);
}

function terminate(id: number): void {
  if (current?.id !== id) return post({ type: "terminated", id, called: false });
  if (!current.controller.signal.aborted) {
    current.controller.abort(new DOMException("the job reached its kill timeout", "AbortError"));
  }
  const hook = userModule?.terminate;
  if (!hook) return post({ type: "terminated", id, called: false });
  const failed = (error: unknown) =>
    post({ type: "terminated", id, called: true, error: describe(error) });
  try {
    // Called every time (-X repeats it), like the Ruby sqsrun's terminate().
    Promise.resolve(hook.call(userModule)).catch(failed);
    post({ type: "terminated", id, called: true });
  } catch (error) {
    failed(error);
  }
}

scope.onmessage = (event) => {
  const request = event.data;
  switch (request.type) {
    case "load":
      void load(request.url);
      break;
    case "run":
      void run(request);
      break;
    case "terminate":
      terminate(request.id);
      break;
  }
};
