/**
 * Black-box tests of the command line: every bad input is one line on stderr with
 * the right exit code, and help and version print what they should. None of these
 * reaches a network: each fails before sqsrun would talk to SQS.
 */
import { equal, ok } from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import meta from "../deno.json" with { type: "json" };
import { main } from "../src/main.ts";
import { HELP_TOPICS } from "../src/docs.ts";
import { assertOneLineError, lines, runCli } from "./support/cli.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const dir = Deno.makeTempDirSync({ prefix: "sqsrun_cli_test_" });
const file = (name: string, text: string): string => {
  const path = join(dir, name);
  Deno.writeTextFileSync(path, text);
  return path;
};
const badYaml = file("bad.yaml", "queue: [unclosed\n");
const unknownKey = file("unknown.yaml", "queue: q\ntimeuot: 30\n");
const wrongType = file("wrong_type.yaml", "queue: q\ntimeout: thirty\n");
const wrongArgs = file("wrong_args.yaml", "queue: q\nexec: ./w\nargs: not-a-list\n");
const wrongAttr = file("wrong_attr.yaml", "attr: [a, b]\n");
const notMapping = file("list.yaml", "- queue\n- q\n");
const badRange = file("range.yaml", "queue: q\nexec: ./w\nconcurrency: 0\n");
const bothJobs = file("both.yaml", "queue: q\nexec: ./w\nrun: ./r.ts\n");
const missing = join(dir, "missing.yaml");

const JOB = ["--exec", "./worker.sh", "-q", "jobs"];

