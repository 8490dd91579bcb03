/**
 * Dead-letter redrive: `--redrive`, `--redrive-status` and `--redrive-cancel`.
 *
 * `--redrive` asks SQS for a message move task (StartMessageMoveTask) and follows it
 * with ListMessageMoveTasks until it ends. Where the endpoint has no move tasks (moto
 * answers HTTP 500), refuses them, or cannot do this move (the queue is no dead-letter
 * queue, a standard queue to a FIFO one), sqsrun moves the messages itself: receive a
 * batch with a visibility timeout, send it to the target with the same body and
 * message attributes, and delete from the dead-letter queue only what was sent. A move
 * cut short (a crash, a kill) loses nothing: what was received but not deleted becomes
 * visible again, and a second run moves it, at worst a second time.
 *
 * @module
 */
import {
  CancelMessageMoveTaskCommand,
  DeleteMessageBatchCommand,
  GetQueueAttributesCommand,
  ListDeadLetterSourceQueuesCommand,
  ListMessageMoveTasksCommand,
  type ListMessageMoveTasksResultEntry,
  type Message,
  type MessageAttributeValue,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
  type SendMessageBatchRequestEntry,
  type SQSClient,
  StartMessageMoveTaskCommand,
} from "@aws-sdk/client-sqs";
import { type AdminIo, queueCounts, queueName } from "./admin.ts";
import {
  describeAwsError,
  errorCode,
  ForeignErrorAnswer,
  isQueueUrl,
  regionFromQueueUrl,
  resolveEndpoint,
  resolveQueueUrl,
  resolveRegion,
  toRuntimeError,
} from "./aws.ts";
import type { Options } from "./config.ts";
import { RuntimeError, UsageError } from "./errors.ts";

/** How long (s) the client-side move hides a message it is moving, unless `-t` says. */
export const DEFAULT_MOVE_VISIBILITY = 60;
/** How often (ms) a followed move task is asked for its progress. */
const TASK_POLL_MS = 2_000;
/** Progress lines come at most this often (ms). */
const PROGRESS_EVERY_MS = 1_000;
/** The most bytes of bodies and attributes sent in one SendMessageBatch call. */
const MAX_BATCH_BYTES = 256 * 1024;

/** A resolved queue: URL, name, ARN, and whether it is FIFO. */
export interface QueueRef {
  url: string;
  name: string;
  arn: string;
  fifo: boolean;
}

function subject(queue: QueueRef | string): string {
  return `queue '${typeof queue === "string" ? queueName(queue) : queue.name}'`;
}

// ---------------------------------------------------------------------------
// Endpoints and queues

const AWS_HOST = /(^|\.)amazonaws\.com(\.cn)?$/;
const LOOPBACK = new Set(["localhost", "127.0.0.1", "[::1]"]);

function sameServer(a: URL, b: URL): boolean {
  const host = (url: URL) => LOOPBACK.has(url.hostname) ? "loopback" : url.hostname;
  return a.protocol === b.protocol && a.port === b.port && host(a) === host(b);
}

/**
 * Refuses a queue URL that sqsrun would not be talking to: one on another server
 * than the SQS endpoint, or a real AWS queue URL in another region. An emulator
 * would otherwise act on its own queue of the same name.
 */
export function checkQueueEndpoint(options: Options, queue: string, where: string): void {
  if (!isQueueUrl(queue)) return;
  const url = new URL(queue);
  const endpoint = resolveEndpoint(options);
  if (AWS_HOST.test(url.hostname)) {
    const region = resolveRegion(options);
    const own = regionFromQueueUrl(queue);
    if (endpoint && !AWS_HOST.test(new URL(endpoint).hostname)) {
      throw new UsageError(
        `${where} ${queue} is an AWS queue URL, but the endpoint is ${endpoint}`,
      );
    }
    if (own && region && own !== region) {
      throw new UsageError(`${where} ${queue} is in region ${own}, not in ${region}`);
    }
    return;
  }
  if (endpoint && !sameServer(url, new URL(endpoint))) {
    throw new UsageError(
      `${where} ${queue} is not on the SQS endpoint ${endpoint}: give the queue's name, ` +
        "or --endpoint-url of its server",
    );
  }
}

