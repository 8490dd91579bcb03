/**
 * Security properties of the worker, checked where an attacker or a curious user
 * would look (docs/reliability.md, "Security checks"):
 *
 * - secrets (`-s`, a profile's secret key and session token) never reach the log,
 *   stderr, `/metrics`, a job's environment or a job's argv (`/proc/<pid>/cmdline`),
 *   in the foreground or as a daemon (whose re-spawn adds them nowhere new);
 * - message bodies and attributes are data: never run by a shell, with or without
 *   `--shell`;
 * - the HTTP endpoint listens on loopback unless told otherwise.
 *
 * The configuration file's mode 0600 and the warning about a world-readable file
 * with a secret are tested in config_test.ts and cli_test.ts.
 */
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { join } from "node:path";
import { awsEnv, motoEndpoint, uniqueName } from "./support/local_aws.ts";
import { runCli } from "./support/cli.ts";
import { createQueue, deleteQueue, queueCounts, sendMessages, testClient } from "./support/sqs.ts";
import { startWorker, waitUntil, type WorkerProcess } from "./support/worker.ts";

const testOptions = { sanitizeOps: false, sanitizeResources: false };

const CLI_SECRET = "CliSecret-9c1f-do-not-print";
const PROFILE_SECRET = "ProfileSecret-44ab-do-not-print";
const SESSION_TOKEN = "SessionToken-7d2e-do-not-print";
const SECRETS = [CLI_SECRET, PROFILE_SECRET, SESSION_TOKEN];

/**
 * The job: records its pid, its environment and its argv as the kernel sees them,
 * then waits a moment so the test can read /proc too; fails for the body "fail".
 */
const JOB = `#!/bin/sh
body=$(cat)
tr '\\0' '\\n' < /proc/$$/environ > "$DIR/environ-$SQSRUN_MESSAGE_ID"
tr '\\0' ' ' < /proc/$$/cmdline > "$DIR/cmdline-$SQSRUN_MESSAGE_ID"
echo $$ > "$DIR/pid-$SQSRUN_MESSAGE_ID"
sleep 1
echo "ran $body"
[ "$body" != fail ]
`;

interface Fixture {
  url: string;
  dir: string;
  job: string;
  /** The environment without credentials (each test adds its own). */
  env: Record<string, string>;
}