/** Bad inputs: arguments, exit code, words the message must contain. */
const BAD_INPUTS: [string[], number, string[]][] = [
  [[], 2, ["no command"]],
  [["--bogus"], 2, ["'--bogus'"]],
  [["--bogus=value", "--list"], 2, ["'--bogus'"]],
  [["-Z", "--list"], 2, ["'-Z'"]],
  [["--constructor", "--list"], 2, ["'--constructor'"]],
  [["--__proto__", "--list"], 2, ["'--__proto__'"]],
  [["--list", "stray"], 2, ["'stray'"]],
  [["--list", "--push", "x", "-q", "q"], 2, ["--list", "--push"]],
  [["--list", "--delete", "-q", "q"], 2, ["--list", "--delete"]],
  [["--exec", "./a", "--run", "./b.ts", "-q", "q"], 2, ["--exec", "--run"]],
  [["--exec", "./worker.sh"], 2, ["--exec", "-q/--queue"]],
  [["--run", "./worker.ts"], 2, ["--run", "-q/--queue"]],
  [["--create"], 2, ["--create", "-q/--queue"]],
  [["--delete"], 2, ["--delete", "-q/--queue"]],
  [["--push", "hello"], 2, ["--push", "-q/--queue"]],
  [["--attr", "A=1"], 2, ["--attr", "-q/--queue"]],
  [["--push"], 2, ["--push", "value"]],
  [["--list=yes"], 2, ["--list", "no value"]],
  [["--attr", "novalue", "-q", "q"], 2, ["--attr", "Key=Value"]],
  [["--attr", "=v", "-q", "q"], 2, ["--attr", "Key=Value"]],
  [["--env", "1BAD=x", ...JOB], 2, ["--env", "1BAD"]],
  [["--env", "NOEQUALS", ...JOB], 2, ["--env", "KEY=VALUE"]],
  [["-t", "abc", "--list"], 2, ["-t/--timeout", "abc"]],
  [["-t", "43201", "--list"], 2, ["-t/--timeout", "43201"]],
  [["-t", "1.5", "--list"], 2, ["-t/--timeout", "1.5"]],
  [["-t", "30", "-e", "30", ...JOB], 2, ["-e/--extend-timeout (30)", "-t/--timeout (30)"]],
  [["-t", "10", "-e", "12", "--list"], 2, ["-e/--extend-timeout (12)", "-t/--timeout (10)"]],
  [["-t", "0", ...JOB], 2, ["-e/--extend-timeout", "-t/--timeout (0)"]],
  [["-e", "0", ...JOB], 2, ["-e/--extend-timeout", "0"]],
  [["-x", "0", ...JOB], 2, ["-x/--kill-timeout", "0"]],
  [["-x", "soon", ...JOB], 2, ["-x/--kill-timeout", "soon"]],
  [["-X", "0", ...JOB], 2, ["-X/--kill-retry", "0"]],
  [["-i", "-1", "--list"], 2, ["-i/--interval", "-1"]],
  [["-i", "1e3", "--list"], 2, ["-i/--interval", "1e3"]],
  [["-c", "0", ...JOB], 2, ["-c/--concurrency", "0"]],
  [["-c", "1001", ...JOB], 2, ["-c/--concurrency", "1001"]],
  [["--wait", "21", ...JOB], 2, ["--wait", "21"]],
  [["--batch-size", "11", ...JOB], 2, ["--batch-size", "11"]],
  [["--prefetch", "1001", ...JOB], 2, ["--prefetch", "1001"]],
  [["--prefetch", "-1", ...JOB], 2, ["--prefetch", "-1"]],
  [["--prefetch", "2.5", ...JOB], 2, ["--prefetch", "auto or an integer", "2.5"]],
  [["--prefetch", "lots", ...JOB], 2, ["--prefetch", "'lots'"]],
  [["--kill-grace", "-1", ...JOB], 2, ["--kill-grace", "-1"]],
  [["--shutdown-timeout", "x", ...JOB], 2, ["--shutdown-timeout", "'x'"]],
  [["--max-receives", "0", ...JOB], 2, ["--max-receives", "0"]],
  [["--backoff", "0", ...JOB], 2, ["--backoff", "BASE"]],
  [["--backoff", "10,5", ...JOB], 2, ["--backoff", "MAX"]],
  [["--backoff", "5,43201", ...JOB], 2, ["--backoff", "43201"]],
  [["--backoff", "soon", ...JOB], 2, ["--backoff", "BASE[,MAX]"]],
  [["--log-format", "xml", ...JOB], 2, ["--log-format", "xml"]],
  [["--log-level", "trace", ...JOB], 2, ["--log-level", "trace"]],
  [["--endpoint-url", "ftp://host", "--list"], 2, ["--endpoint-url", "ftp://host"]],
  [["-q", "", "--list"], 2, ["-q/--queue", "empty"]],
  [["-k", "AKIDONLY", "--list"], 2, ["-k/--key-id", "-s/--secret-key"]],
  [["--list", "--", "arg"], 2, ["--", "--list"]],
  [["--counts", "--create", "-q", "q"], 2, ["--counts"]],
  [["--group-id", "g", "--list"], 2, ["--group-id"]],
  [["--json", ...JOB], 2, ["--json"]],
  [["--message-attr", "noequals", "-q", "q", "--push", "x"], 2, ["--message-attr"]],
  [["--create", "-q", "http://127.0.0.1:1/000000000000/q"], 2, ["--create", "URL"]],
  [["-f", missing, "--list"], 2, [missing, "no such file"]],
  [["-f", dir, "--list"], 2, [dir]],
  [["-f", badYaml, "--list"], 2, [badYaml, "invalid YAML"]],
  [["-f", unknownKey, "--list"], 2, [unknownKey, "'timeuot'"]],
  [["-f", wrongType, "--list"], 2, [wrongType, "'timeout'", "number"]],
  [["-f", wrongArgs], 2, [wrongArgs, "'args'", "list"]],
  [["-f", wrongAttr, "--list"], 2, [wrongAttr, "'attr'", "mapping"]],
  [["-f", notMapping, "--list"], 2, [notMapping, "mapping"]],
  [["-f", badRange], 2, [badRange, "'concurrency'", "0"]],
  [["-f", bothJobs], 2, [bothJobs, "exec", "run"]],
  [["--run", "job.rb", "-q", "q"], 2, ["Ruby scripts are not supported", "--exec ruby job.rb"]],
  [["--wait", "0", "-i", "0", ...JOB], 2, ["--wait 0", "-i/--interval 0", "busy loop"]],
  [["--attr", "VisibilityTimeout=99999", "-q", "q"], 2, ["VisibilityTimeout", "0 to 43200"]],
  [["--attr", "DelaySeconds=soon", "-q", "q"], 2, ["DelaySeconds=soon", "0 to 900"]],
  [["--create", "-q", "q", "--attr", "MaximumMessageSize=512"], 2, ["1024 to 1048576"]],
  // Peek, purge and redrive.
  [["--peek"], 2, ["--peek", "-q/--queue"]],
  [["--purge"], 2, ["--purge", "-q/--queue"]],
  [["--redrive"], 2, ["--redrive", "-q/--queue"]],
  [["--redrive-status"], 2, ["--redrive-status", "-q/--queue"]],
  [["--redrive-cancel"], 2, ["--redrive-cancel", "value"]],
  [["--redrive-cancel="], 2, ["--redrive-cancel", "task handle"]],
  [["--redrive-cancel", "has space"], 2, ["--redrive-cancel", "task handle"]],
  [["--peek", "--purge", "-q", "q"], 2, ["--peek", "--purge"]],
  [["--redrive", "--redrive-cancel", "h", "-q", "q"], 2, ["--redrive", "--redrive-cancel"]],
  [["--peek", "-q", "q", "-n", "0"], 2, ["-n/--max-messages", "1 to 1000", "'0'"]],
  [["--peek", "-q", "q", "-n", "1001"], 2, ["-n/--max-messages", "'1001'"]],
  [["--peek", "-q", "q", "-n", "many"], 2, ["-n/--max-messages", "'many'"]],
  [["-n", "3", "--list"], 2, ["-n/--max-messages", "--peek"]],
  [["--redrive", "-q", "d", "--rate", "0"], 2, ["--rate", "1 to 500", "'0'"]],
  [["--redrive", "-q", "d", "--rate", "501"], 2, ["--rate", "'501'"]],
  [["--redrive", "-q", "d", "--rate", "1.5"], 2, ["--rate", "'1.5'"]],
  [["--redrive", "-q", "d", "--to", "bad/name"], 2, ["--to", "'bad/name'"]],
  [["--redrive", "-q", "d", "--to"], 2, ["--to", "value"]],
  [["--redrive", "-q", "d", "--to", "d"], 2, ["--to", "itself"]],
  [["--to", "q", "--purge", "-q", "d"], 2, ["--to", "only applies to --redrive"]],
  [["--rate", "5", "--peek", "-q", "d"], 2, ["--rate", "only applies to --redrive"]],
  [["--no-wait", "--redrive-status", "-q", "d"], 2, ["--no-wait", "--redrive"]],
  [["--client-side", "--list"], 2, ["--client-side", "--redrive"]],
  [["--redrive", "-q", "d", "--no-wait", "--client-side"], 2, ["--no-wait", "--client-side"]],
  [["--redrive", "-q", "d", "-t", "0"], 2, ["-t/--timeout 0", "--redrive"]],
  [["--redrive", "-q", "d", "--to", "q.fifo"], 2, ["standard queue 'd'", "--group-id"]],
  [["--redrive", "-q", "d.fifo", "--to", "q", "--group-id", "g"], 2, ["--group-id"]],
  [["--redrive", "-q", "d", "--group-id", "g"], 2, ["--group-id", "--to a FIFO queue"]],
  [["--dedup-id", "x", "--redrive", "-q", "d"], 2, ["--dedup-id", "--push"]],
  [["--group-id", "g", "--peek", "-q", "d"], 2, ["--group-id", "--peek"]],
  [
    ["--redrive", "-q", "http://127.0.0.1:1/000000000000/d", "--to", "http://127.0.0.1:2/0/q"],
    2,
    ["--to http://127.0.0.1:2/0/q", "not on the SQS endpoint http://127.0.0.1:1"],
  ],
  [
    ["--peek", "-q", "http://127.0.0.1:1/000000000000/d", "--endpoint-url", "http://127.0.0.1:2"],
    2,
    ["-q/--queue", "not on the SQS endpoint http://127.0.0.1:2"],
  ],
  [
    [
      "--purge",
      "-q",
      "https://sqs.eu-west-1.amazonaws.com/123456789012/q",
      "--region",
      "us-east-1",
    ],
    2,
    ["region eu-west-1", "us-east-1"],
  ],
];

