/**
 * How an exec job starts: its program runs only once the worker's watchdog knows
 * its process group, its stdin is the body byte for byte (the go byte the gated
 * wrapper waits for never reaches it), and a worker SIGKILLed while a batch starts
 * leaves no job running, nor one that read a body cut short.
 *
 * Only APIs that predate the go byte are used here, so that the file also runs
 * against older code (it then fails: that is what it is for).
 */
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { execRunner } from "../src/runners/exec.ts";
import * as isolationModule from "../src/runners/process/isolation.ts";
import { detectIsolation, findSetsid, type Isolation } from "../src/runners/process/isolation.ts";
import type { LogFields, Logger } from "../src/log.ts";
import type { JobMessage } from "../src/worker/message.ts";
import { WATCHDOG_SCRIPT } from "../src/runners/process/watchdog.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const isLinux = Deno.build.os === "linux";

/** The gate, where this code has one (older code had none). */
const SH_GATE: string[] = (isolationModule as { SH_GATE?: string[] }).SH_GATE ?? [];

type Kind = "helper" | "setsid" | "detached";

/** The isolations this system can test: the one detected, and the fallbacks. */
function kinds(): Kind[] {
  if (!isLinux) return [];
  return findSetsid() ? ["helper", "setsid", "detached"] : ["helper", "detached"];
}

/** Returns isolation `kind` as the worker would set it up (the helper: as detected). */
async function isolationOf(kind: Kind): Promise<Isolation> {
  if (kind === "helper") return await detectIsolation();
  const gated = SH_GATE.length > 0;
  if (kind === "setsid") {
    return {
      kind: "wrapper",
      name: "setsid",
      path: findSetsid()!,
      prefix: ["--", ...SH_GATE],
      gated,
      remove: () => {},
    } as Isolation;
  }
  return { kind: "detached", prefix: SH_GATE, gated } as Isolation;
}

/** A Logger that keeps what it is told. */
function recordingLogger(lines: { level: string; msg: string; fields?: LogFields }[]): Logger {
  const log = (level: string) => (msg: string, fields?: LogFields) => {
    lines.push({ level, msg, fields });
  };
  const logger: Logger = {
    debug: log("debug"),
    info: log("info"),
    warn: log("warn"),
    error: log("error"),
    with: () => logger,
    reopen: () => {},
    close: () => Promise.resolve(),
  };
  return logger;
}

function message(id: string): JobMessage {
  return {
    id,
    receiptHandle: "handle",
    body: "",
    queueUrl: "https://sqs.example/queue",
    receiveCount: 1,
    attributes: {},
    receiveSentAt: performance.now(),
  };
}

async function script(dir: string, name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await Deno.writeTextFile(path, `#!/bin/sh\n${text}\n`, { mode: 0o755 });
  return path;
}

/** Pids of the live processes whose environment holds `marker`: jobs and all they started. */
function markedProcesses(marker: string): number[] {
  const found: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      if (!Deno.readTextFileSync(`/proc/${entry.name}/environ`).includes(marker)) continue;
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      if (stat[stat.lastIndexOf(")") + 2] !== "Z") found.push(Number(entry.name));
    } catch {
      // Gone, or not ours to read.
    }
  }
  return found;
}

/** A body whose bytes depend on their position, with two-byte characters. */
function patterned(length: number): string {
  const parts: string[] = [];
  for (let i = 0; i < length; i++) parts.push(i % 7 === 0 ? "é" : String.fromCharCode(97 + i % 26));
  return parts.join("");
}

for (const kind of kinds()) {
  for (const spawner of [true, false]) {
    const thread = spawner ? "spawner thread" : "main thread";
    Deno.test(`exec start (${kind}, ${thread}): the job's stdin is its body, byte for byte`, async () => {
      const dir = await Deno.makeTempDir({ prefix: "sqsrun-exec-start-" });
      const runner = execRunner(
        {
          command: await script(dir, "job.sh", 'exec cat > "$DIR/out.$SQSRUN_MESSAGE_ID"'),
          args: [],
          shell: false,
          env: { DIR: dir },
        },
        await isolationOf(kind),
        { spawner },
      );
      try {
        const lines: { level: string; msg: string }[] = [];
        const log = recordingLogger(lines);
        const encoder = new TextEncoder();
        const chunks = [
          encoder.encode("first\n"),
          new Uint8Array(0),
          encoder.encode(patterned(70_000)),
        ];
        const bodies: [string, string | Uint8Array[]][] = [
          ["empty", ""],
          ["newline", "\n"],
          ["4094", "x".repeat(4094)],
          ["4095", "x".repeat(4095)],
          ["4096", "\n".repeat(4096)],
          ["patterned", patterned(5000)],
          ["1MiB", patterned(1024 * 1024)],
          ["stream", chunks],
        ];
        const jobs = bodies.map(([id, body]) => {
          const input = typeof body === "string" ? body : ReadableStream.from(body);
          return runner.start(message(id), { body: input, env: {}, context: {} }, log).done;
        });
        for (const result of await Promise.all(jobs)) {
          assert.deepEqual(result, { code: 0, signal: null, error: undefined });
        }
        for (const [id, body] of bodies) {
          const expected = typeof body === "string"
            ? encoder.encode(body)
            : new Uint8Array(body.flatMap((chunk) => [...chunk]));
          const got = await Deno.readFile(join(dir, `out.${id}`));
          assert.equal(got.length, expected.length, `body ${id}: length`);
          assert.ok(got.every((byte, i) => byte === expected[i]), `body ${id}: bytes differ`);
        }
        assert.deepEqual(lines.filter((line) => line.level === "warn"), []);
      } finally {
        await runner.close();
        await Deno.remove(dir, { recursive: true });
      }
    });
  }
}

