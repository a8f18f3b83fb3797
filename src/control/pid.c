/*
 * pid: the per-laser frequency controller (include/pid.h, docs/CONTROL.md).
 * Owns the control law, its integrator, clamp, slew limit and setpoint ramp.
 * It must not do I/O, read a clock or allocate: every time arrives as an
 * argument, so the laser lock and the tests drive it on any time base.
 */
#include "pid.h"

#include <math.h>
#include <string.h>

/*
 * No actuator takes a gigavolt. Capping every term (P, D, integrator increment)
 * at this size, and the integrator at ten times it, keeps every sum finite
 * whatever the gains and errors, so the clamp always sees a number, never NaN.
 * Below the cap the arithmetic is untouched.
 */
#define TERM_LIMIT_V 1e9
#define INTEGRAL_LIMIT_V 1e10
/* Keeps de/dt finite when two readings 1 ns apart differ by a huge error. */
#define DERIV_LIMIT_MHZ_PER_S 1e300
/* An output this close to a limit counts as railed (well below any DAC step). */
#define RAIL_EPS_V 1e-9
/*
 * A ramp this close to its setpoint has arrived: 1 Hz is far below any
 * wavemeter's resolution and above the rounding of a frequency held in THz
 * (6e-8 MHz near 400 THz), so a ramp ends on the reading where it should.
 */
#define RAMP_ARRIVED_MHZ 1e-6

#define MHZ_PER_THZ 1e6
#define NS_PER_S 1e9

/* Clamp x to [-lim, lim]; NaN becomes 0 so it can never reach the output. */
static double limit(double x, double lim) {
    if (isnan(x))
        return 0.0;
    if (x > lim)
        return lim;
    if (x < -lim)
        return -lim;
    return x;
}

static double finite_or(double x, double fallback) {
    return isfinite(x) ? x : fallback;
}

/* The loop sign: positive gains must reduce the error for either actuator sign. */
static double loop_sign(const struct pid_params *p) {
    return p->sensitivity_mhz_per_v < 0.0 ? -1.0 : 1.0;
}

static double clamp_range(const struct pid_params *p, double v) {
    if (v < p->output_min_v)
        return p->output_min_v;
    if (v > p->output_max_v)
        return p->output_max_v;
    return v;
}

static bool at_rail(const struct pid_params *p, double v) {
    return fabs(v - p->output_min_v) <= RAIL_EPS_V || fabs(v - p->output_max_v) <= RAIL_EPS_V;
}

/* Copy params, replacing values the arithmetic cannot use (see pid.h). */
static void sanitize(struct pid_params *dst, const struct pid_params *src) {
    *dst = *src;
    dst->kp_v_per_mhz = finite_or(src->kp_v_per_mhz, 0.0);
    dst->ki_v_per_mhz_s = finite_or(src->ki_v_per_mhz_s, 0.0);
    dst->kd_v_s_per_mhz = finite_or(src->kd_v_s_per_mhz, 0.0);
    dst->sensitivity_mhz_per_v = finite_or(src->sensitivity_mhz_per_v, 0.0);
    dst->slew_v_per_s = finite_or(src->slew_v_per_s, 0.0);
    if (dst->slew_v_per_s < 0.0)
        dst->slew_v_per_s = 0.0;
    dst->max_gap_s = finite_or(src->max_gap_s, 0.0);
    if (dst->max_gap_s < 0.0)
        dst->max_gap_s = 0.0;
    /* Infinite limits are allowed (no clamp); the term caps keep the output finite. */
    if (isnan(dst->output_min_v))
        dst->output_min_v = 0.0;
    if (isnan(dst->output_max_v))
        dst->output_max_v = 0.0;
    if (dst->output_min_v > dst->output_max_v) {
        double t = dst->output_min_v;
        dst->output_min_v = dst->output_max_v;
        dst->output_max_v = t;
    }
}

