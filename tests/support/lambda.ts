/**
 * The Lambda runtime clients `tests/lambda_test.ts` and the benchmarks run real
 * handlers with, found (or built once) under `.cache`, each with the reason it
 * is missing: `.ci/run` installs them; a machine without a toolchain skips those
 * tests and says why, never silently.
 *
 * - Python: `.cache/lambda-venv` with awslambdaric and aws-lambda-powertools;
 * - Go: `tests/support/lambda_go` (aws-lambda-go) built into `.cache/lambda-go/`,
 *   again only when its source changed;
 * - Node: `.cache/lambda-node` with aws-lambda-ric;
 * - the shell `bootstrap` of the Lambda docs needs bash, curl and jq.
 *
 * @module
 */
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const CACHE = `${ROOT}.cache`;

/** The versions `.ci/run` installs. */
export const PYTHON_PACKAGES = ["awslambdaric==4.2.2", "aws-lambda-powertools==3.37.0"];
export const NODE_PACKAGE = "aws-lambda-ric@4.0.2";

/** A tool that is there, or why it is not. */
export type Found = { path: string } | { missing: string };

/** Where .ci/run installs the Python runtime client. */
export const PYTHON_VENV = `${CACHE}/lambda-venv`;
/** Where .ci/run installs the Node runtime client. */
export const NODE_DIR = `${CACHE}/lambda-node`;
/** The Go handler's source. */
export const GO_SOURCE = fileURLToPath(new URL("./lambda_go", import.meta.url));

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** Finds `program` on PATH. */
export function onPath(program: string): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (dir && isFile(`${dir}/${program}`)) return `${dir}/${program}`;
  }
  return undefined;
}

/** The venv's python3 when it can import awslambdaric and Powertools. */
export async function pythonRuntime(): Promise<Found> {
  const python = `${PYTHON_VENV}/bin/python3`;
  if (!isFile(python)) {
    return { missing: `no ${PYTHON_VENV} (bash .ci/run installs ${PYTHON_PACKAGES.join(" ")})` };
  }
  const probe = await new Deno.Command(python, {
    args: ["-c", "import awslambdaric, aws_lambda_powertools.utilities.batch"],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!probe.success) {
    const why = new TextDecoder().decode(probe.stderr).trim().split("\n").at(-1);
    return { missing: `${python} cannot import awslambdaric and Powertools: ${why}` };
  }
  return { path: python };
}

/** aws-lambda-ric's entry point, when it installed with its native part, and a node to run it. */
export async function nodeRuntime(): Promise<Found & { node?: string }> {
  const node = onPath("node");
  if (!node) return { missing: "node is not installed" };
  const entry = `${NODE_DIR}/node_modules/aws-lambda-ric/index.mjs`;
  if (!isFile(entry)) {
    return { missing: `no ${entry} (bash .ci/run installs ${NODE_PACKAGE} with npm)` };
  }
  const native = `${NODE_DIR}/node_modules/aws-lambda-ric/rapid-client.node`;
  if (!isFile(native)) return { missing: `aws-lambda-ric's native part was not built (${native})` };
  const probe = await new Deno.Command(node, {
    args: ["--check", entry],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!probe.success) {
    const why = new TextDecoder().decode(probe.stderr).trim().split("\n").at(-1);
    return { missing: `${node} cannot load aws-lambda-ric: ${why}` };
  }
  return { path: entry, node };
}

/** What a shell bootstrap needs. */
export function shellTools(): Found {
  for (const tool of ["bash", "curl", "jq"]) {
    if (!onPath(tool)) return { missing: `${tool} is not installed` };
  }
  return { path: onPath("bash")! };
}

/** The environment of `go build`: its caches under `.cache/go`, as `.ci/run` sets them. */
export function goEnv(): Record<string, string> {
  return {
    GOPATH: `${CACHE}/go`,
    GOMODCACHE: `${CACHE}/go/mod`,
    GOCACHE: `${CACHE}/go/build`,
    GOFLAGS: "-modcacherw",
  };
}

async function sourceHash(): Promise<string> {
  const parts: string[] = [];
  for (const name of ["main.go", "go.mod", "go.sum"]) {
    parts.push(await Deno.readTextFile(`${GO_SOURCE}/${name}`));
  }
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(parts.join("\0")));
  return Array.from(new Uint8Array(digest).slice(0, 8), (b) => b.toString(16).padStart(2, "0"))
    .join("");
}

/** The Go handler, built into `.cache/lambda-go/` unless a build of the same source is there. */
export async function goHandler(): Promise<Found> {
  const go = onPath("go") ?? (isFile("/usr/local/go/bin/go") ? "/usr/local/go/bin/go" : undefined);
  if (!go) return { missing: "Go is not installed" };
  const binary = `${CACHE}/lambda-go/handler-${await sourceHash()}`;
  if (isFile(binary)) return { path: binary };
  await Deno.mkdir(`${CACHE}/lambda-go`, { recursive: true });
  const build = await new Deno.Command(go, {
    args: ["build", "-o", binary, "."],
    cwd: GO_SOURCE,
    env: goEnv(),
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!build.success) {
    const why = new TextDecoder().decode(build.stderr).trim().split("\n").slice(-3).join(" | ");
    return { missing: `go build of ${GO_SOURCE} failed: ${why}` };
  }
  return { path: binary };
}

/** Prints why a group of tests is skipped (so a skip is never silent) and returns whether it is. */
export function skipped(what: string, found: Found): boolean {
  if ("path" in found) return false;
  console.log(`%cskipping the ${what} tests: ${found.missing}`, "color: yellow");
  return true;
}
