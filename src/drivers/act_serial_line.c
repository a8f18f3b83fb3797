/*
 * act_serial_line: the actuator driver "serial_line". One device is one box
 * on one serial port; its numbered outputs are the channels lasers point
 * at. Each write sends one command built from the laser's template and, if
 * the config names a reply, checks the box's answer. It speaks only through
 * the serial module and the pure serial_line module: it must not know about
 * the loop, the lock or the config loader.
 */
#include "act_serial_line.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "escape.h"
#include "serial_line.h"

/* The settings live in a struct drv_settings (config.h). */
_Static_assert(sizeof(struct act_serial_line_settings) <= CONFIG_SETTINGS_MAX,
               "act_serial_line settings outgrow CONFIG_SETTINGS_MAX");

/*
 * Room for one command. A placeholder never expands to more than twice its
 * own length ({code} is at most 11 characters, {volts} at most 10 within the
 * volts bounds below, {channel} at most 3), so a template that fits its key
 * always fits here with its terminator: no write fails for length.
 */
#define ACT_SERIAL_LINE_CMD_MAX                                                                    \
    (2 * sizeof(((struct act_serial_line_settings *)0)->command) +                                 \
     sizeof(((struct act_serial_line_settings *)0)->terminator))

/* A reply longer than the expected one is wrong anyway; this much of it is
 * kept to be quoted. */
#define ACT_SERIAL_LINE_REPLY_MAX 128

/* The device: one open port. Heap-allocated by open, freed by close; used by
 * one pool job at a time. */
struct sl_dev {
    struct serial ser;
    struct lineio io; /* over ser, which stays in place */
};

#define S struct act_serial_line_settings
static const char *const parities[] = {"none", "odd", "even", NULL};
/* clang-format off */
static const struct cfg_key keys[] = {
    {"port", CFG_STRING, CFG_FIELD(S, port), 1, 0, NULL, NULL, CFG_REQUIRED | CFG_DEVICE,
     "serial device of the box; use its /dev/serial/by-id/... link, which survives replugging"},
    {"baud", CFG_INT, CFG_FIELD(S, baud), 50, 4000000, NULL, NULL, CFG_DEVICE,
     "baud rate"},
    {"data_bits", CFG_INT, CFG_FIELD(S, data_bits), 5, 8, NULL, NULL, CFG_DEVICE,
     "data bits per character"},
    {"parity", CFG_CHOICE, CFG_FIELD(S, parity), 0, 0, parities, NULL, CFG_DEVICE,
     "parity: none, odd or even"},
    {"stop_bits", CFG_INT, CFG_FIELD(S, stop_bits), 1, 2, NULL, NULL, CFG_DEVICE,
     "stop bits"},
    CFG_ROW_INT("channel", S, channel, 0, 255, "the box's output this laser is on ({channel})"),
    CFG_ROW_STR("command", S, command,
                "command template, sent as written with {channel}, {code} and {volts} "
                "(4 decimals) filled in; {{ is a literal '{'"),
    {"terminator", CFG_STRING, CFG_FIELD(S, terminator), 0, 0, NULL, NULL, CFG_DEVICE,
     "bytes sent after each command (\"\\r\\n\", \"\\n\", ...)"},
    CFG_ROW_INT("code_min", S, code_min, -2147483647, 2147483647,
                "lowest DAC code the box takes"),
    CFG_ROW_INT("code_max", S, code_max, -2147483647, 2147483647,
                "highest DAC code the box takes"),
    CFG_ROW_DBL("volts_at_code_min", S, volts_at_code_min, -1000, 1000,
                "V; the output at code_min (volts map linearly to codes, rounded to nearest)"),
    CFG_ROW_DBL("volts_at_code_max", S, volts_at_code_max, -1000, 1000,
                "V; the output at code_max"),
    {"reply", CFG_STRING, CFG_FIELD(S, reply), 0, 0, NULL, NULL, 0,
     "the exact line the box answers each command with (\"OK\"); \"\" = it answers nothing"},
    CFG_ROW_STR("reply_terminator", S, reply_terminator, "bytes that end the box's reply line"),
    {"open_delay_ms", CFG_INT, CFG_FIELD(S, open_delay_ms), 0, 10000, NULL, NULL, CFG_DEVICE,
     "ms to wait after opening the port before the first command (an Arduino resets when "
     "the port opens and runs its bootloader for about 2 s)"},
    CFG_ROW_END,
};
/* clang-format on */
#undef S

