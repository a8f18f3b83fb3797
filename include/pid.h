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
 * so I - s*kp'*e - s*kd'*de/dt equals output_v after every accepted reading,
 * where kp', ki', kd' are the gains the step used (struct pid's eff_*).
 *
 * Per-reading gains: what one reading does to the loop is gP = kp*|S|,
 * gI = ki*|S|*dt and gD = kd*|S|/dt, with dt the time since the last reading.
 * Each step bounds them to a region that stays stable even if the laser's
 * true |S| is twice the configured one or its actuator lags by a reading
 * (pid_gains_bound), then scales them by gain_scale (the back-off the lock
 * applies after an oscillation). With |S| = 0 (unknown) the gains are used
 * as given. The oscillation detector (pid_osc_*) is pure as well; the lock
 * (laser.c) feeds it and decides what to do.
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

/* Per-reading loop gains (dimensionless): what one reading does. */
struct pid_gains {
    double gp; /* kp*|S|: the P path's answer to a change of the error */
    double gi; /* ki*|S|*dt: the fraction of the error the integrator removes */
    double gd; /* kd*|S|/dt: the D path's answer to a change of the error's slope */
};

/* The safe region (pid_gains_bound): the loop stays stable with |S| up to
 * twice the configured one, or with one reading of actuator lag. */
#define PID_GP_SAFE 0.4
#define PID_GI_SAFE 0.6
#define PID_GD_SAFE 0.1
/* Back-off never takes the gains below this fraction of the bounded ones. */
#define PID_SCALE_MIN (1.0 / 16.0)

/* The per-reading gains p asks for at dt_s (NAN members when |S| is 0 or dt_s
 * is not > 0: not computable). */
void pid_gains_asked(const struct pid_params *p, double dt_s, struct pid_gains *g);
/* Bound g to the safe region (in place); returns whether anything changed.
 * NAN members stay NAN. */
bool pid_gains_bound(struct pid_gains *g);
/* Whether the loop with these gains is stable for a laser that follows
 * within a reading (Jury's test on e' = e - gI e - gP de - gD d2e). NAN
 * members count as 0. */
bool pid_gains_stable(const struct pid_gains *g);

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
    double ff_thz;               /* the target the output already follows (feed-forward) */
    uint64_t ff_t_ns;            /* the time ff_thz is the target of */

    /* Per-reading gains of the last full step (docs/CONTROL.md "Loop gain"). */
    double gain_scale;       /* back-off factor in [PID_SCALE_MIN, 1]; 1 = none */
    double dt_s;             /* dt of the last full step; 0 before one */
    struct pid_gains asked;  /* what the gains asked for at dt_s (NAN: unknown |S|) */
    struct pid_gains eff;    /* what the step used: bounded, then scaled */
    bool bounded;            /* the bound lowered a gain at the last full step */
    double eff_kp_v_per_mhz; /* the gains in V units the last step used */
    double eff_ki_v_per_mhz_s;
    double eff_kd_v_s_per_mhz;
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

/*
 * Feed-forward of a moving target: moves the output (and the integrator with
 * it) by how far the target has walked since the output last followed it, up
 * to t_ns, through the sensitivity; clamped to the range. Called by every
 * step and, between readings, by the lock's ramp timer, so a ramp is
 * followed rather than trailed by rate/(ki|S|). Returns the change in V (0
 * without a ramp, with S 0, or on a rail). Pure.
 */
double pid_feed_forward(struct pid *pid, uint64_t t_ns);

/* Where the target is at t_ns (the ramp advanced to it; not before the last
 * advance). Pure. */
double pid_target_at(const struct pid *pid, uint64_t t_ns);

/* While the output is held (bad or stale readings, or none), a ramp must not
 * run away from it: the target stops where the output follows it and the
 * ramp goes on from there at t_ns, so the first good reading after a gap
 * finds the target where the laser was left, not a gap's walk further (no
 * feed-forward jump, no error outside the capture range). Pure. */
void pid_ramp_pause(struct pid *pid, uint64_t t_ns);

/* A bad or stale reading: output held, integrator frozen, the next good reading
 * starts a fresh dt (no integration across the gap). */
void pid_hold(struct pid *pid);

/* True when the target has reached the setpoint. */
bool pid_ramp_done(const struct pid *pid);

/*
 * The steady-state Kalman filter of a free-running laser (a random walk of
 * drift_mhz_per_sqrt_s) read every dt_s with white noise noise_mhz: the sd of
 * the true error at the reading times that no lock can beat (*bound_mhz) and
 * the filter's gain (*gain, the best integrator gain per reading for a
 * laser that follows within a reading). Either pointer may be NULL.
 */
void pid_kalman(double noise_mhz, double drift_mhz_per_sqrt_s, double dt_s, double *bound_mhz,
                double *gain);
/* The true error's sd at the reading times that an integrator of gain gi per
 * reading (0 < gi < 2) holds on that laser: sqrt((gi^2 R + q) / (gi (2 - gi))). */
double pid_i_error_mhz(double gi, double noise_mhz, double drift_mhz_per_sqrt_s, double dt_s);

/* ---- oscillation detector ---- */

/* A half-cycle longer than this many readings is a slow swing, not an
 * oscillation: the detector forgets what it had. */
#define PID_OSC_MAX_HALF 10
/* Peaks one period apart that shrink less than this are "not decaying". */
#define PID_OSC_DECAY_MIN 0.8
/* A swing counts when its peaks reach this many thresholds: the lock's
 * tolerance is a few sigma of the noise, so noise alone (even noise twice the
 * tolerance) does not swing this far three times in a row. */
#define PID_OSC_MIN_TOLERANCES 3.0

/* Plain data, owned by the lock. Errors within +-threshold never end a
 * half-cycle (noise around zero is not a swing). */
struct pid_osc {
    int sign;          /* of the half-cycle in progress; 0 = none */
    double peak_mhz;   /* its largest |error| */
    uint64_t start_ns; /* its first reading */
    int len;           /* its readings */
    int n;             /* completed half-cycles kept (up to 3) */
    double peaks[3];   /* oldest first */
    int lens[3];
    uint64_t durs_ns[3];
    int quiet; /* readings since a half-cycle last completed */
};

/* What an oscillation looked like when it was detected. */
struct pid_osc_report {
    double amplitude_mhz;   /* mean peak |error| over three half-cycles */
    double period_readings; /* two half-cycles' length */
    double period_s;
};

void pid_osc_reset(struct pid_osc *o);
/* One error (MHz) at t_ns. Returns true when the last three half-cycles
 * each went beyond threshold_mhz (the first one's peak beyond
 * PID_OSC_MIN_TOLERANCES thresholds), none lasted more than PID_OSC_MAX_HALF
 * readings and the swing did not decay (the last peak at least
 * PID_OSC_DECAY_MIN of the one a period before); then fills *rep and starts
 * afresh, so the next detection needs three new half-cycles. */
bool pid_osc_feed(struct pid_osc *o, double error_mhz, double threshold_mhz, uint64_t t_ns,
                  struct pid_osc_report *rep);

#endif
