/**
 * The resolved configuration of one sqsrun invocation, its defaults, and YAML
 * load/save for `-f` and `--configure`.
 *
 * Settings come in layers: each `-f` file in order, then the command line. A
 * layer only holds what it states explicitly ({@linkcode Settings}); merging keeps
 * the last value of each key, and {@linkcode resolveOptions} fills in defaults and
 * derived values once, at the end. `--configure` writes the merged explicit layer,
 * so a derived value (say the kill timeout) keeps following the timeout when a
 * configuration file is edited later, and `-f` reads back the same Options.
 *
 * @module
 */
import { parseAllDocuments, stringify as stringifyYaml } from "yaml";
import { describeFsError, UsageError } from "./errors.ts";
import {
  isRunnerKind,
  onlyOneOf,
  RUNNER_KIND_NAMES,
  RUNNER_KINDS,
  runnerKind,
  type RunnerKindName,
} from "./runners/kinds.ts";

/** What one invocation does. Exactly one is chosen; a runner kind's name runs the worker. */
export type Command =
  | "list"
  | "create"
  | "delete"
  | "attr"
  | "push"
  | "peek"
  | "purge"
  | "redrive"
  | "redrive-status"
  | "redrive-cancel"
  | "configure"
  | RunnerKindName;

/**
 * What each runner kind runs (`exec: COMMAND`, `run: SCRIPT`): the job. A layer
 * or an invocation sets at most one of them.
 */
export type RunnerTargets = { [Name in RunnerKindName]?: string };

/** Returns every runner kind's target of `settings`, unset ones as undefined. */
export function runnerTargets(settings: RunnerTargets): RunnerTargets {
  return Object.fromEntries(RUNNER_KIND_NAMES.map((name) => [name, settings[name]]));
}

/** Output format of the structured logger. */
export type LogFormat = "json" | "text";

/** Exponential back-off of a failed message: `BASE * 2^(receives-1)`, capped at `MAX`. */
export interface Backoff {
  /** Delay in seconds after the first failed receive. */
  base: number;
  /** Upper bound in seconds (at most 43200, the SQS limit). */
  max: number;
}

/** A message attribute given to `--push` with `--message-attr Name=Value`. */
export interface PushAttribute {
  name: string;
  value: string;
}

/** The per-call inputs of `--redrive` and `--redrive-cancel` (not settings: never in a file). */
export interface RedriveInputs {
  /** `--to`: the target queue; unset means the dead-letter queue's one source queue. */
  to?: string;
  /** `--rate`: most messages moved per second (1..500, the move task's own limit). */
  rate?: number;
  /** `--no-wait`: print the move task's handle and exit instead of following it. */
  noWait: boolean;
  /** `--client-side`: receive, send and delete instead of asking SQS for a move task. */
  clientSide: boolean;
  /** `--redrive-cancel HANDLE`. */
  taskHandle?: string;
}

/** Everything an invocation needs, after files and flags were merged and defaults applied. */
export interface Options extends RunnerTargets {
  command: Command;
  // AWS access
  keyId?: string;
  secretKey?: string;
  region?: string;
  endpointUrl?: string;
  profile?: string;
  queue?: string;
  // admin
  attrs: Record<string, string>;
  push?: string;
  groupId?: string;
  dedupId?: string;
  messageAttrs: PushAttribute[];
  counts: boolean;
  json: boolean;
  configure?: string;
  /** Only for `--redrive` and `--redrive-cancel`: absent for every other command. */
  redrive?: RedriveInputs;
  /** `-n/--max-messages` of `--peek` (default 10); absent for every other command. */
  maxMessages?: number;
  // job (besides its runner kind's target)
  args: string[];
  env: Record<string, string>;
  shell: boolean;
  // web apps (`--post`)
  /** `--content-type` of `--post` requests; unset: application/json. */
  contentType?: string;
  /** `--post-health PATH`: what tells that the app can take work. */
  postHealth?: string;
  /** `--post-hmac HEADER`: the header with the HMAC-SHA256 of the body. */
  postHmac?: string;
  /** `--post-hmac-secret-file FILE`: the HMAC secret (else SQSRUN_POST_HMAC_SECRET). */
  postHmacSecretFile?: string;
  // timing, in seconds
  /** `-t`, or the queue's own VisibilityTimeout once the worker read it, or 30. */
  timeout: number;
  extendTimeout: number;
  killTimeout: number;
  killRetry: number;
  killGrace: number;
  interval: number;
  wait: number;
  shutdownTimeout: number;
  /** The timings given in flags or files: a queue's own visibility timeout changes only the others. */
  givenTimings: GivenTimings;
  // worker
  concurrency: number;
  batchSize: number;
  /** `--batch-window`: how long a `--lambda` batch may wait to fill up, seconds; unset: 0. */
  batchWindow?: number;
  /** `--handler`: the `--lambda` runtime's `_HANDLER`. */
  handler?: string;
  /** `--prefetch`: most messages held beyond the running jobs, or "auto" (about a second of work). */
  prefetch: number | "auto";
  backoff?: Backoff;
  maxReceives?: number;
  daemon?: string;
  log?: string;
  logFormat?: LogFormat;
  logLevel: "debug" | "info" | "warn" | "error";
  files: string[];
  // S3 notification jobs
  /** `--s3`: messages are S3 event notifications; each new object is a job. */
  s3: boolean;
  /** `--s3-delete`: delete an object once its job succeeded. */
  s3Delete: boolean;
  /** `--s3-gunzip`: decompress `Content-Encoding: gzip` objects on the way to the job. */
  s3Gunzip: boolean;
  // metrics
  /** `--statsd HOST:PORT` or `off`; unset: DD_AGENT_HOST decides at start-up. */
  statsd?: string;
  /** Prefix of every DogStatsD metric name (default empty, as sqsexec's `job.time`). */
  statsdPrefix: string;
  /** Tags added to every DogStatsD metric (`key:value` or `value`). */
  statsdTags: string[];
  /** `--http [HOST:]PORT`: where /metrics and /healthz listen. */
  http?: string;
}

