/**
 * `--post URL`: each message is one HTTP POST to a local web app, the way Elastic
 * Beanstalk's worker daemon (sqsd) delivers it, so that an app written for a
 * Beanstalk worker environment runs unchanged: the body byte for byte, the
 * `Content-Type` of `--content-type`, and sqsd's `X-Aws-Sqsd-*` headers with its
 * names and formats. What sqsd does not say (FIFO facts, the sent time, the S3
 * object of `--s3`) goes in `X-Sqsrun-*` headers. A 2xx answer is the message's
 * success; anything else, a broken connection, or no answer before the kill timeout
 * (`-x`, when the request is aborted) is a failure. A 429 or 503 with `Retry-After`
 * says when the message is to come back.
 *
 * No message is taken while the app cannot take it: before the first receive, and
 * again after a delivery could not connect, the runner is not {@linkcode
 * JobRunner.ready} until the app answers: `GET --post-health` with a 2xx, or,
 * without it, a TCP connection to the app's port. With `--post-health`, a message
 * whose delivery could not connect (the app never saw it) waits in hand, its
 * visibility extended, and goes out again once the app is healthy, so a crashed
 * app costs no receive; without it, that message fails and comes back after its
 * back-off.
 *
 * What an app gets is documented in the README ("Web apps (--post)").
 *
 * @module
 */
import { describeError, describeFsError, UsageError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { VERSION } from "../version.ts";
import type { S3ObjectRecord } from "../sources/s3_event.ts";
import type { JobInput } from "../sources/source.ts";
import { sleep } from "../worker/clock.ts";
import type { JobMessage } from "../worker/message.ts";
import type { Job, JobItem, JobReport, JobRunner, RunnerWait, RunningJob } from "./runner.ts";

/** The settings only `--post` reads (besides its URL). */
export interface PostSettings {
  /** `--content-type`: the request's Content-Type; default `application/json`, as Beanstalk's. */
  contentType?: string;
  /** `--post-health PATH`: a path of the app's origin that answers 2xx once it can take work. */
  postHealth?: string;
  /** `--post-hmac HEADER`: the header that carries the HMAC-SHA256 of the body. */
  postHmac?: string;
  /** `--post-hmac-secret-file FILE`: where the HMAC secret is (else SQSRUN_POST_HMAC_SECRET). */
  postHmacSecretFile?: string;
}

/** What the `--post` checks may read of the options. */
export interface PostCheckOptions extends PostSettings {
  args?: string[];
  env?: Record<string, string>;
  shell?: boolean;
}

/** What `--post` runs with, once checked. */
export interface PostSpec {
  /** Where each message goes. */
  url: URL;
  contentType: string;
  /** The health check's URL (the app's origin and `--post-health`), if any. */
  health?: URL;
  /** The HMAC header and its key, if requests are signed. */
  hmac?: { header: string; key: CryptoKey };
}

/** The default Content-Type, Beanstalk's. */
export const DEFAULT_CONTENT_TYPE = "application/json";

/** The environment variable that holds the HMAC secret, unless a file is given. */
export const HMAC_SECRET_ENV = "SQSRUN_POST_HMAC_SECRET";

/**
 * What sqsd sends as its User-Agent, and then sqsrun's own name: an app that
 * looks for `aws-sqsd` (to tell the daemon's requests from others) finds it.
 */
export const USER_AGENT = `aws-sqsd/1.1 (compatible; sqsrun/${VERSION})`;

/** The setting keys only `--post` reads: refused with any other job. */
export const POST_SETTING_KEYS = [
  "content-type",
  "post-health",
  "post-hmac",
  "post-hmac-secret-file",
] as const;

/** How often an app that is not ready is asked again. */
const PROBE_INTERVAL_MS = 500;
/** How long one health request or TCP connect may take. */
const PROBE_TIMEOUT_MS = 5_000;
/** How often a long wait for the app is logged again. */
const WAIT_LOG_INTERVAL_MS = 30_000;
/** The longest Retry-After honoured, in seconds: SQS's longest visibility timeout. */
const MAX_RETRY_AFTER_SECONDS = 43_200;
/** Of an answer's body, at most this much is read to describe a failure. */
const ERROR_BODY_BYTES = 64 * 1024;
/** How long a failure answer's body may take to arrive. */
const ERROR_BODY_MS = 1_000;
/** Of a success's body, at most this much is read (so the connection is reused), then dropped. */
const SUCCESS_BODY_BYTES = 1024 * 1024;
/** The most of a failure answer's body that goes into the log line. */
const ERROR_DETAIL_CHARS = 200;
/** The largest HMAC secret file read. */
const MAX_SECRET_BYTES = 64 * 1024;

/** RFC 9110 `token`: a header name, a media type's parts. */
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const TOKEN_PART = "[!#$%&'*+.^_`|~0-9A-Za-z-]+";
const MEDIA_TYPE = new RegExp(
  `^${TOKEN_PART}/${TOKEN_PART}(\\s*;\\s*${TOKEN_PART}=(${TOKEN_PART}|"[^"\\r\\n]*"))*$`,
);
/** Headers sqsrun sets itself, which `--post-hmac` must not replace. */
const OWN_HEADERS = new Set([
  "content-type",
  "content-length",
  "transfer-encoding",
  "host",
  "connection",
  "user-agent",
]);

const encoder = new TextEncoder();

/** Checks a `--post` target: an http(s) URL with a host and no credentials. Throws a UsageError. */
export function checkPostUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`--post must be an http:// or https:// URL, got '${text}'`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new UsageError(`--post must be an http:// or https:// URL, got '${text}'`);
  }
  if (url.hostname === "") throw new UsageError(`--post ${text}: the URL has no host`);
  if (url.username !== "" || url.password !== "") {
    throw new UsageError(`--post ${text}: the URL must not hold a user name or password`);
  }
  return url;
}

