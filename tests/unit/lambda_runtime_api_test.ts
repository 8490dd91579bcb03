/**
 * Unit tests of the Lambda Runtime API as one runtime sees it, request by
 * request (no network): /next blocks until there is work and carries Lambda's
 * headers, answers resolve the invocation, and every request out of turn gets
 * Lambda's status code and error JSON.
 */
import { deepStrictEqual, equal, ok } from "node:assert/strict";
import {
  type InitError,
  type Invocation,
  MAX_PAYLOAD_BYTES,
  RuntimeApi,
} from "../../src/runners/lambda/runtime_api.ts";
import { hasSettled } from "../support/unit.ts";

const BASE = "http://127.0.0.1:9001/2018-06-01/runtime";
const encoder = new TextEncoder();

function invocation(id: string): Invocation {
  return {
    id,
    event: encoder.encode(JSON.stringify({ Records: [{ messageId: id }] })),
    deadlineMs: 1_700_000_000_123,
    functionArn: "arn:aws:lambda:us-east-1:123456789012:function:jobs",
    traceId: "Root=1-abc",
  };
}

const get = (api: RuntimeApi, path: string) => api.handle(new Request(`${BASE}${path}`));
const post = (api: RuntimeApi, path: string, body: BodyInit, headers: HeadersInit = {}) =>
  api.handle(new Request(`${BASE}${path}`, { method: "POST", body, headers }));

async function errorOf(response: Response): Promise<[number, string]> {
  const body = await response.json();
  ok(typeof body.errorMessage === "string", JSON.stringify(body));
  return [response.status, body.errorType];
}

Deno.test("RuntimeApi: /next waits for work, then carries the event and Lambda's headers", async () => {
  let ready = 0;
  const api = new RuntimeApi({ ready: () => ready++ });
  const next = get(api, "/invocation/next");
  equal(ready, 1, "the first /next ends the init");
  equal(await hasSettled(next), false, "no work yet: /next blocks");
  const outcome = api.invoke(invocation("req-1"));
  const response = await next;
  equal(response.status, 200);
  equal(response.headers.get("lambda-runtime-aws-request-id"), "req-1");
  equal(response.headers.get("lambda-runtime-deadline-ms"), "1700000000123");
  equal(
    response.headers.get("lambda-runtime-invoked-function-arn"),
    "arn:aws:lambda:us-east-1:123456789012:function:jobs",
  );
  equal(response.headers.get("lambda-runtime-trace-id"), "Root=1-abc");
  deepStrictEqual(await response.json(), { Records: [{ messageId: "req-1" }] });
  const answered = await post(api, "/invocation/req-1/response", '{"batchItemFailures":[]}');
  equal(answered.status, 202);
  deepStrictEqual(await answered.json(), { status: "OK" });
  const result = await outcome;
  equal(result.kind, "response");
  if (result.kind === "response") {
    equal(new TextDecoder().decode(result.payload), '{"batchItemFailures":[]}');
  }
  equal(ready, 1);
});

Deno.test("RuntimeApi: work handed out before the runtime asks waits for its /next", async () => {
  const api = new RuntimeApi();
  const first = get(api, "/invocation/next");
  const outcome1 = api.invoke(invocation("a"));
  await (await first).arrayBuffer();
  await post(api, "/invocation/a/response", "null");
  equal((await outcome1).kind, "response");
  const outcome2 = api.invoke(invocation("b"));
  const second = await get(api, "/invocation/next");
  equal(second.headers.get("lambda-runtime-aws-request-id"), "b");
  equal(second.headers.get("lambda-runtime-trace-id"), "Root=1-abc");
  await post(api, "/invocation/b/error", '{"errorMessage":"boom","errorType":"ValueError"}', {
    "Lambda-Runtime-Function-Error-Type": "Unhandled",
  });
  const failed = await outcome2;
  equal(failed.kind, "error");
  if (failed.kind === "error") equal(failed.errorType, "Unhandled");
});

Deno.test("RuntimeApi: answers to an invocation that is not the current one: 400 InvalidRequestID", async () => {
  const api = new RuntimeApi();
  const next = get(api, "/invocation/next");
  deepStrictEqual(await errorOf(await post(api, "/invocation/x/response", "{}")), [
    400,
    "InvalidRequestID",
  ]);
  const outcome = api.invoke(invocation("cur"));
  await (await next).arrayBuffer();
  deepStrictEqual(await errorOf(await post(api, "/invocation/other/response", "{}")), [
    400,
    "InvalidRequestID",
  ]);
  equal(await hasSettled(outcome), false, "a wrong id does not end the invocation");
  equal((await post(api, "/invocation/cur/response", "{}")).status, 202);
  deepStrictEqual(await errorOf(await post(api, "/invocation/cur/response", "{}")), [
    400,
    "InvalidRequestID",
  ], "a second answer");
  deepStrictEqual(await errorOf(await post(api, "/invocation/cur/error", "{}")), [
    400,
    "InvalidRequestID",
  ]);
  equal((await outcome).kind, "response");
});

