/**
 * Tests of configuration: layers merged in order (files, then flags), defaults and
 * derived values, the YAML format, and the `--configure` -> `-f` round trip through
 * the real command line.
 */
import { deepStrictEqual, equal, ok, rejects, throws } from "node:assert/strict";
import { join } from "node:path";
import { parseCli } from "../src/cli.ts";
import {
  DEFAULTS,
  mergeSettings,
  type Options,
  parseConfigText,
  renderConfig,
  resolveOptions,
  type Settings,
  settingsToConfig,
} from "../src/config.ts";
import { UsageError } from "../src/errors.ts";
import { runCli } from "./support/cli.ts";

/** Parses a command line in-process, with configuration files from a map. */
async function optionsOf(argv: string[], files: Record<string, string> = {}): Promise<Options> {
  const result = await parseCli(argv, {
    loadFile: (path) => {
      if (!(path in files)) throw new UsageError(`no file ${path}`);
      return Promise.resolve(parseConfigText(files[path], path));
    },
  });
  if (result.kind !== "options") throw new Error(`expected options, got ${result.kind}`);
  return result.options;
}

/** Options without the list of files they came from, for comparing sources. */
function withoutFiles(options: Options): Omit<Options, "files"> {
  const { files: _files, ...rest } = options;
  return rest;
}

Deno.test("defaults and derived values", async () => {
  const options = await optionsOf(["--exec", "./w", "-q", "jobs"]);
  deepStrictEqual(options, {
    command: "exec",
    keyId: undefined,
    secretKey: undefined,
    region: undefined,
    endpointUrl: undefined,
    profile: undefined,
    queue: "jobs",
    attrs: {},
    push: undefined,
    groupId: undefined,
    dedupId: undefined,
    messageAttrs: [],
    counts: false,
    json: false,
    configure: undefined,
    exec: "./w",
    run: undefined,
    lambda: undefined,
    post: undefined,
    args: [],
    env: {},
    shell: false,
    timeout: 30,
    extendTimeout: 22.5,
    killTimeout: 150,
    killRetry: 60,
    killGrace: 10,
    interval: 1,
    wait: 20,
    shutdownTimeout: 150,
    givenTimings: {
      timeout: undefined,
      extendTimeout: undefined,
      killTimeout: undefined,
      shutdownTimeout: undefined,
    },
    concurrency: 1,
    batchSize: 10,
    prefetch: "auto",
    backoff: { base: 5, max: 900 },
    maxReceives: undefined,
    daemon: undefined,
    log: undefined,
    logFormat: undefined,
    logLevel: "info",
    files: [],
    s3: false,
    s3Delete: false,
    s3Gunzip: false,
    statsd: undefined,
    statsdPrefix: "",
    statsdTags: [],
    http: undefined,
  });
});

Deno.test("derived values follow -t unless given, and shutdown follows the kill timeout", async () => {
  const a = await optionsOf(["--exec", "./w", "-q", "q", "-t", "100"]);
  equal(a.extendTimeout, 75);
  equal(a.killTimeout, 500);
  equal(a.shutdownTimeout, 500);
  const b = await optionsOf(["--exec", "./w", "-q", "q", "-t", "100", "-e", "10", "-x", "42"]);
  equal(b.extendTimeout, 10);
  equal(b.killTimeout, 42);
  equal(b.shutdownTimeout, 42);
  const c = await optionsOf(["--exec", "./w", "-q", "q", "--shutdown-timeout", "7.5"]);
  equal(c.shutdownTimeout, 7.5);
  equal(c.killTimeout, 150);
  const d = await optionsOf(["--exec", "./w", "-q", "q", "-t", "1"]);
  equal(d.extendTimeout, 0.75);
  equal(d.killTimeout, 5);
});

