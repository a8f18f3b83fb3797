/*
 * server: TCP clients speaking newline-delimited JSON-RPC. Each client's
 * answers are written in the order its lines arrived, even when a method
 * answers later (a durable write); a client that stops reading is paused,
 * then dropped; one that vanishes mid-answer only loses its own answers.
 * Client work is metered by the clock: no loop turn spends more than a few
 * milliseconds on clients, so readings, locks and other clients never wait
 * behind one client's flood. Nothing here may block the loop, interpret a
 * method or decide who may write (each connection's rpc_session does).
 */
#include "server.h"

#include <errno.h>
#include <linux/sockios.h>
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "linebuf.h"
#include "log.h"

/* Idle and stall checks run once a second: both timeouts are whole seconds. */
#define SWEEP_MS 1000
/* Requests one client may have read and not yet been answered: enough for
 * any sane pipeline, few enough that a flood cannot grow memory without end. */
#define MAX_PENDING_LINES 1024
/* At shutdown, answers still owed (a durable write finishing) get this long. */
#define DRAIN_MS 500
/* Refused connections are logged once per address per minute. */
#define REFUSAL_LOG_NS (60 * 1000000000ull)
/* Client work per loop turn, measured with the monotonic clock. The lock
 * loops and the readings are served between turns, so this bounds how long
 * any client can hold them up: 1 ms for all clients, of which one client
 * may take 0.5 ms before the next gets its go; a call that starts just
 * before the budget ends runs to its end (the biggest, a full history of
 * 1000 readings, takes about 3 ms), so a turn stays under about 5 ms. A
 * client that used its share waits for a later turn. Short turns cost
 * nothing when nobody waits: the loop turns again at once. */
#define TURN_BUDGET_NS 1000000u
#define CLIENT_SLICE_NS 500000u
/* Also at most this many requests (batch calls count one each) per client
 * per turn, so cheap requests are shared fairly too. */
#define LINES_PER_TURN 64
/* Who goes first when clients wait for a turn: the one that has used the
 * least work lately, a sum decaying with this time constant. A client that
 * sends a ping now and then has used next to nothing and goes before a
 * flood's 60 connections, which share what is left of each turn. */
#define USAGE_TAU_NS 1e9
/* A new connection starts as if it had used this much: a flood of new
 * connections queues behind the clients already being served lightly (a
 * ping 50 times a second comes to about 2 ms), and the fee is gone in a few
 * seconds. */
#define USAGE_ENTRY_NS 10e6
/* Every line may make at least this much answer, whatever the others hold:
 * a ping, a read or an error always fits, so a well-behaved client is never
 * refused because of a flood. 64 clients x 4 KiB is what it can cost. */
#define ANSWER_FLOOR_BYTES 4096u
/* Freed answer memory after which glibc is asked to give free pages back
 * (malloc_trim, from the once-a-second sweep): after a burst of large
 * answers the daemon returns to its idle size. */
#define TRIM_AFTER_BYTES (4u * 1024 * 1024)

/* An output buffer up to this size is kept for the connection's next loop
 * turn; a bigger one (a long history) is given back. */
#define OUT_KEEP_BYTES 16384u

/* One input line's answer, in arrival order. */
struct pending {
    struct pending *next;
    struct client *client;
    struct rpc_line *line; /* NULL once done */
    char *out;             /* answer text, NULL for none */
    size_t held;           /* bytes of out counted in the client's held_bytes */
    size_t reserved;       /* answer budget taken from the server's while answered */
    bool done;
};

struct write_req {
    uv_write_t req;
    char *buf;
    size_t len;
};

struct client {
    uv_tcp_t tcp;
    struct server *srv;
    struct client *prev, *next;
    /* Output of this loop turn, answers and notifications in order, written
     * with one uv_write when the turn's I/O is done (out_flush). */
    char *out;
    size_t out_len, out_cap;
    struct client *out_next; /* on the server's out list while out_len > 0 */
    size_t kernel_est;       /* at most this much still in the kernel's buffer */
    struct linebuf lb;
    struct pending *head, *tail;
    char name[64];
    struct sockaddr_storage peer;
    /* Its access state (NULL for a refused connection): carried to rpc
     * with each line, never looked into here. */
    struct rpc_session *session;
    uint64_t last_active_ns;   /* last byte received or answer written */
    uint64_t stalled_since_ns; /* queue above the pause mark since; 0 = not */
    size_t held_bytes;         /* answers done but waiting behind an earlier one */
    size_t npending;           /* lines read and not yet written back */
    char *stash;               /* bytes read but not framed while paused */
    size_t stash_len;
    uint64_t line_started_ns;  /* first byte of an unfinished line; 0 = none */
    uint64_t turn_id;          /* the loop turn the counters below are for */
    uint64_t turn_ns;          /* work done for this client in that turn */
    double usage_ns;           /* work done for it lately (decays, USAGE_TAU_NS) */
    uint64_t usage_at_ns;      /* when usage_ns was last brought up to date */
    unsigned turn_lines;       /* requests handled in that turn */
    struct client *ready_next; /* on the server's ready list */
    struct peer *peer_row;     /* NULL when the address could not be counted */
    bool eof;                  /* nothing more is read: answer, then close */
    bool paused;               /* reading stopped: too much unread output */
    bool yielded;              /* used its turn's budget: on the ready list */
    bool reading;              /* uv_read_start in effect */
    bool in_process;           /* inside rpc_line_run or rpc_line_resume */
    bool shutting;             /* uv_shutdown issued: close follows */
    bool closing;              /* uv_close issued */
    uv_shutdown_t shutdown;
};

