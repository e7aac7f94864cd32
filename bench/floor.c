/* The physical floor of what envharness does per environment script: list the directory, and
 * for each entry in byte order posix_spawn it with its stdout on a pipe, read the pipe to its
 * end, wait for it, and set NAME to what it printed (minus one newline); then execvp the
 * command. No checks, no timeouts, no messages: nothing a real harness can do without.
 *
 *   floor DIR COMMAND [ARG]...
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static int by_name(const struct dirent **a, const struct dirent **b) {
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int visible(const struct dirent *entry) {
    return entry->d_name[0] != '.';
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: floor DIR COMMAND [ARG]...\n");
        return 2;
    }
    struct dirent **entries;
    int count = scandir(argv[1], &entries, visible, by_name);
    if (count < 0) {
        perror(argv[1]);
        return 2;
    }
    char path[4096], value[65536];
    for (int i = 0; i < count; i++) {
        snprintf(path, sizeof path, "%s/%s", argv[1], entries[i]->d_name);
        int out[2];
        if (pipe2(out, O_CLOEXEC) != 0) return 2;
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, out[1], 1);
        char *script_argv[] = {path, NULL};
        pid_t pid;
        if (posix_spawn(&pid, path, &actions, NULL, script_argv, environ) != 0) return 2;
        posix_spawn_file_actions_destroy(&actions);
        close(out[1]);
        size_t len = 0;
        ssize_t got;
        while ((got = read(out[0], value + len, sizeof value - 1 - len)) > 0) len += got;
        close(out[0]);
        int status;
        waitpid(pid, &status, 0);
        if (len > 0 && value[len - 1] == '\n') len--;
        value[len] = 0;
        setenv(entries[i]->d_name, value, 1);
    }
    execvp(argv[2], argv + 2);
    perror(argv[2]);
    return 127;
}
