/*
 * script_lineio: a scripted struct lineio over a recorded transcript, for
 * the protocol unit tests only (see script_lineio.h). It must not know any
 * instrument protocol.
 */
#include "script_lineio.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

static int hexval(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Unescapes s into out; returns the byte count, or exits the test on a
 * malformed fixture. */
static size_t unescape(const char *path, const char *s, char *out, size_t cap) {
    size_t n = 0;

    for (; *s; s++) {
        char c = *s;

        if (c == '\\') {
            s++;
            switch (*s) {
            case 'r':
                c = '\r';
                break;
            case 'n':
                c = '\n';
                break;
            case 't':
                c = '\t';
                break;
            case '\\':
                c = '\\';
                break;
            case '"':
                c = '"';
                break;
            case 'x':
                ck_assert_msg(hexval(s[1]) >= 0 && hexval(s[2]) >= 0, "%s: bad \\x escape", path);
                c = (char)(hexval(s[1]) * 16 + hexval(s[2]));
                s += 2;
                break;
            default:
                ck_abort_msg("%s: unknown escape \\%c", path, *s);
            }
        }
        ck_assert_msg(n < cap, "%s: line too long", path);
        out[n++] = c;
    }
    return n;
}

void script_lineio_load(struct script_lineio *sc, const char *path) {
    FILE *f = fopen(path, "r");
    char line[1024];

    ck_assert_msg(f != NULL, "cannot open %s", path);
    memset(sc, 0, sizeof(*sc));
    while (fgets(line, sizeof(line), f)) {
        size_t len = strcspn(line, "\n");

        line[len] = '\0';
        if (len == 0 || line[0] == '#')
            continue;
        ck_assert_msg((line[0] == '>' || line[0] == '<') && line[1] == ' ',
                      "%s: line must start with \"> \", \"< \" or '#': %s", path, line);
        ck_assert_msg(sc->nitems < SCRIPT_LINEIO_MAX_ITEMS, "%s: too many lines", path);
        sc->item[sc->nitems].dir = line[0];
        sc->item[sc->nitems].n =
            unescape(path, line + 2, sc->item[sc->nitems].bytes, SCRIPT_LINEIO_ITEM_CAP);
        sc->nitems++;
    }
    fclose(f);
}

/* Everything the device sent up to the next write it waits for arrives. */
static void arrive(struct script_lineio *sc) {
    while (sc->cur < sc->nitems && sc->item[sc->cur].dir == '<') {
        memcpy(sc->rx + sc->rx_head + sc->rx_len, sc->item[sc->cur].bytes, sc->item[sc->cur].n);
        sc->rx_len += sc->item[sc->cur].n;
        sc->cur++;
    }
}

static int lineio_write(void *ctx, const char *buf, size_t n, int timeout_ms) {
    struct script_lineio *sc = ctx;

    (void)timeout_ms;
    arrive(sc);
    if (sc->cur >= sc->nitems || sc->item[sc->cur].n != n ||
        memcmp(sc->item[sc->cur].bytes, buf, n) != 0) {
        if (sc->mismatch[0] == '\0')
            snprintf(sc->mismatch, sizeof(sc->mismatch), "unexpected write of %zu bytes \"%.*s\"",
                     n, (int)n, buf);
        return -EIO;
    }
    sc->cur++;
    return 0;
}

static int lineio_read_until(void *ctx, char *buf, size_t cap, const char *stop, int timeout_ms,
                             size_t *n) {
    struct script_lineio *sc = ctx;

    (void)timeout_ms;
    ck_assert_uint_ge(cap, 2);
    arrive(sc);
    *n = 0;
    while (sc->rx_len > 0) {
        char c = sc->rx[sc->rx_head];

        if (*n == cap - 1) {
            buf[*n] = '\0';
            return -EOVERFLOW;
        }
        buf[(*n)++] = c;
        sc->rx_head++;
        sc->rx_len--;
        if (c != '\0' && strchr(stop, c)) {
            buf[*n] = '\0';
            return 0;
        }
    }
    buf[*n] = '\0';
    return -ETIMEDOUT;
}

static int lineio_flush_input(void *ctx) {
    struct script_lineio *sc = ctx;

    arrive(sc);
    sc->rx_head += sc->rx_len;
    sc->rx_len = 0;
    return 0;
}

bool script_lineio_done(const struct script_lineio *sc) {
    return sc->cur == sc->nitems && sc->rx_len == 0;
}

struct lineio script_lineio_io(struct script_lineio *sc) {
    struct lineio io = {
        .ctx = sc,
        .write = lineio_write,
        .read_until = lineio_read_until,
        .flush_input = lineio_flush_input,
    };
    return io;
}
