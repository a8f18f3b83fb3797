/*
 * test_serial: the serial module through the real libserialport 0.1.1,
 * against a fake instrument on the master side of a pseudo-terminal. Needs
 * LD_PRELOAD=libpty_shim.so (tests/fakes/pty_shim.c), which ctest sets.
 * Deadlines in these tests are for correctness, with generous slack.
 */
#define _XOPEN_SOURCE 700 /* posix_openpt, grantpt, unlockpt, ptsname */
#define _DEFAULT_SOURCE   /* setgroups, to drop root in one test */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "serial.h"

/* Timing slack for a loaded CI machine (ASan, parallel ctest). */
#define SLACK_MS 1500

struct pty {
    int master;
    char slave[64];
};

static struct pty pt;
static struct serial ser;
static struct lineio io;
static char tmpdir[64];

static int64_t now_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};

    nanosleep(&ts, NULL);
}

static void pty_make(struct pty *p) {
    const char *name;

    p->master = posix_openpt(O_RDWR | O_NOCTTY);
    ck_assert_int_ge(p->master, 0);
    ck_assert_int_eq(grantpt(p->master), 0);
    ck_assert_int_eq(unlockpt(p->master), 0);
    ck_assert_ptr_nonnull(name = ptsname(p->master));
    ck_assert_uint_lt(strlen(name), sizeof(p->slave));
    strcpy(p->slave, name);
}

static void pty_close(struct pty *p) {
    if (p->master >= 0)
        close(p->master);
    p->master = -1;
}

static void master_write(int fd, const char *buf, size_t n) {
    ck_assert_int_eq(write(fd, buf, n), (ssize_t)n);
}

/* Read exactly n bytes from the master within 2 s. */
static void master_expect(int fd, const char *want, size_t n) {
    char got[256];
    size_t have = 0;
    int64_t end = now_ms() + 2000;

    ck_assert_uint_le(n, sizeof(got));
    while (have < n) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int left = (int)(end - now_ms());
        ssize_t r;

        ck_assert_msg(left > 0 && poll(&pfd, 1, left) == 1, "master got %zu of %zu bytes", have, n);
        r = read(fd, got + have, n - have);
        ck_assert_int_gt(r, 0);
        have += (size_t)r;
    }
    ck_assert_mem_eq(got, want, n);
}

static int master_has_input(int fd) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN};

    return poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN);
}

static int open_path(struct serial *s, const char *path, char *err, size_t errlen) {
    struct serial_params p = {.path = path, .baud = 115200};

    return serial_open(s, &p, err, errlen);
}

static void setup(void) {
    char err[512];

    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_serial.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    pty_make(&pt);
    ck_assert_msg(open_path(&ser, pt.slave, err, sizeof(err)) == 0, "%s", err);
    serial_lineio(&ser, &io);
}

static void teardown(void) {
    char cmd[128];

    serial_close(&ser);
    pty_close(&pt);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}

/* A fake instrument's reply, delivered in timed pieces from a thread. */
struct script {
    int fd;
    struct {
        int delay_ms;
        const char *bytes;
    } steps[4];
    int close_after_ms; /* > 0: then close fd (device gone) */
};

static void *script_run(void *arg) {
    struct script *sc = arg;

    for (size_t i = 0; i < 4 && sc->steps[i].bytes != NULL; i++) {
        sleep_ms(sc->steps[i].delay_ms);
        if (write(sc->fd, sc->steps[i].bytes, strlen(sc->steps[i].bytes)) < 0)
            break;
    }
    if (sc->close_after_ms > 0) {
        sleep_ms(sc->close_after_ms);
        close(sc->fd);
    }
    return NULL;
}

