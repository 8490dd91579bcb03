/**
 * Tests of `scripts/smoke.ts`, the suite every release binary must pass on its own
 * platform: here it runs whole against `deno run src/main.ts` and the moto of
 * `deno task test`, so the suite is tested before it is trusted; and against broken
 * "binaries" it must fail at the right check, with a one-line reason.
 */
import { deepStrictEqual, equal, ok, throws } from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  CHECKS,
  MOTO_REQUIREMENT,
  parseSmokeArgs,
  sqsrunSpec,
  UsageError,
} from "../scripts/smoke.ts";
import { runtimeFlags } from "../src/permissions.ts";
import { motoEndpoint } from "./support/local_aws.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const MAIN = join(ROOT, "src", "main.ts");
const decoder = new TextDecoder();
const noEnv = () => undefined;

interface Run {
  code: number;
  stderr: string;
  /** The last line of stderr: the verdict. */
  last: string;
}

/** Runs the suite with `args`; killed after `timeoutMs` (the suite bounds itself first). */
async function runSuite(args: string[], timeoutMs: number): Promise<Run> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", "scripts/smoke.ts", ...args],
    cwd: ROOT,
    env: { NO_COLOR: "1", SQSRUN_TEST_MOTO_URL: motoEndpoint() },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGTERM");
    } catch { /* exited */ }
  }, timeoutMs);
  try {
    const output = await child.output();
    const stderr = decoder.decode(output.stderr);
    equal(decoder.decode(output.stdout), "", "the suite writes to stderr only");
    return { code: output.code, stderr, last: stderr.trimEnd().split("\n").at(-1) ?? "" };
  } finally {
    clearTimeout(timer);
  }
}

/** Writes an executable shell script (a stand-in for a binary) and returns its path. */
async function script(dir: string, name: string, body: string): Promise<string> {
  const path = join(dir, name);
  await Deno.writeTextFile(path, `#!/bin/sh\n${body}\n`);
  await Deno.chmod(path, 0o755);
  return path;
}

Deno.test("parseSmokeArgs(): exactly one of --binary and --deno, known checks in suite order", () => {
  const options = parseSmokeArgs(["--deno", "--only", "drain,exec", "--only=version"], noEnv);
  deepStrictEqual(options.checks, ["version", "exec", "drain"]);
  equal(options.endpoint, undefined);
  equal(options.timeoutSec, 300);
  deepStrictEqual(options.sqsrun.prefix, ["run", ...runtimeFlags(), "--quiet", MAIN]);
  equal(options.sqsrun.program, Deno.execPath());
  deepStrictEqual(parseSmokeArgs(["--deno"], noEnv).checks, [...CHECKS]);

  const binary = parseSmokeArgs(["--binary", "dist/sqsrun", "--timeout", "600"], noEnv);
  equal(binary.sqsrun.program, join(Deno.cwd(), "dist", "sqsrun"));
  deepStrictEqual(binary.sqsrun.prefix, []);
  equal(binary.timeoutSec, 600);

  const fromEnv = parseSmokeArgs(
    ["--deno"],
    (name) => name === "SQSRUN_TEST_MOTO_URL" ? "http://127.0.0.1:4566/" : undefined,
  );
  equal(fromEnv.endpoint, "http://127.0.0.1:4566");
  equal(
    parseSmokeArgs(["--deno", "--endpoint", "http://[::1]:9"], () => "http://x:1").endpoint,
    "http://[::1]:9",
  );

  const wrong: [string[], string][] = [
    [[], "give exactly one of --binary PATH and --deno"],
    [["--deno", "--binary", "x"], "give exactly one of --binary PATH and --deno"],
    [["--binary", ""], "--binary needs a path"],
    [["--deno", "--only", "exec,speed"], `unknown check 'speed' (known: ${CHECKS.join(", ")})`],
    [["--deno", "--timeout", "0"], "--timeout must be a number of seconds in (0, 3600], not '0'"],
    [
      ["--deno", "--endpoint", "http://h:1/queue"],
      "--endpoint must be an http(s) URL without a path, not 'http://h:1/queue'",
    ],
    [["--deno", "--bogus"], "Unknown option '--bogus'"],
  ];
  for (const [args, message] of wrong) {
    throws(() => parseSmokeArgs(args, noEnv), new UsageError(message), args.join(" "));
  }
});

Deno.test("the suite installs the same moto as scripts/local_aws.ts", async () => {
  const source = await Deno.readTextFile(join(ROOT, "scripts", "local_aws.ts"));
  ok(source.includes(`"${MOTO_REQUIREMENT}"`), `${MOTO_REQUIREMENT} is local_aws.ts's pin`);
  equal(sqsrunSpec(undefined).label, "deno run src/main.ts");
});

Deno.test("a usage error exits 2 with the reason and the usage", async () => {
  const run = await runSuite(["--only", "nothing", "--deno"], 30_000);
  equal(run.code, 2);
  const lines = run.stderr.trimEnd().split("\n");
  equal(lines[0], `smoke: unknown check 'nothing' (known: ${CHECKS.join(", ")})`);
  ok(lines[1].startsWith("usage: deno run -A scripts/smoke.ts (--binary PATH | --deno)"));
});

Deno.test({
  name: "the whole suite passes against deno run src/main.ts and moto",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const run = await runSuite(["--deno", "--timeout", "240"], 300_000);
    equal(run.last, `smoke: ${CHECKS.length} passed, 0 failed`, run.stderr);
    equal(run.code, 0, run.stderr);
    for (const name of CHECKS) ok(run.stderr.includes(`smoke: ok ${name} (`), name);
    ok(run.stderr.includes(`smoke: worker isolation on ${Deno.build.os}: `), run.stderr);
  },
});

Deno.test({
  name: "a binary that only exits 1 fails the first check, in one line",
  ignore: Deno.build.os === "windows",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const broken = await script(dir, "sqsrun", "exit 1");
      const run = await runSuite(["--binary", broken], 60_000);
      equal(
        run.last,
        'smoke: FAIL version: --version exited 1 printing ""; want exit 0 and "sqsrun 0.1.0"',
        run.stderr,
      );
      equal(run.code, 1);
      ok(!run.stderr.includes("smoke: ok "), run.stderr);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "a worker whose drain kills the running job fails the drain check",
  ignore: Deno.build.os === "windows",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      // The real sqsrun, but every worker gets --shutdown-timeout 0 (just before --exec,
      // so it wins over the suite's own): a drain that kills at once instead of waiting.
      const flags = runtimeFlags().join(" ");
      const broken = await script(
        dir,
        "sqsrun",
        `for a; do shift; [ "$a" = --exec ] && set -- "$@" --shutdown-timeout 0; set -- "$@" "$a"; done
exec '${Deno.execPath()}' run ${flags} --quiet '${MAIN}' "$@"`,
      );
      const run = await runSuite(["--binary", broken, "--only", "version,drain"], 120_000);
      ok(
        run.last.startsWith(
          "smoke: FAIL drain: the drain ended the running job: job failed (outcome killed",
        ),
        run.stderr,
      );
      equal(run.code, 1);
      ok(run.stderr.includes("smoke: ok version ("), run.stderr);
      // The worker's log comes first, for context; the verdict stays the last line.
      ok(run.stderr.includes(`"shutdown_timeout":0`), run.stderr);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
