/*
 * test_config: the config loader and jsonpos, from text in memory. Every bad
 * config in the table must produce exactly one line naming file, line,
 * column and key, because that line is all an operator sees when the daemon
 * refuses to start.
 */
#include "config.h"
#include "highfinesse.h"
#include "jsonpos.h"
#include "sim.h"
#include "wavemeter.h"

#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SRC(rel) WMD_SOURCE_DIR "/" rel

static int parse(struct config *cfg, const char *text, char *err, size_t errlen) {
    return config_parse(cfg, "t.json", text, strlen(text), err, errlen);
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* ---- jsonpos ---------------------------------------------------------- */

static const struct {
    const char *label;
    const char *text;
    const char *path;
    int rc, line, column;
} pos_cases[] = {
    {"document start after blank lines", "\n\n  {}", "", 0, 3, 3},
    {"top-level key at its opening quote", "{\"a\": 1,\n  \"b\": 2}", "b", 0, 2, 3},
    {"array element at its first char", "{\"l\": [1,\n   {\"x\": 2}]}", "l[1]", 0, 2, 4},
    {"member of an array element", "{\"l\": [{}, {\n  \"x\": 2}]}", "l[1].x", 0, 2, 3},
    {"nested arrays", "[[0, 1], [2, [3, 4]]]", "[1][1][0]", 0, 1, 15},
    {"skips strings holding brackets and quotes",
     "{\"a\": \"}]\\\"{\", \"b\": {\"c\": [\"]\"]}, \"d\": 1}", "d", 0, 1, 35},
    {"key written with escapes", "{\"\\u006eame\": 1}", "name", 0, 1, 2},
    {"surrogate pair in a key", "{\"\\ud83d\\ude00\": 1}", "\xf0\x9f\x98\x80", 0, 1, 2},
    {"columns count UTF-8 characters", "{\"\xc3\xa9\xc3\xa9\": 1, \"b\": 2}", "b", 0, 1, 11},
    {"first of duplicate keys", "{\"a\": 1, \"a\": 2}", "a", 0, 1, 2},
    {"missing key falls back to its object", "{\"l\": [{},\n {\"x\": 1}]}", "l[1].y", -ENOENT, 2,
     2},
    {"index past the end falls back to the key", "{\"l\": [1]}", "l[3]", -ENOENT, 1, 2},
    {"key in a scalar", "{\"a\": 1}", "a.b", -EINVAL, 1, 2},
    {"malformed path", "{\"a\": 1}", "a..b", -EINVAL, 1, 1},
    {"unterminated text", "{\"a\": [1, 2", "a[5]", -EINVAL, 1, 2},
};

START_TEST(test_jsonpos) {
    struct jsonpos pos;
    int rc =
        jsonpos_find_path(pos_cases[_i].text, strlen(pos_cases[_i].text), pos_cases[_i].path, &pos);
    ck_assert_msg(rc == pos_cases[_i].rc && pos.line == pos_cases[_i].line &&
                      pos.column == pos_cases[_i].column,
                  "%s: got rc %d at %d:%d, want rc %d at %d:%d", pos_cases[_i].label, rc, pos.line,
                  pos.column, pos_cases[_i].rc, pos_cases[_i].line, pos_cases[_i].column);
}
END_TEST

START_TEST(test_jsonpos_steps) {
    /* Keys with '.' or '[' can be found only with explicit steps. */
    const char *text = "{\"a.b\": {\"c[0]\": 1}}";
    struct jsonpos_step steps[] = {{"a.b", 0}, {"c[0]", 0}};
    struct jsonpos pos;

    ck_assert_int_eq(jsonpos_find(text, strlen(text), steps, 2, &pos), 0);
    ck_assert_int_eq(pos.column, 10);
    ck_assert_uint_eq(pos.offset, 9);
}
END_TEST

/* ---- defaults and shipped files ---------------------------------------- */

START_TEST(test_defaults) {
    struct config cfg, parsed;
    char err[256] = "";

    config_defaults(&cfg);
    ck_assert_int_eq(cfg.nlasers, 4);
    ck_assert_str_eq(cfg.listen_host, "127.0.0.1");
    ck_assert_int_eq(cfg.listen_port, 7420);
    ck_assert_str_eq(cfg.wavemeter.driver, "sim");
    ck_assert_str_eq(cfg.source, "");
    for (int i = 0; i < cfg.nlasers; i++) {
        const struct laser_config *l = &cfg.lasers[i];
        ck_assert_int_eq(l->channel, i + 1);
        ck_assert(l->setpoint_thz == sim_chan_const(l)->nominal_thz);
        ck_assert_str_eq(l->actuator.drv.driver, "sim");
        ck_assert(fabs(l->max_thz - l->setpoint_thz - 0.001) < 1e-9);
        ck_assert(fabs(l->setpoint_thz - l->min_thz - 0.001) < 1e-9);
        ck_assert(l->sensitivity_mhz_per_v == sim_chan_const(l)->sensitivity_mhz_per_v);
        ck_assert(l->output_min_v < l->output_initial_v && l->output_initial_v < l->output_max_v);
    }
    ck_assert(cfg.lasers[2].sensitivity_mhz_per_v < 0);

    /* The defaults pass the loader's own checks: an empty file is valid. */
    ck_assert_int_eq(parse(&parsed, "{}", err, sizeof(err)), 0);
    ck_assert_str_eq(parsed.source, "t.json");
    memset(parsed.source, 0, sizeof(parsed.source));
    ck_assert(memcmp(&parsed, &cfg, sizeof(cfg)) == 0);
}
END_TEST

START_TEST(test_simulator_json_is_the_defaults) {
    struct config def, cfg;
    char err[512] = "";

    ck_assert_msg(config_load(&cfg, SRC("conf/simulator.json"), err, sizeof(err)) == 0, "%s", err);
    ck_assert_str_eq(cfg.source, SRC("conf/simulator.json"));
    config_defaults(&def);
    /* The file writes min/max as decimals; the defaults compute them, so the
     * last bit may differ. Anything else must match byte for byte. */
    for (int i = 0; i < cfg.nlasers; i++) {
        ck_assert(fabs(cfg.lasers[i].min_thz - def.lasers[i].min_thz) < 1e-9);
        ck_assert(fabs(cfg.lasers[i].max_thz - def.lasers[i].max_thz) < 1e-9);
        cfg.lasers[i].min_thz = def.lasers[i].min_thz;
        cfg.lasers[i].max_thz = def.lasers[i].max_thz;
    }
    memset(cfg.source, 0, sizeof(cfg.source));
    ck_assert(memcmp(&cfg, &def, sizeof(def)) == 0);
}
END_TEST

START_TEST(test_wavemeterd_json) {
    struct config cfg;
    char err[512] = "";

    ck_assert_msg(config_load(&cfg, SRC("conf/wavemeterd.json"), err, sizeof(err)) == 0, "%s", err);
    ck_assert_str_eq(cfg.wavemeter.driver, "highfinesse");
    ck_assert_str_eq(((const struct hf_settings *)(const void *)cfg.wavemeter.u.bytes)->library,
                     "/usr/lib/libwlmData.so");
    ck_assert_int_ge(cfg.nlasers, 2);
}
END_TEST

/* The real lab of conf/lab-ws7.json: what the issue asks a lab to write. */
START_TEST(test_lab_ws7_json) {
    struct config cfg;
    char err[512] = "", dev[2][CONFIG_PATH_MAX], chan[2][32];
    int actuated = 0, monitor = 0;

    ck_assert_msg(config_load(&cfg, SRC("conf/lab-ws7.json"), err, sizeof(err)) == 0, "%s", err);
    ck_assert_str_eq(cfg.wavemeter.driver, "highfinesse");
    ck_assert_int_eq(cfg.nlasers, 8);
    for (int i = 0; i < cfg.nlasers; i++) {
        const struct laser_config *l = &cfg.lasers[i];
        if (l->actuator.drv.driver[0] == '\0') {
            monitor++;
            continue;
        }
        actuated++;
        /* Stable for the cycle it will get: proportional gain per reading
         * at most 0.5 (docs/CONTROL.md). */
        ck_assert_msg(l->kp_v_per_mhz * fabs(l->sensitivity_mhz_per_v) <= 0.5, "%s", l->name);
    }
    ck_assert_int_eq(actuated, 5);
    ck_assert_int_eq(monitor, 3);
    /* Two lasers on one controller: one device, two channels. */
    const struct act_driver *a = act_driver_find(cfg.lasers[0].actuator.drv.driver);
    ck_assert_ptr_eq(a, act_driver_find("mdt693b"));
    for (int i = 0; i < 2; i++)
        a->ident(cfg.lasers[i].actuator.drv.u.bytes, &cfg.lasers[i], dev[i], sizeof(dev[i]),
                 chan[i], sizeof(chan[i]));
    ck_assert_str_eq(dev[0], dev[1]);
    ck_assert_str_ne(chan[0], chan[1]);
}
END_TEST

/* ---- bad files: exactly one line each ----------------------------------- */

#define LASER_A "{\"name\": \"a\", \"channel\": 1}"

static const struct {
    const char *label;
    const char *text;
    const char *want;
} bad_cases[] = {
    {"unknown top-level key", "{\n  \"listen\": \"127.0.0.1:7420\",\n  \"$comment\": \"x\"\n}",
     "t.json:3:3: key \"$comment\": unknown key"},
    {"unknown laser key", "{\"lasers\": [\n  {\"name\": \"a\", \"channel\": 1,\n    \"kp\": 1}\n]}",
     "t.json:3:5: key \"lasers[0].kp\": unknown key"},
    {"unknown key in a section", "{\"limits\": {\"max_client\": 3}}",
     "t.json:1:13: key \"limits.max_client\": unknown key"},
    {"read cannot finish in time",
     "{\"wavemeter\": {\"read_timeout_ms\": 1000},\n"
     " \"lasers\": [{\"name\": \"a\", \"channel\": 1, \"exposure_ms\": 900, \"settle_ms\": 200}]}",
     "t.json:2:41: key \"lasers[0].exposure_ms\": exposure_ms + settle_ms (1100 ms) must be less "
     "than wavemeter.read_timeout_ms (1000 ms)"},
    {"write_from host bits", "{\"access\": {\"write_from\": [\"::1\", \"10.1.2.3/8\"]}}",
     "t.json:1:35: key \"access.write_from[1]\": \"10.1.2.3/8\": host bits set below the /8 "
     "prefix"},
    {"write_from not a list", "{\"access\": {\"write_from\": \"10.0.0.0/8\"}}",
     "t.json:1:13: key \"access.write_from\": must be an array of at most 16 \"ADDR[/BITS]\" "
     "strings"},
    {"write_from hostname", "{\"access\": {\"write_from\": [\"labpc\"]}}",
     "t.json:1:28: key \"access.write_from[0]\": \"labpc\" is not a numeric IPv4 or IPv6 "
     "address"},
    {"unknown sim key",
     "{\"lasers\": [{\"name\": \"a\", \"channel\": 1, \"sim\": {\"nominal\": 1}}]}",
     "t.json:1:49: key \"lasers[0].sim.nominal\": unknown key"},
    {"control characters in an unknown key", "{\"a\\\"b\\n\": 1}",
     "t.json:1:2: key \"a?b?\": unknown key"},
    {"string for an integer", "{\"threadpool_size\": \"4\"}",
     "t.json:1:2: key \"threadpool_size\": must be an integer in [1, 1024]"},
    {"1.5 for an integer", "{\"threadpool_size\": 1.5}",
     "t.json:1:2: key \"threadpool_size\": must be an integer in [1, 1024]"},
    {"2.0 for an integer", "{\"limits\": {\"max_batch\": 2.0}}",
     "t.json:1:13: key \"limits.max_batch\": must be an integer in [1, 10000]"},
    {"integer below range", "{\"limits\": {\"max_clients\": 0}}",
     "t.json:1:13: key \"limits.max_clients\": must be an integer in [1, 4096]"},
    {"number above range",
     "{\"lasers\": [" LASER_A ",\n {\"name\": \"b\", \"channel\": 2, \"kp_v_per_mhz\": 2000}]}",
     "t.json:2:30: key \"lasers[1].kp_v_per_mhz\": must be a number in [0, 1000]"},
    {"string for a number", "{\"state\": {\"save_interval_s\": \"10\"}}",
     "t.json:1:12: key \"state.save_interval_s\": must be a number in [0.1, 3600]"},
    {"negative seed", "{\"wavemeter\": {\"seed\": -1}}",
     "t.json:1:16: key \"wavemeter.seed\": must be an integer in [0, 9223372036854775807]"},
    {"string for a boolean",
     "{\"lasers\": [{\"name\": \"a\", \"channel\": 1, \"enabled\": \"yes\"}]}",
     "t.json:1:41: key \"lasers[0].enabled\": must be true or false"},
    {"bad enum", "{\"log_level\": \"verbose\"}",
     "t.json:1:2: key \"log_level\": must be one of \"debug\", \"info\", \"notice\", \"warning\", "
     "\"error\""},
    {"bad wavemeter driver", "{\"wavemeter\": {\"driver\": \"wlm\"}}",
     "t.json:1:16: key \"wavemeter.driver\": must be one of \"sim\", \"highfinesse\""},
    {"bad restart policy",
     "{\"lasers\": [{\"name\": \"a\", \"channel\": 1, \"restart\": \"keep\"}]}",
     "t.json:1:41: key \"lasers[0].restart\": must be one of \"resume\", \"release\", \"off\""},
    {"bad sim fault", "{\"lasers\": [{\"name\": \"a\", \"channel\": 1, \"sim\": {\"fault\": 1}}]}",
     "t.json:1:49: key \"lasers[0].sim.fault\": must be one of \"none\", \"no_signal\", "
     "\"underexposed\", \"overexposed\""},
    {"empty string", "{\"state\": {\"dir\": \"\"}}",
     "t.json:1:12: key \"state.dir\": must be a string of 1 to 255 bytes"},
    {"string too long",
     "{\"wavemeter\": {\"driver\": \"highfinesse\", \"library\": \"/"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "a"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "a"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}}",
     "t.json:1:41: key \"wavemeter.library\": must be a string of 1 to 255 bytes"},
    {"section not an object", "{\"limits\": [1]}", "t.json:1:2: key \"limits\": must be an object"},
    {"top level not an object", "\n [1]", "t.json:2:2: the top level must be an object"},
    {"lasers not an array", "{\"lasers\": {}}",
     "t.json:1:2: key \"lasers\": must be an array of 1 to 32 lasers"},
    {"no lasers", "{\"lasers\": []}",
     "t.json:1:2: key \"lasers\": must be an array of 1 to 32 lasers"},
    {"laser not an object", "{\"lasers\": [" LASER_A ", 7]}",
     "t.json:1:42: key \"lasers[1]\": must be an object"},
    {"missing channel", "{\"lasers\": [" LASER_A ",\n  {\"name\": \"b\"}]}",
     "t.json:2:3: key \"lasers[1].channel\": is required"},
    {"missing name", "{\"lasers\": [{\"channel\": 1}]}",
     "t.json:1:13: key \"lasers[0].name\": is required"},
    {"bad name characters", "{\"lasers\": [{\"name\": \"Ti:Sa\", \"channel\": 1}]}",
     "t.json:1:14: key \"lasers[0].name\": must be 1 to 31 characters of A-Z a-z 0-9 _ . -"},
    {"channel out of range", "{\"lasers\": [{\"name\": \"a\", \"channel\": 33}]}",
     "t.json:1:27: key \"lasers[0].channel\": must be an integer in [1, 32]"},
    {"duplicate channel",
     "{\"lasers\": [\n  {\"name\": \"a\", \"channel\": 1},\n  {\"name\": \"b\", \"channel\": "
     "1}\n]}",
     "t.json:3:17: key \"lasers[1].channel\": channel 1 is already used by laser \"a\""},
    {"duplicate name",
     "{\"lasers\": [\n  {\"name\": \"a\", \"channel\": 1},\n  {\"name\": \"a\", \"channel\": "
     "2}\n]}",
     "t.json:3:4: key \"lasers[1].name\": name \"a\" is already used by lasers[0]"},
    {"listen without port", "{\"listen\": \"127.0.0.1\"}",
     "t.json:1:2: key \"listen\": must be \"ADDRESS:PORT\" with a numeric address and PORT in "
     "[0, 65535], e.g. \"127.0.0.1:7420\" or \"[::1]:7420\""},
    {"listen with a host name", "{\"listen\": \"localhost:7420\"}",
     "t.json:1:2: key \"listen\": must be \"ADDRESS:PORT\" with a numeric address and PORT in "
     "[0, 65535], e.g. \"127.0.0.1:7420\" or \"[::1]:7420\""},
    {"listen IPv6 without brackets", "{\"listen\": \"::1:7420\"}",
     "t.json:1:2: key \"listen\": must be \"ADDRESS:PORT\" with a numeric address and PORT in "
     "[0, 65535], e.g. \"127.0.0.1:7420\" or \"[::1]:7420\""},
    {"listen port too big", "{\"listen\": \"[::1]:65536\"}",
     "t.json:1:2: key \"listen\": must be \"ADDRESS:PORT\" with a numeric address and PORT in "
     "[0, 65535], e.g. \"127.0.0.1:7420\" or \"[::1]:7420\""},
    {"invalid JSON", "{\n  \"listen\": \"127.0.0.1:7420\",\n}",
     "t.json:3:1: invalid JSON: string or '}' expected near '}'"},
    {"empty file", "", "t.json:1:0: invalid JSON: '[' or '{' expected near end of file"},
    {"duplicate key", "{\"log_level\": \"info\",\n \"log_level\": \"debug\"}",
     "t.json:2:12: invalid JSON: duplicate object key near '\"log_level\"'"},
    {"setpoint above max_thz",
     "{\"lasers\": [{\"name\": \"a\", \"channel\": 1,\n  \"min_thz\": 384, \"max_thz\": 385, "
     "\"setpoint_thz\": 386}]}",
     "t.json:2:35: key \"lasers[0].setpoint_thz\": 386 must be inside (min_thz, max_thz) = "
     "(384, 385)"},
    {"setpoint equal to min_thz",
     "{\"lasers\": [{\"name\": \"a\", \"channel\": 1, \"setpoint_thz\": 384, \"min_thz\": 384}]}",
     "t.json:1:41: key \"lasers[0].setpoint_thz\": 384 must be inside (min_thz, max_thz) = "
     "(384, 384.001)"},
    {"default setpoint outside a given range",
     "{\"lasers\": [{\"name\": \"a\", \"channel\": 1, \"min_thz\": 500, \"max_thz\": 501}]}",
     "t.json:1:13: key \"lasers[0].setpoint_thz\": 384.23 must be inside (min_thz, max_thz) = "
     "(500, 501) (its default)"},
    {"min_thz above max_thz",
     "{\"lasers\": [{\"name\": \"a\", \"channel\": 1, \"min_thz\": 400, \"max_thz\": 399}]}",
     "t.json:1:57: key \"lasers[0].max_thz\": must leave min_thz (400) below max_thz (399)"},
    {"output_min_v not below output_max_v",
     "{\"lasers\": [{\"name\": \"a\", \"channel\": 1, \"output_min_v\": 5, \"output_max_v\": 5}]}",
     "t.json:1:60: key \"lasers[0].output_max_v\": must be greater than output_min_v (5)"},
    {"output_initial_v outside the output range",
     "{\"lasers\": [{\"name\": \"a\", \"channel\": 1, \"output_initial_v\": 11}]}",
     "t.json:1:41: key \"lasers[0].output_initial_v\": must be inside [output_min_v, "
     "output_max_v] = [-10, 10]"},
    {"tolerance wider than capture",
     "{\"lasers\": [{\"name\": \"a\", \"channel\": 1, \"tolerance_mhz\": 600}]}",
     "t.json:1:41: key \"lasers[0].tolerance_mhz\": must not exceed capture_mhz (500)"},
    {"lock without an actuator",
     "{\"lasers\": [{\"name\": \"a\", \"channel\": 1, \"actuator\": {\"driver\": \"none\"}, "
     "\"lock\": true}]}",
     "t.json:1:73: key \"lasers[0].lock\": cannot be true for a laser without an actuator "
     "(monitor only)"},
    /* Drivers own their keys: each is checked against the chosen driver. */
    {"a key of another wavemeter driver",
     "{\"wavemeter\": {\"driver\": \"highfinesse\", \"seed\": 1}}",
     "t.json:1:41: key \"wavemeter.seed\": unknown key for wavemeter driver \"highfinesse\""},
    {"a key before the driver that does not take it", "{\"wavemeter\": {\"library\": \"/x.so\"}}",
     "t.json:1:16: key \"wavemeter.library\": unknown key for wavemeter driver \"sim\""},
    {"unknown wavemeter driver", "{\"wavemeter\": {\"driver\": \"ws9\"}}",
     "t.json:1:16: key \"wavemeter.driver\": must be one of \"sim\", \"highfinesse\""},
    {"sim section with a real wavemeter",
     "{\"wavemeter\": {\"driver\": \"highfinesse\"}, \"lasers\": [{\"name\": \"a\", "
     "\"channel\": 1, \"sim\": {}}]}",
     "t.json:1:81: key \"lasers[0].sim\": is only read with wavemeter driver \"sim\" (this file "
     "has \"highfinesse\")"},
    {"lasers read with the wavemeter that comes after them",
     "{\"lasers\": [{\"name\": \"a\", \"channel\": 1, \"sim\": {}}], "
     "\"wavemeter\": {\"driver\": \"highfinesse\"}}",
     "t.json:1:41: key \"lasers[0].sim\": is only read with wavemeter driver \"sim\" (this file "
     "has \"highfinesse\")"},
    {"unknown actuator driver",
     "{\"lasers\": [{\"name\": \"a\", \"channel\": 1, \"actuator\": {\"driver\": \"dac\"}}]}",
     "t.json:1:54: key \"lasers[0].actuator.driver\": must be one of \"sim\", \"mdt693b\", "
     "\"serial_line\", \"highfinesse_analog\", \"none\""},
    {"an actuator key of another driver",
     "{\"lasers\": [{\"name\": \"a\", \"channel\": 1, \"actuator\": {\"axis\": \"x\"}}]}",
     "t.json:1:54: key \"lasers[0].actuator.axis\": unknown key for actuator driver \"sim\""},
    {"keys for no actuator",
     "{\"lasers\": [{\"name\": \"a\", \"channel\": 1, \"actuator\": {\"driver\": \"none\", "
     "\"port\": \"/dev/x\"}}]}",
     "t.json:1:72: key \"lasers[0].actuator.port\": unknown key: no actuator driver is chosen "
     "(\"driver\": ...)"},
    {"a driver's required key",
     "{\"lasers\": [{\"name\": \"a\", \"channel\": 1, \"actuator\": {\"driver\": "
     "\"mdt693b\"}}]}",
     "t.json:1:41: key \"lasers[0].actuator.port\": is required with actuator driver "
     "\"mdt693b\""},
    {"a simulated actuator on a real wavemeter",
     "{\"wavemeter\": {\"driver\": \"highfinesse\"}, \"lasers\": [{\"name\": \"a\", "
     "\"channel\": 1, \"actuator\": {\"driver\": \"sim\"}}]}",
     "t.json:1:94: key \"lasers[0].actuator.driver\": actuator \"sim\" moves simulated lasers "
     "only (wavemeter driver \"sim\")"},
    {"the analog outputs of a wavemeter without them",
     "{\"lasers\": [{\"name\": \"a\", \"channel\": 1, \"actuator\": {\"driver\": "
     "\"highfinesse_analog\", \"output\": 1}}]}",
     "t.json:1:54: key \"lasers[0].actuator.driver\": needs a wavemeter with analog outputs "
     "(driver highfinesse)"},
    {"two lasers on one channel of one device",
     "{\"wavemeter\": {\"driver\": \"highfinesse\"}, \"lasers\": ["
     "{\"name\": \"a\", \"channel\": 1, \"output_min_v\": 0, \"output_max_v\": 75, "
     "\"actuator\": {\"driver\": \"mdt693b\", \"port\": \"/dev/p\", \"axis\": \"y\"}},"
     "{\"name\": \"b\", \"channel\": 2, \"output_min_v\": 0, \"output_max_v\": 75, "
     "\"actuator\": {\"driver\": \"mdt693b\", \"port\": \"/dev/p\", \"axis\": \"y\"}}]}",
     "t.json:1:253: key \"lasers[1].actuator\": channel y of device /dev/p is already driven by "
     "laser \"a\""},
    {"one device with two baud rates",
     "{\"wavemeter\": {\"driver\": \"highfinesse\"}, \"lasers\": ["
     "{\"name\": \"a\", \"channel\": 1, \"output_min_v\": 0, \"output_max_v\": 75, "
     "\"actuator\": {\"driver\": \"mdt693b\", \"port\": \"/dev/p\"}},"
     "{\"name\": \"b\", \"channel\": 2, \"output_min_v\": 0, \"output_max_v\": 75, "
     "\"actuator\": {\"driver\": \"mdt693b\", \"port\": \"/dev/p\", \"axis\": \"z\", "
     "\"baud\": 9600}}]}",
     "t.json:1:305: key \"lasers[1].actuator.baud\": must be the same as for laser \"a\", which "
     "shares device /dev/p"},
    {"one port for two drivers",
     "{\"wavemeter\": {\"driver\": \"highfinesse\"}, \"lasers\": ["
     "{\"name\": \"a\", \"channel\": 1, \"output_min_v\": 0, \"output_max_v\": 75, "
     "\"actuator\": {\"driver\": \"mdt693b\", \"port\": \"/dev/p\"}},"
     "{\"name\": \"b\", \"channel\": 2, "
     "\"actuator\": {\"driver\": \"serial_line\", \"port\": \"/dev/p\"}}]}",
     "t.json:1:201: key \"lasers[1].actuator\": device /dev/p is already driven by laser \"a\" "
     "with driver \"mdt693b\""},
    {"an output range the piezo controller cannot give",
     "{\"wavemeter\": {\"driver\": \"highfinesse\"}, \"lasers\": [{\"name\": \"a\", "
     "\"channel\": 1, \"actuator\": {\"driver\": \"mdt693b\", \"port\": \"/dev/p\"}}]}",
     "t.json:1:81: key \"lasers[0].actuator\": -10 V is below 0 V, the lowest output an MDT693B "
     "has"},
    {"a switch key without a switch driver",
     "{\"wavemeter\": {\"switch\": {\"port\": \"/dev/s\"}}}",
     "t.json:1:27: key \"wavemeter.switch.port\": unknown key: no switch driver is chosen "
     "(\"driver\": ...)"},
};

