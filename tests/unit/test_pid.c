/*
 * test_pid: the controller against a simulated laser (f = f0 + S*output, with
 * an optional first-order lag) read every 0.1 s on a fake clock. Compiled from
 * src/control/pid.c alone; no loop, no I/O.
 */
#include "pid.h"

#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define F0_THZ 384.230484468
#define T0_NS UINT64_C(1000000000)
#define NS_PER_S 1e9
#define DT_NS UINT64_C(100000000) /* 0.1 s between readings */

/* The laser: settles toward f0 + S*output with time constant tau_s (0 = at once). */
struct plant {
    double f0_thz;
    double s_mhz_per_v;
    double tau_s;
    double f_thz;
};

static void plant_init(struct plant *pl, double f0_thz, double s_mhz_per_v, double tau_s,
                       double output_v) {
    pl->f0_thz = f0_thz;
    pl->s_mhz_per_v = s_mhz_per_v;
    pl->tau_s = tau_s;
    pl->f_thz = f0_thz + s_mhz_per_v * output_v * 1e-6;
}

/* Let dt_s pass with output_v applied. */
static void plant_advance(struct plant *pl, double output_v, double dt_s) {
    double goal_thz = pl->f0_thz + pl->s_mhz_per_v * output_v * 1e-6;
    if (pl->tau_s <= 0.0)
        pl->f_thz = goal_thz;
    else
        pl->f_thz += (goal_thz - pl->f_thz) * (1.0 - exp(-dt_s / pl->tau_s));
}

/* Deterministic pseudo-random numbers in [0, 1), the same on every platform. */
static double lcg_next(uint64_t *state) {
    *state = *state * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
    return (double)(*state >> 11) / 9007199254740992.0;
}

/*
 * Gains for S = 50 MHz/V and readings every 0.1 s: the P loop gain kp*|S| is 0.1
 * and the integral corrects ki*|S|*dt = 0.25 of the error per reading. For a
 * laser that follows the output within one reading the error then shrinks by
 * the larger root of z^2 - 0.65 z - 0.1 (0.78) per reading: 200 MHz -> 0.5 MHz
 * in about 25 readings, with margin (stable up to ki*|S|*dt < 2 - 2*kp*|S|).
 */
static struct pid_params default_params(double s_mhz_per_v) {
    struct pid_params p = {
        .kp_v_per_mhz = 0.002,
        .ki_v_per_mhz_s = 0.05,
        .kd_v_s_per_mhz = 0.0,
        .sensitivity_mhz_per_v = s_mhz_per_v,
        .output_min_v = -10.0,
        .output_max_v = 10.0,
        .slew_v_per_s = 0.0,
        .max_gap_s = 1.0,
    };
    return p;
}

/* The law's own statement of consistency: I - s*kp'*e - s*kd'*d == output, with
 * the gains the last step used (the configured ones unless the bound acted). */
static double law_output(const struct pid *pid) {
    double s = pid->p.sensitivity_mhz_per_v < 0.0 ? -1.0 : 1.0;
    return pid->integral_v - s * pid->eff_kp_v_per_mhz * pid->last_error_mhz -
           s * pid->eff_kd_v_s_per_mhz * pid->last_deriv_mhz_per_s;
}

/* ---- step response ---------------------------------------------------- */

static const struct step_case {
    const char *label;
    double s_mhz_per_v;
    double tau_s;
    double kp_v_per_mhz, ki_v_per_mhz_s, kd_v_s_per_mhz;
    double start_off_mhz;
    int max_steps; /* |e| < 0.5 MHz from this reading on */
} step_cases[] = {
    {"S=+50, no lag, default gains", 50.0, 0.0, 0.002, 0.05, 0.0, 200.0, 30},
    {"S=-50, no lag, default gains", -50.0, 0.0, 0.002, 0.05, 0.0, 200.0, 30},
    {"S=+50, no lag, start below", 50.0, 0.0, 0.002, 0.05, 0.0, -200.0, 30},
    {"S=+50, 0.1 s lag, default gains", 50.0, 0.1, 0.002, 0.05, 0.0, 200.0, 30},
    {"S=-50, 0.3 s lag, default gains", -50.0, 0.3, 0.002, 0.05, 0.0, 200.0, 45},
    /* Deadbeat asked, gI bounded to 0.6: 0.4 a reading, 200 -> 0.5 MHz in 7. */
    {"S=+50, I only, ki|S|dt=1 asked, bound 0.6", 50.0, 0.0, 0.0, 0.2, 0.0, 200.0, 8},
    {"S=-50, I only, ki|S|dt=1 asked, bound 0.6", -50.0, 0.0, 0.0, 0.2, 0.0, 200.0, 8},
    {"S=+50, I only, ki|S|dt=0.6 (the bound)", 50.0, 0.0, 0.0, 0.12, 0.0, 200.0, 8},
    /* gP 0.4 leaves gI at most 0.9 (1 - 0.8) = 0.18 of the 0.5 asked. */
    {"S=+50, 0.3 s lag, P damps I (gI bounded)", 50.0, 0.3, 0.008, 0.1, 0.0, 200.0, 40},
    {"S=+50, no lag, small D", 50.0, 0.0, 0.002, 0.05, 0.00005, 200.0, 30},
    {"S=-5, weak actuator", -5.0, 0.0, 0.02, 0.5, 0.0, 20.0, 25},
};

