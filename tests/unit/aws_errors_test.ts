/**
 * Unit tests of how AWS failures are classified: by error name, code and HTTP
 * status, never by the words of the message.
 */
import { ok, strictEqual } from "node:assert/strict";
import { describeAwsError, isStaleReceipt, isTimeout } from "../../src/aws.ts";
import { BatchEntryError } from "../../src/worker/sqs_batcher.ts";

function sdkError(name: string, message: string, status?: number): Error {
  return Object.assign(new Error(message), { name, $metadata: { httpStatusCode: status } });
}

Deno.test("isTimeout: the SDK's TimeoutError and Node's ETIMEDOUT are timeouts", () => {
  ok(isTimeout(sdkError("TimeoutError", "socket timed out after 10000 ms")));
  ok(isTimeout(Object.assign(new Error("connect ETIMEDOUT"), { code: "ETIMEDOUT" })));
  ok(isTimeout(sdkError("RequestTimeout", "Request timed out", 408)));
});

Deno.test("isTimeout: a refusal whose text says 'timeout' is not one", () => {
  const refused = sdkError(
    "InvalidParameterValue",
    "Value 99999 for parameter VisibilityTimeout is invalid. Reason: must be between 0 and 43200.",
    400,
  );
  strictEqual(isTimeout(refused), false);
  strictEqual(isTimeout(sdkError("Error", "the job timed out", undefined)), false);
  const text = describeAwsError(refused);
  ok(!text.includes("did not answer in time"), text);
  ok(text.includes("VisibilityTimeout is invalid"), text);
});

Deno.test("isStaleReceipt: stale or gone receipts, in SQS's and the emulators' words", () => {
  ok(isStaleReceipt(new BatchEntryError("ReceiptHandleIsInvalid", "not valid")));
  ok(isStaleReceipt(sdkError("MessageNotInflight", "not in flight", 400)));
  ok(isStaleReceipt(sdkError(
    "InvalidParameterValue",
    "Value rh for parameter ReceiptHandle is invalid. Reason: Message does not exist or is not available for visibility timeout change.",
    400,
  )));
  strictEqual(isStaleReceipt(sdkError("InvalidParameterValue", "VisibilityTimeout", 400)), false);
  strictEqual(isStaleReceipt(sdkError("ServiceUnavailable", "try again", 503)), false);
});
