/*
 * actdev: an actuator device's life on the loop: the open on the pool, the
 * queue that runs its channels' jobs one at a time, and the close-and-reopen
 * with back-off after a failure. It never decides what a job writes.
 */
#include "actdev.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

/* A failed device is opened again after 1 s, doubling to 30 s: a replugged
 * cable is found within a second or two, and a device that stays away costs
 * one open (a few syscalls and a handshake) every half minute. */
#define ACTDEV_BACKOFF_MIN_MS 1000u
#define ACTDEV_BACKOFF_MAX_MS 30000u

static void actdev_next(struct actdev *d);

int actdev_init(struct actdev *d, uv_loop_t *loop, const struct act_driver *drv,
                const struct laser_config *first, const struct wm_driver *wm, void *wm_dev,
                const char *name, actdev_state_cb cb, void *ctx) {
    int rc;

    memset(d, 0, sizeof(*d));
    d->loop = loop;
    d->drv = drv;
    d->lasers[0] = first;
    d->args.settings = first->actuator.drv.u.bytes;
    d->args.lasers = d->lasers;
    d->args.nlasers = 1;
    d->args.wm = wm;
    d->args.wm_dev = wm_dev;
    snprintf(d->name, sizeof(d->name), "%s %s", drv->cfg.name, name);
    d->state = ACTDEV_OPENING;
    d->on_state = cb;
    d->ctx = ctx;
    if ((rc = uv_timer_init(loop, &d->retry)) < 0)
        return rc;
    d->retry.data = d;
    return 0;
}

void actdev_add_laser(struct actdev *d, const struct laser_config *lc) {
    if (d->args.nlasers < CONFIG_MAX_LASERS)
        d->lasers[d->args.nlasers++] = lc;
}

static void open_work(uv_work_t *w) {
    struct actdev *d = w->data;

    if (d->stale != NULL) {
        d->drv->close(d->stale);
        d->stale = NULL;
    }
    d->open_err[0] = '\0';
    d->open_rc = d->drv->open(&d->args, &d->handle, d->open_err, sizeof(d->open_err));
    if (d->open_rc < 0)
        d->handle = NULL;
}

/* Every waiting job learns it will not run. */
static void fail_queue(struct actdev *d) {
    struct actdev_job *j = d->head;

    d->head = d->tail = NULL;
    while (j != NULL) {
        struct actdev_job *next = j->next;
        j->done(j, -ENODEV);
        j = next;
    }
}

static void retry_cb(uv_timer_t *t);

static void schedule_retry(struct actdev *d) {
    d->backoff_ms = d->backoff_ms == 0 ? ACTDEV_BACKOFF_MIN_MS : d->backoff_ms * 2;
    if (d->backoff_ms > ACTDEV_BACKOFF_MAX_MS)
        d->backoff_ms = ACTDEV_BACKOFF_MAX_MS;
    uv_timer_start(&d->retry, retry_cb, d->backoff_ms, 0);
}

static void check_stopped(struct actdev *d) {
    if (d->state != ACTDEV_STOPPED || d->opening || d->running != NULL || d->on_stopped == NULL)
        return;
    if (!uv_is_closing((uv_handle_t *)&d->retry))
        uv_close((uv_handle_t *)&d->retry, NULL);
    void (*cb)(struct actdev *) = d->on_stopped;
    d->on_stopped = NULL;
    cb(d);
}

static void open_done(uv_work_t *w, int status) {
    struct actdev *d = w->data;
    bool was_fault = d->failures > 0;

    d->opening = false;
    if (d->state == ACTDEV_STOPPED) {
        fail_queue(d);
        check_stopped(d);
        return;
    }
    if (status < 0 || d->open_rc < 0) {
        char why[sizeof(d->reason)];
        snprintf(why, sizeof(why), "%s",
                 status < 0       ? uv_strerror(status)
                 : d->open_err[0] ? d->open_err
                                  : "open failed");
        /* Once per change of reason: a device that stays away is not news
         * every 30 s. */
        if (d->state != ACTDEV_FAULT || strcmp(why, d->reason) != 0)
            log_warnx("actuator %s: cannot open: %s; retrying with back-off", d->name, why);
        memcpy(d->reason, why, sizeof(why));
        d->state = ACTDEV_FAULT;
        d->failures++;
        fail_queue(d);
        if (d->on_state)
            d->on_state(d, d->ctx);
        schedule_retry(d);
        return;
    }
    d->opens++;
    d->state = ACTDEV_OPEN;
    d->reason[0] = '\0';
    /* The back-off is not reset yet: a device that opens but fails its
     * first write (a read-back off, a board that never answers) must not
     * be reopened every second. A job that succeeds resets it. */
    if (was_fault)
        log_notice("actuator %s: open again", d->name);
    else
        log_info("actuator %s: open", d->name);
    if (d->on_state)
        d->on_state(d, d->ctx);
    actdev_next(d);
}

