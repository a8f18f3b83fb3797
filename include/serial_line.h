/*
 * serial_line: the pure part of the generic serial-line DAC actuator (the
 * Arduino and DAC boxes labs build, each with its own one-line protocol):
 * command templates with placeholders, the linear volts-to-code scale and
 * reply matching. No I/O, no state, any thread; the port side is
 * act_serial_line.c.
 */
#ifndef WMD_SERIAL_LINE_H
#define WMD_SERIAL_LINE_H

#include <stdbool.h>
#include <stddef.h>

/*
 * The linear map between output volts and the box's integer DAC codes:
 * volts_at_code_min maps to code_min and volts_at_code_max to code_max.
 * code_min < code_max; the volts must differ and may be in either order (an
 * inverting amplifier after the DAC). A plain value owned by the caller.
 */
struct serial_line_scale {
    int code_min, code_max;
    double volts_at_code_min, volts_at_code_max;
};

/*
 * Pure. Checks a command template: literal bytes, used as they are (JSON has
 * already turned \r, \n, \t and \\ into their bytes), and the placeholders
 * {channel}, {code} and {volts}; "{{" is a literal '{', and '}' is always
 * literal. Returns 0, or -EINVAL with why naming an unknown placeholder or a
 * '{' that opens none (and its byte offset), or an empty template.
 */
int serial_line_check_template(const char *tmpl, char *why, size_t whylen);

/*
 * Pure. The code for volts: mapped linearly through sc, rounded to the
 * nearest integer (halves away from zero) and clamped to
 * [code_min, code_max]. A NaN gives code_min; callers refuse non-finite
 * volts before they get here.
 */
int serial_line_code(const struct serial_line_scale *sc, double volts);

/* Pure. The inverse: the volts code stands for (unclamped). */
double serial_line_volts(const struct serial_line_scale *sc, int code);

/*
 * Pure. Builds one command into out (cap bytes): tmpl with {channel} as a
 * decimal integer, {code} as serial_line_code(sc, volts) in decimal (with a
 * '-' when negative), {volts} as printf "%.4f" (never "-0.0000"), followed by
 * terminator (used as it is; "" for none). out is NUL-terminated and *len is
 * its length. Returns 0, -EINVAL (bad template, or volts not finite: out is
 * ""), or -EOVERFLOW (the command and terminator do not fit in cap - 1 bytes),
 * with why saying which.
 */
int serial_line_format(const char *tmpl, const char *terminator, int channel,
                       const struct serial_line_scale *sc, double volts, char *out, size_t cap,
                       size_t *len, char *why, size_t whylen);

/*
 * Pure. Whether the n bytes of got (as read up to the last byte of
 * terminator; NULs allowed) are exactly expected followed by the whole
 * terminator. No prefix, case or whitespace leniency: a box that answers
 * something else is reporting something we do not understand.
 */
bool serial_line_reply_ok(const char *expected, const char *terminator, const char *got, size_t n);

#endif