START_TEST(test_step_response) {
    const struct step_case *c = &step_cases[_i];
    struct pid_params p = default_params(c->s_mhz_per_v);
    p.kp_v_per_mhz = c->kp_v_per_mhz;
    p.ki_v_per_mhz_s = c->ki_v_per_mhz_s;
    p.kd_v_s_per_mhz = c->kd_v_s_per_mhz;
    struct pid pid;
    struct plant pl;
    pid_init(&pid, &p, F0_THZ, 0.0);
    /* The laser sits start_off_mhz away from the setpoint with the output at 0. */
    plant_init(&pl, F0_THZ + c->start_off_mhz * 1e-6, c->s_mhz_per_v, c->tau_s, 0.0);
    uint64_t t_ns = T0_NS;
    pid_engage(&pid, 0.0, F0_THZ, t_ns);

    int converged_at = -1;
    for (int k = 0; k < 200; k++) {
        t_ns += DT_NS;
        plant_advance(&pl, pid.output_v, 0.1);
        double out_v, e_mhz;
        enum pid_result r = pid_step(&pid, pl.f_thz, t_ns, &out_v, &e_mhz);
        ck_assert_msg(r == (k == 0 ? PID_FIRST : PID_STEPPED), "%s: step %d result %d", c->label, k,
                      (int)r);
        ck_assert_msg(isfinite(out_v) && out_v >= p.output_min_v && out_v <= p.output_max_v,
                      "%s: step %d output %g", c->label, k, out_v);
        if (fabs(e_mhz) < 0.5) {
            if (converged_at < 0)
                converged_at = k;
        } else {
            converged_at = -1;
        }
    }
    ck_assert_msg(converged_at >= 0 && converged_at <= c->max_steps,
                  "%s: settled within 0.5 MHz from reading %d, wanted <= %d", c->label,
                  converged_at, c->max_steps);
    /* The output that holds the laser on the setpoint: -offset / S. */
    ck_assert_msg(fabs(pid.output_v + c->start_off_mhz / c->s_mhz_per_v) <
                      0.5 / fabs(c->s_mhz_per_v),
                  "%s: final output %g", c->label, pid.output_v);
}
END_TEST

/* ---- clamp ------------------------------------------------------------- */

static const struct clamp_case {
    const char *label;
    double s_mhz_per_v;
    double kp, ki, kd;
    double error_scale_mhz;
    double min_v, max_v;
} clamp_cases[] = {
    {"large gains, S>0", 50.0, 1e3, 1e3, 1e3, 1e4, 0.0, 5.0},
    {"large gains, S<0", -50.0, 1e3, 1e3, 1e3, 1e4, 0.0, 5.0},
    {"enormous gains and errors", 50.0, 1e200, 1e200, 1e200, 1e100, -1.0, 1.0},
    {"DBL_MAX-ish gains, S<0", -1.0, 1e308, 1e308, 1e308, 1e250, -100.0, -50.0},
    {"negative range, huge P only", 50.0, 1e30, 0.0, 0.0, 1e6, -3.0, -2.0},
    {"zero-width range", 50.0, 1.0, 1.0, 1.0, 1e3, 2.5, 2.5},
};

START_TEST(test_clamp) {
    const struct clamp_case *c = &clamp_cases[_i];
    struct pid_params p = default_params(c->s_mhz_per_v);
    p.kp_v_per_mhz = c->kp;
    p.ki_v_per_mhz_s = c->ki;
    p.kd_v_s_per_mhz = c->kd;
    p.output_min_v = c->min_v;
    p.output_max_v = c->max_v;
    struct pid pid;
    pid_init(&pid, &p, F0_THZ, 1e6); /* starting output far outside: clamped too */
    ck_assert_msg(pid.output_v >= c->min_v && pid.output_v <= c->max_v, "%s: init %g", c->label,
                  pid.output_v);

    uint64_t rng = 42 + (uint64_t)_i;
    uint64_t t_ns = T0_NS;
    pid_engage(&pid, 0.5 * (c->min_v + c->max_v), F0_THZ, t_ns);
    for (int k = 0; k < 500; k++) {
        t_ns += 1 + (uint64_t)(lcg_next(&rng) * 3e8); /* 1 ns .. 0.3 s */
        double e_mhz = (2.0 * lcg_next(&rng) - 1.0) * c->error_scale_mhz;
        double out_v;
        enum pid_result r = pid_step(&pid, F0_THZ + e_mhz * 1e-6, t_ns, &out_v, NULL);
        ck_assert_msg(r != PID_REFUSED, "%s: step %d refused", c->label, k);
        ck_assert_msg(isfinite(out_v) && out_v >= c->min_v && out_v <= c->max_v,
                      "%s: step %d output %g outside [%g, %g]", c->label, k, out_v, c->min_v,
                      c->max_v);
        ck_assert_msg(isfinite(pid.integral_v), "%s: step %d integrator %g", c->label, k,
                      pid.integral_v);
    }
}
END_TEST

/* ---- slew --------------------------------------------------------------- */

static const struct slew_case {
    const char *label;
    double s_mhz_per_v;
    double slew_v_per_s;
    double tau_s;
    double off_mhz;
} slew_cases[] = {
    {"S=+50, 1 V/s, jittered readings", 50.0, 1.0, 0.0, 200.0},
    {"S=-50, 0.2 V/s, jittered readings", -50.0, 0.2, 0.1, -200.0},
    {"S=+50, 5 V/s, large step", 50.0, 5.0, 0.0, 450.0},
};

START_TEST(test_slew) {
    const struct slew_case *c = &slew_cases[_i];
    struct pid_params p = default_params(c->s_mhz_per_v);
    p.slew_v_per_s = c->slew_v_per_s;
    struct pid pid;
    struct plant pl;
    pid_init(&pid, &p, F0_THZ, 0.0);
    plant_init(&pl, F0_THZ + c->off_mhz * 1e-6, c->s_mhz_per_v, c->tau_s, 0.0);
    uint64_t rng = 7;
    uint64_t t_ns = T0_NS;
    pid_engage(&pid, 0.0, F0_THZ, t_ns);
    int limited = 0;
    double e_mhz = 0.0;
    for (int k = 0; k < 800; k++) {
        double dt_s = 0.05 + 0.25 * lcg_next(&rng);
        uint64_t dt_ns = (uint64_t)(dt_s * NS_PER_S);
        dt_s = (double)dt_ns / NS_PER_S;
        t_ns += dt_ns;
        plant_advance(&pl, pid.output_v, dt_s);
        double before_v = pid.output_v;
        double out_v;
        pid_step(&pid, pl.f_thz, t_ns, &out_v, &e_mhz);
        double step_v = fabs(out_v - before_v);
        /* 1e-12 V: the rounding of prev + limit, far below any DAC step. */
        ck_assert_msg(step_v <= c->slew_v_per_s * dt_s + 1e-12, "%s: step %d moved %.17g V in %g s",
                      c->label, k, step_v, dt_s);
        if (step_v >= c->slew_v_per_s * dt_s * (1.0 - 1e-9))
            limited++;
    }
    ck_assert_msg(limited > 0, "%s: the slew limit never acted", c->label);
    ck_assert_msg(fabs(e_mhz) < 0.5, "%s: did not settle under the slew limit (e %g MHz)", c->label,
                  e_mhz);
}
END_TEST