static void client_close(struct client *c);
static void client_flush(struct client *c);
static void server_handle_closed(uv_handle_t *h);
static void on_line(void *ctx, const char *line, size_t len);
static void on_overflow(void *ctx);
static void idle_cb(uv_idle_t *h);
static void client_read_stop(struct client *c);
static void client_end_input(struct client *c);
static void accept_one(struct server *s);
static void out_flush(struct client *c);
static void out_flush_all(struct server *s);

int server_clients_paused(const struct server *s) {
    int n = 0;

    for (const struct client *c = s->clients; c; c = c->next)
        n += c->paused;
    return n;
}

static size_t pause_mark(const struct client *c) {
    /* Stop reading a client whose unread answers reach a quarter of the hard
     * cap: a pipelining client is slowed down, not dropped. */
    return (size_t)c->srv->cfg->write_queue_max_bytes / 4;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    /* One 64 KiB buffer per read call; linebuf copies only partial lines. */
    static char slab[65536];

    (void)h, (void)suggested;
    buf->base = slab;
    buf->len = sizeof(slab);
}

static void client_closed_cb(uv_handle_t *h) {
    struct client *c = h->data;
    struct server *s = c->srv;
    struct pending *p, *n;

    for (p = c->head; p; p = n) {
        n = p->next;
        if (p->line) /* still being answered: its effects complete, answer dropped */
            rpc_line_abandon(p->line);
        s->answer_reserved -= p->reserved;
        s->answer_bytes -= p->held;
        free(p->out);
        free(p);
    }
    if (c->yielded) {
        struct client *prev = NULL;
        for (struct client *r = s->ready_head; r; prev = r, r = r->ready_next) {
            if (r != c)
                continue;
            if (prev)
                prev->ready_next = c->ready_next;
            else
                s->ready_head = c->ready_next;
            if (s->ready_tail == c)
                s->ready_tail = prev;
            break;
        }
    }
    if (c->out_len > 0) { /* closed with output unwritten: off the out list */
        for (struct client **pp = &s->out_head; *pp; pp = &(*pp)->out_next)
            if (*pp == c) {
                *pp = c->out_next;
                break;
            }
        s->answer_bytes -= c->out_len;
    }
    free(c->out);
    rpc_session_destroy(c->session); /* its lines are done or abandoned */
    if (c->peer_row)
        c->peer_row->nconn--;
    linebuf_fini(&c->lb);
    free(c->stash);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nclients--;
    free(c);
    if (s->stopping && s->nclients == 0 && !uv_is_closing((uv_handle_t *)&s->sweep))
        uv_close((uv_handle_t *)&s->sweep, server_handle_closed); /* drained early */
    if (s->on_closed && --s->closing == 0) {
        peers_fini(&s->peers);
        s->on_closed(s);
    }
}

static void client_close(struct client *c) {
    if (c->closing)
        return;
    c->closing = true;
    uv_close((uv_handle_t *)&c->tcp, client_closed_cb);
}

static void shutdown_cb(uv_shutdown_t *req, int status) {
    (void)status;
    client_close(req->data);
}

/* After the peer's EOF: once every answer is handed to the kernel, shut our
 * side down (uv_shutdown waits for queued writes) and close. */
static void client_maybe_finish(struct client *c) {
    if (!c->eof || c->head != NULL || c->closing || c->shutting)
        return;
    c->shutting = true; /* notifications are dropped from here on */
    out_flush(c);       /* uv_shutdown waits for what is handed to libuv */
    if (c->closing)
        return;
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, shutdown_cb) != 0)
        client_close(c);
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

/* Bytes of output handed to libuv and not yet to the kernel, and of this
 * turn's output not yet handed to libuv. */
static size_t queued(struct client *c) {
    return uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) + c->out_len;
}

/* Bytes of answers this client has not taken yet: queued, plus answered but
 * waiting behind an earlier answer (a durable write). */
static size_t backlog(struct client *c) {
    return queued(c) + c->held_bytes;
}

/* Flow control: a client that does not take its answers, or keeps many
 * requests outstanding, is read no further until it catches up. */
static bool client_over(struct client *c) {
    return backlog(c) >= pause_mark(c) || c->npending >= MAX_PENDING_LINES;
}