START_TEST(test_bad) {
    struct config cfg, before;
    char err[512] = "";
    int rc;

    config_defaults(&cfg);
    cfg.listen_port = 1234; /* not a default: proves cfg is left alone */
    memcpy(&before, &cfg, sizeof(cfg));
    rc = parse(&cfg, bad_cases[_i].text, err, sizeof(err));
    ck_assert_msg(rc == -EINVAL, "%s: rc %d", bad_cases[_i].label, rc);
    ck_assert_msg(strcmp(err, bad_cases[_i].want) == 0, "%s:\n got  %s\n want %s",
                  bad_cases[_i].label, err, bad_cases[_i].want);
    ck_assert_msg(memcmp(&cfg, &before, sizeof(cfg)) == 0, "%s: cfg changed", bad_cases[_i].label);
}
END_TEST

START_TEST(test_error_truncated) {
    struct config cfg;
    char err[8];

    /* A short buffer gets a terminated prefix; a NULL one gets nothing. */
    ck_assert_int_eq(parse(&cfg, "{\"x\": 1}", err, sizeof(err)), -EINVAL);
    ck_assert_str_eq(err, "t.json:");
    ck_assert_int_eq(parse(&cfg, "{\"x\": 1}", NULL, 0), -EINVAL);
    ck_assert_int_eq(parse(&cfg, "{", NULL, 0), -EINVAL);
}
END_TEST

