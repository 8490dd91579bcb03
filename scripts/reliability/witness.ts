/**
 * An HTTP relay between the workers and the emulator that records, independently
 * of sqsrun, which messages the queue acknowledged as deleted and when, and that
 * can inject faults into chosen kinds of call.
 *
 * Why: moto (5.2.1) loses deletes under concurrent DeleteMessageBatch calls (its
 * `delete_message` rebuilds the message list without a lock, so a concurrent delete
 * can put a deleted message back), and any SQS standard queue may deliver a message
 * again after it was deleted (at-least-once). A run that follows an acknowledged
 * delete is the queue's duplicate, not sqsrun's; every other duplicate is
 * sqsrun's. The witness tells the two apart from the wire. It also sees a queue
 * that hands out one delivery twice (moto's receive race, F13: two answers carrying
 * the same message with the same receive count).
 *
 * Faults (see {@linkcode WitnessFaults}), which the emulators cannot make on their
 * own: refuse a kind of call, answer it with an SQS 500/503 (bursts), or hold the
 * emulator's answer for a while (the request itself reaches the emulator at once,
 * so the call takes effect there on time and only its answer is late). Action
 * names are those of the `x-amz-target` header (AWS JSON protocol) without the
 * `AmazonSQS.` prefix: `ReceiveMessage`, `ChangeMessageVisibilityBatch`, ...
 *
 * @module
 */

/** One call the witness answered. */
export interface WitnessCall {
  /** `ReceiveMessage`, `DeleteMessageBatch`, ... */
  action: string;
  /** When the request arrived, ms since the epoch. */
  at: number;
  /** When the answer was handed back (after any hold), ms since the epoch. */
  answeredAt: number;
  /** HTTP status given to the worker. */
  status: number;
  /** `relayed`, `refused` (refuse), `failed` (an injected 5xx), `unreachable` (the emulator). */
  outcome: "relayed" | "refused" | "failed" | "unreachable";
  /** How long the emulator's answer was held, ms. */
  heldMs: number;
  /** Messages in a ReceiveMessage answer; deletes acknowledged in a delete answer. */
  count: number;
}

/** One delivery of a message: a ReceiveMessage answer that carried it. */
export interface Delivery {
  /** Its `ApproximateReceiveCount`. */
  receiveCount: number;
  /** When the emulator answered (before any hold), ms since the epoch. */
  at: number;
}

/** What a scenario sees right after a relayed answer was handed back. */
export interface RelayedAnswer {
  call: WitnessCall;
  /** The worker's request body (JSON text). */
  request: string;
  /** The emulator's answer body (JSON text). */
  response: string;
}

/** Faults to inject, by action; every hook may change at any time (see `faults`). */
export interface WitnessFaults {
  /**
   * Actions (such as "ChangeMessageVisibilityBatch") the witness answers with an
   * SQS internal error instead of relaying, while it returns true: a fault in one
   * kind of call only.
   */
  refuse?: (action: string) => boolean;
  /**
   * The HTTP status (500 or 503, with the SQS JSON error shape) to answer this call
   * with instead of relaying it, or undefined to relay it: bursts of server errors.
   * The request never reaches the emulator.
   */
  fail?: (action: string) => 500 | 503 | undefined;
  /**
   * Milliseconds to hold the emulator's answer to this call before handing it back
   * (0 or undefined: none). The request goes to the emulator at once.
   */
  delayMs?: (action: string) => number | undefined;
  /** Called right after a relayed answer (status 2xx) was handed back. */
  onRelayed?: (answer: RelayedAnswer) => void;
}

/** What the witness saw. */
export interface SqsWitness {
  /** The endpoint to give workers instead of the emulator's. */
  url: string;
  /** When the queue first acknowledged deleting this message, ms since the epoch. */
  deletedAt(messageId: string): number | undefined;
  /** How many deletes the queue acknowledged. */
  readonly acknowledgedDeletes: number;
  /**
   * How many ReceiveMessage answers carried this message with this receive count:
   * more than one when the queue handed one delivery out twice (a redelivery after
   * a lapsed visibility counts one more).
   */
  timesDelivered(messageId: string, receiveCount: number): number;
  /** Every delivery of this message the witness relayed, in order: receive count, and when. */
  deliveriesOf(messageId: string): readonly Delivery[];
  /**
   * When the queue acknowledged a visibility change of this message (an extension or
   * a release), ms since the epoch, in order.
   */
  visibilityChangesOf(messageId: string): readonly number[];
  /** Every call answered so far, in the order of their answers. */
  readonly calls: readonly WitnessCall[];
  /** The faults now injected; assign to change them. */
  faults: WitnessFaults;
  /** Stops relaying. */
  close(): Promise<void>;
}

