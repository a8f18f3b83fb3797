/*
 * test_peers: the per-address table: one row per address (IPv4 and its
 * IPv4-mapped IPv6 form are one), bounded, rows with connections never
 * reused; failed-login windows; refusal log rate limit.
 */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "peers.h"

#define S 1000000000ull

static struct sockaddr_storage addr(const char *text) {
    struct sockaddr_storage ss;

    memset(&ss, 0, sizeof(ss));
    if (strchr(text, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        ck_assert_int_eq(inet_pton(AF_INET6, text, &a->sin6_addr), 1);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        ck_assert_int_eq(inet_pton(AF_INET, text, &a->sin_addr), 1);
    }
    return ss;
}

static struct peer *get(struct peers *p, const char *text, uint64_t now) {
    struct sockaddr_storage ss = addr(text);
    return peers_get(p, (const struct sockaddr *)&ss, now);
}

START_TEST(test_one_row_per_address) {
    struct peers p;
    char name[64];

    peers_init(&p);
    struct peer *a = get(&p, "10.0.0.1", 1);
    ck_assert_ptr_nonnull(a);
    a->nconn++;
    ck_assert_ptr_eq(get(&p, "10.0.0.1", 2), a);
    ck_assert_ptr_eq(get(&p, "::ffff:10.0.0.1", 3), a); /* the same host */
    ck_assert_ptr_ne(get(&p, "10.0.0.2", 4), a);
    ck_assert_ptr_ne(get(&p, "::1", 5), a);
    peers_name(a, name, sizeof(name));
    ck_assert_str_eq(name, "10.0.0.1");
    peers_name(get(&p, "fd00::7", 6), name, sizeof(name));
    ck_assert_str_eq(name, "fd00::7");
    struct sockaddr_storage un;
    memset(&un, 0, sizeof(un));
    un.ss_family = AF_UNIX;
    ck_assert_ptr_null(peers_get(&p, (const struct sockaddr *)&un, 7));
    peers_fini(&p);
}
END_TEST

START_TEST(test_bounded_and_connected_rows_kept) {
    /* Many more addresses than rows: the table stays PEERS_MAX rows, the
     * addresses with a connection keep theirs (and their counts), idle ones
     * make room in turn, and a reused row forgets its old address. */
    struct peers p;
    char text[32];

    peers_init(&p);
    struct peer *held = get(&p, "192.168.0.1", 1);
    held->nconn = 3;
    for (unsigned i = 0; i < 3 * PEERS_MAX; i++) {
        snprintf(text, sizeof(text), "10.%u.%u.%u", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        ck_assert_ptr_nonnull(get(&p, text, 2 + i));
    }
    ck_assert_uint_eq(p.used, PEERS_MAX);
    ck_assert_ptr_eq(get(&p, "192.168.0.1", 5 * PEERS_MAX), held);
    ck_assert_int_eq(held->nconn, 3);
    /* The last addresses are still known (same row, counters kept)... */
    struct peer *last = get(&p, "10.0.95.255", 5 * PEERS_MAX); /* i = 3 * 8192 - 1 */
    last->login_failures = 7;
    ck_assert_ptr_eq(get(&p, "10.0.95.255", 5 * PEERS_MAX + 1), last);
    ck_assert_uint_eq(last->login_failures, 7);
    /* ...the first ones were pushed out: a fresh row. */
    ck_assert_uint_eq(get(&p, "10.0.0.0", 5 * PEERS_MAX + 2)->login_failures, 0);
    /* Every row connected: nothing to give a new address. */
    for (size_t i = 0; i < p.used; i++)
        p.rows[i].nconn = 1;
    ck_assert_ptr_null(get(&p, "172.16.0.1", 6 * PEERS_MAX));
    peers_fini(&p);
}
END_TEST

START_TEST(test_login_window) {
    struct peers p;
    uint64_t wait = 0;

    peers_init(&p);
    struct peer *r = get(&p, "10.0.0.9", 1);
    for (int i = 0; i < 9; i++) {
        ck_assert(!peers_login_blocked(r, 10 * S + (uint64_t)i, 60 * S, 10, &wait));
        peers_login_failed(r, 10 * S + (uint64_t)i, 60 * S);
    }
    ck_assert(!peers_login_blocked(r, 11 * S, 60 * S, 10, &wait));
    peers_login_failed(r, 11 * S, 60 * S); /* the 10th */
    ck_assert(peers_login_blocked(r, 40 * S, 60 * S, 10, &wait));
    ck_assert_uint_eq(wait, 30 * S); /* the window started at 10 s */
    ck_assert(!peers_login_blocked(r, 70 * S, 60 * S, 10, &wait));
    /* A new window: counts start again. */
    peers_login_failed(r, 71 * S, 60 * S);
    ck_assert_uint_eq(r->login_failures, 1);
    peers_fini(&p);
}
END_TEST

START_TEST(test_refusal_log_once_a_minute) {
    struct peers p;
    unsigned unlogged = 99;

    peers_init(&p);
    struct peer *r = get(&p, "10.0.0.3", 1);
    ck_assert(peers_refusal_log(r, 5 * S, 60 * S, &unlogged));
    ck_assert_uint_eq(unlogged, 0);
    for (int i = 0; i < 1000; i++)
        ck_assert(!peers_refusal_log(r, 6 * S + (uint64_t)i, 60 * S, &unlogged));
    ck_assert(peers_refusal_log(r, 65 * S, 60 * S, &unlogged));
    ck_assert_uint_eq(unlogged, 1000);
    peers_fini(&p);
}
END_TEST

int main(void) {
    Suite *s = suite_create("peers");
    TCase *tc = tcase_create("peers");
    SRunner *sr;
    int failed;

    tcase_add_test(tc, test_one_row_per_address);
    tcase_add_test(tc, test_bounded_and_connected_rows_kept);
    tcase_add_test(tc, test_login_window);
    tcase_add_test(tc, test_refusal_log_once_a_minute);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
