/**
 * The source seam of the job lifecycle: a source turns a message into the inputs
 * of its jobs (the body itself, or S3 objects). The worker's loop is written once
 * for every source; a runner (`src/runners/`) then runs each input.
 *
 * @module
 */
import type { LogFields, Logger } from "../log.ts";
import type { JobMessage } from "../worker/message.ts";

/** What one job gets. */
export interface JobInput {
  /** The job's stdin (`--exec`) or body (`--run`): text, or a stream of bytes. */
  body: string | ReadableStream<Uint8Array>;
  /** Variables added to the job's environment besides the message's own. */
  env: Record<string, string>;
  /** Extra context for `--run` modules (e.g. the S3 record). */
  context: Record<string, unknown>;
}

/** One job of a message; a message has one, or one per S3 record. */
export interface JobStep {
  /** Fields that name the step in logs (e.g. the S3 bucket and key). */
  fields: LogFields;
  /**
   * Opens the input right before the job starts. Resolves undefined when there is
   * nothing to run (e.g. the S3 object is gone); rejects when the input cannot be
   * had now (the message is then released).
   */
  open(): Promise<JobInput | undefined>;
  /** Called after the step's job succeeded (e.g. `--s3-delete`); may reject. */
  succeeded?(): Promise<void>;
}

/** A message the source cannot make sense of; it is released (never deleted). */
export class MalformedMessageError extends Error {
  override name = "MalformedMessageError";
}

/** Turns messages into job steps. */
export interface JobSource {
  /**
   * The steps for `message`, run in order; all must succeed for the message to
   * be deleted. An empty list means "nothing to do": the message is deleted.
   * Throws MalformedMessageError for a message it cannot read.
   */
  steps(message: JobMessage, log: Logger): JobStep[];
}
