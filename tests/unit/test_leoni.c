/*
 * test_leoni: the Leoni 1xN switch protocol against recorded transcripts
 * (the .log files in tests/fixtures/leoni) through a scripted lineio, and the line
 * parsers against a table of good and bad lines.
 */
#include <check.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "leoni.h"
#include "lineio.h"
#include "script_lineio.h"

#define FIXTURE(name) WMD_SOURCE_DIR "/tests/fixtures/leoni/" name

enum op { OP_NONE, OP_SELECT, OP_POSITION };

/* Every row runs leoni_hello, then op; err_has must appear in the error of
 * the step that fails. */
static const struct {
    const char *label, *fixture;
    int hello_rc, nchannels;
    enum op op;
    int ch, op_rc, position;
    const char *err_has;
    int timeout_ms; /* 0: 200 ms */
} rows[] = {
    {"select and confirm", FIXTURE("eol1x8_select.log"), 0, 8, OP_SELECT, 3, 0, 0, NULL, 0},
    {"confirm names another channel", FIXTURE("eol1x8_wrong_confirm.log"), 0, 8, OP_SELECT, 5,
     -EPROTO, 0, "switch still reports channel 4 after \"ch5\"",
     /* Too short to ask again: a switch that stays elsewhere is polled
      * until the time is up, which a fixed transcript cannot script. */
     5},
    {"mol type and position", FIXTURE("mol1x16_position.log"), 0, 16, OP_POSITION, 0, 0, 12, NULL,
     0},
    {"echo of the select is harmless", FIXTURE("eol1x4_select_echo.log"), 0, 4, OP_SELECT, 2, 0, 0,
     NULL, 0},
    {"error line after the select", FIXTURE("eol1x4_select_error.log"), 0, 4, OP_SELECT, 2, -EPROTO,
     0, "unexpected reply to \"ch2\": \"ERR\\r\\n\"", 0},
    {"type? answered with garbage", FIXTURE("type_garbage.log"), -EPROTO, 0, OP_NONE, 0, 0, 0,
     "not an \"eol 1xN\" or \"mol 1xN\" type: \"1x8\\r\\n\"", 0},
    {"position outside 1..N", FIXTURE("eol1x8_position_out_of_range.log"), 0, 8, OP_POSITION, 0,
     -EPROTO, 0, "channel 12 outside 1..8", 0},
    {"no confirmation", FIXTURE("eol1x8_no_confirm.log"), 0, 8, OP_SELECT, 6, -ETIMEDOUT, 0,
     "no complete reply to \"ch?\" in time", 0},
    {"select outside 1..N", FIXTURE("eol1x8_select_out_of_range.log"), 0, 8, OP_SELECT, 9, -EINVAL,
     0, "channel 9 outside 1..8", 0},
    {"select channel 0", FIXTURE("eol1x8_select_out_of_range.log"), 0, 8, OP_SELECT, 0, -EINVAL, 0,
     "channel 0 outside 1..8", 0},
};

START_TEST(test_transcript) {
    static struct script_lineio sc; /* large: keep it off the stack */
    struct lineio io;
    char err[512] = "";
    int rc, n = -1, pos = -1;

    script_lineio_load(&sc, rows[_i].fixture);
    io = script_lineio_io(&sc);
    rc = leoni_hello(&io, 200, &n, err, sizeof(err));
    ck_assert_msg(sc.mismatch[0] == '\0', "%s: %s", rows[_i].label, sc.mismatch);
    ck_assert_msg(rc == rows[_i].hello_rc, "%s: hello returned %d (%s)", rows[_i].label, rc, err);
    if (rc < 0) {
        ck_assert_msg(strstr(err, rows[_i].err_has), "%s: error \"%s\" lacks \"%s\"",
                      rows[_i].label, err, rows[_i].err_has);
        ck_assert_int_eq(n, -1);
        return;
    }
    ck_assert_msg(n == rows[_i].nchannels, "%s: %d channels", rows[_i].label, n);
    if (rows[_i].op == OP_SELECT)
        rc = leoni_select(&io, n, rows[_i].ch, rows[_i].timeout_ms ? rows[_i].timeout_ms : 200, err,
                          sizeof(err));
    else if (rows[_i].op == OP_POSITION)
        rc = leoni_position(&io, n, 200, &pos, err, sizeof(err));
    ck_assert_msg(sc.mismatch[0] == '\0', "%s: %s", rows[_i].label, sc.mismatch);
    ck_assert_msg(rc == rows[_i].op_rc, "%s: returned %d (%s)", rows[_i].label, rc, err);
    if (rc < 0) {
        ck_assert_msg(strstr(err, rows[_i].err_has), "%s: error \"%s\" lacks \"%s\"",
                      rows[_i].label, err, rows[_i].err_has);
        ck_assert_msg(pos == -1, "%s: wrote a position on error", rows[_i].label);
    } else if (rows[_i].op == OP_POSITION)
        ck_assert_msg(pos == rows[_i].position, "%s: position %d", rows[_i].label, pos);
    if (rc == 0 || rc == -EINVAL)
        ck_assert_msg(script_lineio_done(&sc), "%s: transcript not used up", rows[_i].label);
}
END_TEST

