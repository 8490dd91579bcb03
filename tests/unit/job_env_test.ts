/** Unit tests of the environment a job's process sees. */
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { attributeEnvName, jobEnvironment } from "../../src/runners/process/job_env.ts";
import { jobMessage } from "../support/unit.ts";

Deno.test("attributeEnvName: upper-cases and replaces everything outside A-Z, 0-9 and _", () => {
  strictEqual(attributeEnvName("trace-id"), "TRACE_ID");
  strictEqual(attributeEnvName("Retry.Count"), "RETRY_COUNT");
  strictEqual(attributeEnvName("a b=c"), "A_B_C");
  strictEqual(attributeEnvName("already_OK_9"), "ALREADY_OK_9");
  strictEqual(attributeEnvName("ümlaut"), "_MLAUT");
  for (const name of ["x$y", "ünïcødé", "😀", "a\nb", "ß", "ﬁle"]) {
    ok(/^[A-Z0-9_]*$/.test(attributeEnvName(name)), `unsafe env name for ${name}`);
  }
});

Deno.test("jobEnvironment: SQSRUN_* description, sanitized attribute names, --env pairs", () => {
  const message = jobMessage("m-7", {
    receiveCount: 2,
    sentTimestamp: 1_700_000_000_000,
    groupId: "g1",
    attributes: { "trace-id": "abc", "Retry.Count": "3" },
  });
  deepStrictEqual(jobEnvironment(message, { FOO: "bar", EMPTY: "" }), {
    FOO: "bar",
    EMPTY: "",
    SQSRUN_ATTR_TRACE_ID: "abc",
    SQSRUN_ATTR_RETRY_COUNT: "3",
    SQSRUN_MESSAGE_ID: "m-7",
    SQSRUN_RECEIVE_COUNT: "2",
    SQSRUN_QUEUE_URL: message.queueUrl,
    SQSRUN_SENT_TIMESTAMP: "1700000000000",
    SQSRUN_GROUP_ID: "g1",
  });
});

Deno.test("jobEnvironment: --env cannot override the message's own SQSRUN_* variables", () => {
  const message = jobMessage("real-id");
  const env = jobEnvironment(message, {
    SQSRUN_MESSAGE_ID: "forged",
    SQSRUN_RECEIVE_COUNT: "99",
    SQSRUN_QUEUE_URL: "forged",
    KEEP: "me",
  });
  strictEqual(env.SQSRUN_MESSAGE_ID, "real-id");
  strictEqual(env.SQSRUN_RECEIVE_COUNT, "1");
  strictEqual(env.SQSRUN_QUEUE_URL, message.queueUrl);
  strictEqual(env.KEEP, "me");
  ok(!("SQSRUN_GROUP_ID" in env), "no group id for a standard queue");
  ok(!("SQSRUN_SENT_TIMESTAMP" in env), "no sent timestamp when unknown");
});
