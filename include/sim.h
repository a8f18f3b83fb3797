/*
 * sim: the built-in simulated wavemeter, switch and lasers (driver "sim"),
 * and the simulated actuator that drives a simulated laser's input.
 * Its state is shared between pool jobs and the loop's sim.* methods, so it
 * is guarded by the device's own mutex, like a real instrument's firmware.
 */
#ifndef WMD_SIM_H
#define WMD_SIM_H

#include <stdbool.h>

#include "wavemeter.h"

extern const struct wm_driver sim_driver;
extern const struct act_driver sim_actuator;

enum sim_fault {
    SIM_FAULT_NONE,
    SIM_FAULT_NO_SIGNAL,
    SIM_FAULT_UNDEREXPOSED,
    SIM_FAULT_OVEREXPOSED
};

/* Parse a fault name ("none", "no_signal", ...); -EINVAL if unknown. */
int sim_fault_parse(const char *name, enum sim_fault *out);
const char *sim_fault_name(enum sim_fault f);

/* Loop thread (any thread is safe). channel is 1-based; -ENOENT if no
 * simulated laser is on it. */
int sim_set_fault(void *dev, int channel, enum sim_fault fault);
int sim_set_connected(void *dev, bool connected);
int sim_mode_hop(void *dev, int channel, double jump_mhz);
/* The actual (lagged) actuator input in volts and the true frequency now. */
int sim_peek(void *dev, int channel, double *input_v, double *true_thz);

#endif
