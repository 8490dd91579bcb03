/**
 * Windows: a Job Object per `--exec` job, so that ending the job ends every
 * process it started, as the SIGKILL to a process group does elsewhere.
 * Windows has no process groups to signal, and `child.kill()` ends only the
 * job's own process.
 *
 * Each job gets a job object of its own, made through kernel32.dll
 * (`Deno.dlopen`, loaded once, on first use, and kept for the worker's life):
 *
 * - Its one limit is `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE`: when the last handle
 *   to it closes, the system terminates every process still in it. The worker
 *   holds the only handle (created not inheritable, so no child gets one), and a
 *   process's handles close when it exits, however it exits. So a job's
 *   processes die at the job's end ({@linkcode ProcessTree.close}) and when the
 *   worker dies, even by TerminateProcess or a crash.
 * - It allows no breakaway, so every process the job starts after its assignment
 *   is in it, at any depth. Deno puts the children it spawns (all but `detached`
 *   ones) into one job object of its process that allows silent breakaway (Deno's
 *   runtime/subprocess_windows), which is how the processes a job started escaped
 *   before; but a child breaks away only if the job it is in directly allows it
 *   ("Nested Jobs" on learn.microsoft.com), and that job is now this one, nested
 *   in Deno's (jobs nest since Windows 8 and Windows Server 2012). A program in the job that
 *   asks for `CREATE_BREAKAWAY_FROM_JOB` fails to start that child
 *   (ERROR_ACCESS_DENIED): the job lacks `JOB_OBJECT_LIMIT_BREAKAWAY_OK`.
 * - {@linkcode ProcessTree.kill} is `TerminateJobObject`: every process in the
 *   job ends at once with exit code 1, the code `child.kill()` gives on Windows.
 *   There is no polite stop: a console program can be sent a Ctrl-C only with
 *   every other process of its console.
 *
 * ## The assignment race
 *
 * `Deno.Command` spawns without `CREATE_SUSPENDED` and gives no process handle,
 * so the job's process runs from the moment it is created, and goes into its job
 * object only when {@linkcode jobObjectFor} is called with its pid after
 * `spawn()` returned. Both are synchronous, on the worker's thread, one right
 * after the other: the window is what is left of `spawn()` once the process was
 * created (Deno's own bookkeeping, the child's streams) plus this module's four
 * system calls. It was not measured (this was written without a Windows machine).
 * A process that the job starts in that window is not in the job object (it is
 * in Deno's, which lets it break away) and is not ended with it. A new Windows
 * process first maps and initialises its DLLs, which usually takes longer than
 * that window, so an ordinary program does not start another one so soon; but
 * nothing guarantees it, and Deno offers no way to close the window (that would
 * take a suspended start, or the job object given to CreateProcess itself).
 *
 * The pid cannot name another process here: the child's process handle is open
 * in Deno while it runs, and Windows reuses no pid while a handle to its process
 * is open.
 *
 * The offsets of the limit structure are those of 64-bit Windows (x86_64 and
 * aarch64), the only Windows Deno runs on.
 *
 * @module
 */

/** `JobObjectExtendedLimitInformation`, the information class of {@linkcode extendedLimitInformation}. */
export const JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS = 9;

/** Terminates every process in the job when its last handle closes. */
export const JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x2000;

/**
 * `sizeof(JOBOBJECT_EXTENDED_LIMIT_INFORMATION)` on 64-bit Windows: the 64-byte
 * `JOBOBJECT_BASIC_LIMIT_INFORMATION`, the 48-byte `IO_COUNTERS`, four `SIZE_T`.
 */
export const EXTENDED_LIMIT_INFORMATION_BYTES = 144;

/**
 * Offset of `BasicLimitInformation.LimitFlags` (a DWORD), after two 8-byte
 * `LARGE_INTEGER` time limits.
 */
export const LIMIT_FLAGS_OFFSET = 16;

/** `OpenProcess` rights that `AssignProcessToJobObject` requires of the process handle. */
const PROCESS_SET_QUOTA = 0x0100;
const PROCESS_TERMINATE = 0x0001;

/** The exit code of the processes of a killed job: the one Deno's `child.kill()` gives. */
const KILLED_EXIT_CODE = 1;

/** The kernel32 functions used, as Win32 declares them (HANDLE: pointer; BOOL: i32; DWORD, UINT: u32). */
const KERNEL32 = {
  CreateJobObjectW: { parameters: ["pointer", "pointer"], result: "pointer" },
  SetInformationJobObject: { parameters: ["pointer", "i32", "buffer", "u32"], result: "i32" },
  OpenProcess: { parameters: ["u32", "i32", "u32"], result: "pointer" },
  AssignProcessToJobObject: { parameters: ["pointer", "pointer"], result: "i32" },
  TerminateJobObject: { parameters: ["pointer", "u32"], result: "i32" },
  CloseHandle: { parameters: ["pointer"], result: "i32" },
  GetLastError: { parameters: [], result: "u32" },
} as const;

