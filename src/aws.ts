/**
 * SQS and S3 clients built from the options: credentials, region, endpoint and
 * timeouts in one place, plus the translation of AWS failures into one-line errors.
 *
 * @module
 */
import { GetQueueUrlCommand, SQSClient, type SQSClientConfig } from "@aws-sdk/client-sqs";
import type { S3Client } from "@aws-sdk/client-s3";
import { NodeHttpHandler } from "@smithy/node-http-handler";
import { RuntimeError, UsageError } from "./errors.ts";

/** The options that decide how sqsrun talks to AWS. */
export interface AwsOptions {
  keyId?: string;
  secretKey?: string;
  region?: string;
  endpointUrl?: string;
  profile?: string;
  /** Longest long poll the client will make, in seconds; requests may take this long. */
  wait?: number;
  /** Queue name or URL, used to infer the region of a real AWS queue URL. */
  queue?: string;
}

/** Region used against a custom endpoint when nothing else names one (emulators ignore it). */
const EMULATOR_REGION = "us-east-1";

/**
 * Returns the endpoint from the options or the standard AWS environment variables;
 * else, for a queue URL outside AWS (an emulator, a proxy), that URL's origin.
 */
export function resolveEndpoint(
  options: AwsOptions,
  env: (name: string) => string | undefined = Deno.env.get,
): string | undefined {
  return options.endpointUrl ?? env("AWS_ENDPOINT_URL_SQS") ?? env("AWS_ENDPOINT_URL") ??
    nonAwsQueueOrigin(options.queue);
}

/** The origin of a queue URL that is not on an AWS host, so the SDK need not guess it per call. */
function nonAwsQueueOrigin(queue: string | undefined): string | undefined {
  if (!queue || !isQueueUrl(queue)) return undefined;
  try {
    const url = new URL(queue);
    return /\.amazonaws\.com(\.cn)?$/.test(url.hostname) ? undefined : url.origin;
  } catch {
    return undefined;
  }
}

/** Returns the region of an `https://sqs.<region>.amazonaws.com/...` queue URL, if it is one. */
export function regionFromQueueUrl(queue: string | undefined): string | undefined {
  if (!queue) return undefined;
  const match = /^https?:\/\/sqs[.-]([a-z0-9-]+)\.amazonaws\.com/.exec(queue);
  return match?.[1];
}

/**
 * Returns the region named in an AWS endpoint host (`sqs.eu-west-1.amazonaws.com`, a VPC
 * endpoint `vpce-1a2b.sqs.eu-west-1.vpce.amazonaws.com`), if it is one.
 */
export function regionFromEndpoint(endpoint: string | undefined): string | undefined {
  const host = endpointHost(endpoint);
  return host
    ? /(?:^|\.)([a-z]{2}(?:-[a-z]+)+-\d+)\.(?:vpce\.)?amazonaws\.com(?:\.cn)?$/.exec(host)?.[1]
    : undefined;
}

function endpointHost(endpoint: string | undefined): string | undefined {
  if (!endpoint) return undefined;
  try {
    return new URL(endpoint).hostname.toLowerCase();
  } catch {
    return undefined;
  }
}

/** Returns true for an endpoint that is not AWS itself: an emulator or a proxy. */
function isCustomEndpoint(endpoint: string | undefined): boolean {
  const host = endpointHost(endpoint);
  return host !== undefined && !/(^|\.)amazonaws\.com(\.cn)?$/.test(host);
}

/**
 * Resolves the region: flag, environment, the queue URL, an AWS endpoint's host, then
 * an emulator default for a non-AWS endpoint. Undefined leaves it to the SDK (the profile).
 */
export function resolveRegion(
  options: AwsOptions,
  env: (name: string) => string | undefined = Deno.env.get,
): string | undefined {
  const endpoint = resolveEndpoint(options, env);
  return options.region ?? env("AWS_REGION") ?? env("AWS_DEFAULT_REGION") ??
    regionFromQueueUrl(options.queue) ?? regionFromEndpoint(endpoint) ??
    (isCustomEndpoint(endpoint) ? EMULATOR_REGION : undefined);
}

