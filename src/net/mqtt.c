/*
 * mqtt: the MQTT publisher on the daemon's loop. libmosquitto does the
 * protocol; this file owns its socket's uv_poll_t, its timers, the name
 * lookup, the reconnects and the bounded queue, and never calls anything
 * that blocks (no loop_forever, no loop thread, no blocking connect, no
 * getaddrinfo on the loop). It must never make a lock or a client wait.
 */
#include "mqtt.h"

#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <mosquitto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A password file holds one line; anything longer is the wrong file. */
#define PASSWORD_FILE_MAX 4096

static void settle(struct mqtt *m, int rc);
static void begin(struct mqtt *m);

/* snprintf for messages, where cutting a long host name short is fine. */
__attribute__((format(printf, 3, 4))) static void msg(char *dst, size_t size, const char *fmt,
                                                      ...) {
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(dst, size, fmt, ap);
    va_end(ap);
}

const char *mqtt_state_name(const struct mqtt *m) {
    switch (m->state) {
    case MQTT_OFF:
        return "off";
    case MQTT_RESOLVING:
    case MQTT_CONNECTING:
    case MQTT_WAITING:
        return "connecting";
    case MQTT_CONNECTED:
        return "connected";
    case MQTT_STOPPING:
    case MQTT_STOPPED:
        return "stopping";
    }
    return "?";
}

uint64_t mqtt_queued(const struct mqtt *m) {
    uint64_t n = m->queue.n;

    for (int i = 0; i < m->nlasers; i++)
        n += m->lasers[i].lock_pending;
    return n;
}

/* ---- start-up: password, TLS, names ---------------------------------- */

/* The first line of password_file, which others must not be able to read. */
static int read_password(struct mqtt *m, char *err, size_t errlen) {
    const char *path = m->cfg->password_file;
    char *buf = NULL;
    struct stat st;
    ssize_t n;
    int fd, r;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        r = -errno;
        snprintf(err, errlen, "mqtt.password_file %s: cannot read: %s", path, strerror(errno));
        return r;
    }
    if (fstat(fd, &st) != 0) {
        r = -errno;
        snprintf(err, errlen, "mqtt.password_file %s: cannot read: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        r = -EINVAL;
        snprintf(err, errlen, "mqtt.password_file %s: not a regular file", path);
        goto fail;
    }
    if (st.st_mode & S_IROTH) {
        r = -EPERM;
        snprintf(err, errlen,
                 "mqtt.password_file %s: readable by others (mode %04o); "
                 "refusing it: chmod o-rw it (0640 or 0600)",
                 path, (unsigned)(st.st_mode & 07777));
        goto fail;
    }
    if ((buf = malloc(PASSWORD_FILE_MAX + 1)) == NULL) {
        r = -ENOMEM;
        snprintf(err, errlen, "mqtt.password_file %s: out of memory", path);
        goto fail;
    }
    n = read(fd, buf, PASSWORD_FILE_MAX + 1);
    if (n < 0 || n > PASSWORD_FILE_MAX) {
        r = n < 0 ? -errno : -EFBIG;
        snprintf(err, errlen, "mqtt.password_file %s: cannot read: %s", path,
                 n < 0 ? strerror(errno) : "more than 4096 bytes, not a password file");
        goto fail;
    }
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    if (buf[0] == '\0') {
        r = -EINVAL;
        snprintf(err, errlen, "mqtt.password_file %s: its first line is empty", path);
        goto fail;
    }
    close(fd);
    m->password = buf;
    return 0;
fail:
    if (buf != NULL) {
        memset(buf, 0, PASSWORD_FILE_MAX + 1);
        free(buf);
    }
    close(fd);
    return r;
}

/* OpenSSL's reason for the last failure, for a start-up message. */
static const char *ssl_reason(void) {
    static char buf[160];
    unsigned long e = ERR_get_error();

    ERR_clear_error();
    if (e == 0)
        return "unknown error";
    ERR_error_string_n(e, buf, sizeof(buf));
    return buf;
}

