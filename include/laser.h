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
    LOCK_FAULT,
    LOCK_UNSTABLE, /* the error swings without decaying: gains backed off */
    LOCK_RAMPING,  /* following a moving target (a setpoint ramp), with feed-forward */
};
#define LOCK_NSTATES (LOCK_RAMPING + 1)

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

/* ---- autotune (docs/CONTROL.md, "Autotune") ---- */

/* Readings held at the start for the noise and drift, and the most one
 * step may take to settle. */
#define TUNE_HOLD_READINGS 48
#define TUNE_MAX_READINGS 100

enum tune_phase {
    TUNE_NONE,      /* never run */
    TUNE_HOLD,      /* output held: noise, drift, revisit period */
    TUNE_OUT,       /* stepped away from the start, waiting for the laser to settle */
    TUNE_RESET,     /* back at the start before a larger step (the first moved too little) */
    TUNE_BACK,      /* stepped back to the start */
    TUNE_DONE,      /* result ready (and applied if asked) */
    TUNE_FAILED,    /* detail says why; the output is back at the start */
    TUNE_CANCELLED, /* a client locked the laser or set its output */
};

/* What autotune measured and proposes. */
struct laser_tune_result {
    double sensitivity_mhz_per_v; /* signed, the mean of the two steps' */
    double s_out_mhz_per_v;       /* from the step away */
    double s_back_mhz_per_v;      /* from the step back */
    double hysteresis;            /* (|S_out| - |S_back|) / max of both */
    double lag_readings;          /* the slower step's time to follow, in readings */
    double noise_mhz;             /* white reading noise, 1 sigma */
    double drift_mhz_per_sqrt_s;  /* random walk of the free-running laser */
    double dt_s;                  /* revisit period while it ran as if locked */
    double kalman_mhz;            /* best true error any lock can reach (Kalman) */
    double expected_mhz;          /* true error the proposed gains give (no lag) */
    double gi;                    /* the proposed integrator gain per reading */
    double kp_v_per_mhz, ki_v_per_mhz_s, kd_v_s_per_mhz;
};

/* One laser's autotune run; plain data in struct laser, loop thread only. */
struct laser_tune {
    enum tune_phase phase;
    bool apply; /* apply the proposal when done */
    bool applied;
    bool writing;      /* a step's write is queued: readings wait for it */
    double step_v;     /* signed size of the step away */
    double base_v;     /* output at the start, where every run ends */
    int growths;       /* times the step was made larger */
    uint64_t write_ns; /* when the last write was made (the job's clock) */
    int n, bad;        /* readings kept in this phase; unusable ones in a row */
    double ref_thz;
    double y_mhz[TUNE_MAX_READINGS];
    uint64_t t_ns[TUNE_MAX_READINGS];
    double level_mhz; /* settled frequency before the step in progress */
    double lag_out_s, lag_back_s;
    char detail[200]; /* progress, or why it failed */
    struct laser_tune_result res;
};

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
    double error_mhz;        /* last error, NAN if none (or no current reading) */
    uint64_t error_t_ns;     /* the reading of the last error that was a number; 0: none */
    int in_tolerance;        /* consecutive readings within tolerance */
    int out_tolerance;       /* consecutive readings outside it */
    int outside_capture;     /* consecutive readings outside the capture range */
    double capture_jump_mhz; /* how far the error jumped into the first of them; NAN: unknown */
    bool park_pending;       /* lost with lost_action park: the output goes back when it can */
    /* A setpoint change beyond capture_mhz carried out as a ramp at
     * large_step_rate_mhz_per_s: the laser's own ramp rate comes back after. */
    bool large_move;
    double rate_after_move;
    /* Engaged (a client's lock, a restart's resume) and no good reading
     * since: a first error outside the capture range is a large step from
     * where the laser is, not a loss. */
    bool fresh_engage;
    uint64_t railed_since_ns; /* 0 = not railed */
    bool have_locked_output;
    double locked_output_v; /* last output while locked: where relock returns */
    int relocks;            /* relock attempts since the last lock */
    uint64_t relocks_total; /* relock attempts since start (the metrics' counter) */
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
    /* A restart's first job: read the device's output first (act->read);
     * when it disagrees with job_output_v (the saved one) by more than the
     * read's tolerance, take the device's and write nothing. read_only: a
     * restart "off", which writes nothing in any case. */
    bool job_resume, job_read_only, job_adopted, job_read_failed;
    bool job_ff; /* a write of the feed-forward between readings: no engage after it */
    double job_output_v;
    enum pid_result job_result;
    double job_error_mhz;
    int job_rc;
    struct act_io job_io;
    double readback_v; /* the device's read-back after the last write, NAN if none */
    /* Whether output_v is what the actuator has: false from a start with
     * restart "off" until the first write (the laser sits wherever the
     * actuator was left). */
    bool output_known;
    double saved_output_v;           /* output_v in the last snapshot; NAN: none */
    bool output_owned;               /* this run wrote the output or means to (a restore, a
                                        lock, set_output): false only for "restart": "off" */
    struct laser_change *job_waiter; /* a set_output waiting for its write */
    uint64_t writes, write_errors;
    uint64_t job_write_ns; /* the job's clock just before its write */

    /* The controller's health (docs/CONTROL.md). */
    struct pid_osc osc;          /* oscillation detector, fed with each step's error */
    uint64_t acquiring_since_ns; /* this attempt to lock began; 0 = locked or off */
    bool acquire_warned;         /* acquire_timeout_s logged for this attempt */
    bool bound_logged;           /* the bound's first action logged for these gains */
    double expected_dt_s;        /* the schedule's revisit period if locked (NAN: none) */
    char gains_check[512];       /* why the gains are unsafe at expected_dt_s; "" if fine */
    struct laser_tune tune;

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
    uv_timer_t save_timer; /* every second: a fresh output, or the periodic save */
    uv_timer_t ramp_timer; /* while a locked laser ramps: its feed-forward between readings */
    bool ramp_timer_on;
    bool outputs_dirty;
    bool fresh_due;        /* an output moved away from its saved value */
    uint64_t last_save_ms; /* uv_now of the last snapshot */
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

/*
 * Autotune (docs/CONTROL.md): on an unlocked laser, hold the output, step it
 * by step_v (NAN: about 50 MHz by the configured sensitivity) away and back
 * within the output limits, measure S, hysteresis, lag, noise and drift, and
 * propose gains for the laser's revisit period; apply them (sensitivity
 * included, saved like gains) if apply. Returns 0 once started (progress in
 * l->tune), or -EPERM locked, -ENOTSUP no actuator or sensitivity 0 and no
 * step_v, -EBUSY a run or a write in flight, -ENODEV device not open,
 * -ERANGE no step of that size fits the output range. Loop thread.
 */
int laser_autotune(struct laser *l, double step_v, bool apply);
const char *laser_tune_phase_name(enum tune_phase p);
bool laser_tune_running(const struct laser *l);

/* History of a laser within the last seconds (0 = all): calls fn for each,
 * oldest first. */
void laser_history(const struct laser *l, double seconds,
                   void (*fn)(const struct laser_sample *s, void *arg), void *arg);

#endif
