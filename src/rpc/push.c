/*
 * push: subscriptions and their notifications (see push.h). Per session, a
 * list of subscriptions; per subscription, at most one waiting push per
 * (topic, laser), written in sequence order when the connection has room.
 * It must not build payloads or look into connections beyond the sink.
 */
#include "push.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* The pacing timer: often enough that a rate-limited push waits at most a
 * few ms past its time, rare enough to cost nothing (it runs only while
 * some subscription exists). */
#define PUSH_TICK_MS 10

static const char *const topic_keys[PUSH_NTOPICS] = {
    [PUSH_READINGS] = "reading",
    [PUSH_LOCKS] = "lock",
    [PUSH_STATUS] = "status",
};

struct pending {
    char *payload; /* NULL: nothing waits */
    const char *method;
    uint64_t seq;
    bool limited; /* held for max_rate_hz, not for a slow reader */
};

struct push_sub {
    struct push_sub *next;
    uint64_t id;
    struct push_filter f;
    uint64_t interval_ns; /* 1 / max_rate_hz, 0 = none */
    uint64_t seq;         /* of the last event given to it */
    uint64_t missed;      /* replaced while waiting for a slow reader, since the last push */
    struct pending pend[PUSH_NTOPICS][PUSH_KEYS];
    uint64_t last_sent_ns[PUSH_NTOPICS][PUSH_KEYS];
};

struct push_sess {
    struct push_sess *prev, *next;
    struct rpc_session *s;
    struct push_sub *subs;
    int nsubs;
    uint64_t stuck_since_ns; /* backlog at the soft cap since; 0 = not */
};

static uint64_t now_ns(void) {
    return uv_hrtime();
}

static size_t soft_cap(const struct push *p) {
    size_t soft = (size_t)p->cfg->push_soft_bytes, hard = (size_t)p->cfg->write_queue_max_bytes;

    /* Below the hard cap with room for one more push, whatever the keys say. */
    return soft < hard / 2 ? soft : hard / 2;
}

static void tick_cb(uv_timer_t *t);

int push_init(struct push *p, uv_loop_t *loop, const struct config *cfg) {
    int rc;

    memset(p, 0, sizeof(*p));
    p->loop = loop;
    p->cfg = cfg;
    p->next_id = 1;
    if ((rc = uv_timer_init(loop, &p->timer)) < 0)
        return rc;
    p->timer.data = p;
    return 0;
}

void push_stop(struct push *p) {
    if (!uv_is_closing((uv_handle_t *)&p->timer))
        uv_close((uv_handle_t *)&p->timer, NULL);
}

bool push_wanted(const struct push *p, enum push_topic t) {
    for (const struct push_sess *ps = p->sessions; ps; ps = ps->next)
        for (const struct push_sub *sub = ps->subs; sub; sub = sub->next)
            if (sub->f.topics & (1u << t))
                return true;
    return false;
}

static struct push_sess **slot(struct rpc_session *s) {
    return (struct push_sess **)rpc_session_push_slot(s);
}

static void sub_free(struct push_sub *sub) {
    for (int t = 0; t < PUSH_NTOPICS; t++)
        for (int k = 0; k < PUSH_KEYS; k++)
            free(sub->pend[t][k].payload);
    free(sub);
}

