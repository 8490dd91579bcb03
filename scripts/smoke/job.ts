/**
 * The job that the smoke suite's workers run (`--exec DENO -- run -A scripts/smoke/job.ts`),
 * and the heartbeat process of its process-tree checks. What a job does is in its message
 * body, one JSON object; every job prints one `smoke-job ...` line first, so the suite can
 * see in the worker's log that the body arrived on stdin.
 *
 * | body                                   | what the job does                                        |
 * | -------------------------------------- | -------------------------------------------------------- |
 * | `{"do":"ok","say":TEXT}`               | prints TEXT, exits 0                                     |
 * | `{"do":"fail"}`                        | exits 3                                                  |
 * | `{"do":"wait","file":PATH}`            | waits until PATH exists (at most 60 s), exits 0          |
 * | `{"do":"tree","beat":PREFIX,"stay":B}` | starts a heartbeat child, beats itself, then stays or not |
 *
 * A `tree` job writes its own heartbeat to `PREFIX.job` and starts a child that writes one
 * to `PREFIX.child`; it waits for the child's first beat, so the child surely exists, then
 * exits 0 (`stay` false: a job that leaves a process behind) or sleeps for at most 60 s
 * (`stay` true: a job to be killed). A heartbeat file holds `PID COUNT`, rewritten every
 * 100 ms: a count that stops moving is a process that died. On Windows the child is spawned
 * `detached`, outside the Job Object Deno puts its own children in (which would kill it with
 * this job and make the check pass for a reason no other job program has): like a child of
 * `cmd.exe`, it dies with the job only if sqsrun kills the job's whole tree.
 *
 * A `wait` job on Windows survives a console Ctrl-C, which reaches every process of the
 * console, jobs included (the suite's drain there; see scripts/smoke.ts). Elsewhere it has
 * no handler: a drain must not signal running jobs at all, and one that did kills it.
 *
 * `job.ts beat FILE SECONDS` is the heartbeat process: it beats into FILE, then exits.
 *
 * @module
 */
import { fileURLToPath } from "node:url";

const BEAT_MS = 100;
const isWindows = Deno.build.os === "windows";

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Rewrites `file` with `PID COUNT` every BEAT_MS until `seconds` have passed. */
function beat(file: string, seconds: number): void {
  let count = 0;
  const write = () => {
    count++;
    // Write-then-rename, so a reader never sees half a line; a reader holding the file
    // open on Windows makes the rename fail, and the next beat tries again.
    try {
      Deno.writeTextFileSync(`${file}.tmp`, `${Deno.pid} ${count}\n`);
      Deno.renameSync(`${file}.tmp`, file);
    } catch { /* next beat */ }
  };
  write();
  const timer = setInterval(write, BEAT_MS);
  setTimeout(() => clearInterval(timer), seconds * 1000);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

async function waitForFile(path: string, seconds: number): Promise<boolean> {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    if (await exists(path)) return true;
    await sleep(BEAT_MS);
  }
  return false;
}

async function runJob(): Promise<number> {
  const text = new TextDecoder().decode(await new Response(Deno.stdin.readable).arrayBuffer());
  let job: { do?: string; say?: string; file?: string; beat?: string; stay?: boolean };
  try {
    job = JSON.parse(text);
  } catch {
    console.log(`smoke-job: the body is not JSON: ${JSON.stringify(text.slice(0, 80))}`);
    return 64;
  }
  switch (job.do) {
    case "ok":
      console.log(`smoke-job ok: ${job.say ?? ""}`);
      return 0;
    case "fail":
      console.log("smoke-job failing on purpose (exit 3)");
      return 3;
    case "wait": {
      const file = String(job.file);
      if (isWindows) {
        Deno.addSignalListener("SIGINT", () => {
          console.log("smoke-job got the console Ctrl-C; finishing anyway");
        });
      }
      console.log(`smoke-job waiting for ${file}`);
      if (!(await waitForFile(file, 60))) {
        console.log("smoke-job gave up waiting after 60 s");
        return 4;
      }
      console.log("smoke-job done waiting");
      return 0;
    }
    case "tree": {
      const prefix = String(job.beat);
      beat(`${prefix}.job`, 60);
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "--quiet",
          fileURLToPath(import.meta.url),
          "beat",
          `${prefix}.child`,
          "45",
        ],
        stdin: "null",
        stdout: "null",
        stderr: "null",
        detached: isWindows,
      }).spawn();
      child.unref();
      if (!(await waitForFile(`${prefix}.child`, 20))) {
        console.log("smoke-job tree: the child never beat");
        return 5;
      }
      console.log(`smoke-job tree: child pid ${child.pid}, job pid ${Deno.pid}`);
      if (!job.stay) return 0;
      await sleep(60_000);
      return 0;
    }
    default:
      console.log(`smoke-job: unknown job ${JSON.stringify(job.do)}`);
      return 64;
  }
}

if (import.meta.main) {
  if (Deno.args[0] === "beat") {
    beat(Deno.args[1], Number(Deno.args[2] ?? 45));
  } else {
    Deno.exit(await runJob());
  }
}
