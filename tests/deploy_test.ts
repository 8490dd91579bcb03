/**
 * Tests of the deployment recipes (`deploy/`, `Dockerfile`): each file parses, says
 * what it must (stop timeouts longer than the drain, non-root, tini as PID 1, the
 * KEDA trigger), the recipes agree with each other and with docs/production.md, and the IAM
 * policies name exactly the AWS calls `src/` makes: the actions are derived from its
 * `new XxxCommand(...)` calls, so a call added to the code without a policy change,
 * or an action added to a policy that the code never needs, fails here.
 *
 * Every check is a function returning a list of problems; besides the real files,
 * each is run on broken copies to show that it catches what it is meant to.
 * `systemd-analyze verify` and `cfn-lint` run when installed, and are skipped with a
 * logged reason when not.
 */
import { deepStrictEqual, ok } from "node:assert/strict";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseYaml, parseAllDocuments } from "yaml";
import { TARGETS } from "../scripts/build.ts";
import { parseCli } from "../src/cli.ts";
import { LISTEN_HOST, type Options, parseAddress, parseConfigText } from "../src/config.ts";
import { UsageError } from "../src/errors.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const read = (path: string) => Deno.readTextFileSync(join(ROOT, path));

/** Seconds a stop timeout must exceed the drain by: the last deletes after the jobs end. */
const SETTLE_MARGIN = 5;
/** What the image runs, and what systemd and supervisord run without tini. */
const BINARY = "/usr/local/bin/sqsrun";
const TINI = ["/usr/bin/tini", "--"];

type Json = Record<string, unknown>;

function isRecord(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Follows a path of keys and indexes; undefined when any step is missing. */
function at(value: unknown, ...path: (string | number)[]): unknown {
  let current = value;
  for (const key of path) {
    if (typeof key === "number") current = Array.isArray(current) ? current[key] : undefined;
    else current = isRecord(current) ? current[key] : undefined;
  }
  return current;
}

function list(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

function sorted(values: Iterable<string>): string[] {
  return [...new Set(values)].sort();
}

/** Problems of an expected set against a found one, naming what is missing or extra. */
function setProblems(what: string, found: Iterable<string>, expected: Iterable<string>): string[] {
  const have = new Set(found);
  const want = new Set(expected);
  const missing = [...want].filter((item) => !have.has(item)).sort();
  const extra = [...have].filter((item) => !want.has(item)).sort();
  return [
    ...(missing.length ? [`${what}: missing ${missing.join(", ")}`] : []),
    ...(extra.length ? [`${what}: not needed by the code: ${extra.join(", ")}`] : []),
  ];
}

/**
 * The drain a stop timeout must outlast: `--shutdown-timeout` for the running jobs,
 * then the kill sequence's `--kill-grace` before SIGKILL.
 */
function drainSeconds(options: Options): number {
  return options.shutdownTimeout + options.killGrace;
}

/** Options of a worker command line, with `-f` files from a map of path to text. */
async function workerOptions(
  argv: string[],
  files: Record<string, string> = {},
): Promise<Options> {
  const result = await parseCli(argv, {
    loadFile: (path) => {
      if (!(path in files)) throw new UsageError(`no file ${path} in this test`);
      return Promise.resolve(parseConfigText(files[path], path));
    },
  });
  if (result.kind !== "options") throw new Error(`expected options, got ${result.kind}`);
  return result.options;
}

/** The worker with every default: what the systemd and supervisord comments assume. */
const DEFAULT_WORKER = await workerOptions(["-q", "jobs", "--exec", "/bin/true"]);

// ---------------------------------------------------------------------------
// AWS calls in the code -> IAM actions

/** One `new XxxCommand(` of an AWS SDK client, where it is made. */
interface AwsCall {
  file: string;
  service: "sqs" | "s3";
  command: string;
}

/**
 * IAM actions of S3 commands: unlike SQS, S3 actions are not the operation names,
 * and a command may need more than one (a versioned read, a 404 for a missing key).
 * A command missing here fails the test until its actions are added.
 */
const S3_ACTIONS: Record<string, readonly string[]> = {
  // GetObjectVersion: the event names a version (versioned buckets). ListBucket: S3
  // answers a missing key with 404 (which sqsrun skips) instead of 403 (retried).
  GetObjectCommand: ["s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket"],
  HeadObjectCommand: ["s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket"],
  // DeleteObjectVersion: the delete names the version the job read.
  DeleteObjectCommand: ["s3:DeleteObject", "s3:DeleteObjectVersion"],
  PutObjectCommand: ["s3:PutObject"],
  ListObjectsV2Command: ["s3:ListBucket"],
};

/**
 * The IAM actions that authorize one command. SQS actions are the operation names,
 * and a batch call is authorized by its single action (`DeleteMessageBatch` needs
 * `sqs:DeleteMessage`).
 */
export function iamActions(call: Pick<AwsCall, "service" | "command">): string[] {
  const operation = call.command.replace(/Command$/, "");
  if (call.service === "sqs") return [`sqs:${operation.replace(/Batch$/, "")}`];
  const actions = S3_ACTIONS[call.command];
  if (!actions) throw new Error(`no IAM actions known for S3 ${call.command}: add them above`);
  return [...actions];
}

const SDK_MODULES: Record<string, AwsCall["service"]> = {
  "@aws-sdk/client-sqs": "sqs",
  "@aws-sdk/client-s3": "s3",
};

/**
 * Finds the AWS calls in one module's source: the `XxxCommand` names it imports from
 * an SDK client, and each `new Name(` of them. A command that is imported but never
 * constructed with `new` is a problem: the scan could not see how it is used.
 */
export function scanAwsCalls(
  file: string,
  source: string,
): { calls: AwsCall[]; problems: string[] } {
  const imported = new Map<string, { service: AwsCall["service"]; command: string }>();
  for (const match of source.matchAll(/import\s*(?:type\s*)?\{([^}]*)\}\s*from\s*"([^"]+)"/g)) {
    const service = SDK_MODULES[match[2]];
    if (!service) continue;
    for (const item of match[1].split(",")) {
      const words = item.trim().replace(/^type\s+/, "").split(/\s+as\s+/);
      const command = words[0]?.trim();
      const local = (words[1] ?? words[0])?.trim();
      if (command?.endsWith("Command") && local) imported.set(local, { service, command });
    }
  }
  const calls: AwsCall[] = [];
  const used = new Set<string>();
  for (const match of source.matchAll(/\bnew\s+([A-Za-z_$][\w$]*)\s*\(/g)) {
    const found = imported.get(match[1]);
    if (!found) continue;
    used.add(match[1]);
    calls.push({ file, ...found });
  }
  const problems = [...imported.keys()].filter((name) => !used.has(name)).map((name) =>
    `${file}: ${name} is imported but never constructed with new: the IAM scan cannot see its use`
  );
  return { calls, problems };
}

function sourceFiles(dir: string): string[] {
  const files: string[] = [];
  for (const entry of Deno.readDirSync(join(ROOT, dir))) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) files.push(...sourceFiles(path));
    else if (/\.(ts|js|mjs)$/.test(entry.name)) files.push(path);
  }
  return files.sort();
}

/** Every AWS call in `src/`. */
function codeCalls(): AwsCall[] {
  const calls: AwsCall[] = [];
  const problems: string[] = [];
  for (const file of sourceFiles("src")) {
    const scan = scanAwsCalls(file, read(file));
    calls.push(...scan.calls);
    problems.push(...scan.problems);
  }
  deepStrictEqual(problems, []);
  return calls;
}

/**
 * Which code runs in which mode. `src/aws.ts` is shared: the worker and the admin
 * commands both resolve `-q NAME` to a URL through it. A file with AWS calls in none
 * of these fails the test, so that new calls get a policy decision.
 */
