/*
 * mdt693b: the Thorlabs MDT693B/694B serial protocol over a struct lineio.
 * It owns command formatting and strict reply parsing: a reply that is not
 * certainly the answer to the command just sent is an error, never a
 * voltage. It must not know about ports, the loop, lasers or the controller.
 */
#include "mdt693b.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "escape.h"

/*
 * Decimals of the set command. The readback has 0.1 V resolution and can
 * differ from the set value by about 1 V; transcripts of public drivers show
 * the firmware accepting "xvoltage=24.680" and more digits. 10 mV is finer
 * than anything the readback can confirm and short enough for any firmware.
 */
#define MDT693B_SET_DECIMALS 2

/* A reply is at most an echo (about 20 bytes), "[ 150.0]", line ends and a
 * prompt; 128 bytes leave room for a garbled one to be quoted in full. */
#define REPLY_CAP 128

/* Room for an escaped reply in an error message. */
#define ESC_CAP (4 * REPLY_CAP + 1)

static bool contains(const char *hay, size_t n, const char *needle) {
    size_t k = strlen(needle);

    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(hay + i, needle, k) == 0)
            return true;
    return false;
}

static bool is_eol(char c) {
    return c == '\r' || c == '\n';
}

/*
 * Strict decimal: optional '-', digits, optional '.' and digits. strtod alone
 * would also take "nan", "inf", hex floats and exponents, none of which the
 * device sends; the '-' is accepted only so that a negative reading is
 * reported as out of range rather than as garbage.
 */
static bool parse_decimal(const char *s, size_t n, double *out) {
    char tmp[24];
    size_t i = 0, digits = 0;

    if (n == 0 || n >= sizeof(tmp))
        return false;
    if (s[i] == '-')
        i++;
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
        digits++;
    if (i < n && s[i] == '.') {
        i++;
        for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
            digits++;
    }
    if (i != n || digits == 0)
        return false;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    *out = strtod(tmp, NULL);
    return isfinite(*out);
}

int mdt693b_parse_reply(const char *cmd, const char *reply, size_t n, bool echo, char prompt,
                        bool want_value, double *value_v, char *err, size_t errlen) {
    char esc[ESC_CAP];
    size_t i = 0, cmdlen = strlen(cmd);
    double v = 0.0;

    escape_bytes(reply, n, esc, sizeof(esc));
    if (contains(reply, n, "CMD_NOT_DEFINED")) {
        snprintf(err, errlen, "\"%s\" not understood (CMD_NOT_DEFINED): \"%s\"", cmd, esc);
        return -EPROTO;
    }
    if (prompt == '*' && memchr(reply, '!', n)) {
        snprintf(err, errlen, "\"%s\" not understood ('!'): \"%s\"", cmd, esc);
        return -EPROTO;
    }
    if (n == 0 || reply[n - 1] != prompt) {
        snprintf(err, errlen, "reply to \"%s\" does not end with the prompt '%c': \"%s\"", cmd,
                 prompt, esc);
        return -EPROTO;
    }
    /* With echo on, the echo must come first: anything before it is a late
     * reply to an earlier command, and so is a different echo. */
    if (echo) {
        if (n < cmdlen + 1 || memcmp(reply, cmd, cmdlen) != 0 || !is_eol(reply[cmdlen])) {
            snprintf(err, errlen,
                     "reply does not start with the echo of \"%s\" (late reply to an earlier "
                     "command?): \"%s\"",
                     cmd, esc);
            return -EPROTO;
        }
        i = cmdlen;
    }
    if (want_value) {
        size_t open, close;

        /* Older firmware puts a prompt between the echo and the value. */
        while (i < n && (is_eol(reply[i]) || reply[i] == prompt))
            i++;
        if (i >= n || reply[i] != '[') {
            snprintf(err, errlen, "no \"[value]\" in the reply to \"%s\": \"%s\"", cmd, esc);
            return -EPROTO;
        }
        open = i;
        for (close = open + 1; close < n && reply[close] != ']'; close++)
            ;
        if (close >= n) {
            snprintf(err, errlen, "unterminated \"[value]\" in the reply to \"%s\": \"%s\"", cmd,
                     esc);
            return -EPROTO;
        }
        {
            size_t a = open + 1, b = close;

            while (a < b && reply[a] == ' ')
                a++;
            while (b > a && reply[b - 1] == ' ')
                b--;
            if (!parse_decimal(reply + a, b - a, &v)) {
                snprintf(err, errlen, "not a voltage in the reply to \"%s\": \"%s\"", cmd, esc);
                return -EPROTO;
            }
        }
        if (v < MDT693B_MIN_V || v > MDT693B_MAX_V) {
            snprintf(err, errlen, "voltage %g V out of %g..%g V in the reply to \"%s\": \"%s\"", v,
                     MDT693B_MIN_V, MDT693B_MAX_V, cmd, esc);
            return -EPROTO;
        }
        i = close + 1;
    }
    while (i < n && is_eol(reply[i]))
        i++;
    if (i != n - 1) {
        snprintf(err, errlen, "unexpected bytes in the reply to \"%s\": \"%s\"", cmd, esc);
        return -EPROTO;
    }
    if (want_value)
        *value_v = v;
    return 0;
}

