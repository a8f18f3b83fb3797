/*
 * test_serial_line: the pure part of the generic serial-line DAC actuator:
 * template formatting (placeholders, negative volts and codes, rounding,
 * clamping, inverted scales), bad templates, the code/volts inverse and
 * reply matching, each as a table of labelled rows.
 */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serial_line.h"

/* The default box: 16-bit DAC over +-10 V. */
#define BIPOLAR16                                                                                  \
    { 0, 65535, -10.0, 10.0 }
/* A 12-bit DAC behind an inverting amplifier: code 0 is +10 V. */
#define INVERTED12                                                                                 \
    { 0, 4095, 10.0, -10.0 }
/* Codes that equal volts: rounding is easy to read. */
#define UNIT10                                                                                     \
    { 0, 10, 0.0, 10.0 }
/* A signed 16-bit DAC. */
#define SIGNED16                                                                                   \
    { -32768, 32767, -10.0, 10.0 }

static const struct {
    const char *label, *tmpl, *term;
    int channel;
    struct serial_line_scale sc;
    double volts;
    size_t cap;
    int rc;
    const char *want; /* the command, or a part of why on error */
} fmt_rows[] = {
    {"default at 0 V", "SET {channel} {code}", "\n", 3, BIPOLAR16, 0.0, 64, 0, "SET 3 32768\n"},
    {"default at -10 V", "SET {channel} {code}", "\n", 3, BIPOLAR16, -10.0, 64, 0, "SET 3 0\n"},
    {"default at +10 V", "SET {channel} {code}", "\n", 3, BIPOLAR16, 10.0, 64, 0, "SET 3 65535\n"},
    {"negative volts", "V{channel}={volts}", "\r\n", 1, BIPOLAR16, -2.5, 64, 0, "V1=-2.5000\r\n"},
    {"volts rounded to 4 places", "{volts}", "", 0, BIPOLAR16, 1.234567, 64, 0, "1.2346"},
    {"no negative zero", "{volts}", "", 0, BIPOLAR16, -0.00001, 64, 0, "0.0000"},
    {"small negative kept", "{volts}", "", 0, BIPOLAR16, -0.0001, 64, 0, "-0.0001"},
    {"clamp above", "{code}", "", 0, BIPOLAR16, 12.0, 64, 0, "65535"},
    {"clamp below", "{code}", "", 0, BIPOLAR16, -12.0, 64, 0, "0"},
    {"round down", "{code}", "", 0, UNIT10, 2.49, 64, 0, "2"},
    {"round half up", "{code}", "", 0, UNIT10, 2.5, 64, 0, "3"},
    {"round up", "{code}", "", 0, UNIT10, 2.51, 64, 0, "3"},
    {"inverted +10 V", "{code}", "", 0, INVERTED12, 10.0, 64, 0, "0"},
    {"inverted -10 V", "{code}", "", 0, INVERTED12, -10.0, 64, 0, "4095"},
    {"inverted 0 V", "{code}", "", 0, INVERTED12, 0.0, 64, 0, "2048"},
    {"signed code", "{code}", "", 0, SIGNED16, -10.0, 64, 0, "-32768"},
    {"signed code half away from zero", "{code}", "", 0, SIGNED16, 0.0, 64, 0, "-1"},
    {"placeholder twice", "S {code},{code};", "\n", 0, UNIT10, 7.0, 64, 0, "S 7,7;\n"},
    {"literal braces", "{{{channel}} }", "\n", 12, UNIT10, 0.0, 64, 0, "{12} }\n"},
    {"template verbatim", "\t$ \\{channel}\r", "\r\n", 2, UNIT10, 0.0, 64, 0, "\t$ \\2\r\r\n"},
    {"no terminator", "{code}", "", 0, UNIT10, 4.0, 64, 0, "4"},
    {"exact fit", "SET {channel} {code}", "\n", 3, BIPOLAR16, 0.0, 13, 0, "SET 3 32768\n"},
    {"one byte short", "SET {channel} {code}", "\n", 3, BIPOLAR16, 0.0, 12, -EOVERFLOW,
     "longer than 11 bytes"},
    {"terminator does not fit", "{code}", "\r\n", 0, UNIT10, 0.0, 3, -EOVERFLOW, "longer"},
    {"NaN volts", "{code}", "\n", 0, UNIT10, (double)NAN, 64, -EINVAL, "not a number"},
    {"infinite volts", "{volts}", "\n", 0, UNIT10, (double)INFINITY, 64, -EINVAL, "not a number"},
    {"bad template", "SET {chan}", "\n", 0, UNIT10, 0.0, 64, -EINVAL, "unknown placeholder"},
};

START_TEST(test_format) {
    char out[64], why[256] = "";
    size_t len = 99;
    int rc;

    memset(out, 'X', sizeof(out));
    rc = serial_line_format(fmt_rows[_i].tmpl, fmt_rows[_i].term, fmt_rows[_i].channel,
                            &fmt_rows[_i].sc, fmt_rows[_i].volts, out, fmt_rows[_i].cap, &len, why,
                            sizeof(why));
    ck_assert_msg(rc == fmt_rows[_i].rc, "%s: rc %d (%s)", fmt_rows[_i].label, rc, why);
    if (rc == 0) {
        ck_assert_msg(strcmp(out, fmt_rows[_i].want) == 0, "%s: got \"%s\"", fmt_rows[_i].label,
                      out);
        ck_assert_uint_eq(len, strlen(out));
    } else {
        ck_assert_msg(strstr(why, fmt_rows[_i].want) != NULL, "%s: why \"%s\"", fmt_rows[_i].label,
                      why);
        ck_assert_msg(out[0] == '\0' && len == 0, "%s: output left on error", fmt_rows[_i].label);
    }
}
END_TEST

