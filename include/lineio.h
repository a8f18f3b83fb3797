/*
 * lineio: the byte transport a serial instrument's protocol code talks
 * through: write bytes, read until a stop byte, each with a deadline. The
 * serial module implements it over libserialport; protocol tests implement
 * it over a recorded or scripted transcript. Protocol code never sees a
 * port or a file descriptor. Used on one device's pool job at a time, never
 * on the loop thread.
 */
#ifndef WMD_LINEIO_H
#define WMD_LINEIO_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct lineio {
    void *ctx;
    /* Write all n bytes within timeout_ms. 0, -ETIMEDOUT, or -EIO (port gone). */
    int (*write)(void *ctx, const char *buf, size_t n, int timeout_ms);
    /* Read bytes into buf (cap bytes, cap >= 2) until one of the bytes in
     * stop (a NUL-terminated set, e.g. "\r\n>") has been read, or until
     * timeout_ms has passed since the call. *n is the bytes read, the stop
     * byte included; buf is NUL-terminated. 0 when a stop byte came;
     * -ETIMEDOUT (with the bytes read so far in buf), -EOVERFLOW (cap - 1
     * bytes and no stop byte), -EIO (port gone). */
    int (*read_until)(void *ctx, char *buf, size_t cap, const char *stop, int timeout_ms,
                      size_t *n);
    /* Discard whatever input is waiting (stale replies). 0 or -EIO. */
    int (*flush_input)(void *ctx);
};

/* Deadlines for protocol code that makes several lineio calls within one
 * timeout: now on the monotonic clock, in ms, and the ms left before a
 * deadline, at least 1 (a timeout of 0 may mean "wait for ever" below). */
static inline int64_t lineio_now_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int lineio_remaining_ms(int64_t deadline) {
    int64_t left = deadline - lineio_now_ms();

    return left < 1 ? 1 : left > INT32_MAX ? INT32_MAX : (int)left;
}

#endif