/* ---- good files read back ----------------------------------------------- */

START_TEST(test_overrides) {
    static const char text[] =
        "{\n"
        "  \"listen\": \"[::1]:7421\",\n"
        "  \"log_level\": \"debug\",\n"
        "  \"threadpool_size\": 8,\n"
        "  \"limits\": {\"max_clients\": 5, \"write_stall_timeout_s\": 3},\n"
        "  \"state\": {\"dir\": \"/tmp/wmd\", \"save_interval_s\": 2.5},\n"
        "  \"wavemeter\": {\"driver\": \"sim\", \"seed\": 9007199254740993},\n"
        "  \"lasers\": [\n"
        "    {\"name\": \"Rb-D2_1.x\", \"channel\": 7, \"sim\": {\"nominal_thz\": 384.2,\n"
        "      \"sensitivity_mhz_per_v\": -30, \"fault\": \"underexposed\"},\n"
        "     \"kp_v_per_mhz\": 1, \"ki_v_per_mhz_s\": 2.0, \"restart\": \"off\",\n"
        "     \"actuator\": {\"driver\": \"none\"}, \"enabled\": false},\n"
        "    {\"\\u006eame\": \"b\", \"channel\": 32, \"setpoint_thz\": 500,\n"
        "     \"min_thz\": 499, \"output_min_v\": 0, \"output_max_v\": 100,\n"
        "     \"output_initial_v\": 50, \"restart\": \"release\", \"lock\": true}\n"
        "  ]\n"
        "}\n";
    struct config cfg;
    char err[512] = "";
    const struct laser_config *a, *b;

    ck_assert_msg(parse(&cfg, text, err, sizeof(err)) == 0, "%s", err);
    ck_assert_str_eq(cfg.listen_host, "::1");
    ck_assert_int_eq(cfg.listen_port, 7421);
    ck_assert_str_eq(cfg.log_level, "debug");
    ck_assert_int_eq(cfg.threadpool_size, 8);
    ck_assert_int_eq(cfg.max_clients, 5);
    ck_assert_int_eq(cfg.write_stall_timeout_s, 3);
    ck_assert_int_eq(cfg.max_batch, 100); /* untouched keys keep defaults */
    ck_assert_str_eq(cfg.state_dir, "/tmp/wmd");
    ck_assert(cfg.state_save_interval_s == 2.5);
    ck_assert_str_eq(cfg.wavemeter.driver, "sim");
    /* above 2^53: never went through a double */
    ck_assert(((const struct sim_settings *)(const void *)cfg.wavemeter.u.bytes)->seed ==
              9007199254740993u);
    ck_assert_int_eq(cfg.nlasers, 2);

    a = &cfg.lasers[0];
    ck_assert_str_eq(a->name, "Rb-D2_1.x");
    ck_assert_int_eq(a->channel, 7);
    ck_assert(!a->enabled);
    ck_assert(sim_chan_const(a)->nominal_thz == 384.2);
    ck_assert(a->setpoint_thz == 384.2);
    ck_assert(fabs(a->min_thz - 384.199) < 1e-9 && fabs(a->max_thz - 384.201) < 1e-9);
    ck_assert(a->sensitivity_mhz_per_v == -30);
    ck_assert_int_eq(sim_chan_const(a)->fault, SIM_FAULT_UNDEREXPOSED);
    ck_assert(a->kp_v_per_mhz == 1 && a->ki_v_per_mhz_s == 2);
    ck_assert_int_eq(a->restart, RESTART_OFF);
    ck_assert_str_eq(a->actuator.drv.driver, "");
    ck_assert_int_eq(a->actuator.timeout_ms, 1000);
    ck_assert_int_eq(a->exposure_ms, 20);

    b = &cfg.lasers[1];
    ck_assert_str_eq(b->name, "b");
    ck_assert(sim_chan_const(b)->nominal_thz == 500); /* follows the setpoint */
    ck_assert(b->min_thz == 499 && fabs(b->max_thz - 500.001) < 1e-9);
    ck_assert(b->sensitivity_mhz_per_v == 50);
    ck_assert(b->output_initial_v == 50);
    ck_assert_int_eq(b->restart, RESTART_RELEASE);
    ck_assert(b->lock);
}
END_TEST