Deno.test("-E/--release-on-fail of the Ruby tool is accepted with a one-line notice", async () => {
  // --configure writes a file and ends: the notice must come before, and nothing else fail.
  const target = join(dir, "release.yaml");
  const result = await runCli(["-E", "--configure", target, ...JOB], { timeoutMs: 20_000 });
  equal(result.code, 0, result.stderr);
  equal(lines(result.stderr).length, 1, result.stderr);
  ok(result.stderr.includes("-E/--release-on-fail is the default now"), result.stderr);
});

Deno.test("every bad input is one line on stderr with exit 2", async (t) => {
  for (const [args, code, mentions] of BAD_INPUTS) {
    await t.step(`sqsrun ${args.join(" ")}`.slice(0, 120), async () => {
      const result = await runCli(args, { timeoutMs: 20_000 });
      assertOneLineError(result, code, mentions, `args: ${JSON.stringify(args)}`);
    });
  }
});

Deno.test("the bad-input table covers at least the required 20 cases", () => {
  ok(BAD_INPUTS.length >= 20);
});

Deno.test("a secret key never appears in an error", async () => {
  const secret = "S3cr3t-Value-Never-Printed";
  for (
    const args of [
      ["-s", secret, "--list"],
      [`--secret-key=${secret}`, "--bogus"],
      ["-k", "AKID", "-s", secret, "-t", "x", "--list"],
      ["-k", "AKID", "-s", secret, "--endpoint-url", "http://127.0.0.1:1", "--list"],
    ]
  ) {
    const result = await runCli(args, { timeoutMs: 20_000 });
    ok(result.code !== 0, `fails: ${args.join(" ")}`);
    equal(lines(result.stderr).length, 1, result.stderr);
    ok(!result.stderr.includes(secret), `secret leaked: ${result.stderr}`);
    ok(!result.stdout.includes(secret), `secret leaked: ${result.stdout}`);
  }
});

