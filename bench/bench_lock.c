/*
 * bench_lock: how well and how cheaply the lock loops lock. Runs the real
 * meter and lock loops (wmdcore) on the simulator with the built-in default
 * lasers, on a real libuv loop and the fake clock of the in-process tests,
 * and measures step response, locked noise, rail recovery and throughput
 * for a few seeds. It changes nothing in the daemon; results: docs/BENCHMARKS.md.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "pid.h"
#include "rig.h"

#define NLASERS 4 /* the defaults' four lasers */
#define MAX_SEEDS 64
#define NOISE_READINGS 500 /* per laser, while locked */
#define STEP_MHZ 100.0
#define STEP_WINDOW_S 20.0
/* Past the reach of every default laser (+-10 V at 40-50 MHz/V is 400-500 MHz)
 * but within the 500 MHz capture range of where it rails, so the lock rails
 * instead of losing the laser. */
#define RAIL_SETPOINT_MHZ 650.0
#define RAIL_RAMP_MHZ_PER_S 100.0
#define RAIL_HOLD_S 3.0
#define RECOVER_SETPOINT_MHZ 100.0
#define RECOVER_WINDOW_S 15.0
#define PID_MICRO_STEPS 10000000L

struct sample {
    double t_s;
    double meas_mhz; /* measured error from the setpoint, (double)NAN unless ok */
    double true_mhz; /* true (noise-free) error from the setpoint */
    double out_v;
    enum lock_state state;
};

struct trace {
    struct sample *s;
    size_t n, cap;
};

struct bench {
    struct trace tr[NLASERS];
    bool recording;
};

enum metric {
    M_DT_MS,
    M_SD_MEAS,
    M_SD_RATIO,
    M_SD_TRUE,
    M_NOT_LOCKED,
    M_FLAPS,
    M_STEP_SETTLE,
    M_STEP_SETTLE_MEAS,
    M_STEP_LOCKED,
    M_STEP_OVER_MHZ,
    M_STEP_OVER_PCT,
    M_RAIL_OFF_STEPS,
    M_RAIL_LOCKED,
    M_RAIL_SETTLE,
    M_RAIL_LOST,
    M_RELOCK_OFF_STEPS,
    M_RELOCK_LOCKED,
    M_COUNT
};

static const struct {
    const char *name;
    const char *fmt;
} metric_info[M_COUNT] = {
    [M_DT_MS] = {"reading interval, ms", "%.1f"},
    [M_SD_MEAS] = {"locked: measured error sd, MHz", "%.3f"},
    [M_SD_RATIO] = {"locked: sd / sim noise", "%.2f"},
    [M_SD_TRUE] = {"locked: true error sd, MHz", "%.3f"},
    [M_NOT_LOCKED] = {"locked: readings not \"locked\" /500", "%.1f"},
    [M_FLAPS] = {"locked: locked -> acquiring /500", "%.1f"},
    [M_STEP_SETTLE] = {"step 100 MHz: settle, true |e|<tol, s", "%.2f"},
    [M_STEP_SETTLE_MEAS] = {"step 100 MHz: settle, read |e|<tol, s", "%.2f"},
    [M_STEP_LOCKED] = {"step 100 MHz: \"locked\" again, s", "%.2f"},
    [M_STEP_OVER_MHZ] = {"step 100 MHz: overshoot, MHz", "%.2f"},
    [M_STEP_OVER_PCT] = {"step 100 MHz: overshoot, %", "%.2f"},
    [M_RAIL_OFF_STEPS] = {"rail, setpoint back: steps to leave", "%.1f"},
    [M_RAIL_LOCKED] = {"rail, setpoint back: \"locked\", s", "%.2f"},
    [M_RAIL_SETTLE] = {"rail, setpoint back: settle (true), s", "%.2f"},
    [M_RAIL_LOST] = {"rail: railed -> lost, s", "%.2f"},
    [M_RELOCK_OFF_STEPS] = {"lost, relock: steps to leave rail", "%.1f"},
    [M_RELOCK_LOCKED] = {"lost, relock: \"locked\", s", "%.2f"},
};

struct seed_result {
    uint64_t seed;
    double m[NLASERS][M_COUNT];
    double sim_s, real_s, cpu_s; /* the whole run */
    uint64_t readings, steps;
    double locked_real_s, locked_cpu_s; /* the locked-noise phase alone */
    uint64_t locked_readings;
};

static double now_s(clockid_t id) {
    struct timespec ts;

    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what) {
    fprintf(stderr, "bench_lock: %s\n", what);
    exit(1);
}

/* ---- recording ---- */