/** Request headers that describe one hop, not the message. */
const HOP_HEADERS = ["host", "connection", "content-length", "transfer-encoding", "keep-alive"];
/** Response headers that no longer hold once the body is relayed as read. */
const STALE_RESPONSE_HEADERS = ["content-length", "content-encoding", "transfer-encoding"];

/** How the witness relays: the faults to inject from the start. */
export type SqsWitnessOptions = WitnessFaults;

/** The SQS JSON-protocol error a real endpoint gives with this status. */
export function serverError(status: 500 | 503, why: string): Response {
  const [type, query] = status === 503
    ? ["ServiceUnavailable", "ServiceUnavailable;Server"]
    : ["InternalError", "InternalError;Receiver"];
  return Response.json(
    { __type: `com.amazonaws.sqs#${type}`, message: why },
    {
      status,
      headers: { "x-amzn-query-error": query, "content-type": "application/x-amz-json-1.0" },
    },
  );
}

/** Starts relaying 127.0.0.1:<free port> to `target` (the emulator's endpoint URL). */
export function startSqsWitness(target: string, options: SqsWitnessOptions = {}): SqsWitness {
  const handles = new Map<string, string>();
  const deleted = new Map<string, number>();
  /** `messageId receiveCount` → how many answers carried that delivery. */
  const deliveries = new Map<string, number>();
  const deliveriesById = new Map<string, Delivery[]>();
  const visibilityChanges = new Map<string, number[]>();
  const changedVisibility = (handle: string | undefined) => {
    const id = handle === undefined ? undefined : handles.get(handle);
    if (id === undefined) return;
    visibilityChanges.set(id, [...(visibilityChanges.get(id) ?? []), Date.now()]);
  };
  const calls: WitnessCall[] = [];
  let acknowledged = 0;
  let faults: WitnessFaults = { ...options };
  const decoder = new TextDecoder();

  /** Records what the answer says; returns its count (messages received, deletes acknowledged). */
  const record = (action: string, request: Uint8Array, response: Uint8Array): number => {
    try {
      if (action === "ReceiveMessage") {
        const messages = JSON.parse(decoder.decode(response)).Messages ?? [];
        for (const message of messages) {
          handles.set(message.ReceiptHandle, message.MessageId);
          const count = message.Attributes?.ApproximateReceiveCount;
          if (count !== undefined) {
            const key = `${message.MessageId} ${count}`;
            deliveries.set(key, (deliveries.get(key) ?? 0) + 1);
            const list = deliveriesById.get(message.MessageId) ?? [];
            list.push({ receiveCount: Number(count), at: Date.now() });
            deliveriesById.set(message.MessageId, list);
          }
        }
        return messages.length;
      } else if (action === "DeleteMessageBatch") {
        const entries = new Map<string, string>(
          (JSON.parse(decoder.decode(request)).Entries ?? []).map((
            entry: { Id: string; ReceiptHandle: string },
          ) => [entry.Id, entry.ReceiptHandle]),
        );
        let count = 0;
        for (const { Id } of JSON.parse(decoder.decode(response)).Successful ?? []) {
          if (acknowledge(entries.get(Id))) count++;
        }
        return count;
      } else if (action === "DeleteMessage") {
        return acknowledge(JSON.parse(decoder.decode(request)).ReceiptHandle) ? 1 : 0;
      } else if (action === "ChangeMessageVisibility") {
        changedVisibility(JSON.parse(decoder.decode(request)).ReceiptHandle);
      } else if (action === "ChangeMessageVisibilityBatch") {
        const entries = new Map<string, string>(
          (JSON.parse(decoder.decode(request)).Entries ?? []).map((
            entry: { Id: string; ReceiptHandle: string },
          ) => [entry.Id, entry.ReceiptHandle]),
        );
        for (const { Id } of JSON.parse(decoder.decode(response)).Successful ?? []) {
          changedVisibility(entries.get(Id));
        }
      }
    } catch {
      // Not JSON (an error page): nothing was acknowledged.
    }
    return 0;
  };
  const acknowledge = (handle: string | undefined): boolean => {
    const id = handle === undefined ? undefined : handles.get(handle);
    if (id === undefined) return false;
    acknowledged++;
    if (!deleted.has(id)) deleted.set(id, Date.now());
    return true;
  };

  // A worker's cancelled long poll is not forwarded (as with SQS, the receive may
  // still happen and the message then waits out its visibility timeout); close()
  // aborts whatever is still waiting upstream, and every held answer.
  const pending = new Set<AbortController>();
  const hold = (ms: number, signal: AbortSignal) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        resolve();
      }
      signal.addEventListener("abort", done, { once: true });
    });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    const action = (request.headers.get("x-amz-target") ?? "").replace(/^AmazonSQS\./, "");
    const at = Date.now();
    const answered = (
      status: number,
      outcome: WitnessCall["outcome"],
      heldMs = 0,
      count = 0,
    ): WitnessCall => {
      const call = { action, at, answeredAt: Date.now(), status, outcome, heldMs, count };
      calls.push(call);
      return call;
    };
    if (faults.refuse?.(action)) {
      answered(500, "refused");
      return serverError(500, "refused by the witness");
    }
    const failure = faults.fail?.(action);
    if (failure !== undefined) {
      answered(failure, "failed");
      return serverError(failure, "injected by the witness");
    }
    const body = new Uint8Array(await request.arrayBuffer());
    const headers = new Headers(request.headers);
    for (const name of HOP_HEADERS) headers.delete(name);
    const url = new URL(request.url);
    const controller = new AbortController();
    pending.add(controller);
    let answer: Response;
    let data: Uint8Array<ArrayBuffer>;
    let count = 0;
    let heldMs = 0;
    try {
      try {
        answer = await fetch(`${target}${url.pathname}${url.search}`, {
          method: request.method,
          headers,
          body: body.length > 0 ? body : undefined,
          signal: controller.signal,
        });
        data = new Uint8Array(await answer.arrayBuffer());
      } catch {
        answered(502, "unreachable");
        return new Response("witness: the emulator did not answer", { status: 502 });
      }
      // Recorded as the emulator answered: that is when a delete took effect.
      if (answer.ok) count = record(action, body, data);
      const delay = faults.delayMs?.(action) ?? 0;
      if (delay > 0) {
        const from = Date.now();
        await hold(delay, controller.signal);
        heldMs = Date.now() - from;
      }
    } finally {
      pending.delete(controller);
    }
    const responseHeaders = new Headers(answer.headers);
    for (const name of STALE_RESPONSE_HEADERS) responseHeaders.delete(name);
    const call = answered(answer.status, "relayed", heldMs, count);
    if (answer.ok && faults.onRelayed) {
      const hook = faults.onRelayed;
      try {
        hook({ call, request: decoder.decode(body), response: decoder.decode(data) });
      } catch { /* a scenario's hook must not break the relay */ }
    }
    return new Response(data, { status: answer.status, headers: responseHeaders });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    deletedAt: (id) => deleted.get(id),
    get acknowledgedDeletes() {
      return acknowledged;
    },
    timesDelivered: (id, receiveCount) => deliveries.get(`${id} ${receiveCount}`) ?? 0,
    deliveriesOf: (id) => deliveriesById.get(id) ?? [],
    visibilityChangesOf: (id) => visibilityChanges.get(id) ?? [],
    calls,
    get faults() {
      return faults;
    },
    set faults(next: WitnessFaults) {
      faults = next;
    },
    close() {
      for (const controller of pending) controller.abort();
      return server.shutdown();
    },
  };
}