/* ---- anti-windup -------------------------------------------------------- */

static const struct windup_case {
    const char *label;
    double s_mhz_per_v;
    double kd;
    double slew_v_per_s;
    double rail_error_mhz; /* error while railed */
    bool rail_high;        /* which limit the error drives the output to */
} windup_cases[] = {
    {"S>0, laser low -> max rail", 50.0, 0.0, 0.0, -1000.0, true},
    {"S>0, laser high -> min rail", 50.0, 0.0, 0.0, 1000.0, false},
    {"S<0, laser low -> min rail", -50.0, 0.0, 0.0, -1000.0, false},
    {"S<0, laser high -> max rail", -50.0, 0.0, 0.0, 1000.0, true},
    {"S>0 with D and slew", 50.0, 0.0001, 2.0, -1000.0, true},
};

START_TEST(test_antiwindup) {
    const struct windup_case *c = &windup_cases[_i];
    struct pid_params p = default_params(c->s_mhz_per_v);
    /* Wide enough that P's answer to the reversal (kp * 1010 MHz) lands inside. */
    p.output_min_v = 0.0;
    p.output_max_v = 5.0;
    p.kd_v_s_per_mhz = c->kd;
    p.slew_v_per_s = c->slew_v_per_s;
    struct pid pid;
    pid_init(&pid, &p, F0_THZ, 2.5);
    uint64_t t_ns = T0_NS;
    pid_engage(&pid, 2.5, F0_THZ, t_ns);
    double rail_v = c->rail_high ? p.output_max_v : p.output_min_v;

    /* The laser does not follow (mode hop, unplugged actuator): a constant large error. */
    for (int k = 0; k < 100; k++) {
        t_ns += DT_NS;
        pid_step(&pid, F0_THZ + c->rail_error_mhz * 1e-6, t_ns, NULL, NULL);
    }
    ck_assert_msg(pid.output_v == rail_v, "%s: output %g not on the rail %g", c->label,
                  pid.output_v, rail_v);
    ck_assert_msg(pid.railed, "%s: not marked railed", c->label);
    /* The integrator holds exactly what the applied output implies, no more. */
    ck_assert_msg(fabs(law_output(&pid) - pid.output_v) < 1e-9,
                  "%s: I - P - D = %.12g, output %.12g", c->label, law_output(&pid), pid.output_v);

    /* The error reverses: the very next step leaves the rail. */
    t_ns += DT_NS;
    double out_v;
    enum pid_result r = pid_step(&pid, F0_THZ - c->rail_error_mhz * 1e-8, t_ns, &out_v, NULL);
    ck_assert_int_eq(r, PID_STEPPED);
    if (c->rail_high)
        ck_assert_msg(out_v < rail_v - 1e-6, "%s: still on max rail (%.12g)", c->label, out_v);
    else
        ck_assert_msg(out_v > rail_v + 1e-6, "%s: still on min rail (%.12g)", c->label, out_v);
    ck_assert_msg(!pid.railed, "%s: still marked railed", c->label);
}
END_TEST

/* ---- bumpless engage ---------------------------------------------------- */

static const struct engage_case {
    const char *label;
    double s_mhz_per_v;
    double output_v;
    double error_mhz;
    double kd;
} engage_cases[] = {
    {"S>0, mid-range output, laser high", 50.0, 3.7, 150.0, 0.0},
    {"S>0, near min, laser low", 50.0, -9.99, -150.0, 0.0},
    {"S<0, zero output, laser high", -50.0, 0.0, 150.0, 0.0},
    {"S<0, on max rail, laser low", -50.0, 10.0, -80.0, 0.0},
    {"S>0, with D", 50.0, -4.123456789, 33.3, 0.001},
    {"S=0 taken as +1", 0.0, 1.25, 10.0, 0.0},
};

START_TEST(test_bumpless_engage) {
    const struct engage_case *c = &engage_cases[_i];
    struct pid_params p = default_params(c->s_mhz_per_v);
    p.kd_v_s_per_mhz = c->kd;
    struct pid pid;
    pid_init(&pid, &p, F0_THZ, -2.0);
    uint64_t t_ns = T0_NS;
    /* Some history first, so engage has something to forget. */
    pid_engage(&pid, -2.0, F0_THZ, t_ns);
    for (int k = 0; k < 5; k++) {
        t_ns += DT_NS;
        pid_step(&pid, F0_THZ + 77.0e-6, t_ns, NULL, NULL);
    }

    t_ns += DT_NS;
    pid_engage(&pid, c->output_v, F0_THZ, t_ns);
    ck_assert_msg(pid.output_v == c->output_v, "%s: engage moved the output", c->label);

    t_ns += DT_NS;
    double out_v, e_mhz;
    enum pid_result r = pid_step(&pid, F0_THZ + c->error_mhz * 1e-6, t_ns, &out_v, &e_mhz);
    ck_assert_msg(r == PID_FIRST, "%s: first step result %d", c->label, (int)r);
    ck_assert_msg(fabs(out_v - c->output_v) <= 1e-12, "%s: first step moved %.17g -> %.17g",
                  c->label, c->output_v, out_v);

    /* From here P acts on the change of the error and I on the error itself. */
    double s = c->s_mhz_per_v < 0.0 ? -1.0 : 1.0;
    double e2_mhz = c->error_mhz - 1.0;
    t_ns += DT_NS;
    double before_v = pid.output_v;
    double before_e = e_mhz;
    r = pid_step(&pid, F0_THZ + e2_mhz * 1e-6, t_ns, &out_v, &e_mhz);
    ck_assert_int_eq(r, PID_STEPPED);
    double de = e_mhz - before_e;
    /* With the gains the step used: gD = kd |S| / dt may be bounded. */
    double want_v = before_v - s * pid.eff_kp_v_per_mhz * de -
                    s * pid.eff_ki_v_per_mhz_s * e_mhz * 0.1 -
                    s * pid.eff_kd_v_s_per_mhz * de / 0.1;
    want_v = fmin(fmax(want_v, p.output_min_v), p.output_max_v);
    ck_assert_msg(fabs(out_v - want_v) < 1e-9, "%s: second step %.12g, want %.12g", c->label, out_v,
                  want_v);
}
END_TEST

/* ---- dt jitter ---------------------------------------------------------- */

