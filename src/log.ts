/**
 * One structured logger for the whole worker: JSON lines or readable text, to
 * stdout or a file that SIGHUP reopens (for logrotate).
 *
 * Nothing on the worker's control path waits for the log: a line is rendered
 * and queued in a bounded buffer, and one writer loop sends what queued meanwhile
 * in batches with asynchronous writes. A stalled reader (journald, a full pipe,
 * a slow disk) fills the buffer; then job output lines are dropped first and the
 * worker's own lines last, both counted, and once the sink drains one WARN line
 * says how many were lost.
 *
 *     log.info() ─ render ─> buffer (≤ 4 Mi chars) ─ writer loop ─ await write(batch) ─> sink
 *                     job output while < ½, worker lines while < 1; the rest is counted
 *
 * JSON lines carry every field. Text lines are for people: the queue URL is named
 * in `worker started` only, and a job's lines begin with its message id's first 8
 * characters (and `stdout|`/`stderr|` for its output), so they line up:
 *
 *     2026-12-01T14:38:15.804Z INFO  7b95ecd4 job started receive_count=1
 *     2026-12-01T14:38:15.891Z INFO  7b95ecd4 stdout| message 7b95ecd4-... (receive #1): ...
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
  /**
   * Reopens the log file (after logrotate moved it) and says so in the new file
   * (`log reopened`); on stdout only says there is nothing to reopen. Never blocks.
   */
  reopen(): void;
  /**
   * Tells `onDropped` now of the lines dropped since its last call, instead of at
   * its next report: a summary read from the metrics then counts them all.
   */
  reportDrops?(): void;
  /**
   * Undefined while job output fits in the buffer; otherwise resolves once it
   * fits again, or once the sink made no progress for a while. A runner awaits
   * it before reading more of a job's output, so a sink that is merely slower
   * than a flooding job slows that job down instead of losing its lines; a
   * stalled one still drops them (counted). The control path never awaits it.
   */
  outputRoom?(): Promise<void> | undefined;
  /**
   * Flushes what is buffered (giving up after a bound, so a stalled sink cannot
   * hold the worker) and closes the log file, if any. Lines logged afterwards
   * are ignored.
   */
  close(): Promise<void>;
}

/**
 * Where the bytes go: stdout or a file by default; a test may give its own.
 * `write` may write less than it was given; the logger reuses `data` once the
 * promise settles, so a sink must not keep it.
 */
export interface LogSink {
  write(data: Uint8Array): Promise<number>;
  /** Opens the file again (SIGHUP); throws to keep writing where it was. */
  reopen?(): Promise<void>;
  close?(): void;
  /** The file's path, for the `log reopened` line. */
  path?: string;
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
  /**
   * Fields that text lines leave out when a logger inherits them from `with()`
   * (JSON keeps them on every line); a line that gives one as its own shows it.
   * Default {@linkcode TEXT_CONTEXT_FIELDS}.
   */
  textContext?: readonly string[];
  /** Clock, for tests. */
  now?: () => Date;
  /**
   * Told the lines dropped since its previous call (job output, worker's own):
   * at most once per {@linkcode DROP_REPORT_INTERVAL_MS} while lines are dropped,
   * and at close. For the metrics; must be cheap and not log.
   */
  onDropped?: (output: number, worker: number) => void;
  /** Bound on the buffered text in characters; default {@linkcode LOG_BUFFER_CHARS}. */
  bufferChars?: number;
  /** How long close() waits for the sink; default {@linkcode LOG_CLOSE_TIMEOUT_MS}. */
  closeTimeoutMs?: number;
  /** Write here instead of stdout or `path` (tests). */
  sink?: LogSink;
}

/**
 * Bound on buffered log text, in UTF-16 code units (what a JS string's length
 * counts; about a byte each for ASCII, at most 3 bytes once encoded). 4 Mi: a
 * few seconds of job output at thousands of lines/s rides out a sink's hiccup,
 * while a stalled sink costs the worker at most a few MiB. Job output may fill
 * half of it, the worker's own lines all of it.
 */
export const LOG_BUFFER_CHARS = 4 * 1024 * 1024;

/**
 * The queue URL is the same on every line of a worker: text names it once, in
 * `worker started` (which gives it as its own field), instead of on every line.
 */
export const TEXT_CONTEXT_FIELDS: readonly string[] = ["queue"];

