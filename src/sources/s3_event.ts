/**
 * `--s3`: each message is an S3 event notification (sent by S3 straight to the
 * queue, or through SNS), and each `ObjectCreated:*` record in it is one job whose
 * input is the object's body, streamed from S3 to the job without ever being held
 * whole in memory.
 *
 * @module
 */
import { DeleteObjectCommand, GetObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import type { Logger } from "../log.ts";
import { RuntimeError } from "../errors.ts";
import { describeAwsError, errorCode } from "../aws.ts";
import type { WorkerMetrics } from "../metrics/metrics.ts";
import type { JobMessage } from "../worker/message.ts";
import { type JobInput, type JobSource, type JobStep, MalformedMessageError } from "./source.ts";

/** One `ObjectCreated:*` record, with its key decoded. What `--run` modules get as `context.s3`. */
export interface S3ObjectRecord {
  /** e.g. `ObjectCreated:Put`. */
  eventName: string;
  /** When S3 created the object (ISO 8601), if the record says. */
  eventTime?: string;
  bucket: string;
  /** The object key, decoded (the event carries it URL-encoded, `+` for a space). */
  key: string;
  /** Set when the bucket has versioning on: the job gets exactly this version. */
  versionId?: string;
  /** Size in bytes according to the event. */
  size?: number;
  eTag?: string;
  /** The record exactly as S3 sent it. */
  record: Record<string, unknown>;
}

/** What one message holds. */
export type S3Event =
  /** The `s3:TestEvent` S3 sends when a notification configuration is saved. */
  | { kind: "test"; bucket?: string }
  | {
    kind: "records";
    /** The `ObjectCreated:*` records, in message order. */
    objects: S3ObjectRecord[];
    /** Event names of the other records (deletions, restores, ...), which run no job. */
    skipped: string[];
  };

/** How the S3 source fetches and cleans up objects. */
export interface S3SourceOptions {
  client: S3Client;
  metrics: WorkerMetrics;
  /** `--s3-delete`: delete each object once its job succeeded. */
  deleteObjects: boolean;
  /** `--s3-gunzip`: decompress objects stored with `Content-Encoding: gzip`. */
  gunzip: boolean;
}

const OBJECT_CREATED = "ObjectCreated:";

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new MalformedMessageError(`${what} is not JSON`);
  }
}

/**
 * Decodes an object key as S3 writes it into event records: URL-encoded with `+`
 * for a space (a literal `+` arrives as `%2B`).
 */
export function decodeS3Key(key: string): string {
  try {
    return decodeURIComponent(key.replaceAll("+", " "));
  } catch {
    throw new MalformedMessageError(`the object key '${key}' is not validly URL-encoded`);
  }
}

/**
 * Parses a message body as an S3 event notification, unwrapping an SNS envelope
 * (`{"Type":"Notification","Message":"<the event as a JSON string>"}`) first.
 * Throws {@linkcode MalformedMessageError} for anything else.
 */
export function parseS3Event(body: string): S3Event {
  let event = parseJson(body, "the message body");
  if (isRecord(event) && typeof event.Type === "string" && "TopicArn" in event) {
    if (event.Type !== "Notification") {
      throw new MalformedMessageError(
        `an SNS ${event.Type} message, not a notification (confirm the subscription, or use raw delivery)`,
      );
    }
  }
  if (isRecord(event) && event.Type === "Notification") {
    if (typeof event.Message !== "string") {
      throw new MalformedMessageError("an SNS notification without a Message string");
    }
    event = parseJson(event.Message, "the SNS notification's Message");
  }
  if (!isRecord(event)) throw new MalformedMessageError("not an S3 event (not a JSON object)");
  if (event.Event === "s3:TestEvent") {
    return { kind: "test", bucket: typeof event.Bucket === "string" ? event.Bucket : undefined };
  }
  if (!Array.isArray(event.Records)) {
    throw new MalformedMessageError("not an S3 event (no Records list)");
  }
  const objects: S3ObjectRecord[] = [];
  const skipped: string[] = [];
  event.Records.forEach((record, index) => {
    const where = `record ${index}`;
    if (!isRecord(record)) throw new MalformedMessageError(`${where} is not an object`);
    const eventName = record.eventName;
    if (typeof eventName !== "string") {
      throw new MalformedMessageError(`${where} has no eventName`);
    }
    if (!eventName.startsWith(OBJECT_CREATED)) {
      skipped.push(eventName);
      return;
    }
    objects.push(objectRecord(record, eventName, where));
  });
  return { kind: "records", objects, skipped };
}

