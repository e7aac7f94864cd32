/* A paired timer: runs command A and command B alternately, ROUNDS times each, and prints the
 * median of the per-pair ratios A/B with its quartiles, and each command's median time.
 *
 *   paired ROUNDS A-ARGV... --vs B-ARGV...
 *
 * Why not hyperfine: it measures one command for seconds before it starts the next, so the
 * machine's drift between those blocks (20-40% on a shared VM) lands in the ratio. Here each
 * pair runs back to back, in alternating order, and the ratio is taken per pair. Each run is
 * posix_spawn + waitpid with stdin, stdout and stderr on /dev/null, timed with CLOCK_MONOTONIC;
 * the spawn's own cost is the same for A and B. A command that fails stops the measurement.
 *
 * Output (one line, tab-separated): ratio_median ratio_q1 ratio_q3 a_median_us b_median_us
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
        fprintf(stderr, "paired: cannot start %s\n", argv[0]);
        exit(2);
    }
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "paired: %s failed\n", argv[0]);
        exit(2);
    }
    return now_us() - start;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The q-quantile (0..1) of n sorted values, by linear interpolation. */
static double quantile(double *sorted, int n, double q) {
    double at = q * (n - 1);
    int low = (int)at;
    if (low + 1 >= n) return sorted[n - 1];
    return sorted[low] + (at - low) * (sorted[low + 1] - sorted[low]);
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: paired ROUNDS A-ARGV... --vs B-ARGV...\n");
        return 2;
    }
    int rounds = atoi(argv[1]);
    int split = 0;
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "--vs") == 0) split = i;
    if (rounds < 1 || split <= 2 || split == argc - 1) {
        fprintf(stderr, "usage: paired ROUNDS A-ARGV... --vs B-ARGV...\n");
        return 2;
    }
    argv[split] = NULL;
    char **a = argv + 2, **b = argv + split + 1;

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    for (int fd = 0; fd <= 2; fd++)
        posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0);

    double *ta = malloc(rounds * sizeof *ta), *tb = malloc(rounds * sizeof *tb);
    double *ratio = malloc(rounds * sizeof *ratio);
    /* A few unmeasured runs first: page cache, CPU frequency. */
    for (int i = 0; i < 5; i++) {
        run_once(a, &actions);
        run_once(b, &actions);
    }
    for (int i = 0; i < rounds; i++) {
        if (i % 2 == 0) {
            ta[i] = run_once(a, &actions);
            tb[i] = run_once(b, &actions);
        } else {
            tb[i] = run_once(b, &actions);
            ta[i] = run_once(a, &actions);
        }
        ratio[i] = ta[i] / tb[i];
    }
    qsort(ta, rounds, sizeof *ta, by_value);
    qsort(tb, rounds, sizeof *tb, by_value);
    qsort(ratio, rounds, sizeof *ratio, by_value);
    printf("%.4f\t%.4f\t%.4f\t%.1f\t%.1f\n", quantile(ratio, rounds, 0.5),
           quantile(ratio, rounds, 0.25), quantile(ratio, rounds, 0.75),
           quantile(ta, rounds, 0.5), quantile(tb, rounds, 0.5));
    return 0;
}
