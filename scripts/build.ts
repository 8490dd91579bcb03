/**
 * Builds the release binaries: one `deno compile` of `src/main.ts` per target,
 * with the permissions of `src/permissions.ts` for the target's OS baked in, then `SHA256SUMS`.
 *
 * ```sh
 * deno task build [--dry-run] [--target T]... [--out DIR] [--deno PATH]
 * deno task build --sums-only [--target T]... [--out DIR]
 * ```
 *
 * `--dry-run` prints the commands, one per line and shell-quoted, and writes nothing.
 * `--deno` picks the deno executable that compiles (default: the one running this script).
 * `--sums-only` compiles nothing: it writes `SHA256SUMS` for binaries already in `--out`
 * (the release gathers there the binaries that passed the smoke suite, one per runner)
 * and fails naming any selected target whose binary is missing.
 *
 * `deno compile --target` cross-compiles, but a binary is only known to work once it ran:
 * `.github/workflows/release.yml` builds each target on a GitHub-hosted runner of that
 * platform, runs `scripts/smoke.ts` against it there, and publishes only the binaries
 * that passed (`tests/build_test.ts` checks that its matrix is exactly {@linkcode TARGETS}).
 *
 * @module
 */
import { basename, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { type OperatingSystem, runtimeFlags } from "../src/permissions.ts";

/**
 * Every target a release ships, in the order they are built and listed in `SHA256SUMS`.
 * Each one is smoke-tested on a runner of its own platform before it is published.
 */
export const TARGETS: readonly string[] = Object.freeze([
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
  "x86_64-pc-windows-msvc",
]);

/** Name of the checksum file written next to the binaries. */
export const SUMS_FILE = "SHA256SUMS";

/** A mistake in how the build was invoked (exit code 2). */
export class UsageError extends Error {
  override name = "UsageError";
}

/** A compile or file operation that failed (exit code 1). */
export class BuildError extends Error {
  override name = "BuildError";
}

/** What to compile, and where. */
export interface CompileOptions {
  /** Targets to build, each at most once, in the order of {@linkcode TARGETS}; default all. */
  targets?: readonly string[];
  /** Directory the binaries go to; default `dist`. */
  outDir?: string;
  /** The entry module; default `src/main.ts`. */
  entry?: string;
  /**
   * Modules loaded at run time that `deno compile` cannot find from the entry: the
   * `--run` Web Worker host (a worker's script is never embedded unless included);
   * and the `docs/` pages of `--help TOPIC`; default {@linkcode INCLUDED}.
   */
  include?: readonly string[];
  /** The deno executable; default `deno`. */
  deno?: string;
}

/**
 * Files the binary loads by URL at run time, relative to the repository root:
 * `new Worker(new URL("./host.ts", import.meta.url))` in `src/runners/module/runner.ts`.
 */
export const RUNTIME_MODULES: readonly string[] = Object.freeze([
  "src/runners/module/host.ts",
  "src/runners/process/spawner_worker.ts",
]);

/**
 * Files the binary reads at run time, relative to the repository root: the pages of
 * `sqsrun --help TOPIC` (`src/docs.ts`), the whole `docs/` folder.
 */
export const EMBEDDED_FILES: readonly string[] = Object.freeze(["docs"]);

/** Everything `--include`d in the binary: {@linkcode RUNTIME_MODULES}, then {@linkcode EMBEDDED_FILES}. */
export const INCLUDED: readonly string[] = Object.freeze([...RUNTIME_MODULES, ...EMBEDDED_FILES]);

/** Returns the operating system a target's binary runs on, whose permissions it gets. */
export function targetOs(target: string): OperatingSystem {
  if (target.includes("-windows-")) return "windows";
  if (target.includes("-apple-darwin")) return "darwin";
  return "linux";
}

/** Returns the binary's file name for a target: `sqsrun-<target>`, plus `.exe` on Windows. */
export function binaryName(target: string): string {
  return `sqsrun-${target}${target.includes("-windows-") ? ".exe" : ""}`;
}

/**
 * Returns the targets to build: all when none are asked for, else the asked ones
 * once each in release order. Throws a {@linkcode UsageError} naming an unknown target.
 */
export function selectTargets(asked: readonly string[] = []): string[] {
  const unknown = asked.find((target) => !TARGETS.includes(target));
  if (unknown !== undefined) {
    throw new UsageError(`unknown target '${unknown}' (known: ${TARGETS.join(", ")})`);
  }
  return asked.length === 0 ? [...TARGETS] : TARGETS.filter((target) => asked.includes(target));
}

/** Returns the path a target's binary is written to. */
export function outputPath(target: string, outDir = "dist"): string {
  return join(outDir, binaryName(target));
}

/** Returns one `deno compile` argv per selected target, executable first. Pure. */
export function compileCommands(options: CompileOptions = {}): string[][] {
  const { outDir = "dist", entry = "src/main.ts", deno = "deno" } = options;
  const include = options.include ?? INCLUDED;
  return selectTargets(options.targets).map((target) => [
    deno,
    "compile",
    ...runtimeFlags(targetOs(target)),
    ...include.flatMap((path) => ["--include", path]),
    "--target",
    target,
    "--output",
    outputPath(target, outDir),
    entry,
  ]);
}

/** Quotes one word for a POSIX shell, leaving plain words bare so commands stay readable. */
export function shellQuote(word: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

/** Returns the lowercase hex SHA-256 of `data`, computed with WebCrypto. */
export async function sha256Hex(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return Array.from(digest, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/**
 * Returns `sha256sum`-format lines (`<hex>  <name>`) for the files, named by their
 * base name, so `sha256sum -c` works from the directory that holds them.
 */
export async function sha256Sums(paths: readonly string[]): Promise<string> {
  let text = "";
  for (const path of paths) {
    // Read one file at a time: release binaries are ~100 MB each and WebCrypto cannot stream.
    text += `${await sha256Hex(await Deno.readFile(path))}  ${basename(path)}\n`;
  }
  return text;
}

/** Writes `SHA256SUMS` for the files into `dir` and returns its path. */
export async function writeSha256Sums(dir: string, paths: readonly string[]): Promise<string> {
  const sumsPath = join(dir, SUMS_FILE);
  await Deno.writeTextFile(sumsPath, await sha256Sums(paths));
  return sumsPath;
}

/** Everything {@linkcode build} needs; the same fields as {@linkcode CompileOptions}. */
export interface BuildOptions extends CompileOptions {
  /** Print the commands instead of running them; nothing is written. */
  dryRun?: boolean;
  /** Compile nothing: write `SHA256SUMS` for the binaries already in `outDir`. */
  sumsOnly?: boolean;
  /** Where each command line is printed in a dry run; default `console.log`. */
  print?: (line: string) => void;
}

/**
 * Compiles every selected target, stopping at the first failure, then writes
 * `SHA256SUMS`. The checksum file of an earlier build is removed first, so a
 * failed build never leaves sums that describe other binaries.
 */
export async function build(options: BuildOptions = {}): Promise<void> {
  if (options.sumsOnly) {
    await writeSumsOfBuilt(options);
    return;
  }
  const commands = compileCommands(options);
  if (options.dryRun) {
    const print = options.print ?? console.log;
    for (const argv of commands) print(argv.map(shellQuote).join(" "));
    return;
  }
  const outDir = options.outDir ?? "dist";
  await Deno.mkdir(outDir, { recursive: true });
  await Deno.remove(join(outDir, SUMS_FILE)).catch((error) => {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  });
  const outputs: string[] = [];
  for (const [program, ...args] of commands) {
    const target = args[args.indexOf("--target") + 1];
    let status: Deno.CommandStatus;
    try {
      // Inherit stdio: deno's own diagnostics and download progress belong in the build log.
      status = await new Deno.Command(program, { args, stdin: "null" }).spawn().status;
    } catch (error) {
      throw new BuildError(`cannot run '${program}': ${oneLine(error)}`);
    }
    if (!status.success) {
      throw new BuildError(`deno compile failed for ${target} (exit code ${status.code})`);
    }
    outputs.push(args[args.indexOf("--output") + 1]);
  }
  await writeSha256Sums(outDir, outputs);
}

/**
 * Writes `SHA256SUMS` in `outDir` for the selected targets' binaries, which must all be
 * there already; a missing one is a {@linkcode BuildError} naming every missing file. An
 * earlier `SHA256SUMS` is removed first, as in {@linkcode build}.
 */
export async function writeSumsOfBuilt(options: CompileOptions = {}): Promise<string> {
  const outDir = options.outDir ?? "dist";
  const paths = selectTargets(options.targets).map((target) => outputPath(target, outDir));
  await Deno.remove(join(outDir, SUMS_FILE)).catch((error) => {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  });
  const missing: string[] = [];
  for (const path of paths) {
    try {
      if (!(await Deno.stat(path)).isFile) missing.push(basename(path));
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
      missing.push(basename(path));
    }
  }
  if (missing.length > 0) {
    throw new BuildError(`missing in ${outDir}: ${missing.join(", ")}`);
  }
  return await writeSha256Sums(outDir, paths);
}

function oneLine(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split("\n")[0];
}

/** Parses the command line; throws a {@linkcode UsageError} on anything unknown. */
export function parseBuildArgs(args: readonly string[], cwd = Deno.cwd()): BuildOptions {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      options: {
        "dry-run": { type: "boolean" },
        "sums-only": { type: "boolean" },
        target: { type: "string", multiple: true },
        out: { type: "string" },
        deno: { type: "string" },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (error) {
    throw new UsageError(oneLine(error));
  }
  const { values } = parsed;
  if (values["dry-run"] && values["sums-only"]) {
    throw new UsageError("--dry-run and --sums-only cannot be combined");
  }
  // Paths relative to the repo root, not the caller's cwd, unless given; relative
  // keeps the printed commands short when run from the root, as `deno task` does.
  const root = fileURLToPath(new URL("..", import.meta.url));
  return {
    dryRun: values["dry-run"] ?? false,
    sumsOnly: values["sums-only"] ?? false,
    targets: values.target ?? [],
    outDir: values.out ?? (relative(cwd, join(root, "dist")) || "."),
    entry: relative(cwd, join(root, "src", "main.ts")),
    include: INCLUDED.map((path) => relative(cwd, join(root, path))),
    deno: values.deno ?? Deno.execPath(),
  };
}

if (import.meta.main) {
  try {
    await build(parseBuildArgs(Deno.args));
  } catch (error) {
    console.error(`build: ${oneLine(error)}`);
    Deno.exit(error instanceof UsageError ? 2 : 1);
  }
}
