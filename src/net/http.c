/*
 * http: HTTP and WebSocket clients through libwebsockets, on the daemon's own
 * libuv loop (a "foreign loop" to lws). The listening socket is ours (exact
 * bind errors, every connection counted at accept), each accepted socket is
 * adopted by lws, which parses HTTP and WebSocket framing; we route requests
 * (static files, /metrics) and treat each /ws connection as one more
 * JSON-RPC client with the TCP server's rules: answers in request order,
 * budgets while answers are built, reading paused while output waits, pushes
 * through the session's sink, work metered per loop turn. Nothing here may
 * block the loop, interpret a method or decide who may write.
 */
#include "http.h"

#include <errno.h>
#include <fcntl.h>
#include <libwebsockets.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

/* The same metering and bounds as the TCP server (server.c says why each
 * has its value): 1 ms of client work per loop turn, 0.5 ms or 64 requests
 * of it per client, 1024 requests outstanding, 4 KiB of answer whatever the
 * others hold, 500 ms to write what is owed at shutdown, checks once a
 * second. */
#define TURN_BUDGET_NS 1000000u
#define CLIENT_SLICE_NS 500000u
#define LINES_PER_TURN 64
#define MAX_PENDING_LINES 1024
#define ANSWER_FLOOR_BYTES 4096u
#define DRAIN_MS 500
#define SWEEP_MS 1000
/* A message goes out in frames of at most this much: lws copies what the
 * kernel does not take at once, so a 1 MiB answer costs 64 KiB more at
 * worst, not another megabyte. */
#define WS_CHUNK_BYTES 65536u
/* libwebsockets' handles close over a few loop turns after the context is
 * destroyed; this long is far beyond that, and only bounds a library bug. */
#define LWS_CLOSE_DEADLINE_NS 2000000000u
/* Handles libwebsockets adds to the loop when its context is made (its
 * idle and timer handles; 4.1.6 makes two). */
#define LWS_STATIC_HANDLES 8
/* lws's log lines that reach ours (its errors: malformed requests, a
 * client's bad frames) are rate-limited to this interval. */
#define LWS_LOG_INTERVAL_NS (10 * 1000000000ull)
/* The longest file name /NAME and /dygraphs/NAME serve. */
#define NAME_MAX_BYTES 128

enum in_kind { IN_TEXT, IN_OVERSIZE, IN_BINARY };

/* One received message waiting for its turn (reading stops while any do). */
struct ws_in {
    struct ws_in *next;
    enum in_kind kind;
    size_t len;
    char text[]; /* NUL-terminated (IN_TEXT) */
};

/* One message's answer, in arrival order (as server.c's struct pending). */
struct ws_pending {
    struct ws_pending *next;
    struct ws_conn *c;
    struct rpc_line *line; /* NULL once done */
    char *out;             /* answer text, NULL for none */
    size_t held;           /* bytes of out counted in c->held_bytes */
    size_t reserved;       /* answer budget taken while answered */
    bool done;
};

/* One message to send: LWS_PRE bytes of room, then the text. */
struct ws_out {
    struct ws_out *next;
    size_t len, off; /* text bytes, bytes sent */
    unsigned char buf[];
};

/* Per-connection data lws keeps for us (per_session_data_size). */
struct pss {
    struct ws_conn *c;    /* a /ws client, NULL before ESTABLISHED and after detach */
    unsigned char *body;  /* /metrics: LWS_PRE + text */
    size_t body_len, off; /* text bytes, bytes sent */
};

struct ws_conn {
    struct http *h;
    struct lws *wsi;
    struct pss *pss;
    struct ws_conn *prev, *next;
    struct ws_conn *ready_next;
    struct rpc_session *session;
    struct peer *peer_row; /* NULL when not counted (or given back at stop) */
    struct sockaddr_storage peer;
    char name[64];

    /* The message being received. */
    char *msg;
    size_t msg_len, msg_cap;
    bool in_msg, msg_discard, msg_binary;
    uint64_t msg_started_ns;

    struct ws_in *in_head, *in_tail;
    size_t nin;
    struct ws_pending *head, *tail;
    size_t npending, held_bytes;
    struct ws_out *out_head, *out_tail;
    size_t out_bytes; /* text not yet handed to lws */

    uint64_t last_active_ns; /* last message received or frame sent */
    uint64_t last_write_ns;  /* last frame sent (or output queued onto none) */
    uint64_t turn_id, turn_ns;
    unsigned turn_lines;

    bool rx_on;         /* lws reads it */
    bool yielded;       /* on the ready list: its turn comes later */
    bool paused;        /* output or requests pile up: read no more until taken */
    bool in_process;    /* inside rpc_line_run or rpc_line_resume */
    bool ending;        /* read nothing more; write what is owed, then close */
    bool closing;       /* the close is under way: write nothing more */
    uint64_t ending_ns; /* when ending began */
    int close_status;
    char close_why[64];
};

struct http {
    uv_loop_t *loop;
    const struct config *cfg;
    struct http_hooks hooks;
    struct lws_context *ctx; /* NULL once lws destroyed it (info.pcontext) */
    struct lws_vhost *vh;

    uv_os_sock_t lfd;
    uv_poll_t listener;
    uv_timer_t sweep;      /* idle, stall and line checks; the drain deadline at stop */
    uv_idle_t idle;        /* resumes yielded clients; at stop, waits for lws to close */
    uv_check_t turn_check; /* marks the end of each loop turn */
    int handles;           /* of the four above, not yet closed */

    struct ws_conn *conns;
    struct ws_conn *ready_head, *ready_tail;
    int nws, nconn;
    size_t answer_bytes, answer_reserved; /* all /ws clients, as in server.c */
    uint64_t turn_id, turn_ns, work_t0;
    char bound[80];

    uv_handle_t *lws_handles[LWS_STATIC_HANDLES];
    int nlws_handles;

    bool accept_resting; /* out of descriptors: the listener rests a second */
    struct log_ratelimit accept_rl;
    bool stopping, lws_destroying, reaping;
    uint64_t reap_deadline_ns;
    void (*stop_cb)(void *arg);
    void *stop_arg;
};

static void ws_work(struct ws_conn *c);
static void ws_flush(struct ws_conn *c);
static void ws_set_rx(struct ws_conn *c);
static void http_teardown(struct http *h);
static void drain_deadline_cb(uv_timer_t *t);
static void idle_cb(uv_idle_t *t);

static struct log_ratelimit lws_log_rl;

/* lws's own log lines: its errors (mostly what a bad client did) at our
 * warning level, rate-limited; the rest only when debugging. */
