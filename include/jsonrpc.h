/*
 * jsonrpc: the JSON-RPC 2.0 envelope, independent of sockets. One input line
 * in, one output line (or nothing) out, after every call it holds has been
 * answered. Handles batches, notifications, ids, positional params and every
 * envelope error; methods see only a params object and a call to answer.
 * Also each connection's access state (struct rpc_session) and the decisions
 * on it: who may write, logins. It never sees a file descriptor and never
 * blocks.
 */
#ifndef WMD_JSONRPC_H
#define WMD_JSONRPC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct peers;
struct sockaddr;

/* Standard codes (jsonrpc.org) and our own (-32000..-32099, docs/PROTOCOL.md). */
enum {
    RPC_PARSE_ERROR = -32700,
    RPC_INVALID_REQUEST = -32600,
    RPC_METHOD_NOT_FOUND = -32601,
    RPC_INVALID_PARAMS = -32602,
    RPC_INTERNAL_ERROR = -32603,
    RPC_UNAUTHORIZED = -32001,
    RPC_TIMEOUT = -32002,
    RPC_DEVICE_UNAVAILABLE = -32003,
    RPC_RATE_LIMITED = -32004,
    RPC_BUSY = -32005,
    RPC_NOT_READY = -32006,      /* no reading yet */
    RPC_STORAGE_FAILED = -32007, /* applied, but the state file could not be written */
    RPC_LASER_LOCKED = -32010,   /* operation needs the laser unlocked */
    RPC_LASER_NO_ACTUATOR = -32011,
    RPC_LASER_FAULT = -32012,
    RPC_OUT_OF_RANGE = -32013,
};

struct rpc_call;

/* A method handler, on the loop thread. params is a JSON object (borrowed,
 * positional params already named), never NULL, valid until the call is
 * answered. It must eventually call rpc_call_result or rpc_call_error exactly
 * once, now or later (a second answer is a bug: assert). A notification's
 * call runs like any other; its answer is discarded. */
typedef void (*rpc_handler)(struct rpc_call *call, json_t *params, void *ctx);

struct rpc_method {
    const char *name;
    rpc_handler fn;
    /* Names for positional params, in order, NULL-terminated; NULL = none. */
    const char *const *params;
    /* A write method: its calls are counted against the connection's write
     * rate and every answer, accepted or refused, is audited. */
    bool write;
};

/*
 * Who may change things: the facts the sessions' access decisions rest on,
 * from whoever knows the config (methods_init). Each hook gets the
 * rpc_server's ctx and runs on the loop thread when a call needs it, never
 * earlier, so a reload that changes what a hook reads (access.write_from)
 * applies to every open connection from its next call on.
 */
struct rpc_access {
    /* Whether a peer at addr may use write methods now. NULL: none may. */
    bool (*write_from)(void *ctx, const struct sockaddr *addr);
    /* Whether given (len bytes) is the write token, taking the same time
     * wherever it differs. NULL: writes need no login. */
    bool (*token_ok)(void *ctx, const char *given, size_t len);
    /* Where clients find the token, for the refusal that asks for it;
     * borrowed, read when the refusal is written. */
    const char *token_path;
    /* Wrong tokens per address, over all its connections, kept in the
     * session's peers table: login_blocked says whether a login from addr is
     * refused unchecked now (*wait_s: seconds until it is not), login_failed
     * counts one more wrong token. NULL: not limited, not counted. */
    bool (*login_blocked)(void *ctx, struct peers *peers, const struct sockaddr *addr,
                          double *wait_s);
    void (*login_failed)(void *ctx, struct peers *peers, const struct sockaddr *addr);
    /* Writes one connection may make: write_rate_per_s on average, up to
     * write_burst at once (a token bucket). 0: no limit. now_ns: a monotonic
     * clock for it (NULL: no limit). */
    double write_rate_per_s, write_burst;
    uint64_t (*now_ns)(void *ctx);
    /* Every answer to a write method: who, what, with what, and how it
     * ended (outcome: "ok" or the error's code and message). NULL: none. */
    void (*audit)(void *ctx, const char *peer, const char *method, json_t *params,
                  const char *outcome);
};

/* What the server gives the envelope: the method table, limits and access
 * policy. Owned by the caller, outlives every rpc_line and rpc_session. */
struct rpc_session;

/* How notifications reach a session's connection (set by its owner, the
 * server). Pushes wait while answers are owed, so an answer is never
 * overtaken by a push it announces (a subscribe's), and while the backlog
 * is large, so a slow reader gets coalesced pushes, not an unbounded queue. */