static void client_read_stop(struct client *c) {
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

/* Read nothing more from c, not even what is read and not yet framed: it
 * gets the answers it is owed, then is closed, as after its own EOF. */
static void client_end_input(struct client *c) {
    client_read_stop(c);
    c->lb.stop = true;
    c->eof = true;
    c->paused = false;
    c->stalled_since_ns = 0;
    free(c->stash);
    c->stash = NULL;
    c->stash_len = 0;
}

static void client_pause(struct client *c) {
    if (c->paused || c->closing || c->eof)
        return;
    c->paused = true;
    c->lb.stop = true; /* the rest of this read waits in the stash */
    /* The stall clock runs only while written answers wait for the client;
     * a pause for answers still being made durable is the daemon's doing. */
    if (queued(c) >= pause_mark(c))
        c->stalled_since_ns = uv_hrtime();
    client_read_stop(c);
}

/* The per-turn counters of c, started afresh in each new loop turn. */
static void client_turn(struct client *c) {
    if (c->turn_id != c->srv->turn_id) {
        c->turn_id = c->srv->turn_id;
        c->turn_ns = 0;
        c->turn_lines = 0;
    }
}

/* c's recent usage, decayed to now. */
static double client_usage(struct client *c, uint64_t now) {
    if (now > c->usage_at_ns) {
        c->usage_ns *= exp(-(double)(now - c->usage_at_ns) / USAGE_TAU_NS);
        c->usage_at_ns = now;
    }
    return c->usage_ns;
}

/* Charge the work since t0 (uv_hrtime) to c and to this loop turn. */
static void client_charge(struct client *c, uint64_t t0) {
    uint64_t now = uv_hrtime(), dt = now - t0;

    client_turn(c);
    c->turn_ns += dt;
    c->srv->turn_ns += dt;
    c->usage_ns = client_usage(c, now) + (double)dt;
}

static bool turn_spent(const struct server *s) {
    return s->turn_ns >= TURN_BUDGET_NS;
}

/* Whether c has had its share of this loop turn (or the turn is over). */
static bool client_share_spent(struct client *c) {
    client_turn(c);
    return turn_spent(c->srv) || c->turn_ns >= CLIENT_SLICE_NS || c->turn_lines >= LINES_PER_TURN;
}

/* Queue c for a later turn, behind every waiting client that has used as
 * little work lately, ahead of those that used more. At most max_clients
 * wait, so the walk is short. */
static void ready_push(struct server *s, struct client *c) {
    uint64_t now = uv_hrtime();
    double u = client_usage(c, now);
    struct client *prev = NULL, *r = s->ready_head;

    while (r && client_usage(r, now) <= u) {
        prev = r;
        r = r->ready_next;
    }
    c->ready_next = r;
    if (prev)
        prev->ready_next = c;
    else
        s->ready_head = c;
    if (r == NULL)
        s->ready_tail = c;
    uv_idle_start(&s->idle, idle_cb);
}

/* Fairness: a client whose requests used up its share of this loop turn, or
 * that came when the turn was spent, is served again on a later turn, in
 * order of recent usage. */
static void client_yield(struct client *c) {
    if (c->yielded || c->closing)
        return;
    c->yielded = true;
    c->lb.stop = true;
    client_read_stop(c);
    ready_push(c->srv, c);
}

/* Frame data; what is left when the client gets paused or yields mid-read
 * is kept in the stash and framed first when it goes on. */
static void client_feed(struct client *c, const char *data, size_t n) {
    size_t used = 0;

    if (turn_spent(c->srv)) {
        /* This turn's budget went before the client's turn came: all of it
         * waits (one read, at most 64 KiB) for the next turn. */
        client_yield(c);
    } else {
        if (linebuf_feed_some(&c->lb, data, n, on_line, on_overflow, c, &used) < 0) {
            log_warnx("client %s: out of memory for a line, closing", c->name);
            client_close(c);
            return;
        }
        /* limits.line_timeout_s runs from the first byte of a line. */
        if (linebuf_pending(&c->lb) == 0 && !c->lb.discarding)
            c->line_started_ns = 0;
        else if (c->line_started_ns == 0)
            c->line_started_ns = uv_hrtime();
    }
    if (used == n || c->closing)
        return;
    char *rest = malloc(n - used);
    if (rest == NULL) {
        log_warnx("client %s: out of memory, closing", c->name);
        client_close(c);
        return;
    }
    memcpy(rest, data + used, n - used);
    free(c->stash);
    c->stash = rest;
    c->stash_len = n - used;
}

/* Around rpc_line_run and rpc_line_resume for p: the work is charged to
 * c (pace_cb charges from work_t0 too), the line noted while it is not
 * done, the answers that are ready written. Returns whether the line is
 * held for a later turn. */
static void line_begin(struct client *c) {
    c->srv->work_t0 = uv_hrtime();
    c->in_process = true;
}

static bool line_end(struct client *c, struct pending *p, struct rpc_line *l) {
    c->in_process = false;
    client_charge(c, c->srv->work_t0);
    /* done may have run already (p is queued for it); a line that is done
     * has freed itself. */
    if (!p->done)
        p->line = l;
    bool held = l != NULL && rpc_line_paused(l);
    client_flush(c);
    return held;
}

/* A batch whose calls were held back for a later turn goes on first.
 * Returns false when the client must wait again (or is gone). */
static bool client_resume_line(struct client *c) {
    struct pending *p = c->tail;

    if (p == NULL || p->line == NULL || !rpc_line_paused(p->line))
        return true;
    line_begin(c);
    bool held = line_end(c, p, rpc_line_resume(p->line));
    if (c->closing)
        return false;
    if (held) {
        client_yield(c);
        return false;
    }
    if (client_over(c)) {
        client_pause(c);
        return false;
    }
    return true;
}

/* Frame what is stashed, then read from the socket again, unless the client
 * is held back (paused, yielded, closing, at EOF). */
static void client_continue(struct client *c) {
    if (c->closing || c->paused || c->yielded)
        return;
    if (!client_resume_line(c) || c->eof)
        return;
    c->lb.stop = false;
    if (c->stash) {
        char *stash = c->stash;
        size_t len = c->stash_len;

        c->stash = NULL;
        c->stash_len = 0;
        client_feed(c, stash, len);
        free(stash);
        if (c->closing || c->paused || c->yielded)
            return;
    }
    if (c->reading)
        return;
    int rc = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    if (rc != 0) {
        log_warnx("client %s: cannot read again: %s", c->name, uv_strerror(rc));
        client_close(c);
        return;
    }
    c->reading = true;
}

static void client_maybe_resume(struct client *c) {
    if (!c->paused || c->closing || c->eof)
        return;
    if (backlog(c) >= pause_mark(c) / 2 || c->npending >= MAX_PENDING_LINES / 2)
        return;
    c->paused = false;
    c->stalled_since_ns = 0;
    client_continue(c);
}

/* The next loop turn: a connection held back is accepted, then the
 * clients that yielded go on, least recent usage first, while the turn's
 * budget lasts; the rest wait for the next turn. */
static void idle_cb(uv_idle_t *h) {
    struct server *s = h->data;
    struct client *c = s->ready_head;

    s->ready_head = s->ready_tail = NULL;
    /* One held-back connection per turn at least, first: clients that
     * always have work queued must not keep new ones out. */
    if (s->accept_deferred) {
        s->accept_deferred = false;
        accept_one(s);
    }
    /* Work earlier in this turn (a write callback that resumed a paused
     * client) may have spent the budget already: the waiting clients get
     * one of their own, or they might never make progress. At most two
     * budgets a turn, then. */
    if (turn_spent(s))
        s->turn_ns = 0;
    while (c && !turn_spent(s)) {
        struct client *next = c->ready_next;

        c->ready_next = NULL;
        c->yielded = false;
        client_continue(c);
        c = next;
    }
    while (c) { /* the rest wait again, in order of usage with the others */
        struct client *next = c->ready_next;
        ready_push(s, c);
        c = next;
    }
    if (s->ready_head == NULL && !s->accept_deferred)
        uv_idle_stop(h);
}

/* After poll: the turn's output is written, and the loop turn is over; the
 * next one starts with a fresh budget. */
static void turn_check_cb(uv_check_t *h) {
    struct server *s = h->data;

    out_flush_all(s);
    s->turn_id++;
    s->turn_ns = 0;
}

/* n bytes of c's output went to the kernel. */
static void client_wrote(struct client *c, size_t n) {
    c->srv->trim_bytes += n;
    c->srv->answer_bytes -= n;
    c->kernel_est += n; /* taken by the kernel, maybe not yet by the peer */
}

/* The peer is taking c's output: the stall clock restarts, a client paused
 * for it may read again, notifications held for it may follow. */
static void client_took(struct client *c) {
    c->last_active_ns = uv_hrtime();
    if (c->stalled_since_ns != 0)
        c->stalled_since_ns = c->last_active_ns;
    client_maybe_resume(c);
    if (!c->closing)
        rpc_session_drained(c->session);
}

static void write_cb(uv_write_t *req, int status) {
    struct write_req *wr = (struct write_req *)req;
    struct client *c = req->handle->data;

    client_wrote(c, wr->len);
    free(wr->buf);
    free(wr);
    if (status < 0) {
        if (status != UV_ECANCELED)
            log_debug("client %s: write failed: %s", c->name, uv_strerror(status));
        client_close(c);
        return;
    }
    client_took(c);
}

/* Hand the turn's output to the kernel: one write(2) for every answer and
 * notification of the turn. Written at once when the kernel takes it all
 * (uv_try_write: no request, no callback, no change to what the loop
 * polls for); what it does not take is queued with uv_write. */
static void out_flush(struct client *c) {
    struct write_req *wr;
    uv_buf_t b;
    size_t done = 0;

    if (c->out_len == 0 || c->closing)
        return;
    b = uv_buf_init(c->out, (unsigned)c->out_len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n < 0 && n != UV_EAGAIN) {
        log_debug("client %s: write failed: %s", c->name, uv_strerror(n));
        client_close(c);
        return;
    }
    if (n > 0) {
        done = (size_t)n;
        client_wrote(c, done);
    }
    if (done == c->out_len) {
        c->out_len = 0; /* a small buffer is kept for the next turn's output */
        if (c->out_cap > OUT_KEEP_BYTES) {
            free(c->out);
            c->out = NULL;
            c->out_cap = 0;
        }
        client_took(c);
        return;
    }
    if ((wr = malloc(sizeof(*wr))) == NULL) {
        log_warnx("client %s: out of memory for an answer, closing", c->name);
        client_close(c);
        return;
    }
    wr->buf = c->out;
    wr->len = c->out_len - done;
    c->out = NULL;
    c->out_len = c->out_cap = 0;
    b = uv_buf_init(wr->buf + done, (unsigned)wr->len);
    if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, write_cb) != 0) {
        c->srv->answer_bytes -= wr->len;
        free(wr->buf);
        free(wr);
        client_close(c);
        return;
    }
    /* Paused for answers still being made durable, and now they wait for
     * the client: from here on it is the client that stalls. */
    if (c->paused && c->stalled_since_ns == 0 && queued(c) >= pause_mark(c))
        c->stalled_since_ns = uv_hrtime();
}

