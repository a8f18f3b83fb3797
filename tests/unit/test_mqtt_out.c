/*
 * test_mqtt_out: the pure parts of MQTT publishing: topic names, the topic
 * prefix check, the per-laser rate limit, the reconnect back-off and the
 * bounded reading queue; and the mqtt section of the config loader, whose
 * one error line is all an operator sees when the daemon refuses to start.
 */
#include "config.h"
#include "mqtt_out.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

START_TEST(test_topics) {
    char buf[64];

    ck_assert_int_eq(mqtt_topic(buf, sizeof(buf), "wavemeter", "399", "reading"), 27);
    ck_assert_str_eq(buf, "wavemeter/laser/399/reading");
    ck_assert_int_gt(mqtt_topic(buf, sizeof(buf), "lab2/wm", "Ti.Sa-1", "lock"), 0);
    ck_assert_str_eq(buf, "lab2/wm/laser/Ti.Sa-1/lock");
    ck_assert_int_gt(mqtt_topic(buf, sizeof(buf), "wavemeter", NULL, "status"), 0);
    ck_assert_str_eq(buf, "wavemeter/status");
    /* Too long: an error and an empty string, never a cut topic. */
    ck_assert_int_eq(mqtt_topic(buf, 20, "wavemeter", "399", "reading"), -ENAMETOOLONG);
    ck_assert_str_eq(buf, "");
}
END_TEST

static const struct {
    const char *label;
    const char *prefix;
    const char *why; /* NULL: valid */
} prefix_cases[] = {
    {"default", "wavemeter", NULL},
    {"several levels", "lab2/floor1/wavemeter", NULL},
    {"spaces and UTF-8 are legal MQTT", "Labor 2/Wellenlängenmesser", NULL},
    {"empty", "", "must not be empty"},
    {"single-level wildcard", "lab/+/wm", "wildcards"},
    {"multi-level wildcard", "lab/#", "wildcards"},
    {"broker's own topics", "$SYS/wm", "'$'"},
    {"leading slash", "/wavemeter", "start or end with '/'"},
    {"trailing slash", "wavemeter/", "start or end with '/'"},
    {"empty level", "lab//wm", "empty level"},
};

START_TEST(test_prefix_check) {
    char why[128] = "";
    int rc = mqtt_topic_prefix_check(prefix_cases[_i].prefix, why, sizeof(why));

    if (prefix_cases[_i].why == NULL) {
        ck_assert_msg(rc == 0, "%s: refused: %s", prefix_cases[_i].label, why);
    } else {
        ck_assert_msg(rc == -EINVAL, "%s: accepted", prefix_cases[_i].label);
        ck_assert_msg(strstr(why, prefix_cases[_i].why) != NULL, "%s: reason \"%s\"",
                      prefix_cases[_i].label, why);
    }
}
END_TEST

START_TEST(test_rate_limit) {
    const uint64_t s = 1000000000u;

    /* The first reading always goes; then one per 1/rate s. */
    ck_assert(mqtt_rate_due(0, 5 * s, 1.0));
    ck_assert(!mqtt_rate_due(5 * s, 5 * s + s / 2, 1.0));
    ck_assert(!mqtt_rate_due(5 * s, 6 * s - 1, 1.0));
    ck_assert(mqtt_rate_due(5 * s, 6 * s, 1.0));
    ck_assert(!mqtt_rate_due(5 * s, 5 * s + s / 10 - 1, 10.0));
    ck_assert(mqtt_rate_due(5 * s, 5 * s + s / 10, 10.0));
    /* 0: every reading, even at the same instant. */
    ck_assert(mqtt_rate_due(5 * s, 5 * s, 0.0));
    /* A clock that went backwards (it does not, but) never silences a laser. */
    ck_assert(mqtt_rate_due(6 * s, 5 * s, 1.0));
}
END_TEST

START_TEST(test_backoff) {
    static const uint32_t want[] = {1000, 2000, 4000, 8000, 16000, 30000, 30000};
    uint32_t ms = 0;

    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        ms = mqtt_backoff_next_ms(ms);
        ck_assert_uint_eq(ms, want[i]);
    }
}
END_TEST

