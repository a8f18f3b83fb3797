/*
 * escape: C-style escaping of raw instrument bytes for logs and error
 * messages. It owns no state and must not know any device or transport.
 */
#include "escape.h"

#include <stdio.h>
#include <string.h>

/* The escaped form of byte c in piece (5 bytes); returns its length. */
static size_t escape_byte(unsigned char c, char piece[5]) {
    switch (c) {
    case '\r':
        memcpy(piece, "\\r", 3);
        return 2;
    case '\n':
        memcpy(piece, "\\n", 3);
        return 2;
    case '\t':
        memcpy(piece, "\\t", 3);
        return 2;
    case '\\':
        memcpy(piece, "\\\\", 3);
        return 2;
    case '"':
        memcpy(piece, "\\\"", 3);
        return 2;
    default:
        if (c >= 0x20 && c < 0x7f) {
            piece[0] = (char)c;
            piece[1] = '\0';
            return 1;
        }
        snprintf(piece, 5, "\\x%02x", c);
        return 4;
    }
}

size_t escape_bytes(const char *in, size_t n, char *out, size_t outlen) {
    static const char dots[] = "...";
    size_t pos = 0, total = 0, reserve;
    char piece[5];

    if (outlen == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        total += escape_byte((unsigned char)in[i], piece);
    /* Room for the dots is kept only when the whole text cannot fit. */
    reserve = total + 1 > outlen ? sizeof(dots) - 1 : 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = escape_byte((unsigned char)in[i], piece);

        if (pos + len + reserve + 1 > outlen) {
            /* Earlier pieces left room for the dots, unless out is tiny. */
            for (size_t d = 0; d < sizeof(dots) - 1 && pos + 1 < outlen; d++)
                out[pos++] = '.';
            break;
        }
        memcpy(out + pos, piece, len);
        pos += len;
    }
    out[pos] = '\0';
    return pos;
}
