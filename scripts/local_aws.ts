/**
 * Real local AWS endpoints for tests, demos and benchmarks: moto (SQS and S3,
 * Python) and ElasticMQ (SQS, JVM), installed into the project's `.cache/` and
 * run on free loopback ports.
 *
 * ```sh
 * deno run -A scripts/local_aws.ts install   # venv with moto, awscli, flask; ElasticMQ jars (idempotent)
 * deno run -A scripts/local_aws.ts start     # start both, write .cache/local_aws/state.json
 * deno run -A scripts/local_aws.ts status    # print the state and whether each server answers
 * deno run -A scripts/local_aws.ts env       # `export SQSRUN_TEST_... AWS_...` lines for `eval`
 * deno run -A scripts/local_aws.ts stop      # stop exactly the processes `start` started
 * ```
 *
 * Other scripts use {@linkcode startLocalAws} and {@linkcode stopLocalAws}.
 * Servers are started detached (their own session, output to a log file), so
 * they outlive the process that started them; only their pids, kept in the
 * state file, are ever signalled, and only after checking that each pid still
 * runs the command we started (pids get reused).
 *
 * @module
 */
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root (the folder above `scripts/`). */
export const PROJECT_ROOT: string = resolve(dirname(fileURLToPath(import.meta.url)), "..");
/** The project's git-ignored cache folder. */
export const CACHE_DIR: string = join(PROJECT_ROOT, ".cache");
/** Where `start` keeps its state file, logs and ElasticMQ config by default. */
export const DEFAULT_STATE_DIR: string = join(CACHE_DIR, "local_aws");

/** Pinned so every machine tests against the same emulator; these install from PyPI here. */
const PIP_REQUIREMENTS = ["moto[server]==5.2.1", "awscli==1.45.11"];
const VENV_DIR = join(CACHE_DIR, "venv");
const VENV_MARKER = join(VENV_DIR, ".sqsrun_installed");
/**
 * Pinned like the requirements, installed into the same venv after it: Flask, the web
 * app of tests/post_test.ts written the Beanstalk way. Kept apart, with a marker of its
 * own, so that adding one never changes the venv's marker: checkouts of other ages that
 * share `.cache/` (worktrees) still find the venv as they expect, and none rebuilds it.
 */
const PIP_EXTRAS = ["flask==3.1.3"];
const EXTRAS_MARKER = join(VENV_DIR, ".sqsrun_extras_installed");
const ELASTICMQ_POM = join(PROJECT_ROOT, "scripts", "elasticmq", "pom.xml");
const ELASTICMQ_DIR = join(CACHE_DIR, "elasticmq");
const ELASTICMQ_CLASSPATH = join(ELASTICMQ_DIR, "classpath.txt");
const ELASTICMQ_MARKER = join(ELASTICMQ_DIR, ".sqsrun_installed");
const M2_REPO = join(CACHE_DIR, "m2");
const ELASTICMQ_MAIN = "org.elasticmq.server.Main";

/** The two emulators. */
export type ServerName = "moto" | "elasticmq";

/** The names of both emulators, in start order. */
export const SERVER_NAMES: readonly ServerName[] = ["moto", "elasticmq"];

/** One running (or stopped) emulator. */
export interface ServerState {
  /** Pid of the server process; `null` while stopped with {@linkcode stopServer}. */
  pid: number | null;
  /** Endpoint URL, e.g. `http://127.0.0.1:40123`. */
  url: string;
  /** Loopback port; kept across {@linkcode restartServer}. */
  port: number;
  /** Server output (stdout and stderr). */
  log: string;
}

/** What `start` wrote to the state file. */
export interface LocalAwsState {
  /** moto: SQS, S3 and more. */
  moto: ServerState;
  /** ElasticMQ: SQS only, closer to AWS in its limits and FIFO behaviour. */
  elasticmq: ServerState;
  /** The venv's `aws` (AWS CLI v1). */
  awsCli: string;
  /** Absolute path of the JSON file this state is kept in. */
  stateFile: string;
}

/** Paths of the installed tools. */
export interface Installation {
  /** The venv's Python. */
  python: string;
  /** The venv's `moto_server`. */
  motoServer: string;
  /** The venv's `aws`. */
  awsCli: string;
  /** File holding ElasticMQ's Java classpath (one `:`-separated line). */
  elasticmqClasspath: string;
}

