/**
 * The session helper: its bytes are the assembly in scripts/session_helper/, and
 * the image really makes the job a session leader, passes arguments, environment
 * and exit status through, and says so when the program cannot run.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  HELPER_MESSAGE,
  type HelperArch,
  helperArch,
  sessionHelperImage,
  sessionHelperText,
} from "../src/runners/process/session_helper.ts";
import {
  detectIsolation,
  findExecutable,
  findSetsid,
  GO_BYTE,
  makesSessionLeader,
  NO_GO_STATUS,
} from "../src/runners/process/isolation.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const isLinux = Deno.build.os === "linux";

/** Returns the first of `names` found on PATH. */
function tool(...names: string[]): string | undefined {
  for (const name of names) {
    const found = findExecutable(name, Deno.env.get("PATH") ?? "");
    if (found) return found;
  }
  return undefined;
}

const ASSEMBLERS: Record<HelperArch, { as?: string; objcopy?: string }> = {
  x86_64: Deno.build.arch === "x86_64"
    ? {
      as: tool("as", "x86_64-linux-gnu-as"),
      objcopy: tool("objcopy", "x86_64-linux-gnu-objcopy"),
    }
    : { as: tool("x86_64-linux-gnu-as"), objcopy: tool("x86_64-linux-gnu-objcopy") },
  aarch64: Deno.build.arch === "aarch64"
    ? {
      as: tool("as", "aarch64-linux-gnu-as"),
      objcopy: tool("objcopy", "aarch64-linux-gnu-objcopy"),
    }
    : { as: tool("aarch64-linux-gnu-as"), objcopy: tool("aarch64-linux-gnu-objcopy") },
};

async function run(program: string, args: string[]): Promise<Deno.CommandOutput> {
  return await new Deno.Command(program, { args, stdin: "null" }).output();
}