/** Resolves a queue name or URL to its URL, name, ARN and kind; a missing queue is one line. */
export async function describeQueue(client: SQSClient, queue: string): Promise<QueueRef> {
  const url = await resolveQueueUrl(client, queue);
  try {
    const result = await client.send(
      new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ["QueueArn"] }),
    );
    const arn = result.Attributes?.QueueArn;
    if (!arn) throw new RuntimeError("the endpoint did not say the queue's ARN");
    const name = queueName(url);
    return { url, name, arn, fifo: name.endsWith(".fifo") };
  } catch (error) {
    throw toRuntimeError(error, subject(url));
  }
}

/**
 * The queues whose redrive policy names `dlq`, or undefined when the endpoint would not
 * say (a missing permission): then only `--to` can name the target.
 */
async function sourceQueues(client: SQSClient, dlq: QueueRef): Promise<string[] | undefined> {
  const urls: string[] = [];
  let token: string | undefined;
  try {
    do {
      const page = await client.send(
        new ListDeadLetterSourceQueuesCommand({ QueueUrl: dlq.url, NextToken: token }),
      );
      urls.push(...(page.queueUrls ?? []));
      token = page.NextToken;
    } while (token && urls.length < 100);
  } catch (error) {
    if (missingApi(error) || isRefusal(error)) return undefined;
    throw toRuntimeError(error, subject(dlq));
  }
  return urls;
}

// ---------------------------------------------------------------------------
// Endpoints without move tasks

function httpStatus(error: unknown): number | undefined {
  const status = (error as { $metadata?: { httpStatusCode?: unknown } } | null)?.$metadata
    ?.httpStatusCode;
  return typeof status === "number" ? status : undefined;
}

const UNKNOWN_ACTION_CODES = new Set([
  "InvalidAction",
  "UnknownOperationException",
  "UnknownOperation",
  "NotImplemented",
  "UnsupportedOperation",
]);
const REFUSED_CODES = new Set(["AccessDenied", "AccessDeniedException"]);

/**
 * "HTTP 500" or the code when the endpoint has no such call: it answered with
 * something that is not an SQS error (moto: an HTML page with HTTP 500; ElasticMQ:
 * HTTP 503 after its own time-out), or with an unknown-action code.
 */
function missingApi(error: unknown): string | undefined {
  const code = errorCode(error) ?? "";
  const status = httpStatus(error);
  if (UNKNOWN_ACTION_CODES.has(code)) {
    // "A message move task is already running" is SQS's answer to a second task.
    const message = error instanceof Error ? error.message : "";
    return /already/i.test(message) ? undefined : code;
  }
  // sqsrun's client reads a non-JSON answer as a ForeignErrorAnswer; a bare SDK
  // client reports it as a SyntaxError or an Unknown error.
  const notSqs = (error instanceof ForeignErrorAnswer && error.code === undefined) ||
    code === "SyntaxError" || code === "Unknown" ||
    (error instanceof Error && error.message === "UnknownError");
  return notSqs && status !== undefined && status >= 400 ? `HTTP ${status}` : undefined;
}

function isRefusal(error: unknown): boolean {
  return REFUSED_CODES.has(errorCode(error) ?? "");
}

/**
 * Why a failed StartMessageMoveTask calls for the client-side move, or undefined when
 * it does not (a task already running, a missing queue, a network failure: the task
 * may even have started).
 */
export function moveTaskFallbackReason(error: unknown): string | undefined {
  const missing = missingApi(error);
  if (missing) return `StartMessageMoveTask is not available at this endpoint: ${missing}`;
  if (isRefusal(error)) return `StartMessageMoveTask was refused: ${describeAwsError(error)}`;
  return undefined;
}

/** A one-line error for a move-task call that failed; `api` names the call. */
function moveTaskError(error: unknown, api: string, about: string): RuntimeError | UsageError {
  const missing = missingApi(error);
  if (missing) {
    return new RuntimeError(`${about}: ${api} is not available at this endpoint (${missing})`, {
      cause: error,
    });
  }
  if (errorCode(error) === "ResourceNotFoundException") {
    return new RuntimeError(`${about}: no such move task (${describeAwsError(error)})`, {
      cause: error,
    });
  }
  return toRuntimeError(error, about);
}

// ---------------------------------------------------------------------------
// Output

// deno-lint-ignore no-control-regex
const UNPRINTABLE = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/g;

