/*
 * numfmt: reals as 15-significant-digit JSON text without printf on the
 * common path. It owns no state.
 */
#include "numfmt.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* 10^0 .. 10^18, exact in a long double (5^18 < 2^64). */
static const long double pow10l_table[] = {
    1e0L,  1e1L,  1e2L,  1e3L,  1e4L,  1e5L,  1e6L,  1e7L,  1e8L,  1e9L,
    1e10L, 1e11L, 1e12L, 1e13L, 1e14L, 1e15L, 1e16L, 1e17L, 1e18L,
};

/* The jansson way: ".0" when the text would read as an integer; an
 * exponent without '+' or leading zeros. */
static size_t slow(char *buf, double x) {
    char *e;
    int n = snprintf(buf, NUMFMT_REAL_MAX, "%.15g", x);

    /* 15 digits round a double near DBL_MAX past it (1.79769313486232e+308
     * reads back as an overflow): 17, as the answers do. */
    if (strstr(buf, "e+308"))
        n = snprintf(buf, NUMFMT_REAL_MAX, "%.17g", x);

    if ((e = strchr(buf, 'e')) != NULL) {
        char *from = e + 1, *to = e + 1;
        if (*from == '+')
            from++;
        else if (*from == '-')
            from++, to++;
        while (*from == '0' && from[1] != '\0')
            from++;
        memmove(to, from, strlen(from) + 1);
        return strlen(buf);
    }
    if (strchr(buf, '.') == NULL) {
        memcpy(buf + n, ".0", 3);
        n += 2;
    }
    return (size_t)n;
}

size_t numfmt_real(char *buf, double x) {
    double ax = fabs(x);
    char digits[16], *p = buf;

    /* %g writes a fixed-point number for decimal exponents -4 to 14. */
    if (!(ax >= 1e-4 && ax < 1e15))
        return slow(buf, x);
    int e = (int)floor(log10(ax));
    if (e < -4)
        e = -4;
    if (e > 14)
        e = 14;
    /* m: the 15 significant digits, ax * 10^(14 - e) rounded. log10 may
     * be one off next to a power of ten; m then has 14 or 16 digits. */
    uint64_t m;
    for (;;) {
        long double scaled = (long double)ax * pow10l_table[14 - e];
        /* A product that is not exactly halfway is within half a unit of
         * its true value, so it rounds the same way; exactly halfway may be
         * a true tie (printf rounds those to even) or a rounded product:
         * printf decides. */
        if (scaled - floorl(scaled) == 0.5L)
            return slow(buf, x);
        m = (uint64_t)llroundl(scaled);
        if (m >= 1000000000000000ull && e < 14) {
            e++;
            continue;
        }
        if (m < 100000000000000ull && e > -4) {
            e--;
            continue;
        }
        break;
    }
    if (m >= 1000000000000000ull || m < 100000000000000ull)
        return slow(buf, x); /* rounded into the next decade at an edge */
    for (int i = 14; i >= 0; i--, m /= 10)
        digits[i] = (char)('0' + m % 10);
    /* Trailing zeros of the fraction go, as %g does. */
    int last = 14;
    while (last > e && last > 0 && digits[last] == '0')
        last--;
    if (x < 0)
        *p++ = '-';
    if (e >= 0) {
        memcpy(p, digits, (size_t)e + 1);
        p += e + 1;
        if (last > e) {
            *p++ = '.';
            memcpy(p, digits + e + 1, (size_t)(last - e));
            p += last - e;
        } else {
            memcpy(p, ".0", 2); /* reads as a real, as jansson writes it */
            p += 2;
        }
    } else {
        *p++ = '0';
        *p++ = '.';
        for (int z = -1; z > e; z--)
            *p++ = '0';
        memcpy(p, digits, (size_t)last + 1);
        p += last + 1;
    }
    *p = '\0';
    return (size_t)(p - buf);
}
