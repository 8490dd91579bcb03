/**
 * Unit tests of a `--run` job's report: the module's stack keeps only its own
 * frames (sqsrun's host and Deno's internals go), and no report carries an exit
 * code, since a module has none.
 */
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { moduleReport, moduleStack } from "../../src/runners/module/runner.ts";

/** sqsrun's own sources, as the runner finds them. */
const SRC = new URL("../../src/", import.meta.url).href;

const STACK = [
  "Error: kaboom",
  "    at helper (file:///srv/jobs/lib.ts:3:9)",
  "    at Module.run (file:///srv/jobs/job.ts:2:30)",
  `    at run (${SRC}runners/module/host.ts:253:23)`,
  `    at scope.onmessage (${SRC}runners/module/host.ts:294:12)`,
  "    at wrappedHandler (ext:deno_web/02_event.js:1:17044)",
  "    at dispatchWorkerMessage (ext:runtime_main/js/99_main.js:1:4952)",
  "    at Object.readFile (node:fs:10:2)",
].join("\n");

Deno.test("moduleStack(): the module's frames stay, sqsrun's and Deno's go", () => {
  strictEqual(
    moduleStack(STACK, SRC),
    "Error: kaboom\n" +
      "    at helper (file:///srv/jobs/lib.ts:3:9)\n" +
      "    at Module.run (file:///srv/jobs/job.ts:2:30)",
  );
});

Deno.test("moduleStack(): a message of several lines is kept; nothing left is undefined", () => {
  strictEqual(
    moduleStack("Error: two\nlines\n    at x (ext:core/01.js:1:1)", SRC),
    "Error: two\nlines",
  );
  strictEqual(moduleStack(undefined, SRC), undefined);
  strictEqual(moduleStack(`    at run (${SRC}runners/module/host.ts:1:1)`, SRC), undefined);
});

Deno.test("moduleReport(): failed and killed jobs say why, never exit_code", () => {
  const threw = moduleReport({ error: "run() threw: Error: x", stack: STACK });
  deepStrictEqual(threw.results.map((r) => r.succeeded), [false]);
  ok(threw.results[0].stack?.includes("job.ts:2:30"));
  ok(!threw.results[0].stack?.includes("host.ts"), "sqsrun's own frames are gone");
  const killed = moduleReport({ killed: true });
  deepStrictEqual(killed.results.map((r) => r.succeeded), [false]);
  deepStrictEqual(killed.fields, { signal: "SIGKILL" });
  deepStrictEqual(moduleReport({}).fields, { signal: null });
  for (const report of [threw, killed]) ok(!("exit_code" in report.fields));
});
