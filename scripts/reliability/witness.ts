/**
 * An HTTP relay between the workers and the emulator that records, independently
 * of sqsrun, which messages the queue acknowledged as deleted and when.
 *
 * Why: moto (5.2.1) loses deletes under concurrent DeleteMessageBatch calls (its
 * `delete_message` rebuilds the message list without a lock, so a concurrent delete
 * can put a deleted message back), and any SQS standard queue may deliver a message
 * again after it was deleted (at-least-once). A run that follows an acknowledged
 * delete is the queue's duplicate, not sqsrun's; every other duplicate is
 * sqsrun's. The witness tells the two apart from the wire.
 *
 * @module
 */

/** What the witness saw. */
export interface SqsWitness {
  /** The endpoint to give workers instead of the emulator's. */
  url: string;
  /** When the queue first acknowledged deleting this message, ms since the epoch. */
  deletedAt(messageId: string): number | undefined;
  /** How many deletes the queue acknowledged. */
  readonly acknowledgedDeletes: number;
  /** Stops relaying. */
  close(): Promise<void>;
}

/** Request headers that describe one hop, not the message. */
const HOP_HEADERS = ["host", "connection", "content-length", "transfer-encoding", "keep-alive"];
/** Response headers that no longer hold once the body is relayed as read. */
const STALE_RESPONSE_HEADERS = ["content-length", "content-encoding", "transfer-encoding"];

/** How the witness relays. */
export interface SqsWitnessOptions {
  /**
   * Actions (such as "ChangeMessageVisibilityBatch") the witness answers with an
   * SQS internal error instead of relaying, while it returns true: a fault in one
   * kind of call only, which the emulators cannot make on their own.
   */
  refuse?: (action: string) => boolean;
}

/** Starts relaying 127.0.0.1:<free port> to `target` (the emulator's endpoint URL). */
export function startSqsWitness(target: string, options: SqsWitnessOptions = {}): SqsWitness {
  const handles = new Map<string, string>();
  const deleted = new Map<string, number>();
  let acknowledged = 0;
  const decoder = new TextDecoder();

  const record = (action: string, request: Uint8Array, response: Uint8Array) => {
    try {
      if (action === "ReceiveMessage") {
        const messages = JSON.parse(decoder.decode(response)).Messages ?? [];
        for (const message of messages) handles.set(message.ReceiptHandle, message.MessageId);
      } else if (action === "DeleteMessageBatch") {
        const entries = new Map<string, string>(
          (JSON.parse(decoder.decode(request)).Entries ?? []).map((
            entry: { Id: string; ReceiptHandle: string },
          ) => [entry.Id, entry.ReceiptHandle]),
        );
        for (const { Id } of JSON.parse(decoder.decode(response)).Successful ?? []) {
          acknowledge(entries.get(Id));
        }
      } else if (action === "DeleteMessage") {
        acknowledge(JSON.parse(decoder.decode(request)).ReceiptHandle);
      }
    } catch {
      // Not JSON (an error page): nothing was acknowledged.
    }
  };
  const acknowledge = (handle: string | undefined) => {
    const id = handle === undefined ? undefined : handles.get(handle);
    if (id === undefined) return;
    acknowledged++;
    if (!deleted.has(id)) deleted.set(id, Date.now());
  };

  // A worker's cancelled long poll is not forwarded (as with SQS, the receive may
  // still happen and the message then waits out its visibility timeout); close()
  // aborts whatever is still waiting upstream.
  const pending = new Set<AbortController>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    const action = (request.headers.get("x-amz-target") ?? "").replace(/^AmazonSQS\./, "");
    if (options.refuse?.(action)) {
      return Response.json(
        { __type: "com.amazonaws.sqs#InternalError", message: "refused by the witness" },
        { status: 500, headers: { "x-amzn-query-error": "InternalError;Receiver" } },
      );
    }
    const body = new Uint8Array(await request.arrayBuffer());
    const headers = new Headers(request.headers);
    for (const name of HOP_HEADERS) headers.delete(name);
    const url = new URL(request.url);
    const controller = new AbortController();
    pending.add(controller);
    let answer: Response;
    let data: Uint8Array<ArrayBuffer>;
    try {
      answer = await fetch(`${target}${url.pathname}${url.search}`, {
        method: request.method,
        headers,
        body: body.length > 0 ? body : undefined,
        signal: controller.signal,
      });
      data = new Uint8Array(await answer.arrayBuffer());
    } catch {
      return new Response("witness: the emulator did not answer", { status: 502 });
    } finally {
      pending.delete(controller);
    }
    if (answer.ok) record(action, body, data);
    const responseHeaders = new Headers(answer.headers);
    for (const name of STALE_RESPONSE_HEADERS) responseHeaders.delete(name);
    return new Response(data, { status: answer.status, headers: responseHeaders });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    deletedAt: (id) => deleted.get(id),
    get acknowledgedDeletes() {
      return acknowledged;
    },
    close() {
      for (const controller of pending) controller.abort();
      return server.shutdown();
    },
  };
}
