/**
 * The `--lambda` rows of `deno task bench`: a job that does nothing, run as a
 * process per message (`--exec`) and as an AWS Lambda handler fed batches of 10
 * through sqsrun's Runtime API (`--lambda`), at the same concurrency.
 *
 * - Python: `--exec python3 job.py` against `--lambda python3 -m awslambdaric
 *   app.handler` (the venv `.ci/run` installs; target: at least 10 × the
 *   `--exec` rate);
 * - Go: `--lambda` with the aws-lambda-go handler of `tests/support/lambda_go`
 *   against `--exec /bin/true` (target: at least 3 ×).
 *
 * A runtime client that is missing is skipped with its reason in the report.
 *
 * @module
 */
import { join } from "node:path";
import { goHandler, pythonRuntime } from "../../tests/support/lambda.ts";

/** What the bench gives: a way to time one sqsrun run over a full queue. */
export interface LambdaBenchOptions {
  /** A scratch directory for the job and handler files. */
  dir: string;
  runs: number;
  /** Messages per run of the fast rows (`/bin/true`, the handlers). */
  count: number;
  /** Messages per run of `--exec python3`, whose jobs cost tens of ms each. */
  slowCount: number;
  /** Fills a queue with `count` messages, runs sqsrun with `args(url)` until it is empty: messages/s. */
  drain(count: number, args: (url: string) => string[]): Promise<number>;
}

/** One pair of rows: a process per message against a Lambda handler. */
export interface LambdaRow {
  label: string;
  concurrency: number;
  exec: number;
  lambda: number;
  target: number;
}

/** The rows, or why a language was skipped. */
export interface LambdaBench {
  rows: LambdaRow[];
  skipped: string[];
}

const CONCURRENCIES = [1, 10];

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

async function rate(
  options: LambdaBenchOptions,
  count: number,
  args: (url: string) => string[],
): Promise<number> {
  const rates: number[] = [];
  for (let run = 0; run < options.runs; run++) rates.push(await options.drain(count, args));
  return median(rates);
}

const common = (url: string, concurrency: number) => [
  "-q",
  url,
  "-c",
  String(concurrency),
  "--wait",
  "1",
  "-o",
  "/dev/null",
];

/** Runs the `--lambda` rows. */
export async function lambdaBench(options: LambdaBenchOptions): Promise<LambdaBench> {
  const rows: LambdaRow[] = [];
  const skipped: string[] = [];
  const python = await pythonRuntime();
  if ("path" in python) {
    const job = join(options.dir, "noop_job.py");
    await Deno.writeTextFile(job, "import sys\nsys.stdin.read()\n");
    await Deno.writeTextFile(
      join(options.dir, "noop_app.py"),
      "def handler(event, context):\n    return None\n",
    );
    for (const concurrency of CONCURRENCIES) {
      const exec = await rate(options, options.slowCount, (url) => [
        ...common(url, concurrency),
        "--exec",
        python.path,
        "--",
        job,
      ]);
      const lambda = await rate(options, options.count, (url) => [
        ...common(url, concurrency),
        "--lambda",
        python.path,
        "--env",
        `PYTHONPATH=${options.dir}`,
        "--",
        "-m",
        "awslambdaric",
        "noop_app.handler",
      ]);
      console.error(
        `--lambda Python -c ${concurrency}: ${lambda.toFixed(0)}/s; --exec python3: ${
          exec.toFixed(1)
        }/s`,
      );
      rows.push({
        label: "Python, a job that does nothing",
        concurrency,
        exec,
        lambda,
        target: 10,
      });
    }
  } else {
    skipped.push(`Python: ${python.missing}`);
  }
  const go = await goHandler();
  if ("path" in go) {
    for (const concurrency of CONCURRENCIES) {
      const exec = await rate(options, options.count, (url) => [
        ...common(url, concurrency),
        "--exec",
        "/bin/true",
      ]);
      const lambda = await rate(options, options.count, (url) => [
        ...common(url, concurrency),
        "--lambda",
        go.path,
      ]);
      console.error(
        `--lambda Go -c ${concurrency}: ${lambda.toFixed(0)}/s; --exec /bin/true: ${
          exec.toFixed(0)
        }/s`,
      );
      rows.push({ label: "Go handler vs `/bin/true`", concurrency, exec, lambda, target: 3 });
    }
  } else {
    skipped.push(`Go: ${go.missing}`);
  }
  return { rows, skipped };
}

/** The report section of the `--lambda` rows. */
export function lambdaSection(
  bench: LambdaBench,
  options: Pick<LambdaBenchOptions, "count" | "slowCount">,
): string[] {
  return [
    "## `--lambda` handlers (messages/s, batches of 10)",
    "",
    `A job that does nothing, as a process per message (\`--exec\`, ${options.slowCount} messages a run`,
    `for Python, ${options.count} for \`/bin/true\`) and as a Lambda handler that sqsrun invokes through its`,
    `Runtime API with batches of 10 (\`--lambda\`, ${options.count} messages a run): Python with`,
    "awslambdaric (`python3 -m awslambdaric noop_app.handler`, against `--exec python3 noop_job.py`),",
    "Go with aws-lambda-go (`tests/support/lambda_go`, against `--exec /bin/true`).",
    "",
    "| job | concurrency | `--exec` | `--lambda` | ratio | target |",
    "| --- | ---: | ---: | ---: | ---: | --- |",
    ...bench.rows.map((row) => {
      const ratio = row.lambda / row.exec;
      return `| ${row.label} | ${row.concurrency} | ${row.exec.toFixed(1)} | ${
        row.lambda.toFixed(0)
      } | ` +
        `${ratio.toFixed(1)} | ≥ ${row.target} ×: ${ratio >= row.target ? "met" : "**missed**"} |`;
    }),
    ...(bench.skipped.length > 0 ? ["", `Skipped: ${bench.skipped.join("; ")}.`] : []),
    "",
  ];
}