/* Is buf (len > 0, the last byte a stop byte) a complete reply? A value
 * reply is complete at the first prompt after its ']'; an earlier prompt is
 * the one older firmware sends between echo and value. */
static bool complete(const char *buf, size_t len, bool want_value, const char *prompts) {
    char last = buf[len - 1];

    if (last == '!')
        return true;
    if (!strchr(prompts, last))
        return false;
    if (!want_value || contains(buf, len, "CMD_NOT_DEFINED"))
        return true;
    return memchr(buf, ']', len - 1) != NULL;
}

/*
 * Discards waiting input, sends cmd followed by CR and reads until the reply
 * is complete (see complete()) into buf. prompts: the prompt bytes to stop
 * at ("*>" while the firmware is unknown). Returns 0 with *len bytes, or a
 * transport error with err filled.
 */
static int transact(const struct lineio *io, const char *cmd, bool want_value, const char *prompts,
                    int64_t deadline, char *buf, size_t cap, size_t *len, char *err,
                    size_t errlen) {
    char line[48], stops[8], esc[ESC_CAP];
    int rc, k;

    *len = 0;
    buf[0] = '\0';
    k = snprintf(line, sizeof(line), "%s\r", cmd);
    if (k < 0 || (size_t)k >= sizeof(line)) {
        snprintf(err, errlen, "command \"%s\" too long", cmd);
        return -EINVAL;
    }
    snprintf(stops, sizeof(stops), "%s!", prompts);
    rc = io->flush_input(io->ctx);
    if (rc < 0) {
        snprintf(err, errlen, "cannot discard input before \"%s\": %s", cmd, strerror(-rc));
        return rc;
    }
    rc = io->write(io->ctx, line, (size_t)k, lineio_remaining_ms(deadline));
    if (rc < 0) {
        snprintf(err, errlen, "cannot send \"%s\": %s", cmd, strerror(-rc));
        return rc;
    }
    for (;;) {
        size_t got = 0;

        if (cap - *len < 2)
            rc = -EOVERFLOW;
        else
            rc = io->read_until(io->ctx, buf + *len, cap - *len, stops,
                                lineio_remaining_ms(deadline), &got);
        *len += got;
        if (rc == 0 && *len > 0 && complete(buf, *len, want_value, prompts))
            return 0;
        if (rc < 0) {
            escape_bytes(buf, *len, esc, sizeof(esc));
            if (rc == -ETIMEDOUT)
                snprintf(err, errlen, "no complete reply to \"%s\" in time (got \"%s\")", cmd, esc);
            else if (rc == -EOVERFLOW)
                snprintf(err, errlen, "reply to \"%s\" too long: \"%s\"", cmd, esc);
            else
                snprintf(err, errlen, "cannot read the reply to \"%s\": %s", cmd, strerror(-rc));
            return rc;
        }
        if (lineio_now_ms() >= deadline) {
            escape_bytes(buf, *len, esc, sizeof(esc));
            snprintf(err, errlen, "no complete reply to \"%s\" in time (got \"%s\")", cmd, esc);
            return -ETIMEDOUT;
        }
    }
}