Deno.test("an unreachable endpoint is one line, exit 1, quickly", async () => {
  const result = await runCli(["--endpoint-url", "http://127.0.0.1:1", "--list"], {
    env: { AWS_ACCESS_KEY_ID: "test", AWS_SECRET_ACCESS_KEY: "test", AWS_REGION: "us-east-1" },
    timeoutMs: 20_000,
  });
  assertOneLineError(result, 1, ["cannot reach the SQS endpoint"]);
  ok(result.durationMs < 15_000, `took ${result.durationMs} ms`);
});

/** Every long flag the help must list. */
const ALL_FLAGS = [
  "--key-id",
  "--secret-key",
  "--queue",
  "--timeout",
  "--create",
  "--delete",
  "--attr",
  "--push",
  "--list",
  "--configure",
  "--exec",
  "--run",
  "--post",
  "--content-type",
  "--post-health",
  "--post-hmac",
  "--post-hmac-secret-file",
  "--extend-timeout",
  "--kill-timeout",
  "--kill-retry",
  "--interval",
  "--daemon",
  "--file",
  "--region",
  "--endpoint-url",
  "--profile",
  "--env",
  "--help",
  "--version",
  "--concurrency",
  "--wait",
  "--batch-size",
  "--prefetch",
  "--shell",
  "--kill-grace",
  "--backoff",
  "--max-receives",
  "--shutdown-timeout",
  "--log",
  "--log-format",
  "--log-level",
  "--json",
  "--counts",
  "--group-id",
  "--dedup-id",
  "--message-attr",
  "--peek",
  "--purge",
  "--redrive",
  "--redrive-status",
  "--redrive-cancel",
  "--max-messages",
  "--to",
  "--rate",
  "--no-wait",
  "--client-side",
];

Deno.test("help lists every flag with its default and exits 0", async () => {
  for (const flag of ["-h", "--help", "--list --help"]) {
    const result = await runCli(flag.split(" "), { timeoutMs: 20_000 });
    equal(result.code, 0);
    equal(result.stderr, "");
    ok(result.stdout.startsWith("Usage: sqsrun [options] [-- ARGV...]\n"));
    for (const name of ALL_FLAGS) {
      ok(new RegExp(`${name}\\b`).test(result.stdout), `help lists ${name}`);
    }
    for (
      const text of [
        "VisibilityTimeout, else 30)",
        "(default: timeout*3/4)",
        "(default: timeout*5, at most 43140",
        "(default: 60)",
        "(default: 10)",
        "(default: 1)",
        "(default: 20)",
        "(default: info)",
        "MAX default: 900",
      ]
    ) {
      ok(result.stdout.includes(text), `help shows ${text}`);
    }
    ok(result.stdout.includes("counts as a receive toward the"), "--peek counts as a receive");
    ok(/--purge .*lost, as with --delete/.test(result.stdout), "--purge is as destructive");
    for (
      const short of ["-k,", "-s,", "-q,", "-t,", "-e,", "-x,", "-X,", "-i,", "-d,", "-f,", "-n,"]
    ) {
      ok(result.stdout.includes(`  ${short} --`), `help lists ${short}`);
    }
    ok(result.stdout.split("\n").every((line) => line.length <= 100), "lines fit 100 columns");
  }
});

