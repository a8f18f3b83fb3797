/*
 * clock: the seam between the daemon and time. Drivers, the scheduler and the
 * locks read monotonic time and sleep only through a struct clock, so the
 * in-process tests can run them on a fake clock that advances when slept on.
 */
#ifndef WMD_CLOCK_H
#define WMD_CLOCK_H

#include <stdint.h>

struct clock {
    uint64_t (*now_ns)(void *ctx);            /* monotonic nanoseconds */
    void (*sleep_ns)(void *ctx, uint64_t ns); /* any thread; returns after ns */
    double (*wall_s)(void *ctx);              /* Unix time, only for display */
    void *ctx;
};

/* The real clock: CLOCK_MONOTONIC, nanosleep, CLOCK_REALTIME. Static storage. */
const struct clock *clock_system(void);

static inline uint64_t clock_now_ns(const struct clock *c) {
    return c->now_ns(c->ctx);
}

#endif
