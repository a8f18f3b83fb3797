/*
 * fuzz_linebuf: linebuf (src/net/linebuf.c) against a reference splitter.
 * The input's first bytes choose the line limit, how the rest is cut into
 * chunks, which API feeds them and which callbacks set lb->stop; whatever
 * the choice, the lines and overflows must be those of the reference.
 */
#include "fuzz.h"
#include "linebuf.h"

#include <stdbool.h>
#include <string.h>

/* Input layout: what the header bytes choose. */
enum {
    HDR_MAX_LO, /* max_bytes, low byte */
    HDR_MAX_HI, /* max_bytes, bits 8..13: up to 16383, past linebuf's 4 KiB buffer reuse */
    HDR_MODE,   /* bits 0-1: which feed function; bits 2-7: seed for chunk sizes */
    HDR_STOP,   /* bit k: the event k (mod 8) of a feed_some call sets lb->stop */
    HDR_CHUNKS, /* four chunk sizes, used in turn; 255 = the rest */
    HDR_LEN = HDR_CHUNKS + 4,
};

/* How a pass feeds its chunks. */
enum feed_mode { FEED_PLAIN, FEED_SOME, FEED_ALTERNATE, FEED_RANDOM };

/* Inputs past this are not also fed byte by byte (it would only be slow). */
#define BYTEWISE_MAX 1024

/* One callback: a line (offset and length in the arena) or an overflow. */
struct event {
    bool overflow;
    size_t off, len;
};

/* What one pass saw, to compare with the reference. */
struct events {
    struct event *ev;
    size_t n, cap;
    char *arena; /* the delivered lines, one after another */
    size_t arena_len, arena_cap;
};

/* The state the callbacks check against. */
struct pass {
    struct linebuf lb;
    struct events got;
    const char *chunk; /* the bytes of the current feed call */
    size_t chunk_len;
    bool in_some;  /* inside linebuf_feed_some */
    bool stopped;  /* a callback of this feed_some call set lb->stop */
    bool in_flush; /* inside linebuf_flush */
    unsigned n_flush_lines;
    uint8_t stop_mask;
    unsigned n_events_in_call;
};

static void events_init(struct events *e, size_t size) {
    /* At most one event per newline plus one, and no more line bytes than
     * the input holds. */
    e->cap = size + 1;
    e->ev = malloc(e->cap * sizeof e->ev[0]);
    e->arena_cap = size;
    e->arena = malloc(size ? size : 1);
    FUZZ_CHECK(e->ev != NULL && e->arena != NULL);
    e->n = 0;
    e->arena_len = 0;
}

static void events_fini(struct events *e) {
    free(e->ev);
    free(e->arena);
}

static void events_add(struct events *e, bool overflow, const char *line, size_t len) {
    FUZZ_CHECK(e->n < e->cap);
    FUZZ_CHECK(e->arena_len + len <= e->arena_cap);
    e->ev[e->n].overflow = overflow;
    e->ev[e->n].off = e->arena_len;
    e->ev[e->n].len = len;
    if (len > 0)
        memcpy(e->arena + e->arena_len, line, len);
    e->arena_len += len;
    e->n++;
}

static bool events_equal(const struct events *a, const struct events *b) {
    if (a->n != b->n || a->arena_len != b->arena_len)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (a->ev[i].overflow != b->ev[i].overflow || a->ev[i].len != b->ev[i].len)
            return false;
    return a->arena_len == 0 || memcmp(a->arena, b->arena, a->arena_len) == 0;
}

/* The specification, written as plainly as possible: split on '\n', remove
 * one trailing '\r', skip blank lines, and a line longer than max_bytes is
 * one overflow. The last piece, with no newline, is what the flush
 * delivers (or the overflow the feed reported while it grew). */
static void reference(const char *data, size_t n, size_t max_bytes, struct events *want) {
    size_t start = 0;
    while (start < n) {
        const char *nl = memchr(data + start, '\n', n - start);
        size_t end = nl ? (size_t)(nl - data) : n;
        size_t len = end - start;
        if (len > 0 && data[end - 1] == '\r')
            len--;
        if (len > max_bytes)
            events_add(want, true, NULL, 0);
        else if (len > 0)
            events_add(want, false, data + start, len);
        start = end + 1;
    }
}

static void note_event(struct pass *p) {
    if (!p->in_some)
        return;
    /* Once a callback has set stop, feed_some must return before the next
     * event. */
    FUZZ_CHECK(!p->stopped);
    if (p->stop_mask & (1u << (p->n_events_in_call++ % 8))) {
        p->lb.stop = true;
        p->stopped = true;
    }
}

static void on_line(void *ctx, const char *line, size_t len) {
    struct pass *p = ctx;
    const struct linebuf *lb = &p->lb;

    FUZZ_CHECK(len > 0);
    FUZZ_CHECK(len <= lb->max_bytes);
    FUZZ_CHECK(memchr(line, '\n', len) == NULL);
    /* Straight from the caller's bytes, or from linebuf's own buffer. */
    bool from_chunk =
        p->chunk && line >= p->chunk && (size_t)(line - p->chunk) + len <= p->chunk_len;
    bool from_buf = lb->buf && line >= lb->buf && (size_t)(line - lb->buf) + len <= lb->len;
    FUZZ_CHECK(from_chunk || from_buf);
    if (p->in_flush)
        FUZZ_CHECK(++p->n_flush_lines == 1);
    events_add(&p->got, false, line, len);
    note_event(p);
}