/*
 * Sets SNI to the configured name. libmosquitto connects to the numeric
 * address this file resolved (so it never resolves a name on the loop) and
 * would send that address as SNI; a broker behind a name-based TLS front
 * needs the name. The callback runs in SSL_connect before the ClientHello
 * is built. OpenSSL passes the SSL as const by convention only; it is the
 * handshake's own object, so the cast is through uintptr_t.
 */
static void tls_info_cb(const SSL *cssl, int where, int ret) {
    SSL *ssl = (SSL *)(uintptr_t)cssl;
    const struct mqtt *m = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    unsigned char addr[16];

    (void)ret;
    if (!(where & SSL_CB_HANDSHAKE_START) || m == NULL)
        return;
    /* No SNI for an address (RFC 6066, section 3). */
    if (inet_pton(AF_INET, m->cfg->host, addr) == 1 || inet_pton(AF_INET6, m->cfg->host, addr) == 1)
        SSL_set_tlsext_host_name(ssl, NULL);
    else {
        /* The macro casts its argument to void *: a copy, not a cast of
         * const away (-Wcast-qual). OpenSSL copies the name in turn. */
        char name[sizeof(m->cfg->host)];
        snprintf(name, sizeof(name), "%s", m->cfg->host);
        SSL_set_tlsext_host_name(ssl, name);
    }
}

/*
 * The TLS context every connection shares: TLS 1.2 or later, the peer's
 * chain verified against tls_cafile/tls_capath or the system's CAs, and
 * its name against host (OpenSSL's own check, X509_VERIFY_PARAM_set1_host,
 * since libmosquitto would check the numeric address it was given).
 */
static int tls_setup(struct mqtt *m, char *err, size_t errlen) {
    const struct mqtt_config *c = m->cfg;
    X509_VERIFY_PARAM *param;
    unsigned char addr[16];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    int ok;

    if (ctx == NULL) {
        snprintf(err, errlen, "mqtt.tls: cannot make a TLS context: %s", ssl_reason());
        return -ENOMEM;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION);
    if (c->tls_cafile[0] || c->tls_capath[0])
        ok = SSL_CTX_load_verify_locations(ctx, c->tls_cafile[0] ? c->tls_cafile : NULL,
                                           c->tls_capath[0] ? c->tls_capath : NULL);
    else
        ok = SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        snprintf(err, errlen, "mqtt.%s %s: cannot load the CA certificates: %s",
                 c->tls_cafile[0] ? "tls_cafile" : "tls_capath",
                 c->tls_cafile[0] ? c->tls_cafile : c->tls_capath, ssl_reason());
        goto fail;
    }
    if (c->tls_certfile[0]) {
        if (SSL_CTX_use_certificate_chain_file(ctx, c->tls_certfile) != 1) {
            snprintf(err, errlen, "mqtt.tls_certfile %s: %s", c->tls_certfile, ssl_reason());
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, c->tls_keyfile, SSL_FILETYPE_PEM) != 1) {
            snprintf(err, errlen, "mqtt.tls_keyfile %s: %s", c->tls_keyfile, ssl_reason());
            goto fail;
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
            snprintf(err, errlen, "mqtt.tls_keyfile %s: does not match tls_certfile %s",
                     c->tls_keyfile, c->tls_certfile);
            goto fail;
        }
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    param = SSL_CTX_get0_param(ctx);
    if (inet_pton(AF_INET, c->host, addr) == 1 || inet_pton(AF_INET6, c->host, addr) == 1) {
        ok = X509_VERIFY_PARAM_set1_ip_asc(param, c->host);
    } else {
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        ok = X509_VERIFY_PARAM_set1_host(param, c->host, 0);
    }
    if (ok != 1) {
        snprintf(err, errlen, "mqtt.host \"%s\": cannot check a certificate against it: %s",
                 c->host, ssl_reason());
        goto fail;
    }
    SSL_CTX_set_app_data(ctx, m);
    SSL_CTX_set_info_callback(ctx, tls_info_cb);
    m->ssl_ctx = ctx;
    return 0;
fail:
    SSL_CTX_free(ctx);
    return -EINVAL;
}

static bool host_is_numeric(const char *host) {
    unsigned char addr[16];

    return uv_inet_pton(AF_INET, host, addr) == 0 || uv_inet_pton(AF_INET6, host, addr) == 0;
}