static void trace_push(struct trace *tr, const struct sample *s) {
    if (tr->n == tr->cap) {
        size_t cap = tr->cap ? tr->cap * 2 : 1024;
        struct sample *p = realloc(tr->s, cap * sizeof(*p));

        if (p == NULL)
            die("out of memory");
        tr->s = p;
        tr->cap = cap;
    }
    tr->s[tr->n++] = *s;
}

static void tap(struct rig *r, const struct reading *rd) {
    struct bench *b = r->tap_arg;
    struct laser *l = lasers_find_channel(&r->lasers, rd->channel);
    struct sample s;
    double true_thz = (double)NAN;
    int i;

    if (!b->recording || l == NULL)
        return;
    i = (int)(l - r->lasers.l);
    sim_peek(rig_dev(r), rd->channel, NULL, &true_thz);
    s.t_s = rig_now_s(r);
    s.meas_mhz =
        rd->status == WM_OK ? (rd->frequency_thz - l->pid.setpoint_thz) * 1e6 : (double)NAN;
    s.true_mhz = (true_thz - l->pid.setpoint_thz) * 1e6;
    s.out_v = l->pid.output_v;
    s.state = l->state;
    trace_push(&b->tr[i], &s);
}

static void record(struct bench *b) {
    for (int i = 0; i < NLASERS; i++)
        b->tr[i].n = 0;
    b->recording = true;
}

/* ---- waiting ---- */

static bool pred_all_state(struct rig *r, const void *arg) {
    const enum lock_state *s = arg;

    for (int i = 0; i < NLASERS; i++)
        if (rig_laser(r, i)->state != *s)
            return false;
    return true;
}

static void wait_all(struct rig *r, enum lock_state s, double max_s) {
    if (!rig_run_until(r, pred_all_state, &s, max_s)) {
        char msg[160];
        snprintf(msg, sizeof(msg), "lasers not all \"%s\" within %.0f s simulated",
                 laser_state_name(s), max_s);
        die(msg);
    }
}

static bool pred_noise_done(struct rig *r, const void *arg) {
    const struct bench *b = arg;

    (void)r;
    for (int i = 0; i < NLASERS; i++)
        if (b->tr[i].n < NOISE_READINGS)
            return false;
    return true;
}

struct changes {
    struct rig_change c[NLASERS];
};

static bool pred_changes_done(struct rig *r, const void *arg) {
    const struct changes *ch = arg;

    (void)r;
    for (int i = 0; i < NLASERS; i++)
        if (!ch->c[i].done)
            return false;
    return true;
}

/* Applies to every laser: setpoint offset_mhz from the config's, at ramp. */
static void set_all(struct rig *r, double offset_mhz, double ramp) {
    struct changes ch = {0};

    for (int i = 0; i < NLASERS; i++) {
        struct laser *l = rig_laser(r, i);
        if (laser_set_setpoint(l, l->cfg->setpoint_thz + offset_mhz * 1e-6, ramp, rig_change_cb,
                               &ch.c[i]) != 0)
            die("laser_set_setpoint refused");
    }
    if (!rig_run_until(r, pred_changes_done, &ch, 10))
        die("setpoint changes not durable");
}

static void lock_all(struct rig *r, bool on) {
    struct changes ch = {0};

    for (int i = 0; i < NLASERS; i++)
        if (laser_lock(rig_laser(r, i), on, rig_change_cb, &ch.c[i]) != 0)
            die("laser_lock refused");
    if (!rig_run_until(r, pred_changes_done, &ch, 10))
        die("lock changes not durable");
}

/* ---- analysis ---- */

/* Time from t0 until |error| (the true one, or as read) stays below tol to
 * the end of the trace; (double)NAN if the last reading is still outside. */
static double settle_s(const struct trace *tr, double t0, double tol, bool as_read) {
    size_t last_out = SIZE_MAX;

    for (size_t k = 0; k < tr->n; k++)
        if (tr->s[k].t_s >= t0 && !(fabs(as_read ? tr->s[k].meas_mhz : tr->s[k].true_mhz) < tol))
            last_out = k;
    if (last_out == SIZE_MAX)
        return 0;
    if (last_out + 1 >= tr->n)
        return (double)NAN;
    return tr->s[last_out + 1].t_s - t0;
}

/* Time from t0 to the first reading that shows state s after one that did
 * not (the lock's state as of the previous step). */
static double state_after_s(const struct trace *tr, double t0, enum lock_state s) {
    bool left = false;

    for (size_t k = 0; k < tr->n; k++) {
        if (tr->s[k].t_s < t0)
            continue;
        if (tr->s[k].state != s)
            left = true;
        else if (left)
            return tr->s[k].t_s - t0;
    }
    return (double)NAN;
}