START_TEST(test_dt_jitter_converges) {
    static const double signs[] = {50.0, -50.0};
    for (size_t i = 0; i < sizeof(signs) / sizeof(signs[0]); i++) {
        struct pid_params p = default_params(signs[i]);
        struct pid pid;
        struct plant pl;
        pid_init(&pid, &p, F0_THZ, 0.0);
        plant_init(&pl, F0_THZ + 200e-6, signs[i], 0.1, 0.0);
        uint64_t rng = 1234 + i;
        uint64_t t_ns = T0_NS;
        pid_engage(&pid, 0.0, F0_THZ, t_ns);
        double e_mhz = 0.0;
        for (int k = 0; k < 150; k++) {
            uint64_t dt_ns = (uint64_t)((0.05 + 0.25 * lcg_next(&rng)) * NS_PER_S);
            t_ns += dt_ns;
            plant_advance(&pl, pid.output_v, (double)dt_ns / NS_PER_S);
            pid_step(&pid, pl.f_thz, t_ns, NULL, &e_mhz);
        }
        ck_assert_msg(fabs(e_mhz) < 0.5, "S=%g: jittered readings left %g MHz", signs[i], e_mhz);
    }
}
END_TEST

static const struct jitter_case {
    const char *label;
    double s_mhz_per_v;
    uint64_t dt_ns;
    double error_mhz;
} jitter_cases[] = {
    {"S>0, dt 0.05 s", 50.0, UINT64_C(50000000), 12.0},
    {"S>0, dt 0.3 s (gI 0.75 bounded to 0.6)", 50.0, UINT64_C(300000000), 12.0},
    {"S<0, dt 0.2 s (gI 0.5)", -50.0, UINT64_C(200000000), 12.0},
    {"S<0, dt 0.137 s", -50.0, UINT64_C(137000000), -7.5},
    {"S<0, dt 1 ns", -50.0, UINT64_C(1), 3.0},
};

START_TEST(test_dt_jitter_increment) {
    const struct jitter_case *c = &jitter_cases[_i];
    struct pid_params p = default_params(c->s_mhz_per_v);
    struct pid pid;
    pid_init(&pid, &p, F0_THZ, 0.0);
    uint64_t t_ns = T0_NS;
    pid_engage(&pid, 0.0, F0_THZ, t_ns);
    double meas_thz = F0_THZ + c->error_mhz * 1e-6;
    t_ns += DT_NS;
    pid_step(&pid, meas_thz, t_ns, NULL, NULL);
    double before_i = pid.integral_v;
    t_ns += c->dt_ns;
    double e_mhz;
    enum pid_result r = pid_step(&pid, meas_thz, t_ns, NULL, &e_mhz);
    ck_assert_int_eq(r, PID_STEPPED);
    double s = c->s_mhz_per_v < 0.0 ? -1.0 : 1.0;
    double dt_s = (double)c->dt_ns / NS_PER_S;
    /* ki |S| dt above the bound (0.6) integrates 0.6 of the error instead. */
    double gi = fmin(p.ki_v_per_mhz_s * fabs(c->s_mhz_per_v) * dt_s, PID_GI_SAFE);
    double want = -s * gi / fabs(c->s_mhz_per_v) * e_mhz;
    ck_assert_msg(fabs((pid.integral_v - before_i) - want) <= 1e-12 * fmax(1.0, fabs(before_i)),
                  "%s: integrator moved %.17g, want %.17g", c->label, pid.integral_v - before_i,
                  want);
    ck_assert_msg(pid.bounded == (gi < p.ki_v_per_mhz_s * fabs(c->s_mhz_per_v) * dt_s),
                  "%s: bounded %d", c->label, pid.bounded);
    ck_assert_double_eq_tol(pid.dt_s, dt_s, 1e-12);
    ck_assert_double_eq_tol(pid.eff.gi, gi, 1e-12);
}
END_TEST

/* ---- gap ---------------------------------------------------------------- */

static const struct gap_case {
    const char *label;
    uint64_t gap_ns;
    enum pid_result want;
} gap_cases[] = {
    {"0.5 s, below max_gap", UINT64_C(500000000), PID_STEPPED},
    {"1 s, exactly max_gap", UINT64_C(1000000000), PID_STEPPED},
    {"1 s + 1 ns, just over", UINT64_C(1000000001), PID_FIRST},
    {"1 hour", UINT64_C(3600000000000), PID_FIRST},
};

START_TEST(test_gap) {
    const struct gap_case *c = &gap_cases[_i];
    struct pid_params p = default_params(50.0);
    struct pid pid;
    pid_init(&pid, &p, F0_THZ, 1.0);
    uint64_t t_ns = T0_NS;
    pid_engage(&pid, 1.0, F0_THZ, t_ns);
    for (int k = 0; k < 5; k++) {
        t_ns += DT_NS;
        pid_step(&pid, F0_THZ + 20e-6, t_ns, NULL, NULL);
    }
    double before_v = pid.output_v;
    double before_i = pid.integral_v;
    t_ns += c->gap_ns;
    double out_v, e_mhz;
    enum pid_result r = pid_step(&pid, F0_THZ + 20e-6, t_ns, &out_v, &e_mhz);
    ck_assert_msg(r == c->want, "%s: result %d, want %d", c->label, (int)r, (int)c->want);
    if (c->want == PID_FIRST) {
        /* Nothing integrated over the gap: the output stays, I only re-referenced. */
        ck_assert_msg(out_v == before_v, "%s: output moved across the gap", c->label);
        ck_assert_msg(fabs(law_output(&pid) - before_v) < 1e-12, "%s: I not re-referenced",
                      c->label);
        /* Same error as before the gap: the integrator is where it was. */
        ck_assert_msg(fabs(pid.integral_v - before_i) < 1e-12, "%s: I %g -> %g", c->label, before_i,
                      pid.integral_v);
    } else {
        /* ki |S| dt = 1.25 and 2.5 here: the bound integrates 0.6 of the error. */
        double dt_s = (double)c->gap_ns / NS_PER_S;
        double gi = fmin(p.ki_v_per_mhz_s * 50.0 * dt_s, PID_GI_SAFE);
        ck_assert_msg(fabs(pid.integral_v - (before_i - gi / 50.0 * e_mhz)) < 1e-12,
                      "%s: integrator did not integrate dt %g", c->label, dt_s);
    }
    /* The reading after that is an ordinary step again. */
    t_ns += DT_NS;
    ck_assert_int_eq(pid_step(&pid, F0_THZ + 20e-6, t_ns, NULL, NULL), PID_STEPPED);
}
END_TEST