/** Severity threshold of the logger. */
export type LogLevel = Options["logLevel"];

/** Default values of the settings that have a fixed default (derived ones are computed). */
export const DEFAULTS = {
  timeout: 30,
  killRetry: 60,
  killGrace: 10,
  interval: 1,
  wait: 20,
  concurrency: 1,
  batchSize: 10,
  backoffMax: 900,
  logLevel: "info",
} as const;

/**
 * The default `--backoff`: a failed message waits 5 s, then 10, 20, ... up to 15 min
 * before its next run, so one broken message cannot make a hot loop of receives,
 * errors and log lines. `--backoff off` retries at once, as the Ruby tool did.
 */
export const DEFAULT_BACKOFF: Readonly<Backoff> = Object.freeze({ base: 5, max: 900 });

/** The longest visibility timeout and delay SQS accepts, in seconds. */
export const MAX_VISIBILITY = 43200;
/**
 * The longest duration accepted for the worker's own timers, in seconds. A JavaScript
 * timer longer than 2^31-1 ms fires at once, so anything above this would be a bug.
 */
export const MAX_DURATION = 2_000_000;
/**
 * The largest message body SQS accepts, in bytes (1 MiB since 2025). A queue with a
 * smaller `MaximumMessageSize` refuses more itself, and sqsrun says so in one line.
 */
export const MAX_BODY_BYTES = 1024 * 1024;

/**
 * The explicit settings of one layer (a configuration file or the command line).
 * Every field is optional: absent means "not said here".
 */
export interface Settings extends RunnerTargets {
  keyId?: string;
  secretKey?: string;
  region?: string;
  endpointUrl?: string;
  profile?: string;
  queue?: string;
  attrs?: Record<string, string>;
  args?: string[];
  env?: Record<string, string>;
  shell?: boolean;
  contentType?: string;
  postHealth?: string;
  postHmac?: string;
  postHmacSecretFile?: string;
  timeout?: number;
  extendTimeout?: number;
  killTimeout?: number;
  killRetry?: number;
  killGrace?: number;
  interval?: number;
  wait?: number;
  shutdownTimeout?: number;
  concurrency?: number;
  batchSize?: number;
  batchWindow?: number;
  handler?: string;
  prefetch?: number | "auto";
  /** `--backoff`; "off" retries at once. */
  backoff?: Backoff | "off";
  maxReceives?: number;
  daemon?: string;
  log?: string;
  logFormat?: LogFormat;
  logLevel?: LogLevel;
  s3?: boolean;
  s3Delete?: boolean;
  s3Gunzip?: boolean;
  statsd?: string;
  statsdPrefix?: string;
  statsdTags?: string[];
  http?: string;
}

/** How a setting's value is spelled and checked. */
export type SettingKind =
  | "text"
  | "url"
  | "region"
  | "queue"
  | "integer"
  | "seconds"
  | "boolean"
  | "pairs"
  | "env"
  | "list"
  | "backoff"
  | "choice"
  | "statsd"
  | "prefetch"
  | "listen"
  | "tags";

/** One setting: its long flag name (also its configuration file key) and its rules. */
export interface SettingSpec {
  /** Long flag name without dashes; the same word is the key in a configuration file. */
  key: string;
  /** One-letter flag, if any. */
  short?: string;
  /** The field of {@linkcode Settings} it fills. */
  field: keyof Settings;
  kind: SettingKind;
  /** Smallest accepted number. */
  min?: number;
  /** True when `min` itself is not accepted. */
  exclusiveMin?: boolean;
  /** Largest accepted number. */
  max?: number;
  /** Accepted words of a `choice`. */
  choices?: readonly string[];
}