function objectRecord(
  record: Record<string, unknown>,
  eventName: string,
  where: string,
): S3ObjectRecord {
  const s3 = isRecord(record.s3) ? record.s3 : undefined;
  const bucket = isRecord(s3?.bucket) ? s3.bucket.name : undefined;
  const object = isRecord(s3?.object) ? s3.object : undefined;
  if (typeof bucket !== "string" || bucket === "") {
    throw new MalformedMessageError(`${where} has no s3.bucket.name`);
  }
  if (typeof object?.key !== "string" || object.key === "") {
    throw new MalformedMessageError(`${where} has no s3.object.key`);
  }
  const versionId = object.versionId;
  const size = object.size;
  return {
    eventName,
    eventTime: typeof record.eventTime === "string" ? record.eventTime : undefined,
    bucket,
    key: decodeS3Key(object.key),
    // S3 writes "null" for objects written before versioning was turned on; it names
    // no version GetObject would accept, so it means "the current object".
    versionId: typeof versionId === "string" && versionId !== "" && versionId !== "null"
      ? versionId
      : undefined,
    size: typeof size === "number" && Number.isSafeInteger(size) && size >= 0 ? size : undefined,
    eTag: typeof object.eTag === "string" ? object.eTag : undefined,
    record,
  };
}

/** Returns true for errors that say the object (or its version, or bucket) no longer exists. */
export function isObjectMissing(error: unknown): boolean {
  const code = errorCode(error);
  if (code === "NoSuchKey" || code === "NoSuchVersion" || code === "NotFound") return true;
  if (code === "NoSuchBucket") return true;
  const status = (error as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata
    ?.httpStatusCode;
  return status === 404;
}

/** The environment variables a job of `object` gets. */
export function s3JobEnv(object: S3ObjectRecord, size: number | undefined): Record<string, string> {
  const env: Record<string, string> = {
    SQSRUN_S3_BUCKET: object.bucket,
    SQSRUN_S3_KEY: object.key,
  };
  if (object.versionId !== undefined) env.SQSRUN_S3_VERSION_ID = object.versionId;
  if (size !== undefined) env.SQSRUN_S3_SIZE = String(size);
  return env;
}

/**
 * Describes an S3 failure in one line. S3 answers AccessDenied both for a missing
 * permission and, without s3:ListBucket, for a key that does not exist.
 */
export function describeS3Error(error: unknown): string {
  if (errorCode(error) === "AccessDenied") {
    return "access denied (the worker needs s3:GetObject, s3:GetObjectVersion for versioned " +
      "objects, s3:DeleteObject for --s3-delete; without s3:ListBucket a missing key is denied too)";
  }
  return describeAwsError(error, undefined, "S3");
}

/** How an object is named in logs and errors. */
function objectUrl(object: S3ObjectRecord): string {
  const version = object.versionId === undefined ? "" : ` (version ${object.versionId})`;
  return `s3://${object.bucket}/${object.key}${version}`;
}

/** Returns the `--s3` source. */
export function s3EventSource(options: S3SourceOptions): JobSource {
  return {
    steps(message: JobMessage, log: Logger): JobStep[] {
      const event = parseS3Event(message.body);
      if (event.kind === "test") {
        log.info("S3 test event; deleting it", { s3_bucket: event.bucket });
        return [];
      }
      for (const eventName of event.skipped) {
        log.debug("skipping an S3 record that is not ObjectCreated", { s3_event: eventName });
      }
      return event.objects.map((object) => objectStep(object, options, log));
    },
  };
}

function objectStep(object: S3ObjectRecord, options: S3SourceOptions, log: Logger): JobStep {
  const fields = {
    s3_bucket: object.bucket,
    s3_key: object.key,
    ...(object.versionId === undefined ? {} : { s3_version_id: object.versionId }),
  };
  // Set when reading the object failed part way: the job saw only part of it.
  let broken: string | undefined;
  const step: JobStep = {
    fields,
    open: () =>
      openObject(object, options, log.with(fields), (reason) => {
        broken = reason;
      }),
  };
  if (options.deleteObjects) {
    step.succeeded = async () => {
      if (broken !== undefined) {
        throw new RuntimeError(
          `not deleting ${objectUrl(object)}: reading it failed part way (${broken}), ` +
            "so the job may have seen only part of it",
        );
      }
      try {
        await options.client.send(
          new DeleteObjectCommand({
            Bucket: object.bucket,
            Key: object.key,
            // The version the job read, exactly: without it a versioned bucket would only
            // get a delete marker, and a newer upload of the same key would be hidden.
            VersionId: object.versionId,
          }),
        );
      } catch (error) {
        throw new RuntimeError(`cannot delete ${objectUrl(object)}: ${describeS3Error(error)}`);
      }
      // An object gone from the bucket should leave a trace of who removed it.
      log.info("S3 object deleted", fields);
      options.metrics.s3ObjectDeleted();
    };
  }
  return step;
}

/**
 * Passes `source` through unchanged, pulling only when the consumer pulls (so
 * back-pressure still reaches the socket), and reports an error of the source.
 */
export function watchStream(
  source: ReadableStream<Uint8Array>,
  onError: (error: unknown) => void,
): ReadableStream<Uint8Array> {
  const reader = source.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      let result: ReadableStreamReadResult<Uint8Array>;
      try {
        result = await reader.read();
      } catch (error) {
        onError(error);
        controller.error(error);
        return;
      }
      if (result.done) controller.close();
      else controller.enqueue(result.value);
    },
    cancel: (reason) => reader.cancel(reason),
  }, { highWaterMark: 0 });
}