Deno.test({
  name: "exec start: a job that exits without reading a small body costs no broken-pipe error",
  ignore: !isLinux,
  fn: async () => {
    const runner = execRunner(
      { command: "true", args: [], shell: false, env: {} },
      await isolationOf("helper"),
    );
    try {
      const lines: { level: string; msg: string }[] = [];
      const log = recordingLogger(lines);
      const input = { body: "x".repeat(1000), env: {}, context: {} };
      const done = Array.from({ length: 10 }, (_, i) => runner.start(message(`m${i}`), input, log));
      for (const job of done) assert.equal((await job.done).code, 0);
      // The writes to stdin settle right after the exits.
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.deepEqual(lines.filter((line) => line.msg.includes("stdin")), []);
    } finally {
      await runner.close();
    }
  },
});

Deno.test({
  name: "watchdog: kills a listed leader whose group does not exist yet, and every group",
  ignore: !isLinux,
  fn: async () => {
    // A wrapper between its spawn and its setsid() is still in the worker's group:
    // as here, a plain child of this process, whose pid names no group.
    const early = new Deno.Command("sleep", { args: ["30"], stdin: "null" }).spawn();
    const grouped = new Deno.Command("sleep", { args: ["30"], stdin: "null", detached: true })
      .spawn();
    const ended = new Deno.Command("sleep", { args: ["30"], stdin: "null", detached: true })
      .spawn();
    try {
      const watchdog = new Deno.Command("/bin/sh", {
        args: ["-c", WATCHDOG_SCRIPT, "sqsrun-watchdog", String(Deno.pid)],
        stdin: "piped",
      }).spawn();
      const writer = watchdog.stdin.getWriter();
      const lines = `+ ${early.pid}\n+ ${grouped.pid}\n+ ${ended.pid}\n- ${ended.pid}\n`;
      await writer.write(new TextEncoder().encode(lines));
      await writer.close();
      await watchdog.status;
      assert.equal((await early.status).signal, "SIGKILL");
      assert.equal((await grouped.status).signal, "SIGKILL");
      await new Promise((resolve) => setTimeout(resolve, 100));
      ended.kill("SIGCONT"); // Still running: it was removed from the list.
    } finally {
      for (const child of [early, grouped, ended]) {
        try {
          child.kill("SIGKILL");
        } catch {
          // Already gone.
        }
        await child.status;
      }
    }
  },
});

/**
 * Spawns a job through execRunner from the first task and from a timer, as a
 * worker does, and prints the pids of the jobs, then of the main thread's children.
 */
const THREAD_CHECK = `
const [root] = Deno.args;
const { execRunner } = await import(root + "/src/runners/exec.ts");
const { detectIsolation } = await import(root + "/src/runners/process/isolation.ts");
const log = { debug() {}, info() {}, warn() {}, error() {}, with() { return log; }, reopen() {}, close: async () => {} };
const runner = execRunner({ command: "sleep", args: ["30"], shell: false, env: {} }, await detectIsolation());
const message = (id) => ({ id, receiptHandle: "h", body: "", queueUrl: "q", receiveCount: 1, attributes: {}, receiveSentAt: 0 });
const jobs = [runner.start(message("first"), { body: "", env: {}, context: {} }, log)];
await new Promise((resolve) => setTimeout(resolve, 20));
jobs.push(runner.start(message("second"), { body: "", env: {}, context: {} }, log));
// A spawner reports its pids a moment after the start.
while (jobs.some((job) => job.pid === undefined)) await new Promise((resolve) => setTimeout(resolve, 5));
await new Promise((resolve) => setTimeout(resolve, 200));
console.log(jobs.map((job) => job.pid).join(" "));
// Each thread that has children: its name and their pids.
for (const task of Deno.readDirSync("/proc/self/task")) {
  const children = Deno.readTextFileSync("/proc/self/task/" + task.name + "/children").trim();
  const name = task.name === String(Deno.pid) ? "main" : Deno.readTextFileSync("/proc/self/task/" + task.name + "/comm").trim();
  if (children) console.log(name + ":" + children);
}
for (const job of jobs) job.signal("SIGKILL");
await Promise.all(jobs.map((job) => job.done));
await runner.close();
`;

