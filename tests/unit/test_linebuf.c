/*
 * test_linebuf: framing cases as a table. Every row is run with the whole
 * input in one feed, byte by byte, and in chunks of 2 to 7 bytes: the lines
 * that come out must not depend on how the bytes were split.
 */
#include "linebuf.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What the callbacks saw, rendered as text: "[line]" per line with NUL and
 * CR shown as \0 and \r, and "!" per overflow. */
struct events {
    char text[4096];
    size_t len;
    const char *data; /* the chunk being fed, to see zero-copy delivery */
    size_t data_len;
    int n_lines, n_from_input;
};

static void put(struct events *ev, const char *s, size_t n) {
    ck_assert_uint_lt(ev->len + n, sizeof ev->text);
    memcpy(ev->text + ev->len, s, n);
    ev->len += n;
    ev->text[ev->len] = '\0';
}

static void on_line(void *ctx, const char *line, size_t len) {
    struct events *ev = ctx;
    ck_assert_uint_gt(len, 0);
    ev->n_lines++;
    if (ev->data && line >= ev->data && line + len <= ev->data + ev->data_len)
        ev->n_from_input++;
    put(ev, "[", 1);
    for (size_t i = 0; i < len; i++) {
        if (line[i] == '\0')
            put(ev, "\\0", 2);
        else if (line[i] == '\r')
            put(ev, "\\r", 2);
        else
            put(ev, &line[i], 1);
    }
    put(ev, "]", 1);
}

static void on_overflow(void *ctx) {
    put(ctx, "!", 1);
}

struct row {
    const char *label;
    size_t max_bytes;
    const char *in;
    size_t in_len;
    bool flush; /* end of stream after the input */
    const char *want;
};

#define IN(s) s, sizeof(s) - 1

static const struct row rows[] = {
    {"one line", 64, IN("abc\n"), false, "[abc]"},
    {"many lines in one feed", 64, IN("a\nbb\nccc\ndddd\n"), false, "[a][bb][ccc][dddd]"},
    {"CRLF", 64, IN("abc\r\ndef\r\n"), false, "[abc][def]"},
    {"bare CR inside a line kept", 64, IN("a\rb\n\rc\n"), false, "[a\\rb][\\rc]"},
    {"only one trailing CR removed", 64, IN("ab\r\r\n"), false, "[ab\\r]"},
    {"blank lines skipped", 64, IN("\n\r\n\na\n\n\r\n"), false, "[a]"},
    {"no newline yet: nothing", 64, IN("abc"), false, ""},
    {"NUL bytes passed through", 64, IN("a\0b\n\0\n\0\0\r\n"), false, "[a\\0b][\\0][\\0\\0]"},
    {"over-long then next line intact", 4, IN("abcdef\nxy\n"), false, "![xy]"},
    {"over-long, far over, then intact", 4, IN("0123456789012345678901234567890123456789\nok\n"),
     false, "![ok]"},
    {"over-long twice in a row", 4, IN("aaaaaa\nbbbbbb\nc\n"), false, "!![c]"},
    {"over-long between good lines", 4, IN("ab\nabcdefgh\ncd\n"), false, "[ab]![cd]"},
    {"exactly max_bytes accepted", 4, IN("abcd\n"), false, "[abcd]"},
    {"max_bytes + 1 rejected", 4, IN("abcde\nz\n"), false, "![z]"},
    {"max_bytes plus CRLF accepted", 4, IN("abcd\r\n"), false, "[abcd]"},
    {"max_bytes + 1 plus CRLF rejected", 4, IN("abcde\r\nz\n"), false, "![z]"},
    {"max_bytes then bare CR rejected", 4, IN("abcd\rx\nz\n"), false, "![z]"},
    {"max_bytes then two CRs rejected", 4, IN("abcd\r\r\nz\n"), false, "![z]"},
    {"over-long blank-looking CRs", 2, IN("\r\r\r\r\nz\n"), false, "![z]"},
    {"max_bytes 0: every line over-long", 0, IN("a\n\nb\n"), false, "!!"},
    {"flush: unterminated final line", 64, IN("ab\ncd"), true, "[ab][cd]"},
    {"flush: final CR removed", 64, IN("abc\r"), true, "[abc]"},
    {"flush: nothing pending", 64, IN("abc\n"), true, "[abc]"},
    {"flush: blank final line", 64, IN("abc\n\r"), true, "[abc]"},
    {"flush: final line at max_bytes", 4, IN("abcd"), true, "[abcd]"},
    {"flush: final line at max_bytes with CR", 4, IN("abcd\r"), true, "[abcd]"},
    {"flush: over-long final line", 4, IN("abcdefgh"), true, "!"},
    {"flush: NUL in final line", 64, IN("a\0"), true, "[a\\0]"},
};

