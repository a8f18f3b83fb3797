/*
 * test_act_mdt693b: the "mdt693b" actuator driver through the real serial
 * module and libserialport, against a small fake MDT693B (firmware >= 1.09,
 * prompt '>') played on the master side of a pseudo-terminal by a thread.
 * Needs LD_PRELOAD=libpty_shim.so (tests/fakes/pty_shim.c), which ctest
 * sets. Also the driver's pure parts: key table, defaults, ident, check.
 */
#define _XOPEN_SOURCE 700 /* posix_openpt, grantpt, unlockpt, ptsname */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "act_mdt693b.h"
#include "config.h"
#include "wavemeter.h"

/* Timing slack for a loaded CI machine (ASan, parallel ctest). */
#define SLACK_MS 1500
#define TIMEOUT_MS 500

/* ---- the fake controller ---- */

struct fake {
    pthread_mutex_t mu;
    pthread_t th;
    int master;
    bool stop;
    /* What the device is; the test changes these between exchanges. */
    double vlimit_v;
    bool echo;
    int naxes;         /* 3: MDT693B, 1: MDT694B (x only) */
    double offset_v;   /* read-back minus set value */
    bool silent;       /* answers nothing (a hung firmware) */
    double volts_v[3]; /* the outputs as set */
    int commands;      /* lines received */
    char last_cmd[64]; /* the last line received, without its CR */
};

static struct fake fk;
static char slave[64];

static int64_t now_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void fake_send(int fd, const char *s) {
    size_t n = strlen(s);

    if (write(fd, s, n) != (ssize_t)n)
        fprintf(stderr, "fake MDT693B: short write\n");
}

/* Answers one command line (without its CR); under fk.mu. */
static void fake_answer(const char *cmd, char *out, size_t outlen) {
    char echo[80] = "";
    int axis = -1;
    double v;
    char c;

    if (fk.echo)
        snprintf(echo, sizeof(echo), "%s\r", cmd);
    if (cmd[0] >= 'x' && cmd[0] <= 'z' && strncmp(cmd + 1, "voltage", 7) == 0 &&
        cmd[0] - 'x' < fk.naxes)
        axis = cmd[0] - 'x';
    if (strcmp(cmd, "vlimit?") == 0)
        snprintf(out, outlen, "%s[ %3.0f]\r>", echo, fk.vlimit_v);
    else if (axis >= 0 && strcmp(cmd + 8, "?") == 0)
        snprintf(out, outlen, "%s[%6.1f]\r>", echo, fk.volts_v[axis] + fk.offset_v);
    else if (axis >= 0 && sscanf(cmd + 8, "=%lf%c", &v, &c) == 1 && v >= 0 && v <= fk.vlimit_v) {
        fk.volts_v[axis] = v;
        snprintf(out, outlen, "%s>", echo);
    } else
        snprintf(out, outlen, "%sCMD_NOT_DEFINED>", echo);
}

static void *fake_run(void *arg) {
    char line[64];
    size_t len = 0;

    (void)arg;
    for (;;) {
        struct pollfd pfd = {.fd = fk.master, .events = POLLIN};
        char buf[64], out[160];
        ssize_t r;

        pthread_mutex_lock(&fk.mu);
        if (fk.stop) {
            pthread_mutex_unlock(&fk.mu);
            return NULL;
        }
        pthread_mutex_unlock(&fk.mu);
        if (poll(&pfd, 1, 20) <= 0 || !(pfd.revents & POLLIN))
            continue;
        if ((r = read(fk.master, buf, sizeof(buf))) <= 0)
            continue;
        for (ssize_t i = 0; i < r; i++) {
            if (buf[i] != '\r' && buf[i] != '\n') {
                if (len < sizeof(line) - 1)
                    line[len++] = buf[i];
                continue;
            }
            if (len == 0)
                continue;
            line[len] = '\0';
            len = 0;
            pthread_mutex_lock(&fk.mu);
            fk.commands++;
            snprintf(fk.last_cmd, sizeof(fk.last_cmd), "%s", line);
            out[0] = '\0';
            if (!fk.silent)
                fake_answer(line, out, sizeof(out));
            pthread_mutex_unlock(&fk.mu);
            fake_send(fk.master, out);
        }
    }
}