/** Options shared by the functions that may install or start things. */
export interface LocalAwsOptions {
  /** Progress messages; default: `local-aws: ...` on stderr. */
  log?: (message: string) => void;
  /**
   * The emulators to install and start; default both. The demo needs only moto (Python),
   * so a machine without Java and Maven can run it.
   */
  servers?: readonly ServerName[];
}

/** Options for {@linkcode startLocalAws}. */
export interface StartOptions extends LocalAwsOptions {
  /** Folder for the state file, logs and config; default `.cache/local_aws`. */
  stateDir?: string;
  /** How long each server may take to answer, in ms; default 60 000. */
  timeoutMs?: number;
}

/** Options for {@linkcode stopServer} and {@linkcode stopLocalAws}. */
export interface StopOptions {
  /** How long to wait after SIGTERM before SIGKILL, in ms; default 5 000. */
  graceMs?: number;
}

const defaultLog = (message: string) => console.error(`local-aws: ${message}`);

/** Returns the paths the installation uses, whether or not it is installed yet. */
export function installationPaths(): Installation {
  return {
    python: join(VENV_DIR, "bin", "python"),
    motoServer: join(VENV_DIR, "bin", "moto_server"),
    awsCli: join(VENV_DIR, "bin", "aws"),
    elasticmqClasspath: ELASTICMQ_CLASSPATH,
  };
}

/**
 * Installs moto and the AWS CLI into the venv `.cache/venv`, and ElasticMQ's jars
 * into `.cache/m2` (through Maven, with `scripts/elasticmq/pom.xml`). Steps already
 * done are skipped, so a second call takes well under a second. Needs `python3`
 * (with venv support), `mvn` and `java` on PATH.
 */
export async function installLocalAws(options: LocalAwsOptions = {}): Promise<Installation> {
  const log = options.log ?? defaultLog;
  const paths = installationPaths();
  await installVenv(paths, log);
  await installExtras(paths, log);
  if ((options.servers ?? SERVER_NAMES).includes("elasticmq")) await installElasticMq(log);
  return paths;
}

async function installVenv(paths: Installation, log: (message: string) => void): Promise<void> {
  const wanted = PIP_REQUIREMENTS.join("\n");
  if (
    readTextOrNull(VENV_MARKER) === wanted && exists(paths.motoServer) &&
    exists(paths.awsCli) && await succeeds(paths.python, ["-c", "pass"])
  ) {
    log(`moto and awscli already installed in ${VENV_DIR}`);
    return;
  }
  // A venv whose Python went away (or a half-finished install) is rebuilt from scratch.
  await Deno.remove(VENV_DIR, { recursive: true }).catch(ignoreNotFound);
  log(`creating ${VENV_DIR} and installing ${PIP_REQUIREMENTS.join(" ")} (about a minute)`);
  await run("python3", ["-m", "venv", VENV_DIR], {
    hint: "python3 needs venv support (Debian: apt-get install python3-venv)",
  });
  await run(paths.python, [
    "-m",
    "pip",
    "install",
    "--quiet",
    "--disable-pip-version-check",
    ...PIP_REQUIREMENTS,
  ]);
  // Written last: its presence means every step above finished.
  await Deno.writeTextFile(VENV_MARKER, wanted);
}

/** Installs {@linkcode PIP_EXTRAS} into the venv, unless its own marker says they are there. */
async function installExtras(paths: Installation, log: (message: string) => void): Promise<void> {
  const wanted = PIP_EXTRAS.join("\n");
  if (readTextOrNull(EXTRAS_MARKER) === wanted) {
    log(`${PIP_EXTRAS.join(" ")} already installed in ${VENV_DIR}`);
    return;
  }
  log(`installing ${PIP_EXTRAS.join(" ")} into ${VENV_DIR}`);
  await run(paths.python, [
    "-m",
    "pip",
    "install",
    "--quiet",
    "--disable-pip-version-check",
    ...PIP_EXTRAS,
  ]);
  await Deno.writeTextFile(EXTRAS_MARKER, wanted);
}