/** Calls of the given actions whose request arrived in [from, to) (ms since the epoch). */
export function callsBetween(
  calls: readonly WitnessCall[],
  actions: readonly string[],
  from: number,
  to: number,
): WitnessCall[] {
  return calls.filter((call) => actions.includes(call.action) && call.at >= from && call.at < to);
}

/** A uniformly random whole number of ms in [minMs, maxMs]. */
export function randomMs(minMs: number, maxMs: number): number {
  return Math.round(minMs + Math.random() * (maxMs - minMs));
}

/**
 * The deliveries of one message (in answer order) that the queue handed out while an
 * earlier delivery was still invisible by its own rule: within `windowMs` of it (well
 * inside the visibility timeout the receive asked for) and with no visibility change
 * of the message acknowledged in between, so no worker had released it. moto does
 * this when overlapping receive calls pick the same message (its race, F10/F13), and
 * then the two answers may even carry different receive counts.
 */
export function racedDeliveries(
  deliveries: readonly Delivery[],
  visibilityChanges: readonly number[],
  windowMs: number,
): Delivery[] {
  return deliveries.filter((delivery, index) =>
    deliveries.slice(0, index).some((earlier) =>
      delivery.at - earlier.at < windowMs &&
      !visibilityChanges.some((at) => at >= earlier.at && at <= delivery.at)
    )
  );
}
