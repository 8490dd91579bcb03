/**
 * The spawner (src/runners/process/spawner.ts) on its own: processes started on
 * a spawner thread report their pid, output and exit to the main thread; a job
 * that cannot start fails; a signal sent before the pid is known still reaches
 * the job; a log with no room slows the job's output instead of losing it. The
 * guarantees of a gated start (watchdog line before the go byte) are checked
 * through execRunner in exec_start_test.ts, which runs on spawner threads too.
 */
import assert from "node:assert/strict";
import { Spawner } from "../src/runners/process/spawner.ts";
import { RecordingLogger } from "./support/recording_logger.ts";

const isLinux = Deno.build.os === "linux";
const encoder = new TextEncoder();

/** A plain (ungrouped) `sh -c SCRIPT` request with `body` on stdin. */
function shell(script: string, body = "") {
  return {
    program: "/bin/sh",
    args: ["-c", script],
    env: {},
    detached: false,
    grouped: false,
    rest: encoder.encode(body),
  };
}

Deno.test({
  name:
    "spawner: a job's pid, its output lines (split across reads) and its exit reach the main thread",
  ignore: !isLinux,
  fn: async () => {
    const spawner = new Spawner(undefined, new RecordingLogger());
    const log = new RecordingLogger();
    try {
      const job = spawner.spawn(
        shell(
          'cat; printf "par"; sleep 0.05; printf "tial\\nlast"; echo oops >&2; exit 3',
          "body\n",
        ),
        { log },
      );
      const exit = await job.done;
      assert.deepEqual(exit, { code: 3, signal: null });
      assert.ok(job.pid! > 0);
      const lines = (stream: string) =>
        log.lines.filter((line) => line.fields.stream === stream).map((line) => line.msg);
      assert.deepEqual(lines("stdout"), ["body", "partial", "last"]);
      assert.deepEqual(lines("stderr"), ["oops"]);
    } finally {
      spawner.close();
    }
  },
});

Deno.test({
  name: "spawner: a program that cannot start fails its job with the reason",
  ignore: !isLinux,
  fn: async () => {
    const spawner = new Spawner(undefined, new RecordingLogger());
    try {
      const job = spawner.spawn(
        { ...shell(""), program: "/nonexistent/program" },
        { log: new RecordingLogger() },
      );
      const exit = await job.done;
      assert.equal(exit.code, null);
      assert.match(exit.error ?? "", /^cannot start \/nonexistent\/program: /);
      assert.equal(job.pid, undefined);
    } finally {
      spawner.close();
    }
  },
});

Deno.test({
  name: "spawner: a SIGKILL sent before the spawner reported the pid still ends the job",
  ignore: !isLinux,
  fn: async () => {
    const spawner = new Spawner(undefined, new RecordingLogger());
    try {
      const job = spawner.spawn(shell("sleep 30"), { log: new RecordingLogger() });
      assert.equal(job.pid, undefined, "the pid comes later, from the spawner thread");
      job.signal("SIGKILL");
      const exit = await job.done;
      assert.deepEqual(exit, { code: null, signal: "SIGKILL" });
    } finally {
      spawner.close();
    }
  },
});

Deno.test({
  name:
    "spawner: a log without room stops reading the job's output (its pipe fills), then all of it arrives",
  ignore: !isLinux,
  fn: async () => {
    const spawner = new Spawner(undefined, new RecordingLogger());
    let open!: () => void;
    const room = new Promise<void>((resolve) => open = resolve);
    let full = true;
    const log = Object.assign(new RecordingLogger(), {
      outputRoom: () => full ? room : undefined,
    });
    try {
      // 4 MiB of lines: more than the credits in flight and a pipe's buffer hold.
      const job = spawner.spawn(
        shell("i=0; while [ $i -lt 4096 ]; do printf '%01023d\\n' $i; i=$((i+1)); done"),
        { log },
      );
      const ended = await Promise.race([
        job.done.then(() => true),
        new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 1_500)),
      ]);
      assert.equal(ended, false, "the job ran to its end while the log had no room");
      const heldLines = log.lines.length;
      assert.ok(heldLines < 4096, `${heldLines} lines logged while there was no room`);
      full = false;
      open();
      assert.deepEqual(await job.done, { code: 0, signal: null });
      assert.equal(log.lines.length, 4096);
      assert.equal(log.lines[4095].msg, "4095".padStart(1023, "0"));
    } finally {
      spawner.close();
    }
  },
});
