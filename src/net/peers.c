/*
 * peers: a bounded table of remote addresses and their counters, hashed by
 * address. A lookup happens once per connection or login, never per
 * request.
 */
#include "peers.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

void peers_init(struct peers *p) {
    memset(p, 0, sizeof(*p));
}

void peers_fini(struct peers *p) {
    free(p->rows);
    free(p->heads);
    memset(p, 0, sizeof(*p));
}

/* FNV-1a: the addresses come from the network, but the table is bounded
 * whatever the spread, so a weak hash costs time, never memory. */
static size_t bucket(const uint8_t key[16]) {
    uint32_t h = 2166136261u;

    for (int i = 0; i < 16; i++)
        h = (h ^ key[i]) * 16777619u;
    return h % PEERS_BUCKETS;
}

static void unlink_row(struct peers *p, struct peer *r) {
    int32_t idx = (int32_t)(r - p->rows), *link = &p->heads[bucket(r->addr)];

    while (*link != -1 && *link != idx)
        link = &p->rows[*link].next;
    if (*link == idx)
        *link = r->next;
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
    struct peer *r = NULL;

    if (!addr_key(addr, key))
        return NULL;
    if (p->rows == NULL) {
        p->rows = calloc(PEERS_MAX, sizeof(*p->rows));
        p->heads = malloc(PEERS_BUCKETS * sizeof(*p->heads));
        if (p->rows == NULL || p->heads == NULL) {
            peers_fini(p);
            return NULL;
        }
        memset(p->heads, 0xff, PEERS_BUCKETS * sizeof(*p->heads)); /* all -1 */
    }
    size_t b = bucket(key);
    for (int32_t i = p->heads[b]; i != -1; i = p->rows[i].next) {
        if (memcmp(p->rows[i].addr, key, 16) == 0) {
            p->rows[i].seen_ns = now_ns;
            return &p->rows[i];
        }
    }
    if (p->used < PEERS_MAX) {
        r = &p->rows[p->used++];
    } else {
        /* Reuse the next row, in turn, of an address with no connection. */
        for (size_t n = 0; n < PEERS_MAX && r == NULL; n++) {
            struct peer *c = &p->rows[p->hand];
            p->hand = (p->hand + 1) % PEERS_MAX;
            if (c->nconn == 0)
                r = c;
        }
        if (r == NULL)
            return NULL;
        unlink_row(p, r);
    }
    memset(r, 0, sizeof(*r));
    memcpy(r->addr, key, 16);
    r->seen_ns = now_ns;
    r->next = p->heads[b];
    p->heads[b] = (int32_t)(r - p->rows);
    return r;
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
