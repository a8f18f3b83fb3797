/*
 * metrics: the exposition of a daemon struct built by hand (no loop, no
 * device): each laser's lock state set has exactly one 1, whatever its
 * state, and every sample belongs to a family announced by HELP and TYPE.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "metrics.h"

static uint64_t fake_now_ns(void *ctx) {
    (void)ctx;
    return 5000000000ull;
}

static double fake_wall_s(void *ctx) {
    (void)ctx;
    return 1.7e9;
}

static const struct clock fake_clock = {.now_ns = fake_now_ns, .wall_s = fake_wall_s};

/* One laser "L1" on channel 1, monitored (no actuator), no reading yet. */
static struct daemon *daemon_one_laser(void) {
    struct daemon *d = calloc(1, sizeof(*d));

    ck_assert_ptr_nonnull(d);
    d->clk = &fake_clock;
    d->start_ns = 1000000000ull;
    d->cfg.nlasers = 1;
    snprintf(d->cfg.lasers[0].name, sizeof(d->cfg.lasers[0].name), "L1");
    d->cfg.lasers[0].channel = 1;
    d->lasers.n = 1;
    d->lasers.l[0].cfg = &d->cfg.lasers[0];
    d->lasers.l[0].error_mhz = 0.5;
    d->meter.nch = 1;
    d->meter.ch[0].cfg = &d->cfg.lasers[0];
    return d;
}

/* The text as a NUL-terminated string (the hook's text is not). */
static char *exposition(const struct daemon *d) {
    size_t len = 0;
    char *text = metrics_text(d, &len), *s;

    ck_assert_ptr_nonnull(text);
    s = malloc(len + 1);
    ck_assert_ptr_nonnull(s);
    memcpy(s, text, len);
    s[len] = '\0';
    free(text);
    return s;
}

/* Every lock state, the last one (ramping) included: a state set whose
 * samples are all 0 reads as "in no state" to an alert rule. */
START_TEST(test_lock_state_set_has_one) {
    struct daemon *d = daemon_one_laser();

    for (int s = LOCK_OFF; s < LOCK_NSTATES; s++) {
        char want[128], *text, *line, *save = NULL;
        int ones = 0, samples = 0;
        bool found = false;

        d->lasers.l[0].state = (enum lock_state)s;
        text = exposition(d);
        snprintf(want, sizeof(want),
                 "wavemeterd_laser_lock_state{laser=\"L1\",channel=\"1\",state=\"%s\"} 1",
                 laser_state_name((enum lock_state)s));
        for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            if (strncmp(line, "wavemeterd_laser_lock_state{", 28) != 0)
                continue;
            samples++;
            ones += strcmp(line + strlen(line) - 2, " 1") == 0;
            found = found || strcmp(line, want) == 0;
        }
        ck_assert_msg(samples == LOCK_NSTATES, "state %s: %d samples",
                      laser_state_name((enum lock_state)s), samples);
        ck_assert_msg(ones == 1 && found, "state %s: %d samples are 1, want \"%s\"",
                      laser_state_name((enum lock_state)s), ones, want);
        free(text);
    }
    free(d);
}
END_TEST

/* Each sample's family was announced (# HELP, then # TYPE) before it. */
START_TEST(test_families_announced) {
    struct daemon *d = daemon_one_laser();
    char *text = exposition(d), *line, *save = NULL, family[128] = "";
    bool typed = false;

    for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "# HELP ", 7) == 0) {
            size_t n = strcspn(line + 7, " ");
            ck_assert_uint_lt(n, sizeof(family));
            memcpy(family, line + 7, n);
            family[n] = '\0';
            typed = false;
        } else if (strncmp(line, "# TYPE ", 7) == 0) {
            ck_assert_msg(strncmp(line + 7, family, strlen(family)) == 0, "%s", line);
            typed = true;
        } else {
            size_t n = strcspn(line, "{ ");
            ck_assert_msg(typed && n == strlen(family) && strncmp(line, family, n) == 0,
                          "sample \"%s\" outside its family (%s)", line, family);
        }
    }
    free(text);
    free(d);
}
END_TEST

int main(void) {
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("exposition");
    SRunner *sr;
    int failed;

    tcase_add_test(tc, test_lock_state_set_has_one);
    tcase_add_test(tc, test_families_announced);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