static void sl_defaults(void *settings) {
    struct act_serial_line_settings *s = settings;

    memset(s, 0, sizeof(*s));
    s->baud = 9600;
    s->data_bits = 8;
    s->parity = SERIAL_PARITY_NONE;
    s->stop_bits = 1;
    s->channel = 0;
    snprintf(s->command, sizeof(s->command), "SET {channel} {code}");
    snprintf(s->terminator, sizeof(s->terminator), "\n");
    s->code_min = 0;
    s->code_max = 65535;
    s->volts_at_code_min = -10.0;
    s->volts_at_code_max = 10.0;
    s->reply[0] = '\0';
    snprintf(s->reply_terminator, sizeof(s->reply_terminator), "\n");
    /*
     * An Arduino Uno/Nano (and any board whose USB chip wires DTR to reset)
     * reboots when the port is opened, since opening raises DTR before any
     * setting of ours can drop it; its bootloader then listens for about
     * 1-2 s and swallows or garbles what is sent meanwhile. Boxes that do not
     * reset can set 0.
     */
    s->open_delay_ms = 2000;
}

static struct serial_line_scale sl_scale(const struct act_serial_line_settings *s) {
    struct serial_line_scale sc = {
        .code_min = s->code_min,
        .code_max = s->code_max,
        .volts_at_code_min = s->volts_at_code_min,
        .volts_at_code_max = s->volts_at_code_max,
    };

    return sc;
}

static void sl_ident(const void *settings, const struct laser_config *lc, char *device,
                     size_t devlen, char *channel, size_t chanlen) {
    const struct act_serial_line_settings *s = settings;

    (void)lc;
    snprintf(device, devlen, "%s", s->port);
    snprintf(channel, chanlen, "%d", s->channel);
}

static int sl_check(const void *settings, const struct laser_config *lc, const struct wm_driver *wm,
                    const char **key, char *why, size_t whylen) {
    const struct act_serial_line_settings *s = settings;
    double lo = fmin(s->volts_at_code_min, s->volts_at_code_max);
    double hi = fmax(s->volts_at_code_min, s->volts_at_code_max);
    size_t nt = strlen(s->reply_terminator);
    int rc;

    (void)wm;
    if ((rc = serial_line_check_template(s->command, why, whylen)) < 0) {
        *key = "command";
        return rc;
    }
    if (s->code_min >= s->code_max) {
        *key = "code_max";
        snprintf(why, whylen, "code_max %d must be above code_min %d", s->code_max, s->code_min);
        return -EINVAL;
    }
    if (s->volts_at_code_min == s->volts_at_code_max) {
        *key = "volts_at_code_max";
        snprintf(why, whylen, "must differ from volts_at_code_min (%g V)", s->volts_at_code_min);
        return -EINVAL;
    }
    if (lc->output_min_v < lo) {
        *key = "output_min_v";
        snprintf(why, whylen, "%g V is below the box's range %g..%g V", lc->output_min_v, lo, hi);
        return -EINVAL;
    }
    if (lc->output_max_v > hi) {
        *key = "output_max_v";
        snprintf(why, whylen, "%g V is above the box's range %g..%g V", lc->output_max_v, lo, hi);
        return -EINVAL;
    }
    /* The reply is read up to the terminator's last byte: an expected reply
     * holding that byte could never be matched. */
    if (nt > 0 && strchr(s->reply, s->reply_terminator[nt - 1]) != NULL) {
        *key = "reply";
        snprintf(why, whylen, "contains the last byte of reply_terminator, so it can never match");
        return -EINVAL;
    }
    return 0;
}

static void sl_close(void *dev) {
    struct sl_dev *d = dev;

    if (d == NULL)
        return;
    serial_close(&d->ser);
    free(d);
}

