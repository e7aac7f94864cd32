/* Which functions of a static binary run: puts a one-shot breakpoint (int3) at the start of
 * every function listed in FUNCTIONS (hex addresses, one per line), runs PROGRAM under
 * ptrace with each thread it starts and each child it forks or vforks (a vfork child shares the
 * harness's memory, so the code it runs before exec is paged into the harness) until they exec
 * something else, and writes the address of each function that was entered, one per line in
 * hex, to the file OUT. bench/hot_text.py maps the addresses to names.
 *
 * Why breakpoints and not single steps: single-stepping every instruction slowed a TLS
 * handshake past the harness's own deadlines, so the code that runs after it was never seen.
 * A breakpoint traps once per function; the rest runs at full speed.
 *
 *   trace_text OUT FUNCTIONS PROGRAM [ARG]...
 */
#include <errno.h>
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

/* For each byte of the code: 1 when a breakpoint was put there, 2 once it was hit. */
static unsigned char state[HIGH - LOW];
/* The byte each breakpoint replaced. */
static unsigned char original[HIGH - LOW];

static int in_range(unsigned long address) { return address >= LOW && address < HIGH; }

/* Replaces the byte at `address` in `pid`'s memory (shared with its threads and vfork
 * children) with `byte`; returns the byte it held. */
static int poke_byte(pid_t pid, unsigned long address, unsigned char byte) {
    errno = 0;
    long word = ptrace(PTRACE_PEEKTEXT, pid, address, 0);
    if (errno)
        return -1;
    unsigned char was = (unsigned char)(word & 0xff);
    word = (word & ~0xffL) | byte;
    if (ptrace(PTRACE_POKETEXT, pid, address, word) != 0)
        return -1;
    return was;
}

static void put_breakpoints(pid_t pid, const char *path) {
    FILE *list = fopen(path, "r");
    if (!list) {
        perror(path);
        exit(1);
    }
    unsigned long address;
    while (fscanf(list, "%lx", &address) == 1) {
        if (!in_range(address) || state[address - LOW])
            continue;
        int was = poke_byte(pid, address, 0xcc);
        if (was < 0)
            continue;
        original[address - LOW] = (unsigned char)was;
        state[address - LOW] = 1;
    }
    fclose(list);
}

/* A thread stopped by SIGTRAP: when one of ours, notes the function, puts its byte back (in
 * this process: a forked child has its own copy) and runs the instruction. Returns whether it
 * was ours. */
static int breakpoint_hit(pid_t thread) {
    struct user_regs_struct regs;
    if (ptrace(PTRACE_GETREGS, thread, 0, &regs) != 0)
        return 0;
    unsigned long address = regs.rip - 1;
    if (!in_range(address) || !state[address - LOW])
        return 0;
    state[address - LOW] = 2;
    errno = 0;
    long word = ptrace(PTRACE_PEEKTEXT, thread, address, 0);
    if (!errno && (word & 0xff) == 0xcc)
        poke_byte(thread, address, original[address - LOW]);
    regs.rip = address;
    ptrace(PTRACE_SETREGS, thread, 0, &regs);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: trace_text OUT FUNCTIONS PROGRAM [ARG]...\n");
        return 2;
    }
    pid_t child = fork();
    if (child == 0) {
        ptrace(PTRACE_TRACEME, 0, 0, 0);
        execv(argv[3], argv + 3);
        _exit(127);
    }
    int status;
    waitpid(child, &status, 0);
    ptrace(PTRACE_SETOPTIONS, child, 0,
           PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK | PTRACE_O_TRACEEXEC);
    put_breakpoints(child, argv[2]);
    ptrace(PTRACE_CONT, child, 0, 0);
    pid_t thread;
    while ((thread = waitpid(-1, &status, __WALL)) > 0) {
        if (!WIFSTOPPED(status))
            continue;
        int event = status >> 16, signal = WSTOPSIG(status);
        if (event == PTRACE_EVENT_EXEC) {
            /* Another program: its memory holds none of our breakpoints. */
            ptrace(PTRACE_DETACH, thread, 0, 0);
            continue;
        }
        int deliver = signal;
        if (event != 0 || signal == SIGSTOP)
            deliver = 0; /* a new thread's or child's first stop, or a ptrace event */
        else if (signal == SIGTRAP && breakpoint_hit(thread))
            deliver = 0;
        ptrace(PTRACE_CONT, thread, 0, deliver);
    }
    FILE *out = fopen(argv[1], "w");
    if (!out) {
        perror(argv[1]);
        return 1;
    }
    for (unsigned long offset = 0; offset < HIGH - LOW; offset++)
        if (state[offset] == 2)
            fprintf(out, "%lx\n", LOW + offset);
    return fclose(out) == 0 ? 0 : 1;
}