Deno.test("--backoff: 5,900 by default, off retries at once, and --configure keeps off", async () => {
  equal((await optionsOf(["--exec", "./w", "-q", "q"])).backoff?.base, 5);
  equal((await optionsOf(["--exec", "./w", "-q", "q", "--backoff", "off"])).backoff, undefined);
  deepStrictEqual(
    (await optionsOf(["--exec", "./w", "-q", "q", "--backoff", "30"])).backoff,
    { base: 30, max: 900 },
  );
  deepStrictEqual(settingsToConfig({ backoff: "off" }), { backoff: "off" });
  equal(parseConfigText("queue: q\nexec: ./w\nbackoff: 'off'\n", "f.yaml").backoff, "off");
});

Deno.test("the derived kill timeout stops a minute short of SQS's 12-hour visibility limit", async () => {
  const capped = await optionsOf(["--exec", "./w", "-q", "q", "-t", "43200"]);
  equal(capped.killTimeout, 43_140);
  equal(capped.shutdownTimeout, 43_140);
  const below = await optionsOf(["--exec", "./w", "-q", "q", "-t", "8000"]);
  equal(below.killTimeout, 40_000);
  const given = await optionsOf(["--exec", "./w", "-q", "q", "-t", "43200", "-x", "50000"]);
  equal(given.killTimeout, 50_000, "an explicit -x is kept (the worker warns at start-up)");
});

Deno.test("decimals where they make sense, integers elsewhere", async () => {
  const options = await optionsOf([
    "--exec",
    "./w",
    "-q",
    "q",
    "-i",
    "0.25",
    "-X",
    "1.5",
    "--kill-grace",
    "0",
    "-e",
    "2.5",
    "-x",
    "9.75",
    "--backoff",
    "5",
    "--max-receives",
    "3",
    "-c",
    "1000",
    "--batch-size",
    "1",
    "--prefetch",
    "0",
    "--wait",
    "0",
  ]);
  equal(options.prefetch, 0);
  equal(options.interval, 0.25);
  equal(options.killRetry, 1.5);
  equal(options.killGrace, 0);
  equal(options.extendTimeout, 2.5);
  equal(options.killTimeout, 9.75);
  deepStrictEqual(options.backoff, { base: 5, max: DEFAULTS.backoffMax });
  equal(options.maxReceives, 3);
  equal(options.concurrency, 1000);
  equal(options.batchSize, 1);
  equal(options.wait, 0);
  await rejects(optionsOf(["--list", "-t", "2.5"]), /-t\/--timeout/);
  await rejects(optionsOf(["--exec", "w", "-q", "q", "--wait", "1.5"]), /--wait/);
});

Deno.test("files in order, then flags: the last value of each key wins", async () => {
  const files = {
    "a.yaml": "queue: from-a\ntimeout: 10\nconcurrency: 2\nenv: {A: a, B: a}\nattr: {X: '1'}\n",
    "b.yaml": "timeout: 20\nenv: {B: b}\nexec: ./b.sh\nargs: [b1, b2]\n",
  };
  const both = await optionsOf(["-f", "a.yaml", "-f", "b.yaml"], files);
  equal(both.command, "exec");
  equal(both.queue, "from-a");
  equal(both.timeout, 20);
  equal(both.concurrency, 2);
  deepStrictEqual(both.env, { A: "a", B: "b" });
  deepStrictEqual(both.attrs, { X: "1" });
  deepStrictEqual(both.args, ["b1", "b2"]);
  deepStrictEqual(both.files, ["a.yaml", "b.yaml"]);
  equal(both.extendTimeout, 15, "derived from the merged timeout");

  const reversed = await optionsOf(["-f", "b.yaml", "-f", "a.yaml"], files);
  equal(reversed.timeout, 10);
  deepStrictEqual(reversed.env, { A: "a", B: "a" });

  const flags = await optionsOf(
    ["-f", "a.yaml", "-f", "b.yaml", "-t", "40", "--env", "B=flag", "-q", "q2", "--", "x"],
    files,
  );
  equal(flags.timeout, 40);
  equal(flags.queue, "q2");
  deepStrictEqual(flags.env, { A: "a", B: "flag" });
  deepStrictEqual(flags.args, ["x"], "ARGV replaces the file's args as a whole");

  const cleared = await optionsOf(["-f", "b.yaml", "-q", "q", "--"], files);
  deepStrictEqual(cleared.args, [], "a bare -- clears the file's args");
});