/* ---- connection ------------------------------------------------------- */

/* A failure: set the error; log it as a warning when it is new, so a broker
 * that stays down costs one line, not one per attempt. */
static void note_failure(struct mqtt *m, const char *why) {
    snprintf(m->error, sizeof(m->error), "%s", why);
    if (strcmp(m->logged, m->error) != 0) {
        log_warnx("mqtt: broker %s: %s; retrying with back-off (1 s doubling to 30 s), "
                  "further failures like this one are logged at debug level",
                  m->broker, m->error);
        snprintf(m->logged, sizeof(m->logged), "%s", m->error);
    } else {
        log_debug("mqtt: broker %s: %s", m->broker, m->error);
    }
}

static void poll_closed(uv_handle_t *h) {
    struct mqtt *m = h->data;

    free(h);
    if (--m->closing == 0 && m->state == MQTT_STOPPED && m->on_stopped)
        m->on_stopped(m);
}

static void timer_closed(uv_handle_t *h) {
    struct mqtt *m = h->data;

    if (--m->closing == 0 && m->state == MQTT_STOPPED && m->on_stopped)
        m->on_stopped(m);
}

/* Forget this connection: stop watching its socket (libmosquitto may have
 * closed it already; nothing ran on the loop in between), destroy it. */
static void drop_connection(struct mqtt *m) {
    if (m->poll != NULL) {
        m->closing++;
        uv_close((uv_handle_t *)m->poll, poll_closed);
        m->poll = NULL;
    }
    m->fd = -1;
    m->poll_events = 0;
    if (m->mosq != NULL) {
        mosquitto_destroy(m->mosq);
        m->mosq = NULL;
    }
    uv_timer_stop(&m->misc_timer);
    m->inflight = 0;
    m->lost = false;
    m->connack = false;
    m->just_connected = false;
    m->lost_why[0] = '\0';
    m->lib_error[0] = '\0';
}

static void teardown(struct mqtt *m) {
    drop_connection(m);
    m->state = MQTT_STOPPED;
    m->closing += 2;
    uv_close((uv_handle_t *)&m->misc_timer, timer_closed);
    uv_close((uv_handle_t *)&m->retry_timer, timer_closed);
    mqtt_queue_fini(&m->queue);
    for (int i = 0; i < m->nlasers; i++) {
        free(m->lasers[i].lock_payload);
        m->lasers[i].lock_payload = NULL;
        m->lasers[i].lock_pending = false;
    }
    if (m->password != NULL) {
        memset(m->password, 0, strlen(m->password));
        free(m->password);
        m->password = NULL;
    }
    SSL_CTX_free(m->ssl_ctx);
    m->ssl_ctx = NULL;
    mosquitto_lib_cleanup();
}

static void retry_cb(uv_timer_t *t) {
    struct mqtt *m = t->data;

    switch (m->state) {
    case MQTT_WAITING:
        begin(m);
        break;
    case MQTT_CONNECTING: {
        char why[96];
        snprintf(why, sizeof(why), "no answer to CONNECT (%s) within %d s", m->addrs[m->addr_i],
                 m->cfg->connect_timeout_s);
        m->lost = true;
        m->lost_rc = MOSQ_ERR_CONN_LOST;
        snprintf(m->lost_why, sizeof(m->lost_why), "%s", why);
        settle(m, MOSQ_ERR_SUCCESS);
        break;
    }
    case MQTT_STOPPING:
        log_warnx("mqtt: broker %s: offline and DISCONNECT not sent within %d ms; closing",
                  m->broker, MQTT_STOP_DEADLINE_MS);
        teardown(m);
        break;
    default:
        break;
    }
}

/* The connection (or the attempt) is gone: try the broker's next address
 * at once after a failed attempt, else wait the back-off and start over. */
