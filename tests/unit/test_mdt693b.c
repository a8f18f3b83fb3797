/*
 * test_mdt693b: the MDT693B/694B protocol against recorded transcripts
 * (the .log files in tests/fixtures/mdt693b) through a scripted lineio, and the reply
 * parser against a table of good and bad replies.
 */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lineio.h"
#include "mdt693b.h"
#include "script_lineio.h"

#define FIXTURE(name) WMD_SOURCE_DIR "/tests/fixtures/mdt693b/" name

enum op { OP_NONE, OP_SET, OP_GET };

/* Every row runs mdt693b_hello, then op; err_has must appear in the error
 * of the step that fails. */
static const struct {
    const char *label, *fixture;
    int hello_rc;
    bool echo;
    char prompt;
    double vlimit_v;
    enum op op;
    char axis;
    double volts;
    int op_rc;
    double value_v;
    const char *err_has;
} rows[] = {
    {"fw 1.09 echo on: set and read back", FIXTURE("fw109_echo_on.log"), 0, true, '>', 100, OP_SET,
     'x', 24.68, 0, 24.8, NULL},
    {"fw 1.09 echo off: set and read back", FIXTURE("fw109_echo_off.log"), 0, false, '>', 150,
     OP_SET, 'y', 100.0, 0, 99.6, NULL},
    {"fw 1.05 echo on: '*' prompts, set and read back", FIXTURE("fw105_echo_on.log"), 0, true, '*',
     100, OP_SET, 'x', 24.68, 0, 24.8, NULL},
    {"fw 1.05 echo off: read back", FIXTURE("fw105_echo_off.log"), 0, false, '*', 75, OP_GET, 'z',
     0, 0, 12.3, NULL},
    {"fw 1.09 unknown command", FIXTURE("fw109_unknown_cmd.log"), 0, true, '>', 150, OP_GET, 'y', 0,
     -EPROTO, 0, "CMD_NOT_DEFINED"},
    {"fw 1.05 unknown command", FIXTURE("fw105_unknown_cmd.log"), 0, true, '*', 150, OP_GET, 'y', 0,
     -EPROTO, 0, "not understood ('!')"},
    {"garbage in the value", FIXTURE("fw109_garbage.log"), 0, true, '>', 100, OP_GET, 'x', 0,
     -EPROTO, 0, "not a voltage in the reply to \"xvoltage?\": \"xvoltage?\\r[  2\\xb7.8]\\r>\""},
    {"value out of 0..150 V", FIXTURE("fw109_out_of_range.log"), 0, true, '>', 150, OP_GET, 'z', 0,
     -EPROTO, 0, "voltage 151.2 V out of 0..150 V"},
    {"truncated in the number", FIXTURE("fw109_truncated.log"), 0, true, '>', 100, OP_GET, 'x', 0,
     -ETIMEDOUT, 0, "no complete reply to \"xvoltage?\" in time (got \"xvoltage?\\r[  24\")"},
    {"no prompt after the value", FIXTURE("fw109_no_prompt.log"), 0, true, '>', 100, OP_GET, 'x', 0,
     -ETIMEDOUT, 0, "(got \"xvoltage?\\r[  24.8]\\r\")"},
    {"late reply before the echo", FIXTURE("fw109_late_reply.log"), 0, true, '>', 100, OP_GET, 'x',
     0, -EPROTO, 0, "does not start with the echo of \"xvoltage?\""},
    {"late reply with another echo", FIXTURE("fw109_late_other_echo.log"), 0, true, '>', 100,
     OP_GET, 'x', 0, -EPROTO, 0, "\"vlimit?\\r[ 100]\\r>\""},
    {"late read-back where the set's prompt belongs", FIXTURE("fw109_late_reply_echo_off.log"), 0,
     false, '>', 100, OP_SET, 'x', 30.0, -EPROTO, 0,
     "unexpected bytes in the reply to \"xvoltage=30.00\": \"[  24.8]\\r>\""},
    {"stale input flushed", FIXTURE("fw109_stale_flushed.log"), 0, true, '>', 100, OP_GET, 'x', 0,
     0, 30.1, NULL},
    {"voltage limit not 75/100/150", FIXTURE("fw109_bad_vlimit.log"), -EPROTO, false, '>', 0,
     OP_NONE, 0, 0, 0, 0, "voltage limit 120 V is not 75, 100 or 150 V"},
    {"set above the limit", FIXTURE("fw109_set_over_limit.log"), 0, false, '>', 75, OP_SET, 'x',
     80.0, -EINVAL, 0, "80 V is outside 0..75 V"},
    {"set NaN", FIXTURE("fw109_set_over_limit.log"), 0, false, '>', 75, OP_SET, 'x', (double)NAN,
     -EINVAL, 0, "outside 0..75 V"},
    {"set on a bad axis", FIXTURE("fw109_set_over_limit.log"), 0, false, '>', 75, OP_SET, 'w', 1.0,
     -EINVAL, 0, "axis must be x, y or z"},
    {"no reply to the hello", FIXTURE("no_reply.log"), -ETIMEDOUT, false, '>', 0, OP_NONE, 0, 0, 0,
     0, "no complete reply to \"vlimit?\" in time (got \"\")"},
};