static double first_state_s(const struct trace *tr, double t0, enum lock_state s) {
    for (size_t k = 0; k < tr->n; k++)
        if (tr->s[k].t_s >= t0 && tr->s[k].state == s)
            return tr->s[k].t_s;
    return (double)NAN;
}

/* Controller steps of this laser from t0 until its output is off both
 * limits. A sample shows the output as of the previous reading's step, so
 * the sample at index n after t0 shows what n steps did. */
static double off_rail_steps(const struct trace *tr, double t0, const struct laser_config *c) {
    int n = 0;

    for (size_t k = 0; k < tr->n; k++) {
        if (tr->s[k].t_s < t0)
            continue;
        if (tr->s[k].out_v > c->output_min_v + 1e-6 && tr->s[k].out_v < c->output_max_v - 1e-6)
            return n;
        n++;
    }
    return (double)NAN;
}

static void noise_stats(const struct trace *tr, double *sd_meas, double *sd_true, double *dt_ms,
                        double *not_locked, double *flaps) {
    double s1 = 0, s2 = 0, t1 = 0, t2 = 0;
    int n = 0, nl = 0, nf = 0;

    for (size_t k = 0; k < tr->n && k < NOISE_READINGS; k++) {
        const struct sample *s = &tr->s[k];
        if (!isfinite(s->meas_mhz))
            continue;
        n++;
        s1 += s->meas_mhz;
        s2 += s->meas_mhz * s->meas_mhz;
        t1 += s->true_mhz;
        t2 += s->true_mhz * s->true_mhz;
        nl += s->state != LOCK_LOCKED;
        nf += k > 0 && s->state != LOCK_LOCKED && tr->s[k - 1].state == LOCK_LOCKED;
    }
    *sd_meas = sqrt((s2 - s1 * s1 / n) / (n - 1));
    *sd_true = sqrt((t2 - t1 * t1 / n) / (n - 1));
    *dt_ms = (tr->s[NOISE_READINGS - 1].t_s - tr->s[0].t_s) / (NOISE_READINGS - 1) * 1e3;
    *not_locked = nl;
    *flaps = nf;
}

/* ---- one seed ---- */

/* One run of every phase. noise_free: no measurement noise and no drift,
 * for the loop's own step response. */
