/* Benchmark helper installed as the hook path: runs HOOK (compiled in) with the same
 * argv and stdin, and appends "<exec-to-exit us> <peak RSS KiB>" to OUT. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    (void)argc;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    pid_t p = fork();
    if (p == 0) { execv(HOOK, argv); _exit(127); }
    int st;
    struct rusage ru;
    wait4(p, &st, 0, &ru);
    clock_gettime(CLOCK_MONOTONIC, &b);
    int fd = open(OUT, O_WRONLY | O_APPEND | O_CREAT, 0644);
    dprintf(fd, "%ld %ld\n", (b.tv_sec - a.tv_sec) * 1000000L + (b.tv_nsec - a.tv_nsec) / 1000, ru.ru_maxrss);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}
