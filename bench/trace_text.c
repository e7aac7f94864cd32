/* Which instructions of a static binary run: single-steps PROGRAM, each thread it starts and
 * each child it forks or vforks (a vfork child shares the harness's memory, so the code it runs
 * before exec is paged into the harness), until they exec something else, and writes each
 * distinct instruction address within the binary's usual load range, one per line in hex, to
 * the file OUT. bench/hot_text.py maps the addresses to functions.
 *
 *   trace_text OUT PROGRAM [ARG]...
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

/* A non-PIE x86_64 executable is loaded at 0x400000; its code is well under 4 MiB. */
#define LOW 0x400000UL
#define HIGH 0x800000UL

static unsigned char ran[HIGH - LOW];

static void record(pid_t thread) {
    struct user_regs_struct regs;
    if (ptrace(PTRACE_GETREGS, thread, 0, &regs) == 0 && regs.rip >= LOW && regs.rip < HIGH)
        ran[regs.rip - LOW] = 1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: trace_text OUT PROGRAM [ARG]...\n");
        return 2;
    }
    pid_t child = fork();
    if (child == 0) {
        ptrace(PTRACE_TRACEME, 0, 0, 0);
        execv(argv[2], argv + 2);
        _exit(127);
    }
    int status;
    waitpid(child, &status, 0);
    ptrace(PTRACE_SETOPTIONS, child, 0,
           PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK | PTRACE_O_TRACEEXEC);
    ptrace(PTRACE_SINGLESTEP, child, 0, 0);
    pid_t thread;
    while ((thread = waitpid(-1, &status, __WALL)) > 0) {
        if (!WIFSTOPPED(status))
            continue;
        int event = status >> 16, signal = WSTOPSIG(status);
        if (event == PTRACE_EVENT_EXEC) {
            ptrace(PTRACE_DETACH, thread, 0, 0);
            continue;
        }
        if (event == 0)
            record(thread);
        /* Our single-step traps and the stops of new threads are not the program's signals. */
        int deliver = signal == SIGTRAP || signal == SIGSTOP ? 0 : signal;
        ptrace(PTRACE_SINGLESTEP, thread, 0, deliver);
    }
    FILE *out = fopen(argv[1], "w");
    if (!out) {
        perror(argv[1]);
        return 1;
    }
    for (unsigned long offset = 0; offset < HIGH - LOW; offset++)
        if (ran[offset])
            fprintf(out, "%lx\n", LOW + offset);
    return fclose(out) == 0 ? 0 : 1;
}
