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

#include "cfgkey.h"
#include "clock.h"
#include "config.h"

/* Expected measurement outcomes are statuses, not errors. */
enum wm_status { WM_OK, WM_NO_SIGNAL, WM_UNDEREXPOSED, WM_OVEREXPOSED, WM_ERROR };
/* How many statuses there are (arrays indexed by status). */
#define WM_NSTATUS (WM_ERROR + 1)

const char *wm_status_name(enum wm_status s);

/* What one read job asks of the device: a copy, owned by the job. */
struct wm_read_req {
    int channel; /* 1-based */
    int exposure_ms;
    int settle_ms;    /* spent only when switched */
    bool switched;    /* the switch must move to this channel first */
    int timeout_ms;   /* the whole read finishes or fails by then */
    const void *chan; /* the laser's lasers[].<driver section> settings, or NULL */
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

/* What a wavemeter driver is given at open: its settings (its key table's
 * struct), the whole config for the channel list, and the clock. */
struct wm_open_args {
    const void *settings;
    const struct config *cfg;
    const struct clock *clk;
};

/* The simulator's test hooks, reached through meter_simulate() (sim.*). */
enum wm_sim_op { WM_SIM_FAULT, WM_SIM_MODE_HOP, WM_SIM_CONNECT, WM_SIM_DISCONNECT };
struct wm_sim_cmd {
    enum wm_sim_op op;
    int channel;     /* FAULT, MODE_HOP */
    const char *arg; /* FAULT: the fault's name */
    double jump_mhz; /* MODE_HOP */
};

struct wm_driver {
    /* Name, keys of the wavemeter object and its settings struct. */
    struct cfg_driver cfg;
    /* Optional: the per-laser section this driver reads ("sim" for
     * lasers[].sim), its table and defaults; chan.name is the section name. */
    struct cfg_driver chan;
    /* Optional, pure: after a laser is read, fill the laser keys whose
     * default the channel section decides (NAN = not in the file): the
     * simulator's nominal frequency is the setpoint's default. */
    void (*chan_resolve)(void *chan, struct laser_config *lc);
    /* The actuator a laser without an "actuator" block gets; NULL: none
     * (monitor only), which is what a real wavemeter wants. */
    const char *default_actuator;
    /* Loop thread, at start-up. On error fills err and returns < 0. */
    int (*open)(const struct wm_open_args *a, void **dev, char *err, size_t errlen);
    void (*close)(void *dev);
    /* Pool thread, one call at a time per device. Never blocks longer than
     * req->timeout_ms. Returns 0 (see out->status) or a negative code with
     * out->status WM_ERROR and out->detail filled. */
    int (*read)(void *dev, const struct wm_read_req *req, struct wm_sample *out);
    /* Pure: the longest a read after a switch can take with these settings,
     * in ms, for the start-up check against read_timeout_ms. */
    int (*worst_read_ms)(int exposure_ms, int settle_ms, int timeout_ms);
    /* Optional: drive one of the instrument's analog outputs (1-based) to
     * volts. Pool thread; finishes within timeout_ms. 0 or < 0 with why. */
    int (*analog_out)(void *dev, int output, double volts, int timeout_ms, char *why,
                      size_t whylen);
    /* Optional (the simulator): the sim.* test methods. Loop thread, quick.
     * 0, -ENOENT (no such channel), -EINVAL (bad argument). */
    int (*simulate)(void *dev, const struct wm_sim_cmd *cmd);
};

/*
 * Start-up check of the config against its driver: every enabled laser's
 * worst-case read must fit in wavemeter.read_timeout_ms, or no read of it
 * could ever succeed. Returns 0 or -EINVAL with err naming the laser.
 */
int wm_check_config(const struct config *cfg, char *err, size_t errlen);

/* NULL if no driver has that name. */
const struct wm_driver *wm_driver_find(const char *name);
/* The i-th driver of the table, NULL past the end (for the loader and docs). */
const struct wm_driver *wm_driver_at(size_t i);

/* ---- actuators: what turns a controller output into a laser's input ---- */

/* What an actuator device is opened with: the settings of its first laser
 * (device-level keys agree between its lasers: the loader checks), every
 * laser on it, and the open wavemeter for drivers that act through it. */
struct act_open_args {
    const void *settings;
    const struct laser_config *const *lasers; /* the lasers on this device */
    int nlasers;
    const struct wm_driver *wm;
    void *wm_dev;
};

/* The outcome of one write: the read-back when the device gives one. */
struct act_io {
    double readback_v; /* NAN: the driver has no read-back */
    char why[160];     /* on failure: what went wrong, for the laser's reason */
};

struct act_driver {
    /* Name, keys of lasers[].actuator besides driver and timeout_ms. */
    struct cfg_driver cfg;
    /*
     * Pure: the device this laser's actuator is a channel of, and which
     * channel, as short strings: lasers naming the same device share one open
     * device (one serial port); two on the same channel is a config error.
     */
    void (*ident)(const void *settings, const struct laser_config *lc, char *device, size_t devlen,
                  char *channel, size_t chanlen);
    /* Optional, pure: checks across keys (and against the wavemeter driver)
     * at load time. Returns 0, or < 0 with *key the key at fault and why. */
    int (*check)(const void *settings, const struct laser_config *lc, const struct wm_driver *wm,
                 const char **key, char *why, size_t whylen);
    /* Pool thread: open the device (a port, a handshake). It may be called
     * again after close, to reopen a device that failed. 0, or < 0 with err. */
    int (*open)(const struct act_open_args *a, void **dev, char *err, size_t errlen);
    /* Pool thread, or the loop once no job runs. Harmless on NULL. */
    void (*close)(void *dev);
    /* Pool thread, one job per device at a time: set this channel to
     * output_v within timeout_ms (settings and lc: this laser's). 0, or < 0 with io->why: the
     * device is then closed and opened again later. io->readback_v as the device reports. */
    int (*write)(void *dev, const void *settings, const struct laser_config *lc, double output_v,
                 int timeout_ms, struct act_io *io);
    /* Optional, pool thread: the output this channel has now, as the device
     * measures it (*output_v), and how far such a measurement can be from
     * the set value (*tolerance_v). A restart resumes from it when the saved
     * output disagrees (stale, or changed by hand), and a laser with restart
     * "off" shows it. 0, or < 0 with io->why (the device is then reopened).
     * NULL: the device cannot tell (the daemon then keeps its saved output
     * fresh instead). */
    int (*read)(void *dev, const void *settings, const struct laser_config *lc, int timeout_ms,
                double *output_v, double *tolerance_v, struct act_io *io);
};

const struct act_driver *act_driver_find(const char *name);
const struct act_driver *act_driver_at(size_t i);

/* ---- switches: an external channel selector in front of the wavemeter ---- */

struct sw_driver {
    /* Name, keys of wavemeter.switch besides driver, input, settle_ms and
     * timeout_ms. */
    struct cfg_driver cfg;
    /* Pool thread. 0 or < 0 with err. */
    int (*open)(const void *settings, void **dev, char *err, size_t errlen);
    void (*close)(void *dev);
    /* Pool thread: move to channel (1-based) and return once the switch
     * confirms it is there, within timeout_ms; any doubt is an error. */
    int (*select)(void *dev, int channel, int timeout_ms, char *why, size_t whylen);
    /* Pool thread: where the switch is now. */
    int (*position)(void *dev, int timeout_ms, int *channel, char *why, size_t whylen);
};

const struct sw_driver *sw_driver_find(const char *name);
const struct sw_driver *sw_driver_at(size_t i);

#endif