Deno.test("--help TOPIC prints that page of docs/ whole and exits 0; an unknown topic is exit 2", async () => {
  for (
    const args of [["--help", "worker"], ["-h", "worker"], ["--help=worker"], [
      "--help",
      "worker",
      "--list",
    ]]
  ) {
    const result = await runCli(args, { timeoutMs: 20_000 });
    equal(result.stderr, "", args.join(" "));
    equal(result.code, 0, args.join(" "));
    equal(result.stdout, Deno.readTextFileSync(join(ROOT, "docs", "worker.md")), args.join(" "));
  }
  const configuration = await runCli(["--help", "configuration"], { timeoutMs: 20_000 });
  equal(configuration.code, 0);
  ok(configuration.stdout.startsWith("# Flags and configuration files\n"));
  const usage = await runCli(["--help"], { timeoutMs: 20_000 });
  ok(/--help \[TOPIC\]/.test(usage.stdout), "the help names its topics");
  for (const topic of HELP_TOPICS) ok(usage.stdout.includes(topic), `help names ${topic}`);
  const unknown = await runCli(["--help", "nope"], { timeoutMs: 20_000 });
  assertOneLineError(unknown, 2, ["--help", "unknown topic 'nope'", "worker", "configuration"]);
});

Deno.test("-V and --version print the version of deno.json", async () => {
  for (const flag of ["-V", "--version"]) {
    const result = await runCli([flag], { timeoutMs: 20_000 });
    equal(result.code, 0);
    equal(result.stdout, `sqsrun ${meta.version}\n`);
    equal(result.stderr, "");
  }
});

Deno.test("a world-readable configuration file with a secret key gets one warning", async () => {
  const secret = "WarnedSecret-123";
  const path = file("readable.yaml", `key-id: AKID\nsecret-key: ${secret}\nqueue: q\n`);
  const out = join(dir, "out.yaml");
  Deno.chmodSync(path, 0o644);
  const warned = await runCli(["-f", path, "--configure", out], { timeoutMs: 20_000 });
  equal(warned.code, 0, warned.stderr);
  equal(warned.stdout, "");
  const warning = lines(warned.stderr);
  equal(warning.length, 1, warned.stderr);
  ok(warning[0].startsWith("sqsrun: warning: "), warned.stderr);
  ok(warning[0].includes(path) && warning[0].includes("chmod 600"), warned.stderr);
  ok(!warned.stderr.includes(secret));

  Deno.chmodSync(path, 0o600);
  const quiet = await runCli(["-f", path, "--configure", out], { timeoutMs: 20_000 });
  equal(quiet.code, 0, quiet.stderr);
  equal(quiet.stderr, "");

  // Readable by everyone but without a secret: nothing to warn about.
  const plain = file("plain.yaml", "queue: q\n");
  Deno.chmodSync(plain, 0o644);
  const none = await runCli(["-f", plain, "--configure", out], { timeoutMs: 20_000 });
  equal(none.code, 0, none.stderr);
  equal(none.stderr, "");
});

Deno.test("--configure into a missing directory is one line, exit 1", async () => {
  const target = join(dir, "no", "such", "dir", "x.yaml");
  const result = await runCli(["--configure", target, "-q", "q"], { timeoutMs: 20_000 });
  assertOneLineError(result, 1, [target, "no such file"]);
});

Deno.test("an empty configuration file is an empty layer", async () => {
  const path = file("empty.yaml", "");
  const out = join(dir, "from_empty.yaml");
  const result = await runCli(["-f", path, "--configure", out, "-q", "q"], { timeoutMs: 20_000 });
  equal(result.code, 0, result.stderr);
  ok(Deno.readTextFileSync(out).includes("queue: q\n"));
});

Deno.test("an unexpected error is one line, exit 1, with the secret redacted", async () => {
  let stderr = "";
  const code = await main(["-k", "AKID", "-s", "Hush-123", "--configure", join(dir, "u.yaml")], {
    stdout: () => {},
    stderr: (text) => {
      stderr += text;
    },
    readStdin: () => Promise.resolve(new Uint8Array()),
  });
  equal(code, 0, stderr);
  const failing = await main(["-s", "Hush-123", "-V"], {
    stdout: () => {
      throw new TypeError("cannot write Hush-123\n    at somewhere (x.ts:1:1)");
    },
    stderr: (text) => {
      stderr += text;
    },
    readStdin: () => Promise.resolve(new Uint8Array()),
  });
  equal(failing, 1);
  equal(stderr, "sqsrun: unexpected error: cannot write ***\n");
});

globalThis.addEventListener("unload", () => {
  try {
    Deno.removeSync(dir, { recursive: true });
  } catch { /* already gone */ }
});
