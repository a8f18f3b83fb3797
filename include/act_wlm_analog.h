/*
 * act_wlm_analog: the wavemeter's own analog outputs (the HighFinesse
 * laser-control DAC ports) as a laser's actuator, driver
 * "highfinesse_analog". It owns no hardware: every write goes through the
 * open wavemeter's analog_out hook, and it never calls a vendor library.
 */
#ifndef WMD_ACT_WLM_ANALOG_H
#define WMD_ACT_WLM_ANALOG_H

#include "wavemeter.h"

/* The driver's keys of lasers[].actuator (its cfg.keys table), kept by the
 * loader per laser and handed to ident, check and write. */
struct act_wlm_analog_settings {
    int output; /* the wavemeter's analog output (DAC port), 1-based */
};

/* ident and check: pure, any thread. open: pool thread; it keeps a->wm and
 * a->wm_dev, which must stay open until this device is closed (the
 * wavemeter is closed after its actuators). write: pool thread, one at a
 * time per device; waits for the wavemeter's reads at most timeout_ms (see
 * highfinesse.h); readback_v is NAN, as the outputs are not read back.
 * close: frees; harmless on NULL. */
extern const struct act_driver act_wlm_analog;

#endif