int push_subscribe(struct push *p, struct rpc_session *s, const struct push_filter *f,
                   uint64_t *id) {
    struct push_sess *ps = *slot(s);
    struct push_sub *sub;

    if (rpc_session_sink(s) == NULL)
        return -ENOTSUP;
    if (ps != NULL && ps->nsubs >= p->cfg->max_subscriptions)
        return -EMFILE;
    if ((sub = calloc(1, sizeof(*sub))) == NULL)
        return -ENOMEM;
    if (ps == NULL) {
        if ((ps = calloc(1, sizeof(*ps))) == NULL) {
            free(sub);
            return -ENOMEM;
        }
        ps->s = s;
        ps->next = p->sessions;
        if (p->sessions)
            p->sessions->prev = ps;
        p->sessions = ps;
        *slot(s) = ps;
    }
    sub->id = p->next_id++;
    sub->f = *f;
    sub->interval_ns = f->max_rate_hz > 0 ? (uint64_t)(1e9 / f->max_rate_hz) : 0;
    sub->next = ps->subs;
    ps->subs = sub;
    ps->nsubs++;
    p->nsubs++;
    if (!p->timer_on) {
        uv_timer_start(&p->timer, tick_cb, PUSH_TICK_MS, PUSH_TICK_MS);
        p->timer_on = true;
    }
    *id = sub->id;
    return 0;
}

static void sess_drop_if_empty(struct push *p, struct push_sess *ps) {
    if (ps->subs != NULL)
        return;
    if (ps->prev)
        ps->prev->next = ps->next;
    else
        p->sessions = ps->next;
    if (ps->next)
        ps->next->prev = ps->prev;
    *slot(ps->s) = NULL;
    free(ps);
    if (p->sessions == NULL && p->timer_on) {
        uv_timer_stop(&p->timer);
        p->timer_on = false;
    }
}

int push_unsubscribe(struct push *p, struct rpc_session *s, uint64_t id) {
    struct push_sess *ps = *slot(s);

    for (struct push_sub **pp = ps ? &ps->subs : NULL; pp && *pp; pp = &(*pp)->next) {
        struct push_sub *sub = *pp;
        if (sub->id != id)
            continue;
        *pp = sub->next;
        sub_free(sub);
        ps->nsubs--;
        p->nsubs--;
        sess_drop_if_empty(p, ps);
        return 0;
    }
    return -ENOENT;
}

void push_session_closed(struct push *p, struct rpc_session *s) {
    struct push_sess *ps = *slot(s);

    if (ps == NULL)
        return;
    while (ps->subs) {
        struct push_sub *sub = ps->subs;
        ps->subs = sub->next;
        sub_free(sub);
        ps->nsubs--;
        p->nsubs--;
    }
    sess_drop_if_empty(p, ps);
}

/* The notification for one waiting push; NULL when out of memory. */
static char *envelope(const struct push_sub *sub, int t, const struct pending *pe) {
    char head[160];
    size_t n, plen = strlen(pe->payload);
    char *out;

    if (sub->missed > 0)
        n = (size_t)snprintf(
            head, sizeof(head),
            "{\"jsonrpc\":\"2.0\",\"method\":\"%s\",\"params\":{\"subscription\":%" PRIu64
            ",\"seq\":%" PRIu64 ",\"missed\":%" PRIu64 ",\"%s\":",
            pe->method, sub->id, pe->seq, sub->missed, topic_keys[t]);
    else
        n = (size_t)snprintf(
            head, sizeof(head),
            "{\"jsonrpc\":\"2.0\",\"method\":\"%s\",\"params\":{\"subscription\":%" PRIu64
            ",\"seq\":%" PRIu64 ",\"%s\":",
            pe->method, sub->id, pe->seq, topic_keys[t]);
    if (n >= sizeof(head) || (out = malloc(n + plen + 3)) == NULL)
        return NULL;
    memcpy(out, head, n);
    memcpy(out + n, pe->payload, plen);
    memcpy(out + n + plen, "}}", 3);
    return out;
}

/*
 * Write what waits for session ps, oldest sequence first, while the
 * connection owes no answers (a subscribe's answer goes first) and its
 * backlog is under the soft cap. Rate-limited pushes wait for their time.
 */
