/*
 * actdev: one shared actuator device on a real libuv loop with a scripted
 * driver: opens on the pool, jobs one at a time in order, a failure closes
 * the device and reopens it with back-off, and stop drops what waits. The
 * back-off is real time (1 s first), so one test waits about that long.
 */
#include "actdev.h"

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"

/* The scripted device: how many opens fail first, and what jobs saw. */
static struct {
    atomic_int opens, closes, open_failures_left;
    atomic_int running, max_running; /* jobs on the pool at once */
    int order[16];
    atomic_int norder;
} dev;

static int fake_open(const struct act_open_args *a, void **handle, char *err, size_t errlen) {
    (void)a;
    dev.opens++;
    if (dev.open_failures_left > 0) {
        dev.open_failures_left--;
        snprintf(err, errlen, "no such device (scripted)");
        return -ENOENT;
    }
    *handle = &dev;
    return 0;
}

static void fake_close(void *handle) {
    if (handle != NULL)
        dev.closes++;
}

static void fake_ident(const void *s, const struct laser_config *lc, char *d, size_t dl, char *c,
                       size_t cl) {
    (void)s;
    (void)lc;
    snprintf(d, dl, "fake");
    snprintf(c, cl, "0");
}

static const struct act_driver fake_driver = {
    .cfg = {.name = "fake"},
    .ident = fake_ident,
    .open = fake_open,
    .close = fake_close,
};

struct job {
    struct actdev_job j;
    int id, status;
    bool done;
};

static void job_run(struct actdev_job *j, void *handle) {
    struct job *jb = (struct job *)(void *)j;
    int now = ++dev.running;

    ck_assert_ptr_eq(handle, &dev);
    if (now > dev.max_running)
        dev.max_running = now;
    /* Long enough for a second job to overlap, if it could. */
    nanosleep(&(struct timespec){0, 2000000}, NULL);
    dev.order[dev.norder++ % 16] = jb->id;
    dev.running--;
}

static void job_done(struct actdev_job *j, int status) {
    struct job *jb = (struct job *)(void *)j;

    jb->status = status;
    jb->done = true;
}

static int states_seen[8], nstates;

static void on_state(struct actdev *d, void *ctx) {
    (void)ctx;
    if (nstates < 8)
        states_seen[nstates++] = (int)d->state;
}

static bool stopped;
static void on_stopped(struct actdev *d) {
    (void)d;
    stopped = true;
}

/* Run the loop until *flag or about seconds of real time. */
static bool run_until(uv_loop_t *loop, const bool *flag, double seconds) {
    uint64_t end = uv_hrtime() + (uint64_t)(seconds * 1e9);

    while (!*flag && uv_hrtime() < end)
        uv_run(loop, UV_RUN_ONCE);
    return *flag;
}

static bool run_until_ready(uv_loop_t *loop, const struct actdev *d, double seconds) {
    uint64_t end = uv_hrtime() + (uint64_t)(seconds * 1e9);

    while (!actdev_ready(d) && uv_hrtime() < end)
        uv_run(loop, UV_RUN_ONCE);
    return actdev_ready(d);
}

static void setup(uv_loop_t *loop, struct actdev *d, struct laser_config *lc, int failures) {
    memset(&dev, 0, sizeof(dev));
    dev.open_failures_left = failures;
    nstates = 0;
    stopped = false;
    memset(lc, 0, sizeof(*lc));
    snprintf(lc->name, sizeof(lc->name), "L1");
    ck_assert_int_eq(uv_loop_init(loop), 0);
    ck_assert_int_eq(actdev_init(d, loop, &fake_driver, lc, NULL, NULL, "fake", on_state, NULL), 0);
}

static void teardown(uv_loop_t *loop, struct actdev *d) {
    actdev_stop(d, on_stopped);
    ck_assert(run_until(loop, &stopped, 5));
    uv_run(loop, UV_RUN_DEFAULT);
    actdev_fini(d);
    ck_assert_int_eq(uv_loop_close(loop), 0);
}

