/**
 * The Lambda Runtime API (version 2018-06-01) as one runtime process sees it:
 * sqsrun serves one of these per runtime process, on 127.0.0.1 and a port of its
 * own, so a runtime client written for Lambda (awslambdaric, aws-lambda-ric,
 * aws-lambda-go, a curl `bootstrap`) runs unchanged.
 *
 *     GET  /2018-06-01/runtime/invocation/next            blocks until there is work
 *     POST /2018-06-01/runtime/invocation/{id}/response   the handler's result
 *     POST /2018-06-01/runtime/invocation/{id}/error      the handler failed
 *     POST /2018-06-01/runtime/init/error                 the runtime could not start
 *
 * One invocation at a time, as in Lambda: {@linkcode RuntimeApi.invoke} hands
 * the next one out and resolves with how the runtime answered it. Refusals use
 * Lambda's status codes and error JSON (`{"errorMessage", "errorType"}`): 400
 * `InvalidRequestID` for an answer to an invocation that is not the current one,
 * 403 `InvalidStateTransition` for a request the runtime's state does not allow,
 * 413 `RequestEntityTooLarge` past 6 MiB. {@linkcode RuntimeApi.handle} is the
 * whole protocol and takes a `Request`, so unit tests need no network;
 * {@linkcode serveRuntimeApi} puts it on a port.
 *
 * @module
 */

/** The API version in every path. */
export const RUNTIME_API_VERSION = "2018-06-01";

/** The largest response or error body Lambda takes: 6 MiB and 100 bytes. */
export const MAX_PAYLOAD_BYTES = 6 * 1024 * 1024 + 100;

/** One invocation, as the runtime gets it from `/next`. */
export interface Invocation {
  /** Lambda-Runtime-Aws-Request-Id. */
  id: string;
  /** The event, JSON. */
  event: Uint8Array;
  /** Lambda-Runtime-Deadline-Ms: when the invocation is stopped, ms since the epoch. */
  deadlineMs: number;
  /** Lambda-Runtime-Invoked-Function-Arn. */
  functionArn: string;
  /** Lambda-Runtime-Trace-Id, when there is one. */
  traceId?: string;
}

/** How the runtime answered one invocation. */
export type InvocationOutcome =
  /** `/response`: the handler's result. */
  | { kind: "response"; payload: Uint8Array }
  /** `/error`: the handler failed; `errorType` is the Lambda-Runtime-Function-Error-Type header. */
  | { kind: "error"; errorType: string | null; payload: Uint8Array }
  /** The response or error was larger than {@linkcode MAX_PAYLOAD_BYTES}. */
  | { kind: "too large" }
  /** The runtime asked for the next invocation without answering this one. */
  | { kind: "abandoned" }
  /** The runtime's answer broke off before its end (its connection closed). */
  | { kind: "broken" };

/** What the runtime posted to `/init/error`. */
export interface InitError {
  errorType: string | null;
  payload: Uint8Array;
}

/** What the API tells its owner, besides the outcomes of invocations. */
export interface RuntimeApiEvents {
  /** The runtime asked for its first invocation: its init is over. */
  ready?(): void;
  /** The runtime reported that it cannot start (before its first `/next`). */
  initError?(error: InitError): void;
  /** A request was refused (for the log). */
  refused?(method: string, path: string, status: number, errorType: string): void;
}

/** The invocation handed out, or waiting to be. */
interface Current {
  invocation: Invocation;
  /** The runtime has it (a `/next` answered with it). */
  delivered: boolean;
  resolve(outcome: InvocationOutcome): void;
}

/** A `/next` request waiting for work. */
interface WaitingNext {
  answer(response: Response): void;
}

const PREFIX = `/${RUNTIME_API_VERSION}/runtime/`;
const encoder = new TextEncoder();

/** Lambda's error JSON with `status`. */
function errorResponse(status: number, errorType: string, errorMessage: string): Response {
  return new Response(JSON.stringify({ errorMessage, errorType }), {
    status,
    headers: { "content-type": "application/json" },
  });
}

function accepted(): Response {
  return new Response(JSON.stringify({ status: "OK" }), {
    status: 202,
    headers: { "content-type": "application/json" },
  });
}

