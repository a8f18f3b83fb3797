/*
 * mdt693b: the serial protocol of the Thorlabs MDT693B/694B piezo controller
 * (3 or 1 axes, 115200 8N1, commands end with CR), spoken through a struct
 * lineio. It owns the command syntax and the parsing of replies; it must not
 * know about ports, the loop, lasers or the controller. Every call blocks for
 * at most its timeout and runs on the device's pool job.
 */
#ifndef WMD_MDT693B_H
#define WMD_MDT693B_H

#include <stdbool.h>
#include <stddef.h>

#include "lineio.h"

/* The voltage range any MDT693B/694B output can have, whatever its limit
 * switch says: a reply outside it is garbage, not a reading. */
#define MDT693B_MIN_V 0.0
#define MDT693B_MAX_V 150.0

/* What mdt693b_hello() learned about the device; a plain value owned by the
 * caller, read (never written) by the other calls. */
struct mdt693b_info {
    bool echo;       /* the device sends each command back before its reply */
    char prompt;     /* '>' (firmware >= 1.09) or '*' (older firmware) */
    double vlimit_v; /* the front-panel output limit: 75, 100 or 150 V */
};

/*
 * Pool thread. Discards waiting input, sends "vlimit?", and learns from the
 * reply whether echo is on, which prompt the firmware uses and the voltage
 * limit. Returns 0 and fills *out, or a negative errno-style code with err
 * naming the problem (and the bytes received, escaped): -ETIMEDOUT (no or a
 * partial reply within timeout_ms), -EPROTO (a reply that is not a
 * well-formed voltage limit), -EIO (the port is gone).
 */
int mdt693b_hello(const struct lineio *io, int timeout_ms, struct mdt693b_info *out, char *err,
                  size_t errlen);

/*
 * Pool thread. Sets output axis ('x', 'y' or 'z') to volts, then reads the
 * output back (the measured output, which can differ from the set value by
 * about 1 V) into *readback_v. The whole exchange finishes within
 * timeout_ms. Returns 0, -EINVAL (bad axis, or volts not finite or outside
 * 0..info->vlimit_v; nothing is sent), or the codes of mdt693b_hello(). On
 * an error after the set command went out, the output may have moved.
 */
int mdt693b_set(const struct lineio *io, const struct mdt693b_info *info, char axis, double volts,
                int timeout_ms, double *readback_v, char *err, size_t errlen);

/* Pool thread. Reads axis's output voltage back; codes as mdt693b_set(). */
int mdt693b_get(const struct lineio *io, const struct mdt693b_info *info, char axis, int timeout_ms,
                double *volts, char *err, size_t errlen);

/*
 * Pure, exported for tests. Checks one complete reply (n bytes, may hold
 * NULs) to command cmd (without its CR), given the echo and prompt the
 * device uses. want_value: the reply must carry one "[ number ]" in volts,
 * stored in *value_v; otherwise it must be the bare acknowledgement. Anything
 * else, including CMD_NOT_DEFINED, '!', a missing prompt, a missing or wrong
 * echo, a non-decimal number or one outside MDT693B_MIN_V..MDT693B_MAX_V, is
 * -EPROTO with err quoting the reply escaped. Never writes *value_v on error.
 */
int mdt693b_parse_reply(const char *cmd, const char *reply, size_t n, bool echo, char prompt,
                        bool want_value, double *value_v, char *err, size_t errlen);

#endif