START_TEST(test_partial_keeps_default_lasers) {
    struct config cfg;
    char err[256] = "";

    ck_assert_msg(parse(&cfg, "{\"listen\": \"0.0.0.0:0\"}", err, sizeof(err)) == 0, "%s", err);
    ck_assert_str_eq(cfg.listen_host, "0.0.0.0");
    ck_assert_int_eq(cfg.listen_port, 0);
    ck_assert_int_eq(cfg.nlasers, 4);
    ck_assert_str_eq(cfg.lasers[0].name, "399");
}
END_TEST

/* ---- files -------------------------------------------------------------- */

START_TEST(test_load_file) {
    char path[] = "/tmp/test_config_XXXXXX";
    const char *text = "{\"log_level\": \"error\"}";
    struct config cfg;
    char err[512] = "", want[600];
    int fd = mkstemp(path);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (int)strlen(text));
    close(fd);
    ck_assert_msg(config_load(&cfg, path, err, sizeof(err)) == 0, "%s", err);
    ck_assert_str_eq(cfg.log_level, "error");
    ck_assert_str_eq(cfg.source, path);
    unlink(path);

    ck_assert_int_eq(config_load(&cfg, path, err, sizeof(err)), -ENOENT);
    snprintf(want, sizeof(want), "%s: cannot read: %s", path, strerror(ENOENT));
    ck_assert_str_eq(err, want);

    ck_assert_int_eq(config_load(&cfg, "/", err, sizeof(err)), -EISDIR);
    ck_assert_str_eq(err, "/: cannot read: Is a directory");
}
END_TEST