static const struct {
    const char *label, *line;
    bool type; /* leoni_parse_type, else leoni_parse_channel with 8 channels */
    int rc, value;
    const char *err_has;
} parse_rows[] = {
    {"channel", "3\r\n", false, 0, 3, NULL},
    {"last channel", "8\r\n", false, 0, 8, NULL},
    {"channel 0", "0\r\n", false, -EPROTO, 0, "channel 0 outside 1..8"},
    {"channel too high", "9\r\n", false, -EPROTO, 0, "channel 9 outside 1..8"},
    {"channel without CRLF", "3", false, -EPROTO, 0, "not a channel number: \"3\""},
    {"channel with LF only", "3\n", false, -EPROTO, 0, "not a channel number"},
    {"channel with sign", "+3\r\n", false, -EPROTO, 0, "not a channel number"},
    {"channel with space", " 3\r\n", false, -EPROTO, 0, "not a channel number"},
    {"channel empty", "\r\n", false, -EPROTO, 0, "not a channel number"},
    {"channel huge", "99999999999\r\n", false, -EPROTO, 0, "not a channel number"},
    {"channel echo", "ch?\r\n", false, -EPROTO, 0, "not a channel number: \"ch?\\r\\n\""},
    {"eol type", "eol 1x8\r\n", true, 0, 8, NULL},
    {"mol type", "mol 1x100\r\n", true, 0, 100, NULL},
    {"type 1x0", "eol 1x0\r\n", true, -EPROTO, 0, "0 channels outside 1..256"},
    {"type too many", "eol 1x999\r\n", true, -EPROTO, 0, "999 channels outside 1..256"},
    {"type 2xN", "eol 2x8\r\n", true, -EPROTO, 0, "not an \"eol 1xN\""},
    {"type trailing text", "eol 1x8 rev B\r\n", true, -EPROTO, 0, "not an \"eol 1xN\""},
    {"type upper case", "EOL 1X8\r\n", true, -EPROTO, 0, "not an \"eol 1xN\""},
    {"type binary", "\xff\xfe\r\n", true, -EPROTO, 0, "\"\\xff\\xfe\\r\\n\""},
};

START_TEST(test_parse) {
    char err[256] = "";
    int v = -1, rc;
    const char *line = parse_rows[_i].line;

    if (parse_rows[_i].type)
        rc = leoni_parse_type(line, strlen(line), &v, err, sizeof(err));
    else
        rc = leoni_parse_channel(line, strlen(line), 8, &v, err, sizeof(err));
    ck_assert_msg(rc == parse_rows[_i].rc, "%s: returned %d (%s)", parse_rows[_i].label, rc, err);
    if (rc < 0) {
        ck_assert_msg(strstr(err, parse_rows[_i].err_has), "%s: error \"%s\" lacks \"%s\"",
                      parse_rows[_i].label, err, parse_rows[_i].err_has);
        ck_assert_msg(v == -1, "%s: wrote a value on error", parse_rows[_i].label);
    } else
        ck_assert_msg(v == parse_rows[_i].value, "%s: %d", parse_rows[_i].label, v);
}
END_TEST

int main(void) {
    Suite *s = suite_create("leoni");
    TCase *tc = tcase_create("leoni");
    SRunner *sr;
    int failed;

    tcase_add_loop_test(tc, test_transcript, 0, (int)(sizeof(rows) / sizeof(rows[0])));
    tcase_add_loop_test(tc, test_parse, 0, (int)(sizeof(parse_rows) / sizeof(parse_rows[0])));
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
