/*
 * fakeclock: a struct clock whose time moves only when something sleeps on
 * it, for the in-process tests and benchmarks. The simulator spends settle
 * and exposure through sleep_ns, so simulated minutes pass in milliseconds
 * and a run depends only on the seed. Header-only; it must not know about
 * the loop, the meter or the lasers.
 */
#ifndef WMD_FAKECLOCK_H
#define WMD_FAKECLOCK_H

#include <stdatomic.h>
#include <stdint.h>

#include "clock.h"

/* The wall clock a fake run shows: 2026-01-01T00:00:00Z plus fake time. */
#define FAKE_CLOCK_WALL_BASE_S 1767225600.0

struct fake_clock {
    struct clock clk; /* what the code under test gets; ctx points back here */
    _Atomic uint64_t now_ns;
    _Atomic uint64_t sleeps; /* sleep_ns calls so far */
};

static inline uint64_t fake_clock_now_ns(void *ctx) {
    struct fake_clock *fc = ctx;

    return atomic_load(&fc->now_ns);
}

/* Any thread: advances time by ns and returns at once. Atomic, so two pool
 * jobs sleeping at once both get their time counted. */
static inline void fake_clock_sleep_ns(void *ctx, uint64_t ns) {
    struct fake_clock *fc = ctx;

    atomic_fetch_add(&fc->now_ns, ns);
    atomic_fetch_add(&fc->sleeps, 1);
}

static inline double fake_clock_wall_s(void *ctx) {
    return FAKE_CLOCK_WALL_BASE_S + (double)fake_clock_now_ns(ctx) * 1e-9;
}

/* start_ns > 0: the controller treats a reading time of 0 as "none yet". */
static inline void fake_clock_init(struct fake_clock *fc, uint64_t start_ns) {
    fc->clk.now_ns = fake_clock_now_ns;
    fc->clk.sleep_ns = fake_clock_sleep_ns;
    fc->clk.wall_s = fake_clock_wall_s;
    fc->clk.ctx = fc;
    atomic_init(&fc->now_ns, start_ns);
    atomic_init(&fc->sleeps, 0);
}

#endif