const WORKER_PATH = [/^src\/worker\//, /^src\/sources\//, /^src\/aws\.ts$/];
const ADMIN_PATH = [/^src\/admin\.ts$/, /^src\/redrive\.ts$/, /^src\/aws\.ts$/];

function actionsOf(calls: AwsCall[], path: RegExp[], service?: AwsCall["service"]): string[] {
  return sorted(
    calls.filter((call) => path.some((re) => re.test(call.file)))
      .filter((call) => service === undefined || call.service === service)
      .flatMap(iamActions),
  );
}

/** What the policies must allow, derived from the code. */
interface PolicyExpectations {
  worker: string[];
  workerS3: string[];
  s3Delete: string[];
  admin: string[];
  all: string[];
}

function policyExpectations(calls: AwsCall[]): PolicyExpectations {
  return {
    worker: actionsOf(calls, WORKER_PATH, "sqs"),
    workerS3: actionsOf(calls, WORKER_PATH),
    s3Delete: sorted(
      calls.filter((call) => call.command === "DeleteObjectCommand").flatMap(iamActions),
    ),
    admin: actionsOf(calls, ADMIN_PATH),
    all: sorted(calls.flatMap(iamActions)),
  };
}

/** Actions that IAM cannot limit to a resource: only these may have `"Resource": "*"`. */
const RESOURCELESS_ACTIONS = new Set(["sqs:ListQueues"]);

interface Statement {
  sid: string;
  actions: string[];
  resources: string[];
}

/** Parses a policy document, reporting what is not a plain list of Allow statements. */
function policyStatements(
  name: string,
  text: string,
): { statements: Statement[]; problems: string[] } {
  const problems: string[] = [];
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (error) {
    return { statements: [], problems: [`${name}: not JSON: ${(error as Error).message}`] };
  }
  if (at(doc, "Version") !== "2012-10-17") problems.push(`${name}: Version must be 2012-10-17`);
  const raw = at(doc, "Statement");
  if (!Array.isArray(raw) || raw.length === 0) {
    return { statements: [], problems: [...problems, `${name}: no Statement list`] };
  }
  const statements: Statement[] = [];
  const sids = new Set<string>();
  raw.forEach((item, i) => {
    const where = `${name}: statement ${i}`;
    const sid = at(item, "Sid");
    if (typeof sid !== "string" || !/^[A-Za-z0-9]+$/.test(sid)) {
      problems.push(`${where}: needs a Sid (letters and digits) that says what it is for`);
    } else if (sids.has(sid)) problems.push(`${where}: Sid ${sid} repeats`);
    else sids.add(sid);
    if (at(item, "Effect") !== "Allow") problems.push(`${where}: Effect must be Allow`);
    for (const key of ["NotAction", "NotResource", "Principal", "NotPrincipal"]) {
      if (at(item, key) !== undefined) problems.push(`${where}: ${key} is not expected here`);
    }
    const asList = (value: unknown) => typeof value === "string" ? [value] : list(value);
    const actions = asList(at(item, "Action"));
    const resources = asList(at(item, "Resource"));
    if (actions.length === 0 || actions.some((a) => typeof a !== "string")) {
      problems.push(`${where}: Action must be a string or a list of strings`);
    }
    if (resources.length === 0 || resources.some((r) => typeof r !== "string")) {
      problems.push(`${where}: Resource must be a string or a list of strings`);
    }
    for (const action of actions.map(String)) {
      if (!/^(sqs|s3):[A-Za-z]+$/.test(action)) {
        problems.push(`${where}: '${action}' is not one plain sqs: or s3: action (no wildcards)`);
      }
    }
    const stringActions = actions.map(String);
    if (resources.includes("*") && stringActions.some((a) => !RESOURCELESS_ACTIONS.has(a))) {
      problems.push(`${where}: "Resource": "*" for actions that can be limited to a resource`);
    }
    statements.push({ sid: String(sid), actions: stringActions, resources: resources.map(String) });
  });
  return { statements, problems };
}

/** Checks one of the `deploy/iam/` policies against what the code calls. */
export function iamProblems(name: string, text: string, expect: PolicyExpectations): string[] {
  const { statements, problems } = policyStatements(name, text);
  const actions = sorted(statements.flatMap((s) => s.actions));
  problems.push(
    ...setProblems(`${name} (any code path)`, actions, expect.all).filter((p) =>
      p.includes("not needed")
    ),
  );
  switch (name) {
    case "worker.json":
      problems.push(...setProblems(name, actions, expect.worker));
      break;
    case "worker-s3.json": {
      problems.push(...setProblems(name, actions, expect.workerS3));
      // The --s3-delete actions stand alone, so the statement can be dropped whole.
      for (const statement of statements) {
        const deletes = statement.actions.filter((a) => expect.s3Delete.includes(a));
        const isDeleteStatement = /S3Delete/i.test(statement.sid);
        if (deletes.length > 0 && !isDeleteStatement) {
          problems.push(`${name}: ${deletes.join(", ")} outside the --s3-delete statement`);
        }
        if (isDeleteStatement) {
          problems.push(
            ...setProblems(`${name} ${statement.sid}`, statement.actions, expect.s3Delete),
          );
        }
      }
      if (!statements.some((s) => /S3Delete/i.test(s.sid))) {
        problems.push(`${name}: no statement whose Sid names S3Delete for --s3-delete`);
      }
      break;
    }
    case "admin.json":
      problems.push(...setProblems(name, actions, expect.admin));
      break;
    case "keda-operator.json":
      // KEDA only reads the queue depth; it must not be able to touch messages.
      problems.push(...setProblems(name, actions, ["sqs:GetQueueAttributes"]));
      break;
    default:
      problems.push(`${name}: a policy this test does not know: say what it must allow`);
  }
  return problems;
}

function iamFiles(): string[] {
  return [...Deno.readDirSync(join(ROOT, "deploy/iam"))]
    .filter((entry) => entry.isFile && entry.name.endsWith(".json"))
    .map((entry) => entry.name).sort();
}

Deno.test("the IAM scan finds the worker's and the admin commands' AWS calls", () => {
  const calls = codeCalls();
  const expect = policyExpectations(calls);
  // A scan that finds nothing would make every policy check vacuous.
  for (
    const action of [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueUrl",
      "s3:GetObject",
    ]
  ) {
    ok(expect.workerS3.includes(action), `worker path lacks ${action}: ${expect.workerS3}`);
  }
  ok(expect.admin.includes("sqs:CreateQueue"), `admin path: ${expect.admin}`);
  const unplaced = calls.filter((call) =>
    ![...WORKER_PATH, ...ADMIN_PATH].some((re) => re.test(call.file))
  );
  deepStrictEqual(unplaced, [], "AWS calls outside the worker and admin code: which policy?");
  deepStrictEqual(
    iamActions({ service: "sqs", command: "ChangeMessageVisibilityBatchCommand" }),
    ["sqs:ChangeMessageVisibility"],
  );
  deepStrictEqual(scanAwsCalls("x.ts", 'import { A as B, GetObjectCommand } from "x";').calls, []);
  deepStrictEqual(
    scanAwsCalls(
      "x.ts",
      'import {\n  type SQSClient,\n  SendMessageBatchCommand as Send,\n} from "@aws-sdk/client-sqs";\nnew Send({});',
    ),
    { calls: [{ file: "x.ts", service: "sqs", command: "SendMessageBatchCommand" }], problems: [] },
  );
  ok(
    scanAwsCalls("x.ts", 'import { PurgeQueueCommand } from "@aws-sdk/client-sqs";').problems
      .length === 1,
  );
});

Deno.test("every IAM policy names exactly the actions its mode calls", () => {
  const expect = policyExpectations(codeCalls());
  const names = iamFiles();
  deepStrictEqual(names, ["admin.json", "keda-operator.json", "worker-s3.json", "worker.json"]);
  for (const name of names) {
    deepStrictEqual(iamProblems(name, read(`deploy/iam/${name}`), expect), [], name);
  }
});

Deno.test("the IAM checks catch an extra action, a missing one, a wildcard, a misplaced delete", () => {
  const expect = policyExpectations(codeCalls());
  const worker = read("deploy/iam/worker.json");
  const s3 = read("deploy/iam/worker-s3.json");
  const mutations: [string, string][] = [
    ["worker.json", worker.replace('"sqs:DeleteMessage"', '"sqs:DeleteMessage", "sqs:PurgeQueue"')],
    ["worker.json", worker.replace('"sqs:ChangeMessageVisibility",', "")],
    ["worker.json", worker.replace('"sqs:DeleteMessage"', '"sqs:DeleteMessage", "s3:GetObject"')],
    ["worker.json", worker.replace('"sqs:ReceiveMessage"', '"sqs:Receive*"')],
    ["worker.json", worker.replace(/"arn:aws:sqs:[^"]*"/, '"*"')],
    ["worker.json", worker.replace('"Allow"', '"Deny"')],
    [
      "worker-s3.json",
      s3.replace('"s3:GetObjectVersion"', '"s3:GetObjectVersion", "s3:DeleteObject"'),
    ],
    ["worker-s3.json", s3.replace("OnlyWithS3Delete", "Delete")],
    [
      "admin.json",
      read("deploy/iam/admin.json").replace(
        '"sqs:SendMessage"',
        '"sqs:SendMessage", "sqs:TagQueue"',
      ),
    ],
    [
      "keda-operator.json",
      read("deploy/iam/keda-operator.json").replace(
        '"sqs:GetQueueAttributes"',
        '["sqs:GetQueueAttributes", "sqs:ReceiveMessage"]',
      ),
    ],
    ["worker.json", worker + "}"],
  ];
  for (const [name, text] of mutations) {
    ok(iamProblems(name, text, expect).length > 0, `not caught in ${name}:\n${text}`);
  }
});

// ---------------------------------------------------------------------------
// systemd

type Sections = Map<string, [string, string][]>;

/**
 * Parses an INI-like file: `[section]`, `key=value` (spaces around `=` allowed),
 * comment lines starting with one of `comment`. Any other line is a problem.
 */
function parseIni(text: string, comment: RegExp): { sections: Sections; problems: string[] } {
  const sections: Sections = new Map();
  const problems: string[] = [];
  let current: [string, string][] | undefined;
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (line === "" || comment.test(line)) return;
    const header = /^\[([^\]]+)\]$/.exec(line);
    if (header) {
      if (sections.has(header[1])) problems.push(`line ${i + 1}: section [${header[1]}] repeats`);
      current = [];
      sections.set(header[1], current);
      return;
    }
    const pair = /^([A-Za-z][\w.-]*)\s*=\s*(.*)$/.exec(line);
    if (!pair || !current) {
      problems.push(`line ${i + 1}: not a key=value in a section: ${line}`);
      return;
    }
    if (pair[2].endsWith("\\")) problems.push(`line ${i + 1}: continued lines are not expected`);
    current.push([pair[1], pair[2]]);
  });
  return { sections, problems };
}

