/*
 * linebuf: newline framing for one byte stream. Owns the bytes of the one
 * incomplete line it holds; it knows nothing of sockets, JSON or clients, and
 * it never allocates more than the line limit allows.
 */
#include "linebuf.h"

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* First allocation for a partial line. Most requests are a few hundred bytes,
 * so a single small block serves almost every client. */
#define LINEBUF_MIN_CAP 256
/* A buffer grown past this by one long line is released once that line is
 * delivered, so an idle client does not pin up to max_bytes of memory. */
#define LINEBUF_KEEP_CAP 4096

void linebuf_init(struct linebuf *lb, size_t max_bytes) {
    /* max_bytes + 1 (a line at the limit plus its CR) must not wrap. */
    assert(max_bytes < SIZE_MAX);
    lb->buf = NULL;
    lb->len = 0;
    lb->cap = 0;
    lb->max_bytes = max_bytes;
    lb->discarding = false;
    lb->stop = false;
}

void linebuf_fini(struct linebuf *lb) {
    free(lb->buf);
    lb->buf = NULL;
    lb->len = 0;
    lb->cap = 0;
    lb->discarding = false;
}

size_t linebuf_pending(const struct linebuf *lb) {
    return lb->len;
}

/* Length of a line once one trailing CR is removed. */
static size_t strip_cr(const char *line, size_t len) {
    return len > 0 && line[len - 1] == '\r' ? len - 1 : len;
}

/* Append to the partial line. The caller has checked the limit, so the
 * buffer never grows beyond max_bytes + 1 (a line at the limit plus a CR
 * whose LF has not arrived yet). */
static int append(struct linebuf *lb, const char *data, size_t n) {
    size_t need = lb->len + n;
    if (need > lb->cap) {
        size_t limit = lb->max_bytes + 1;
        size_t cap = lb->cap ? lb->cap : LINEBUF_MIN_CAP;
        while (cap < need && cap <= limit / 2)
            cap *= 2;
        if (cap < need || cap > limit)
            cap = need > limit ? need : limit;
        char *p = realloc(lb->buf, cap);
        if (!p)
            return -ENOMEM;
        lb->buf = p;
        lb->cap = cap;
    }
    memcpy(lb->buf + lb->len, data, n);
    lb->len = need;
    return 0;
}

/* The buffered line has been delivered or dropped. */
static void reset(struct linebuf *lb) {
    lb->len = 0;
    if (lb->cap > LINEBUF_KEEP_CAP) {
        free(lb->buf);
        lb->buf = NULL;
        lb->cap = 0;
    }
}

/* Would a partial line of len bytes, ending in last, already be too long?
 * One byte over the limit is still fine while it is a CR: it may be the CR of
 * a CRLF, which is not part of the line. */
static bool partial_too_long(const struct linebuf *lb, size_t len, char last) {
    return len > lb->max_bytes + 1 || (len == lb->max_bytes + 1 && last != '\r');
}

/* The framing loop. With may_stop, it returns after the callback that set
 * lb->stop, with *consumed the bytes taken (the rest are the caller's). */
static int feed(struct linebuf *lb, const char *data, size_t n, linebuf_line_cb line_cb,
                linebuf_overflow_cb overflow_cb, void *ctx, bool may_stop, size_t *consumed) {
    const char *p = data, *end = data + n;
    int rc = 0;

    *consumed = n;

    /* The buffer never holds a newline: each line is taken out as soon as
     * its newline arrives. So the search for the next newline starts at the
     * first byte of this chunk, and no byte is ever searched twice. */
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) {
            size_t n_tail = (size_t)(end - p);
            if (lb->discarding)
                return rc;
            if (partial_too_long(lb, lb->len + n_tail, end[-1])) {
                lb->discarding = true;
                reset(lb);
                overflow_cb(ctx);
                return rc;
            }
            if (append(lb, p, n_tail) < 0) {
                /* Drop the rest of this line too, or its tail would later
                 * arrive as a line of its own. */
                lb->discarding = true;
                reset(lb);
                return -ENOMEM;
            }
            return rc;
        }

        size_t n_part = (size_t)(nl - p);
        const char *next = nl + 1;
        if (lb->discarding) {
            lb->discarding = false;
            p = next;
            continue;
        }

        if (lb->len == 0) {
            /* Nothing buffered: deliver straight from the caller's bytes. */
            size_t len = strip_cr(p, n_part);
            if (len > lb->max_bytes)
                overflow_cb(ctx);
            else if (len > 0)
                line_cb(ctx, p, len);
        } else {
            size_t total = lb->len + n_part;
            char last = n_part > 0 ? nl[-1] : lb->buf[lb->len - 1];
            size_t len = last == '\r' ? total - 1 : total;
            if (len > lb->max_bytes) {
                overflow_cb(ctx);
            } else if (append(lb, p, n_part) < 0) {
                rc = -ENOMEM;
            } else if (len > 0) {
                line_cb(ctx, lb->buf, len);
            }
            reset(lb);
        }
        p = next;
        if (may_stop && lb->stop && p < end) {
            *consumed = (size_t)(p - data);
            return rc;
        }
    }
    return rc;
}

int linebuf_feed(struct linebuf *lb, const char *data, size_t n, linebuf_line_cb line_cb,
                 linebuf_overflow_cb overflow_cb, void *ctx) {
    size_t consumed;

    return feed(lb, data, n, line_cb, overflow_cb, ctx, false, &consumed);
}

int linebuf_feed_some(struct linebuf *lb, const char *data, size_t n, linebuf_line_cb line_cb,
                      linebuf_overflow_cb overflow_cb, void *ctx, size_t *consumed) {
    return feed(lb, data, n, line_cb, overflow_cb, ctx, true, consumed);
}

void linebuf_flush(struct linebuf *lb, linebuf_line_cb line_cb, void *ctx) {
    if (!lb->discarding && lb->len > 0) {
        size_t len = strip_cr(lb->buf, lb->len);
        if (len > 0)
            line_cb(ctx, lb->buf, len);
    }
    lb->discarding = false;
    reset(lb);
}