Deno.test("the job is one slot: a later --run replaces a file's exec", async () => {
  const files = { "w.yaml": "queue: q\nexec: ./w.sh\nshell: true\n" };
  const options = await optionsOf(["-f", "w.yaml", "--run", "./m.ts"], files);
  equal(options.command, "run");
  equal(options.run, "./m.ts");
  equal(options.exec, undefined);
  const admin = await optionsOf(["-f", "w.yaml", "--list"], files);
  equal(admin.command, "list", "a command flag wins over a job in a file");
});

Deno.test("mergeSettings keeps the last value and merges maps", () => {
  const merged = mergeSettings(
    { queue: "a", attrs: { A: "1" }, exec: "x" },
    { queue: "b", attrs: { B: "2" } },
    { run: "m.ts", timeout: 5 },
  );
  deepStrictEqual(merged, { queue: "b", attrs: { A: "1", B: "2" }, run: "m.ts", timeout: 5 });
});

Deno.test("--create with an explicit timeout sets the queue's VisibilityTimeout", async () => {
  const plain = await optionsOf(["--create", "-q", "q"]);
  deepStrictEqual(plain.attrs, {});
  const timed = await optionsOf(["--create", "-q", "q", "-t", "45"]);
  deepStrictEqual(timed.attrs, { VisibilityTimeout: "45" });
  const attr = await optionsOf([
    "--create",
    "-q",
    "q",
    "-t",
    "45",
    "--attr",
    "VisibilityTimeout=9",
  ]);
  deepStrictEqual(attr.attrs, { VisibilityTimeout: "9" });
});

Deno.test("parseConfigText checks keys and types and names the file and key", () => {
  deepStrictEqual(parseConfigText("", "e.yaml"), {});
  deepStrictEqual(
    parseConfigText(
      "queue: q\ntimeout: 60\nattr: {MessageRetentionPeriod: 3600}\nbackoff: 5\nshell: true\n",
      "ok.yaml",
    ),
    {
      queue: "q",
      timeout: 60,
      attrs: { MessageRetentionPeriod: "3600" },
      backoff: { base: 5, max: 900 },
      shell: true,
    },
  );
  deepStrictEqual(parseConfigText("prefetch: auto\n", "p.yaml"), { prefetch: "auto" });
  deepStrictEqual(parseConfigText("prefetch: 4\n", "p.yaml"), { prefetch: 4 });
  const cases: [string, RegExp][] = [
    ["timeout: '30'\n", /'f\.yaml'.*'timeout'.*number/],
    ["timeout: 30.5\n", /'timeout'.*integer/],
    ["shell: yes\n", /'shell'.*true or false/],
    ["args: [1, 2]\n", /'args'\[0\].*string/],
    ["env: {'1X': y}\n", /'env'.*1X/],
    ["attr: [a]\n", /'attr'.*mapping/],
    ["queue:\n", /'queue' has no value/],
    ["queue: [a]\n", /'queue'.*string/],
    ["nope: 1\n", /unknown key 'nope'/],
    ["list: true\n", /unknown key 'list'/],
    ["backoff: '9,3'\n", /'backoff'.*MAX/],
    ["log-level: loud\n", /'log-level'.*loud/],
    ["prefetch: '4'\n", /'prefetch'.*number of messages or auto/],
    ["queue: 'my queue'\n", /'queue'.*queue URL, or a name/],
    ["region: 'us east'\n", /'region'.*region name/],
    ["prefetch: 1.5\n", /'prefetch'.*integer/],
    ["prefetch: 1001\n", /'prefetch'.*1000/],
    ["a: [\n", /'f\.yaml': invalid YAML/],
    ["a: 1\na: 2\n", /invalid YAML/],
    ["42\n", /mapping/],
  ];
  for (const [text, pattern] of cases) {
    throws(() => parseConfigText(text, "f.yaml"), (error: unknown) => {
      ok(error instanceof UsageError, `UsageError for ${JSON.stringify(text)}`);
      ok(pattern.test(error.message), `${error.message} ~ ${pattern}`);
      ok(!error.message.includes("\n"), "one line");
      return true;
    });
  }
});

