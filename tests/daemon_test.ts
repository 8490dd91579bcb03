/**
 * `-d/--daemon PIDFILE` against moto, run as the binary runs (`deno run
 * <runtimeFlags()>`): start-up in the background, the pid file as a lock, the log
 * file and SIGHUP, the drain on SIGTERM. Every daemon a test starts is killed by
 * its pid in `finally`.
 */
import { deepStrictEqual, ok, rejects, strictEqual } from "node:assert/strict";
import type { SQSClient } from "@aws-sdk/client-sqs";
import { awsEnv, motoEndpoint, uniqueName } from "./support/local_aws.ts";
import { assertOneLineError, type CliResult, lines, runCli } from "./support/cli.ts";
import { createQueue, deleteQueue, queueCounts, sendMessages, testClient } from "./support/sqs.ts";
import { waitUntil } from "./support/worker.ts";
import {
  acquirePidFile,
  daemonLogPath,
  looksLikeSqsrun,
  processAlive,
  releasePidFileSync,
} from "../src/daemon.ts";
import { RuntimeError } from "../src/errors.ts";

const testOptions = { sanitizeOps: false, sanitizeResources: false };

interface Fixture {
  client: SQSClient;
  url: string;
  dir: string;
  pidFile: string;
  env: Record<string, string>;
  /** Runs `sqsrun -q URL ARGS` in the fixture's folder; a pid it prints is killed at the end. */
  sqsrun(args: string[]): Promise<CliResult>;
  /** Writes an executable file into the folder and returns its path. */
  file(name: string, text: string, mode?: number): Promise<string>;
  /** JSON log lines of a log file (none when it does not exist). */
  logLines(path: string): Promise<Record<string, unknown>[]>;
}

async function withFixture(body: (fixture: Fixture) => Promise<void>): Promise<void> {
  const endpoint = motoEndpoint();
  const client = testClient(endpoint);
  const url = await createQueue(client, uniqueName("daemon"));
  const dir = await Deno.makeTempDir({ prefix: "sqsrun-daemon-" });
  const started = new Set<number>();
  const env = { ...awsEnv(endpoint), HOME: dir };
  const fixture: Fixture = {
    client,
    url,
    dir,
    pidFile: `${dir}/sqsrun.pid`,
    env,
    async sqsrun(args) {
      const result = await runCli(["-q", url, "--wait", "1", ...args], { cwd: dir, env });
      const pid = Number(result.stdout.trim());
      if (result.code === 0 && Number.isSafeInteger(pid) && pid > 0) started.add(pid);
      return result;
    },
    async file(name, text, mode = 0o755) {
      const path = `${dir}/${name}`;
      await Deno.writeTextFile(path, text);
      await Deno.chmod(path, mode);
      return path;
    },
    async logLines(path) {
      let text = "";
      try {
        text = await Deno.readTextFile(path);
      } catch { /* not there (yet) */ }
      return lines(text).map((line) => JSON.parse(line));
    },
  };
  try {
    await body(fixture);
  } finally {
    for (const pid of started) {
      if (!running(pid)) continue;
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone meanwhile */ }
    }
    await deleteQueue(client, url);
    client.destroy();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/**
 * True while `pid` runs. A daemon's parent exits, so nobody may reap it: a zombie
 * (state Z in /proc) has ended.
 */
function running(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(")") + 2));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
  }
  try {
    Deno.kill(pid, "SIGCONT");
    return true;
  } catch {
    return false;
  }
}