START_TEST(test_open_pts) {
    char buf[64];
    size_t n;

    ck_assert_str_eq(ser.resolved, pt.slave);
    ck_assert_int_eq(io.write(io.ctx, "xvoltage?\r", 10, 1000), 0);
    master_expect(pt.master, "xvoltage?\r", 10);
    master_write(pt.master, "[  24.8]>", 9);
    ck_assert_int_eq(io.read_until(io.ctx, buf, sizeof(buf), ">", 1000, &n), 0);
    ck_assert_uint_eq(n, 9);
    ck_assert_str_eq(buf, "[  24.8]>");
}
END_TEST

/* Two replies in one burst: the second must not be lost to the first read. */
START_TEST(test_two_replies_one_burst) {
    char buf[64];
    size_t n;

    master_write(pt.master, "ch?\r\n3\r\n", 8);
    ck_assert_int_eq(io.read_until(io.ctx, buf, sizeof(buf), "\n", 1000, &n), 0);
    ck_assert_str_eq(buf, "ch?\r\n");
    ck_assert_int_eq(io.read_until(io.ctx, buf, sizeof(buf), "\n", 1000, &n), 0);
    ck_assert_str_eq(buf, "3\r\n");
    ck_assert_uint_eq(n, 3);
    /* flush_input drops both what we hold and what the port holds. */
    master_write(pt.master, "a>b>", 4);
    ck_assert_int_eq(io.read_until(io.ctx, buf, sizeof(buf), ">", 1000, &n), 0);
    sleep_ms(50);
    ck_assert_int_eq(io.flush_input(io.ctx), 0);
    ck_assert_int_eq(io.read_until(io.ctx, buf, sizeof(buf), ">", 100, &n), -ETIMEDOUT);
    ck_assert_uint_eq(n, 0);
}
END_TEST

START_TEST(test_symlink_replug) {
    char link[128], tmp[128], buf[64], err[512];
    struct pty second;
    size_t n;

    serial_close(&ser);
    snprintf(link, sizeof(link), "%s/usb-FTDI_FT232R_USB_UART_A1B2C3-if00-port0", tmpdir);
    ck_assert_int_eq(symlink(pt.slave, link), 0);
    ck_assert_msg(open_path(&ser, link, err, sizeof(err)) == 0, "%s", err);
    ck_assert_str_eq(ser.path, link);
    ck_assert_str_eq(ser.resolved, pt.slave);
    ck_assert_int_eq(io.write(io.ctx, "id?\r", 4, 1000), 0);
    master_expect(pt.master, "id?\r", 4);
    master_write(pt.master, "MDT693B>", 8);
    ck_assert_int_eq(io.read_until(io.ctx, buf, sizeof(buf), ">", 1000, &n), 0);
    ck_assert_str_eq(buf, "MDT693B>");

    /* Replug: the adapter comes back as another tty (the old one is kept
     * open so the number differs) and udev re-points the link. */
    serial_close(&ser);
    pty_make(&second);
    ck_assert_str_ne(second.slave, pt.slave);
    snprintf(tmp, sizeof(tmp), "%s/.link.tmp", tmpdir);
    ck_assert_int_eq(symlink(second.slave, tmp), 0);
    ck_assert_int_eq(rename(tmp, link), 0);
    ck_assert_msg(open_path(&ser, link, err, sizeof(err)) == 0, "%s", err);
    ck_assert_str_eq(ser.resolved, second.slave);
    ck_assert_int_eq(io.write(io.ctx, "id?\r", 4, 1000), 0);
    master_expect(second.master, "id?\r", 4);
    ck_assert(!master_has_input(pt.master));
    master_write(second.master, "MDT694B>", 8);
    ck_assert_int_eq(io.read_until(io.ctx, buf, sizeof(buf), ">", 1000, &n), 0);
    ck_assert_str_eq(buf, "MDT694B>");
    serial_close(&ser);
    pty_close(&second);
}
END_TEST

