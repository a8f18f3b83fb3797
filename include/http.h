/*
 * http: the HTTP and WebSocket side, libwebsockets on the daemon's own libuv
 * loop. Owns the listening socket of http.listen, every HTTP connection (the
 * page's static files, /metrics) and every WebSocket client of /ws. A /ws
 * client is one more JSON-RPC client: one message per text frame, answers in
 * request order, the same budgets, backpressure and access rules as TCP
 * (each connection has its rpc_session, carried and never looked into).
 * Parses no HTTP itself (libwebsockets does), interprets no method and
 * builds no metric (the hooks do).
 */
#ifndef WMD_HTTP_H
#define WMD_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "config.h"
#include "jsonrpc.h"
#include "peers.h"

struct http; /* opaque; heap, http_start to http_destroy */

/* What the HTTP side borrows from the daemon; all outlive the http object
 * (peers only until http_stop, which gives its rows back at once). */
struct http_hooks {
    const struct rpc_server *rpc; /* methods, limits and access policy */
    /* Per-address connection counts and wrong-token counts, shared with the
     * TCP server so an address's limits hold whatever the transport. */
    struct peers *peers;
    /* The /metrics body: new malloc'd text (Prometheus text format 0.0.4),
     * its length in *len; NULL when out of memory. Loop thread. */
    char *(*metrics)(void *ctx, size_t *len);
    void *ctx;
};

/*
 * Bind http.listen from cfg and start serving on loop (cfg->http_port 0:
 * a free port; http_bound says which). cfg and hooks are borrowed and must
 * outlive the object. Returns 0 with *out set, or < 0 with err set
 * ("http.listen 127.0.0.1:7480: address already in use"); nothing is left
 * on the loop on failure. Loop thread, before uv_run.
 */
int http_start(struct http **out, uv_loop_t *loop, const struct config *cfg,
               const struct http_hooks *hooks, char *err, size_t errlen);

/* "127.0.0.1:7480" as bound (the port resolved). */
const char *http_bound(const struct http *h);

/* WebSocket clients connected now (refused ones until they are closed). */
int http_ws_clients(const struct http *h);
/* HTTP connections open now, WebSocket clients included. */
int http_connections(const struct http *h);

/*
 * Stop accepting and reading; write the answers the WebSocket clients are
 * owed (for up to 500 ms), close them (a close frame 1001, going away),
 * then destroy the libwebsockets context, which takes a few loop turns (its libuv
 * handles close asynchronously). cb(arg) runs on the loop once nothing of
 * libwebsockets is left on it. The peers rows are given back before this
 * returns. At most once.
 */
void http_stop(struct http *h, void (*cb)(void *arg), void *arg);

/* Free h after its stop finished and uv_run returned (NULL: no-op). */
void http_destroy(struct http *h);

#endif
