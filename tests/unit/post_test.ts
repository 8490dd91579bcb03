/**
 * Unit tests of `--post`'s pure parts: the headers of a message (sqsd's names and
 * formats, sqsrun's own), Retry-After in both forms, header values in UTF-8, the
 * checks of its options, and what counts as a failed connect. No network: the
 * runner itself is tested end to end in tests/post_test.ts.
 */
import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import {
  checkContentType,
  checkPostOptions,
  checkPostUrl,
  headerValue,
  healthUrl,
  isConnectFailure,
  parseRetryAfter,
  type PostCheckOptions,
  postHeaders,
  postSpec,
  sqsdTime,
  USER_AGENT,
} from "../../src/runners/post.ts";
import { UsageError } from "../../src/errors.ts";
import { parseCli } from "../../src/cli.ts";
import { parseConfigText, renderConfig } from "../../src/config.ts";
import { jobMessage } from "../support/unit.ts";

const NOW = Date.UTC(2025, 0, 2, 3, 4, 5);

Deno.test("post: Retry-After in seconds or as an HTTP date, capped at 12 hours", () => {
  strictEqual(parseRetryAfter("7", NOW), 7);
  strictEqual(parseRetryAfter(" 120 ", NOW), 120);
  strictEqual(parseRetryAfter("0", NOW), 0);
  strictEqual(parseRetryAfter("999999999", NOW), 43_200);
  strictEqual(parseRetryAfter(new Date(NOW + 20_000).toUTCString(), NOW), 20);
  strictEqual(parseRetryAfter(new Date(NOW + 20_500).toUTCString(), NOW), 20);
  strictEqual(parseRetryAfter(new Date(NOW - 60_000).toUTCString(), NOW), 0, "a date past");
  strictEqual(parseRetryAfter("Thursday, 02-Jan-25 03:05:05 GMT", NOW), 60, "RFC 850");
  strictEqual(parseRetryAfter("Thu Jan  2 03:04:35 2025", NOW), 30, "asctime");
  for (const bad of [null, "", "soon", "5.5", "-3", "2025-01-02T03:04:35Z", "1e3"]) {
    strictEqual(parseRetryAfter(bad, NOW), undefined, String(bad));
  }
});

Deno.test("post: sqsd's time format and header values in UTF-8", () => {
  strictEqual(sqsdTime(Date.UTC(2014, 9, 21, 11, 1, 6, 789)), "2014-10-21T11:01:06Z");
  strictEqual(headerValue("plain ascii"), "plain ascii");
  strictEqual(headerValue("é"), "\u00c3\u00a9", "the UTF-8 bytes, one character each");
  strictEqual(headerValue("a\nb"), undefined);
  strictEqual(headerValue("a\rb"), undefined);
  strictEqual(headerValue("a\0b"), undefined);
});

Deno.test("post: a message's headers are sqsd's, then sqsrun's, nothing unset", () => {
  const message = jobMessage("m-1", {
    queueUrl: "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs.fifo",
    receiveCount: 3,
    sentTimestamp: 1_700_000_000_123,
    firstReceivedAt: Date.UTC(2024, 1, 3, 4, 5, 6, 700),
    senderId: "AIDAEXAMPLE",
    groupId: "g",
    deduplicationId: "d",
    sequenceNumber: "1234",
    attributes: { color: "red", blob: "AAE=", bad: "x\ny" },
    binaryAttributes: ["blob"],
  });
  const dropped: string[] = [];
  const headers = postHeaders(
    message,
    { body: "", env: {}, context: {} },
    "application/json",
    (name) => dropped.push(name),
  );
  deepStrictEqual(headers, {
    "content-type": "application/json",
    "user-agent": USER_AGENT,
    "x-aws-sqsd-attr-color": "red",
    "x-aws-sqsd-first-received-at": "2024-02-03T04:05:06Z",
    "x-aws-sqsd-msgid": "m-1",
    "x-aws-sqsd-queue": "jobs.fifo",
    "x-aws-sqsd-receive-count": "3",
    "x-aws-sqsd-sender-id": "AIDAEXAMPLE",
    "x-sqsrun-binary-attr-blob": "AAE=",
    "x-sqsrun-deduplication-id": "d",
    "x-sqsrun-group-id": "g",
    "x-sqsrun-queue-url": "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs.fifo",
    "x-sqsrun-sent-timestamp": "1700000000123",
    "x-sqsrun-sequence-number": "1234",
  });
  deepStrictEqual(dropped, ["X-Aws-Sqsd-Attr-bad"]);
  ok(USER_AGENT.startsWith("aws-sqsd/"));

  const bare = postHeaders(jobMessage("m-2"), { body: "", env: {}, context: {} }, "text/plain");
  deepStrictEqual(Object.keys(bare).sort(), [
    "content-type",
    "user-agent",
    "x-aws-sqsd-msgid",
    "x-aws-sqsd-queue",
    "x-aws-sqsd-receive-count",
    "x-sqsrun-queue-url",
  ]);

  const s3 = postHeaders(jobMessage("m-3"), {
    body: "",
    env: { SQSRUN_S3_SIZE: "42" },
    context: {
      s3: { bucket: "b", key: "a b/ü\n.txt", versionId: "v1", eventName: "ObjectCreated:Put" },
    },
  }, "application/octet-stream");
  deepStrictEqual(
    ["bucket", "key", "version-id", "size", "event-name"].map((part) => s3[`x-sqsrun-s3-${part}`]),
    ["b", "a%20b%2F%C3%BC%0A.txt", "v1", "42", "ObjectCreated:Put"],
  );
});

