/*
 * test_sw_leoni: the "leoni" switch driver through the real serial module
 * and libserialport, against a fake Leoni eol 1x8 switch played on the
 * master side of a pseudo-terminal by a thread: open, select with its
 * confirmation, position, a channel the switch lacks, a switch that does
 * not move, and a pulled adapter. Needs LD_PRELOAD=libpty_shim.so
 * (tests/fakes/pty_shim.c), which ctest sets.
 */
#define _XOPEN_SOURCE 700 /* posix_openpt, grantpt, unlockpt, ptsname */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "sw_leoni.h"
#include "wavemeter.h"

/* Timing slack for a loaded CI machine (ASan, parallel ctest). */
#define SLACK_MS 1500
#define TIMEOUT_MS 500

struct fake {
    pthread_mutex_t mu;
    pthread_t th;
    int master;
    bool stop;
    int position; /* 1..8 */
    bool stuck;   /* ignores ch<n> */
};

static struct fake fk;
static char slave[64];
static struct sw_leoni_settings settings;

static int64_t now_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Answers one line (without CRLF); under fk.mu. */
static void fake_answer(const char *cmd, char *out, size_t outlen) {
    int ch;
    char c;

    out[0] = '\0';
    if (strcmp(cmd, "type?") == 0)
        snprintf(out, outlen, "eol 1x8\r\n");
    else if (strcmp(cmd, "ch?") == 0)
        snprintf(out, outlen, "%d\r\n", fk.position);
    else if (sscanf(cmd, "ch%d%c", &ch, &c) == 1 && ch >= 1 && ch <= 8 && !fk.stuck)
        fk.position = ch;
}

static void *fake_run(void *arg) {
    char line[64];
    size_t len = 0;

    (void)arg;
    for (;;) {
        struct pollfd pfd = {.fd = fk.master, .events = POLLIN};
        char buf[64], out[64];
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
            fake_answer(line, out, sizeof(out));
            pthread_mutex_unlock(&fk.mu);
            if (out[0] != '\0' && write(fk.master, out, strlen(out)) < 0)
                fprintf(stderr, "fake Leoni: write failed\n");
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
    fk.position = 1;
    fk.master = posix_openpt(O_RDWR | O_NOCTTY);
    ck_assert_int_ge(fk.master, 0);
    ck_assert_int_eq(grantpt(fk.master), 0);
    ck_assert_int_eq(unlockpt(fk.master), 0);
    ck_assert_ptr_nonnull(name = ptsname(fk.master));
    ck_assert_uint_lt(strlen(name), sizeof(slave));
    strcpy(slave, name);
    ck_assert_int_eq(pthread_create(&fk.th, NULL, fake_run, NULL), 0);
    sw_leoni.cfg.defaults(&settings);
    snprintf(settings.port, sizeof(settings.port), "%s", slave);
}

static void teardown(void) {
    if (!fk.stop)
        fake_stop();
    if (fk.master >= 0)
        close(fk.master);
    pthread_mutex_destroy(&fk.mu);
}

START_TEST(test_select_position) {
    char err[512] = "", why[256] = "";
    void *dev = NULL;
    int ch = 0;

    ck_assert_msg(sw_leoni.open(&settings, &dev, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(sw_leoni.position(dev, TIMEOUT_MS, &ch, why, sizeof(why)), 0);
    ck_assert_int_eq(ch, 1);
    ck_assert_msg(sw_leoni.select(dev, 7, TIMEOUT_MS, why, sizeof(why)) == 0, "%s", why);
    ck_assert_int_eq(sw_leoni.position(dev, TIMEOUT_MS, &ch, why, sizeof(why)), 0);
    ck_assert_int_eq(ch, 7);
    /* The switch said 1x8: channel 9 is refused without a word to it. */
    ck_assert_int_eq(sw_leoni.select(dev, 9, TIMEOUT_MS, why, sizeof(why)), -EINVAL);
    ck_assert_msg(strstr(why, "channel 9 outside 1..8") != NULL, "%s", why);
    sw_leoni.close(dev);
    /* Reopenable after close. */
    ck_assert_msg(sw_leoni.open(&settings, &dev, err, sizeof(err)) == 0, "%s", err);
    sw_leoni.close(dev);
}
END_TEST

START_TEST(test_stuck) {
    char err[512] = "", why[256] = "";
    void *dev = NULL;

    ck_assert_msg(sw_leoni.open(&settings, &dev, err, sizeof(err)) == 0, "%s", err);
    pthread_mutex_lock(&fk.mu);
    fk.stuck = true;
    pthread_mutex_unlock(&fk.mu);
    ck_assert_int_eq(sw_leoni.select(dev, 4, TIMEOUT_MS, why, sizeof(why)), -EPROTO);
    ck_assert_msg(strstr(why, "switch still reports channel 1 after \"ch4\"") != NULL, "%s", why);
    sw_leoni.close(dev);
}
END_TEST

START_TEST(test_unplug) {
    char err[512] = "", why[256] = "";
    void *dev = NULL;
    int64_t t0;
    int rc;

    ck_assert_msg(sw_leoni.open(&settings, &dev, err, sizeof(err)) == 0, "%s", err);
    fake_stop();
    close(fk.master);
    fk.master = -1;
    t0 = now_ms();
    rc = sw_leoni.select(dev, 2, 5000, why, sizeof(why));
    ck_assert_msg(rc == -EIO, "rc %d: %s", rc, why);
    ck_assert_int_lt(now_ms() - t0, SLACK_MS);
    sw_leoni.close(dev);
}
END_TEST

START_TEST(test_silent_at_open) {
    char err[512] = "";
    void *dev = (void *)&dev;
    int64_t t0;

    fake_stop(); /* the master stays open: a device that says nothing */
    t0 = now_ms();
    ck_assert_int_eq(sw_leoni.open(&settings, &dev, err, sizeof(err)), -ETIMEDOUT);
    ck_assert_int_lt(now_ms() - t0, 1000 + SLACK_MS);
    ck_assert_ptr_null(dev);
    ck_assert_msg(strstr(err, slave) != NULL && strstr(err, "type?") != NULL, "%s", err);
}
END_TEST

START_TEST(test_key_table) {
    const struct cfg_driver *c = &sw_leoni.cfg;
    struct sw_leoni_settings s;
    int n = 0;

    ck_assert_str_eq(c->name, "leoni");
    ck_assert_uint_le(c->size, CONFIG_SETTINGS_MAX);
    for (const struct cfg_key *k = c->keys; k->name != NULL; k++, n++)
        ck_assert_msg(k->offset + k->size <= c->size && k->doc != NULL, "%s", k->name);
    ck_assert_int_eq(n, 2);
    ck_assert_uint_eq(c->keys[0].flags, CFG_REQUIRED);
    memset(&s, 0xff, sizeof(s));
    c->defaults(&s);
    ck_assert_str_eq(s.port, "");
    ck_assert_int_eq(s.baud, 57600);
}
END_TEST

int main(void) {
    Suite *s = suite_create("sw_leoni");
    TCase *tc = tcase_create("pty");
    TCase *pure = tcase_create("pure");
    SRunner *sr;
    int failed;

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_select_position);
    tcase_add_test(tc, test_stuck);
    tcase_add_test(tc, test_unplug);
    tcase_add_test(tc, test_silent_at_open);
    tcase_add_test(pure, test_key_table);
    suite_add_tcase(s, tc);
    suite_add_tcase(s, pure);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