/** How many characters of a message id text lines show (JSON shows it whole). */
export const TEXT_ID_CHARS = 8;

/** How long close() waits for a slow sink before giving up on what is left. */
export const LOG_CLOSE_TIMEOUT_MS = 2_000;

/** A sink with no write done for this long is stalled: job output is dropped, not waited for. */
export const OUTPUT_STALL_MS = 1_000;

/** How often, at most, onDropped hears of drops. */
export const DROP_REPORT_INTERVAL_MS = 1_000;

/** While drops go on without the buffer draining, the WARN line still comes this often. */
const DROP_LOG_INTERVAL_MS = 10_000;

/**
 * How long the first line after an idle spell waits for others to share its write.
 * At a thousand jobs a second a write per line was about 6 % of the main thread;
 * lines come a few milliseconds later instead.
 */
export const LOG_COALESCE_MS = 5;

/** One write carries up to this many characters (more only for one longer line). */
const BATCH_CHARS = 64 * 1024;

/** Retry delays after a failed write (full disk, EAGAIN): doubling, capped. */
const RETRY_FIRST_MS = 50;
const RETRY_MAX_MS = 5_000;

const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

const encoder = new TextEncoder();

type Timer = ReturnType<typeof setTimeout>;

/** Loggers being closed, so main can wait for their last lines before Deno.exit. */
const closing = new Set<Promise<void>>();

/**
 * Resolves once every logger whose close() was called has flushed or given up
 * (each within its close bound). main awaits it before `Deno.exit`.
 */
export async function logsFlushed(): Promise<void> {
  while (closing.size > 0) await Promise.all([...closing]);
}

function stdoutSink(): LogSink {
  return { write: (data) => Deno.stdout.write(data) };
}