async function withFixture(body: (fixture: Fixture) => Promise<void>): Promise<void> {
  const endpoint = motoEndpoint();
  const client = testClient(endpoint);
  const url = await createQueue(client, uniqueName("security"));
  const dir = await Deno.makeTempDir({ prefix: "sqsrun-security-" });
  const job = join(dir, "job.sh");
  await Deno.writeTextFile(job, JOB.replace("#!/bin/sh\n", `#!/bin/sh\nDIR='${dir}'\n`));
  await Deno.chmod(job, 0o755);
  const env: Record<string, string> = {
    ...awsEnv(endpoint),
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    HOME: dir,
  };
  delete env.AWS_ACCESS_KEY_ID;
  delete env.AWS_SECRET_ACCESS_KEY;
  try {
    await sendMessages(client, url, ["ok", "fail"]);
    await body({ url, dir, job, env });
  } finally {
    await deleteQueue(client, url);
    client.destroy();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** Every text file a job wrote (environ-*, cmdline-*), joined. */
async function jobTraces(dir: string): Promise<string> {
  let text = "";
  for await (const entry of Deno.readDir(dir)) {
    if (/^(environ|cmdline)-/.test(entry.name)) {
      text += `${entry.name}:\n${await Deno.readTextFile(join(dir, entry.name))}\n`;
    }
  }
  return text;
}

function assertNoSecret(where: string, text: string): void {
  for (const secret of SECRETS) {
    ok(!text.includes(secret), `${where} holds a secret:\n${text.slice(0, 2_000)}`);
  }
}

/** Waits for the HTTP line, then the two jobs; returns the /metrics text. */
async function runBothJobs(worker: WorkerProcess, dir: string): Promise<string> {
  const serving = await worker.waitForLine((line) => line.msg === "serving /metrics and /healthz");
  await waitUntil(
    "both jobs ended",
    () => worker.lines.filter((line) => /^job (finished|failed)$/.test(line.msg)).length >= 2,
    30_000,
  );
  const traces = await jobTraces(dir);
  ok(traces.includes("environ-") && traces.includes("cmdline-"), "the jobs recorded themselves");
  const response = await fetch(`${serving.url}/metrics`);
  return await response.text();
}

Deno.test({
  name: "security: -s never reaches the log, stderr, /metrics, a job's environment or argv",
  ...testOptions,
  fn: () =>
    withFixture(async ({ url, dir, job, env }) => {
      const worker = startWorker(
        [
          "-q",
          url,
          "-k",
          "test",
          "-s",
          CLI_SECRET,
          "--exec",
          job,
          "-c",
          "2",
          "--wait",
          "1",
          "--http",
          ":0",
          "--log-level",
          "debug",
          "--backoff",
          "60",
        ],
        { env },
      );
      try {
        const metrics = await runBothJobs(worker, dir);
        ok(metrics.includes("sqsrun_jobs_started_total"), metrics.slice(0, 300));
        assertNoSecret("/metrics", metrics);
        const traces = await jobTraces(dir);
        assertNoSecret("a job's environment or argv", traces);
        ok(!/^AWS_SECRET_ACCESS_KEY=/m.test(traces), "a secret key variable reached the job");
        // The worker's own argv does hold -s: docs/reliability.md tells operators why
        // and what to use instead (the credential chain, or a 0600 file).
        ok(
          Deno.readTextFileSync(`/proc/${worker.pid}/cmdline`).includes(CLI_SECRET),
          "the worker's argv is as documented",
        );
      } finally {
        await worker.stop();
      }
      assertNoSecret("the log", JSON.stringify(worker.lines));
      assertNoSecret("stderr", worker.stderr());
    }),
});

Deno.test({
  name: "security: a profile's secret key and session token reach no job, log or /metrics",
  ...testOptions,
  fn: () =>
    withFixture(async ({ url, dir, job, env }) => {
      const credentials = join(dir, "credentials");
      await Deno.writeTextFile(
        credentials,
        `[default]\naws_access_key_id = test\naws_secret_access_key = ${PROFILE_SECRET}\n` +
          `aws_session_token = ${SESSION_TOKEN}\n`,
        { mode: 0o600 },
      );
      const worker = startWorker(
        [
          "-q",
          url,
          "--exec",
          job,
          "-c",
          "2",
          "--wait",
          "1",
          "--http",
          ":0",
          "--log-level",
          "debug",
        ],
        { env: { ...env, AWS_SHARED_CREDENTIALS_FILE: credentials } },
      );
      try {
        const metrics = await runBothJobs(worker, dir);
        assertNoSecret("/metrics", metrics);
        const traces = await jobTraces(dir);
        assertNoSecret("a job's environment or argv", traces);
        ok(!/^AWS_SESSION_TOKEN=/m.test(traces), "a session token variable reached the job");
      } finally {
        await worker.stop();
      }
      assertNoSecret("the log", JSON.stringify(worker.lines));
      assertNoSecret("stderr", worker.stderr());
    }),
});

Deno.test({
  name: "security: a start-up error of the worker does not print -s",
  ...testOptions,
  async fn() {
    const endpoint = motoEndpoint();
    const env: Record<string, string> = { ...awsEnv(endpoint) };
    delete env.AWS_SECRET_ACCESS_KEY;
    const result = await runCli(
      ["-q", uniqueName("missing"), "-k", "test", "-s", CLI_SECRET, "--exec", "/bin/cat"],
      { env, timeoutMs: 30_000 },
    );
    strictEqual(result.code, 1, result.stderr);
    ok(result.stderr.startsWith("sqsrun: "), result.stderr);
    assertNoSecret("stderr", result.stderr + result.stdout);
  },
});

Deno.test({
  name: "security: the daemon's re-spawn puts -s nowhere new (environment, log, job, files)",
  ...testOptions,
  fn: () =>
    withFixture(async ({ url, dir, job, env }) => {
      const pidFile = join(dir, "sqsrun.pid");
      const started = await runCli(
        ["-q", url, "-k", "test", "-s", CLI_SECRET, "--exec", job, "--wait", "1", "-d", pidFile],
        { env, cwd: dir, timeoutMs: 60_000 },
      );
      strictEqual(started.code, 0, started.stderr);
      assertNoSecret("the parent's output", started.stdout + started.stderr);
      const pid = Number(started.stdout.trim());
      try {
        const logPath = join(dir, "sqsrun.log");
        await waitUntil("both jobs ended", async () => {
          const text = await Deno.readTextFile(logPath).catch(() => "");
          return (text.match(/"msg":"job (finished|failed)"/g) ?? []).length >= 2;
        }, 30_000);
        // /proc/PID/environ is the environment the daemon was started with.
        assertNoSecret("the daemon's environment", Deno.readTextFileSync(`/proc/${pid}/environ`));
        // Its argv repeats the user's command line, -s included: nothing new, documented.
        const traces = await jobTraces(dir);
        assertNoSecret("a job's environment or argv", traces);
        ok(!traces.includes("SQSRUN_DAEMON_STATUS"), "the daemon's start-up marker reached a job");
        assertNoSecret("the daemon's log", await Deno.readTextFile(logPath));
        assertNoSecret("the pid file", await Deno.readTextFile(pidFile));
        const files = [...Deno.readDirSync(dir)].map((entry) => entry.name);
        ok(!files.some((name) => name.endsWith(".status")), files.join(" "));
      } finally {
        try {
          Deno.kill(pid, "SIGTERM");
        } catch { /* gone */ }
        await waitUntil("the daemon exits", () => !isAlive(pid), 30_000).catch(() => {
          try {
            Deno.kill(pid, "SIGKILL");
          } catch { /* gone */ }
        });
      }
    }),
});

function isAlive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return !/\)\s+[ZX]/.test(stat);
  } catch {
    return false;
  }
}