START_TEST(test_transcript) {
    static struct script_lineio sc; /* large: keep it off the stack */
    struct lineio io;
    struct mdt693b_info info;
    char err[512] = "";
    double v = -1.0;
    int rc;

    script_lineio_load(&sc, rows[_i].fixture);
    io = script_lineio_io(&sc);
    rc = mdt693b_hello(&io, 200, &info, err, sizeof(err));
    ck_assert_msg(sc.mismatch[0] == '\0', "%s: %s", rows[_i].label, sc.mismatch);
    ck_assert_msg(rc == rows[_i].hello_rc, "%s: hello returned %d (%s)", rows[_i].label, rc, err);
    if (rc < 0) {
        ck_assert_msg(strstr(err, rows[_i].err_has), "%s: error \"%s\" lacks \"%s\"",
                      rows[_i].label, err, rows[_i].err_has);
        return;
    }
    ck_assert_msg(info.echo == rows[_i].echo, "%s: echo", rows[_i].label);
    ck_assert_msg(info.prompt == rows[_i].prompt, "%s: prompt '%c'", rows[_i].label, info.prompt);
    ck_assert_msg(info.vlimit_v == rows[_i].vlimit_v, "%s: vlimit %g", rows[_i].label,
                  info.vlimit_v);
    if (rows[_i].op == OP_SET)
        rc = mdt693b_set(&io, &info, rows[_i].axis, rows[_i].volts, 200, &v, err, sizeof(err));
    else if (rows[_i].op == OP_GET)
        rc = mdt693b_get(&io, &info, rows[_i].axis, 200, &v, err, sizeof(err));
    ck_assert_msg(sc.mismatch[0] == '\0', "%s: %s", rows[_i].label, sc.mismatch);
    ck_assert_msg(rc == rows[_i].op_rc, "%s: returned %d (%s)", rows[_i].label, rc, err);
    if (rc < 0) {
        ck_assert_msg(strstr(err, rows[_i].err_has), "%s: error \"%s\" lacks \"%s\"",
                      rows[_i].label, err, rows[_i].err_has);
        ck_assert_msg(v == -1.0, "%s: wrote a value on error", rows[_i].label);
    } else if (rows[_i].op != OP_NONE)
        ck_assert_msg(v == rows[_i].value_v, "%s: read back %g", rows[_i].label, v);
    if (rc == 0 || rc == -EINVAL)
        ck_assert_msg(script_lineio_done(&sc), "%s: transcript not used up", rows[_i].label);
}
END_TEST

