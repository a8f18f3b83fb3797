/*
 * peers: a bounded table of remote addresses and their counters. Linear
 * search: a lab has a handful of hosts, an attack a few thousand at most,
 * and a lookup happens once per connection or login, never per request.
 */
#include "peers.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

void peers_init(struct peers *p) {
    p->rows = NULL;
    p->used = 0;
}

void peers_fini(struct peers *p) {
    free(p->rows);
    p->rows = NULL;
    p->used = 0;
}

/* IPv4 and IPv4-mapped IPv6 are one address. */
static bool addr_key(const struct sockaddr *sa, uint8_t key[16]) {
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

    if (sa->sa_family == AF_INET) {
        memcpy(key, mapped, sizeof(mapped));
        memcpy(key + 12, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(key, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
        return true;
    }
    return false;
}

struct peer *peers_get(struct peers *p, const struct sockaddr *addr, uint64_t now_ns) {
    uint8_t key[16];
    struct peer *victim = NULL;

    if (!addr_key(addr, key))
        return NULL;
    if (p->rows == NULL && (p->rows = calloc(PEERS_MAX, sizeof(*p->rows))) == NULL)
        return NULL;
    for (size_t i = 0; i < p->used; i++) {
        struct peer *r = &p->rows[i];
        if (memcmp(r->addr, key, 16) == 0) {
            r->seen_ns = now_ns;
            return r;
        }
        /* Reuse the row of the address seen least recently, among those
         * with no connection open. */
        if (r->nconn == 0 && (victim == NULL || r->seen_ns < victim->seen_ns))
            victim = r;
    }
    if (p->used < PEERS_MAX)
        victim = &p->rows[p->used++];
    if (victim == NULL)
        return NULL;
    memset(victim, 0, sizeof(*victim));
    memcpy(victim->addr, key, 16);
    victim->used = true;
    victim->seen_ns = now_ns;
    return victim;
}

bool peers_login_blocked(struct peer *r, uint64_t now_ns, uint64_t window_ns, unsigned max,
                         uint64_t *wait_ns) {
    r->seen_ns = now_ns;
    if (r->login_failures < max)
        return false;
    if (now_ns - r->login_window_ns >= window_ns) {
        r->login_failures = 0; /* the window has passed */
        return false;
    }
    if (wait_ns)
        *wait_ns = window_ns - (now_ns - r->login_window_ns);
    return true;
}

void peers_login_failed(struct peer *r, uint64_t now_ns, uint64_t window_ns) {
    if (r->login_failures == 0 || now_ns - r->login_window_ns >= window_ns) {
        r->login_window_ns = now_ns;
        r->login_failures = 0;
    }
    r->login_failures++;
    r->seen_ns = now_ns;
}

bool peers_refusal_log(struct peer *r, uint64_t now_ns, uint64_t interval_ns, unsigned *unlogged) {
    if (r->refused_log_ns != 0 && now_ns - r->refused_log_ns < interval_ns) {
        r->refused_unlogged++;
        return false;
    }
    *unlogged = r->refused_unlogged;
    r->refused_unlogged = 0;
    r->refused_log_ns = now_ns ? now_ns : 1;
    return true;
}

void peers_name(const struct peer *r, char *buf, size_t len) {
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

    if (memcmp(r->addr, mapped, sizeof(mapped)) == 0)
        inet_ntop(AF_INET, r->addr + 12, buf, (socklen_t)len);
    else
        inet_ntop(AF_INET6, r->addr, buf, (socklen_t)len);
}
