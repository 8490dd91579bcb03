/**
 * One structured logger for the whole worker: JSON lines or readable text, to
 * stdout or a file that SIGHUP reopens (for logrotate).
 *
 * @module
 */
import type { LogFormat } from "./config.ts";
import { describeError, RuntimeError } from "./errors.ts";

/** Severity of a log line, lowest first. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** Extra fields of a log line (message_id, exit_code, duration_ms, ...). */
export type LogFields = Record<string, unknown>;

/** Writes structured log lines. */
export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** Returns a logger that adds `fields` to every line. */
  with(fields: LogFields): Logger;
  /** Reopens the log file (after logrotate moved it); a no-op on stdout. */
  reopen(): void;
  /** Closes the log file, if any. */
  close(): void;
}

/** How to build a logger. */
export interface LoggerOptions {
  /** `json` or `text`; by default JSON unless writing to a terminal. */
  format?: LogFormat;
  /** Lowest level written; default `info`. */
  level?: LogLevel;
  /** Append to this file instead of stdout. */
  path?: string;
  /** Fields added to every line (e.g. queue). */
  fields?: LogFields;
  /** Clock, for tests. */
  now?: () => Date;
}

const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

interface Sink {
  write(line: string): void;
  reopen(): void;
  close(): void;
}

const encoder = new TextEncoder();

function writeAll(writer: { writeSync(p: Uint8Array): number }, data: Uint8Array): void {
  let offset = 0;
  while (offset < data.length) offset += writer.writeSync(data.subarray(offset));
}

function stdoutSink(): Sink {
  return {
    write(line) {
      try {
        writeAll(Deno.stdout, encoder.encode(line));
      } catch {
        // A closed stdout (reader gone) must not take the worker down.
      }
    },
    reopen() {},
    close() {},
  };
}

function fileSink(path: string): Sink {
  const open = () => Deno.openSync(path, { append: true, create: true, mode: 0o640 });
  let file: Deno.FsFile;
  try {
    file = open();
  } catch (error) {
    throw new RuntimeError(`-o/--log: cannot open '${path}': ${describeError(error)}`);
  }
  return {
    write(line) {
      try {
        writeAll(file, encoder.encode(line));
      } catch {
        // A full disk must not take the worker down; the next reopen may recover.
      }
    },
    reopen() {
      let next: Deno.FsFile;
      try {
        next = open();
      } catch (error) {
        // Keep logging where we were rather than nowhere, and say why.
        const reason = JSON.stringify(describeError(error));
        try {
          writeAll(
            file,
            encoder.encode(`{"level":"error","msg":"cannot reopen the log","error":${reason}}\n`),
          );
        } catch { /* nowhere left to say it */ }
        return;
      }
      const previous = file;
      file = next;
      try {
        previous.close();
      } catch { /* already closed */ }
    },
    close() {
      try {
        file.close();
      } catch { /* already closed */ }
    },
  };
}

function formatText(ts: string, level: LogLevel, msg: string, fields: LogFields): string {
  const extras = Object.entries(fields)
    .filter(([, value]) => value !== undefined)
    .map(([key, value]) => {
      const text = typeof value === "string" ? value : JSON.stringify(value);
      return `${key}=${/[\s"=]/.test(text) ? JSON.stringify(text) : text}`;
    });
  return [ts, level.toUpperCase().padEnd(5), msg, ...extras].join(" ") + "\n";
}

function formatJson(ts: string, level: LogLevel, msg: string, fields: LogFields): string {
  return JSON.stringify({ ts, level, msg, ...fields }) + "\n";
}

/** Chooses the default format: text for a terminal, JSON otherwise. */
export function defaultLogFormat(path: string | undefined): LogFormat {
  if (path) return "json";
  try {
    return Deno.stdout.isTerminal() ? "text" : "json";
  } catch {
    return "json";
  }
}

/** Creates a logger. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const sink = options.path ? fileSink(options.path) : stdoutSink();
  const format = options.format ?? defaultLogFormat(options.path);
  const threshold = LEVELS[options.level ?? "info"];
  const now = options.now ?? (() => new Date());
  const render = format === "json" ? formatJson : formatText;

  const build = (base: LogFields): Logger => {
    const emit = (level: LogLevel, msg: string, fields?: LogFields) => {
      if (LEVELS[level] < threshold) return;
      sink.write(render(now().toISOString(), level, msg, { ...base, ...fields }));
    };
    return {
      debug: (msg, fields) => emit("debug", msg, fields),
      info: (msg, fields) => emit("info", msg, fields),
      warn: (msg, fields) => emit("warn", msg, fields),
      error: (msg, fields) => emit("error", msg, fields),
      with: (fields) => build({ ...base, ...fields }),
      reopen: () => sink.reopen(),
      close: () => sink.close(),
    };
  };
  return build(options.fields ?? {});
}