async function installElasticMq(log: (message: string) => void): Promise<void> {
  const pom = await Deno.readTextFile(ELASTICMQ_POM);
  const classpath = readTextOrNull(ELASTICMQ_CLASSPATH);
  if (
    readTextOrNull(ELASTICMQ_MARKER) === pom && classpath !== null &&
    classpath.trim().split(":").every(exists)
  ) {
    log(`ElasticMQ already installed in ${M2_REPO}`);
    return;
  }
  log(`resolving ElasticMQ with Maven into ${M2_REPO}`);
  await Deno.mkdir(ELASTICMQ_DIR, { recursive: true });
  await Deno.remove(ELASTICMQ_MARKER).catch(ignoreNotFound);
  await run("mvn", [
    "-B",
    "-q",
    "-f",
    ELASTICMQ_POM,
    "dependency:build-classpath",
    `-Dmdep.outputFile=${ELASTICMQ_CLASSPATH}`,
    `-Dmaven.repo.local=${M2_REPO}`,
  ], { hint: "needs mvn and java on PATH" });
  await Deno.writeTextFile(ELASTICMQ_MARKER, pom);
}

/**
 * Installs what is missing, then starts moto and ElasticMQ (or only `options.servers`;
 * the other one's entry then has `pid: null`) on free loopback ports,
 * waits until both answer an SQS ListQueues call and writes the state file
 * (`<stateDir>/state.json`). On failure, whatever was started is stopped again and
 * the error carries the tail of the server's log.
 */
export async function startLocalAws(options: StartOptions = {}): Promise<LocalAwsState> {
  const installation = await installLocalAws(options);
  const stateDir = resolve(options.stateDir ?? DEFAULT_STATE_DIR);
  await Deno.mkdir(stateDir, { recursive: true });
  emptyAwsConfigPath(join(stateDir, "state.json"));
  const [motoPort, elasticmqPort] = freeLoopbackPorts(2);
  const server = (name: ServerName, port: number): ServerState => ({
    pid: null,
    url: `http://127.0.0.1:${port}`,
    port,
    log: join(stateDir, `${name}.log`),
  });
  const state: LocalAwsState = {
    moto: server("moto", motoPort),
    elasticmq: server("elasticmq", elasticmqPort),
    awsCli: installation.awsCli,
    stateFile: join(stateDir, "state.json"),
  };
  try {
    const names = SERVER_NAMES.filter((name) => (options.servers ?? SERVER_NAMES).includes(name));
    await Promise.all(
      names.map((name) => startServer(state, name, { ...options, freshLog: true })),
    );
  } catch (error) {
    await stopLocalAws(state);
    throw error;
  }
  return state;
}

/** Stops both servers (only the pids in `state`) and removes the state file. */
export async function stopLocalAws(state: LocalAwsState, options: StopOptions = {}): Promise<void> {
  await Promise.all(SERVER_NAMES.map((name) => stopServer(state, name, options)));
  await Deno.remove(state.stateFile).catch(ignoreNotFound);
}

/**
 * Stops one server: SIGTERM, then SIGKILL after `graceMs`. Its port stays in the
 * state (with `pid: null`) so {@linkcode startServer} can bring it back on the same
 * URL. Updates the state file. A no-op when the server is not running.
 */
export async function stopServer(
  state: LocalAwsState,
  name: ServerName,
  options: StopOptions = {},
): Promise<void> {
  const server = state[name];
  if (server.pid !== null) {
    await terminate(server.pid, serverSignature(state, name), options.graceMs ?? 5_000);
    server.pid = null;
  }
  if (exists(state.stateFile)) writeState(state);
}

/**
 * Starts one server on the port already in `state` and waits until it answers.
 * Updates `state` and the state file. A server started again has lost everything:
 * both moto and ElasticMQ keep queues, messages and buckets only in memory.
 */
export async function startServer(
  state: LocalAwsState,
  name: ServerName,
  options: StartOptions & { freshLog?: boolean } = {},
): Promise<void> {
  const server = state[name];
  if (server.pid !== null && isOurProcess(server.pid, serverSignature(state, name))) {
    throw new Error(`${name} is already running (pid ${server.pid})`);
  }
  const argv = await serverCommand(state, name);
  server.pid = await launchDetached(argv, server.log, options.freshLog ?? false);
  // Recorded before waiting, so a crash while waiting still leaves the pid to stop.
  writeState(state);
  await waitUntilAnswering(state, name, options.timeoutMs ?? 60_000);
}

/**
 * Stops and starts one server on the SAME port (an outage, as a worker sees it).
 * The restarted server is empty: queues, messages and buckets are gone.
 */
export async function restartServer(
  state: LocalAwsState,
  name: ServerName,
  options: StartOptions & StopOptions = {},
): Promise<void> {
  await stopServer(state, name, options);
  await startServer(state, name, options);
}