/** Every setting that may appear on the command line and in a configuration file, in file order. */
export const SETTINGS: readonly SettingSpec[] = [
  { key: "key-id", short: "k", field: "keyId", kind: "text" },
  { key: "secret-key", short: "s", field: "secretKey", kind: "text" },
  { key: "region", field: "region", kind: "region" },
  { key: "endpoint-url", field: "endpointUrl", kind: "url" },
  { key: "profile", field: "profile", kind: "text" },
  { key: "queue", short: "q", field: "queue", kind: "queue" },
  { key: "timeout", short: "t", field: "timeout", kind: "integer", min: 0, max: MAX_VISIBILITY },
  {
    key: "extend-timeout",
    short: "e",
    field: "extendTimeout",
    kind: "seconds",
    min: 0,
    exclusiveMin: true,
    max: MAX_VISIBILITY,
  },
  {
    key: "kill-timeout",
    short: "x",
    field: "killTimeout",
    kind: "seconds",
    min: 0,
    exclusiveMin: true,
    max: MAX_DURATION,
  },
  {
    key: "kill-retry",
    short: "X",
    field: "killRetry",
    kind: "seconds",
    min: 0,
    exclusiveMin: true,
    max: MAX_DURATION,
  },
  { key: "kill-grace", field: "killGrace", kind: "seconds", min: 0, max: MAX_DURATION },
  { key: "shutdown-timeout", field: "shutdownTimeout", kind: "seconds", min: 0, max: MAX_DURATION },
  { key: "interval", short: "i", field: "interval", kind: "seconds", min: 0, max: MAX_DURATION },
  { key: "wait", field: "wait", kind: "integer", min: 0, max: 20 },
  { key: "concurrency", short: "c", field: "concurrency", kind: "integer", min: 1, max: 1000 },
  { key: "batch-size", field: "batchSize", kind: "integer", min: 1, max: 10 },
  // Lambda's MaximumBatchingWindowInSeconds: at most 300.
  { key: "batch-window", field: "batchWindow", kind: "seconds", min: 0, max: 300 },
  { key: "prefetch", field: "prefetch", kind: "prefetch", min: 0, max: 1000 },
  { key: "backoff", field: "backoff", kind: "backoff" },
  {
    key: "max-receives",
    field: "maxReceives",
    kind: "integer",
    min: 1,
    max: Number.MAX_SAFE_INTEGER,
  },
  ...RUNNER_KINDS.map((kind): SettingSpec => ({ key: kind.name, field: kind.name, kind: "text" })),
  { key: "handler", field: "handler", kind: "text" },
  { key: "shell", field: "shell", kind: "boolean" },
  { key: "args", field: "args", kind: "list" },
  { key: "env", field: "env", kind: "env" },
  { key: "content-type", field: "contentType", kind: "text" },
  { key: "post-health", field: "postHealth", kind: "text" },
  { key: "post-hmac", field: "postHmac", kind: "text" },
  { key: "post-hmac-secret-file", field: "postHmacSecretFile", kind: "text" },
  { key: "attr", field: "attrs", kind: "pairs" },
  { key: "daemon", short: "d", field: "daemon", kind: "text" },
  { key: "log", short: "o", field: "log", kind: "text" },
  { key: "log-format", field: "logFormat", kind: "choice", choices: ["json", "text"] },
  {
    key: "log-level",
    field: "logLevel",
    kind: "choice",
    choices: ["debug", "info", "warn", "error"],
  },
  { key: "s3", field: "s3", kind: "boolean" },
  { key: "s3-delete", field: "s3Delete", kind: "boolean" },
  { key: "s3-gunzip", field: "s3Gunzip", kind: "boolean" },
  { key: "statsd", field: "statsd", kind: "statsd" },
  { key: "statsd-prefix", field: "statsdPrefix", kind: "text" },
  { key: "statsd-tags", field: "statsdTags", kind: "tags" },
  { key: "http", field: "http", kind: "listen" },
];

const SPEC_BY_KEY: ReadonlyMap<string, SettingSpec> = new Map(SETTINGS.map((s) => [s.key, s]));

/** Returns the spec of a setting by its long name, or undefined. */
export function settingSpec(key: string): SettingSpec | undefined {
  return SPEC_BY_KEY.get(key);
}

/** How a setting is named in messages: `-t/--timeout` or `--wait`. */
export function flagLabel(key: string): string {
  const short = SPEC_BY_KEY.get(key)?.short;
  return short ? `-${short}/--${key}` : `--${key}`;
}

// ---------------------------------------------------------------------------
// Values

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const INTEGER_TEXT = /^[0-9]+$/;
const DECIMAL_TEXT = /^[0-9]+(\.[0-9]+)?$/;

function describeRange(spec: SettingSpec, integer: boolean): string {
  const what = integer ? "an integer" : "a number of seconds";
  const low = spec.min === undefined ? "" : spec.exclusiveMin ? `greater than ${spec.min}` : "";
  if (spec.min !== undefined && !spec.exclusiveMin && spec.max !== undefined) {
    return spec.max === Number.MAX_SAFE_INTEGER
      ? `${what} of at least ${spec.min}`
      : `${what} from ${spec.min} to ${spec.max}`;
  }
  if (low && spec.max !== undefined) return `${what} ${low} and at most ${spec.max}`;
  return low ? `${what} ${low}` : what;
}

function checkNumber(spec: SettingSpec, value: number, where: string): number {
  const integer = spec.kind === "integer";
  const ok = Number.isFinite(value) && (!integer || Number.isSafeInteger(value)) &&
    (spec.min === undefined || (spec.exclusiveMin ? value > spec.min : value >= spec.min)) &&
    (spec.max === undefined || value <= spec.max);
  if (!ok) {
    throw new UsageError(`${where} must be ${describeRange(spec, integer)}, got ${value}`);
  }
  return value;
}

function parseNumberText(spec: SettingSpec, text: string, where: string): number {
  const integer = spec.kind === "integer";
  if (!(integer ? INTEGER_TEXT : DECIMAL_TEXT).test(text.trim())) {
    throw new UsageError(
      `${where} must be ${describeRange(spec, integer)}, got '${text}'`,
    );
  }
  return checkNumber(spec, Number(text.trim()), where);
}

/** Parses a `--prefetch` count (an integer, since "auto" was handled by the caller). */
function parsePrefetch(spec: SettingSpec, text: string, where: string): number {
  if (!INTEGER_TEXT.test(text.trim())) {
    throw new UsageError(`${where} must be auto or ${describeRange(spec, true)}, got '${text}'`);
  }
  return checkNumber({ ...spec, kind: "integer" }, Number(text.trim()), where);
}

/** Splits `Key=Value`; the key must not be empty. */
export function splitPair(text: string, where: string, form = "Key=Value"): [string, string] {
  const at = text.indexOf("=");
  if (at <= 0) {
    throw new UsageError(
      `${where} must be ${form} with a non-empty ${form.split("=")[0]}, got '${text}'`,
    );
  }
  return [text.slice(0, at), text.slice(at + 1)];
}

