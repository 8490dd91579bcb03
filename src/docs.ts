/**
 * `sqsrun --help TOPIC`: prints a page of `docs/` as it is in the repository, so an
 * operator on a server with only the binary (no browser, no man pages installed with it)
 * reads the same manual. The pages are embedded in the release binary by
 * `scripts/build.ts` (`--include docs`) and read from the repository under `deno run`.
 *
 * @module
 */

/** The topics of `--help TOPIC`: the file names of `docs/*.md`, without `.md`. */
export const HELP_TOPICS: readonly string[] = Object.freeze([
  "worker",
  "modules",
  "lambda",
  "post",
  "s3",
  "configuration",
  "metrics",
  "production",
  "migration",
  "development",
  "internals",
  "reliability",
  "benchmarks",
]);

/** The folder of the pages, next to `src/` (in the binary: its embedded copy). */
export const DOCS_URL: URL = new URL("../docs/", import.meta.url);

/** True when `topic` names a page of {@linkcode HELP_TOPICS}. */
export function isHelpTopic(topic: string): boolean {
  return HELP_TOPICS.includes(topic);
}

/** Reads the page of a topic; the caller checked it with {@linkcode isHelpTopic}. */
export function readHelpTopic(topic: string): Promise<string> {
  return Deno.readTextFile(new URL(`${topic}.md`, DOCS_URL));
}