/* ---- lookups ------------------------------------------------------------ */

START_TEST(test_laser_by_name) {
    struct config cfg;

    config_defaults(&cfg);
    ck_assert_str_eq(config_laser_by_name(&cfg, "866")->name, "866");
    ck_assert_str_eq(config_laser_by_name(&cfg, "2")->name, "397"); /* channel */
    ck_assert_ptr_null(config_laser_by_name(&cfg, "9"));
    ck_assert_ptr_null(config_laser_by_name(&cfg, "2x"));
    ck_assert_ptr_null(config_laser_by_name(&cfg, ""));
    ck_assert_str_eq(config_restart_name(RESTART_RESUME), "resume");
    ck_assert_str_eq(config_restart_name(RESTART_RELEASE), "release");
    ck_assert_str_eq(config_restart_name(RESTART_OFF), "off");
}
END_TEST

/* ---- docs/CONFIG.md documents every key ---------------------------------- */

struct doc_check {
    const char *doc;
    int nkeys;
};

static void check_key_documented(const struct config_key_info *k, void *arg) {
    struct doc_check *dc = arg;
    char heading[64], cell[96], num[64];
    const char *sec, *end, *row, *eol;

    dc->nkeys++;
    if (k->driver != NULL)
        snprintf(heading, sizeof(heading), "\n## `%s`: driver `%s`\n", k->section, k->driver);
    else
        snprintf(heading, sizeof(heading), k->section[0] ? "\n## `%s`\n" : "\n## Top level\n",
                 k->section);
    sec = strstr(dc->doc, heading);
    ck_assert_msg(sec != NULL, "docs/CONFIG.md has no heading %s", heading);
    sec += strlen(heading);
    end = strstr(sec, "\n## ");
    if (end == NULL)
        end = sec + strlen(sec);

    snprintf(cell, sizeof(cell), "\n| `%s` |", k->key);
    row = strstr(sec, cell);
    ck_assert_msg(row != NULL && row < end, "docs/CONFIG.md: no row for `%s` under %s", k->key,
                  heading);
    row++;
    eol = strchr(row, '\n');
    if (eol == NULL)
        eol = row + strlen(row);

    if (k->has_range) {
        double bounds[2] = {k->min, k->max};
        for (int b = 0; b < 2; b++) {
            const char *hit;
            snprintf(num, sizeof(num), "| %.15g |", bounds[b]);
            hit = strstr(row, num);
            ck_assert_msg(hit != NULL && hit < eol, "docs/CONFIG.md: row `%s` lacks %s", k->key,
                          num);
        }
    }
    for (int v = 0; k->values != NULL && k->values[v] != NULL; v++) {
        const char *hit;
        snprintf(num, sizeof(num), "\"%s\"", k->values[v]);
        hit = strstr(row, num);
        ck_assert_msg(hit != NULL && hit < eol, "docs/CONFIG.md: row `%s` lacks %s", k->key, num);
    }
}