/* Where the ramp puts the target at t_ns; never earlier than the last advance. */
static double ramp_target_at(const struct pid *pid, uint64_t t_ns) {
    if (pid->ramp_mhz_per_s <= 0.0)
        return pid->setpoint_thz;
    if (t_ns < pid->ramp_t_ns)
        t_ns = pid->ramp_t_ns;
    if (t_ns <= pid->ramp_from_t_ns)
        return pid->ramp_from_thz;
    double elapsed_s = (double)(t_ns - pid->ramp_from_t_ns) / NS_PER_S;
    double dist_mhz = (pid->setpoint_thz - pid->ramp_from_thz) * MHZ_PER_THZ;
    double walked_mhz = pid->ramp_mhz_per_s * elapsed_s;
    /* Landing exactly on the setpoint makes pid_ramp_done() an equality test. */
    if (!(walked_mhz < fabs(dist_mhz) - RAMP_ARRIVED_MHZ))
        return pid->setpoint_thz;
    return pid->ramp_from_thz + copysign(walked_mhz, dist_mhz) / MHZ_PER_THZ;
}

/* Start a new ramp (or jump) from the present target at t_ns. */
static void ramp_restart(struct pid *pid, uint64_t t_ns) {
    pid->ramp_from_thz = pid->target_thz;
    pid->ramp_from_t_ns = t_ns;
    pid->ramp_t_ns = t_ns;
    /* The output follows the target from where it is now; a jump (ramp 0)
     * is the loop's to close, not the feed-forward's. */
    if (pid->ramp_mhz_per_s <= 0.0)
        pid->target_thz = pid->setpoint_thz;
    pid->ff_thz = pid->target_thz;
    pid->ff_t_ns = t_ns;
}

double pid_target_at(const struct pid *pid, uint64_t t_ns) {
    return ramp_target_at(pid, t_ns);
}

void pid_ramp_pause(struct pid *pid, uint64_t t_ns) {
    if (pid->ramp_mhz_per_s <= 0.0 || pid->target_thz == pid->setpoint_thz)
        return;
    pid->target_thz = pid->ff_thz;
    pid->ramp_from_thz = pid->ff_thz;
    pid->ramp_from_t_ns = t_ns;
    pid->ramp_t_ns = t_ns;
    pid->ff_t_ns = t_ns;
}

double pid_feed_forward(struct pid *pid, uint64_t t_ns) {
    double s_mhz_per_v = pid->p.sensitivity_mhz_per_v;

    /* Never back in time: a reading taken before the ramp timer last moved
     * the output must not pull it back (the output is ahead of it, as the
     * laser was when the reading was taken). */
    if (t_ns <= pid->ff_t_ns)
        return 0.0;
    double to_thz = ramp_target_at(pid, t_ns);
    double walk_mhz = (to_thz - pid->ff_thz) * MHZ_PER_THZ;

    if (!(s_mhz_per_v != 0.0 && isfinite(s_mhz_per_v)) || !isfinite(walk_mhz) || walk_mhz == 0.0)
        return 0.0;
    pid->ff_thz = to_thz;
    pid->ff_t_ns = t_ns;
    double want_v =
        clamp_range(&pid->p, pid->output_v + limit(walk_mhz / s_mhz_per_v, TERM_LIMIT_V));
    double dv = want_v - pid->output_v;
    pid->output_v = want_v;
    pid->integral_v = limit(pid->integral_v + dv, INTEGRAL_LIMIT_V);
    return dv;
}

/* The P and D contribution (before the loop sign's minus) in volts, capped. */
static double pd_term_v(const struct pid *pid, double kp, double kd, double error_mhz,
                        double deriv_mhz_per_s) {
    double s = loop_sign(&pid->p);
    double p_v = limit(s * kp * error_mhz, TERM_LIMIT_V);
    double d_v = 0.0;
    if (kd != 0.0)
        d_v = limit(s * kd * deriv_mhz_per_s, TERM_LIMIT_V);
    return p_v + d_v;
}

/* ---- per-reading gains ---- */

void pid_gains_asked(const struct pid_params *p, double dt_s, struct pid_gains *g) {
    double s_abs = fabs(p->sensitivity_mhz_per_v);
    bool have_dt = dt_s > 0.0 && isfinite(dt_s);

    g->gp = g->gi = g->gd = (double)NAN;
    if (!(s_abs > 0.0) || !isfinite(s_abs))
        return;
    g->gp = p->kp_v_per_mhz * s_abs;
    if (have_dt) {
        g->gi = p->ki_v_per_mhz_s * s_abs * dt_s;
        g->gd = p->kd_v_s_per_mhz * s_abs / dt_s;
    }
}

