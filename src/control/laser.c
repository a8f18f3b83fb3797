/*
 * laser: the lock loops. For each fresh reading of a locked laser, one pool
 * job runs the controller step on a copy of the controller and writes the
 * actuator; its completion, on the loop, adopts the new controller state and
 * moves the lock state machine. Client changes are applied on the loop and
 * answered only once the state file holding them is durable. Nothing here
 * parses JSON-RPC or touches a socket.
 */
#include "laser.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* State file layout version; bumped only for incompatible changes. */
#define STATE_VERSION 1

struct laser_change {
    struct store_waiter w;
    laser_change_cb cb;
    void *arg;
};

static void laser_job_start(struct laser *l);
static void laser_park_now(struct laser *l);
static void lasers_ramp_kick(struct lasers *ls);
static void lasers_check_stopped(struct lasers *ls);
static void tune_cancel(struct laser *l, const char *why);
static void tune_on_reading(struct laser *l, const struct reading *r);

static const char *const state_names[] = {
    [LOCK_OFF] = "off",         [LOCK_ACQUIRING] = "acquiring", [LOCK_LOCKED] = "locked",
    [LOCK_HOLDING] = "holding", [LOCK_RAILED] = "railed",       [LOCK_LOST] = "lost",
    [LOCK_FAULT] = "fault",     [LOCK_UNSTABLE] = "unstable",   [LOCK_RAMPING] = "ramping",
};

const char *laser_state_name(enum lock_state s) {
    return state_names[s];
}

static uint64_t now_ns(const struct laser *l) {
    return clock_now_ns(l->owner->clk);
}

