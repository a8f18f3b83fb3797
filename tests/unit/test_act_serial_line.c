/*
 * test_act_serial_line: the "serial_line" actuator driver through the real
 * serial module and libserialport, against a fake DAC box played on the
 * master side of a pseudo-terminal by a thread: commands as sent, reply
 * matching (exact, CRLF, split, wrong, none, late), the open delay and a
 * pulled adapter. Needs LD_PRELOAD=libpty_shim.so (tests/fakes/pty_shim.c),
 * which ctest sets. Also the driver's pure parts: key table, defaults,
 * ident, check.
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

#include "act_serial_line.h"
#include "config.h"
#include "wavemeter.h"

/* Timing slack for a loaded CI machine (ASan, parallel ctest). */
#define SLACK_MS 1500
#define TIMEOUT_MS 300

/* ---- the fake box: answers each line (up to LF) with reply1, then after
 * split_ms with reply2 ---- */

struct fake {
    pthread_mutex_t mu;
    pthread_t th;
    int master;
    bool stop;
    const char *reply1, *reply2;
    int split_ms;
    int lines;
    char last[128]; /* the last line received, LF included */
};

static struct fake fk;
static char slave[64];

static int64_t now_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};

    nanosleep(&ts, NULL);
}

static void fake_send(const char *s) {
    size_t n = s != NULL ? strlen(s) : 0;

    if (n > 0 && write(fk.master, s, n) != (ssize_t)n)
        fprintf(stderr, "fake box: short write\n");
}

static void *fake_run(void *arg) {
    char line[128];
    size_t len = 0;

    (void)arg;
    for (;;) {
        struct pollfd pfd = {.fd = fk.master, .events = POLLIN};
        const char *r1, *r2;
        char buf[64];
        ssize_t r;
        int split;

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
            if (len < sizeof(line) - 1)
                line[len++] = buf[i];
            if (buf[i] != '\n')
                continue;
            line[len] = '\0';
            len = 0;
            pthread_mutex_lock(&fk.mu);
            fk.lines++;
            snprintf(fk.last, sizeof(fk.last), "%s", line);
            r1 = fk.reply1;
            r2 = fk.reply2;
            split = fk.split_ms;
            pthread_mutex_unlock(&fk.mu);
            fake_send(r1);
            if (r2 != NULL) {
                sleep_ms(split);
                fake_send(r2);
            }
        }
    }
}

static void fake_stop(void) {
    pthread_mutex_lock(&fk.mu);
    fk.stop = true;
    pthread_mutex_unlock(&fk.mu);
    ck_assert_int_eq(pthread_join(fk.th, NULL), 0);
}

static void fake_set(const char *reply1, const char *reply2, int split_ms) {
    pthread_mutex_lock(&fk.mu);
    fk.reply1 = reply1;
    fk.reply2 = reply2;
    fk.split_ms = split_ms;
    pthread_mutex_unlock(&fk.mu);
}

/* The last line the box received, and how many so far. */
static int fake_last(char *out, size_t outlen) {
    int n;

    pthread_mutex_lock(&fk.mu);
    snprintf(out, outlen, "%s", fk.last);
    n = fk.lines;
    pthread_mutex_unlock(&fk.mu);
    return n;
}