async function assemble(arch: HelperArch): Promise<Uint8Array> {
  const { as, objcopy } = ASSEMBLERS[arch];
  const dir = await Deno.makeTempDir({ prefix: "sqsrun-asm-" });
  try {
    const object = join(dir, "helper.o");
    const text = join(dir, "helper.bin");
    const source = join(ROOT, "scripts", "session_helper", `${arch}.s`);
    assert.equal((await run(as!, ["-o", object, source])).code, 0, `${as} failed`);
    assert.equal((await run(objcopy!, ["-O", "binary", "-j", ".text", object, text])).code, 0);
    return await Deno.readFile(text);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

for (const arch of ["x86_64", "aarch64"] as const) {
  const { as, objcopy } = ASSEMBLERS[arch];
  Deno.test({
    name: `session helper: the ${arch} bytes are scripts/session_helper/${arch}.s assembled`,
    ignore: !as || !objcopy,
    fn: async () => {
      assert.deepEqual(sessionHelperText(arch), await assemble(arch));
    },
  });
}

/** How to run an image of `arch` here: natively, under qemu, or not at all. */
function runnerFor(arch: HelperArch): string[] | undefined {
  if (!isLinux) return undefined;
  if (Deno.build.arch === arch) return [];
  const qemu = tool(`qemu-${arch}`, `qemu-${arch}-static`);
  return qemu ? [qemu] : undefined;
}

/**
 * Runs `program` with `input` written to its stdin and closed (an empty input:
 * stdin ends at once, as when the worker died before its go byte).
 */
async function runWithInput(
  program: string,
  args: string[],
  input: Uint8Array,
  env: Record<string, string> = {},
): Promise<Deno.CommandOutput> {
  const child = new Deno.Command(program, {
    args,
    env,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  // Read while writing (the output may be as big as the input); a program that
  // does not read all of its stdin may close it first.
  const output = child.output();
  await writer.write(input).catch(() => {});
  await writer.close().catch(() => {});
  return await output;
}

const GO = new Uint8Array([GO_BYTE]);

function withGo(body: Uint8Array): Uint8Array {
  const input = new Uint8Array(body.length + 1);
  input[0] = GO_BYTE;
  input.set(body, 1);
  return input;
}

/** Resolves once process `pid` is gone or a zombie; rejects after `ms`. */
async function gone(pid: number, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    let state: string;
    try {
      const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
      state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    } catch {
      return;
    }
    if (state === "Z") return;
    if (Date.now() > deadline) throw new Error(`process ${pid} still runs after ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

for (const arch of ["x86_64", "aarch64"] as const) {
  const runner = runnerFor(arch);
  Deno.test({
    name: `session helper: the ${arch} image makes a session leader and passes everything through`,
    ignore: runner === undefined,
    fn: async () => {
      const dir = await Deno.makeTempDir({ prefix: "sqsrun-helper-" });
      try {
        const helper = join(dir, "helper");
        await Deno.writeFile(helper, sessionHelperImage(arch), { mode: 0o700 });
        const [program, ...prefix] = [...runner!, helper];
        const script = 'read -r stat </proc/self/stat; echo "$stat"; echo "$1 $JOB_VAR"; exit 42';
        const output = await runWithInput(
          program,
          [...prefix, "/bin/sh", "-c", script, "sh", "first argument"],
          GO,
          { JOB_VAR: "from the environment" },
        );
        assert.equal(output.code, 42);
        const [stat, echoed] = new TextDecoder().decode(output.stdout).trimEnd().split("\n");
        const pid = stat.slice(0, stat.indexOf(" "));
        const [, , group, session] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        assert.deepEqual([group, session], [pid, pid], `not a session leader: ${stat}`);
        assert.equal(echoed, "first argument from the environment");

        const missing = await runWithInput(program, [...prefix, join(dir, "no-such-program")], GO);
        assert.equal(missing.code, 127);
        assert.equal(new TextDecoder().decode(missing.stderr), HELPER_MESSAGE);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });

  Deno.test({
    name: `session helper: the ${arch} image runs nothing when its stdin ends before the go byte`,
    ignore: runner === undefined,
    fn: async () => {
      const dir = await Deno.makeTempDir({ prefix: "sqsrun-helper-" });
      try {
        const helper = join(dir, "helper");
        await Deno.writeFile(helper, sessionHelperImage(arch), { mode: 0o700 });
        const [program, ...prefix] = [...runner!, helper];
        const marker = join(dir, "ran");
        const args = [...prefix, "/bin/sh", "-c", 'echo ran > "$0"', marker];
        const output = await runWithInput(program, args, new Uint8Array(0));
        assert.equal(output.code, NO_GO_STATUS);
        assert.deepEqual([output.stdout.length, output.stderr.length], [0, 0]);
        await assert.rejects(Deno.stat(marker), Deno.errors.NotFound, "the program ran");
        // Any one byte is the go.
        assert.equal((await runWithInput(program, args, new Uint8Array([0x41]))).code, 0);
        assert.equal(await Deno.readTextFile(marker), "ran\n");
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });

  Deno.test({
    name: `session helper: the ${arch} image takes exactly the go byte; the job reads the rest`,
    ignore: runner === undefined,
    fn: async () => {
      const dir = await Deno.makeTempDir({ prefix: "sqsrun-helper-" });
      try {
        const helper = join(dir, "helper");
        await Deno.writeFile(helper, sessionHelperImage(arch), { mode: 0o700 });
        const [program, ...prefix] = [...runner!, helper];
        const big = new Uint8Array(1024 * 1024);
        for (let i = 0; i < big.length; i++) big[i] = (i * 7 + (i >> 11)) & 0xff;
        const bodies = [new Uint8Array(0), new TextEncoder().encode("\nline\n"), big];
        for (const body of bodies) {
          const output = await runWithInput(program, [...prefix, "/bin/cat"], withGo(body));
          assert.equal(output.code, 0);
          assert.equal(output.stdout.length, body.length);
          assert.ok(output.stdout.every((byte, i) => byte === body[i]), "the body changed");
        }
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });

  Deno.test({
    name: `session helper: the ${arch} image's job is killed when the helper's parent dies`,
    ignore: runner === undefined,
    fn: async () => {
      const dir = await Deno.makeTempDir({ prefix: "sqsrun-helper-" });
      try {
        const helper = join(dir, "helper");
        await Deno.writeFile(helper, sessionHelperImage(arch), { mode: 0o700 });
        // The parent shell starts the job through the helper, says its pid, and
        // waits to be killed; nothing but PR_SET_PDEATHSIG ends the job then.
        const parent = new Deno.Command("/bin/sh", {
          args: [
            "-c",
            `printf '\\n' | "$@" & echo $!; exec sleep 300`,
            "sh",
            ...runner!,
            helper,
            "/bin/sleep",
            "300",
          ],
          stdin: "null",
          stdout: "piped",
        }).spawn();
        const reader = parent.stdout.pipeThrough(new TextDecoderStream()).getReader();
        const job = Number((await reader.read()).value!.trim());
        await new Promise((resolve) => setTimeout(resolve, 300));
        const stat = await Deno.readTextFile(`/proc/${job}/stat`);
        assert.ok(stat.includes("(sleep)"), `the job did not start: ${stat}`);
        parent.kill("SIGKILL");
        await parent.status;
        await reader.cancel();
        await gone(job, 2_000);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}

Deno.test({
  name: "isolation: the helper is chosen here, and removed with its directory",
  ignore: helperArch() === undefined,
  fn: async () => {
    const isolation = await detectIsolation();
    assert.equal(isolation.kind, "wrapper");
    if (isolation.kind !== "wrapper") return;
    assert.equal(isolation.name, "session-helper");
    const info = await Deno.stat(join(isolation.path, ".."));
    assert.equal(info.mode! & 0o777, 0o700);
    isolation.remove();
    await assert.rejects(Deno.stat(join(isolation.path, "..")), Deno.errors.NotFound);
  },
});

Deno.test({
  name: "isolation: the probe refuses a wrapper that does not make a session",
  ignore: !isLinux,
  fn: async () => {
    const env = findExecutable("env", Deno.env.get("PATH") ?? "");
    assert.ok(env);
    assert.equal(await makesSessionLeader(env, []), false);
    assert.equal(await makesSessionLeader("/no/such/wrapper", []), false);
  },
});

Deno.test("isolation: findExecutable looks programs up as execvp does", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sqsrun-path-" });
  try {
    await Deno.writeTextFile(join(dir, "job"), "#!/bin/sh\n", { mode: 0o755 });
    await Deno.writeTextFile(join(dir, "data"), "", { mode: 0o644 });
    await Deno.mkdir(join(dir, "folder"));
    assert.equal(findExecutable("job", `/nonexistent:${dir}`), `${dir}/job`);
    assert.equal(findExecutable("data", dir), undefined);
    assert.equal(findExecutable("folder", dir), undefined);
    assert.equal(findExecutable(`${dir}/job`, ""), `${dir}/job`);
    assert.equal(findExecutable(`${dir}/data`, dir), undefined);
    assert.equal(findExecutable("job", ""), undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Mounts a small noexec tmpfs at a new directory; undefined where this process may not mount. */
async function noexecMount(): Promise<string | undefined> {
  if (!isLinux || Deno.uid() !== 0) return undefined;
  const dir = await Deno.makeTempDir({ prefix: "sqsrun-noexec-" });
  const mounted = await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", "noexec,size=1m", "tmpfs", dir],
    stdout: "null",
    stderr: "null",
  }).output().catch(() => undefined);
  if (mounted?.success) return dir;
  await Deno.remove(dir);
  return undefined;
}

Deno.test({
  name: "isolation: a noexec temporary directory falls back to setsid and leaves nothing there",
  ignore: helperArch() === undefined || findSetsid() === undefined,
  fn: async () => {
    const dir = await noexecMount();
    if (dir === undefined) {
      console.log("not run: this process cannot mount a tmpfs (needs root and CAP_SYS_ADMIN)");
      return;
    }
    try {
      const module = new URL("../src/runners/process/isolation.ts", import.meta.url).href;
      const script = `const { detectIsolation } = await import(${JSON.stringify(module)});
const isolation = await detectIsolation();
console.log(isolation.kind === "wrapper" ? isolation.name : isolation.kind);`;
      const output = await new Deno.Command(Deno.execPath(), {
        args: ["eval", script],
        env: { TMPDIR: dir },
        stdin: "null",
      }).output();
      assert.equal(new TextDecoder().decode(output.stdout).trim(), "setsid");
      assert.deepEqual([...Deno.readDirSync(dir)], [], "the helper's directory was left behind");
    } finally {
      await new Deno.Command("umount", { args: [dir] }).output();
      await Deno.remove(dir);
    }
  },
});