/* Every client's output of this turn, in the order the clients made it. */
static void out_flush_all(struct server *s) {
    struct client *c = s->out_head;

    s->out_head = NULL;
    while (c) {
        struct client *next = c->out_next;

        c->out_next = NULL;
        out_flush(c);
        c = next;
    }
}

/* Output made in the poll phase (reads, pool completions) is written after
 * it; output made by timers and idle callbacks, before the next poll. */
static void flush_prep_cb(uv_prepare_t *h) {
    out_flush_all(h->data);
}

/* Takes ownership of text (NUL-terminated, no newline): appended, with its
 * newline, to the turn's output. */
static void client_write(struct client *c, char *text) {
    struct server *s = c->srv;
    size_t len = strlen(text), need = c->out_len + len + 1;

    /* Reading stops at the pause mark, so only answers already owed can pass
     * it; a client that lets them pile up past the cap is dropped. One answer
     * larger than the cap (a long history) still goes to a client that reads. */
    if (queued(c) > (size_t)s->cfg->write_queue_max_bytes) {
        log_warnx("client %s: %zu bytes of answers unread, closing", c->name, queued(c));
        free(text);
        client_close(c);
        return;
    }
    if (c->out == NULL) {
        /* One text a turn, after output that had to wait: it becomes the
         * output buffer. */
        char *buf = realloc(text, len + 1);
        if (buf == NULL)
            goto oom;
        c->out = buf;
        c->out_cap = len + 1;
    } else if (need > c->out_cap) {
        size_t cap = c->out_cap * 2 > need ? c->out_cap * 2 : need;
        char *buf = realloc(c->out, cap);
        if (buf == NULL)
            goto oom;
        c->out = buf;
        c->out_cap = cap;
        memcpy(c->out + c->out_len, text, len);
        free(text);
    } else {
        memcpy(c->out + c->out_len, text, len);
        free(text);
    }
    c->out[c->out_len + len] = '\n';
    if (c->out_len == 0) {
        c->out_next = s->out_head; /* order between clients does not matter */
        s->out_head = c;
    }
    c->out_len = need;
    s->answer_bytes += len + 1; /* until write_cb */
    /* Stopping, the turn's handles are closed: write now. */
    if (s->stopping)
        out_flush(c);
    return;
oom:
    free(text);
    log_warnx("client %s: out of memory for an answer, closing", c->name);
    client_close(c);
}

/* The session's sink for notifications: what it has not taken, whether
 * answers are still owed, and a write like an answer's. */
static size_t sink_backlog(void *conn, bool *answers_owed) {
    struct client *c = conn;
    size_t mine = backlog(c);

    *answers_owed = c->head != NULL;
    /* With what the kernel still holds for the peer: its socket buffer
     * grows to megabytes, and a reader that stopped must be noticed long
     * before that. kernel_est is an upper bound (everything written since
     * the kernel was last asked); only when it could matter, half the soft
     * cap, is the kernel asked (SIOCOUTQ), not on every notification. */
    if (mine + c->kernel_est >= (size_t)c->srv->cfg->push_soft_bytes / 2) {
        uv_os_fd_t fd;
        int unsent = 0;

        if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0 || ioctl(fd, SIOCOUTQ, &unsent) != 0 ||
            unsent < 0)
            unsent = 0;
        c->kernel_est = (size_t)unsent;
    }
    return mine + c->kernel_est;
}

static void sink_close(void *conn, const char *why) {
    struct client *c = conn;

    if (c->closing)
        return;
    log_warnx("client %s: %s, closing", c->name, why);
    client_close(c);
}

static void sink_write(void *conn, char *text) {
    struct client *c = conn;

    if (c->closing || c->shutting) {
        free(text);
        return;
    }
    client_write(c, text);
}

/* Write every answer at the head of the queue that is ready, in order. */
static void client_flush(struct client *c) {
    struct pending *p;

    while ((p = c->head) != NULL && p->done) {
        c->head = p->next;
        if (c->head == NULL)
            c->tail = NULL;
        c->npending--;
        c->held_bytes -= p->held;
        c->srv->answer_bytes -= p->held;
        if (p->out && !c->closing)
            client_write(c, p->out);
        else
            free(p->out);
        free(p);
    }
    client_maybe_finish(c);
    if (!c->in_process)
        client_maybe_resume(c);
    /* Answers written: notifications held behind them may follow. */
    if (c->head == NULL && !c->closing && c->session != NULL)
        rpc_session_drained(c->session);
}

/* p has its answer (out may be NULL: nothing to write). */
static void pending_done(struct client *c, struct pending *p, char *out) {
    p->line = NULL;
    p->out = out;
    p->done = true;
    p->held = out ? strlen(out) : 0;
    c->held_bytes += p->held;
    c->srv->answer_bytes += p->held;
    c->srv->answer_reserved -= p->reserved;
    p->reserved = 0;
}

static void line_done_cb(void *owner, struct rpc_line *line, char *out) {
    struct pending *p = owner;

    (void)line;
    pending_done(p->client, p, out);
    /* An answer given inside rpc_line_process is flushed by on_line, which
     * still holds p. */
    if (!p->client->in_process)
        client_flush(p->client);
}