/* ---- refused readings --------------------------------------------------- */

static const struct refuse_case {
    const char *label;
    double measured_thz; /* 0 = use a normal reading */
    int64_t dt_ns;       /* relative to the last accepted reading */
} refuse_cases[] = {
    {"NaN reading", (double)NAN, 100000000},
    {"+Inf reading", (double)INFINITY, 100000000},
    {"-Inf reading", -(double)INFINITY, 100000000},
    {"error overflows to Inf", 1e303, 100000000},
    {"older timestamp", 0.0, -1},
    {"same timestamp", 0.0, 0},
    {"much older timestamp", 0.0, -500000000},
};

START_TEST(test_refused) {
    const struct refuse_case *c = &refuse_cases[_i];
    struct pid_params p = default_params(-50.0);
    p.kd_v_s_per_mhz = 0.0001;
    struct pid pid;
    pid_init(&pid, &p, F0_THZ, 2.0);
    uint64_t t_ns = T0_NS;
    pid_engage(&pid, 2.0, F0_THZ, t_ns);
    pid_set_setpoint(&pid, F0_THZ + 50e-6, 10.0, t_ns); /* mid-ramp: ramp state must hold too */
    for (int k = 0; k < 5; k++) {
        t_ns += DT_NS;
        pid_step(&pid, F0_THZ + (double)k * 3e-6, t_ns, NULL, NULL);
    }

    struct pid before;
    memcpy(&before, &pid, sizeof(pid));
    double meas = c->measured_thz != 0.0 ? c->measured_thz : F0_THZ + 1e-6;
    uint64_t when_ns = (uint64_t)((int64_t)t_ns + c->dt_ns);
    double out_v = -99.0, e_mhz = -12345.0;
    enum pid_result r = pid_step(&pid, meas, when_ns, &out_v, &e_mhz);
    ck_assert_msg(r == PID_REFUSED, "%s: result %d", c->label, (int)r);
    ck_assert_msg(memcmp(&before, &pid, sizeof(pid)) == 0, "%s: state changed", c->label);
    ck_assert_msg(out_v == before.output_v, "%s: reported output %g, held %g", c->label, out_v,
                  before.output_v);
    ck_assert_msg(e_mhz == -12345.0, "%s: error written on refusal", c->label);

    /* The next good reading is an ordinary step: the refusal was no gap. */
    t_ns += DT_NS;
    ck_assert_int_eq(pid_step(&pid, F0_THZ + 1e-6, t_ns, NULL, NULL), PID_STEPPED);
}
END_TEST

/* ---- setpoint ramp ------------------------------------------------------ */

static const struct ramp_case {
    const char *label;
    double change_mhz;
    double ramp_mhz_per_s;
    uint64_t dt_ns;
} ramp_cases[] = {
    {"up 100 MHz at 10 MHz/s, 0.1 s readings", 100.0, 10.0, UINT64_C(100000000)},
    {"down 100 MHz at 10 MHz/s, 0.1 s readings", -100.0, 10.0, UINT64_C(100000000)},
    {"up 100 MHz at 10 MHz/s, 0.3 s readings (ends between)", 100.0, 10.0, UINT64_C(300000000)},
    {"down 0.35 MHz at 1 MHz/s", -0.35, 1.0, UINT64_C(100000000)},
};

START_TEST(test_ramp) {
    const struct ramp_case *c = &ramp_cases[_i];
    struct pid_params p = default_params(50.0);
    struct pid pid;
    pid_init(&pid, &p, F0_THZ, 0.0);
    uint64_t t_ns = T0_NS;
    pid_engage(&pid, 0.0, F0_THZ, t_ns);
    t_ns += DT_NS;
    pid_step(&pid, F0_THZ, t_ns, NULL, NULL);

    uint64_t start_ns = t_ns + UINT64_C(20000000); /* set between two readings */
    double goal_thz = F0_THZ + c->change_mhz * 1e-6;
    pid_set_setpoint(&pid, goal_thz, c->ramp_mhz_per_s, start_ns);
    ck_assert_msg(!pid_ramp_done(&pid), "%s: done at once", c->label);
    ck_assert_msg(pid.target_thz == F0_THZ, "%s: target moved at set time", c->label);

    /* A reading acquired before the ramp started does not move the target. */
    t_ns += UINT64_C(10000000);
    pid_step(&pid, F0_THZ, t_ns, NULL, NULL);
    ck_assert_msg(pid.target_thz == F0_THZ, "%s: early reading advanced the ramp", c->label);

    double duration_s = fabs(c->change_mhz) / c->ramp_mhz_per_s;
    double dir = c->change_mhz < 0.0 ? -1.0 : 1.0;
    bool done = false;
    for (int k = 0; k < 10000 && !done; k++) {
        t_ns = start_ns + (uint64_t)(k + 1) * c->dt_ns;
        pid_step(&pid, pid.target_thz, t_ns, NULL, NULL); /* a laser that follows */
        double elapsed_s = (double)(t_ns - start_ns) / NS_PER_S;
        double walked_mhz = (pid.target_thz - F0_THZ) * 1e6;
        ck_assert_msg(dir * walked_mhz <= fabs(c->change_mhz) + 1e-6,
                      "%s: target overshot: %.9g MHz", c->label, walked_mhz);
        done = pid_ramp_done(&pid);
        if (elapsed_s < duration_s) {
            ck_assert_msg(!done, "%s: done early at %g s", c->label, elapsed_s);
            ck_assert_msg(fabs(walked_mhz - dir * c->ramp_mhz_per_s * elapsed_s) < 1e-6,
                          "%s: at %g s walked %.9g MHz", c->label, elapsed_s, walked_mhz);
        } else {
            ck_assert_msg(done, "%s: not done at %g s", c->label, elapsed_s);
        }
    }
    ck_assert_msg(done, "%s: never done", c->label);
    ck_assert_msg(pid.target_thz == goal_thz, "%s: ended off the setpoint", c->label);
}
END_TEST