struct rpc_sink {
    void *conn;
    /* Bytes written and not yet taken by the peer; *answers_owed: requests
     * read and not yet answered on the wire. */
    size_t (*backlog)(void *conn, bool *answers_owed);
    /* Write one notification line: takes text (NUL-terminated, no newline). */
    void (*write)(void *conn, char *text);
    /* Close the connection now, unsent output dropped (a reader that stalls). */
    void (*close)(void *conn, const char *why);
};

struct rpc_server {
    const struct rpc_method *methods;
    size_t nmethods;
    void *ctx;        /* passed to every handler and access hook */
    size_t max_batch; /* most requests in one batch; 0 = no limit */
    /* Optional second lookup (e.g. sim.* methods); may be NULL. */
    const struct rpc_method *(*find)(void *ctx, const char *name);
    struct rpc_access access;
    /* Optional: a session's connection took output (pushes may go on), and
     * a session is about to be freed (drop what refers to it). */
    void (*session_drained)(void *ctx, struct rpc_session *s);
    void (*session_closed)(void *ctx, struct rpc_session *s);
};

/*
 * One connection's access state: its peer address, whether it has logged in
 * with the token, its wrong tokens in a row. Opaque. The transport makes one
 * per connection (rpc_session_create), owns it, hands it with each of the
 * connection's lines (struct rpc_owner) without looking inside, and frees it
 * (rpc_session_destroy) when the connection is gone. Every access decision
 * is made here, on the loop thread, against the access policy as it is at
 * the moment of the call.
 */
struct rpc_session;

/* How a session asks its connection to end (five wrong tokens in a row:
 * guessing, not a typo): read nothing more, write the answers owed, then
 * close. why names the reason for the log ("5 wrong tokens"). Called from
 * inside a handler, so inside rpc_line_run or rpc_line_resume; the answer
 * to the call that caused it is still written. */
typedef void (*rpc_end_cb)(void *owner, const char *why);

struct rpc_line;
/* Called once per rpc_line when all its calls are answered. out is a
 * malloc'd NUL-terminated compact JSON text with no newline, which the callee
 * owns and frees, or NULL when nothing is to be written (notifications only). */
typedef void (*rpc_done_cb)(void *owner, struct rpc_line *line, char *out);

/*
 * How a line reports back to its owner (the server's client), and what it may
 * cost. Copied by rpc_line_run; all but done may be 0/NULL.
 */
struct rpc_owner {
    rpc_done_cb done;
    void *owner; /* passed to done and pace */
    void *peer;  /* an opaque tag handlers get through rpc_call_peer */
    /* The connection's access state (borrowed: it must outlive the line, or
     * the line be abandoned first); NULL: the line's calls may not write. */
    struct rpc_session *session;
    /* Answer bytes this line may produce in all (0 = no limit): a call whose
     * answer would go past it is answered -32005 instead, and a method that
     * can tell in advance (rpc_call_budget) refuses before doing the work.
     * This is what bounds a client's answer memory while it is built. */
    size_t budget_bytes;
    /* Asked before each call of a batch after the first, on the loop thread:
     * false stops dispatching, and the owner calls rpc_line_resume later
     * (the next loop turn). This is how a big batch costs its share of
     * several loop turns instead of one long one. */
    bool (*pace)(void *owner);
};

/*
 * Process one line (without its newline). Returns the pending line object;
 * done is called exactly once, possibly before this returns. The line frees
 * itself after calling done. peer is opaque, available to handlers through
 * rpc_call_peer.
 * Returns NULL when done has already been called (every call answered at
 * once): there is nothing left to abandon. When even the line object cannot
 * be allocated, done is called with line NULL and out NULL. done must not
 * call rpc_line_abandon on its line.
 */
struct rpc_line *rpc_line_process(const struct rpc_server *srv, const char *buf, size_t len,
                                  rpc_done_cb done, void *owner, void *peer);

/* rpc_line_process with an answer budget and pacing (struct rpc_owner). A
 * line whose dispatch was paused is returned, never freed, until it is
 * resumed and done. */
struct rpc_line *rpc_line_run(const struct rpc_server *srv, const char *buf, size_t len,
                              const struct rpc_owner *o);
/* Start the calls a pace callback held back; the same rules as in
 * rpc_line_run (pace is asked again between calls). Returns the line, or NULL
 * when done has been called and the line freed. */
struct rpc_line *rpc_line_resume(struct rpc_line *line);
/* Whether the line is waiting for rpc_line_resume. */
bool rpc_line_paused(const struct rpc_line *line);

