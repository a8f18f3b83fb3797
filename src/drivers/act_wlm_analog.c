/*
 * act_wlm_analog: a laser steered through one of the wavemeter's own analog
 * outputs. It is a thin adapter from the actuator interface to the
 * wavemeter driver's analog_out hook, which runs the vendor call on the
 * wavemeter's thread; it must not call the vendor library or keep state of
 * its own beyond the wavemeter it writes through.
 */
#include "act_wlm_analog.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* The laser-control option drives at most 8 outputs (one per channel of the
 * 8-channel switch); the same bound as highfinesse.c's HF_ANALOG_PORTS,
 * checked here at load time so that a typo is a config error, not a write
 * failure hours later. */
#define WLM_ANALOG_PORTS 8

/*
 * The outputs' voltage range, for the load-time check of output_min_v and
 * output_max_v. The instruments.md notes give neither the DAC's range nor
 * the PID option's, so this is the widest range a lab analog output spans,
 * +-10 V, and only an outer bound: a narrower DAC refuses values it cannot
 * make (ResERR_ParmOutOfRange, named in the laser's reason) and the lab sets
 * output_min_v/output_max_v to its actual range.
 */
#define WLM_ANALOG_MIN_V (-10.0)
#define WLM_ANALOG_MAX_V 10.0

/* What open keeps: the wavemeter to write through (borrowed, see the header). */
struct wlm_analog_dev {
    const struct wm_driver *wm;
    void *wm_dev;
};

/* Positional because CFG_FIELD expands to two members; no row macro takes
 * flags, and this key has no default. */
/* clang-format off */
static const struct cfg_key wlm_analog_keys[] = {
    {"output", CFG_INT, CFG_FIELD(struct act_wlm_analog_settings, output), 1, WLM_ANALOG_PORTS,
     NULL, NULL, CFG_REQUIRED,
     "the wavemeter's analog output (DAC port) wired to this laser, 1-based"},
    CFG_ROW_END,
};
/* clang-format on */

_Static_assert(sizeof(struct act_wlm_analog_settings) <= CONFIG_SETTINGS_MAX,
               "struct act_wlm_analog_settings outgrew CONFIG_SETTINGS_MAX");

/* All its lasers share the one wavemeter; each output is one channel, so two
 * lasers on one output are a config error. */
static void wlm_analog_ident(const void *settings, const struct laser_config *lc, char *device,
                             size_t devlen, char *channel, size_t chanlen) {
    const struct act_wlm_analog_settings *s = settings;

    (void)lc;
    snprintf(device, devlen, "wavemeter");
    snprintf(channel, chanlen, "%d", s->output);
}

static int wlm_analog_check(const void *settings, const struct laser_config *lc,
                            const struct wm_driver *wm, const char **key, char *why,
                            size_t whylen) {
    (void)settings;
    /* A capability, not a driver name: any wavemeter driver with the hook
     * will do. */
    if (wm == NULL || wm->analog_out == NULL) {
        *key = "driver";
        snprintf(why, whylen, "needs a wavemeter with analog outputs (driver highfinesse)");
        return -EINVAL;
    }
    /* Written so that NaN fails too. */
    if (!(lc->output_min_v >= WLM_ANALOG_MIN_V)) {
        *key = "output_min_v";
        snprintf(why, whylen, "%g V is below the wavemeter's analog outputs (%g..%g V)",
                 lc->output_min_v, WLM_ANALOG_MIN_V, WLM_ANALOG_MAX_V);
        return -EINVAL;
    }
    if (!(lc->output_max_v <= WLM_ANALOG_MAX_V)) {
        *key = "output_max_v";
        snprintf(why, whylen, "%g V is above the wavemeter's analog outputs (%g..%g V)",
                 lc->output_max_v, WLM_ANALOG_MIN_V, WLM_ANALOG_MAX_V);
        return -EINVAL;
    }
    return 0;
}

static int wlm_analog_open(const struct act_open_args *a, void **devp, char *err, size_t errlen) {
    struct wlm_analog_dev *d;

    if (a->wm == NULL || a->wm->analog_out == NULL) {
        snprintf(err, errlen, "the wavemeter driver has no analog outputs");
        return -ENOTSUP;
    }
    if (a->wm_dev == NULL) {
        snprintf(err, errlen, "the wavemeter is not open");
        return -ENODEV;
    }
    if ((d = malloc(sizeof(*d))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    d->wm = a->wm;
    d->wm_dev = a->wm_dev;
    *devp = d;
    return 0;
}

static void wlm_analog_close(void *dev) {
    free(dev);
}

/* The vendor call gives no read-back; GetDeviationSignalNum would only echo
 * the value set, at the cost of a second round trip to wlmDataServer. */
static int wlm_analog_write(void *dev, const void *settings, const struct laser_config *lc,
                            double output_v, int timeout_ms, struct act_io *io) {
    const struct wlm_analog_dev *d = dev;
    const struct act_wlm_analog_settings *s = settings;

    (void)lc;
    io->readback_v = (double)NAN;
    return d->wm->analog_out(d->wm_dev, s->output, output_v, timeout_ms, io->why, sizeof(io->why));
}

const struct act_driver act_wlm_analog = {
    .cfg =
        {
            .name = "highfinesse_analog",
            .keys = wlm_analog_keys,
            .size = sizeof(struct act_wlm_analog_settings),
            .defaults = NULL, /* output is required */
        },
    .ident = wlm_analog_ident,
    .check = wlm_analog_check,
    .open = wlm_analog_open,
    .close = wlm_analog_close,
    .write = wlm_analog_write,
};
