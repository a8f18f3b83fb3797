/*
 * In-process lock tests: the real meter and lock loops (wmdcore) on a real
 * libuv loop, the simulator and a fake clock that moves only when the
 * simulated wavemeter exposes, so simulated minutes take milliseconds. Every
 * test stops cleanly and checks uv_loop_close() == 0.
 *
 * The pool has one thread (UV_THREADPOOL_SIZE=1, set in main before the loop
 * first uses it): jobs then run in the order they are queued, which is the
 * order real time gives them in the daemon (a controller step takes
 * microseconds, the next read tens of milliseconds). With more threads and a
 * clock that does not really pass, a read could finish before the step queued
 * ahead of it. A run then depends on its seed and on which reading a test's
 * action (a fault, a hop, a new setpoint) lands before, since the pool thread
 * reads while the test runs; the bounds allow for a reading either way.
 * Tests that need an exact order feed readings by hand.
 */
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "rig.h"

/* ---- helpers ---- */

static struct rig *rig_new(int nlasers, uint64_t seed) {
    struct rig *r = calloc(1, sizeof(*r));

    ck_assert_ptr_nonnull(r);
    rig_config(&r->cfg, nlasers, seed);
    return r;
}

static void rig_go(struct rig *r) {
    char err[512] = "";
    int rc = rig_start(r, err, sizeof(err));

    ck_assert_msg(rc == 0, "rig_start: %d: %s", rc, err);
}

static void rig_end(struct rig *r) {
    ck_assert_int_eq(rig_stop(r), 0);
    free(r);
}

/* Put the defaults' laser src (0..3) into slot of the rig's config, on channel slot + 1. */
static void use_default_laser(struct config *cfg, int slot, int src) {
    struct config d;

    config_defaults(&d);
    cfg->lasers[slot] = d.lasers[src];
    cfg->lasers[slot].channel = slot + 1;
    cfg->lasers[slot].exposure_ms = 20;
    cfg->lasers[slot].settle_ms = 10;
}

/* True (noise-free) error of laser i from its setpoint, in MHz. */
static double true_error_mhz(struct rig *r, int i) {
    struct laser *l = rig_laser(r, i);
    double true_thz = (double)NAN;

    ck_assert_int_eq(sim_peek(rig_dev(r), l->cfg->channel, NULL, &true_thz), 0);
    return (true_thz - l->pid.setpoint_thz) * 1e6;
}

static double sim_input_v(struct rig *r, int i) {
    double v = (double)NAN;

    ck_assert_int_eq(sim_peek(rig_dev(r), rig_laser(r, i)->cfg->channel, &v, NULL), 0);
    return v;
}

/* Set and wait until durable. */
static void set_setpoint(struct rig *r, struct laser *l, double sp_thz) {
    struct rig_change c = {0};

    ck_assert_int_eq(laser_set_setpoint(l, sp_thz, 0, rig_change_cb, &c), 0);
    ck_assert(rig_wait_change(r, &c, 10));
    ck_assert_int_eq(c.rc, 0);
}

static void lock(struct rig *r, struct laser *l, bool on) {
    struct rig_change c = {0};

    ck_assert_int_eq(laser_lock(l, on, rig_change_cb, &c), 0);
    ck_assert(rig_wait_change(r, &c, 10));
    ck_assert_int_eq(c.rc, 0);
}

/* Laser 0 has no job in flight. */
static bool pred_laser_idle(struct rig *r, const void *arg) {
    (void)arg;
    return !rig_laser(r, 0)->busy;
}

static bool pred_writes(struct rig *r, const void *arg) {
    const uint64_t *want = arg;

    return rig_laser(r, 0)->writes >= *want;
}

/* Laser 0's output is off its upper rail. */
static bool pred_off_upper_rail(struct rig *r, const void *arg) {
    const struct laser *l = rig_laser(r, 0);

    (void)arg;
    return l->pid.output_v < l->cfg->output_max_v - 1e-6;
}

/* ---- 1. acquisition ---- */

struct lock_time {
    double locked_s[2];
};

static void tap_lock_time(struct rig *r, const struct reading *rd) {
    struct lock_time *lt = r->tap_arg;

    (void)rd;
    for (int i = 0; i < 2; i++)
        if (lt->locked_s[i] < 0 && rig_laser(r, i)->state == LOCK_LOCKED)
            lt->locked_s[i] = rig_now_s(r);
}

static bool pred_both_locked(struct rig *r, const void *arg) {
    const struct lock_time *lt = arg;

    (void)r;
    return lt->locked_s[0] >= 0 && lt->locked_s[1] >= 0;
}

