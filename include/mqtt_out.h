/*
 * mqtt_out: what the MQTT publisher sends and when, as plain arithmetic and
 * data: topic names, the check of a configured topic prefix, the per-laser
 * rate limit, the reconnect back-off, and the bounded queue of readings
 * waiting for the broker. No libmosquitto, no loop, no clock of its own, so
 * the unit tests run it as it is (mqtt.c is the part on the loop).
 */
#ifndef WMD_MQTT_OUT_H
#define WMD_MQTT_OUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Reconnect back-off: the first retry after 1 s, doubling to 30 s. A broker
 * that is restarted is back within a second or two; one that is down for
 * the night costs a connection attempt every 30 s, nothing more. */
#define MQTT_BACKOFF_MIN_MS 1000u
#define MQTT_BACKOFF_MAX_MS 30000u

/*
 * Check a configured topic prefix: 1 or more bytes, no MQTT wildcard ('+',
 * '#'), no leading or trailing '/', no empty level ("a//b"), and not
 * starting with '$' (reserved for the broker's own topics). 0, or -EINVAL
 * with the reason (one phrase, no key name) in why.
 */
int mqtt_topic_prefix_check(const char *prefix, char *why, size_t why_len);

/*
 * Write "<prefix>/laser/<laser>/<leaf>" into buf, or "<prefix>/<leaf>" when
 * laser is NULL. Returns its length, or -ENAMETOOLONG (buf holds "").
 */
int mqtt_topic(char *buf, size_t size, const char *prefix, const char *laser, const char *leaf);

/* Whether a reading taken at now_ns may be published, when the last one of
 * the same laser went at last_ns (0: none yet) and at most rate_hz a second
 * may go (0: every reading). Times in ns on one monotonic clock. */
bool mqtt_rate_due(uint64_t last_ns, uint64_t now_ns, double rate_hz);

/* The wait before the next connection attempt after one that waited
 * prev_ms (0 for the first failure): MQTT_BACKOFF_MIN_MS, doubling, capped
 * at MQTT_BACKOFF_MAX_MS. */
uint32_t mqtt_backoff_next_ms(uint32_t prev_ms);

/* One message waiting: a laser's reading, its payload owned by the queue. */
struct mqtt_msg {
    int laser; /* index in the config */
    char *payload;
    size_t len;
};

/* A ring of at most cap readings, oldest first. Embedded by its owner;
 * mqtt_queue_init/_fini. Full, it drops the oldest to make room, and
 * counts it: a broker that is down or slow costs this much memory and no
 * more. Loop thread only. */
struct mqtt_queue {
    struct mqtt_msg *ring;
    size_t cap, head, n;
    uint64_t dropped; /* readings thrown away unsent */
};

/* 0 or -ENOMEM (cap >= 1). */
int mqtt_queue_init(struct mqtt_queue *q, size_t cap);
/* Frees every message still queued (not counted as dropped). */
void mqtt_queue_fini(struct mqtt_queue *q);
/* Append a message; steals payload (malloc'd, len bytes). When the queue is
 * full the oldest message is freed and counted in dropped first. */
void mqtt_queue_push(struct mqtt_queue *q, int laser, char *payload, size_t len);
/* The oldest message (borrowed, valid until the next push or pop), or NULL. */
const struct mqtt_msg *mqtt_queue_peek(const struct mqtt_queue *q);
/* Free the oldest message (after it was handed to the broker). */
void mqtt_queue_pop(struct mqtt_queue *q);

#endif
