/*
 * rig: the daemon's measurement and lock layers (meter + lasers on the
 * simulator) on a real libuv loop and a fake clock, for the in-process tests
 * and benchmarks. It drives the loop until a condition holds, with bounds on
 * simulated time and loop iterations, never with real sleeps. Header-only
 * (static inline) so tests and benchmarks share it without a library.
 */
#ifndef WMD_RIG_H
#define WMD_RIG_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "config.h"
#include "fakeclock.h"
#include "laser.h"
#include "meter.h"
#include "sim.h"

/* The fake clock starts at 1 s: a reading time of 0 means "none" to pid. */
#define RIG_START_NS 1000000000u
/* uv_run(UV_RUN_ONCE) calls allowed per simulated second before a wait gives
 * up. A reading costs a few iterations and comes at most every few ms of
 * simulated time, so this is far above what a working rig needs and only
 * stops a rig whose clock no longer moves. */
#define RIG_ITER_PER_SIM_S 20000.0

struct rig;
typedef void (*rig_tap_fn)(struct rig *r, const struct reading *rd);

/* Heap-allocated by its user (struct config is large); rig_start/rig_stop. */
struct rig {
    struct fake_clock fc;
    struct config cfg;
    uv_loop_t loop;
    struct meter meter;
    struct lasers lasers;
    char dir[64];      /* the state directory: made by rig_start unless set */
    bool keep_dir;     /* rig_stop leaves the directory (a restart test) */
    bool no_meter;     /* do not start the meter: the test feeds readings itself */
    bool stopped;      /* meter and lasers both stopped */
    uint64_t readings; /* readings delivered so far */
    rig_tap_fn tap;    /* called after the lasers saw each reading; may be NULL */
    void *tap_arg;
};

/*
 * The built-in defaults trimmed to nlasers (1..4) with exposure_ms 20 and
 * settle_ms 10, a fixed seed and no drift or offset changes: tests adjust the
 * rest. Laser i keeps the defaults' laser i (laser 2, "866", has a negative
 * sensitivity).
 */
static inline void rig_config(struct config *cfg, int nlasers, uint64_t seed) {
    config_defaults(cfg);
    cfg->nlasers = nlasers;
    ((struct sim_settings *)(void *)cfg->wavemeter.u.bytes)->seed = seed;
    for (int i = 0; i < nlasers; i++) {
        cfg->lasers[i].exposure_ms = 20;
        cfg->lasers[i].settle_ms = 10;
    }
}

static inline uint64_t rig_now_ns(const struct rig *r) {
    return fake_clock_now_ns(r->fc.clk.ctx);
}

static inline double rig_now_s(const struct rig *r) {
    return (double)(rig_now_ns(r) - RIG_START_NS) * 1e-9;
}

static inline struct laser *rig_laser(struct rig *r, int i) {
    return &r->lasers.l[i];
}

static inline void *rig_dev(struct rig *r) {
    return r->meter.dev;
}

static inline void rig_on_reading(struct meter *m, const struct reading *rd, void *ctx) {
    struct rig *r = ctx;

    lasers_on_reading(m, rd, &r->lasers);
    r->readings++;
    if (r->tap)
        r->tap(r, rd);
}

/* Hands the lasers a reading of laser i's channel taken now, as the meter
 * would (for rigs with no_meter). freq_thz is used when status is WM_OK. */
static inline void rig_feed(struct rig *r, int i, enum wm_status status, double freq_thz) {
    struct meter_channel *c = &r->meter.ch[i];
    struct reading *rd = &c->last;

    rd->channel = c->cfg->channel;
    rd->status = status;
    rd->frequency_thz = status == WM_OK ? freq_thz : 0;
    rd->exposure_ms = c->cfg->exposure_ms;
    rd->t_ns = rig_now_ns(r);
    rd->time_unix = r->fc.clk.wall_s(r->fc.clk.ctx);
    rd->seq++;
    rd->straddled = false;
    rig_on_reading(&r->meter, rd, r);
}

/* Builds everything from r->cfg and starts reading. Returns 0, or < 0 with
 * err filled (then the rig is unusable and its directory may be left). */
static inline int rig_start(struct rig *r, char *err, size_t errlen) {
    const char *tmp = getenv("TMPDIR");
    bool make_dir = r->dir[0] == '\0'; /* else a restart in the caller's directory */
    int rc;

    fake_clock_init(&r->fc, RIG_START_NS);
    if (make_dir)
        snprintf(r->dir, sizeof(r->dir), "%s/wmd-inproc-XXXXXX",
                 tmp && *tmp && strlen(tmp) < 40 ? tmp : "/tmp");
    if (make_dir && mkdtemp(r->dir) == NULL) {
        rc = -errno;
        snprintf(err, errlen, "mkdtemp %s: %s", r->dir, strerror(errno));
        return rc;
    }
    if ((rc = uv_loop_init(&r->loop)) < 0) {
        snprintf(err, errlen, "uv_loop_init: %s", uv_strerror(rc));
        return rc;
    }
    if ((rc = meter_init(&r->meter, &r->loop, &r->cfg, &r->fc.clk, err, errlen)) < 0)
        return rc;
    rc = lasers_init(&r->lasers, &r->loop, &r->cfg, &r->fc.clk, &r->meter, r->dir, err, errlen);
    if (rc < 0)
        return rc;
    if (!r->no_meter)
        meter_start(&r->meter, rig_on_reading, r);
    return 0;
}