Deno.test("RuntimeApi: a second /next without an answer abandons the invocation", async () => {
  const api = new RuntimeApi();
  const first = get(api, "/invocation/next");
  const outcome = api.invoke(invocation("a"));
  await (await first).arrayBuffer();
  const again = get(api, "/invocation/next");
  deepStrictEqual(await outcome, { kind: "abandoned" });
  deepStrictEqual(await errorOf(await post(api, "/invocation/a/response", "{}")), [
    400,
    "InvalidRequestID",
  ]);
  equal(await hasSettled(again), false, "the second /next waits like any other");
  api.close();
  equal((await again).status, 410, "closing answers it, so a server can shut down");
});

Deno.test("RuntimeApi: init errors before the first /next; after it, 403 InvalidStateTransition", async () => {
  const errors: InitError[] = [];
  const api = new RuntimeApi({ initError: (error) => errors.push(error) });
  const response = await post(
    api,
    "/init/error",
    '{"errorMessage":"no module named app","errorType":"Runtime.ImportModuleError"}',
    {
      "Lambda-Runtime-Function-Error-Type": "Runtime.ImportModuleError",
    },
  );
  equal(response.status, 202);
  equal(errors.length, 1);
  equal(errors[0].errorType, "Runtime.ImportModuleError");
  void get(api, "/invocation/next");
  deepStrictEqual(await errorOf(await post(api, "/init/error", "{}")), [
    403,
    "InvalidStateTransition",
  ]);
  api.close();
});

Deno.test("RuntimeApi: a response past 6 MiB is refused with 413 and ends the invocation", async () => {
  const api = new RuntimeApi();
  const next = get(api, "/invocation/next");
  const outcome = api.invoke(invocation("big"));
  await (await next).arrayBuffer();
  const response = await post(
    api,
    "/invocation/big/response",
    new Uint8Array(MAX_PAYLOAD_BYTES + 1),
  );
  deepStrictEqual(await errorOf(response), [413, "RequestEntityTooLarge"]);
  deepStrictEqual(await outcome, { kind: "too large" });
});

Deno.test("RuntimeApi: unknown paths 404, wrong methods 405, a newer /next replaces an older one", async () => {
  const refused: string[] = [];
  const api = new RuntimeApi({
    refused: (method, path, status) => refused.push(`${method} ${path} ${status}`),
  });
  deepStrictEqual(await errorOf(await get(api, "/invocation/wat")), [404, "NotFound"]);
  deepStrictEqual(await errorOf(await api.handle(new Request("http://h/other"))), [
    404,
    "NotFound",
  ]);
  const wrong = await post(api, "/invocation/next", "");
  deepStrictEqual(await errorOf(wrong), [405, "MethodNotAllowed"]);
  deepStrictEqual(await errorOf(await get(api, "/invocation/a/response")), [
    405,
    "MethodNotAllowed",
  ]);
  const older = get(api, "/invocation/next");
  const newer = get(api, "/invocation/next");
  deepStrictEqual(await errorOf(await older), [403, "InvalidStateTransition"]);
  const outcome = api.invoke(invocation("n"));
  equal((await newer).headers.get("lambda-runtime-aws-request-id"), "n");
  await post(api, "/invocation/n/response", "");
  equal((await outcome).kind, "response");
  equal(refused.length, 5, refused.join("\n"));
});

Deno.test("RuntimeApi: a cancelled invocation refuses its late answer", async () => {
  const api = new RuntimeApi();
  const next = get(api, "/invocation/next");
  const outcome = api.invoke(invocation("late"));
  await (await next).arrayBuffer();
  api.cancel();
  deepStrictEqual(await errorOf(await post(api, "/invocation/late/response", "{}")), [
    400,
    "InvalidRequestID",
  ]);
  equal(await hasSettled(outcome), false);
  // The runtime may ask for work again and get the next invocation.
  const again = get(api, "/invocation/next");
  api.invoke(invocation("fresh"));
  equal((await again).headers.get("lambda-runtime-aws-request-id"), "fresh");
});
