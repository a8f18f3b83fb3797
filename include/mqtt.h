/*
 * mqtt: publishing readings, lock states and the daemon's availability to an
 * MQTT broker with libmosquitto, on the daemon's loop. Its socket is watched
 * by a uv_poll_t, its keep-alive runs on a timer, names are resolved with
 * uv_getaddrinfo: nothing here blocks the loop, and nothing waits for the
 * broker. It builds no payload (the methods do) and knows no laser logic.
 */
#ifndef WMD_MQTT_H
#define WMD_MQTT_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "mqtt_out.h"

/* Addresses of one broker name tried in turn (a name with more is rare). */
#define MQTT_ADDRS_MAX 8
/* Messages handed to libmosquitto and not yet written (QoS 0) or
 * acknowledged (QoS 1, 2). 20 is libmosquitto's and mosquitto's own default
 * in-flight window; beyond it libmosquitto would queue without bound, so
 * the rest waits in our bounded queue. */
#define MQTT_INFLIGHT_MAX 20
/* On stop, `offline` and DISCONNECT get this long to leave; a broker that is
 * gone or stuck must not hold up the daemon's exit. */
#define MQTT_STOP_DEADLINE_MS 1000
/* "<prefix>/laser/<name>/reading": prefix 127, name 31, the rest 16. */
#define MQTT_TOPIC_MAX 192

enum mqtt_state {
    MQTT_OFF,        /* not enabled in the config */
    MQTT_RESOLVING,  /* uv_getaddrinfo in flight */
    MQTT_CONNECTING, /* TCP, TLS, CONNECT sent, CONNACK awaited */
    MQTT_CONNECTED,
    MQTT_WAITING, /* back-off before the next attempt */
    MQTT_STOPPING,
    MQTT_STOPPED,
};

struct mqtt;
typedef void (*mqtt_stopped_cb)(struct mqtt *m);

/* Per laser: its topics, its rate limit, and its newest lock state. */
struct mqtt_laser {
    char topic_reading[MQTT_TOPIC_MAX];
    char topic_lock[MQTT_TOPIC_MAX];
    uint64_t last_reading_ns; /* acquisition time of the last one published */
    char *lock_payload;       /* newest lock state (owned), NULL before the first */
    size_t lock_len;
    bool lock_pending; /* not yet handed to the broker */
};

/*
 * Embedded in the daemon, which owns it; mqtt_start, mqtt_stop (asynchronous:
 * done is called once every handle is closed). The poll handle is on the
 * heap, one per connection, freed in its close callback. Loop thread only.
 */
struct mqtt {
    uv_loop_t *loop;
    const struct mqtt_config *cfg;
    enum mqtt_state state;
    char broker[300]; /* "host:port", for logs and status */
    char client_id[128];
    char status_topic[MQTT_TOPIC_MAX];
    char *password; /* from password_file, or NULL */
    void *ssl_ctx;  /* SSL_CTX with tls, shared by every connection, else NULL */

    struct mosquitto *mosq; /* one per connection attempt, NULL between */
    uv_poll_t *poll;        /* watching mosquitto_socket(mosq) */
    int fd;                 /* the socket poll watches, -1 without */
    int poll_events;
    uv_timer_t misc_timer;  /* loop_misc (keep-alive) once a second */
    uv_timer_t retry_timer; /* back-off, connect timeout, stop deadline */
    uv_getaddrinfo_t gai;
    bool gai_busy;

    char addrs[MQTT_ADDRS_MAX][INET6_ADDRSTRLEN]; /* numeric */
    int naddrs, addr_i;
    uint32_t backoff_ms;

    /* Set from libmosquitto's callbacks, acted on once its call returns. */
    bool lost;           /* the connection is gone */
    int lost_rc;         /* MOSQ_ERR_* that ended it */
    int lost_errno;      /* errno then, for MOSQ_ERR_ERRNO */
    bool connack;        /* CONNACK accepted on this connection */
    bool just_connected; /* publish online and the lock states */
    char lost_why[200];  /* a reason given before the loss (CONNACK refused) */
    char lib_error[200]; /* libmosquitto's last error log line (TLS detail) */

    int nlasers;
    struct mqtt_laser lasers[CONFIG_MAX_LASERS];
    struct mqtt_queue queue; /* readings waiting */
    int inflight;

    uint64_t published, connects, reconnects;
    char error[256];  /* the last failure, "" while connected */
    char logged[256]; /* the last failure logged as a warning */

    mqtt_stopped_cb on_stopped;
    int closing; /* handles whose close callback is awaited */
};

/*
 * Loop thread, after the server is listening. With mqtt.enabled false
 * only marks m off (no handle, nothing to stop). Otherwise reads the
 * password file (refused when others may read it), loads the TLS files,
 * and starts connecting in the background. 0, or a negative errno-style
 * code with one line in err naming the key and the file; then nothing is
 * left to close.
 */
int mqtt_start(struct mqtt *m, uv_loop_t *loop, const struct config *cfg, char *err, size_t errlen);

/*
 * Loop thread. Publish `offline` (retained), disconnect and close, within
 * MQTT_STOP_DEADLINE_MS; done(m) is called once everything is closed
 * (before mqtt_stop returns when there was nothing to close). A name
 * lookup in flight cannot be cancelled: the stop then waits for it, as
 * long as the resolver takes (docs/MQTT.md).
 */
void mqtt_stop(struct mqtt *m, mqtt_stopped_cb done);

/* Whether a reading of laser (index in the config) taken at taken_ns (its
 * monotonic acquisition time) is to be published: enabled, not stopping,
 * and the rate limit allows it. A caller builds the payload only then. */
bool mqtt_wants_reading(const struct mqtt *m, int laser, uint64_t taken_ns);

/* Queue a reading (payload: JSON text, copied) and count it against the
 * laser's rate limit as taken at taken_ns. Never waits: when the queue is
 * full the oldest reading is dropped. */
void mqtt_publish_reading(struct mqtt *m, int laser, const char *payload, size_t len,
                          uint64_t taken_ns);

/* The laser's lock state changed (payload: JSON text, copied). It is
 * published retained; a state not yet sent is replaced by the newer one.
 * Also called once per laser at start, so every laser has a retained
 * state. No effect when off. */
void mqtt_lock_state(struct mqtt *m, int laser, const char *payload, size_t len);

/* "off", "connecting" (resolving, connecting or waiting to retry),
 * "connected", "stopping". */
const char *mqtt_state_name(const struct mqtt *m);
/* Messages waiting: readings and lock states not yet handed over. */
uint64_t mqtt_queued(const struct mqtt *m);

#endif
