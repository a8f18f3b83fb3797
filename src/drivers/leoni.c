/*
 * leoni: the Leoni eol/mol 1xN fibre switch protocol over a struct lineio.
 * It owns command formatting and strict parsing of reply lines: a reply that
 * is not certainly the answer to the command just sent is an error. It must
 * not know about ports, the loop, the wavemeter or the scheduler.
 */
#include "leoni.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "escape.h"

/*
 * The documented protocol gives no reply to "ch<n>". We listen this long
 * after sending it so that a reply we do not know about (an error message,
 * an acknowledgement) is reported rather than read as the answer to the
 * "ch?" that follows; a line at 57600 baud takes about 1 ms, so 30 ms leaves
 * the firmware time to answer. It also counts towards the switch's settling.
 */
#define LEONI_ACK_WAIT_MS 30
/* How often a select asks "ch?" while the fibre is moving: a few ms is
 * short against a move (tens of ms) and cheap at 57600 baud. */
#define LEONI_POLL_MS 5

/* Replies are a few bytes ("eol 1x16\r\n"); 64 leave room to quote garbage. */
#define LINE_CAP 64
#define ESC_CAP (4 * LINE_CAP + 1)

/* Strict unsigned decimal in s[0..n): digits only, no sign, no spaces, at
 * most 4 digits (more than any N). */
