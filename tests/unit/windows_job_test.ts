/**
 * Unit tests of what the Windows Job Objects rest on that can be checked on any
 * OS: the bytes of the limit structure given to SetInformationJobObject (64-bit
 * Windows' layout), the name the start line gives the isolation, and that off
 * Windows nothing is loaded and every job goes on without a Job Object. The
 * Win32 calls themselves run only on Windows (the smoke suite's `tree` and
 * `worker-death` checks in CI).
 */
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { execRunner } from "../../src/runners/exec.ts";
import { isolationName } from "../../src/runners/process/isolation.ts";
import {
  EXTENDED_LIMIT_INFORMATION_BYTES,
  extendedLimitInformation,
  JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS,
  JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
  jobObjectFor,
  jobObjectsUnavailable,
  LIMIT_FLAGS_OFFSET,
} from "../../src/runners/process/windows_job.ts";

Deno.test("windows_job: the Win32 values are winnt.h's", () => {
  strictEqual(JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS, 9);
  strictEqual(JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE, 0x2000);
  // 64-bit Windows: two LARGE_INTEGERs, then LimitFlags; 64 + 48 (IO_COUNTERS) + 4 * 8.
  strictEqual(LIMIT_FLAGS_OFFSET, 16);
  strictEqual(EXTENDED_LIMIT_INFORMATION_BYTES, 64 + 48 + 4 * 8);
});

Deno.test("windows_job: the limit structure is 144 zero bytes but LimitFlags, little-endian at 16", () => {
  const info = extendedLimitInformation(JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE);
  strictEqual(info.length, 144);
  // The whole buffer: FFI passes a pointer to the view's first byte and its length separately.
  strictEqual(info.byteOffset, 0);
  strictEqual(info.buffer.byteLength, 144);
  deepStrictEqual([...info.subarray(16, 20)], [0x00, 0x20, 0x00, 0x00]);
  info.subarray(16, 20).fill(0);
  ok(info.every((byte) => byte === 0), "no byte but LimitFlags' is set");
});

Deno.test("windows_job: every byte of the flags lands in its place, in a fresh buffer each time", () => {
  const info = extendedLimitInformation(0x12345678);
  deepStrictEqual([...info.subarray(16, 20)], [0x78, 0x56, 0x34, 0x12]);
  deepStrictEqual([...info.subarray(12, 16)], [0, 0, 0, 0]);
  deepStrictEqual([...info.subarray(20, 24)], [0, 0, 0, 0]);
  const other = extendedLimitInformation(0xffffffff);
  deepStrictEqual([...other.subarray(16, 20)], [0xff, 0xff, 0xff, 0xff]);
  deepStrictEqual([...info.subarray(16, 20)], [0x78, 0x56, 0x34, 0x12]);
});

Deno.test("windows_job: the start line names the isolation, job-object where jobs have one", () => {
  strictEqual(isolationName({ kind: "none", jobObjects: true }), "job-object");
  strictEqual(isolationName({ kind: "none", jobObjects: false, unavailable: "why" }), "none");
  strictEqual(isolationName({ kind: "none" }), "none");
  strictEqual(isolationName({ kind: "detached", prefix: [], gated: false }), "detached");
  strictEqual(
    isolationName({
      kind: "wrapper",
      name: "setsid",
      path: "/usr/bin/setsid",
      prefix: ["--"],
      gated: false,
      remove: () => {},
    }),
    "setsid",
  );
  const spec = { command: "job", args: [], shell: false, env: {} };
  deepStrictEqual(execRunner(spec, { kind: "none", jobObjects: true }).details, {
    isolation: "job-object",
    spawner: "main",
  });
  deepStrictEqual(execRunner(spec, { kind: "none", unavailable: "why" }).details, {
    isolation: "none",
    spawner: "main",
  });
});

Deno.test({
  name: "windows_job: off Windows nothing is loaded, and a job goes on without a Job Object",
  ignore: Deno.build.os === "windows",
  fn: () => {
    strictEqual(jobObjectsUnavailable(), "Job Objects exist only on Windows");
    const reasons: string[] = [];
    strictEqual(jobObjectFor(Deno.pid, (reason) => reasons.push(reason)), undefined);
    deepStrictEqual(reasons, ["Job Objects exist only on Windows"]);
    strictEqual(jobObjectFor(Deno.pid), undefined);
  },
});