static void lws_log_cb(int level, const char *line) {
    size_t n = strlen(line);
    unsigned suppressed = 0;

    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    if (level & LLL_ERR) {
        if (log_ratelimit_ok(&lws_log_rl, uv_hrtime(), LWS_LOG_INTERVAL_NS, &suppressed))
            log_warnx("http: libwebsockets: %.*s%s", (int)n, line,
                      suppressed ? " (and more like it)" : "");
    } else {
        log_debug("http: libwebsockets: %.*s", (int)n, line);
    }
}

/* ---- budgets, metering, flow control (server.c's rules) ---- */

static size_t pause_mark(const struct ws_conn *c) {
    return (size_t)c->h->cfg->write_queue_max_bytes / 4;
}

/* Bytes the peer has not taken: queued here, answered but held behind an
 * earlier answer, and in the kernel's socket buffer (SIOCOUTQ), which grows
 * to megabytes and must count for a reader that stopped. */
static size_t ws_backlog(const struct ws_conn *c) {
    int unsent = 0;
    int fd = c->closing ? -1 : (int)lws_get_socket_fd(c->wsi);

    if (fd < 0 || ioctl(fd, SIOCOUTQ, &unsent) != 0 || unsent < 0)
        unsent = 0;
    return c->out_bytes + c->held_bytes + (size_t)unsent;
}

static bool ws_over(const struct ws_conn *c) {
    return c->out_bytes + c->held_bytes >= pause_mark(c) || c->npending >= MAX_PENDING_LINES;
}

static void ws_turn(struct ws_conn *c) {
    if (c->turn_id != c->h->turn_id) {
        c->turn_id = c->h->turn_id;
        c->turn_ns = 0;
        c->turn_lines = 0;
    }
}

static void ws_charge(struct ws_conn *c, uint64_t t0) {
    uint64_t dt = uv_hrtime() - t0;

    ws_turn(c);
    c->turn_ns += dt;
    c->h->turn_ns += dt;
}

static bool ws_share_spent(struct ws_conn *c) {
    ws_turn(c);
    return c->h->turn_ns >= TURN_BUDGET_NS || c->turn_ns >= CLIENT_SLICE_NS ||
           c->turn_lines >= LINES_PER_TURN;
}

/* Come back next loop turn, after the clients already waiting. */
static void ws_yield(struct ws_conn *c) {
    struct http *h = c->h;

    if (c->yielded || c->closing)
        return;
    c->yielded = true;
    c->ready_next = NULL;
    if (h->ready_tail)
        h->ready_tail->ready_next = c;
    else
        h->ready_head = c;
    h->ready_tail = c;
    uv_idle_start(&h->idle, idle_cb);
}

static void ready_remove(struct ws_conn *c) {
    struct http *h = c->h;
    struct ws_conn *prev = NULL;

    if (!c->yielded)
        return;
    for (struct ws_conn *r = h->ready_head; r; prev = r, r = r->ready_next) {
        if (r != c)
            continue;
        if (prev)
            prev->ready_next = c->ready_next;
        else
            h->ready_head = c->ready_next;
        if (h->ready_tail == c)
            h->ready_tail = prev;
        break;
    }
    c->yielded = false;
}

/* What one more message's answers may take (server.c's answer_budget): the
 * client's room under its cap, within what all /ws clients may still make,
 * never less than ANSWER_FLOOR_BYTES. */
static size_t ws_budget(const struct ws_conn *c) {
    const struct http *h = c->h;
    size_t cap = (size_t)h->cfg->write_queue_max_bytes, have = ws_backlog(c);
    size_t all = (size_t)h->cfg->answer_memory_max_bytes,
           used = h->answer_bytes + h->answer_reserved;
    size_t mine = have < cap ? cap - have : 0, room = used < all ? all - used : 0;
    size_t budget = mine < room ? mine : room;

    return budget > ANSWER_FLOOR_BYTES ? budget : ANSWER_FLOOR_BYTES;
}

/* ---- output ---- */

/* Queue text (malloc'd, NUL-terminated, taken) as one message. */
static void ws_send(struct ws_conn *c, char *text) {
    size_t len = strlen(text);
    struct ws_out *o;

    if (c->closing) {
        free(text);
        return;
    }
    /* Reading stops at the pause mark, so only answers already owed can
     * pass it; a client that lets them pile up past the cap is dropped. */
    if (c->out_bytes > (size_t)c->h->cfg->write_queue_max_bytes) {
        log_warnx("ws client %s: %zu bytes of answers unread, closing", c->name, c->out_bytes);
        free(text);
        c->closing = true;
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        return;
    }
    if ((o = malloc(sizeof(*o) + LWS_PRE + len)) == NULL) {
        log_warnx("ws client %s: out of memory for an answer, closing", c->name);
        free(text);
        c->closing = true;
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        return;
    }
    memcpy(o->buf + LWS_PRE, text, len);
    free(text);
    o->len = len;
    o->off = 0;
    o->next = NULL;
    if (c->out_tail)
        c->out_tail->next = o;
    else {
        c->out_head = o;
        c->last_write_ns = uv_hrtime(); /* the stall clock starts now */
    }
    c->out_tail = o;
    c->out_bytes += len;
    c->h->answer_bytes += len;
    lws_callback_on_writable(c->wsi);
}

/* Close once everything owed is written: with status, after a close frame. */
static void ws_end(struct ws_conn *c, int status, const char *why) {
    if (c->ending || c->closing)
        return;
    c->ending = true;
    c->ending_ns = uv_hrtime();
    c->close_status = status;
    snprintf(c->close_why, sizeof(c->close_why), "%s", why);
    while (c->in_head) {
        struct ws_in *i = c->in_head;
        c->in_head = i->next;
        free(i);
    }
    c->in_tail = NULL;
    c->nin = 0;
    c->paused = false;
    ready_remove(c);
    ws_set_rx(c);
    lws_callback_on_writable(c->wsi);
}

