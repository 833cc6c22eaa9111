/* Stand-ins for ldconfig, built static, to test the sandbox nvhook runs ldconfig in.
 * Behaviour by name: ldconfig-probe writes what it sees to /nvhook-sandbox.txt (inside
 * the container root it was chrooted into) and exits 0; ldconfig-fail prints an error
 * and exits 3; ldconfig-hang never exits. */
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
    (void)argc;
    const char *me = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    (void)me;
#if defined(MODE_FAIL)
    fprintf(stderr, "ldconfig-fail: cannot write /etc/ld.so.cache~: injected failure\n");
    return 3;
#elif defined(MODE_HANG)
    /* blocks in a call the sandbox's seccomp filter allows (futex wait) */
    static int word;
    for (;;) syscall(SYS_futex, &word, 0 /* FUTEX_WAIT */, 0, NULL, NULL, 0);
#else
    /* descriptors the hook left open for ldconfig, counted before this opens any */
    int fds_open = 0;
    for (int fd = 3; fd < 1024; fd++)
        if (fcntl(fd, F_GETFD) >= 0) fds_open++;
    FILE *f = fopen("/nvhook-sandbox.txt", "w");
    if (!f) return 4;
    int envc = 0;
    for (char **e = environ; *e; e++) envc++;
    struct stat st;
    struct rlimit cpu, nofile;
    getrlimit(RLIMIT_CPU, &cpu);
    getrlimit(RLIMIT_NOFILE, &nofile);
    FILE *s = fopen("/proc/self/status", "r");
    unsigned long long bnd = 0;
    for (int c = 0; c < 64; c++)
        if (prctl(PR_CAPBSET_READ, c, 0, 0, 0) == 1) bnd |= 1ULL << c;
    struct { unsigned version; int pid; } hdr = {0x20080522, 0};
    struct { unsigned eff, perm, inh; } data[2] = {{0}};
    syscall(SYS_capget, &hdr, data);
    unsigned long long eff = data[0].eff | ((unsigned long long)data[1].eff << 32);
    fprintf(f, "pid=%d\n", (int)getpid());
    fprintf(f, "envc=%d\n", envc);
    fprintf(f, "no_new_privs=%d\n", prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
    fprintf(f, "proc_1_root=%s\n", lstat("/proc/1/root", &st) == 0 ? "visible" : "absent");
    fprintf(f, "proc_self=%s\n", s ? "visible" : "absent");
    fprintf(f, "sys_empty=%s\n", stat("/sys/kernel", &st) == 0 ? "no" : "yes");
    fprintf(f, "dev_null=%s\n", stat("/dev/null", &st) == 0 ? "visible" : "absent");
    fprintf(f, "rlimit_cpu=%lld\n", (long long)cpu.rlim_cur);
    fprintf(f, "rlimit_nofile=%lld\n", (long long)nofile.rlim_cur);
    fprintf(f, "capeff=%016llx\ncapbnd=%016llx\n", eff, bnd);
    fprintf(f, "uid=%d\n", (int)getuid());
    fprintf(f, "fds_above_2=%d\n", fds_open);
    struct utsname u;
    uname(&u);
    fprintf(f, "nodename=%s\n", u.nodename);
    /* what an escape would try: a device node, a socket, a file handle */
    int r = mknod("/nvhook-mknod", S_IFCHR | 0600, makedev(1, 3));
    fprintf(f, "mknod=%s\n", r == 0 ? "made" : strerror(errno));
    if (r == 0) unlink("/nvhook-mknod");
    int sk = socket(AF_INET, SOCK_DGRAM, 0);
    fprintf(f, "socket=%s\n", sk >= 0 ? "opened" : strerror(errno));
    struct { unsigned bytes; int type; unsigned char h[128]; } fh = {128, 0, {0}};
    int mnt = 0;
    r = syscall(SYS_name_to_handle_at, AT_FDCWD, "/", &fh, &mnt, 0);
    r = syscall(SYS_open_by_handle_at, AT_FDCWD, &fh, O_RDONLY);
    fprintf(f, "open_by_handle=%s\n", r >= 0 ? "opened" : strerror(errno));
    fclose(f);
    return 0;
#endif
}
