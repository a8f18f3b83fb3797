/*
 * highfinesse: the HighFinesse WS6/WS7/WS8 wavemeter (driver "highfinesse")
 * through the vendor's libwlmData.so, loaded at run time from
 * wavemeter.library. On Linux that library is a network client of
 * wlmDataServer on the Windows PC that runs the wavemeter; see
 * docs/HIGHFINESSE.md for the set-up and what one read does.
 */
#ifndef WMD_HIGHFINESSE_H
#define WMD_HIGHFINESSE_H

#include "config.h"
#include "wavemeter.h"

/* The driver's keys of the "wavemeter" object (its cfg.keys table), kept by
 * the loader in config.wavemeter and handed to open as wm_open_args.settings. */
/* How the instrument's own fibre switch is run. */
enum hf_switch_mode {
    HF_SWITCH_MANUAL,  /* we move it, reading by earliest deadline */
    HF_SWITCH_CYCLING, /* it cycles through the lasers by itself */
};

struct hf_settings {
    char library[CONFIG_PATH_MAX]; /* path of libwlmData.so, for dlopen */
    int switch_mode;               /* enum hf_switch_mode */
};

/* lasers[].highfinesse: how the instrument exposes one channel. */
struct hf_chan {
    int exposure2_ms;   /* the second CCD array's additional exposure (WS7/WS8) */
    bool auto_exposure; /* the instrument picks the exposure (exposure_ms ignored) */
};

/* A laser's HighFinesse settings (its lasers[].highfinesse). */
static inline const struct hf_chan *hf_chan_const(const struct laser_config *lc) {
    return (const struct hf_chan *)(const void *)lc->meter.u.bytes;
}

/* Every call into the library runs on one thread the device owns, created
 * in open: the vendor's calls have no timeout of their own, and their thread
 * safety is undocumented. open: loop thread, at start-up, bounded by
 * wavemeter.read_timeout_ms; fails with one line naming the library path or
 * the missing or silent server; a library without SetDeviationSignalNum
 * still opens (analog_out then fails with -ENOTSUP). read and analog_out:
 * pool threads, any number at once; each hands its work to the device's
 * thread, waits its turn and the work at most its own timeout, then fails
 * with -ETIMEDOUT; while a vendor call stays blocked, both fail at once.
 * analog_out drives a laser-control output (port 1..8) through
 * SetDeviationSignalNum, in volts (the vendor takes mV). close: loop thread,
 * once no read or analog_out is in flight; joins that thread and dlcloses,
 * or, when it is still blocked in a vendor call, detaches it and leaves the
 * library loaded. */
extern const struct wm_driver highfinesse_driver;

#endif