static bool parse_uint(const char *s, size_t n, int *out) {
    int v = 0;

    if (n == 0 || n > 4)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

/* The length of line without its CRLF, or 0 when it does not end in one. */
static size_t body_len(const char *line, size_t n) {
    if (n < 2 || line[n - 2] != '\r' || line[n - 1] != '\n')
        return 0;
    return n - 2;
}

int leoni_parse_channel(const char *line, size_t n, int nchannels, int *ch, char *err,
                        size_t errlen) {
    char esc[ESC_CAP];
    size_t b = body_len(line, n);
    int v;

    escape_bytes(line, n, esc, sizeof(esc));
    if (b == 0 || memchr(line, '\0', n) || !parse_uint(line, b, &v)) {
        snprintf(err, errlen, "not a channel number: \"%s\"", esc);
        return -EPROTO;
    }
    if (v < 1 || v > nchannels) {
        snprintf(err, errlen, "channel %d outside 1..%d: \"%s\"", v, nchannels, esc);
        return -EPROTO;
    }
    *ch = v;
    return 0;
}

int leoni_parse_type(const char *line, size_t n, int *nchannels, char *err, size_t errlen) {
    char esc[ESC_CAP];
    size_t b = body_len(line, n);
    int v;

    escape_bytes(line, n, esc, sizeof(esc));
    if (b < 7 || memchr(line, '\0', n) ||
        (memcmp(line, "eol 1x", 6) != 0 && memcmp(line, "mol 1x", 6) != 0) ||
        !parse_uint(line + 6, b - 6, &v)) {
        snprintf(err, errlen, "not an \"eol 1xN\" or \"mol 1xN\" type: \"%s\"", esc);
        return -EPROTO;
    }
    if (v < 1 || v > LEONI_MAX_CHANNELS) {
        snprintf(err, errlen, "%d channels outside 1..%d: \"%s\"", v, LEONI_MAX_CHANNELS, esc);
        return -EPROTO;
    }
    *nchannels = v;
    return 0;
}

/* Discards waiting input and sends cmd followed by CRLF. */
static int send_cmd(const struct lineio *io, const char *cmd, int64_t deadline, char *err,
                    size_t errlen) {
    char line[24];
    int rc, k = snprintf(line, sizeof(line), "%s\r\n", cmd);

    if (k < 0 || (size_t)k >= sizeof(line)) {
        snprintf(err, errlen, "command \"%s\" too long", cmd);
        return -EINVAL;
    }
    rc = io->flush_input(io->ctx);
    if (rc < 0) {
        snprintf(err, errlen, "cannot discard input before \"%s\": %s", cmd, strerror(-rc));
        return rc;
    }
    rc = io->write(io->ctx, line, (size_t)k, lineio_remaining_ms(deadline));
    if (rc < 0)
        snprintf(err, errlen, "cannot send \"%s\": %s", cmd, strerror(-rc));
    return rc;
}

/* Reads one line (up to and including LF) of the reply to cmd into buf. */
static int read_line(const struct lineio *io, const char *cmd, int timeout_ms, char *buf,
                     size_t cap, size_t *n, char *err, size_t errlen) {
    char esc[ESC_CAP];
    int rc;

    *n = 0;
    rc = io->read_until(io->ctx, buf, cap, "\n", timeout_ms, n);
    if (rc == 0)
        return 0;
    escape_bytes(buf, *n, esc, sizeof(esc));
    if (rc == -ETIMEDOUT)
        snprintf(err, errlen, "no complete reply to \"%s\" in time (got \"%s\")", cmd, esc);
    else if (rc == -EOVERFLOW)
        snprintf(err, errlen, "reply to \"%s\" too long: \"%s\"", cmd, esc);
    else
        snprintf(err, errlen, "cannot read the reply to \"%s\": %s", cmd, strerror(-rc));
    return rc;
}

int leoni_hello(const struct lineio *io, int timeout_ms, int *nchannels, char *err, size_t errlen) {
    int64_t deadline = lineio_now_ms() + timeout_ms;
    char buf[LINE_CAP];
    size_t n;
    int rc;

    rc = send_cmd(io, "type?", deadline, err, errlen);
    if (rc == 0)
        rc = read_line(io, "type?", lineio_remaining_ms(deadline), buf, sizeof(buf), &n, err,
                       errlen);
    if (rc == 0)
        rc = leoni_parse_type(buf, n, nchannels, err, errlen);
    return rc;
}

static int position(const struct lineio *io, int nchannels, int64_t deadline, int *ch, char *err,
                    size_t errlen) {
    char buf[LINE_CAP];
    size_t n;
    int rc;

    rc = send_cmd(io, "ch?", deadline, err, errlen);
    if (rc == 0)
        rc = read_line(io, "ch?", lineio_remaining_ms(deadline), buf, sizeof(buf), &n, err, errlen);
    if (rc == 0)
        rc = leoni_parse_channel(buf, n, nchannels, ch, err, errlen);
    return rc;
}

int leoni_position(const struct lineio *io, int nchannels, int timeout_ms, int *ch, char *err,
                   size_t errlen) {
    return position(io, nchannels, lineio_now_ms() + timeout_ms, ch, err, errlen);
}

int leoni_select(const struct lineio *io, int nchannels, int ch, int timeout_ms, char *err,
                 size_t errlen) {
    int64_t deadline = lineio_now_ms() + timeout_ms;
    char cmd[16], buf[LINE_CAP], esc[ESC_CAP];
    int rc, wait_ms, now_ch;
    size_t n = 0;

    if (ch < 1 || ch > nchannels) {
        snprintf(err, errlen, "channel %d outside 1..%d", ch, nchannels);
        return -EINVAL;
    }
    snprintf(cmd, sizeof(cmd), "ch%d", ch);
    rc = send_cmd(io, cmd, deadline, err, errlen);
    if (rc < 0)
        return rc;
    wait_ms = lineio_remaining_ms(deadline);
    if (wait_ms > LEONI_ACK_WAIT_MS)
        wait_ms = LEONI_ACK_WAIT_MS;
    rc = io->read_until(io->ctx, buf, sizeof(buf), "\n", wait_ms, &n);
    if (rc == -EIO) {
        snprintf(err, errlen, "cannot read after \"%s\": %s", cmd, strerror(-rc));
        return rc;
    }
    /* Silence is the documented answer. An exact echo is harmless; anything
     * else is a reply we do not understand and must not skip over. */
    if (n > 0) {
        char echo[24];
        int k = snprintf(echo, sizeof(echo), "%s\r\n", cmd);

        if (rc != 0 || n != (size_t)k || memcmp(buf, echo, n) != 0) {
            escape_bytes(buf, n, esc, sizeof(esc));
            snprintf(err, errlen, "unexpected reply to \"%s\": \"%s\"", cmd, esc);
            return -EPROTO;
        }
    }
    /* The fibre takes some ms to move (a mechanical switch): ask again
     * until it says it is there, or the time is up. */
    for (;;) {
        rc = position(io, nchannels, deadline, &now_ch, err, errlen);
        if (rc < 0)
            return rc;
        if (now_ch == ch)
            return 0;
        if (lineio_remaining_ms(deadline) <= LEONI_POLL_MS) {
            snprintf(err, errlen, "switch still reports channel %d after \"%s\"", now_ch, cmd);
            return -EPROTO;
        }
        struct timespec ts = {0, LEONI_POLL_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
}