/** Reads a request body of at most `limit` bytes; undefined when it is longer. */
async function readLimited(request: Request, limit: number): Promise<Uint8Array | undefined> {
  if (!request.body) return new Uint8Array(0);
  const declared = Number(request.headers.get("content-length"));
  if (Number.isFinite(declared) && declared > limit) {
    await request.body.cancel().catch(() => {});
    return undefined;
  }
  const chunks: Uint8Array[] = [];
  let length = 0;
  const reader = request.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    length += value.length;
    if (length > limit) {
      await reader.cancel().catch(() => {});
      return undefined;
    }
    chunks.push(value);
  }
  if (chunks.length === 1) return chunks[0];
  const body = new Uint8Array(length);
  let at = 0;
  for (const chunk of chunks) {
    body.set(chunk, at);
    at += chunk.length;
  }
  return body;
}

/** The Runtime API of one runtime process. */
export class RuntimeApi {
  #events: RuntimeApiEvents;
  #initialized = false;
  #closed = false;
  #current: Current | undefined;
  #waiting: WaitingNext | undefined;

  constructor(events: RuntimeApiEvents = {}) {
    this.#events = events;
  }

  /** The runtime has asked for an invocation at least once. */
  get initialized(): boolean {
    return this.#initialized;
  }

  /** The request id of the invocation handed out or about to be, if any. */
  get currentId(): string | undefined {
    return this.#current?.invocation.id;
  }

  /** The open invocation was handed to the runtime (a `/next` got it). */
  get delivered(): boolean {
    return this.#current?.delivered ?? false;
  }

  /**
   * Hands `invocation` to the runtime (now, if a `/next` waits; else at its next
   * `/next`) and resolves with its answer. Only one at a time: a second call
   * while one is open is a bug of the caller and throws.
   */
  invoke(invocation: Invocation): Promise<InvocationOutcome> {
    if (this.#current) throw new Error("an invocation is already open");
    if (this.#closed) throw new Error("the Runtime API is closed");
    return new Promise((resolve) => {
      this.#current = { invocation, delivered: false, resolve };
      const waiting = this.#waiting;
      if (waiting) {
        this.#waiting = undefined;
        waiting.answer(this.#deliver());
      }
    });
  }

  /**
   * Forgets the open invocation (its job was stopped, its runtime died): a late
   * answer to it is refused with `InvalidRequestID`. Its promise never settles.
   */
  cancel(): void {
    this.#current = undefined;
  }

  /**
   * Refuses everything from now on and answers a waiting `/next`, so that a
   * server that serves this API can shut down (it waits for open requests).
   */
  close(): void {
    this.#closed = true;
    this.#current = undefined;
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.answer(errorResponse(410, "RuntimeStopped", "sqsrun is stopping this runtime"));
  }

  /** Answers one request of the runtime. Never throws. */
  async handle(request: Request): Promise<Response> {
    const url = new URL(request.url);
    const path = url.pathname;
    const response = await this.#route(request, path);
    if (response.status >= 400 && response.status !== 410) {
      const type = await response.clone().json().then(
        (body) => String(body.errorType),
        () => "unknown",
      );
      this.#events.refused?.(request.method, path, response.status, type);
    }
    return response;
  }

  #route(request: Request, path: string): Promise<Response> | Response {
    if (this.#closed) {
      return errorResponse(410, "RuntimeStopped", "sqsrun is stopping this runtime");
    }
    if (!path.startsWith(PREFIX)) {
      return errorResponse(
        404,
        "NotFound",
        `no such path: ${path} (the API is /${RUNTIME_API_VERSION}/runtime/...)`,
      );
    }
    const rest = path.slice(PREFIX.length);
    const method = request.method;
    if (rest === "invocation/next") {
      return method === "GET" ? this.#next() : notAllowed(method, "GET");
    }
    if (rest === "init/error") {
      return method === "POST" ? this.#initError(request) : notAllowed(method, "POST");
    }
    const match = /^invocation\/([^/]+)\/(response|error)$/.exec(rest);
    if (match) {
      if (method !== "POST") return notAllowed(method, "POST");
      return this.#answer(request, decodeURIComponent(match[1]), match[2] as "response" | "error");
    }
    return errorResponse(404, "NotFound", `no such path: ${path}`);
  }

  #next(): Promise<Response> | Response {
    if (!this.#initialized) {
      this.#initialized = true;
      this.#events.ready?.();
    }
    const current = this.#current;
    if (current?.delivered) {
      // The runtime moved on without an answer: the invocation has failed, and
      // the owner decides what becomes of a runtime that does that.
      this.#current = undefined;
      current.resolve({ kind: "abandoned" });
    } else if (current) {
      return this.#deliver();
    }
    return new Promise<Response>((resolve) => {
      const previous = this.#waiting;
      const waiting: WaitingNext = { answer: resolve };
      this.#waiting = waiting;
      // One invocation at a time: a newer /next takes the place of an older one
      // (whose client may have given up without the server noticing).
      previous?.answer(
        errorResponse(
          403,
          "InvalidStateTransition",
          "another /next request took this one's place: one invocation at a time",
        ),
      );
    });
  }

  /** The `/next` answer that hands out the current invocation. */
  #deliver(): Response {
    const current = this.#current!;
    current.delivered = true;
    const { invocation } = current;
    const headers: Record<string, string> = {
      "content-type": "application/json",
      "lambda-runtime-aws-request-id": invocation.id,
      "lambda-runtime-deadline-ms": String(Math.round(invocation.deadlineMs)),
      "lambda-runtime-invoked-function-arn": invocation.functionArn,
    };
    if (invocation.traceId) headers["lambda-runtime-trace-id"] = invocation.traceId;
    return new Response(invocation.event as Uint8Array<ArrayBuffer>, { status: 200, headers });
  }

