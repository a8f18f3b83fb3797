/*
 * escape: bytes from an instrument as one printable, quotable line for logs
 * and error messages. A pure module: no state, no I/O, any thread.
 */
#ifndef WMD_ESCAPE_H
#define WMD_ESCAPE_H

#include <stddef.h>

/*
 * Write the n bytes of in to out as C-style escaped text: \r \n \t \\ \"
 * and \xNN for other bytes outside 0x20..0x7e. When out (outlen bytes) is
 * too short for all of it, the text is cut and ends in "...". out is always
 * NUL-terminated when outlen > 0. Returns strlen(out) (0 when outlen is 0).
 * 4 * n + 1 bytes always hold the whole text.
 */
size_t escape_bytes(const char *in, size_t n, char *out, size_t outlen);

#endif