function checkEnvName(name: string, where: string): string {
  if (!ENV_NAME.test(name)) {
    throw new UsageError(
      `${where}: '${name}' is not a valid environment variable name (letters, digits, _; not starting with a digit)`,
    );
  }
  return name;
}

/** Parses `BASE[,MAX]` seconds of `--backoff`, or `off`. */
export function parseBackoff(text: string, where: string): Backoff | "off" {
  if (text.trim() === "off") return "off";
  const match = /^\s*([0-9]+)\s*(?:,\s*([0-9]+)\s*)?$/.exec(text);
  if (!match) {
    throw new UsageError(`${where} must be BASE[,MAX] in whole seconds or off, got '${text}'`);
  }
  return checkBackoff(
    {
      base: Number(match[1]),
      max: match[2] === undefined ? DEFAULTS.backoffMax : Number(match[2]),
    },
    where,
  );
}

function checkBackoff(backoff: Backoff, where: string): Backoff {
  const { base, max } = backoff;
  if (!Number.isSafeInteger(base) || base <= 0 || base > MAX_VISIBILITY) {
    throw new UsageError(
      `${where}: BASE must be whole seconds from 1 to ${MAX_VISIBILITY}, got ${base}`,
    );
  }
  if (!Number.isSafeInteger(max) || max > MAX_VISIBILITY || max < base) {
    throw new UsageError(
      `${where}: MAX must be whole seconds from BASE (${base}) to ${MAX_VISIBILITY}, got ${max}`,
    );
  }
  return backoff;
}

function checkText(text: string, where: string): string {
  if (text === "") throw new UsageError(`${where} must not be empty`);
  return text;
}

/** A region is one hostname label (it becomes part of the endpoint's host name). */
const REGION = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
/** SQS queue names: letters, digits, '-' and '_', up to 80 characters with a FIFO queue's '.fifo'. */
const QUEUE_NAME = /^[A-Za-z0-9_-]+(?:\.fifo)?$/;
const MAX_QUEUE_NAME = 80;

function checkRegion(text: string, where: string): string {
  checkText(text, where);
  if (!REGION.test(text)) {
    throw new UsageError(`${where} must be a region name such as us-east-1, got '${text}'`);
  }
  return text;
}

/** Checks a queue name or URL as `-q` does; `where` names the flag in the error. */
export function checkQueue(text: string, where: string): string {
  checkText(text, where);
  if (/^https?:\/\//i.test(text)) return checkUrl(text, where);
  if (!QUEUE_NAME.test(text) || text.length > MAX_QUEUE_NAME) {
    throw new UsageError(
      `${where} must be a queue URL, or a name of up to ${MAX_QUEUE_NAME} letters, digits, '-' and '_' ` +
        `(ending in .fifo for a FIFO queue), got '${text}'`,
    );
  }
  return text;
}

/** Checks the value of a setting whose value is one string. */
function checkString(kind: SettingKind, text: string, where: string): string {
  if (kind === "url") return checkUrl(text, where);
  if (kind === "region") return checkRegion(text, where);
  if (kind === "queue") return checkQueue(text, where);
  return checkText(text, where);
}

function checkUrl(text: string, where: string): string {
  checkText(text, where);
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`${where} must be an http:// or https:// URL, got '${text}'`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new UsageError(`${where} must be an http:// or https:// URL, got '${text}'`);
  }
  return text;
}

/** Where `--http` listens when only a port is given: this host only, never the network by accident. */
export const LISTEN_HOST = "127.0.0.1";

/** A host and port, as `--statsd` and `--http` give them. */
export interface Address {
  hostname: string;
  port: number;
}

/**
 * Parses `HOST:PORT`, `[IPv6]:PORT`, and, when `defaultHost` is given, `:PORT` or
 * `PORT` (port 0 then means any free port). Throws a {@linkcode UsageError}.
 */
export function parseAddress(text: string, where: string, defaultHost?: string): Address {
  const form = defaultHost === undefined ? "HOST:PORT" : "[HOST:]PORT";
  const fail = (why: string) => new UsageError(`${where} must be ${form}${why}, got '${text}'`);
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\s\[\]]*)):([0-9]+)$/.exec(text) ??
    (defaultHost === undefined ? null : /^()()([0-9]+)$/.exec(text));
  if (!match) throw fail("");
  const hostname = match[1] || match[2] || defaultHost;
  if (!hostname) throw fail(" with a host");
  const port = Number(match[3]);
  const lowest = defaultHost === undefined ? 1 : 0;
  if (!Number.isSafeInteger(port) || port < lowest || port > 65535) {
    throw fail(` with a port from ${lowest} to 65535`);
  }
  return { hostname, port };
}