/* The parser alone: cmd, the reply, the style, and the outcome. */
static const struct {
    const char *label, *cmd, *reply;
    bool echo;
    char prompt;
    bool want_value;
    int rc;
    double value_v;
    const char *err_has;
} parse_rows[] = {
    {"value, echo, '>'", "xvoltage?", "xvoltage?\r[  24.8]\r>", true, '>', true, 0, 24.8, NULL},
    {"value, echo CRLF", "xvoltage?", "xvoltage?\r\n[  24.8]\r\n>", true, '>', true, 0, 24.8, NULL},
    {"value, no echo", "xvoltage?", "[   0.0]\r>", false, '>', true, 0, 0.0, NULL},
    {"value without spaces", "xvoltage?", "[150]>", false, '>', true, 0, 150.0, NULL},
    {"integer limit", "vlimit?", "[ 100]\r*", false, '*', true, 0, 100.0, NULL},
    {"old firmware prompt before value", "vlimit?", "vlimit?\r*[ 100]\r*", true, '*', true, 0,
     100.0, NULL},
    {"ack, echo", "xvoltage=1.00", "xvoltage=1.00\r>", true, '>', false, 0, 0, NULL},
    {"ack, no echo", "xvoltage=1.00", ">", false, '>', false, 0, 0, NULL},
    {"nan", "xvoltage?", "[ nan]\r>", false, '>', true, -EPROTO, 0, "not a voltage"},
    {"inf", "xvoltage?", "[ inf]\r>", false, '>', true, -EPROTO, 0, "not a voltage"},
    {"exponent", "xvoltage?", "[ 2e1]\r>", false, '>', true, -EPROTO, 0, "not a voltage"},
    {"hex float", "xvoltage?", "[0x10]\r>", false, '>', true, -EPROTO, 0, "not a voltage"},
    {"empty brackets", "xvoltage?", "[   ]\r>", false, '>', true, -EPROTO, 0, "not a voltage"},
    {"lone dot", "xvoltage?", "[  .]\r>", false, '>', true, -EPROTO, 0, "not a voltage"},
    {"two numbers", "xvoltage?", "[ 1.0 2.0]\r>", false, '>', true, -EPROTO, 0, "not a voltage"},
    {"plus sign", "xvoltage?", "[ +1.0]\r>", false, '>', true, -EPROTO, 0, "not a voltage"},
    {"negative", "xvoltage?", "[ -0.3]\r>", false, '>', true, -EPROTO, 0,
     "voltage -0.3 V out of 0..150 V"},
    {"above 150 V", "xvoltage?", "[ 150.1]\r>", false, '>', true, -EPROTO, 0, "out of 0..150 V"},
    {"no brackets", "xvoltage?", "24.8\r>", false, '>', true, -EPROTO, 0, "no \"[value]\""},
    {"unterminated bracket", "xvoltage?", "[ 24.8\r>", false, '>', true, -EPROTO, 0,
     "unterminated"},
    {"second value", "xvoltage?", "[ 24.8]\r[ 30.1]\r>", false, '>', true, -EPROTO, 0,
     "unexpected bytes"},
    {"missing prompt", "xvoltage?", "xvoltage?\r[ 24.8]\r", true, '>', true, -EPROTO, 0,
     "does not end with the prompt '>'"},
    {"wrong prompt", "xvoltage?", "[ 24.8]\r*", false, '>', true, -EPROTO, 0,
     "does not end with the prompt"},
    {"echo missing", "xvoltage?", "[ 24.8]\r>", true, '>', true, -EPROTO, 0,
     "does not start with the echo"},
    {"echo of another axis", "xvoltage?", "yvoltage?\r[ 24.8]\r>", true, '>', true, -EPROTO, 0,
     "does not start with the echo"},
    {"echo run on", "xvoltage?", "xvoltage?x\r[ 24.8]\r>", true, '>', true, -EPROTO, 0,
     "does not start with the echo"},
    {"unexpected echo", "xvoltage?", "xvoltage?\r[ 24.8]\r>", false, '>', true, -EPROTO, 0,
     "no \"[value]\""},
    {"CMD_NOT_DEFINED", "foo?", "foo?\rCMD_NOT_DEFINED>", true, '>', false, -EPROTO, 0,
     "\"foo?\" not understood (CMD_NOT_DEFINED): \"foo?\\rCMD_NOT_DEFINED>\""},
    {"bang", "foo?", "foo?\r!", true, '*', false, -EPROTO, 0, "not understood ('!')"},
    {"value where an ack belongs", "xvoltage=1.00", "[ 24.8]\r>", false, '>', false, -EPROTO, 0,
     "unexpected bytes"},
};

START_TEST(test_parse) {
    char err[512] = "";
    double v = -1.0;
    int rc;

    rc = mdt693b_parse_reply(parse_rows[_i].cmd, parse_rows[_i].reply, strlen(parse_rows[_i].reply),
                             parse_rows[_i].echo, parse_rows[_i].prompt, parse_rows[_i].want_value,
                             &v, err, sizeof(err));
    ck_assert_msg(rc == parse_rows[_i].rc, "%s: returned %d (%s)", parse_rows[_i].label, rc, err);
    if (rc < 0) {
        ck_assert_msg(strstr(err, parse_rows[_i].err_has), "%s: error \"%s\" lacks \"%s\"",
                      parse_rows[_i].label, err, parse_rows[_i].err_has);
        ck_assert_msg(v == -1.0, "%s: wrote a value on error", parse_rows[_i].label);
    } else if (parse_rows[_i].want_value)
        ck_assert_msg(v == parse_rows[_i].value_v, "%s: %g", parse_rows[_i].label, v);
}
END_TEST

/* A NUL inside the brackets must not end the parse early at "[ 2". */
START_TEST(test_parse_nul) {
    static const char reply[] = "[ 2\0.8]\r>";
    char err[512] = "";
    double v = -1.0;

    ck_assert_int_eq(mdt693b_parse_reply("xvoltage?", reply, sizeof(reply) - 1, false, '>', true,
                                         &v, err, sizeof(err)),
                     -EPROTO);
    ck_assert_msg(strstr(err, "\"[ 2\\x00.8]\\r>\"") != NULL, "%s", err);
    ck_assert(v == -1.0);
}
END_TEST

int main(void) {
    Suite *s = suite_create("mdt693b");
    TCase *tc = tcase_create("mdt693b");
    SRunner *sr;
    int failed;

    tcase_add_loop_test(tc, test_transcript, 0, (int)(sizeof(rows) / sizeof(rows[0])));
    tcase_add_loop_test(tc, test_parse, 0, (int)(sizeof(parse_rows) / sizeof(parse_rows[0])));
    tcase_add_test(tc, test_parse_nul);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
