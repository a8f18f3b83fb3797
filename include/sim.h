/*
 * sim: the built-in simulated wavemeter, switch and lasers (driver "sim"),
 * and the simulated actuator that drives a simulated laser's input.
 * Its state is shared between pool jobs and the loop's sim.* methods, so it
 * is guarded by the device's own mutex, like a real instrument's firmware.
 */
#ifndef WMD_SIM_H
#define WMD_SIM_H

#include <stdbool.h>
#include <stdint.h>

#include "wavemeter.h"

enum sim_fault {
    SIM_FAULT_NONE,
    SIM_FAULT_NO_SIGNAL,
    SIM_FAULT_UNDEREXPOSED,
    SIM_FAULT_OVEREXPOSED
};

extern const struct wm_driver sim_driver;
extern const struct act_driver sim_actuator;

/* The wavemeter object's keys with driver "sim". */
struct sim_settings {
    uint64_t seed; /* 0 = from the clock */
};

/* lasers[].sim: the light the simulator shows on a channel. */
struct sim_chan {
    double nominal_thz;           /* free-running frequency at 0 V */
    double offset_mhz;            /* start offset from nominal */
    double drift_mhz_per_sqrt_s;  /* random-walk strength */
    double noise_mhz;             /* white measurement noise, 1 sigma */
    double sensitivity_mhz_per_v; /* actuator input -> frequency */
    double lag_ms;                /* first-order actuator time constant */
    int fault;                    /* enum sim_fault */
};

/* A laser's simulated light (its lasers[].sim), for tests that tune it. */
static inline struct sim_chan *sim_chan(struct laser_config *lc) {
    return (struct sim_chan *)(void *)lc->meter.u.bytes;
}
static inline const struct sim_chan *sim_chan_const(const struct laser_config *lc) {
    return (const struct sim_chan *)(const void *)lc->meter.u.bytes;
}

/* Parse a fault name ("none", "no_signal", ...); -EINVAL if unknown. */
int sim_fault_parse(const char *name, enum sim_fault *out);
const char *sim_fault_name(enum sim_fault f);

/* Loop thread (any thread is safe). channel is 1-based; -ENOENT if no
 * simulated laser is on it. Clients reach these through sim.* and
 * meter_simulate(); tests call them directly. */
int sim_set_fault(void *dev, int channel, enum sim_fault fault);
int sim_set_connected(void *dev, bool connected);
int sim_mode_hop(void *dev, int channel, double jump_mhz);
/* The actual (lagged) actuator input in volts and the true frequency now. */
int sim_peek(void *dev, int channel, double *input_v, double *true_thz);

#endif
