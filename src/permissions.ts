/**
 * The one definition of the Deno permissions and V8 flags sqsrun runs with.
 * `scripts/build.ts` bakes these flags into the `deno compile` binaries, those of
 * each target's OS (`runtimeFlags(os)`), and tests, benchmarks (and daemon mode,
 * when not compiled) run `deno run <runtimeFlags()> src/main.ts` with the flags of
 * the OS they run on, so a permission the binary lacks fails in the tests first,
 * and what is measured is what ships.
 *
 * A compiled binary never prompts: anything not granted here is a `NotCapable`
 * error at run time. Adding a flag here is the only way to grant one.
 *
 * @module
 */

/**
 * Permission flags of the compiled binary, one per line, each with why it is needed.
 *
 * Read, write, net, env and run are unscoped on purpose: the paths (config, user
 * modules, pid and log files), hosts (any AWS region or custom endpoint, IMDS, ECS,
 * STS/SSO, the DogStatsD agent) and the operator's command are only known at run time.
 *
 * `--run` modules run in Web Workers, which inherit exactly these permissions (with
 * {@linkcode WINDOWS_PERMISSIONS} on Windows): a module may do what sqsrun may, and
 * nothing more. `--allow-import` is left out on
 * purpose: a compiled binary cannot load remote, `npm:` or `jsr:` modules that were
 * not bundled into it, so there is nothing to grant (under `deno run` such imports may
 * still resolve; the README tells module authors to bundle them).
 */
export const RUNTIME_PERMISSIONS: readonly string[] = Object.freeze([
  /**
   * SQS/S3 endpoints (AWS or an emulator), the credential chain's IMDS/ECS/STS/SSO
   * calls, DogStatsD over UDP (node:dgram; needs no unstable flag), the HTTP metrics listener,
   * the `--lambda` Runtime API listeners on 127.0.0.1.
   */
  "--allow-net",
  /**
   * The AWS SDK reads dozens of AWS_* variables (credentials, AWS_ENDPOINT_URL*, profile,
   * region, SDK tuning), DD_* configure metrics, and the job's environment is built from ours.
   */
  "--allow-env",
  /**
   * `-f` config files, `--run` user modules (and what they import), `~/.aws/{config,credentials}`
   * (or AWS_CONFIG_FILE/AWS_SHARED_CREDENTIALS_FILE), pid files, `/proc/PID/stat` (is the
   * process a pid file names alive?), and `Deno.execPath()` (the daemon re-spawns it).
   */
  "--allow-read",
  /**
   * The `--configure` output file, the daemon's pid file (a temporary file hard-linked into
   * place) and start-up status file (in the temp directory), and the `--log` file.
   */
  "--allow-write",
  /**
   * Unavoidably unrestricted: `--exec` runs whatever command the operator names (and
   * signals it), the SDK's `credential_process` runs one too, and daemon mode re-spawns sqsrun
   * (and `Deno.kill` probes or stops the process a pid file names).
   */
  "--allow-run",
  /**
   * `osRelease`: the AWS SDK puts it in its user agent on every client. `homedir`, `uid`: with
   * HOME unset (a bare service manager, `env -i`) the SDK calls os.homedir() and caches it by
   * euid; without them every client fails with NotCapable even when credentials are in env.
   */
  "--allow-sys=osRelease,homedir,uid",
]);

/**
 * Permission flags of the Windows binary only, on top of {@linkcode RUNTIME_PERMISSIONS}.
 *
 * `--run` modules inherit them on Windows too: there a module may load native libraries.
 */
export const WINDOWS_PERMISSIONS: readonly string[] = Object.freeze([
  /**
   * `Deno.dlopen("kernel32.dll")`: each `--exec` job's processes go into a Job Object of
   * their own (src/runners/process/windows_job.ts), which no Deno API makes. Unscoped:
   * `--allow-ffi=PATH` would make Deno load the path it checked, a library name resolved
   * against the current directory, not the system's kernel32.dll.
   */
  "--allow-ffi",
]);

/** The operating systems Deno reports in `Deno.build.os`. */
export type OperatingSystem = typeof Deno.build.os;

/** Returns the permission flags of sqsrun on `os` (default: the one running). */
export function runtimePermissions(os: OperatingSystem = Deno.build.os): string[] {
  return os === "windows"
    ? [...RUNTIME_PERMISSIONS, ...WINDOWS_PERMISSIONS]
    : [...RUNTIME_PERMISSIONS];
}

/**
 * V8 flags of the compiled binary, each with why it is there. Each one was measured
 * for memory and throughput both (`deno task bench`): one that costs throughput
 * does not belong here.
 */
export const RUNTIME_V8_FLAGS: readonly string[] = Object.freeze([
  /**
   * At most 4 MiB per semi-space of the young generation. A worker allocates fast
   * (every job, every SQS call) and keeps little, and V8 then lets each semi-space
   * grow to its default cap of 32 MiB, in each of the worker's two isolates (the
   * main thread and the job spawner): most of it dead objects, in RSS.
   * Draining 5,000 `/bin/true` messages at `-c 50` (three alternating pairs), the
   * peak RSS was 203-213 MiB with an 8 MiB cap and 184-192 with 4 MiB, for the
   * same CPU time and throughput; at `-c 10` (3,000 messages) 167 against 146, and at
   * `-c 1` 145-151 against 129-136, with CPU and rate within the noise of the pairs.
   * With V8's own cap, the peak was about 240 MiB at `-c 50`. A smaller cap promotes
   * short-lived objects to the old generation instead: 2 MiB gave a higher peak
   * (181 MiB) and more CPU, 1 MiB 7-10 % more CPU.
   */
  "--max-semi-space-size=4",
]);

/**
 * Returns the full flag list for `deno run` or `deno compile` on `os` (default: the
 * one running): the permissions, the V8 flags, and `--no-prompt`, so `deno run`
 * denies instead of prompting, as the binary does.
 *
 * @example
 * ```ts
 * const cmd = new Deno.Command(Deno.execPath(), {
 *   args: ["run", ...runtimeFlags(), "src/main.ts", "--list"],
 * });
 * ```
 */
export function runtimeFlags(os: OperatingSystem = Deno.build.os): string[] {
  return [...runtimePermissions(os), `--v8-flags=${RUNTIME_V8_FLAGS.join(",")}`, "--no-prompt"];
}
