/**
 * Command-line flags to {@linkcode Options}: tokenizing with `node:util` parseArgs,
 * one pass of validation with one-line errors, the choice of the command, and the
 * help text.
 *
 * @module
 */
import { parseArgs } from "node:util";
import {
  applyFlagValue,
  checkQueue,
  type Command,
  DEFAULT_BACKOFF,
  DEFAULTS,
  flagLabel,
  loadConfigFile,
  MAX_BODY_BYTES,
  MAX_DURATION,
  mergeSettings,
  type Options,
  type PushAttribute,
  type RedriveInputs,
  resolveOptions,
  SETTINGS,
  type Settings,
  settingSpec,
  splitPair,
} from "./config.ts";
import { HELP_TOPICS, isHelpTopic } from "./docs.ts";
import { UsageError } from "./errors.ts";
import { isQueueUrl } from "./aws.ts";
import { DEFAULT_MOVE_VISIBILITY } from "./redrive.ts";
import { HMAC_SECRET_ENV } from "./runners/post.ts";
import {
  isRunnerKind,
  onlyOneOf,
  orList,
  RUNNER_KIND_NAMES,
  RUNNER_KINDS,
} from "./runners/kinds.ts";

/** `--rate` at most: the largest MaxNumberOfMessagesPerSecond of a move task. */
const MAX_MOVE_RATE = 500;
/** `--peek` shows this many messages unless `-n` says otherwise, and at most MAX_PEEK. */
const DEFAULT_PEEK = 10;
const MAX_PEEK = 1000;

