/*
 * serial_line: command templates, the volts-to-code scale and reply matching
 * of the generic serial-line DAC actuator. Pure: no I/O, no state, any
 * thread. It must not know about ports, the config loader or the lock.
 */
#include "serial_line.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

enum placeholder { PH_NONE, PH_CHANNEL, PH_CODE, PH_VOLTS, PH_LITERAL_BRACE };

static const struct {
    const char *name;
    enum placeholder ph;
} placeholders[] = {
    {"{channel}", PH_CHANNEL},
    {"{code}", PH_CODE},
    {"{volts}", PH_VOLTS},
    {"{{", PH_LITERAL_BRACE},
};

/* What starts at p (which points at a '{'), and its length in *len. */
static enum placeholder placeholder_at(const char *p, size_t *len) {
    for (size_t i = 0; i < sizeof(placeholders) / sizeof(placeholders[0]); i++) {
        size_t k = strlen(placeholders[i].name);

        if (strncmp(p, placeholders[i].name, k) == 0) {
            *len = k;
            return placeholders[i].ph;
        }
    }
    return PH_NONE;
}

int serial_line_check_template(const char *tmpl, char *why, size_t whylen) {
    if (tmpl[0] == '\0') {
        snprintf(why, whylen, "empty command template");
        return -EINVAL;
    }
    for (const char *p = tmpl; *p != '\0';) {
        size_t k = 1, name = 0;

        if (*p != '{') {
            p++;
            continue;
        }
        if (placeholder_at(p, &k) != PH_NONE) {
            p += k;
            continue;
        }
        /* A '{' followed by a name and '}' is a placeholder we do not know;
         * anything else is a '{' that opens none. */
        while ((p[1 + name] >= 'a' && p[1 + name] <= 'z') || p[1 + name] == '_' ||
               (p[1 + name] >= 'A' && p[1 + name] <= 'Z') ||
               (p[1 + name] >= '0' && p[1 + name] <= '9'))
            name++;
        if (p[1 + name] == '}')
            snprintf(why, whylen,
                     "unknown placeholder \"%.*s\" at byte %zu (known: {channel}, {code}, "
                     "{volts}; {{ is a literal '{')",
                     (int)(name + 2), p, (size_t)(p - tmpl));
        else
            snprintf(why, whylen,
                     "'{' at byte %zu opens no placeholder (known: {channel}, {code}, {volts}; "
                     "write {{ for a literal '{')",
                     (size_t)(p - tmpl));
        return -EINVAL;
    }
    return 0;
}

int serial_line_code(const struct serial_line_scale *sc, double volts) {
    double lo = sc->code_min, hi = sc->code_max;
    double x = lo + (volts - sc->volts_at_code_min) * (hi - lo) /
                        (sc->volts_at_code_max - sc->volts_at_code_min);

    /* Clamped before rounding so the conversion to int is always defined;
     * the negated test sends a NaN to code_min. */
    if (!(x > lo))
        return sc->code_min;
    if (x >= hi)
        return sc->code_max;
    return (int)round(x);
}

double serial_line_volts(const struct serial_line_scale *sc, int code) {
    return sc->volts_at_code_min + ((double)code - sc->code_min) *
                                       (sc->volts_at_code_max - sc->volts_at_code_min) /
                                       ((double)sc->code_max - sc->code_min);
}

/* Appends n bytes of s to out (cap bytes, *len used); false if they do not
 * fit with the NUL. */
static bool append(char *out, size_t cap, size_t *len, const char *s, size_t n) {
    if (n >= cap - *len)
        return false;
    memcpy(out + *len, s, n);
    *len += n;
    out[*len] = '\0';
    return true;
}

int serial_line_format(const char *tmpl, const char *terminator, int channel,
                       const struct serial_line_scale *sc, double volts, char *out, size_t cap,
                       size_t *len, char *why, size_t whylen) {
    char num[64];
    int rc;

    *len = 0;
    if (cap == 0) {
        snprintf(why, whylen, "no room for the command");
        return -EOVERFLOW;
    }
    out[0] = '\0';
    if ((rc = serial_line_check_template(tmpl, why, whylen)) < 0)
        return rc;
    if (!isfinite(volts)) {
        snprintf(why, whylen, "output %g V is not a number", volts);
        return -EINVAL;
    }
    /* An output a hair below zero would print as "-0.0000". */
    if (fabs(volts) < 0.00005)
        volts = 0.0;
    for (const char *p = tmpl; *p != '\0';) {
        const char *piece = p;
        size_t k = 1, n = 1;

        if (*p == '{') {
            switch (placeholder_at(p, &k)) {
            case PH_CHANNEL:
                n = (size_t)snprintf(num, sizeof(num), "%d", channel);
                piece = num;
                break;
            case PH_CODE:
                n = (size_t)snprintf(num, sizeof(num), "%d", serial_line_code(sc, volts));
                piece = num;
                break;
            case PH_VOLTS:
                n = (size_t)snprintf(num, sizeof(num), "%.4f", volts);
                piece = num;
                break;
            case PH_LITERAL_BRACE:
            case PH_NONE: /* checked above: cannot happen */
                break;
            }
        }
        if (!append(out, cap, len, piece, n))
            goto overflow;
        p += k;
    }
    if (!append(out, cap, len, terminator, strlen(terminator)))
        goto overflow;
    return 0;

overflow:
    snprintf(why, whylen, "command longer than %zu bytes", cap - 1);
    out[0] = '\0';
    *len = 0;
    return -EOVERFLOW;
}

bool serial_line_reply_ok(const char *expected, const char *terminator, const char *got, size_t n) {
    size_t e = strlen(expected), t = strlen(terminator);

    return n == e + t && memcmp(got, expected, e) == 0 && memcmp(got + e, terminator, t) == 0;
}
