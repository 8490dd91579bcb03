/**
 * The reliability suite behind `deno task reliability`: runs the scenarios of
 * `docs/reliability.md` against real local emulators, prints a table of figures,
 * and exits 1 when any scenario's check failed (0 otherwise, 2 for bad flags).
 *
 * ```sh
 * deno task reliability --quick                      # the CI form, under 10 minutes
 * deno task reliability                              # the full form, about 20 minutes
 * deno task reliability --backend elasticmq --scenario 3
 * ```
 *
 * It starts the emulators it needs with `scripts/local_aws.ts` (in a folder of its
 * own under `.cache/local_aws/`) and stops exactly those, also on Ctrl-C. When the
 * `SQSRUN_TEST_*` variables are set (`eval "$(deno task -q local-aws env)"`), those
 * servers are used and nothing is started.
 *
 * @module
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { SQSClient } from "@aws-sdk/client-sqs";
import {
  CACHE_DIR,
  emptyAwsConfigPath,
  installationPaths,
  installLocalAws,
  type LocalAwsState,
  type ServerName,
  startServer,
  stopServer,
  testEnv,
} from "./local_aws.ts";
import { killAllWorkers } from "./reliability/harness.ts";
import { SCENARIOS } from "./reliability/scenarios.ts";
import { startSqsWitness } from "./reliability/witness.ts";
import type { Backend, Figures, Scenario, ScenarioContext } from "./reliability/scenario.ts";
import { createQueue, deleteQueue } from "../tests/support/sqs.ts";

/** What the command line asked for. */
export interface SuiteOptions {
  quick: boolean;
  backends: Backend["name"][];
  /** Scenario ids, in run order. */
  scenarios: number[];
  /** Keep every scenario's folder (logs, ledger), not only those of failed ones. */
  keep: boolean;
}

/** One row of the table. */
export interface ResultRow {
  scenario: Scenario;
  backend: string;
  ok: boolean;
  seconds: number;
  figures: Figures;
  failures: string[];
  /** The scenario's folder when it was kept. */
  kept?: string;
  /** The scenario's folder when it was to be kept but no longer existed. */
  gone?: string;
}

const USAGE =
  "usage: deno task reliability [--quick] [--backend moto|elasticmq|both] [--scenario N]... [--keep]";