static void run_seed(uint64_t seed, bool noise_free, struct seed_result *res) {
    struct rig *r = calloc(1, sizeof(*r));
    struct bench *b = calloc(1, sizeof(*b));
    double wall0, cpu0, t0;
    char err[512] = "";
    uint64_t steps0 = 0;

    if (r == NULL || b == NULL)
        die("out of memory");
    memset(res, 0, sizeof(*res));
    res->seed = seed;
    config_defaults(&r->cfg);
    ((struct sim_settings *)(void *)r->cfg.wavemeter.u.bytes)->seed = seed;
    for (int i = 0; i < NLASERS; i++) {
        r->cfg.lasers[i].lock = true;
        if (noise_free) {
            sim_chan(&r->cfg.lasers[i])->noise_mhz = 0;
            sim_chan(&r->cfg.lasers[i])->drift_mhz_per_sqrt_s = 0;
        }
    }
    r->tap = tap;
    r->tap_arg = b;

    wall0 = now_s(CLOCK_MONOTONIC);
    cpu0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
    if (rig_start(r, err, sizeof(err)) != 0)
        die(err);
    wait_all(r, LOCK_LOCKED, 30);
    rig_run_for(r, 10);

    /* Locked noise; also the throughput of plain locked operation (no
     * client changes, so no state file saves). */
    record(b);
    uint64_t readings0 = r->readings;
    double wall1 = now_s(CLOCK_MONOTONIC), cpu1 = now_s(CLOCK_PROCESS_CPUTIME_ID);
    if (!rig_run_until(r, pred_noise_done, b, 600))
        die("noise readings did not arrive");
    res->locked_real_s = now_s(CLOCK_MONOTONIC) - wall1;
    res->locked_cpu_s = now_s(CLOCK_PROCESS_CPUTIME_ID) - cpu1;
    res->locked_readings = r->readings - readings0;
    for (int i = 0; i < NLASERS; i++) {
        double *m = res->m[i];
        noise_stats(&b->tr[i], &m[M_SD_MEAS], &m[M_SD_TRUE], &m[M_DT_MS], &m[M_NOT_LOCKED],
                    &m[M_FLAPS]);
        m[M_SD_RATIO] =
            noise_free ? (double)NAN : m[M_SD_MEAS] / sim_chan(&r->cfg.lasers[i])->noise_mhz;
    }

    /* A 100 MHz setpoint step, no ramp. */
    record(b);
    t0 = rig_now_s(r);
    set_all(r, STEP_MHZ, 0);
    rig_run_for(r, STEP_WINDOW_S - (rig_now_s(r) - t0));
    for (int i = 0; i < NLASERS; i++) {
        const struct trace *tr = &b->tr[i];
        double over = 0;
        for (size_t k = 0; k < tr->n; k++)
            if (tr->s[k].t_s >= t0 && tr->s[k].true_mhz > over)
                over = tr->s[k].true_mhz;
        res->m[i][M_STEP_SETTLE] = settle_s(tr, t0, r->cfg.lasers[i].tolerance_mhz, false);
        res->m[i][M_STEP_SETTLE_MEAS] = settle_s(tr, t0, r->cfg.lasers[i].tolerance_mhz, true);
        res->m[i][M_STEP_LOCKED] = state_after_s(tr, t0, LOCK_LOCKED);
        res->m[i][M_STEP_OVER_MHZ] = over;
        res->m[i][M_STEP_OVER_PCT] = over / STEP_MHZ * 100;
    }

    /* Onto a rail with a ramp, then a reachable setpoint while railed. */
    set_all(r, 0, 0);
    wait_all(r, LOCK_LOCKED, 30);
    set_all(r, RAIL_SETPOINT_MHZ, RAIL_RAMP_MHZ_PER_S);
    wait_all(r, LOCK_RAILED, 30);
    rig_run_for(r, RAIL_HOLD_S);
    record(b);
    t0 = rig_now_s(r);
    set_all(r, RECOVER_SETPOINT_MHZ, 0);
    rig_run_for(r, RECOVER_WINDOW_S - (rig_now_s(r) - t0));
    for (int i = 0; i < NLASERS; i++) {
        res->m[i][M_RAIL_OFF_STEPS] = off_rail_steps(&b->tr[i], t0, &r->cfg.lasers[i]);
        res->m[i][M_RAIL_LOCKED] = state_after_s(&b->tr[i], t0, LOCK_LOCKED);
        res->m[i][M_RAIL_SETTLE] = settle_s(&b->tr[i], t0, r->cfg.lasers[i].tolerance_mhz, false);
    }

    /* Railed until lost (rail_timeout_s), then a reachable setpoint and a
     * relock by hand (lock off, lock on). */
    record(b);
    set_all(r, RAIL_SETPOINT_MHZ, RAIL_RAMP_MHZ_PER_S);
    wait_all(r, LOCK_LOST, 60);
    rig_run_for(r, 1); /* the tap sees a state one reading late */
    for (int i = 0; i < NLASERS; i++)
        res->m[i][M_RAIL_LOST] =
            first_state_s(&b->tr[i], 0, LOCK_LOST) - first_state_s(&b->tr[i], 0, LOCK_RAILED);
    set_all(r, RECOVER_SETPOINT_MHZ, 0);
    lock_all(r, false);
    record(b);
    t0 = rig_now_s(r);
    lock_all(r, true);
    rig_run_for(r, RECOVER_WINDOW_S - (rig_now_s(r) - t0));
    for (int i = 0; i < NLASERS; i++) {
        res->m[i][M_RELOCK_OFF_STEPS] = off_rail_steps(&b->tr[i], t0, &r->cfg.lasers[i]);
        res->m[i][M_RELOCK_LOCKED] = state_after_s(&b->tr[i], t0, LOCK_LOCKED);
        /* Locked from "acquiring" straight away counts from the relock. */
        if (isnan(res->m[i][M_RELOCK_LOCKED]))
            res->m[i][M_RELOCK_LOCKED] = first_state_s(&b->tr[i], t0, LOCK_LOCKED) - t0;
    }

    res->sim_s = rig_now_s(r);
    res->readings = r->readings;
    for (int i = 0; i < NLASERS; i++)
        steps0 += rig_laser(r, i)->writes;
    res->steps = steps0;
    b->recording = false;
    if (rig_stop(r) != 0)
        die("rig did not stop cleanly");
    res->real_s = now_s(CLOCK_MONOTONIC) - wall0;
    res->cpu_s = now_s(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
    for (int i = 0; i < NLASERS; i++)
        free(b->tr[i].s);
    free(b);
    free(r);
}

/* ---- the controller alone ---- */

static double pid_step_ns(void) {
    struct config cfg;
    struct pid_params p;
    struct pid pid;
    uint64_t t_ns = 1000000000u, x = 88172645463325252u;
    volatile double sink = 0;
    double out, e, cpu0, sp;

    config_defaults(&cfg);
    p.kp_v_per_mhz = cfg.lasers[0].kp_v_per_mhz;
    p.ki_v_per_mhz_s = cfg.lasers[0].ki_v_per_mhz_s;
    p.kd_v_s_per_mhz = cfg.lasers[0].kd_v_s_per_mhz;
    p.sensitivity_mhz_per_v = cfg.lasers[0].sensitivity_mhz_per_v;
    p.output_min_v = cfg.lasers[0].output_min_v;
    p.output_max_v = cfg.lasers[0].output_max_v;
    p.slew_v_per_s = cfg.lasers[0].slew_v_per_s;
    p.max_gap_s = cfg.lasers[0].max_gap_s;
    sp = cfg.lasers[0].setpoint_thz;
    pid_init(&pid, &p, sp, 0);
    pid_engage(&pid, 0, sp, t_ns);
    cpu0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
    for (long k = 0; k < PID_MICRO_STEPS; k++) {
        /* xorshift64: about +-1 MHz around the setpoint, 200 ms apart. */
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        t_ns += 200000000u;
        pid_step(&pid, sp + ((double)(x >> 11) * 0x1.0p-53 - 0.5) * 2e-6, t_ns, &out, &e);
        sink += out;
    }
    (void)sink;
    return (now_s(CLOCK_PROCESS_CPUTIME_ID) - cpu0) / PID_MICRO_STEPS * 1e9;
}

/* ---- many lasers on one switch (issue 11) ---- */

/*
 * --counts: 1, 4, 8 and 16 lasers as the lab has them (the
 * defaults' lasers in turn, exposure 20 ms + settle 30 ms, default gains, all
 * locked at start). For each count: the dt each lock sees, locked noise over
 * COUNT_NOISE_READINGS readings per laser (sd as read against the
 * simulator's noise and against the floor any lock can read, sqrt(Kalman^2 +
 * noise^2); sd of the true error against the Kalman bound for the
 * simulator's noise, drift and that dt), then, without noise or drift, a
 * 100 MHz step: readings until every laser stays within tolerance, and the
 * overshoot.
 */
#define COUNT_MAX 16
#define COUNT_NOISE_READINGS 1000
#define COUNT_TRACE 1200

struct count_trace {
    int n;
    double meas[COUNT_TRACE], truth[COUNT_TRACE];
    uint64_t t_ns[COUNT_TRACE];
    enum lock_state state[COUNT_TRACE];
};

struct count_bench {
    bool on;
    int nl;
    struct count_trace tr[COUNT_MAX];
};

static void count_tap(struct rig *r, const struct reading *rd) {
    struct count_bench *b = r->tap_arg;
    struct laser *l = lasers_find_channel(&r->lasers, rd->channel);
    struct count_trace *tr;
    double f = (double)NAN;

    if (!b->on || l == NULL || rd->status != WM_OK)
        return;
    tr = &b->tr[l - r->lasers.l];
    if (tr->n >= COUNT_TRACE)
        return;
    sim_peek(rig_dev(r), rd->channel, NULL, &f);
    tr->meas[tr->n] = (rd->frequency_thz - l->pid.setpoint_thz) * 1e6;
    tr->truth[tr->n] = (f - l->pid.setpoint_thz) * 1e6;
    tr->t_ns[tr->n] = rd->t_ns;
    tr->state[tr->n] = l->state;
    tr->n++;
}

static bool pred_count_locked(struct rig *r, const void *arg) {
    (void)arg;
    for (int i = 0; i < r->cfg.nlasers; i++)
        if (rig_laser(r, i)->state != LOCK_LOCKED)
            return false;
    return true;
}

static bool pred_count_noise(struct rig *r, const void *arg) {
    const struct count_bench *b = arg;

    (void)r;
    for (int i = 0; i < b->nl; i++)
        if (b->tr[i].n < COUNT_NOISE_READINGS)
            return false;
    return true;
}

struct count_result {
    double dt_s, sd_read_noise, sd_read_floor, sd_true_kalman, kalman_mhz, sd_true_mhz;
    double mean_read_noise, mean_read_floor, mean_true_kalman; /* over the lasers */
    double settle_readings, settle_s, overshoot_mhz, locked_s, gi;
    int not_locked;
};

static struct rig *count_rig(int n, uint64_t seed, bool quiet) {
    struct rig *r = calloc(1, sizeof(*r));
    struct config d;

    if (r == NULL)
        die("out of memory");
    config_defaults(&d);
    config_defaults(&r->cfg);
    ((struct sim_settings *)(void *)r->cfg.wavemeter.u.bytes)->seed = seed;
    r->cfg.nlasers = n;
    for (int i = 0; i < n; i++) {
        struct laser_config *l = &r->cfg.lasers[i];
        *l = d.lasers[i % 4];
        snprintf(l->name, sizeof(l->name), "L%d", i + 1);
        l->channel = i + 1;
        l->exposure_ms = 20;
        l->settle_ms = 30;
        l->lock = true;
        sim_chan(l)->offset_mhz = i % 2 ? 60 : -60;
        if (quiet) {
            sim_chan(l)->noise_mhz = 0;
            sim_chan(l)->drift_mhz_per_sqrt_s = 0;
        }
    }
    return r;
}

static void run_count(int n, uint64_t seed, struct count_result *res) {
    struct count_bench *b = calloc(1, sizeof(*b));
    struct rig *r = count_rig(n, seed, false);
    char err[512] = "";

    if (b == NULL)
        die("out of memory");
    memset(res, 0, sizeof(*res));
    b->nl = n;
    r->tap = count_tap;
    r->tap_arg = b;
    if (rig_start(r, err, sizeof(err)) != 0)
        die(err);
    if (!rig_run_until(r, pred_count_locked, NULL, 120))
        die("not all lasers locked within 120 s simulated");
    res->locked_s = rig_now_s(r);
    rig_run_for(r, 10);
    b->on = true;
    if (!rig_run_until(r, pred_count_noise, b, 3600))
        die("noise readings did not arrive");
    for (int i = 0; i < n; i++) {
        const struct count_trace *tr = &b->tr[i];
        const struct sim_chan *sc = sim_chan_const(&r->cfg.lasers[i]);
        double m1 = 0, m2 = 0, t1 = 0, t2 = 0, bound, k = COUNT_NOISE_READINGS;
        for (int j = 0; j < COUNT_NOISE_READINGS; j++) {
            m1 += tr->meas[j];
            m2 += tr->meas[j] * tr->meas[j];
            t1 += tr->truth[j];
            t2 += tr->truth[j] * tr->truth[j];
            res->not_locked += tr->state[j] != LOCK_LOCKED;
        }
        double sd_m = sqrt((m2 - m1 * m1 / k) / (k - 1)), sd_t = sqrt((t2 - t1 * t1 / k) / (k - 1));
        double dt = (double)(tr->t_ns[COUNT_NOISE_READINGS - 1] - tr->t_ns[0]) * 1e-9 / (k - 1);
        pid_kalman(sc->noise_mhz, sc->drift_mhz_per_sqrt_s, dt, &bound, NULL);
        /* The worst laser of the count. */
        res->dt_s = fmax(res->dt_s, dt);
        res->sd_read_noise = fmax(res->sd_read_noise, sd_m / sc->noise_mhz);
        res->sd_read_floor =
            fmax(res->sd_read_floor, sd_m / sqrt(bound * bound + sc->noise_mhz * sc->noise_mhz));
        if (sd_t / bound > res->sd_true_kalman) {
            res->sd_true_kalman = sd_t / bound;
            res->sd_true_mhz = sd_t;
            res->kalman_mhz = bound;
        }
        res->gi = fmax(res->gi, rig_laser(r, i)->pid.eff.gi);
        res->mean_read_noise += sd_m / sc->noise_mhz / n;
        res->mean_read_floor += sd_m / sqrt(bound * bound + sc->noise_mhz * sc->noise_mhz) / n;
        res->mean_true_kalman += sd_t / bound / n;
    }
    b->on = false;
    if (rig_stop(r) != 0)
        die("rig did not stop cleanly");
    free(r);

    /* The loop's own step response: no noise, no drift. */
    memset(b, 0, sizeof(*b));
    b->nl = n;
    r = count_rig(n, seed, true);
    r->tap = count_tap;
    r->tap_arg = b;
    if (rig_start(r, err, sizeof(err)) != 0)
        die(err);
    if (!rig_run_until(r, pred_count_locked, NULL, 120))
        die("not all lasers locked within 120 s simulated (no noise)");
    rig_run_for(r, 2);
    b->on = true;
    uint64_t t0 = rig_now_ns(r);
    for (int i = 0; i < n; i++) {
        struct laser *l = rig_laser(r, i);
        struct rig_change c = {0};
        if (laser_set_setpoint(l, l->cfg->setpoint_thz + STEP_MHZ * 1e-6, 0, rig_change_cb, &c) !=
                0 ||
            !rig_wait_change(r, &c, 10))
            die("setpoint step refused");
    }
    rig_run_for(r, 20);
    for (int i = 0; i < n; i++) {
        const struct count_trace *tr = &b->tr[i];
        int first = -1, last_out = -1;
        for (int j = 0; j < tr->n; j++) {
            if (tr->t_ns[j] <= t0)
                continue;
            if (first < 0)
                first = j;
            if (fabs(tr->meas[j]) > r->cfg.lasers[i].tolerance_mhz)
                last_out = j;
            res->overshoot_mhz = fmax(res->overshoot_mhz, tr->meas[j]);
        }
        if (first < 0 || last_out + 1 >= tr->n)
            die("a laser never settled after the step");
        double readings = last_out < first ? 0 : last_out - first + 1;
        res->settle_readings = fmax(res->settle_readings, readings);
        res->settle_s = fmax(res->settle_s, (double)(tr->t_ns[last_out + 1] - t0) * 1e-9);
    }
    b->on = false;
    if (rig_stop(r) != 0)
        die("rig did not stop cleanly");
    free(r);
    free(b);
}

static void run_counts(int nseeds, uint64_t first) {
    static const int counts[] = {1, 4, 8, 16};

    printf("bench_lock --counts: 1-16 lasers (exposure 20 + settle 30 ms, default gains, all "
           "locked), %d seed(s) from %llu; worst laser of each count, per seed\n",
           nseeds, (unsigned long long)first);
    printf("  ratios: mean over the lasers / the worst laser\n");
    printf("  %5s %4s %6s %5s %11s %11s %11s %8s %7s %7s %6s %8s\n", "count", "seed", "dt s", "gI",
           "read/sim", "read/floor", "true/Kalman", "true MHz", "Kal MHz", "step rd", "step s",
           "over MHz");
    for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++) {
        for (int s = 0; s < nseeds; s++) {
            struct count_result res;
            run_count(counts[c], first + (uint64_t)s, &res);
            printf("  %5d %4llu %6.3f %5.2f %5.2f/%5.2f %5.2f/%5.2f %5.2f/%5.2f %8.3f %7.3f %7.0f "
                   "%6.2f "
                   "%8.3f%s\n",
                   counts[c], (unsigned long long)(first + (uint64_t)s), res.dt_s, res.gi,
                   res.mean_read_noise, res.sd_read_noise, res.mean_read_floor, res.sd_read_floor,
                   res.mean_true_kalman, res.sd_true_kalman, res.sd_true_mhz, res.kalman_mhz,
                   res.settle_readings, res.settle_s, res.overshoot_mhz,
                   res.not_locked ? "  (some readings not locked)" : "");
        }
    }
}