START_TEST(test_ramp_jump_and_retarget) {
    struct pid_params p = default_params(50.0);
    struct pid pid;
    pid_init(&pid, &p, F0_THZ, 0.0);
    uint64_t t_ns = T0_NS;
    pid_engage(&pid, 0.0, F0_THZ, t_ns);

    /* ramp 0: the target jumps. */
    pid_set_setpoint(&pid, F0_THZ + 100e-6, 0.0, t_ns);
    ck_assert(pid.target_thz == F0_THZ + 100e-6);
    ck_assert(pid_ramp_done(&pid));

    /* A new setpoint mid-ramp starts from where the ramp is at that moment. */
    pid_set_setpoint(&pid, F0_THZ, 10.0, t_ns);
    t_ns += UINT64_C(2000000000);
    pid_step(&pid, F0_THZ, t_ns, NULL, NULL);
    ck_assert_double_eq_tol((pid.target_thz - F0_THZ) * 1e6, 80.0, 1e-6);
    pid_set_setpoint(&pid, F0_THZ + 200e-6, 10.0, t_ns + UINT64_C(500000000));
    ck_assert_double_eq_tol((pid.target_thz - F0_THZ) * 1e6, 75.0, 1e-6);
    t_ns += UINT64_C(1500000000);
    pid_step(&pid, F0_THZ, t_ns, NULL, NULL);
    ck_assert_double_eq_tol((pid.target_thz - F0_THZ) * 1e6, 85.0, 1e-6);
    /* A set time before the last reading does not walk the target back to then. */
    pid_set_setpoint(&pid, F0_THZ + 200e-6, 10.0, t_ns - UINT64_C(500000000));
    ck_assert_double_eq_tol((pid.target_thz - F0_THZ) * 1e6, 85.0, 1e-6);

    /* Engage from the present reading ramps from there; a bad setpoint is ignored. */
    pid_engage(&pid, 0.0, F0_THZ + 300e-6, t_ns);
    pid_set_setpoint(&pid, (double)NAN, 10.0, t_ns);
    ck_assert(pid.setpoint_thz == F0_THZ + 200e-6);
    t_ns += UINT64_C(1000000000);
    pid_step(&pid, F0_THZ, t_ns, NULL, NULL);
    ck_assert_double_eq_tol((pid.target_thz - F0_THZ) * 1e6, 290.0, 1e-6);
}
END_TEST

/* ---- hold --------------------------------------------------------------- */

START_TEST(test_hold) {
    struct pid_params p = default_params(50.0);
    struct pid pid;
    struct plant pl;
    pid_init(&pid, &p, F0_THZ, 0.0);
    plant_init(&pl, F0_THZ + 100e-6, 50.0, 0.0, 0.0);
    uint64_t t_ns = T0_NS;
    pid_engage(&pid, 0.0, F0_THZ, t_ns);
    for (int k = 0; k < 4; k++) {
        t_ns += DT_NS;
        plant_advance(&pl, pid.output_v, 0.1);
        pid_step(&pid, pl.f_thz, t_ns, NULL, NULL);
    }
    double held_v = pid.output_v;
    double held_i = pid.integral_v;
    pid_hold(&pid);
    ck_assert(pid.output_v == held_v);
    ck_assert(pid.integral_v == held_i);
    ck_assert(!pid.have_last);

    /* Even a short interval after a hold is not integrated. */
    t_ns += DT_NS;
    double out_v;
    ck_assert_int_eq(pid_step(&pid, pl.f_thz + 30e-6, t_ns, &out_v, NULL), PID_FIRST);
    ck_assert(out_v == held_v);
    t_ns += DT_NS;
    ck_assert_int_eq(pid_step(&pid, pl.f_thz + 30e-6, t_ns, &out_v, NULL), PID_STEPPED);
    ck_assert(out_v != held_v);
}
END_TEST

/* ---- parameter changes -------------------------------------------------- */

START_TEST(test_set_params_bumpless) {
    struct pid_params p = default_params(50.0);
    p.kd_v_s_per_mhz = 0.0005;
    struct pid pid;
    pid_init(&pid, &p, F0_THZ, 0.0);
    uint64_t t_ns = T0_NS;
    pid_engage(&pid, 0.0, F0_THZ, t_ns);
    double e_mhz = 0.0;
    for (int k = 0; k < 4; k++) {
        t_ns += DT_NS;
        pid_step(&pid, F0_THZ + (40.0 - 5.0 * k) * 1e-6, t_ns, NULL, &e_mhz);
    }

    /* New gains and a flipped actuator sign: the output stays put. */
    struct pid_params q = p;
    q.kp_v_per_mhz = 0.01;
    q.ki_v_per_mhz_s = 0.2;
    q.kd_v_s_per_mhz = 0.002;
    q.sensitivity_mhz_per_v = -20.0;
    double before_v = pid.output_v;
    pid_set_params(&pid, &q);
    ck_assert(pid.output_v == before_v);
    ck_assert_double_eq_tol(law_output(&pid), before_v, 1e-12);

    /* The next reading, with a steady error, moves the output by I plus D's change only. */
    t_ns += DT_NS;
    double last_d = pid.last_deriv_mhz_per_s;
    double out_v;
    pid_step(&pid, F0_THZ + e_mhz * 1e-6, t_ns, &out_v, &e_mhz);
    /* With the gains the step used: at |S| 20 and dt 0.1 s these ask for gP 0.2, gD 0.4
     * and gI 0.4, bounded to gD 0.1 and gI 0.18. */
    ck_assert(pid.bounded);
    ck_assert_double_eq_tol(pid.eff.gd, PID_GD_SAFE, 1e-12);
    ck_assert_double_eq_tol(pid.eff.gi, 0.18, 1e-12);
    double want_v =
        before_v + pid.eff_ki_v_per_mhz_s * e_mhz * 0.1 + pid.eff_kd_v_s_per_mhz * (0.0 - last_d);
    ck_assert_double_eq_tol(out_v, want_v, 1e-9);

    /* A narrower range re-clamps the output and keeps the law consistent. */
    q.output_min_v = 0.5;
    q.output_max_v = 0.6;
    pid_set_params(&pid, &q);
    ck_assert(pid.output_v >= 0.5 && pid.output_v <= 0.6);
    ck_assert(pid.railed);
    ck_assert_double_eq_tol(law_output(&pid), pid.output_v, 1e-12);

    /* Unusable values are replaced, never propagated. */
    q.kp_v_per_mhz = (double)NAN;
    q.ki_v_per_mhz_s = (double)INFINITY;
    q.output_min_v = 3.0;
    q.output_max_v = 1.0;
    pid_set_params(&pid, &q);
    ck_assert(pid.p.kp_v_per_mhz == 0.0 && pid.p.ki_v_per_mhz_s == 0.0);
    ck_assert(pid.p.output_min_v == 1.0 && pid.p.output_max_v == 3.0);
    ck_assert(pid.output_v == 1.0);
    t_ns += DT_NS;
    pid_step(&pid, F0_THZ + 1e-3, t_ns, &out_v, NULL);
    ck_assert(isfinite(out_v) && out_v >= 1.0 && out_v <= 3.0);
}
END_TEST