/** Flags that are not settings: commands, per-call admin inputs, files, help. */
const OTHER_FLAGS = {
  list: { type: "boolean" },
  create: { type: "boolean" },
  delete: { type: "boolean" },
  push: { type: "string" },
  peek: { type: "boolean" },
  purge: { type: "boolean" },
  redrive: { type: "boolean" },
  "redrive-status": { type: "boolean" },
  "redrive-cancel": { type: "string" },
  configure: { type: "string" },
  json: { type: "boolean" },
  counts: { type: "boolean" },
  "group-id": { type: "string" },
  "dedup-id": { type: "string" },
  "message-attr": { type: "string", multiple: true },
  "max-messages": { type: "string", short: "n" },
  to: { type: "string" },
  rate: { type: "string" },
  "no-wait": { type: "boolean" },
  "client-side": { type: "boolean" },
  file: { type: "string", short: "f", multiple: true },
  // The Ruby tool's flag for what is now the only behaviour: accepted, with a notice.
  "release-on-fail": { type: "boolean", short: "E" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
} as const;

type FlagConfig = { type: "string" | "boolean"; short?: string; multiple?: boolean };

/** The parseArgs option table: every setting (except `args`, which is ARGV) plus the others. */
function flagTable(): Record<string, FlagConfig> {
  const table: Record<string, FlagConfig> = {};
  for (const spec of SETTINGS) {
    if (spec.kind === "list") continue;
    table[spec.key] = {
      type: spec.kind === "boolean" ? "boolean" : "string",
      ...(spec.short ? { short: spec.short } : {}),
      ...(spec.kind === "pairs" || spec.kind === "env" ? { multiple: true } : {}),
    };
  }
  return { ...table, ...OTHER_FLAGS };
}

const FLAGS = flagTable();

/** Commands in the order they are named in messages. */
const COMMAND_FLAGS: readonly Command[] = [
  "list",
  "create",
  "delete",
  "attr",
  "push",
  "peek",
  "purge",
  "redrive",
  "redrive-status",
  "redrive-cancel",
  "configure",
  ...RUNNER_KIND_NAMES,
];
/** Commands that take ARGV after `--`: the runner kinds, and `--configure`, which writes it. */
const ARGV_COMMANDS: readonly Command[] = [...RUNNER_KIND_NAMES, "configure"];
/** The runner kinds' flags: `--exec`, `--run`. */
const RUNNER_FLAGS = RUNNER_KIND_NAMES.map((name) => `--${name}`);
/** Commands that talk to SQS and print a result (`--json` applies). */
const ADMIN_COMMANDS: ReadonlySet<Command> = new Set(
  COMMAND_FLAGS.filter((command) => !ARGV_COMMANDS.includes(command)),
);
/** Admin commands that act on the queue `-q`. */
const QUEUE_COMMANDS: ReadonlySet<Command> = new Set(
  [...ADMIN_COMMANDS].filter((command) => command !== "list" && command !== "redrive-cancel"),
);

/** What the command line said, before files are read. */
export interface ParsedFlags {
  /** Explicit settings given as flags (and ARGV after `--`). */
  settings: Settings;
  /** Commands named by flags, in {@linkcode COMMAND_FLAGS} order. */
  commands: Command[];
  files: string[];
  push?: string;
  configure?: string;
  groupId?: string;
  dedupId?: string;
  messageAttrs: PushAttribute[];
  counts: boolean;
  json: boolean;
  /** `-n/--max-messages` of `--peek`. */
  maxMessages?: number;
  /** `--to`, `--rate`, `--no-wait`, `--client-side`, `--redrive-cancel HANDLE`. */
  redrive: RedriveInputs;
  /** How many words followed `--`. */
  argvCount: number;
  help: boolean;
  /** The page of `--help TOPIC`, when a topic was given. */
  helpTopic?: string;
  version: boolean;
  /** One-line notices about accepted but obsolete flags. */
  notices: string[];
}

function label(name: string): string {
  return settingSpec(name)
    ? flagLabel(name)
    : FLAGS[name]?.short
    ? `-${FLAGS[name].short}/--${name}`
    : `--${name}`;
}

const MESSAGE_ATTR_NAME = /^[A-Za-z0-9_.-]{1,256}$/;

function parseMessageAttr(text: string): PushAttribute {
  const [name, value] = splitPair(text, "--message-attr", "Name=Value");
  if (!MESSAGE_ATTR_NAME.test(name) || /^(aws|amazon)\./i.test(name) || name.startsWith(".")) {
    throw new UsageError(
      `--message-attr: '${name}' is not a valid attribute name (letters, digits, _ - . up to 256; not starting with AWS. or Amazon.)`,
    );
  }
  if (value === "") throw new UsageError(`--message-attr ${name}: the value must not be empty`);
  return { name, value };
}

/** Parses a whole number from `min` to `max` given to a flag that is not a setting. */
function parseCount(text: string, where: string, min: number, max: number): number {
  const value = Number(text.trim());
  if (!/^[0-9]+$/.test(text.trim()) || value < min || value > max) {
    throw new UsageError(`${where} must be an integer from ${min} to ${max}, got '${text}'`);
  }
  return value;
}

function checkId(text: string, where: string): string {
  if (!/^[\x21-\x7e]{1,128}$/.test(text)) {
    throw new UsageError(`${where} must be 1 to 128 printable ASCII characters without spaces`);
  }
  return text;
}

/**
 * Tokenizes and checks the flags themselves (values, unknown and misspelled flags),
 * without reading any file. Throws a {@linkcode UsageError} on the first problem.
 */
export function parseFlags(argv: string[]): ParsedFlags {
  // Non-strict parsing lets a value start with a dash (`-i -1`, `--push -`), as
  // getopt does; unknown flags and missing values are reported here instead.
  const { tokens } = parseArgs({
    args: argv,
    options: FLAGS,
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  const parsed: ParsedFlags = {
    settings: {},
    commands: [],
    files: [],
    messageAttrs: [],
    counts: false,
    json: false,
    redrive: { noWait: false, clientSide: false },
    argvCount: 0,
    help: false,
    version: false,
    notices: [],
  };
  // Help and version win over anything else on the line, mistakes included.
  for (const [index, token] of tokens.entries()) {
    if (token.kind !== "option") continue;
    if (token.name === "help") {
      parsed.help = true;
      // `--help TOPIC` (or `--help=TOPIC`): a page of docs/ instead of the usage.
      const next = tokens[index + 1];
      const topic = token.value ?? (next?.kind === "positional" ? next.value : undefined);
      if (topic !== undefined && parsed.helpTopic === undefined) {
        if (!isHelpTopic(topic)) {
          throw new UsageError(
            `--help: unknown topic '${topic}' (topics: ${HELP_TOPICS.join(", ")})`,
          );
        }
        parsed.helpTopic = topic;
      }
    }
    if (token.name === "version") parsed.version = true;
  }
  if (parsed.help || parsed.version) return parsed;

  let afterTerminator = false;
  const named = new Set<Command>();
  for (const token of tokens) {
    if (token.kind === "option-terminator") {
      afterTerminator = true;
      parsed.settings.args = [];
      continue;
    }
    if (token.kind === "positional") {
      if (!afterTerminator) {
        throw new UsageError(
          `unexpected argument '${token.value}': arguments for the command go after --`,
        );
      }
      parsed.settings.args = [...(parsed.settings.args ?? []), token.value];
      parsed.argvCount++;
      continue;
    }
    // Own keys only: `--constructor` must not find Object.prototype.constructor.
    const config = Object.hasOwn(FLAGS, token.name) ? FLAGS[token.name] : undefined;
    if (!config) {
      throw new UsageError(`unknown option '${token.rawName}' (see sqsrun --help)`);
    }
    const where = label(token.name);
    let value: string | undefined;
    if (config.type === "boolean") {
      if (token.value !== undefined) throw new UsageError(`${where} takes no value`);
    } else {
      value = token.value;
      if (value === undefined || (value === "--" && !token.inlineValue)) {
        throw new UsageError(`${where} needs a value`);
      }
    }
    const spec = settingSpec(token.name);
    if (spec) {
      applyFlagValue(parsed.settings, spec, value ?? "");
      if (isRunnerKind(token.name) || token.name === "attr") named.add(token.name);
      continue;
    }
    switch (token.name) {
      case "list":
      case "create":
      case "delete":
      case "peek":
      case "purge":
      case "redrive":
      case "redrive-status":
        named.add(token.name);
        break;
      case "redrive-cancel":
        // Real SQS handles are long base64 text; an emulator's are UUIDs.
        if (!/^[\x21-\x7e]{1,2048}$/.test(value!)) {
          throw new UsageError(
            "--redrive-cancel needs the task handle that --redrive or --redrive-status printed",
          );
        }
        parsed.redrive.taskHandle = value;
        named.add("redrive-cancel");
        break;
      case "to":
        parsed.redrive.to = checkQueue(value!, "--to");
        break;
      case "rate":
        parsed.redrive.rate = parseCount(value!, "--rate", 1, MAX_MOVE_RATE);
        break;
      case "no-wait":
        parsed.redrive.noWait = true;
        break;
      case "client-side":
        parsed.redrive.clientSide = true;
        break;
      case "max-messages":
        parsed.maxMessages = parseCount(value!, "-n/--max-messages", 1, MAX_PEEK);
        break;
      case "release-on-fail":
        parsed.notices.push(
          "-E/--release-on-fail is the default now: a failed job's message is always released " +
            "(see --backoff); the flag can be dropped",
        );
        break;
      case "push":
        if (value === "") throw new UsageError("--push needs a non-empty message (or - for stdin)");
        if (new TextEncoder().encode(value).length > MAX_BODY_BYTES) {
          throw new UsageError(`--push: the message is larger than ${MAX_BODY_BYTES} bytes`);
        }
        parsed.push = value;
        named.add("push");
        break;
      case "configure":
        if (value === "") throw new UsageError("--configure needs a file path");
        parsed.configure = value;
        named.add("configure");
        break;
      case "json":
        parsed.json = true;
        break;
      case "counts":
        parsed.counts = true;
        break;
      case "group-id":
        parsed.groupId = checkId(value!, "--group-id");
        break;
      case "dedup-id":
        parsed.dedupId = checkId(value!, "--dedup-id");
        break;
      case "message-attr":
        parsed.messageAttrs.push(parseMessageAttr(value!));
        break;
      case "file":
        if (value === "") throw new UsageError("-f/--file needs a file path");
        parsed.files.push(value!);
        break;
    }
  }
  parsed.commands = COMMAND_FLAGS.filter((command) => named.has(command));
  return parsed;
}

/**
 * Chooses the one command. `--configure` takes a runner kind (`--exec`, `--run`)
 * and `--attr` as data to write, `--create` takes `--attr` as attributes of the new
 * queue, and without a command flag a job (`exec`, `run`) from the files is the command.
 */
export function chooseCommand(flags: ParsedFlags, merged: Settings): Command {
  let commands = [...flags.commands];
  const jobs = commands.filter(isRunnerKind);
  if (jobs.length > 1) {
    throw new UsageError(`give ${onlyOneOf(jobs.map((name) => `--${name}`))}`);
  }
  if (commands.includes("configure")) {
    commands = commands.filter((c) => !isRunnerKind(c) && c !== "attr");
  }
  if (commands.includes("create")) commands = commands.filter((c) => c !== "attr");
  if (commands.length > 1) {
    throw new UsageError(
      `conflicting commands ${commands.map((c) => `--${c}`).join(" and ")}: give exactly one`,
    );
  }
  if (commands.length === 1) return commands[0];
  const job = RUNNER_KIND_NAMES.find((name) => merged[name] !== undefined);
  if (job !== undefined) return job;
  throw new UsageError(
    `no command: give one of ${COMMAND_FLAGS.map((c) => `--${c}`).join(", ")} (see sqsrun --help)`,
  );
}

function checkApplicable(flags: ParsedFlags, command: Command, merged: Settings): void {
  if (flags.argvCount > 0 && !ARGV_COMMANDS.includes(command)) {
    const takers = orList(ARGV_COMMANDS.map((name) => `--${name}`));
    throw new UsageError(`arguments after -- are only for ${takers}, not --${command}`);
  }
  if (flags.counts && command !== "list") {
    throw new UsageError(`--counts only applies to --list, not --${command}`);
  }
  if (flags.groupId !== undefined && command !== "push" && command !== "redrive") {
    throw new UsageError(`--group-id only applies to --push and --redrive, not --${command}`);
  }
  for (
    const [given, name] of [
      [flags.dedupId, "--dedup-id"],
      [flags.messageAttrs.length > 0 ? "yes" : undefined, "--message-attr"],
    ] as const
  ) {
    if (given !== undefined && command !== "push") {
      throw new UsageError(`${name} only applies to --push, not --${command}`);
    }
  }
  const { redrive } = flags;
  for (
    const [given, name] of [
      [redrive.to, "--to"],
      [redrive.rate, "--rate"],
      [redrive.noWait || undefined, "--no-wait"],
      [redrive.clientSide || undefined, "--client-side"],
    ] as const
  ) {
    if (given !== undefined && command !== "redrive") {
      throw new UsageError(`${name} only applies to --redrive, not --${command}`);
    }
  }
  if (redrive.noWait && redrive.clientSide) {
    throw new UsageError(
      "--no-wait needs a move task on SQS; the --client-side move runs in the foreground",
    );
  }
  if (command === "redrive" && merged.timeout === 0) {
    throw new UsageError(
      "-t/--timeout 0 with --redrive would let a message being moved be received again: give at least 1",
    );
  }
  if (flags.maxMessages !== undefined && command !== "peek") {
    throw new UsageError(`-n/--max-messages only applies to --peek, not --${command}`);
  }
  if (flags.json && !ADMIN_COMMANDS.has(command)) {
    throw new UsageError(`--json only applies to the admin commands, not --${command}`);
  }
  if (QUEUE_COMMANDS.has(command) && !merged.queue) {
    throw new UsageError(`--${command} needs -q/--queue`);
  }
  if (command === "create" && merged.queue && isQueueUrl(merged.queue)) {
    throw new UsageError("--create needs a queue name for -q/--queue, not a URL");
  }
  if (command === "attr" && Object.keys(merged.attrs ?? {}).length === 0) {
    throw new UsageError("--attr needs Key=Value");
  }
}

/** The outcome of parsing a command line. */
export type CliResult =
  | { kind: "help"; topic?: string }
  | { kind: "version" }
  | {
    kind: "options";
    options: Options;
    /** The merged explicit settings: what `--configure` writes. */
    settings: Settings;
  };

/** Hooks for {@linkcode parseCli}; the defaults read real files and print to stderr. */
export interface ParseCliOptions {
  /** Reads one configuration file into a layer. */
  loadFile?: (path: string) => Promise<Settings>;
  /** Receives one-line warnings (without the `sqsrun: ` prefix). */
  warn?: (message: string) => void;
}

/**
 * Parses a command line into Options: flags, then each `-f` file in order, then the
 * flags again on top, defaults and derived values last.
 */
export async function parseCli(argv: string[], hooks: ParseCliOptions = {}): Promise<CliResult> {
  const flags = parseFlags(argv);
  if (flags.help) {
    return flags.helpTopic ? { kind: "help", topic: flags.helpTopic } : { kind: "help" };
  }
  if (flags.version) return { kind: "version" };
  for (const notice of flags.notices) hooks.warn?.(notice);
  const load = hooks.loadFile ?? ((path: string) => loadConfigFile(path, { warn: hooks.warn }));
  const layers: Settings[] = [];
  for (const path of flags.files) layers.push(await load(path));
  const settings = mergeSettings(...layers, flags.settings);
  const command = chooseCommand(flags, settings);
  checkApplicable(flags, command, settings);
  const options = resolveOptions({
    command,
    settings,
    files: flags.files,
    push: flags.push,
    groupId: flags.groupId,
    dedupId: flags.dedupId,
    messageAttrs: flags.messageAttrs,
    counts: flags.counts,
    json: flags.json,
    configure: flags.configure,
    ...(command === "redrive" || command === "redrive-cancel" ? { redrive: flags.redrive } : {}),
    ...(command === "peek" ? { maxMessages: flags.maxMessages ?? DEFAULT_PEEK } : {}),
  });
  return { kind: "options", options, settings };
}

/** The text of `sqsrun --help`. */
export function helpText(): string {
  const d = DEFAULTS;
  return `Usage: sqsrun [options] [-- ARGV...]

${
    wrap(
      `A job runner for Amazon SQS: receives messages and runs ${runnerSummary()} for each one; the message is deleted only when the job succeeded.`,
    )
  }

Commands (exactly one; a job in a -f file counts as ${RUNNER_FLAGS.join("/")}):
      --list                      List queues (-q NAME: only names starting with NAME)
      --create                    Create queue -q (a name ending in .fifo makes a FIFO queue)
      --delete                    Delete queue -q (its messages are lost)
      --attr Key=Value            Set a queue attribute of -q (repeatable; with --create:
                                  attributes of the new queue)
      --push MESSAGE              Send MESSAGE to -q ('-' reads the body from stdin)
      --peek                      Show up to -n messages of -q, bodies and attributes, deleting
                                  none; each peek still counts as a receive toward the
                                  queue's redrive policy (maxReceiveCount), as the console's does
      --purge                     Delete every message of -q (they are lost, as with --delete)
      --redrive                   Move the messages of dead-letter queue -q back to its source
                                  queue (or --to) with a move task on SQS, else client-side;
                                  shows progress until it ends
      --redrive-status            List the recent message move tasks of dead-letter queue -q
      --redrive-cancel HANDLE     Stop a running move task (messages moved so far stay moved)
      --configure PATH.yaml       Write the other options to a configuration file (mode 0600)
${runnerFlagLines()}

AWS access:
  -k, --key-id ID                 AWS access key id (default: the AWS credential chain)
  -s, --secret-key KEY            AWS secret access key (never printed)
      --profile NAME              Profile of ~/.aws/config and ~/.aws/credentials
      --region REGION             AWS region (default: AWS_REGION, the queue URL, the profile)
      --endpoint-url URL          SQS endpoint (default: AWS_ENDPOINT_URL_SQS, AWS_ENDPOINT_URL)
  -q, --queue NAME|URL            SQS queue name or queue URL

Job:
  -t, --timeout SEC               Visibility timeout, whole seconds 0..43200 (default: the
                                  queue's own VisibilityTimeout, else ${d.timeout})
  -e, --extend-timeout SEC        Extend the visibility after SEC, 0 < SEC < timeout
                                  (default: timeout*3/4)
  -x, --kill-timeout SEC          Send SIGTERM to a job running longer than SEC
                                  (default: timeout*5, at most 43140: SQS's 12 hours less 1 min)
  -X, --kill-retry SEC            Repeat the kill signal every SEC (default: ${d.killRetry})
      --kill-grace SEC            SIGKILL a job SEC after the first SIGTERM (default: ${d.killGrace})
  -i, --interval SEC              Polling interval when the queue was empty (default: ${d.interval})
      --wait SEC                  Long-poll wait, whole seconds 0..20 (default: ${d.wait})
  -c, --concurrency N             Jobs run at once, 1..1000 (default: ${d.concurrency})
      --batch-size N              Messages per receive (--lambda: per invocation), 1..10
                                  (default: ${d.batchSize})
      --prefetch N|auto           Messages held ready beyond the running jobs, 0..1000; auto
                                  holds about 1 s of work by recent job times, at most
                                  --batch-size (default: auto)
      --shell                     Run --exec COMMAND through 'sh -c' (default: off)
      --env KEY=VALUE             Set an environment variable of the job (repeatable)
      --backoff BASE[,MAX]|off    Delay a failed message BASE*2^(receives-1) seconds, at most
                                  MAX (default: ${DEFAULT_BACKOFF.base},${DEFAULT_BACKOFF.max}; MAX default: ${d.backoffMax}; off: retry
                                  at once, as the Ruby tool)
      --max-receives N            Stop running a message received more than N times
                                  (default: no limit)
      --shutdown-timeout SEC      On SIGTERM/SIGINT, wait SEC for running jobs
                                  (default: the kill timeout)
  -d, --daemon PIDFILE            Run in the background, pid in PIDFILE (default: foreground)
  -o, --log PATH                  Append log lines to PATH (default: stdout)
      --log-format json|text      Log format (default: text on a terminal, json otherwise)
      --log-level LEVEL           debug, info, warn or error (default: ${d.logLevel})

S3 notification jobs:
      --s3                        Messages are S3 event notifications (SNS-wrapped too): run
                                  the job once per ObjectCreated record, the object on stdin
      --s3-delete                 Delete the object after its job succeeded (default: keep)
      --s3-gunzip                 Decompress objects stored with Content-Encoding: gzip

Lambda handlers (--lambda):
      --handler NAME              The runtime's _HANDLER (default: the last ARGV word, else
                                  the program's file name)
      --batch-window SEC          Wait up to SEC for a full --batch-size batch (default: 0,
                                  a batch is what one receive brings), at most 300

Web apps (--post URL, as Elastic Beanstalk's worker daemon sqsd):
      --content-type TYPE         Content-Type of the requests (default: application/json)
      --post-health PATH          Receive only while GET PATH of the app's origin answers
                                  2xx: before the first receive and after a failed connect
                                  (default: while the app's port accepts connections)
      --post-hmac HEADER          Sign each body: its HMAC-SHA256, in hex, in HEADER; the
                                  secret is ${HMAC_SECRET_ENV}, or:
      --post-hmac-secret-file FILE
                                  The file that holds the HMAC secret (one final newline
                                  is not part of it)

Metrics and health:
      --statsd HOST:PORT|off      Send DogStatsD metrics over UDP (default: DD_AGENT_HOST:
                                  DD_DOGSTATSD_PORT (8125) when DD_AGENT_HOST is set)
      --statsd-prefix PREFIX      Prefix of metric names (default: none, e.g. job.time)
      --statsd-tags k:v,...       Tags of every metric, besides queue and DD_ENV/SERVICE/VERSION
      --http [HOST:]PORT          Serve /metrics (Prometheus) and /healthz (default: off;
                                  HOST defaults to 127.0.0.1)

Admin output:
      --json                      Print the result as JSON
      --counts                    With --list: approximate visible, in-flight, delayed counts
      --group-id ID               With --push: message group id (FIFO queues; on a standard
                                  queue a fair queue's tenant)
      --dedup-id ID               With --push: deduplication id (FIFO queues)
      --message-attr Name=Value   With --push: a String message attribute (repeatable)
  -n, --max-messages N            With --peek: how many messages to show, 1..${MAX_PEEK}
                                  (default: ${DEFAULT_PEEK})

Redrive (--redrive):
      --to QUEUE                  Target queue (default: the one queue whose redrive policy
                                  names -q; several or none need --to)
      --rate N                    Move at most N messages per second, 1..${MAX_MOVE_RATE}
                                  (default: as fast as SQS moves them)
      --no-wait                   Print the move task's handle and exit; follow it with
                                  --redrive-status, stop it with --redrive-cancel
      --client-side               Move with receive, send and delete calls (the fallback where
                                  the endpoint has no move tasks): same body and attributes,
                                  deleted from -q only once sent; -t is how long a message
                                  being moved stays hidden (default: ${DEFAULT_MOVE_VISIBILITY})
      --group-id ID               From a standard queue to a FIFO queue: the group of every
                                  moved message (FIFO to FIFO keeps each message's group)

Other:
  -f, --file PATH.yaml            Read a configuration file (repeatable; later files, then
                                  flags, win)
  -E, --release-on-fail           Accepted for the Ruby tool's command lines: releasing a
                                  failed job's message is what sqsrun always does
${helpFlagLines()}
  -V, --version                   Show the version

Durations other than -t, --wait and --backoff accept decimals (e.g. -i 0.5), up to
${MAX_DURATION} seconds. Exit codes: 0 success, 1 runtime error, 2 usage error.
`;
}

/** Names what each runner kind runs: `a command (--exec) or a module (--run)`. */
function runnerSummary(): string {
  return orList(RUNNER_KINDS.map((kind) => `${kind.runs} (--${kind.name})`));
}

/** The help lines of the runner kinds' flags, in the columns of the others. */
function runnerFlagLines(): string {
  return RUNNER_KINDS.map((kind) =>
    `      ${`--${kind.name} ${kind.target}`.padEnd(28)}${kind.help}`
  )
    .join("\n");
}

/** The help lines of `-h, --help [TOPIC]`, naming every topic. */
function helpFlagLines(): string {
  const text = "Show this help, or the page of the manual on TOPIC: " +
    `${HELP_TOPICS.join(", ")} (e.g. sqsrun --help worker | less)`;
  const indent = " ".repeat(34);
  const lines = wrap(text, 96 - indent.length).split("\n");
  return [
    `  ${"-h, --help [TOPIC]".padEnd(32)}${lines[0]}`,
    ...lines.slice(1).map((l) => indent + l),
  ]
    .join("\n");
}

/** Breaks `text` into lines of at most `width` (80) characters, at spaces. */
function wrap(text: string, width = 80): string {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line !== "" && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line === "" ? word : `${line} ${word}`;
    }
  }
  return [...lines, line].join("\n");
}