START_TEST(test_jobs_wait_for_open_and_run_one_at_a_time) {
    static uv_loop_t loop;
    static struct actdev d;
    static struct laser_config lc;
    static struct job jobs[6];

    setup(&loop, &d, &lc, 0);
    /* Queued before the open: they wait for it, then run in order. */
    for (int i = 0; i < 6; i++) {
        jobs[i] = (struct job){.j = {.run = job_run, .done = job_done}, .id = i};
        ck_assert_int_eq(actdev_submit(&d, &jobs[i].j), 0);
    }
    actdev_start(&d);
    ck_assert(run_until(&loop, &jobs[5].done, 5));
    ck_assert(actdev_ready(&d));
    ck_assert_int_eq(dev.opens, 1);
    ck_assert_int_eq(dev.max_running, 1);
    for (int i = 0; i < 6; i++) {
        ck_assert_int_eq(jobs[i].status, 0);
        ck_assert_int_eq(dev.order[i], i);
    }
    ck_assert_int_eq(nstates, 1);
    ck_assert_int_eq(states_seen[0], ACTDEV_OPEN);
    teardown(&loop, &d);
    ck_assert_int_eq(dev.closes, 1);
}
END_TEST

START_TEST(test_fail_closes_and_reopens) {
    static uv_loop_t loop;
    static struct actdev d;
    static struct laser_config lc;
    static struct job a, b;

    setup(&loop, &d, &lc, 1);
    a = (struct job){.j = {.run = job_run, .done = job_done}, .id = 1};
    ck_assert_int_eq(actdev_submit(&d, &a.j), 0);
    actdev_start(&d);
    /* The first open fails: the waiting job is told, the owner hears of
     * the fault, and nothing more is accepted until the device is back. */
    ck_assert(run_until(&loop, &a.done, 5));
    ck_assert_int_eq(a.status, -ENODEV);
    ck_assert_int_eq(d.state, ACTDEV_FAULT);
    ck_assert_msg(strstr(d.reason, "no such device") != NULL, "%s", d.reason);
    b = (struct job){.j = {.run = job_run, .done = job_done}, .id = 2};
    ck_assert_int_eq(actdev_submit(&d, &b.j), -ENODEV);
    /* The retry, a second later, opens it. */
    ck_assert(run_until_ready(&loop, &d, 5));
    ck_assert_int_eq(dev.opens, 2);
    /* A job that finds it failing: closed, reopened by the next retry. The
     * open alone does not reset the back-off (a device that opens but
     * fails every write is not reopened every second): it doubles. */
    actdev_fail(&d, "write timed out (scripted)");
    ck_assert_int_eq(d.state, ACTDEV_FAULT);
    ck_assert_ptr_null(d.handle);
    ck_assert_uint_eq(d.backoff_ms, 2000);
    ck_assert(run_until_ready(&loop, &d, 5));
    ck_assert_int_eq(dev.opens, 3);
    ck_assert_int_eq(dev.closes, 1); /* the failed handle, closed on the pool */
    /* A job that works resets it. */
    b = (struct job){.j = {.run = job_run, .done = job_done}, .id = 3};
    ck_assert_int_eq(actdev_submit(&d, &b.j), 0);
    ck_assert(run_until(&loop, &b.done, 5));
    ck_assert_int_eq(b.status, 0);
    ck_assert_uint_eq(d.backoff_ms, 0);
    teardown(&loop, &d);
}
END_TEST

START_TEST(test_stop_drops_waiting_jobs) {
    static uv_loop_t loop;
    static struct actdev d;
    static struct laser_config lc;
    static struct job a;

    setup(&loop, &d, &lc, 100); /* never opens */
    a = (struct job){.j = {.run = job_run, .done = job_done}, .id = 1};
    ck_assert_int_eq(actdev_submit(&d, &a.j), 0);
    actdev_stop(&d, on_stopped);
    ck_assert(a.done);
    ck_assert_int_eq(a.status, -ENODEV);
    ck_assert(run_until(&loop, &stopped, 5));
    uv_run(&loop, UV_RUN_DEFAULT);
    actdev_fini(&d);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    ck_assert_int_eq(dev.opens, 0);
}
END_TEST

static Suite *actdev_suite(void) {
    Suite *s = suite_create("actdev");
    TCase *tc = tcase_create("device");

    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_jobs_wait_for_open_and_run_one_at_a_time);
    tcase_add_test(tc, test_fail_closes_and_reopens);
    tcase_add_test(tc, test_stop_drops_waiting_jobs);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(actdev_suite());
    int failed;

    log_init(LOG_LVL_ERROR);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