static void queue_open(struct actdev *d) {
    int rc;

    d->open_work.data = d;
    rc = uv_queue_work(d->loop, &d->open_work, open_work, open_done);
    if (rc < 0) {
        log_error("actuator %s: cannot queue open: %s", d->name, uv_strerror(rc));
        snprintf(d->reason, sizeof(d->reason), "cannot queue open: %s", uv_strerror(rc));
        d->state = ACTDEV_FAULT;
        schedule_retry(d);
        return;
    }
    d->opening = true;
}

static void retry_cb(uv_timer_t *t) {
    struct actdev *d = t->data;

    if (d->state == ACTDEV_FAULT && !d->opening && d->running == NULL)
        queue_open(d);
    else if (d->state == ACTDEV_FAULT)
        schedule_retry(d);
}

void actdev_start(struct actdev *d) {
    d->state = ACTDEV_OPENING;
    queue_open(d);
}

static void job_work(uv_work_t *w) {
    struct actdev_job *j = w->data;

    j->run(j, j->dev->handle);
}

static void job_done(uv_work_t *w, int status) {
    struct actdev_job *j = w->data;
    struct actdev *d = j->dev;

    d->running = NULL;
    j->done(j, status);
    /* The job's owner calls actdev_fail from done when the device failed
     * it: still open here means it worked. */
    if (status >= 0 && d->state == ACTDEV_OPEN)
        d->backoff_ms = 0;
    if (d->state == ACTDEV_STOPPED) {
        fail_queue(d);
        check_stopped(d);
        return;
    }
    actdev_next(d);
}

/* Start the next waiting job if the device is open and idle. */
static void actdev_next(struct actdev *d) {
    struct actdev_job *j;
    int rc;

    while (d->state == ACTDEV_OPEN && d->running == NULL && (j = d->head) != NULL) {
        d->head = j->next;
        if (d->head == NULL)
            d->tail = NULL;
        j->next = NULL;
        j->work.data = j;
        rc = uv_queue_work(d->loop, &j->work, job_work, job_done);
        if (rc < 0) {
            log_error("actuator %s: cannot queue job: %s", d->name, uv_strerror(rc));
            j->done(j, rc);
            continue;
        }
        d->running = j;
    }
}

int actdev_submit(struct actdev *d, struct actdev_job *j) {
    if (d->state == ACTDEV_FAULT || d->state == ACTDEV_STOPPED)
        return -ENODEV;
    j->dev = d;
    j->next = NULL;
    if (d->tail)
        d->tail->next = j;
    else
        d->head = j;
    d->tail = j;
    actdev_next(d);
    return 0;
}

void actdev_fail(struct actdev *d, const char *why) {
    if (d->state == ACTDEV_STOPPED || d->state == ACTDEV_FAULT)
        return;
    log_warnx("actuator %s: %s; closing it, reopening with back-off", d->name, why);
    snprintf(d->reason, sizeof(d->reason), "%s", why);
    d->state = ACTDEV_FAULT;
    d->failures++;
    /* Closed by the next open job, on the pool: closing a serial port may
     * wait for its output to drain. */
    d->stale = d->handle;
    d->handle = NULL;
    fail_queue(d);
    if (d->on_state)
        d->on_state(d, d->ctx);
    schedule_retry(d);
}

bool actdev_ready(const struct actdev *d) {
    return d->state == ACTDEV_OPEN;
}

void actdev_stop(struct actdev *d, void (*cb)(struct actdev *d)) {
    d->state = ACTDEV_STOPPED;
    d->on_stopped = cb;
    uv_timer_stop(&d->retry);
    if (d->running == NULL)
        fail_queue(d);
    check_stopped(d);
}

void actdev_fini(struct actdev *d) {
    if (d->stale != NULL)
        d->drv->close(d->stale);
    if (d->handle != NULL)
        d->drv->close(d->handle);
    d->stale = d->handle = NULL;
}

const char *actdev_state_name(const struct actdev *d) {
    switch (d->state) {
    case ACTDEV_OPENING:
        return "opening";
    case ACTDEV_OPEN:
        return "open";
    case ACTDEV_FAULT:
        return "fault";
    case ACTDEV_STOPPED:
        break;
    }
    return "stopped";
}