static void feed_all(struct linebuf *lb, struct events *ev, const char *in, size_t n,
                     size_t chunk) {
    for (size_t off = 0; off < n; off += chunk) {
        size_t k = n - off < chunk ? n - off : chunk;
        ev->data = in + off;
        ev->data_len = k;
        ck_assert_int_eq(linebuf_feed(lb, in + off, k, on_line, on_overflow, ev), 0);
    }
    ev->data = NULL;
}

static void run_row(const struct row *r, size_t chunk) {
    struct linebuf lb;
    struct events ev = {.len = 0};
    linebuf_init(&lb, r->max_bytes);
    feed_all(&lb, &ev, r->in, r->in_len, chunk);
    if (r->flush) {
        linebuf_flush(&lb, on_line, &ev);
        ck_assert_uint_eq(linebuf_pending(&lb), 0);
    }
    ck_assert_msg(strcmp(ev.text, r->want) == 0, "%s (chunks of %zu): got \"%s\", want \"%s\"",
                  r->label, chunk, ev.text, r->want);
    linebuf_fini(&lb);
}

START_TEST(test_rows) {
    const struct row *r = &rows[_i];
    run_row(r, r->in_len ? r->in_len : 1);
    for (size_t chunk = 1; chunk <= 7; chunk++)
        run_row(r, chunk);
}
END_TEST

START_TEST(test_pending) {
    struct linebuf lb;
    struct events ev = {.len = 0};
    linebuf_init(&lb, 8);
    ck_assert_uint_eq(linebuf_pending(&lb), 0);
    ck_assert_int_eq(linebuf_feed(&lb, "ab\ncd", 5, on_line, on_overflow, &ev), 0);
    ck_assert_uint_eq(linebuf_pending(&lb), 2);
    ck_assert_int_eq(linebuf_feed(&lb, "efghijk", 7, on_line, on_overflow, &ev), 0);
    /* Over the limit: reported at once, nothing held while discarding. */
    ck_assert_str_eq(ev.text, "[ab]!");
    ck_assert_uint_eq(linebuf_pending(&lb), 0);
    ck_assert_int_eq(linebuf_feed(&lb, "more", 4, on_line, on_overflow, &ev), 0);
    ck_assert_str_eq(ev.text, "[ab]!");
    ck_assert_int_eq(linebuf_feed(&lb, "\nxy", 3, on_line, on_overflow, &ev), 0);
    ck_assert_uint_eq(linebuf_pending(&lb), 2);
    linebuf_flush(&lb, on_line, &ev);
    ck_assert_str_eq(ev.text, "[ab]![xy]");
    /* Usable again after a flush. */
    ck_assert_int_eq(linebuf_feed(&lb, "z\n", 2, on_line, on_overflow, &ev), 0);
    ck_assert_str_eq(ev.text, "[ab]![xy][z]");
    linebuf_fini(&lb);
}
END_TEST

START_TEST(test_zero_copy) {
    /* Whole lines inside the chunk with nothing buffered come straight from
     * the caller's bytes; a line completed from a buffered part does not. */
    struct linebuf lb;
    struct events ev = {.len = 0};
    static const char a[] = "one\ntwo\r\nthr";
    static const char b[] = "ee\nfour\n";
    linebuf_init(&lb, 64);
    ev.data = a;
    ev.data_len = sizeof a - 1;
    ck_assert_int_eq(linebuf_feed(&lb, a, sizeof a - 1, on_line, on_overflow, &ev), 0);
    ck_assert_int_eq(ev.n_from_input, 2);
    ev.data = b;
    ev.data_len = sizeof b - 1;
    ck_assert_int_eq(linebuf_feed(&lb, b, sizeof b - 1, on_line, on_overflow, &ev), 0);
    ck_assert_int_eq(ev.n_lines, 4);
    ck_assert_int_eq(ev.n_from_input, 3);
    ck_assert_str_eq(ev.text, "[one][two][three][four]");
    linebuf_fini(&lb);
}
END_TEST