/* Lets s simulated seconds pass without anything happening (for rigs with
 * no_meter, whose clock nothing else moves). */
static inline void rig_advance(struct rig *r, double s) {
    r->fc.clk.sleep_ns(r->fc.clk.ctx, (uint64_t)(s * 1e9));
}

/* One turn of the loop; false when nothing is left to run. */
static inline bool rig_step(struct rig *r) {
    return uv_run(&r->loop, UV_RUN_ONCE) != 0;
}

/* Runs the loop until pred(r, arg) or max_s simulated seconds have passed.
 * Returns whether pred held. */
static inline bool rig_run_until(struct rig *r, bool (*pred)(struct rig *r, const void *arg),
                                 const void *arg, double max_s) {
    uint64_t deadline = rig_now_ns(r) + (uint64_t)(max_s * 1e9);
    uint64_t iters = 0, max_iters = 1000 + (uint64_t)(max_s * RIG_ITER_PER_SIM_S);

    while (!pred(r, arg)) {
        if (rig_now_ns(r) >= deadline || iters++ >= max_iters || !rig_step(r))
            return pred(r, arg);
    }
    return true;
}

static inline bool rig_pred_never(struct rig *r, const void *arg) {
    (void)r;
    (void)arg;
    return false;
}

/* Lets s simulated seconds pass. */
static inline void rig_run_for(struct rig *r, double s) {
    rig_run_until(r, rig_pred_never, NULL, s);
}

static inline bool rig_pred_flag(struct rig *r, const void *arg) {
    (void)r;
    return *(const bool *)arg;
}

static inline bool rig_pred_readings(struct rig *r, const void *arg) {
    return r->readings >= *(const uint64_t *)arg;
}

/* Lets n more readings (of any channel) arrive. */
static inline bool rig_run_readings(struct rig *r, uint64_t n, double max_s) {
    uint64_t want = r->readings + n;

    return rig_run_until(r, rig_pred_readings, &want, max_s);
}

struct rig_state_wait {
    const struct laser *l;
    enum lock_state state;
};

static inline bool rig_pred_state(struct rig *r, const void *arg) {
    const struct rig_state_wait *w = arg;

    (void)r;
    return w->l->state == w->state;
}

/* Runs until laser l is in state s; returns the simulated seconds it took,
 * or -1 if it did not get there within max_s. */
static inline double rig_wait_state(struct rig *r, const struct laser *l, enum lock_state s,
                                    double max_s) {
    struct rig_state_wait w = {l, s};
    double t0 = rig_now_s(r);

    if (!rig_run_until(r, rig_pred_state, &w, max_s))
        return -1;
    return rig_now_s(r) - t0;
}

/* A client change's completion, for laser_set_setpoint and friends. */
struct rig_change {
    bool done;
    int rc;
    int calls;
};

static inline void rig_change_cb(void *arg, int rc, enum laser_stage stage) {
    struct rig_change *c = arg;

    (void)stage;
    c->done = true;
    c->rc = rc;
    c->calls++;
}

static inline bool rig_wait_change(struct rig *r, struct rig_change *c, double max_s) {
    return rig_run_until(r, rig_pred_flag, &c->done, max_s);
}

static inline void rig_lasers_stopped(struct lasers *ls) {
    struct rig *r = (struct rig *)(void *)((char *)ls - offsetof(struct rig, lasers));

    r->stopped = true;
}

static inline void rig_meter_stopped(struct meter *m) {
    struct rig *r = (struct rig *)(void *)((char *)m - offsetof(struct rig, meter));

    lasers_stop(&r->lasers, rig_lasers_stopped);
}

/*
 * Stops the meter, then the lasers (jobs finish, a last save), runs the loop
 * dry, frees both and removes the state directory. Returns what
 * uv_loop_close returned: 0 when every handle was closed.
 */
static inline void rig_remove_dir(const char *dir) {
    char path[128];

    snprintf(path, sizeof(path), "%s/state.json", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/state.json.tmp", dir);
    unlink(path);
    rmdir(dir);
}

static inline int rig_stop(struct rig *r) {
    meter_stop(&r->meter, rig_meter_stopped);
    /* Stopping spends at most one read's simulated time. */
    rig_run_until(r, rig_pred_flag, &r->stopped, 60);
    if (!r->stopped) {
        /* The save timer would keep UV_RUN_DEFAULT going forever. */
        if (!r->keep_dir)
            rig_remove_dir(r->dir);
        return -EBUSY;
    }
    uv_run(&r->loop, UV_RUN_DEFAULT);
    lasers_fini(&r->lasers);
    meter_fini(&r->meter);
    if (!r->keep_dir)
        rig_remove_dir(r->dir);
    return uv_loop_close(&r->loop);
}

#endif
