# sqsrun's session helper for x86_64 Linux: setsid(); prctl(PR_SET_PDEATHSIG, SIGKILL); then it
# waits for one "go" byte on stdin: read(0, buf, 1). Anything but that one byte (end of file:
# the worker died before it said go) exits 125 without running the job; otherwise
# execve(argv[1], &argv[1], envp). If execve fails, a message on stderr and exit status 127.
# src/runners/process/session_helper.ts holds these instructions as bytes; tests/session_helper_test.ts
# assembles this file and checks that they match.
    .text
    .globl _start
_start:
    mov $112, %eax                  # setsid()
    syscall
    mov $1, %edi                    # prctl(PR_SET_PDEATHSIG, SIGKILL)
    mov $9, %esi
    mov $157, %eax
    syscall
    xor %edi, %edi                  # read(0, &argv[0], 1): the go byte, kept where argv[0]
    lea 8(%rsp), %rsi               # was (the stack holds argc, argv[0], argv[1], ...; the
    mov $1, %edx                    # job's argv starts at argv[1])
    xor %eax, %eax
    syscall
    mov $125, %edi                  # exit(125) unless exactly one byte was read
    cmp $1, %rax
    jne exit
    mov 16(%rsp), %rdi              # argv[1]
    lea 16(%rsp), %rsi              # &argv[1]
    mov (%rsp), %rdx                # argc
    lea 16(%rsp,%rdx,8), %rdx       # envp = &argv[argc + 1]
    mov $59, %eax                   # execve()
    syscall
    mov $2, %edi                    # only reached when execve failed: write(2, message, 41)
    lea message(%rip), %rsi
    mov $(message_end - message), %edx
    mov $1, %eax
    syscall
    mov $127, %edi                  # exit(127)
exit:
    mov $60, %eax                   # exit(%edi)
    syscall
message:
    .ascii "sqsrun: cannot execute the job's program\n"
message_end:
