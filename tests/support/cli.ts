/**
 * Runs sqsrun as a user would: a child process `deno run <the binary's permissions>
 * src/main.ts ARGS`, with a hard time limit, and an environment without the
 * developer's AWS_* variables. Also runs the AWS CLI the same way, as an
 * independent client.
 *
 * ```ts
 * const result = await runCli(["--list"], { env: awsEnv(endpoint) });
 * equal(result.code, 0);
 * ```
 *
 * @module
 */
import { equal, ok } from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { runtimeFlags } from "../../src/permissions.ts";

/** The project root: tests run sqsrun from here. */
export const ROOT: string = fileURLToPath(new URL("../..", import.meta.url));
const MAIN = fileURLToPath(new URL("../../src/main.ts", import.meta.url));

/** How to run one command. */
export interface RunCliOptions {
  /** Variables set on top of the inherited environment (which has no AWS_* variables). */
  env?: Record<string, string>;
  /** Bytes or text written to stdin, which is then closed; stdin is empty otherwise. */
  stdin?: string | Uint8Array;
  /** The child is killed (SIGKILL) after this many milliseconds; default 30 000. */
  timeoutMs?: number;
  /** Working directory; default the project root. */
  cwd?: string;
}

/** What one run printed and how it ended. */
export interface CliResult {
  /** Exit code; -1 when the time limit killed the child. */
  code: number;
  stdout: string;
  stderr: string;
  /** Raw stdout. */
  stdoutBytes: Uint8Array;
  timedOut: boolean;
  /** Wall time of the run. */
  durationMs: number;
}

let denoDir: string | undefined;

/**
 * Deno's cache directory, passed to children explicitly: a test that points HOME at
 * an empty directory must not make deno look for (and download) packages there.
 */
async function cacheDir(): Promise<string> {
  if (denoDir) return denoDir;
  const fromEnv = Deno.env.get("DENO_DIR");
  if (fromEnv) return denoDir = fromEnv;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json"],
    stdout: "piped",
    stderr: "null",
    env: { NO_COLOR: "1" },
  }).output();
  return denoDir = JSON.parse(new TextDecoder().decode(output.stdout)).denoDir as string;
}

/** The inherited environment without AWS_* (a developer's keys or profile must not leak in). */
export function baseEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(Deno.env.toObject())) {
    if (!key.startsWith("AWS_")) env[key] = value;
  }
  return env;
}

/** Runs any program with a hard time limit; the common part of runCli and runAwsCli. */
export async function runProgram(
  program: string,
  args: string[],
  options: RunCliOptions = {},
): Promise<CliResult> {
  const started = performance.now();
  const env = { ...baseEnv(), DENO_DIR: await cacheDir(), NO_COLOR: "1", ...options.env };
  const child = new Deno.Command(program, {
    args,
    cwd: options.cwd ?? ROOT,
    env,
    clearEnv: true,
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already exited */ }
  }, options.timeoutMs ?? 30_000);
  const writing = (async () => {
    if (options.stdin === undefined) return;
    const data = typeof options.stdin === "string"
      ? new TextEncoder().encode(options.stdin)
      : options.stdin;
    const writer = child.stdin.getWriter();
    try {
      await writer.write(data);
      await writer.close();
    } catch {
      // The child may exit (e.g. with a usage error) before reading all of stdin.
    }
  })();
  try {
    const output = await child.output();
    await writing;
    const decoder = new TextDecoder();
    return {
      code: timedOut ? -1 : output.code,
      stdout: decoder.decode(output.stdout),
      stderr: decoder.decode(output.stderr),
      stdoutBytes: output.stdout,
      timedOut,
      durationMs: performance.now() - started,
    };
  } finally {
    clearTimeout(timer);
  }
}

/** The arguments of `deno` that run sqsrun with the compiled binary's permissions. */
export function sqsrunCommand(args: string[]): string[] {
  return ["run", ...runtimeFlags(), "--quiet", MAIN, ...args];
}

/** Runs `sqsrun ARGS` and collects its exit code and output. */
export function runCli(args: string[], options: RunCliOptions = {}): Promise<CliResult> {
  return runProgram(Deno.execPath(), sqsrunCommand(args), options);
}

/** Runs the AWS CLI with `--output json`; `env` should carry endpoint and credentials. */
export function runAwsCli(
  cli: string,
  args: string[],
  options: RunCliOptions = {},
): Promise<CliResult> {
  return runProgram(cli, [...args, "--output", "json"], options);
}

/** Returns the text split in lines without the final newline. */
export function lines(text: string): string[] {
  const trimmed = text.endsWith("\n") ? text.slice(0, -1) : text;
  return trimmed === "" ? [] : trimmed.split("\n");
}

/** Checks the shape every error must have: one line, `sqsrun: `, no stack, no stdout. */
export function assertOneLineError(
  result: CliResult,
  code: number,
  mentions: string[],
  context = "",
): void {
  const where = `${context}\nstderr: ${JSON.stringify(result.stderr)}`;
  equal(result.timedOut, false, `timed out ${where}`);
  equal(result.code, code, `exit code ${where}`);
  equal(result.stdout, "", `stdout must be empty ${where}`);
  const errorLines = lines(result.stderr);
  equal(errorLines.length, 1, `exactly one stderr line ${where}`);
  ok(errorLines[0].startsWith("sqsrun: "), `starts with 'sqsrun: ' ${where}`);
  ok(!result.stderr.includes("    at "), `no stack frame ${where}`);
  for (const mention of mentions) {
    ok(errorLines[0].includes(mention), `mentions ${JSON.stringify(mention)} ${where}`);
  }
}
