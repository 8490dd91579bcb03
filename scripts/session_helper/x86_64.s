# sqsrun's session helper for x86_64 Linux: setsid(), then execve(argv[1], &argv[1], envp).
# If execve fails, a message on stderr and exit status 127.
# src/worker/session_helper.ts holds these instructions as bytes; tests/session_helper_test.ts
# assembles this file and checks that they match.
    .text
    .globl _start
_start:
    mov $112, %eax                  # setsid()
    syscall
    mov 16(%rsp), %rdi              # argv[1]: the stack holds argc, argv[0], argv[1], ...
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
    mov $60, %eax
    syscall
message:
    .ascii "sqsrun: cannot execute the job's program\n"
message_end:
