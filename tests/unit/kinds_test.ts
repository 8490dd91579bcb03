/**
 * Unit tests of the runner kinds' table: each entry is a command, a flag, a key
 * of configuration files, a help line and a field of the start line, read from
 * the table alone; its start-up checks run before anything is received.
 */
import { deepStrictEqual, ok, rejects, strictEqual, throws } from "node:assert/strict";
import { helpText, parseCli } from "../../src/cli.ts";
import { parseConfigText, renderConfig, runnerTargets, settingSpec } from "../../src/config.ts";
import { UsageError } from "../../src/errors.ts";
import {
  buildRunner,
  isRunnerKind,
  onlyOneOf,
  orList,
  RUNNER_KIND_NAMES,
  RUNNER_KINDS,
  runnerKind,
} from "../../src/runners/kinds.ts";

async function optionsOf(argv: string[]) {
  const result = await parseCli(argv, { loadFile: () => Promise.reject(new Error("no files")) });
  if (result.kind !== "options") throw new Error(`not options: ${result.kind}`);
  return result;
}

/** A target each kind accepts when the options are checked. */
const SAMPLE_TARGETS: Record<string, string> = {
  exec: "./job",
  run: "./job",
  lambda: "./bootstrap",
  post: "http://127.0.0.1:8080/jobs",
};

Deno.test("kinds: every runner kind is a command, a setting and a help line", async () => {
  deepStrictEqual(RUNNER_KIND_NAMES, ["exec", "run", "lambda", "post"]);
  const help = helpText();
  const prose = help.replace(/\s+/g, " ");
  for (const kind of RUNNER_KINDS) {
    ok(isRunnerKind(kind.name));
    strictEqual(runnerKind(kind.name), kind);
    deepStrictEqual(settingSpec(kind.name)?.field, kind.name, `${kind.name} is a setting`);
    ok(help.includes(`--${kind.name} ${kind.target}`), `${kind.name} has a help line`);
    ok(prose.includes(`${kind.runs} (--${kind.name})`), `${kind.name} is in the help's summary`);
    const target = SAMPLE_TARGETS[kind.name];
    const { options, settings } = await optionsOf([`--${kind.name}`, target, "-q", "q"]);
    strictEqual(options.command, kind.name);
    strictEqual(options[kind.name], target);
    ok(renderConfig(settings).includes(`${kind.name}: ${target}`), "--configure writes it");
    deepStrictEqual(parseConfigText(`${kind.name}: ${target}\n`, "f.yaml"), {
      [kind.name]: target,
    });
  }
  ok(!isRunnerKind("list"));
});

Deno.test("kinds: the targets of the start line name every kind, unset ones undefined", () => {
  deepStrictEqual(runnerTargets({ run: "./m.ts" }), {
    exec: undefined,
    run: "./m.ts",
    lambda: undefined,
    post: undefined,
  });
});

Deno.test("kinds: two kinds at once are refused on the command line and in a file", async () => {
  await rejects(
    optionsOf(["--exec", "./a", "--run", "./b.ts", "-q", "q"]),
    new UsageError("give either --exec or --run, not both"),
  );
  throws(
    () => parseConfigText("exec: ./a\nrun: ./b.ts\n", "f.yaml"),
    new UsageError("configuration file 'f.yaml': give either 'exec' or 'run', not both"),
  );
});

Deno.test("kinds: a kind checks its target at once, and what it needs at start-up", async () => {
  await rejects(
    optionsOf(["--run", "job.rb", "-q", "q"]),
    new UsageError("--run job.rb: Ruby scripts are not supported: use --exec ruby job.rb"),
  );
  const { options } = await optionsOf(["--exec", "/nonexistent/job", "-q", "q"]);
  await rejects(
    buildRunner(options),
    new UsageError(
      "--exec: program '/nonexistent/job' not found (give a path, or --shell for a command line)",
    ),
  );
  await rejects(
    buildRunner({ ...options, exec: undefined }),
    new UsageError("--exec needs a COMMAND"),
  );
});

Deno.test("kinds: lists in prose", () => {
  deepStrictEqual(
    [orList(["a"]), orList(["a", "b"]), orList(["a", "b", "c"])],
    ["a", "a or b", "a, b or c"],
  );
  deepStrictEqual(
    [onlyOneOf(["a", "b"]), onlyOneOf(["a", "b", "c"])],
    ["either a or b, not both", "only one of a, b or c"],
  );
});