static void fake_stop(void) {
    pthread_mutex_lock(&fk.mu);
    fk.stop = true;
    pthread_mutex_unlock(&fk.mu);
    ck_assert_int_eq(pthread_join(fk.th, NULL), 0);
}

static void setup(void) {
    const char *name;

    memset(&fk, 0, sizeof(fk));
    ck_assert_int_eq(pthread_mutex_init(&fk.mu, NULL), 0);
    fk.vlimit_v = 150.0;
    fk.naxes = 3;
    fk.master = posix_openpt(O_RDWR | O_NOCTTY);
    ck_assert_int_ge(fk.master, 0);
    ck_assert_int_eq(grantpt(fk.master), 0);
    ck_assert_int_eq(unlockpt(fk.master), 0);
    ck_assert_ptr_nonnull(name = ptsname(fk.master));
    ck_assert_uint_lt(strlen(name), sizeof(slave));
    strcpy(slave, name);
    ck_assert_int_eq(pthread_create(&fk.th, NULL, fake_run, NULL), 0);
}

static void teardown(void) {
    if (!fk.stop)
        fake_stop();
    if (fk.master >= 0)
        close(fk.master);
    pthread_mutex_destroy(&fk.mu);
}

/* ---- lasers as the loader would hand them over ---- */

static struct laser_config lasers[3];
static const struct laser_config *laser_ptrs[3];

static struct act_mdt693b_settings *laser_make(int i, const char *name, const char *axis,
                                               double output_max_v) {
    struct laser_config *lc = &lasers[i];
    struct act_mdt693b_settings *s =
        (struct act_mdt693b_settings *)(void *)lc->actuator.drv.u.bytes;

    memset(lc, 0, sizeof(*lc));
    snprintf(lc->name, sizeof(lc->name), "%s", name);
    snprintf(lc->actuator.drv.driver, sizeof(lc->actuator.drv.driver), "mdt693b");
    lc->actuator.timeout_ms = TIMEOUT_MS;
    lc->output_min_v = 0.0;
    lc->output_max_v = output_max_v;
    act_mdt693b.cfg.defaults(s);
    snprintf(s->port, sizeof(s->port), "%s", slave);
    snprintf(s->axis, sizeof(s->axis), "%s", axis);
    laser_ptrs[i] = lc;
    return s;
}

static int open_lasers(int n, void **dev, char *err, size_t errlen) {
    struct act_open_args a = {
        .settings = lasers[0].actuator.drv.u.bytes,
        .lasers = laser_ptrs,
        .nlasers = n,
    };

    return act_mdt693b.open(&a, dev, err, errlen);
}

/* ---- tests on the pty ---- */

static const bool echo_modes[] = {false, true};

