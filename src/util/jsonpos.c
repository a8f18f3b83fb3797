/*
 * jsonpos: find the line and column of a key path in raw JSON text. It owns
 * only a forward scanner over a caller's buffer: it skips whole values by
 * bracket counting and decodes nothing but the keys it compares. It must not
 * allocate or recurse, so hostile nesting cannot exhaust the stack.
 */
#include "jsonpos.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

struct scan {
    const char *s;
    size_t len;
    size_t i;
};

static bool at_end(const struct scan *sc) {
    return sc->i >= sc->len;
}

static char peek(const struct scan *sc) {
    return at_end(sc) ? '\0' : sc->s[sc->i];
}

static void skip_ws(struct scan *sc) {
    while (!at_end(sc)) {
        char c = sc->s[sc->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        sc->i++;
    }
}

static int hex4(const struct scan *sc, size_t at, unsigned *out) {
    unsigned v = 0;
    if (at + 4 > sc->len)
        return -EINVAL;
    for (size_t k = 0; k < 4; k++) {
        char c = sc->s[at + k];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -EINVAL;
    }
    *out = v;
    return 0;
}

static size_t utf8_encode(unsigned cp, char out[4]) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/*
 * At a string's opening quote: move past its closing quote. When key is not
 * NULL, also compare the decoded string with it, because a config key may be
 * written with escapes ("\u006eame" is "name") and must still be found.
 * Returns 1 for equal, 0 for different (or no key), -EINVAL for a broken string.
 */
static int scan_string(struct scan *sc, const char *key) {
    size_t k = 0; /* bytes of key matched so far */
    bool equal = key != NULL;

    if (peek(sc) != '"')
        return -EINVAL;
    sc->i++;
    while (!at_end(sc)) {
        char c = sc->s[sc->i];
        char buf[4];
        size_t n;

        if (c == '"') {
            sc->i++;
            return equal && key[k] == '\0';
        }
        if (c != '\\') {
            buf[0] = c;
            n = 1;
            sc->i++;
        } else {
            char e = sc->i + 1 < sc->len ? sc->s[sc->i + 1] : '\0';
            unsigned cp;
            switch (e) {
            case '"':
            case '\\':
            case '/':
                cp = (unsigned char)e;
                break;
            case 'b':
                cp = '\b';
                break;
            case 'f':
                cp = '\f';
                break;
            case 'n':
                cp = '\n';
                break;
            case 'r':
                cp = '\r';
                break;
            case 't':
                cp = '\t';
                break;
            case 'u':
                if (hex4(sc, sc->i + 2, &cp) < 0)
                    return -EINVAL;
                sc->i += 4;
                if (cp >= 0xD800 && cp <= 0xDBFF && sc->i + 8 <= sc->len &&
                    sc->s[sc->i + 2] == '\\' && sc->s[sc->i + 3] == 'u') {
                    unsigned lo;
                    if (hex4(sc, sc->i + 4, &lo) == 0 && lo >= 0xDC00 && lo <= 0xDFFF) {
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        sc->i += 6;
                    }
                }
                break;
            default:
                return -EINVAL;
            }
            sc->i += 2;
            n = utf8_encode(cp, buf);
        }
        if (equal) {
            /* A decoded NUL can never match: key is a C string. */
            for (size_t j = 0; j < n && equal; j++) {
                if (buf[j] == '\0' || key[k] != buf[j])
                    equal = false;
                else
                    k++;
            }
        }
    }
    return -EINVAL;
}

/* At the first character of any value: move just past it. Containers are
 * skipped by counting brackets outside strings, which needs no stack. */
static int skip_value(struct scan *sc) {
    char c = peek(sc);
    size_t depth = 0;

    if (at_end(sc))
        return -EINVAL;
    if (c == '"')
        return scan_string(sc, NULL) < 0 ? -EINVAL : 0;
    if (c != '{' && c != '[') {
        size_t start = sc->i;
        while (!at_end(sc)) {
            c = sc->s[sc->i];
            if (c == ',' || c == ']' || c == '}' || c == ' ' || c == '\t' || c == '\n' ||
                c == '\r' || c == ':' || c == '"' || c == '[' || c == '{')
                break;
            sc->i++;
        }
        return sc->i > start ? 0 : -EINVAL;
    }
    while (!at_end(sc)) {
        c = sc->s[sc->i];
        if (c == '"') {
            if (scan_string(sc, NULL) < 0)
                return -EINVAL;
            continue;
        }
        sc->i++;
        if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (--depth == 0)
                return 0;
        }
    }
    return -EINVAL;
}

/* After a member or element: past the ',' (returns 1) or the closing bracket
 * (returns 0). */
