/**
 * Scenario 7: hostile input. The cases live in `tests/hostile_test.ts` and
 * `tests/security_test.ts` (part of `deno task test`); here they run once against
 * both emulators and their counts go into the table.
 *
 * @module
 */
import { PROJECT_ROOT } from "../local_aws.ts";
import { childEnv } from "../test.ts";
import type { Scenario, ScenarioContext, ScenarioOutcome } from "./scenario.ts";

/** The test files this scenario runs. */
export const HOSTILE_TESTS = ["tests/hostile_test.ts", "tests/security_test.ts"];

/** Passed, failed and ignored tests and steps from `deno test`'s summary line. */
export interface TestSummary {
  passed: number;
  steps: number;
  failed: number;
  ignored: number;
}

/** Reads `ok | 10 passed (85 steps) | 0 failed | 3 ignored` (colours removed first). */
export function parseTestSummary(output: string): TestSummary | undefined {
  // deno-lint-ignore no-control-regex
  const plain = output.replace(/\x1b\[[0-9;]*m/g, "");
  const match = /(\d+) passed(?: \((\d+) steps?\))? \| (\d+) failed(?: \| (\d+) ignored)?/.exec(
    plain,
  );
  if (!match) return undefined;
  return {
    passed: Number(match[1]),
    steps: Number(match[2] ?? 0),
    failed: Number(match[3]),
    ignored: Number(match[4] ?? 0),
  };
}

/** Scenario 7. */
export const hostileScenario: Scenario = {
  id: 7,
  name: "hostile input",
  bothBackends: true,
  budgetMs: () => 300_000,
  run: hostile,
};

async function hostile(context: ScenarioContext): Promise<ScenarioOutcome> {
  if (!context.testEnv) {
    return { figures: { notes: [] }, failures: ["needs both emulators (SQSRUN_TEST_*)"] };
  }
  const child = new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", "--no-prompt", ...HOSTILE_TESTS],
    cwd: PROJECT_ROOT,
    clearEnv: true,
    env: { ...childEnv(Deno.env.toObject(), context.testEnv), NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const onAbort = () => {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
  };
  context.signal.addEventListener("abort", onAbort, { once: true });
  const output = await child.output();
  context.signal.removeEventListener("abort", onAbort);
  const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  const summary = parseTestSummary(text);
  const failures: string[] = [];
  if (!output.success || !summary || summary.failed > 0) {
    // The FAILURES section names each failed test as `name => ./tests/file.ts:line:col`.
    const failed = [...new Set(text.split("\n").filter((line) => / => \.\/tests\//.test(line)))];
    failures.push(`deno test failed: ${failed.slice(0, 10).join("; ") || text.slice(-500)}`);
  }
  return {
    figures: {
      notes: summary
        ? [
          `${summary.passed} tests with ${summary.steps} steps passed, ${summary.failed} failed, ` +
          `${summary.ignored} ignored`,
        ]
        : [],
    },
    failures,
  };
}
