/**
 * Which credentials sqsrun signs with, and how a missing profile is reported:
 * `--profile` wins over environment keys, as in the AWS CLI; a profile that
 * exists nowhere is one line; nothing from the SDK reaches stderr unformatted.
 */
import { equal, ok } from "node:assert/strict";
import { join } from "node:path";
import { assertOneLineError, runCli } from "./support/cli.ts";

/** A loopback endpoint that answers ListQueues and records each request's access key id. */
function recordingEndpoint() {
  const keys: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const auth = request.headers.get("authorization") ?? "";
    keys.push(/Credential=([^/]+)\//.exec(auth)?.[1] ?? "none");
    return new Response(JSON.stringify({ QueueUrls: [] }), {
      headers: { "content-type": "application/x-amz-json-1.0" },
    });
  });
  return { url: `http://127.0.0.1:${server.addr.port}`, keys, close: () => server.shutdown() };
}

const dir = Deno.makeTempDirSync({ prefix: "sqsrun_credentials_test_" });
const config = join(dir, "config");
const credentials = join(dir, "credentials");
Deno.writeTextFileSync(config, "[profile dev]\nregion = us-east-1\n");
Deno.writeTextFileSync(
  credentials,
  "[dev]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = profile-secret\n",
);

const env = (endpoint: string) => ({
  AWS_ACCESS_KEY_ID: "AKIDENVIRONMENT",
  AWS_SECRET_ACCESS_KEY: "environment-secret",
  AWS_REGION: "us-east-1",
  AWS_ENDPOINT_URL: endpoint,
  AWS_CONFIG_FILE: config,
  AWS_SHARED_CREDENTIALS_FILE: credentials,
});

Deno.test("credentials: --profile wins over environment keys, and the SDK's warning stays off stderr", async () => {
  const endpoint = recordingEndpoint();
  try {
    const result = await runCli(["--profile", "dev", "--list"], { env: env(endpoint.url) });
    equal(result.code, 0, result.stderr);
    equal(result.stderr, "", "something reached stderr");
    ok(
      endpoint.keys.length > 0 && endpoint.keys.every((key) => key === "AKIDPROFILE"),
      String(endpoint.keys),
    );
    const plain = await runCli(["--list"], { env: env(endpoint.url) });
    equal(plain.code, 0, plain.stderr);
    equal(endpoint.keys.at(-1), "AKIDENVIRONMENT", "without --profile the environment keys sign");
  } finally {
    await endpoint.close();
  }
});

Deno.test("credentials: a profile that exists in neither file is one line, exit 2, before any call", async () => {
  const endpoint = recordingEndpoint();
  try {
    const result = await runCli(["--profile", "nope", "--list"], { env: env(endpoint.url) });
    assertOneLineError(result, 2, ["--profile nope", "no such profile", config, credentials]);
    equal(endpoint.keys.length, 0, "a call was made");
  } finally {
    await endpoint.close();
  }
});
