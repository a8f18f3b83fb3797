/*
 * push: subscriptions and the notifications they bring to clients. It keeps
 * each subscription's filter, sequence and pending pushes, writes them to a
 * session's connection through its sink in order, and keeps memory bounded
 * whatever a client reads: above the soft cap only the newest push per
 * (subscription, topic, laser) waits, and what it replaced is counted as
 * missed. It builds no payload itself (the methods do) and never sees a
 * socket.
 */
#ifndef WMD_PUSH_H
#define WMD_PUSH_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "jsonrpc.h"

enum push_topic { PUSH_READINGS, PUSH_LOCKS, PUSH_STATUS, PUSH_NTOPICS };

/* The most subscriptions one connection may hold (a config key may lower it). */
#define PUSH_KEYS (CONFIG_MAX_LASERS + 1) /* per topic: each laser, and "no laser" */

/* What a subscription wants. */
struct push_filter {
    unsigned topics;                /* 1u << enum push_topic */
    bool lasers[CONFIG_MAX_LASERS]; /* the lasers wanted, by index in the config */
    double max_rate_hz;             /* per laser and topic; 0 = every one */
};

struct push_sess;

/* Embedded in the daemon; push_init, push_stop (closes its timer), push_fini. */
struct push {
    uv_loop_t *loop;
    const struct config *cfg;
    uv_timer_t timer; /* paces rate-limited pushes and notices stalled readers */
    bool timer_on;
    struct push_sess *sessions;
    uint64_t next_id;
    int nsubs;
    uint64_t delivered, coalesced; /* for status */
};

int push_init(struct push *p, uv_loop_t *loop, const struct config *cfg);
void push_stop(struct push *p);

/* Whether anyone wants topic t now: a caller may skip building a payload. */
bool push_wanted(const struct push *p, enum push_topic t);

/*
 * Loop thread. A new subscription of session s; *id is its number. 0, or
 * -ENOTSUP (s has no sink), -EMFILE (limits.max_subscriptions reached),
 * -ENOMEM.
 */
int push_subscribe(struct push *p, struct rpc_session *s, const struct push_filter *f,
                   uint64_t *id);
/* 0, or -ENOENT (no such subscription of s). */
int push_unsubscribe(struct push *p, struct rpc_session *s, uint64_t id);

/*
 * Loop thread. One event: topic t about laser (index in the config, -1 for
 * none), notified as method with the object payload (JSON text, borrowed)
 * under the key named by the topic ("reading", "lock", "status"). Every
 * matching subscription gets it, now or when its reader catches up.
 */
void push_event(struct push *p, enum push_topic t, int laser, const char *method,
                const char *payload);

/* The rpc_server hooks: a session's connection took output; it is gone. */
void push_session_drained(struct push *p, struct rpc_session *s);
void push_session_closed(struct push *p, struct rpc_session *s);

#endif