/* Both loop signs: the defaults' "399" (+50 MHz/V) and "866" (-40 MHz/V). */
START_TEST(test_locks_from_offset) {
    static const struct {
        int src;
        double offset_mhz;
    } rows[2] = {{0, +200}, {2, -200}};
    struct rig *r = rig_new(2, 11);
    struct lock_time lt = {{-1, -1}};

    for (int i = 0; i < 2; i++) {
        use_default_laser(&r->cfg, i, rows[i].src);
        sim_chan(&r->cfg.lasers[i])->offset_mhz = rows[i].offset_mhz;
        r->cfg.lasers[i].lock = true;
    }
    r->tap = tap_lock_time;
    r->tap_arg = &lt;
    rig_go(r);
    ck_assert_int_eq(rig_laser(r, 0)->state, LOCK_ACQUIRING);
    ck_assert_msg(rig_run_until(r, pred_both_locked, &lt, 10), "not both locked in 10 s: %s, %s",
                  laser_state_name(rig_laser(r, 0)->state),
                  laser_state_name(rig_laser(r, 1)->state));
    for (int i = 0; i < 2; i++) {
        struct laser *l = rig_laser(r, i);
        double want_v = -rows[i].offset_mhz / sim_chan_const(l->cfg)->sensitivity_mhz_per_v;

        printf("inproc: laser \"%s\" (S %+.0f MHz/V) %+.0f MHz off: locked after %.2f s "
               "simulated\n",
               l->cfg->name, sim_chan_const(l->cfg)->sensitivity_mhz_per_v, rows[i].offset_mhz,
               lt.locked_s[i]);
        /* Slew 5 V/s moves 4-5 V in about 1 s; the loop needs a few more. */
        ck_assert_msg(lt.locked_s[i] > 0.5 && lt.locked_s[i] < 5, "laser %d locked after %.2f s", i,
                      lt.locked_s[i]);
        ck_assert_msg(fabs(true_error_mhz(r, i)) < 2 * l->cfg->tolerance_mhz,
                      "laser %d true error %.3f MHz", i, true_error_mhz(r, i));
        ck_assert_msg(fabs(l->pid.output_v - want_v) < 0.25, "laser %d output %.3f V, want %.3f V",
                      i, l->pid.output_v, want_v);
    }
    rig_end(r);
}
END_TEST

/* ---- 2. noise while locked ---- */

#define NOISE_N 500

struct noise_tap {
    double err_mhz[NOISE_N];
    uint64_t t_ns[NOISE_N];
    int n;
    int not_locked, lost;
};

static void tap_noise(struct rig *r, const struct reading *rd) {
    struct noise_tap *nt = r->tap_arg;
    struct laser *l = rig_laser(r, 0);

    if (rd->status != WM_OK || nt->n >= NOISE_N)
        return;
    nt->t_ns[nt->n] = rd->t_ns;
    nt->err_mhz[nt->n++] = (rd->frequency_thz - l->pid.setpoint_thz) * 1e6;
    nt->not_locked += l->state != LOCK_LOCKED;
    nt->lost += l->state == LOCK_LOST;
}

static bool pred_noise_full(struct rig *r, const void *arg) {
    const struct noise_tap *nt = arg;

    (void)r;
    return nt->n >= NOISE_N;
}

struct hist_match {
    const struct noise_tap *nt;
    int matched;
    double worst_mhz;
};

static void hist_cb(const struct laser_sample *s, void *arg) {
    struct hist_match *hm = arg;

    for (int k = 0; k < hm->nt->n; k++) {
        if (hm->nt->t_ns[k] == s->t_ns) {
            double d = fabs(s->error_mhz - hm->nt->err_mhz[k]);
            hm->matched++;
            if (!(d <= hm->worst_mhz))
                hm->worst_mhz = d;
            return;
        }
    }
}

START_TEST(test_locked_noise) {
    struct rig *r = rig_new(1, 12);
    struct noise_tap *nt = calloc(1, sizeof(*nt));
    struct hist_match hm = {nt, 0, 0};
    double sum = 0, sum2 = 0, mean, sd, noise;
    struct laser *l;

    ck_assert_ptr_nonnull(nt);
    sim_chan(&r->cfg.lasers[0])->offset_mhz = 200;
    r->cfg.lasers[0].lock = true;
    rig_go(r);
    l = rig_laser(r, 0);
    ck_assert(rig_wait_state(r, l, LOCK_LOCKED, 10) >= 0);
    rig_run_for(r, 2);
    r->tap = tap_noise;
    r->tap_arg = nt;
    ck_assert(rig_run_until(r, pred_noise_full, nt, 60));
    r->tap = NULL;
    for (int k = 0; k < NOISE_N; k++) {
        sum += nt->err_mhz[k];
        sum2 += nt->err_mhz[k] * nt->err_mhz[k];
    }
    mean = sum / NOISE_N;
    sd = sqrt((sum2 - NOISE_N * mean * mean) / (NOISE_N - 1));
    noise = sim_chan_const(l->cfg)->noise_mhz;
    printf("inproc: locked error over %d readings: mean %+.3f MHz, sd %.3f MHz = %.2f x noise "
           "(%.2f MHz); %d readings not \"locked\"\n",
           NOISE_N, mean, sd, sd / noise, noise, nt->not_locked);
    ck_assert_msg(sd <= 1.5 * noise, "sd %.3f MHz > 1.5 x %.3f MHz", sd, noise);
    ck_assert_msg(fabs(mean) < 0.3, "mean error %.3f MHz", mean);
    ck_assert_int_eq(nt->lost, 0);
    /* The history holds the same errors the readings gave (error against the
     * target, which is the setpoint with no ramp). */
    laser_history(l, 0, hist_cb, &hm);
    ck_assert_int_ge(hm.matched, NOISE_N - 1);
    ck_assert_msg(hm.worst_mhz < 1e-6, "history differs by %.3g MHz", hm.worst_mhz);
    free(nt);
    rig_end(r);
}
END_TEST

/* ---- 3. no signal: hold, then recover ---- */

