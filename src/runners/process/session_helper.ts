/**
 * The session helper: a tiny static Linux program that makes itself a session
 * leader, waits for the worker's go, and execs the job. Every job must run in a
 * process group of its own so that one signal reaches everything it started, and
 * Deno offers only two ways to get one: a `detached` spawn, which forks the whole
 * worker (milliseconds per job, growing with its memory), or spawning a wrapper
 * such as util-linux `setsid`, whose dynamic loading costs about as much as the
 * job's own exec (0.75 ms of CPU per job on the benchmark machine, a third of the
 * worker's throughput with short jobs). This helper is four system calls and no
 * loader: its exec costs a few hundredths of a millisecond.
 *
 * It is written, at start-up, to a private temporary directory (mode 0700) and
 * removed at exit. Its code is the assembly in `scripts/session_helper/*.s`;
 * `tests/session_helper_test.ts` assembles those files and checks the bytes below
 * against them, then runs the image (the aarch64 one under qemu when present).
 *
 *     session-helper PROGRAM [ARGS...]
 *
 * 1. setsid(): the job leads a new session and process group.
 * 2. prctl(PR_SET_PDEATHSIG, SIGKILL): the kernel SIGKILLs the job (this process,
 *    and the program it becomes: the setting survives execve) when the thread
 *    that spawned it exits. Deno 2.9.6 spawns (posix_spawn; fork for `detached`)
 *    on the thread that calls `spawn()`, the main JS thread, which lives as long
 *    as the worker: checked with strace, and a job outlived 25 s of an idle worker,
 *    past tokio's 10 s reaping of idle threads. `tests/exec_start_test.ts` checks
 *    that the job is the main thread's child. Spawning from a Web Worker instead
 *    would tie every job to that Worker's thread (its terminate() would kill them).
 * 3. read(0, buf, 1): waits for the worker's go byte (see exec.ts). A read
 *    of one byte from a pipe takes exactly one byte: the job reads its body
 *    untouched. Anything but one byte (end of file: the worker died before its go)
 *    exits 125 (NO_GO_STATUS) without running the job.
 * 4. execve(PROGRAM, ARGS): PROGRAM must be a path (no PATH search). If it cannot
 *    be executed, the helper writes "sqsrun: cannot execute the job's program" to
 *    stderr and exits 127.
 *
 * @module
 */

/** Machine code of `scripts/session_helper/x86_64.s`, its `.text` section. */
const X86_64_CODE = [
  [0xb8, 0x70, 0x00, 0x00, 0x00], // mov $112, %eax            setsid()
  [0x0f, 0x05], // syscall
  [0xbf, 0x01, 0x00, 0x00, 0x00], // mov $1, %edi              PR_SET_PDEATHSIG
  [0xbe, 0x09, 0x00, 0x00, 0x00], // mov $9, %esi              SIGKILL
  [0xb8, 0x9d, 0x00, 0x00, 0x00], // mov $157, %eax            prctl()
  [0x0f, 0x05], // syscall
  [0x31, 0xff], // xor %edi, %edi                              stdin
  [0x48, 0x8d, 0x74, 0x24, 0x08], // lea 8(%rsp), %rsi         into argv[0]'s slot
  [0xba, 0x01, 0x00, 0x00, 0x00], // mov $1, %edx              one byte
  [0x31, 0xc0], // xor %eax, %eax                              read()
  [0x0f, 0x05], // syscall
  [0xbf, 0x7d, 0x00, 0x00, 0x00], // mov $125, %edi
  [0x48, 0x83, 0xf8, 0x01], // cmp $1, %rax
  [0x75, 0x37], // jne exit                                    no go byte: exit(125)
  [0x48, 0x8b, 0x7c, 0x24, 0x10], // mov 16(%rsp), %rdi        argv[1]
  [0x48, 0x8d, 0x74, 0x24, 0x10], // lea 16(%rsp), %rsi        &argv[1]
  [0x48, 0x8b, 0x14, 0x24], // mov (%rsp), %rdx                argc
  [0x48, 0x8d, 0x54, 0xd4, 0x10], // lea 16(%rsp,%rdx,8), %rdx envp
  [0xb8, 0x3b, 0x00, 0x00, 0x00], // mov $59, %eax             execve()
  [0x0f, 0x05], // syscall
  [0xbf, 0x02, 0x00, 0x00, 0x00], // mov $2, %edi              only reached when execve failed
  [0x48, 0x8d, 0x35, 0x18, 0x00, 0x00, 0x00], // lea message(%rip), %rsi
  [0xba, 0x29, 0x00, 0x00, 0x00], // mov $41, %edx
  [0xb8, 0x01, 0x00, 0x00, 0x00], // mov $1, %eax              write()
  [0x0f, 0x05], // syscall
  [0xbf, 0x7f, 0x00, 0x00, 0x00], // mov $127, %edi
  [0xb8, 0x3c, 0x00, 0x00, 0x00], // exit: mov $60, %eax       exit()
  [0x0f, 0x05], // syscall
];

