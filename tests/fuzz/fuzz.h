/*
 * fuzz: what every target in tests/fuzz shares. A target defines
 * LLVMFuzzerTestOneInput and links either with libFuzzer (WMD_FUZZ) or with
 * replay_main.c, which runs it over stored inputs in every normal build.
 */
#ifndef WMD_FUZZ_H
#define WMD_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Runs one input (data: borrowed, size bytes, not NUL-terminated) and
 * returns 0; a broken invariant aborts, which libFuzzer and the replay
 * report as a crash. Keeps no state from one input to the next. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

_Noreturn static inline void fuzz_fail(const char *file, int line, const char *what) {
    fprintf(stderr, "%s:%d: invariant broken: %s\n", file, line, what);
    abort();
}

/* An invariant of the module under test, checked in every build (assert
 * is compiled out of RelWithDebInfo). */
#define FUZZ_CHECK(cond) ((cond) ? (void)0 : fuzz_fail(__FILE__, __LINE__, #cond))

/* A small deterministic generator, seeded from the input, for choices that
 * should vary with it (answer order, chunk sizes) without eating its bytes. */
static inline uint32_t fuzz_rand(uint32_t *state) {
    uint32_t x = *state ? *state : 0x9e3779b9u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    return x;
}

#endif