START_TEST(test_no_signal_holds) {
    struct rig *r = rig_new(1, 13);
    struct laser *l;
    double held_v;
    uint64_t writes, want;

    sim_chan(&r->cfg.lasers[0])->offset_mhz = 100;
    r->cfg.lasers[0].lock = true;
    rig_go(r);
    l = rig_laser(r, 0);
    ck_assert(rig_wait_state(r, l, LOCK_LOCKED, 10) >= 0);
    rig_run_for(r, 1);

    ck_assert_int_eq(sim_set_fault(rig_dev(r), 1, SIM_FAULT_NO_SIGNAL), 0);
    ck_assert(rig_wait_state(r, l, LOCK_HOLDING, 1) >= 0);
    /* A step of the last good reading may still be in flight: it lands (its
     * reading was good), and from then on nothing moves. */
    ck_assert(rig_run_until(r, pred_laser_idle, NULL, 1));
    held_v = l->pid.output_v;
    writes = l->writes;
    rig_run_for(r, 5);
    ck_assert_str_eq(laser_state_name(l->state), "holding");
    ck_assert_msg(l->pid.output_v == held_v, "output moved %.6f -> %.6f V while holding", held_v,
                  l->pid.output_v);
    ck_assert_msg(l->writes == writes, "%llu actuator writes while holding",
                  (unsigned long long)(l->writes - writes));
    ck_assert_msg(fabs(sim_input_v(r, 0) - held_v) < 1e-9, "laser input %.6f V, held %.6f V",
                  sim_input_v(r, 0), held_v);
    ck_assert_int_eq(r->meter.ch[0].not_ok > 0, 1);

    ck_assert_int_eq(sim_set_fault(rig_dev(r), 1, SIM_FAULT_NONE), 0);
    /* The first good reading only takes a new reference (no integration over
     * the 5 s gap): the output it writes is the held one. */
    want = writes + 1;
    ck_assert(rig_run_until(r, pred_writes, &want, 1));
    ck_assert_msg(l->pid.output_v == held_v, "first step after the gap moved %.6f -> %.6f V",
                  held_v, l->pid.output_v);
    double back_s = rig_wait_state(r, l, LOCK_LOCKED, 5);
    printf("inproc: no_signal 5 s: output held at %.4f V; locked again %.2f s after the signal "
           "returned\n",
           held_v, back_s);
    ck_assert(back_s >= 0);
    rig_end(r);
}
END_TEST

/* ---- 4. mode hops ---- */

static const struct {
    const char *label;
    double jump_mhz;
    bool lost;
} hop_rows[] = {
    {"hop +100 MHz (inside capture): relocks", +100, false},
    {"hop +1000 MHz (beyond capture): lost", +1000, true},
    {"hop -700 MHz (beyond capture): lost", -700, true},
};

START_TEST(test_mode_hop) {
    struct rig *r = rig_new(2, (uint64_t)(20 + _i));
    struct laser *l, *other;

    r->cfg.lasers[0].lock = true;
    r->cfg.lasers[1].lock = true;
    rig_go(r);
    l = rig_laser(r, 0);
    other = rig_laser(r, 1);
    ck_assert(rig_wait_state(r, l, LOCK_LOCKED, 10) >= 0);
    ck_assert(rig_wait_state(r, other, LOCK_LOCKED, 10) >= 0);
    rig_run_for(r, 1);

    ck_assert_int_eq(sim_mode_hop(rig_dev(r), 1, hop_rows[_i].jump_mhz), 0);
    if (!hop_rows[_i].lost) {
        ck_assert_msg(rig_wait_state(r, l, LOCK_ACQUIRING, 1) >= 0, "%s", hop_rows[_i].label);
        double t = rig_wait_state(r, l, LOCK_LOCKED, 10);
        printf("inproc: %s in %.2f s\n", hop_rows[_i].label, t);
        ck_assert_msg(t >= 0, "%s: %s", hop_rows[_i].label, l->reason);
    } else {
        /* lost_after readings outside the capture range, 60 ms apart. */
        double t = rig_wait_state(r, l, LOCK_LOST, 2);
        double out_v = l->pid.output_v;
        uint64_t writes = l->writes;

        ck_assert_msg(t >= 0, "%s: %s", hop_rows[_i].label, laser_state_name(l->state));
        ck_assert_msg(fabs(l->error_mhz - hop_rows[_i].jump_mhz) <
                          0.2 * fabs(hop_rows[_i].jump_mhz),
                      "error %.1f MHz", l->error_mhz);
        rig_run_for(r, 10);
        printf("inproc: %s after %.2f s; output stays at %.4f V\n", hop_rows[_i].label, t, out_v);
        ck_assert_int_eq(l->state, LOCK_LOST);
        ck_assert_msg(l->pid.output_v == out_v && l->writes == writes,
                      "output moved after lost: %.6f -> %.6f V, %llu writes", out_v,
                      l->pid.output_v, (unsigned long long)(l->writes - writes));
        ck_assert_msg(fabs(sim_input_v(r, 0) - out_v) < 1e-9, "laser input %.6f V",
                      sim_input_v(r, 0));
    }
    /* The other laser on the same switch is not disturbed. */
    ck_assert_msg(other->state == LOCK_LOCKED || other->state == LOCK_ACQUIRING, "other laser %s",
                  laser_state_name(other->state));
    ck_assert(fabs(true_error_mhz(r, 1)) < 2 * other->cfg->tolerance_mhz);
    rig_end(r);
}
END_TEST

/* ---- 4b. automatic relock ---- */

static const struct {
    const char *label;
    bool hop_back; /* the laser hops back to where it was */
} relock_rows[] = {
    {"hop back: relocks at the last locked output", true},
    {"no hop back: parked, never chases from outside the capture range", false},
};