static int next_item(struct scan *sc, char close) {
    skip_ws(sc);
    if (peek(sc) == ',') {
        sc->i++;
        skip_ws(sc);
        return 1;
    }
    if (!at_end(sc) && peek(sc) == close) {
        sc->i++;
        return 0;
    }
    return -EINVAL;
}

/* At '{': find member key; leave sc at its value and *key_at at its quote. */
static int find_member(struct scan *sc, const char *key, size_t *key_at) {
    if (peek(sc) != '{' || at_end(sc))
        return -EINVAL;
    sc->i++;
    skip_ws(sc);
    if (peek(sc) == '}' && !at_end(sc))
        return -ENOENT;
    for (;;) {
        size_t at = sc->i;
        int r = scan_string(sc, key);
        if (r < 0)
            return r;
        skip_ws(sc);
        if (peek(sc) != ':' || at_end(sc))
            return -EINVAL;
        sc->i++;
        skip_ws(sc);
        if (r == 1) {
            *key_at = at;
            return 0;
        }
        if (skip_value(sc) < 0)
            return -EINVAL;
        r = next_item(sc, '}');
        if (r <= 0)
            return r < 0 ? r : -ENOENT;
    }
}

/* At '[': find element index; leave sc at its first character. */
static int find_element(struct scan *sc, size_t index) {
    if (peek(sc) != '[' || at_end(sc))
        return -EINVAL;
    sc->i++;
    skip_ws(sc);
    if (peek(sc) == ']' && !at_end(sc))
        return -ENOENT;
    for (size_t n = 0;; n++) {
        int r;
        if (n == index)
            return at_end(sc) ? -EINVAL : 0;
        if (skip_value(sc) < 0)
            return -EINVAL;
        r = next_item(sc, ']');
        if (r <= 0)
            return r < 0 ? r : -ENOENT;
    }
}

static void locate(const char *text, size_t offset, struct jsonpos *pos) {
    int line = 1, column = 1;

    for (size_t i = 0; i < offset; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '\n') {
            line++;
            column = 1;
        } else if ((c & 0xC0) != 0x80) {
            /* Continuation bytes belong to the character already counted. */
            column++;
        }
    }
    pos->offset = offset;
    pos->line = line;
    pos->column = column;
}

int jsonpos_find(const char *text, size_t len, const struct jsonpos_step *steps, size_t nsteps,
                 struct jsonpos *pos) {
    struct scan sc = {.s = text, .len = len, .i = 0};
    size_t best;
    int r = 0;

    skip_ws(&sc);
    best = sc.i;
    for (size_t d = 0; d < nsteps; d++) {
        if (steps[d].key != NULL) {
            size_t key_at = 0;
            r = find_member(&sc, steps[d].key, &key_at);
            if (r < 0)
                break;
            best = key_at;
        } else {
            r = find_element(&sc, steps[d].index);
            if (r < 0)
                break;
            best = sc.i;
        }
    }
    locate(text, best, pos);
    return r;
}

int jsonpos_find_path(const char *text, size_t len, const char *path, struct jsonpos *pos) {
    struct jsonpos_step steps[JSONPOS_MAX_DEPTH];
    /* Keys are copied out with their terminators: each needs one byte more
     * than the path spends on it, and each step takes at least one byte. */
    char keys[512 + JSONPOS_MAX_DEPTH];
    size_t n = 0, used = 0;
    const char *p = path;

    locate(text, 0, pos);
    if (strlen(path) >= 512)
        return -EINVAL;
    while (*p != '\0') {
        if (n == JSONPOS_MAX_DEPTH)
            return -EINVAL;
        if (n > 0 && *p == '.')
            p++;
        if (*p == '[') {
            size_t index = 0;
            p++;
            if (*p < '0' || *p > '9')
                return -EINVAL;
            while (*p >= '0' && *p <= '9') {
                if (index > ((size_t)-1 - 9) / 10)
                    return -EINVAL;
                index = index * 10 + (size_t)(*p++ - '0');
            }
            if (*p++ != ']')
                return -EINVAL;
            steps[n].key = NULL;
            steps[n++].index = index;
        } else {
            size_t klen = strcspn(p, ".[");
            if (klen == 0)
                return -EINVAL;
            memcpy(keys + used, p, klen);
            keys[used + klen] = '\0';
            steps[n].key = keys + used;
            steps[n++].index = 0;
            used += klen + 1;
            p += klen;
        }
        /* A step ends at the end, at '[', or at '.' followed by a key. */
        if (*p == '.' && (p[1] == '\0' || p[1] == '.' || p[1] == '['))
            return -EINVAL;
        if (*p != '\0' && *p != '.' && *p != '[')
            return -EINVAL;
    }
    return jsonpos_find(text, len, steps, n, pos);
}
