/**
 * Tests of `scripts/build.ts`: the dry-run command lines, target selection, the
 * one-line errors, the real path against a stand-in deno, and the SHA256SUMS writer.
 * `deno compile` itself needs the internet, so a real compile is not run here.
 */
import { deepStrictEqual, equal, ok, rejects, throws } from "node:assert/strict";
import { dirname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseYaml } from "yaml";
import {
  binaryName,
  BuildError,
  compileCommands,
  EMBEDDED_FILES,
  INCLUDED,
  RUNTIME_MODULES,
  sha256Hex,
  sha256Sums,
  shellQuote,
  targetOs,
  TARGETS,
  UsageError,
  writeSha256Sums,
  writeSumsOfBuilt,
} from "../scripts/build.ts";
import {
  RUNTIME_PERMISSIONS,
  RUNTIME_V8_FLAGS,
  runtimeFlags,
  runtimePermissions,
  WINDOWS_PERMISSIONS,
} from "../src/permissions.ts";
import { DOCS_URL, HELP_TOPICS } from "../src/docs.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const DENO = Deno.execPath();
/** The flags of every target but Windows', whose binary also gets `--allow-ffi`. */
const FLAGS = runtimeFlags("linux").join(" ");
const WINDOWS_FLAGS = runtimeFlags("windows").join(" ");
const INCLUDE =
  "--include src/runners/module/host.ts --include src/runners/process/spawner_worker.ts " +
  "--include docs";