START_TEST(test_split_reply) {
    struct script sc = {.fd = pt.master,
                        .steps = {{30, "xvolt"}, {80, "age="}, {80, "24.8"}, {80, "\r\n"}}};
    pthread_t th;
    char buf[64];
    size_t n;
    int64_t t0;

    ck_assert_int_eq(pthread_create(&th, NULL, script_run, &sc), 0);
    t0 = now_ms();
    ck_assert_int_eq(io.read_until(io.ctx, buf, sizeof(buf), "\n", 5000, &n), 0);
    ck_assert_int_ge(now_ms() - t0, 250);
    ck_assert_str_eq(buf, "xvoltage=24.8\r\n");
    ck_assert_uint_eq(n, 15);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
}
END_TEST

static const int timeouts_ms[] = {0, 50, 300};

START_TEST(test_silence_times_out) {
    int timeout = timeouts_ms[_i];
    char buf[64];
    size_t n = 99;
    int64_t t0, elapsed;

    /* Bytes without a stop byte come back with the timeout. */
    master_write(pt.master, "[ 10", 4);
    sleep_ms(20);
    t0 = now_ms();
    ck_assert_int_eq(io.read_until(io.ctx, buf, sizeof(buf), ">", timeout, &n), -ETIMEDOUT);
    elapsed = now_ms() - t0;
    ck_assert_uint_eq(n, 4);
    ck_assert_str_eq(buf, "[ 10");
    ck_assert_int_ge(elapsed, timeout);
    ck_assert_int_lt(elapsed, timeout + SLACK_MS);
}
END_TEST

START_TEST(test_overflow) {
    char buf[16];
    size_t n;

    master_write(pt.master, "0123456789abcdefghijklmnopqrstuvwxyz", 36);
    ck_assert_int_eq(io.read_until(io.ctx, buf, sizeof(buf), "\r", 1000, &n), -EOVERFLOW);
    ck_assert_uint_eq(n, 15);
    ck_assert_str_eq(buf, "0123456789abcde");
}
END_TEST

START_TEST(test_garbage) {
    /* Line noise at a wrong baud rate, a NUL and an ANSI escape. */
    static const char noise[] = "\xff\xfe\x00\x1b[2J\tok\"\\\r\n";
    char buf[64], text[128];
    size_t n, len;

    master_write(pt.master, noise, sizeof(noise) - 1);
    ck_assert_int_eq(io.read_until(io.ctx, buf, sizeof(buf), "\n", 1000, &n), 0);
    ck_assert_uint_eq(n, sizeof(noise) - 1);
    ck_assert_mem_eq(buf, noise, n); /* no CR/NL translation, NUL kept */
    len = serial_escape(buf, n, text, sizeof(text));
    ck_assert_str_eq(text, "\\xff\\xfe\\x00\\x1b[2J\\tok\\\"\\\\\\r\\n");
    ck_assert_uint_eq(len, strlen(text));
}
END_TEST

static const struct {
    const char *label, *in;
    size_t n, outlen;
    const char *want;
} escape_rows[] = {
    {"printable", "[  24.8]>", 9, 64, "[  24.8]>"},
    {"line ends", "ok\r\n", 4, 64, "ok\\r\\n"},
    {"high and NUL", "\xff\0A", 3, 64, "\\xff\\x00A"},
    {"DEL", "\x7f", 1, 64, "\\x7f"},
    {"exact fit", "abcdefg", 7, 8, "abcdefg"},
    {"cut", "abcdefghij", 10, 8, "abcd..."},
    {"cut inside escape", "ab\x01\x02", 4, 8, "ab..."},
    {"tiny out", "abcdef", 6, 3, ".."},
    {"one byte out", "abc", 3, 1, ""},
    {"empty", "", 0, 4, ""},
};

START_TEST(test_escape) {
    char out[64];
    size_t len;

    memset(out, 'X', sizeof(out));
    len = serial_escape(escape_rows[_i].in, escape_rows[_i].n, out, escape_rows[_i].outlen);
    ck_assert_msg(strcmp(out, escape_rows[_i].want) == 0, "%s: got \"%s\"", escape_rows[_i].label,
                  out);
    ck_assert_uint_eq(len, strlen(out));
    ck_assert_uint_lt(len, escape_rows[_i].outlen);
}
END_TEST

/* The device goes away while a read waits: -EIO at once, not the timeout. */
START_TEST(test_hangup_while_reading) {
    struct script sc = {.fd = pt.master, .steps = {{20, "[ 1"}}, .close_after_ms = 200};
    pthread_t th;
    char buf[64];
    size_t n;
    int64_t t0, elapsed;
    clock_t cpu0;

    ck_assert_int_eq(pthread_create(&th, NULL, script_run, &sc), 0);
    t0 = now_ms();
    cpu0 = clock();
    ck_assert_int_eq(io.read_until(io.ctx, buf, sizeof(buf), ">", 5000, &n), -EIO);
    elapsed = now_ms() - t0;
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    pt.master = -1; /* closed by the script */
    ck_assert_int_ge(elapsed, 200);
    ck_assert_int_lt(elapsed, 200 + SLACK_MS);
    /* Waiting, not spinning. */
    ck_assert_int_lt((clock() - cpu0) * 1000 / CLOCKS_PER_SEC, 100);
    ck_assert_uint_eq(n, 3);
    ck_assert_str_eq(buf, "[ 1");
    /* Everything else fails at once too. */
    t0 = now_ms();
    ck_assert_int_eq(io.read_until(io.ctx, buf, sizeof(buf), ">", 5000, &n), -EIO);
    ck_assert_int_eq(io.write(io.ctx, "x\r", 2, 5000), -EIO);
    ck_assert_int_eq(io.flush_input(io.ctx), -EIO);
    ck_assert_int_lt(now_ms() - t0, SLACK_MS);
}
END_TEST

/* Nobody reads the far end: a write gives up at its deadline. */
START_TEST(test_write_times_out) {
    size_t len = 1 << 20;
    char *big = malloc(len);
    int64_t t0, elapsed;

    ck_assert_ptr_nonnull(big);
    memset(big, 'x', len);
    t0 = now_ms();
    ck_assert_int_eq(io.write(io.ctx, big, len, 200), -ETIMEDOUT);
    elapsed = now_ms() - t0;
    ck_assert_int_ge(elapsed, 190); /* libserialport times writes with gettimeofday */
    ck_assert_int_lt(elapsed, 200 + SLACK_MS);
    free(big);
}
END_TEST

START_TEST(test_busy) {
    struct serial again;
    char err[512];

    ck_assert_int_eq(open_path(&again, pt.slave, err, sizeof(err)), -EBUSY);
    ck_assert_msg(strstr(err, pt.slave) != NULL && strstr(err, "another program") != NULL, "%s",
                  err);
    serial_close(&again);
}
END_TEST

static const struct {
    const char *label;
    struct serial_params p;
    int rc;
    const char *msg;
} bad_rows[] = {
    {"missing by-id",
     {.path = "/dev/serial/by-id/usb-FTDI_none-if00-port0", .baud = 115200},
     -ENOENT,
     "serial /dev/serial/by-id/usb-FTDI_none-if00-port0: No such file or directory (is the "
     "device plugged in, and the path right?)"},
    {"not a tty", {.path = "/dev/null", .baud = 9600}, -ENODEV, "serial /dev/null: not a serial"},
    {"no path", {.baud = 9600}, -EINVAL, "no device path"},
    {"baud", {.path = "/dev/ttyUSB0", .baud = 0}, -EINVAL, "serial /dev/ttyUSB0: baud"},
    {"bits", {.path = "/dev/ttyUSB0", .baud = 9600, .data_bits = 9}, -EINVAL, "data bits"},
    {"stop", {.path = "/dev/ttyUSB0", .baud = 9600, .stop_bits = 3}, -EINVAL, "stop bits"},
    {"parity", {.path = "/dev/ttyUSB0", .baud = 9600, .parity = 7}, -EINVAL, "parity"},
};

START_TEST(test_bad_open) {
    struct serial s;
    char err[512] = "";
    int rc = serial_open(&s, &bad_rows[_i].p, err, sizeof(err));

    ck_assert_msg(rc == bad_rows[_i].rc, "%s: rc %d, %s", bad_rows[_i].label, rc, err);
    ck_assert_msg(strstr(err, bad_rows[_i].msg) != NULL, "%s: %s", bad_rows[_i].label, err);
    serial_close(&s);
}
END_TEST

START_TEST(test_other_settings) {
    struct serial s;
    struct serial_params p = {.path = pt.slave,
                              .baud = 9600,
                              .data_bits = 7,
                              .parity = SERIAL_PARITY_EVEN,
                              .stop_bits = 2,
                              .dtr_off = true};
    char err[512];

    serial_close(&ser);
    ck_assert_msg(serial_open(&s, &p, err, sizeof(err)) == 0, "%s", err);
    serial_close(&s);
}
END_TEST

/* A user without access to the device (root: drop to nobody in a child). */
START_TEST(test_permission_denied) {
    char link[128], err[512] = "", want[512];
    int fds[2], status;
    ssize_t got;
    pid_t pid;

    serial_close(&ser);
    snprintf(link, sizeof(link), "%s/usb-Arduino_Uno-if00", tmpdir);
    ck_assert_int_eq(symlink(pt.slave, link), 0);
    ck_assert_int_eq(chmod(tmpdir, 0755), 0);
    ck_assert_int_eq(chmod(pt.slave, 0600), 0);
    ck_assert_int_eq(pipe(fds), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct serial s;
        int rc;

        close(fds[0]);
        if (geteuid() == 0) {
            if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0)
                _exit(100);
        } else if (chmod(pt.slave, 0) != 0) {
            _exit(101);
        }
        rc = open_path(&s, link, err, sizeof(err));
        if (write(fds[1], err, strlen(err) + 1) < 0)
            _exit(102);
        _exit(rc < 0 ? -rc : 0);
    }
    close(fds[1]);
    got = read(fds[0], err, sizeof(err) - 1);
    close(fds[0]);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status));
    ck_assert_msg(got > 0, "child exit %d", WEXITSTATUS(status));
    ck_assert_msg(WEXITSTATUS(status) == EACCES, "exit %d: %s", WEXITSTATUS(status), err);
    snprintf(want, sizeof(want),
             "serial %s -> %s: Permission denied (is the service user in group dialout?)", link,
             pt.slave);
    ck_assert_str_eq(err, want);
}
END_TEST

int main(void) {
    Suite *s = suite_create("serial");
    TCase *tc = tcase_create("serial");
    TCase *pure = tcase_create("escape");
    SRunner *sr;
    int failed;

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_open_pts);
    tcase_add_test(tc, test_two_replies_one_burst);
    tcase_add_test(tc, test_symlink_replug);
    tcase_add_test(tc, test_split_reply);
    tcase_add_loop_test(tc, test_silence_times_out, 0,
                        (int)(sizeof(timeouts_ms) / sizeof(timeouts_ms[0])));
    tcase_add_test(tc, test_overflow);
    tcase_add_test(tc, test_garbage);
    tcase_add_test(tc, test_hangup_while_reading);
    tcase_add_test(tc, test_write_times_out);
    tcase_add_test(tc, test_busy);
    tcase_add_test(tc, test_other_settings);
    tcase_add_test(tc, test_permission_denied);
    tcase_add_loop_test(pure, test_escape, 0, (int)(sizeof(escape_rows) / sizeof(escape_rows[0])));
    tcase_add_loop_test(pure, test_bad_open, 0, (int)(sizeof(bad_rows) / sizeof(bad_rows[0])));
    suite_add_tcase(s, tc);
    suite_add_tcase(s, pure);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