static char *text(const char *s) {
    char *p = strdup(s);
    ck_assert_ptr_nonnull(p);
    return p;
}

START_TEST(test_queue_drops_oldest) {
    struct mqtt_queue q;
    char name[8];

    ck_assert_int_eq(mqtt_queue_init(&q, 3), 0);
    ck_assert_ptr_null(mqtt_queue_peek(&q));
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof(name), "r%d", i);
        mqtt_queue_push(&q, i % 2, text(name), strlen(name));
    }
    /* Five in, room for three: r0 and r1 went, counted; the rest in order. */
    ck_assert_uint_eq(q.n, 3);
    ck_assert_uint_eq(q.dropped, 2);
    for (int i = 2; i < 5; i++) {
        const struct mqtt_msg *m = mqtt_queue_peek(&q);
        snprintf(name, sizeof(name), "r%d", i);
        ck_assert_ptr_nonnull(m);
        ck_assert_str_eq(m->payload, name);
        ck_assert_int_eq(m->laser, i % 2);
        ck_assert_uint_eq(m->len, strlen(name));
        mqtt_queue_pop(&q);
    }
    ck_assert_ptr_null(mqtt_queue_peek(&q));
    mqtt_queue_pop(&q); /* empty: nothing happens */
    /* Wrapped around, still in order; fini frees what is left. */
    mqtt_queue_push(&q, 0, text("a"), 1);
    mqtt_queue_push(&q, 0, text("b"), 1);
    ck_assert_str_eq(mqtt_queue_peek(&q)->payload, "a");
    ck_assert_uint_eq(q.dropped, 2);
    mqtt_queue_fini(&q);
}
END_TEST

/* ---- the mqtt section of the config ------------------------------------ */

static int parse(struct config *cfg, const char *text, char *err, size_t errlen) {
    return config_parse(cfg, "t.json", text, strlen(text), err, errlen);
}

