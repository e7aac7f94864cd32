/* A round-robin timer: runs K commands once each per round, ROUNDS rounds, and prints one
 * line per round with each command's wall time in microseconds (tab-separated, in the order
 * the commands were given). Ratios are then taken within a round (bench/startup.py), so the
 * machine's drift between rounds does not land in them.
 *
 *   rounds ROUNDS ::: A-ARGV... ::: B-ARGV... [::: C-ARGV...]...
 *
 * (`:::` separates the commands, since theirs hold `--`.)
 *
 * Each round starts with a different command (the order rotates), so no command always runs
 * first or after the same one. Each run is posix_spawn + waitpid, stdin, stdout and stderr on
 * /dev/null, timed with CLOCK_MONOTONIC; a command that fails stops the measurement (exit 2).
 * Five unmeasured rounds come first (page cache, CPU frequency).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static double run_once(char **argv, posix_spawn_file_actions_t *actions) {
    pid_t pid;
    int status;
    double start = now_us();
    if (posix_spawnp(&pid, argv[0], actions, NULL, argv, environ) != 0) {
        fprintf(stderr, "rounds: cannot start %s\n", argv[0]);
        exit(2);
    }
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "rounds: %s failed\n", argv[0]);
        exit(2);
    }
    return now_us() - start;
}

int main(int argc, char **argv) {
    if (argc < 4 || strcmp(argv[2], ":::") != 0) {
        fprintf(stderr, "usage: rounds ROUNDS ::: A-ARGV... ::: B-ARGV...\n");
        return 2;
    }
    int rounds = atoi(argv[1]);
    char **commands[64];
    int count = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], ":::") == 0) {
            argv[i] = NULL;
            if (i + 1 >= argc || strcmp(argv[i + 1], ":::") == 0 || count == 64) {
                fprintf(stderr, "rounds: an empty command, or more than 64\n");
                return 2;
            }
            commands[count++] = argv + i + 1;
        }
    }
    if (rounds < 1 || count < 1) {
        fprintf(stderr, "usage: rounds ROUNDS ::: A-ARGV... ::: B-ARGV...\n");
        return 2;
    }

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    for (int fd = 0; fd <= 2; fd++)
        posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0);

    double times[64];
    for (int round = -5; round < rounds; round++) {
        int first = (round + 5) % count;
        for (int k = 0; k < count; k++) {
            int c = (first + k) % count;
            times[c] = run_once(commands[c], &actions);
        }
        if (round < 0) continue;
        for (int c = 0; c < count; c++) printf(c ? "\t%.1f" : "%.1f", times[c]);
        printf("\n");
    }
    return 0;
}
