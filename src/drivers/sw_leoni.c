/*
 * sw_leoni: the switch driver "leoni". One device is one switch on one
 * serial port; what it learned at open (its number of channels) bounds every
 * select. It speaks only through the serial module and the leoni protocol
 * layer: it must not know about the loop, the scheduler or the config loader.
 */
#include "sw_leoni.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "leoni.h"

/* The settings live in a struct drv_settings (config.h). */
_Static_assert(sizeof(struct sw_leoni_settings) <= CONFIG_SETTINGS_MAX,
               "sw_leoni settings outgrow CONFIG_SETTINGS_MAX");

/*
 * How long the "type?" handshake at open may take: open gets no timeout of
 * its own. The reply is about 10 bytes, 2 ms at 57600 baud; a second covers a
 * USB adapter that has just been plugged in, and a switch that says nothing
 * within it is not there.
 */
#define SW_LEONI_OPEN_TIMEOUT_MS 1000

/* The device: one open port and the switch's size. Heap-allocated by open,
 * freed by close; used by one pool job at a time. */
struct swl_dev {
    struct serial ser;
    struct lineio io; /* over ser, which stays in place */
    int nchannels;    /* N of the "1xN" the switch reported */
};

#define S struct sw_leoni_settings
/* clang-format off */
static const struct cfg_key keys[] = {
    {"port", CFG_STRING, CFG_FIELD(S, port), 1, 0, NULL, NULL, CFG_REQUIRED,
     "serial device of the switch; use its /dev/serial/by-id/... link, which survives "
     "replugging"},
    CFG_ROW_INT("baud", S, baud, 50, 4000000, "baud rate (Leoni switches talk at 57600, 8N1)"),
    CFG_ROW_END,
};
/* clang-format on */
#undef S

static void swl_defaults(void *settings) {
    struct sw_leoni_settings *s = settings;

    memset(s, 0, sizeof(*s));
    s->baud = 57600;
}

static void swl_close(void *dev) {
    struct swl_dev *d = dev;

    if (d == NULL)
        return;
    serial_close(&d->ser);
    free(d);
}

static int swl_open(const void *settings, void **dev, char *err, size_t errlen) {
    const struct sw_leoni_settings *s = settings;
    struct serial_params p = {.path = s->port, .baud = s->baud};
    struct swl_dev *d;
    char why[256];
    int rc;

    *dev = NULL;
    if ((d = calloc(1, sizeof(*d))) == NULL) {
        snprintf(err, errlen, "Leoni switch at %s: out of memory", s->port);
        return -ENOMEM;
    }
    if ((rc = serial_open(&d->ser, &p, err, errlen)) < 0)
        goto fail;
    serial_lineio(&d->ser, &d->io);
    rc = leoni_hello(&d->io, SW_LEONI_OPEN_TIMEOUT_MS, &d->nchannels, why, sizeof(why));
    if (rc < 0) {
        snprintf(err, errlen, "Leoni switch at %s: %s", s->port, why);
        goto fail;
    }
    *dev = d;
    return 0;

fail:
    swl_close(d);
    return rc;
}

static int swl_select(void *dev, int channel, int timeout_ms, char *why, size_t whylen) {
    struct swl_dev *d = dev;

    return leoni_select(&d->io, d->nchannels, channel, timeout_ms, why, whylen);
}

static int swl_position(void *dev, int timeout_ms, int *channel, char *why, size_t whylen) {
    struct swl_dev *d = dev;

    return leoni_position(&d->io, d->nchannels, timeout_ms, channel, why, whylen);
}

const struct sw_driver sw_leoni = {
    .cfg =
        {
            .name = "leoni",
            .keys = keys,
            .size = sizeof(struct sw_leoni_settings),
            .defaults = swl_defaults,
        },
    .open = swl_open,
    .close = swl_close,
    .select = swl_select,
    .position = swl_position,
};
