/**
 * The test runner behind `deno task test`: starts moto and ElasticMQ, runs
 * `deno test -A --no-prompt --parallel tests/` (two files at a time) against them,
 * stops exactly what it started (also on Ctrl-C or SIGTERM) and exits with deno
 * test's exit code.
 *
 * ```sh
 * deno task test                               # all tests
 * deno task test tests/local_aws_test.ts       # some files (replace tests/)
 * deno task test --filter "moto"               # any other deno test flags
 * ```
 *
 * When `SQSRUN_TEST_MOTO_URL`, `SQSRUN_TEST_ELASTICMQ_URL`, `SQSRUN_TEST_AWS_CLI`
 * and `SQSRUN_TEST_STATE` are already set (e.g. `eval "$(deno task -q local-aws env)"`
 * after `deno task local-aws start`), those servers are used and nothing is started.
 *
 * @module
 */
import { dirname, join } from "node:path";
import {
  CACHE_DIR,
  emptyAwsConfigPath,
  type LocalAwsState,
  PROJECT_ROOT,
  readState,
  startLocalAws,
  stopLocalAws,
  testEnv,
} from "./local_aws.ts";

/** The variables that say where the test servers are. */
export const TEST_ENV_NAMES = [
  "SQSRUN_TEST_MOTO_URL",
  "SQSRUN_TEST_ELASTICMQ_URL",
  "SQSRUN_TEST_AWS_CLI",
  "SQSRUN_TEST_STATE",
] as const;

/**
 * Builds the `deno test` arguments: `tests/` is added unless the caller named
 * files or folders of their own (any argument before `--` that exists on disk).
 * Test files run two at a time (`--parallel`, {@linkcode TEST_JOBS}): most of their
 * time is spent waiting on emulators, timeouts and jobs, and every file keeps to
 * queues, processes and servers of its own.
 */
export function denoTestArgs(extra: string[], exists: (path: string) => boolean): string[] {
  const separator = extra.indexOf("--");
  const own = separator === -1 ? extra : extra.slice(0, separator);
  const namesPaths = own.some((arg) => !arg.startsWith("-") && exists(arg));
  const base = ["test", "-A", "--no-prompt", ...(own.includes("--parallel") ? [] : ["--parallel"])];
  if (namesPaths) return [...base, ...extra];
  return [...base, ...own, "tests/", ...extra.slice(own.length)];
}

/**
 * Test files at once, unless `DENO_JOBS` says otherwise: two, whatever the machine's
 * core count, so that timing-bound tests see the same load everywhere.
 */
export const TEST_JOBS = "2";

/**
 * The environment for `deno test`: the caller's, without any `AWS_*` variable
 * (so no test reaches real AWS with a developer's profile or keys), with the AWS
 * config files pointed at an empty file and the `SQSRUN_TEST_*` variables set.
 */
export function childEnv(
  parent: Record<string, string>,
  servers: Record<string, string>,
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(parent)) {
    if (!key.startsWith("AWS_")) env[key] = value;
  }
  const empty = emptyAwsConfigPath(servers.SQSRUN_TEST_STATE);
  return {
    DENO_JOBS: TEST_JOBS,
    ...env,
    AWS_CONFIG_FILE: empty,
    AWS_SHARED_CREDENTIALS_FILE: empty,
    ...servers,
  };
}

/** Runs the tests as described in the module doc; resolves to the exit code. */
export async function runTests(args: string[]): Promise<number> {
  const parentEnv = Deno.env.toObject();
  const given = TEST_ENV_NAMES.every((name) => parentEnv[name]);
  let started: LocalAwsState | null = null;
  let child: Deno.ChildProcess | null = null;
  let interrupted: Deno.Signal | null = null;
  let code = 1;

  // Replaces Deno's default exit-on-signal: the servers must be stopped first.
  const onSignal = (signal: Deno.Signal) => () => {
    interrupted ??= signal;
    try {
      child?.kill(signal);
    } catch {
      // The child already exited.
    }
  };
  const handlers = (["SIGINT", "SIGTERM"] as const).map((signal) => {
    const handler = onSignal(signal);
    Deno.addSignalListener(signal, handler);
    return { signal, handler };
  });

  try {
    let servers: Record<string, string>;
    if (given) {
      servers = Object.fromEntries(TEST_ENV_NAMES.map((name) => [name, parentEnv[name]]));
      log(
        `using servers from the environment: moto ${servers.SQSRUN_TEST_MOTO_URL}, ` +
          `elasticmq ${servers.SQSRUN_TEST_ELASTICMQ_URL}`,
      );
    } else {
      const startedAt = Date.now();
      // A folder per run, so a concurrent run or a developer's `local-aws start` is untouched.
      started = await startLocalAws({ stateDir: join(CACHE_DIR, "local_aws", `test-${Deno.pid}`) });
      servers = testEnv(started);
      log(
        `moto at ${started.moto.url}, elasticmq at ${started.elasticmq.url} ` +
          `(started in ${((Date.now() - startedAt) / 1000).toFixed(1)} s)`,
      );
    }
    if (interrupted) return exitCodeFor(interrupted);

    const testArgs = denoTestArgs(args, exists);
    log(`deno ${testArgs.join(" ")}`);
    child = new Deno.Command(Deno.execPath(), {
      args: testArgs,
      cwd: PROJECT_ROOT,
      clearEnv: true,
      env: childEnv(parentEnv, servers),
      stdin: "null",
    }).spawn();
    const status = await child.status;
    code = interrupted ? exitCodeFor(interrupted) : status.code;
    return code;
  } finally {
    if (started) await stopStarted(started, { keepLogs: code !== 0 });
    for (const { signal, handler } of handlers) Deno.removeSignalListener(signal, handler);
  }
}

/**
 * Stops the servers this run started. The state file is read again in case a server
 * was restarted (new pid, same port), and the pids first recorded are stopped as
 * well; pids that are gone or reused are skipped by `stopLocalAws`.
 */
async function stopStarted(
  started: LocalAwsState,
  options: { keepLogs: boolean },
): Promise<void> {
  const current = await readState(started.stateFile);
  if (current) await stopLocalAws(current);
  await stopLocalAws(started);
  const folder = dirname(started.stateFile);
  if (options.keepLogs) {
    log(`servers stopped; their logs are in ${folder}`);
  } else {
    await Deno.remove(folder, { recursive: true });
    log("servers stopped");
  }
}

/** The shell's convention for "ended by a signal": 128 + its number. */
function exitCodeFor(signal: Deno.Signal): number {
  return signal === "SIGINT" ? 130 : 143;
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

function log(message: string): void {
  console.error(`test: ${message}`);
}

if (import.meta.main) {
  try {
    Deno.exit(await runTests(Deno.args));
  } catch (error) {
    log(error instanceof Error ? error.message : String(error));
    Deno.exit(1);
  }
}