Deno.test({
  name:
    "exec start: jobs are children of the main thread or a spawner thread, which outlive them (PR_SET_PDEATHSIG fires on its exit)",
  ignore: !isLinux,
  fn: async () => {
    try {
      await Deno.stat(`/proc/self/task/${Deno.pid}/children`);
    } catch {
      console.log("not run: this kernel has no /proc/PID/task/TID/children");
      return;
    }
    // `deno run`, as the worker runs (`deno test` runs tests on another thread).
    const dir = await Deno.makeTempDir({ prefix: "sqsrun-exec-thread-" });
    try {
      await Deno.writeTextFile(join(dir, "check.ts"), THREAD_CHECK);
      const output = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", join(dir, "check.ts"), ROOT],
        stdin: "null",
      }).output();
      const [jobs, ...parents] = new TextDecoder().decode(output.stdout).trim().split("\n");
      assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
      for (const pid of jobs.split(" ")) {
        const parent = parents.find((line) => line.split(":")[1].split(" ").includes(pid));
        assert.ok(parent, `job ${pid} is no thread's child 200 ms after its start: ${parents}`);
        // The main thread, or a Web Worker's (a spawner), never a pool thread that idles out.
        assert.match(parent, /^(main|worker-\d+):/, `job ${pid}'s parent thread: ${parent}`);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/**
 * The worker stand-in: starts `count` jobs through execRunner in one synchronous
 * loop, as a worker does with a batch, then SIGKILLs itself at once ("now") or
 * after a few milliseconds.
 */
const STAND_IN = `
const [root, kind, count, killAfter, runId, body, job, dir] = Deno.args;
const { execRunner } = await import(root + "/src/runners/exec.ts");
const isolationModule = await import(root + "/src/runners/process/isolation.ts");
const SH_GATE = isolationModule.SH_GATE ?? [];
const gated = SH_GATE.length > 0;
const isolation = kind === "helper"
  ? await isolationModule.detectIsolation()
  : kind === "setsid"
  ? { kind: "wrapper", name: "setsid", path: isolationModule.findSetsid(), prefix: ["--", ...SH_GATE], gated, remove() {} }
  : { kind: "detached", prefix: SH_GATE, gated };
const log = { debug() {}, info() {}, warn() {}, error() {}, with() { return log; }, reopen() {}, close: async () => {} };
// The helper's directory, for the test to remove: a SIGKILLed worker cannot.
if (isolation.kind === "wrapper" && isolation.name === "session-helper") console.log(isolation.path);
const runner = execRunner({ command: job, args: [], shell: false, env: { DIR: dir } }, isolation);
for (let i = 0; i < Number(count); i++) {
  const message = { id: runId + "-" + i, receiptHandle: "h", body, queueUrl: "q", receiveCount: 1, attributes: {}, receiveSentAt: 0 };
  runner.start(message, { body, env: {}, context: {} }, log);
}
if (killAfter === "now") Deno.kill(Deno.pid, "SIGKILL");
setTimeout(() => Deno.kill(Deno.pid, "SIGKILL"), Number(killAfter));
`;

for (const kind of kinds()) {
  Deno.test(`exec start (${kind}): a worker SIGKILLed as a batch starts leaves no job behind`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "sqsrun-exec-kill-" });
    try {
      const standIn = join(dir, "stand_in.ts");
      await Deno.writeTextFile(standIn, STAND_IN);
      // Says what it read (whole or not at all: it may be killed while it writes),
      // then runs long: a job that outlives its worker is caught.
      const job = await script(
        dir,
        "job.sh",
        `n=$(wc -c)
echo "$n $SQSRUN_BODY_BYTES" > "$DIR/part.$$" && mv "$DIR/part.$$" "$DIR/read.$$"
sleep 6`,
      );
      const body = patterned(300);
      const bodyBytes = new TextEncoder().encode(body).length;
      for (const killAfter of ["now", "0", "1", "3", "10", "25"]) {
        const runId = `sqsrun-test-${crypto.randomUUID()}`;
        const standInRun = await new Deno.Command(Deno.execPath(), {
          args: ["run", "-A", standIn, ROOT, kind, "20", killAfter, runId, body, job, dir],
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        }).output();
        const helper = new TextDecoder().decode(standInRun.stdout).trim();
        if (helper.endsWith("/session-helper")) {
          await Deno.remove(dirname(helper), { recursive: true }).catch(() => {});
        }
        assert.equal(standInRun.signal, "SIGKILL", new TextDecoder().decode(standInRun.stderr));
        const killed = Date.now();
        const marker = `SQSRUN_MESSAGE_ID=${runId}-`;
        let left = markedProcesses(marker);
        while (left.length > 0 && Date.now() - killed < 1_000) {
          await new Promise((resolve) => setTimeout(resolve, 20));
          left = markedProcesses(marker);
        }
        for (const pid of left) Deno.kill(pid, "SIGKILL");
        assert.deepEqual(left, [], `killed after ${killAfter}: job processes outlived the worker`);
        for (const entry of Deno.readDirSync(dir)) {
          if (entry.name.startsWith("part.")) await Deno.remove(join(dir, entry.name));
          if (!entry.name.startsWith("read.")) continue;
          const read = (await Deno.readTextFile(join(dir, entry.name))).trim();
          assert.equal(read, `${bodyBytes} ${bodyBytes}`, `killed after ${killAfter}: a cut body`);
          await Deno.remove(join(dir, entry.name));
        }
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}
