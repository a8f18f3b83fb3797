/*
 * actdev: one actuator device (a serial piezo controller, a DAC box, the
 * wavemeter's analog outputs) shared by the lasers that are its channels.
 * It opens the device on the thread pool, runs its channels' jobs one at a
 * time, and after a failure closes it and opens it again by its configured
 * path with back-off, telling its owner of each change of state. It knows
 * nothing of locks or controllers; laser.c decides what a job does.
 */
#ifndef WMD_ACTDEV_H
#define WMD_ACTDEV_H

#include <stdbool.h>
#include <uv.h>

#include "wavemeter.h"

enum actdev_state {
    ACTDEV_OPENING, /* an open is queued or running; jobs wait for it */
    ACTDEV_OPEN,    /* jobs run, one at a time */
    ACTDEV_FAULT,   /* closed after a failure; a retry is scheduled */
    ACTDEV_STOPPED, /* actdev_stop: nothing runs any more */
};

struct actdev_job;
/* Pool thread: the job's work on the open device (handle). */
typedef void (*actdev_run_fn)(struct actdev_job *j, void *handle);
/* Loop thread: the job is over. status 0: run ran; < 0: it never ran
 * (-ENODEV: the device failed or stopped before its turn). */
typedef void (*actdev_done_fn)(struct actdev_job *j, int status);

/* Embedded in its user (a laser), which keeps it until done is called. */
struct actdev_job {
    uv_work_t work;
    struct actdev *dev;
    actdev_run_fn run;
    actdev_done_fn done;
    struct actdev_job *next; /* in the device's queue */
};

struct actdev;
/* Loop thread: the device opened, or failed (d->reason says why). */
typedef void (*actdev_state_cb)(struct actdev *d, void *ctx);

/* Embedded in its owner (struct lasers); actdev_init, actdev_start,
 * actdev_stop, actdev_fini. All fields are read-only outside actdev.c. */
struct actdev {
    uv_loop_t *loop;
    const struct act_driver *drv;
    struct act_open_args args; /* args.lasers points into lasers below */
    const struct laser_config *lasers[CONFIG_MAX_LASERS];
    char name[CONFIG_PATH_MAX + 32]; /* "mdt693b /dev/serial/by-id/..." for logs */
    void *handle;                    /* the open device; NULL when closed */
    enum actdev_state state;
    char reason[192]; /* why it is in fault */
    unsigned backoff_ms;
    uint64_t opens, failures;

    uv_timer_t retry;
    uv_work_t open_work; /* the open (and the close of a failed handle) */
    bool opening;        /* open_work is in flight */
    void *stale;         /* a failed handle the next open job closes first */
    int open_rc;
    char open_err[192];

    struct actdev_job *running;     /* at most one job on the pool */
    struct actdev_job *head, *tail; /* waiting their turn */

    actdev_state_cb on_state;
    void *ctx;
    void (*on_stopped)(struct actdev *d);
};

/* Loop thread. drv and the first laser (lasers[0]'s settings are the
 * device's); no I/O. Returns 0 or a libuv error. */
int actdev_init(struct actdev *d, uv_loop_t *loop, const struct act_driver *drv,
                const struct laser_config *first, const struct wm_driver *wm, void *wm_dev,
                const char *name, actdev_state_cb cb, void *ctx);
/* Add another laser on this device (before actdev_start). */
void actdev_add_laser(struct actdev *d, const struct laser_config *lc);
/* Queue the first open. */
void actdev_start(struct actdev *d);
/* Run j when the device is open and its earlier jobs are done. Returns 0, or
 * -ENODEV (in fault or stopped: nothing queued, done is not called). */
int actdev_submit(struct actdev *d, struct actdev_job *j);
/* A job found the device failing (from its done callback): close it, fail
 * the queued jobs, tell the owner, and retry the open with back-off (1 s
 * doubling to 30 s). Logged once per change of state. */
void actdev_fail(struct actdev *d, const char *why);
bool actdev_ready(const struct actdev *d);
/* Stop retrying; cb once no job or open is in flight and the timer is
 * closed. Queued jobs get -ENODEV. */
void actdev_stop(struct actdev *d, void (*cb)(struct actdev *d));
/* After stop: close the device. */
void actdev_fini(struct actdev *d);
const char *actdev_state_name(const struct actdev *d);

#endif