int mdt693b_hello(const struct lineio *io, int timeout_ms, struct mdt693b_info *out, char *err,
                  size_t errlen) {
    static const char cmd[] = "vlimit?";
    int64_t deadline = lineio_now_ms() + timeout_ms;
    char buf[REPLY_CAP], esc[ESC_CAP];
    struct mdt693b_info info;
    size_t len;
    double v;
    int rc;

    rc = transact(io, cmd, true, "*>", deadline, buf, sizeof(buf), &len, err, errlen);
    if (rc < 0)
        return rc;
    /* The reply tells its own style: the echo is there or not, and the
     * last byte is the prompt (or '!', which the parser refuses). */
    info.echo = len > strlen(cmd) && memcmp(buf, cmd, strlen(cmd)) == 0;
    info.prompt = buf[len - 1] == '>' ? '>' : '*';
    rc = mdt693b_parse_reply(cmd, buf, len, info.echo, info.prompt, true, &v, err, errlen);
    if (rc < 0)
        return rc;
    if (v != 75.0 && v != 100.0 && v != 150.0) {
        escape_bytes(buf, len, esc, sizeof(esc));
        snprintf(err, errlen, "voltage limit %g V is not 75, 100 or 150 V: \"%s\"", v, esc);
        return -EPROTO;
    }
    info.vlimit_v = v;
    *out = info;
    return 0;
}

static int check_axis(char axis, char *err, size_t errlen) {
    if (axis == 'x' || axis == 'y' || axis == 'z')
        return 0;
    snprintf(err, errlen, "axis must be x, y or z, not '\\x%02x'", (unsigned char)axis);
    return -EINVAL;
}

static int readback(const struct lineio *io, const struct mdt693b_info *info, char axis,
                    int64_t deadline, double *volts, char *err, size_t errlen) {
    char cmd[16], buf[REPLY_CAP], prompts[2] = {info->prompt, '\0'};
    size_t len;
    int rc;

    snprintf(cmd, sizeof(cmd), "%cvoltage?", axis);
    rc = transact(io, cmd, true, prompts, deadline, buf, sizeof(buf), &len, err, errlen);
    if (rc < 0)
        return rc;
    return mdt693b_parse_reply(cmd, buf, len, info->echo, info->prompt, true, volts, err, errlen);
}

int mdt693b_get(const struct lineio *io, const struct mdt693b_info *info, char axis, int timeout_ms,
                double *volts, char *err, size_t errlen) {
    int rc = check_axis(axis, err, errlen);

    if (rc < 0)
        return rc;
    return readback(io, info, axis, lineio_now_ms() + timeout_ms, volts, err, errlen);
}

int mdt693b_set(const struct lineio *io, const struct mdt693b_info *info, char axis, double volts,
                int timeout_ms, double *readback_v, char *err, size_t errlen) {
    int64_t deadline = lineio_now_ms() + timeout_ms;
    char cmd[32], buf[REPLY_CAP], prompts[2] = {info->prompt, '\0'};
    size_t len;
    int rc = check_axis(axis, err, errlen);

    if (rc < 0)
        return rc;
    if (!isfinite(volts) || volts < 0.0 || volts > info->vlimit_v) {
        snprintf(err, errlen, "%g V is outside 0..%g V (the device's limit)", volts,
                 info->vlimit_v);
        return -EINVAL;
    }
    snprintf(cmd, sizeof(cmd), "%cvoltage=%.*f", axis, MDT693B_SET_DECIMALS, volts);
    rc = transact(io, cmd, false, prompts, deadline, buf, sizeof(buf), &len, err, errlen);
    if (rc < 0)
        return rc;
    rc = mdt693b_parse_reply(cmd, buf, len, info->echo, info->prompt, false, NULL, err, errlen);
    if (rc < 0)
        return rc;
    return readback(io, info, axis, deadline, readback_v, err, errlen);
}
