/*
 * wavemeter: the driver interface every instrument implements (a table of
 * method pointers, one file per family, gpsd style) and the table of drivers
 * by name. A driver never sees a socket, a libuv handle or a json_t.
 */
#ifndef WMD_WAVEMETER_H
#define WMD_WAVEMETER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clock.h"
#include "config.h"

/* Expected measurement outcomes are statuses, not errors. */
enum wm_status { WM_OK, WM_NO_SIGNAL, WM_UNDEREXPOSED, WM_OVEREXPOSED, WM_ERROR };

const char *wm_status_name(enum wm_status s);

/* What one read job asks of the device: a copy, owned by the job. */
struct wm_read_req {
    int channel; /* 1-based */
    int exposure_ms;
    int settle_ms;  /* spent only when switched */
    bool switched;  /* the switch must move to this channel first */
    int timeout_ms; /* the whole read finishes or fails by then */
};

/* What one read job returns, by value. */
struct wm_sample {
    enum wm_status status;
    double frequency_thz; /* valid when status is WM_OK */
    int exposure_ms;
    uint64_t t_ns;    /* monotonic time at the end of the exposure */
    double time_unix; /* wall time of the same moment, for display */
    bool straddled;   /* the switch moved during the exposure */
    int err;          /* negative errno-style when status is WM_ERROR */
    char detail[96];  /* human-readable cause for WM_ERROR */
};

struct wm_driver {
    const char *name;
    /* Loop thread, at start-up. On error fills err and returns < 0. */
    int (*open)(const struct config *cfg, const struct clock *clk, void **dev, char *err,
                size_t errlen);
    void (*close)(void *dev);
    /* Pool thread, one call at a time per device. Never blocks longer than
     * req->timeout_ms. Returns 0 (see out->status) or a negative code with
     * out->status WM_ERROR and out->detail filled. */
    int (*read)(void *dev, const struct wm_read_req *req, struct wm_sample *out);
    /* Pure: the longest a read after a switch can take with these settings,
     * in ms, for the start-up check against read_timeout_ms. */
    int (*worst_read_ms)(int exposure_ms, int settle_ms, int timeout_ms);
};

/*
 * Start-up check of the config against its driver: every enabled laser's
 * worst-case read must fit in wavemeter.read_timeout_ms, or no read of it
 * could ever succeed. Returns 0 or -EINVAL with err naming the laser.
 */
int wm_check_config(const struct config *cfg, char *err, size_t errlen);

/* NULL if no driver has that name. */
const struct wm_driver *wm_driver_find(const char *name);

/* Actuators: what turns a controller output into a laser's input. */
struct act_driver {
    const char *name;
    /* Loop thread. wm_dev is the open wavemeter device (the sim actuator and
     * the wavemeter's own analog outputs need it). */
    int (*open)(const struct laser_config *lc, const struct wm_driver *wm, void *wm_dev, void **dev,
                char *err, size_t errlen);
    void (*close)(void *dev);
    /* Pool thread, one call at a time per actuator; finishes within timeout_ms. */
    int (*write)(void *dev, double output_v, int timeout_ms);
};

const struct act_driver *act_driver_find(const char *name);

#endif