/** Checks `--content-type`: a media type such as `application/json; charset=utf-8`. */
export function checkContentType(text: string): string {
  const value = text.trim();
  if (value === "") throw new UsageError("--content-type must not be empty");
  if (!MEDIA_TYPE.test(value)) {
    throw new UsageError(
      `--content-type must be a media type such as application/json, got '${text}'`,
    );
  }
  return value;
}

/** Resolves `--post-health PATH` against the origin of `url`; throws a UsageError. */
export function healthUrl(path: string, url: URL): URL {
  if (!path.startsWith("/") || path.startsWith("//") || /[\s\\]/.test(path)) {
    throw new UsageError(
      `--post-health must be a path of the --post URL's origin, such as /health, got '${path}'`,
    );
  }
  const health = new URL(path, url.origin);
  if (health.origin !== url.origin) {
    throw new UsageError(`--post-health ${path}: not a path of ${url.origin}`);
  }
  return health;
}

/** Checks the `--post-hmac` header name. */
function checkHmacHeader(name: string): string {
  const lower = name.toLowerCase();
  if (!TOKEN.test(name)) {
    throw new UsageError(`--post-hmac must be a header name such as X-Signature, got '${name}'`);
  }
  if (OWN_HEADERS.has(lower) || lower.startsWith("x-aws-sqsd-") || lower.startsWith("x-sqsrun-")) {
    throw new UsageError(`--post-hmac ${name}: sqsrun sets that header itself; choose another`);
  }
  return name;
}

/**
 * The checks of `--post` as soon as the options are known: the URL, the
 * Content-Type, the health path, the HMAC header, and the options that mean
 * nothing to a web request. Throws a UsageError.
 */
export function checkPostOptions(target: string, options: PostCheckOptions): void {
  const url = checkPostUrl(target);
  if (options.contentType !== undefined) checkContentType(options.contentType);
  if (options.postHealth !== undefined) healthUrl(options.postHealth, url);
  if (options.postHmac !== undefined) checkHmacHeader(options.postHmac);
  if (options.postHmacSecretFile !== undefined && options.postHmac === undefined) {
    throw new UsageError("--post-hmac-secret-file only applies with --post-hmac HEADER");
  }
  if ((options.args ?? []).length > 0) {
    throw new UsageError("--post sends no arguments: nothing may follow --");
  }
  if (options.shell) throw new UsageError("--shell only applies to --exec, not --post");
  if (Object.keys(options.env ?? {}).length > 0) {
    throw new UsageError("--env sets a job's environment; a --post request has none");
  }
}

