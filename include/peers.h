/*
 * peers: what the server remembers per remote address, across connections:
 * how many connections it has open, its recent wrong login tokens, and when
 * a refusal of it was last logged. A pure module (no sockets, no clock of its
 * own, no logging): the server asks and decides. Its table is bounded, so an
 * attacker with many addresses cannot grow it.
 */
#ifndef WMD_PEERS_H
#define WMD_PEERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Addresses remembered at once. Every connected address needs a row (up to
 * limits.max_clients, at most 4096), plus room for recently refused and
 * failed-login addresses; rows of addresses with no connection are reused
 * in turn (a clock hand), so an attacker cycling through addresses pushes
 * out only rows without connections. Lookups go through a hash of the
 * address. */
#define PEERS_MAX 8192
#define PEERS_BUCKETS 4096

/* One remote address. Plain data, owned by the table. */
struct peer {
    uint8_t addr[16];          /* IPv6, or IPv4 as ::ffff:a.b.c.d */
    int32_t next;              /* next row in its hash bucket, -1 = none */
    int nconn;                 /* connections open from here */
    uint64_t seen_ns;          /* last connection or login attempt */
    uint64_t login_window_ns;  /* start of the current failed-login window */
    unsigned login_failures;   /* wrong tokens in that window */
    uint64_t refused_log_ns;   /* last time a refusal was logged; 0 = never */
    unsigned refused_unlogged; /* refusals since */
};

/* Embedded in the server; peers_fini frees the rows. */
struct peers {
    struct peer *rows; /* PEERS_MAX, allocated on first use */
    int32_t *heads;    /* PEERS_BUCKETS first rows, -1 = empty */
    size_t used;       /* rows ever used */
    size_t hand;       /* next row to consider for reuse */
};

void peers_init(struct peers *p);
void peers_fini(struct peers *p);

/* The row for addr (AF_INET or AF_INET6), created if needed. NULL when addr
 * is neither, when out of memory, or when every row holds an address with
 * connections open (cannot happen with max_clients <= PEERS_MAX). now_ns:
 * monotonic, marks the row as seen. The pointer is valid until the next
 * peers_get, and for as long as the row has connections (nconn > 0). */
struct peer *peers_get(struct peers *p, const struct sockaddr *addr, uint64_t now_ns);

/* Failed logins: at most max wrong tokens per window_ns from one address.
 * peers_login_blocked says whether a login attempt is refused unchecked now
 * (and how many ns until it is not, in *wait_ns); peers_login_failed counts
 * one more wrong token. */
bool peers_login_blocked(struct peer *r, uint64_t now_ns, uint64_t window_ns, unsigned max,
                         uint64_t *wait_ns);
void peers_login_failed(struct peer *r, uint64_t now_ns, uint64_t window_ns);

/* Whether a refusal of this address should be logged now: the first one,
 * then at most once per interval_ns. On true, *unlogged is the number of
 * refusals not logged since the last line. */
bool peers_refusal_log(struct peer *r, uint64_t now_ns, uint64_t interval_ns, unsigned *unlogged);

/* The address as text ("127.0.0.1", "::1") for log lines. */
void peers_name(const struct peer *r, char *buf, size_t len);

#endif