/* Every transition is logged with the laser's name and why. */
static void laser_set_state(struct laser *l, enum lock_state s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void laser_set_state(struct laser *l, enum lock_state s, const char *fmt, ...) {
    char reason[sizeof(l->reason)];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    if (s == l->state) {
        memcpy(l->reason, reason, sizeof(reason));
        return;
    }
    log_msg(
        s == LOCK_LOST || s == LOCK_FAULT || s == LOCK_UNSTABLE ? LOG_LVL_WARNING : LOG_LVL_NOTICE,
        "laser \"%s\": %s -> %s: %s", l->cfg->name, state_names[l->state], state_names[s], reason);
    /* The time this attempt to lock has taken: from a fresh start (engage,
     * relock, the end of a gap) through railed and unstable spells. */
    if (s == LOCK_LOCKED || s == LOCK_OFF) {
        l->acquiring_since_ns = 0;
        l->acquire_warned = false;
    } else if (s == LOCK_ACQUIRING && l->state != LOCK_RAILED && l->state != LOCK_UNSTABLE) {
        l->acquiring_since_ns = now_ns(l);
        l->acquire_warned = false;
    }
    l->state = s;
    memcpy(l->reason, reason, sizeof(reason));
    l->since_unix = l->owner->clk->wall_s(l->owner->clk->ctx);
    if (l->owner->on_state)
        l->owner->on_state(l, l->owner->state_ctx);
}

/* The user's wish, and the schedule's hint: a channel a lock uses is read
 * as often as the others allow. */
static void laser_want_lock(struct laser *l, bool on) {
    l->lock_on = on;
    if (l->owner->meter != NULL)
        meter_set_locked(l->owner->meter, l->cfg->channel, on);
}

static void params_from_config(struct pid_params *p, const struct laser_config *c) {
    p->kp_v_per_mhz = c->kp_v_per_mhz;
    p->ki_v_per_mhz_s = c->ki_v_per_mhz_s;
    p->kd_v_s_per_mhz = c->kd_v_s_per_mhz;
    p->sensitivity_mhz_per_v = c->sensitivity_mhz_per_v;
    p->output_min_v = c->output_min_v;
    p->output_max_v = c->output_max_v;
    p->slew_v_per_s = c->slew_v_per_s;
    p->max_gap_s = c->max_gap_s;
}

/* ---- persistence ---- */

static json_t *lasers_snapshot(void *ctx) {
    struct lasers *ls = ctx;
    json_t *all = json_object();

    for (int i = 0; i < ls->n; i++) {
        struct laser *l = &ls->l[i];
        json_t *o = json_pack(
            "{s:f, s:f, s:f, s:f, s:f, s:b}", "setpoint_thz", l->pid.setpoint_thz, "ramp_mhz_per_s",
            l->large_move ? l->rate_after_move : l->pid.ramp_mhz_per_s, "kp_v_per_mhz",
            l->pid.p.kp_v_per_mhz, "ki_v_per_mhz_s", l->pid.p.ki_v_per_mhz_s, "kd_v_s_per_mhz",
            l->pid.p.kd_v_s_per_mhz, "lock", l->lock_on);
        /* An output the daemon does not know is not saved as if it did. */
        if (o != NULL && l->output_known) {
            json_object_set_new(o, "output_v", json_real(l->pid.output_v));
            l->saved_output_v = l->pid.output_v;
        }
        /* A sensitivity autotune measured and applied is kept like gains. */
        if (o != NULL && l->pid.p.sensitivity_mhz_per_v != l->cfg->sensitivity_mhz_per_v)
            json_object_set_new(o, "sensitivity_mhz_per_v",
                                json_real(l->pid.p.sensitivity_mhz_per_v));
        json_object_set_new(all, l->cfg->name, o);
    }
    ls->outputs_dirty = false;
    ls->fresh_due = false;
    ls->last_save_ms = uv_now(ls->loop);
    return json_pack("{s:i, s:f, s:o}", "version", STATE_VERSION, "saved_unix",
                     ls->clk->wall_s(ls->clk->ctx), "lasers", all);
}

/* The snapshot cleared outputs_dirty; it did not reach the disk, so the
 * next tick must try again (a full disk may have room by then). */
static void lasers_save_failed(void *ctx) {
    struct lasers *ls = ctx;

    ls->outputs_dirty = true;
    ls->fresh_due = true;
}

/*
 * The output a restart resumes from is the one last applied: an output that
 * has moved from its saved value by more than this fraction of the
 * tolerance (in volts, through the sensitivity) is saved within a second
 * (the save timer's tick), so a kill -9 a second after the laser settles
 * costs no jump larger than the tolerance.
 */
#define FRESH_FRACTION 0.25
#define FRESH_TICK_MS 1000u

static void laser_output_moved(struct laser *l) {
    double s = fabs(l->pid.p.sensitivity_mhz_per_v);
    double step_v = s > 0 ? FRESH_FRACTION * l->cfg->tolerance_mhz / s : 0;

    if (!isfinite(l->saved_output_v) || fabs(l->pid.output_v - l->saved_output_v) > step_v)
        l->owner->fresh_due = true;
}

static void change_durable(void *arg, int rc) {
    struct laser_change *ch = arg;

    ch->cb(ch->arg, rc, LASER_STAGE_STORE);
    free(ch);
}

/* Make the present state durable, then call cb. */
static int laser_commit(struct laser *l, laser_change_cb cb, void *arg) {
    struct laser_change *ch = calloc(1, sizeof(*ch));

    if (ch == NULL)
        return -ENOMEM;
    ch->cb = cb;
    ch->arg = arg;
    store_save(&l->owner->store, &ch->w, change_durable, ch);
    return 0;
}

/* A saved value within [lo, hi], else dflt; a value that is there but
 * refused is logged, so a restart never drops a setting silently. */
static double saved_number(const struct laser *l, json_t *o, const char *key, double dflt,
                           double lo, double hi) {
    json_t *v = json_object_get(o, key);
    double x;

    if (v == NULL)
        return dflt;
    x = json_is_number(v) ? json_number_value(v) : (double)NAN;
    if (isfinite(x) && x >= lo && x <= hi)
        return x;
    log_warnx("laser \"%s\": saved %s is not a number in [%.10g, %.10g]; using %.10g", l->cfg->name,
              key, lo, hi, dflt);
    return dflt;
}

/* Apply the saved state of one laser (may be NULL) and its restart policy. */
static void laser_restore(struct laser *l, json_t *saved) {
    const struct laser_config *c = l->cfg;
    struct pid_params p;
    double setpoint = c->setpoint_thz, output = c->output_initial_v;
    bool lock = c->lock;

    params_from_config(&p, c);
    if (saved) {
        setpoint = saved_number(l, saved, "setpoint_thz", setpoint, c->min_thz, c->max_thz);
        p.kp_v_per_mhz = saved_number(l, saved, "kp_v_per_mhz", p.kp_v_per_mhz, 0, CONFIG_GAIN_MAX);
        p.ki_v_per_mhz_s =
            saved_number(l, saved, "ki_v_per_mhz_s", p.ki_v_per_mhz_s, 0, CONFIG_GAIN_MAX);
        p.kd_v_s_per_mhz =
            saved_number(l, saved, "kd_v_s_per_mhz", p.kd_v_s_per_mhz, 0, CONFIG_GAIN_MAX);
        p.sensitivity_mhz_per_v =
            saved_number(l, saved, "sensitivity_mhz_per_v", p.sensitivity_mhz_per_v, -1e6, 1e6);
        /* "off" starts the output afresh; the others take the saved one. */
        if (c->restart != RESTART_OFF)
            output = saved_number(l, saved, "output_v", output, c->output_min_v, c->output_max_v);
        lock = json_is_true(json_object_get(saved, "lock"));
    }
    pid_init(&l->pid, &p, setpoint, output);
    if (saved)
        l->pid.ramp_mhz_per_s = saved_number(l, saved, "ramp_mhz_per_s", c->ramp_mhz_per_s, 0,
                                             CONFIG_RAMP_MAX_MHZ_PER_S);
    else
        l->pid.ramp_mhz_per_s = c->ramp_mhz_per_s;
    if (l->act == NULL) {
        laser_want_lock(l, false);
        return;
    }
    switch (saved ? c->restart : RESTART_RESUME) {
    case RESTART_RESUME:
        laser_want_lock(l, lock);
        break;
    case RESTART_RELEASE:
        laser_want_lock(l, false);
        break;
    case RESTART_OFF:
        /* Unlocked, and the actuator is left as it is: nothing is written,
         * and where it is, the daemon does not know unless the device can
         * tell (then it is read, once). */
        laser_want_lock(l, false);
        l->output_known = false;
        if (l->act->read != NULL) {
            l->job_step = false;
            l->job_resume = l->job_read_only = true;
            l->job_output_v = l->pid.output_v;
            laser_job_start(l);
        }
        return;
    }
    /* Put the actuator where the saved output says (hardware that kept its
     * voltage sees the same value again), then lock from there, bumpless;
     * a device that can tell its output is asked first, and when it
     * disagrees with the saved output, its own is taken (job_resume). */
    l->job_step = false;
    l->job_resume = true;
    l->job_output_v = l->pid.output_v;
    laser_job_start(l);
    if (l->lock_on) {
        pid_engage(&l->pid, l->pid.output_v, setpoint, now_ns(l));
        l->fresh_engage = true;
        laser_set_state(l, LOCK_ACQUIRING, "resumed after restart at %.4f V", l->pid.output_v);
    }
}

/* ---- history ---- */

static void hist_push(struct laser *l, const struct laser_sample *s) {
    size_t cap = (size_t)l->cfg->history_depth;

    if (cap == 0 || l->hist == NULL)
        return;
    l->hist[l->hist_head] = *s;
    l->hist_head = (l->hist_head + 1) % cap;
    if (l->hist_len < cap)
        l->hist_len++;
}

static struct laser_sample *hist_last(struct laser *l) {
    size_t cap = (size_t)l->cfg->history_depth;

    if (l->hist_len == 0)
        return NULL;
    return &l->hist[(l->hist_head + cap - 1) % cap];
}

void laser_history(const struct laser *l, double seconds,
                   void (*fn)(const struct laser_sample *s, void *arg), void *arg) {
    size_t cap = (size_t)l->cfg->history_depth;
    uint64_t now = clock_now_ns(l->owner->clk);
    /* Beyond ~584 years the window no longer fits in ns: that is "all". */
    uint64_t window = seconds > 0 && seconds < 1.8e10 ? (uint64_t)(seconds * 1e9) : UINT64_MAX;

    for (size_t k = 0; k < l->hist_len; k++) {
        const struct laser_sample *s = &l->hist[(l->hist_head + cap - l->hist_len + k) % cap];
        if (now - s->t_ns <= window)
            fn(s, arg);
    }
}

/* ---- the controller's health ---- */

/* Readings the diagnosis of a slow lock looks back over. */
#define WHY_READINGS 20

/*
 * Why a lock has not reached "locked" in acquire_timeout_s, from its last
 * readings (errors after their steps, outputs): too noisy for the
 * tolerance, an error that grows (wrong sign), an output that moves without
 * moving the laser, an integrator too weak for the revisit period, or one
 * that gets there slowly.
 */
static void laser_why_not_locked(const struct laser *l, char *buf, size_t len) {
    const struct laser_config *c = l->cfg;
    size_t cap = (size_t)c->history_depth;
    double e[WHY_READINGS], out[WHY_READINGS];
    int n = 0;

    for (size_t k = 0; k < l->hist_len && n < WHY_READINGS; k++) {
        const struct laser_sample *s = &l->hist[(l->hist_head + cap - 1 - k) % cap];
        if (s->status != WM_OK || !isfinite(s->error_mhz))
            continue;
        /* Newest first here; the analysis below reads them oldest first. */
        e[WHY_READINGS - 1 - n] = s->error_mhz;
        out[WHY_READINGS - 1 - n] = s->output_v;
        n++;
    }
    if (n < 6) {
        snprintf(buf, len, "too few good readings (%d of the last %d)", n, WHY_READINGS);
        return;
    }
    const double *ev = e + WHY_READINGS - n, *ov = out + WHY_READINGS - n;
    double sum = 0, sum2 = 0, first = 0, second = 0;
    int h = n / 2;
    for (int k = 0; k < n; k++) {
        sum += ev[k];
        sum2 += ev[k] * ev[k];
        if (k < h)
            first += fabs(ev[k]) / h;
        else
            second += fabs(ev[k]) / (n - h);
    }
    double mean = sum / n, sd = sqrt(fmax(0.0, (sum2 - sum * mean) / (n - 1)));
    /* The scatter of one reading about the trend: half the rms of the
     * differences of neighbours (a trend adds little to those). */
    double dif2 = 0;
    for (int k = 1; k < n; k++)
        dif2 += (ev[k] - ev[k - 1]) * (ev[k] - ev[k - 1]);
    double scatter = sqrt(dif2 / (2.0 * (n - 1)));
    /* A change of the mean |error| between the halves beyond what the
     * scatter explains. */
    double sig = 3 * scatter * sqrt(2.0 / h);
    double moved_v = ov[n - 1] - ov[0];
    double s_abs = fabs(l->pid.p.sensitivity_mhz_per_v);

    if (scatter > c->tolerance_mhz / 2 && fabs(mean) < c->tolerance_mhz + 2 * scatter)
        snprintf(buf, len,
                 "the readings scatter by %.3g MHz (sd of the last %d), too much to stay within "
                 "tolerance_mhz %.3g for %d readings in a row",
                 scatter, n, c->tolerance_mhz, c->locked_after);
    else if (second > first + sig && second > c->tolerance_mhz)
        snprintf(buf, len,
                 "the error grows (mean |error| %.3g -> %.3g MHz over %d readings) as the output "
                 "moves: check the sign of sensitivity_mhz_per_v (%+.4g MHz/V)",
                 first, second, n, l->pid.p.sensitivity_mhz_per_v);
    else if (l->pid.p.ki_v_per_mhz_s == 0)
        snprintf(buf, len,
                 "error %.3g MHz and ki is 0: only the integrator removes a standing "
                 "error",
                 mean);
    else if (second < first - sig)
        snprintf(buf, len,
                 "the error shrinks slowly (mean |error| %.3g -> %.3g MHz over %d readings, gI "
                 "%.3g per reading): about %.0f more readings at this rate; raise ki, or wait",
                 first, second, n, l->pid.eff.gi,
                 second > c->tolerance_mhz
                     ? log(c->tolerance_mhz / second) / log(second / first) * (n - h)
                     : 0.0);
    else if (s_abs > 0 && fabs(moved_v) * s_abs > 2 * c->tolerance_mhz)
        snprintf(buf, len,
                 "the output moved %.4g V (%.3g MHz at sensitivity_mhz_per_v %+.4g) but the "
                 "error stays near %.3g MHz: is the actuator moving the laser?",
                 moved_v, moved_v * s_abs, l->pid.p.sensitivity_mhz_per_v, mean);
    else
        snprintf(buf, len, "error %.3g MHz (sd %.3g) stays outside tolerance_mhz %.3g", mean, sd,
                 c->tolerance_mhz);
}

/* The bound's first action on these gains is worth one line: the lock is
 * then slower than the gains ask, and the user may want to know. */
static void laser_note_bound(struct laser *l) {
    const struct pid *p = &l->pid;

    if (!p->bounded || l->bound_logged)
        return;
    l->bound_logged = true;
    log_notice("laser \"%s\": readings %.3f s apart make the gains ask for gP %.3g, gI %.3g, "
               "gD %.3g per reading; bounded to gP %.3g, gI %.3g, gD %.3g to stay stable "
               "(ki acts as %.4g V/(MHz s) at this dt)",
               l->cfg->name, p->dt_s, p->asked.gp, p->asked.gi, p->asked.gd, p->eff.gp, p->eff.gi,
               p->eff.gd, p->eff_ki_v_per_mhz_s);
}

/* The error swings without decaying: halve the gains (down to
 * PID_SCALE_MIN) and say so. "locked" comes back once it settles. */
static void laser_unstable(struct laser *l, const struct pid_osc_report *rep) {
    double was = l->pid.gain_scale, now = fmax(was / 2, PID_SCALE_MIN);
    char what[96];

    l->in_tolerance = 0;
    if (now < was) {
        l->pid.gain_scale = now;
        snprintf(what, sizeof(what), "gains backed off to %.4g%% of the bounded ones", now * 100);
        log_warnx("laser \"%s\": error swings +-%.3g MHz every %.3g readings (%.3g s), not "
                  "decaying: %s",
                  l->cfg->name, rep->amplitude_mhz, rep->period_readings, rep->period_s, what);
    } else {
        snprintf(what, sizeof(what),
                 "gains already at their floor (%.4g%%): check sensitivity_mhz_per_v and the "
                 "actuator's lag",
                 now * 100);
    }
    laser_set_state(l, LOCK_UNSTABLE, "error swings +-%.3g MHz every %.3g readings (%.3g s): %s",
                    rep->amplitude_mhz, rep->period_readings, rep->period_s, what);
}

/*
 * Gains against the revisit period the schedule will give this laser when
 * locked: unstable ones are a warning with the numbers (the bound will keep
 * the loop stable, slower than asked), bounded ones a notice. when: "at
 * start-up", "set by a client". Kept in gains_check for laser.get.
 */
static void laser_check_gains(struct laser *l, const char *when) {
    struct meter *m = l->owner->meter;
    double dt_ms = m != NULL ? meter_expected_revisit_ms(m, l->cfg->channel, true) : (double)NAN;
    struct pid_gains asked, b;

    l->gains_check[0] = '\0';
    l->expected_dt_s = dt_ms * 1e-3;
    if (l->act == NULL || !(dt_ms > 0))
        return;
    pid_gains_asked(&l->pid.p, l->expected_dt_s, &asked);
    if (!isfinite(asked.gp))
        return; /* sensitivity 0: the size of the loop gain is unknown */
    b = asked;
    bool bounded = pid_gains_bound(&b);
    bool stable = pid_gains_stable(&asked);
    if (!bounded)
        return;
    char need[64];
    if (stable)
        snprintf(need, sizeof(need), "safe: gI <= %.3g",
                 fmin(PID_GI_SAFE, 0.9 * (1 - 2 * fmin(asked.gp, PID_GP_SAFE))));
    else
        snprintf(need, sizeof(need), "stable needs gI < 2 - 2gP - 4gD = %.3g",
                 2 - 2 * asked.gp - 4 * asked.gd);
    snprintf(l->gains_check, sizeof(l->gains_check),
             "%s at the expected revisit period %.3g s: gP = kp|S| = %.3g, gI = ki|S|dt = %.3g, "
             "gD = kd|S|/dt = %.3g per reading (%s); bounded to gP %.3g, gI %.3g, gD %.3g (the "
             "gains as given are safe with ki <= %.4g V/(MHz s))",
             stable ? "outside the safe region" : "unstable", l->expected_dt_s, asked.gp, asked.gi,
             asked.gd, need, b.gp, b.gi, b.gd,
             b.gi / (fabs(l->pid.p.sensitivity_mhz_per_v) * l->expected_dt_s));
    if (stable)
        log_notice("laser \"%s\": gains %s: %s", l->cfg->name, when, l->gains_check);
    else
        log_warnx("laser \"%s\": gains %s: %s", l->cfg->name, when, l->gains_check);
}

/* ---- the lock state machine ---- */

/*
 * "Lost": the controller stopped at the first reading outside the capture
 * range; with lost_action park the output now goes back to where the laser
 * was last locked (when the device is free: park_pending until then), with
 * hold it stays. what: the clause for the reason.
 */
static void laser_park(struct laser *l, char *what, size_t len) {
    if (l->cfg->lost_action != LOST_PARK || !l->have_locked_output) {
        snprintf(what, len, "output held at %.4f V", l->pid.output_v);
        return;
    }
    snprintf(what, len, "output back to %.4f V, where it was last locked", l->locked_output_v);
    l->park_pending = fabs(l->pid.output_v - l->locked_output_v) > 1e-9;
    laser_park_now(l);
}

/* lost_after readings in a row outside the capture range: "lost", saying
 * whether it came as one jump (a mode hop) or drifted out. */
static void laser_lost_capture(struct laser *l, double error_mhz, uint64_t t_ns) {
    const struct laser_config *c = l->cfg;
    char park[96];

    l->lost_ns = t_ns;
    laser_park(l, park, sizeof(park));
    if (fabs(l->capture_jump_mhz) > c->capture_mhz)
        laser_set_state(l, LOCK_LOST,
                        "mode hop suspected: error jumped %.0f MHz in one reading (%.1f MHz now, "
                        "capture range %.0f MHz); %s",
                        l->capture_jump_mhz, error_mhz, c->capture_mhz, park);
    else
        laser_set_state(l, LOCK_LOST,
                        "error %.1f MHz outside the %.0f MHz capture range for %d readings; %s",
                        error_mhz, c->capture_mhz, l->outside_capture, park);
}

static void laser_evaluate(struct laser *l, double error_mhz, uint64_t t_ns) {
    const struct laser_config *c = l->cfg;
    double abs_e = fabs(error_mhz);

    l->outside_capture = abs_e > c->capture_mhz ? l->outside_capture + 1 : 0;
    if (l->outside_capture >= c->lost_after) {
        laser_lost_capture(l, error_mhz, t_ns);
        return;
    }
    /* Railed means sitting on a limit, not on the way there under the slew
     * limit, and not on frequency: a laser within tolerance with its output
     * at a limit is locked (the limit is just where it holds), and a relock
     * from there would only kick it. The rail timeout counts from when the
     * output got there. */
    double out = l->pid.output_v;
    bool at_max = fabs(out - c->output_max_v) <= 1e-9, at_min = fabs(out - c->output_min_v) <= 1e-9;
    if ((at_max || at_min) && abs_e > c->tolerance_mhz) {
        if (l->railed_since_ns == 0)
            l->railed_since_ns = t_ns;
        if ((double)(t_ns - l->railed_since_ns) * 1e-9 >= c->rail_timeout_s) {
            l->lost_ns = t_ns;
            laser_set_state(l, LOCK_LOST, "output railed at %.3f V for %.0f s", out,
                            c->rail_timeout_s);
            return;
        }
        l->in_tolerance = 0;
        laser_set_state(l, LOCK_RAILED, "output at its %s limit %.3f V", at_max ? "upper" : "lower",
                        out);
        return;
    }
    l->railed_since_ns = 0;
    if (!pid_ramp_done(&l->pid)) {
        /* Following a moving target: the readings within tolerance count
         * toward "locked" at the ramp's end, and say where the laser is
         * locked now (a park returns there). */
        if (abs_e <= c->tolerance_mhz) {
            l->out_tolerance = 0;
            l->in_tolerance++;
            l->have_locked_output = true;
            l->locked_output_v = out;
        } else {
            l->in_tolerance = 0;
            l->out_tolerance++;
        }
        lasers_ramp_kick(l->owner);
        laser_set_state(
            l, LOCK_RAMPING, "following the setpoint at %g MHz/s, %.1f MHz to go, error %.3f MHz",
            l->pid.ramp_mhz_per_s, (l->pid.setpoint_thz - l->pid.target_thz) * 1e6, error_mhz);
        return;
    }
    if (l->large_move) {
        /* The large step is done: the laser's own ramp rate again. */
        l->large_move = false;
        l->pid.ramp_mhz_per_s = l->rate_after_move;
    }
    if (abs_e <= c->tolerance_mhz) {
        l->out_tolerance = 0;
        if (++l->in_tolerance >= c->locked_after) {
            l->have_locked_output = true;
            l->locked_output_v = out;
            l->relocks = 0;
            laser_set_state(l, LOCK_LOCKED, "within %.3g MHz for %d readings", c->tolerance_mhz,
                            c->locked_after);
            return;
        }
    } else {
        l->in_tolerance = 0;
        l->out_tolerance++;
    }
    /* Hysteresis: one noisy reading does not unlock; locked_after readings
     * in a row outside the tolerance do. An error beyond three tolerances is
     * not noise (the tolerance is a few sigma already): it unlocks at once. */
    if (l->state == LOCK_LOCKED && l->out_tolerance > 0 && l->out_tolerance < c->locked_after &&
        abs_e <= 3 * c->tolerance_mhz)
        return;
    /* Unstable until it settles ("locked" above), or until the swing has
     * been gone for longer than a half-cycle may last. */
    if (l->state == LOCK_UNSTABLE && l->osc.quiet <= PID_OSC_MAX_HALF)
        return;
    if (l->state != LOCK_LOCKED || l->out_tolerance > 0) {
        char why[200] = "";
        bool late = l->acquiring_since_ns != 0 &&
                    (double)(t_ns - l->acquiring_since_ns) * 1e-9 >= c->acquire_timeout_s &&
                    t_ns > l->acquiring_since_ns;

        if (late) {
            laser_why_not_locked(l, why, sizeof(why));
            if (!l->acquire_warned)
                log_warnx("laser \"%s\": not locked after %.0f s: %s", c->name,
                          (double)(t_ns - l->acquiring_since_ns) * 1e-9, why);
            l->acquire_warned = true;
            laser_set_state(l, LOCK_ACQUIRING, "not locked after %.0f s: %s",
                            (double)(t_ns - l->acquiring_since_ns) * 1e-9, why);
        } else {
            laser_set_state(l, LOCK_ACQUIRING, "error %.3f MHz, tolerance %.3g MHz", error_mhz,
                            c->tolerance_mhz);
        }
    }
}

/* A fresh start of the lock's judgement: no readings counted yet. */
static void laser_reset_counts(struct laser *l) {
    l->in_tolerance = 0;
    l->out_tolerance = 0;
    l->outside_capture = 0;
    l->railed_since_ns = 0;
}

static void laser_engage(struct laser *l, double target_thz) {
    laser_reset_counts(l);
    l->fresh_engage = true;
    pid_osc_reset(&l->osc);
    pid_engage(&l->pid, l->pid.output_v, target_thz, now_ns(l));
    l->pid_gen++;
}

static struct laser *job_laser(struct actdev_job *j) {
    return (struct laser *)(void *)((char *)j - offsetof(struct laser, job));
}

/* The error the laser shows: e from the reading taken at t_ns; a number
 * also dates it (error_t_ns), so a client sees how old the last one is once
 * readings stop. */
static void laser_note_error(struct laser *l, double e, uint64_t t_ns) {
    l->error_mhz = e;
    if (isfinite(e))
        l->error_t_ns = t_ns;
}

/* Pool thread: the controller step on the copy, then the write. */
static void laser_work(struct actdev_job *j, void *handle) {
    struct laser *l = job_laser(j);

    l->job_rc = 0;
    l->job_io.readback_v = (double)NAN;
    l->job_io.why[0] = '\0';
    l->job_adopted = l->job_read_failed = false;
    if (l->job_step) {
        l->job_result = pid_step(&l->job_pid, l->job_measured_thz, l->job_t_ns, &l->job_output_v,
                                 &l->job_error_mhz);
        if (l->job_result == PID_REFUSED)
            return;
    } else if (l->job_resume && l->act->read != NULL) {
        double v = (double)NAN, tol = 0;

        l->job_rc = l->act->read(handle, l->cfg->actuator.drv.u.bytes, l->cfg,
                                 l->cfg->actuator.timeout_ms, &v, &tol, &l->job_io);
        if (l->job_rc < 0) {
            l->job_read_failed = true;
            return;
        }
        if (l->job_read_only || !(fabs(v - l->job_output_v) <= tol)) {
            /* The device's own output: stale saved output, a knob turned
             * while the daemon was down, or nothing saved to write. */
            l->job_adopted = true;
            l->job_output_v = v < l->cfg->output_min_v   ? l->cfg->output_min_v
                              : v > l->cfg->output_max_v ? l->cfg->output_max_v
                                                         : v;
            return;
        }
    }
    if (l->job_read_only)
        return; /* a device that cannot tell: nothing is known, nothing written */
    l->job_write_ns = clock_now_ns(l->owner->clk);
    l->job_rc = l->act->write(handle, l->cfg->actuator.drv.u.bytes, l->cfg, l->job_output_v,
                              l->cfg->actuator.timeout_ms, &l->job_io);
}

static void laser_after_work(struct actdev_job *j, int status) {
    struct laser *l = job_laser(j);
    struct laser_change *waiter = l->job_waiter;
    int rc = status < 0 ? status : l->job_rc;
    bool held = l->held_during_job;
    bool read_only = l->job_read_only, ff = l->job_ff;

    l->job_resume = l->job_read_only = false; /* a restart's first job only */
    l->job_ff = false;                        /* this job's kind only */
    l->busy = false;
    l->job_waiter = NULL;
    l->held_during_job = false;
    if (rc < 0) {
        pid_hold(&l->pid);
        l->pid_gen++;
        if (status >= 0) {
            /* The write itself failed: the device is suspect, and the
             * device's fault puts every laser on it in fault. */
            char why[sizeof(l->job_io.why) + 64];
            l->write_errors++;
            if (l->job_read_failed)
                snprintf(why, sizeof(why), "reading the output failed: %s",
                         l->job_io.why[0] ? l->job_io.why : strerror(-rc));
            else
                snprintf(why, sizeof(why), "write of %.4f V failed: %s", l->job_output_v,
                         l->job_io.why[0] ? l->job_io.why : strerror(-rc));
            actdev_fail(l->dev, why);
        } else if (!l->owner->stopping) {
            laser_set_state(l, LOCK_FAULT, "actuator %s: %s", l->act->cfg.name,
                            l->dev->reason[0] ? l->dev->reason : "not open");
        }
        if (waiter) {
            waiter->cb(waiter->arg, status < 0 ? -ENODEV : rc, LASER_STAGE_ACTUATOR);
            free(waiter);
        }
        if (laser_tune_running(l)) {
            l->tune.writing = false;
            tune_cancel(l, "the actuator write failed");
        }
        lasers_check_stopped(l->owner);
        return;
    }
    if (l->job_step && l->job_result == PID_REFUSED) {
        lasers_check_stopped(l->owner); /* nothing was written */
        return;
    }
    if (read_only && !l->job_adopted) {
        lasers_check_stopped(l->owner); /* nothing read, nothing written */
        return;
    }
    if (l->job_adopted) {
        log_notice("laser \"%s\": the actuator reads %.4f V%s", l->cfg->name, l->job_output_v,
                   read_only ? " (restart off: nothing written)"
                             : ", not the saved output; resuming from that");
    } else {
        l->writes++;
    }
    l->readback_v = l->job_io.readback_v;
    l->output_known = true;
    l->owner->outputs_dirty = true;
    if (ff) {
        /* The feed-forward between readings: the controller moved its own
         * output and integrator already (pid_feed_forward); nothing to take. */
        laser_output_moved(l);
        lasers_check_stopped(l->owner);
        return;
    }
    if (!l->job_step) {
        /* A plain write: set_output, a restart or a relock. The controller
         * takes the new output as its own, bumpless, and a setpoint ramp in
         * progress goes on from where its target is. */
        pid_engage(&l->pid, l->job_output_v, l->pid.target_thz, now_ns(l));
        laser_output_moved(l);
        if (l->state == LOCK_FAULT) {
            /* The device is back: the lock resumes from the output it held. */
            laser_reset_counts(l);
            laser_set_state(l, l->lock_on ? LOCK_ACQUIRING : LOCK_OFF,
                            "actuator writes again, from %.4f V", l->job_output_v);
        }
        if (waiter) {
            store_save(&l->owner->store, &waiter->w, change_durable, waiter);
        }
        if (l->tune.writing) {
            /* Readings count for the step from here on. */
            l->tune.writing = false;
            l->tune.write_ns = l->job_write_ns;
            l->tune.n = 0;
            l->tune.bad = 0;
        }
        lasers_check_stopped(l->owner);
        return;
    }
    if (l->pid_gen == l->job_gen) {
        l->pid = l->job_pid;
    } else {
        /* A client changed setpoint or gains while the step ran: keep the
         * change, take the output the actuator now has, restart dt. */
        l->pid.output_v = l->job_pid.output_v;
        l->pid.integral_v = l->job_pid.integral_v;
        l->pid.railed = l->job_pid.railed;
        pid_hold(&l->pid);
    }
    laser_note_error(l, l->job_error_mhz, l->job_t_ns);
    laser_output_moved(l);
    struct laser_sample *s = hist_last(l);
    if (s && s->t_ns == l->job_t_ns) {
        s->output_v = l->pid.output_v;
        s->error_mhz = l->job_error_mhz;
    }
    /* A bad reading that came in while the step ran is newer news: the
     * laser stays holding until the next good reading. */
    if (l->lock_on && l->state != LOCK_LOST && !l->owner->stopping && !held) {
        struct pid_osc_report rep;

        laser_note_bound(l);
        if (l->job_result == PID_STEPPED &&
            pid_osc_feed(&l->osc, l->job_error_mhz, l->cfg->tolerance_mhz, l->job_t_ns, &rep))
            laser_unstable(l, &rep);
        else
            laser_evaluate(l, l->job_error_mhz, l->job_t_ns);
    }
    if (s && s->t_ns == l->job_t_ns)
        s->state = l->state;
    lasers_check_stopped(l->owner);
}

/* Queue the job on the laser's device; a device in fault runs nothing
 * (l->busy stays false). */
static void laser_job_start(struct laser *l) {
    l->job.run = laser_work;
    l->job.done = laser_after_work;
    l->job_gen = l->pid_gen;
    if (actdev_submit(l->dev, &l->job) == 0) {
        l->busy = true;
        if (!l->job_read_only)
            l->output_owned = true;
    }
}

/*
 * A lock engaged (by a client, or resumed at a restart) on a laser further
 * from its setpoint than the capture range: like a commanded jump, a move,
 * not a loss. The target starts where the laser is (this first reading) and
 * ramps to the setpoint at large_step_rate_mhz_per_s.
 */
static void laser_engage_far(struct laser *l, const struct reading *r) {
    const struct laser_config *c = l->cfg;
    double dist_mhz = (l->pid.setpoint_thz - r->frequency_thz) * 1e6;

    if (!l->large_move)
        l->rate_after_move = l->pid.ramp_mhz_per_s;
    l->large_move = true;
    l->pid.ramp_mhz_per_s = c->large_step_rate_mhz_per_s;
    laser_reset_counts(l); /* a reading held while a job ran counts for nothing */
    pid_engage(&l->pid, l->pid.output_v, r->frequency_thz, r->t_ns);
    l->pid_gen++;
    log_info("laser \"%s\": engaged %.1f MHz from the setpoint, beyond capture_mhz %g: a ramp at "
             "%g MHz/s (large_step_rate_mhz_per_s)",
             c->name, dist_mhz, c->capture_mhz, c->large_step_rate_mhz_per_s);
    laser_set_state(l, LOCK_RAMPING, "engaged %.1f MHz from the setpoint: following it at %g MHz/s",
                    dist_mhz, c->large_step_rate_mhz_per_s);
    lasers_ramp_kick(l->owner);
}

/* The park a "lost" asked for, once no job of the laser's runs. */
static void laser_park_now(struct laser *l) {
    if (!l->park_pending || l->busy || !actdev_ready(l->dev))
        return;
    l->park_pending = false;
    l->job_step = false;
    l->job_output_v = l->locked_output_v;
    laser_job_start(l);
}

/* Auto-relock, only from inside the capture range: error_mhz is the
 * reading's error from the setpoint (NAN: no good reading). */
static void laser_try_relock(struct laser *l, double error_mhz, uint64_t t_ns) {
    const struct laser_config *c = l->cfg;

    if (!c->auto_relock || l->relocks >= c->relock_attempts || l->busy)
        return;
    if (!(fabs(error_mhz) <= c->capture_mhz))
        return; /* a mode hop that has not healed: nothing to chase */
    if ((double)(t_ns - l->lost_ns) * 1e-9 < c->relock_delay_s)
        return;
    l->relocks++;
    l->relocks_total++;
    laser_reset_counts(l);
    l->job_step = false;
    l->job_output_v = l->have_locked_output ? l->locked_output_v : l->pid.output_v;
    laser_set_state(l, LOCK_ACQUIRING, "relock attempt %d of %d from %.4f V", l->relocks,
                    c->relock_attempts, l->job_output_v);
    /* Aim straight at the setpoint; the laser's ramp rate stays for later
     * setpoint changes. */
    double ramp = l->large_move ? l->rate_after_move : l->pid.ramp_mhz_per_s;

    l->large_move = false;
    l->park_pending = false; /* the relock writes the locked output itself */
    pid_set_setpoint(&l->pid, l->pid.setpoint_thz, 0, t_ns);
    l->pid.ramp_mhz_per_s = ramp;
    laser_job_start(l);
}

void lasers_on_reading(struct meter *m, const struct reading *r, void *ctx) {
    struct lasers *ls = ctx;
    struct laser *l = lasers_find_channel(ls, r->channel);
    struct laser_sample s;
    uint64_t now;

    (void)m;
    if (l == NULL)
        return;
    now = clock_now_ns(ls->clk);
    memset(&s, 0, sizeof(s));
    s.t_ns = r->t_ns;
    s.time_unix = r->time_unix;
    s.seq = r->seq;
    s.status = r->status;
    s.frequency_thz = r->status == WM_OK ? r->frequency_thz : (double)NAN;
    /* Against where the target is at the reading's time: a ramp moves it
     * between steps (and the feed-forward moves the laser with it). */
    double target_thz = l->lock_on ? pid_target_at(&l->pid, r->t_ns) : l->pid.setpoint_thz;
    s.error_mhz = r->status == WM_OK ? (r->frequency_thz - target_thz) * 1e6 : (double)NAN;
    s.output_v = l->pid.output_v;
    if (!l->lock_on || ls->stopping) {
        laser_note_error(l, s.error_mhz, r->t_ns);
        s.state = l->state;
        hist_push(l, &s);
        if (laser_tune_running(l) && !ls->stopping)
            tune_on_reading(l, r);
        return;
    }
    if (l->state == LOCK_LOST) {
        laser_note_error(l, s.error_mhz, r->t_ns);
        s.state = l->state;
        hist_push(l, &s);
        laser_park_now(l);
        if (r->status == WM_OK && !r->straddled)
            laser_try_relock(l, (r->frequency_thz - l->pid.setpoint_thz) * 1e6, r->t_ns);
        return;
    }
    if (!actdev_ready(l->dev)) {
        /* The device is away (fault) or not open yet: nothing to write to,
         * the output stays where it was held. */
        laser_note_error(l, s.error_mhz, r->t_ns);
        s.state = l->state;
        hist_push(l, &s);
        return;
    }
    /* Bad, stale or straddling readings never reach the controller. */
    const char *bad = NULL;
    char why[96];
    if (r->status != WM_OK) {
        snprintf(why, sizeof(why), "reading %s", wm_status_name(r->status));
        bad = why;
    } else if (r->straddled) {
        bad = "reading straddles a switch";
    } else if ((double)(now - r->t_ns) * 1e-9 > l->cfg->stale_s) {
        snprintf(why, sizeof(why), "reading %.1f s old", (double)(now - r->t_ns) * 1e-9);
        bad = why;
    }
    if (bad) {
        /* A step still in flight must not undo the hold when it lands. */
        pid_hold(&l->pid);
        pid_ramp_pause(&l->pid, r->t_ns);
        l->pid_gen++;
        l->held_during_job = l->busy;
        /* After a gap, "locked" needs locked_after fresh readings again. */
        l->in_tolerance = 0;
        l->out_tolerance = 0;
        l->error_mhz = (double)NAN; /* no current reading; error_t_ns dates the last */
        laser_set_state(l, LOCK_HOLDING, "%s: output held at %.4f V", bad, l->pid.output_v);
        s.state = l->state;
        hist_push(l, &s);
        return;
    }
    if (l->fresh_engage && !l->busy) { /* busy: the next reading decides */
        l->fresh_engage = false;
        if (fabs(s.error_mhz) > l->cfg->capture_mhz && l->cfg->large_step == LARGE_STEP_RAMP) {
            laser_engage_far(l, r);
            s.error_mhz = (r->frequency_thz - l->pid.target_thz) * 1e6;
        }
    }
    if (fabs(s.error_mhz) > l->cfg->capture_mhz) {
        /* Outside the capture range the loop stops chasing: no step, the
         * integrator frozen, the output where it is (a step in flight from
         * the reading before still lands). lost_after such readings in a
         * row make "lost" (laser_evaluate). */
        double was = l->error_mhz;

        if (l->outside_capture == 0)
            l->capture_jump_mhz = isfinite(was) ? s.error_mhz - was : (double)NAN;
        pid_hold(&l->pid);
        pid_ramp_pause(&l->pid, r->t_ns);
        l->pid_gen++;
        l->held_during_job = l->busy;
        laser_note_error(l, s.error_mhz, r->t_ns);
        l->in_tolerance = 0;
        l->out_tolerance++;
        if (++l->outside_capture >= l->cfg->lost_after)
            laser_lost_capture(l, s.error_mhz, r->t_ns);
        else
            laser_set_state(l, LOCK_HOLDING,
                            "error %.1f MHz outside the %.0f MHz capture range: output held at "
                            "%.4f V (%d of %d readings before lost)",
                            s.error_mhz, l->cfg->capture_mhz, l->pid.output_v, l->outside_capture,
                            l->cfg->lost_after);
        s.state = l->state;
        hist_push(l, &s);
        return;
    }
    s.state = l->state;
    hist_push(l, &s);
    if (l->busy)
        return; /* one step in flight; this reading is not queued behind it */
    l->job_pid = l->pid;
    l->job_step = true;
    l->job_measured_thz = r->frequency_thz;
    l->job_t_ns = r->t_ns;
    laser_job_start(l);
}

/* ---- client changes ---- */

bool laser_has_actuator(const struct laser *l) {
    return l->act != NULL;
}

int laser_set_setpoint(struct laser *l, double setpoint_thz, double ramp_mhz_per_s,
                       laser_change_cb cb, void *arg) {
    if (!isfinite(setpoint_thz) || setpoint_thz < l->cfg->min_thz || setpoint_thz > l->cfg->max_thz)
        return -ERANGE;
    if (!isfinite(ramp_mhz_per_s) || ramp_mhz_per_s < 0)
        return -EINVAL;
    const struct laser_config *c = l->cfg;
    double step_mhz = fabs(setpoint_thz - l->pid.setpoint_thz) * 1e6;
    /* How far the target moves from where it is now (mid-ramp included). */
    double move_mhz = fabs(setpoint_thz - l->pid.target_thz) * 1e6, rate = ramp_mhz_per_s;
    bool large = l->lock_on && move_mhz > c->capture_mhz &&
                 (rate == 0 || rate > c->large_step_rate_mhz_per_s);

    /* A commanded jump beyond the capture range is a move, not a loss: a
     * ramp at large_step_rate_mhz_per_s, followed with feed-forward (or
     * refused, by config). */
    if (large && c->large_step == LARGE_STEP_REFUSE)
        return -EDOM;
    /* The laser's own rate (the client's, or the one it had) outlives a
     * large step's. */
    l->rate_after_move = ramp_mhz_per_s;
    l->large_move = large;
    if (large)
        rate = c->large_step_rate_mhz_per_s;
    pid_set_setpoint(&l->pid, setpoint_thz, rate, now_ns(l));
    /* A laser on its old setpoint is not "locked" on the new one. */
    if ((l->state == LOCK_LOCKED || l->state == LOCK_RAMPING) && step_mhz > c->tolerance_mhz) {
        if (rate > 0 && !pid_ramp_done(&l->pid)) {
            laser_set_state(l, LOCK_RAMPING, "following the setpoint at %g MHz/s, %.1f MHz to go",
                            rate, (setpoint_thz - l->pid.target_thz) * 1e6);
            lasers_ramp_kick(l->owner);
        } else
            laser_set_state(l, LOCK_ACQUIRING, "setpoint moved by %.3f MHz", step_mhz);
    }
    l->pid.ramp_mhz_per_s = rate;
    l->pid_gen++;
    l->in_tolerance = 0;
    if (large)
        log_info("laser \"%s\": setpoint %.9f THz, %.1f MHz away: a ramp at %g MHz/s "
                 "(large_step_rate_mhz_per_s)",
                 c->name, setpoint_thz, move_mhz, rate);
    else
        log_info("laser \"%s\": setpoint %.9f THz, ramp %g MHz/s", c->name, setpoint_thz,
                 ramp_mhz_per_s);
    return laser_commit(l, cb, arg);
}

int laser_lock(struct laser *l, bool on, laser_change_cb cb, void *arg) {
    if (on && l->act == NULL)
        return -ENOTSUP;
    /* Restart "off" on a device that cannot tell its output: a lock would
     * start from a number the actuator does not have, and its first write
     * would jump the laser there. */
    if (on && !l->output_known)
        return -ENXIO;
    if (l->dev != NULL && l->dev->state == ACTDEV_FAULT) {
        /* The device is away: the wish is kept (and saved) and the laser
         * stays in fault. When the device is back its held output is
         * written and, if wanted, the lock resumes from there. */
        if (on && !l->lock_on)
            l->relocks = 0;
        if (on)
            l->output_owned = true;
        laser_want_lock(l, on);
        return laser_commit(l, cb, arg);
    }
    if (on && laser_tune_running(l))
        tune_cancel(l, "a client locked the laser");
    if (on && (!l->lock_on || l->state == LOCK_LOST || l->state == LOCK_FAULT)) {
        /* Locking a lost laser again is how a user says "try again from here". */
        laser_want_lock(l, true);
        l->relocks = 0;
        laser_engage(l, l->pid.setpoint_thz);
        laser_set_state(l, LOCK_ACQUIRING, "locked by a client at %.4f V", l->pid.output_v);
    } else if (!on && l->lock_on) {
        laser_want_lock(l, false);
        l->park_pending = false;
        pid_hold(&l->pid);
        l->pid_gen++;
        laser_set_state(l, LOCK_OFF, "unlocked by a client, output held at %.4f V",
                        l->pid.output_v);
    }
    return laser_commit(l, cb, arg);
}

/* New gains (or a new sensitivity): bumpless, the back-off and the
 * detector start afresh, and they are checked against the revisit period. */
static void laser_new_gains(struct laser *l, const struct pid_params *p, const char *when) {
    pid_set_params(&l->pid, p);
    l->pid.gain_scale = 1.0;
    pid_osc_reset(&l->osc);
    l->bound_logged = false;
    l->pid_gen++;
    laser_check_gains(l, when);
}

int laser_set_gains(struct laser *l, double kp, double ki, double kd, laser_change_cb cb,
                    void *arg) {
    struct pid_params p = l->pid.p;

    if (!isfinite(kp) || !isfinite(ki) || !isfinite(kd) || kp < 0 || ki < 0 || kd < 0)
        return -ERANGE;
    p.kp_v_per_mhz = kp;
    p.ki_v_per_mhz_s = ki;
    p.kd_v_s_per_mhz = kd;
    log_info("laser \"%s\": gains kp %g V/MHz, ki %g V/(MHz s), kd %g V s/MHz", l->cfg->name, kp,
             ki, kd);
    laser_new_gains(l, &p, "set by a client");
    return laser_commit(l, cb, arg);
}

int laser_set_output(struct laser *l, double output_v, laser_change_cb cb, void *arg) {
    struct laser_change *ch;

    if (l->act == NULL)
        return -ENOTSUP;
    if (l->lock_on)
        return -EPERM;
    if (!isfinite(output_v) || output_v < l->cfg->output_min_v || output_v > l->cfg->output_max_v)
        return -ERANGE;
    if (laser_tune_running(l) && !l->busy)
        tune_cancel(l, "a client set the output");
    if (l->busy)
        return -EBUSY;
    if (!actdev_ready(l->dev))
        return -ENODEV;
    if ((ch = calloc(1, sizeof(*ch))) == NULL)
        return -ENOMEM;
    ch->cb = cb;
    ch->arg = arg;
    l->job_step = false;
    l->job_output_v = output_v;
    l->job_waiter = ch;
    laser_job_start(l);
    if (!l->busy) {
        l->job_waiter = NULL;
        free(ch);
        return -EIO;
    }
    return 0;
}

/* ---- autotune ---- */

/*
 * Why these numbers. 48 readings of the held laser give its noise and drift
 * to about 20% (the variance of a difference, fitted over 1 to 8 readings
 * apart). A step has settled when the mean of its last 4 readings is within
 * 3 sigma/sqrt(2) (or 2% of the step) of the 4 before, from 8 readings on.
 * The laser should move 40 sigma at least (20 MHz at the simulator's
 * 0.5 MHz) and 30 MHz: then S is good to a few percent against the
 * drift during the step; a smaller move is tried again with a 4x larger step
 * (twice at most), within the output limits.
 */
#define TUNE_FIT_SPAN 8
#define TUNE_SETTLE_READINGS 4
#define TUNE_MIN_MOVE_SIGMA 40.0
#define TUNE_MIN_MOVE_MHZ 30.0
#define TUNE_MAX_GROWTHS 2
#define TUNE_BAD_MAX 50
/* The laser should move about this much with the default step. */
#define TUNE_DEFAULT_MOVE_MHZ 50.0
/* The integrator gain proposed stays within [TUNE_GI_MIN, PID_GI_SAFE]: a
 * laser with no measurable drift still locks in tens of readings. The lag
 * rule keeps a laser that follows only after L readings from overshooting
 * (for a dead time of L readings no overshoot needs gI <= L^L/(L+1)^(L+1),
 * 0.25 at 1; a first-order lag is gentler). */
#define TUNE_GI_MIN 0.1
#define TUNE_LAG_K 2.5

static const char *const tune_names[] = {
    [TUNE_NONE] = "none",       [TUNE_HOLD] = "holding",        [TUNE_OUT] = "stepping",
    [TUNE_RESET] = "resetting", [TUNE_BACK] = "stepping back",  [TUNE_DONE] = "done",
    [TUNE_FAILED] = "failed",   [TUNE_CANCELLED] = "cancelled",
};

const char *laser_tune_phase_name(enum tune_phase p) {
    return tune_names[p];
}

bool laser_tune_running(const struct laser *l) {
    return l->tune.phase == TUNE_HOLD || l->tune.phase == TUNE_OUT || l->tune.phase == TUNE_RESET ||
           l->tune.phase == TUNE_BACK;
}

static void tune_notify(struct laser *l) {
    if (l->owner->on_state)
        l->owner->on_state(l, l->owner->state_ctx);
}

/* A new phase with its progress line (laser.get, the locks push, the reason). */
static void tune_phase(struct laser *l, enum tune_phase ph, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void tune_phase(struct laser *l, enum tune_phase ph, const char *fmt, ...) {
    va_list ap;

    l->tune.phase = ph;
    va_start(ap, fmt);
    vsnprintf(l->tune.detail, sizeof(l->tune.detail), fmt, ap);
    va_end(ap);
    if (!l->lock_on)
        laser_set_state(l, l->state, "autotune %s: %s", tune_names[ph], l->tune.detail);
    log_info("laser \"%s\": autotune %s: %s", l->cfg->name, tune_names[ph], l->tune.detail);
    tune_notify(l);
}

static void tune_write(struct laser *l, double v) {
    l->job_step = false;
    l->job_output_v = v;
    l->tune.writing = true;
    l->tune.n = 0;
    laser_job_start(l);
    if (!l->busy) {
        l->tune.writing = false;
        tune_cancel(l, "the actuator is not open");
    }
}

/* The run is over: the schedule goes back to what the lock wants. */
static void tune_finish(struct laser *l) {
    laser_want_lock(l, l->lock_on);
}

static void tune_fail(struct laser *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void tune_fail(struct laser *l, const char *fmt, ...) {
    char why[sizeof(l->tune.detail)];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    log_warnx("laser \"%s\": autotune failed: %s", l->cfg->name, why);
    tune_phase(l, TUNE_FAILED, "%s; output back at %.4f V", why, l->tune.base_v);
    tune_finish(l);
    /* Back where it started (nothing else writes: the laser is unlocked). */
    if (!l->busy && actdev_ready(l->dev) && l->pid.output_v != l->tune.base_v) {
        l->job_step = false;
        l->job_output_v = l->tune.base_v;
        laser_job_start(l);
    }
}

static void tune_cancel(struct laser *l, const char *why) {
    log_notice("laser \"%s\": autotune cancelled: %s", l->cfg->name, why);
    l->tune.writing = false;
    tune_phase(l, TUNE_CANCELLED, "%s", why);
    tune_finish(l);
}

static double tune_mean(const struct laser_tune *t, int from, int to) {
    double sum = 0;

    for (int k = from; k < to; k++)
        sum += t->y_mhz[k];
    return sum / (to - from);
}

/*
 * Noise and drift from the held readings: a reading is the laser (a random
 * walk, q = drift^2 dt per reading) plus white noise R, so the mean square
 * of differences m readings apart is 2R + m q. A least-squares line over
 * m = 1..TUNE_FIT_SPAN gives both; dt is the mean spacing.
 */
static void tune_noise(struct laser *l) {
    struct laser_tune *t = &l->tune;
    double sm = 0, sv = 0, smm = 0, smv = 0, q, r2, dt_s;
    int nm = TUNE_FIT_SPAN;

    for (int m = 1; m <= nm; m++) {
        double v = 0;
        for (int k = m; k < t->n; k++)
            v += (t->y_mhz[k] - t->y_mhz[k - m]) * (t->y_mhz[k] - t->y_mhz[k - m]);
        v /= t->n - m;
        sm += m;
        sv += v;
        smm += (double)m * m;
        smv += m * v;
    }
    q = (nm * smv - sm * sv) / (nm * smm - sm * sm);
    r2 = (sv - q * sm) / nm;
    if (q < 0)
        q = 0;
    dt_s = (double)(t->t_ns[t->n - 1] - t->t_ns[0]) * 1e-9 / (t->n - 1);
    t->res.dt_s = dt_s;
    t->res.noise_mhz = sqrt(fmax(r2 / 2, 0.0));
    t->res.drift_mhz_per_sqrt_s = dt_s > 0 ? sqrt(q / dt_s) : 0;
}

/* How long the laser took to follow: the area over the unsettled fraction
 * of the step (a first-order lag's time constant), from the write. */
static double tune_lag_s(const struct laser_tune *t, double from_mhz, double to_mhz) {
    double area = 0;
    uint64_t prev = t->write_ns;

    for (int k = 0; k < t->n; k++) {
        double frac = (t->y_mhz[k] - from_mhz) / (to_mhz - from_mhz);
        frac = frac < 0 ? 0 : frac > 1 ? 1 : frac;
        area += (1 - frac) * (double)(t->t_ns[k] - prev) * 1e-9;
        prev = t->t_ns[k];
    }
    return area;
}

/* The proposal: the Kalman gain for the measured noise, drift and dt (the
 * best an integrator can do), within the safe region and the lag rule. */
static void tune_propose(struct laser *l) {
    struct laser_tune_result *res = &l->tune.res;
    double k, s_abs = fabs(res->sensitivity_mhz_per_v);

    pid_kalman(res->noise_mhz, res->drift_mhz_per_sqrt_s, res->dt_s, &res->kalman_mhz, &k);
    res->gi = fmin(fmax(k, TUNE_GI_MIN), PID_GI_SAFE);
    res->gi = fmin(res->gi, fmax(TUNE_GI_MIN, 1.0 / (1.0 + TUNE_LAG_K * res->lag_readings)));
    res->expected_mhz =
        pid_i_error_mhz(res->gi, res->noise_mhz, res->drift_mhz_per_sqrt_s, res->dt_s);
    res->kp_v_per_mhz = 0;
    res->kd_v_s_per_mhz = 0;
    res->ki_v_per_mhz_s = res->gi / (s_abs * res->dt_s);
}

static void tune_done(struct laser *l) {
    struct laser_tune *t = &l->tune;
    struct laser_tune_result *res = &t->res;
    double so = res->s_out_mhz_per_v, sb = res->s_back_mhz_per_v;

    if (so * sb <= 0 || !isfinite(so) || !isfinite(sb)) {
        tune_fail(l,
                  "the two steps moved the laser %+.4g and %+.4g MHz/V: a mode hop or an "
                  "actuator that does not move it?",
                  so, sb);
        return;
    }
    /* The mean: a steady drift adds to one step what it takes from the
     * other. The difference is the hysteresis, reported. */
    res->sensitivity_mhz_per_v = (so + sb) / 2;
    res->hysteresis = (fabs(so) - fabs(sb)) / fmax(fabs(so), fabs(sb));
    res->lag_readings = fmax(t->lag_out_s, t->lag_back_s) / res->dt_s;
    if (!(res->dt_s > 0) || !(fabs(res->sensitivity_mhz_per_v) > 0)) {
        tune_fail(l, "no usable revisit period or sensitivity");
        return;
    }
    tune_propose(l);
    if (t->apply) {
        struct pid_params p = l->pid.p;
        p.sensitivity_mhz_per_v = res->sensitivity_mhz_per_v;
        p.kp_v_per_mhz = res->kp_v_per_mhz;
        p.ki_v_per_mhz_s = res->ki_v_per_mhz_s;
        p.kd_v_s_per_mhz = res->kd_v_s_per_mhz;
        laser_new_gains(l, &p, "set by autotune");
        t->applied = true;
        store_save(&l->owner->store, NULL, NULL, NULL);
    }
    log_notice("laser \"%s\": autotune: S %+.4g MHz/V (away %+.4g, back %+.4g), lag %.2g "
               "readings, noise %.3g MHz, drift %.3g MHz/sqrt(s), dt %.3g s: ki %.4g V/(MHz s) "
               "(gI %.3g), expected error %.3g MHz, Kalman bound %.3g MHz%s",
               l->cfg->name, res->sensitivity_mhz_per_v, so, sb, res->lag_readings, res->noise_mhz,
               res->drift_mhz_per_sqrt_s, res->dt_s, res->ki_v_per_mhz_s, res->gi,
               res->expected_mhz, res->kalman_mhz, t->applied ? "; applied" : "");
    tune_phase(l, TUNE_DONE, "S %+.4g MHz/V, ki %.4g V/(MHz s), kp 0, kd 0%s",
               res->sensitivity_mhz_per_v, res->ki_v_per_mhz_s,
               t->applied ? ", applied" : ": not applied (apply: true applies)");
    tune_finish(l);
}

/* A step has settled; returns its level (MHz), or NAN while it moves. */
static double tune_settled(const struct laser_tune *t) {
    int n = t->n, w = TUNE_SETTLE_READINGS;
    double last, before, tol;

    if (n < 2 * w)
        return (double)NAN;
    last = tune_mean(t, n - w, n);
    before = tune_mean(t, n - 2 * w, n - w);
    tol = fmax(3.0 * t->res.noise_mhz * sqrt(2.0 / w), 0.02 * fabs(last - t->level_mhz));
    return fabs(last - before) <= fmax(tol, 1e-6) ? last : (double)NAN;
}

static void tune_on_reading(struct laser *l, const struct reading *r) {
    struct laser_tune *t = &l->tune;
    double level;

    if (t->writing)
        return; /* the step is on its way */
    if (r->status != WM_OK || r->straddled || !isfinite(r->frequency_thz)) {
        if (++t->bad > TUNE_BAD_MAX)
            tune_fail(l, "%d unusable readings in a row (last: %s)", t->bad,
                      wm_status_name(r->status));
        return;
    }
    /* Only light taken wholly after the write says where the step went. */
    if (r->t_ns < t->write_ns + (uint64_t)r->exposure_ms * 1000000u)
        return;
    t->bad = 0;
    if (t->n >= TUNE_MAX_READINGS) {
        tune_fail(l, "the laser did not settle within %d readings of a %+.4g V step",
                  TUNE_MAX_READINGS, t->step_v);
        return;
    }
    t->y_mhz[t->n] = (r->frequency_thz - t->ref_thz) * 1e6;
    t->t_ns[t->n] = r->t_ns;
    t->n++;
    switch (t->phase) {
    case TUNE_HOLD:
        if (t->n < TUNE_HOLD_READINGS)
            return;
        tune_noise(l);
        t->level_mhz = tune_mean(t, t->n - 2 * TUNE_SETTLE_READINGS, t->n);
        tune_phase(l, TUNE_OUT,
                   "noise %.3g MHz, drift %.3g MHz/sqrt(s), a reading every %.3g s; output %.4f -> "
                   "%.4f V",
                   t->res.noise_mhz, t->res.drift_mhz_per_sqrt_s, t->res.dt_s, t->base_v,
                   t->base_v + t->step_v);
        tune_write(l, t->base_v + t->step_v);
        return;
    case TUNE_OUT:
        if (isnan(level = tune_settled(t)))
            return;
        if (fabs(level - t->level_mhz) <
                fmax(TUNE_MIN_MOVE_SIGMA * t->res.noise_mhz, TUNE_MIN_MOVE_MHZ) &&
            t->growths < TUNE_MAX_GROWTHS) {
            const struct laser_config *c = l->cfg;
            double room = t->step_v > 0 ? c->output_max_v - t->base_v : t->base_v - c->output_min_v;
            double bigger = copysign(fmin(4 * fabs(t->step_v), room), t->step_v);
            if (fabs(bigger) > fabs(t->step_v) * 1.5) {
                t->growths++;
                tune_phase(l, TUNE_RESET,
                           "a %+.4g V step moved the laser only %.3g MHz; trying %+.4g V",
                           t->step_v, level - t->level_mhz, bigger);
                t->step_v = bigger;
                tune_write(l, t->base_v);
                return;
            }
        }
        t->res.s_out_mhz_per_v = (level - t->level_mhz) / t->step_v;
        t->lag_out_s = tune_lag_s(t, t->level_mhz, level);
        t->level_mhz = level;
        tune_phase(l, TUNE_BACK, "away: %+.4g MHz/V; output %.4f -> %.4f V", t->res.s_out_mhz_per_v,
                   t->base_v + t->step_v, t->base_v);
        tune_write(l, t->base_v);
        return;
    case TUNE_RESET:
        if (isnan(level = tune_settled(t)))
            return;
        t->level_mhz = level;
        tune_phase(l, TUNE_OUT, "output %.4f -> %.4f V", t->base_v, t->base_v + t->step_v);
        tune_write(l, t->base_v + t->step_v);
        return;
    case TUNE_BACK:
        if (isnan(level = tune_settled(t)))
            return;
        t->res.s_back_mhz_per_v = (level - t->level_mhz) / -t->step_v;
        t->lag_back_s = tune_lag_s(t, t->level_mhz, level);
        tune_done(l);
        return;
    default:
        return;
    }
}

int laser_autotune(struct laser *l, double step_v, bool apply) {
    const struct laser_config *c = l->cfg;
    double base = l->pid.output_v, s_abs = fabs(l->pid.p.sensitivity_mhz_per_v), step;

    if (l->act == NULL)
        return -ENOTSUP;
    if (l->lock_on)
        return -EPERM;
    if (!l->output_known)
        return -ENXIO; /* the steps would be from a number, not from where it is */
    if (laser_tune_running(l) || l->busy)
        return -EBUSY;
    if (!actdev_ready(l->dev))
        return -ENODEV;
    if (isnan(step_v)) {
        if (!(s_abs > 0))
            return -ENOTSUP;
        /* About 50 MHz, at most a quarter of the range. */
        step = fmin(TUNE_DEFAULT_MOVE_MHZ / s_abs, 0.25 * (c->output_max_v - c->output_min_v));
    } else {
        step = step_v;
    }
    if (!(step > 0) || !isfinite(step))
        return -ERANGE;
    /* Away from the nearer limit, never past either. */
    bool up = base + step <= c->output_max_v, down = base - step >= c->output_min_v;
    if (!up && !down)
        return -ERANGE;
    if (!up || (down && base - c->output_min_v > c->output_max_v - base))
        step = -step;
    memset(&l->tune, 0, sizeof(l->tune));
    l->tune.apply = apply;
    l->tune.base_v = base;
    l->tune.step_v = step;
    l->tune.ref_thz = l->pid.setpoint_thz;
    l->tune.write_ns = now_ns(l);
    /* Read as often as a lock would be: the period the gains are for. */
    if (l->owner->meter != NULL)
        meter_set_locked(l->owner->meter, c->channel, true);
    log_notice("laser \"%s\": autotune: holding %.4f V for %d readings, then %+.4g V and back%s",
               c->name, base, TUNE_HOLD_READINGS, step, apply ? "; applies the result" : "");
    tune_phase(l, TUNE_HOLD, "%d readings at %.4f V for the noise and drift", TUNE_HOLD_READINGS,
               base);
    return 0;
}

/* ---- life cycle ---- */

/* A device opened or failed: its lasers follow. */
static void lasers_dev_state(struct actdev *d, void *ctx) {
    struct lasers *ls = ctx;

    for (int i = 0; i < ls->n; i++) {
        struct laser *l = &ls->l[i];

        if (l->dev != d || ls->stopping)
            continue;
        if (d->state == ACTDEV_FAULT) {
            if (laser_tune_running(l))
                tune_cancel(l, "the actuator failed");
            pid_hold(&l->pid);
            l->pid_gen++;
            /* The device's path is in actuator_device (laser.get) and
             * usually in the reason too: the driver's name is enough here. */
            laser_set_state(l, LOCK_FAULT, "actuator %s: %s", d->drv->cfg.name, d->reason);
        } else if (d->state == ACTDEV_OPEN && l->state == LOCK_FAULT && !l->busy) {
            if (!l->output_owned) {
                /* Nothing was written this run ("restart": "off"): the
                 * output stays where the device has it. */
                laser_set_state(l, LOCK_OFF, "actuator %s open; output left as it is",
                                d->drv->cfg.name);
                continue;
            }
            /* Put the held output back first (a power-cycled box lost it);
             * its completion resumes the lock from there. */
            l->job_step = false;
            l->job_output_v = l->pid.output_v;
            laser_job_start(l);
        }
    }
}

/* The device of each laser with an actuator: lasers naming the same device
 * (the loader checked they agree on it) share one. No I/O. */
static int lasers_group_devices(struct lasers *ls, char *err, size_t errlen) {
    for (int i = 0; i < ls->n; i++) {
        struct laser *l = &ls->l[i];
        char dev[CONFIG_PATH_MAX], chan[32];
        int rc;

        if (l->act == NULL)
            continue;
        l->act->ident(l->cfg->actuator.drv.u.bytes, l->cfg, dev, sizeof(dev), chan, sizeof(chan));
        for (int j = 0; j < i && l->dev == NULL; j++) {
            struct laser *o = &ls->l[j];
            char odev[CONFIG_PATH_MAX], ochan[32];

            if (o->act != l->act)
                continue;
            o->act->ident(o->cfg->actuator.drv.u.bytes, o->cfg, odev, sizeof(odev), ochan,
                          sizeof(ochan));
            if (strcmp(dev, odev) == 0) {
                l->dev = o->dev;
                actdev_add_laser(l->dev, l->cfg);
            }
        }
        if (l->dev != NULL)
            continue;
        l->dev = &ls->devs[ls->ndevs];
        rc = actdev_init(l->dev, ls->loop, l->act, l->cfg, ls->meter->drv, ls->meter->dev, dev,
                         lasers_dev_state, ls);
        if (rc < 0) {
            snprintf(err, errlen, "laser \"%s\": actuator timer: %s", l->cfg->name,
                     uv_strerror(rc));
            return rc;
        }
        ls->ndevs++;
    }
    return 0;
}

/*
 * While a locked laser follows a ramp, its output follows the target between
 * readings too: every RAMP_FF_MS, a laser whose last write is older than
 * that gets the target's walk since (pid_feed_forward) written, so a long
 * gap between its readings (other lasers read in between) does not leave it
 * behind. A reading that comes while such a write runs is not stepped (one
 * job at a time), so writes fill gaps only.
 */
#define RAMP_FF_MS 20

static void ramp_timer_cb(uv_timer_t *t) {
    struct lasers *ls = t->data;
    bool any = false;

    for (int i = 0; i < ls->n && !ls->stopping; i++) {
        struct laser *l = &ls->l[i];
        uint64_t now = now_ns(l);

        if (!l->lock_on || l->state != LOCK_RAMPING || pid_ramp_done(&l->pid))
            continue;
        any = true;
        if (l->error_t_ns != 0 && now > l->error_t_ns &&
            (double)(now - l->error_t_ns) * 1e-9 > l->cfg->stale_s) {
            /* No reading for stale_s: no open-loop driving; the ramp waits
             * for the readings (and the next one finds it where it was). */
            pid_ramp_pause(&l->pid, now);
            continue;
        }
        if (l->busy || !actdev_ready(l->dev) ||
            (now > l->job_write_ns && now - l->job_write_ns < RAMP_FF_MS * 1000000ull))
            continue;
        if (pid_feed_forward(&l->pid, now) == 0.0)
            continue;
        l->job_step = false;
        l->job_ff = true;
        l->job_output_v = l->pid.output_v;
        laser_job_start(l);
        if (!l->busy)
            l->job_ff = false; /* the device took no job: nothing was written */
    }
    if (!any || ls->stopping) {
        uv_timer_stop(t);
        ls->ramp_timer_on = false;
    }
}

static void lasers_ramp_kick(struct lasers *ls) {
    if (ls->ramp_timer_on || ls->stopping)
        return;
    ls->ramp_timer_on = true;
    uv_timer_start(&ls->ramp_timer, ramp_timer_cb, RAMP_FF_MS, RAMP_FF_MS);
}

/* Every FRESH_TICK_MS (or state_save_interval_s, when shorter): an output
 * that moved is saved now; any other change to the outputs once
 * state_save_interval_s has passed since the last save. */
static void save_timer_cb(uv_timer_t *t) {
    struct lasers *ls = t->data;
    uint64_t every_ms = (uint64_t)(ls->cfg->state_save_interval_s * 1000);

    if (ls->stopping)
        return;
    if (ls->fresh_due ||
        (ls->outputs_dirty && uv_now(ls->loop) - ls->last_save_ms + FRESH_TICK_MS / 2 >= every_ms))
        store_save(&ls->store, NULL, NULL, NULL);
}

int lasers_init(struct lasers *ls, uv_loop_t *loop, const struct config *cfg,
                const struct clock *clk, struct meter *meter, const char *state_dir, char *err,
                size_t errlen) {
    json_t *state = NULL, *saved_lasers = NULL;
    char lerr[512];
    int rc;

    memset(ls, 0, sizeof(*ls));
    ls->loop = loop;
    ls->cfg = cfg;
    ls->clk = clk;
    ls->meter = meter;
    store_init(&ls->store, loop, state_dir, lasers_snapshot, ls);
    ls->store.on_failed = lasers_save_failed;
    rc = store_load(&ls->store, &state, lerr, sizeof(lerr));
    if (rc == 0) {
        saved_lasers = json_object_get(state, "lasers");
        log_info("state: loaded %s", ls->store.path);
    } else if (rc == -ENOENT) {
        log_info("state: no %s yet; starting from the config", ls->store.path);
    } else {
        log_error("state: %s; starting from the config", lerr);
    }
    for (int i = 0; i < cfg->nlasers; i++) {
        struct laser *l = &ls->l[i];
        const struct laser_config *c = &cfg->lasers[i];

        l->owner = ls;
        l->cfg = c;
        l->error_mhz = (double)NAN;
        l->state = LOCK_OFF;
        snprintf(l->reason, sizeof(l->reason), "not locked");
        l->since_unix = clk->wall_s(clk->ctx);
        /* No driver is monitor only; the loader knows every name. */
        l->act = act_driver_find(c->actuator.drv.driver);
        l->readback_v = (double)NAN;
        l->saved_output_v = (double)NAN;
        l->output_known = true;
        l->expected_dt_s = (double)NAN;
        l->pid.gain_scale = 1.0;
        if (c->history_depth > 0 &&
            (l->hist = calloc((size_t)c->history_depth, sizeof(*l->hist))) == NULL) {
            snprintf(err, errlen, "laser \"%s\": out of memory for history", c->name);
            rc = -ENOMEM;
            goto fail;
        }
        ls->n++;
    }
    if ((rc = lasers_group_devices(ls, err, errlen)) < 0)
        goto fail;
    for (int i = 0; i < ls->n; i++)
        laser_restore(&ls->l[i],
                      saved_lasers ? json_object_get(saved_lasers, ls->l[i].cfg->name) : NULL);
    /* Every lock wish is known now, so the schedule's periods are. */
    for (int i = 0; i < ls->n; i++)
        laser_check_gains(&ls->l[i], "at start-up");
    json_decref(state);
    uv_timer_init(loop, &ls->save_timer);
    ls->save_timer.data = ls;
    uv_timer_init(loop, &ls->ramp_timer);
    ls->ramp_timer.data = ls;
    uint64_t every_ms = (uint64_t)(cfg->state_save_interval_s * 1000);
    if (every_ms > FRESH_TICK_MS)
        every_ms = FRESH_TICK_MS;
    uv_timer_start(&ls->save_timer, save_timer_cb, every_ms, every_ms);
    /* Write the file at once: a start from the config is acknowledged too. */
    store_save(&ls->store, NULL, NULL, NULL);
    /* The restores' writes wait in their devices' queues for the opens. */
    for (int i = 0; i < ls->ndevs; i++)
        actdev_start(&ls->devs[i]);
    return 0;
fail:
    json_decref(state);
    for (int i = 0; i < ls->ndevs; i++)
        uv_close((uv_handle_t *)&ls->devs[i].retry, NULL);
    for (int i = 0; i < CONFIG_MAX_LASERS; i++)
        free(ls->l[i].hist);
    return rc;
}

static void save_timer_closed(uv_handle_t *h) {
    struct lasers *ls = h->data;

    if (ls->on_stopped)
        ls->on_stopped(ls);
}

static void lasers_final_saved(struct store *st) {
    struct lasers *ls = (struct lasers *)((char *)st - offsetof(struct lasers, store));

    uv_close((uv_handle_t *)&ls->ramp_timer, NULL);
    uv_close((uv_handle_t *)&ls->save_timer, save_timer_closed);
}

static void lasers_check_stopped(struct lasers *ls) {
    if (!ls->stopping || ls->on_stopped == NULL)
        return;
    for (int i = 0; i < ls->n; i++)
        if (ls->l[i].busy)
            return;
    if (ls->devs_stopped < ls->ndevs)
        return;
    if (uv_is_closing((uv_handle_t *)&ls->save_timer) || ls->store.on_idle)
        return;
    /* Every job is done: save the outputs a last time, then close. */
    store_save(&ls->store, NULL, NULL, NULL);
    store_when_idle(&ls->store, lasers_final_saved);
}

static void lasers_dev_stopped(struct actdev *d) {
    struct lasers *ls = d->ctx;

    ls->devs_stopped++;
    lasers_check_stopped(ls);
}

void lasers_stop(struct lasers *ls, void (*cb)(struct lasers *ls)) {
    ls->stopping = true;
    ls->on_stopped = cb;
    uv_timer_stop(&ls->save_timer);
    uv_timer_stop(&ls->ramp_timer);
    /* Jobs running finish; jobs waiting and reopens are dropped. */
    for (int i = 0; i < ls->ndevs; i++)
        actdev_stop(&ls->devs[i], lasers_dev_stopped);
    lasers_check_stopped(ls);
}

/* Before the meter's fini: a device may act through the wavemeter. */
void lasers_fini(struct lasers *ls) {
    for (int i = 0; i < ls->ndevs; i++)
        actdev_fini(&ls->devs[i]);
    for (int i = 0; i < ls->n; i++) {
        free(ls->l[i].hist);
        ls->l[i].hist = NULL;
    }
}

struct laser *lasers_find(struct lasers *ls, const char *name) {
    for (int i = 0; i < ls->n; i++)
        if (strcmp(ls->l[i].cfg->name, name) == 0)
            return &ls->l[i];
    return NULL;
}

struct laser *lasers_find_channel(struct lasers *ls, int channel) {
    for (int i = 0; i < ls->n; i++)
        if (ls->l[i].cfg->channel == channel)
            return &ls->l[i];
    return NULL;
}

int lasers_jobs(const struct lasers *ls) {
    int n = ls->store.busy ? 1 : 0;

    for (int i = 0; i < ls->n; i++)
        n += ls->l[i].busy;
    return n;
}
