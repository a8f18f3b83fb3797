/*
 * wavemeter: the tables of wavemeter and actuator drivers by name. Adding an
 * instrument is one file and one row here.
 */
#include "wavemeter.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "highfinesse.h"
#include "sim.h"

static const struct wm_driver *const wm_drivers[] = {
    &sim_driver,
    &highfinesse_driver,
};

/* "none" in a config is no row here: a monitor-only laser has no actuator
 * driver at all (laser.act NULL), not a driver that refuses to write. */
static const struct act_driver *const act_drivers[] = {
    &sim_actuator,
};

const struct wm_driver *wm_driver_find(const char *name) {
    for (size_t i = 0; i < sizeof(wm_drivers) / sizeof(wm_drivers[0]); i++)
        if (strcmp(wm_drivers[i]->name, name) == 0)
            return wm_drivers[i];
    return NULL;
}

const struct act_driver *act_driver_find(const char *name) {
    for (size_t i = 0; i < sizeof(act_drivers) / sizeof(act_drivers[0]); i++)
        if (strcmp(act_drivers[i]->name, name) == 0)
            return act_drivers[i];
    return NULL;
}

int wm_check_config(const struct config *cfg, char *err, size_t errlen) {
    const struct wm_driver *drv = wm_driver_find(cfg->driver);

    if (drv == NULL) {
        snprintf(err, errlen, "unknown wavemeter driver \"%s\"", cfg->driver);
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
                     lc->name, drv->name, worst, lc->exposure_ms, lc->settle_ms,
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