static void sess_flush(struct push *p, struct push_sess *ps) {
    const struct rpc_sink *sink = rpc_session_sink(ps->s);
    uint64_t now = now_ns();

    if (sink == NULL)
        return;
    for (;;) {
        struct push_sub *best_sub = NULL;
        struct pending *best = NULL;
        int best_t = 0, best_k = 0;
        bool owed;
        size_t bl = sink->backlog(sink->conn, &owed);
        char *text;

        if (owed)
            return;
        if (bl >= soft_cap(p)) {
            if (ps->stuck_since_ns == 0)
                ps->stuck_since_ns = now;
            return;
        }
        ps->stuck_since_ns = 0;
        for (struct push_sub *sub = ps->subs; sub; sub = sub->next)
            for (int t = 0; t < PUSH_NTOPICS; t++)
                for (int k = 0; k < PUSH_KEYS; k++) {
                    struct pending *pe = &sub->pend[t][k];
                    if (pe->payload == NULL)
                        continue;
                    if (sub->interval_ns && sub->last_sent_ns[t][k] != 0 &&
                        now - sub->last_sent_ns[t][k] < sub->interval_ns)
                        continue; /* its time has not come */
                    if (best == NULL || pe->seq < best->seq ||
                        (pe->seq == best->seq && sub->id < best_sub->id)) {
                        best = pe;
                        best_sub = sub;
                        best_t = t;
                        best_k = k;
                    }
                }
        if (best == NULL)
            return;
        text = envelope(best_sub, best_t, best);
        free(best->payload);
        best->payload = NULL;
        if (text == NULL) {
            sink->close(sink->conn, "out of memory for a notification");
            return;
        }
        best_sub->missed = 0;
        best_sub->last_sent_ns[best_t][best_k] = now;
        p->delivered++;
        sink->write(sink->conn, text);
    }
}

void push_session_drained(struct push *p, struct rpc_session *s) {
    struct push_sess *ps = *slot(s);

    if (ps != NULL)
        sess_flush(p, ps);
}

void push_event(struct push *p, enum push_topic t, int laser, const char *method,
                const char *payload) {
    int k = laser >= 0 && laser < CONFIG_MAX_LASERS ? laser : CONFIG_MAX_LASERS;
    uint64_t now = now_ns();

    for (struct push_sess *ps = p->sessions, *next; ps; ps = next) {
        bool any = false;

        next = ps->next;
        for (struct push_sub *sub = ps->subs; sub; sub = sub->next) {
            struct pending *pe = &sub->pend[t][k];
            char *copy;

            if (!(sub->f.topics & (1u << t)) || (laser >= 0 && !sub->f.lasers[laser]))
                continue;
            if ((copy = strdup(payload)) == NULL)
                continue; /* this one is lost; counted below as missed */
            sub->seq++;
            if (pe->payload != NULL) {
                free(pe->payload);
                p->coalesced++;
                if (!pe->limited)
                    sub->missed++;
            }
            pe->payload = copy;
            pe->method = method;
            pe->seq = sub->seq;
            pe->limited = sub->interval_ns && sub->last_sent_ns[t][k] != 0 &&
                          now - sub->last_sent_ns[t][k] < sub->interval_ns;
            any = true;
        }
        if (any)
            sess_flush(p, ps);
    }
}

/* Rate-limited pushes whose time has come; readers stuck at the soft cap
 * for longer than limits.write_stall_timeout_s are closed. */
static void tick_cb(uv_timer_t *t) {
    struct push *p = t->data;
    uint64_t stall_ns = (uint64_t)p->cfg->write_stall_timeout_s * 1000000000u, now = now_ns();

    for (struct push_sess *ps = p->sessions, *next; ps; ps = next) {
        next = ps->next;
        sess_flush(p, ps);
        if (ps->stuck_since_ns != 0 && now - ps->stuck_since_ns > stall_ns) {
            char why[96];
            snprintf(why, sizeof(why), "took no notifications for %d s",
                     p->cfg->write_stall_timeout_s);
            const struct rpc_sink *sink = rpc_session_sink(ps->s);
            ps->stuck_since_ns = 0;
            if (sink != NULL)
                sink->close(sink->conn, why);
        }
    }
}
