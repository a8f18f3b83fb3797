/*
 * serial: opens, configures and closes one serial port through libserialport
 * 0.1.1 and implements lineio over it with deadlines on the monotonic clock.
 * It must not know any instrument protocol, the loop or the config file, and
 * no wait in it may be without end.
 */
/* realpath() is XSI. */
#define _XOPEN_SOURCE 700
#include "serial.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/select.h>
#include <time.h>

#include <libserialport.h>

#include "escape.h"

/*
 * Waiting. libserialport 0.1.1's sp_blocking_read and sp_blocking_read_next
 * wait with select() and then read(); on a hung-up port (adapter unplugged)
 * select() reports it readable and read() returns 0 for ever, so they spin
 * at full speed until their timeout, and report no error. Reads here
 * therefore wait with our own poll() on the port's descriptor, which also
 * reports POLLHUP/POLLERR, and then take what is there with
 * sp_nonblocking_read. Writes use sp_blocking_write (a hung-up port fails
 * its write() with EIO at once). Because 0.1.1 still uses select() there, a
 * descriptor at or above FD_SETSIZE would abort the daemon (glibc's
 * fortified FD_SET); serial_open refuses one.
 *
 * A poll that says readable followed by a read of nothing, on a port that
 * reports no hang-up, is retried after SERIAL_EMPTY_PAUSE_MS; after
 * SERIAL_EMPTY_MAX such reads in a row the port is taken as gone. The kernel
 * does not do this on a live tty, so the limit only bounds a spin.
 */
#define SERIAL_EMPTY_PAUSE_MS 1
#define SERIAL_EMPTY_MAX 8

static void serial_strerror(int errnum, char *buf, size_t len) {
    if (strerror_r(errnum, buf, len) != 0)
        snprintf(buf, len, "error %d", errnum);
}

/* What an admin should check after a failed open, by errno. */
static const char *serial_hint(int errnum) {
    switch (errnum) {
    case EACCES:
    case EPERM:
        return " (is the service user in group dialout?)";
    case ENOENT:
    case ENXIO:
    case ENODEV:
        return " (is the device plugged in, and the path right?)";
    case EBUSY:
    case EWOULDBLOCK:
        return " (is another program using the port?)";
    default:
        return "";
    }
}

/* "serial PATH" or "serial PATH -> RESOLVED", the start of every message. */
static void serial_name(const struct serial *s, char *buf, size_t len) {
    if (s->resolved[0] != '\0' && strcmp(s->path, s->resolved) != 0)
        snprintf(buf, len, "serial %s -> %s", s->path, s->resolved);
    else
        snprintf(buf, len, "serial %s", s->path);
}

static void serial_errno_msg(const struct serial *s, int errnum, const char *what, char *err,
                             size_t errlen) {
    char name[2 * SERIAL_PATH_MAX + 16], reason[128];

    serial_name(s, name, sizeof(name));
    serial_strerror(errnum, reason, sizeof(reason));
    snprintf(err, errlen, "%s: %s%s%s%s", name, what, what[0] != '\0' ? ": " : "", reason,
             serial_hint(errnum));
}

/* A negative errno-style code for a failed libserialport call. */
static int serial_sp_code(enum sp_return r) {
    int e;

    switch (r) {
    case SP_ERR_ARG:
        return -EINVAL;
    case SP_ERR_MEM:
        return -ENOMEM;
    case SP_ERR_SUPP:
        return -ENOTSUP;
    case SP_ERR_FAIL:
    default:
        e = sp_last_error_code();
        return e > 0 ? -e : -EIO;
    }
}

static int serial_check_params(const struct serial_params *p, char *err, size_t errlen) {
    int bits = p->data_bits != 0 ? p->data_bits : 8;
    int stop = p->stop_bits != 0 ? p->stop_bits : 1;
    const char *what = NULL;

    if (p->path == NULL || p->path[0] == '\0')
        what = "no device path";
    else if (p->baud <= 0)
        what = "baud must be positive";
    else if (bits < 5 || bits > 8)
        what = "data bits must be 5 to 8";
    else if (stop != 1 && stop != 2)
        what = "stop bits must be 1 or 2";
    else if (p->parity != SERIAL_PARITY_NONE && p->parity != SERIAL_PARITY_ODD &&
             p->parity != SERIAL_PARITY_EVEN)
        what = "parity must be none, odd or even";
    if (what == NULL)
        return 0;
    snprintf(err, errlen, "serial %s: %s", p->path != NULL ? p->path : "(null)", what);
    return -EINVAL;
}

