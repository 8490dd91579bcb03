/**
 * A logger for what happens before there is one: runners are built (and Lambda
 * runtimes started) before the worker's log opens, so what a runtime prints at
 * start-up, and the watchdog's warnings, wait here, bounded, until the first job
 * brings the worker's logger; from then on every line goes straight through.
 *
 * @module
 */
import type { LogFields, Logger, LogLevel } from "../../log.ts";

/** Most lines kept before a logger is attached; later ones are counted, not kept. */
export const MAX_PENDING_LINES = 200;

interface Shared {
  target: Logger | undefined;
  pending: { level: LogLevel; msg: string; fields: LogFields }[];
  dropped: number;
}

/** A Logger that holds its lines until {@linkcode DeferredLogger.attach}. */
export class DeferredLogger implements Logger {
  #shared: Shared;
  #fields: LogFields;

  constructor(shared?: Shared, fields: LogFields = {}) {
    this.#shared = shared ?? { target: undefined, pending: [], dropped: 0 };
    this.#fields = fields;
  }

  /** True once a logger was attached. */
  get attached(): boolean {
    return this.#shared.target !== undefined;
  }

  /** Sends what was held to `target`, and every later line; a second call is ignored. */
  attach(target: Logger): void {
    const shared = this.#shared;
    if (shared.target) return;
    shared.target = target;
    for (const { level, msg, fields } of shared.pending.splice(0)) target[level](msg, fields);
    if (shared.dropped > 0) {
      target.warn("lines printed before the log opened were dropped", {
        dropped_lines: shared.dropped,
      });
    }
  }

  #line(level: LogLevel, msg: string, fields?: LogFields): void {
    const shared = this.#shared;
    const all = { ...this.#fields, ...fields };
    if (shared.target) return shared.target[level](msg, all);
    if (shared.pending.length < MAX_PENDING_LINES) shared.pending.push({ level, msg, fields: all });
    else shared.dropped++;
  }

  debug(msg: string, fields?: LogFields): void {
    this.#line("debug", msg, fields);
  }
  info(msg: string, fields?: LogFields): void {
    this.#line("info", msg, fields);
  }
  warn(msg: string, fields?: LogFields): void {
    this.#line("warn", msg, fields);
  }
  error(msg: string, fields?: LogFields): void {
    this.#line("error", msg, fields);
  }
  with(fields: LogFields): Logger {
    return new DeferredLogger(this.#shared, { ...this.#fields, ...fields });
  }
  reopen(): void {}
  outputRoom(): Promise<void> | undefined {
    return this.#shared.target?.outputRoom?.();
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}