function clientConfig(
  options: AwsOptions,
  endpoint: string | undefined,
  requestTimeoutMs = (options.wait ?? 20) * 1000 + 10_000,
) {
  if ((options.keyId === undefined) !== (options.secretKey === undefined)) {
    throw new UsageError("-k/--key-id and -s/--secret-key must be given together");
  }
  if (options.profile !== undefined && options.keyId === undefined) {
    assertProfileExists(options.profile);
  }
  return {
    region: resolveRegion(options),
    endpoint,
    profile: options.profile,
    maxAttempts: 2,
    // The SDK's own warnings (a profile beside environment keys, ...) would reach
    // stderr as blocks of text; sqsrun says what matters in its own one-line errors.
    logger: SILENT_SDK_LOGGER,
    credentials: options.keyId !== undefined && options.secretKey !== undefined
      ? { accessKeyId: options.keyId, secretAccessKey: options.secretKey }
      : undefined,
    // The SDK only warns on a request timeout unless told to throw; a hung
    // endpoint must fail the call so the caller's back-off takes over.
    requestHandler: new NodeHttpHandler({
      connectionTimeout: 5_000,
      requestTimeout: requestTimeoutMs,
      throwOnRequestTimeout: true,
    }),
  };
}

/**
 * A logger for the SDK that says nothing (its constructor is not the SDK's NoOpLogger).
 *
 * It has no `info`: the SDK calls `logger?.info?.({...})` after every request, with a
 * copy of the input and output filtered for secrets as the argument, which is built
 * only when there is an `info` to call. With a do-nothing `info` that copy was made
 * and thrown away on each receive, delete and extension, about 5% of what the worker
 * allocates under load. Every other level is called without `?.` somewhere.
 */
const SILENT_SDK_LOGGER = {
  trace() {},
  debug() {},
  warn() {},
  error() {},
} as unknown as NonNullable<SQSClientConfig["logger"]>;

/** Where the shared AWS files are, as the SDK finds them. */
function sharedAwsFiles(env: (name: string) => string | undefined): string[] {
  const home = env("HOME") ?? env("USERPROFILE") ?? "";
  return [
    env("AWS_CONFIG_FILE") ?? `${home}/.aws/config`,
    env("AWS_SHARED_CREDENTIALS_FILE") ?? `${home}/.aws/credentials`,
  ];
}

/**
 * Fails with a one-line UsageError when `--profile NAME` is in neither shared AWS
 * file: the SDK would only say that no credentials could be loaded.
 */
export function assertProfileExists(
  profile: string,
  env: (name: string) => string | undefined = Deno.env.get,
): void {
  const files = sharedAwsFiles(env);
  const header = new RegExp(
    `^\\s*\\[\\s*(profile\\s+)?${profile.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\s*\\]`,
    "m",
  );
  for (const file of files) {
    try {
      if (header.test(Deno.readTextFileSync(file))) return;
    } catch {
      // Absent or unreadable: the other file may still name it.
    }
  }
  throw new UsageError(`--profile ${profile}: no such profile in ${files.join(" or ")}`);
}

/** Creates an SQS client for the options. */
export function createSqsClient(options: AwsOptions): SQSClient {
  const client = new SQSClient(clientConfig(options, resolveEndpoint(options)));
  client.middlewareStack.add(foreignErrorAnswers, {
    step: "deserialize",
    // Inside the SDK's deserializer: this one sees the raw answer first.
    priority: "low",
    name: "sqsrunForeignErrorAnswers",
  });
  return client;
}

/** An error answer that did not come as SQS's JSON: its HTTP status, and the code it named. */
export class ForeignErrorAnswer extends Error {
  readonly $metadata: { httpStatusCode: number };
  constructor(readonly status: number, readonly code: string | undefined, message: string) {
    super(message);
    this.name = code ?? "ForeignErrorAnswer";
    this.$metadata = { httpStatusCode: status };
  }
}

/** A middleware of the deserialize step (the last overload of `middlewareStack.add`). */
type DeserializeStep = Parameters<SQSClient["middlewareStack"]["add"]>[0];