static void ws_kill(struct ws_conn *c) {
    if (c->closing)
        return;
    c->closing = true;
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

/*
 * Write the close frame (close_status, close_why) ourselves, unmasked as a
 * server's frames are, as raw bytes. The documented way, lws_close_reason
 * and -1 from the callback, sends nothing with lws 4.1.6 on a libuv loop
 * when lws is built with _DEBUG (Debian's is): lws_service_fd_tsi closes
 * the connection a second time at once ("close_and_handled uv repeat
 * test"), and that second close finds the frame still waiting and drops it
 * (upstream removed the repeat in 6608d663b, 2025). Without a reason set,
 * lws sends no close frame of its own on any version, so the peer gets
 * exactly this one, then the TCP close (no wait for its answer).
 */
static void ws_send_close(struct ws_conn *c) {
    unsigned char buf[LWS_PRE + 4 + sizeof(c->close_why)], *f = buf + LWS_PRE;
    size_t n = strlen(c->close_why); /* < 64: within a control frame's 125 */

    f[0] = 0x88; /* FIN, opcode 8 (close) */
    f[1] = (unsigned char)(2 + n);
    f[2] = (unsigned char)((c->close_status >> 8) & 0xff);
    f[3] = (unsigned char)(c->close_status & 0xff);
    memcpy(f + 4, c->close_why, n);
    if (lws_write(c->wsi, f, 4 + n, LWS_WRITE_RAW) < (int)(4 + n))
        log_debug("ws client %s: the close frame could not be written", c->name);
}

/* Write one frame of the oldest message; once nothing is owed any more
 * and the connection is ending, close it. Returns -1 to have lws close. */
static int ws_writeable(struct ws_conn *c) {
    struct ws_out *o = c->out_head;

    if (c->closing)
        return -1;
    if (o != NULL) {
        size_t left = o->len - o->off, n = left < WS_CHUNK_BYTES ? left : WS_CHUNK_BYTES;
        int flags = lws_write_ws_flags(LWS_WRITE_TEXT, o->off == 0, o->off + n == o->len);

        if (lws_write(c->wsi, o->buf + LWS_PRE + o->off, n, (enum lws_write_protocol)flags) <
            (int)n) {
            log_debug("ws client %s: write failed", c->name);
            return -1;
        }
        o->off += n;
        c->out_bytes -= n;
        c->h->answer_bytes -= n;
        c->last_write_ns = c->last_active_ns = uv_hrtime();
        if (o->off == o->len) {
            c->out_head = o->next;
            if (c->out_head == NULL)
                c->out_tail = NULL;
            free(o);
        }
        /* Taken: pushes held back may follow, reading may go on. */
        if (c->session)
            rpc_session_drained(c->session);
        if (c->paused && c->out_bytes + c->held_bytes < pause_mark(c) / 2 &&
            c->npending < MAX_PENDING_LINES / 2) {
            c->paused = false;
            ws_work(c);
        }
    }
    if (c->out_head != NULL) {
        lws_callback_on_writable(c->wsi);
        return 0;
    }
    if (c->ending && c->head == NULL) {
        /* What lws still holds of the last message goes first. */
        if (lws_partial_buffered(c->wsi)) {
            lws_callback_on_writable(c->wsi);
            return 0;
        }
        ws_send_close(c);
        c->closing = true;
        return -1;
    }
    return 0;
}

/* ---- answers in order ---- */

static void pending_done(struct ws_conn *c, struct ws_pending *p, char *out) {
    struct http *h = c->h;

    p->line = NULL;
    p->out = out;
    p->done = true;
    p->held = out ? strlen(out) : 0;
    c->held_bytes += p->held;
    h->answer_bytes += p->held;
    h->answer_reserved -= p->reserved;
    p->reserved = 0;
}

/* Send every answer at the head of the queue that is ready, in order. */
static void ws_flush(struct ws_conn *c) {
    struct ws_pending *p;

    while ((p = c->head) != NULL && p->done) {
        c->head = p->next;
        if (c->head == NULL)
            c->tail = NULL;
        c->npending--;
        c->held_bytes -= p->held;
        c->h->answer_bytes -= p->held;
        if (p->out)
            ws_send(c, p->out);
        free(p);
    }
    if (c->head == NULL && !c->closing && c->session != NULL)
        rpc_session_drained(c->session);
    if (c->ending && c->head == NULL && c->out_head == NULL && !c->closing)
        lws_callback_on_writable(c->wsi); /* to close it */
}

static void line_done_cb(void *owner, struct rpc_line *line, char *out) {
    struct ws_pending *p = owner;

    (void)line;
    pending_done(p->c, p, out);
    if (!p->c->in_process)
        ws_flush(p->c);
}

static struct ws_pending *ws_enqueue(struct ws_conn *c) {
    struct ws_pending *p = calloc(1, sizeof(*p));

    if (p == NULL)
        return NULL;
    p->c = c;
    if (c->tail)
        c->tail->next = p;
    else
        c->head = p;
    c->tail = p;
    c->npending++;
    return p;
}

/* An answer not tied to a request (a message too long, a binary one). */
static void ws_error(struct ws_conn *c, int code, const char *msg) {
    struct ws_pending *p = ws_enqueue(c);

    if (p == NULL) {
        log_warnx("ws client %s: out of memory, closing", c->name);
        ws_kill(c);
        return;
    }
    pending_done(c, p, rpc_error_text(code, msg));
    ws_flush(c);
}

/* rpc_owner.pace: between the calls of a batch, whether it may go on in
 * this loop turn (at stop, a held batch is finished at once). */
static bool pace_cb(void *owner) {
    struct ws_pending *p = owner;
    struct ws_conn *c = p->c;

    ws_charge(c, c->h->work_t0);
    c->h->work_t0 = uv_hrtime();
    if (!c->h->stopping && ws_share_spent(c))
        return false;
    c->turn_lines++;
    return true;
}

static void line_end(struct ws_conn *c, struct ws_pending *p, struct rpc_line *l) {
    c->in_process = false;
    ws_charge(c, c->h->work_t0);
    if (!p->done)
        p->line = l;
    ws_flush(c);
}

/* A batch held for a later turn goes on first. False: it is held still. */
static bool ws_resume_line(struct ws_conn *c) {
    struct ws_pending *p = c->tail;

    if (p == NULL || p->line == NULL || !rpc_line_paused(p->line))
        return true;
    c->h->work_t0 = uv_hrtime();
    c->in_process = true;
    line_end(c, p, rpc_line_resume(p->line));
    return c->tail != p || p->line == NULL || !rpc_line_paused(p->line);
}

static void ws_run(struct ws_conn *c, struct ws_in *in) {
    struct ws_pending *p;
    char msg[96];

    switch (in->kind) {
    case IN_OVERSIZE:
        snprintf(msg, sizeof(msg), "Invalid Request: message longer than %d bytes",
                 c->h->cfg->max_line_bytes);
        ws_error(c, RPC_INVALID_REQUEST, msg);
        return;
    case IN_BINARY:
        ws_error(c, RPC_INVALID_REQUEST,
                 "Invalid Request: binary frame; send each JSON-RPC message as one text frame");
        return;
    case IN_TEXT:
        break;
    }
    if (strspn(in->text, " \t\r\n") == in->len)
        return; /* a blank message is skipped, as a blank line is */
    if ((p = ws_enqueue(c)) == NULL) {
        log_warnx("ws client %s: out of memory, closing", c->name);
        ws_kill(c);
        return;
    }
    p->reserved = ws_budget(c);
    c->h->answer_reserved += p->reserved;
    const struct rpc_owner o = {
        .done = line_done_cb,
        .owner = p,
        .session = c->session,
        .budget_bytes = p->reserved,
        .pace = pace_cb,
    };
    ws_turn(c);
    c->turn_lines++;
    c->h->work_t0 = uv_hrtime();
    c->in_process = true;
    line_end(c, p, rpc_line_run(c->h->hooks.rpc, in->text, in->len, &o));
}

/* Read from the peer only while nothing it sent waits here: the messages
 * waiting, a batch held for a later turn, output it has not taken. */
static void ws_set_rx(struct ws_conn *c) {
    bool want = !c->closing && !c->ending && !c->paused && !c->yielded && c->nin == 0;

    if (want == c->rx_on || c->closing)
        return;
    c->rx_on = want;
    lws_rx_flow_control(c->wsi, want ? 1 : 0);
    /* What lws read ahead is served on its next turn for this connection;
     * asking for a writable callback gives it one. */
    if (want)
        lws_callback_on_writable(c->wsi);
}

/* Work through the messages waiting, while this client's share of the
 * loop turn lasts and its output is taken; then read again. */
static void ws_work(struct ws_conn *c) {
    if (c->closing || c->yielded || c->in_process)
        return;
    while (!c->closing && !c->ending) {
        if (!ws_resume_line(c)) {
            ws_yield(c);
            break;
        }
        if (c->in_head == NULL)
            break;
        if (ws_over(c)) {
            c->paused = true;
            break;
        }
        if (ws_share_spent(c)) {
            ws_yield(c);
            break;
        }
        struct ws_in *in = c->in_head;
        c->in_head = in->next;
        if (c->in_head == NULL)
            c->in_tail = NULL;
        c->nin--;
        ws_run(c, in);
        free(in);
    }
    if (!c->closing && !c->ending && c->tail && c->tail->line && rpc_line_paused(c->tail->line))
        ws_yield(c);
    ws_set_rx(c);
}

static void ws_queue_in(struct ws_conn *c, enum in_kind kind, const char *text, size_t len) {
    struct ws_in *in = malloc(sizeof(*in) + len + 1);

    if (in == NULL) {
        log_warnx("ws client %s: out of memory for a message, closing", c->name);
        ws_kill(c);
        return;
    }
    in->next = NULL;
    in->kind = kind;
    in->len = len;
    if (len)
        memcpy(in->text, text, len);
    in->text[len] = '\0';
    if (c->in_tail)
        c->in_tail->next = in;
    else
        c->in_head = in;
    c->in_tail = in;
    c->nin++;
}

/* A piece of a message: gather it; a whole one waits for its turn. A
 * message past limits.max_line_bytes is answered -32600 and dropped, the
 * connection goes on (as a long line on TCP). */
static int ws_receive(struct ws_conn *c, const void *data, size_t len) {
    size_t max = (size_t)c->h->cfg->max_line_bytes;

    if (c->ending || c->closing)
        return 0; /* after its end: read and dropped */
    c->last_active_ns = uv_hrtime();
    if (!c->in_msg) {
        c->in_msg = true;
        c->msg_len = 0;
        c->msg_discard = false;
        c->msg_binary = lws_frame_is_binary(c->wsi) != 0;
        c->msg_started_ns = c->last_active_ns;
    }
    if (!c->msg_discard && !c->msg_binary) {
        if (c->msg_len + len > max) {
            c->msg_discard = true;
            free(c->msg);
            c->msg = NULL;
            c->msg_cap = 0;
        } else if (c->msg_len + len > c->msg_cap) {
            size_t cap = c->msg_cap ? c->msg_cap : 4096;
            while (cap < c->msg_len + len)
                cap *= 2;
            if (cap > max)
                cap = max;
            char *m = realloc(c->msg, cap);
            if (m == NULL) {
                log_warnx("ws client %s: out of memory for a message, closing", c->name);
                ws_kill(c);
                return 0;
            }
            c->msg = m;
            c->msg_cap = cap;
        }
        if (!c->msg_discard && len)
            memcpy(c->msg + c->msg_len, data, len);
        if (!c->msg_discard)
            c->msg_len += len;
    }
    if (!lws_is_final_fragment(c->wsi))
        return 0;
    c->in_msg = false;
    c->msg_started_ns = 0;
    if (c->msg_binary)
        ws_queue_in(c, IN_BINARY, NULL, 0);
    else if (c->msg_discard)
        ws_queue_in(c, IN_OVERSIZE, NULL, 0);
    else
        ws_queue_in(c, IN_TEXT, c->msg, c->msg_len);
    /* A big buffer is not kept for the next, likely small, message. */
    if (c->msg_cap > 65536) {
        free(c->msg);
        c->msg = NULL;
        c->msg_cap = 0;
    }
    /* lws may hand over a read's worth of messages before flow control
     * stops it; more than the requests a client may have outstanding
     * means it does not, and memory must stay bounded. */
    if (c->nin > MAX_PENDING_LINES) {
        log_warnx("ws client %s: more than %d messages waiting, closing", c->name,
                  MAX_PENDING_LINES);
        ws_kill(c);
        return 0;
    }
    ws_work(c);
    return 0;
}

/* ---- a /ws client's life ---- */

static size_t sink_backlog(void *conn, bool *answers_owed) {
    struct ws_conn *c = conn;

    *answers_owed = c->head != NULL;
    return ws_backlog(c);
}

static void sink_write(void *conn, char *text) {
    struct ws_conn *c = conn;

    if (c->ending || c->closing) {
        free(text);
        return;
    }
    ws_send(c, text);
}

static void sink_close(void *conn, const char *why) {
    struct ws_conn *c = conn;

    if (c->closing)
        return;
    log_warnx("ws client %s: %s, closing", c->name, why);
    ws_kill(c);
}

/* rpc_end_cb: five wrong tokens in a row. The answer owed is still sent. */
static void session_end_cb(void *owner, const char *why) {
    struct ws_conn *c = owner;

    log_warnx("ws client %s: %s, closing", c->name, why);
    ws_end(c, LWS_CLOSE_STATUS_POLICY_VIOLATION, why);
}

static void peer_name(const struct sockaddr_storage *ss, char *out, size_t outlen) {
    char host[64] = "?";

    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        uv_ip6_name(a, host, sizeof(host));
        snprintf(out, outlen, "[%s]:%d", host, ntohs(a->sin6_port));
    } else if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        uv_ip4_name(a, host, sizeof(host));
        snprintf(out, outlen, "%s:%d", host, ntohs(a->sin_port));
    } else {
        snprintf(out, outlen, "?");
    }
}