START_TEST(test_doc_lists_every_key) {
    struct doc_check dc = {read_text(SRC("docs/CONFIG.md")), 0};

    config_foreach_key(check_key_documented, &dc);
    ck_assert_int_ge(dc.nkeys, 50); /* the walk really ran */
    free((void *)(uintptr_t)dc.doc);
}
END_TEST

/* ---- driver tables: every driver fits the config's fixed room ---- */

START_TEST(test_driver_tables_fit) {
    const struct wm_driver *w;
    const struct act_driver *a;
    const struct sw_driver *sw;
    size_t n = 0;

    for (size_t i = 0; (w = wm_driver_at(i)) != NULL; i++, n++) {
        ck_assert_uint_lt(strlen(w->cfg.name), CONFIG_DRIVER_MAX);
        ck_assert_uint_le(w->cfg.size, CONFIG_SETTINGS_MAX);
        ck_assert_uint_le(w->chan.size, CONFIG_SETTINGS_MAX);
        ck_assert(w->open != NULL);
        ck_assert(w->read != NULL);
    }
    for (size_t i = 0; (a = act_driver_at(i)) != NULL; i++, n++) {
        ck_assert_uint_lt(strlen(a->cfg.name), CONFIG_DRIVER_MAX);
        ck_assert_uint_le(a->cfg.size, CONFIG_SETTINGS_MAX);
        ck_assert(a->ident != NULL);
        ck_assert(a->write != NULL);
        ck_assert_ptr_eq(act_driver_find(a->cfg.name), a);
    }
    for (size_t i = 0; (sw = sw_driver_at(i)) != NULL; i++, n++) {
        ck_assert_uint_lt(strlen(sw->cfg.name), CONFIG_DRIVER_MAX);
        ck_assert_uint_le(sw->cfg.size, CONFIG_SETTINGS_MAX);
        ck_assert(sw->select != NULL);
    }
    ck_assert_uint_ge(n, 7);
    /* A real wavemeter's lasers are monitor-only unless they say otherwise. */
    struct config cfg;
    char err[256] = "";
    ck_assert_msg(parse(&cfg, "{\"wavemeter\": {\"driver\": \"highfinesse\"}}", err, sizeof(err)) ==
                      0,
                  "%s", err);
    ck_assert_int_eq(cfg.nlasers, 4);
    for (int i = 0; i < cfg.nlasers; i++)
        ck_assert_str_eq(cfg.lasers[i].actuator.drv.driver, "");
}
END_TEST