/*
 * The safe region. For a laser that follows within a reading, the loop
 * e' = (1-gI-gP-gD) e + (gP+2gD) e_1 - gD e_2 is stable while
 * gI < 2 - 2gP - 4gD (and gP, gD < 1, Jury). Doubling every gain (a true |S|
 * twice the configured one) keeps it stable when gI < 1 - 2gP - 4gD: the
 * bound asks for 0.9 of that, and gI <= 0.6, which also holds with one
 * reading of lag (gI < 1 there for I alone) and keeps the locked noise near
 * the Kalman bound for the noise and drift wavemeter locks see
 * (docs/CONTROL.md). P and D share 2gP + 4gD <= 0.8, so gI always keeps 0.18.
 */
bool pid_gains_bound(struct pid_gains *g) {
    struct pid_gains in = *g;
    double gp, gd, pd, gi_max;

    if (isfinite(g->gp) && g->gp > PID_GP_SAFE)
        g->gp = PID_GP_SAFE;
    if (isfinite(g->gd) && g->gd > PID_GD_SAFE)
        g->gd = PID_GD_SAFE;
    gp = isfinite(g->gp) ? g->gp : 0.0;
    gd = isfinite(g->gd) ? g->gd : 0.0;
    pd = 2.0 * gp + 4.0 * gd;
    if (pd > 0.8) {
        g->gp = isfinite(g->gp) ? g->gp * 0.8 / pd : g->gp;
        g->gd = isfinite(g->gd) ? g->gd * 0.8 / pd : g->gd;
        gp = isfinite(g->gp) ? g->gp : 0.0;
        gd = isfinite(g->gd) ? g->gd : 0.0;
    }
    gi_max = fmin(PID_GI_SAFE, 0.9 * (1.0 - 2.0 * gp - 4.0 * gd));
    if (isfinite(g->gi) && g->gi > gi_max)
        g->gi = gi_max;
    return (isfinite(in.gp) && in.gp != g->gp) || (isfinite(in.gi) && in.gi != g->gi) ||
           (isfinite(in.gd) && in.gd != g->gd);
}

bool pid_gains_stable(const struct pid_gains *g) {
    double gp = isfinite(g->gp) ? g->gp : 0.0;
    double gi = isfinite(g->gi) ? g->gi : 0.0;
    double gd = isfinite(g->gd) ? g->gd : 0.0;
    /* z^3 + a z^2 + b z + c */
    double a = -(1.0 - gi - gp - gd), b = -(gp + 2.0 * gd), c = gd;

    /* gI = 0 puts a root at 1: the error stays, it does not grow (the
     * tolerance absorbs the rounding of 1 + a + b + c = gI). */
    return 1.0 + a + b + c >= -1e-12 && 1.0 - a + b - c > 0.0 && fabs(c) < 1.0 &&
           1.0 - c * c > fabs(b - a * c);
}

void pid_init(struct pid *pid, const struct pid_params *p, double setpoint_thz, double output_v) {
    memset(pid, 0, sizeof(*pid));
    sanitize(&pid->p, p);
    pid->setpoint_thz = finite_or(setpoint_thz, 0.0);
    pid->target_thz = pid->setpoint_thz;
    pid->ramp_from_thz = pid->setpoint_thz;
    pid->ff_thz = pid->setpoint_thz;
    pid->output_v = clamp_range(&pid->p, limit(output_v, TERM_LIMIT_V));
    pid->integral_v = pid->output_v;
    pid->railed = at_rail(&pid->p, pid->output_v);
    pid->gain_scale = 1.0;
    pid->asked.gp = pid->asked.gi = pid->asked.gd = (double)NAN;
    pid->eff = pid->asked;
    pid->eff_kp_v_per_mhz = pid->p.kp_v_per_mhz;
    pid->eff_ki_v_per_mhz_s = pid->p.ki_v_per_mhz_s;
    pid->eff_kd_v_s_per_mhz = pid->p.kd_v_s_per_mhz;
}

