/*
 * daemon: the wiring of one running wavemeterd: the loop, the config, the
 * meter, the server and the bookkeeping every method reports (uptime, loop
 * lag). main owns it; methods borrow it. It holds no logic of its own.
 */
#ifndef WMD_DAEMON_H
#define WMD_DAEMON_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "clock.h"
#include "config.h"
#include "http.h"
#include "jsonrpc.h"
#include "laser.h"
#include "meter.h"
#include "mqtt.h"
#include "push.h"
#include "server.h"
#include "token.h"

struct daemon {
    uv_loop_t *loop;
    const struct clock *clk;
    struct config cfg;
    struct meter meter;
    struct lasers lasers;
    char state_dir[CONFIG_PATH_MAX];
    struct token token; /* when cfg.require_token */
    struct server server;
    struct rpc_server rpc;
    struct push push;  /* subscriptions */
    struct http *http; /* the page, /ws and /metrics; NULL while http.listen is off */
    struct mqtt mqtt;  /* publishing to a broker (off unless configured) */

    uint64_t start_ns;

    /* Loop lag: how late a 100 ms repeating timer fires. */
    uv_timer_t lag_timer;
    uint64_t lag_due_ns;
    double lag_last_ms, lag_max_ms;

    /* Loop turns: the time each turn of the loop spent working (its
     * length less the time it waited in poll), measured after each poll. */
    uv_check_t turn_check;
    uint64_t turn_at_ns, turn_idle_ns; /* at the last check: uv_hrtime, idle time */
    double turn_max_ms;
};

/* The method table (methods.c). Fills rpc for the daemon d. */
void methods_init(struct rpc_server *rpc, struct daemon *d);

/* After meter_init, lasers_init and mqtt_start: their state changes reach
 * subscribers and MQTT. */
void methods_listen(struct daemon *d);

/* The meter's reading callback: the locks, then the subscribers. */
void methods_on_reading(struct meter *m, const struct reading *r, void *ctx);

/* New reference: one channel's latest reading as clients see it. */
json_t *methods_reading_json(const struct meter_channel *c, uint64_t now_ns);

#endif
