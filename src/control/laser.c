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
static void lasers_check_stopped(struct lasers *ls);

static const char *const state_names[] = {
    [LOCK_OFF] = "off",         [LOCK_ACQUIRING] = "acquiring", [LOCK_LOCKED] = "locked",
    [LOCK_HOLDING] = "holding", [LOCK_RAILED] = "railed",       [LOCK_LOST] = "lost",
    [LOCK_FAULT] = "fault",
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
    log_msg(s == LOCK_LOST || s == LOCK_FAULT ? LOG_LVL_WARNING : LOG_LVL_NOTICE,
            "laser \"%s\": %s -> %s: %s", l->cfg->name, state_names[l->state], state_names[s],
            reason);
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
        const struct laser *l = &ls->l[i];
        json_object_set_new(all, l->cfg->name,
                            json_pack("{s:f, s:f, s:f, s:f, s:f, s:b, s:f}", "setpoint_thz",
                                      l->pid.setpoint_thz, "ramp_mhz_per_s", l->pid.ramp_mhz_per_s,
                                      "kp_v_per_mhz", l->pid.p.kp_v_per_mhz, "ki_v_per_mhz_s",
                                      l->pid.p.ki_v_per_mhz_s, "kd_v_s_per_mhz",
                                      l->pid.p.kd_v_s_per_mhz, "lock", l->lock_on, "output_v",
                                      l->pid.output_v));
    }
    ls->outputs_dirty = false;
    return json_pack("{s:i, s:f, s:o}", "version", STATE_VERSION, "saved_unix",
                     ls->clk->wall_s(ls->clk->ctx), "lasers", all);
}

/* The snapshot cleared outputs_dirty; it did not reach the disk, so the
 * periodic save must try again (a full disk may have room by then). */