/** Escapes control characters but tab and newline: text from the endpoint goes to a terminal. */
export function escapeControls(text: string): string {
  return text.replace(UNPRINTABLE, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}

/** Writes one `sqsrun: ` line to stderr; never fails (a closed stderr is no reason to stop). */
function stderrLine(line: string): void {
  const data = new TextEncoder().encode(`sqsrun: ${escapeControls(line)}\n`);
  try {
    let offset = 0;
    while (offset < data.length) offset += Deno.stderr.writeSync(data.subarray(offset));
  } catch { /* nowhere to say it */ }
}

function progressOf(io: AdminIo): (line: string) => void {
  return io.progress ?? stderrLine;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------------------
// --redrive

/** What a finished redrive reports. */
export interface RedriveResult {
  path: "move-task" | "client-side";
  source: string;
  target: string;
  moved: number;
  failed: number;
  /** The count at the start: ApproximateNumberOfMessagesToMove, or visible + in flight. */
  total: number;
  task_handle?: string;
  status?: string;
  /** Client-side: messages sent but not deleted from the DLQ (they will be moved again). */
  not_deleted?: number;
  /** Client-side: messages still in the DLQ at the end (in flight elsewhere, or failed). */
  remaining?: number;
}

/** Chooses the target and the path, runs the move and prints the result. */
export async function runRedrive(client: SQSClient, options: Options, io: AdminIo): Promise<void> {
  const inputs = options.redrive ?? { noWait: false, clientSide: false };
  // Everything the flags alone decide is checked before the first call.
  checkQueueEndpoint(options, options.queue!, "-q/--queue");
  if (inputs.to !== undefined) {
    checkQueueEndpoint(options, inputs.to, "--to");
    if (inputs.to === options.queue) {
      throw new UsageError("--redrive: --to names the dead-letter queue -q itself");
    }
    checkKinds(queueName(options.queue!), queueName(inputs.to), options.groupId);
  } else if (options.groupId !== undefined) {
    // A dead-letter queue is of its source queue's kind: no group to give.
    throw new UsageError("--group-id with --redrive needs --to a FIFO queue");
  }
  const progress = progressOf(io);
  const source = await describeQueue(client, options.queue!);
  const sources = await sourceQueues(client, source);
  const target = await chooseTarget(client, source, sources, inputs.to);
  if (target.url === source.url || target.arn === source.arn) {
    throw new UsageError(`--redrive: ${subject(source)} cannot be moved to itself`);
  }
  checkKinds(source.name, target.name, options.groupId);

  const route = `${subject(source)} to ${subject(target)}`;
  let reason = inputs.clientSide ? "--client-side" : undefined;
  if (!reason && sources?.length === 0) {
    reason = `${subject(source)} is the dead-letter queue of no queue, and move tasks ` +
      "only move from dead-letter queues";
  }
  if (!reason && !source.fifo && target.fifo) {
    reason = "move tasks cannot give messages of a standard queue the group of --group-id";
  }

  let result: RedriveResult | undefined;
  if (!reason) {
    const before = await queueCounts(client, source.url);
    let handle: string;
    try {
      handle = await startMoveTask(client, source, inputs.to ? target : undefined, inputs.rate);
    } catch (error) {
      reason = moveTaskFallbackReason(error);
      if (!reason) throw alreadyRunning(error, source) ?? toRuntimeError(error, subject(source));
    }
    if (!reason) {
      progress(
        `redrive ${route}: move task on SQS, handle ${handle!} (it goes on if sqsrun stops; ` +
          "--redrive-cancel HANDLE stops it)",
      );
      if (inputs.noWait) {
        const started = { path: "move-task", task_handle: handle!, status: "RUNNING" };
        io.print(
          options.json
            ? JSON.stringify({ ...started, source: source.name, target: target.name })
            : escapeControls(handle!),
        );
        return;
      }
      result = await followMoveTask(client, source, target, handle!, before?.visible, progress);
      // ElasticMQ 1.6.14 "completes" a FIFO move task having moved nothing.
      const after = result.moved === 0 ? await queueCounts(client, source.url) : undefined;
      if (after && before && before.visible > 0 && after.visible > 0) {
        reason = `move task ${handle!} ended having moved nothing, yet ${subject(source)} ` +
          `holds ${after.visible} messages`;
        result = undefined;
      }
    }
  }
  if (!result) {
    if (inputs.noWait) {
      throw new RuntimeError(
        `${subject(source)}: ${reason}; without --no-wait sqsrun moves the messages itself`,
      );
    }
    progress(`redrive ${route}: client-side move (${reason})`);
    if (source.fifo && !target.fifo) {
      progress("redrive: the target is a standard queue: message groups and order are not kept");
    }
    result = await moveClientSide(client, {
      source,
      target,
      rate: inputs.rate,
      visibility: options.givenTimings.timeout ?? DEFAULT_MOVE_VISIBILITY,
      groupId: options.groupId,
      progress,
    });
  }
  printResult(io, options.json, result);
  if (result.failed > 0) {
    throw new RuntimeError(
      `redrive ${route}: ${result.failed} messages were not sent; they stay in ${subject(source)}`,
    );
  }
}

/** The standard/FIFO combinations a move can make; `--group-id` only for standard to FIFO. */
function checkKinds(source: string, target: string, groupId: string | undefined): void {
  const fromFifo = source.endsWith(".fifo");
  const toFifo = target.endsWith(".fifo");
  if (!fromFifo && toFifo && groupId === undefined) {
    throw new UsageError(
      `--redrive from standard queue '${source}' to FIFO queue '${target}' needs --group-id ID ` +
        "(the group of every moved message)",
    );
  }
  if (groupId !== undefined && !(!fromFifo && toFifo)) {
    throw new UsageError(
      "--group-id with --redrive only applies to a move from a standard queue to a FIFO queue",
    );
  }
}

async function chooseTarget(
  client: SQSClient,
  source: QueueRef,
  sources: string[] | undefined,
  to: string | undefined,
): Promise<QueueRef> {
  if (to !== undefined) return await describeQueue(client, to);
  if (sources === undefined) {
    throw new UsageError(
      `--redrive: the endpoint would not list the source queues of ${
        subject(source)
      }: give --to QUEUE`,
    );
  }
  if (sources.length === 0) {
    throw new UsageError(
      `--redrive: ${subject(source)} is the dead-letter queue of no queue: give --to QUEUE`,
    );
  }
  if (sources.length > 1) {
    const names = sources.slice(0, 5).map((url) => `'${queueName(url)}'`).join(", ");
    throw new UsageError(
      `--redrive: ${subject(source)} is the dead-letter queue of ${sources.length} queues ` +
        `(${names}${sources.length > 5 ? ", ..." : ""}): give --to QUEUE`,
    );
  }
  return await describeQueue(client, sources[0]);
}

function alreadyRunning(error: unknown, source: QueueRef): RuntimeError | undefined {
  if (error instanceof Error && /already/i.test(error.message)) {
    return new RuntimeError(
      `${subject(source)}: a message move task is already running (see --redrive-status; ` +
        "--redrive-cancel HANDLE stops it)",
      { cause: error },
    );
  }
  return undefined;
}

function printResult(io: AdminIo, json: boolean, result: RedriveResult): void {
  if (json) {
    io.print(JSON.stringify(result));
    return;
  }
  const how = result.path === "move-task"
    ? `move task ${escapeControls(result.task_handle ?? "")}`
    : `client-side, ${result.failed} failed`;
  const left = result.remaining ? `; ${result.remaining} still in '${result.source}'` : "";
  io.print(
    `moved ${result.moved} of ${result.total} messages from '${result.source}' to ` +
      `'${result.target}' (${how})${left}`,
  );
}

// ---------------------------------------------------------------------------
// Move tasks

async function startMoveTask(
  client: SQSClient,
  source: QueueRef,
  target: QueueRef | undefined,
  rate: number | undefined,
): Promise<string> {
  const result = await client.send(
    new StartMessageMoveTaskCommand({
      SourceArn: source.arn,
      // Without --to SQS moves each message back to the queue it came from.
      DestinationArn: target?.arn,
      MaxNumberOfMessagesPerSecond: rate,
    }),
  );
  if (!result.TaskHandle) {
    throw new RuntimeError(`${subject(source)}: the endpoint started a move task without a handle`);
  }
  return result.TaskHandle;
}

async function listMoveTasks(
  client: SQSClient,
  source: QueueRef,
): Promise<ListMessageMoveTasksResultEntry[]> {
  try {
    const result = await client.send(
      new ListMessageMoveTasksCommand({ SourceArn: source.arn, MaxResults: 10 }),
    );
    return result.Results ?? [];
  } catch (error) {
    throw moveTaskError(error, "ListMessageMoveTasks", subject(source));
  }
}

/**
 * Polls the task until it is COMPLETED (resolves), or FAILED or CANCELLED (throws).
 * The total is the task's ApproximateNumberOfMessagesToMove once it says one (SQS
 * fixes it at the start; ElasticMQ counts it down, so the largest seen is kept),
 * before that the DLQ's visible count at the start, `estimate`.
 */
async function followMoveTask(
  client: SQSClient,
  source: QueueRef,
  target: QueueRef,
  handle: string,
  estimate: number | undefined,
  progress: (line: string) => void,
): Promise<RedriveResult> {
  let shown = "";
  let toMove: number | undefined;
  for (let poll = 0;; poll++) {
    await delay(poll === 0 ? 500 : TASK_POLL_MS);
    let tasks;
    try {
      tasks = await listMoveTasks(client, source);
    } catch (error) {
      const line = error instanceof Error ? error.message : String(error);
      throw new RuntimeError(`${line}; move task ${handle} goes on (see --redrive-status)`);
    }
    const task = tasks.find((entry) => entry.TaskHandle === handle);
    if (!task) {
      throw new RuntimeError(
        `${subject(source)}: move task ${handle} is no longer listed (cancelled?)`,
      );
    }
    const moved = task.ApproximateNumberOfMessagesMoved ?? 0;
    const said = task.ApproximateNumberOfMessagesToMove;
    if (said !== undefined) toMove = Math.max(toMove ?? 0, said);
    const total = Math.max(toMove ?? estimate ?? 0, moved);
    const status = task.Status ?? "RUNNING";
    const line = `redrive: ${status}, moved ${moved} of ${total}`;
    if (line !== shown) progress(line);
    shown = line;
    if (status === "COMPLETED") {
      return {
        path: "move-task",
        source: source.name,
        target: target.name,
        moved,
        failed: 0,
        total,
        task_handle: handle,
        status,
      };
    }
    if (status === "FAILED" || status === "CANCELLED") {
      const why = task.FailureReason ? `: ${task.FailureReason}` : "";
      throw new RuntimeError(
        `${subject(source)}: move task ${handle} ${status} after moving ${moved} of ${total}${why}`,
      );
    }
  }
}

/** `--redrive-status`: the recent move tasks of the dead-letter queue `-q`. */
export async function redriveStatus(
  client: SQSClient,
  options: Options,
  io: AdminIo,
): Promise<void> {
  checkQueueEndpoint(options, options.queue!, "-q/--queue");
  const source = await describeQueue(client, options.queue!);
  const tasks = (await listMoveTasks(client, source)).map((task) => ({
    task_handle: task.TaskHandle ?? "",
    status: task.Status ?? "",
    moved: task.ApproximateNumberOfMessagesMoved ?? 0,
    to_move: task.ApproximateNumberOfMessagesToMove ?? null,
    started: task.StartedTimestamp ? new Date(task.StartedTimestamp).toISOString() : null,
    destination: task.DestinationArn ?? null,
    rate: task.MaxNumberOfMessagesPerSecond ?? null,
    failure_reason: task.FailureReason ?? null,
  }));
  if (options.json) {
    io.print(JSON.stringify({ name: source.name, url: source.url, tasks }));
    return;
  }
  for (const task of tasks) {
    const fields = [
      task.task_handle,
      task.status,
      task.moved,
      task.to_move ?? "-",
      task.started ?? "-",
      task.destination ?? "(source queues)",
      task.failure_reason ?? "",
    ];
    io.print(escapeControls(fields.join("\t")).trimEnd());
  }
}

/** `--redrive-cancel HANDLE`. */
export async function redriveCancel(
  client: SQSClient,
  options: Options,
  io: AdminIo,
): Promise<void> {
  const handle = options.redrive?.taskHandle ?? "";
  let moved: number;
  try {
    const result = await client.send(new CancelMessageMoveTaskCommand({ TaskHandle: handle }));
    moved = result.ApproximateNumberOfMessagesMoved ?? 0;
  } catch (error) {
    throw moveTaskError(error, "CancelMessageMoveTask", `move task ${handle}`);
  }
  io.print(
    options.json
      ? JSON.stringify({ task_handle: handle, cancelled: true, moved })
      : `cancelled move task ${handle} after ${moved} messages moved`,
  );
}

// ---------------------------------------------------------------------------
// The client-side move

/** What {@linkcode moveClientSide} moves, how fast, and where it reports progress. */
export interface ClientMove {
  source: QueueRef;
  target: QueueRef;
  /** Most messages per second; unset: as fast as the calls go. */
  rate?: number;
  /** Visibility timeout (s) of the received messages: time enough to send them. */
  visibility: number;
  /** The group of every message sent to a FIFO target from a standard source. */
  groupId?: string;
  progress: (line: string) => void;
}

/** Bytes a message takes in a send request, roughly as SQS counts them. */
function entrySize(entry: SendMessageBatchRequestEntry): number {
  const encoder = new TextEncoder();
  let size = encoder.encode(entry.MessageBody ?? "").length;
  for (const [name, value] of Object.entries(entry.MessageAttributes ?? {})) {
    size += encoder.encode(name + (value.DataType ?? "") + (value.StringValue ?? "")).length +
      (value.BinaryValue?.length ?? 0);
  }
  return size;
}

/** The message attributes to send again: String, Number and Binary ones (and their subtypes). */
function copyAttributes(message: Message): Record<string, MessageAttributeValue> | undefined {
  const out: Record<string, MessageAttributeValue> = {};
  for (const [name, value] of Object.entries(message.MessageAttributes ?? {})) {
    if (!value.DataType) continue;
    out[name] = value.DataType.startsWith("Binary")
      ? { DataType: value.DataType, BinaryValue: value.BinaryValue }
      : { DataType: value.DataType, StringValue: value.StringValue };
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

/** The send entry for one received message; FIFO targets get a group and a dedup id. */
function sendEntry(
  message: Message,
  index: number,
  move: ClientMove,
): SendMessageBatchRequestEntry {
  const trace = message.Attributes?.AWSTraceHeader;
  return {
    Id: String(index),
    MessageBody: message.Body ?? "",
    MessageAttributes: copyAttributes(message),
    MessageSystemAttributes: trace
      ? { AWSTraceHeader: { DataType: "String", StringValue: trace } }
      : undefined,
    ...(move.target.fifo
      ? {
        MessageGroupId: move.source.fifo ? message.Attributes?.MessageGroupId : move.groupId,
        // The same DLQ message sent twice (a run killed after the send, before the
        // delete) is dropped by the target's five-minute deduplication.
        MessageDeduplicationId: `redrive-${message.MessageId}`,
      }
      : {}),
  };
}

/** Splits entries into calls of at most 10 entries and {@linkcode MAX_BATCH_BYTES}, in order. */
function sendChunks(entries: SendMessageBatchRequestEntry[]): SendMessageBatchRequestEntry[][] {
  const chunks: SendMessageBatchRequestEntry[][] = [];
  let chunk: SendMessageBatchRequestEntry[] = [];
  let bytes = 0;
  for (const entry of entries) {
    const size = entrySize(entry);
    if (chunk.length > 0 && (chunk.length === 10 || bytes + size > MAX_BATCH_BYTES)) {
      chunks.push(chunk);
      chunk = [];
      bytes = 0;
    }
    chunk.push(entry);
    bytes += size;
  }
  if (chunk.length > 0) chunks.push(chunk);
  return chunks;
}

/**
 * Moves messages with receive, send and delete calls. It takes the messages the DLQ
 * holds at the start (visible and in flight, so those of an interrupted run are
 * waited for, up to the visibility timeout), and stops at an empty receive once that
 * many were handled or the DLQ is empty; at twice that count it stops anyway, so
 * messages that fail straight back into the DLQ are not chased for ever.
 */
export async function moveClientSide(client: SQSClient, move: ClientMove): Promise<RedriveResult> {
  const { source, target, progress } = move;
  const counts = await queueCounts(client, source.url);
  const total = (counts?.visible ?? 0) + (counts?.in_flight ?? 0);
  const result: RedriveResult = {
    path: "client-side",
    source: source.name,
    target: target.name,
    moved: 0,
    failed: 0,
    total,
    not_deleted: 0,
  };
  progress(
    `redrive: ${total} messages to move` +
      (counts?.in_flight ? ` (${counts.in_flight} of them in flight)` : ""),
  );
  const batchSize = Math.min(10, move.rate ?? 10);
  let nextAt = performance.now();
  let shownAt = performance.now();
  let waitingSince: number | undefined;
  const handled = () => result.moved + result.failed;
  const fail = (error: unknown, doing: string) =>
    new RuntimeError(
      `redrive ${subject(source)} to ${subject(target)}: ${doing}: ${describeAwsError(error)} ` +
        `(after ${result.moved} moved; what was not moved stays in ${subject(source)})`,
      { cause: error },
    );

  while (handled() < total * 2 + 10) {
    const pause = nextAt - performance.now();
    if (pause > 0) await delay(pause);
    let messages: Message[];
    try {
      const received = await client.send(
        new ReceiveMessageCommand({
          QueueUrl: source.url,
          MaxNumberOfMessages: batchSize,
          VisibilityTimeout: move.visibility,
          WaitTimeSeconds: waitingSince === undefined ? 1 : 2,
          MessageSystemAttributeNames: ["All"],
          MessageAttributeNames: ["All"],
        }),
      );
      messages = received.Messages ?? [];
    } catch (error) {
      throw fail(error, "receive");
    }

    if (messages.length === 0) {
      if (handled() >= total) break;
      const now = await queueCounts(client, source.url);
      if (!now || now.visible + now.in_flight === 0) break;
      // Messages of an interrupted run (or failed sends) come back after their timeout.
      waitingSince ??= performance.now();
      if (performance.now() - waitingSince > (move.visibility + 10) * 1000) break;
      if (performance.now() - shownAt >= PROGRESS_EVERY_MS * 5) {
        progress(`redrive: waiting for ${now.in_flight} messages in flight in '${source.name}'`);
        shownAt = performance.now();
      }
      continue;
    }
    waitingSince = undefined;
    if (move.rate) {
      nextAt = Math.max(nextAt, performance.now()) + messages.length * 1000 / move.rate;
    }

    const entries = messages.map((message, index) => sendEntry(message, index, move));
    const sent = new Set<string>();
    const failedGroups = new Set<string>();
    for (const chunk of sendChunks(entries)) {
      // A FIFO group whose message failed sends no later message: they all come back
      // into view together, in their order.
      const ready = chunk.filter((entry) => !failedGroups.has(entry.MessageGroupId ?? "\0"));
      if (ready.length === 0) continue;
      let answer;
      try {
        answer = await client.send(
          new SendMessageBatchCommand({ QueueUrl: target.url, Entries: ready }),
        );
      } catch (error) {
        throw fail(error, "send");
      }
      for (const ok of answer.Successful ?? []) if (ok.Id !== undefined) sent.add(ok.Id);
      for (const entry of ready) {
        if (!sent.has(entry.Id!) && target.fifo) failedGroups.add(entry.MessageGroupId ?? "\0");
      }
      const refusal = answer.Failed?.[0];
      if (refusal) {
        progress(
          `redrive: ${answer.Failed!.length} messages not sent to '${target.name}': ` +
            `${refusal.Code ?? ""} ${refusal.Message ?? ""}`.trim(),
        );
      }
    }
    result.failed += messages.length - sent.size;

    const deletes = messages.flatMap((message, index) =>
      sent.has(String(index)) ? [{ Id: String(index), ReceiptHandle: message.ReceiptHandle }] : []
    );
    if (deletes.length > 0) {
      let answer;
      try {
        answer = await client.send(
          new DeleteMessageBatchCommand({ QueueUrl: source.url, Entries: deletes }),
        );
      } catch (error) {
        result.not_deleted! += deletes.length;
        throw fail(error, `delete (${deletes.length} messages sent will be moved again)`);
      }
      result.not_deleted! += answer.Failed?.length ?? 0;
    }
    result.moved += sent.size;
    if (performance.now() - shownAt >= PROGRESS_EVERY_MS) {
      progress(
        `redrive: moved ${result.moved} of ${total}` +
          (result.failed ? `, ${result.failed} failed` : ""),
      );
      shownAt = performance.now();
    }
  }
  const left = await queueCounts(client, source.url);
  result.remaining = (left?.visible ?? 0) + (left?.in_flight ?? 0);
  return result;
}
