/**
 * Scenario 14: `--post` under load while the web app and the workers are SIGKILLed
 * in turns. Two workers (`-c 5`, `--post-health /health`) deliver to one app
 * (`post_app.ts`, a process of its own) whose requests take 0-300 ms; every few
 * per cent of progress either the app is SIGKILLed and started again on the same
 * port half a second later, or a worker is SIGKILLed and replaced at once.
 *
 * The app's own ledger is the independent record: a message may be deleted only
 * after the app answered it 2xx, so every message the queue acknowledged as
 * deleted (the witness) must have an `A` line written before that delete, and
 * every success sqsrun logged must have one too. No message may be lost: at the
 * end the queue is empty and every body has an `A` line. Deliveries that found the
 * app gone must wait for its health check instead of failing.
 *
 * @module
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  assertRunning,
  Checks,
  countLines,
  launchWorker,
  type LogLine,
  observedSuccesses,
  pushBodies,
  queueIsEmpty,
  readLog,
  sample,
  sleep,
  usageFigures,
  waitForOutcome,
  waitStarted,
  type WorkerRun,
} from "./harness.ts";
import type { Figures, Scenario, ScenarioContext, ScenarioOutcome } from "./scenario.ts";

const APP = fileURLToPath(new URL("./post_app.ts", import.meta.url));

/** Workers sharing the queue. */
const WORKERS = 2;
/** `-c` of each: requests in flight per worker. */
const CONCURRENCY = 5;
/** Short, so the messages of a killed worker come back within seconds. */
const VISIBILITY = 4;

/** Scenario 14. */
export const postScenario: Scenario = {
  id: 14,
  name: "post: app and worker SIGKILLed",
  budgetMs: (quick) => (quick ? 90_000 : 300_000),
  run: postKills,
};

/** One line of the app's ledger. */
interface AppLine {
  kind: "S" | "A";
  body: string;
  pid: number;
  /** Epoch ms. */
  ms: number;
}

/** Parses the app's ledger; a torn last line is skipped. */
export function parseAppLedger(text: string): AppLine[] {
  const lines: AppLine[] = [];
  for (const line of text.split("\n")) {
    const [kind, body, pid, ns] = line.trim().split(" ");
    if ((kind !== "S" && kind !== "A") || !body || !/^\d+$/.test(ns ?? "")) continue;
    lines.push({ kind, body, pid: Number(pid), ms: Number(BigInt(ns) / 1_000_000n) });
  }
  return lines;
}