void pid_set_params(struct pid *pid, const struct pid_params *p) {
    sanitize(&pid->p, p);
    pid->output_v = clamp_range(&pid->p, pid->output_v);
    pid->railed = at_rail(&pid->p, pid->output_v);
    /*
     * Re-establish I - s*kp*e - s*kd*d == output with the new gains, so the next
     * step moves the output only by what the error does from here on. Without
     * a last reading, the next step is PID_FIRST and sets I itself.
     */
    pid->eff_kp_v_per_mhz = pid->p.kp_v_per_mhz;
    pid->eff_ki_v_per_mhz_s = pid->p.ki_v_per_mhz_s;
    pid->eff_kd_v_s_per_mhz = pid->p.kd_v_s_per_mhz;
    if (pid->have_last)
        pid->integral_v =
            limit(pid->output_v + pd_term_v(pid, pid->eff_kp_v_per_mhz, pid->eff_kd_v_s_per_mhz,
                                            pid->last_error_mhz, pid->last_deriv_mhz_per_s),
                  INTEGRAL_LIMIT_V);
    else
        pid->integral_v = pid->output_v;
}

/*
 * The gains in V units for a step over dt_s: bounded to the safe region and
 * scaled by the back-off. A gain the bound did not touch is used exactly as
 * given (no round trip through |S|), so an unbounded loop computes what the
 * plain law does, to the last bit. Records the per-reading gains for clients.
 */
static void step_gains(struct pid *pid, double dt_s, double *kp, double *ki, double *kd) {
    const struct pid_params *p = &pid->p;
    double s_abs = fabs(p->sensitivity_mhz_per_v), scale = pid->gain_scale;
    struct pid_gains g;

    pid_gains_asked(p, dt_s, &pid->asked);
    g = pid->asked;
    pid->bounded = pid_gains_bound(&g);
    pid->dt_s = dt_s;
    *kp = p->kp_v_per_mhz;
    *ki = p->ki_v_per_mhz_s;
    *kd = p->kd_v_s_per_mhz;
    if (isfinite(g.gp) && g.gp != pid->asked.gp)
        *kp = g.gp / s_abs;
    if (isfinite(g.gi) && g.gi != pid->asked.gi)
        *ki = g.gi / (s_abs * dt_s);
    if (isfinite(g.gd) && g.gd != pid->asked.gd)
        *kd = g.gd * dt_s / s_abs;
    if (scale != 1.0) {
        *kp *= scale;
        *ki *= scale;
        *kd *= scale;
        g.gp *= scale;
        g.gi *= scale;
        g.gd *= scale;
    }
    pid->eff = g;
}

void pid_engage(struct pid *pid, double output_v, double target_thz, uint64_t now_ns) {
    if (isfinite(output_v))
        pid->output_v = clamp_range(&pid->p, limit(output_v, TERM_LIMIT_V));
    pid->integral_v = pid->output_v;
    pid->railed = at_rail(&pid->p, pid->output_v);
    pid->target_thz = finite_or(target_thz, pid->setpoint_thz);
    ramp_restart(pid, now_ns);
    pid->last_error_mhz = 0.0;
    pid->last_deriv_mhz_per_s = 0.0;
    pid->have_last = false;
}

void pid_set_setpoint(struct pid *pid, double setpoint_thz, double ramp_mhz_per_s,
                      uint64_t now_ns) {
    if (!isfinite(setpoint_thz))
        return;
    /* The new ramp starts where the old one would be at now_ns. */
    pid->target_thz = ramp_target_at(pid, now_ns);
    pid->setpoint_thz = setpoint_thz;
    pid->ramp_mhz_per_s = ramp_mhz_per_s > 0.0 && isfinite(ramp_mhz_per_s) ? ramp_mhz_per_s : 0.0;
    ramp_restart(pid, now_ns);
}