function iniValue(sections: Sections, section: string, key: string): string | undefined {
  return sections.get(section)?.filter(([k]) => k === key).at(-1)?.[1];
}

/** Seconds of a systemd time span such as `180`, `180s`, `3min`, `3min 30s`. */
function systemdSeconds(text: string): number {
  const units: Record<string, number> = { "": 1, s: 1, sec: 1, m: 60, min: 60, h: 3600 };
  let total = 0;
  for (const part of text.trim().split(/\s+/)) {
    const match = /^(\d+)([a-z]*)$/.exec(part);
    if (!match || !(match[2] in units)) return NaN;
    total += Number(match[1]) * units[match[2]];
  }
  return total;
}

/** Checks `deploy/systemd/sqsrun.service` (without running systemd-analyze). */
export function systemdProblems(text: string, drain: number, cmd: string[]): string[] {
  const { sections, problems } = parseIni(text, /^[#;]/);
  const get = (key: string) => iniValue(sections, "Service", key);
  const want: Record<string, string> = {
    Type: "simple",
    // SIGTERM to sqsrun only, so that it drains; the default would signal every job.
    KillMode: "mixed",
    KillSignal: "SIGTERM",
    Restart: "on-failure",
    NoNewPrivileges: "yes",
    ProtectSystem: "strict",
  };
  for (const [key, value] of Object.entries(want)) {
    if (get(key) !== value) problems.push(`[Service] ${key}=${get(key)}, expected ${value}`);
  }
  const stop = systemdSeconds(get("TimeoutStopSec") ?? "");
  if (!(stop >= drain + SETTLE_MARGIN)) {
    problems.push(
      `TimeoutStopSec=${get("TimeoutStopSec")} is not longer than the drain (${drain} s)`,
    );
  }
  const user = get("User");
  if (!user || user === "root" || user === "0") {
    problems.push(`User=${user}: must be a non-root user`);
  }
  // V8's JIT needs writable+executable memory: this option would break sqsrun itself.
  if (get("MemoryDenyWriteExecute") === "yes") problems.push("MemoryDenyWriteExecute breaks V8");
  const exec = get("ExecStart")?.split(/\s+/) ?? [];
  if (exec.join(" ") !== [BINARY, ...cmd].join(" ")) {
    problems.push(
      `ExecStart=${exec.join(" ")}: expected the container's ${[BINARY, ...cmd].join(" ")}`,
    );
  }
  if (exec.includes("-d") || exec.includes("--daemon")) problems.push("ExecStart must not use -d");
  if (!sections.has("Install")) problems.push("no [Install] section");
  return problems;
}

/** Whether a program runs at all here; the reason when it does not. */
async function available(program: string, args: string[]): Promise<string | undefined> {
  try {
    const out = await new Deno.Command(program, { args, stdout: "null", stderr: "null" }).output();
    return out.success ? undefined : `${program} ${args.join(" ")} exited ${out.code}`;
  } catch (error) {
    return `${program} is not installed (${(error as Error).name})`;
  }
}

/**
 * Runs `systemd-analyze verify` on a unit's text; returns its complaints (it exits 0
 * even for unknown keys and bad values, so its output is what counts). Executables the
 * unit names that this machine lacks (sqsrun itself, before it is installed) are
 * replaced by a stub, so that everything else is still verified.
 */
async function systemdVerify(name: string, text: string): Promise<string[]> {
  const dir = await Deno.makeTempDir({ prefix: "sqsrun-unit-" });
  try {
    const stub = join(dir, "stub");
    await Deno.writeTextFile(stub, "#!/bin/sh\n", { mode: 0o755 });
    const patched = text.replace(/^(Exec\w+=[-@:+!]*)(\/\S+)/gm, (line, prefix, path) => {
      try {
        Deno.statSync(path);
        return line;
      } catch {
        return `${prefix}${stub}`;
      }
    });
    const unit = join(dir, name);
    await Deno.writeTextFile(unit, patched);
    const out = await new Deno.Command("systemd-analyze", {
      args: ["verify", unit],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const said = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
    const lines = said.split("\n").filter((line) => line.includes(name));
    return out.success ? lines : [`exit code ${out.code}`, ...said.split("\n")];
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const SYSTEMD_ANALYZE_MISSING = await available("systemd-analyze", ["--version"]);

/** The image's default command (CMD), which every recipe runs. */
function containerCmd(): string[] {
  return jsonArray(dockerInstructions(read("Dockerfile")).findLast((i) => i.keyword === "CMD"));
}

Deno.test("the systemd unit: drain-safe stop, restart on failure, hardening, the container's command", () => {
  const problems = systemdProblems(
    read("deploy/systemd/sqsrun.service"),
    drainSeconds(DEFAULT_WORKER),
    containerCmd(),
  );
  deepStrictEqual(problems, []);
});

Deno.test("the systemd checks catch a short stop timeout, KillMode, root, -d", () => {
  const unit = read("deploy/systemd/sqsrun.service");
  const drain = drainSeconds(DEFAULT_WORKER);
  const cmd = containerCmd();
  for (
    const text of [
      unit.replace(/^TimeoutStopSec=.*$/m, "TimeoutStopSec=90"),
      unit.replace(/^KillMode=.*$/m, "KillMode=control-group"),
      unit.replace(/^User=.*$/m, "User=root"),
      unit.replace(/^(ExecStart=.*)$/m, "$1 -d /run/sqsrun.pid"),
      unit.replace(/^Restart=.*$/m, "Restart=no"),
      unit.replace("[Service]", "[Service]\nnot a setting"),
    ]
  ) {
    ok(systemdProblems(text, drain, cmd).length > 0, text);
  }
});

Deno.test("systemd-analyze verify accepts the units (when installed)", async () => {
  if (SYSTEMD_ANALYZE_MISSING) {
    console.log(`skipped systemd-analyze verify: ${SYSTEMD_ANALYZE_MISSING}`);
    return;
  }
  for (
    const path of ["deploy/systemd/sqsrun.service", "deploy/ec2/sqsrun-scale-in-drain.service"]
  ) {
    deepStrictEqual(await systemdVerify(basename(path), read(path)), [], path);
  }
  // It exits 0 on these too: only its output tells.
  const unit = read("deploy/systemd/sqsrun.service");
  for (
    const broken of [
      unit.replace(/^KillMode=mixed$/m, "KillMode=mixd"),
      `${unit}\n[Service]\nTimeoutStopSecs=1\n`,
    ]
  ) {
    ok((await systemdVerify("sqsrun.service", broken)).length > 0, broken);
  }
});

// ---------------------------------------------------------------------------
// supervisord

/** Checks `deploy/supervisord/sqsrun.conf`. */
export function supervisordProblems(text: string, drain: number, cmd: string[]): string[] {
  // supervisord comments: whole lines starting with ; or # (inline ones are not used).
  const { sections, problems } = parseIni(text, /^[;#]/);
  const program = [...sections.keys()].find((name) => name.startsWith("program:"));
  if (!program) return [...problems, "no [program:...] section"];
  const get = (key: string) => iniValue(sections, program, key);
  if (get("command")?.split(/\s+/).join(" ") !== [BINARY, ...cmd].join(" ")) {
    problems.push(`command=${get("command")}: expected ${[BINARY, ...cmd].join(" ")}`);
  }
  const numprocs = Number(get("numprocs"));
  if (!(Number.isInteger(numprocs) && numprocs >= 2)) {
    problems.push(`numprocs=${get("numprocs")}: several workers per host, as sqsexec recommended`);
  }
  if (numprocs > 1 && !get("process_name")?.includes("%(process_num)")) {
    problems.push("process_name must contain %(process_num) when numprocs > 1");
  }
  if (get("stopsignal") !== "TERM") problems.push(`stopsignal=${get("stopsignal")}, expected TERM`);
  if (!(Number(get("stopwaitsecs")) >= drain + SETTLE_MARGIN)) {
    problems.push(`stopwaitsecs=${get("stopwaitsecs")} is not longer than the drain (${drain} s)`);
  }
  for (const key of ["stopasgroup", "killasgroup"]) {
    if (get(key) !== "true") problems.push(`${key}=${get(key)}, expected true`);
  }
  if (!["true", "unexpected"].includes(get("autorestart") ?? "")) {
    problems.push(`autorestart=${get("autorestart")}: a crash must be restarted`);
  }
  const user = get("user");
  if (!user || user === "root") problems.push(`user=${user}: must be a non-root user`);
  if (!/\bHOME=/.test(get("environment") ?? "")) {
    problems.push("environment must set HOME: user= does not, and the AWS SDK looks in ~/.aws");
  }
  if (/(^|\s)(-d|--daemon)(\s|$)/.test(get("command") ?? "")) {
    problems.push("command must not use -d");
  }
  return problems;
}

Deno.test("the supervisord program: numprocs, stop after the drain, process groups, HOME", () => {
  const text = read("deploy/supervisord/sqsrun.conf");
  const cmd = containerCmd();
  const drain = drainSeconds(DEFAULT_WORKER);
  deepStrictEqual(supervisordProblems(text, drain, cmd), []);
  for (
    const broken of [
      text.replace(/^stopwaitsecs=.*$/m, "stopwaitsecs=10"),
      text.replace(/^numprocs=.*$/m, "numprocs=1"),
      text.replace(/^killasgroup=.*$/m, "killasgroup=false"),
      text.replace(/^stopsignal=.*$/m, "stopsignal=KILL"),
      text.replace(/^environment=.*$/m, 'environment=AWS_REGION="us-east-1"'),
      text.replace("[program:sqsrun]", "[program:sqsrun]\nthis is not ini"),
    ]
  ) {
    ok(supervisordProblems(broken, drain, cmd).length > 0, broken);
  }
});

// ---------------------------------------------------------------------------
// Dockerfile

interface Instruction {
  keyword: string;
  args: string;
  line: number;
}

/** Splits a Dockerfile into instructions: comments dropped, `\` continuations joined. */
function dockerInstructions(text: string): Instruction[] {
  const instructions: Instruction[] = [];
  let pending: { text: string; line: number } | undefined;
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (line.startsWith("#") || (line === "" && !pending)) return;
    const continued = line.endsWith("\\");
    const part = continued ? line.slice(0, -1).trim() : line;
    pending = pending
      ? { text: `${pending.text} ${part}`, line: pending.line }
      : { text: part, line: i + 1 };
    if (continued) return;
    const match = /^(\w+)\s*(.*)$/.exec(pending.text);
    if (match) {
      instructions.push({ keyword: match[1].toUpperCase(), args: match[2], line: pending.line });
    }
    pending = undefined;
  });
  return instructions;
}

/** The JSON-array (exec) form of ENTRYPOINT/CMD; shell form is refused. */
function jsonArray(instruction: Instruction | undefined): string[] {
  if (!instruction) throw new Error("instruction missing");
  const value = JSON.parse(instruction.args);
  if (!Array.isArray(value) || value.some((item) => typeof item !== "string")) {
    throw new Error(`${instruction.keyword} must be a JSON array of strings`);
  }
  return value;
}

/** The Deno version the project builds and tests with: `.ci/run`'s DENO_VERSION. */
function projectDenoVersion(): string {
  const match = /^DENO_VERSION=([\d.]+)$/m.exec(read(".ci/run"));
  if (!match) throw new Error(".ci/run has no DENO_VERSION=");
  return match[1];
}

/** Checks the Dockerfile against the project's pins and the container command of docs/production.md. */
export function dockerfileProblems(text: string, readmeCommand: string[]): string[] {
  const problems: string[] = [];
  let instructions: Instruction[];
  try {
    instructions = dockerInstructions(text);
  } catch (error) {
    return [`cannot read: ${(error as Error).message}`];
  }
  const stages: Instruction[][] = [];
  for (const instruction of instructions) {
    if (instruction.keyword === "FROM") stages.push([]);
    stages.at(-1)?.push(instruction);
  }
  if (stages.length < 2) return ["expected a build stage and a runtime stage"];
  const build = stages[0];
  const runtime = stages.at(-1)!;
  const from = (stage: Instruction[]) =>
    stage[0].args.replace(/--platform=\S+\s+/, "").split(/\s+/)[0];
  const version = projectDenoVersion();
  if (from(build) !== `denoland/deno:${version}`) {
    problems.push(`build stage FROM ${from(build)}: expected denoland/deno:${version} (.ci/run)`);
  }
  const buildRun = build.filter((i) => i.keyword === "RUN").map((i) => i.args).join("\n");
  if (!/deno run -A scripts\/build\.ts --target/.test(buildRun)) {
    problems.push("the build stage must run deno run -A scripts/build.ts --target ...");
  }
  const targets = [...text.matchAll(/\b(?:x86_64|aarch64)-[a-z]+-linux-[a-z]+\b/g)].map((m) =>
    m[0]
  );
  if (targets.length === 0) problems.push("no linux-gnu target named");
  for (const target of targets) {
    if (!TARGETS.includes(target)) problems.push(`${target} is not a target of scripts/build.ts`);
  }
  if (/^denoland\/deno/.test(from(runtime))) {
    problems.push("the runtime stage must not be the Deno image: the binary needs no Deno");
  }
  const runtimeRun = runtime.filter((i) => i.keyword === "RUN").map((i) => i.args).join("\n");
  if (!/install\b.*\btini\b/.test(runtimeRun)) problems.push("the runtime stage must install tini");
  const user = runtime.findLast((i) => i.keyword === "USER")?.args.split(":")[0];
  if (!user || user === "root" || user === "0") problems.push(`USER ${user}: must be non-root`);
  const stopSignal = runtime.findLast((i) => i.keyword === "STOPSIGNAL")?.args;
  if (stopSignal !== "SIGTERM") problems.push(`STOPSIGNAL ${stopSignal}: expected SIGTERM`);
  let entrypoint: string[] = [];
  let cmd: string[] = [];
  try {
    entrypoint = jsonArray(runtime.findLast((i) => i.keyword === "ENTRYPOINT"));
    cmd = jsonArray(runtime.findLast((i) => i.keyword === "CMD"));
  } catch (error) {
    problems.push(`ENTRYPOINT/CMD: ${(error as Error).message}`);
  }
  if (entrypoint.join(" ") !== [...TINI, BINARY].join(" ")) {
    problems.push(`ENTRYPOINT ${JSON.stringify(entrypoint)}: expected tini -- ${BINARY}`);
  }
  if ([...entrypoint, ...cmd].join(" ") !== readmeCommand.join(" ")) {
    problems.push(
      `ENTRYPOINT + CMD run '${[...entrypoint, ...cmd].join(" ")}', docs/production.md says '${
        readmeCommand.join(" ")
      }'`,
    );
  }
  if (!/docker stop -t/.test(text)) {
    problems.push("say in a comment that docker stop -t must exceed the drain");
  }
  return problems;
}

/** `.dockerignore` patterns that re-include paths (`!path`), without trailing slashes. */
function dockerignoreAllowed(text: string): string[] {
  return text.split("\n").map((line) => line.trim())
    .filter((line) => line.startsWith("!")).map((line) => line.slice(1).replace(/\/+$/, ""));
}

/** The "## Containers" section of docs/production.md ("# Running in production"). */
function readmeContainers(page: string): string {
  ok(
    page.startsWith("# Running in production\n"),
    "docs/production.md is not 'Running in production'",
  );
  const section = page.indexOf("\n## Containers");
  ok(section >= 0, "docs/production.md has no '## Containers'");
  const body = page.slice(section + 1);
  const end = body.slice(1).search(/\n##? /);
  return end === -1 ? body : body.slice(0, end + 1);
}

/** The command line docs/production.md says the container runs: the code block that starts with tini. */
function readmeContainerCommand(readme: string): string[] {
  const section = readmeContainers(readme);
  for (const block of section.matchAll(/```[a-z]*\n([\s\S]*?)```/g)) {
    const first = block[1].trim().split("\n")[0];
    if (first.startsWith(`${TINI[0]} `)) return first.split(/\s+/);
  }
  throw new Error("docs/production.md's Containers has no code block starting with /usr/bin/tini");
}

Deno.test("the Dockerfile: pinned Deno, non-root, SIGTERM, tini, the manual's container command", () => {
  const readme = read("docs/production.md");
  const command = readmeContainerCommand(readme);
  const text = read("Dockerfile");
  deepStrictEqual(dockerfileProblems(text, command), []);
  // The manual's docker run gives docker stop enough time for the drain.
  const stopTimeout = /--stop-timeout[ =](\d+)/.exec(readmeContainers(readme));
  ok(stopTimeout, "the docker run of docs/production.md needs --stop-timeout");
  ok(Number(stopTimeout[1]) >= drainSeconds(DEFAULT_WORKER) + SETTLE_MARGIN, stopTimeout[0]);
  // What the build copies from the context is let in by the .dockerignore allow-list.
  const allowed = dockerignoreAllowed(read(".dockerignore"));
  ok(
    read(".dockerignore").split("\n").some((line) => line.trim() === "*"),
    ".dockerignore: allow-list",
  );
  const copies = dockerInstructions(text).filter((i) =>
    i.keyword === "COPY" && !i.args.startsWith("--from")
  );
  ok(copies.length > 0);
  for (const copy of copies) {
    for (const source of copy.args.split(/\s+/).slice(0, -1)) {
      const path = source.replace(/\/+$/, "");
      ok(
        allowed.some((pattern) => path === pattern || path.startsWith(`${pattern}/`)),
        `${source} (line ${copy.line}) is excluded by .dockerignore`,
      );
    }
  }
  for (
    const broken of [
      text.replace(/^USER .*$/m, "USER root"),
      text.replace(/^USER .*$/m, ""),
      text.replace(/^CMD .*$/m, 'CMD ["-f", "/etc/sqsrun/other.yaml"]'),
      text.replace(/^CMD .*$/m, "CMD -f /etc/sqsrun/sqsrun.yaml"),
      text.replace(/^ENTRYPOINT .*$/m, `ENTRYPOINT ["${BINARY}"]`),
      text.replace(/^STOPSIGNAL .*$/m, "STOPSIGNAL SIGKILL"),
      text.replace(/denoland\/deno:[\d.]+/, "denoland/deno:2.0.0"),
      text.replace(/x86_64-unknown-linux-gnu/g, "x86_64-unknown-linux-musl"),
    ]
  ) {
    ok(dockerfileProblems(broken, command).length > 0, broken);
  }
});

// ---------------------------------------------------------------------------
// Kubernetes

interface Manifest {
  file: string;
  kind: string;
  name: string;
  doc: Json;
}

/** Parses every YAML document of every file; YAML errors and warnings are problems. */
function parseManifests(
  files: Record<string, string>,
): { manifests: Manifest[]; problems: string[] } {
  const manifests: Manifest[] = [];
  const problems: string[] = [];
  for (const [file, text] of Object.entries(files)) {
    for (const document of parseAllDocuments(text)) {
      for (const issue of [...document.errors, ...document.warnings]) {
        problems.push(`${file}: ${issue.message.split("\n")[0]}`);
      }
      const doc = document.toJS();
      if (doc === null || doc === undefined) continue;
      if (!isRecord(doc)) {
        problems.push(`${file}: a document that is not a mapping`);
        continue;
      }
      const kind = at(doc, "kind");
      const name = at(doc, "metadata", "name");
      if (typeof at(doc, "apiVersion") !== "string" || typeof kind !== "string") {
        problems.push(`${file}: a document without apiVersion and kind`);
        continue;
      }
      if (kind === "Kustomization") {
        manifests.push({ file, kind, name: "", doc });
        continue;
      }
      if (typeof name !== "string") problems.push(`${file}: ${kind} without metadata.name`);
      manifests.push({ file, kind, name: String(name), doc });
    }
  }
  return { manifests, problems };
}

function kubernetesFiles(): Record<string, string> {
  const files: Record<string, string> = {};
  for (const entry of Deno.readDirSync(join(ROOT, "deploy/kubernetes"))) {
    if (entry.isFile && /\.ya?ml$/.test(entry.name)) {
      files[entry.name] = read(`deploy/kubernetes/${entry.name}`);
    }
  }
  return files;
}

/** Expands Kubernetes' `$(VAR)` references in args from the container's literal env. */
function expandArgs(args: string[], env: Record<string, string>): string[] {
  return args.map((arg) =>
    arg.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (whole, name) => env[name] ?? whole)
  );
}

/** The ARN of an AWS queue URL. */
function queueArn(url: string): string {
  const match = /^https:\/\/sqs\.([a-z0-9-]+)\.amazonaws\.com\/(\d{12})\/([\w.-]+)$/.exec(url);
  if (!match) throw new Error(`not an AWS queue URL: ${url}`);
  return `arn:aws:sqs:${match[1]}:${match[2]}:${match[3]}`;
}

/**
 * Checks the manifests as a whole: kinds, the Deployment's wiring (ConfigMap, service
 * account, probes on sqsrun's --http, security), the grace period against the drain
 * of the configuration sqsrun would actually read, and the KEDA trigger.
 */
export async function kubernetesProblems(
  files: Record<string, string>,
  image: { uid: string; cmd: string[] },
): Promise<string[]> {
  const { manifests, problems } = parseManifests(files);
  const of = (kind: string) => manifests.filter((m) => m.kind === kind);
  for (
    const kind of [
      "Deployment",
      "ConfigMap",
      "ServiceAccount",
      "ScaledObject",
      "TriggerAuthentication",
    ]
  ) {
    if (of(kind).length !== 1) problems.push(`expected one ${kind}, found ${of(kind).length}`);
  }
  const kustomization = of("Kustomization")[0];
  if (kustomization) {
    const listed = list(at(kustomization.doc, "resources")).map(String).sort();
    const others = Object.keys(files).filter((file) => file !== kustomization.file).sort();
    if (listed.join() !== others.join()) {
      problems.push(`kustomization lists ${listed}, not ${others}`);
    }
  }
  if (problems.length > 0) return problems;

  const deployment = of("Deployment")[0];
  const configMap = of("ConfigMap")[0];
  const account = of("ServiceAccount")[0];
  const scaled = of("ScaledObject")[0];
  const pod = at(deployment.doc, "spec", "template", "spec");
  const containers = list(at(pod, "containers"));
  if (containers.length !== 1) return [...problems, "expected one container"];
  const container = containers[0];

  if (at(deployment.doc, "spec", "replicas") !== undefined) {
    problems.push("Deployment sets replicas: the autoscaler owns the count");
  }
  if (at(pod, "serviceAccountName") !== account.name) {
    problems.push(`serviceAccountName is not the ServiceAccount ${account.name}`);
  }
  const roleArn = at(account.doc, "metadata", "annotations", "eks.amazonaws.com/role-arn");
  if (typeof roleArn !== "string" || !/^arn:aws:iam::\d{12}:role\/.+/.test(roleArn)) {
    problems.push("the ServiceAccount needs an eks.amazonaws.com/role-arn annotation (IRSA)");
  }

  // Security: the image's non-root user, nothing writable or escalatable.
  if (at(pod, "securityContext", "runAsNonRoot") !== true) {
    problems.push("runAsNonRoot must be true");
  }
  if (String(at(pod, "securityContext", "runAsUser")) !== image.uid) {
    problems.push(
      `runAsUser ${at(pod, "securityContext", "runAsUser")} is not the image's ${image.uid}`,
    );
  }
  const security = at(container, "securityContext");
  if (at(security, "readOnlyRootFilesystem") !== true) problems.push("readOnlyRootFilesystem");
  if (at(security, "allowPrivilegeEscalation") !== false) problems.push("allowPrivilegeEscalation");
  if (!list(at(security, "capabilities", "drop")).includes("ALL")) {
    problems.push("drop ALL capabilities");
  }
  const limits = at(container, "resources", "limits", "memory");
  const requests = at(container, "resources", "requests", "memory");
  if (!limits || !requests) problems.push("memory requests and limits are needed");

  // The command: the image's entrypoint (tini) stays, the args are sqsrun's.
  if (at(container, "command") !== undefined) {
    problems.push("the container sets command: tini would no longer be PID 1");
  }
  const env: Record<string, string> = {};
  for (const item of list(at(container, "env"))) {
    const name = at(item, "name");
    const value = at(item, "value");
    if (typeof name === "string" && typeof value === "string") env[name] = value;
  }
  const args = list(at(container, "args")).map(String);
  if (args.slice(0, image.cmd.length).join(" ") !== image.cmd.join(" ")) {
    problems.push(`args ${JSON.stringify(args)} do not start with the image's CMD ${image.cmd}`);
  }
  if (!env.AWS_REGION) problems.push("env AWS_REGION is needed");

  // The configuration sqsrun reads: the -f path through the volume mounts to the ConfigMap.
  const configPath = args[args.indexOf("-f") + 1] ?? "";
  const mount = list(at(container, "volumeMounts")).find((m) =>
    at(m, "mountPath") === dirname(configPath)
  );
  const volume = list(at(pod, "volumes")).find((v) => at(v, "name") === at(mount, "name"));
  if (at(volume, "configMap", "name") !== configMap.name) {
    return [...problems, `${configPath} is not mounted from the ConfigMap ${configMap.name}`];
  }
  if (at(mount, "readOnly") !== true) problems.push("mount the configuration read-only");
  const configText = at(configMap.doc, "data", basename(configPath));
  if (typeof configText !== "string") {
    return [...problems, `the ConfigMap has no ${basename(configPath)}`];
  }
  let options: Options;
  try {
    options = await workerOptions(expandArgs(args, env), { [configPath]: configText });
  } catch (error) {
    return [...problems, `sqsrun would refuse this: ${(error as Error).message}`];
  }
  if (options.command !== "exec" && options.command !== "run") {
    problems.push("not a worker command");
  }
  const tmp = list(at(container, "volumeMounts")).find((m) => at(m, "mountPath") === "/tmp");
  const tmpVolume = list(at(pod, "volumes")).find((v) => at(v, "name") === at(tmp, "name"));
  if (at(tmpVolume, "emptyDir") === undefined) {
    problems.push("a read-only root needs an emptyDir on /tmp");
  }

  const grace = Number(at(pod, "terminationGracePeriodSeconds"));
  const drain = drainSeconds(options);
  if (!(grace >= drain + SETTLE_MARGIN)) {
    problems.push(
      `terminationGracePeriodSeconds ${grace} is not longer than the drain (${drain} s)`,
    );
  }

  // Probes: /healthz of sqsrun's --http, reachable from the kubelet.
  if (!options.http) {
    problems.push("the probes need sqsrun's --http (http: in the configuration)");
  } else {
    const address = parseAddress(options.http, "--http", LISTEN_HOST);
    if (!["0.0.0.0", "::"].includes(address.hostname)) {
      problems.push(
        `--http ${options.http} listens on ${address.hostname}: the kubelet cannot reach it`,
      );
    }
    const ports = new Map<string, number>();
    for (const port of list(at(container, "ports"))) {
      ports.set(String(at(port, "name")), Number(at(port, "containerPort")));
    }
    for (const probe of ["readinessProbe", "livenessProbe"]) {
      const get = at(container, probe, "httpGet");
      const port = at(get, "port");
      const number = typeof port === "number" ? port : ports.get(String(port));
      if (at(get, "path") !== "/healthz" || number !== address.port) {
        problems.push(`${probe} must GET /healthz on port ${address.port}`);
      }
    }
  }

  // KEDA: the queue sqsrun works on, one pod per `concurrency` messages.
  if (at(scaled.doc, "spec", "scaleTargetRef", "name") !== deployment.name) {
    problems.push("the ScaledObject does not target the Deployment");
  }
  const triggers = list(at(scaled.doc, "spec", "triggers"));
  const trigger = triggers.find((t) => at(t, "type") === "aws-sqs-queue");
  if (!trigger) return [...problems, "no aws-sqs-queue trigger"];
  const metadata = at(trigger, "metadata");
  if (!isRecord(metadata)) return [...problems, "the trigger has no metadata"];
  for (const [key, value] of Object.entries(metadata)) {
    // KEDA's CRD takes strings only: `queueLength: 10` would be refused by the API server.
    if (typeof value !== "string") problems.push(`trigger metadata ${key} must be a string`);
  }
  const queueUrl = typeof metadata.queueURLFromEnv === "string"
    ? env[metadata.queueURLFromEnv]
    : metadata.queueURL;
  if (queueUrl === undefined || queueUrl !== options.queue) {
    problems.push(`the trigger's queue (${queueUrl}) is not sqsrun's -q (${options.queue})`);
  }
  if (metadata.awsRegion !== env.AWS_REGION) {
    problems.push("the trigger's awsRegion is not AWS_REGION");
  }
  if (metadata.queueLength !== String(options.concurrency)) {
    problems.push(
      `queueLength ${metadata.queueLength} is not the pods' concurrency ${options.concurrency}`,
    );
  }
  if (metadata.scaleOnInFlight === "false") {
    problems.push("scaleOnInFlight: busy pods would look idle");
  }
  const auth = at(trigger, "authenticationRef", "name");
  const triggerAuth = of("TriggerAuthentication").find((m) => m.name === auth);
  if (auth === undefined ? metadata.identityOwner !== "operator" : !triggerAuth) {
    problems.push("the trigger needs a TriggerAuthentication or identityOwner: operator");
  }
  if (triggerAuth && at(triggerAuth.doc, "spec", "podIdentity", "provider") !== "aws") {
    problems.push("the TriggerAuthentication should use podIdentity provider aws");
  }
  return problems;
}

function imageFacts(): { uid: string; cmd: string[] } {
  const instructions = dockerInstructions(read("Dockerfile"));
  const uid = instructions.findLast((i) => i.keyword === "USER")?.args.split(":")[0] ?? "";
  return { uid, cmd: containerCmd() };
}

Deno.test("the Kubernetes manifests parse and fit together: grace > drain, probes, KEDA", async () => {
  const files = kubernetesFiles();
  deepStrictEqual(await kubernetesProblems(files, imageFacts()), []);
  // The IAM examples are for the same queue as the Deployment.
  const deployment = parseManifests(files).manifests.find((m) => m.kind === "Deployment")!;
  const env = list(at(deployment.doc, "spec", "template", "spec", "containers", 0, "env"));
  const url = String(at(env.find((e) => at(e, "name") === "SQS_QUEUE_URL"), "value"));
  for (const name of ["worker.json", "keda-operator.json"]) {
    const statement = at(JSON.parse(read(`deploy/iam/${name}`)), "Statement", 0);
    deepStrictEqual(at(statement, "Resource"), queueArn(url), name);
  }
});

/**
 * Checks the `--post` sidecar pod (deploy/kubernetes/post-sidecar/): the app is a
 * native sidecar that starts first and stops last, sqsrun would accept its
 * configuration as a `--post` worker aimed at the app's port on the pod's loopback,
 * waits for the same health path the app's startup probe checks, and drains within
 * the grace period.
 */
export async function postSidecarProblems(
  files: Record<string, string>,
  image: { uid: string; cmd: string[] },
): Promise<string[]> {
  const { manifests, problems } = parseManifests(files);
  const of = (kind: string) => manifests.filter((m) => m.kind === kind);
  for (const kind of ["Deployment", "ConfigMap", "Kustomization"]) {
    if (of(kind).length !== 1) problems.push(`expected one ${kind}, found ${of(kind).length}`);
  }
  if (problems.length > 0) return problems;
  const kustomization = of("Kustomization")[0];
  const listed = list(at(kustomization.doc, "resources")).map(String).sort();
  const others = Object.keys(files).filter((file) => file !== kustomization.file).sort();
  if (listed.join() !== others.join()) {
    problems.push(`kustomization lists ${listed}, not ${others}`);
  }
  const pod = at(of("Deployment")[0].doc, "spec", "template", "spec");
  const apps = list(at(pod, "initContainers"));
  const containers = list(at(pod, "containers"));
  if (apps.length !== 1 || containers.length !== 1) {
    return [
      ...problems,
      "expected the app as the one init container and sqsrun as the one container",
    ];
  }
  const [app] = apps;
  const [sqsrun] = containers;
  if (at(app, "restartPolicy") !== "Always") {
    problems.push(
      "the app must be a native sidecar (restartPolicy: Always): it stops after sqsrun",
    );
  }
  if (at(sqsrun, "command") !== undefined) {
    problems.push("the sqsrun container sets command: tini would no longer be PID 1");
  }
  if (String(at(pod, "securityContext", "runAsUser")) !== image.uid) {
    problems.push("runAsUser is not the image's user");
  }
  const env: Record<string, string> = {};
  for (const item of list(at(sqsrun, "env"))) {
    const name = at(item, "name");
    const value = at(item, "value");
    if (typeof name === "string" && typeof value === "string") env[name] = value;
  }
  const args = expandArgs(list(at(sqsrun, "args")).map(String), env);
  const configPath = args[args.indexOf("-f") + 1] ?? "";
  const configText = at(of("ConfigMap")[0].doc, "data", basename(configPath));
  if (typeof configText !== "string") return [...problems, `the ConfigMap has no ${configPath}`];
  let options: Options;
  try {
    options = await workerOptions(args, { [configPath]: configText });
  } catch (error) {
    return [...problems, `sqsrun would refuse this: ${(error as Error).message}`];
  }
  if (options.command !== "post" || !options.post) return [...problems, "not a --post worker"];
  const target = new URL(options.post);
  const appPort = list(at(app, "ports")).map((port) => Number(at(port, "containerPort")));
  if (!["127.0.0.1", "localhost"].includes(target.hostname)) {
    problems.push(`--post ${options.post} is not the pod's loopback`);
  }
  if (!appPort.includes(Number(target.port || 80))) {
    problems.push(`--post ${options.post} is not a port of the app (${appPort})`);
  }
  const probe = at(app, "startupProbe", "httpGet", "path");
  if (options.postHealth === undefined || options.postHealth !== probe) {
    problems.push(`post-health ${options.postHealth} is not the app's startup probe path ${probe}`);
  }
  const grace = Number(at(pod, "terminationGracePeriodSeconds"));
  if (!(grace >= drainSeconds(options) + SETTLE_MARGIN)) {
    problems.push(`terminationGracePeriodSeconds ${grace} is not longer than the drain`);
  }
  return problems;
}

function postSidecarFiles(): Record<string, string> {
  const files: Record<string, string> = {};
  for (const entry of Deno.readDirSync(join(ROOT, "deploy/kubernetes/post-sidecar"))) {
    if (entry.isFile && /\.ya?ml$/.test(entry.name)) {
      files[entry.name] = read(`deploy/kubernetes/post-sidecar/${entry.name}`);
    }
  }
  return files;
}

Deno.test("the --post sidecar pod: the app first and last, sqsrun on its loopback, health, grace > drain", async () => {
  const files = postSidecarFiles();
  deepStrictEqual(await postSidecarProblems(files, imageFacts()), []);
  const swap = (file: string, from: string | RegExp, to: string) => ({
    ...files,
    [file]: files[file].replace(from, to),
  });
  for (
    const broken of [
      swap("deployment.yaml", / {10}restartPolicy: Always/, "          restartPolicy: OnFailure"),
      swap(
        "deployment.yaml",
        /terminationGracePeriodSeconds: \d+/,
        "terminationGracePeriodSeconds: 60",
      ),
      swap("configmap.yaml", "post: http://127.0.0.1:8080/", "post: http://127.0.0.1:8081/"),
      swap("configmap.yaml", "post-health: /health", "post-health: /ready"),
      swap("configmap.yaml", "post: http://127.0.0.1:8080/", "exec: /bin/true"),
    ]
  ) {
    ok(
      (await postSidecarProblems(broken, imageFacts())).length > 0,
      JSON.stringify(broken, null, 1),
    );
  }
});

Deno.test("the Docker Compose --post example: sqsrun accepts it, aims at the app, drains in time", async () => {
  const compose = parseYaml(read("deploy/compose/docker-compose.yaml")) as Json;
  const sqsrun = at(compose, "services", "sqsrun");
  const options = await workerOptions(list(at(sqsrun, "command")).map(String));
  deepStrictEqual(options.command, "post");
  const target = new URL(options.post!);
  ok(isRecord(at(compose, "services", target.hostname)), `--post names service ${target.hostname}`);
  deepStrictEqual(options.postHealth, "/health");
  deepStrictEqual(at(sqsrun, "depends_on", target.hostname, "condition"), "service_healthy");
  const grace = Number(/^(\d+)s$/.exec(String(at(sqsrun, "stop_grace_period")))?.[1]);
  ok(grace >= drainSeconds(options) + SETTLE_MARGIN, `stop_grace_period ${grace} s`);
});

Deno.test("the Kubernetes checks catch a short grace period, a command, numbers for KEDA, root", async () => {
  const files = kubernetesFiles();
  const image = imageFacts();
  const swap = (file: string, from: RegExp | string, to: string) => {
    ok(
      typeof from === "string" ? files[file].includes(from) : from.test(files[file]),
      `${from} not in ${file}`,
    );
    return { ...files, [file]: files[file].replace(from, to) };
  };
  for (
    const broken of [
      swap(
        "deployment.yaml",
        /terminationGracePeriodSeconds: \d+/,
        "terminationGracePeriodSeconds: 30",
      ),
      swap("configmap.yaml", /shutdown-timeout: \d+/, "shutdown-timeout: 600"),
      swap("configmap.yaml", /http: .*/, 'http: "9090"'),
      swap("configmap.yaml", /concurrency: \d+/, "concurrency: 4"),
      swap("configmap.yaml", /concurrency: \d+/, "concurency: 10"),
      swap("deployment.yaml", "args: [", 'command: ["/usr/local/bin/sqsrun"]\n          args: ['),
      swap("deployment.yaml", /runAsNonRoot: true/, "runAsNonRoot: false"),
      swap("deployment.yaml", /readOnlyRootFilesystem: true/, "readOnlyRootFilesystem: false"),
      swap("deployment.yaml", /path: \/healthz/, "path: /metrics"),
      swap("deployment.yaml", "revisionHistoryLimit", "replicas: 3\n  revisionHistoryLimit"),
      swap("scaledobject.yaml", /queueLength: "\d+"/, "queueLength: 10"),
      swap("scaledobject.yaml", /type: aws-sqs-queue/, "type: aws-sqs"),
      swap("scaledobject.yaml", /awsRegion: \S+/, "awsRegion: us-east-1"),
      swap("scaledobject.yaml", /queueURLFromEnv: \S+/, "queueURLFromEnv: QUEUE"),
      swap("serviceaccount.yaml", /eks\.amazonaws\.com\/role-arn: .*/, "team: jobs"),
      swap("kustomization.yaml", / {2}- scaledobject\.yaml\n/, ""),
      swap("deployment.yaml", "kind: Deployment", "kind: Deployment\n  bad: [unclosed"),
    ]
  ) {
    ok((await kubernetesProblems(broken, image)).length > 0, JSON.stringify(broken, null, 1));
  }
});

// ---------------------------------------------------------------------------
// EC2 Auto Scaling (CloudFormation)

/** Checks the Auto Scaling template: backlog-per-instance metric math, a drain hook. */
export function asgProblems(text: string, stopTimeout: number): string[] {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (error) {
    return [`not YAML: ${(error as Error).message.split("\n")[0]}`];
  }
  const problems: string[] = [];
  const resources = Object.values(
    isRecord(at(doc, "Resources")) ? at(doc, "Resources") as Json : {},
  );
  const policy = resources.find((r) => at(r, "Type") === "AWS::AutoScaling::ScalingPolicy");
  if (at(policy, "Properties", "PolicyType") !== "TargetTrackingScaling") {
    problems.push("expected a TargetTrackingScaling AWS::AutoScaling::ScalingPolicy");
  }
  const metrics = list(
    at(
      policy,
      "Properties",
      "TargetTrackingConfiguration",
      "CustomizedMetricSpecification",
      "Metrics",
    ),
  );
  const idOf = (name: string) =>
    at(metrics.find((m) => at(m, "MetricStat", "Metric", "MetricName") === name), "Id");
  const visible = idOf("ApproximateNumberOfMessagesVisible");
  const instances = idOf("GroupInServiceInstances");
  const returned = metrics.filter((m) => at(m, "ReturnData") === true);
  const expression = String(at(returned[0], "Expression"));
  if (
    !visible || !instances || returned.length !== 1 ||
    !expression.includes(`${visible} / ${instances}`)
  ) {
    problems.push(
      "the tracked metric must be ApproximateNumberOfMessagesVisible / GroupInServiceInstances",
    );
  }
  const hook = resources.find((r) => at(r, "Type") === "AWS::AutoScaling::LifecycleHook");
  if (at(hook, "Properties", "LifecycleTransition") !== "autoscaling:EC2_INSTANCE_TERMINATING") {
    problems.push("expected a termination lifecycle hook (the drain on scale-in)");
  }
  const heartbeat = at(hook, "Properties", "HeartbeatTimeout");
  const ref = at(heartbeat, "Ref");
  const seconds = Number(
    typeof ref === "string" ? at(doc, "Parameters", ref, "Default") : heartbeat,
  );
  if (!(seconds > stopTimeout)) {
    problems.push(
      `the hook's HeartbeatTimeout ${seconds} must outlast TimeoutStopSec ${stopTimeout}`,
    );
  }
  return problems;
}

const CFN_LINT_MISSING = await available("cfn-lint", ["--version"]);

Deno.test("the EC2 Auto Scaling template: backlog per instance, a hook longer than the unit's stop", async () => {
  const path = "deploy/ec2/asg-target-tracking.yaml";
  const text = read(path);
  const unit = parseIni(read("deploy/systemd/sqsrun.service"), /^[#;]/).sections;
  const stop = systemdSeconds(iniValue(unit, "Service", "TimeoutStopSec") ?? "");
  deepStrictEqual(asgProblems(text, stop), []);
  for (
    const broken of [
      text.replace("TargetTrackingScaling", "StepScaling"),
      text.replace("Expression: visible / instances", "Expression: visible"),
      text.replace(/Default: 240/, "Default: 60"),
      text.replace("EC2_INSTANCE_TERMINATING", "EC2_INSTANCE_LAUNCHING"),
    ]
  ) {
    ok(asgProblems(broken, stop).length > 0, broken);
  }
  if (CFN_LINT_MISSING) {
    console.log(`skipped cfn-lint: ${CFN_LINT_MISSING}`);
    return;
  }
  const lint = await new Deno.Command("cfn-lint", { args: [join(ROOT, path)] }).output();
  const said = new TextDecoder().decode(lint.stdout) + new TextDecoder().decode(lint.stderr);
  ok(lint.success, `cfn-lint ${path}:\n${said}`);
});
