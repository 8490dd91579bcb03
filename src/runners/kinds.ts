/**
 * The runner kinds: one entry per way of running jobs (`--exec`, `--run`, `--post`). The
 * command line, the configuration files, `--configure`, the help text and the
 * worker's start-up all read this table, so a new kind is one entry here plus its
 * module in `src/runners/`.
 *
 * @module
 */
import type { Options } from "../config.ts";
import { UsageError } from "../errors.ts";
import { assertExecutable, execRunner } from "./exec.ts";
import { lambdaRunner } from "./lambda/runner.ts";
import {
  checkPostOptions,
  POST_SETTING_KEYS,
  postRunner,
  type PostSettings,
  postSpec,
} from "./post.ts";
import { detectIsolation } from "./process/isolation.ts";
import type { JobRunner } from "./runner.ts";

/** What a runner kind may read of the options besides its target. */
export interface JobOptions extends PostSettings {
  /** ARGV given after `--`. */
  args: string[];
  /** `--env` pairs. */
  env: Record<string, string>;
  /** `--shell`. */
  shell: boolean;
  // What `--lambda` reads besides: how many runtimes, batches, the function's name and region.
  /** `-c`. */
  concurrency: number;
  /** `--batch-size`. */
  batchSize: number;
  /** `-x`, seconds: also how long a Lambda runtime may take to start. */
  killTimeout: number;
  /** `--kill-grace`, seconds. */
  killGrace: number;
  /** `--handler`. */
  handler?: string;
  /** `--s3`. */
  s3: boolean;
  queue?: string;
  region?: string;
  endpointUrl?: string;
}

/** One way of running jobs. */
export interface RunnerKind {
  /**
   * The command, its flag (`--exec`), its key in configuration files, and the
   * field of the options that holds its target (the program, the module).
   */
  readonly name: string;
  /** What the target is called in help and errors: `COMMAND`, `SCRIPT`. */
  readonly target: string;
  /** The help line of the flag. */
  readonly help: string;
  /** What runs a job, as the help's opening sentence names it: `a command`. */
  readonly runs: string;
  /**
   * Checks the target, and the options that are this kind's own, as soon as the
   * options are resolved, before anything is started (a Ruby script given to
   * `--run`, a URL given to `--post`); throws a UsageError.
   */
  checkTarget?(target: string, options: Partial<JobOptions>): void;
  /**
   * The settings (long flag names) only this kind reads: given with another kind's
   * job, they are a usage error.
   */
  readonly ownSettings?: readonly string[];
  /**
   * Builds the runner and checks at start-up that it can work (the program
   * exists, the module loads): a UsageError otherwise. Called before the queue is
   * resolved and before anything is received.
   */
  build(target: string, options: JobOptions): Promise<JobRunner>;
}

/**
 * `SQSRUN_SPAWNER=main` starts `--exec` jobs on the main thread instead of
 * spawner threads (`thread`, the default where they work): a switch for comparing
 * the two and a way back should spawner threads misbehave somewhere.
 */
function spawnerChoice(): boolean | undefined {
  const choice = Deno.env.get("SQSRUN_SPAWNER");
  if (choice === undefined || choice === "") return undefined;
  if (choice === "main") return false;
  if (choice === "thread") return undefined;
  throw new UsageError(`SQSRUN_SPAWNER=${choice}: expected main or thread`);
}