  async #answer(request: Request, id: string, kind: "response" | "error"): Promise<Response> {
    const current = this.#current;
    if (!current || !current.delivered || current.invocation.id !== id) {
      await request.body?.cancel().catch(() => {});
      return errorResponse(400, "InvalidRequestID", "Invalid request ID");
    }
    const payload = await readLimited(request, MAX_PAYLOAD_BYTES).catch(() => "broken" as const);
    // The request may have been cancelled (the job stopped) while its body came in.
    if (this.#current !== current) {
      return errorResponse(400, "InvalidRequestID", "Invalid request ID");
    }
    this.#current = undefined;
    if (payload === "broken") {
      current.resolve({ kind: "broken" });
      return errorResponse(400, "TruncatedHTTPRequest", "HTTP request detected as truncated");
    }
    if (payload === undefined) {
      current.resolve({ kind: "too large" });
      return errorResponse(
        413,
        "RequestEntityTooLarge",
        `Exceeded maximum allowed payload size (${MAX_PAYLOAD_BYTES} bytes).`,
      );
    }
    if (kind === "response") {
      current.resolve({ kind: "response", payload });
    } else {
      const errorType = request.headers.get("lambda-runtime-function-error-type");
      current.resolve({ kind: "error", errorType, payload });
    }
    return accepted();
  }

  async #initError(request: Request): Promise<Response> {
    if (this.#initialized) {
      await request.body?.cancel().catch(() => {});
      return errorResponse(
        403,
        "InvalidStateTransition",
        "State transition from Running to InitError failed for runtime: init is over",
      );
    }
    const payload = (await readLimited(request, MAX_PAYLOAD_BYTES).catch(() => undefined)) ??
      encoder.encode("(the init error was larger than 6 MiB)");
    const errorType = request.headers.get("lambda-runtime-function-error-type");
    this.#events.initError?.({ errorType, payload });
    return accepted();
  }
}

function notAllowed(method: string, allowed: string): Response {
  const response = errorResponse(
    405,
    "MethodNotAllowed",
    `${method} is not allowed here; use ${allowed}`,
  );
  response.headers.set("allow", allowed);
  return response;
}

/** A Runtime API on a port. */
export interface ServedRuntimeApi {
  /** `127.0.0.1:PORT`: the runtime's AWS_LAMBDA_RUNTIME_API. */
  readonly address: string;
  /** Closes the API (answering a waiting `/next`) and the listener. */
  close(): Promise<void>;
}

/** Serves `api` on 127.0.0.1, on a port the system picks. */
export function serveRuntimeApi(api: RuntimeApi): ServedRuntimeApi {
  const server = Deno.serve(
    {
      hostname: "127.0.0.1",
      port: 0,
      onListen: () => {},
      // Never Deno's default, which prints the error: handle() does not throw, but a
      // bug must cost one request, not a line on stderr.
      onError: () => errorResponse(500, "InternalServerError", "Internal Server Error"),
    },
    (request) => api.handle(request),
  );
  const address = `127.0.0.1:${server.addr.port}`;
  let closing: Promise<void> | undefined;
  return {
    address,
    close() {
      api.close();
      closing ??= server.shutdown().catch(() => {});
      return closing;
    },
  };
}
