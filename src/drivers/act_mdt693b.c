/*
 * act_mdt693b: the actuator driver "mdt693b". One device is one controller
 * on one serial port; its axes are the channels lasers point at. It owns the
 * driver's key table and the checks of its settings, and speaks only through
 * the serial module and the mdt693b protocol layer: it must not know about
 * the loop, the lock or the config loader.
 */
#include "act_mdt693b.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdt693b.h"

/* The settings live in a struct drv_settings (config.h). */
_Static_assert(sizeof(struct act_mdt693b_settings) <= CONFIG_SETTINGS_MAX,
               "act_mdt693b settings outgrow CONFIG_SETTINGS_MAX");

/*
 * How long the handshake at open may take when no laser gives a timeout
 * (never in a loaded config, which always has one). A reply at 115200 baud
 * takes about 1 ms; a second is what a slow USB adapter needs after plug-in.
 */
#define ACT_MDT693B_OPEN_TIMEOUT_MS 1000

/* The device: one open port and what the handshake learned. Heap-allocated
 * by open, freed by close; used by one pool job at a time. */
struct mdt_dev {
    struct serial ser;
    struct lineio io; /* over ser, which stays in place */
    struct mdt693b_info info;
};

#define S struct act_mdt693b_settings
static const char *const axes[] = {"x", "y", "z", NULL};
/* clang-format off */
static const struct cfg_key keys[] = {
    {"port", CFG_STRING, CFG_FIELD(S, port), 1, 0, NULL, NULL, CFG_REQUIRED | CFG_DEVICE,
     "serial device of the controller; use its /dev/serial/by-id/... link, which survives "
     "replugging"},
    {"baud", CFG_INT, CFG_FIELD(S, baud), 50, 4000000, NULL, NULL, CFG_DEVICE,
     "baud rate (the MDT693B/694B talk at 115200, 8N1)"},
    CFG_ROW_ENUM("axis", S, axis, axes, "output of the controller this laser is on: x, y or z"),
    CFG_ROW_DBL("readback_tolerance_v", S, readback_tolerance_v, 0.1, 150,
                "V; a read-back further than this from the set voltage fails the write "
                "(the readback is measured and can differ by about 1 V)"),
    CFG_ROW_END,
};
/* clang-format on */
#undef S

static void mdt_defaults(void *settings) {
    struct act_mdt693b_settings *s = settings;

    memset(s, 0, sizeof(*s));
    s->baud = 115200;
    s->axis[0] = 'x';
    s->readback_tolerance_v = 2.0;
}

static const struct act_mdt693b_settings *laser_settings(const struct laser_config *lc) {
    return (const struct act_mdt693b_settings *)(const void *)lc->actuator.drv.u.bytes;
}

static void mdt_ident(const void *settings, const struct laser_config *lc, char *device,
                      size_t devlen, char *channel, size_t chanlen) {
    const struct act_mdt693b_settings *s = settings;

    (void)lc;
    snprintf(device, devlen, "%s", s->port);
    snprintf(channel, chanlen, "%s", s->axis);
}

static int mdt_check(const void *settings, const struct laser_config *lc,
                     const struct wm_driver *wm, const char **key, char *why, size_t whylen) {
    (void)settings;
    (void)wm;
    if (lc->output_min_v < MDT693B_MIN_V) {
        *key = "output_min_v";
        snprintf(why, whylen, "%g V is below %g V, the lowest output an MDT693B has",
                 lc->output_min_v, MDT693B_MIN_V);
        return -EINVAL;
    }
    if (lc->output_max_v > MDT693B_MAX_V) {
        *key = "output_max_v";
        snprintf(why, whylen, "%g V is above %g V, the highest output an MDT693B has",
                 lc->output_max_v, MDT693B_MAX_V);
        return -EINVAL;
    }
    return 0;
}

static void mdt_close(void *dev) {
    struct mdt_dev *d = dev;

    if (d == NULL)
        return;
    serial_close(&d->ser);
    free(d);
}

/*
 * Opens the port, learns echo, prompt and voltage limit, refuses a limit
 * switch below any laser's output_max_v (the controller would clip the
 * output silently and the lock would chase a rail it cannot see), and reads
 * each laser's axis once, so that an axis the model lacks (the one-axis
 * MDT694B) fails here and not at the first write.
 */