/** Reads a state file; `null` when it does not exist. */
export async function readState(
  stateFile: string = join(DEFAULT_STATE_DIR, "state.json"),
): Promise<LocalAwsState | null> {
  try {
    return JSON.parse(await Deno.readTextFile(stateFile)) as LocalAwsState;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
}

/** The `SQSRUN_TEST_*` variables that `scripts/test.ts` and the tests read. */
export function testEnv(state: LocalAwsState): Record<string, string> {
  return {
    SQSRUN_TEST_MOTO_URL: state.moto.url,
    SQSRUN_TEST_ELASTICMQ_URL: state.elasticmq.url,
    SQSRUN_TEST_AWS_CLI: state.awsCli,
    SQSRUN_TEST_STATE: state.stateFile,
  };
}

/**
 * What an operator sets to point sqsrun, an AWS SDK or the AWS CLI at the local moto
 * (SQS and S3) with dummy credentials. `scripts/test.ts`, the tests' subprocesses and the
 * reliability and bench workers drop every inherited `AWS_*` and set their own, so these
 * change nothing there.
 */
export function operatorEnv(state: LocalAwsState): Record<string, string> {
  return {
    AWS_ENDPOINT_URL: state.moto.url,
    AWS_REGION: "us-east-1",
    AWS_DEFAULT_REGION: "us-east-1",
    AWS_ACCESS_KEY_ID: "test",
    AWS_SECRET_ACCESS_KEY: "test",
  };
}

/** The lines `env` prints: `export` lines for `eval`, test servers first, then the operator's. */
export function envLines(state: LocalAwsState): string[] {
  const quote = (value: string) => `'${value.replaceAll("'", `'\\''`)}'`;
  const exports = (vars: Record<string, string>) =>
    Object.entries(vars).map(([key, value]) => `export ${key}=${quote(value)}`);
  return [
    ...exports(testEnv(state)),
    "# sqsrun and the AWS SDKs, against moto (SQS and S3); the AWS CLI v1 of the venv needs",
    '# --endpoint-url "$AWS_ENDPOINT_URL" for sqs (aws/aws-cli#8737)',
    ...exports(operatorEnv(state)),
  ];
}

/**
 * Returns the path of an empty file next to the state file, creating it if needed.
 * Pointing AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE at it keeps a developer's
 * `~/.aws` (profiles, real credentials, regions) out of the tests.
 */
export function emptyAwsConfigPath(stateFile: string): string {
  const path = join(dirname(stateFile), "empty_aws_config");
  if (!exists(path)) {
    Deno.mkdirSync(dirname(path), { recursive: true });
    Deno.writeTextFileSync(path, "");
  }
  return path;
}

/** Returns true when the endpoint answers an SQS ListQueues call within `timeoutMs`. */
export async function answersSqs(url: string, timeoutMs = 2_000): Promise<boolean> {
  const controller = new AbortController();
  // A plain timer (not AbortSignal.timeout) so it is always cleared: tests check for leaks.
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    const response = await fetch(url, {
      method: "POST",
      signal: controller.signal,
      headers: {
        "Content-Type": "application/x-amz-json-1.0",
        "X-Amz-Target": "AmazonSQS.ListQueues",
        // moto picks the service from the credential scope; a POST to / is S3 otherwise.
        // Neither emulator checks the signature.
        "Authorization":
          "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0",
      },
      body: "{}",
    });
    const body = await response.text();
    if (!response.ok) return false;
    JSON.parse(body);
    return true;
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------
// Processes

/**
 * Parts of a server's command line (each ending at an argument boundary, hence the
 * trailing space) that identify it, so a reused pid is never signalled.
 */
function serverSignature(state: LocalAwsState, name: ServerName): string[] {
  return name === "moto"
    ? ["moto_server", `-p ${state.moto.port} `]
    : [ELASTICMQ_MAIN, `-Dconfig.file=${elasticmqConfigPath(state)} `];
}

function elasticmqConfigPath(state: LocalAwsState): string {
  return join(dirname(state.stateFile), "elasticmq.conf");
}

async function serverCommand(state: LocalAwsState, name: ServerName): Promise<string[]> {
  const paths = installationPaths();
  if (name === "moto") {
    return [paths.motoServer, "-H", "127.0.0.1", "-p", String(state.moto.port)];
  }
  const port = state.elasticmq.port;
  const config = elasticmqConfigPath(state);
  await Deno.writeTextFile(
    config,
    [
      `include classpath("application.conf")`,
      `node-address { protocol = http, host = 127.0.0.1, port = ${port}, context-path = "" }`,
      `rest-sqs { enabled = true, bind-port = ${port}, bind-hostname = "127.0.0.1", sqs-limits = strict }`,
      `rest-stats { enabled = false }`,
      "",
    ].join("\n"),
  );
  const classpath = (await Deno.readTextFile(paths.elasticmqClasspath)).trim();
  return ["java", "-Xmx1g", `-Dconfig.file=${config}`, "-cp", classpath, ELASTICMQ_MAIN];
}

/**
 * Starts `argv` in its own session with output to `logFile` and returns its pid
 * without keeping it as a child: the short-lived `sh` exits at once, so the server
 * outlives this process, and no child handle is left open (Deno's test sanitizers
 * would flag one). `setsid` execs in place here, so `$!` is the server's own pid.
 */
async function launchDetached(argv: string[], logFile: string, fresh: boolean): Promise<number> {
  const redirect = fresh ? ">" : ">>";
  const script = `log=$1; shift; setsid "$@" </dev/null ${redirect}"$log" 2>&1 & echo $!`;
  const output = await new Deno.Command("sh", {
    args: ["-c", script, "sh", logFile, ...argv],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const pid = Number(new TextDecoder().decode(output.stdout).trim());
  if (!output.success || !Number.isInteger(pid) || pid <= 0) {
    throw new Error(
      `could not start ${argv[0]}: ${new TextDecoder().decode(output.stderr).trim()}`,
    );
  }
  return pid;
}

async function waitUntilAnswering(
  state: LocalAwsState,
  name: ServerName,
  timeoutMs: number,
): Promise<void> {
  const server = state[name];
  const deadline = Date.now() + timeoutMs;
  while (!(await answersSqs(server.url))) {
    const pid = server.pid;
    if (pid === null || !isOurProcess(pid, serverSignature(state, name))) {
      throw new Error(`${name} exited while starting; end of ${server.log}:\n${tail(server.log)}`);
    }
    if (Date.now() > deadline) {
      throw new Error(
        `${name} did not answer at ${server.url} within ${timeoutMs / 1000} s; ` +
          `end of ${server.log}:\n${tail(server.log)}`,
      );
    }
    await sleep(200);
  }
}

/** SIGTERM, wait up to `graceMs`, then SIGKILL; only while `pid` runs our command. */
async function terminate(pid: number, signature: string[], graceMs: number): Promise<void> {
  if (!isOurProcess(pid, signature)) return;
  signal(pid, "SIGTERM");
  if (await waitForExit(pid, signature, graceMs)) return;
  signal(pid, "SIGKILL");
  if (!(await waitForExit(pid, signature, 5_000))) {
    throw new Error(`process ${pid} (${signature[0]}) did not exit after SIGKILL`);
  }
}

async function waitForExit(pid: number, signature: string[], timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isOurProcess(pid, signature)) {
    if (Date.now() > deadline) return false;
    await sleep(100);
  }
  return true;
}

function signal(pid: number, name: Deno.Signal): void {
  try {
    Deno.kill(pid, name);
  } catch (error) {
    // Already gone between the check and the signal.
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}

/** True when `pid` is alive (not a zombie) and its command line contains every `signature` part. */
function isOurProcess(pid: number, signature: string[]): boolean {
  const commandLine = processCommandLine(pid);
  return commandLine !== null && signature.every((part) => commandLine.includes(part));
}

function processCommandLine(pid: number): string | null {
  if (Deno.build.os === "linux") {
    const stat = readTextOrNull(`/proc/${pid}/stat`);
    // The state letter follows the parenthesised command name; Z is an unreaped corpse.
    if (stat === null || /\)\s+Z/.test(stat)) return null;
    const cmdline = readTextOrNull(`/proc/${pid}/cmdline`);
    return cmdline === null ? null : cmdline.split("\0").join(" ") + " ";
  }
  // macOS and others: ask ps.
  const output = new Deno.Command("ps", {
    args: ["-o", "stat=,command=", "-p", String(pid)],
    stdout: "piped",
    stderr: "null",
  }).outputSync();
  const text = new TextDecoder().decode(output.stdout).trim();
  if (!output.success || text === "" || text.startsWith("Z")) return null;
  return text + " ";
}

// ---------------------------------------------------------------------------
// Small helpers

/** Picks `count` distinct free loopback ports (held open together so they differ). */
function freeLoopbackPorts(count: number): number[] {
  const listeners = Array.from(
    { length: count },
    () => Deno.listen({ hostname: "127.0.0.1", port: 0 }),
  );
  const ports = listeners.map((listener) => (listener.addr as Deno.NetAddr).port);
  for (const listener of listeners) listener.close();
  return ports;
}

function writeState(state: LocalAwsState): void {
  // Write-then-rename: a reader never sees a half-written file.
  const temporary = `${state.stateFile}.${Deno.pid}.tmp`;
  Deno.writeTextFileSync(temporary, JSON.stringify(state, null, 2) + "\n");
  Deno.renameSync(temporary, state.stateFile);
}

async function run(
  command: string,
  args: string[],
  options: { hint?: string } = {},
): Promise<void> {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command(command, {
      args,
      cwd: PROJECT_ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Error(`${command} not found${options.hint ? ` (${options.hint})` : ""}`);
    }
    throw error;
  }
  if (!output.success) {
    const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
    throw new Error(
      `${command} ${args.join(" ")} failed (exit ${output.code})` +
        `${options.hint ? `; ${options.hint}` : ""}:\n${lastLines(text, 40)}`,
    );
  }
}

async function succeeds(command: string, args: string[]): Promise<boolean> {
  try {
    const output = await new Deno.Command(command, { args, stdout: "null", stderr: "null" })
      .output();
    return output.success;
  } catch {
    return false;
  }
}

function tail(path: string, lines = 30): string {
  return lastLines(readTextOrNull(path) ?? "(no log)", lines);
}

function lastLines(text: string, lines: number): string {
  return text.trimEnd().split("\n").slice(-lines).join("\n");
}

function readTextOrNull(path: string): string | null {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return null;
  }
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

function ignoreNotFound(error: unknown): void {
  if (!(error instanceof Deno.errors.NotFound)) throw error;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------------------
// Command line

const USAGE = "usage: deno run -A scripts/local_aws.ts install|start|stop|status|env [STATE_FILE]";

async function main(args: string[]): Promise<number> {
  const stateFile = join(DEFAULT_STATE_DIR, "state.json");
  switch (args[0]) {
    case "install": {
      const started = Date.now();
      await installLocalAws();
      defaultLog(`install done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
      return 0;
    }
    case "start": {
      const existing = await readState(stateFile);
      if (existing && SERVER_NAMES.every((name) => isRunning(existing, name))) {
        defaultLog(`already running (${stateFile}); use 'stop' first to restart`);
        printState(existing);
        return 0;
      }
      // A stale state file (crashed server, rebooted machine): clean up what is left.
      if (existing) await stopLocalAws(existing);
      const state = await startLocalAws();
      defaultLog(`moto at ${state.moto.url} (pid ${state.moto.pid})`);
      defaultLog(`elasticmq at ${state.elasticmq.url} (pid ${state.elasticmq.pid})`);
      defaultLog(
        `state in ${state.stateFile}; 'eval "$(deno task -q local-aws env)"' for tests and for sqsrun`,
      );
      return 0;
    }
    case "stop": {
      const state = await readState(stateFile);
      if (!state) {
        defaultLog("not running (no state file)");
        return 0;
      }
      await stopLocalAws(state);
      defaultLog("stopped");
      return 0;
    }
    case "status": {
      const state = await readState(stateFile);
      if (!state) {
        defaultLog("not running (no state file)");
        return 1;
      }
      printState(state);
      const answering = await Promise.all(
        SERVER_NAMES.map((name) => answersSqs(state[name].url)),
      );
      SERVER_NAMES.forEach((name, index) => {
        const running = isRunning(state, name) ? "running" : "NOT running";
        const answers = answering[index] ? "answers" : "does NOT answer";
        defaultLog(`${name}: ${running}, ${answers} at ${state[name].url}`);
      });
      return answering.every(Boolean) ? 0 : 1;
    }
    case "env": {
      // A state file of its own (e.g. SQSRUN_TEST_STATE of a `deno task test` run) may be named.
      const state = await readState(args[1] ?? stateFile);
      if (!state) {
        defaultLog("not running; run 'deno task local-aws start' first");
        return 1;
      }
      for (const line of envLines(state)) console.log(line);
      return 0;
    }
    default:
      console.error(USAGE);
      return 2;
  }
}

function isRunning(state: LocalAwsState, name: ServerName): boolean {
  const pid = state[name].pid;
  return pid !== null && isOurProcess(pid, serverSignature(state, name));
}

function printState(state: LocalAwsState): void {
  console.log(JSON.stringify(state, null, 2));
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (error) {
    defaultLog(error instanceof Error ? error.message : String(error));
    Deno.exit(1);
  }
}
