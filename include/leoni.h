/*
 * leoni: the serial protocol of the Leoni eol/mol 1xN fibre switch (57600
 * baud, CRLF line ends), spoken through a struct lineio. It owns the command
 * syntax and strict parsing of replies; it must not know about ports, the
 * loop, the wavemeter or the scheduler. Every call blocks for at most its
 * timeout and runs on the device's pool job.
 */
#ifndef WMD_LEONI_H
#define WMD_LEONI_H

#include <stddef.h>

#include "lineio.h"

/* A sanity bound on N in "1xN", not a property of any model: a larger N in
 * a type? reply is taken for garbage. */
#define LEONI_MAX_CHANNELS 256

/*
 * Pool thread. Discards waiting input, asks "type?" and parses "eol 1xN" or
 * "mol 1xN" into *nchannels (1..LEONI_MAX_CHANNELS). Returns 0, or
 * -ETIMEDOUT (no or a partial line within timeout_ms), -EPROTO (any other
 * reply; err quotes it escaped), -EIO (the port is gone).
 */
int leoni_hello(const struct lineio *io, int timeout_ms, int *nchannels, char *err, size_t errlen);

/*
 * Pool thread. Selects channel ch (1-based, 1..nchannels as leoni_hello()
 * reported) with "ch<n>" and confirms it with "ch?"; the whole exchange
 * finishes within timeout_ms. A confirmation naming another channel is
 * -EPROTO. Returns 0, -EINVAL (ch out of range; nothing is sent), or the
 * codes of leoni_hello(). On an error the switch may be anywhere.
 */
int leoni_select(const struct lineio *io, int nchannels, int ch, int timeout_ms, char *err,
                 size_t errlen);

/* Pool thread. Asks "ch?" and stores the channel (1..nchannels) in *ch;
 * codes as leoni_hello(). */
int leoni_position(const struct lineio *io, int nchannels, int timeout_ms, int *ch, char *err,
                   size_t errlen);

/*
 * Pure, exported for tests. Parse one reply line (n bytes, ending in CRLF):
 * leoni_parse_channel takes "<n>" with 1 <= n <= nchannels; leoni_parse_type
 * takes "eol 1xN" or "mol 1xN". Anything else is -EPROTO with err quoting
 * the line escaped; the output is written only on success.
 */
int leoni_parse_channel(const char *line, size_t n, int nchannels, int *ch, char *err,
                        size_t errlen);
int leoni_parse_type(const char *line, size_t n, int *nchannels, char *err, size_t errlen);

#endif