START_TEST(test_auto_relock) {
    struct rig *r = rig_new(1, (uint64_t)(30 + _i));
    struct laser *l;
    double locked_v, t;

    r->cfg.lasers[0].lock = true;
    sim_chan(&r->cfg.lasers[0])->offset_mhz = 100;
    r->cfg.lasers[0].auto_relock = true;
    rig_go(r);
    l = rig_laser(r, 0);
    ck_assert(rig_wait_state(r, l, LOCK_LOCKED, 10) >= 0);
    rig_run_for(r, 1);
    locked_v = l->pid.output_v;

    ck_assert_int_eq(sim_mode_hop(rig_dev(r), 1, 1000), 0);
    ck_assert(rig_wait_state(r, l, LOCK_LOST, 2) >= 0);
    if (relock_rows[_i].hop_back) {
        ck_assert_int_eq(sim_mode_hop(rig_dev(r), 1, -1000), 0);
        /* relock_delay_s after lost, the output goes back to where it was
         * locked, and the loop locks from there. */
        t = rig_wait_state(r, l, LOCK_LOCKED, l->cfg->relock_delay_s + 5);
        printf("inproc: %s: locked %.2f s after the hop back\n", relock_rows[_i].label, t);
        ck_assert_msg(t >= l->cfg->relock_delay_s - 0.5, "%s: t %.2f s", relock_rows[_i].label, t);
        ck_assert_int_eq(l->relocks, 0);
        ck_assert_msg(fabs(l->pid.output_v - locked_v) < 0.1, "output %.4f V, was %.4f V",
                      l->pid.output_v, locked_v);
    } else {
        /* The hop stays: the error never comes back inside the capture
         * range, so no relock starts; the output is parked where the laser
         * was locked and nothing more is written. */
        rig_run_for(r, (l->cfg->relock_delay_s + 1) * (l->cfg->relock_attempts + 2));
        ck_assert_int_eq(l->state, LOCK_LOST);
        ck_assert_int_eq(l->relocks, 0);
        ck_assert_msg(fabs(l->pid.output_v - locked_v) < 0.1, "parked at %.4f V, locked at %.4f V",
                      l->pid.output_v, locked_v);
        uint64_t writes = l->writes;
        rig_run_for(r, 10);
        ck_assert_int_eq(l->writes, writes);
        printf("inproc: %s (output %.4f V, locked at %.4f V)\n", relock_rows[_i].label,
               l->pid.output_v, locked_v);
    }
    rig_end(r);
}
END_TEST

/* ---- 4c. wavemeter disconnected ---- */

static bool pred_meter_backoff(struct rig *r, const void *arg) {
    (void)arg;
    return r->meter.state == METER_BACKOFF;
}

static bool pred_device_ready(struct rig *r, const void *arg) {
    (void)r;
    return actdev_ready(((const struct laser *)arg)->dev);
}

static const struct {
    const char *label;
    bool reconnect;
} disconnect_rows[] = {
    {"disconnect, reconnect: holds, reads again, locks", true},
    {"disconnect, stop while backing off: closes cleanly", false},
};

/* The meter's backoff runs on a libuv timer (real time, 250 ms first), so
 * this test waits about that long for real. */
START_TEST(test_disconnect) {
    struct rig *r = rig_new(1, (uint64_t)(50 + _i));
    struct laser *l;
    double held_v;

    r->cfg.lasers[0].lock = true;
    /* The reopen waits on real time, minutes of simulated time: no drift,
     * so the output it comes back to is the one it held. */
    sim_chan(&r->cfg.lasers[0])->drift_mhz_per_sqrt_s = 0;
    rig_go(r);
    l = rig_laser(r, 0);
    ck_assert(rig_wait_state(r, l, LOCK_LOCKED, 10) >= 0);
    ck_assert_int_eq(sim_set_connected(rig_dev(r), false), 0);
    ck_assert(rig_run_until(r, pred_meter_backoff, NULL, 1));
    /* Holding on the failed reads, or in fault when a write in flight found
     * the simulated box gone too (it shares the wavemeter's cable). */
    ck_assert_msg(l->state == LOCK_HOLDING || l->state == LOCK_FAULT, "state %s",
                  laser_state_name(l->state));
    ck_assert_int_ge(r->meter.ch[0].errors, 1);
    held_v = l->pid.output_v;
    if (disconnect_rows[_i].reconnect) {
        ck_assert_int_eq(sim_set_connected(rig_dev(r), true), 0);
        /* A device in fault is reopened on a real-time back-off (1 s),
         * while simulated time runs far faster: the bound is in sim time. */
        ck_assert(rig_run_until(r, pred_device_ready, l, 3600));
        ck_assert(rig_wait_state(r, l, LOCK_LOCKED, 5) >= 0);
        ck_assert_int_eq(r->meter.consecutive_errors, 0);
        ck_assert(fabs(l->pid.output_v - held_v) < 0.1);
    }
    printf("inproc: %s\n", disconnect_rows[_i].label);
    rig_end(r);
}
END_TEST

/* ---- 4c'. the schedule: locked lasers often, the others on their period ---- */

/* One laser locked, three only measured every 300 ms (monitor_period_ms):
 * the monitored ones come back about every 300 ms, never much later, and
 * the locked one takes the rest of the wavemeter's time, with the switch
 * left on it while nothing else is due. */