/** Parses the flags; throws an Error with a one-line reason on a bad one. */
export function parseSuiteArgs(args: string[]): SuiteOptions {
  const { values } = parseArgs({
    args,
    options: {
      quick: { type: "boolean", default: false },
      backend: { type: "string", default: "both" },
      scenario: { type: "string", multiple: true },
      keep: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) throw new HelpRequested();
  const backend = values.backend;
  if (backend !== "moto" && backend !== "elasticmq" && backend !== "both") {
    throw new Error(`--backend must be moto, elasticmq or both, not '${backend}'`);
  }
  const known = SCENARIOS.map((scenario) => scenario.id);
  // The quick form leaves out scenario 7: it is `deno test` of files that
  // `deno task test` runs anyway, right before it in CI.
  const defaults = known.filter((id) => !(values.quick && id === HOSTILE_SCENARIO));
  const scenarios = (values.scenario ?? defaults.map(String)).map((text) => {
    const id = Number(text);
    if (!known.includes(id)) throw new Error(`--scenario must be one of ${known.join(", ")}`);
    return id;
  });
  return {
    quick: values.quick,
    backends: backend === "both" ? ["moto", "elasticmq"] : [backend],
    scenarios: [...new Set(scenarios)].sort((a, b) => a - b),
    keep: values.keep,
  };
}

class HelpRequested extends Error {}

/** Scenario 7 runs test files that are part of `deno task test`. */
const HOSTILE_SCENARIO = 7;

/** Formats the results as a Markdown table (the same as in docs/reliability.md). */
export function formatTable(rows: ResultRow[]): string {
  const header = [
    "#",
    "scenario",
    "backend",
    "result",
    "messages",
    "kills",
    "duplicates",
    "lost",
    "time (s)",
    "peak RSS (MiB)",
    "CPU",
  ];
  const cells = rows.map((row) => [
    String(row.scenario.id),
    row.scenario.name,
    row.backend,
    row.ok ? "pass" : "FAIL",
    show(row.figures.messages),
    show(row.figures.kills),
    show(row.figures.duplicates),
    show(row.figures.lost),
    row.seconds.toFixed(1),
    show(row.figures.peakRssMiB),
    row.figures.cpu ?? "",
  ]);
  return markdownTable(header, cells);
}

/**
 * Formats the rows of the fault scenarios (those whose figures name a fault) as a
 * second Markdown table: the fault and its size, and what became of the messages.
 */
export function formatFaultTable(rows: ResultRow[]): string {
  const header = [
    "#",
    "fault",
    "backend",
    "result",
    "magnitude",
    "messages",
    "duplicates (whose)",
    "at the same time",
    "truncated inputs",
    "lapsed visibility",
    "lost",
    "time (s)",
  ];
  const faulty = rows.filter((row) => row.figures.fault !== undefined);
  const cells = faulty.map((row) => {
    const f = row.figures;
    const duplicates = f.duplicates === undefined
      ? ""
      : f.duplicates > 0 && f.duplicatesWhose
      ? `${f.duplicates} (${f.duplicatesWhose})`
      : String(f.duplicates);
    const overlaps = f.overlaps === undefined
      ? ""
      : f.queueOverlaps
      ? `${f.overlaps} (${f.queueOverlaps} queue's)`
      : String(f.overlaps);
    return [
      String(row.scenario.id),
      f.fault ?? "",
      row.backend,
      row.ok ? "pass" : "FAIL",
      f.magnitude ?? "",
      show(f.messages),
      duplicates,
      overlaps,
      show(f.truncated),
      show(f.lapsed),
      show(f.lost),
      row.seconds.toFixed(1),
    ];
  });
  return markdownTable(header, cells);
}

function markdownTable(header: string[], cells: string[][]): string {
  const widths = header.map((title, i) =>
    Math.max(title.length, ...cells.map((row) => row[i].length))
  );
  const line = (row: string[]) => `| ${row.map((cell, i) => cell.padEnd(widths[i])).join(" | ")} |`;
  return [
    line(header),
    `| ${widths.map((width) => "-".repeat(width)).join(" | ")} |`,
    ...cells.map(line),
  ].join("\n");
}

function show(value: number | undefined): string {
  return value === undefined ? "" : String(value);
}

/** The emulators a run needs: the chosen backends, and both for scenarios that use both. */
export function neededServers(options: SuiteOptions): ServerName[] {
  const needed = new Set<ServerName>(options.backends);
  const selected = SCENARIOS.filter((scenario) => options.scenarios.includes(scenario.id));
  if (selected.some((scenario) => scenario.bothBackends)) {
    needed.add("moto");
    needed.add("elasticmq");
  }
  return [...needed];
}

function freeLoopbackPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Starts the named emulators on free ports in `stateDir`; returns the state to stop later. */
async function startServers(names: ServerName[], stateDir: string): Promise<LocalAwsState> {
  await installLocalAws({ log: () => {} });
  await Deno.mkdir(stateDir, { recursive: true });
  const server = (name: ServerName) => {
    const port = freeLoopbackPort();
    return { pid: null, url: `http://127.0.0.1:${port}`, port, log: join(stateDir, `${name}.log`) };
  };
  const state: LocalAwsState = {
    moto: server("moto"),
    elasticmq: server("elasticmq"),
    awsCli: installationPaths().awsCli,
    stateFile: join(stateDir, "state.json"),
  };
  emptyAwsConfigPath(state.stateFile);
  try {
    await Promise.all(names.map((name) => startServer(state, name, { freshLog: true })));
  } catch (error) {
    await stopServers(state, names);
    throw error;
  }
  return state;
}

async function stopServers(state: LocalAwsState, names: ServerName[]): Promise<void> {
  await Promise.all(names.map((name) => stopServer(state, name)));
}

/** Where the servers are: started here, or given by `SQSRUN_TEST_*`. */
interface Servers {
  urls: Partial<Record<ServerName, string>>;
  /** `SQSRUN_TEST_*` for `deno test` (scenario 7); only when both servers run. */
  testEnv?: Record<string, string>;
  emptyConfig: string;
}

let queueCounter = 0;

/** Runs one scenario on one backend (or on both, for scenario 7) with a time budget. */
async function runScenario(
  scenario: Scenario,
  backend: Backend,
  servers: Servers,
  options: SuiteOptions,
  interrupt: AbortSignal,
): Promise<ResultRow> {
  const started = performance.now();
  const dir = await Deno.makeTempDir({ prefix: `sqsrun-reliability-${scenario.id}-` });
  const client = new SQSClient({
    endpoint: backend.endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
  });
  const queues: string[] = [];
  const witness = startSqsWitness(backend.endpoint);
  const label = scenario.bothBackends ? "both" : backend.name;
  const budget = scenario.budgetMs(options.quick);
  const abort = new AbortController();
  const context: ScenarioContext = {
    signal: abort.signal,
    backend,
    quick: options.quick,
    dir,
    client,
    witness,
    testEnv: servers.testEnv,
    async queue(prefix, attributes) {
      const name = `rel-${prefix}-${Date.now().toString(36)}-${++queueCounter}`;
      const url = await createQueue(client, name, attributes);
      queues.push(url);
      return url;
    },
    workerEnv(endpoint = witness.url) {
      return workerEnvironment(endpoint, servers.emptyConfig);
    },
    progress(message) {
      console.error(`reliability: [${scenario.id} ${label}] ${message}`);
    },
  };
  context.progress(`${scenario.name}: start`);
  // The scenario stops at its next wait once aborted; the race does not wait for that.
  const timer = setTimeout(
    () => abort.abort(new Error(`exceeded its time budget of ${budget / 1000} s`)),
    budget,
  );
  const onInterrupt = () => abort.abort(new Error("interrupted"));
  interrupt.addEventListener("abort", onInterrupt);
  const overtime = new Promise<never>((_, reject) => {
    abort.signal.addEventListener("abort", () => reject(abort.signal.reason), { once: true });
  });
  let figures: Figures = { notes: [] };
  let failures: string[];
  try {
    const outcome = await Promise.race([scenario.run(context), overtime]);
    figures = outcome.figures;
    failures = outcome.failures;
  } catch (error) {
    failures = [`aborted: ${error instanceof Error ? error.message : String(error)}`];
  } finally {
    clearTimeout(timer);
    interrupt.removeEventListener("abort", onInterrupt);
    abort.abort(new Error("the scenario ended"));
    await killAllWorkers();
    await Promise.all(queues.map((url) => deleteQueue(client, url)));
    client.destroy();
    await witness.close();
  }
  const ok = failures.length === 0;
  const keep = !ok || options.keep;
  if (!keep) await Deno.remove(dir, { recursive: true }).catch(() => {});
  // Never name a folder as kept when it is not there: something outside the suite
  // may have removed it, and the report must say so.
  const gone = keep && !(await Deno.stat(dir).then(() => true, () => false));
  const row: ResultRow = {
    scenario,
    backend: label,
    ok,
    seconds: (performance.now() - started) / 1000,
    figures,
    failures,
    kept: keep && !gone ? dir : undefined,
    gone: gone ? dir : undefined,
  };
  context.progress(`${ok ? "pass" : "FAIL"} in ${row.seconds.toFixed(1)} s`);
  for (const failure of failures) context.progress(`  failed: ${failure}`);
  return row;
}

/**
 * The environment of a worker: nothing of the caller's AWS_* (a developer's keys
 * must not reach a test), dummy credentials, the endpoint, and empty AWS files.
 */
export function workerEnvironment(endpoint: string, emptyConfig: string): Record<string, string> {
  const env: Record<string, string> = {
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    HOME: Deno.env.get("HOME") ?? "/tmp",
    NO_COLOR: "1",
    AWS_ACCESS_KEY_ID: "test",
    AWS_SECRET_ACCESS_KEY: "test",
    AWS_REGION: "us-east-1",
    AWS_ENDPOINT_URL: endpoint,
    AWS_CONFIG_FILE: emptyConfig,
    AWS_SHARED_CREDENTIALS_FILE: emptyConfig,
  };
  const denoDir = Deno.env.get("DENO_DIR");
  if (denoDir) env.DENO_DIR = denoDir;
  // `SQSRUN_SPAWNER=main deno task reliability` runs the scenarios with jobs started
  // on the main thread, the way before spawner threads.
  const spawner = Deno.env.get("SQSRUN_SPAWNER");
  if (spawner) env.SQSRUN_SPAWNER = spawner;
  return env;
}

/** Runs the suite; resolves to the exit code. */
export async function runSuite(options: SuiteOptions): Promise<number> {
  const given = Deno.env.get("SQSRUN_TEST_MOTO_URL") && Deno.env.get("SQSRUN_TEST_ELASTICMQ_URL") &&
    Deno.env.get("SQSRUN_TEST_STATE") && Deno.env.get("SQSRUN_TEST_AWS_CLI");
  const names = neededServers(options);
  let started: LocalAwsState | undefined;
  const interrupt = new AbortController();
  const onSignal = () => {
    console.error("reliability: interrupted; stopping workers and emulators");
    interrupt.abort();
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(signal, onSignal);
  const rows: ResultRow[] = [];
  const began = performance.now();
  try {
    let servers: Servers;
    if (given) {
      const env = Deno.env.toObject();
      servers = {
        urls: { moto: env.SQSRUN_TEST_MOTO_URL, elasticmq: env.SQSRUN_TEST_ELASTICMQ_URL },
        testEnv: Object.fromEntries(
          Object.entries(env).filter(([key]) => key.startsWith("SQSRUN_TEST_")),
        ),
        emptyConfig: emptyAwsConfigPath(env.SQSRUN_TEST_STATE),
      };
      console.error("reliability: using the servers of SQSRUN_TEST_*");
    } else {
      const stateDir = join(CACHE_DIR, "local_aws", `reliability-${Deno.pid}`);
      console.error(`reliability: starting ${names.join(" and ")}`);
      started = await startServers(names, stateDir);
      servers = {
        urls: Object.fromEntries(names.map((name) => [name, started![name].url])),
        testEnv: names.length === 2 ? testEnv(started) : undefined,
        emptyConfig: emptyAwsConfigPath(started.stateFile),
      };
    }
    for (const id of options.scenarios) {
      const scenario = SCENARIOS.find((candidate) => candidate.id === id)!;
      const backends = scenario.bothBackends ? [options.backends[0]] : options.backends;
      for (const name of backends) {
        if (interrupt.signal.aborted) break;
        const backend: Backend = { name, endpoint: servers.urls[name]! };
        rows.push(await runScenario(scenario, backend, servers, options, interrupt.signal));
      }
    }
  } finally {
    await killAllWorkers();
    if (started) {
      await stopServers(started, names);
      await Deno.remove(join(started.stateFile, ".."), { recursive: true }).catch(() => {});
    }
    for (const signal of ["SIGINT", "SIGTERM"] as const) {
      Deno.removeSignalListener(signal, onSignal);
    }
  }
  printReport(rows, (performance.now() - began) / 1000, options);
  if (interrupt.signal.aborted) return 130;
  return rows.every((row) => row.ok) ? 0 : 1;
}

function printReport(rows: ResultRow[], seconds: number, options: SuiteOptions): void {
  console.log(
    `\nsqsrun reliability, ${options.quick ? "quick" : "full"} form, ${seconds.toFixed(0)} s\n`,
  );
  console.log(formatTable(rows));
  console.log("");
  if (rows.some((row) => row.figures.fault !== undefined)) {
    console.log(formatFaultTable(rows));
    console.log("");
  }
  for (const row of rows) {
    const notes = row.figures.notes;
    const where = `${row.scenario.id} ${row.scenario.name} [${row.backend}]`;
    for (const note of notes) console.log(`- ${where}: ${note}`);
    for (const failure of row.failures) console.log(`- ${where}: FAILED: ${failure}`);
    if (row.kept) console.log(`- ${where}: logs and ledger kept in ${row.kept}`);
    if (row.gone) {
      console.log(`- ${where}: its folder ${row.gone} was removed by something outside the suite`);
    }
  }
  const failed = rows.filter((row) => !row.ok).length;
  console.log(failed === 0 ? "\nall scenarios passed" : `\n${failed} scenario run(s) FAILED`);
}

if (import.meta.main) {
  let options: SuiteOptions;
  try {
    options = parseSuiteArgs(Deno.args);
  } catch (error) {
    if (error instanceof HelpRequested) {
      console.log(USAGE);
      Deno.exit(0);
    }
    console.error(`reliability: ${(error as Error).message}\n${USAGE}`);
    Deno.exit(2);
  }
  try {
    Deno.exit(await runSuite(options));
  } catch (error) {
    console.error(`reliability: ${error instanceof Error ? error.message : String(error)}`);
    Deno.exit(1);
  }
}
