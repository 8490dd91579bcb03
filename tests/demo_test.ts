/** `deno task demo` works end to end for a newcomer: admin commands, then the worker. */
import { ok, strictEqual } from "node:assert/strict";

Deno.test({
  name: "demo: creates a queue, pushes messages, runs the worker until the queue is empty",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", "scripts/demo.ts"],
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
    const output = await child.output();
    clearTimeout(timer);
    const text = new TextDecoder().decode(output.stdout);
    strictEqual(output.code, 0, text + new TextDecoder().decode(output.stderr));
    strictEqual(text.match(/job finished .*outcome=succeeded/g)?.length, 4, text);
    ok(text.includes("job failed"), "the demo shows a failed job being retried");
    ok(text.includes("worker exit code: 0"), text);
  },
});