/** Machine code of `scripts/session_helper/aarch64.s` (little-endian words). */
const AARCH64_CODE = [
  0xd28013a8, // mov x8, #157                setsid()
  0xd4000001, // svc #0
  0xd2800020, // mov x0, #1                  PR_SET_PDEATHSIG
  0xd2800121, // mov x1, #9                  SIGKILL
  0xd28014e8, // mov x8, #167                prctl()
  0xd4000001, // svc #0
  0xd2800000, // mov x0, #0                  stdin
  0x910023e1, // add x1, sp, #8              into argv[0]'s slot
  0xd2800022, // mov x2, #1                  one byte
  0xd28007e8, // mov x8, #63                 read()
  0xd4000001, // svc #0
  0xf100041f, // cmp x0, #1
  0xd2800fa0, // mov x0, #125
  0x540001c1, // b.ne exit                   no go byte: exit(125)
  0xf9400be0, // ldr x0, [sp, #16]           argv[1]
  0x910043e1, // add x1, sp, #16             &argv[1]
  0xf94003e2, // ldr x2, [sp]                argc
  0x8b226fe2, // add x2, sp, x2, lsl #3
  0x91004042, // add x2, x2, #16             envp
  0xd2801ba8, // mov x8, #221                execve()
  0xd4000001, // svc #0
  0xd2800040, // mov x0, #2                  only reached when execve failed
  0x100000e1, // adr x1, message
  0xd2800522, // mov x2, #41
  0xd2800808, // mov x8, #64                 write()
  0xd4000001, // svc #0
  0xd2800fe0, // mov x0, #127
  0xd2800ba8, // exit: mov x8, #93           exit()
  0xd4000001, // svc #0
];

/** Follows the code directly: both listings address it relative to the code. */
export const HELPER_MESSAGE = "sqsrun: cannot execute the job's program\n";

/** The architectures the helper exists for. */
export type HelperArch = "x86_64" | "aarch64";

/** Returns the `.text` bytes (code, then message) of the helper for `arch`. */
export function sessionHelperText(arch: HelperArch): Uint8Array {
  const code = arch === "x86_64" ? X86_64_CODE.flat() : AARCH64_CODE.flatMap((
    word,
  ) => [word & 0xff, (word >>> 8) & 0xff, (word >>> 16) & 0xff, word >>> 24]);
  const message = new TextEncoder().encode(HELPER_MESSAGE);
  const text = new Uint8Array(code.length + message.length);
  text.set(code);
  text.set(message, code.length);
  return text;
}