static void connection_lost(struct mqtt *m) {
    char why[256];
    bool was_up = m->connack;

    if (m->lost_why[0])
        snprintf(why, sizeof(why), "%s", m->lost_why);
    else if (m->lost_rc == MOSQ_ERR_TLS && m->lib_error[0])
        snprintf(why, sizeof(why), "TLS: %s", m->lib_error);
    else if (m->lost_rc == MOSQ_ERR_ERRNO && m->lost_errno != 0)
        snprintf(why, sizeof(why), "%s", strerror(m->lost_errno));
    else
        snprintf(why, sizeof(why), "%s", mosquitto_strerror(m->lost_rc));
    /* libmosquitto's texts end in a full stop; ours go on after them. */
    size_t n = strlen(why);
    if (n > 0 && why[n - 1] == '.')
        why[n - 1] = '\0';
    if (m->state == MQTT_STOPPING) {
        teardown(m);
        return;
    }
    drop_connection(m);
    uv_timer_stop(&m->retry_timer);
    if (was_up) {
        log_warnx("mqtt: broker %s: connection lost: %s; reconnecting", m->broker, why);
        msg(m->error, sizeof(m->error), "connection lost: %s", why);
        snprintf(m->logged, sizeof(m->logged), "%s", m->error);
        m->backoff_ms = 0;
    } else {
        char line[256];
        msg(line, sizeof(line), "%s: %s", m->addrs[m->addr_i], why);
        note_failure(m, line);
        if (m->addr_i + 1 < m->naddrs) {
            m->addr_i++;
            begin(m);
            return;
        }
    }
    m->backoff_ms = mqtt_backoff_next_ms(m->backoff_ms);
    m->state = MQTT_WAITING;
    uv_timer_start(&m->retry_timer, retry_cb, m->backoff_ms, 0);
}

/* The connection is gone with libmosquitto's rc; errno still says why when
 * rc is MOSQ_ERR_ERRNO, so it is kept at once. */
static void mark_lost(struct mqtt *m, int rc) {
    int e = errno;

    if (m->lost)
        return;
    m->lost = true;
    m->lost_rc = rc;
    m->lost_errno = e;
}

static void on_connect(struct mosquitto *mosq, void *obj, int rc) {
    struct mqtt *m = obj;

    (void)mosq;
    if (rc == 0) {
        m->connack = true;
        m->just_connected = true;
    } else {
        snprintf(m->lost_why, sizeof(m->lost_why), "the broker refused the connection: %s",
                 mosquitto_connack_string(rc));
    }
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc) {
    struct mqtt *m = obj;

    (void)mosq;
    mark_lost(m, rc == 0 ? MOSQ_ERR_CONN_LOST : rc);
}

static void on_publish(struct mosquitto *mosq, void *obj, int mid) {
    struct mqtt *m = obj;

    (void)mosq;
    (void)mid;
    if (m->inflight > 0)
        m->inflight--;
    m->published++;
}

static void on_log(struct mosquitto *mosq, void *obj, int level, const char *str) {
    struct mqtt *m = obj;

    (void)mosq;
    if (level & MOSQ_LOG_ERR)
        snprintf(m->lib_error, sizeof(m->lib_error), "%s", str);
    log_debug("mqtt: libmosquitto: %s", str);
}

/* Hand one message to libmosquitto. false when the connection is gone
 * (noted for settle) or the message could not be taken. */
static bool publish(struct mqtt *m, const char *topic, const char *payload, size_t len,
                    bool retain) {
    int rc;

    /* Counted first: libmosquitto writes a QoS 0 message at once when it
     * can, and calls on_publish before mosquitto_publish returns. */
    m->inflight++;
    rc = mosquitto_publish(m->mosq, NULL, topic, (int)len, payload, m->cfg->qos, retain);
    if (rc == MOSQ_ERR_SUCCESS)
        return true;
    if (rc == MOSQ_ERR_NOMEM || rc == MOSQ_ERR_PAYLOAD_SIZE || rc == MOSQ_ERR_OVERSIZE_PACKET ||
        rc == MOSQ_ERR_INVAL || rc == MOSQ_ERR_MALFORMED_UTF8) {
        m->inflight--;
        m->queue.dropped++;
        log_warnx("mqtt: %s: not published: %s", topic, mosquitto_strerror(rc));
        return true; /* this message can never go: drop it, go on */
    }
    /* Written at once by libmosquitto, the write failed: the connection is
     * going. The message stays with libmosquitto and is lost with it. */
    mark_lost(m, rc);
    return false;
}