/* ---- reload: what a SIGHUP may change ---- */

START_TEST(test_update_runtime) {
    static const char before[] =
        "{\"limits\": {\"max_batch\": 10}, \"access\": {\"write_from\": [\"127.0.0.0/8\"]},\n"
        " \"lasers\": [{\"name\": \"a\", \"channel\": 1, \"kp_v_per_mhz\": 1},\n"
        "             {\"name\": \"b\", \"channel\": 2}]}";
    static const char gains_limits[] =
        "{\"log_level\": \"debug\",\n"
        " \"limits\": {\"max_batch\": 20, \"line_timeout_s\": 3, \"max_clients_per_address\": 2},\n"
        " \"access\": {\"write_from\": [\"127.0.0.0/8\", \"10.0.0.0/8\"]},\n"
        " \"lasers\": [{\"name\": \"a\", \"channel\": 1, \"kp_v_per_mhz\": 2},\n"
        "             {\"name\": \"b\", \"channel\": 2}]}";
    static const char restart_only[] =
        "{\"listen\": \"127.0.0.1:9\", \"limits\": {\"max_batch\": 10},\n"
        " \"access\": {\"write_from\": [\"127.0.0.0/8\"]},\n"
        " \"wavemeter\": {\"seed\": 5},\n"
        " \"lasers\": [{\"name\": \"a\", \"channel\": 1, \"kp_v_per_mhz\": 1},\n"
        "             {\"name\": \"b\", \"channel\": 3}]}";
    static struct config cur, next;
    char err[512] = "", restart[256];

    ck_assert_msg(parse(&cur, before, err, sizeof(err)) == 0, "%s", err);
    ck_assert_msg(parse(&next, before, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(config_update_runtime(&cur, &next, restart, sizeof(restart)), 0);
    ck_assert_str_eq(restart, "");

    /* Run-time keys copied; the gains are left to the lasers, and are not
     * a restart. */
    ck_assert_msg(parse(&next, gains_limits, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(config_update_runtime(&cur, &next, restart, sizeof(restart)), 5);
    ck_assert_str_eq(restart, "");
    ck_assert_str_eq(cur.log_level, "debug");
    ck_assert_int_eq(cur.max_batch, 20);
    ck_assert_int_eq(cur.line_timeout_s, 3);
    ck_assert_int_eq(cur.max_clients_per_address, 2);
    ck_assert_uint_eq(cur.write_from.n, 2);
    ck_assert(cur.lasers[0].kp_v_per_mhz == 1);

    /* Restart-only keys are named and keep the running values. */
    ck_assert_msg(parse(&next, restart_only, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(config_update_runtime(&cur, &next, restart, sizeof(restart)), 5);
    ck_assert_str_eq(restart, "listen, wavemeter, lasers[1]");
    ck_assert_int_eq(cur.listen_port, 7420);
    ck_assert_int_eq(cur.lasers[1].channel, 2);
    ck_assert(((const struct sim_settings *)(const void *)cur.wavemeter.u.bytes)->seed == 0);
}
END_TEST

static Suite *config_suite(void) {
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("jsonpos");

    tcase_add_loop_test(tc, test_jsonpos, 0, (int)(sizeof(pos_cases) / sizeof(pos_cases[0])));
    tcase_add_test(tc, test_jsonpos_steps);
    suite_add_tcase(s, tc);

    tc = tcase_create("load");
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_simulator_json_is_the_defaults);
    tcase_add_test(tc, test_wavemeterd_json);
    tcase_add_loop_test(tc, test_bad, 0, (int)(sizeof(bad_cases) / sizeof(bad_cases[0])));
    tcase_add_test(tc, test_error_truncated);
    tcase_add_test(tc, test_overrides);
    tcase_add_test(tc, test_partial_keeps_default_lasers);
    tcase_add_test(tc, test_load_file);
    tcase_add_test(tc, test_laser_by_name);
    tcase_add_test(tc, test_doc_lists_every_key);
    tcase_add_test(tc, test_driver_tables_fit);
    tcase_add_test(tc, test_lab_ws7_json);
    tcase_add_test(tc, test_update_runtime);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(config_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
