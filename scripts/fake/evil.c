/* A library a hostile image preloads: its constructor leaves a mark named after the
 * program that loaded it, in /tmp of whatever root that program sees. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

extern char *program_invocation_short_name;

__attribute__((constructor)) static void mark(void) {
    char p[256];
    snprintf(p, sizeof p, "/tmp/nvhook-mark-%s", program_invocation_short_name);
    int fd = open(p, O_WRONLY | O_CREAT, 0644);
    if (fd >= 0) close(fd);
}