/**
 * Reads an error answer that is not JSON (an XML error of an older endpoint or a
 * proxy in front of SQS, an HTML page, an empty body) and throws it as what it
 * says: the XML's own code (InvalidClientTokenId, AccessDenied, ...) or the bare
 * status. Without this the SDK reports only that the body was not JSON.
 */
const foreignErrorAnswers: DeserializeStep = (next) => {
  return async (args) => {
    const result = await next(args);
    const response = result.response as {
      statusCode?: number;
      headers?: Record<string, string>;
      body?: AsyncIterable<Uint8Array> | string;
    };
    const status = response.statusCode ?? 0;
    const type = response.headers?.["content-type"] ?? "";
    if (status < 400 || /json/i.test(type)) return result;
    const text = await readSome(response.body, 16_384);
    if (/^\s*\{/.test(text)) {
      // JSON after all (a wrong content type): the SDK's deserializer reads it.
      (response as { body?: unknown }).body = new TextEncoder().encode(text);
      return result;
    }
    const tag = (name: string) =>
      new RegExp(`<${name}>([^<]*)</${name}>`).exec(text)?.[1]?.trim() || undefined;
    const code = tag("Code");
    throw new ForeignErrorAnswer(status, code, tag("Message") ?? `HTTP ${status}`);
  };
};

async function readSome(
  body: AsyncIterable<Uint8Array> | string | undefined,
  limit: number,
): Promise<string> {
  if (body === undefined) return "";
  if (typeof body === "string") return body.slice(0, limit);
  const decoder = new TextDecoder();
  let text = "";
  try {
    for await (const chunk of body) {
      text += decoder.decode(chunk, { stream: true });
      if (text.length >= limit) break;
    }
  } catch {
    // A body cut short says what it said so far.
  }
  return text.slice(0, limit);
}

/**
 * Returns the S3 endpoint: `AWS_ENDPOINT_URL_S3`, else `--endpoint-url` when it is not
 * an AWS host (an emulator or proxy serving both; an SQS VPC endpoint cannot serve S3),
 * else `AWS_ENDPOINT_URL`. Undefined leaves it to the SDK (the region's S3).
 */
export function resolveS3Endpoint(
  options: AwsOptions,
  env: (name: string) => string | undefined = Deno.env.get,
): string | undefined {
  const flag = isCustomEndpoint(options.endpointUrl) ? options.endpointUrl : undefined;
  return env("AWS_ENDPOINT_URL_S3") ?? flag ?? env("AWS_ENDPOINT_URL");
}

/**
 * How long an S3 request may take until its response headers arrive. The body has no
 * time limit: a job may read its stdin as slowly as it likes (back-pressure), and
 * the SDK's request timeout ends once the headers are in.
 */
const S3_HEADERS_TIMEOUT_MS = 30_000;

/**
 * Creates an S3 client for the options: the same credentials and region as SQS, the
 * endpoint from {@linkcode resolveS3Endpoint}, path-style addressing on a custom
 * endpoint (emulators and proxies rarely serve `bucket.host` names).
 *
 * The S3 SDK is loaded here, on first use, not with this module: only `--s3` workers
 * need it, and loading it costs every other worker memory for as long as it runs.
 * (`deno compile` still embeds it: the specifier is a literal.)
 */
export async function createS3Client(options: AwsOptions): Promise<S3Client> {
  const endpoint = resolveS3Endpoint(options);
  const { S3Client } = await import("@aws-sdk/client-s3");
  return new S3Client({
    ...clientConfig(options, endpoint, S3_HEADERS_TIMEOUT_MS),
    forcePathStyle: endpoint !== undefined,
  });
}

/** Returns true when `queue` is a queue URL rather than a name. */
export function isQueueUrl(queue: string): boolean {
  return /^https?:\/\//i.test(queue);
}

/** The queue name at the end of a queue URL, or the name itself. */
export function queueName(queue: string): string {
  if (!isQueueUrl(queue)) return queue;
  const path = new URL(queue).pathname.replace(/\/+$/, "");
  return decodeURIComponent(path.slice(path.lastIndexOf("/") + 1));
}

/** Turns a queue name or URL into a URL, failing with a clear error when the queue does not exist. */
export async function resolveQueueUrl(client: SQSClient, queue: string): Promise<string> {
  if (isQueueUrl(queue)) return queue;
  try {
    const result = await client.send(new GetQueueUrlCommand({ QueueName: queue }));
    if (!result.QueueUrl) throw new RuntimeError(`queue '${queue}' has no URL`);
    return result.QueueUrl;
  } catch (error) {
    throw toRuntimeError(error, `queue '${queue}'`);
  }
}

const NOT_FOUND_CODES = new Set([
  "QueueDoesNotExist",
  "AWS.SimpleQueueService.NonExistentQueue",
  "NonExistentQueue",
]);
const CREDENTIAL_CODES = new Set([
  "InvalidClientTokenId",
  "SignatureDoesNotMatch",
  "UnrecognizedClientException",
  "AccessDenied",
  "AccessDeniedException",
  "ExpiredToken",
  "ExpiredTokenException",
  "InvalidAccessKeyId",
]);

/** The error code of an AWS SDK or network error, if it has one. */
export function errorCode(error: unknown): string | undefined {
  if (typeof error !== "object" || error === null) return undefined;
  const record = error as Record<string, unknown>;
  const code = record.Code ?? record.code ?? record.name;
  return typeof code === "string" ? code : undefined;
}

/** The HTTP status of the answer an SDK error came from, if there was one. */
function httpStatus(error: unknown): number | undefined {
  if (typeof error !== "object" || error === null) return undefined;
  const metadata = (error as { $metadata?: { httpStatusCode?: unknown } }).$metadata;
  return typeof metadata?.httpStatusCode === "number" ? metadata.httpStatusCode : undefined;
}

/** Names and codes of a call that got no answer in time (the SDK's, Node's, the service's). */
const TIMEOUT_CODES = new Set([
  "TimeoutError",
  "RequestTimeout",
  "RequestTimeoutException",
  "ETIMEDOUT",
  "ESOCKETTIMEDOUT",
]);

/**
 * Returns true when the call got no answer in time. Decided by the error's name or
 * code, never its text: "VisibilityTimeout is invalid" is a refusal, not a timeout.
 */
export function isTimeout(error: unknown): boolean {
  if (typeof error !== "object" || error === null) return false;
  const { name, code } = error as { name?: unknown; code?: unknown };
  return (typeof name === "string" && TIMEOUT_CODES.has(name)) ||
    (typeof code === "string" && TIMEOUT_CODES.has(code)) || httpStatus(error) === 408;
}

/** Codes after which a retry cannot help: the handle is stale or the message is gone. */
const STALE_RECEIPT_CODES = new Set([
  "ReceiptHandleIsInvalid",
  "InvalidReceiptHandle",
  "MessageNotInflight",
  "AWS.SimpleQueueService.MessageNotInflight",
  "QueueDoesNotExist",
  "AWS.SimpleQueueService.NonExistentQueue",
]);

/**
 * Returns true when SQS refused a receipt handle for good: the message is gone,
 * visible again, or received by someone else since (a newer handle exists). Real
 * SQS says the last as `InvalidParameterValue` naming the receipt handle.
 */
export function isStaleReceipt(error: unknown): boolean {
  const code = errorCode(error) ?? "";
  if (STALE_RECEIPT_CODES.has(code)) return true;
  return code === "InvalidParameterValue" && error instanceof Error &&
    /ReceiptHandle|not available for visibility timeout change/i.test(error.message);
}

/** Returns true when the error says the queue does not exist. */
export function isQueueMissing(error: unknown): boolean {
  const code = errorCode(error);
  return code !== undefined && NOT_FOUND_CODES.has(code);
}

/** Returns true when AWS refused the credentials, or none could be found. */
export function isCredentialError(error: unknown): boolean {
  const code = errorCode(error);
  if (code !== undefined && (CREDENTIAL_CODES.has(code) || code === "CredentialsProviderError")) {
    return true;
  }
  return error instanceof Error && /Could not load credentials/i.test(error.message);
}

/**
 * Returns true for failures that waiting cannot fix: a missing queue, refused or
 * missing credentials, no region. Anything else (network, throttling, 5xx) may pass.
 */
export function isPermanentError(error: unknown): boolean {
  if (error instanceof UsageError) return true;
  const cause = error instanceof RuntimeError && error.cause !== undefined ? error.cause : error;
  // A bare 401/403 (a proxy or an older endpoint refusing the request) does not pass either.
  const refused = cause instanceof ForeignErrorAnswer &&
    (cause.status === 401 || cause.status === 403);
  return isQueueMissing(cause) || isCredentialError(cause) || refused ||
    (cause instanceof Error && /Region is missing/i.test(cause.message));
}

/**
 * Describes an AWS failure in one line, naming what was being done; `service` names
 * the endpoint in network errors.
 */
export function describeAwsError(error: unknown, subject?: string, service = "SQS"): string {
  const code = errorCode(error);
  const message = error instanceof Error ? error.message.split("\n")[0] : String(error);
  const about = subject ? `${subject}: ` : "";
  // sqsrun's own errors already say what happened, in one line.
  if (error instanceof RuntimeError) return `${about}${message}`;
  if (isQueueMissing(error)) return `${about}queue does not exist`;
  if (code === "QueueAlreadyExists" || code === "QueueNameExists") {
    return `${about}a queue of this name already exists with other attributes (change them with --attr)`;
  }
  if (code === "QueueDeletedRecently") {
    return `${about}a queue of this name was deleted less than 60 seconds ago; wait, then create it again`;
  }
  if (code && CREDENTIAL_CODES.has(code)) {
    return `${about}AWS rejected the credentials (${code})`;
  }
  if (code === "CredentialsProviderError" || /Could not load credentials/i.test(message)) {
    return `${about}no AWS credentials found: give -k/-s, set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, use --profile, or run with an IAM role`;
  }
  if (/Region is missing/i.test(message)) {
    return `${about}no AWS region: give --region or set AWS_REGION`;
  }
  if (code === "ECONNREFUSED" || /ECONNREFUSED|connection refused/i.test(message)) {
    return `${about}cannot reach the ${service} endpoint (connection refused)`;
  }
  if (code === "ENOTFOUND" || /getaddrinfo|ENOTFOUND|dns error/i.test(message)) {
    return `${about}cannot resolve the ${service} endpoint host`;
  }
  if (isTimeout(error)) {
    return `${about}the ${service} endpoint did not answer in time`;
  }
  // Something other than the service answered: a proxy's error page, a web server, junk.
  const status = httpStatus(error);
  if (error instanceof ForeignErrorAnswer && error.code === undefined) {
    if (error.status === 401 || error.status === 403) {
      return `${about}the endpoint refused the request (HTTP ${error.status}): check the ` +
        "credentials, their permissions and the endpoint URL";
    }
    if (error.status >= 500) return `${about}the ${service} endpoint failed (HTTP ${error.status})`;
    return `${about}the endpoint's answer (HTTP ${error.status}) is not ${service}: check the endpoint URL`;
  }
  if (code === "SyntaxError" && status !== undefined) {
    return `${about}the endpoint's answer (HTTP ${status}) is not ${service}: check the endpoint URL`;
  }
  if ((code === "Unknown" || message === "UnknownError") && status !== undefined) {
    return status >= 500
      ? `${about}the ${service} endpoint failed (HTTP ${status})`
      : `${about}the ${service} endpoint answered HTTP ${status} without saying why`;
  }
  const detail = code && !message.includes(code) ? `${code}: ${message}` : message;
  return `${about}${detail || "unknown AWS error"}`;
}

/** Wraps any AWS failure in a RuntimeError with a one-line message; sqsrun's own errors pass through. */
export function toRuntimeError(error: unknown, subject?: string): RuntimeError | UsageError {
  if (error instanceof RuntimeError || error instanceof UsageError) return error;
  return new RuntimeError(describeAwsError(error, subject), { cause: error });
}
