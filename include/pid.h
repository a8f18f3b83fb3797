/*
 * pid: the per-laser frequency controller, a pure module. It turns frequency
 * readings (with their acquisition times) into actuator volts. No I/O, no
 * clock reads, no allocation: every time comes in as an argument, so tests
 * drive it with any time base they like.
 */
#ifndef WMD_PID_H
#define WMD_PID_H

#include <stdbool.h>
#include <stdint.h>

struct pid_params {
    double kp_v_per_mhz;     /* proportional gain, V per MHz of error */
    double ki_v_per_mhz_s;   /* integral gain, V per (MHz s) */
    double kd_v_s_per_mhz;   /* derivative gain, V s per MHz; 0 = off */
    double sensitivity_mhz_per_v; /* signed actuator sensitivity; only its sign is used
                                     here (0 is taken as +1) */
    double output_min_v, output_max_v;
    double slew_v_per_s;     /* max |d output / dt|; 0 = unlimited */
    double max_gap_s;        /* readings further apart: no integration, no derivative */
};

/* Why a step did or did not move the output. */
enum pid_result {
    PID_STEPPED,  /* full PI(D) step */
    PID_FIRST,    /* first reading after engage or a gap: P only relative to engage, no I */
    PID_REFUSED,  /* reading not finite or older than the last one: nothing changed */
};

/* Owned by its laser; plain data, copyable (the pool job gets a copy). */
struct pid {
    struct pid_params p;
    double setpoint_thz;    /* where the user wants the laser */
    double target_thz;      /* where the controller aims now (walks to setpoint) */
    double ramp_mhz_per_s;  /* rate the target walks at; 0 = jump */
    double integral_v;      /* integrator state, kept within what the clamp allows */
    double output_v;        /* last output commanded */
    double last_error_mhz;  /* error of the last accepted reading */
    uint64_t last_t_ns;     /* acquisition time of the last accepted reading */
    uint64_t ramp_t_ns;     /* time the target was last advanced */
    bool have_last;         /* last_* valid (false after engage, hold or a gap) */
    bool railed;            /* last output sits on a limit */
};

/* Set up unlocked, with the output at output_v (clamped to the range). */
void pid_init(struct pid *pid, const struct pid_params *p, double setpoint_thz, double output_v);

/* Replace gains and limits; keeps the output (re-clamped) and integrator bumpless. */
void pid_set_params(struct pid *pid, const struct pid_params *p);

/*
 * Start controlling from the present output with no jump (bumpless): the
 * integrator takes the present output. The target starts at target_thz (callers
 * pass the setpoint, or the present reading to ramp from it).
 */
void pid_engage(struct pid *pid, double output_v, double target_thz, uint64_t now_ns);

/* New setpoint; with ramp > 0 the target walks there at ramp MHz/s, measured on
 * reading times, starting from the present target. */
void pid_set_setpoint(struct pid *pid, double setpoint_thz, double ramp_mhz_per_s, uint64_t now_ns);

/*
 * One controller step for a good reading taken at t_ns (monotonic ns).
 * Advances the target's ramp to t_ns, computes error = measured - target in
 * MHz, and a new output: P + I (+ D), clamped to the range and slew-limited
 * over dt. The integrator is frozen and dt restarted when the reading is more
 * than max_gap_s after the previous one. Writes the new output to *output_v
 * and the error to *error_mhz (may be NULL).
 */
enum pid_result pid_step(struct pid *pid, double measured_thz, uint64_t t_ns, double *output_v,
                         double *error_mhz);

/* A bad or stale reading: output held, integrator frozen, the next good reading
 * starts a fresh dt (no integration across the gap). */
void pid_hold(struct pid *pid);

/* True when the target has reached the setpoint. */
bool pid_ramp_done(const struct pid *pid);

#endif
