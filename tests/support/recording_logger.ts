/**
 * A Logger that keeps its lines in memory, for unit tests of code that logs.
 *
 * @module
 */
import type { LogFields, Logger, LogLevel } from "../../src/log.ts";

/** One recorded line. */
export interface LogLine {
  level: LogLevel;
  msg: string;
  fields: LogFields;
}

/** A Logger that keeps its lines in memory (shared with the loggers `with` returns). */
export class RecordingLogger implements Logger {
  constructor(readonly lines: LogLine[] = [], readonly base: LogFields = {}) {}
  #push(level: LogLevel, msg: string, fields?: LogFields) {
    this.lines.push({ level, msg, fields: { ...this.base, ...fields } });
  }
  debug(msg: string, fields?: LogFields) {
    this.#push("debug", msg, fields);
  }
  info(msg: string, fields?: LogFields) {
    this.#push("info", msg, fields);
  }
  warn(msg: string, fields?: LogFields) {
    this.#push("warn", msg, fields);
  }
  error(msg: string, fields?: LogFields) {
    this.#push("error", msg, fields);
  }
  with(fields: LogFields): Logger {
    return new RecordingLogger(this.lines, { ...this.base, ...fields });
  }
  reopen() {}
  close(): Promise<void> {
    return Promise.resolve();
  }
  at(level: LogLevel): LogLine[] {
    return this.lines.filter((line) => line.level === level);
  }
}

/** A Logger that keeps nothing, for tests that need one but read no line. */
export const quietLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  with: () => quietLogger,
  reopen() {},
  close: () => Promise.resolve(),
};
