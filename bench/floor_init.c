/* The physical floor of `envharness -- COMMAND` and `envharness --init -- COMMAND`: a static
 * program that does only what cannot be avoided. As `floor_init exec COMMAND [ARG]...` it
 * execvp's COMMAND; as `floor_init spawn COMMAND [ARG]...` it posix_spawnp's COMMAND, waits for
 * it and exits with its status, as an init does, without signals, reaping of others or
 * anything else. Built static with musl-gcc, as envharness is (bench/startup.py).
 */
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: floor_init exec|spawn COMMAND [ARG]...\n");
        return 2;
    }
    if (strcmp(argv[1], "exec") == 0) {
        execvp(argv[2], argv + 2);
        perror(argv[2]);
        return 127;
    }
    pid_t pid;
    if (posix_spawnp(&pid, argv[2], NULL, NULL, argv + 2, environ) != 0) {
        perror(argv[2]);
        return 127;
    }
    int status;
    if (waitpid(pid, &status, 0) < 0)
        return 125;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