/** Splits `key:value,tag,...` into DogStatsD tags; a tag must not hold `|`, `,`, `#` or blanks. */
export function parseTags(text: string, where: string): string[] {
  const tags = text.split(",").map((tag) => tag.trim());
  for (const tag of tags) {
    if (!/^[^|,#\s]+$/.test(tag)) {
      throw new UsageError(
        `${where} must be tags 'key:value,...' without '|', '#' or blanks, got '${text}'`,
      );
    }
  }
  return tags;
}

/**
 * Applies one command-line value of a setting to a layer. Repeatable settings
 * (`--attr`, `--env`) accumulate; the others replace.
 */
export function applyFlagValue(layer: Settings, spec: SettingSpec, text: string): void {
  const where = flagLabel(spec.key);
  const set = (value: unknown) => {
    (layer as Record<string, unknown>)[spec.field] = value;
  };
  switch (spec.kind) {
    case "text":
    case "url":
    case "region":
    case "queue":
      return set(checkString(spec.kind, text, where));
    case "integer":
    case "seconds":
      return set(parseNumberText(spec, text, where));
    case "choice":
      if (!spec.choices?.includes(text)) {
        throw new UsageError(`${where} must be one of ${spec.choices?.join(", ")}, got '${text}'`);
      }
      return set(text);
    case "backoff":
      return set(parseBackoff(text, where));
    case "pairs": {
      const [key, value] = splitPair(text, where);
      layer.attrs = { ...layer.attrs, [key]: value };
      return;
    }
    case "env": {
      const [key, value] = splitPair(text, where, "KEY=VALUE");
      layer.env = { ...layer.env, [checkEnvName(key, where)]: value };
      return;
    }
    case "boolean":
      return set(true);
    case "list":
      layer.args = [...(layer.args ?? []), text];
      return;
    case "statsd":
      if (text !== "off") parseAddress(text, where);
      return set(text);
    case "prefetch":
      return set(text === "auto" ? "auto" : parsePrefetch(spec, text, where));
    case "listen":
      parseAddress(text, where, LISTEN_HOST);
      return set(text);
    case "tags":
      layer.statsdTags = [...(layer.statsdTags ?? []), ...parseTags(text, where)];
      return;
  }
}

function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return isPlainMapping(value) ? "a mapping" : "an object";
  return `a ${typeof value}`;
}