START_TEST(test_schedule_deadlines) {
    struct rig *r = rig_new(4, 80);
    double mean_ms[4], max_ms[4];
    uint64_t reads0;

    r->cfg.monitor_period_ms = 300;
    r->cfg.lasers[0].lock = true;
    rig_go(r);
    ck_assert(rig_wait_state(r, rig_laser(r, 0), LOCK_LOCKED, 20) >= 0);
    rig_run_for(r, 10);
    reads0 = r->meter.ch[0].reads;
    rig_run_for(r, 10);
    for (int i = 0; i < 4; i++)
        meter_revisit_ms(&r->meter.ch[i], &mean_ms[i], &max_ms[i]);
    /* A read after a switch costs settle + exposure, 30 ms here. */
    for (int i = 1; i < 4; i++) {
        ck_assert_msg(mean_ms[i] >= 300 && mean_ms[i] <= 300 + 3 * 30, "laser %d every %.1f ms", i,
                      mean_ms[i]);
        ck_assert_msg(max_ms[i] <= 300 + 4 * 30, "laser %d once %.1f ms late", i, max_ms[i]);
    }
    /* The locked one: 10 s minus 3 x 10/0.3 reads of the others at 30 ms
     * each is about 9 s of its own, at 20 ms a read (no switch). */
    uint64_t locked_reads = r->meter.ch[0].reads - reads0;
    ck_assert_msg(locked_reads >= 300, "the locked laser read only %llu times in 10 s",
                  (unsigned long long)locked_reads);
    ck_assert_msg(mean_ms[0] < 60, "the locked laser every %.1f ms", mean_ms[0]);
    printf("inproc: schedule: locked every %.1f ms (max %.1f), monitored every %.1f/%.1f/%.1f "
           "ms (max %.1f)\n",
           mean_ms[0], max_ms[0], mean_ms[1], mean_ms[2], mean_ms[3], max_ms[1]);
    rig_end(r);
}
END_TEST

/* ---- 4d. setpoint ramp ---- */

START_TEST(test_setpoint_ramp) {
    struct rig *r = rig_new(1, 60);
    struct laser *l;
    struct rig_change c = {0};
    double sp0, t0, mid_mhz, t_locked;

    r->cfg.lasers[0].lock = true;
    rig_go(r);
    l = rig_laser(r, 0);
    ck_assert(rig_wait_state(r, l, LOCK_LOCKED, 10) >= 0);
    sp0 = l->pid.setpoint_thz;
    /* +100 MHz at 20 MHz/s: 5 s of simulated reading time. */
    ck_assert_int_eq(laser_set_setpoint(l, sp0 + 100e-6, 20, rig_change_cb, &c), 0);
    t0 = rig_now_s(r);
    ck_assert(rig_wait_change(r, &c, 1));
    rig_run_for(r, 2.5 - (rig_now_s(r) - t0));
    mid_mhz = true_error_mhz(r, 0) + 100;
    /* Halfway, less the I loop's lag behind a ramp: rate / (ki |S|) = 8 MHz. */
    ck_assert_msg(mid_mhz > 30 && mid_mhz < 55, "after 2.5 s at 20 MHz/s the laser is %.1f MHz on",
                  mid_mhz);
    ck_assert_int_ne(l->state, LOCK_LOCKED);
    ck_assert(rig_wait_state(r, l, LOCK_LOCKED, 10) >= 0);
    t_locked = rig_now_s(r) - t0;
    printf("inproc: ramp +100 MHz at 20 MHz/s: %.1f MHz on after 2.5 s, locked after %.2f s\n",
           mid_mhz, t_locked);
    ck_assert(t_locked > 4.5 && t_locked < 8);
    ck_assert(pid_ramp_done(&l->pid));
    ck_assert(fabs(true_error_mhz(r, 0)) < 2 * l->cfg->tolerance_mhz);
    rig_end(r);
}
END_TEST

/* ---- 5. rail, timeout, anti-windup ---- */