static int mdt_open(const struct act_open_args *a, void **dev, char *err, size_t errlen) {
    const struct act_mdt693b_settings *s = a->settings;
    struct serial_params p = {.path = s->port, .baud = s->baud};
    char why[256];
    struct mdt_dev *d;
    int rc, timeout_ms = 0;

    *dev = NULL;
    for (int i = 0; i < a->nlasers; i++)
        if (a->lasers[i]->actuator.timeout_ms > timeout_ms)
            timeout_ms = a->lasers[i]->actuator.timeout_ms;
    if (timeout_ms <= 0)
        timeout_ms = ACT_MDT693B_OPEN_TIMEOUT_MS;
    if ((d = calloc(1, sizeof(*d))) == NULL) {
        snprintf(err, errlen, "MDT693B at %s: out of memory", s->port);
        return -ENOMEM;
    }
    if ((rc = serial_open(&d->ser, &p, err, errlen)) < 0)
        goto fail;
    serial_lineio(&d->ser, &d->io);
    if ((rc = mdt693b_hello(&d->io, timeout_ms, &d->info, why, sizeof(why))) < 0) {
        snprintf(err, errlen, "MDT693B at %s: %s", s->port, why);
        goto fail;
    }
    for (int i = 0; i < a->nlasers; i++) {
        const struct laser_config *lc = a->lasers[i];
        const struct act_mdt693b_settings *ls = laser_settings(lc);
        double v;

        if (lc->output_max_v > d->info.vlimit_v) {
            snprintf(err, errlen,
                     "voltage limit switch is at %g V, below output_max_v %g V of laser \"%s\": "
                     "set the front-panel limit or lower output_max_v",
                     d->info.vlimit_v, lc->output_max_v, lc->name);
            rc = -ERANGE;
            goto fail;
        }
        rc = mdt693b_get(&d->io, &d->info, ls->axis[0], timeout_ms, &v, why, sizeof(why));
        if (rc < 0) {
            snprintf(err, errlen, "MDT693B at %s, axis %s of laser \"%s\": %s", s->port, ls->axis,
                     lc->name, why);
            goto fail;
        }
    }
    *dev = d;
    return 0;

fail:
    mdt_close(d);
    return rc;
}

static int mdt_write(void *dev, const void *settings, const struct laser_config *lc,
                     double output_v, int timeout_ms, struct act_io *io) {
    struct mdt_dev *d = dev;
    const struct act_mdt693b_settings *s = settings;
    double readback_v = (double)NAN;
    int rc;

    (void)lc;
    io->readback_v = (double)NAN;
    io->why[0] = '\0';
    /* The protocol layer's message, cut to fit, is the why. */
    rc = mdt693b_set(&d->io, &d->info, s->axis[0], output_v, timeout_ms, &readback_v, io->why,
                     sizeof(io->why));
    if (rc < 0)
        return rc;
    io->readback_v = readback_v;
    if (fabs(readback_v - output_v) > s->readback_tolerance_v) {
        snprintf(io->why, sizeof(io->why), "read back %.1f V after setting %.1f V (tolerance %g V)",
                 readback_v, output_v, s->readback_tolerance_v);
        return -EIO;
    }
    return 0;
}

static int mdt_read(void *dev, const void *settings, const struct laser_config *lc, int timeout_ms,
                    double *output_v, double *tolerance_v, struct act_io *io) {
    struct mdt_dev *d = dev;
    const struct act_mdt693b_settings *s = settings;

    (void)lc;
    io->readback_v = (double)NAN;
    io->why[0] = '\0';
    *tolerance_v = s->readback_tolerance_v;
    int rc =
        mdt693b_get(&d->io, &d->info, s->axis[0], timeout_ms, output_v, io->why, sizeof(io->why));
    if (rc == 0)
        io->readback_v = *output_v;
    return rc;
}

const struct act_driver act_mdt693b = {
    .cfg =
        {
            .name = "mdt693b",
            .keys = keys,
            .size = sizeof(struct act_mdt693b_settings),
            .defaults = mdt_defaults,
        },
    .ident = mdt_ident,
    .check = mdt_check,
    .open = mdt_open,
    .close = mdt_close,
    .write = mdt_write,
    .read = mdt_read,
};