async function readPid(path: string): Promise<number | undefined> {
  try {
    return Number((await Deno.readTextFile(path)).trim());
  } catch {
    return undefined;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

async function queueEmpty(fixture: Fixture): Promise<boolean> {
  const counts = await queueCounts(fixture.client, fixture.url);
  return counts.visible === 0 && counts.inFlight === 0 && counts.delayed === 0;
}

/** Checks a successful start: one line with the pid, nothing on stderr, the process alive. */
function startedPid(result: CliResult): number {
  const context = `stdout: ${JSON.stringify(result.stdout)} stderr: ${
    JSON.stringify(result.stderr)
  }`;
  strictEqual(result.code, 0, context);
  strictEqual(result.stderr, "", context);
  ok(/^\d+\n$/.test(result.stdout), context);
  return Number(result.stdout.trim());
}

Deno.test({
  name: "daemon: starts in the background, runs jobs, holds its pid file, and stops on SIGTERM",
  ...testOptions,
  fn: async () => {
    await withFixture(async (fixture) => {
      const ledger = `${fixture.dir}/ledger`;
      await fixture.file(
        "job.ts",
        `export function run(body: string): void {
  Deno.writeTextFileSync(${JSON.stringify(ledger)}, body + "\\n", { append: true });
  console.log("ran", body);
}
`,
        0o644,
      );
      // A pid file left by a daemon that died without cleaning up (no such process).
      await Deno.writeTextFile(fixture.pidFile, "4000000\n");
      const result = await fixture.sqsrun(["--run", "./job.ts", "-d", fixture.pidFile]);
      const pid = startedPid(result);
      ok(result.durationMs < 30_000, "the foreground process returns");
      ok(pid !== 4000000);
      strictEqual(await readPid(fixture.pidFile), pid, "the pid file names the daemon");
      ok(running(pid), "the daemon runs");

      await sendMessages(fixture.client, fixture.url, ["one"]);
      await waitUntil("the job ran", async () => await exists(ledger));
      await waitUntil("the queue is empty", () => queueEmpty(fixture));
      strictEqual(await Deno.readTextFile(ledger), "one\n");
      // The log goes next to the pid file by default.
      const log = `${fixture.dir}/sqsrun.log`;
      await waitUntil("the job is logged", async () => {
        return (await fixture.logLines(log)).some((line) => line.msg === "ran one");
      });

      const second = await fixture.sqsrun(["--run", "./job.ts", "-d", fixture.pidFile]);
      assertOneLineError(second, 1, [fixture.pidFile, String(pid), "already running"]);
      strictEqual(await readPid(fixture.pidFile), pid, "the refused daemon left the pid file");
      ok(running(pid), "the first daemon still runs");

      Deno.kill(pid, "SIGTERM");
      await waitUntil("the daemon exits", () => !running(pid), 20_000);
      ok(!await exists(fixture.pidFile), "the pid file is removed");
      const logged = (await fixture.logLines(log)).map((line) => line.msg);
      strictEqual(logged.at(-1), "worker stopped");
    });
  },
});

Deno.test({
  name: "daemon: SIGHUP reopens the log after logrotate moved it",
  ...testOptions,
  fn: async () => {
    await withFixture(async (fixture) => {
      const job = await fixture.file("job.sh", `#!/bin/sh\necho "job says $(cat)"\n`);
      const log = `${fixture.dir}/custom.log`;
      const pid = startedPid(
        await fixture.sqsrun(["--exec", job, "-d", fixture.pidFile, "-o", log]),
      );
      await sendMessages(fixture.client, fixture.url, ["before"]);
      const said = (lines: Record<string, unknown>[]) => lines.map((line) => line.msg);
      await waitUntil("the first job is logged", async () => {
        return said(await fixture.logLines(log)).includes("job says before");
      });
      await Deno.rename(log, `${log}.1`);
      Deno.kill(pid, "SIGHUP");
      await waitUntil("a new log file", () => exists(log), 10_000);
      await sendMessages(fixture.client, fixture.url, ["after"]);
      await waitUntil("the second job is logged in the new file", async () => {
        return said(await fixture.logLines(log)).includes("job says after");
      });
      ok(said(await fixture.logLines(`${log}.1`)).includes("job says before"));
      ok(!said(await fixture.logLines(`${log}.1`)).includes("job says after"));
      ok(running(pid), "SIGHUP does not stop the daemon");
      Deno.kill(pid, "SIGTERM");
      await waitUntil("the daemon exits", () => !running(pid), 20_000);
    });
  },
});

Deno.test({
  name:
    "daemon: SIGTERM lets the running job finish, deletes its message, then removes the pid file",
  ...testOptions,
  fn: async () => {
    await withFixture(async (fixture) => {
      const ledger = `${fixture.dir}/ledger`;
      const job = await fixture.file(
        "job.sh",
        `#!/bin/sh\necho start >> '${ledger}'\nsleep 3\necho end >> '${ledger}'\n`,
      );
      const pid = startedPid(await fixture.sqsrun(["--exec", job, "-d", fixture.pidFile]));
      await sendMessages(fixture.client, fixture.url, ["long"]);
      await waitUntil("the job started", async () => await exists(ledger));
      Deno.kill(pid, "SIGTERM");
      ok(await exists(fixture.pidFile), "the pid file stays while the daemon drains");
      await waitUntil("the daemon exits", () => !running(pid), 30_000);
      deepStrictEqual(lines(await Deno.readTextFile(ledger)), ["start", "end"]);
      ok(!await exists(fixture.pidFile), "the pid file is removed");
      await waitUntil("the message was deleted", () => queueEmpty(fixture));
      const logged = await fixture.logLines(`${fixture.dir}/sqsrun.log`);
      const finished = logged.find((line) => line.msg === "job finished");
      strictEqual(finished?.outcome, "succeeded");
      strictEqual(logged.at(-1)?.msg, "worker stopped");
    });
  },
});

Deno.test({
  name: "daemon: what stops the start is one line in the foreground, and no pid file is left",
  ...testOptions,
  fn: async () => {
    await withFixture(async (fixture) => {
      const cases: { args: string[]; code: number; mentions: string[] }[] = [
        {
          args: ["--run", "./missing.ts"],
          code: 2,
          mentions: ["--run ./missing.ts: no such file"],
        },
        {
          args: ["--exec", "/bin/true", "-o", `${fixture.dir}/no/such/dir/x.log`],
          code: 1,
          mentions: ["cannot open the log file", "no such file"],
        },
        {
          args: ["--exec", "/bin/true", "-q", "no-such-queue-for-the-daemon"],
          code: 1,
          mentions: ["no-such-queue-for-the-daemon", "does not exist"],
        },
      ];
      for (const { args, code, mentions } of cases) {
        const result = await fixture.sqsrun([...args, "-d", fixture.pidFile]);
        assertOneLineError(result, code, mentions, args.join(" "));
        ok(!await exists(fixture.pidFile), `no pid file after ${args.join(" ")}`);
      }
    });
  },
});

// ---------------------------------------------------------------------------
// The pid file and log path rules, without a daemon.

Deno.test("daemonLogPath(): -o wins, else the pid file's name with .log for .pid", () => {
  strictEqual(daemonLogPath("/run/sqsrun/jobs.pid"), "/run/sqsrun/jobs.log");
  strictEqual(daemonLogPath("jobs.lock"), "jobs.lock.log");
  strictEqual(daemonLogPath("/run/jobs.pid", "/var/log/jobs.log"), "/var/log/jobs.log");
});

Deno.test("acquirePidFile(): holds a lock; refuses a held pid file, replaces a stale one", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sqsrun-pidfile-" });
  const path = `${dir}/x.pid`;
  // A live process that is not sqsrun: a pid reused after a reboot.
  const stranger = new Deno.Command("sleep", { args: ["30"] }).spawn();
  // A live older sqsrun, which held no lock: its command line names it.
  const older = new Deno.Command("bash", { args: ["-c", "exec -a sqsrun-0.1 sleep 30"] }).spawn();
  try {
    await acquirePidFile(path, 4242);
    strictEqual(await Deno.readTextFile(path), "4242\n");
    deepStrictEqual((await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name), ["x.pid"]);
    // Held (its lock is): refused, and left alone.
    await rejects(acquirePidFile(path, 4343), (error: Error) => {
      ok(error instanceof RuntimeError);
      ok(error.message.includes("running process 4242"), error.message);
      return true;
    });
    strictEqual(await Deno.readTextFile(path), "4242\n");
    releasePidFileSync(path, 4242);
    await rejects(Deno.stat(path), Deno.errors.NotFound);
    // Unlocked, naming no process (above pid_max): stale.
    await Deno.writeTextFile(path, "4000000\n");
    await acquirePidFile(path, 4343);
    strictEqual(await Deno.readTextFile(path), "4343\n");
    releasePidFileSync(path, 4343);
    // Unlocked, naming a live process that is not sqsrun: stale too.
    await Deno.writeTextFile(path, `${stranger.pid}\n`);
    ok(processAlive(stranger.pid) && !looksLikeSqsrun(stranger.pid));
    await acquirePidFile(path, 4444);
    strictEqual(await Deno.readTextFile(path), "4444\n");
    releasePidFileSync(path, 4444);
    // Unlocked, naming a live older sqsrun: refused.
    await new Promise((resolve) => setTimeout(resolve, 200));
    await Deno.writeTextFile(path, `${older.pid}\n`);
    ok(looksLikeSqsrun(older.pid), Deno.readTextFileSync(`/proc/${older.pid}/cmdline`));
    await rejects(acquirePidFile(path, 4545), RuntimeError);
    // Garbage is not a pid: stale.
    await Deno.writeTextFile(path, "not a pid\n");
    await acquirePidFile(path, 4646);
    strictEqual(await Deno.readTextFile(path), "4646\n");
    // Release removes only our own pid file.
    releasePidFileSync(path, 1);
    ok(await Deno.stat(path));
    releasePidFileSync(path, 4646);
    await rejects(Deno.stat(path), Deno.errors.NotFound);
  } finally {
    for (const child of [stranger, older]) {
      child.kill("SIGKILL");
      await child.status;
    }
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("acquirePidFile(): the lock of a daemon that was SIGKILLed is gone with it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sqsrun-pidlock-" });
  const path = `${dir}/x.pid`;
  const module = new URL("../src/daemon.ts", import.meta.url).href;
  const holder = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `const { acquirePidFile } = await import(${JSON.stringify(module)});
await acquirePidFile(${JSON.stringify(path)});
console.log("held");
setTimeout(() => {}, 60_000);`,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  try {
    const reader = holder.stdout.getReader();
    const { value } = await reader.read();
    strictEqual(new TextDecoder().decode(value).trim(), "held");
    reader.releaseLock();
    // deno eval's command line does not say sqsrun: only the lock keeps it.
    await rejects(acquirePidFile(path, 4747), RuntimeError);
    holder.kill("SIGKILL");
    await holder.status;
    await acquirePidFile(path, 4848);
    strictEqual(await Deno.readTextFile(path), "4848\n");
    releasePidFileSync(path, 4848);
  } finally {
    try {
      holder.kill("SIGKILL");
    } catch { /* exited */ }
    await holder.stdout.cancel().catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("processAlive(): true for a running process, false once it exited (even unreaped)", async () => {
  const child = new Deno.Command("sleep", { args: ["30"] }).spawn();
  ok(processAlive(child.pid));
  ok(processAlive(Deno.pid));
  child.kill("SIGKILL");
  await child.status;
  ok(!processAlive(child.pid));
  const quick = new Deno.Command("true").spawn();
  // Exited but not awaited: possibly a zombie still, which counts as gone.
  await new Promise((resolve) => setTimeout(resolve, 300));
  ok(!processAlive(quick.pid));
  await quick.status;
});