START_TEST(test_rail) {
    struct rig *r = rig_new(1, 14);
    struct laser *l;
    double sp0, t, t_rail, t_lost;
    uint64_t writes, steps;

    /* +-2 V at 50 MHz/V reaches +-100 MHz; a +300 MHz setpoint leaves a
     * -200 MHz error, inside the 500 MHz capture range: railed, not lost. */
    r->cfg.lasers[0].output_min_v = -2;
    r->cfg.lasers[0].output_max_v = 2;
    r->cfg.lasers[0].lock = true;
    rig_go(r);
    l = rig_laser(r, 0);
    sp0 = l->pid.setpoint_thz;
    ck_assert(rig_wait_state(r, l, LOCK_LOCKED, 10) >= 0);

    /* A: out of reach for 3 s, then back in reach while still railed. */
    set_setpoint(r, l, sp0 + 300e-6);
    ck_assert(rig_wait_state(r, l, LOCK_RAILED, 2) >= 0);
    /* "railed" starts when the clamp first acts; the slew limit (5 V/s)
     * still has the output on its way there for a step or so. */
    rig_run_for(r, 1);
    ck_assert_double_eq(l->pid.output_v, 2.0);
    rig_run_for(r, 2);
    ck_assert_int_eq(l->state, LOCK_RAILED);
    set_setpoint(r, l, sp0 + 50e-6);
    writes = l->writes;
    ck_assert(rig_run_until(r, pred_off_upper_rail, NULL, 2));
    /* At most: the step in flight when the setpoint changed, one new
     * reference (the change restarts dt), one step off the rail. */
    steps = l->writes - writes;
    ck_assert_msg(steps <= 3, "left the rail after %llu steps", (unsigned long long)steps);
    t = rig_wait_state(r, l, LOCK_LOCKED, 5);
    printf("inproc: rail A: left the rail after %llu steps, locked %.2f s after the setpoint came "
           "back\n",
           (unsigned long long)steps, t);
    ck_assert(t >= 0);

    /* B: out of reach until rail_timeout_s makes it lost. */
    set_setpoint(r, l, sp0 + 300e-6);
    ck_assert(rig_wait_state(r, l, LOCK_RAILED, 2) >= 0);
    t_rail = rig_now_s(r);
    ck_assert(rig_wait_state(r, l, LOCK_LOST, l->cfg->rail_timeout_s + 2) >= 0);
    t_lost = rig_now_s(r) - t_rail;
    ck_assert_msg(t_lost > l->cfg->rail_timeout_s - 0.5 && t_lost < l->cfg->rail_timeout_s + 0.5,
                  "lost %.2f s after railing, rail_timeout_s %.1f", t_lost, l->cfg->rail_timeout_s);
    writes = l->writes;
    rig_run_for(r, 2);
    ck_assert_int_eq(l->writes, writes);
    ck_assert_double_eq(l->pid.output_v, 2.0);

    /* Back in reach, relock by hand: off the rail at once, locked soon. */
    set_setpoint(r, l, sp0 + 50e-6);
    lock(r, l, false);
    ck_assert_int_eq(l->state, LOCK_OFF);
    lock(r, l, true);
    writes = l->writes;
    double t0 = rig_now_s(r);
    ck_assert(rig_run_until(r, pred_off_upper_rail, NULL, 2));
    /* The first reading after engaging only takes a reference; the next
     * one moves the output off the rail. */
    steps = l->writes - writes;
    ck_assert_msg(steps <= 2, "left the rail after %llu steps", (unsigned long long)steps);
    t = rig_wait_state(r, l, LOCK_LOCKED, 5);
    printf("inproc: rail B: lost %.2f s after railing; relocked: off the rail after %llu steps, "
           "locked after %.2f s\n",
           t_lost, (unsigned long long)steps, rig_now_s(r) - t0);
    ck_assert(t >= 0);
    ck_assert(fabs(true_error_mhz(r, 0)) < 2 * l->cfg->tolerance_mhz);
    rig_end(r);
}
END_TEST

/* ---- 6. persistence ---- */

struct durable {
    struct rig *r;
    const char *laser;
    const char *key;
    double want;     /* the value this change set */
    double alt;      /* a later change's value, also acceptable ((double)NAN: none) */
    bool done, sync; /* sync: called before the setter returned */
    int rc, calls;
    double in_file;
};

static double file_value(const char *dir, const char *laser, const char *key) {
    char path[128];
    json_error_t jerr;
    json_t *root, *v;
    double x = (double)NAN;

    snprintf(path, sizeof(path), "%s/state.json", dir);
    root = json_load_file(path, 0, &jerr);
    if (root == NULL)
        return (double)NAN;
    v = json_object_get(json_object_get(json_object_get(root, "lasers"), laser), key);
    if (json_is_number(v))
        x = json_number_value(v);
    else if (json_is_boolean(v))
        x = json_is_true(v);
    json_decref(root);
    return x;
}

static void durable_cb(void *arg, int rc, enum laser_stage stage) {
    struct durable *d = arg;

    ck_assert(rc == 0 || stage == LASER_STAGE_STORE);
    d->calls++;
    d->done = true;
    d->rc = rc;
    d->in_file = file_value(d->r->dir, d->laser, d->key);
}

static bool durable_ok(const struct durable *d) {
    return d->in_file == d->want || d->in_file == d->alt;
}

START_TEST(test_setpoint_durable) {
    struct rig *r = rig_new(1, 15);
    struct laser *l;
    double sp0;

    rig_go(r);
    l = rig_laser(r, 0);
    sp0 = l->pid.setpoint_thz;

    /* One change: answered only once the file holds it. */
    struct durable d1 = {.r = r,
                         .laser = l->cfg->name,
                         .key = "setpoint_thz",
                         .want = sp0 + 123.456789e-6,
                         .alt = (double)NAN};
    ck_assert_int_eq(laser_set_setpoint(l, d1.want, 0, durable_cb, &d1), 0);
    d1.sync = d1.done;
    ck_assert(rig_run_until(r, rig_pred_flag, &d1.done, 5));
    ck_assert(!d1.sync);
    ck_assert_int_eq(d1.rc, 0);
    ck_assert_msg(durable_ok(&d1), "file has %.9f, want %.9f", d1.in_file, d1.want);

    /* A burst: each answer sees its own value or a later one. */
    struct durable d2 = {.r = r,
                         .laser = l->cfg->name,
                         .key = "setpoint_thz",
                         .want = sp0 - 10e-6,
                         .alt = sp0 + 20e-6};
    struct durable d3 = {.r = r,
                         .laser = l->cfg->name,
                         .key = "setpoint_thz",
                         .want = sp0 + 20e-6,
                         .alt = (double)NAN};
    ck_assert_int_eq(laser_set_setpoint(l, d2.want, 0, durable_cb, &d2), 0);
    ck_assert_int_eq(laser_set_setpoint(l, d3.want, 0, durable_cb, &d3), 0);
    ck_assert(rig_run_until(r, rig_pred_flag, &d3.done, 5));
    ck_assert(rig_run_until(r, rig_pred_flag, &d2.done, 5));
    ck_assert_int_eq(d2.rc, 0);
    ck_assert_int_eq(d3.rc, 0);
    ck_assert_msg(durable_ok(&d2), "file has %.9f", d2.in_file);
    ck_assert_msg(durable_ok(&d3), "file has %.9f", d3.in_file);

    /* Lock and gains are durable the same way. */
    struct durable d4 = {
        .r = r, .laser = l->cfg->name, .key = "lock", .want = 1, .alt = (double)NAN};
    ck_assert_int_eq(laser_lock(l, true, durable_cb, &d4), 0);
    ck_assert(rig_run_until(r, rig_pred_flag, &d4.done, 5));
    ck_assert_int_eq(d4.rc, 0);
    ck_assert(durable_ok(&d4));
    struct durable d5 = {
        .r = r, .laser = l->cfg->name, .key = "ki_v_per_mhz_s", .want = 0.07, .alt = (double)NAN};
    ck_assert_int_eq(laser_set_gains(l, 0.002, 0.07, 0, durable_cb, &d5), 0);
    ck_assert(rig_run_until(r, rig_pred_flag, &d5.done, 5));
    ck_assert_int_eq(d5.rc, 0);
    ck_assert(durable_ok(&d5));

    /* Out of range: refused at once, nothing changes, no callback. */
    struct durable d6 = {.r = r,
                         .laser = l->cfg->name,
                         .key = "setpoint_thz",
                         .want = (double)NAN,
                         .alt = (double)NAN};
    ck_assert_int_eq(laser_set_setpoint(l, l->cfg->max_thz + 1e-3, 0, durable_cb, &d6), -ERANGE);
    ck_assert_double_eq(l->pid.setpoint_thz, d3.want);
    rig_run_for(r, 1);
    ck_assert_int_eq(d6.calls, 0);

    ck_assert_int_eq(d1.calls + d2.calls + d3.calls + d4.calls + d5.calls, 5);
    rig_end(r);
}
END_TEST