/* The peer gets one -32005 error, then a close 1013 (try again later). */
static void ws_refuse(struct ws_conn *c, const char *why, const char *msg) {
    log_warnx("ws client %s: refused, %s", c->name, why);
    ws_error(c, RPC_BUSY, msg);
    ws_end(c, 1013, "too many clients");
}

static int ws_open(struct http *h, struct lws *wsi, struct pss *pss) {
    struct ws_conn *c = calloc(1, sizeof(*c));
    socklen_t alen = sizeof(struct sockaddr_storage);
    char why[96], msg[96];

    if (c == NULL) {
        log_warnx("http: out of memory for a ws client");
        return -1;
    }
    c->h = h;
    c->wsi = wsi;
    c->pss = pss;
    pss->c = c;
    c->rx_on = true;
    c->next = h->conns;
    if (h->conns)
        h->conns->prev = c;
    h->conns = c;
    h->nws++;
    c->last_active_ns = c->last_write_ns = uv_hrtime();
    c->turn_id = h->turn_id;
    if (getpeername((int)lws_get_socket_fd(wsi), (struct sockaddr *)&c->peer, &alen) != 0)
        memset(&c->peer, 0, sizeof(c->peer));
    peer_name(&c->peer, c->name, sizeof(c->name));
    if (!h->stopping &&
        (c->peer_row = peers_get(h->hooks.peers, (struct sockaddr *)&c->peer, uv_hrtime())))
        c->peer_row->nconn++;
    if (h->stopping) {
        ws_end(c, LWS_CLOSE_STATUS_GOINGAWAY, "shutting down");
        return 0;
    }
    if (h->nws > h->cfg->max_clients) {
        snprintf(why, sizeof(why), "%d ws clients already connected", h->cfg->max_clients);
        snprintf(msg, sizeof(msg), "Too many clients (max %d)", h->cfg->max_clients);
        ws_refuse(c, why, msg);
        return 0;
    }
    if (c->peer_row && c->peer_row->nconn > h->cfg->max_clients_per_address) {
        snprintf(why, sizeof(why), "%d connections from this address already",
                 h->cfg->max_clients_per_address);
        snprintf(msg, sizeof(msg), "Too many connections from this address (max %d)",
                 h->cfg->max_clients_per_address);
        ws_refuse(c, why, msg);
        return 0;
    }
    c->session = rpc_session_create(h->hooks.rpc, (const struct sockaddr *)&c->peer, c->name,
                                    h->hooks.peers, session_end_cb, c);
    if (c->session == NULL) {
        log_warnx("ws client %s: out of memory, closing", c->name);
        return -1;
    }
    rpc_session_set_sink(c->session, &(struct rpc_sink){.conn = c,
                                                        .backlog = sink_backlog,
                                                        .write = sink_write,
                                                        .close = sink_close});
    log_debug("ws client %s: connected", c->name);
    return 0;
}

