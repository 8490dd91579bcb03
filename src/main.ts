/**
 * Entry point: parse the command line, run the one command, and turn every failure
 * into one line `sqsrun: ...` on stderr with exit code 2 (usage) or 1 (runtime).
 *
 * @module
 */
import { helpText, parseCli } from "./cli.ts";
import { readHelpTopic } from "./docs.ts";
import { type Options, saveConfigFile, type Settings } from "./config.ts";
import {
  describeError,
  describeFsError,
  EXIT_RUNTIME,
  RuntimeError,
  UsageError,
} from "./errors.ts";
import { logsFlushed } from "./log.ts";
import { VERSION } from "./version.ts";
import { isRunnerKind } from "./runners/kinds.ts";
import { runWorker } from "./worker/worker.ts";

const encoder = new TextEncoder();

/**
 * True while the worker runs: it then owns the process and handles stray rejections
 * itself (it logs them and carries on), so the last-resort handler must not exit.
 */
let workerRunning = false;

/** Where main writes; replaceable for tests. */
export interface MainIo {
  /** Writes text to stdout as is. */
  stdout(text: string): void;
  /** Writes text to stderr as is. */
  stderr(text: string): void;
  /** Reads stdin up to `limit` bytes (more means "too large"). */
  readStdin(limit: number): Promise<Uint8Array>;
}

function writeAllSync(writer: { writeSync(p: Uint8Array): number }, text: string): void {
  const data = encoder.encode(text);
  let offset = 0;
  try {
    while (offset < data.length) offset += writer.writeSync(data.subarray(offset));
  } catch (error) {
    // `sqsrun --list | head -1`: the reader is gone, which is not sqsrun's failure.
    if (error instanceof Deno.errors.BrokenPipe) return;
    throw error;
  }
}

/** Lines queued for stderr by {@linkcode writeStderrLater}, not yet written. */
let stderrQueued = 0;
let stderrChain: Promise<unknown> = Promise.resolve();

/**
 * Writes to stderr without waiting for it, one write at a time: while the worker
 * runs, a stalled stderr (journald, a full pipe) must not stop its timers or
 * signals. Beyond a few queued lines more are dropped, so memory stays bounded.
 */
function writeStderrLater(text: string): void {
  if (stderrQueued >= 100) return;
  stderrQueued++;
  const data = encoder.encode(text);
  stderrChain = stderrChain.then(async () => {
    try {
      let offset = 0;
      while (offset < data.length) offset += await Deno.stderr.write(data.subarray(offset));
    } catch { /* stderr is gone: nothing to say it on */ }
    stderrQueued--;
  });
}

/** Reads stdin until EOF or until more than `limit` bytes arrived. */
export async function readStdin(limit: number): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of Deno.stdin.readable) {
    chunks.push(chunk);
    size += chunk.length;
    if (size > limit) break;
  }
  const out = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** The real stdout, stderr and stdin. */
export const processIo: MainIo = {
  stdout: (text) => writeAllSync(Deno.stdout, text),
  stderr: (text) => writeAllSync(Deno.stderr, text),
  readStdin,
};

/** Secret values given on the command line, found without trusting the parser to succeed. */
function secretsIn(argv: string[]): string[] {
  const secrets: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--") break;
    if ((arg === "-s" || arg === "--secret-key") && i + 1 < argv.length) secrets.push(argv[i + 1]);
    else if (arg.startsWith("--secret-key=")) secrets.push(arg.slice("--secret-key=".length));
    else if (arg.startsWith("-s") && !arg.startsWith("--") && arg.length > 2) {
      secrets.push(arg.slice(2));
    }
  }
  return secrets.filter((secret) => secret.length > 0);
}

/** Replaces every secret in `text` with `***`. */
export function redact(text: string, secrets: Iterable<string | undefined>): string {
  let out = text;
  for (const secret of secrets) {
    if (secret) out = out.split(secret).join("***");
  }
  return out;
}

async function writeConfiguration(options: Options, settings: Settings): Promise<void> {
  const path = options.configure!;
  try {
    await saveConfigFile(path, settings);
  } catch (error) {
    throw new RuntimeError(`cannot write configuration file '${path}': ${describeFsError(error)}`);
  }
}

/**
 * Escapes control characters, so text from a hostile endpoint or file cannot move
 * the cursor, retitle the terminal or split the one error line.
 */
export function printable(text: string): string {
  return text.replace(
    CONTROL_CHARACTERS,
    (char) => `\\x${char.charCodeAt(0).toString(16).padStart(2, "0")}`,
  );
}

/** C0 controls but tab, and DEL. */
// deno-lint-ignore no-control-regex
const CONTROL_CHARACTERS = /[\x00-\x08\x0a-\x1f\x7f]/g;

/** Runs the worker until it stops, and lets its last log lines out. */
async function runWorkerToTheEnd(options: Options): Promise<number> {
  workerRunning = true;
  try {
    return await runWorker(options);
  } finally {
    // The worker's last lines (e.g. "worker stopped") may still be on their way
    // to the log; each logger gives up on a stalled sink within its close bound.
    await logsFlushed();
    workerRunning = false;
  }
}

/**
 * Runs sqsrun with the given arguments and resolves to the exit code. Never throws:
 * every failure is printed as one line.
 */
export async function main(argv: string[], io: MainIo = processIo): Promise<number> {
  const secrets = secretsIn(argv);
  const fail = (error: unknown): number => {
    const known = error instanceof UsageError || error instanceof RuntimeError;
    const text = known ? describeError(error) : `unexpected error: ${describeError(error)}`;
    io.stderr(`sqsrun: ${printable(redact(text, secrets))}\n`);
    return known ? error.exitCode : EXIT_RUNTIME;
  };
  try {
    const warn = (message: string) => io.stderr(`sqsrun: ${printable(redact(message, secrets))}\n`);
    const result = await parseCli(argv, { warn });
    if (result.kind === "help") {
      io.stdout(result.topic ? await readHelpTopic(result.topic) : helpText());
      return 0;
    }
    if (result.kind === "version") {
      io.stdout(`sqsrun ${VERSION}\n`);
      return 0;
    }
    const { options, settings } = result;
    if (options.secretKey) secrets.push(options.secretKey);
    switch (options.command) {
      case "configure":
        await writeConfiguration(options, settings);
        return 0;
      default:
        if (isRunnerKind(options.command)) return await runWorkerToTheEnd(options);
        // The admin commands' code is imported only for an admin command: a worker
        // would keep it in memory for as long as it runs.
        return await (await import("./admin.ts")).runAdmin(options, {
          print: (line) => io.stdout(`${line}\n`),
          progress: (line) => io.stderr(`sqsrun: ${printable(redact(line, secrets))}\n`),
          readStdin: io.readStdin,
        });
    }
  } catch (error) {
    return fail(error);
  }
}

if (import.meta.main) {
  // Anything that escapes main (a stray rejection in a library) is still one line, exit 1.
  // A running worker keeps going instead, as it holds messages: it logs stray rejections
  // itself, and an uncaught exception is reported here.
  const last = (error: unknown) => {
    const line = `sqsrun: unexpected error: ${printable(describeError(error))}\n`;
    if (workerRunning) return writeStderrLater(line);
    writeAllSync(Deno.stderr, line);
    Deno.exit(EXIT_RUNTIME);
  };
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    if (!workerRunning) last(event.reason);
  });
  globalThis.addEventListener("error", (event) => {
    event.preventDefault();
    last(event.error);
  });
  Deno.exit(await main(Deno.args));
}
