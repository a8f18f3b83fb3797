/*
 * laser: per-laser stabilization. Owns each laser's controller, lock state
 * machine, actuator and history ring, the actuator jobs on the thread pool
 * (at most one per laser) and the persistence of what clients set. Fed by
 * the meter's readings on the loop thread; never sees a socket or JSON-RPC.
 */
#ifndef WMD_LASER_H
#define WMD_LASER_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "actdev.h"
#include "clock.h"
#include "config.h"
#include "meter.h"
#include "pid.h"
#include "store.h"

enum lock_state {
    LOCK_OFF,
    LOCK_ACQUIRING,
    LOCK_LOCKED,
    LOCK_HOLDING,
    LOCK_RAILED,
    LOCK_LOST,
    LOCK_FAULT
};

const char *laser_state_name(enum lock_state s);

/* One reading of a laser's channel with what the loop did with it. */
struct laser_sample {
    uint64_t t_ns;
    double time_unix;
    uint64_t seq;
    enum wm_status status;
    double frequency_thz; /* NAN unless status ok */
    double error_mhz;     /* NAN unless ok and a target exists */
    double output_v;
    enum lock_state state;
};

struct laser;
struct lasers;

/* A change waiting to be durable before its caller is answered. */
struct laser_change;
/* Which part of a change failed, when rc < 0. */
enum laser_stage {
    LASER_STAGE_ACTUATOR, /* the actuator write failed: nothing changed */
    LASER_STAGE_STORE,    /* applied, but the state file could not be written */
};
/* rc 0: the change is applied and durable; else stage says what failed. */
typedef void (*laser_change_cb)(void *arg, int rc, enum laser_stage stage);

struct laser {
    struct lasers *owner;
    const struct laser_config *cfg;
    const struct act_driver *act; /* NULL: monitor only */
    struct actdev *dev;           /* the device it is a channel of (owner's) */
    struct pid pid;               /* gains, limits, setpoint, target, output */
    uint64_t pid_gen;             /* bumped by every client change to pid */

    bool lock_on; /* the user wants it locked */
    enum lock_state state;
    char reason[256];
    double since_unix;
    double error_mhz;         /* last error, NAN if none */
    int in_tolerance;         /* consecutive readings within tolerance */
    int out_tolerance;        /* consecutive readings outside it */
    int outside_capture;      /* consecutive readings outside the capture range */
    uint64_t railed_since_ns; /* 0 = not railed */
    bool have_locked_output;
    double locked_output_v; /* last output while locked: where relock returns */
    int relocks;            /* relock attempts since the last lock */
    uint64_t lost_ns;

    /* The actuator job: inputs copied in, outputs read back on the loop. */
    struct actdev_job job;
    bool busy;            /* the job is queued on its device or running */
    bool held_during_job; /* a bad reading arrived while the step ran */
    struct pid job_pid;   /* job input and output */
    uint64_t job_gen;
    double job_measured_thz;
    uint64_t job_t_ns;
    bool job_step; /* false: just write job_output_v */
    double job_output_v;
    enum pid_result job_result;
    double job_error_mhz;
    int job_rc;
    struct act_io job_io;
    double readback_v;               /* the device's read-back after the last write, NAN if none */
    bool output_owned;               /* this run wrote the output or means to (a restore, a
                                        lock, set_output): false only for "restart": "off" */
    struct laser_change *job_waiter; /* a set_output waiting for its write */
    uint64_t writes, write_errors;

    struct laser_sample *hist; /* ring of cfg->history_depth */
    size_t hist_len, hist_head;
};

struct lasers {
    uv_loop_t *loop;
    const struct config *cfg;
    const struct clock *clk;
    struct meter *meter;
    int n;
    struct laser l[CONFIG_MAX_LASERS];
    int ndevs, devs_stopped;
    struct actdev devs[CONFIG_MAX_LASERS];
    struct store store;
    uv_timer_t save_timer; /* periodic save of outputs */
    bool outputs_dirty;
    bool stopping;
    void (*on_stopped)(struct lasers *ls);
    /* Optional: a laser's lock state changed (lock notifications). */
    void (*on_state)(struct laser *l, void *ctx);
    void *state_ctx;
};

/*
 * Group the actuators into their devices (nothing is opened: no I/O), load
 * the state file from cfg->state_dir (or the
 * directory given) and apply each laser's restart policy. Returns 0 or < 0
 * with err filled. Loop thread, start-up; the last step that may fail,
 * after which each device's open is queued (a device that is absent puts
 * its lasers in fault and is retried; it never stops the daemon).
 */
int lasers_init(struct lasers *ls, uv_loop_t *loop, const struct config *cfg,
                const struct clock *clk, struct meter *meter, const char *state_dir, char *err,
                size_t errlen);
/* Meter callback: a new reading. */
void lasers_on_reading(struct meter *m, const struct reading *r, void *ctx);
/* Finish jobs in flight, save a last time; cb when done. */
void lasers_stop(struct lasers *ls, void (*cb)(struct lasers *ls));
void lasers_fini(struct lasers *ls);

struct laser *lasers_find(struct lasers *ls, const char *name);
struct laser *lasers_find_channel(struct lasers *ls, int channel);
int lasers_jobs(const struct lasers *ls);
/* Whether the laser has an actuator to drive (false: monitor only). */
bool laser_has_actuator(const struct laser *l);

/*
 * Client changes. Each validates, applies, and calls cb(arg, rc) once the
 * change is durable (rc 0), or at once with a negative code (nothing
 * changed): -ERANGE out of range, -EBUSY job in flight, -EPERM not allowed
 * in this state (e.g. set_output while locked), -ENOTSUP no actuator.
 * Loop thread.
 */
int laser_set_setpoint(struct laser *l, double setpoint_thz, double ramp_mhz_per_s,
                       laser_change_cb cb, void *arg);
int laser_lock(struct laser *l, bool on, laser_change_cb cb, void *arg);
int laser_set_gains(struct laser *l, double kp, double ki, double kd, laser_change_cb cb,
                    void *arg);
int laser_set_output(struct laser *l, double output_v, laser_change_cb cb, void *arg);

/* History of a laser within the last seconds (0 = all): calls fn for each,
 * oldest first. */
void laser_history(const struct laser *l, double seconds,
                   void (*fn)(const struct laser_sample *s, void *arg), void *arg);

#endif
