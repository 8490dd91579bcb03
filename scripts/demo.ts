/**
 * `deno task demo`: sqsrun end to end on a local SQS emulator. Starts moto on
 * loopback (installed into `.cache/venv` on the first run: needs python3 with venv),
 * creates a queue, pushes a few messages with `sqsrun
 * --push`, runs the worker with `examples/hello_job.sh` until the queue is empty,
 * then stops everything it started.
 *
 * @module
 */
import { join } from "node:path";
import { PROJECT_ROOT, startLocalAws, stopLocalAws } from "./local_aws.ts";

const MAIN = join(PROJECT_ROOT, "src", "main.ts");
const JOB = join(PROJECT_ROOT, "examples", "hello_job.sh");
const QUEUE = "sqsrun-demo";
const BODIES = [
  '{"task":"resize","image":"cat.png"}',
  "hello, world",
  "please fail once",
  "ünïcödé ✓",
];

interface QueueCounts {
  name: string;
  visible: number;
  in_flight: number;
  delayed: number;
}

function heading(text: string): void {
  console.log(`\n\x1b[1m== ${text}\x1b[0m`);
}

/** Runs `sqsrun ARGS`, echoing the command and its output; throws on a non-zero exit. */
async function sqsrun(args: string[], env: Record<string, string>): Promise<string> {
  console.log(`$ sqsrun ${args.map((arg) => (/[\s"'{}]/.test(arg) ? `'${arg}'` : arg)).join(" ")}`);
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", MAIN, ...args],
    env,
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const text = new TextDecoder().decode(output.stdout);
  Deno.stdout.writeSync(output.stdout);
  if (!output.success) throw new Error(`sqsrun ${args[0]} failed with exit code ${output.code}`);
  return text;
}

async function main(): Promise<void> {
  heading("starting a local SQS (moto) on 127.0.0.1");
  // moto alone: Python is all the demo needs besides Deno (ElasticMQ would need Java and Maven).
  const state = await startLocalAws({
    stateDir: join(PROJECT_ROOT, ".cache", "demo"),
    servers: ["moto"],
  });
  const env = {
    AWS_ACCESS_KEY_ID: "demo",
    AWS_SECRET_ACCESS_KEY: "demo",
    AWS_REGION: "us-east-1",
    AWS_ENDPOINT_URL: state.moto.url,
  };
  let worker: Deno.ChildProcess | undefined;
  try {
    heading(`endpoint ${state.moto.url}`);
    await sqsrun(["--create", "-q", QUEUE, "--attr", "VisibilityTimeout=30"], env);
    for (const body of BODIES) await sqsrun(["--push", body, "-q", QUEUE], env);
    await sqsrun(["--list", "--counts"], env);

    heading("running the worker: sqsrun -q sqsrun-demo --exec examples/hello_job.sh -c 2");
    worker = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--quiet",
        MAIN,
        "-q",
        QUEUE,
        "--exec",
        JOB,
        "-c",
        "2",
        "--wait",
        "2",
        "--log-format",
        "text",
      ],
      env: { ...env, PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" },
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      const output = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--quiet", MAIN, "--list", "--counts", "--json", "-q", QUEUE],
        env,
        stdout: "piped",
        stderr: "null",
      }).output();
      if (!output.success) continue;
      const listing = JSON.parse(new TextDecoder().decode(output.stdout)) as {
        queues: QueueCounts[];
      };
      const queue = listing.queues.find((entry) => entry.name === QUEUE);
      if (queue && queue.visible + queue.in_flight + queue.delayed === 0) break;
    }
    heading("queue empty: stopping the worker with SIGTERM (it drains, then exits 0)");
    worker.kill("SIGTERM");
    const status = await worker.status;
    worker = undefined;
    console.log(`worker exit code: ${status.code}`);
    await sqsrun(["--delete", "-q", QUEUE], env);
  } finally {
    if (worker) {
      worker.kill("SIGKILL");
      await worker.status;
    }
    heading("stopping the emulator");
    await stopLocalAws(state);
  }
}

if (import.meta.main) {
  try {
    await main();
  } catch (error) {
    console.error(`demo: ${error instanceof Error ? error.message : error}`);
    Deno.exit(1);
  }
}