Deno.test("renderConfig and parseConfigText are inverses", () => {
  const settings: Settings = {
    keyId: "AKID",
    secretKey: "se:cr#et 'x'",
    region: "eu-west-1",
    endpointUrl: "http://127.0.0.1:4566",
    profile: "p",
    queue: "jobs.fifo",
    timeout: 60,
    extendTimeout: 45.5,
    killTimeout: 300,
    killRetry: 1.5,
    killGrace: 0,
    shutdownTimeout: 20,
    interval: 0.5,
    wait: 10,
    concurrency: 8,
    batchSize: 5,
    backoff: { base: 2, max: 60 },
    maxReceives: 5,
    exec: "./worker --flag",
    shell: true,
    args: ["a b", "--x", "1", "yes", "", "null"],
    env: { A: "1", EMPTY: "", QUOTE: "'\"" },
    attrs: { DelaySeconds: "0" },
    daemon: "/run/sqsrun.pid",
    log: "/var/log/sqsrun.log",
    logFormat: "text",
    logLevel: "debug",
  };
  const text = renderConfig(settings);
  deepStrictEqual(parseConfigText(text, "x.yaml"), settings);
  deepStrictEqual(parseConfigText(renderConfig({}), "x.yaml"), {});
});

Deno.test("resolveOptions checks -k and -s together", () => {
  throws(
    () => resolveOptions({ command: "list", settings: { secretKey: "s" } }),
    /-k\/--key-id and -s\/--secret-key/,
  );
});

// ---------------------------------------------------------------------------
// The round trip through the real command line.

const FULL = [
  "-k",
  "AKIDEXAMPLE",
  "-s",
  "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
  "--region",
  "eu-central-1",
  "--endpoint-url",
  "http://127.0.0.1:4566",
  "-q",
  "jobs",
  "-i",
  "0.5",
  "-X",
  "30",
  "-c",
  "4",
  "--wait",
  "5",
  "--batch-size",
  "3",
  "--prefetch",
  "7",
  "--shell",
  "--kill-grace",
  "2.5",
  "--backoff",
  "10,600",
  "--max-receives",
  "7",
  "-d",
  "/tmp/sqsrun.pid",
  "-o",
  "/tmp/sqsrun.log",
  "--log-format",
  "text",
  "--log-level",
  "debug",
  "--env",
  "GREETING=hello world",
  "--env",
  "EMPTY=",
  "--exec",
  "./worker.sh --verbose",
];
const ARGV = ["--", "first arg", "--second", "3", "yes"];
// With --configure, --attr is data to write; with --exec it would be a second command.
const ATTR = ["--attr", "MessageRetentionPeriod=3600"];

const VARIANTS: [string, string[]][] = [
  ["derived timeouts", ["-t", "120"]],
  ["explicit timeouts", ["-t", "120", "-e", "60", "-x", "600", "--shutdown-timeout", "33"]],
];