/* While connected, hand over what waits, the lock states first, as long as
 * the in-flight window allows. */
static void drain(struct mqtt *m) {
    while (!m->lost && m->inflight < MQTT_INFLIGHT_MAX) {
        struct mqtt_laser *l = NULL;
        const struct mqtt_msg *msg;

        for (int i = 0; i < m->nlasers && l == NULL; i++)
            if (m->lasers[i].lock_pending)
                l = &m->lasers[i];
        if (l != NULL) {
            if (publish(m, l->topic_lock, l->lock_payload, l->lock_len, true))
                l->lock_pending = false;
            continue;
        }
        if ((msg = mqtt_queue_peek(&m->queue)) == NULL)
            break;
        if (publish(m, m->lasers[msg->laser].topic_reading, msg->payload, msg->len, false))
            mqtt_queue_pop(&m->queue);
    }
}

static void poll_cb(uv_poll_t *h, int status, int events);

/* Watch the socket for reading always, for writing while libmosquitto has
 * something to write. */
static void poll_update(struct mqtt *m) {
    int want = UV_READABLE | (mosquitto_want_write(m->mosq) ? UV_WRITABLE : 0);
    int rc;

    if (m->poll == NULL || want == m->poll_events)
        return;
    if ((rc = uv_poll_start(m->poll, want, poll_cb)) != 0) {
        m->lost = true;
        m->lost_rc = MOSQ_ERR_UNKNOWN;
        snprintf(m->lost_why, sizeof(m->lost_why), "uv_poll_start: %s", uv_strerror(rc));
        return;
    }
    m->poll_events = want;
}

/* After every call into libmosquitto: act on what its callbacks noted,
 * move the queue along, and adjust what the socket is watched for. */
static void settle(struct mqtt *m, int rc) {
    if (m->mosq == NULL)
        return;
    if (rc > 0)
        mark_lost(m, rc);
    if (!m->lost && mosquitto_socket(m->mosq) != m->fd) {
        m->lost = true;
        m->lost_rc = MOSQ_ERR_CONN_LOST;
    }
    if (!m->lost && m->just_connected) {
        m->just_connected = false;
        m->connects++;
        if (m->connects > 1)
            m->reconnects++;
        m->state = MQTT_CONNECTED;
        m->backoff_ms = 0;
        m->error[0] = '\0';
        m->logged[0] = '\0';
        uv_timer_stop(&m->retry_timer);
        log_notice("mqtt: connected to broker %s (%s) as \"%s\"", m->broker, m->addrs[m->addr_i],
                   m->client_id);
        (void)publish(m, m->status_topic, "online", 6, true);
        /* Every laser's state again: a broker restarted without persistence
         * has forgotten the retained ones. */
        for (int i = 0; i < m->nlasers; i++)
            m->lasers[i].lock_pending = m->lasers[i].lock_payload != NULL;
    }
    if (!m->lost && m->state == MQTT_CONNECTED)
        drain(m);
    if (!m->lost)
        poll_update(m);
    if (m->lost)
        connection_lost(m);
}

static void poll_cb(uv_poll_t *h, int status, int events) {
    struct mqtt *m = h->data;
    int rc;

    if (m->poll != h || m->mosq == NULL)
        return;
    if (status < 0) {
        /* libuv says UV_EBADF for POLLERR (and has stopped the handle): a
         * read lets libmosquitto find the socket's own error (refused,
         * reset) and report it. */
        rc = mosquitto_loop_read(m->mosq, 1);
        if (rc <= 0 && !m->lost) {
            mark_lost(m, MOSQ_ERR_UNKNOWN);
            snprintf(m->lost_why, sizeof(m->lost_why), "socket error (%s)", uv_strerror(status));
        }
        settle(m, rc);
        return;
    }
    /* loop_read also takes a TLS handshake a step further, whichever way
     * the socket became ready; with nothing to read it returns at once. */
    rc = mosquitto_loop_read(m->mosq, 1);
    if (rc <= 0 && !m->lost && (events & UV_WRITABLE) && mosquitto_want_write(m->mosq))
        rc = mosquitto_loop_write(m->mosq, 1);
    settle(m, rc);
}

