/*
 * mqtt_out: topic names, the prefix check, the rate limit, the back-off and
 * the bounded reading queue of the MQTT publisher. Pure: no I/O, no loop,
 * no clock; mqtt.c drives it.
 */
#include "mqtt_out.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int mqtt_topic_prefix_check(const char *prefix, char *why, size_t why_len) {
    const char *reason = NULL;
    size_t n = strlen(prefix);

    if (n == 0)
        reason = "must not be empty";
    else if (strpbrk(prefix, "+#") != NULL)
        reason = "must not contain the MQTT wildcards '+' or '#'";
    else if (prefix[0] == '$')
        reason = "must not start with '$' (topics the broker reserves)";
    else if (prefix[0] == '/' || prefix[n - 1] == '/')
        reason = "must not start or end with '/'";
    else if (strstr(prefix, "//") != NULL)
        reason = "must not contain an empty level (\"//\")";
    if (reason == NULL)
        return 0;
    if (why != NULL && why_len > 0)
        snprintf(why, why_len, "%s", reason);
    return -EINVAL;
}

int mqtt_topic(char *buf, size_t size, const char *prefix, const char *laser, const char *leaf) {
    int n = laser != NULL ? snprintf(buf, size, "%s/laser/%s/%s", prefix, laser, leaf)
                          : snprintf(buf, size, "%s/%s", prefix, leaf);

    if (n < 0 || (size_t)n >= size) {
        if (size > 0)
            buf[0] = '\0';
        return -ENAMETOOLONG;
    }
    return n;
}

bool mqtt_rate_due(uint64_t last_ns, uint64_t now_ns, double rate_hz) {
    if (rate_hz <= 0 || last_ns == 0 || now_ns < last_ns)
        return true;
    return (double)(now_ns - last_ns) >= 1e9 / rate_hz;
}

uint32_t mqtt_backoff_next_ms(uint32_t prev_ms) {
    if (prev_ms < MQTT_BACKOFF_MIN_MS)
        return MQTT_BACKOFF_MIN_MS;
    if (prev_ms >= MQTT_BACKOFF_MAX_MS / 2)
        return MQTT_BACKOFF_MAX_MS;
    return prev_ms * 2;
}

int mqtt_queue_init(struct mqtt_queue *q, size_t cap) {
    memset(q, 0, sizeof(*q));
    if (cap == 0 || (q->ring = calloc(cap, sizeof(*q->ring))) == NULL)
        return -ENOMEM;
    q->cap = cap;
    return 0;
}

void mqtt_queue_fini(struct mqtt_queue *q) {
    while (q->n > 0)
        mqtt_queue_pop(q);
    free(q->ring);
    q->ring = NULL;
    q->cap = 0;
}

void mqtt_queue_push(struct mqtt_queue *q, int laser, char *payload, size_t len) {
    struct mqtt_msg *m;

    if (q->n == q->cap) {
        mqtt_queue_pop(q);
        q->dropped++;
    }
    m = &q->ring[(q->head + q->n) % q->cap];
    m->laser = laser;
    m->payload = payload;
    m->len = len;
    q->n++;
}

const struct mqtt_msg *mqtt_queue_peek(const struct mqtt_queue *q) {
    return q->n > 0 ? &q->ring[q->head] : NULL;
}

void mqtt_queue_pop(struct mqtt_queue *q) {
    if (q->n == 0)
        return;
    free(q->ring[q->head].payload);
    q->ring[q->head].payload = NULL;
    q->head = (q->head + 1) % q->cap;
    q->n--;
}
