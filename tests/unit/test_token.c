/*
 * test_token: the write-access token: cookie files, token files, checks.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "token.h"

static char dir[64];

static void setup(void) {
    snprintf(dir, sizeof(dir), "/tmp/test_token.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void) {
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");

    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

START_TEST(test_cookie) {
    struct token t, again;
    struct stat st;
    char err[256], path[128];

    ck_assert_int_eq(token_make_cookie(&t, dir, err, sizeof(err)), 0);
    snprintf(path, sizeof(path), "%s/cookie", dir);
    ck_assert_str_eq(t.path, path);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0640);
    ck_assert_uint_eq(strlen(t.value), 64);
    ck_assert_uint_eq(strspn(t.value, "0123456789abcdef"), 64);
    /* What is on disk is what the daemon checks against. */
    ck_assert_int_eq(token_load(&again, path, err, sizeof(err)), 0);
    ck_assert_str_eq(again.value, t.value);
    ck_assert(token_check(&t, again.value, strlen(again.value)));
    /* A new start makes a new cookie. */
    ck_assert_int_eq(token_make_cookie(&again, dir, err, sizeof(err)), 0);
    ck_assert_str_ne(again.value, t.value);
}
END_TEST

static const struct {
    const char *label, *file_text;
    int ok;
    const char *value;
} load_rows[] = {
    {"plain line", "correct horse battery staple\n", 1, "correct horse battery staple"},
    {"white space around", "  \t0123456789abcdef0123\r\n\n", 1, "0123456789abcdef0123"},
    {"too short", "tiny\n", 0, NULL},
    {"two lines", "0123456789abcdef\n0123456789abcdef\n", 0, NULL},
    {"empty", "", 0, NULL},
};

START_TEST(test_load) {
    struct token t;
    char err[256], path[128];
    int rc;

    snprintf(path, sizeof(path), "%s/token", dir);
    write_file(path, load_rows[_i].file_text);
    rc = token_load(&t, path, err, sizeof(err));
    if (load_rows[_i].ok) {
        ck_assert_msg(rc == 0, "%s: %s", load_rows[_i].label, err);
        ck_assert_str_eq(t.value, load_rows[_i].value);
    } else {
        ck_assert_msg(rc < 0, "%s: accepted", load_rows[_i].label);
        ck_assert_msg(strstr(err, "must hold one line of 16 to 256 characters") != NULL, "%s: %s",
                      load_rows[_i].label, err);
    }
}
END_TEST

START_TEST(test_check) {
    struct token t = {.value = "0123456789abcdef0123"};

    ck_assert(token_check(&t, "0123456789abcdef0123", 20));
    ck_assert(!token_check(&t, "0123456789abcdef012", 19));   /* a prefix */
    ck_assert(!token_check(&t, "0123456789abcdef01234", 21)); /* longer */
    ck_assert(!token_check(&t, "1123456789abcdef0123", 20));  /* first byte */
    ck_assert(!token_check(&t, "0123456789abcdef0124", 20));  /* last byte */
    ck_assert(!token_check(&t, "", 0));
    struct token empty = {.value = ""};
    ck_assert(!token_check(&empty, "", 0)); /* no token never matches */
}
END_TEST

int main(void) {
    Suite *s = suite_create("token");
    TCase *tc = tcase_create("token");
    SRunner *sr;
    int failed;

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_cookie);
    tcase_add_loop_test(tc, test_load, 0, (int)(sizeof(load_rows) / sizeof(load_rows[0])));
    tcase_add_test(tc, test_check);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
