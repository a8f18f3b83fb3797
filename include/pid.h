/*
 * pid: the per-laser frequency controller, a pure module. It turns frequency
 * readings (with their acquisition times) into actuator volts. No I/O, no
 * clock reads, no allocation: every time comes in as an argument, so tests
 * drive it with any time base they like. The control law, gain units and a
 * tuning recipe are in docs/CONTROL.md.
 *
 * Law (s = sign of sensitivity_mhz_per_v, 0 taken as +1, e = error in MHz):
 *   output = I - s*kp*e - s*kd*de/dt,   I += -s*ki*e*dt on every full step,
 * so positive gains reduce the error whatever the actuator's sign. After the
 * clamp and slew limit, I is recomputed from the applied output (anti-windup),
 * so I - s*kp*e - s*kd*de/dt equals output_v after every accepted reading.
 */
#ifndef WMD_PID_H
#define WMD_PID_H

#include <stdbool.h>
#include <stdint.h>

/* Gains and limits, copied in by pid_init/pid_set_params. Non-finite gains, slew or
 * gap are taken as 0, NaN limits as 0, swapped limits are put in order: the config
 * loader is where bad values get reported. */
struct pid_params {
    double kp_v_per_mhz;          /* proportional gain, V per MHz of error */
    double ki_v_per_mhz_s;        /* integral gain, V per (MHz s) */
    double kd_v_s_per_mhz;        /* derivative gain, V s per MHz; 0 = off */
    double sensitivity_mhz_per_v; /* signed actuator sensitivity; only its sign is used
                                     here (0 is taken as +1) */
    double output_min_v, output_max_v;
    double slew_v_per_s; /* max |d output / dt|; 0 = unlimited */
    double max_gap_s;    /* readings further apart: no integration, no derivative;
                            0 = no limit */
};

/* Why a step did or did not move the output. */
enum pid_result {
    PID_STEPPED, /* full PI(D) step */
    PID_FIRST,   /* first reading after engage, hold or a gap: output kept (bumpless),
                    the P reference taken from this error; no I, no D */
    PID_REFUSED, /* reading not finite or older than the last one: nothing changed */
};

/* Owned by its laser; plain data, copyable (the pool job gets a copy). */
struct pid {
    struct pid_params p;
    double setpoint_thz;         /* where the user wants the laser */
    double target_thz;           /* where the controller aims now (walks to setpoint) */
    double ramp_mhz_per_s;       /* rate the target walks at; 0 = jump */
    double integral_v;           /* integrator state, kept within what the clamp allows */
    double output_v;             /* last output commanded */
    double last_error_mhz;       /* error of the last accepted reading */
    uint64_t last_t_ns;          /* acquisition time of the last accepted reading */
    uint64_t ramp_t_ns;          /* time the target was last advanced */
    bool have_last;              /* last_* valid (false after engage, hold or a gap) */
    bool railed;                 /* last output sits on a limit, or the clamp acted */
    double last_deriv_mhz_per_s; /* de/dt used by the last accepted reading (0 if first) */
    double ramp_from_thz;        /* target where the present ramp started */
    uint64_t ramp_from_t_ns;     /* time the present ramp started; the target is computed
                                    from these, so it does not drift by rounding */
};

/* Set up unlocked, with the output at output_v (clamped to the range). */
void pid_init(struct pid *pid, const struct pid_params *p, double setpoint_thz, double output_v);

/* Replace gains and limits; keeps the output (re-clamped: callers send pid->output_v
 * to the actuator afterwards) and sets the integrator so the next step has no bump. */
void pid_set_params(struct pid *pid, const struct pid_params *p);

/*
 * Start controlling from the present output with no jump (bumpless): the
 * integrator takes the present output. The target starts at target_thz (callers
 * pass the setpoint, or the present reading to ramp from it; with no ramp rate set
 * the target is the setpoint at once). A non-finite output_v keeps the present
 * output. The next reading is PID_FIRST.
 */
void pid_engage(struct pid *pid, double output_v, double target_thz, uint64_t now_ns);

/* New setpoint; with ramp > 0 the target walks there at ramp MHz/s, measured on
 * reading times, starting from the present target (advanced to now_ns) at now_ns.
 * ramp 0 (or not finite / negative) makes the target jump. A non-finite
 * setpoint is ignored. */
void pid_set_setpoint(struct pid *pid, double setpoint_thz, double ramp_mhz_per_s, uint64_t now_ns);

/*
 * One controller step for a good reading taken at t_ns (monotonic ns).
 * Advances the target's ramp to t_ns, computes error = measured - target in
 * MHz, and a new output: P + I (+ D), clamped to the range and slew-limited
 * over dt. The integrator is frozen and dt restarted when the reading is more
 * than max_gap_s after the previous one. Writes the new output to *output_v
 * and the error to *error_mhz (may be NULL).
 * Returns PID_STEPPED, PID_FIRST, or PID_REFUSED when measured_thz (or the
 * error) is not finite or t_ns <= the last accepted reading's time; then the
 * struct is untouched, *output_v gets the unchanged output and *error_mhz is
 * not written.
 */
enum pid_result pid_step(struct pid *pid, double measured_thz, uint64_t t_ns, double *output_v,
                         double *error_mhz);

/* A bad or stale reading: output held, integrator frozen, the next good reading
 * starts a fresh dt (no integration across the gap). */
void pid_hold(struct pid *pid);

/* True when the target has reached the setpoint. */
bool pid_ramp_done(const struct pid *pid);

#endif