for (const [label, timing] of VARIANTS) {
  Deno.test(`--configure then -f gives identical Options (${label})`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "sqsrun_config_test_" });
    try {
      const path = join(dir, "sqsrun.yaml");
      const configure = [...FULL, ...timing, ...ATTR, "--configure", path, ...ARGV];
      const written = await runCli(configure, {
        timeoutMs: 20_000,
      });
      equal(written.code, 0, written.stderr);
      equal(written.stdout, "");
      equal(written.stderr, "");
      equal((await Deno.stat(path)).mode! & 0o777, 0o600, "mode 0600");
      const leftovers = [...Deno.readDirSync(dir)].map((entry) => entry.name);
      deepStrictEqual(leftovers, ["sqsrun.yaml"], "no temporary file left");

      const fromFile = await parseCli(["-f", path]);
      ok(fromFile.kind === "options");
      deepStrictEqual(fromFile.options.files, [path]);
      // What the --configure run had is what -f reads back, as the command it names.
      const asWritten = await optionsOf(configure);
      deepStrictEqual(withoutFiles(fromFile.options), {
        ...withoutFiles(asWritten),
        command: "exec",
        configure: undefined,
      });
      // And the same as giving every flag directly.
      const direct = await optionsOf([...FULL, ...timing, ...ARGV]);
      deepStrictEqual(withoutFiles(fromFile.options), {
        ...withoutFiles(direct),
        attrs: { MessageRetentionPeriod: "3600" },
      });
      equal(fromFile.options.command, "exec");
      deepStrictEqual(fromFile.options.args, ["first arg", "--second", "3", "yes"]);

      // Written again from the file, the configuration is byte for byte the same.
      const again = join(dir, "again.yaml");
      const rewrite = await runCli(["-f", path, "--configure", again], { timeoutMs: 20_000 });
      equal(rewrite.code, 0, rewrite.stderr);
      equal(await Deno.readTextFile(again), await Deno.readTextFile(path));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("--configure writes only what was given, so derived values stay derived", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sqsrun_config_test_" });
  try {
    const path = join(dir, "w.yaml");
    const written = await runCli(
      ["-q", "q", "--run", "./m.ts", "--configure", path, "--", "a"],
      { timeoutMs: 20_000 },
    );
    equal(written.code, 0, written.stderr);
    const text = await Deno.readTextFile(path);
    const body = text.split("\n").filter((line) => line && !line.startsWith("#"));
    deepStrictEqual(body, ["queue: q", "run: ./m.ts", "args:", "  - a"]);
    // Editing the timeout later moves the derived values with it.
    const options = await optionsOf(["-f", "w.yaml", "-t", "8"], { "w.yaml": text });
    equal(options.extendTimeout, 6);
    equal(options.killTimeout, 40);

    // --configure replaces an existing file and keeps it private.
    await Deno.writeTextFile(path, "old\n", { mode: 0o644 });
    await Deno.chmod(path, 0o644);
    const replaced = await runCli(["-q", "new", "--configure", path], { timeoutMs: 20_000 });
    equal(replaced.code, 0, replaced.stderr);
    equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    ok((await Deno.readTextFile(path)).includes("queue: new\n"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--configure then -f gives identical Options for a --post job and its own keys", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sqsrun_config_test_" });
  try {
    const path = join(dir, "post.yaml");
    const flags = [
      "-q",
      "jobs",
      "--post",
      "http://127.0.0.1:8080/work",
      "--content-type",
      "application/xml",
      "--post-health",
      "/health",
      "--post-hmac",
      "X-Signature",
      "--post-hmac-secret-file",
      "/run/secrets/hmac",
      "-c",
      "10",
    ];
    const written = await runCli([...flags, "--configure", path], { timeoutMs: 20_000 });
    equal(written.code, 0, written.stderr);
    const text = await Deno.readTextFile(path);
    for (
      const key of [
        "post: http://127.0.0.1:8080/work",
        "content-type: application/xml",
        "post-health: /health",
        "post-hmac: X-Signature",
        "post-hmac-secret-file: /run/secrets/hmac",
      ]
    ) {
      ok(text.includes(`${key}\n`), `${key} in\n${text}`);
    }
    const fromFile = await parseCli(["-f", path]);
    ok(fromFile.kind === "options");
    equal(fromFile.options.command, "post");
    deepStrictEqual(withoutFiles(fromFile.options), withoutFiles(await optionsOf(flags)));
    // A file's keys are checked as the flags are.
    await rejects(
      optionsOf(["-f", "bad.yaml"], { "bad.yaml": "queue: q\npost: ftp://h/\n" }),
      new UsageError("--post must be an http:// or https:// URL, got 'ftp://h/'"),
    );
    await rejects(
      optionsOf(["-f", "bad.yaml"], { "bad.yaml": "queue: q\nexec: /bin/true\npost-health: /h\n" }),
      new UsageError("--post-health only applies with --post"),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