/**
 * Opens the object's body; resolves undefined when the object is gone. `log` is the
 * step's logger; `onBroken` hears when reading fails part way.
 */
async function openObject(
  object: S3ObjectRecord,
  options: S3SourceOptions,
  log: Logger,
  onBroken: (reason: string) => void,
): Promise<JobInput | undefined> {
  let response;
  try {
    response = await options.client.send(
      new GetObjectCommand({
        Bucket: object.bucket,
        Key: object.key,
        VersionId: object.versionId,
      }),
    );
  } catch (error) {
    if (isObjectMissing(error)) {
      // Deleted (or replaced, in a versioned bucket) since the event: nothing is left to run.
      log.warn("the S3 object no longer exists; nothing to run", { error: errorCode(error) });
      options.metrics.s3ObjectMissing();
      return undefined;
    }
    throw new RuntimeError(`cannot get ${objectUrl(object)}: ${describeS3Error(error)}`);
  }
  if (!response.Body) {
    throw new RuntimeError(`cannot get ${objectUrl(object)}: the response has no body`);
  }
  let body = response.Body.transformToWebStream() as ReadableStream<Uint8Array>;
  const gzipped = /(^|,)\s*gzip\s*($|,)/i.test(response.ContentEncoding ?? "");
  if (options.gunzip && gzipped) {
    body = body.pipeThrough(
      new DecompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>,
    );
  }
  // A stream that breaks off (connection reset, corrupt gzip) ends the job's stdin early,
  // and a job cannot tell that from the end of the object: say so loudly.
  body = watchStream(body, (error) => {
    const reason = describeS3Error(error);
    log.error("reading the S3 object failed part way; the job got only part of it", {
      error: reason,
    });
    onBroken(reason);
  });
  return {
    body,
    env: s3JobEnv(object, response.ContentLength ?? object.size),
    context: { s3: object },
  };
}