/* ---- the bound on per-reading gains ------------------------------------- */

/* Impulse response of e' = e + (1-a) dc + a dc_1, dc = -gI e - gP de - gD d2e:
 * a laser with a fraction a of each correction landing a reading late.
 * Returns the largest |e| over the last 50 of 600 readings. */
static double tail_growth(const struct pid_gains *g, double mult, double a) {
    double e0 = 1.0, e1 = 1.0, e2 = 1.0, dc1 = 0.0, tail = 0.0;

    for (int k = 0; k < 600; k++) {
        double dc = -mult * (g->gi * e0 + g->gp * (e0 - e1) + g->gd * (e0 - 2.0 * e1 + e2));
        double en = e0 + (1.0 - a) * dc + a * dc1;
        e2 = e1;
        e1 = e0;
        e0 = en;
        dc1 = dc;
        if (k >= 550 && fabs(en) > tail)
            tail = fabs(en);
    }
    return tail;
}

/* Whatever the gains ask, the bounded ones keep the loop stable with a true
 * |S| twice the configured one, and with a whole reading of lag. */
START_TEST(test_bound_is_robust) {
    static const double gps[] = {0, 0.05, 0.1, 0.2, 0.4, 0.9, 3, 50};
    static const double gis[] = {0.01, 0.1, 0.5, 0.7, 1, 2, 10, 1000};
    static const double gds[] = {0, 0.02, 0.1, 0.3, 5};
    int n = 0;

    for (size_t i = 0; i < sizeof(gps) / sizeof(gps[0]); i++)
        for (size_t j = 0; j < sizeof(gis) / sizeof(gis[0]); j++)
            for (size_t k = 0; k < sizeof(gds) / sizeof(gds[0]); k++) {
                struct pid_gains g = {gps[i], gis[j], gds[k]}, asked = g;
                bool changed = pid_gains_bound(&g);
                struct pid_gains twice = {2 * g.gp, 2 * g.gi, 2 * g.gd};

                ck_assert_msg(g.gp <= asked.gp && g.gi <= asked.gi && g.gd <= asked.gd,
                              "the bound raised a gain");
                ck_assert(changed == (g.gp != asked.gp || g.gi != asked.gi || g.gd != asked.gd));
                ck_assert_msg(g.gi > 0.15 || g.gi == asked.gi, "gI %.3f left", g.gi);
                ck_assert_msg(pid_gains_stable(&g) && pid_gains_stable(&twice),
                              "asked gP %g gI %g gD %g, bounded %g %g %g: unstable at 2x", gps[i],
                              gis[j], gds[k], g.gp, g.gi, g.gd);
                ck_assert_msg(tail_growth(&g, 2.0, 0.0) < 0.05 && tail_growth(&g, 1.0, 1.0) < 0.05,
                              "asked gP %g gI %g gD %g: bounded gains ring (2x %.3g, lag %.3g)",
                              gps[i], gis[j], gds[k], tail_growth(&g, 2.0, 0.0),
                              tail_growth(&g, 1.0, 1.0));
                n++;
            }
    ck_assert_int_eq(n, 320);
}
END_TEST

/* Jury's test against the documented edges of the P+I loop and an
 * impulse response. */
static const struct stable_case {
    const char *label;
    struct pid_gains g;
    bool stable;
} stable_cases[] = {
    {"I 0.5", {0, 0.5, 0}, true},
    {"I 1.99", {0, 1.99, 0}, true},
    {"I 2.01", {0, 2.01, 0}, false},
    {"P 0.1, I 1.79 (< 2 - 2gP)", {0.1, 1.79, 0}, true},
    {"P 0.1, I 1.81", {0.1, 1.81, 0}, false},
    {"P 1.01 alone", {1.01, 0.01, 0}, false},
    {"no I: the error stays", {0.1, 0, 0}, true},
    {"the issue's 16 lasers: gI 2.0, gP 0.1", {0.1, 2.0, 0}, false},
    {"D 0.2 with I 0.5", {0.1, 0.5, 0.2}, true},
    {"D 0.5 with I 0.5", {0.1, 0.5, 0.5}, false},
};

START_TEST(test_gains_stable) {
    const struct stable_case *c = &stable_cases[_i];
    ck_assert_msg(pid_gains_stable(&c->g) == c->stable, "%s", c->label);
    if (c->g.gi > 0)
        ck_assert_msg((tail_growth(&c->g, 1.0, 0.0) < 1e-2) == c->stable, "%s: impulse %g",
                      c->label, tail_growth(&c->g, 1.0, 0.0));
}
END_TEST

/* The case: 16 lasers, a reading every 0.8 s, default gains. The
 * per-reading gains follow dt; the bound keeps gI at 0.6 and the lock
 * settles instead of ringing forever; the next short dt is not bounded. */