static void lasers_save_failed(void *ctx) {
    struct lasers *ls = ctx;

    ls->outputs_dirty = true;
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
        /* Unlocked, and the actuator is left as it is: nothing is written. */
        laser_want_lock(l, false);
        return;
    }
    /* Put the actuator where the saved output says (hardware that kept its
     * voltage sees the same value again), then lock from there, bumpless. */
    l->job_step = false;
    l->job_output_v = l->pid.output_v;
    laser_job_start(l);
    if (l->lock_on) {
        pid_engage(&l->pid, l->pid.output_v, setpoint, now_ns(l));
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

/* ---- the lock state machine ---- */

static void laser_evaluate(struct laser *l, double error_mhz, uint64_t t_ns) {
    const struct laser_config *c = l->cfg;
    double abs_e = fabs(error_mhz);

    l->outside_capture = abs_e > c->capture_mhz ? l->outside_capture + 1 : 0;
    if (l->outside_capture >= c->lost_after) {
        l->lost_ns = t_ns;
        laser_set_state(l, LOCK_LOST,
                        "error %.1f MHz outside the %.0f MHz capture range for %d readings",
                        error_mhz, c->capture_mhz, l->outside_capture);
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
    if (l->state != LOCK_LOCKED || l->out_tolerance > 0)
        laser_set_state(l, LOCK_ACQUIRING, "error %.3f MHz, tolerance %.3g MHz", error_mhz,
                        c->tolerance_mhz);
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
    pid_engage(&l->pid, l->pid.output_v, target_thz, now_ns(l));
    l->pid_gen++;
}

static struct laser *job_laser(struct actdev_job *j) {
    return (struct laser *)(void *)((char *)j - offsetof(struct laser, job));
}

/* Pool thread: the controller step on the copy, then the write. */
static void laser_work(struct actdev_job *j, void *handle) {
    struct laser *l = job_laser(j);

    l->job_rc = 0;
    l->job_io.readback_v = (double)NAN;
    l->job_io.why[0] = '\0';
    if (l->job_step) {
        l->job_result = pid_step(&l->job_pid, l->job_measured_thz, l->job_t_ns, &l->job_output_v,
                                 &l->job_error_mhz);
        if (l->job_result == PID_REFUSED)
            return;
    }
    l->job_rc = l->act->write(handle, l->cfg->actuator.drv.u.bytes, l->cfg, l->job_output_v,
                              l->cfg->actuator.timeout_ms, &l->job_io);
}

static void laser_after_work(struct actdev_job *j, int status) {
    struct laser *l = job_laser(j);
    struct laser_change *waiter = l->job_waiter;
    int rc = status < 0 ? status : l->job_rc;
    bool held = l->held_during_job;

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
        lasers_check_stopped(l->owner);
        return;
    }
    if (l->job_step && l->job_result == PID_REFUSED) {
        lasers_check_stopped(l->owner); /* nothing was written */
        return;
    }
    l->writes++;
    l->readback_v = l->job_io.readback_v;
    l->owner->outputs_dirty = true;
    if (!l->job_step) {
        /* A plain write: set_output, a restart or a relock. The controller
         * takes the new output as its own, bumpless, and a setpoint ramp in
         * progress goes on from where its target is. */
        pid_engage(&l->pid, l->job_output_v, l->pid.target_thz, now_ns(l));
        if (l->state == LOCK_FAULT) {
            /* The device is back: the lock resumes from the output it held. */
            laser_reset_counts(l);
            laser_set_state(l, l->lock_on ? LOCK_ACQUIRING : LOCK_OFF,
                            "actuator writes again, from %.4f V", l->job_output_v);
        }
        if (waiter) {
            store_save(&l->owner->store, &waiter->w, change_durable, waiter);
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
    l->error_mhz = l->job_error_mhz;
    struct laser_sample *s = hist_last(l);
    if (s && s->t_ns == l->job_t_ns) {
        s->output_v = l->pid.output_v;
        s->error_mhz = l->job_error_mhz;
    }
    /* A bad reading that came in while the step ran is newer news: the
     * laser stays holding until the next good reading. */
    if (l->lock_on && l->state != LOCK_LOST && !l->owner->stopping && !held)
        laser_evaluate(l, l->job_error_mhz, l->job_t_ns);
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
        l->output_owned = true;
    }
}

static void laser_try_relock(struct laser *l, uint64_t t_ns) {
    const struct laser_config *c = l->cfg;

    if (!c->auto_relock || l->relocks >= c->relock_attempts || l->busy)
        return;
    if ((double)(t_ns - l->lost_ns) * 1e-9 < c->relock_delay_s)
        return;
    l->relocks++;
    laser_reset_counts(l);
    l->job_step = false;
    l->job_output_v = l->have_locked_output ? l->locked_output_v : l->pid.output_v;
    laser_set_state(l, LOCK_ACQUIRING, "relock attempt %d of %d from %.4f V", l->relocks,
                    c->relock_attempts, l->job_output_v);
    /* Aim straight at the setpoint; the laser's ramp rate stays for later
     * setpoint changes. */
    double ramp = l->pid.ramp_mhz_per_s;
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
    s.error_mhz =
        r->status == WM_OK
            ? (r->frequency_thz - (l->lock_on ? l->pid.target_thz : l->pid.setpoint_thz)) * 1e6
            : (double)NAN;
    s.output_v = l->pid.output_v;
    if (!l->lock_on || ls->stopping) {
        l->error_mhz = s.error_mhz;
        s.state = l->state;
        hist_push(l, &s);
        return;
    }
    if (l->state == LOCK_LOST) {
        l->error_mhz = s.error_mhz;
        s.state = l->state;
        hist_push(l, &s);
        laser_try_relock(l, r->t_ns);
        return;
    }
    if (!actdev_ready(l->dev)) {
        /* The device is away (fault) or not open yet: nothing to write to,
         * the output stays where it was held. */
        l->error_mhz = s.error_mhz;
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
        l->pid_gen++;
        l->held_during_job = l->busy;
        /* After a gap, "locked" needs locked_after fresh readings again. */
        l->in_tolerance = 0;
        l->out_tolerance = 0;
        laser_set_state(l, LOCK_HOLDING, "%s: output held at %.4f V", bad, l->pid.output_v);
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
    double step_mhz = fabs(setpoint_thz - l->pid.setpoint_thz) * 1e6;

    pid_set_setpoint(&l->pid, setpoint_thz, ramp_mhz_per_s, now_ns(l));
    /* A laser on its old setpoint is not "locked" on the new one. */
    if (l->state == LOCK_LOCKED && step_mhz > l->cfg->tolerance_mhz)
        laser_set_state(l, LOCK_ACQUIRING, "setpoint moved by %.3f MHz", step_mhz);
    l->pid.ramp_mhz_per_s = ramp_mhz_per_s;
    l->pid_gen++;
    l->in_tolerance = 0;
    log_info("laser \"%s\": setpoint %.9f THz, ramp %g MHz/s", l->cfg->name, setpoint_thz,
             ramp_mhz_per_s);
    return laser_commit(l, cb, arg);
}

int laser_lock(struct laser *l, bool on, laser_change_cb cb, void *arg) {
    if (on && l->act == NULL)
        return -ENOTSUP;
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
    if (on && (!l->lock_on || l->state == LOCK_LOST || l->state == LOCK_FAULT)) {
        /* Locking a lost laser again is how a user says "try again from here". */
        laser_want_lock(l, true);
        l->relocks = 0;
        laser_engage(l, l->pid.setpoint_thz);
        laser_set_state(l, LOCK_ACQUIRING, "locked by a client at %.4f V", l->pid.output_v);
    } else if (!on && l->lock_on) {
        laser_want_lock(l, false);
        pid_hold(&l->pid);
        l->pid_gen++;
        laser_set_state(l, LOCK_OFF, "unlocked by a client, output held at %.4f V",
                        l->pid.output_v);
    }
    return laser_commit(l, cb, arg);
}

int laser_set_gains(struct laser *l, double kp, double ki, double kd, laser_change_cb cb,
                    void *arg) {
    struct pid_params p = l->pid.p;

    if (!isfinite(kp) || !isfinite(ki) || !isfinite(kd) || kp < 0 || ki < 0 || kd < 0)
        return -ERANGE;
    p.kp_v_per_mhz = kp;
    p.ki_v_per_mhz_s = ki;
    p.kd_v_s_per_mhz = kd;
    pid_set_params(&l->pid, &p);
    l->pid_gen++;
    log_info("laser \"%s\": gains kp %g V/MHz, ki %g V/(MHz s), kd %g V s/MHz", l->cfg->name, kp,
             ki, kd);
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

/* ---- life cycle ---- */

/* A device opened or failed: its lasers follow. */
static void lasers_dev_state(struct actdev *d, void *ctx) {
    struct lasers *ls = ctx;

    for (int i = 0; i < ls->n; i++) {
        struct laser *l = &ls->l[i];

        if (l->dev != d || ls->stopping)
            continue;
        if (d->state == ACTDEV_FAULT) {
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

static void save_timer_cb(uv_timer_t *t) {
    struct lasers *ls = t->data;

    if (ls->outputs_dirty && !ls->stopping)
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
    json_decref(state);
    uv_timer_init(loop, &ls->save_timer);
    ls->save_timer.data = ls;
    uint64_t every_ms = (uint64_t)(cfg->state_save_interval_s * 1000);
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