static void misc_cb(uv_timer_t *t) {
    struct mqtt *m = t->data;

    if (m->mosq != NULL)
        settle(m, mosquitto_loop_misc(m->mosq));
}

/* One connection attempt to addrs[addr_i]. */
static void attempt(struct mqtt *m) {
    const struct mqtt_config *c = m->cfg;
    const char *addr = m->addrs[m->addr_i];
    char why[200];
    int rc;

    m->lost = false;
    m->lost_why[0] = '\0';
    m->lib_error[0] = '\0';
    if ((m->mosq = mosquitto_new(m->client_id, true, m)) == NULL) {
        snprintf(why, sizeof(why), "cannot make a client: %s", strerror(errno));
        goto fail;
    }
    mosquitto_int_option(m->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    mosquitto_connect_callback_set(m->mosq, on_connect);
    mosquitto_disconnect_callback_set(m->mosq, on_disconnect);
    mosquitto_publish_callback_set(m->mosq, on_publish);
    mosquitto_log_callback_set(m->mosq, on_log);
    rc = mosquitto_will_set(m->mosq, m->status_topic, 7, "offline", c->qos, true);
    if (rc == MOSQ_ERR_SUCCESS && c->username[0])
        rc = mosquitto_username_pw_set(m->mosq, c->username, m->password);
    if (rc == MOSQ_ERR_SUCCESS && m->ssl_ctx != NULL) {
        rc = mosquitto_int_option(m->mosq, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0);
        if (rc == MOSQ_ERR_SUCCESS)
            rc = mosquitto_void_option(m->mosq, MOSQ_OPT_SSL_CTX, m->ssl_ctx);
    }
    if (rc != MOSQ_ERR_SUCCESS) {
        snprintf(why, sizeof(why), "cannot set up the client: %s", mosquitto_strerror(rc));
        goto fail;
    }
    /* A numeric address: libmosquitto's getaddrinfo returns at once and
     * its connect does not block. */
    rc = mosquitto_connect_async(m->mosq, addr, c->port, c->keepalive_s);
    if (rc != MOSQ_ERR_SUCCESS) {
        snprintf(why, sizeof(why), "%s",
                 rc == MOSQ_ERR_ERRNO                    ? strerror(errno)
                 : rc == MOSQ_ERR_TLS && m->lib_error[0] ? m->lib_error
                                                         : mosquitto_strerror(rc));
        goto fail;
    }
    m->fd = mosquitto_socket(m->mosq);
    if ((m->poll = malloc(sizeof(*m->poll))) == NULL) {
        snprintf(why, sizeof(why), "out of memory");
        goto fail;
    }
    if ((rc = uv_poll_init_socket(m->loop, m->poll, m->fd)) != 0) {
        free(m->poll);
        m->poll = NULL;
        snprintf(why, sizeof(why), "uv_poll_init_socket: %s", uv_strerror(rc));
        goto fail;
    }
    m->poll->data = m;
    m->poll_events = 0;
    m->state = MQTT_CONNECTING;
    uv_timer_start(&m->retry_timer, retry_cb, (uint64_t)c->connect_timeout_s * 1000, 0);
    uv_timer_start(&m->misc_timer, misc_cb, 1000, 1000);
    settle(m, MOSQ_ERR_SUCCESS);
    return;
fail:
    /* Through connection_lost, so the next address or the back-off follow. */
    m->lost = true;
    m->lost_rc = MOSQ_ERR_UNKNOWN;
    snprintf(m->lost_why, sizeof(m->lost_why), "%s", why);
    m->state = MQTT_CONNECTING;
    connection_lost(m);
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
    struct mqtt *m = req->data;
    char why[256];

    m->gai_busy = false;
    if (m->state == MQTT_STOPPING) {
        uv_freeaddrinfo(res);
        teardown(m);
        return;
    }
    m->naddrs = 0;
    m->addr_i = 0;
    for (struct addrinfo *a = status == 0 ? res : NULL; a && m->naddrs < MQTT_ADDRS_MAX;
         a = a->ai_next) {
        char *dst = m->addrs[m->naddrs];
        bool dup = false;
        if (a->ai_family == AF_INET)
            uv_ip4_name((const struct sockaddr_in *)(const void *)a->ai_addr, dst,
                        INET6_ADDRSTRLEN);
        else if (a->ai_family == AF_INET6)
            uv_ip6_name((const struct sockaddr_in6 *)(const void *)a->ai_addr, dst,
                        INET6_ADDRSTRLEN);
        else
            continue;
        for (int i = 0; i < m->naddrs; i++)
            dup = dup || strcmp(m->addrs[i], dst) == 0;
        if (!dup)
            m->naddrs++;
    }
    uv_freeaddrinfo(res);
    if (m->naddrs == 0) {
        msg(why, sizeof(why), "cannot resolve \"%s\": %s", m->cfg->host,
            status < 0 ? uv_strerror(status) : "no IPv4 or IPv6 address");
        note_failure(m, why);
        m->backoff_ms = mqtt_backoff_next_ms(m->backoff_ms);
        m->state = MQTT_WAITING;
        uv_timer_start(&m->retry_timer, retry_cb, m->backoff_ms, 0);
        return;
    }
    attempt(m);
}

/* Start over: resolve the name (off the loop) unless it is an address. */
static void begin(struct mqtt *m) {
    struct addrinfo hints;
    int rc;

    if (host_is_numeric(m->cfg->host)) {
        msg(m->addrs[0], sizeof(m->addrs[0]), "%s", m->cfg->host);
        m->naddrs = 1;
        m->addr_i = 0;
        attempt(m);
        return;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    m->gai.data = m;
    m->state = MQTT_RESOLVING;
    rc = uv_getaddrinfo(m->loop, &m->gai, gai_cb, m->cfg->host, NULL, &hints);
    if (rc != 0) {
        char why[160];
        msg(why, sizeof(why), "cannot resolve \"%s\": %s", m->cfg->host, uv_strerror(rc));
        note_failure(m, why);
        m->backoff_ms = mqtt_backoff_next_ms(m->backoff_ms);
        m->state = MQTT_WAITING;
        uv_timer_start(&m->retry_timer, retry_cb, m->backoff_ms, 0);
        return;
    }
    m->gai_busy = true;
}

/* ---- public ----------------------------------------------------------- */

int mqtt_start(struct mqtt *m, uv_loop_t *loop, const struct config *cfg, char *err,
               size_t errlen) {
    const struct mqtt_config *c = &cfg->mqtt;
    int r;

    memset(m, 0, sizeof(*m));
    m->loop = loop;
    m->cfg = c;
    m->fd = -1;
    m->state = MQTT_OFF;
    if (!c->enabled)
        return 0;

    if (c->client_id[0]) {
        snprintf(m->client_id, sizeof(m->client_id), "%s", c->client_id);
    } else {
        char host[64] = "";
        if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0')
            snprintf(host, sizeof(host), "unknown");
        snprintf(m->client_id, sizeof(m->client_id), "wavemeterd-%s", host);
    }
    snprintf(m->broker, sizeof(m->broker), strchr(c->host, ':') ? "[%s]:%d" : "%s:%d", c->host,
             c->port);
    if (mqtt_topic(m->status_topic, sizeof(m->status_topic), c->topic_prefix, NULL, "status") < 0) {
        snprintf(err, errlen, "mqtt.topic_prefix: too long");
        return -ENAMETOOLONG;
    }
    m->nlasers = cfg->nlasers;
    for (int i = 0; i < cfg->nlasers; i++) {
        struct mqtt_laser *l = &m->lasers[i];
        if (mqtt_topic(l->topic_reading, sizeof(l->topic_reading), c->topic_prefix,
                       cfg->lasers[i].name, "reading") < 0 ||
            mqtt_topic(l->topic_lock, sizeof(l->topic_lock), c->topic_prefix, cfg->lasers[i].name,
                       "lock") < 0) {
            snprintf(err, errlen, "mqtt.topic_prefix: too long");
            return -ENAMETOOLONG;
        }
    }
    if (c->password_file[0] && (r = read_password(m, err, errlen)) != 0)
        return r;
    mosquitto_lib_init();
    if (c->tls && (r = tls_setup(m, err, errlen)) != 0)
        goto fail;
    if ((r = mqtt_queue_init(&m->queue, (size_t)c->queue_max)) != 0) {
        snprintf(err, errlen, "mqtt: out of memory for a queue of %d readings", c->queue_max);
        goto fail;
    }
    uv_timer_init(loop, &m->misc_timer);
    uv_timer_init(loop, &m->retry_timer);
    m->misc_timer.data = m;
    m->retry_timer.data = m;
    log_info("mqtt: publishing to broker %s as \"%s\", topics %s/...%s", m->broker, m->client_id,
             c->topic_prefix, c->tls ? ", TLS" : "");
    begin(m);
    return 0;
fail:
    SSL_CTX_free(m->ssl_ctx);
    m->ssl_ctx = NULL;
    if (m->password != NULL) {
        memset(m->password, 0, strlen(m->password));
        free(m->password);
        m->password = NULL;
    }
    mosquitto_lib_cleanup();
    m->state = MQTT_OFF;
    return r;
}

void mqtt_stop(struct mqtt *m, mqtt_stopped_cb done) {
    enum mqtt_state was = m->state;

    m->on_stopped = done;
    if (was == MQTT_OFF || was == MQTT_STOPPING || was == MQTT_STOPPED) {
        if (was == MQTT_OFF && done)
            done(m);
        return;
    }
    m->state = MQTT_STOPPING;
    if (was == MQTT_RESOLVING && m->gai_busy) {
        /* Cancelled if it has not started; else gai_cb tears down. */
        (void)uv_cancel((uv_req_t *)&m->gai);
        return;
    }
    if (was != MQTT_CONNECTED || m->mosq == NULL) {
        teardown(m);
        return;
    }
    /* The will is for a daemon that vanishes; one that stops says so. */
    (void)publish(m, m->status_topic, "offline", 7, true);
    if (!m->lost)
        (void)mosquitto_disconnect(m->mosq);
    uv_timer_start(&m->retry_timer, retry_cb, MQTT_STOP_DEADLINE_MS, 0);
    /* DISCONNECT written (often at once), libmosquitto closes and calls
     * on_disconnect; settle then tears down. */
    settle(m, MOSQ_ERR_SUCCESS);
}

bool mqtt_wants_reading(const struct mqtt *m, int laser, uint64_t taken_ns) {
    if (m->state == MQTT_OFF || m->state == MQTT_STOPPING || m->state == MQTT_STOPPED ||
        laser < 0 || laser >= m->nlasers)
        return false;
    return mqtt_rate_due(m->lasers[laser].last_reading_ns, taken_ns, m->cfg->readings_max_rate_hz);
}

void mqtt_publish_reading(struct mqtt *m, int laser, const char *payload, size_t len,
                          uint64_t taken_ns) {
    char *copy;

    if (!mqtt_wants_reading(m, laser, taken_ns))
        return;
    m->lasers[laser].last_reading_ns = taken_ns;
    if ((copy = malloc(len + 1)) == NULL) {
        m->queue.dropped++;
        return;
    }
    memcpy(copy, payload, len);
    copy[len] = '\0';
    mqtt_queue_push(&m->queue, laser, copy, len);
    if (m->state == MQTT_CONNECTED && m->mosq != NULL && m->inflight < MQTT_INFLIGHT_MAX)
        settle(m, MOSQ_ERR_SUCCESS);
}

void mqtt_lock_state(struct mqtt *m, int laser, const char *payload, size_t len) {
    struct mqtt_laser *l;
    char *copy;

    if (m->state == MQTT_OFF || m->state == MQTT_STOPPING || m->state == MQTT_STOPPED ||
        laser < 0 || laser >= m->nlasers)
        return;
    if ((copy = malloc(len + 1)) == NULL) {
        log_warnx("mqtt: out of memory: a lock state of laser %d is not published", laser);
        return;
    }
    memcpy(copy, payload, len);
    copy[len] = '\0';
    l = &m->lasers[laser];
    free(l->lock_payload);
    l->lock_payload = copy;
    l->lock_len = len;
    l->lock_pending = true;
    if (m->state == MQTT_CONNECTED && m->mosq != NULL)
        settle(m, MOSQ_ERR_SUCCESS);
}