/* The owner goes away before the line is done: done will not be called; the
 * pending calls still run to completion (their effects still happen) and
 * their answers are discarded. Calls of a batch not yet started (a handler
 * made the owner go away while the line was being dispatched) are not
 * started. line may be NULL (no-op); at most once per line. */
void rpc_line_abandon(struct rpc_line *line);

/* An error line not tied to a request (e.g. line too long): new malloc'd text. */
char *rpc_error_text(int code, const char *message);

/* Answer a call. result: steals the reference; NULL (e.g. a failed json_pack)
 * answers -32603. Calls done on the line when it was the last pending call;
 * the call object is invalid afterwards. */
void rpc_call_result(struct rpc_call *call, json_t *result);
/* The same with the result already written as text: one compact JSON value,
 * UTF-8, no newline, which the method guarantees (for big results that
 * building as json_t would make slow: history). Steals the malloc'd text;
 * NULL answers -32603. */
void rpc_call_result_text(struct rpc_call *call, char *text);
/* data: steals, may be NULL. message is copied; NULL gives the standard text
 * for the code. */
void rpc_call_error(struct rpc_call *call, int code, const char *message, json_t *data);
void rpc_call_errorf(struct rpc_call *call, int code, json_t *data, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Answer bytes this call may still produce (SIZE_MAX when the line has no
 * budget). A method whose answer size it can bound before building it
 * (history) refuses with rpc_call_too_big when the bound is over this. */
size_t rpc_call_budget(const struct rpc_call *call);
/* Answer -32005: an answer of about need bytes is more than the budget. */
void rpc_call_too_big(struct rpc_call *call, size_t need);

/* The peer passed to rpc_line_process, or NULL when the line was abandoned. */
void *rpc_call_peer(const struct rpc_call *call);
/* The method name as the client sent it; valid until the call is answered. */
const char *rpc_call_method(const struct rpc_call *call);

/* The session of the connection the call came on (struct rpc_owner), or NULL
 * when the line was abandoned or has none. */
struct rpc_session *rpc_call_session(const struct rpc_call *call);
/* Whether the call may change things: its peer is in the write networks now
 * and, when writes need a token, its connection has logged in. If not, the
 * call is answered -32001 saying which, and false is returned. */
bool rpc_call_may_write(struct rpc_call *call);
/* What the call's connection may do now, answering nothing (status tells a
 * client, e.g. the web page, whether to offer its controls): write_from, its
 * peer is in the write networks; token_required, writes need auth;
 * logged_in, the connection gave the right token. All false when the line
 * was abandoned or has no session. */
void rpc_call_access(const struct rpc_call *call, bool *write_from, bool *token_required,
                     bool *logged_in);
/* Answer a login (the auth method) with token (len bytes): true when writes
 * need no token or it is right, and the connection may then write; -32004
 * when too many wrong tokens came from the address lately (unchecked);
 * -32001 when wrong, which also withdraws an earlier login of the
 * connection and, the fifth time in a row, ends the connection once
 * answered. */
void rpc_call_login(struct rpc_call *call, const char *token, size_t len);

/*
 * A new session for a connection from addr (AF_INET or AF_INET6; anything
 * else may never write), on the loop thread. name is the peer's "ADDR:PORT"
 * for messages (copied). peers: the per-address table the access policy
 * counts wrong tokens in (borrowed; outlives the session; may be NULL). end
 * and owner: how the session ends its connection (rpc_end_cb). Returns NULL
 * when out of memory. Freed with rpc_session_destroy.
 */
struct rpc_session *rpc_session_create(const struct rpc_server *srv, const struct sockaddr *addr,
                                       const char *name, struct peers *peers, rpc_end_cb end,
                                       void *owner);
/* Free s (NULL: no-op). Every line that carries it must be done or
 * abandoned first. */
void rpc_session_destroy(struct rpc_session *s);
/* The owner's sink for notifications (copied). */
void rpc_session_set_sink(struct rpc_session *s, const struct rpc_sink *sink);
const struct rpc_sink *rpc_session_sink(const struct rpc_session *s);
/* One pointer for the notifications' per-session state (push.c). */
void **rpc_session_push_slot(struct rpc_session *s);
/* The owner: the connection took output; calls srv->session_drained. */
void rpc_session_drained(struct rpc_session *s);
/* The peer's "ADDR:PORT" as given to rpc_session_create. */
const char *rpc_session_name(const struct rpc_session *s);

#endif
