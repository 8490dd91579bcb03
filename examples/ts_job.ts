/**
 * An sqsrun `--run` job in TypeScript:
 *
 * ```sh
 * sqsrun -q jobs --run ./examples/ts_job.ts --env GREETING=hello -- --dry-run
 * ```
 *
 * sqsrun imports this module once per concurrency slot (in a Web Worker) and calls
 * `run(body, context)` for each message: the message is deleted when `run` returns
 * (or its promise resolves) and released for a retry when it throws (or rejects).
 * What `console.log` prints goes to sqsrun's log with the message id.
 *
 * @module
 */

/** What sqsrun passes to `run` besides the body (declared here: a job imports nothing of sqsrun's). */
export interface JobContext {
  /** The SQS message id. */
  messageId: string;
  /** 1 on the first delivery, 2 on the first retry, ... */
  receiveCount: number;
  /** The message's String/Number attributes (Binary ones base64). */
  attributes: Record<string, string>;
  queueUrl: string;
  /** Milliseconds since the epoch when SQS accepted the message. */
  sentTimestamp?: number;
  /** FIFO queues only. */
  groupId?: string;
  /** The ARGV given after `--`. */
  args: string[];
  /** The `--env KEY=VALUE` pairs. */
  env: Record<string, string>;
  /** Aborted when the job reaches its kill timeout (-x): stop, and let `run` settle. */
  signal: AbortSignal;
  /** The body's raw bytes (UTF-8). */
  bytes: Uint8Array;
}

/** The body this job expects: `{"image": "cat.png", "width": 100}`. */
interface ResizeRequest {
  image: string;
  width: number;
}

function parse(body: string): ResizeRequest {
  const value = JSON.parse(body);
  if (typeof value?.image !== "string" || typeof value?.width !== "number") {
    // Thrown errors release the message; after the queue's maxReceiveCount it moves
    // to the dead-letter queue, so a body that can never work does not loop forever.
    throw new Error(`expected {"image": string, "width": number}, got ${body.slice(0, 100)}`);
  }
  return value;
}

/** Called by sqsrun for each message. */
export async function run(body: string, context: JobContext): Promise<void> {
  const request = parse(body);
  const dryRun = context.args.includes("--dry-run");
  console.log(
    `${context.env.GREETING ?? "hi"}: resizing ${request.image} to ${request.width}px`,
    { receive: context.receiveCount, dryRun },
  );
  // Long work should watch the signal: sqsrun aborts it at the kill timeout, then
  // kills the whole slot after --kill-grace if run() has not settled by then.
  for (let step = 1; step <= 3; step++) {
    context.signal.throwIfAborted();
    await new Promise((resolve) => setTimeout(resolve, 100));
    console.log(`step ${step}/3 done`);
  }
}
