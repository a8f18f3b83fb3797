/*
 * test_numfmt: the fast path writes what jansson writes with 15 digits, for
 * a table of edge cases and for a million values across every magnitude
 * (fixed seed), checked against jansson itself.
 */
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "numfmt.h"

static void check_same(double x) {
    char got[NUMFMT_REAL_MAX];
    json_t *v = json_real(x);
    char *want = json_dumps(v, JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
    /* An exponent of 308 may have been rounded past DBL_MAX: 17 digits
     * then, as the answers do (jsonrpc.c). */
    if (strstr(want, "e308")) {
        free(want);
        want = json_dumps(v, JSON_ENCODE_ANY);
    }
    size_t n = numfmt_real(got, x);

    ck_assert_msg(strcmp(got, want) == 0, "%.17g: got %s, jansson %s", x, got, want);
    ck_assert_uint_eq(n, strlen(got));
    free(want);
    json_decref(v);
}

static const double edge[] = {
    0.0,
    -0.0,
    1.0,
    -1.0,
    10.0,
    0.1,
    0.5,
    1e-4,
    9.99999999999999e-5,
    1e-5,
    1e15,
    1e15 - 1,
    999999999999999.4,
    999999999999999.6,
    9.999999999999995,
    0.30000000000000004,
    79.966,
    751.526529858023,
    398.911343897116,
    1795314768.68689,
    1795314768.686894,
    384.230000000001,
    -3.99999999999999,
    123456789012345.6,
    1e300,
    1.797693134862314e308,
    1.7976931348623e308,
    1e308,
    -1.7976931348623157e308,
    5e-324,
    2.5e-5,
    0.00012345678901234567,
    100.0,
    1e14,
    99999999999999.95,
    0.001,
    4.35,
};

START_TEST(test_edges) {
    for (size_t i = 0; i < sizeof(edge) / sizeof(edge[0]); i++)
        check_same(edge[i]);
}
END_TEST

START_TEST(test_random_values) {
    /* xorshift64*, fixed seed: the same million values every run. */
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 1000000; i++) {
        s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
        uint64_t r = s * 2685821657736338717ull;
        double mant = (double)(r >> 11) * 0x1p-53; /* [0, 1) */
        int exp10 = (int)((r >> 3) % 26) - 8;      /* 1e-8 .. 1e17 */
        double x = (mant + 0.1) * pow(10, exp10) * ((r & 1) ? -1 : 1);
        check_same(x);
    }
}
END_TEST

int main(void) {
    Suite *su = suite_create("numfmt");
    TCase *tc = tcase_create("numfmt");
    SRunner *sr;
    int failed;

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_edges);
    tcase_add_test(tc, test_random_values);
    suite_add_tcase(su, tc);
    sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