Deno.test("post: the URL, the Content-Type, the health path and the other options are checked", () => {
  strictEqual(checkPostUrl("https://app.internal:8443/a?b=c").port, "8443");
  for (const bad of ["", "localhost:8080", "ftp://h/x", "file:///tmp/x", "http://u:p@h/"]) {
    throws(() => checkPostUrl(bad), UsageError, bad);
  }
  strictEqual(checkContentType("application/json"), "application/json");
  strictEqual(checkContentType('text/plain; charset="utf-8"'), 'text/plain; charset="utf-8"');
  for (const bad of ["", " ", "json", "text/plain\r\nX: y", "a/b; c"]) {
    throws(() => checkContentType(bad), UsageError, bad);
  }
  const url = new URL("http://127.0.0.1:8080/jobs");
  strictEqual(healthUrl("/health?deep=1", url).href, "http://127.0.0.1:8080/health?deep=1");
  for (const bad of ["health", "//other/x", "/a b", "http://127.0.0.1:8080/h", "/\\evil"]) {
    throws(() => healthUrl(bad, url), UsageError, bad);
  }
  const target = "http://127.0.0.1:8080/jobs";
  checkPostOptions(target, { postHmac: "X-Hub-Signature-256", postHmacSecretFile: "/s" });
  const refused: [PostCheckOptions, string][] = [
    [{ postHmac: "Bad Header" }, "--post-hmac must be a header name"],
    [{ postHmac: "x-sqsrun-s3-key" }, "sets that header itself"],
    [{ postHmacSecretFile: "/s" }, "only applies with --post-hmac"],
    [{ args: ["x"] }, "nothing may follow --"],
    [{ shell: true }, "--shell only applies to --exec"],
    [{ env: { A: "b" } }, "--env"],
  ];
  for (const [options, message] of refused) {
    throws(
      () => checkPostOptions(target, options),
      (error: Error) => error instanceof UsageError && error.message.includes(message),
    );
  }
});

Deno.test("post: the secret comes from a file (one final newline dropped) or the environment", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/secret`;
    await Deno.writeTextFile(file, "s3cr3t\n");
    const spec = await postSpec("http://127.0.0.1:1/", {
      postHmac: "X-Sig",
      postHmacSecretFile: file,
    });
    const signature = await crypto.subtle.sign("HMAC", spec.hmac!.key, new Uint8Array([1]));
    const expected = await crypto.subtle.sign(
      "HMAC",
      await crypto.subtle.importKey(
        "raw",
        new TextEncoder().encode("s3cr3t"),
        { name: "HMAC", hash: "SHA-256" },
        false,
        ["sign"],
      ),
      new Uint8Array([1]),
    );
    deepStrictEqual(new Uint8Array(signature), new Uint8Array(expected));
    await Deno.writeTextFile(file, "\n");
    await postSpec("http://127.0.0.1:1/", { postHmac: "X-Sig", postHmacSecretFile: file })
      .then(() => ok(false, "an empty secret was taken"), (error) => {
        ok(error instanceof UsageError && error.message.includes("the file is empty"));
      });
    await postSpec("http://127.0.0.1:1/", { postHmac: "X-Sig", postHmacSecretFile: dir })
      .then(() => ok(false, "a directory was taken"), (error) => {
        ok(error instanceof UsageError && error.message.includes("not a regular file"));
      });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("post: a failed connect is told from a request that broke after it was sent", () => {
  const connect = new TypeError("fetch failed", {
    cause: new Error(
      "error sending request for url (http://127.0.0.1:9/): client error (Connect): " +
        "tcp connect error: Connection refused (os error 111)",
    ),
  });
  const reset = new TypeError("fetch failed", {
    cause: new Error(
      "error sending request from 127.0.0.1:5 for http://127.0.0.1:9/ (127.0.0.1:9): " +
        "client error (SendRequest): connection closed before message completed",
    ),
  });
  strictEqual(isConnectFailure(connect), true);
  strictEqual(isConnectFailure(reset), false);
  strictEqual(isConnectFailure(new DOMException("aborted", "AbortError")), false);
});

Deno.test("post: its settings are flags and file keys, written by --configure, refused with other jobs", async () => {
  const argv = [
    "-q",
    "q",
    "--post",
    "http://127.0.0.1:8080/jobs",
    "--content-type",
    "text/plain",
    "--post-health",
    "/health",
    "--post-hmac",
    "X-Sig",
    "--post-hmac-secret-file",
    "/run/secrets/hmac",
  ];
  const result = await parseCli(argv);
  if (result.kind !== "options") throw new Error(result.kind);
  const { options, settings } = result;
  deepStrictEqual(
    [options.command, options.contentType, options.postHealth, options.postHmac],
    ["post", "text/plain", "/health", "X-Sig"],
  );
  const text = renderConfig(settings);
  deepStrictEqual(parseConfigText(text, "f.yaml"), settings, "--configure, then -f, reads back");
  for (
    const key of ["post:", "content-type:", "post-health:", "post-hmac:", "post-hmac-secret-file:"]
  ) {
    ok(text.includes(key), `${key} in ${text}`);
  }
  await parseCli(["-q", "q", "--exec", "/bin/true", "--content-type", "text/plain"]).then(
    () => ok(false, "--content-type was taken with --exec"),
    (error) => strictEqual(error.message, "--content-type only applies with --post"),
  );
  throws(
    () => parseConfigText("post: 8080\n", "f.yaml"),
    /configuration file 'f.yaml': key 'post' must be a string/,
  );
});