/**
 * Reads the HMAC secret: the file's bytes (without one final newline), else the
 * environment variable's. Never a flag's value, which others could read in `ps`.
 */
async function readSecret(file: string | undefined): Promise<Uint8Array> {
  if (file === undefined) {
    const value = Deno.env.get(HMAC_SECRET_ENV);
    if (value === undefined) {
      throw new UsageError(
        `--post-hmac needs a secret: set ${HMAC_SECRET_ENV} or give --post-hmac-secret-file FILE`,
      );
    }
    if (value === "") throw new UsageError(`--post-hmac: ${HMAC_SECRET_ENV} is empty`);
    return encoder.encode(value);
  }
  let bytes: Uint8Array;
  try {
    // Only a regular file of sane size: `/dev/zero` or a FIFO must not eat memory or hang.
    const info = await Deno.stat(file);
    if (!info.isFile) {
      throw new UsageError(`--post-hmac-secret-file ${file}: not a regular file`);
    }
    if (info.size > MAX_SECRET_BYTES) {
      throw new UsageError(
        `--post-hmac-secret-file ${file}: ${info.size} bytes; a secret is at most ${MAX_SECRET_BYTES}`,
      );
    }
    bytes = await Deno.readFile(file);
  } catch (error) {
    if (error instanceof UsageError) throw error;
    throw new UsageError(`--post-hmac-secret-file ${file}: cannot read: ${describeFsError(error)}`);
  }
  // `echo secret > file` leaves a newline that is not part of the secret.
  let end = bytes.length;
  if (end > 0 && bytes[end - 1] === 0x0a) end--;
  if (end > 0 && bytes[end - 1] === 0x0d) end--;
  if (end === 0) throw new UsageError(`--post-hmac-secret-file ${file}: the file is empty`);
  return bytes.subarray(0, end);
}

/** Checks the options and reads the secret: what the runner is built from. Throws a UsageError. */
export async function postSpec(target: string, options: PostCheckOptions): Promise<PostSpec> {
  checkPostOptions(target, options);
  const url = checkPostUrl(target);
  const spec: PostSpec = {
    url,
    contentType: options.contentType === undefined
      ? DEFAULT_CONTENT_TYPE
      : checkContentType(options.contentType),
  };
  if (options.postHealth !== undefined) spec.health = healthUrl(options.postHealth, url);
  if (options.postHmac !== undefined) {
    const secret = await readSecret(options.postHmacSecretFile);
    const key = await crypto.subtle.importKey(
      "raw",
      secret as Uint8Array<ArrayBuffer>,
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign"],
    );
    spec.hmac = { header: checkHmacHeader(options.postHmac), key };
  }
  return spec;
}

/** Returns the `--post` runner. */
export function postRunner(spec: PostSpec): JobRunner {
  return new PostRunner(spec);
}

// ---------------------------------------------------------------------------
// Headers

/** The queue's name, the last segment of its URL: what sqsd's `X-Aws-Sqsd-Queue` holds. */
function queueNameOf(queueUrl: string): string {
  try {
    const path = new URL(queueUrl).pathname.replace(/\/+$/, "");
    return decodeURIComponent(path.slice(path.lastIndexOf("/") + 1));
  } catch {
    return queueUrl;
  }
}

/** Formats ms since the epoch as sqsd does: ISO 8601 in UTC, whole seconds (`2014-10-21T11:01:06Z`). */
export function sqsdTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/**
 * A header value from any text: its UTF-8 bytes, one per character, so that the
 * wire carries UTF-8 (Deno's Headers take only Latin-1); undefined for text that
 * no header can carry (CR, LF, NUL).
 */
export function headerValue(text: string): string | undefined {
  if (/[\r\n\0]/.test(text)) return undefined;
  // ASCII, the common case, needs no re-encoding.
  // deno-lint-ignore no-control-regex
  if (/^[\x00-\x7f]*$/.test(text)) return text;
  let value = "";
  for (const byte of encoder.encode(text)) value += String.fromCharCode(byte);
  return value;
}