Deno.test({
  name: "security: bodies and attributes are never run by a shell, with or without --shell",
  ...testOptions,
  async fn() {
    const endpoint = motoEndpoint();
    const client = testClient(endpoint);
    const url = await createQueue(client, uniqueName("injection"));
    const dir = await Deno.makeTempDir({ prefix: "sqsrun-injection-" });
    const bodies = [
      `$(touch ${dir}/pwned-1)`,
      `\`touch ${dir}/pwned-2\``,
      `; touch ${dir}/pwned-3`,
      `x && touch ${dir}/pwned-4 || touch ${dir}/pwned-5`,
      `'; touch ${dir}/pwned-6; echo '`,
      `"$(touch ${dir}/pwned-7)"`,
    ];
    const attribute = `$(touch ${dir}/pwned-attr)`;
    const script = join(dir, "plain.sh");
    await Deno.writeTextFile(
      script,
      `#!/bin/sh\ncat > '${dir}/plain-'"$SQSRUN_MESSAGE_ID"\n` +
        `printf %s "$SQSRUN_ATTR_NOTE" > '${dir}/attr-'"$SQSRUN_MESSAGE_ID"\n`,
    );
    await Deno.chmod(script, 0o755);
    const env = { ...awsEnv(endpoint), PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" };
    const workers: WorkerProcess[] = [];
    try {
      for (const mode of ["plain", "shell"] as const) {
        const queue = mode === "plain" ? url : await createQueue(client, uniqueName("inject-sh"));
        const ids = await sendMessages(
          client,
          queue,
          bodies.map((body) => ({ body, attributes: { note: attribute } })),
        );
        const args = mode === "plain"
          ? ["--exec", script]
          : ["--shell", "--exec", `cat > "$1/shell-$SQSRUN_MESSAGE_ID"`, "--", dir];
        const worker = startWorker(["-q", queue, ...args, "-c", "3", "--wait", "1"], { env });
        workers.push(worker);
        await waitUntil(
          `${mode}: every job ran`,
          () => worker.lines.filter((line) => line.msg === "job finished").length === bodies.length,
          30_000,
        );
        for (const [index, id] of ids.entries()) {
          strictEqual(await Deno.readTextFile(join(dir, `${mode}-${id}`)), bodies[index]);
          if (mode === "plain") {
            strictEqual(await Deno.readTextFile(join(dir, `attr-${id}`)), attribute);
          }
        }
        await waitUntil(`${mode}: the queue is empty`, async () => {
          const counts = await queueCounts(client, queue);
          return counts.visible + counts.inFlight === 0;
        });
        if (mode === "shell") await deleteQueue(client, queue);
      }
      const pwned = [...Deno.readDirSync(dir)].map((entry) => entry.name)
        .filter((name) => name.startsWith("pwned"));
      deepStrictEqual(pwned, [], "a body or attribute was run by a shell");
    } finally {
      await Promise.all(workers.map((worker) => worker.stop()));
      await deleteQueue(client, url);
      client.destroy();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "security: --http with a port only listens on loopback",
  ...testOptions,
  fn: () =>
    withFixture(async ({ url, job, env }) => {
      const worker = startWorker(["-q", url, "--exec", job, "--wait", "1", "--http", "0"], {
        env: { ...env, AWS_ACCESS_KEY_ID: "test", AWS_SECRET_ACCESS_KEY: "test" },
      });
      try {
        const serving = await worker.waitForLine((l) => l.msg === "serving /metrics and /healthz");
        const address = new URL(String(serving.url));
        strictEqual(address.hostname, "127.0.0.1");
        const listening = listeningAddresses(Number(address.port));
        deepStrictEqual(listening, ["127.0.0.1"], "what the socket is bound to");
      } finally {
        await worker.stop();
      }
    }),
});

/** Local addresses of LISTEN sockets on `port`, from /proc/net/tcp and tcp6. */
function listeningAddresses(port: number): string[] {
  const found: string[] = [];
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = Deno.readTextFileSync(table);
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields.length < 4 || fields[3] !== "0A") continue; // 0A = LISTEN
      const [hex, portHex] = fields[1].split(":");
      if (parseInt(portHex, 16) !== port) continue;
      found.push(hex.length === 8 ? ipv4(hex) : `[${hex}]`);
    }
  }
  return found;
}

/** /proc/net/tcp writes IPv4 addresses as little-endian hex. */
function ipv4(hex: string): string {
  return [3, 2, 1, 0].map((i) => parseInt(hex.slice(i * 2, i * 2 + 2), 16)).join(".");
}