type Kernel32 = Deno.DynamicLibrary<typeof KERNEL32>["symbols"];

/** The processes of one job, in a job object of their own. */
export interface ProcessTree {
  /**
   * Terminates every process in the job now. Returns false when that failed or
   * the tree is closed: then the caller ends the job's own process itself.
   */
  kill(): boolean;
  /**
   * Closes the job object, which terminates whatever is still in it. Called once
   * the job's own process exited; kill() does nothing after it, as the handle's
   * value may then name another object.
   */
  close(): void;
}

/**
 * Returns the `JOBOBJECT_EXTENDED_LIMIT_INFORMATION` that sets `limitFlags` and
 * nothing else, as the bytes `SetInformationJobObject` reads (little-endian).
 */
export function extendedLimitInformation(limitFlags: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(EXTENDED_LIMIT_INFORMATION_BYTES);
  new DataView(bytes.buffer).setUint32(LIMIT_FLAGS_OFFSET, limitFlags, true);
  return bytes;
}

/** kernel32.dll, opened once and never closed: its functions are called until the worker exits. */
let kernel32: Deno.DynamicLibrary<typeof KERNEL32> | undefined;
/** Why kernel32 cannot be used; set by the first failed load. */
let loadFailure: string | undefined;
/** What {@linkcode jobObjectsUnavailable} found (null: not asked yet). */
let probed: string | undefined | null = null;

/** Loads kernel32.dll the first time; undefined (and `loadFailure`) where it cannot be. */
function library(): Kernel32 | undefined {
  if (kernel32 !== undefined || loadFailure !== undefined) return kernel32?.symbols;
  if (Deno.build.os !== "windows") {
    loadFailure = "Job Objects exist only on Windows";
    return undefined;
  }
  try {
    // Loaded by name: kernel32 is one of Windows' known DLLs, always the system's own.
    kernel32 = Deno.dlopen("kernel32.dll", KERNEL32);
  } catch (error) {
    loadFailure = `cannot load kernel32.dll: ${error instanceof Error ? error.message : error}`;
  }
  return kernel32?.symbols;
}

/**
 * Names the call that failed, with the thread's last error. Best effort: the
 * runtime may make calls of its own between two FFI calls, so the code may
 * belong to another one.
 */
function failure(k: Kernel32, call: string): string {
  return `${call} failed (Windows error ${k.GetLastError()})`;
}

/** Makes a job object that kills what it holds when closed; a string says why it could not. */
function newJobObject(k: Kernel32): Deno.PointerObject | string {
  const job = k.CreateJobObjectW(null, null);
  if (job === null) return failure(k, "CreateJobObjectW");
  const info = extendedLimitInformation(JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE);
  const set = k.SetInformationJobObject(
    job,
    JOB_OBJECT_EXTENDED_LIMIT_INFORMATION_CLASS,
    info,
    info.byteLength,
  );
  if (set === 0) {
    const reason = failure(k, "SetInformationJobObject");
    k.CloseHandle(job);
    return reason;
  }
  return job;
}

/**
 * Returns why jobs cannot have job objects here (not Windows, no `--allow-ffi`,
 * a call that fails), or undefined when they can: loads kernel32 and makes and
 * closes one job object, once, so that start-up can say it in one warning.
 */
export function jobObjectsUnavailable(): string | undefined {
  if (probed !== null) return probed;
  const k = library();
  if (k === undefined) return probed = loadFailure;
  const job = newJobObject(k);
  if (typeof job === "string") return probed = job;
  k.CloseHandle(job);
  return probed = undefined;
}

/**
 * Puts process `pid` (a job's child, just spawned) into a new job object, with
 * every process it starts from then on. Returns undefined when it could not,
 * after telling `failed` why: the caller then ends the process alone, as before.
 */
export function jobObjectFor(
  pid: number,
  failed: (reason: string) => void = () => {},
): ProcessTree | undefined {
  const k = library();
  if (k === undefined) {
    failed(loadFailure ?? "kernel32.dll is not loaded");
    return undefined;
  }
  const job = newJobObject(k);
  if (typeof job === "string") {
    failed(job);
    return undefined;
  }
  const process = k.OpenProcess(PROCESS_SET_QUOTA | PROCESS_TERMINATE, 0, pid);
  if (process === null) {
    failed(failure(k, `OpenProcess(${pid})`));
    k.CloseHandle(job);
    return undefined;
  }
  const assigned = k.AssignProcessToJobObject(job, process) !== 0;
  const reason = assigned ? "" : failure(k, "AssignProcessToJobObject");
  k.CloseHandle(process);
  if (!assigned) {
    // Empty: closing it kills nothing.
    k.CloseHandle(job);
    failed(reason);
    return undefined;
  }
  let open = true;
  return {
    kill: () => open && k.TerminateJobObject(job, KILLED_EXIT_CODE) !== 0,
    close: () => {
      if (!open) return;
      open = false;
      k.CloseHandle(job);
    },
  };
}