/* A save that cannot happen is reported to the caller, and stopping still
 * completes (the last save fails too). */
START_TEST(test_setpoint_save_fails) {
    struct rig *r = rig_new(1, 16);
    struct laser *l;
    char path[128];

    rig_go(r);
    l = rig_laser(r, 0);
    rig_run_for(r, 1);
    snprintf(path, sizeof(path), "%s/state.json", r->dir);
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(rmdir(r->dir), 0);

    struct durable d = {.r = r,
                        .laser = l->cfg->name,
                        .key = "setpoint_thz",
                        .want = l->pid.setpoint_thz + 1e-6,
                        .alt = (double)NAN};
    ck_assert_int_eq(laser_set_setpoint(l, d.want, 0, durable_cb, &d), 0);
    ck_assert(rig_run_until(r, rig_pred_flag, &d.done, 5));
    ck_assert_int_lt(d.rc, 0);
    ck_assert_int_eq(d.calls, 1);
    rig_end(r);
}
END_TEST

/* What was acknowledged survives a restart: a second rig on the same state
 * directory comes up with the new setpoint and gains, locked (restart
 * "resume"), and locks there. */
START_TEST(test_restart_resumes) {
    struct rig *r = rig_new(1, 17), *r2;
    struct laser *l;
    double sp;
    char dir[sizeof(r->dir)];

    r->keep_dir = true;
    rig_go(r);
    l = rig_laser(r, 0);
    sp = l->pid.setpoint_thz + 40e-6;
    set_setpoint(r, l, sp);
    lock(r, l, true);
    ck_assert(rig_wait_state(r, l, LOCK_LOCKED, 10) >= 0);
    memcpy(dir, r->dir, sizeof(dir));
    rig_end(r);

    r2 = rig_new(1, 18);
    memcpy(r2->dir, dir, sizeof(dir));
    rig_go(r2);
    l = rig_laser(r2, 0);
    ck_assert_double_eq(l->pid.setpoint_thz, sp);
    ck_assert(l->lock_on);
    ck_assert_int_eq(l->state, LOCK_ACQUIRING);
    ck_assert(rig_wait_state(r2, l, LOCK_LOCKED, 10) >= 0);
    ck_assert(fabs(true_error_mhz(r2, 0)) < 2 * l->cfg->tolerance_mhz);
    rig_end(r2);
}
END_TEST

/* ---- 7. readings fed by hand, for an exact order ---- */

static bool pred_idle(struct rig *r, const void *arg) {
    (void)arg;
    return !rig_laser(r, 0)->busy;
}

/* A good reading, and its step run to completion. */
static void feed_step(struct rig *r, double freq_thz) {
    rig_feed(r, 0, WM_OK, freq_thz);
    ck_assert(rig_run_until(r, pred_idle, NULL, 1));
}

/*
 * A bad reading that arrives while the previous good reading's step is still
 * on the pool holds the loop, and the step's completion must not undo that:
 * the lock stays "holding", and the next good reading, even within
 * max_gap_s, only takes a new reference instead of integrating the error
 * over the gap. In real time this needs a step job slower than one read (a
 * slow serial actuator, or a pool busy with saves); here readings are fed by
 * hand. Failed before 2311c57 (the step adopted its copy of the controller,
 * and a 3 s gap with 2 MHz of error moved the output by 0.3 V).
 */
