/**
 * Profiles sqsrun's hot path once: a worker at `-c 10` runs `/bin/true` (or
 * the job flags given after `--`) for a queue of messages while the V8
 * inspector samples it; prints the functions with the most self time, grouped
 * by where they live.
 *
 *     deno run -A scripts/bench/profile.ts ENDPOINT_URL [MESSAGES] [-- FLAGS...]
 *     deno run -A scripts/bench/profile.ts URL 5000 -- --post http://127.0.0.1:8080/ -c 10
 *
 * @module
 */
import {
  CreateQueueCommand,
  DeleteQueueCommand,
  GetQueueAttributesCommand,
  SendMessageBatchCommand,
  SQSClient,
} from "@aws-sdk/client-sqs";
import { join } from "node:path";
import { PROJECT_ROOT } from "../local_aws.ts";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount: number;
}

/** Sums self samples per function and per area (our code, the SDK, Deno's runtime). */
export function summarize(
  nodes: ProfileNode[],
): { byFunction: [string, number][]; byArea: [string, number][] } {
  const total = nodes.reduce((sum, node) => sum + node.hitCount, 0) || 1;
  const functions = new Map<string, number>();
  const areas = new Map<string, number>();
  for (const node of nodes) {
    const { functionName, url, lineNumber } = node.callFrame;
    const area = url.includes("/work/") || url.includes("/src/")
      ? "sqsrun"
      : url.includes("npm")
      ? "npm packages (AWS SDK)"
      : url.startsWith("ext:") || url.startsWith("node:")
      ? "Deno runtime (JS)"
      : functionName === "(idle)"
      ? "idle"
      : functionName === "(program)" || functionName === "(garbage collector)"
      ? functionName
      : "other";
    const name = `${functionName || "(anonymous)"} ${url.split("/").slice(-2).join("/")}:${
      lineNumber + 1
    }`;
    functions.set(name, (functions.get(name) ?? 0) + node.hitCount);
    areas.set(area, (areas.get(area) ?? 0) + node.hitCount);
  }
  const share = (entries: Map<string, number>) =>
    [...entries].sort((a, b) => b[1] - a[1]).map(([k, v]) =>
      [k, (v / total) * 100] as [string, number]
    );
  return { byFunction: share(functions).slice(0, 30), byArea: share(areas) };
}

async function main(): Promise<void> {
  const separator = Deno.args.indexOf("--");
  const [endpoint, countText = "2000"] = separator < 0 ? Deno.args : Deno.args.slice(0, separator);
  const jobFlags = separator < 0
    ? ["--exec", "/bin/true", "-c", "10"]
    : Deno.args.slice(separator + 1);
  const count = Number(countText);
  const client = new SQSClient({
    region: "us-east-1",
    endpoint,
    credentials: { accessKeyId: "profile", secretAccessKey: "profile" },
  });
  const url = (await client.send(new CreateQueueCommand({ QueueName: `profile-${Date.now()}` })))
    .QueueUrl!;
  for (let start = 0; start < count; start += 10) {
    await client.send(
      new SendMessageBatchCommand({
        QueueUrl: url,
        Entries: Array.from({ length: 10 }, (_, i) => ({ Id: String(i), MessageBody: "x" })),
      }),
    );
  }
  const port = 9400 + Math.floor(Math.random() * 500);
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--quiet",
      `--inspect=127.0.0.1:${port}`,
      join(PROJECT_ROOT, "src", "main.ts"),
      "-q",
      url,
      ...jobFlags,
      "--wait",
      "1",
      "-o",
      "/dev/null",
    ],
    env: {
      AWS_ACCESS_KEY_ID: "profile",
      AWS_SECRET_ACCESS_KEY: "profile",
      AWS_REGION: "us-east-1",
    },
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    let target: { webSocketDebuggerUrl: string } | undefined;
    for (let i = 0; i < 50 && !target; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      target = await fetch(`http://127.0.0.1:${port}/json`).then((r) => r.json()).then((l) => l[0])
        .catch(() => undefined);
    }
    if (!target) throw new Error("the inspector did not answer");
    const socket = new WebSocket(target.webSocketDebuggerUrl);
    await new Promise((resolve) => socket.onopen = resolve);
    let nextId = 1;
    const pending = new Map<number, (value: unknown) => void>();
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      pending.get(message.id)?.(message.result);
    };
    const call = (method: string, params = {}) =>
      new Promise<unknown>((resolve) => {
        const id = nextId++;
        pending.set(id, resolve);
        socket.send(JSON.stringify({ id, method, params }));
      });
    await call("Profiler.enable");
    await call("Profiler.setSamplingInterval", { interval: 200 });
    await call("Profiler.start");
    await call("Runtime.runIfWaitingForDebugger");
    const started = performance.now();
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      const attributes = (await client.send(
        new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ["All"] }),
      )).Attributes ?? {};
      if (
        Number(attributes.ApproximateNumberOfMessages) +
            Number(attributes.ApproximateNumberOfMessagesNotVisible) === 0
      ) break;
      if (performance.now() - started > 300_000) throw new Error("queue did not drain");
    }
    const seconds = (performance.now() - started) / 1000;
    const { profile } = await call("Profiler.stop") as { profile: { nodes: ProfileNode[] } };
    socket.close();
    const summary = summarize(profile.nodes);
    console.log(`${count} messages in ${seconds.toFixed(1)} s (${(count / seconds).toFixed(0)}/s)`);
    console.log("\nself time by area:");
    for (const [area, percent] of summary.byArea) {
      console.log(`  ${percent.toFixed(1).padStart(5)}%  ${area}`);
    }
    console.log("\ntop functions by self time:");
    for (const [name, percent] of summary.byFunction) {
      console.log(`  ${percent.toFixed(1).padStart(5)}%  ${name}`);
    }
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await client.send(new DeleteQueueCommand({ QueueUrl: url })).catch(() => {});
  }
}

if (import.meta.main) await main();