const LOAD_ADDRESS = 0x400000;
const ELF_HEADER_SIZE = 64;
const PROGRAM_HEADER_SIZE = 56;
/** PT_LOAD for the code, PT_GNU_STACK so the kernel gives the stack no exec permission. */
const PROGRAM_HEADERS = 2;
const TEXT_OFFSET = ELF_HEADER_SIZE + PROGRAM_HEADERS * PROGRAM_HEADER_SIZE;
const MACHINE: Record<HelperArch, number> = { x86_64: 62, aarch64: 183 };

/** Returns the whole ELF executable of the helper for `arch`. */
export function sessionHelperImage(arch: HelperArch): Uint8Array {
  const text = sessionHelperText(arch);
  const size = TEXT_OFFSET + text.length;
  const image = new Uint8Array(size);
  const view = new DataView(image.buffer);
  const u16 = (at: number, value: number) => view.setUint16(at, value, true);
  const u32 = (at: number, value: number) => view.setUint32(at, value, true);
  const u64 = (at: number, value: number) => view.setBigUint64(at, BigInt(value), true);

  image.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]); // "\x7fELF", 64-bit, little-endian, version 1
  u16(16, 2); // ET_EXEC
  u16(18, MACHINE[arch]);
  u32(20, 1); // EV_CURRENT
  u64(24, LOAD_ADDRESS + TEXT_OFFSET); // entry point
  u64(32, ELF_HEADER_SIZE); // program headers right after this header
  u16(52, ELF_HEADER_SIZE);
  u16(54, PROGRAM_HEADER_SIZE);
  u16(56, PROGRAM_HEADERS);

  const load = ELF_HEADER_SIZE;
  u32(load, 1); // PT_LOAD
  u32(load + 4, 5); // read + execute
  u64(load + 16, LOAD_ADDRESS); // p_vaddr (p_offset 0: the file maps whole)
  u64(load + 24, LOAD_ADDRESS);
  u64(load + 32, size); // p_filesz
  u64(load + 40, size); // p_memsz
  u64(load + 48, 0x10000); // 64 KiB: valid on 4 KiB and 64 KiB page kernels

  const stack = ELF_HEADER_SIZE + PROGRAM_HEADER_SIZE;
  u32(stack, 0x6474e551); // PT_GNU_STACK
  u32(stack + 4, 6); // read + write
  u64(stack + 48, 16);

  image.set(text, TEXT_OFFSET);
  return image;
}

/** Returns the helper's architecture for this system, or undefined where there is none. */
export function helperArch(): HelperArch | undefined {
  if (Deno.build.os !== "linux") return undefined;
  return Deno.build.arch === "x86_64" || Deno.build.arch === "aarch64"
    ? Deno.build.arch
    : undefined;
}

/** An installed helper. */
export interface InstalledHelper {
  /** Absolute path of the executable. */
  path: string;
  /** Removes it and its directory (at worker exit). */
  remove(): void;
}

/**
 * Writes the helper to a new private temporary directory. Resolves to undefined
 * where there is no helper for this system or it cannot be written; whether it can
 * run there (a `noexec` temporary directory) is for the caller to probe.
 */
export async function installSessionHelper(): Promise<InstalledHelper | undefined> {
  const arch = helperArch();
  if (!arch) return undefined;
  let dir: string | undefined;
  try {
    dir = await Deno.makeTempDir({ prefix: "sqsrun-" });
    await Deno.chmod(dir, 0o700);
    const path = `${dir}/session-helper`;
    await Deno.writeFile(path, sessionHelperImage(arch), { mode: 0o500, createNew: true });
    await Deno.chmod(path, 0o500);
    const made = dir;
    const remove = () => {
      globalThis.removeEventListener("unload", remove);
      try {
        Deno.removeSync(made, { recursive: true });
      } catch {
        // Already gone (a second call, or someone cleaned the temporary directory).
      }
    };
    // Any exit that skips the runner's close (Deno.exit after a fatal error) still tidies up.
    globalThis.addEventListener("unload", remove);
    return { path, remove };
  } catch {
    if (dir) await Deno.remove(dir, { recursive: true }).catch(() => {});
    return undefined;
  }
}