enum pid_result pid_step(struct pid *pid, double measured_thz, uint64_t t_ns, double *output_v,
                         double *error_mhz) {
    /* Decide on refusal before touching anything: a refused reading changes nothing. */
    double target_thz = ramp_target_at(pid, t_ns);
    double e = (measured_thz - target_thz) * MHZ_PER_THZ;
    if (!isfinite(measured_thz) || !isfinite(e) || t_ns <= pid->last_t_ns) {
        if (output_v)
            *output_v = pid->output_v;
        return PID_REFUSED;
    }

    pid->target_thz = target_thz;
    if (t_ns > pid->ramp_t_ns)
        pid->ramp_t_ns = t_ns;
    /* The target's walk since the output last followed it, before the law
     * acts on the error: the error is then only what the loop must remove. */
    pid_feed_forward(pid, t_ns);

    double dt_s = (double)(t_ns - pid->last_t_ns) / NS_PER_S;
    bool fresh = !pid->have_last || (pid->p.max_gap_s > 0.0 && dt_s > pid->p.max_gap_s);
    enum pid_result res;

    if (fresh) {
        /*
         * Bumpless: keep the output exactly and take this error as the P (and D)
         * reference, so the controller acts only on what changes from here on.
         * The integrator is not advanced over an unknown interval.
         */
        pid->integral_v = limit(
            pid->output_v + pd_term_v(pid, pid->eff_kp_v_per_mhz, pid->eff_kd_v_s_per_mhz, e, 0.0),
            INTEGRAL_LIMIT_V);
        pid->last_deriv_mhz_per_s = 0.0;
        pid->railed = at_rail(&pid->p, pid->output_v);
        res = PID_FIRST;
    } else {
        double s = loop_sign(&pid->p), kp, ki, kd;
        step_gains(pid, dt_s, &kp, &ki, &kd);
        if (kp != pid->eff_kp_v_per_mhz || kd != pid->eff_kd_v_s_per_mhz) {
            /* Other gains than the last step's (dt moved the bound, or a
             * back-off): the integrator takes the value that gives the
             * present output with them, so only the new error moves it. */
            pid->integral_v = limit(pid->output_v + pd_term_v(pid, kp, kd, pid->last_error_mhz,
                                                              pid->last_deriv_mhz_per_s),
                                    INTEGRAL_LIMIT_V);
        }
        pid->eff_kp_v_per_mhz = kp;
        pid->eff_ki_v_per_mhz_s = ki;
        pid->eff_kd_v_s_per_mhz = kd;
        /* dt_s > 0: t_ns > last_t_ns was checked above. */
        double d = limit((e - pid->last_error_mhz) / dt_s, DERIV_LIMIT_MHZ_PER_S);
        double inc_v = limit(-s * ki * e * dt_s, TERM_LIMIT_V);
        double integral_v = limit(pid->integral_v + inc_v, INTEGRAL_LIMIT_V);
        double pd_v = pd_term_v(pid, kp, kd, e, d);
        double raw_v = integral_v - pd_v;
        double out_v = clamp_range(&pid->p, raw_v);
        bool clamped = out_v != raw_v;

        if (pid->p.slew_v_per_s > 0.0) {
            /* Moving toward the previous (in-range) output cannot leave the range. */
            double max_step_v = pid->p.slew_v_per_s * dt_s;
            if (out_v > pid->output_v + max_step_v)
                out_v = pid->output_v + max_step_v;
            else if (out_v < pid->output_v - max_step_v)
                out_v = pid->output_v - max_step_v;
        }
        /*
         * Anti-windup by back-calculation: when the applied output differs from
         * what the law asked for, the integrator takes the value that makes the
         * law give the applied output. It never stores drive the actuator cannot
         * use, so the output leaves a rail as soon as the error asks it to.
         */
        if (out_v != raw_v)
            integral_v = limit(out_v + pd_v, INTEGRAL_LIMIT_V);

        pid->integral_v = integral_v;
        pid->output_v = out_v;
        pid->last_deriv_mhz_per_s = d;
        pid->railed = clamped || at_rail(&pid->p, out_v);
        res = PID_STEPPED;
    }

    pid->last_error_mhz = e;
    pid->last_t_ns = t_ns;
    pid->have_last = true;
    if (output_v)
        *output_v = pid->output_v;
    if (error_mhz)
        *error_mhz = e;
    return res;
}

void pid_hold(struct pid *pid) {
    pid->have_last = false;
}

bool pid_ramp_done(const struct pid *pid) {
    return pid->target_thz == pid->setpoint_thz;
}

/* ---- the best a wavemeter lock can do ---- */

