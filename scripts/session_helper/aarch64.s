// sqsrun's session helper for aarch64 Linux: setsid(); prctl(PR_SET_PDEATHSIG, SIGKILL); then it
// waits for one "go" byte on stdin: read(0, buf, 1). Anything but that one byte (end of file:
// the worker died before it said go) exits 125 without running the job; otherwise
// execve(argv[1], &argv[1], envp). If execve fails, a message on stderr and exit status 127.
// src/runners/process/session_helper.ts holds these instructions as words; tests/session_helper_test.ts
// assembles this file and checks that they match.
    .text
    .globl _start
_start:
    mov x8, #157                    // setsid()
    svc #0
    mov x0, #1                      // prctl(PR_SET_PDEATHSIG, SIGKILL)
    mov x1, #9
    mov x8, #167
    svc #0
    mov x0, #0                      // read(0, &argv[0], 1): the go byte, kept where argv[0]
    add x1, sp, #8                  // was (the stack holds argc, argv[0], argv[1], ...; the
    mov x2, #1                      // job's argv starts at argv[1])
    mov x8, #63
    svc #0
    cmp x0, #1
    mov x0, #125                    // exit(125) unless exactly one byte was read
    b.ne exit
    ldr x0, [sp, #16]               // argv[1]
    add x1, sp, #16                 // &argv[1]
    ldr x2, [sp]                    // argc
    add x2, sp, x2, lsl #3
    add x2, x2, #16                 // envp = &argv[argc + 1]
    mov x8, #221                    // execve()
    svc #0
    mov x0, #2                      // only reached when execve failed: write(2, message, 41)
    adr x1, message
    mov x2, #(message_end - message)
    mov x8, #64
    svc #0
    mov x0, #127                    // exit(127)
exit:
    mov x8, #93                     // exit(x0)
    svc #0
message:
    .ascii "sqsrun: cannot execute the job's program\n"
message_end:
