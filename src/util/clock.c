/*
 * clock: the system clock behind the struct clock seam. Nothing else.
 */
#include "clock.h"

#include <errno.h>
#include <time.h>

static uint64_t system_now_ns(void *ctx) {
    struct timespec ts;

    (void)ctx;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void system_sleep_ns(void *ctx, uint64_t ns) {
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u),
                          .tv_nsec = (long)(ns % 1000000000u)};

    (void)ctx;
    /* Restart after signals: a settle time must really elapse. */
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static double system_wall_s(void *ctx) {
    struct timespec ts;

    (void)ctx;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const struct clock system_clock = {
    .now_ns = system_now_ns,
    .sleep_ns = system_sleep_ns,
    .wall_s = system_wall_s,
    .ctx = NULL,
};

const struct clock *clock_system(void) {
    return &system_clock;
}