/** Every runner kind, in the order the help and the configuration files list them. */
export const RUNNER_KINDS = [
  {
    name: "exec",
    target: "COMMAND",
    help: "Run COMMAND for each message, body on its stdin",
    runs: "a command",
    build: async (command, options) => {
      if (!options.shell) assertExecutable(command);
      const spec = { command, args: options.args, shell: options.shell, env: options.env };
      return execRunner(spec, await detectIsolation(), { spawner: spawnerChoice() });
    },
  },
  {
    name: "run",
    target: "SCRIPT",
    help: "Call the 'run' function of module SCRIPT for each message",
    runs: "a module",
    checkTarget: (script) => {
      // The Ruby tool's --run took a Ruby script; this one loads JavaScript or TypeScript.
      if (/\.rb$/i.test(script)) {
        throw new UsageError(
          `--run ${script}: Ruby scripts are not supported: use --exec ruby ${script}`,
        );
      }
    },
    // The user's module is loaded once here, before anything is received: a module that
    // cannot load is a usage error. This runner's own code is imported only now, so an
    // --exec worker does not keep it in memory.
    build: async (path, options) =>
      (await import("./module/runner.ts")).moduleRunner({
        path,
        args: options.args,
        env: options.env,
      }),
  },
  {
    name: "lambda",
    target: "COMMAND",
    help: "Run Lambda runtime COMMAND for message batches",
    runs: "a Lambda handler",
    // The runtimes start here and must ask for work before anything is received.
    build: (command, options) => {
      if (options.s3) {
        throw new UsageError(
          "--s3 does not apply to --lambda: a handler gets each SQS record as Lambda sends it, " +
            "the S3 event in its body (drop --s3)",
        );
      }
      if (options.shell) throw new UsageError("--shell only applies to --exec");
      return lambdaRunner({
        command,
        args: options.args,
        env: options.env,
        handler: options.handler,
        concurrency: options.concurrency,
        batchSize: options.batchSize,
        killGrace: options.killGrace,
        loadTimeoutMs: options.killTimeout * 1000,
        queue: options.queue,
        region: options.region,
        endpointUrl: options.endpointUrl,
      });
    },
  },
  {
    name: "post",
    target: "URL",
    help: "POST each message to the web app at URL (as Beanstalk's sqsd)",
    runs: "a request to a web app",
    checkTarget: (url, options) => checkPostOptions(url, options),
    ownSettings: POST_SETTING_KEYS,
    // The secret is read here, at start-up: one that cannot be read is a usage error.
    build: async (url, options) => postRunner(await postSpec(url, options)),
  },
] as const satisfies readonly RunnerKind[];

/** The name of a runner kind: `exec`, `run`, `lambda` or `post`. */
export type RunnerKindName = (typeof RUNNER_KINDS)[number]["name"];

/** The runner kinds' names, in table order. */
export const RUNNER_KIND_NAMES: readonly RunnerKindName[] = RUNNER_KINDS.map((kind) => kind.name);

/** True when `name` (a command, a flag without dashes) is a runner kind. */
export function isRunnerKind(name: string): name is RunnerKindName {
  return (RUNNER_KIND_NAMES as readonly string[]).includes(name);
}

/** Returns the runner kind called `name`. */
export function runnerKind(name: RunnerKindName): RunnerKind {
  return RUNNER_KINDS.find((kind) => kind.name === name)!;
}

/**
 * Builds the runner `options.command` names; throws a UsageError when it has no
 * target or cannot work.
 */
export async function buildRunner(options: Options): Promise<JobRunner> {
  const name = options.command;
  if (!isRunnerKind(name)) throw new UsageError(`--${name} runs no jobs`);
  const kind = runnerKind(name);
  const target = options[name];
  if (!target) throw new UsageError(`--${kind.name} needs a ${kind.target}`);
  return await kind.build(target, options);
}

/** Joins words as a list in prose: `a`, `a or b`, `a, b or c`. */
export function orList(words: readonly string[]): string {
  if (words.length <= 1) return words.join("");
  return `${words.slice(0, -1).join(", ")} or ${words.at(-1)}`;
}

/** Says that only one of `words` may be given: `either a or b, not both`, or `only one of a, b or c`. */
export function onlyOneOf(words: readonly string[]): string {
  return words.length === 2
    ? `either ${words[0]} or ${words[1]}, not both`
    : `only one of ${orList(words)}`;
}