static void setup(void) {
    const char *name;

    memset(&fk, 0, sizeof(fk));
    ck_assert_int_eq(pthread_mutex_init(&fk.mu, NULL), 0);
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

/* ---- a laser as the loader would hand it over ---- */

static struct laser_config laser;
static const struct laser_config *laser_ptr = &laser;

static struct act_serial_line_settings *laser_make(void) {
    struct act_serial_line_settings *s =
        (struct act_serial_line_settings *)(void *)laser.actuator.drv.u.bytes;

    memset(&laser, 0, sizeof(laser));
    snprintf(laser.name, sizeof(laser.name), "399");
    laser.actuator.timeout_ms = TIMEOUT_MS;
    laser.output_min_v = -10.0;
    laser.output_max_v = 10.0;
    act_serial_line.cfg.defaults(s);
    snprintf(s->port, sizeof(s->port), "%s", slave);
    s->open_delay_ms = 0;
    return s;
}

static int open_dev(void **dev, char *err, size_t errlen) {
    struct act_open_args a = {
        .settings = laser.actuator.drv.u.bytes, .lasers = &laser_ptr, .nlasers = 1};

    return act_serial_line.open(&a, dev, err, errlen);
}

/* ---- tests on the pty ---- */

START_TEST(test_no_reply) {
    struct act_serial_line_settings *s = laser_make();
    struct act_io io;
    char err[512] = "", last[128];
    void *dev = NULL;

    s->channel = 3;
    ck_assert_msg(open_dev(&dev, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(act_serial_line.write(dev, s, &laser, 0.0, TIMEOUT_MS, &io), 0);
    ck_assert(isnan(io.readback_v));
    /* The write returns once the bytes are out; the box reads them soon. */
    for (int64_t end = now_ms() + 2000; fake_last(last, sizeof(last)) < 1 && now_ms() < end;)
        sleep_ms(5);
    ck_assert_str_eq(last, "SET 3 32768\n");
    ck_assert_int_eq(act_serial_line.write(dev, s, &laser, -10.0, TIMEOUT_MS, &io), 0);
    for (int64_t end = now_ms() + 2000; fake_last(last, sizeof(last)) < 2 && now_ms() < end;)
        sleep_ms(5);
    ck_assert_str_eq(last, "SET 3 0\n");
    act_serial_line.close(dev);
}
END_TEST

static const struct {
    const char *label, *expect, *term, *reply1, *reply2;
    int split_ms, rc;
    const char *why_has;
} reply_rows[] = {
    {"exact", "OK", "\n", "OK\n", NULL, 0, 0, NULL},
    {"CRLF", "OK", "\r\n", "OK\r\n", NULL, 0, 0, NULL},
    {"split reply", "OK", "\r\n", "O", "K\r\n", 50, 0, NULL},
    {"wrong reply", "OK", "\n", "ERR 3\n", NULL, 0, -EPROTO,
     "reply \"ERR 3\\n\" to \"V 5 45.0000\\r\\n\", expected \"OK\""},
    {"LF where CRLF expected", "OK", "\r\n", "OK\n", NULL, 0, -ETIMEDOUT,
     "no complete reply to \"V 5 45.0000\\r\\n\" in time (got \"OK\\n\")"},
    {"silence", "OK", "\n", NULL, NULL, 0, -ETIMEDOUT, "(got \"\")"},
    {"partial then silence", "OK", "\n", "O", NULL, 0, -ETIMEDOUT, "(got \"O\")"},
    {"reply too late", "OK", "\n", "", "OK\n", TIMEOUT_MS + 300, -ETIMEDOUT, "in time"},
};

START_TEST(test_reply) {
    struct act_serial_line_settings *s = laser_make();
    struct act_io io;
    char err[512] = "";
    void *dev = NULL;
    int64_t t0;
    int rc;

    snprintf(s->command, sizeof(s->command), "V {channel} {volts}");
    snprintf(s->terminator, sizeof(s->terminator), "\r\n");
    s->channel = 5;
    s->volts_at_code_min = 0.0;
    s->volts_at_code_max = 100.0;
    snprintf(s->reply, sizeof(s->reply), "%s", reply_rows[_i].expect);
    snprintf(s->reply_terminator, sizeof(s->reply_terminator), "%s", reply_rows[_i].term);
    fake_set(reply_rows[_i].reply1, reply_rows[_i].reply2, reply_rows[_i].split_ms);
    ck_assert_msg(open_dev(&dev, err, sizeof(err)) == 0, "%s", err);
    t0 = now_ms();
    rc = act_serial_line.write(dev, s, &laser, 45.0, TIMEOUT_MS, &io);
    ck_assert_msg(rc == reply_rows[_i].rc, "%s: rc %d (%s)", reply_rows[_i].label, rc, io.why);
    ck_assert_int_lt(now_ms() - t0, TIMEOUT_MS + SLACK_MS);
    ck_assert(isnan(io.readback_v));
    if (reply_rows[_i].why_has != NULL)
        ck_assert_msg(strstr(io.why, reply_rows[_i].why_has) != NULL, "%s: why \"%s\"",
                      reply_rows[_i].label, io.why);
    act_serial_line.close(dev);
}
END_TEST

/* A late reply to the last command must not pass for the next one's. */
START_TEST(test_stale_reply_discarded) {
    struct act_serial_line_settings *s = laser_make();
    struct act_io io;
    char err[512] = "";
    void *dev = NULL;

    snprintf(s->reply, sizeof(s->reply), "OK");
    ck_assert_msg(open_dev(&dev, err, sizeof(err)) == 0, "%s", err);
    fake_set(NULL, NULL, 0);
    fake_send("OK\n"); /* unasked for */
    sleep_ms(50);
    ck_assert_int_eq(act_serial_line.write(dev, s, &laser, 1.0, TIMEOUT_MS, &io), -ETIMEDOUT);
    fake_set("OK\n", NULL, 0);
    ck_assert_int_eq(act_serial_line.write(dev, s, &laser, 1.0, TIMEOUT_MS, &io), 0);
    act_serial_line.close(dev);
}
END_TEST

START_TEST(test_open_delay) {
    struct act_serial_line_settings *s = laser_make();
    char err[512] = "";
    void *dev = NULL;
    int64_t t0;

    s->open_delay_ms = 300;
    t0 = now_ms();
    ck_assert_msg(open_dev(&dev, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_ge(now_ms() - t0, 300);
    ck_assert_int_lt(now_ms() - t0, 300 + SLACK_MS);
    act_serial_line.close(dev);
    /* Reopenable after close. */
    s->open_delay_ms = 0;
    ck_assert_msg(open_dev(&dev, err, sizeof(err)) == 0, "%s", err);
    act_serial_line.close(dev);
}
END_TEST

START_TEST(test_out_of_range_not_sent) {
    struct act_serial_line_settings *s = laser_make();
    struct act_io io;
    char err[512] = "", last[128];
    void *dev = NULL;

    ck_assert_msg(open_dev(&dev, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(act_serial_line.write(dev, s, &laser, 10.5, TIMEOUT_MS, &io), -EINVAL);
    ck_assert_int_eq(act_serial_line.write(dev, s, &laser, (double)NAN, TIMEOUT_MS, &io), -EINVAL);
    ck_assert_msg(strstr(io.why, "outside the box's range") != NULL, "%s", io.why);
    sleep_ms(50);
    ck_assert_int_eq(fake_last(last, sizeof(last)), 0);
    act_serial_line.close(dev);
}
END_TEST

START_TEST(test_unplug) {
    struct act_serial_line_settings *s = laser_make();
    struct act_io io;
    char err[512] = "";
    void *dev = NULL;
    int64_t t0;
    int rc;

    ck_assert_msg(open_dev(&dev, err, sizeof(err)) == 0, "%s", err);
    fake_stop();
    close(fk.master);
    fk.master = -1;
    t0 = now_ms();
    rc = act_serial_line.write(dev, s, &laser, 1.0, 5000, &io);
    ck_assert_msg(rc == -EIO, "rc %d: %s", rc, io.why);
    ck_assert_int_lt(now_ms() - t0, SLACK_MS);
    act_serial_line.close(dev);
}
END_TEST

/* ---- pure parts ---- */

START_TEST(test_key_table) {
    const struct cfg_driver *c = &act_serial_line.cfg;
    struct act_serial_line_settings s;
    unsigned device = 0;
    int n = 0;

    ck_assert_str_eq(c->name, "serial_line");
    ck_assert_uint_le(c->size, CONFIG_SETTINGS_MAX);
    for (const struct cfg_key *k = c->keys; k->name != NULL; k++, n++) {
        ck_assert_msg(k->offset + k->size <= c->size && k->doc != NULL, "%s", k->name);
        if (k->flags & CFG_DEVICE)
            device++;
    }
    ck_assert_int_eq(n, 15);
    ck_assert_uint_eq(device, 7); /* port, baud, data_bits, parity, stop_bits, terminator, delay */
    ck_assert_uint_eq(c->keys[0].flags, CFG_REQUIRED | CFG_DEVICE);
    memset(&s, 0xff, sizeof(s));
    c->defaults(&s);
    ck_assert_str_eq(s.port, "");
    ck_assert_int_eq(s.baud, 9600);
    ck_assert_int_eq(s.data_bits, 8);
    ck_assert_int_eq(s.parity, SERIAL_PARITY_NONE);
    ck_assert_int_eq(s.stop_bits, 1);
    ck_assert_int_eq(s.channel, 0);
    ck_assert_str_eq(s.command, "SET {channel} {code}");
    ck_assert_str_eq(s.terminator, "\n");
    ck_assert_int_eq(s.code_min, 0);
    ck_assert_int_eq(s.code_max, 65535);
    ck_assert_double_eq(s.volts_at_code_min, -10.0);
    ck_assert_double_eq(s.volts_at_code_max, 10.0);
    ck_assert_str_eq(s.reply, "");
    ck_assert_str_eq(s.reply_terminator, "\n");
    ck_assert_int_eq(s.open_delay_ms, 2000);
}
END_TEST

enum fault { F_NONE, F_TEMPLATE, F_CODES, F_VOLTS, F_MIN, F_MAX, F_REPLY, F_INVERTED_OK };

static const struct {
    const char *label;
    enum fault fault;
    const char *key; /* NULL: passes */
} check_rows[] = {
    {"defaults", F_NONE, NULL},
    {"inverted scale", F_INVERTED_OK, NULL},
    {"bad template", F_TEMPLATE, "command"},
    {"codes reversed", F_CODES, "code_max"},
    {"volts equal", F_VOLTS, "volts_at_code_max"},
    {"output_min_v below range", F_MIN, "output_min_v"},
    {"output_max_v above range", F_MAX, "output_max_v"},
    {"reply holds the terminator", F_REPLY, "reply"},
};

START_TEST(test_check) {
    struct act_serial_line_settings *s = laser_make();
    const char *key = NULL;
    char why[160] = "", dev[64], chan[8];
    int rc;

    switch (check_rows[_i].fault) {
    case F_TEMPLATE:
        snprintf(s->command, sizeof(s->command), "SET {ch} {code}");
        break;
    case F_CODES:
        s->code_min = 65535;
        s->code_max = 0;
        break;
    case F_VOLTS:
        s->volts_at_code_max = s->volts_at_code_min;
        break;
    case F_MIN:
        laser.output_min_v = -10.5;
        break;
    case F_MAX:
        s->volts_at_code_min = 0.0;
        s->volts_at_code_max = 5.0;
        laser.output_min_v = 0.0;
        break;
    case F_REPLY:
        snprintf(s->reply, sizeof(s->reply), "OK\n");
        break;
    case F_INVERTED_OK:
        s->volts_at_code_min = 10.0;
        s->volts_at_code_max = -10.0;
        break;
    case F_NONE:
        break;
    }
    rc = act_serial_line.check(s, &laser, NULL, &key, why, sizeof(why));
    if (check_rows[_i].key == NULL) {
        ck_assert_msg(rc == 0, "%s: %s", check_rows[_i].label, why);
    } else {
        ck_assert_msg(rc == -EINVAL, "%s: rc %d", check_rows[_i].label, rc);
        ck_assert_str_eq(key, check_rows[_i].key);
        ck_assert_msg(why[0] != '\0', "%s: no why", check_rows[_i].label);
    }
    s->channel = 17;
    act_serial_line.ident(s, &laser, dev, sizeof(dev), chan, sizeof(chan));
    ck_assert_str_eq(dev, slave);
    ck_assert_str_eq(chan, "17");
}
END_TEST

int main(void) {
    Suite *s = suite_create("act_serial_line");
    TCase *tc = tcase_create("pty");
    TCase *pure = tcase_create("pure");
    SRunner *sr;
    int failed;

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_no_reply);
    tcase_add_loop_test(tc, test_reply, 0, (int)(sizeof(reply_rows) / sizeof(reply_rows[0])));
    tcase_add_test(tc, test_stale_reply_discarded);
    tcase_add_test(tc, test_open_delay);
    tcase_add_test(tc, test_out_of_range_not_sent);
    tcase_add_test(tc, test_unplug);
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