/* ---- report ---- */

static void print_stat(const char *label, const double *v, int n, const char *fmt) {
    double sum = 0, lo = (double)INFINITY, hi = -(double)INFINITY;
    int k = 0;
    char a[32], b2[32], c[32];

    for (int i = 0; i < n; i++) {
        if (isnan(v[i]))
            continue;
        sum += v[i];
        lo = v[i] < lo ? v[i] : lo;
        hi = v[i] > hi ? v[i] : hi;
        k++;
    }
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    snprintf(a, sizeof(a), fmt, k ? sum / k : (double)NAN);
    snprintf(b2, sizeof(b2), fmt, k ? lo : (double)NAN);
    snprintf(c, sizeof(c), fmt, k ? hi : (double)NAN);
#pragma GCC diagnostic pop
    printf("  %-40s %8s %8s %8s%s\n", label, a, b2, c, k < n ? "  (some n/a)" : "");
}

static void print_cells(const char *label, const double *v, int n, const char *fmt) {
    printf("  %-40s", label);
    for (int i = 0; i < n; i++) {
        char cell[32];
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        snprintf(cell, sizeof(cell), fmt, v[i]);
#pragma GCC diagnostic pop
        printf(" %8s", cell);
    }
    printf("\n");
}

static void usage(void) {
    fprintf(stderr, "usage: bench_lock [--seeds N] [--first-seed S] [--per-seed] [--counts]\n");
    exit(2);
}