async function readAppLedger(path: string): Promise<AppLine[]> {
  try {
    return parseAppLedger(await Deno.readTextFile(path));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
}

/** The app process, started again on the same port after each kill. */
class AppProcess {
  #port: number;
  #ledger: string;
  #child: Deno.ChildProcess | undefined;
  starts = 0;

  constructor(port: number, ledger: string) {
    this.#port = port;
    this.#ledger = ledger;
  }

  /** Starts the app and waits until it answers its health check. */
  async start(signal: AbortSignal): Promise<void> {
    this.#child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", APP, String(this.#port), this.#ledger],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    this.starts++;
    for (let i = 0; i < 200; i++) {
      signal.throwIfAborted();
      try {
        const response = await fetch(`http://127.0.0.1:${this.#port}/health`);
        await response.body?.cancel();
        if (response.ok) return;
      } catch {
        // Not listening yet.
      }
      await sleep(50);
    }
    throw new Error("the app did not start within 10 s");
  }

  /** SIGKILLs the app and waits for its end. */
  async kill(): Promise<void> {
    const child = this.#child;
    this.#child = undefined;
    if (!child) return;
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status;
  }
}

async function postKills(context: ScenarioContext): Promise<ScenarioOutcome> {
  const started = Date.now();
  const { quick, dir, client } = context;
  const count = quick ? 200 : 800;
  const kills = quick ? 6 : 14;
  const milestones = Array.from(
    { length: kills },
    (_, i) => Math.ceil(count * (0.08 + (0.8 / kills) * i)),
  );
  const minGapMs = quick ? 700 : 1_000;
  const url = await context.queue("post");
  const ledger = join(dir, "app-ledger");
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const app = new AppProcess(port, ledger);
  await app.start(context.signal);

  const args = [
    "-q",
    url,
    "--post",
    `http://127.0.0.1:${port}/jobs`,
    "--post-health",
    "/health",
    "-c",
    String(CONCURRENCY),
    "-t",
    String(VISIBILITY),
    "--wait",
    "1",
    "--backoff",
    "1,4",
    "--shutdown-timeout",
    "10",
  ];
  const workers: WorkerRun[] = [];
  const launch = () => {
    const worker = launchWorker({
      args,
      env: context.workerEnv(),
      logPath: join(dir, `worker-${workers.length}.log`),
    });
    workers.push(worker);
    return worker;
  };
  const slots = Array.from({ length: WORKERS }, launch);
  const checks = new Checks();
  let appKills = 0;
  let workerKills = 0;
  let logs: LogLine[][] = [];
  try {
    await Promise.all(slots.map((worker) => waitStarted(worker, context.signal)));
    const bodies = Array.from(
      { length: count },
      (_, i) => `p-${String(i + 1).padStart(5, "0")}-${Math.floor(Math.random() * 301)}`,
    );
    const ids = await pushBodies(client, url, bodies);
    context.progress(`pushed ${count} messages`);

    const answered = async () =>
      new Set((await readAppLedger(ledger)).filter((l) => l.kind === "A").map((l) => l.body))
        .size;
    let lastKill = 0;
    while (appKills + workerKills < kills) {
      await sleep(100);
      context.signal.throwIfAborted();
      assertRunning(slots);
      const done = await answered();
      if (done >= count) break;
      if (done < milestones[appKills + workerKills] || Date.now() - lastKill < minGapMs) continue;
      if ((appKills + workerKills) % 2 === 0) {
        await app.kill();
        appKills++;
        context.progress(`SIGKILL the app (${appKills}); ${done}/${count} answered`);
        await sleep(300 + Math.random() * 500);
        await app.start(context.signal);
      } else {
        const index = workerKills % WORKERS;
        const victim = slots[index];
        victim.signal("SIGKILL");
        await victim.status;
        workerKills++;
        slots[index] = launch();
        context.progress(
          `SIGKILL worker ${victim.pid} (${workerKills}); ${done}/${count} answered`,
        );
      }
      lastKill = Date.now();
    }

    try {
      await waitForOutcome(
        "every message was answered 2xx and the queue is empty",
        { client, url },
        async () => await answered() === count && await queueIsEmpty(client, url),
        quick ? 60_000 : 180_000,
        context.signal,
      );
    } catch (error) {
      checks.that(false, (error as Error).message);
    }
    await Promise.all(slots.map((worker) => worker.stop()));
    logs = await Promise.all(workers.map((worker) => readLog(worker.logPath)));
    const lines = await readAppLedger(ledger);
    const answeredAt = new Map<string, number>();
    const answers = new Map<string, number>();
    for (const line of lines) {
      if (line.kind !== "A") continue;
      answers.set(line.body, (answers.get(line.body) ?? 0) + 1);
      if (!answeredAt.has(line.body)) answeredAt.set(line.body, line.ms);
    }
    const lost = bodies.filter((body) => !answeredAt.has(body));
    const unknown = [...answeredAt.keys()].filter((body) => !bodies.includes(body));
    // Deleted without a 2xx: the queue acknowledged a delete, and the app had not
    // answered the message by then.
    const deletedEarly: string[] = [];
    for (const [id, body] of ids) {
      const deleted = context.witness.deletedAt(id);
      if (deleted === undefined) continue;
      const at = answeredAt.get(body);
      if (at === undefined || at > deleted) deletedEarly.push(body);
    }
    const succeeded = observedSuccesses(logs, ids);
    const unanswered = [...succeeded].filter((body) => !answeredAt.has(body));
    const refused = logs.flat().filter((line) =>
      line.msg === "job failed" && String(line.error).startsWith("cannot connect")
    );
    const counts = await queueIsEmpty(client, url);

    checks.that(
      appKills >= 1 && workerKills >= 1,
      `only ${appKills} app and ${workerKills} worker kills`,
    );
    checks.equal(lost.length, 0, `messages the app never answered 2xx (${sample(lost)})`);
    checks.equal(unknown.length, 0, `bodies that were never pushed (${sample(unknown)})`);
    checks.equal(
      deletedEarly.length,
      0,
      `messages deleted before the app answered them 2xx (${sample(deletedEarly)})`,
    );
    checks.equal(
      unanswered.length,
      0,
      `successes sqsrun logged without a 2xx of the app (${sample(unanswered)})`,
    );
    checks.equal(
      refused.length,
      0,
      "deliveries that failed to connect (with --post-health they wait for the app)",
    );
    checks.that(counts, "messages left in the queue");
    for (const worker of workers) {
      checks.that(
        !worker.stderr().includes("    at "),
        `worker ${worker.pid} printed a stack trace: ${worker.stderr().slice(-300)}`,
      );
    }
    const duplicates = [...answers.values()].reduce((sum, n) => sum + n - 1, 0);
    const held = countLines(
      logs,
      "cannot connect to the app; holding the message until it is healthy",
    );
    const cut = logs.flat().filter((line) =>
      line.msg === "job failed" && String(line.error).startsWith("the request to the app failed")
    ).length;
    const figures: Figures = {
      ...usageFigures(workers),
      messages: count,
      kills: appKills + workerKills,
      duplicates,
      lost: lost.length,
      notes: [
        `${appKills} app kills, ${workerKills} worker kills`,
        `${cut} requests cut by an app kill (released), ${held} deliveries that found the ` +
        "app gone held until it was healthy",
        `${duplicates} 2xx answers beyond the first of a message (a killed worker's, or ` +
        "an app killed between its answer and the worker reading it)",
        `${(count / ((Date.now() - started) / 1000)).toFixed(0)} messages/s overall`,
      ],
    };
    return { figures, failures: checks.failures };
  } finally {
    await Promise.all(slots.map((worker) => worker.stop(5_000)));
    await app.kill();
  }
}
