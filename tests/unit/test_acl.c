/*
 * test_acl: parsing of access.write_from networks and matching of peers.
 */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "acl.h"

static const struct {
    const char *label, *text, *err; /* err NULL: must parse */
} parse_rows[] = {
    {"v4 network", "10.0.0.0/8", NULL},
    {"v4 host", "192.168.1.7", NULL},
    {"v4 all", "0.0.0.0/0", NULL},
    {"v6 loopback", "::1", NULL},
    {"v6 network", "fd00::/8", NULL},
    {"host bits set", "10.1.2.3/8", "\"10.1.2.3/8\": host bits set below the /8 prefix"},
    {"prefix too long v4", "10.0.0.0/33", "\"10.0.0.0/33\": prefix must be 0 to 32 bits"},
    {"prefix not a number", "10.0.0.0/x", "\"10.0.0.0/x\": prefix must be 0 to 32 bits"},
    {"empty prefix", "10.0.0.0/", "\"10.0.0.0/\": prefix must be 0 to 32 bits"},
    {"hostname", "lab-pc", "\"lab-pc\" is not a numeric IPv4 or IPv6 address"},
    {"empty", "", "\"\" is not an address or network"},
    {"v4-mapped entry", "::ffff:10.0.0.0/104",
     "\"::ffff:10.0.0.0/104\": write IPv4-mapped networks as IPv4 (10.0.0.0/8)"},
};

START_TEST(test_parse) {
    struct acl_net net;
    char err[128] = "";
    int rc = acl_parse_net(parse_rows[_i].text, &net, err, sizeof(err));

    if (parse_rows[_i].err == NULL)
        ck_assert_msg(rc == 0, "%s: %s", parse_rows[_i].label, err);
    else {
        ck_assert_msg(rc < 0, "%s: accepted", parse_rows[_i].label);
        ck_assert_str_eq(err, parse_rows[_i].err);
    }
}
END_TEST

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

static const struct {
    const char *label, *nets[3], *peer;
    int allowed;
} match_rows[] = {
    {"loopback v4", {"127.0.0.0/8", "::1"}, "127.0.0.1", 1},
    {"loopback v6", {"127.0.0.0/8", "::1"}, "::1", 1},
    {"lan refused by loopback list", {"127.0.0.0/8", "::1"}, "10.1.2.3", 0},
    {"inside /16", {"10.1.0.0/16"}, "10.1.255.4", 1},
    {"outside /16", {"10.1.0.0/16"}, "10.2.0.1", 0},
    {"odd prefix inside", {"192.168.4.0/22"}, "192.168.7.200", 1},
    {"odd prefix outside", {"192.168.4.0/22"}, "192.168.8.1", 0},
    {"v4-mapped v6 peer", {"10.0.0.0/8"}, "::ffff:10.9.9.9", 1},
    {"v4 net never matches v6 peer", {"0.0.0.0/0"}, "fd00::1", 0},
    {"everyone", {"0.0.0.0/0", "::/0"}, "203.0.113.9", 1},
    {"empty list refuses all", {NULL}, "127.0.0.1", 0},
};

START_TEST(test_match) {
    struct acl acl;
    struct sockaddr_storage peer = addr(match_rows[_i].peer);
    char err[128];

    memset(&acl, 0, sizeof(acl));
    for (size_t k = 0; k < 3 && match_rows[_i].nets[k]; k++) {
        ck_assert_int_eq(acl_parse_net(match_rows[_i].nets[k], &acl.nets[k], err, sizeof(err)), 0);
        acl.n = k + 1;
    }
    ck_assert_msg(acl_allows(&acl, (struct sockaddr *)&peer) == (match_rows[_i].allowed != 0), "%s",
                  match_rows[_i].label);
}
END_TEST

int main(void) {
    Suite *s = suite_create("acl");
    TCase *tc = tcase_create("acl");
    SRunner *sr;
    int failed;

    tcase_add_loop_test(tc, test_parse, 0, (int)(sizeof(parse_rows) / sizeof(parse_rows[0])));
    tcase_add_loop_test(tc, test_match, 0, (int)(sizeof(match_rows) / sizeof(match_rows[0])));
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
