/**
 * S3 on moto for tests: buckets whose notifications go to a queue, objects of any
 * size uploaded without holding them in memory, and hand-made event messages.
 *
 * @module
 */
import { createHash } from "node:crypto";
import {
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  HeadObjectCommand,
  ListObjectVersionsCommand,
  PutBucketNotificationConfigurationCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { GetQueueAttributesCommand, type SQSClient } from "@aws-sdk/client-sqs";

/** Creates an S3 client for `endpoint` with test credentials (path-style, as sqsrun uses). */
export function testS3Client(endpoint: string): S3Client {
  return new S3Client({
    endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
  });
}

/** Creates a bucket, optionally with versioning on. */
export async function createBucket(
  s3: S3Client,
  bucket: string,
  options: { versioned?: boolean } = {},
): Promise<void> {
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  if (options.versioned) {
    await s3.send(
      new PutBucketVersioningCommand({
        Bucket: bucket,
        VersioningConfiguration: { Status: "Enabled" },
      }),
    );
  }
}

/**
 * Points the bucket's `s3:ObjectCreated:*` notifications at the queue, as an operator
 * would (moto then delivers real event messages to its SQS, starting with a test event).
 */
export async function notifyQueue(
  s3: S3Client,
  sqs: SQSClient,
  bucket: string,
  queueUrl: string,
): Promise<void> {
  const attributes = await sqs.send(
    new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ["QueueArn"] }),
  );
  await s3.send(
    new PutBucketNotificationConfigurationCommand({
      Bucket: bucket,
      NotificationConfiguration: {
        QueueConfigurations: [{
          QueueArn: attributes.Attributes!.QueueArn!,
          Events: ["s3:ObjectCreated:*"],
        }],
      },
    }),
  );
}

/** Uploads a small object; returns its version id when the bucket is versioned. */
export async function putObject(
  s3: S3Client,
  bucket: string,
  key: string,
  body: string | Uint8Array,
  extra: { contentEncoding?: string } = {},
): Promise<string | undefined> {
  const result = await s3.send(
    new PutObjectCommand({
      Bucket: bucket,
      Key: key,
      Body: body,
      ContentEncoding: extra.contentEncoding,
    }),
  );
  return result.VersionId;
}

/** Returns true while the object (or that version of it) exists. */
export async function objectExists(
  s3: S3Client,
  bucket: string,
  key: string,
  versionId?: string,
): Promise<boolean> {
  try {
    await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key, VersionId: versionId }));
    return true;
  } catch (error) {
    const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata
      ?.httpStatusCode;
    if (status === 404) return false;
    throw error;
  }
}

/** Deterministic pseudo-random bytes (xorshift32), cheap enough for hundreds of MB. */
export function fillPattern(part: Uint8Array, seed: number): void {
  const words = new Uint32Array(part.buffer, part.byteOffset, part.byteLength >>> 2);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    words[i] = x;
  }
}

/**
 * Uploads `size` bytes of {@linkcode fillPattern} data with a multipart upload, one
 * part in memory at a time; resolves to the SHA-256 (hex) of the whole object.
 */
export async function uploadLargeObject(
  s3: S3Client,
  bucket: string,
  key: string,
  size: number,
  partBytes = 16 * 1024 * 1024,
): Promise<string> {
  const hash = createHash("sha256");
  const { UploadId } = await s3.send(
    new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }),
  );
  const parts: { ETag: string; PartNumber: number }[] = [];
  for (let offset = 0, number = 1; offset < size; offset += partBytes, number++) {
    const part = new Uint8Array(Math.min(partBytes, size - offset));
    fillPattern(part, number);
    hash.update(part);
    const result = await s3.send(
      new UploadPartCommand({ Bucket: bucket, Key: key, UploadId, PartNumber: number, Body: part }),
    );
    parts.push({ ETag: result.ETag!, PartNumber: number });
  }
  await s3.send(
    new CompleteMultipartUploadCommand({
      Bucket: bucket,
      Key: key,
      UploadId,
      MultipartUpload: { Parts: parts },
    }),
  );
  return hash.digest("hex");
}

/** Deletes every object version and the bucket, ignoring errors (cleanup). */
export async function deleteBucket(s3: S3Client, bucket: string): Promise<void> {
  try {
    const listing = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket }));
    for (const item of [...(listing.Versions ?? []), ...(listing.DeleteMarkers ?? [])]) {
      await s3.send(
        new DeleteObjectCommand({ Bucket: bucket, Key: item.Key!, VersionId: item.VersionId }),
      );
    }
    await s3.send(new DeleteBucketCommand({ Bucket: bucket }));
  } catch { /* already gone */ }
}

/** One object in a hand-made event. */
export interface EventObject {
  bucket: string;
  /** The key as stored; it is URL-encoded into the record as S3 does. */
  key: string;
  versionId?: string;
  size?: number;
  /** Default `ObjectCreated:Put`. */
  eventName?: string;
}

/** Encodes a key as S3 does in event records (`quote_plus`: space as `+`). */
export function encodeEventKey(key: string): string {
  return encodeURIComponent(key).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16)}`)
    .replaceAll("%20", "+");
}

/** The body S3 sends for these objects (one record each, in order). */
export function s3EventBody(objects: EventObject[]): string {
  return JSON.stringify({
    Records: objects.map((object) => ({
      eventVersion: "2.1",
      eventSource: "aws:s3",
      awsRegion: "us-east-1",
      eventTime: new Date().toISOString(),
      eventName: object.eventName ?? "ObjectCreated:Put",
      s3: {
        s3SchemaVersion: "1.0",
        bucket: { name: object.bucket, arn: `arn:aws:s3:::${object.bucket}` },
        object: {
          key: encodeEventKey(object.key),
          size: object.size ?? 0,
          ...(object.versionId ? { versionId: object.versionId } : {}),
        },
      },
    })),
  });
}

/** Wraps an event body in an SNS notification envelope, as SNS delivers it to SQS. */
export function snsEnvelope(message: string): string {
  return JSON.stringify({
    Type: "Notification",
    MessageId: crypto.randomUUID(),
    TopicArn: "arn:aws:sns:us-east-1:123456789012:uploads",
    Subject: "Amazon S3 Notification",
    Message: message,
    Timestamp: new Date().toISOString(),
    SignatureVersion: "1",
  });
}
