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
import { moduleRunner } from "./module/runner.ts";
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
      return execRunner(spec, await detectIsolation());
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
    // Loaded once here, before anything is received: a module that cannot load is a usage error.
    build: (path, options) => moduleRunner({ path, args: options.args, env: options.env }),
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

/** The name of a runner kind: `exec`, `run` or `post`. */
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