static int serial_configure(struct serial *s, const struct serial_params *p, char *err,
                            size_t errlen) {
    static const enum sp_parity parities[] = {
        [SERIAL_PARITY_NONE] = SP_PARITY_NONE,
        [SERIAL_PARITY_ODD] = SP_PARITY_ODD,
        [SERIAL_PARITY_EVEN] = SP_PARITY_EVEN,
    };
    struct sp_port_config *config = NULL;
    enum sp_return r;
    int rc;

    if ((r = sp_new_config(&config)) != SP_OK) {
        rc = serial_sp_code(r);
        serial_errno_msg(s, -rc, "cannot make a port configuration", err, errlen);
        return rc;
    }
    /* One sp_set_config applies everything with one tcsetattr; fields a new
     * config leaves at -1 would be left as the port had them. */
    if ((r = sp_set_config_baudrate(config, p->baud)) != SP_OK ||
        (r = sp_set_config_bits(config, p->data_bits != 0 ? p->data_bits : 8)) != SP_OK ||
        (r = sp_set_config_parity(config, parities[p->parity])) != SP_OK ||
        (r = sp_set_config_stopbits(config, p->stop_bits != 0 ? p->stop_bits : 1)) != SP_OK ||
        (r = sp_set_config_rts(config, p->rts_off ? SP_RTS_OFF : SP_RTS_ON)) != SP_OK ||
        (r = sp_set_config_cts(config, SP_CTS_IGNORE)) != SP_OK ||
        (r = sp_set_config_dtr(config, p->dtr_off ? SP_DTR_OFF : SP_DTR_ON)) != SP_OK ||
        (r = sp_set_config_dsr(config, SP_DSR_IGNORE)) != SP_OK ||
        (r = sp_set_config_xon_xoff(config, SP_XONXOFF_DISABLED)) != SP_OK) {
        sp_free_config(config);
        rc = serial_sp_code(r);
        serial_errno_msg(s, -rc, "invalid port settings", err, errlen);
        return rc;
    }
    r = sp_set_config(s->port, config);
    sp_free_config(config);
    if (r != SP_OK) {
        static const char parity_letters[] = "NOE";
        char what[96];

        rc = serial_sp_code(r);
        snprintf(what, sizeof(what), "cannot set %d baud %d%c%d", p->baud,
                 p->data_bits != 0 ? p->data_bits : 8, parity_letters[p->parity],
                 p->stop_bits != 0 ? p->stop_bits : 1);
        serial_errno_msg(s, -rc, what, err, errlen);
        return rc;
    }
    return 0;
}

int serial_open(struct serial *s, const struct serial_params *p, char *err, size_t errlen) {
    enum sp_return r;
    char *real = NULL;
    int rc;

    memset(s, 0, sizeof(*s));
    s->fd = -1;
    if ((rc = serial_check_params(p, err, errlen)) < 0)
        return rc;
    if (strlen(p->path) >= sizeof(s->path)) {
        snprintf(err, errlen, "serial %.64s...: path longer than %d bytes", p->path,
                 SERIAL_PATH_MAX - 1);
        return -ENAMETOOLONG;
    }
    memcpy(s->path, p->path, strlen(p->path) + 1);

    /* Resolved anew at each open: a replugged adapter's by-id link now points
     * at another ttyUSB. */
    if ((real = realpath(p->path, NULL)) == NULL) {
        rc = -errno;
        serial_errno_msg(s, -rc, "", err, errlen);
        return rc;
    }
    if (strlen(real) >= sizeof(s->resolved)) {
        snprintf(err, errlen, "serial %s: resolves to a path longer than %d bytes", s->path,
                 SERIAL_PATH_MAX - 1);
        free(real);
        return -ENAMETOOLONG;
    }
    memcpy(s->resolved, real, strlen(real) + 1);
    free(real);

    if ((r = sp_get_port_by_name(s->resolved, &s->port)) != SP_OK) {
        char name[2 * SERIAL_PATH_MAX + 16];

        s->port = NULL;
        rc = r == SP_ERR_ARG ? -ENODEV : serial_sp_code(r);
        serial_name(s, name, sizeof(name));
        if (rc == -ENODEV)
            snprintf(err, errlen, "%s: not a serial port (libserialport finds no tty of that name)",
                     name);
        else
            serial_errno_msg(s, -rc, "", err, errlen);
        return rc;
    }
    if ((r = sp_open(s->port, SP_MODE_READ_WRITE)) != SP_OK) {
        rc = serial_sp_code(r);
        serial_errno_msg(s, -rc, "", err, errlen);
        sp_free_port(s->port);
        s->port = NULL;
        return rc;
    }
    if ((r = sp_get_port_handle(s->port, &s->fd)) != SP_OK || s->fd < 0) {
        rc = r != SP_OK ? serial_sp_code(r) : -EBADF;
        serial_errno_msg(s, -rc, "no file descriptor", err, errlen);
        goto fail;
    }
    if (s->fd >= FD_SETSIZE) {
        char name[2 * SERIAL_PATH_MAX + 16];

        serial_name(s, name, sizeof(name));
        snprintf(err, errlen,
                 "%s: descriptor %d is at or above FD_SETSIZE (%d), which libserialport's "
                 "select() cannot wait on",
                 name, s->fd, FD_SETSIZE);
        rc = -EMFILE;
        goto fail;
    }
    /* libserialport 0.1.1 does not open ports exclusively. */
    if (flock(s->fd, LOCK_EX | LOCK_NB) < 0) {
        rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
        serial_errno_msg(s, -rc, "locked by another process", err, errlen);
        goto fail;
    }
    if ((rc = serial_configure(s, p, err, errlen)) < 0)
        goto fail;
    /* Whatever the device sent before we were configured is stale. */
    if ((r = sp_flush(s->port, SP_BUF_BOTH)) != SP_OK) {
        rc = serial_sp_code(r);
        serial_errno_msg(s, -rc, "cannot flush", err, errlen);
        goto fail;
    }
    return 0;

fail:
    sp_close(s->port);
    sp_free_port(s->port);
    s->port = NULL;
    s->fd = -1;
    return rc;
}