static struct pending *client_enqueue(struct client *c) {
    struct pending *p = calloc(1, sizeof(*p));

    if (p == NULL)
        return NULL;
    p->client = c;
    if (c->tail)
        c->tail->next = p;
    else
        c->head = p;
    c->tail = p;
    c->npending++;
    return p;
}

/* rpc_owner.pace: between the calls of a batch, whether the client may go
 * on in this loop turn. Each call counts as a request. */
static bool pace_cb(void *owner) {
    struct pending *p = owner;
    struct client *c = p->client;

    client_charge(c, c->srv->work_t0);
    c->srv->work_t0 = uv_hrtime();
    /* Stopping, a held batch is finished at once (its answer budget still
     * bounds it), so its answer goes out within the drain. */
    if (!c->srv->stopping && client_share_spent(c))
        return false;
    c->turn_lines++;
    return true;
}

/* What the answers to one more line may take: what the client may have
 * outstanding, less what it has, and no more than all clients together may
 * still have (limits.answer_memory_max_bytes, less what is made and what
 * other lines in progress may make), but always ANSWER_FLOOR_BYTES. The line
 * holds this much of the server's room until it is answered. */
static size_t answer_budget(struct client *c) {
    const struct server *s = c->srv;
    size_t cap = (size_t)s->cfg->write_queue_max_bytes, have = backlog(c);
    size_t all = (size_t)s->cfg->answer_memory_max_bytes,
           used = s->answer_bytes + s->answer_reserved;
    size_t mine = have < cap ? cap - have : 0, room = used < all ? all - used : 0;
    size_t budget = mine < room ? mine : room;

    return budget > ANSWER_FLOOR_BYTES ? budget : ANSWER_FLOOR_BYTES;
}

static void on_line(void *ctx, const char *line, size_t len) {
    struct client *c = ctx;
    struct pending *p;

    if (c->closing)
        return;
    if ((p = client_enqueue(c)) == NULL) {
        log_warnx("client %s: out of memory, closing", c->name);
        client_close(c);
        return;
    }
    p->reserved = answer_budget(c);
    c->srv->answer_reserved += p->reserved;
    const struct rpc_owner o = {
        .done = line_done_cb,
        .owner = p,
        .session = c->session,
        .budget_bytes = p->reserved,
        .pace = pace_cb,
    };
    client_turn(c);
    c->turn_lines++;
    line_begin(c);
    bool held = line_end(c, p, rpc_line_run(c->srv->rpc, line, len, &o));
    if (c->closing)
        return;
    if (held || (!client_over(c) && client_share_spent(c)))
        client_yield(c); /* the rest of the batch, or of the read, next turn */
    else if (client_over(c))
        client_pause(c);
}

static void on_overflow(void *ctx) {
    struct client *c = ctx;
    struct pending *p;
    char msg[96];

    if (c->closing || (p = client_enqueue(c)) == NULL)
        return;
    snprintf(msg, sizeof(msg), "Invalid Request: line longer than %d bytes",
             c->srv->cfg->max_line_bytes);
    pending_done(c, p, rpc_error_text(RPC_INVALID_REQUEST, msg));
    client_flush(c);
    if (client_over(c))
        client_pause(c);
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
    struct client *c = stream->data;

    if (nread > 0) {
        c->last_active_ns = uv_hrtime();
        client_feed(c, buf->base, (size_t)nread);
        return;
    }
    if (nread == 0)
        return;
    client_read_stop(c);
    if (nread == UV_EOF) {
        /* nc -N: the request is complete; answer everything, then close. */
        linebuf_flush(&c->lb, on_line, c);
        client_end_input(c);
        if (!c->closing)
            client_flush(c);
        return;
    }
    log_debug("client %s: read failed: %s", c->name, uv_strerror((int)nread));
    client_close(c);
}

static void peer_name(uv_tcp_t *tcp, struct sockaddr_storage *peer, char *out, size_t outlen) {
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    char host[64] = "?";
    int port = 0;

    memset(peer, 0, sizeof(*peer));
    if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len) == 0) {
        *peer = ss;
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            uv_ip6_name(a, host, sizeof(host));
            port = ntohs(a->sin6_port);
            snprintf(out, outlen, "[%s]:%d", host, port);
            return;
        }
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        uv_ip4_name(a, host, sizeof(host));
        port = ntohs(a->sin_port);
    }
    snprintf(out, outlen, "%s:%d", host, port);
}

/* Answer a refused connection with one error line, then close it. The
 * refusal is logged once per address per minute: a flood of connections
 * must not become a flood of log lines. */
static void client_refuse(struct client *c, const char *why, const char *msg) {
    struct pending *p = client_enqueue(c);
    unsigned unlogged = 0;
    char host[INET6_ADDRSTRLEN] = "?";

    if (c->peer_row == NULL) {
        log_warnx("client %s: refused, %s", c->name, why);
    } else if (peers_refusal_log(c->peer_row, uv_hrtime(), REFUSAL_LOG_NS, &unlogged)) {
        peers_name(c->peer_row, host, sizeof(host));
        if (unlogged)
            log_warnx("client %s: refused, %s (%u more from %s refused in the last minute)",
                      c->name, why, unlogged, host);
        else
            log_warnx("client %s: refused, %s", c->name, why);
    }
    if (p)
        pending_done(c, p, rpc_error_text(RPC_BUSY, msg));
    client_end_input(c); /* answer the refusal, then close */
    client_flush(c);
}

/* rpc_end_cb: the connection's session wants it ended, and says why. The
 * answer owed for the call that asked is still written. */
static void session_end_cb(void *owner, const char *why) {
    struct client *c = owner;

    if (c->closing)
        return;
    log_warnx("client %s: %s, closing", c->name, why);
    client_end_input(c); /* not even the rest of this read */
}

static void accept_one(struct server *s) {
    struct client *c;
    char why[96], msg[96];
    uint64_t t0 = uv_hrtime();

    if ((c = calloc(1, sizeof(*c))) == NULL) {
        log_warnx("server: out of memory for a client");
        /* libuv watches the listener again only after a uv_accept: try
         * again next turn, or no connection would ever be taken again. */
        s->accept_deferred = true;
        uv_idle_start(&s->idle, idle_cb);
        return;
    }
    c->srv = s;
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    c->next = s->clients;
    if (s->clients)
        s->clients->prev = c;
    s->clients = c;
    s->nclients++;
    linebuf_init(&c->lb, (size_t)s->cfg->max_line_bytes);
    if (uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)&c->tcp) != 0) {
        client_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    peer_name(&c->tcp, &c->peer, c->name, sizeof(c->name));
    c->last_active_ns = uv_hrtime();
    c->turn_id = s->turn_id;
    c->usage_ns = USAGE_ENTRY_NS;
    c->usage_at_ns = uv_hrtime();
    if ((c->peer_row = peers_get(&s->peers, (const struct sockaddr *)&c->peer, t0)) != NULL)
        c->peer_row->nconn++;
    s->turn_ns += uv_hrtime() - t0;
    if (s->nclients > s->cfg->max_clients) {
        snprintf(why, sizeof(why), "%d clients already connected", s->cfg->max_clients);
        snprintf(msg, sizeof(msg), "Too many clients (max %d)", s->cfg->max_clients);
        client_refuse(c, why, msg);
        return;
    }
    if (c->peer_row && c->peer_row->nconn > s->cfg->max_clients_per_address) {
        snprintf(why, sizeof(why), "%d connections from this address already",
                 s->cfg->max_clients_per_address);
        snprintf(msg, sizeof(msg), "Too many connections from this address (max %d)",
                 s->cfg->max_clients_per_address);
        client_refuse(c, why, msg);
        return;
    }
    c->session = rpc_session_create(s->rpc, (const struct sockaddr *)&c->peer, c->name, &s->peers,
                                    session_end_cb, c);
    if (c->session == NULL) {
        log_warnx("client %s: out of memory, closing", c->name);
        client_close(c);
        return;
    }
    rpc_session_set_sink(c->session, &(struct rpc_sink){.conn = c,
                                                        .backlog = sink_backlog,
                                                        .write = sink_write,
                                                        .close = sink_close});
    log_debug("client %s: connected", c->name);
    if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) != 0) {
        client_close(c);
        return;
    }
    c->reading = true;
}

static void connection_cb(uv_stream_t *listener, int status) {
    struct server *s = listener->data;

    if (status < 0) {
        log_warnx("server: accept: %s", uv_strerror(status));
        return;
    }
    /* A connection not accepted now stops libuv from watching the listener
     * until uv_accept is called: a flood of connections is taken one turn's
     * budget at a time (and at least one a turn). */
    if (turn_spent(s)) {
        s->accept_deferred = true;
        uv_idle_start(&s->idle, idle_cb);
        return;
    }
    accept_one(s);
}

/* A line begun and not finished within limits.line_timeout_s: a byte a
 * second must not hold a connection. The client is told why, then closed. */
static void client_line_timeout(struct client *c) {
    struct pending *p = client_enqueue(c);
    char msg[96];

    log_info("client %s: line not finished within %d s, closing", c->name,
             c->srv->cfg->line_timeout_s);
    snprintf(msg, sizeof(msg), "Invalid Request: line not finished within %d s",
             c->srv->cfg->line_timeout_s);
    if (p)
        pending_done(c, p, rpc_error_text(RPC_INVALID_REQUEST, msg));
    client_end_input(c);
    client_flush(c);
}

static void sweep_cb(uv_timer_t *t) {
    struct server *s = t->data;
    uint64_t now_ns = uv_hrtime();
    uint64_t idle_ns = (uint64_t)s->cfg->idle_timeout_s * 1000000000u;
    uint64_t stall_ns = (uint64_t)s->cfg->write_stall_timeout_s * 1000000000u;
    uint64_t line_ns = (uint64_t)s->cfg->line_timeout_s * 1000000000u;
    struct client *c, *n;

    for (c = s->clients; c; c = n) {
        n = c->next;
        if (c->closing)
            continue;
        if (c->stalled_since_ns != 0 && now_ns - c->stalled_since_ns > stall_ns) {
            log_warnx("client %s: not reading its answers for %d s, closing", c->name,
                      s->cfg->write_stall_timeout_s);
            client_close(c);
        } else if (c->line_started_ns != 0 && !c->paused && !c->yielded && !c->eof &&
                   now_ns - c->line_started_ns > line_ns) {
            client_line_timeout(c);
        } else if (c->head == NULL && now_ns - c->last_active_ns > idle_ns) {
            log_info("client %s: idle for %d s, closing", c->name, s->cfg->idle_timeout_s);
            client_close(c);
        }
    }
    /* After a burst of big answers, give the freed pages back, so the
     * daemon's size returns to its idle size. */
    if (s->trim_bytes >= TRIM_AFTER_BYTES) {
        s->trim_bytes = 0;
        malloc_trim(0);
    }
}