static void on_overflow(void *ctx) {
    struct pass *p = ctx;

    FUZZ_CHECK(!p->in_flush);
    events_add(&p->got, true, NULL, 0);
    note_event(p);
}

/* What holds between calls, whatever was fed. */
static void check_state(const struct linebuf *lb) {
    FUZZ_CHECK(linebuf_pending(lb) == lb->len);
    FUZZ_CHECK(lb->len <= lb->cap);
    /* A partial line at the limit plus a CR whose LF is still to come. */
    FUZZ_CHECK(lb->len <= lb->max_bytes + 1);
    FUZZ_CHECK(lb->cap <= lb->max_bytes + 1);
    FUZZ_CHECK(!lb->discarding || lb->len == 0);
    FUZZ_CHECK(lb->len == 0 || memchr(lb->buf, '\n', lb->len) == NULL);
}

/* Feed one chunk, copied to a block of its own size so that ASan sees any
 * read past it or any pointer kept into it after the call. */
static void feed_chunk(struct pass *p, const char *data, size_t n, bool some) {
    char *copy = malloc(n ? n : 1);
    FUZZ_CHECK(copy != NULL);
    if (n > 0)
        memcpy(copy, data, n);

    size_t off = 0;
    do {
        p->chunk = copy + off;
        p->chunk_len = n - off;
        if (!some) {
            FUZZ_CHECK(linebuf_feed(&p->lb, copy, n, on_line, on_overflow, p) == 0);
            off = n;
        } else {
            size_t used = SIZE_MAX;
            p->lb.stop = false;
            p->in_some = true;
            p->stopped = false;
            p->n_events_in_call = 0;
            FUZZ_CHECK(linebuf_feed_some(&p->lb, copy + off, n - off, on_line, on_overflow, p,
                                         &used) == 0);
            p->in_some = false;
            FUZZ_CHECK(used <= n - off);
            if (used < n - off) {
                /* Stopped right after a newline, and only when asked. */
                FUZZ_CHECK(p->stopped);
                FUZZ_CHECK(used > 0 && copy[off + used - 1] == '\n');
            }
            off += used;
        }
        check_state(&p->lb);
    } while (off < n);
    p->chunk = NULL;
    free(copy);
}

static void flush(struct pass *p) {
    p->in_flush = true;
    p->n_flush_lines = 0;
    linebuf_flush(&p->lb, on_line, p);
    p->in_flush = false;
    FUZZ_CHECK(linebuf_pending(&p->lb) == 0);
    FUZZ_CHECK(!p->lb.discarding);
    check_state(&p->lb);
}

/* One pass over data: chunk sizes from sizes[] in turn (255 = the rest,
 * 0 = an empty feed), or from the generator when rng is not NULL. */
static void run_pass(struct pass *p, const char *data, size_t n, enum feed_mode mode,
                     const uint8_t sizes[4], uint32_t *rng) {
    size_t off = 0;
    unsigned k = 0, empty_in_a_row = 0;
    while (off < n) {
        size_t want = sizes[k % 4];
        if (rng)
            want = fuzz_rand(rng) % 64;
        if (want == 255)
            want = n - off;
        /* Four empty feeds in a row: the sizes are all 0, take the rest. */
        if (want == 0 && ++empty_in_a_row > 4)
            want = n - off;
        else if (want > 0)
            empty_in_a_row = 0;
        size_t len = want < n - off ? want : n - off;
        bool some = mode == FEED_SOME || (mode == FEED_ALTERNATE && k % 2 == 1) ||
                    (mode == FEED_RANDOM && rng && fuzz_rand(rng) % 2 == 0);
        feed_chunk(p, data + off, len, some);
        off += len;
        k++;
    }
    flush(p);
}

static void check_pass(struct pass *p, const struct events *want) {
    FUZZ_CHECK(events_equal(&p->got, want));
    p->got.n = 0;
    p->got.arena_len = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < HDR_LEN)
        return 0;
    size_t max_bytes = (size_t)data[HDR_MAX_LO] | (size_t)(data[HDR_MAX_HI] & 0x3f) << 8;
    enum feed_mode mode = (enum feed_mode)(data[HDR_MODE] & 3);
    uint32_t rng = (uint32_t)data[HDR_MODE] << 24 | (uint32_t)data[HDR_STOP] << 16 | 1;
    const char *text = (const char *)data + HDR_LEN;
    size_t n = size - HDR_LEN;

    struct events want;
    events_init(&want, n);
    reference(text, n, max_bytes, &want);

    struct pass p = {.stop_mask = data[HDR_STOP]};
    events_init(&p.got, n);
    linebuf_init(&p.lb, max_bytes);

    /* The chunking the input asks for. */
    run_pass(&p, text, n, mode, &data[HDR_CHUNKS], NULL);
    check_pass(&p, &want);

    /* The same linebuf, reused after its flush: everything in one feed. */
    static const uint8_t whole[4] = {255, 255, 255, 255};
    run_pass(&p, text, n, FEED_PLAIN, whole, NULL);
    check_pass(&p, &want);

    /* Random small chunks, both functions, stop wherever the mask says. */
    run_pass(&p, text, n, FEED_RANDOM, whole, &rng);
    check_pass(&p, &want);

    /* Byte by byte through feed_some, stopping after every event. */
    if (n <= BYTEWISE_MAX) {
        static const uint8_t ones[4] = {1, 1, 1, 1};
        p.stop_mask = 0xff;
        run_pass(&p, text, n, FEED_SOME, ones, NULL);
        check_pass(&p, &want);
    }

    linebuf_fini(&p.lb);
    events_fini(&p.got);
    events_fini(&want);
    return 0;
}
