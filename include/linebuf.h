/*
 * linebuf: newline framing for one byte stream, a pure module. Bytes go in as
 * they arrive from the socket; whole lines come out through a callback, with
 * the newline and one trailing CR removed. A line longer than the limit is
 * reported once and discarded up to the next newline (resync).
 */
#ifndef WMD_LINEBUF_H
#define WMD_LINEBUF_H

#include <stdbool.h>
#include <stddef.h>

/* Called for each complete line (not NUL-terminated; may contain NUL bytes).
 * Blank lines (after CR removal) are not reported. */
typedef void (*linebuf_line_cb)(void *ctx, const char *line, size_t len);
/* Called once per over-long line, when the limit is first exceeded. */
typedef void (*linebuf_overflow_cb)(void *ctx);

/* Embedded in its owner; linebuf_fini frees the buffer. */
struct linebuf {
    char *buf;
    size_t len, cap;
    size_t max_bytes; /* longest line accepted, newline excluded */
    bool discarding;  /* inside an over-long line: drop until newline */
    bool stop;        /* set by a callback: linebuf_feed_some returns after it */
};

void linebuf_init(struct linebuf *lb, size_t max_bytes);
void linebuf_fini(struct linebuf *lb);

/* Feed n bytes; calls line_cb / overflow_cb zero or more times, in stream
 * order. A line is passed straight from data when it lies wholly inside it,
 * else from the buffer; either way it is valid only during the callback.
 * Callbacks must not call linebuf functions on this linebuf. Returns 0, or
 * -ENOMEM (the partial line is dropped, up to its newline). */
int linebuf_feed(struct linebuf *lb, const char *data, size_t n, linebuf_line_cb line_cb,
                 linebuf_overflow_cb overflow_cb, void *ctx);

/*
 * Like linebuf_feed, but a callback may set lb->stop to make it return right
 * after that line: *consumed is then the bytes taken, and the caller keeps
 * the rest to feed again later (flow control). Otherwise *consumed is n.
 */
int linebuf_feed_some(struct linebuf *lb, const char *data, size_t n, linebuf_line_cb line_cb,
                      linebuf_overflow_cb overflow_cb, void *ctx, size_t *consumed);

/* Bytes of an incomplete line held (for end-of-stream handling). */
size_t linebuf_pending(const struct linebuf *lb);

/* At end of stream, a final line without a newline is delivered as a line
 * (one trailing CR removed; nothing if blank or being discarded). Leaves the
 * linebuf empty and ready for reuse. */
void linebuf_flush(struct linebuf *lb, linebuf_line_cb line_cb, void *ctx);

#endif