void serial_close(struct serial *s) {
    if (s->port != NULL) {
        sp_close(s->port);
        sp_free_port(s->port);
    }
    s->port = NULL;
    s->fd = -1;
    s->pending_off = s->pending_len = 0;
}

static int64_t serial_now_ns(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void serial_pause_ms(int ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static int serial_write(void *ctx, const char *buf, size_t n, int timeout_ms) {
    struct serial *s = ctx;
    enum sp_return r;

    if (s->port == NULL)
        return -EIO;
    if (n == 0)
        return 0;
    /* sp_blocking_write waits for ever with a timeout of 0. */
    if (timeout_ms < 1)
        timeout_ms = 1;
    r = sp_blocking_write(s->port, buf, n, (unsigned int)timeout_ms);
    if (r < 0)
        return -EIO;
    return (size_t)r == n ? 0 : -ETIMEDOUT;
}

/* Wait until the port has input or the deadline passes: 1 readable, 0
 * deadline, -EIO when the port has gone away. */
static int serial_wait_input(struct serial *s, int64_t deadline_ns) {
    for (;;) {
        int64_t left_ns = deadline_ns - serial_now_ns();
        struct pollfd pfd = {.fd = s->fd, .events = POLLIN};
        int left_ms, r;

        /* Rounded up, so the deadline has passed when poll times out. */
        if (left_ns < 0)
            left_ns = 0;
        left_ms =
            left_ns > (int64_t)INT_MAX * 1000000 ? INT_MAX : (int)((left_ns + 999999) / 1000000);
        r = poll(&pfd, 1, left_ms);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -EIO;
        }
        if (r == 0)
            return 0;
        if (pfd.revents & POLLIN)
            return 1;
        /* POLLHUP, POLLERR or POLLNVAL without input. */
        return -EIO;
    }
}

/* Read what the port has into pending (which is empty). 0 when bytes came,
 * -ETIMEDOUT, or -EIO. */
static int serial_fill(struct serial *s, int64_t deadline_ns) {
    int empty = 0;

    for (;;) {
        struct pollfd pfd = {.fd = s->fd, .events = POLLIN};
        enum sp_return r;
        int w = serial_wait_input(s, deadline_ns);

        if (w < 0)
            return w;
        if (w == 0)
            return -ETIMEDOUT;
        r = sp_nonblocking_read(s->port, s->pending, sizeof(s->pending));
        if (r < 0)
            return -EIO;
        if (r > 0) {
            s->pending_off = 0;
            s->pending_len = (size_t)r;
            return 0;
        }
        /* 0.1.1 returns 0 both for "nothing there" and for end of file:
         * ask the port whether it has hung up. */
        if (poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLHUP | POLLERR | POLLNVAL)))
            return -EIO;
        if (sp_input_waiting(s->port) < 0 || ++empty >= SERIAL_EMPTY_MAX)
            return -EIO;
        serial_pause_ms(SERIAL_EMPTY_PAUSE_MS);
    }
}

static int serial_read_until(void *ctx, char *buf, size_t cap, const char *stop, int timeout_ms,
                             size_t *n) {
    struct serial *s = ctx;
    size_t got = 0, nstop = strlen(stop);
    int64_t deadline_ns = serial_now_ns() + (int64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000;

    *n = 0;
    if (cap < 2)
        return -EINVAL;
    buf[0] = '\0';
    if (s->port == NULL)
        return -EIO;
    for (;;) {
        while (s->pending_len > 0) {
            char c = s->pending[s->pending_off++];

            s->pending_len--;
            buf[got++] = c;
            buf[got] = '\0';
            *n = got;
            if (memchr(stop, c, nstop) != NULL)
                return 0;
            if (got == cap - 1)
                return -EOVERFLOW;
        }
        int rc = serial_fill(s, deadline_ns);

        if (rc < 0)
            return rc;
    }
}

static int serial_flush_input(void *ctx) {
    struct serial *s = ctx;

    if (s->port == NULL)
        return -EIO;
    s->pending_off = s->pending_len = 0;
    return sp_flush(s->port, SP_BUF_INPUT) == SP_OK ? 0 : -EIO;
}

void serial_lineio(struct serial *s, struct lineio *io) {
    io->ctx = s;
    io->write = serial_write;
    io->read_until = serial_read_until;
    io->flush_input = serial_flush_input;
}

/* Kept for callers of the serial API; the one implementation is escape.c. */
size_t serial_escape(const char *in, size_t n, char *out, size_t outlen) {
    return escape_bytes(in, n, out, outlen);
}