START_TEST(test_hold_survives_step_in_flight) {
    struct rig *r = rig_new(1, 70);
    struct laser *l;
    double sp, out_v;

    r->no_meter = true;
    rig_go(r);
    l = rig_laser(r, 0);
    sp = l->pid.setpoint_thz;
    lock(r, l, true);
    for (int k = 0; k < 10; k++) {
        rig_advance(r, 0.02);
        feed_step(r, sp + 0.5e-6);
    }
    ck_assert_int_eq(l->state, LOCK_LOCKED);

    rig_advance(r, 0.02);
    rig_feed(r, 0, WM_OK, sp + 0.5e-6); /* its step is queued ... */
    ck_assert(l->busy);
    rig_advance(r, 0.02);
    rig_feed(r, 0, WM_NO_SIGNAL, 0); /* ... when the beam goes */
    ck_assert_int_eq(l->state, LOCK_HOLDING);
    ck_assert(rig_run_until(r, pred_idle, NULL, 1));
    enum lock_state after = l->state;
    bool have_last = l->pid.have_last;

    /* The beam is back 3 s later (< max_gap_s 5 s), 2 MHz off. */
    out_v = l->pid.output_v;
    rig_advance(r, 3);
    feed_step(r, sp + 2e-6);
    ck_assert_msg(after == LOCK_HOLDING && !have_last && l->pid.output_v == out_v,
                  "after the step in flight: state \"%s\" (want holding), have_last %d (want 0); "
                  "first good reading 3 s later moved the output %.4f -> %.4f V (want no move)",
                  laser_state_name(after), have_last, out_v, l->pid.output_v);
    rig_end(r);
}
END_TEST

/* ---- regressions: bugs these tests found, now fixed ---- */

/*
 * "railed" once named the limit by output_v >= output_max_v while the slew
 * limit still had the output on its way up ("lower limit 1.800 V"): railed
 * now means sitting on a limit, and the reason names that one.
 */
START_TEST(test_rail_reason_names_the_limit) {
    struct rig *r = rig_new(1, 71);
    struct laser *l;
    double sp;

    r->no_meter = true;
    r->cfg.lasers[0].output_min_v = -2;
    r->cfg.lasers[0].output_max_v = 2;
    rig_go(r);
    l = rig_laser(r, 0);
    sp = l->pid.setpoint_thz;
    lock(r, l, true);
    set_setpoint(r, l, sp + 300e-6);
    /* The laser stays where it is: -300 MHz of error, every 20 ms. The
     * output climbs by the slew limit (0.1 V a step) until the law asks for
     * more than +2 V, which it does from about 1.8 V on. */
    for (int k = 0; k < 50 && l->state != LOCK_RAILED; k++) {
        rig_advance(r, 0.02);
        feed_step(r, sp);
    }
    ck_assert_int_eq(l->state, LOCK_RAILED);
    /* Stop first, so a failure does not leave its state directory behind. */
    bool upper = strstr(l->reason, "upper") != NULL;
    char reason[sizeof(l->reason)];
    memcpy(reason, l->reason, sizeof(reason));
    rig_end(r);
    ck_assert_msg(upper, "railed toward +2 V, reason \"%s\"", reason);
}
END_TEST

/*
 * After a gap ("holding"), "locked" once came back with the first good
 * reading, counting readings from before the gap: locked_after fresh
 * readings in a row are needed again.
 */
START_TEST(test_locked_needs_fresh_readings_after_hold) {
    struct rig *r = rig_new(1, 72);
    struct laser *l;
    double sp;

    r->no_meter = true;
    rig_go(r);
    l = rig_laser(r, 0);
    sp = l->pid.setpoint_thz;
    lock(r, l, true);
    for (int k = 0; k < 10; k++) {
        rig_advance(r, 0.02);
        feed_step(r, sp + 0.5e-6);
    }
    ck_assert_int_eq(l->state, LOCK_LOCKED);
    for (int k = 0; k < 250; k++) { /* 5 s without signal */
        rig_advance(r, 0.02);
        rig_feed(r, 0, WM_NO_SIGNAL, 0);
    }
    ck_assert_int_eq(l->state, LOCK_HOLDING);
    rig_advance(r, 0.02);
    feed_step(r, sp + 0.5e-6);
    bool locked = l->state == LOCK_LOCKED;
    char reason[sizeof(l->reason)];
    memcpy(reason, l->reason, sizeof(reason));
    rig_end(r);
    ck_assert_msg(!locked, "\"locked\" after one good reading after a 5 s gap: \"%s\"", reason);
}
END_TEST

static Suite *lock_suite(void) {
    Suite *s = suite_create("lock_inproc");
    TCase *tc = tcase_create("lock");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_locks_from_offset);
    tcase_add_test(tc, test_locked_noise);
    tcase_add_test(tc, test_no_signal_holds);
    tcase_add_loop_test(tc, test_mode_hop, 0, (int)(sizeof(hop_rows) / sizeof(hop_rows[0])));
    tcase_add_loop_test(tc, test_auto_relock, 0,
                        (int)(sizeof(relock_rows) / sizeof(relock_rows[0])));
    tcase_add_test(tc, test_schedule_deadlines);
    tcase_add_loop_test(tc, test_disconnect, 0,
                        (int)(sizeof(disconnect_rows) / sizeof(disconnect_rows[0])));
    tcase_add_test(tc, test_setpoint_ramp);
    tcase_add_test(tc, test_rail);
    tcase_add_test(tc, test_hold_survives_step_in_flight);
    tcase_add_test(tc, test_setpoint_durable);
    tcase_add_test(tc, test_setpoint_save_fails);
    tcase_add_test(tc, test_restart_resumes);
    tcase_add_test(tc, test_rail_reason_names_the_limit);
    tcase_add_test(tc, test_locked_needs_fresh_readings_after_hold);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(lock_suite());
    int failed;

    /* Before any loop uses the pool: see the comment at the top. */
    setenv("UV_THREADPOOL_SIZE", "1", 1);
    log_set_level(LOG_LVL_NOTICE);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