START_TEST(test_bound_follows_dt) {
    struct pid_params p = default_params(50.0);
    struct pid pid;
    struct plant pl;
    uint64_t t_ns = T0_NS;
    double e_mhz = 0, worst_late = 0;

    pid_init(&pid, &p, F0_THZ, 0.0);
    plant_init(&pl, F0_THZ + 100e-6, 50.0, 0.0, 0.0);
    pid_engage(&pid, 0.0, F0_THZ, t_ns);
    for (int k = 0; k < 40; k++) {
        t_ns += UINT64_C(800000000);
        plant_advance(&pl, pid.output_v, 0.8);
        pid_step(&pid, pl.f_thz, t_ns, NULL, &e_mhz);
        if (k >= 20 && fabs(e_mhz) > worst_late)
            worst_late = fabs(e_mhz);
    }
    ck_assert(pid.bounded);
    ck_assert_double_eq_tol(pid.dt_s, 0.8, 1e-12);
    ck_assert_double_eq_tol(pid.asked.gi, 2.0, 1e-12);
    ck_assert_double_eq_tol(pid.asked.gp, 0.1, 1e-12);
    ck_assert_double_eq_tol(pid.eff.gi, PID_GI_SAFE, 1e-12);
    ck_assert_double_eq_tol(pid.eff.gp, 0.1, 1e-12);
    ck_assert_msg(worst_late < 1e-3, "still %g MHz off after 20 readings", worst_late);
    /* dt back to 0.2 s: gI 0.5, as asked. */
    t_ns += UINT64_C(200000000);
    plant_advance(&pl, pid.output_v, 0.2);
    pid_step(&pid, pl.f_thz, t_ns, NULL, NULL);
    ck_assert(!pid.bounded);
    ck_assert_double_eq_tol(pid.eff.gi, 0.5, 1e-12);
    ck_assert(pid.eff_ki_v_per_mhz_s == p.ki_v_per_mhz_s);
}
END_TEST

/* A change of dt that moves the bound, and a back-off, are bumpless: a
 * steady error moves the output only by the integrator's share. */
START_TEST(test_bound_bumpless) {
    struct pid_params p = default_params(50.0);
    struct pid pid;
    uint64_t t_ns = T0_NS;
    double e = 3.0, out_v, before_v;

    p.kp_v_per_mhz = 0.02; /* gP 1.0 asked: bounded to 0.4 */
    pid_init(&pid, &p, F0_THZ, 0.0);
    pid_engage(&pid, 0.0, F0_THZ, t_ns);
    for (int k = 0; k < 3; k++) {
        t_ns += DT_NS;
        pid_step(&pid, F0_THZ + e * 1e-6, t_ns, NULL, NULL);
    }
    ck_assert_double_eq_tol(pid.eff.gp, PID_GP_SAFE, 1e-12);
    pid.gain_scale = 0.5;
    before_v = pid.output_v;
    t_ns += DT_NS;
    pid_step(&pid, F0_THZ + e * 1e-6, t_ns, &out_v, &e);
    ck_assert_double_eq_tol(pid.eff.gp, PID_GP_SAFE * 0.5, 1e-12);
    ck_assert_msg(fabs(out_v - (before_v - pid.eff.gi / 50.0 * e)) < 1e-12,
                  "moved %.17g, want %.17g", out_v - before_v, -pid.eff.gi / 50.0 * e);
    ck_assert_double_eq_tol(law_output(&pid), out_v, 1e-12);
}
END_TEST

/* ---- the oscillation detector ------------------------------------------- */

static const struct osc_case {
    const char *label;
    double e[16];
    int n;
    int detect_at; /* 0-based reading that detects, -1: none */
    double period; /* readings */
} osc_cases[] = {
    {"alternating, growing", {100, -105, 110, -116, 121, -127}, 6, 3, 2},
    {"alternating, steady", {50, -50, 50, -50, 50, -50}, 6, 3, 2},
    {"alternating, decaying by half: a damped loop", {100, -50, 25, -12, 6, -3}, 6, -1, 0},
    {"one overshoot after a step", {-100, -10, 3, 1, 0.5, 0.2}, 6, -1, 0},
    {"period 4", {40, 40, -40, -40, 40, 40, -40, -40, 40}, 9, 6, 4},
    {"noise within the threshold", {1.5, -1.2, 1.9, -1.8, 1.1, -0.5, 1.9, -1.9}, 8, -1, 0},
    {"slow swing, 12 readings a side",
     {9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, -9, -9, -9, -9},
     16,
     -1,
     0},
};

START_TEST(test_osc) {
    const struct osc_case *c = &osc_cases[_i];
    struct pid_osc o;
    struct pid_osc_report rep = {0};
    int at = -1;

    pid_osc_reset(&o);
    for (int k = 0; k < c->n && at < 0; k++)
        if (pid_osc_feed(&o, c->e[k], 2.0, T0_NS + (uint64_t)k * UINT64_C(800000000), &rep))
            at = k;
    ck_assert_msg(at == c->detect_at, "%s: detected at %d, want %d", c->label, at, c->detect_at);
    if (at >= 0) {
        ck_assert_double_eq_tol(rep.period_readings, c->period, 1e-9);
        ck_assert_double_eq_tol(rep.period_s, c->period * 0.8, 1e-9);
        ck_assert(rep.amplitude_mhz > 2.0);
        ck_assert_int_eq(o.n, 0); /* starts afresh */
    }
}
END_TEST

static Suite *pid_suite(void) {
    Suite *s = suite_create("pid");
    TCase *tc = tcase_create("core");
#define ROWS(a) ((int)(sizeof(a) / sizeof((a)[0])))
    tcase_add_loop_test(tc, test_step_response, 0, ROWS(step_cases));
    tcase_add_loop_test(tc, test_clamp, 0, ROWS(clamp_cases));
    tcase_add_loop_test(tc, test_slew, 0, ROWS(slew_cases));
    tcase_add_loop_test(tc, test_antiwindup, 0, ROWS(windup_cases));
    tcase_add_loop_test(tc, test_bumpless_engage, 0, ROWS(engage_cases));
    tcase_add_test(tc, test_dt_jitter_converges);
    tcase_add_loop_test(tc, test_dt_jitter_increment, 0, ROWS(jitter_cases));
    tcase_add_loop_test(tc, test_gap, 0, ROWS(gap_cases));
    tcase_add_loop_test(tc, test_refused, 0, ROWS(refuse_cases));
    tcase_add_loop_test(tc, test_ramp, 0, ROWS(ramp_cases));
    tcase_add_test(tc, test_ramp_jump_and_retarget);
    tcase_add_test(tc, test_hold);
    tcase_add_test(tc, test_set_params_bumpless);
    tcase_add_test(tc, test_bound_is_robust);
    tcase_add_loop_test(tc, test_gains_stable, 0, ROWS(stable_cases));
    tcase_add_test(tc, test_bound_follows_dt);
    tcase_add_test(tc, test_bound_bumpless);
    tcase_add_loop_test(tc, test_osc, 0, ROWS(osc_cases));
#undef ROWS
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(pid_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
