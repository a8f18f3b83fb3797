/*
 * token: making, reading and checking the write-access token. It never
 * logs and never sees a socket; main decides when it is needed.
 */
#include "token.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

int token_make_cookie(struct token *t, const char *dir, char *err, size_t errlen) {
    unsigned char raw[32];
    char tmp[sizeof(t->path) + 8];
    size_t got = 0;
    int fd, rc;

    while (got < sizeof(raw)) {
        ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
        if (n < 0 && errno != EINTR) {
            rc = -errno;
            snprintf(err, errlen, "cookie: getrandom: %s", strerror(-rc));
            return rc;
        }
        if (n > 0)
            got += (size_t)n;
    }
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(t->value + 2 * i, 3, "%02x", raw[i]);
    snprintf(t->path, sizeof(t->path), "%s/cookie", dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", t->path);
    /* Group-readable: the service's group (and admins in it) may write. */
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "cookie %s: %s", tmp, strerror(-rc));
        return rc;
    }
    fchmod(fd, 0640); /* whatever the umask */
    size_t len = strlen(t->value);
    if (write(fd, t->value, len) != (ssize_t)len || write(fd, "\n", 1) != 1 || fsync(fd) != 0) {
        rc = -errno;
        snprintf(err, errlen, "cookie %s: %s", tmp, strerror(-rc));
        close(fd);
        unlink(tmp);
        return rc;
    }
    close(fd);
    if (rename(tmp, t->path) != 0) {
        rc = -errno;
        snprintf(err, errlen, "cookie %s: %s", t->path, strerror(-rc));
        unlink(tmp);
        return rc;
    }
    return 0;
}

int token_load(struct token *t, const char *path, char *err, size_t errlen) {
    char buf[TOKEN_MAX + 64];
    size_t n, start = 0;
    FILE *f = fopen(path, "re");
    int rc;

    if (f == NULL) {
        rc = -errno;
        snprintf(err, errlen, "token file %s: %s", path, strerror(-rc));
        return rc;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (start < n && isspace((unsigned char)buf[start]))
        start++;
    while (n > start && isspace((unsigned char)buf[n - 1]))
        n--;
    if (n - start < TOKEN_MIN || n - start > TOKEN_MAX || memchr(buf + start, '\n', n - start)) {
        snprintf(err, errlen, "token file %s: must hold one line of %d to %d characters", path,
                 TOKEN_MIN, TOKEN_MAX);
        return -EINVAL;
    }
    memcpy(t->value, buf + start, n - start);
    t->value[n - start] = '\0';
    snprintf(t->path, sizeof(t->path), "%s", path);
    return 0;
}

bool token_check(const struct token *t, const char *given, size_t len) {
    size_t tlen = strlen(t->value);
    unsigned char diff = (unsigned char)(len != tlen);

    /* Compare every byte of the token whatever the input, so the time says
     * nothing about how much of a guess was right. */
    for (size_t i = 0; i < tlen; i++)
        diff |= (unsigned char)(t->value[i] ^ (i < len ? given[i] : 0));
    return diff == 0 && tlen >= TOKEN_MIN;
}