/* The connection is gone (or the server stops): its lines' effects still
 * complete, their answers are dropped; nothing refers to c afterwards. */
static void ws_detach(struct ws_conn *c) {
    struct http *h = c->h;

    for (struct ws_pending *p = c->head, *n; p; p = n) {
        n = p->next;
        if (p->line)
            rpc_line_abandon(p->line);
        h->answer_reserved -= p->reserved;
        h->answer_bytes -= p->held;
        free(p->out);
        free(p);
    }
    for (struct ws_out *o = c->out_head, *n; o; o = n) {
        n = o->next;
        h->answer_bytes -= o->len - o->off;
        free(o);
    }
    for (struct ws_in *i = c->in_head, *n; i; i = n) {
        n = i->next;
        free(i);
    }
    ready_remove(c);
    rpc_session_destroy(c->session);
    if (c->peer_row)
        c->peer_row->nconn--;
    free(c->msg);
    if (c->prev)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    h->nws--;
    if (c->pss)
        c->pss->c = NULL;
    log_debug("ws client %s: closed", c->name);
    free(c);
    /* All drained before the deadline: tear down on the next turn, outside
     * lws's callbacks (its context must not be destroyed from inside). */
    if (h->stopping && !h->lws_destroying && h->nws == 0)
        uv_timer_start(&h->sweep, drain_deadline_cb, 0, 0);
}

/* The WebSocket handshake: only on /ws, and from a browser only for a page
 * this server served (Origin names the Host it asked, over http or, through
 * a proxy, https): a page from another site must not reach the lasers
 * through the user's browser. Returns
 * nonzero to refuse (lws closes the connection). */
static int ws_filter(struct lws *wsi) {
    char uri[16], origin[256], host[256], want[272], want_tls[272];
    int n;

    if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) < 0 || strcmp(uri, "/ws") != 0) {
        log_debug("http: WebSocket upgrade refused: not on /ws");
        return 1;
    }
    if (lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN) == 0)
        return 0; /* not a browser */
    n = lws_hdr_copy(wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN);
    if (n < 0 || lws_hdr_copy(wsi, host, sizeof(host), WSI_TOKEN_HOST) < 0)
        return 1;
    /* https: the page came through a TLS proxy in front of us. */
    snprintf(want, sizeof(want), "http://%s", host);
    snprintf(want_tls, sizeof(want_tls), "https://%s", host);
    if (strcmp(origin, want) != 0 && strcmp(origin, want_tls) != 0) {
        unsigned suppressed = 0;
        if (log_ratelimit_ok(&lws_log_rl, uv_hrtime(), LWS_LOG_INTERVAL_NS, &suppressed))
            log_warnx("http: WebSocket from a page of %s refused (not this server's page, %s)",
                      origin, want);
        return 1;
    }
    return 0;
}

/* ---- HTTP: static files and /metrics ---- */

static const struct {
    const char *ext, *type;
} mime_types[] = {
    {".html", "text/html; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".mjs", "text/javascript; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".png", "image/png"},
    {".svg", "image/svg+xml"},
    {".ico", "image/x-icon"},
    {".json", "application/json"},
    {".map", "application/json"},
    {".txt", "text/plain; charset=utf-8"},
    {".jpg", "image/jpeg"},
    {".jpeg", "image/jpeg"},
    {".webmanifest", "application/manifest+json"},
    {".woff2", "font/woff2"},
};

static const char *mime_type(const char *name) {
    const char *dot = strrchr(name, '.');

    for (size_t i = 0; dot && i < sizeof(mime_types) / sizeof(mime_types[0]); i++) {
        if (strcmp(dot, mime_types[i].ext) == 0)
            return mime_types[i].type;
    }
    return "application/octet-stream";
}