START_TEST(test_write_readback) {
    const struct act_mdt693b_settings *x = laser_make(0, "399", "x", 100.0);
    const struct act_mdt693b_settings *z = laser_make(1, "422", "z", 150.0);
    struct act_io io;
    char err[512] = "";
    void *dev = NULL;

    fk.echo = echo_modes[_i];
    ck_assert_msg(open_lasers(2, &dev, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(act_mdt693b.write(dev, x, &lasers[0], 30.0, TIMEOUT_MS, &io), 0);
    ck_assert_double_eq_tol(io.readback_v, 30.0, 1e-9);
    ck_assert_int_eq(act_mdt693b.write(dev, z, &lasers[1], 12.34, TIMEOUT_MS, &io), 0);
    ck_assert_double_eq_tol(io.readback_v, 12.3, 1e-9);
    pthread_mutex_lock(&fk.mu);
    ck_assert_double_eq_tol(fk.volts_v[0], 30.0, 1e-9);
    ck_assert_double_eq_tol(fk.volts_v[2], 12.34, 1e-9);
    ck_assert_double_eq_tol(fk.volts_v[1], 0.0, 1e-9);
    pthread_mutex_unlock(&fk.mu);
    act_mdt693b.close(dev);

    /* Reopenable after close (the port is free again: flock released). */
    ck_assert_msg(open_lasers(2, &dev, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(act_mdt693b.write(dev, x, &lasers[0], 31.0, TIMEOUT_MS, &io), 0);
    act_mdt693b.close(dev);
}
END_TEST

START_TEST(test_vlimit_refused) {
    char err[512] = "";
    void *dev = (void *)&dev;

    laser_make(0, "422", "y", 60.0);
    laser_make(1, "399", "x", 100.0);
    fk.vlimit_v = 75.0;
    ck_assert_int_eq(open_lasers(2, &dev, err, sizeof(err)), -ERANGE);
    ck_assert_ptr_null(dev);
    ck_assert_str_eq(err, "voltage limit switch is at 75 V, below output_max_v 100 V of laser "
                          "\"399\": set the front-panel limit or lower output_max_v");
    /* The port was closed: a corrected setup opens at once. */
    lasers[1].output_max_v = 75.0;
    ck_assert_msg(open_lasers(2, &dev, err, sizeof(err)) == 0, "%s", err);
    act_mdt693b.close(dev);
}
END_TEST

START_TEST(test_missing_axis) {
    char err[512] = "";
    void *dev = NULL;

    laser_make(0, "399", "x", 100.0);
    laser_make(1, "422", "y", 100.0);
    fk.naxes = 1; /* an MDT694B */
    ck_assert_int_eq(open_lasers(2, &dev, err, sizeof(err)), -EPROTO);
    ck_assert_msg(strstr(err, "axis y of laser \"422\"") != NULL &&
                      strstr(err, "CMD_NOT_DEFINED") != NULL,
                  "%s", err);
}
END_TEST

START_TEST(test_readback_mismatch) {
    const struct act_mdt693b_settings *x = laser_make(0, "399", "x", 100.0);
    struct act_io io;
    char err[512] = "";
    void *dev = NULL;

    ck_assert_msg(open_lasers(1, &dev, err, sizeof(err)) == 0, "%s", err);
    pthread_mutex_lock(&fk.mu);
    fk.offset_v = -17.7;
    pthread_mutex_unlock(&fk.mu);
    ck_assert_int_eq(act_mdt693b.write(dev, x, &lasers[0], 30.0, TIMEOUT_MS, &io), -EIO);
    ck_assert_double_eq_tol(io.readback_v, 12.3, 1e-9);
    ck_assert_str_eq(io.why, "read back 12.3 V after setting 30.0 V (tolerance 2 V)");
    /* Within tolerance is fine, and the read-back is still reported. */
    pthread_mutex_lock(&fk.mu);
    fk.offset_v = 1.5;
    pthread_mutex_unlock(&fk.mu);
    ck_assert_int_eq(act_mdt693b.write(dev, x, &lasers[0], 30.0, TIMEOUT_MS, &io), 0);
    ck_assert_double_eq_tol(io.readback_v, 31.5, 1e-9);
    act_mdt693b.close(dev);
}
END_TEST

START_TEST(test_silent_device) {
    const struct act_mdt693b_settings *x = laser_make(0, "399", "x", 100.0);
    struct act_io io;
    char err[512] = "";
    void *dev = NULL;
    int64_t t0;

    ck_assert_msg(open_lasers(1, &dev, err, sizeof(err)) == 0, "%s", err);
    pthread_mutex_lock(&fk.mu);
    fk.silent = true;
    pthread_mutex_unlock(&fk.mu);
    t0 = now_ms();
    ck_assert_int_eq(act_mdt693b.write(dev, x, &lasers[0], 30.0, TIMEOUT_MS, &io), -ETIMEDOUT);
    ck_assert_int_lt(now_ms() - t0, TIMEOUT_MS + SLACK_MS);
    ck_assert(isnan(io.readback_v));
    ck_assert_msg(strstr(io.why, "no complete reply to \"xvoltage=30.00\"") != NULL, "%s", io.why);
    act_mdt693b.close(dev);
}
END_TEST

/* The adapter is pulled: the next write fails with -EIO at once. */
START_TEST(test_unplug) {
    const struct act_mdt693b_settings *x = laser_make(0, "399", "x", 100.0);
    struct act_io io;
    char err[512] = "";
    void *dev = NULL;
    int64_t t0;
    int rc;

    ck_assert_msg(open_lasers(1, &dev, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(act_mdt693b.write(dev, x, &lasers[0], 10.0, TIMEOUT_MS, &io), 0);
    fake_stop();
    close(fk.master);
    fk.master = -1;
    t0 = now_ms();
    rc = act_mdt693b.write(dev, x, &lasers[0], 20.0, 5000, &io);
    ck_assert_msg(rc == -EIO, "rc %d: %s", rc, io.why);
    ck_assert_int_lt(now_ms() - t0, SLACK_MS);
    ck_assert(isnan(io.readback_v));
    ck_assert_msg(io.why[0] != '\0', "no why");
    act_mdt693b.close(dev);
}
END_TEST

/* Nothing at the path: open fails with the serial layer's message. */
START_TEST(test_no_device) {
    struct act_mdt693b_settings *s = laser_make(0, "399", "x", 100.0);
    char err[512] = "";
    void *dev = (void *)&dev;

    snprintf(s->port, sizeof(s->port), "/dev/serial/by-id/usb-FTDI_none-if00-port0");
    ck_assert_int_eq(open_lasers(1, &dev, err, sizeof(err)), -ENOENT);
    ck_assert_ptr_null(dev);
    ck_assert_msg(strstr(err, "usb-FTDI_none") != NULL, "%s", err);
    act_mdt693b.close(NULL);
}
END_TEST

/* ---- pure parts ---- */

START_TEST(test_key_table) {
    const struct cfg_driver *c = &act_mdt693b.cfg;
    struct act_mdt693b_settings s;
    int n = 0;

    ck_assert_str_eq(c->name, "mdt693b");
    ck_assert_uint_le(c->size, CONFIG_SETTINGS_MAX);
    for (const struct cfg_key *k = c->keys; k->name != NULL; k++, n++)
        ck_assert_msg(k->offset + k->size <= c->size && k->doc != NULL, "%s", k->name);
    ck_assert_int_eq(n, 4);
    ck_assert_uint_eq(c->keys[0].flags, CFG_REQUIRED | CFG_DEVICE); /* port */
    ck_assert_uint_eq(c->keys[1].flags, CFG_DEVICE);                /* baud */
    ck_assert_uint_eq(c->keys[2].flags, 0);                         /* axis */
    memset(&s, 0xff, sizeof(s));
    c->defaults(&s);
    ck_assert_str_eq(s.port, "");
    ck_assert_int_eq(s.baud, 115200);
    ck_assert_str_eq(s.axis, "x");
    ck_assert_double_eq(s.readback_tolerance_v, 2.0);
}
END_TEST

static const struct {
    const char *label;
    double min_v, max_v;
    int rc;
    const char *key;
} check_rows[] = {
    {"full range", 0.0, 150.0, 0, NULL},
    {"inside", 10.0, 75.0, 0, NULL},
    {"below zero", -1.0, 75.0, -EINVAL, "output_min_v"},
    {"above 150 V", 0.0, 150.5, -EINVAL, "output_max_v"},
};

START_TEST(test_check) {
    struct act_mdt693b_settings *s = laser_make(0, "399", "y", check_rows[_i].max_v);
    const char *key = NULL;
    char why[160] = "", dev[64], chan[8];
    int rc;

    lasers[0].output_min_v = check_rows[_i].min_v;
    rc = act_mdt693b.check(s, &lasers[0], NULL, &key, why, sizeof(why));
    ck_assert_msg(rc == check_rows[_i].rc, "%s: rc %d %s", check_rows[_i].label, rc, why);
    if (check_rows[_i].key != NULL) {
        ck_assert_str_eq(key, check_rows[_i].key);
        ck_assert_msg(why[0] != '\0', "%s: no why", check_rows[_i].label);
    }
    act_mdt693b.ident(s, &lasers[0], dev, sizeof(dev), chan, sizeof(chan));
    ck_assert_str_eq(dev, slave);
    ck_assert_str_eq(chan, "y");
}
END_TEST

int main(void) {
    Suite *s = suite_create("act_mdt693b");
    TCase *tc = tcase_create("pty");
    TCase *pure = tcase_create("pure");
    SRunner *sr;
    int failed;

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 20);
    tcase_add_loop_test(tc, test_write_readback, 0, 2);
    tcase_add_test(tc, test_vlimit_refused);
    tcase_add_test(tc, test_missing_axis);
    tcase_add_test(tc, test_readback_mismatch);
    tcase_add_test(tc, test_silent_device);
    tcase_add_test(tc, test_unplug);
    tcase_add_test(tc, test_no_device);
    tcase_add_test(pure, test_key_table);
    tcase_add_loop_test(pure, test_check, 0, (int)(sizeof(check_rows) / sizeof(check_rows[0])));
    suite_add_tcase(s, tc);
    suite_add_tcase(s, pure);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