function fileSink(path: string): LogSink {
  const options: Deno.OpenOptions = { append: true, create: true, mode: 0o640 };
  let file: Deno.FsFile;
  try {
    // Synchronous once, at start-up, so a bad path is a one-line error before anything runs.
    file = Deno.openSync(path, options);
  } catch (error) {
    throw new RuntimeError(`-o/--log: cannot open '${path}': ${describeError(error)}`);
  }
  return {
    path,
    write: (data) => file.write(data),
    async reopen() {
      const next = await Deno.open(path, options);
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

/**
 * The buffer and the one writer loop behind a logger and all its `with` children.
 * Lines are queued as strings (no per-line copy); each batch is joined, encoded
 * into one reused buffer and written with one call.
 */
class LogQueue {
  readonly #sink: LogSink;
  readonly #limit: number;
  readonly #outputLimit: number;
  readonly #closeTimeoutMs: number;
  readonly #onDropped: ((output: number, worker: number) => void) | undefined;
  /** Renders the WARN line about drops, and the reopen error, with the root fields. */
  renderOwn: (level: LogLevel, msg: string, fields: LogFields) => string = () => "";

  /** Lines waiting for the writer. */
  #pending: string[] = [];
  /** The array the writer gave back, reused for the next lines. */
  #spare: string[] = [];
  /** Characters buffered: pending plus what the writer holds and has not written yet. */
  #queued = 0;
  #running = false;
  #reopenWanted = false;
  #closed = false;
  /** What close() returned: a second call gets the same. */
  #done: Promise<void> | undefined;
  /** close() gave up: the writer stops at its next step. */
  #abandoned = false;
  /** stdout's reader is gone (EPIPE): nothing will be written again. */
  #dead = false;
  #encoded: Uint8Array | undefined;
  #idle: (() => void) | undefined;
  #wakeRetry: (() => void) | undefined;
  #retryTimer: Timer | undefined;

  // Dropped lines: since the last WARN line, and since the last onDropped call.
  #unloggedOutput = 0;
  #unloggedWorker = 0;
  #firstUnlogged = 0;
  #unsentOutput = 0;
  #unsentWorker = 0;
  #dropTimer: Timer | undefined;

  /** Readers of job output waiting for room (see `outputRoom`). */
  #outputWaiters: (() => void)[] = [];
  #stallTimer: Timer | undefined;
  /** When the sink last finished a write, or was first asked to since it was idle. */
  #progressAt = performance.now();

  constructor(sink: LogSink, options: LoggerOptions) {
    this.#sink = sink;
    this.#limit = Math.max(1, options.bufferChars ?? LOG_BUFFER_CHARS);
    this.#outputLimit = this.#limit / 2;
    this.#closeTimeoutMs = options.closeTimeoutMs ?? LOG_CLOSE_TIMEOUT_MS;
    this.#onDropped = options.onDropped;
  }

  /** False when a line of this kind would be dropped whatever its length (skip rendering). */
  admits(output: boolean): boolean {
    if (this.#closed) return false;
    if (!this.#dead && this.#queued < (output ? this.#outputLimit : this.#limit)) return true;
    this.#drop(output);
    return false;
  }

  /** See {@linkcode Logger.outputRoom}. */
  outputRoom(): Promise<void> | undefined {
    if (this.#closed || this.#dead || this.#hasOutputRoom()) return undefined;
    if (performance.now() - this.#progressAt >= OUTPUT_STALL_MS) return undefined;
    return new Promise((resolve) => {
      this.#outputWaiters.push(resolve);
      this.#armStallTimer();
    });
  }

  /**
   * Room for job output with a quarter of its share to spare: what a reader emits
   * from one chunk of a pipe (64 KiB at most) fits without a drop.
   */
  #hasOutputRoom(): boolean {
    return this.#queued <= this.#outputLimit * 0.75;
  }

  /** Lets the waiting readers go on: there is room, or the sink stalled (they drop then). */
  #wakeOutput(): void {
    clearTimeout(this.#stallTimer);
    this.#stallTimer = undefined;
    const waiters = this.#outputWaiters;
    this.#outputWaiters = [];
    for (const wake of waiters) wake();
  }

  #armStallTimer(): void {
    if (this.#stallTimer !== undefined) return;
    const due = Math.max(0, this.#progressAt + OUTPUT_STALL_MS - performance.now());
    const timer = setTimeout(() => {
      this.#stallTimer = undefined;
      if (performance.now() - this.#progressAt >= OUTPUT_STALL_MS) this.#wakeOutput();
      else if (this.#outputWaiters.length > 0) this.#armStallTimer();
    }, due);
    Deno.unrefTimer(timer as unknown as number);
    this.#stallTimer = timer;
  }

  /** Queues a rendered line, or drops it when it does not fit. */
  push(line: string, output: boolean): void {
    if (this.#queued + line.length > (output ? this.#outputLimit : this.#limit)) {
      this.#drop(output);
      return;
    }
    this.#enqueue(line);
  }

  reopen(): void {
    if (this.#closed) return;
    this.#reopenWanted = true;
    this.#kick();
  }

  close(): Promise<void> {
    if (this.#done) return this.#done;
    this.#closed = true;
    this.#sendDrops();
    const done = this.#done = this.#flushThenClose();
    closing.add(done);
    void done.finally(() => closing.delete(done));
    return done;
  }

  async #flushThenClose(): Promise<void> {
    if (this.#running) {
      let timer: Timer | undefined;
      let gaveUp = false;
      await Promise.race([
        new Promise<void>((resolve) => this.#idle = resolve),
        new Promise<void>((resolve) =>
          timer = setTimeout(() => {
            gaveUp = true;
            resolve();
          }, this.#closeTimeoutMs)
        ),
      ]);
      clearTimeout(timer);
      // Given up, or done: either way the writer must not touch the sink again.
      this.#abandoned = true;
      this.#stopRetry();
      if (gaveUp) this.#sayUnwritten(this.#pending.length);
    }
    this.#pending = [];
    this.#queued = 0;
    try {
      this.#sink.close?.();
    } catch { /* nothing more to do */ }
  }

  /**
   * Says on stderr, once, that lines were left unwritten at exit: the log itself
   * cannot say it. The write is not waited for (stderr may be the same stalled pipe).
   */
  #sayUnwritten(lines: number): void {
    const text = `sqsrun: the log did not drain within ${this.#closeTimeoutMs / 1000} s at exit: ` +
      `${lines} queued line(s) and the one being written were not written\n`;
    Deno.stderr.write(new TextEncoder().encode(text)).catch(() => {});
  }

  #enqueue(line: string): void {
    this.#pending.push(line);
    this.#queued += line.length;
    this.#kick();
  }

  #kick(): void {
    if (this.#running || this.#abandoned) return;
    this.#running = true;
    this.#progressAt = performance.now();
    // Lines logged meanwhile go out in the first batch; once closing, at once.
    if (this.#closed) queueMicrotask(this.#startWriter);
    else setTimeout(this.#startWriter, LOG_COALESCE_MS);
  }

  readonly #startWriter = () => void this.#write();

  #drop(output: boolean): void {
    if (this.#closed) return;
    if (output) {
      this.#unloggedOutput++;
      this.#unsentOutput++;
    } else {
      this.#unloggedWorker++;
      this.#unsentWorker++;
    }
    if (this.#firstUnlogged === 0) this.#firstUnlogged = Date.now();
    if (this.#onDropped && this.#dropTimer === undefined) {
      const timer = setTimeout(this.#sendDropsLater, DROP_REPORT_INTERVAL_MS);
      // The metrics' report must not keep an exiting process alive.
      Deno.unrefTimer(timer as unknown as number);
      this.#dropTimer = timer;
    }
  }

  readonly #sendDropsLater = () => {
    this.#dropTimer = undefined;
    this.#sendDrops();
  };

  /** See {@linkcode Logger.reportDrops}. */
  reportDrops(): void {
    this.#sendDrops();
  }

  #sendDrops(): void {
    clearTimeout(this.#dropTimer);
    this.#dropTimer = undefined;
    if (!this.#onDropped || this.#unsentOutput + this.#unsentWorker === 0) return;
    const output = this.#unsentOutput;
    const worker = this.#unsentWorker;
    this.#unsentOutput = 0;
    this.#unsentWorker = 0;
    try {
      this.#onDropped(output, worker);
    } catch { /* the metrics must not break the log */ }
  }

  /** After a batch: once the buffer drained (or drops go on for long), say what was lost. */
  #logDrops(): void {
    if (this.#unloggedOutput + this.#unloggedWorker === 0) return;
    if (
      this.#queued > this.#limit / 4 &&
      Date.now() - this.#firstUnlogged < DROP_LOG_INTERVAL_MS
    ) return;
    const fields = { job_output_lines: this.#unloggedOutput, worker_lines: this.#unloggedWorker };
    this.#unloggedOutput = 0;
    this.#unloggedWorker = 0;
    this.#firstUnlogged = 0;
    this.#enqueue(this.renderOwn("warn", "log lines dropped: the log could not keep up", fields));
  }

  /** The writer loop: one at a time, batches in order, never throws. */
  async #write(): Promise<void> {
    try {
      for (;;) {
        if (this.#reopenWanted) await this.#reopenSink();
        if (this.#abandoned) return;
        const lines = this.#pending;
        if (lines.length === 0) break;
        this.#pending = this.#spare;
        let i = 0;
        while (i < lines.length) {
          let text = lines[i];
          let j = i + 1;
          while (j < lines.length && text.length + lines[j].length <= BATCH_CHARS) {
            text += lines[j++];
          }
          if (!this.#dead) await this.#writeText(text);
          if (this.#abandoned) return;
          this.#queued -= text.length;
          this.#progressAt = performance.now();
          if (this.#outputWaiters.length > 0 && this.#hasOutputRoom()) {
            this.#wakeOutput();
          }
          // The writer's copy no longer holds what the count has let go of.
          while (i < j) lines[i++] = "";
          this.#logDrops();
          if (this.#reopenWanted) await this.#reopenSink();
        }
        lines.length = 0;
        this.#spare = lines;
      }
    } catch {
      // Nothing here throws by design; if something does, the log must not take the worker down.
      this.#pending = [];
      this.#queued = 0;
    } finally {
      this.#running = false;
      this.#wakeOutput();
      this.#idle?.();
      this.#idle = undefined;
    }
  }

  /** Writes all of `text`, retrying failures with a backoff; gives up only on EPIPE or close. */
  async #writeText(text: string): Promise<void> {
    let data: Uint8Array;
    const room = 3 * BATCH_CHARS;
    if (text.length * 3 <= room) {
      this.#encoded ??= new Uint8Array(room);
      data = this.#encoded.subarray(0, encoder.encodeInto(text, this.#encoded).written);
    } else {
      data = encoder.encode(text);
    }
    let offset = 0;
    let retryMs = RETRY_FIRST_MS;
    while (offset < data.length) {
      try {
        const written = await this.#sink.write(offset === 0 ? data : data.subarray(offset));
        if (this.#abandoned) return;
        if (written > 0) {
          offset += written;
          retryMs = RETRY_FIRST_MS;
          continue;
        }
      } catch (error) {
        if (this.#abandoned) return;
        if (error instanceof Deno.errors.BrokenPipe && !this.#sink.reopen) {
          // stdout's reader is gone for good: stop writing, keep counting what is lost.
          this.#dead = true;
          return;
        }
        // A full disk, EAGAIN, EIO: try again later; logrotate's SIGHUP may help too.
      }
      await this.#retryAfter(retryMs);
      if (this.#abandoned) return;
      retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
      if (this.#reopenWanted) await this.#reopenSink();
    }
  }

  #retryAfter(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.#wakeRetry = resolve;
      this.#retryTimer = setTimeout(resolve, ms);
    });
  }

  #stopRetry(): void {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    this.#wakeRetry?.();
    this.#wakeRetry = undefined;
  }

  async #reopenSink(): Promise<void> {
    this.#reopenWanted = false;
    if (!this.#sink.reopen) {
      // SIGHUP still leaves a trace: an operator who sent it sees it arrived.
      this.#enqueue(this.renderOwn("info", "log not reopened: it goes to stdout", {}));
      return;
    }
    try {
      await this.#sink.reopen();
      this.#dead = false;
      // The new file says why it begins here (after any lines that were waiting).
      this.#enqueue(this.renderOwn("info", "log reopened", { path: this.#sink.path }));
    } catch (error) {
      // Keep logging where we were rather than nowhere, and say why.
      const line = this.renderOwn("error", "cannot reopen the log", {
        error: describeError(error),
      });
      this.#enqueue(line);
    }
  }
}

// ---------------------------------------------------------------------------
// Rendering. Each logger renders its base fields once; a line then costs its
// own fields only. The result is what `{ ts, level, msg, ...base, ...fields }`
// gives through JSON.stringify (or the text form below).

/**
 * Shortens a message id for text lines: its first {@linkcode TEXT_ID_CHARS}
 * characters (a UUID's first group), padded so job lines stay aligned.
 */
export function shortMessageId(id: string): string {
  return id.slice(0, TEXT_ID_CHARS).padEnd(TEXT_ID_CHARS);
}

/** The parts of a text line that fields give: the id column, the stream tag, `key=value`s. */
interface TextParts {
  /** `2042bd8a ` (the shortened message id and a space), or "". */
  id: string;
  /** `stdout| ` for a line of job output, or "". */
  tag: string;
  /** ` key=value` for every other field. */
  rest: string;
}

/**
 * Renders fields for a text line. The message id and the output stream lead the
 * line, before its message, so job lines line up; `hidden` fields are left out.
 */
function textParts(fields: LogFields, hidden?: (key: string) => boolean): TextParts {
  const parts: TextParts = { id: "", tag: "", rest: "" };
  for (const key in fields) {
    const value = fields[key];
    if (value === undefined || hidden?.(key)) continue;
    if (key === "message_id" && typeof value === "string") {
      parts.id = `${shortMessageId(value)} `;
    } else if (key === "stream" && typeof value === "string") {
      parts.tag = `${value}| `;
    } else if (key === "message_ids" && Array.isArray(value)) {
      // A batch's ids as a plain list: `message_ids=2042bd8a,f3948bfa`.
      const ids = value.map((id) => String(id).slice(0, TEXT_ID_CHARS));
      parts.rest += textField(key, ids.join(","));
    } else {
      parts.rest += textField(key, value);
    }
  }
  return parts;
}

function textLine(ts: string, level: LogLevel, msg: string, parts: TextParts): string {
  return `${ts} ${TEXT_LEVELS[level]} ${parts.id}${parts.tag}${msg}${parts.rest}\n`;
}

function formatJson(ts: string, level: LogLevel, msg: string, fields: LogFields): string {
  return JSON.stringify({ ts, level, msg, ...fields }) + "\n";
}

const TEXT_LEVELS: Record<LogLevel, string> = {
  debug: "DEBUG",
  info: "INFO ",
  warn: "WARN ",
  error: "ERROR",
};

function textField(key: string, value: unknown): string {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return ` ${key}=${/[\s"=]/.test(text) ? JSON.stringify(text) : text}`;
}

function jsonFields(fields: LogFields): string {
  let out = "";
  for (const key in fields) {
    const value = JSON.stringify(fields[key]);
    if (value !== undefined) out += `,${JSON.stringify(key)}:${value}`;
  }
  return out;
}

/** Keys that a line's own fields may not share with its base (or ts/level/msg) for the fast path. */
function clashes(base: LogFields, fields: LogFields, baseEmpty: boolean): boolean {
  for (const key in fields) {
    if (key === "ts" || key === "level" || key === "msg") return true;
    if (!baseEmpty && Object.hasOwn(base, key)) return true;
  }
  return false;
}

let lastMs = -1;
let lastIso = "";

/** The current time as ISO 8601, formatted once per millisecond. */
function isoNow(): string {
  const ms = Date.now();
  if (ms !== lastMs) {
    lastMs = ms;
    lastIso = new Date(ms).toISOString();
  }
  return lastIso;
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

/** Creates a logger. Throws RuntimeError when the log file cannot be opened. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const sink = options.sink ?? (options.path ? fileSink(options.path) : stdoutSink());
  const queue = new LogQueue(sink, options);
  const format = options.format ?? defaultLogFormat(options.path);
  const threshold = LEVELS[options.level ?? "info"];
  const clock = options.now;
  const timestamp = clock ? () => clock().toISOString() : isoNow;
  const json = format === "json";
  const context = new Set(options.textContext ?? TEXT_CONTEXT_FIELDS);
  /** The text form of `{ ...base, ...own }`: context fields only when the line gave them. */
  const slowText = (ts: string, level: LogLevel, msg: string, base: LogFields, own: LogFields) =>
    textLine(
      ts,
      level,
      msg,
      textParts({ ...base, ...own }, (key) => context.has(key) && !Object.hasOwn(own, key)),
    );

  const build = (base: LogFields): Logger => {
    const baseEmpty = Object.keys(base).length === 0;
    // A base with ts/level/msg of its own overrides them: leave such loggers to the slow path.
    const fast = !("ts" in base || "level" in base || "msg" in base);
    const baseJson = fast && json ? jsonFields(base) : "";
    const baseText = fast && !json ? textParts(base, (key) => context.has(key)) : undefined;
    const render = (level: LogLevel, msg: string, fields: LogFields | undefined): string => {
      const ts = timestamp();
      if (!fast || (fields !== undefined && clashes(base, fields, baseEmpty))) {
        if (json) {
          return formatJson(ts, level, msg, fields === undefined ? base : { ...base, ...fields });
        }
        return slowText(ts, level, msg, base, fields ?? {});
      }
      if (json) {
        const own = fields === undefined ? "" : jsonFields(fields);
        return `{"ts":"${ts}","level":"${level}","msg":${JSON.stringify(msg)}${baseJson}${own}}\n`;
      }
      if (fields === undefined) return textLine(ts, level, msg, baseText!);
      // No key in both (see clashes): the line's own id and stream take the columns if given.
      const own = textParts(fields);
      return textLine(ts, level, msg, {
        id: own.id || baseText!.id,
        tag: own.tag || baseText!.tag,
        rest: baseText!.rest + own.rest,
      });
    };
    const emit = (level: LogLevel, msg: string, fields?: LogFields) => {
      if (LEVELS[level] < threshold) return;
      // Job output (the runners log each line with its stream) goes first when the sink lags.
      const output = fields !== undefined && fields.stream !== undefined;
      if (!queue.admits(output)) return;
      queue.push(render(level, msg, fields), output);
    };
    return {
      debug: (msg, fields) => emit("debug", msg, fields),
      info: (msg, fields) => emit("info", msg, fields),
      warn: (msg, fields) => emit("warn", msg, fields),
      error: (msg, fields) => emit("error", msg, fields),
      with: (fields) => build({ ...base, ...fields }),
      reopen: () => queue.reopen(),
      reportDrops: () => queue.reportDrops(),
      outputRoom: () => queue.outputRoom(),
      close: () => queue.close(),
    };
  };
  const root = options.fields ?? {};
  const rootLogger = build(root);
  // The logger's own lines (drops, reopen) keep the root fields, in text too.
  queue.renderOwn = (level, msg, fields) =>
    json
      ? formatJson(timestamp(), level, msg, { ...root, ...fields })
      : slowText(timestamp(), level, msg, {}, { ...root, ...fields });
  return rootLogger;
}