void pid_kalman(double noise_mhz, double drift_mhz_per_sqrt_s, double dt_s, double *bound_mhz,
                double *gain) {
    double q = drift_mhz_per_sqrt_s * drift_mhz_per_sqrt_s * dt_s, r = noise_mhz * noise_mhz;
    /* The prior variance P solves P = (P R / (P + R)) + q. */
    double p = q / 2.0 + sqrt(q * q / 4.0 + q * r);

    if (bound_mhz)
        *bound_mhz = sqrt(p);
    if (gain)
        *gain = p + r > 0.0 ? p / (p + r) : 1.0;
}

double pid_i_error_mhz(double gi, double noise_mhz, double drift_mhz_per_sqrt_s, double dt_s) {
    double q = drift_mhz_per_sqrt_s * drift_mhz_per_sqrt_s * dt_s, r = noise_mhz * noise_mhz;

    if (!(gi > 0.0 && gi < 2.0))
        return (double)INFINITY;
    return sqrt((gi * gi * r + q) / (gi * (2.0 - gi)));
}

/* ---- oscillation detector ---- */

void pid_osc_reset(struct pid_osc *o) {
    memset(o, 0, sizeof(*o));
}

bool pid_osc_feed(struct pid_osc *o, double error_mhz, double threshold_mhz, uint64_t t_ns,
                  struct pid_osc_report *rep) {
    int sign;

    if (!isfinite(error_mhz))
        return false;
    o->quiet++;
    if (fabs(error_mhz) <= threshold_mhz) {
        /* Near zero: part of whatever half-cycle is in progress. */
        if (o->sign != 0 && ++o->len > PID_OSC_MAX_HALF)
            o->n = 0;
        return false;
    }
    sign = error_mhz > 0 ? 1 : -1;
    if (o->sign == sign) {
        if (fabs(error_mhz) > o->peak_mhz)
            o->peak_mhz = fabs(error_mhz);
        if (++o->len > PID_OSC_MAX_HALF)
            o->n = 0; /* a slow swing or a standing error: nothing to keep */
        return false;
    }
    if (o->sign != 0 && o->len <= PID_OSC_MAX_HALF) {
        /* The swing crossed zero: the half-cycle in progress is complete. */
        if (o->n == 3) {
            memmove(o->peaks, o->peaks + 1, 2 * sizeof(o->peaks[0]));
            memmove(o->lens, o->lens + 1, 2 * sizeof(o->lens[0]));
            memmove(o->durs_ns, o->durs_ns + 1, 2 * sizeof(o->durs_ns[0]));
            o->n = 2;
        }
        o->peaks[o->n] = o->peak_mhz;
        o->lens[o->n] = o->len;
        o->durs_ns[o->n] = t_ns > o->start_ns ? t_ns - o->start_ns : 0;
        o->n++;
        o->quiet = 0;
    }
    o->sign = sign;
    o->peak_mhz = fabs(error_mhz);
    o->start_ns = t_ns;
    o->len = 1;
    if (o->n < 3 || o->peaks[2] < PID_OSC_DECAY_MIN * o->peaks[0] ||
        o->peaks[0] < PID_OSC_MIN_TOLERANCES * threshold_mhz)
        return false;
    /* A loop's swing is regular: half-cycles of about one length (a swing
     * about an offset has unequal halves, so peaks are compared a period
     * apart only). Noise well above the tolerance swings too, but not like
     * that. */
    int lmin = o->lens[0], lmax = o->lens[0];
    for (int k = 1; k < 3; k++) {
        lmin = o->lens[k] < lmin ? o->lens[k] : lmin;
        lmax = o->lens[k] > lmax ? o->lens[k] : lmax;
    }
    if (lmax - lmin > (lmin > 1 ? lmin : 1))
        return false;
    if (rep) {
        rep->amplitude_mhz = (o->peaks[0] + o->peaks[1] + o->peaks[2]) / 3.0;
        rep->period_readings = (double)(o->lens[0] + o->lens[1] + o->lens[2]) * 2.0 / 3.0;
        rep->period_s =
            (double)(o->durs_ns[0] + o->durs_ns[1] + o->durs_ns[2]) / NS_PER_S * 2.0 / 3.0;
    }
    pid_osc_reset(o);
    return true;
}