/* A file name the page may ask for: no directory, nothing hidden. */
static bool name_ok(const char *s) {
    size_t n = strlen(s);

    if (n == 0 || n > NAME_MAX_BYTES || s[0] == '.')
        return false;
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

static int http_status(struct lws *wsi, unsigned code, const char *html) {
    if (lws_return_http_status(wsi, code, html))
        return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* Extra headers of every file: no guessing a type other than ours, and a
 * page that is checked again after an upgrade. */
static const char file_headers[] = "X-Content-Type-Options: nosniff\r\n"
                                   "Cache-Control: no-cache\r\n";

static int serve_file(struct lws *wsi, const char *dir, const char *name) {
    char path[CONFIG_PATH_MAX + NAME_MAX_BYTES + 2];
    struct stat st;
    int n;

    if (!name_ok(name))
        return http_status(wsi, HTTP_STATUS_NOT_FOUND, NULL);
    n = snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= sizeof(path) || stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return http_status(wsi, HTTP_STATUS_NOT_FOUND, NULL);
    n = lws_serve_http_file(wsi, path, mime_type(name), file_headers,
                            (int)(sizeof(file_headers) - 1));
    if (n < 0)
        return -1;
    if (n > 0 && lws_http_transaction_completed(wsi))
        return -1;
    return 0;
}

static int serve_metrics(struct http *h, struct lws *wsi, struct pss *pss) {
    unsigned char head[LWS_PRE + 512], *start = head + LWS_PRE, *p = start,
                                       *end = head + sizeof(head) - 1;
    size_t len = 0;
    char *text = h->hooks.metrics(h->hooks.ctx, &len);

    free(pss->body);
    pss->body = NULL;
    if (text == NULL || (pss->body = malloc(LWS_PRE + len)) == NULL) {
        free(text);
        log_warnx("http: out of memory for /metrics");
        return http_status(wsi, HTTP_STATUS_INTERNAL_SERVER_ERROR, NULL);
    }
    memcpy(pss->body + LWS_PRE, text, len);
    free(text);
    pss->body_len = len;
    pss->off = 0;
    if (lws_add_http_common_headers(wsi, HTTP_STATUS_OK, "text/plain; version=0.0.4; charset=utf-8",
                                    len, &p, end) ||
        lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
                                    (const unsigned char *)"no-cache", 8, &p, end) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    lws_callback_on_writable(wsi);
    return 0;
}

static int metrics_writeable(struct lws *wsi, struct pss *pss) {
    size_t left, n;

    if (pss == NULL || pss->body == NULL)
        return 0;
    left = pss->body_len - pss->off;
    n = left < WS_CHUNK_BYTES ? left : WS_CHUNK_BYTES;
    if (lws_write(wsi, pss->body + LWS_PRE + pss->off, n,
                  n == left ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) < (int)n)
        return -1;
    pss->off += n;
    if (pss->off < pss->body_len) {
        lws_callback_on_writable(wsi);
        return 0;
    }
    free(pss->body);
    pss->body = NULL;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

static int on_http(struct http *h, struct lws *wsi, struct pss *pss) {
    char *uri = NULL;
    int len = 0, meth = lws_http_get_uri_and_method(wsi, &uri, &len);
    char path[NAME_MAX_BYTES + 16];

    if (meth != LWSHUMETH_GET)
        return http_status(wsi, HTTP_STATUS_METHOD_NOT_ALLOWED, NULL);
    if (uri == NULL || len <= 0 || (size_t)len >= sizeof(path))
        return http_status(wsi, HTTP_STATUS_NOT_FOUND, NULL);
    if (memchr(uri, '\0', (size_t)len) != NULL) /* a %00 lws decoded */
        return http_status(wsi, HTTP_STATUS_BAD_REQUEST, NULL);
    memcpy(path, uri, (size_t)len);
    path[len] = '\0';
    if (strcmp(path, "/") == 0)
        return serve_file(wsi, h->cfg->http.www_dir, "index.html");
    if (strcmp(path, "/metrics") == 0)
        return serve_metrics(h, wsi, pss);
    if (strcmp(path, "/ws") == 0)
        return http_status(wsi, HTTP_STATUS_BAD_REQUEST,
                           "/ws is a WebSocket: JSON-RPC 2.0, one message per text frame");
    if (strncmp(path, "/dygraphs/", 10) == 0)
        return serve_file(wsi, h->cfg->http.dygraphs_dir, path + 10);
    return serve_file(wsi, h->cfg->http.www_dir, path + 1);
}

static int http_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                   size_t len) {
    struct lws_context *ctx = lws_get_context(wsi);
    struct http *h = ctx ? lws_context_user(ctx) : NULL;
    struct pss *pss = user;

    if (h == NULL)
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    switch (reason) {
    case LWS_CALLBACK_WSI_CREATE:
        h->nconn++;
        return 0;
    case LWS_CALLBACK_WSI_DESTROY:
        h->nconn--;
        if (pss && pss->c)
            ws_detach(pss->c);
        if (pss) {
            free(pss->body);
            pss->body = NULL;
        }
        return 0;
    case LWS_CALLBACK_HTTP:
        return on_http(h, wsi, pss);
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return metrics_writeable(wsi, pss);
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
    case LWS_CALLBACK_CLOSED_HTTP:
        if (pss) {
            free(pss->body);
            pss->body = NULL;
        }
        break;
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return ws_filter(wsi);
    case LWS_CALLBACK_ESTABLISHED:
        return ws_open(h, wsi, pss);
    case LWS_CALLBACK_RECEIVE:
        return pss && pss->c ? ws_receive(pss->c, in, len) : 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return pss && pss->c ? ws_writeable(pss->c) : 0;
    case LWS_CALLBACK_CLOSED:
        if (pss && pss->c)
            ws_detach(pss->c);
        return 0;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols protocols[] = {
    {"wavemeterd", http_cb, sizeof(struct pss), 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* ---- the listener, the loop turns, the checks ---- */

static void listener_cb(uv_poll_t *w, int status, int events) {
    struct http *h = w->data;

    (void)events;
    if (status < 0) {
        log_warnx("http: listener: %s", uv_strerror(status));
        return;
    }
    /* One connection per turn of the loop, as the TCP server's accept; the
     * rest wait in the backlog. */
    int fd = accept((int)h->lfd, NULL, NULL);
    if (fd < 0) {
        unsigned suppressed = 0;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
            return;
        /* Out of descriptors or memory: the listener stays readable, so
         * it rests for a second rather than spin the loop. */
        if (log_ratelimit_ok(&h->accept_rl, uv_hrtime(), LWS_LOG_INTERVAL_NS, &suppressed))
            log_warnx("http: accept: %s; not accepting for 1 s", strerror(errno));
        uv_poll_stop(&h->listener);
        h->accept_resting = true;
        return;
    }
    if (h->nconn >= 2 * h->cfg->max_clients) {
        /* WebSocket clients have their own limit (and a JSON-RPC refusal);
         * this bounds what plain HTTP connections may hold. */
        unsigned suppressed = 0;
        if (log_ratelimit_ok(&h->accept_rl, uv_hrtime(), LWS_LOG_INTERVAL_NS, &suppressed))
            log_warnx("http: %d connections open, refusing more", h->nconn);
        close(fd);
        return;
    }
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0 ||
        fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
        log_warnx("http: accepted socket: %s", strerror(errno));
        close(fd);
        return;
    }
    /* Adopted or closed by lws. */
    if (lws_adopt_socket_vhost(h->vh, fd) == NULL)
        log_warnx("http: could not take a connection (out of memory?)");
}

/* The next loop turn: the clients that yielded go on, in turn, while the
 * turn's budget lasts. At stop, the same handle waits for lws to close. */
static void idle_cb(uv_idle_t *t) {
    struct http *h = t->data;
    struct ws_conn *c = h->ready_head;

    h->ready_head = h->ready_tail = NULL;
    if (h->turn_ns >= TURN_BUDGET_NS)
        h->turn_ns = 0; /* at most two budgets a turn, as server.c */
    while (c) {
        struct ws_conn *next = c->ready_next;
        c->ready_next = NULL;
        c->yielded = false;
        if (h->turn_ns < TURN_BUDGET_NS)
            ws_work(c);
        else
            ws_yield(c);
        c = next;
    }
    if (h->ready_head == NULL)
        uv_idle_stop(t);
}

static void turn_check_cb(uv_check_t *t) {
    struct http *h = t->data;

    h->turn_id++;
    h->turn_ns = 0;
}

static void sweep_cb(uv_timer_t *t) {
    struct http *h = t->data;
    uint64_t now = uv_hrtime();
    uint64_t idle_ns = (uint64_t)h->cfg->idle_timeout_s * 1000000000u;
    uint64_t stall_ns = (uint64_t)h->cfg->write_stall_timeout_s * 1000000000u;
    uint64_t line_ns = (uint64_t)h->cfg->line_timeout_s * 1000000000u;
    char msg[96];

    if (h->accept_resting && !h->stopping) {
        h->accept_resting = false;
        uv_poll_start(&h->listener, UV_READABLE, listener_cb);
    }
    for (struct ws_conn *c = h->conns, *n; c; c = n) {
        n = c->next;
        if (c->closing)
            continue;
        /* Output lws holds (a frame the kernel did not take whole) is
         * output not taken as much as ours is. */
        if ((c->out_head != NULL || lws_partial_buffered(c->wsi)) &&
            now - c->last_write_ns > stall_ns) {
            log_warnx("ws client %s: not reading its answers for %d s, closing", c->name,
                      h->cfg->write_stall_timeout_s);
            ws_kill(c);
        } else if (c->ending) {
            /* Its close waits for the socket to take the close frame; a
             * peer that reads nothing would hold it open for ever. */
            if (now - c->ending_ns > stall_ns) {
                log_warnx("ws client %s: not closed within %d s of its end (%s), dropping", c->name,
                          h->cfg->write_stall_timeout_s, c->close_why);
                ws_kill(c);
            }
            continue;
        } else if (c->in_msg && now - c->msg_started_ns > line_ns) {
            log_info("ws client %s: message not finished within %d s, closing", c->name,
                     h->cfg->line_timeout_s);
            snprintf(msg, sizeof(msg), "Invalid Request: message not finished within %d s",
                     h->cfg->line_timeout_s);
            ws_error(c, RPC_INVALID_REQUEST, msg);
            ws_end(c, LWS_CLOSE_STATUS_POLICY_VIOLATION, "message not finished in time");
        } else if (!c->in_msg && c->head == NULL && c->out_head == NULL && c->in_head == NULL &&
                   now - c->last_active_ns > idle_ns) {
            log_info("ws client %s: idle for %d s, closing", c->name, h->cfg->idle_timeout_s);
            ws_end(c, LWS_CLOSE_STATUS_NORMAL, "idle");
        }
    }
}

/* ---- start and stop ---- */

struct walk_set {
    uv_handle_t **v;
    size_t n, cap;
    bool failed;
};

static void collect_cb(uv_handle_t *hd, void *arg) {
    struct walk_set *w = arg;

    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 64;
        uv_handle_t **v = realloc(w->v, cap * sizeof(*v));
        if (v == NULL) {
            w->failed = true;
            return;
        }
        w->v = v;
        w->cap = cap;
    }
    w->v[w->n++] = hd;
}

/* Note the handles lws's context added to the loop (its idle and timer; its
 * per-connection polls come and go): its destruction is finished when they
 * have closed. before: the loop's handles before the context was made. */
static void note_lws_handles(struct http *h, const struct walk_set *before) {
    struct walk_set after = {0};

    uv_walk(h->loop, collect_cb, &after);
    for (size_t i = 0; i < after.n; i++) {
        bool old = false;
        for (size_t j = 0; j < before->n && !old; j++)
            old = after.v[i] == before->v[j];
        if (!old && after.v[i]->type != UV_POLL && h->nlws_handles < LWS_STATIC_HANDLES)
            h->lws_handles[h->nlws_handles++] = after.v[i];
    }
    free(after.v);
}

static void lws_left_cb(uv_handle_t *hd, void *arg) {
    struct http *h = arg;

    for (int i = 0; i < h->nlws_handles; i++)
        if (hd == h->lws_handles[i])
            h->reaping = true; /* still there */
}

static void own_handle_closed(uv_handle_t *hd) {
    struct http *h = hd->data;

    if (--h->handles == 0 && h->stop_cb)
        h->stop_cb(h->stop_arg);
}

/* At stop, once a loop turn: lws's handles gone, its context can be freed
 * (the second lws_context_destroy, as lws wants with a foreign libuv loop),
 * then our own handles close and the stop is done. */
static void reap_cb(uv_idle_t *t) {
    struct http *h = t->data;

    h->reaping = false;
    uv_walk(h->loop, lws_left_cb, h);
    if (h->reaping) {
        if (uv_hrtime() < h->reap_deadline_ns)
            return;
        log_warnx("http: libwebsockets did not close its handles within %u s; its context is "
                  "left as it is",
                  (unsigned)(LWS_CLOSE_DEADLINE_NS / 1000000000u));
    } else {
        lws_context_destroy(h->ctx); /* frees it; sets h->ctx to NULL */
        if (h->ctx != NULL)
            log_warnx("http: libwebsockets' context not freed at stop");
    }
    uv_idle_stop(t);
    uv_close((uv_handle_t *)&h->idle, own_handle_closed);
    uv_close((uv_handle_t *)&h->turn_check, own_handle_closed);
}

/* Drained (or the deadline came): the clients left are dropped, lws closes
 * every connection, and we wait for its handles to close. */
static void http_teardown(struct http *h) {
    if (h->lws_destroying)
        return;
    h->lws_destroying = true;
    while (h->conns)
        ws_detach(h->conns);
    uv_timer_stop(&h->sweep);
    uv_close((uv_handle_t *)&h->sweep, own_handle_closed);
    lws_context_destroy(h->ctx);
    h->ready_head = h->ready_tail = NULL;
    h->reap_deadline_ns = uv_hrtime() + LWS_CLOSE_DEADLINE_NS;
    uv_idle_stop(&h->idle); /* a start on an active handle keeps its callback */
    uv_idle_start(&h->idle, reap_cb);
}

static void drain_deadline_cb(uv_timer_t *t) {
    http_teardown(t->data);
}

static void listener_closed(uv_handle_t *hd) {
    struct http *h = hd->data;

    close((int)h->lfd);
    h->lfd = -1;
    own_handle_closed(hd);
}

void http_stop(struct http *h, void (*cb)(void *arg), void *arg) {
    h->stopping = true;
    h->stop_cb = cb;
    h->stop_arg = arg;
    uv_poll_stop(&h->listener);
    uv_close((uv_handle_t *)&h->listener, listener_closed);
    /* The per-address rows belong to the TCP server, which may be gone
     * before the drain is over. */
    for (struct ws_conn *c = h->conns; c; c = c->next) {
        if (c->peer_row)
            c->peer_row->nconn--;
        c->peer_row = NULL;
    }
    for (struct ws_conn *c = h->conns, *n; c; c = n) {
        n = c->next;
        ready_remove(c);
        c->paused = false;
        ws_resume_line(c); /* a held batch is finished now (pace lets it) */
        ws_end(c, LWS_CLOSE_STATUS_GOINGAWAY, "shutting down");
        ws_flush(c);
    }
    if (h->nws == 0) {
        http_teardown(h);
        return;
    }
    uv_timer_stop(&h->sweep);
    uv_timer_start(&h->sweep, drain_deadline_cb, DRAIN_MS, 0);
}

/* A listening socket for host:port, non-blocking. Returns it, or a
 * negative errno-style code. */
static int listen_on(const char *host, int port, struct sockaddr_storage *ss) {
    int fd, one = 1, rc;
    socklen_t len;

    memset(ss, 0, sizeof(*ss));
    if (strchr(host, ':'))
        rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss);
    else
        rc = uv_ip4_addr(host, port, (struct sockaddr_in *)ss);
    if (rc != 0)
        return -EINVAL;
    len = ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if ((fd = socket(ss->ss_family, SOCK_STREAM, 0)) < 0)
        return -errno;
    if (fcntl(fd, F_SETFL, O_NONBLOCK) != 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        (ss->ss_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) ||
        bind(fd, (struct sockaddr *)ss, len) != 0 || listen(fd, 128) != 0 ||
        getsockname(fd, (struct sockaddr *)ss, &len) != 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

int http_start(struct http **out, uv_loop_t *loop, const struct config *cfg,
               const struct http_hooks *hooks, char *err, size_t errlen) {
    struct lws_context_creation_info info;
    struct sockaddr_storage ss;
    struct walk_set before = {0};
    void *loops[1] = {loop};
    struct http *h;
    int fd;

    *out = NULL;
    if ((h = calloc(1, sizeof(*h))) == NULL) {
        snprintf(err, errlen, "http: out of memory");
        return -ENOMEM;
    }
    h->loop = loop;
    h->cfg = cfg;
    h->hooks = *hooks;
    if ((fd = listen_on(cfg->http.host, cfg->http.port, &ss)) < 0) {
        snprintf(err, errlen, "http.listen %s: %s", cfg->http.listen,
                 fd == -EINVAL ? "not a numeric address" : strerror(-fd));
        free(h);
        return fd;
    }
    h->lfd = (uv_os_sock_t)fd;
    if (ss.ss_family == AF_INET6)
        snprintf(h->bound, sizeof(h->bound), "[%s]:%d", cfg->http.host,
                 ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
    else
        snprintf(h->bound, sizeof(h->bound), "%s:%d", cfg->http.host,
                 ntohs(((struct sockaddr_in *)&ss)->sin_port));

    lws_set_log_level(LLL_ERR | LLL_WARN | LLL_NOTICE, lws_log_cb);
    memset(&info, 0, sizeof(info));
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_EXPLICIT_VHOSTS |
                   LWS_SERVER_OPTION_VALIDATE_UTF8;
    info.foreign_loops = loops;
    info.pcontext = &h->ctx;
    info.user = h;
    info.uid = -1;
    info.gid = -1;
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    info.protocols = protocols;
    info.vhost_name = "wavemeterd";
    /* A request's headers must arrive as a line must (limits.line_timeout_s). */
    info.timeout_secs = (unsigned)cfg->line_timeout_s;
    uv_walk(loop, collect_cb, &before);
    if (before.failed || (h->ctx = lws_create_context(&info)) == NULL) {
        snprintf(err, errlen,
                 "http: libwebsockets could not start on the loop (is libwebsockets-evlib-uv "
                 "installed?)");
        free(before.v);
        close(fd);
        free(h);
        return -ENOMEM;
    }
    note_lws_handles(h, &before);
    free(before.v);
    if ((h->vh = lws_create_vhost(h->ctx, &info)) == NULL) {
        /* Out of memory only (it listens on nothing). The context's handles
         * are closed by the loop's last turns; lws's memory is not freed. */
        snprintf(err, errlen, "http: libwebsockets could not make its server");
        lws_context_destroy(h->ctx);
        close(fd);
        free(h);
        return -ENOMEM;
    }
    uv_poll_init_socket(loop, &h->listener, h->lfd);
    h->listener.data = h;
    uv_timer_init(loop, &h->sweep);
    h->sweep.data = h;
    uv_idle_init(loop, &h->idle);
    h->idle.data = h;
    uv_check_init(loop, &h->turn_check);
    h->turn_check.data = h;
    h->handles = 4;
    uv_check_start(&h->turn_check, turn_check_cb);
    uv_timer_start(&h->sweep, sweep_cb, SWEEP_MS, SWEEP_MS);
    uv_poll_start(&h->listener, UV_READABLE, listener_cb);
    *out = h;
    return 0;
}

const char *http_bound(const struct http *h) {
    return h->bound;
}

int http_ws_clients(const struct http *h) {
    return h->nws;
}

int http_connections(const struct http *h) {
    return h->nconn;
}

void http_destroy(struct http *h) {
    free(h);
}
