/*
 * pty_shim: a test-only LD_PRELOAD library that lets the real libserialport
 * 0.1.1 open a pseudo-terminal (/dev/pts/N), so the serial module's real code
 * path can be tested against a fake instrument on the pty's master side.
 * Never built into or loaded by the daemon.
 *
 * libserialport's sp_get_port_by_name wants /sys/class/tty/<name> to be a
 * symlink it can readlink (Debian's binary calls __lxstat, newer builds
 * lstat); there is none for pts/N, so for an existing /dev/pts/N the shim
 * answers as for a virtual tty. sp_open and sp_set_config use the modem-line
 * ioctls (TIOCMGET/TIOCMSET/TIOCMBIS/TIOCMBIC), which a pty refuses with
 * ENOTTY; the shim makes them succeed (reporting DTR and RTS up). Every other
 * call passes through untouched.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

/* glibc >= 2.33 no longer declares it, but libserialport 0.1.1 on Debian 12
 * was built against a glibc that made lstat call it. */
int __lxstat(int ver, const char *path, struct stat *st);

typedef int (*lxstat_fn)(int, const char *, struct stat *);
typedef int (*lstat_fn)(const char *, struct stat *);
typedef ssize_t (*readlink_fn)(const char *, char *, size_t);
typedef int (*ioctl_fn)(int, unsigned long, void *);

static const char sys_prefix[] = "/sys/class/tty/pts/";

/* Function pointers from dlsym, copied byte for byte as POSIX allows. */
static void *next_symbol(const char *name) {
    void *sym = dlsym(RTLD_NEXT, name);

    if (sym == NULL) {
        fprintf(stderr, "pty_shim: no next %s: %s\n", name, dlerror());
        _exit(127);
    }
    return sym;
}

/* When path is /sys/class/tty/pts/N (or .../pts/N/device) for an existing
 * /dev/pts/N, put N in num and return 1. */
static int pts_sys_path(const char *path, char *num, size_t numlen) {
    char dev[64];
    struct stat st;
    size_t len;

    if (strncmp(path, sys_prefix, sizeof(sys_prefix) - 1) != 0)
        return 0;
    path += sizeof(sys_prefix) - 1;
    len = strspn(path, "0123456789");
    if (len == 0 || len >= numlen || (path[len] != '\0' && strcmp(path + len, "/device") != 0))
        return 0;
    memcpy(num, path, len);
    num[len] = '\0';
    snprintf(dev, sizeof(dev), "/dev/pts/%s", num);
    return stat(dev, &st) == 0 && S_ISCHR(st.st_mode);
}

static void fake_link_stat(struct stat *st) {
    memset(st, 0, sizeof(*st));
    st->st_mode = S_IFLNK | 0777;
    st->st_nlink = 1;
}

int __lxstat(int ver, const char *path, struct stat *st) {
    char num[16];
    lxstat_fn next;

    if (pts_sys_path(path, num, sizeof(num))) {
        fake_link_stat(st);
        return 0;
    }
    memcpy(&next, &(void *){next_symbol("__lxstat")}, sizeof(next));
    return next(ver, path, st);
}

int lstat(const char *restrict path, struct stat *restrict st) {
    char num[16];
    lstat_fn next;

    if (pts_sys_path(path, num, sizeof(num))) {
        fake_link_stat(st);
        return 0;
    }
    memcpy(&next, &(void *){next_symbol("lstat")}, sizeof(next));
    return next(path, st);
}

ssize_t readlink(const char *restrict path, char *restrict buf, size_t len) {
    char num[16], target[64];
    readlink_fn next;
    size_t n;

    if (pts_sys_path(path, num, sizeof(num))) {
        /* What a virtual tty's link looks like (cf. /sys/class/tty/ptmx);
         * readlink does not NUL-terminate. */
        n = (size_t)snprintf(target, sizeof(target), "../../devices/virtual/tty/pts%s", num);
        if (n > len)
            n = len;
        memcpy(buf, target, n);
        return (ssize_t)n;
    }
    memcpy(&next, &(void *){next_symbol("readlink")}, sizeof(next));
    return next(path, buf, len);
}

int ioctl(int fd, unsigned long request, ...) {
    ioctl_fn next;
    va_list ap;
    void *arg;
    int r, saved;

    va_start(ap, request);
    arg = va_arg(ap, void *);
    va_end(ap);
    memcpy(&next, &(void *){next_symbol("ioctl")}, sizeof(next));
    r = next(fd, request, arg);
    saved = errno;
    if (r == 0 || saved != ENOTTY || !isatty(fd)) {
        errno = saved;
        return r;
    }
    switch (request) {
    case TIOCMGET:
        *(int *)arg = TIOCM_DTR | TIOCM_RTS;
        return 0;
    case TIOCMSET:
    case TIOCMBIS:
    case TIOCMBIC:
        return 0;
    default:
        errno = saved;
        return r;
    }
}