const ALL = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
  "x86_64-pc-windows-msvc",
];
const KNOWN = `known: ${ALL.join(", ")}`;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function runBuild(args: string[]): Promise<Run> {
  const output = await new Deno.Command(DENO, {
    args: ["run", "-A", "scripts/build.ts", ...args],
    cwd: ROOT,
    stdin: "null",
    env: { NO_COLOR: "1" },
  }).output();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

function expectedLine(target: string, out = "dist"): string {
  const windows = target === "x86_64-pc-windows-msvc";
  const exe = windows ? ".exe" : "";
  return `${DENO} compile ${
    windows ? WINDOWS_FLAGS : FLAGS
  } ${INCLUDE} --target ${target} --output ${out}/sqsrun-${target}${exe} src/main.ts`;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** A stand-in for deno: writes `--output` like compile does, or fails for one target. */
async function fakeDeno(dir: string, failTarget = ""): Promise<string> {
  const path = join(dir, "fake-deno");
  await Deno.writeTextFile(
    path,
    `#!/bin/sh
out=""; target=""
while [ $# -gt 0 ]; do
  case "$1" in --output) out="$2"; shift;; --target) target="$2"; shift;; esac
  shift
done
if [ "$target" = "${failTarget}" ]; then echo "error: stand-in failure" >&2; exit 3; fi
printf 'binary for %s' "$target" > "$out"
`,
  );
  await Deno.chmod(path, 0o755);
  return path;
}

/** The one `--v8-flags=` argument that carries every flag of RUNTIME_V8_FLAGS. */
const V8_FLAGS = `--v8-flags=${RUNTIME_V8_FLAGS.join(",")}`;

Deno.test("runtimeFlags() is every permission, the V8 flags and --no-prompt, as a fresh copy", () => {
  const flags = runtimeFlags("linux");
  deepStrictEqual(flags, [...RUNTIME_PERMISSIONS, V8_FLAGS, "--no-prompt"]);
  deepStrictEqual(runtimeFlags("darwin"), flags);
  ok(
    RUNTIME_V8_FLAGS.length > 0 &&
      RUNTIME_V8_FLAGS.every((flag) => /^--[a-z0-9-]+(=[^,\s]+)?$/.test(flag)),
  );
  flags.push("--allow-all");
  equal(runtimeFlags("linux").includes("--allow-all"), false);
  ok(Object.isFrozen(RUNTIME_PERMISSIONS));
  ok(Object.isFrozen(WINDOWS_PERMISSIONS));
  ok(Object.isFrozen(RUNTIME_V8_FLAGS));
});

Deno.test("targetOs() names the OS of every target, whose flags its binary gets", () => {
  deepStrictEqual(ALL.map(targetOs), ["linux", "linux", "darwin", "darwin", "windows"]);
});

Deno.test("runtimeFlags() adds --allow-ffi on Windows only, and defaults to this OS", () => {
  deepStrictEqual(WINDOWS_PERMISSIONS, ["--allow-ffi"]);
  deepStrictEqual(runtimeFlags("windows"), [
    ...RUNTIME_PERMISSIONS,
    "--allow-ffi",
    V8_FLAGS,
    "--no-prompt",
  ]);
  deepStrictEqual(runtimePermissions("windows"), [...RUNTIME_PERMISSIONS, "--allow-ffi"]);
  equal(RUNTIME_PERMISSIONS.some((flag) => flag.startsWith("--allow-ffi")), false);
  deepStrictEqual(runtimeFlags(), runtimeFlags(Deno.build.os));
  deepStrictEqual(runtimePermissions(), runtimePermissions(Deno.build.os));
});

Deno.test("--dry-run prints one exact compile command per target and writes nothing", async () => {
  const run = await runBuild(["--dry-run"]);
  equal(run.stderr, "");
  equal(run.code, 0);
  const lines = run.stdout.split("\n");
  equal(lines.pop(), "");
  deepStrictEqual(lines, ALL.map((target) => expectedLine(target)));
  equal(lines[4].endsWith("--output dist/sqsrun-x86_64-pc-windows-msvc.exe src/main.ts"), true);
  equal(lines.filter((line) => line.includes(".exe")).length, 1);
  for (const line of lines) {
    const words = line.split(" ");
    for (const permission of RUNTIME_PERMISSIONS) {
      ok(words.includes(permission), `${permission} missing from: ${line}`);
    }
    ok(words.includes(V8_FLAGS), `${V8_FLAGS} missing from: ${line}`);
    ok(words.includes("--no-prompt"), line);
    equal(words.includes("--allow-ffi"), line.includes("-pc-windows-msvc"), line);
  }
});

Deno.test("--dry-run with --out creates nothing and quotes the path", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const out = join(dir, "out dir");
    const run = await runBuild(["--dry-run", "--out", out, "--target", "aarch64-apple-darwin"]);
    equal(run.stderr, "");
    equal(run.code, 0);
    equal(
      run.stdout,
      `${DENO} compile ${FLAGS} ${INCLUDE} --target aarch64-apple-darwin --output '${out}/sqsrun-aarch64-apple-darwin' src/main.ts\n`,
    );
    equal(await exists(out), false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--target limits the build to the named targets, in release order, once each", async () => {
  const run = await runBuild([
    "--dry-run",
    "--target",
    "x86_64-pc-windows-msvc",
    "--target=aarch64-unknown-linux-gnu",
    "--target",
    "x86_64-pc-windows-msvc",
  ]);
  equal(run.stderr, "");
  equal(run.code, 0);
  equal(
    run.stdout,
    `${expectedLine("aarch64-unknown-linux-gnu")}\n${expectedLine("x86_64-pc-windows-msvc")}\n`,
  );
});

Deno.test("an unknown target is a one-line error with exit code 2", async () => {
  const run = await runBuild(["--dry-run", "--target", "x86_64-unknown-freebsd"]);
  equal(run.stdout, "");
  equal(run.stderr, `build: unknown target 'x86_64-unknown-freebsd' (${KNOWN})\n`);
  equal(run.code, 2);
});

Deno.test("an unknown flag or a positional argument is a one-line error with exit code 2", async () => {
  const flag = await runBuild(["--dryrun"]);
  equal(flag.stderr, "build: Unknown option '--dryrun'\n");
  equal(flag.code, 2);
  const positional = await runBuild(["all"]);
  equal(
    positional.stderr,
    "build: Unexpected argument 'all'. This command does not take positional arguments\n",
  );
  equal(positional.code, 2);
});

Deno.test({
  name: "a build compiles each target into --out and writes SHA256SUMS for them",
  ignore: Deno.build.os === "windows",
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const out = join(dir, "dist");
      const deno = await fakeDeno(dir);
      const run = await runBuild([
        "--deno",
        deno,
        "--out",
        out,
        "--target",
        "x86_64-pc-windows-msvc",
        "--target",
        "x86_64-unknown-linux-gnu",
      ]);
      equal(run.stderr, "");
      equal(run.code, 0);
      const names = [...Deno.readDirSync(out)].map((entry) => entry.name).sort();
      deepStrictEqual(names, [
        "SHA256SUMS",
        "sqsrun-x86_64-pc-windows-msvc.exe",
        "sqsrun-x86_64-unknown-linux-gnu",
      ]);
      equal(
        await Deno.readTextFile(join(out, "sqsrun-x86_64-unknown-linux-gnu")),
        "binary for x86_64-unknown-linux-gnu",
      );
      const sums = await Deno.readTextFile(join(out, "SHA256SUMS"));
      const linux = await sha256Hex(encoder.encode("binary for x86_64-unknown-linux-gnu"));
      const windows = await sha256Hex(encoder.encode("binary for x86_64-pc-windows-msvc"));
      equal(
        sums,
        `${linux}  sqsrun-x86_64-unknown-linux-gnu\n${windows}  sqsrun-x86_64-pc-windows-msvc.exe\n`,
      );
      // The format is the one coreutils checks, not just one that looks like it.
      const check = await new Deno.Command("sha256sum", { args: ["-c", "SHA256SUMS"], cwd: out })
        .output();
      equal(
        decoder.decode(check.stdout),
        "sqsrun-x86_64-unknown-linux-gnu: OK\nsqsrun-x86_64-pc-windows-msvc.exe: OK\n",
      );
      equal(check.code, 0);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "a failed compile stops the build with a one-line error and leaves no SHA256SUMS",
  ignore: Deno.build.os === "windows",
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const out = join(dir, "dist");
      await Deno.mkdir(out);
      await Deno.writeTextFile(join(out, "SHA256SUMS"), "stale\n");
      const deno = await fakeDeno(dir, "aarch64-apple-darwin");
      const run = await runBuild(["--deno", deno, "--out", out]);
      equal(run.stdout, "");
      // The stand-in's own stderr comes through (it is the diagnostic); ours is one line after it.
      equal(
        run.stderr,
        "error: stand-in failure\nbuild: deno compile failed for aarch64-apple-darwin (exit code 3)\n",
      );
      equal(run.code, 1);
      const names = [...Deno.readDirSync(out)].map((entry) => entry.name).sort();
      deepStrictEqual(names, [
        "sqsrun-aarch64-unknown-linux-gnu",
        "sqsrun-x86_64-apple-darwin",
        "sqsrun-x86_64-unknown-linux-gnu",
      ]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("a deno that cannot be started is a one-line error with exit code 1", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const missing = join(dir, "no-such-deno");
    const run = await runBuild(["--deno", missing, "--out", dir, "--target", ALL[0]]);
    equal(run.stdout, "");
    equal(
      run.stderr,
      `build: cannot run '${missing}': Failed to spawn '${missing}': No such file or directory (os error 2)\n`,
    );
    equal(run.code, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("compileCommands() returns exact argv arrays and rejects unknown targets", () => {
  deepStrictEqual(
    compileCommands({
      targets: ["x86_64-pc-windows-msvc"],
      outDir: "out",
      entry: "main.ts",
      deno: "/opt/deno",
    }),
    [[
      "/opt/deno",
      "compile",
      ...RUNTIME_PERMISSIONS,
      "--allow-ffi",
      V8_FLAGS,
      "--no-prompt",
      "--include",
      "src/runners/module/host.ts",
      "--include",
      "src/runners/process/spawner_worker.ts",
      "--include",
      "docs",
      "--target",
      "x86_64-pc-windows-msvc",
      "--output",
      "out/sqsrun-x86_64-pc-windows-msvc.exe",
      "main.ts",
    ]],
  );
  deepStrictEqual(
    compileCommands().map((argv) => argv.at(-2)),
    ALL.map((t) => `dist/${binaryName(t)}`),
  );
  throws(
    () => compileCommands({ targets: ["wasm32"] }),
    new UsageError(`unknown target 'wasm32' (${KNOWN})`),
  );
});

Deno.test("every module src/ loads by URL (Web Worker scripts) is embedded, and each embedded one is loaded", async () => {
  const loaded: string[] = [];
  for await (const path of sourceFiles(join(ROOT, "src"))) {
    const text = await Deno.readTextFile(path);
    for (const [, name] of text.matchAll(/new URL\("\.\/([\w/.-]+\.ts)", import\.meta\.url\)/g)) {
      loaded.push(relative(ROOT, join(dirname(path), name)).replaceAll("\\", "/"));
    }
  }
  deepStrictEqual([...new Set(loaded)].sort(), [...RUNTIME_MODULES].sort());
  for (const path of RUNTIME_MODULES) ok((await Deno.stat(join(ROOT, path))).isFile, path);
  deepStrictEqual(
    compileCommands({ targets: ["aarch64-apple-darwin"], include: ["a.ts", "b.ts"] })[0]
      .filter((_, i, argv) => argv[i - 1] === "--include"),
    ["a.ts", "b.ts"],
  );
});

Deno.test("the docs/ pages of --help TOPIC are embedded, and every topic is a page there", async () => {
  deepStrictEqual([...EMBEDDED_FILES], ["docs"]);
  deepStrictEqual([...INCLUDED], [...RUNTIME_MODULES, "docs"]);
  equal(fileURLToPath(DOCS_URL), join(ROOT, "docs") + sep);
  const pages = [...Deno.readDirSync(join(ROOT, "docs"))]
    .filter((entry) => entry.isFile && entry.name.endsWith(".md"))
    .map((entry) => entry.name.slice(0, -3));
  deepStrictEqual([...HELP_TOPICS].sort(), pages.sort());
  const line = (await runBuild(["--dry-run", "--target", ALL[0]])).stdout;
  ok(line.includes(" --include docs "), line);
});

Deno.test("shellQuote() leaves plain words bare and single-quotes the rest", () => {
  equal(shellQuote("--allow-sys=osRelease,homedir,uid"), "--allow-sys=osRelease,homedir,uid");
  equal(
    shellQuote("dist/sqsrun-x86_64-pc-windows-msvc.exe"),
    "dist/sqsrun-x86_64-pc-windows-msvc.exe",
  );
  equal(shellQuote("my dist"), "'my dist'");
  equal(shellQuote("it's"), `'it'\\''s'`);
  equal(shellQuote(""), "''");
});

Deno.test("sha256Hex() matches the FIPS 180-2 test vectors", async () => {
  equal(
    await sha256Hex(encoder.encode("abc")),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
  equal(
    await sha256Hex(new Uint8Array(0)),
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
  );
});

Deno.test("writeSha256Sums() writes sha256sum lines named by base name, in the given order", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(join(dir, "b-abc"), "abc");
    await Deno.writeTextFile(join(dir, "a-empty"), "");
    const expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  b-abc\n" +
      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  a-empty\n";
    equal(await sha256Sums([join(dir, "b-abc"), join(dir, "a-empty")]), expected);
    const written = await writeSha256Sums(dir, [join(dir, "b-abc"), join(dir, "a-empty")]);
    equal(written, join(dir, "SHA256SUMS"));
    equal(await Deno.readTextFile(written), expected);
    await rejects(sha256Sums([join(dir, "missing")]), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--sums-only writes SHA256SUMS for the binaries already built, in release order", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // As the release gathers them: one binary per runner, in no particular order.
    for (const target of [...ALL].reverse()) {
      await Deno.writeTextFile(join(dir, binaryName(target)), `passed on ${target}`);
    }
    await Deno.writeTextFile(join(dir, "SHA256SUMS"), "stale\n");
    const run = await runBuild(["--sums-only", "--out", dir]);
    equal(run.stderr, "");
    equal(run.stdout, "");
    equal(run.code, 0);
    let expected = "";
    for (const target of ALL) {
      expected += `${await sha256Hex(encoder.encode(`passed on ${target}`))}  ${
        binaryName(target)
      }\n`;
    }
    equal(await Deno.readTextFile(join(dir, "SHA256SUMS")), expected);
    if (Deno.build.os !== "windows") {
      const check = await new Deno.Command("sha256sum", { args: ["-c", "SHA256SUMS"], cwd: dir })
        .output();
      equal(check.code, 0, decoder.decode(check.stdout));
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--sums-only fails naming every missing binary and leaves no SHA256SUMS", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(join(dir, binaryName(ALL[0])), "one");
    await Deno.writeTextFile(join(dir, "SHA256SUMS"), "stale\n");
    const run = await runBuild(["--sums-only", "--out", dir]);
    equal(
      run.stderr,
      `build: missing in ${dir}: ${ALL.slice(1).map(binaryName).join(", ")}\n`,
    );
    equal(run.code, 1);
    equal(await exists(join(dir, "SHA256SUMS")), false);
    // One target asked for, and there: fine.
    const one = await runBuild(["--sums-only", "--out", dir, "--target", ALL[0]]);
    equal(one.code, 0, one.stderr);
    await rejects(
      writeSumsOfBuilt({ outDir: dir, targets: [ALL[1]] }),
      new BuildError(`missing in ${dir}: ${binaryName(ALL[1])}`),
    );
    const both = await runBuild(["--sums-only", "--dry-run"]);
    equal(both.stderr, "build: --dry-run and --sums-only cannot be combined\n");
    equal(both.code, 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** The platform a GitHub-hosted runner label runs on (its documented OS and CPU). */
function runnerPlatform(label: string): string | undefined {
  if (/^ubuntu-(latest|\d\d\.\d\d)$/.test(label)) return "x86_64-unknown-linux-gnu";
  if (/^ubuntu-\d\d\.\d\d-arm$/.test(label)) return "aarch64-unknown-linux-gnu";
  if (/^macos-\d+-intel$/.test(label)) return "x86_64-apple-darwin";
  if (/^macos-(latest|1[4-9]|[2-9]\d)$/.test(label)) return "aarch64-apple-darwin";
  if (/^windows-(latest|20\d\d)$/.test(label)) return "x86_64-pc-windows-msvc";
  return undefined;
}

interface SmokeJob {
  matrix: { os: string; target: string }[];
  steps: { uses?: string; with?: Record<string, string> }[];
}

async function smokeJob(workflow: string): Promise<SmokeJob> {
  const text = await Deno.readTextFile(join(ROOT, ".github", "workflows", workflow));
  const job = parseYaml(text).jobs.smoke;
  equal(job["runs-on"], "${{ matrix.os }}", workflow);
  return { matrix: job.strategy.matrix.include, steps: job.steps };
}

function usesSmokeAction(job: SmokeJob, workflow: string): void {
  const step = job.steps.find((step) => step.uses === "./.github/actions/smoke");
  ok(step, `${workflow} runs the smoke action`);
  equal(step.with?.target, "${{ matrix.target }}", workflow);
}

Deno.test("the release smoke-tests exactly TARGETS, each on a runner of its own platform", async () => {
  deepStrictEqual([...TARGETS], ALL);
  const release = await smokeJob("release.yml");
  deepStrictEqual(release.matrix.map((entry) => entry.target), ALL);
  for (const { os, target } of release.matrix) {
    equal(runnerPlatform(os), target, `runner ${os} for ${target}`);
  }
  usesSmokeAction(release, "release.yml");
  const text = await Deno.readTextFile(join(ROOT, ".github", "workflows", "release.yml"));
  const publish = parseYaml(text).jobs.publish;
  equal(publish.needs, "smoke", "publishing waits for every target's smoke job");
  ok(
    publish.steps.some((step: { run?: string }) =>
      step.run?.includes("deno task build --sums-only")
    ),
    "SHA256SUMS covers every target",
  );
});

Deno.test("CI smoke-tests the binary of one runner per OS", async () => {
  const ci = await smokeJob("ci.yml");
  const oses = ci.matrix.map(({ os, target }) => {
    equal(runnerPlatform(os), target, `runner ${os} for ${target}`);
    ok(ALL.includes(target), target);
    return target.split("-")[2];
  });
  deepStrictEqual(oses.sort(), ["darwin", "linux", "windows"]);
  usesSmokeAction(ci, "ci.yml");
  const action = parseYaml(
    await Deno.readTextFile(join(ROOT, ".github", "actions", "smoke", "action.yml")),
  );
  const runs = action.runs.steps.map((step: { run?: string }) => step.run ?? "").join("\n");
  ok(runs.includes('deno task build --target "$TARGET"'), "builds with build.ts");
  ok(runs.includes('deno run -A scripts/smoke.ts --binary "dist/$BINARY"'), "runs the suite");
  ok(runs.includes("Deno.build.target"), "checks the runner's own platform");
});

/** Every `.ts` file under `dir`. */
async function* sourceFiles(dir: string): AsyncGenerator<string> {
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) yield* sourceFiles(path);
    else if (entry.name.endsWith(".ts")) yield path;
  }
}