START_TEST(test_config_defaults) {
    struct config cfg;
    char err[512] = "";

    config_defaults(&cfg);
    ck_assert(!cfg.mqtt.enabled);
    ck_assert_str_eq(cfg.mqtt.host, "localhost");
    ck_assert_int_eq(cfg.mqtt.port, 1883);
    ck_assert_str_eq(cfg.mqtt.topic_prefix, "wavemeter");
    ck_assert_str_eq(cfg.mqtt.client_id, "");
    ck_assert_int_eq(cfg.mqtt.qos, 0);
    ck_assert(cfg.mqtt.readings_max_rate_hz == 1.0);
    /* The port follows tls unless given. */
    ck_assert_msg(parse(&cfg, "{\"mqtt\": {\"tls\": true}}", err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(cfg.mqtt.port, 8883);
    ck_assert_msg(parse(&cfg, "{\"mqtt\": {\"tls\": true, \"port\": 1883}}", err, sizeof(err)) == 0,
                  "%s", err);
    ck_assert_int_eq(cfg.mqtt.port, 1883);
}
END_TEST

static const struct {
    const char *label;
    const char *text;
    const char *err; /* NULL: loads */
} config_cases[] = {
    {"a whole section",
     "{\"mqtt\": {\"enabled\": true, \"host\": \"broker.lab\", \"port\": 1884, \"client_id\": "
     "\"wm-lab2\", \"topic_prefix\": \"lab2/wm\", \"username\": \"wm\", \"password_file\": "
     "\"/etc/wavemeterd/mqtt.pw\", \"tls\": true, \"tls_cafile\": \"/etc/ssl/ca.pem\", "
     "\"tls_certfile\": \"c.pem\", \"tls_keyfile\": \"k.pem\", \"qos\": 1, "
     "\"readings_max_rate_hz\": 0, \"keepalive_s\": 30, \"connect_timeout_s\": 5, "
     "\"queue_max\": 100}}",
     NULL},
    {"unknown key", "{\"mqtt\": {\"hots\": \"x\"}}", "t.json:1:11: key \"mqtt.hots\": unknown key"},
    {"qos out of range", "{\"mqtt\": {\"qos\": 3}}",
     "t.json:1:11: key \"mqtt.qos\": must be an integer in [0, 2]"},
    {"port 0", "{\"mqtt\": {\"port\": 0}}",
     "t.json:1:11: key \"mqtt.port\": must be an integer in [1, 65535]"},
    {"negative rate", "{\"mqtt\": {\"readings_max_rate_hz\": -1}}",
     "t.json:1:11: key \"mqtt.readings_max_rate_hz\": must be a number in [0, 1000]"},
    {"empty host", "{\"mqtt\": {\"host\": \"\"}}",
     "t.json:1:11: key \"mqtt.host\": must be a string of 1 to 255 bytes"},
    {"tls not a boolean", "{\"mqtt\": {\"tls\": {\"cafile\": \"x\"}}}",
     "t.json:1:11: key \"mqtt.tls\": must be true or false"},
    {"wildcard in the prefix", "{\"mqtt\": {\"enabled\": false,\n  \"topic_prefix\": \"lab/#\"}}",
     "t.json:2:3: key \"mqtt.topic_prefix\": must not contain the MQTT wildcards '+' or '#'"},
    {"a CA file without tls", "{\"mqtt\": {\"tls_cafile\": \"/etc/ca.pem\"}}",
     "t.json:1:11: key \"mqtt.tls_cafile\": is only read with \"tls\": true"},
    {"a certificate without its key", "{\"mqtt\": {\"tls\": true, \"tls_certfile\": \"c.pem\"}}",
     "t.json:1:24: key \"mqtt.tls_certfile\": needs tls_keyfile too (a client certificate is "
     "a certificate and its key)"},
    {"a key without its certificate", "{\"mqtt\": {\"tls\": true, \"tls_keyfile\": \"k.pem\"}}",
     "t.json:1:24: key \"mqtt.tls_keyfile\": needs tls_certfile too (a client certificate is "
     "a certificate and its key)"},
    {"a password without a user", "{\"mqtt\": {\"password_file\": \"/etc/pw\"}}",
     "t.json:1:11: key \"mqtt.password_file\": needs \"username\" too (MQTT sends no password "
     "without a user name)"},
};

START_TEST(test_config_cases) {
    struct config cfg;
    char err[512] = "";
    int rc;

    config_defaults(&cfg);
    rc = config_parse(&cfg, "t.json", config_cases[_i].text, strlen(config_cases[_i].text), err,
                      sizeof(err));
    if (config_cases[_i].err == NULL) {
        ck_assert_msg(rc == 0, "%s: %s", config_cases[_i].label, err);
    } else {
        ck_assert_msg(rc == -EINVAL, "%s: loaded", config_cases[_i].label);
        ck_assert_msg(strcmp(err, config_cases[_i].err) == 0, "%s:\n got  %s\n want %s",
                      config_cases[_i].label, err, config_cases[_i].err);
    }
}
END_TEST

START_TEST(test_reload_mqtt_takes_a_restart) {
    struct config cur, next;
    char restart[256];
    static const char text[] = "{\"mqtt\": {\"enabled\": true}}";

    config_defaults(&cur);
    ck_assert_int_eq(config_parse(&next, "t.json", text, strlen(text), NULL, 0), 0);
    config_update_runtime(&cur, &next, restart, sizeof(restart));
    ck_assert_str_eq(restart, "mqtt");
    ck_assert(!cur.mqtt.enabled);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("mqtt_out");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_topics);
    tcase_add_loop_test(tc, test_prefix_check, 0, sizeof(prefix_cases) / sizeof(prefix_cases[0]));
    tcase_add_test(tc, test_rate_limit);
    tcase_add_test(tc, test_backoff);
    tcase_add_test(tc, test_queue_drops_oldest);
    tcase_add_test(tc, test_config_defaults);
    tcase_add_loop_test(tc, test_config_cases, 0, sizeof(config_cases) / sizeof(config_cases[0]));
    tcase_add_test(tc, test_reload_mqtt_takes_a_restart);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