function isPlainMapping(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function scalarText(value: unknown, where: string): string {
  if (typeof value === "string") return value;
  if (typeof value === "number" && Number.isFinite(value)) return String(value);
  if (typeof value === "boolean") return String(value);
  throw new UsageError(`${where} must be a string, number or boolean, got ${typeName(value)}`);
}

/** Applies one configuration-file value of a setting to a layer, checking its YAML type. */
export function applyFileValue(layer: Settings, spec: SettingSpec, value: unknown, where: string) {
  const set = (v: unknown) => {
    (layer as Record<string, unknown>)[spec.field] = v;
  };
  const wrongType = (expected: string) =>
    new UsageError(`${where} must be ${expected}, got ${typeName(value)}`);
  switch (spec.kind) {
    case "text":
    case "url":
    case "region":
    case "queue":
    case "choice":
      if (typeof value !== "string") throw wrongType("a string");
      if (spec.kind === "choice") {
        if (!spec.choices?.includes(value)) {
          throw new UsageError(
            `${where} must be one of ${spec.choices?.join(", ")}, got '${value}'`,
          );
        }
        return set(value);
      }
      return set(checkString(spec.kind, value, where));
    case "integer":
    case "seconds":
      if (typeof value !== "number") throw wrongType("a number");
      return set(checkNumber(spec, value, where));
    case "boolean":
      if (typeof value !== "boolean") throw wrongType("true or false");
      return set(value);
    case "backoff":
      if (typeof value === "number") {
        return set(checkBackoff({ base: value, max: DEFAULTS.backoffMax }, where));
      }
      if (typeof value !== "string") throw wrongType("BASE, 'BASE,MAX' (seconds) or off");
      return set(parseBackoff(value, where));
    case "list":
      if (!Array.isArray(value)) throw wrongType("a list of strings");
      return set(value.map((item, i) => {
        if (typeof item !== "string") {
          throw new UsageError(`${where}[${i}] must be a string (quote it), got ${typeName(item)}`);
        }
        return item;
      }));
    case "prefetch":
      if (value === "auto") return set(value);
      if (typeof value !== "number") throw wrongType("a number of messages or auto");
      return set(checkNumber({ ...spec, kind: "integer" }, value, where));
    case "statsd":
      if (typeof value !== "string") throw wrongType("HOST:PORT or off");
      if (value !== "off") parseAddress(value, where);
      return set(value);
    case "listen": {
      if (typeof value !== "string" && typeof value !== "number") throw wrongType("[HOST:]PORT");
      const text = String(value);
      parseAddress(text, where, LISTEN_HOST);
      return set(text);
    }
    case "tags":
      if (typeof value === "string") return set(parseTags(value, where));
      if (!Array.isArray(value)) throw wrongType("a list of tags, or 'key:value,...'");
      return set(value.flatMap((item, i) => {
        if (typeof item !== "string") {
          throw new UsageError(`${where}[${i}] must be a string (quote it), got ${typeName(item)}`);
        }
        return parseTags(item, `${where}[${i}]`);
      }));
    case "pairs":
    case "env": {
      if (!isPlainMapping(value)) throw wrongType("a mapping");
      const out: Record<string, string> = {};
      for (const [key, item] of Object.entries(value)) {
        if (key === "") throw new UsageError(`${where} has an empty name`);
        if (spec.kind === "env") checkEnvName(key, where);
        out[key] = scalarText(item, `${where}.${key}`);
      }
      return set(out);
    }
  }
}

// ---------------------------------------------------------------------------
// Layers

/**
 * Merges layers in order: a later value replaces an earlier one; `attr` and `env`
 * merge by name; the runner kinds' targets (`exec`, `run`) are one slot (the job),
 * so a later layer's job replaces an earlier layer's job whichever kind it uses.
 */
export function mergeSettings(...layers: Settings[]): Settings {
  const merged: Settings = {};
  for (const layer of layers) {
    for (const [field, value] of Object.entries(layer) as [keyof Settings, unknown][]) {
      if (value === undefined) continue;
      if (field === "attrs" || field === "env") {
        merged[field] = { ...merged[field], ...(value as Record<string, string>) };
      } else if (field === "args") {
        merged.args = [...(value as string[])];
      } else {
        (merged as Record<string, unknown>)[field] = value;
      }
    }
    const jobs = RUNNER_KIND_NAMES.filter((name) => layer[name] !== undefined);
    if (jobs.length === 1) {
      for (const name of RUNNER_KIND_NAMES) if (name !== jobs[0]) delete merged[name];
    }
  }
  return merged;
}

/** The parts of an invocation that are not settings: what to do and its per-call inputs. */
export interface Invocation {
  command: Command;
  settings: Settings;
  files?: string[];
  push?: string;
  groupId?: string;
  dedupId?: string;
  messageAttrs?: PushAttribute[];
  counts?: boolean;
  json?: boolean;
  configure?: string;
  redrive?: RedriveInputs;
  maxMessages?: number;
}

/**
 * Refuses the settings of one runner kind (`--content-type` of `--post`) with the
 * job of another, or with none: they would be silently ignored.
 */
function checkOwnSettings(s: Settings): void {
  const job = RUNNER_KIND_NAMES.find((name) => s[name] !== undefined);
  for (const kind of RUNNER_KINDS) {
    if (kind.name === job) continue;
    for (const key of ("ownSettings" in kind ? kind.ownSettings : []) as readonly string[]) {
      const spec = SPEC_BY_KEY.get(key);
      if (spec && s[spec.field] !== undefined) {
        throw new UsageError(`${flagLabel(key)} only applies with --${kind.name}`);
      }
    }
  }
}

/** The fields of `values` that are set: options that one runner kind reads appear only when given. */
function definedOnly<T extends Record<string, unknown>>(values: T): Partial<T> {
  return Object.fromEntries(
    Object.entries(values).filter(([, value]) => value !== undefined),
  ) as Partial<T>;
}

/** Commands that run the worker, or write its configuration: the job timings matter to them. */
const JOB_COMMANDS: ReadonlySet<Command> = new Set([...RUNNER_KIND_NAMES, "configure"]);

/** The numeric queue attributes and the ranges SQS accepts for them. */
const QUEUE_ATTRIBUTE_RANGES: Record<string, [number, number, string]> = {
  VisibilityTimeout: [0, MAX_VISIBILITY, "seconds"],
  DelaySeconds: [0, 900, "seconds"],
  ReceiveMessageWaitTimeSeconds: [0, 20, "seconds"],
  MessageRetentionPeriod: [60, 1_209_600, "seconds"],
  MaximumMessageSize: [1024, MAX_BODY_BYTES, "bytes"],
  KmsDataKeyReusePeriodSeconds: [60, 86_400, "seconds"],
};

/**
 * Checks an `--attr` value that SQS would refuse (a number out of its range, or
 * not a whole number), so the error names the range before any call is made.
 */
export function checkQueueAttribute(name: string, value: string): void {
  const range = Object.hasOwn(QUEUE_ATTRIBUTE_RANGES, name)
    ? QUEUE_ATTRIBUTE_RANGES[name]
    : undefined;
  if (!range) return;
  const [min, max, unit] = range;
  const number = Number(value);
  if (!/^\d+$/.test(value) || number < min || number > max) {
    throw new UsageError(
      `--attr ${name}=${value}: must be a whole number of ${unit} from ${min} to ${max}`,
    );
  }
}

/** Timings (seconds) given in flags or files, as opposed to derived from the visibility timeout. */
export interface GivenTimings {
  timeout?: number;
  extendTimeout?: number;
  killTimeout?: number;
  shutdownTimeout?: number;
}

/** The timings that follow the visibility timeout. */
export interface Timings {
  timeout: number;
  extendTimeout: number;
  killTimeout: number;
  shutdownTimeout: number;
}

/**
 * Derives `-e`, `-x` and the shutdown timeout from the visibility timeout `timeout`
 * (named `timeoutName` in errors), keeping the ones given. Throws a UsageError when
 * `-e` would not come before the visibility timeout ends, or `-x` is not positive.
 */
export function deriveTimings(
  timeout: number,
  given: GivenTimings,
  timeoutName = "-t/--timeout",
): Timings {
  const extendTimeout = given.extendTimeout ?? defaultExtendTimeout(timeout);
  const killTimeout = given.killTimeout ?? defaultKillTimeout(timeout);
  if (!(extendTimeout > 0 && extendTimeout < timeout)) {
    const value = given.extendTimeout === undefined
      ? `timeout*3/4 = ${extendTimeout}`
      : String(extendTimeout);
    throw new UsageError(
      `-e/--extend-timeout (${value}) must be greater than 0 and less than ` +
        `${timeoutName} (${timeout}), or the message becomes visible again before it is extended`,
    );
  }
  if (!(killTimeout > 0)) {
    throw new UsageError(`-x/--kill-timeout (timeout*5 = ${killTimeout}) must be greater than 0`);
  }
  return {
    timeout,
    extendTimeout,
    killTimeout,
    shutdownTimeout: given.shutdownTimeout ?? killTimeout,
  };
}

/** The default extend timeout for a visibility timeout: three quarters of it. */
export function defaultExtendTimeout(timeout: number): number {
  return timeout * 3 / 4;
}

/**
 * The default kill timeout for a visibility timeout: five times it, but a minute
 * short of SQS's 12-hour visibility limit, which no extension can pass (`-t 43200`
 * would otherwise mean a 60-hour kill and shutdown timeout).
 */
export function defaultKillTimeout(timeout: number): number {
  return Math.min(timeout * 5, MAX_VISIBILITY - 60);
}

/**
 * Applies defaults and derived values to the merged settings and checks the rules
 * that involve more than one value. Throws a {@linkcode UsageError} naming the flags.
 */
export function resolveOptions(invocation: Invocation): Options {
  const s = invocation.settings;
  const command = invocation.command;
  const givenTimings: GivenTimings = {
    timeout: s.timeout,
    extendTimeout: s.extendTimeout,
    killTimeout: s.killTimeout,
    shutdownTimeout: s.shutdownTimeout,
  };
  const timeout = s.timeout ?? DEFAULTS.timeout;
  const extendTimeout = s.extendTimeout ?? defaultExtendTimeout(timeout);
  const killTimeout = s.killTimeout ?? defaultKillTimeout(timeout);

  if ((s.keyId === undefined) !== (s.secretKey === undefined)) {
    throw new UsageError("-k/--key-id and -s/--secret-key must be given together");
  }
  if (JOB_COMMANDS.has(command) || s.extendTimeout !== undefined) {
    // Without -t a worker's visibility timeout is its queue's, known once the worker
    // has read it, which checks -e against it then (-e and -x are positive already).
    const known = s.timeout !== undefined || !JOB_COMMANDS.has(command);
    if (known) deriveTimings(timeout, givenTimings);
  }
  if (isRunnerKind(command)) {
    const target = s[command];
    if (target !== undefined) runnerKind(command).checkTarget?.(target, s);
    if (!s.queue) throw new UsageError(`--${command} needs -q/--queue`);
  }
  if (JOB_COMMANDS.has(command)) checkOwnSettings(s);

  if (JOB_COMMANDS.has(command) && command !== "lambda" && command !== "configure") {
    if (s.handler !== undefined) throw new UsageError(`--handler only applies to --lambda`);
    if (s.batchWindow !== undefined) {
      throw new UsageError(`--batch-window only applies to --lambda`);
    }
  }

  if (JOB_COMMANDS.has(command) && !s.s3) {
    if (s.s3Delete) throw new UsageError("--s3-delete only applies with --s3");
    if (s.s3Gunzip) throw new UsageError("--s3-gunzip only applies with --s3");
  }

  if (JOB_COMMANDS.has(command) && (s.wait ?? DEFAULTS.wait) === 0 && s.interval === 0) {
    throw new UsageError(
      "--wait 0 with -i/--interval 0 would call SQS in a busy loop: long-poll with --wait, " +
        "or pause between short polls with -i",
    );
  }
  const attrs = { ...s.attrs };
  for (const [name, value] of Object.entries(attrs)) checkQueueAttribute(name, value);
  // A timeout stated for --create becomes the queue's own visibility timeout, unless
  // --attr VisibilityTimeout says otherwise, so a worker and its queue agree.
  if (command === "create" && s.timeout !== undefined && attrs.VisibilityTimeout === undefined) {
    attrs.VisibilityTimeout = String(s.timeout);
  }

  return {
    command,
    keyId: s.keyId,
    secretKey: s.secretKey,
    region: s.region,
    endpointUrl: s.endpointUrl,
    profile: s.profile,
    queue: s.queue,
    attrs,
    push: invocation.push,
    groupId: invocation.groupId,
    dedupId: invocation.dedupId,
    messageAttrs: invocation.messageAttrs ?? [],
    counts: invocation.counts ?? false,
    json: invocation.json ?? false,
    configure: invocation.configure,
    ...(invocation.redrive ? { redrive: { ...invocation.redrive } } : {}),
    ...(invocation.maxMessages !== undefined ? { maxMessages: invocation.maxMessages } : {}),
    ...runnerTargets(s),
    args: s.args ?? [],
    env: { ...s.env },
    shell: s.shell ?? false,
    ...definedOnly({
      contentType: s.contentType,
      postHealth: s.postHealth,
      postHmac: s.postHmac,
      postHmacSecretFile: s.postHmacSecretFile,
    }),
    timeout,
    extendTimeout,
    killTimeout,
    killRetry: s.killRetry ?? DEFAULTS.killRetry,
    killGrace: s.killGrace ?? DEFAULTS.killGrace,
    interval: s.interval ?? DEFAULTS.interval,
    wait: s.wait ?? DEFAULTS.wait,
    shutdownTimeout: s.shutdownTimeout ?? killTimeout,
    givenTimings,
    concurrency: s.concurrency ?? DEFAULTS.concurrency,
    batchSize: s.batchSize ?? DEFAULTS.batchSize,
    ...(s.batchWindow !== undefined ? { batchWindow: s.batchWindow } : {}),
    ...(s.handler !== undefined ? { handler: s.handler } : {}),
    prefetch: s.prefetch ?? "auto",
    backoff: s.backoff === "off" ? undefined : s.backoff ?? { ...DEFAULT_BACKOFF },
    maxReceives: s.maxReceives,
    daemon: s.daemon,
    log: s.log,
    logFormat: s.logFormat,
    logLevel: s.logLevel ?? DEFAULTS.logLevel,
    files: [...(invocation.files ?? [])],
    s3: s.s3 ?? false,
    s3Delete: s.s3Delete ?? false,
    s3Gunzip: s.s3Gunzip ?? false,
    statsd: s.statsd,
    statsdPrefix: s.statsdPrefix ?? "",
    statsdTags: [...(s.statsdTags ?? [])],
    http: s.http,
  };
}

// ---------------------------------------------------------------------------
// Files

/** Parses the text of a configuration file into a layer; `path` names it in errors. */
export function parseConfigText(text: string, path: string): Settings {
  let data: unknown;
  try {
    // Silent: the library would print its warnings to stderr itself; an unknown tag
    // (`!!js/function`) is a mistake in the file, reported as one line like any other.
    const documents = parseAllDocuments(text, { logLevel: "silent" });
    if (!Array.isArray(documents)) return {};
    if (documents.length > 1) {
      throw new Error(`${documents.length} documents in one file; a configuration is one mapping`);
    }
    const [document] = documents;
    if (!document) return {};
    const problem = document.errors[0] ?? document.warnings[0];
    if (problem) throw problem;
    data = document.toJS();
  } catch (error) {
    const first = error instanceof Error ? error.message.split("\n")[0].trim() : String(error);
    throw new UsageError(`configuration file '${path}': invalid YAML: ${first}`);
  }
  if (data === null || data === undefined) return {};
  if (!isPlainMapping(data)) {
    throw new UsageError(
      `configuration file '${path}' must be a YAML mapping of option names to values, got ${
        typeName(data)
      }`,
    );
  }
  const layer: Settings = {};
  for (const [key, value] of Object.entries(data)) {
    const spec = SPEC_BY_KEY.get(key);
    if (!spec) {
      // Only a short, escaped excerpt: a wrong file (say a credentials file) must not be
      // echoed into a terminal or a log.
      const shown = JSON.stringify(key.length > 32 ? `${key.slice(0, 32)}...` : key).slice(1, -1);
      throw new UsageError(
        `configuration file '${path}': unknown key '${shown}' (keys are long option names, e.g. queue, timeout, exec)`,
      );
    }
    if (value === null || value === undefined) {
      throw new UsageError(`configuration file '${path}': key '${key}' has no value`);
    }
    applyFileValue(layer, spec, value, `configuration file '${path}': key '${key}'`);
  }
  const jobs = RUNNER_KIND_NAMES.filter((name) => layer[name] !== undefined);
  if (jobs.length > 1) {
    throw new UsageError(
      `configuration file '${path}': give ${onlyOneOf(jobs.map((name) => `'${name}'`))}`,
    );
  }
  return layer;
}

/** Where a configuration file loader reports problems that are not errors. */
export interface LoadConfigOptions {
  /** Receives a one-line warning (without the `sqsrun: ` prefix). */
  warn?: (message: string) => void;
}

/** The largest configuration file sqsrun reads. */
export const MAX_CONFIG_BYTES = 1024 * 1024;

/**
 * Reads and parses a configuration file. An unreadable file is a usage error; a
 * file that others can read and that holds a secret key gets a warning.
 */
export async function loadConfigFile(
  path: string,
  options: LoadConfigOptions = {},
): Promise<Settings> {
  let text: string;
  try {
    // Only a regular file of sane size: `-f /dev/zero` or a FIFO must not eat memory or hang.
    const info = await Deno.stat(path);
    if (!info.isFile) {
      throw new UsageError(`configuration file '${path}' is not a regular file`);
    }
    if (info.size > MAX_CONFIG_BYTES) {
      throw new UsageError(
        `configuration file '${path}' is ${info.size} bytes; at most ${MAX_CONFIG_BYTES} are read`,
      );
    }
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof UsageError) throw error;
    throw new UsageError(`cannot read configuration file '${path}': ${describeFsError(error)}`);
  }
  const layer = parseConfigText(text, path);
  if (layer.secretKey !== undefined) {
    try {
      const mode = (await Deno.stat(path)).mode;
      if (mode !== null && (mode & 0o004) !== 0) {
        options.warn?.(
          `warning: configuration file '${path}' contains secret-key and is readable by everyone; run: chmod 600 '${path}'`,
        );
      }
    } catch {
      // It was just read; a stat failure here is not worth failing the run for.
    }
  }
  return layer;
}

