/**
 * Unit tests of the `--exec` runner's pure parts: the command line it spawns, and
 * how a process's end becomes a job's report (exit code 0 and a whole input is
 * success) and its two stops become SIGTERM and SIGKILL.
 */
import { deepStrictEqual } from "node:assert/strict";
import {
  commandLine,
  type ProcessJob,
  processJob,
  type ProcessResult,
  type ProcessSignal,
} from "../../src/runners/exec.ts";

Deno.test("commandLine: --shell runs sh -c with $0 = sqsrun and the args after it", () => {
  deepStrictEqual(
    commandLine({ command: 'echo "$1" | wc -c', args: ["a", "b c"], shell: true, env: {} }),
    { program: "sh", args: ["-c", 'echo "$1" | wc -c', "sqsrun", "a", "b c"] },
  );
  deepStrictEqual(commandLine({ command: "true", args: [], shell: true, env: {} }), {
    program: "sh",
    args: ["-c", "true", "sqsrun"],
  });
});

Deno.test("commandLine: without --shell the program runs directly with its args", () => {
  deepStrictEqual(
    commandLine({ command: "/usr/bin/job", args: ["--x", "a b"], shell: false, env: { A: "1" } }),
    { program: "/usr/bin/job", args: ["--x", "a b"] },
  );
});

/** A process that ends with `result`, recording the signals it gets. */
function fakeProcess(result: ProcessResult) {
  const signals: ProcessSignal[] = [];
  const process: ProcessJob = {
    pid: 4242,
    done: Promise.resolve(result),
    signal: (name) => signals.push(name),
  };
  return { process, signals };
}

Deno.test("processJob: exit code 0 is success; any other end fails, with its code and signal", async () => {
  const cases: [ProcessResult, boolean][] = [
    [{ code: 0, signal: null }, true],
    [{ code: 1, signal: null }, false],
    [{ code: 255, signal: null }, false],
    [{ code: null, signal: "SIGSEGV" }, false],
    [{ code: null, signal: null, error: "cannot start /nope: no such executable file" }, false],
    [{ code: 0, signal: null, error: "the job's input broke off: reset" }, false],
  ];
  for (const [result, succeeded] of cases) {
    const job = processJob(fakeProcess(result).process);
    deepStrictEqual(job.fields, { pid: 4242 });
    deepStrictEqual(await job.done, {
      results: [{ succeeded, error: result.error }],
      fields: { exit_code: result.code, signal: result.signal },
    });
  }
});

Deno.test("processJob: the polite stop is SIGTERM to the group, the final one SIGKILL", () => {
  const { process, signals } = fakeProcess({ code: 0, signal: null });
  const job = processJob(process);
  job.stop("polite");
  job.stop("final");
  deepStrictEqual(signals, ["SIGTERM", "SIGKILL"]);
});