static const struct {
    const char *label, *tmpl;
    int rc;
    const char *why_has;
} tmpl_rows[] = {
    {"default", "SET {channel} {code}", 0, NULL},
    {"volts", "V{channel} {volts}", 0, NULL},
    {"no placeholder", "PING", 0, NULL},
    {"literal brace", "{{", 0, NULL},
    {"closing brace alone", "}", 0, NULL},
    {"empty", "", -EINVAL, "empty command template"},
    {"unknown name", "SET {chan} {code}", -EINVAL, "unknown placeholder \"{chan}\" at byte 4"},
    {"case matters", "{CODE}", -EINVAL, "unknown placeholder \"{CODE}\" at byte 0"},
    {"empty name", "x{}", -EINVAL, "unknown placeholder \"{}\" at byte 1"},
    {"lone brace at end", "SET {", -EINVAL, "'{' at byte 4 opens no placeholder"},
    {"unterminated", "SET {code", -EINVAL, "'{' at byte 4 opens no placeholder"},
    {"space inside", "{ code}", -EINVAL, "'{' at byte 0 opens no placeholder"},
    {"odd braces", "{{{", -EINVAL, "'{' at byte 2 opens no placeholder"},
};

START_TEST(test_template) {
    char why[256] = "";
    int rc = serial_line_check_template(tmpl_rows[_i].tmpl, why, sizeof(why));

    ck_assert_msg(rc == tmpl_rows[_i].rc, "%s: rc %d (%s)", tmpl_rows[_i].label, rc, why);
    if (tmpl_rows[_i].why_has != NULL)
        ck_assert_msg(strstr(why, tmpl_rows[_i].why_has) != NULL, "%s: why \"%s\"",
                      tmpl_rows[_i].label, why);
}
END_TEST

/* Every code maps back to volts that map to the same code, and volts map
 * to a code within half a step. */
START_TEST(test_inverse) {
    static const struct serial_line_scale scales[] = {BIPOLAR16, INVERTED12, UNIT10, SIGNED16};
    const struct serial_line_scale *sc = &scales[_i];
    double step =
        fabs(sc->volts_at_code_max - sc->volts_at_code_min) / ((double)sc->code_max - sc->code_min);

    for (int code = sc->code_min; code <= sc->code_max; code += 7)
        ck_assert_int_eq(serial_line_code(sc, serial_line_volts(sc, code)), code);
    ck_assert_double_eq_tol(serial_line_volts(sc, sc->code_min), sc->volts_at_code_min, 1e-12);
    ck_assert_double_eq_tol(serial_line_volts(sc, sc->code_max), sc->volts_at_code_max, 1e-12);
    for (double v = -9.99; v < 9.99; v += 0.37) {
        int code = serial_line_code(sc, v);

        if (v < fmin(sc->volts_at_code_min, sc->volts_at_code_max) ||
            v > fmax(sc->volts_at_code_min, sc->volts_at_code_max))
            continue;
        ck_assert_msg(fabs(serial_line_volts(sc, code) - v) <= step / 2 + 1e-9,
                      "scale %d: %g V -> code %d -> %g V", _i, v, code,
                      serial_line_volts(sc, code));
    }
    ck_assert_int_eq(serial_line_code(sc, (double)NAN), sc->code_min);
    /* Far outside the range: clamped to the code of the nearer end. */
    ck_assert_int_eq(serial_line_code(sc, 1e300),
                     sc->volts_at_code_max > sc->volts_at_code_min ? sc->code_max : sc->code_min);
    ck_assert_int_eq(serial_line_code(sc, -1e300),
                     sc->volts_at_code_max > sc->volts_at_code_min ? sc->code_min : sc->code_max);
}
END_TEST

static const struct {
    const char *label, *expected, *term, *got;
    size_t n;
    bool ok;
} reply_rows[] = {
    {"exact", "OK", "\n", "OK\n", 3, true},
    {"exact CRLF", "OK", "\r\n", "OK\r\n", 4, true},
    {"CR before LF not expected", "OK", "\n", "OK\r\n", 4, false},
    {"LF alone when CRLF expected", "OK", "\r\n", "OK\n", 3, false},
    {"no terminator", "OK", "\n", "OK", 2, false},
    {"trailing space", "OK", "\n", "OK \n", 4, false},
    {"case", "OK", "\n", "ok\n", 3, false},
    {"longer", "OK", "\n", "OKAY\n", 5, false},
    {"prefix only", "OK", "\n", "O\n", 2, false},
    {"error", "OK", "\n", "ERR 3\n", 6, false},
    {"NUL inside", "OK", "\n", "O\0K\n", 4, false},
    {"empty line expected", "", "\n", "\n", 1, true},
    {"empty line got", "OK", "\n", "\n", 1, false},
};

START_TEST(test_reply) {
    bool ok = serial_line_reply_ok(reply_rows[_i].expected, reply_rows[_i].term, reply_rows[_i].got,
                                   reply_rows[_i].n);

    ck_assert_msg(ok == reply_rows[_i].ok, "%s", reply_rows[_i].label);
}
END_TEST

#define NROWS(a) (int)(sizeof(a) / sizeof((a)[0]))

int main(void) {
    Suite *s = suite_create("serial_line");
    TCase *tc = tcase_create("serial_line");
    SRunner *sr;
    int failed;

    tcase_add_loop_test(tc, test_format, 0, NROWS(fmt_rows));
    tcase_add_loop_test(tc, test_template, 0, NROWS(tmpl_rows));
    tcase_add_loop_test(tc, test_inverse, 0, 4);
    tcase_add_loop_test(tc, test_reply, 0, NROWS(reply_rows));
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