/** Turns a layer into the mapping written by `--configure`, keys in {@linkcode SETTINGS} order. */
export function settingsToConfig(settings: Settings): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const spec of SETTINGS) {
    const value = settings[spec.field];
    if (value === undefined) continue;
    if (spec.kind === "backoff") {
      const backoff = value as Backoff | "off";
      out[spec.key] = backoff === "off" ? "off" : `${backoff.base},${backoff.max}`;
    } else if (spec.kind === "pairs" || spec.kind === "env") {
      if (Object.keys(value as Record<string, string>).length === 0) continue;
      out[spec.key] = { ...(value as Record<string, string>) };
    } else {
      out[spec.key] = value;
    }
  }
  return out;
}

/** Renders a layer as the YAML text of a configuration file. */
export function renderConfig(settings: Settings): string {
  const header =
    "# sqsrun configuration, written by `sqsrun --configure`; use it with `sqsrun -f`.\n" +
    "# Keys are the long option names. Values not listed here take their defaults.\n";
  const body = settingsToConfig(settings);
  return header + (Object.keys(body).length === 0 ? "{}\n" : stringifyYaml(body));
}

/**
 * Writes a configuration file with mode 0600: to a temporary file beside it, then
 * renamed over it, so a reader never sees half a file and the secret is never
 * readable by others, not even for a moment.
 */
export async function saveConfigFile(path: string, settings: Settings): Promise<void> {
  const text = renderConfig(settings);
  const slash = path.lastIndexOf("/");
  const dir = slash >= 0 ? path.slice(0, slash + 1) : "";
  const base = slash >= 0 ? path.slice(slash + 1) : path;
  const temp = `${dir}.${base}.${Deno.pid}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  try {
    await Deno.writeTextFile(temp, text, { createNew: true, mode: 0o600 });
    await Deno.chmod(temp, 0o600);
    await Deno.rename(temp, path);
  } catch (error) {
    await Deno.remove(temp).catch(() => {});
    throw error;
  }
}