static void count_line(void *ctx, const char *line, size_t len) {
    size_t *got = ctx;
    (void)line;
    *got = len;
}

static void count_overflow(void *ctx) {
    *(size_t *)ctx = SIZE_MAX;
}

START_TEST(test_long_line_byte_by_byte) {
    /* A line of 1 MiB fed one byte at a time: bytes already held are never
     * searched again, so this is linear (a rescan would be ~5e11 steps). */
    enum { N = 1 << 20 };
    struct linebuf lb;
    size_t got = 0;
    linebuf_init(&lb, N);
    for (size_t i = 0; i < N; i++) {
        char c = (char)('a' + i % 26);
        ck_assert_int_eq(linebuf_feed(&lb, &c, 1, count_line, count_overflow, &got), 0);
    }
    ck_assert_uint_eq(linebuf_pending(&lb), N);
    ck_assert_uint_eq(got, 0);
    /* The line at exactly the limit is delivered whole. */
    ck_assert_int_eq(linebuf_feed(&lb, "\n", 1, count_line, count_overflow, &got), 0);
    ck_assert_uint_eq(got, N);
    ck_assert_uint_eq(linebuf_pending(&lb), 0);
    linebuf_fini(&lb);
}
END_TEST

/* Reference framing, written the obvious way: split the whole stream at
 * each newline. */
static void reference(const char *in, size_t n, size_t max_bytes, struct events *ev) {
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        bool eol = i < n && in[i] == '\n';
        if (!eol && i < n)
            continue;
        size_t len = i - start;
        bool cr = len > 0 && in[i - 1] == '\r';
        if (!eol && (len > max_bytes + 1 || (len == max_bytes + 1 && !cr)))
            on_overflow(ev); /* the unterminated tail at flush */
        else if (len - cr > max_bytes)
            on_overflow(ev);
        else if (len - cr > 0)
            on_line(ev, in + start, len - cr);
        start = i + 1;
    }
}

START_TEST(test_random_splits) {
    /* Random streams of a, CR, LF and NUL, cut at random places, framed
     * with small limits: the same events as the reference, every time. */
    static const char alphabet[] = {'a', 'a', 'a', '\r', '\n', '\0'};
    uint32_t x = 2463534242u;
    for (int round = 0; round < 2000; round++) {
        char in[64];
        size_t n = 0, max_bytes;
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        max_bytes = x % 6;
        n = (x >> 8) % sizeof in;
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5;
            in[i] = alphabet[x % sizeof alphabet];
        }
        struct events want = {.len = 0}, got = {.len = 0};
        reference(in, n, max_bytes, &want);

        struct linebuf lb;
        linebuf_init(&lb, max_bytes);
        for (size_t off = 0; off < n;) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5;
            size_t k = 1 + x % 9;
            if (k > n - off)
                k = n - off;
            ck_assert_int_eq(linebuf_feed(&lb, in + off, k, on_line, on_overflow, &got), 0);
            off += k;
        }
        linebuf_flush(&lb, on_line, &got);
        linebuf_fini(&lb);
        ck_assert_msg(strcmp(got.text, want.text) == 0, "round %d, max %zu: got %s, want %s", round,
                      max_bytes, got.text, want.text);
    }
}
END_TEST

static Suite *linebuf_suite(void) {
    Suite *s = suite_create("linebuf");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_rows, 0, (int)(sizeof rows / sizeof rows[0]));
    tcase_add_test(tc, test_pending);
    tcase_add_test(tc, test_zero_copy);
    tcase_add_test(tc, test_random_splits);
    tcase_add_test(tc, test_long_line_byte_by_byte);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(linebuf_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