/** The S3 object of an `--s3` job, from its input's context. */
function s3ObjectOf(input: JobInput): S3ObjectRecord | undefined {
  const s3 = input.context.s3;
  return typeof s3 === "object" && s3 !== null ? s3 as S3ObjectRecord : undefined;
}

/**
 * The headers of one message's request: sqsd's, with its names and formats, then
 * sqsrun's `X-Sqsrun-*` for what sqsd does not say; names in lower case, as they
 * go on the wire. `dropped` hears the names of attributes whose value no header
 * can carry. A plain record: fetch copies a `Headers` object at a third more cost.
 */
export function postHeaders(
  message: JobMessage,
  input: JobInput,
  contentType: string,
  dropped: (name: string) => void = () => {},
): Record<string, string> {
  const headers: Record<string, string> = {};
  const set = (name: string, text: string | undefined) => {
    if (text === undefined) return;
    const value = headerValue(text);
    if (value === undefined) dropped(name);
    else headers[name.toLowerCase()] = value;
  };
  set("User-Agent", USER_AGENT);
  set("Content-Type", contentType);
  set("X-Aws-Sqsd-Msgid", message.id);
  set("X-Aws-Sqsd-Queue", queueNameOf(message.queueUrl));
  if (message.firstReceivedAt !== undefined) {
    set("X-Aws-Sqsd-First-Received-At", sqsdTime(message.firstReceivedAt));
  }
  set("X-Aws-Sqsd-Receive-Count", String(message.receiveCount));
  set("X-Aws-Sqsd-Sender-Id", message.senderId);
  // sqsd sends String and Number attributes and drops Binary ones; sqsrun sends those
  // too, in base64, under a name of its own.
  const binary = new Set(message.binaryAttributes ?? []);
  for (const [name, value] of Object.entries(message.attributes)) {
    set(binary.has(name) ? `X-Sqsrun-Binary-Attr-${name}` : `X-Aws-Sqsd-Attr-${name}`, value);
  }
  set("X-Sqsrun-Queue-Url", message.queueUrl);
  if (message.sentTimestamp !== undefined) {
    set("X-Sqsrun-Sent-Timestamp", String(message.sentTimestamp));
  }
  set("X-Sqsrun-Group-Id", message.groupId);
  set("X-Sqsrun-Deduplication-Id", message.deduplicationId);
  set("X-Sqsrun-Sequence-Number", message.sequenceNumber);
  const s3 = s3ObjectOf(input);
  if (s3) {
    set("X-Sqsrun-S3-Bucket", s3.bucket);
    // Any text may be a key (newlines too): it goes URL-encoded, as S3's own events carry it.
    set("X-Sqsrun-S3-Key", encodeURIComponent(s3.key));
    set("X-Sqsrun-S3-Version-Id", s3.versionId);
    set("X-Sqsrun-S3-Size", input.env.SQSRUN_S3_SIZE);
    set("X-Sqsrun-S3-Event-Name", s3.eventName);
  }
  return headers;
}

// ---------------------------------------------------------------------------
// Answers

/**
 * Seconds until the next try, from a `Retry-After` value: a number of seconds or
 * an HTTP date (`Wed, 21 Oct 2015 07:28:00 GMT`, or its obsolete forms); undefined
 * when there is none or it cannot be read. At most 12 hours; a date past is 0.
 */
export function parseRetryAfter(value: string | null, nowMs: number): number | undefined {
  if (value === null) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Math.min(Number(text), MAX_RETRY_AFTER_SECONDS);
  const httpDate = /^[A-Za-z]{3}, \d{2} [A-Za-z]{3} \d{4} \d{2}:\d{2}:\d{2} GMT$/.test(text) ||
    /^[A-Za-z]+, \d{2}-[A-Za-z]{3}-\d{2} \d{2}:\d{2}:\d{2} GMT$/.test(text) ||
    /^[A-Za-z]{3} [A-Za-z]{3} [ \d]\d \d{2}:\d{2}:\d{2} \d{4}$/.test(text);
  if (!httpDate) return undefined;
  // The asctime form has no zone: HTTP dates are always in UTC.
  const at = Date.parse(text.endsWith("GMT") ? text : `${text} GMT`);
  if (!Number.isFinite(at)) return undefined;
  return Math.min(MAX_RETRY_AFTER_SECONDS, Math.max(0, Math.ceil((at - nowMs) / 1000)));
}

