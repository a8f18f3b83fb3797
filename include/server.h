/*
 * server: the TCP side. Owns the listening socket and every client
 * connection: framing, per-client answer ordering, write backpressure, idle
 * and stall timeouts, the client limits. Hands each line to the JSON-RPC
 * envelope with the connection's rpc_session, which it carries and never
 * looks into; never interprets a method or decides who may write.
 */
#ifndef WMD_SERVER_H
#define WMD_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "jsonrpc.h"
#include "peers.h"

struct client; /* opaque */

/* Embedded in the daemon. */
struct server {
    uv_loop_t *loop;
    const struct config *cfg;
    const struct rpc_server *rpc;
    uv_tcp_t listener;
    uv_timer_t sweep;                       /* idle and write-stall checks */
    uv_idle_t idle;                         /* runs the clients that yielded their turn */
    uv_check_t turn_check;                  /* marks the end of each loop turn; writes output */
    uv_prepare_t flush_prep;                /* writes output made outside poll, before it */
    struct client *out_head;                /* clients with output not yet written */
    struct client *ready_head, *ready_tail; /* those clients, first come first served */
    struct client *clients;                 /* doubly linked */
    int nclients;
    struct peers peers;     /* per-address connection counts; shared with the sessions */
    uint64_t turn_ns;       /* client work done in this loop turn, in ns */
    uint64_t turn_id;       /* loop turns seen */
    uint64_t work_t0;       /* when the client work being metered began */
    bool accept_deferred;   /* a connection waits to be accepted next turn */
    size_t trim_bytes;      /* answer bytes freed since memory was last trimmed */
    size_t answer_bytes;    /* answers made and not yet taken by the kernel, all clients */
    size_t answer_reserved; /* answer budgets of lines still being answered */
    bool stopping;          /* server_stop called: draining answers owed */
    char bound[80];         /* "127.0.0.1:7420" as bound (port resolved) */
    void (*on_closed)(struct server *s);
    int closing; /* handles still to close during stop */
};

/* Bind and listen on host:port from cfg. Returns 0 or < 0 with err set
 * ("listen 127.0.0.1:7420: address already in use"). */
int server_start(struct server *s, uv_loop_t *loop, const struct config *cfg,
                 const struct rpc_server *rpc, char *err, size_t errlen);
/* Stop accepting and reading; write the answers already owed (for up to
 * 500 ms), then close every client; cb runs when all handles are closed.
 * Answers still pending at the deadline are discarded (their effects still
 * complete). */
void server_stop(struct server *s, void (*cb)(struct server *s));

/* Clients whose reading is paused because they do not take their answers. */
int server_clients_paused(const struct server *s);

#endif
