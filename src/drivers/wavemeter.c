/*
 * wavemeter: the tables of wavemeter and actuator drivers by name. Adding an
 * instrument is one file and one row here.
 */
#include "wavemeter.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "act_mdt693b.h"
#include "act_serial_line.h"
#include "act_wlm_analog.h"
#include "highfinesse.h"
#include "sim.h"
#include "sw_leoni.h"

/* The first row is the default wavemeter: the simulator, so a new user sees
 * the daemon work on any machine. */
static const struct wm_driver *const wm_drivers[] = {
    &sim_driver,
    &highfinesse_driver,
};

/* A monitor-only laser has no row here: "none" in a config is no actuator
 * driver at all (laser.act NULL), not a driver that refuses to write. */
static const struct act_driver *const act_drivers[] = {
    &sim_actuator,
    &act_mdt693b,
    &act_serial_line,
    &act_wlm_analog,
};

static const struct sw_driver *const sw_drivers[] = {
    &sw_leoni,
};

#define NROWS(t) (sizeof(t) / sizeof((t)[0]))

const struct wm_driver *wm_driver_at(size_t i) {
    return i < NROWS(wm_drivers) ? wm_drivers[i] : NULL;
}

const struct act_driver *act_driver_at(size_t i) {
    return i < NROWS(act_drivers) ? act_drivers[i] : NULL;
}

const struct sw_driver *sw_driver_at(size_t i) {
    return i < NROWS(sw_drivers) ? sw_drivers[i] : NULL;
}

const struct wm_driver *wm_driver_find(const char *name) {
    const struct wm_driver *d;

    for (size_t i = 0; (d = wm_driver_at(i)) != NULL; i++)
        if (strcmp(d->cfg.name, name) == 0)
            return d;
    return NULL;
}

const struct act_driver *act_driver_find(const char *name) {
    const struct act_driver *d;

    for (size_t i = 0; (d = act_driver_at(i)) != NULL; i++)
        if (strcmp(d->cfg.name, name) == 0)
            return d;
    return NULL;
}

const struct sw_driver *sw_driver_find(const char *name) {
    const struct sw_driver *d;

    for (size_t i = 0; (d = sw_driver_at(i)) != NULL; i++)
        if (strcmp(d->cfg.name, name) == 0)
            return d;
    return NULL;
}

int wm_check_config(const struct config *cfg, char *err, size_t errlen) {
    const struct wm_driver *drv = wm_driver_find(cfg->wavemeter.driver);

    if (drv == NULL) {
        snprintf(err, errlen, "unknown wavemeter driver \"%s\"", cfg->wavemeter.driver);
        return -EINVAL;
    }
    for (int i = 0; i < cfg->nlasers; i++) {
        const struct laser_config *lc = &cfg->lasers[i];
        int worst = drv->worst_read_ms(lc->exposure_ms, lc->settle_ms, cfg->read_timeout_ms);

        if (lc->enabled && worst >= cfg->read_timeout_ms) {
            snprintf(err, errlen,
                     "laser \"%s\": with driver %s a read can take %d ms (exposure_ms %d, "
                     "settle_ms %d), not less than wavemeter.read_timeout_ms %d: raise the "
                     "timeout or shorten the exposure",
                     lc->name, drv->cfg.name, worst, lc->exposure_ms, lc->settle_ms,
                     cfg->read_timeout_ms);
            return -EINVAL;
        }
    }
    return 0;
}

const char *wm_status_name(enum wm_status s) {
    switch (s) {
    case WM_OK:
        return "ok";
    case WM_NO_SIGNAL:
        return "no_signal";
    case WM_UNDEREXPOSED:
        return "underexposed";
    case WM_OVEREXPOSED:
        return "overexposed";
    case WM_ERROR:
        break;
    }
    return "error";
}