static void sleep_ms(int ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static int sl_open(const struct act_open_args *a, void **dev, char *err, size_t errlen) {
    const struct act_serial_line_settings *s = a->settings;
    struct serial_params p = {
        .path = s->port,
        .baud = s->baud,
        .data_bits = s->data_bits,
        .parity = s->parity,
        .stop_bits = s->stop_bits,
    };
    struct sl_dev *d;
    int rc;

    *dev = NULL;
    if ((d = calloc(1, sizeof(*d))) == NULL) {
        snprintf(err, errlen, "serial %s: out of memory", s->port);
        return -ENOMEM;
    }
    if ((rc = serial_open(&d->ser, &p, err, errlen)) < 0)
        goto fail;
    serial_lineio(&d->ser, &d->io);
    /* A bounded wait (at most 10 s by the key's bounds) on this device's own
     * pool job; see sl_defaults for why. What the board printed while it
     * booted is not a reply to anything. */
    if (s->open_delay_ms > 0)
        sleep_ms(s->open_delay_ms);
    if ((rc = d->io.flush_input(d->io.ctx)) < 0) {
        snprintf(err, errlen, "serial %s: cannot discard input after opening: %s", s->port,
                 strerror(-rc));
        goto fail;
    }
    *dev = d;
    return 0;

fail:
    sl_close(d);
    return rc;
}

/* Reads the reply to cmd until it ends with the whole terminator (read up
 * to its last byte, again if an earlier copy of that byte came first). */
static int read_reply(const struct lineio *io, const char *terminator, int64_t deadline, char *buf,
                      size_t cap, size_t *len) {
    size_t nt = strlen(terminator);
    char stop[2] = {terminator[nt - 1], '\0'};

    *len = 0;
    buf[0] = '\0';
    for (;;) {
        size_t got = 0;
        int rc = cap - *len < 2 ? -EOVERFLOW
                                : io->read_until(io->ctx, buf + *len, cap - *len, stop,
                                                 lineio_remaining_ms(deadline), &got);

        *len += got;
        if (rc < 0)
            return rc;
        if (*len >= nt && memcmp(buf + *len - nt, terminator, nt) == 0)
            return 0;
        if (lineio_now_ms() >= deadline)
            return -ETIMEDOUT;
    }
}

static int sl_write(void *dev, const void *settings, const struct laser_config *lc, double output_v,
                    int timeout_ms, struct act_io *io) {
    struct sl_dev *d = dev;
    const struct act_serial_line_settings *s = settings;
    const struct serial_line_scale sc = sl_scale(s);
    int64_t deadline = lineio_now_ms() + timeout_ms;
    char cmd[ACT_SERIAL_LINE_CMD_MAX], reply[ACT_SERIAL_LINE_REPLY_MAX];
    char ecmd[40], ereply[48], ewant[40];
    size_t len, n;
    int rc;

    (void)lc;
    io->readback_v = (double)NAN;
    io->why[0] = '\0';
    /* The lock keeps its output inside output_min_v..output_max_v, which
     * the load-time check put inside the box's range; anything else is a bug
     * upstream and is not sent (the code would clamp, {volts} would not). */
    if (!(output_v >= fmin(sc.volts_at_code_min, sc.volts_at_code_max) &&
          output_v <= fmax(sc.volts_at_code_min, sc.volts_at_code_max))) {
        snprintf(io->why, sizeof(io->why), "%g V is outside the box's range %g..%g V", output_v,
                 fmin(sc.volts_at_code_min, sc.volts_at_code_max),
                 fmax(sc.volts_at_code_min, sc.volts_at_code_max));
        return -EINVAL;
    }
    rc = serial_line_format(s->command, s->terminator, s->channel, &sc, output_v, cmd, sizeof(cmd),
                            &len, io->why, sizeof(io->why));
    if (rc < 0)
        return rc;
    escape_bytes(cmd, len, ecmd, sizeof(ecmd));
    /* A late or unasked-for line from the box must not be taken for the
     * reply to this command. */
    if ((rc = d->io.flush_input(d->io.ctx)) < 0) {
        snprintf(io->why, sizeof(io->why), "cannot discard input before \"%s\": %s", ecmd,
                 strerror(-rc));
        return rc;
    }
    if ((rc = d->io.write(d->io.ctx, cmd, len, lineio_remaining_ms(deadline))) < 0) {
        snprintf(io->why, sizeof(io->why), "cannot send \"%s\": %s", ecmd, strerror(-rc));
        return rc;
    }
    if (s->reply[0] == '\0')
        return 0;
    rc = read_reply(&d->io, s->reply_terminator, deadline, reply, sizeof(reply), &n);
    escape_bytes(reply, n, ereply, sizeof(ereply));
    if (rc == -ETIMEDOUT) {
        snprintf(io->why, sizeof(io->why), "no complete reply to \"%s\" in time (got \"%s\")", ecmd,
                 ereply);
        return rc;
    }
    if (rc == -EOVERFLOW) {
        snprintf(io->why, sizeof(io->why), "reply to \"%s\" too long: \"%s\"", ecmd, ereply);
        return -EPROTO;
    }
    if (rc < 0) {
        snprintf(io->why, sizeof(io->why), "cannot read the reply to \"%s\": %s", ecmd,
                 strerror(-rc));
        return rc;
    }
    if (!serial_line_reply_ok(s->reply, s->reply_terminator, reply, n)) {
        escape_bytes(s->reply, strlen(s->reply), ewant, sizeof(ewant));
        snprintf(io->why, sizeof(io->why), "reply \"%s\" to \"%s\", expected \"%s\"", ereply, ecmd,
                 ewant);
        return -EPROTO;
    }
    return 0;
}

const struct act_driver act_serial_line = {
    .cfg =
        {
            .name = "serial_line",
            .keys = keys,
            .size = sizeof(struct act_serial_line_settings),
            .defaults = sl_defaults,
        },
    .ident = sl_ident,
    .check = sl_check,
    .open = sl_open,
    .close = sl_close,
    .write = sl_write,
};
