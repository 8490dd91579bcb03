/**
 * The manual cannot drift from the code: every long flag of `sqsrun --help` is in
 * README.md or docs/, the key table of docs/configuration.md is exactly the keys a
 * configuration file accepts (`SETTINGS` of src/config.ts), every relative link between
 * the pages leads to a file and heading that exist, every metric has a row in
 * docs/metrics.md, and README.md stays a front door.
 * Needs no emulator.
 */
import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { SETTINGS } from "../src/config.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const CONFIGURATION_PAGE = join(ROOT, "docs", "configuration.md");

/** README.md and every page of docs/, absolute paths. */
function pages(): string[] {
  const docs = [...Deno.readDirSync(join(ROOT, "docs"))]
    .filter((entry) => entry.isFile && entry.name.endsWith(".md"))
    .map((entry) => join(ROOT, "docs", entry.name))
    .sort();
  return [join(ROOT, "README.md"), ...docs];
}

/** The text of a page without its fenced code blocks (links and headings there are not). */
function prose(text: string): string {
  return text.replace(/^```[^\n]*\n[\s\S]*?^```[^\n]*$/gm, "");
}

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces made dashes. */
export function slug(heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, "").replace(/\s/g, "-");
}

/** The anchors of a page's headings, numbered as GitHub does when two are the same. */
function anchors(text: string): Set<string> {
  const seen = new Map<string, number>();
  const result = new Set<string>();
  for (const [, heading] of prose(text).matchAll(/^#{1,6} (.+)$/gm)) {
    const base = slug(heading);
    const count = seen.get(base) ?? 0;
    seen.set(base, count + 1);
    result.add(count === 0 ? base : `${base}-${count}`);
  }
  return result;
}

/** The keys listed in the first column of the key table of docs/configuration.md. */
export function documentedKeys(page: string): string[] {
  const table = page.split("\n## ").find((section) => section.startsWith("Keys\n"));
  if (table === undefined) return [];
  return [...table.matchAll(/^\| `([a-z0-9-]+)` +\|/gm)].map(([, key]) => key);
}

Deno.test("docs: every long flag of sqsrun --help is described in README.md or docs/", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", join(ROOT, "src", "main.ts"), "--help"],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  equal(output.code, 0, new TextDecoder().decode(output.stderr));
  const help = new TextDecoder().decode(output.stdout);
  const flags = [
    ...new Set([...help.matchAll(/(?<![\w-])--[a-z0-9][a-z0-9-]*/g)].map((m) => m[0])),
  ];
  ok(flags.length > 50, `only ${flags.length} flags found in the help`);
  const manual = pages().map((path) => Deno.readTextFileSync(path)).join("\n");
  const missing = flags.filter((flag) => !new RegExp(`${flag}(?![\\w-])`).test(manual));
  deepStrictEqual(missing, [], `flags of --help that no page describes: ${missing.join(", ")}`);
});

Deno.test("docs: the key table of docs/configuration.md is every key a configuration file accepts", () => {
  const page = Deno.readTextFileSync(CONFIGURATION_PAGE);
  const documented = documentedKeys(page);
  const accepted = SETTINGS.map((spec) => spec.key);
  const missing = accepted.filter((key) => !documented.includes(key));
  const unknown = documented.filter((key) => !accepted.includes(key));
  deepStrictEqual(missing, [], `keys missing from docs/configuration.md: ${missing.join(", ")}`);
  deepStrictEqual(
    unknown,
    [],
    `keys in docs/configuration.md no file accepts: ${unknown.join(", ")}`,
  );
  deepStrictEqual(documented, accepted, "the table lists the keys once each, in SETTINGS order");
});

/**
 * The metric names a metrics module emits: the `sqsrun_*` series of /metrics, or the
 * DogStatsD names given to `count(...)`/`emit(...)`, read from its source.
 */
export function metricNames(source: string, kind: "prometheus" | "statsd"): string[] {
  const pattern = kind === "prometheus" ? /"(sqsrun_[a-z_]+)"/g : /(?:count|emit)\("([a-z_.]+)"/g;
  return [...new Set([...source.matchAll(pattern)].map(([, name]) => name))].sort();
}

Deno.test("docs: every metric /metrics and DogStatsD send has a row in docs/metrics.md", () => {
  const page = Deno.readTextFileSync(join(ROOT, "docs", "metrics.md"));
  const rows = new Set([...page.matchAll(/^\| `([a-z_.]+)` +\|/gm)].map(([, name]) => name));
  for (const [file, kind] of [["http.ts", "prometheus"], ["statsd.ts", "statsd"]] as const) {
    const names = metricNames(Deno.readTextFileSync(join(ROOT, "src", "metrics", file)), kind);
    ok(names.length > 10, `only ${names.length} metric names found in src/metrics/${file}`);
    const missing = names.filter((name) => !rows.has(name));
    deepStrictEqual(missing, [], `metrics of src/metrics/${file} missing from docs/metrics.md`);
  }
});

Deno.test("docs: every relative link of README.md and docs/ leads to a file and heading that exist", () => {
  const broken: string[] = [];
  for (const path of pages()) {
    const text = prose(Deno.readTextFileSync(path));
    for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^[a-z]+:/.test(target)) continue; // https:, mailto:
      const [file, anchor] = target.split("#");
      const destination = file === "" ? path : resolve(dirname(path), file);
      const where = `${relative(ROOT, path)}: (${target})`;
      let stat: Deno.FileInfo;
      try {
        stat = Deno.statSync(destination);
      } catch {
        broken.push(`${where}: no such file`);
        continue;
      }
      if (anchor === undefined) continue;
      if (!stat.isFile || !destination.endsWith(".md")) {
        broken.push(`${where}: an anchor into something that is not a page`);
      } else if (!anchors(Deno.readTextFileSync(destination)).has(anchor)) {
        broken.push(`${where}: no heading with that anchor`);
      }
    }
  }
  deepStrictEqual(broken, []);
});

Deno.test("docs: README.md is a front door of at most about 300 lines that links every page", () => {
  const readme = Deno.readTextFileSync(join(ROOT, "README.md"));
  const lines = readme.split("\n").length - 1;
  ok(lines <= 300, `README.md has ${lines} lines`);
  for (const path of pages().slice(1)) {
    const page = relative(ROOT, path);
    ok(readme.includes(`](${page})`), `README.md links ${page}`);
  }
});

Deno.test("docs: slug() makes GitHub's anchors", () => {
  equal(slug("Modules (--run)"), "modules---run");
  equal(slug("Sizing: -c, processes, hosts"), "sizing--c-processes-hosts");
  equal(slug("Prometheus and /healthz"), "prometheus-and-healthz");
  equal(slug("Recipes in `deploy/`"), "recipes-in-deploy");
});