/** Reads at most `limit` bytes of `body` (then cancels the rest); resolves what it read. */
async function readSome(
  body: ReadableStream<Uint8Array> | null,
  limit: number,
): Promise<Uint8Array> {
  if (body === null) return new Uint8Array(0);
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let length = 0;
  try {
    while (length < limit) {
      const { value, done } = await reader.read();
      if (done) return concat(chunks, length);
      chunks.push(value);
      length += value.length;
    }
    await reader.cancel().catch(() => {});
  } catch {
    // The connection broke while the body came: what arrived is still worth showing.
  }
  return concat(chunks, length);
}

function concat(chunks: Uint8Array[], length: number): Uint8Array {
  const out = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** The first words of an error answer's body, on one line. */
function errorDetail(bytes: Uint8Array): string {
  const text = new TextDecoder().decode(bytes).replace(/\s+/g, " ").trim();
  return text.length > ERROR_DETAIL_CHARS ? `${text.slice(0, ERROR_DETAIL_CHARS)}...` : text;
}

/** True when a fetch failed before anything was sent: the app never saw the request. */
export function isConnectFailure(error: unknown): boolean {
  const cause = error instanceof Error ? error.cause : undefined;
  const text = `${describeError(error)} ${cause === undefined ? "" : describeError(cause)}`;
  // Deno's (hyper's) words for a failed connect, a failed name lookup included.
  return /client error \(Connect\)|tcp connect error|dns error|Connection refused/i.test(text);
}

/** A fetch failure in a few words: `Connection refused`, `connection closed before message completed`. */
function describeFetchFailure(error: unknown): string {
  const cause = error instanceof Error && error.cause !== undefined ? error.cause : error;
  const text = describeError(cause);
  // Deno: "error sending request for url (...): client error (Connect): tcp connect error: Connection refused (os error 111)"
  const last = text.split(/: (?=[^:]*$)/).at(-1) ?? text;
  return last.replace(/\s*\(os error \d+\)$/, "").trim() || text;
}

// ---------------------------------------------------------------------------
// The runner

/** The reason health gives while the runner waits. */
const WAITING_REASON = "waiting for the app";

/** POSTs each message to the app, one request per job, over pooled keep-alive connections. */
class PostRunner implements JobRunner {
  readonly maxItems = 1;
  readonly details: Record<string, string>;
  #spec: PostSpec;
  #client: Deno.HttpClient;
  #closed = new AbortController();
  /** The app answered its check (or a delivery) since it last failed to connect. */
  #ready = false;
  /** The check in progress, while the app is not known to be ready. */
  #waiting: Promise<void> | undefined;

  constructor(spec: PostSpec) {
    this.#spec = spec;
    // A client of its own: its keep-alive pool serves every request, and closes with it.
    this.#client = Deno.createHttpClient({});
    this.details = {
      content_type: spec.contentType,
      app_check: this.#checkName(),
      ...(spec.hmac ? { hmac_header: spec.hmac.header } : {}),
    };
  }

  ready(_signal: AbortSignal, log: Logger): RunnerWait | undefined {
    if (this.#ready) return undefined;
    return { reason: WAITING_REASON, done: this.#untilReady(log, false) };
  }

  run({ items: [item], log }: Job): RunningJob {
    const stop = new AbortController();
    return {
      fields: {},
      done: this.#deliver(item, log, stop.signal),
      // No request can be asked to end: both stops abort it (the app sees its
      // connection close). A shutdown stops a job only at its deadline, so a request
      // in flight gets the whole --shutdown-timeout first.
      stop: () => stop.abort(),
    };
  }

  close(): Promise<void> {
    this.#closed.abort();
    this.#client.close();
    return Promise.resolve();
  }

  /** What tells that the app is ready: `GET URL` or `TCP host:port`. */
  #checkName(): string {
    const { health, url } = this.#spec;
    return health ? `GET ${health.href}` : `TCP ${url.host}`;
  }

  /** Resolves once the app passed its check (or the runner closed); one check runs at a time. */
  #untilReady(log: Logger, pauseFirst: boolean): Promise<void> {
    this.#waiting ??= this.#checkUntilReady(log, pauseFirst).finally(() => {
      this.#waiting = undefined;
    });
    return this.#waiting;
  }

  async #checkUntilReady(log: Logger, pauseFirst: boolean): Promise<void> {
    const closed = this.#closed.signal;
    const started = performance.now();
    let loggedAt: number | undefined;
    for (let attempt = 0; !closed.aborted; attempt++) {
      // After a failed connect, a check at once would most likely fail the same way.
      if (attempt > 0 || pauseFirst) await sleep(PROBE_INTERVAL_MS, closed);
      if (closed.aborted) return;
      const failure = await this.#check();
      const waitedMs = Math.round(performance.now() - started);
      if (failure === undefined) {
        this.#ready = true;
        log.info("the app is ready", { app_check: this.#checkName(), waited_ms: waitedMs });
        return;
      }
      const now = performance.now();
      if (loggedAt === undefined || now - loggedAt >= WAIT_LOG_INTERVAL_MS) {
        log.warn(
          loggedAt === undefined
            ? "waiting for the app; receiving nothing meanwhile"
            : "still waiting for the app",
          { app_check: this.#checkName(), error: failure, waited_ms: waitedMs },
        );
        loggedAt = now;
      }
    }
  }

  /** Checks the app once: undefined when it is ready, else why not. */
  async #check(): Promise<string | undefined> {
    const { health, url } = this.#spec;
    const signal = AbortSignal.any([this.#closed.signal, AbortSignal.timeout(PROBE_TIMEOUT_MS)]);
    if (health) {
      try {
        const response = await fetch(health, {
          method: "GET",
          headers: { "user-agent": USER_AGENT },
          client: this.#client,
          redirect: "manual",
          signal,
        });
        await readSome(response.body, ERROR_BODY_BYTES);
        if (response.status >= 200 && response.status < 300) return undefined;
        return `GET ${health.pathname} answered ${response.status}`;
      } catch (error) {
        return signal.aborted && !this.#closed.signal.aborted
          ? `GET ${health.pathname} did not answer within ${PROBE_TIMEOUT_MS / 1000} s`
          : describeFetchFailure(error);
      }
    }
    try {
      const connection = await Deno.connect({
        hostname: url.hostname.replace(/^\[(.*)\]$/, "$1"),
        port: Number(url.port || (url.protocol === "https:" ? 443 : 80)),
        signal,
      });
      connection.close();
      return undefined;
    } catch (error) {
      return signal.aborted ? "the connection did not open in time" : describeFetchFailure(error);
    }
  }

  /** The app could not be reached: no more receives until it passes its check. */
  #lost(log: Logger): void {
    this.#ready = false;
    // The wait is the worker's, not this message's: its lines carry no message id.
    void this.#untilReady(log.with({ message_id: undefined }), true);
  }

  /** The body to send: bytes, or the S3 object's stream (read whole only to sign it). */
  async #body(input: JobInput): Promise<Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array>> {
    if (typeof input.body === "string") return encoder.encode(input.body);
    if (!this.#spec.hmac) return input.body;
    return new Uint8Array(await new Response(input.body).arrayBuffer());
  }

  async #deliver(item: JobItem, log: Logger, stop: AbortSignal): Promise<JobReport> {
    const failed = (error: string, status: number | null = null): JobReport => ({
      results: [{ succeeded: false, error }],
      fields: { http_status: status },
    });
    let body: Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array> | undefined;
    try {
      // Only an S3 object to be signed is read first; a stop must not wait for it.
      body = await Promise.race([
        this.#body(item.input),
        abortedPromise(stop).then(() => undefined),
      ]);
    } catch (error) {
      return failed(`cannot read the job's input: ${describeError(error)}`);
    }
    if (body === undefined) {
      if (item.input.body instanceof ReadableStream) item.input.body.cancel().catch(() => {});
      return failed("stopped while reading the job's input");
    }
    const headers = postHeaders(
      item.message,
      item.input,
      this.#spec.contentType,
      (name) => log.warn("a header value holds CR, LF or NUL and is not sent", { header: name }),
    );
    if (this.#spec.hmac) {
      const signature = await crypto.subtle.sign(
        "HMAC",
        this.#spec.hmac.key,
        body as Uint8Array<ArrayBuffer>,
      );
      headers[this.#spec.hmac.header.toLowerCase()] = toHex(new Uint8Array(signature));
    }
    for (;;) {
      if (this.#spec.health && !this.#ready) {
        // The app went away: hold the message (its visibility is extended) until the
        // app is healthy again, rather than spend one of its receives.
        await Promise.race([
          this.#untilReady(log.with({ message_id: undefined }), true),
          abortedPromise(stop),
        ]);
        if (stop.aborted) return failed("stopped while waiting for the app");
      }
      let response: Response;
      try {
        response = await fetch(this.#spec.url, {
          method: "POST",
          headers,
          body,
          client: this.#client,
          redirect: "manual",
          signal: stop,
        });
      } catch (error) {
        if (stop.aborted) return failed("the request was aborted before the app answered");
        const reason = describeFetchFailure(error);
        if (!isConnectFailure(error)) return failed(`the request to the app failed: ${reason}`);
        this.#lost(log);
        // Never sent, so safe to send again; a stream (an S3 object) cannot be read twice.
        if (this.#spec.health && body instanceof Uint8Array) {
          log.warn("cannot connect to the app; holding the message until it is healthy", {
            error: reason,
          });
          continue;
        }
        return failed(`cannot connect to the app: ${reason}`);
      }
      return await this.#answer(response, stop);
    }
  }

  /** The report of an answer: 2xx succeeded; 429 and 503 may say when to try again. */
  async #answer(response: Response, stop: AbortSignal): Promise<JobReport> {
    const status = response.status;
    if (status >= 200 && status < 300) {
      // Read to its end in the background, so the connection goes back to the pool;
      // the message is the app's once it answered. An empty body is only released
      // (left alone, it would hold its resource until garbage collection).
      const empty = status === 204 || response.headers.get("content-length") === "0";
      if (empty) response.body?.cancel().catch(() => {});
      else void readSome(response.body, SUCCESS_BODY_BYTES);
      return { results: [{ succeeded: true }], fields: { http_status: status } };
    }
    const retryAfter = status === 429 || status === 503
      ? parseRetryAfter(response.headers.get("retry-after"), Date.now())
      : undefined;
    // The body says why, but an app that never finishes it must not hold the message.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const detail = await Promise.race([
      readSome(response.body, ERROR_BODY_BYTES).then(errorDetail),
      new Promise<string>((resolve) => timer = setTimeout(() => resolve(""), ERROR_BODY_MS)),
      abortedPromise(stop).then(() => ""),
    ]);
    clearTimeout(timer);
    const phrase = response.statusText ? ` ${response.statusText}` : "";
    const where = status >= 300 && status < 400
      ? ` (a redirect to ${response.headers.get("location") ?? "nowhere"}: not followed)`
      : "";
    return {
      results: [{
        succeeded: false,
        error: `the app answered ${status}${phrase}${where}${detail ? `: ${detail}` : ""}`,
        ...(retryAfter === undefined ? {} : { retryAfterSeconds: retryAfter }),
      }],
      fields: {
        http_status: status,
        ...(retryAfter === undefined ? {} : { retry_after_s: retryAfter }),
      },
    };
  }
}

/** Resolves when `signal` aborts (at once if it has); never rejects. */
function abortedPromise(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) =>
    signal.addEventListener("abort", () => resolve(), { once: true })
  );
}

function toHex(bytes: Uint8Array): string {
  let hex = "";
  for (const byte of bytes) hex += byte.toString(16).padStart(2, "0");
  return hex;
}