int server_start(struct server *s, uv_loop_t *loop, const struct config *cfg,
                 const struct rpc_server *rpc, char *err, size_t errlen) {
    struct sockaddr_storage ss;
    int len = sizeof(ss), rc;

    memset(s, 0, sizeof(*s));
    s->loop = loop;
    s->cfg = cfg;
    s->rpc = rpc;
    if (strchr(cfg->listen_host, ':'))
        rc = uv_ip6_addr(cfg->listen_host, cfg->listen_port, (struct sockaddr_in6 *)&ss);
    else
        rc = uv_ip4_addr(cfg->listen_host, cfg->listen_port, (struct sockaddr_in *)&ss);
    if (rc != 0) {
        snprintf(err, errlen, "listen %s:%d: not a numeric address", cfg->listen_host,
                 cfg->listen_port);
        return rc;
    }
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    uv_timer_init(loop, &s->sweep);
    s->sweep.data = s;
    uv_idle_init(loop, &s->idle);
    s->idle.data = s;
    uv_check_init(loop, &s->turn_check);
    s->turn_check.data = s;
    uv_check_start(&s->turn_check, turn_check_cb);
    uv_prepare_init(loop, &s->flush_prep);
    s->flush_prep.data = s;
    uv_prepare_start(&s->flush_prep, flush_prep_cb);
    peers_init(&s->peers);
    if ((rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&ss, 0)) != 0 ||
        (rc = uv_listen((uv_stream_t *)&s->listener, 128, connection_cb)) != 0) {
        snprintf(err, errlen, "listen %s:%d: %s", cfg->listen_host, cfg->listen_port,
                 uv_strerror(rc));
        uv_close((uv_handle_t *)&s->listener, NULL);
        uv_close((uv_handle_t *)&s->sweep, NULL);
        uv_close((uv_handle_t *)&s->idle, NULL);
        uv_close((uv_handle_t *)&s->turn_check, NULL);
        uv_close((uv_handle_t *)&s->flush_prep, NULL);
        return rc;
    }
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len);
    if (ss.ss_family == AF_INET6)
        snprintf(s->bound, sizeof(s->bound), "[%s]:%d", cfg->listen_host,
                 ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
    else
        snprintf(s->bound, sizeof(s->bound), "%s:%d", cfg->listen_host,
                 ntohs(((struct sockaddr_in *)&ss)->sin_port));
    uv_timer_start(&s->sweep, sweep_cb, SWEEP_MS, SWEEP_MS);
    return 0;
}

static void server_handle_closed(uv_handle_t *h) {
    struct server *s = h->data;

    if (--s->closing == 0) {
        peers_fini(&s->peers);
        if (s->on_closed)
            s->on_closed(s);
    }
}

/* The drain deadline: whoever still waits for an answer is closed now. */
static void drain_deadline_cb(uv_timer_t *t) {
    struct server *s = t->data;

    for (struct client *c = s->clients; c; c = c->next)
        client_close(c);
    uv_close((uv_handle_t *)&s->sweep, server_handle_closed);
}

void server_stop(struct server *s, void (*cb)(struct server *s)) {
    s->on_closed = cb;
    /* The listener, the idle, check and prepare handles, the sweep timer and
     * every client still in the list (one already closing still gets its close callback). */
    s->closing = 5 + s->nclients;
    s->stopping = true;
    uv_close((uv_handle_t *)&s->listener, server_handle_closed);
    uv_close((uv_handle_t *)&s->idle, server_handle_closed); /* nobody reads any more */
    uv_close((uv_handle_t *)&s->turn_check, server_handle_closed);
    out_flush_all(s); /* from here on, output is written as it is made */
    uv_close((uv_handle_t *)&s->flush_prep, server_handle_closed);
    s->accept_deferred = false;
    for (struct client *c = s->ready_head, *n; c; c = n) {
        n = c->ready_next;
        c->ready_next = NULL;
        c->yielded = false;
    }
    s->ready_head = s->ready_tail = NULL;
    if (s->nclients == 0) {
        uv_close((uv_handle_t *)&s->sweep, server_handle_closed);
        return;
    }
    /* Read nothing more, but write the answers already owed (a write that
     * is being made durable answers within milliseconds), then close each
     * client as after its EOF; stragglers are closed at the deadline. */
    uv_timer_start(&s->sweep, drain_deadline_cb, DRAIN_MS, 0);
    for (struct client *c = s->clients, *n; c; c = n) {
        n = c->next;
        if (c->closing)
            continue;
        client_end_input(c);
        if (client_resume_line(c)) /* a batch held for a later turn: finish it */
            client_flush(c);
    }
}
