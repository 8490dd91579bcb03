/**
 * What tests need to reach the local AWS emulators that `deno task test` starts
 * (see `scripts/test.ts`): endpoints, the AWS CLI, a clean AWS environment for
 * subprocesses, and unique queue names.
 *
 * ```ts
 * import { awsEnv, sqsBackends, uniqueName } from "./support/local_aws.ts";
 *
 * for (const backend of sqsBackends()) {
 *   Deno.test(`receives a message (${backend.name})`, async () => {
 *     const queue = uniqueName("receive");
 *     // ... new SQSClient({ endpoint: backend.endpoint, ... }) or a subprocess with
 *     // env: awsEnv(backend.endpoint)
 *   });
 * }
 * ```
 *
 * @module
 */
import { emptyAwsConfigPath } from "../../scripts/local_aws.ts";

/** One SQS implementation the tests run against. */
export interface SqsBackend {
  /** Which emulator. */
  name: "moto" | "elasticmq";
  /** Endpoint URL, e.g. `http://127.0.0.1:40123`. */
  endpoint: string;
}

/** Throws unless the variable is set by `deno task test` (or `local-aws env`). */
function required(name: string): string {
  const value = Deno.env.get(name);
  if (!value) {
    throw new Error(
      `${name} is not set: run the tests through \`deno task test\` ` +
        "(it starts moto and ElasticMQ), or start them with `deno task local-aws start` " +
        'and `eval "$(deno task -q local-aws env)"`',
    );
  }
  return value;
}

/** Both SQS emulators, moto first. */
export function sqsBackends(): SqsBackend[] {
  return [
    { name: "moto", endpoint: required("SQSRUN_TEST_MOTO_URL") },
    { name: "elasticmq", endpoint: required("SQSRUN_TEST_ELASTICMQ_URL") },
  ];
}

/** The moto endpoint; moto also serves S3 (and other services) on it. */
export function motoEndpoint(): string {
  return required("SQSRUN_TEST_MOTO_URL");
}

/**
 * Path of the AWS CLI (v1) installed in the project's venv. Beware: v1 ignores
 * AWS_ENDPOINT_URL for `aws sqs` in us-east-1 (aws/aws-cli#8737) and goes to real
 * AWS, so always pass `--endpoint-url`; {@linkcode runAwsCli} does.
 */
export function awsCliPath(): string {
  return required("SQSRUN_TEST_AWS_CLI");
}

/** What {@linkcode runAwsCli} returns. */
export interface AwsCliResult {
  /** Exit code. */
  code: number;
  /** Standard output, decoded. */
  stdout: string;
  /** Standard error, decoded. */
  stderr: string;
}

/**
 * Runs the venv's AWS CLI against `endpoint` (with `--endpoint-url` and
 * {@linkcode awsEnv}), e.g. `runAwsCli(endpoint, ["sqs", "list-queues"])`.
 */
export async function runAwsCli(endpoint: string, args: string[]): Promise<AwsCliResult> {
  const output = await new Deno.Command(awsCliPath(), {
    args: ["--endpoint-url", endpoint, ...args],
    env: awsEnv(endpoint),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/**
 * Environment variables for a subprocess (sqsrun, the AWS CLI) that talks to
 * `endpoint` with dummy credentials. The AWS config and credentials files point
 * at an empty file so a developer's `~/.aws` never leaks in. Merge it over a
 * base environment, e.g. `{ ...Deno.env.toObject(), ...awsEnv(endpoint) }`.
 * The AWS SDKs and sqsrun honour AWS_ENDPOINT_URL; the AWS CLI v1 does not for
 * SQS (see {@linkcode awsCliPath}).
 */
export function awsEnv(endpoint: string): Record<string, string> {
  const empty = emptyAwsConfigPath(required("SQSRUN_TEST_STATE"));
  return {
    AWS_ACCESS_KEY_ID: "test",
    AWS_SECRET_ACCESS_KEY: "test",
    AWS_REGION: "us-east-1",
    AWS_DEFAULT_REGION: "us-east-1",
    AWS_ENDPOINT_URL: endpoint,
    AWS_CONFIG_FILE: empty,
    AWS_SHARED_CREDENTIALS_FILE: empty,
  };
}

let nameCounter = 0;
const runId = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;

/**
 * A queue (or bucket-safe) name unique to this test run: the prefix, a run id and a
 * counter, with only letters, digits, `-` and `_`, at most 75 characters so that a
 * `.fifo` suffix still fits SQS's limit of 80.
 */
export function uniqueName(prefix: string): string {
  const suffix = `-${runId}-${++nameCounter}`;
  const clean = prefix.replace(/[^A-Za-z0-9_-]/g, "-").slice(0, 75 - suffix.length);
  return `${clean}${suffix}`;
}