int main(int argc, char **argv) {
    static struct seed_result res[MAX_SEEDS], clean;
    struct config cfg;
    int nseeds = 5;
    uint64_t first = 1;
    bool per_seed = false, counts = false;
    double v[MAX_SEEDS];

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seeds") == 0 && i + 1 < argc)
            nseeds = atoi(argv[++i]);
        else if (strcmp(argv[i], "--first-seed") == 0 && i + 1 < argc)
            first = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--per-seed") == 0)
            per_seed = true;
        else if (strcmp(argv[i], "--counts") == 0)
            counts = true;
        else
            usage();
    }
    if (nseeds < 1 || nseeds > MAX_SEEDS)
        usage();
    /* One pool thread: jobs run in the order queued, the order real time
     * gives them (see tests/inproc/test_lock_inproc.c). */
    setenv("UV_THREADPOOL_SIZE", "1", 1);
    log_set_level(LOG_LVL_ERROR);
    if (counts) {
        run_counts(nseeds, first);
        return 0;
    }

    config_defaults(&cfg);
    printf("bench_lock: the built-in default lasers on the simulator, fake clock, %d seed(s) "
           "from %llu\n",
           nseeds, (unsigned long long)first);
    printf("  %-5s %7s %6s %6s %6s %6s %7s %7s %5s %5s %5s %6s\n", "laser", "S MHz/V", "noise",
           "drift", "lag ms", "exp+st", "kp", "ki", "slew", "tol", "capt", "rail s");
    for (int i = 0; i < NLASERS; i++) {
        const struct laser_config *c = &cfg.lasers[i];
        printf("  %-5s %7.0f %6.2f %6.2f %6.0f %3d+%-2d %7.4f %7.4f %5.1f %5.1f %5.0f %6.1f\n",
               c->name, sim_chan_const(c)->sensitivity_mhz_per_v, sim_chan_const(c)->noise_mhz,
               sim_chan_const(c)->drift_mhz_per_sqrt_s, sim_chan_const(c)->lag_ms, c->exposure_ms,
               c->settle_ms, c->kp_v_per_mhz, c->ki_v_per_mhz_s, c->slew_v_per_s, c->tolerance_mhz,
               c->capture_mhz, c->rail_timeout_s);
    }
    printf("  (noise MHz 1 sigma, drift MHz/sqrt(s), exposure+settle ms, kp V/MHz, ki V/(MHz s), "
           "kd 0,\n   slew V/s, tolerance and capture MHz, output %+.0f..%+.0f V)\n\n",
           cfg.lasers[0].output_min_v, cfg.lasers[0].output_max_v);

    /* A first run warms caches and page tables; its times are not shown. */
    run_seed(first, false, &res[0]);
    for (int s = 0; s < nseeds; s++) {
        run_seed(first + (uint64_t)s, false, &res[s]);
        printf("seed %3llu: %4.0f s simulated in %4.2f s real; locked phase: %5llu readings in "
               "%5.3f s real, CPU %5.1f us/reading\n",
               (unsigned long long)res[s].seed, res[s].sim_s, res[s].real_s,
               (unsigned long long)res[s].locked_readings, res[s].locked_real_s,
               res[s].locked_cpu_s / (double)res[s].locked_readings * 1e6);
        if (per_seed) {
            for (int m = 0; m < M_COUNT; m++) {
                for (int i = 0; i < NLASERS; i++)
                    v[i] = res[s].m[i][m];
                print_cells(metric_info[m].name, v, NLASERS, metric_info[m].fmt);
            }
        }
    }

    for (int i = 0; i < NLASERS; i++) {
        printf("\nlaser \"%s\" (S %+.0f MHz/V), %d seed(s): %19s %8s %8s\n", cfg.lasers[i].name,
               sim_chan(&cfg.lasers[i])->sensitivity_mhz_per_v, nseeds, "mean", "min", "max");
        for (int m = 0; m < M_COUNT; m++) {
            for (int s = 0; s < nseeds; s++)
                v[s] = res[s].m[i][m];
            print_stat(metric_info[m].name, v, nseeds, metric_info[m].fmt);
        }
    }

    /* The loop's own response: no noise, no drift, so one run says it all. */
    run_seed(first, true, &clean);
    printf("\nno noise, no drift (the loop's own response): %4s %8s %8s %8s\n", cfg.lasers[0].name,
           cfg.lasers[1].name, cfg.lasers[2].name, cfg.lasers[3].name);
    static const enum metric clean_metrics[] = {
        M_STEP_SETTLE, M_STEP_LOCKED, M_STEP_OVER_MHZ, M_STEP_OVER_PCT,    M_RAIL_OFF_STEPS,
        M_RAIL_LOCKED, M_RAIL_SETTLE, M_RAIL_LOST,     M_RELOCK_OFF_STEPS, M_RELOCK_LOCKED,
    };
    for (size_t k = 0; k < sizeof(clean_metrics) / sizeof(clean_metrics[0]); k++) {
        enum metric m = clean_metrics[k];
        for (int i = 0; i < NLASERS; i++)
            v[i] = clean.m[i][m];
        print_cells(metric_info[m].name, v, NLASERS, metric_info[m].fmt);
    }

    printf("\nthroughput (locked phase), %d seed(s): %25s %8s %8s\n", nseeds, "mean", "min", "max");
    for (int s = 0; s < nseeds; s++)
        v[s] = (double)res[s].locked_readings / res[s].locked_real_s;
    print_stat("simulated readings per real second", v, nseeds, "%.0f");
    for (int s = 0; s < nseeds; s++)
        v[s] = res[s].locked_cpu_s / (double)res[s].locked_readings * 1e6;
    print_stat("process CPU per reading+step, us", v, nseeds, "%.1f");
    for (int s = 0; s < nseeds; s++)
        v[s] = res[s].sim_s / res[s].real_s;
    print_stat("simulated s per real s (whole run)", v, nseeds, "%.0f");
    v[0] = pid_step_ns();
    print_stat("pid_step() alone, ns CPU", v, 1, "%.1f");
    return 0;
}
