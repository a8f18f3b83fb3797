/*
 * methods: the JSON-RPC methods of wavemeterd, their params and results.
 * Translates between JSON and the meter (and later the lasers); holds no
 * state of its own and never sees a socket or a file descriptor.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <stdlib.h>

#include "acl.h"
#include "daemon.h"
#include "log.h"
#include "numfmt.h"
#include "peers.h"
#include "token.h"

/* Protocol version: the major changes only for incompatible changes. */
#define PROTOCOL_MAJOR 1
/* 1.1: subscribe, unsubscribe and notifications. 1.2: laser.autotune; status.session;
 * laser.get's control, autotune and error_age_s; the states unstable and ramping;
 * output_v null when unknown. */
#define PROTOCOL_MINOR 2

/* Speed of light, for vacuum wavelengths: lambda_nm = C_NM_THZ / f_thz. */
#define C_NM_THZ 299792.458

/* Wrong tokens one address may send per window, over all its connections:
 * reconnecting must not buy more guesses. A 32-byte random token cannot be
 * guessed at 10 a minute; a user who mistyped waits a minute at worst. */
#define ADDR_MAX_FAILED_LOGINS 10
#define ADDR_LOGIN_WINDOW_NS (60 * 1000000000ull)

static double ns_to_ms(uint64_t ns) {
    return (double)ns * 1e-6;
}

/* Members not in names (NULL-terminated) are refused with -32602 naming the
 * first one: a typo in a write must never be silently ignored. */
static bool params_only(struct rpc_call *call, json_t *params, const char *const *names) {
    const char *key;
    json_t *v;

    json_object_foreach(params, key, v) {
        bool known = false;
        for (const char *const *n = names; n && *n; n++)
            known = known || strcmp(*n, key) == 0;
        if (!known) {
            rpc_call_errorf(call, RPC_INVALID_PARAMS, NULL, "Invalid params: unknown member \"%s\"",
                            key);
            return false;
        }
    }
    return true;
}

/* A laser's name from a param. Labs name lasers by wavelength ("399",
 * "866"), and a shell or a client easily sends those as numbers: an integer
 * is taken as the name it spells. NULL if neither string nor integer. */
static const char *laser_name_param(json_t *v, char *buf, size_t len) {
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_integer(v)) {
        snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return buf;
    }
    return NULL;
}

/*
 * The channel named by "channel" (number) or "laser" (name). With required
 * false and neither given, *out is NULL and true is returned. On error the
 * call is answered and false returned.
 */
static bool param_channel(struct rpc_call *call, json_t *params, struct daemon *d, bool required,
                          struct meter_channel **out) {
    json_t *ch = json_object_get(params, "channel");
    json_t *name = json_object_get(params, "laser");

    /* A positional null is a parameter not given: ["399", null, 60]. */
    if (json_is_null(ch))
        ch = NULL;
    if (json_is_null(name))
        name = NULL;
    *out = NULL;
    if (ch && name) {
        rpc_call_error(call, RPC_INVALID_PARAMS,
                       "Invalid params: give \"channel\" or \"laser\", not both", NULL);
        return false;
    }
    if (ch) {
        if (!json_is_integer(ch)) {
            rpc_call_error(call, RPC_INVALID_PARAMS,
                           "Invalid params: \"channel\" must be an integer", NULL);
            return false;
        }
        json_int_t n = json_integer_value(ch);
        *out = n >= 1 && n <= CONFIG_MAX_LASERS ? meter_channel_find(&d->meter, (int)n) : NULL;
        if (*out == NULL) {
            rpc_call_errorf(call, RPC_INVALID_PARAMS, NULL, "Invalid params: no channel %lld",
                            (long long)json_integer_value(ch));
            return false;
        }
        return true;
    }
    if (name) {
        char buf[32];
        const char *n = laser_name_param(name, buf, sizeof(buf));
        if (n == NULL) {
            rpc_call_error(call, RPC_INVALID_PARAMS, "Invalid params: \"laser\" must be a string",
                           NULL);
            return false;
        }
        *out = meter_channel_by_name(&d->meter, n);
        if (*out == NULL) {
            rpc_call_errorf(call, RPC_INVALID_PARAMS, NULL, "Invalid params: no laser \"%s\"", n);
            return false;
        }
        return true;
    }
    if (required) {
        rpc_call_error(call, RPC_INVALID_PARAMS,
                       "Invalid params: \"channel\" or \"laser\" is required", NULL);
        return false;
    }
    return true;
}

/* The answers clients ask for most (read, the reading notifications) and
 * the biggest (history) are written as text straight into one buffer sized
 * by an upper bound: building a json_t per value and dumping it costs
 * several times as much, most of it in printf for the reals. */
struct text {
    char *p, *end; /* next byte, end of the buffer */
};

__attribute__((format(printf, 2, 3))) static void put(struct text *t, const char *fmt, ...) {
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(t->p, (size_t)(t->end - t->p), fmt, ap);
    va_end(ap);
    /* The buffer is sized by an upper bound; running out is a bug. */
    assert(n >= 0 && n < t->end - t->p);
    t->p += n;
}

/* A real the way answers write every real (numfmt: as jansson does with 15
 * digits, without printf's cost); null when not finite. */
static void put_real(struct text *t, double x) {
    char buf[NUMFMT_REAL_MAX];

    if (!isfinite(x)) {
        put(t, "null");
        return;
    }
    size_t n = numfmt_real(buf, x);
    assert(n < (size_t)(t->end - t->p));
    memcpy(t->p, buf, n);
    t->p += n;
    *t->p = '\0';
}

/* A string from an instrument (a reading's detail) as a JSON string: every
 * byte outside printable ASCII, and '"' and '\\', escaped, so the text is
 * valid whatever the bytes. At most 6 bytes of text per byte. */
static void put_string(struct text *t, const char *s) {
    static const char hex[] = "0123456789abcdef";
    char *p = t->p;

    *p++ = '"';
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;

        assert(t->end - p > 8);
        if (ch == '"' || ch == '\\') {
            *p++ = '\\';
            *p++ = (char)ch;
        } else if (ch >= 0x20 && ch < 0x7f) {
            *p++ = (char)ch;
        } else {
            memcpy(p, "\\u00", 4);
            p[4] = hex[ch >> 4];
            p[5] = hex[ch & 15];
            p += 6;
        }
    }
    *p++ = '"';
    *p = '\0';
    t->p = p;
}

/* The most one reading takes as text: the members with every number at its
 * longest, the name, and the detail with every byte escaped. */
#define READING_TEXT_MAX (320 + CONFIG_NAME_MAX + 6 * sizeof(((struct reading *)0)->detail))

/* One reading as clients see it (read, the reading notifications), written
 * at t (READING_TEXT_MAX bytes free). */
static void reading_text(struct text *t, const struct meter_channel *c, uint64_t now_ns) {
    const struct reading *r = &c->last;

    /* The name is [A-Za-z0-9_.-] (config): no escaping needed. */
    put(t, "{\"channel\":%d,\"laser\":\"%s\",", c->cfg->channel, c->cfg->name);
    if (r->seq == 0) {
        put(t, "\"status\":\"error\",\"detail\":\"no reading yet\",\"seq\":0}");
        return;
    }
    put(t, "\"status\":\"%s\",", wm_status_name(r->status));
    if (r->status == WM_OK) {
        put(t, "\"frequency_thz\":");
        put_real(t, r->frequency_thz);
        put(t, ",\"wavelength_nm\":");
        put_real(t, C_NM_THZ / r->frequency_thz);
        put(t, ",");
    }
    put(t, "\"exposure_ms\":%d,\"time\":", r->exposure_ms);
    put_real(t, r->time_unix);
    put(t, ",\"age_ms\":");
    put_real(t, round(ns_to_ms(now_ns - r->t_ns) * 1000) / 1000);
    put(t, ",\"seq\":%" PRIu64, r->seq);
    if (r->straddled) /* never used by a lock; shown so a user sees why */
        put(t, ",\"straddled\":true");
    if (r->status == WM_ERROR && r->detail[0]) {
        put(t, ",\"detail\":");
        put_string(t, r->detail);
    }
    put(t, "}");
}

/* New reference: one reading as clients see it, for answers that hold it
 * in a bigger object (laser.get). The same text read back, so there is one
 * definition of what a reading looks like. */
json_t *methods_reading_json(const struct meter_channel *c, uint64_t now_ns) {
    char buf[READING_TEXT_MAX];
    struct text t = {buf, buf + sizeof(buf)};

    reading_text(&t, c, now_ns);
    return json_loadb(buf, (size_t)(t.p - buf), 0, NULL);
}

static void m_ping(struct rpc_call *call, json_t *params, void *ctx) {
    (void)ctx;
    if (params_only(call, params, NULL))
        rpc_call_result(call, json_string("pong"));
}

static void m_version(struct rpc_call *call, json_t *params, void *ctx) {
    (void)ctx;
    if (!params_only(call, params, NULL))
        return;
    rpc_call_result(call, json_pack("{s:s, s:s, s:{s:i, s:i}}", "name", "wavemeterd", "version",
                                    WMD_VERSION, "protocol", "major", PROTOCOL_MAJOR, "minor",
                                    PROTOCOL_MINOR));
}

/* New reference: x, or null when it is not a number (none yet). */
static json_t *num_or_null(double x) {
    return isfinite(x) ? json_real(x) : json_null();
}

/* New reference: the MQTT publisher, for status (docs/MQTT.md). */
static json_t *mqtt_json(const struct daemon *d) {
    const struct mqtt *m = &d->mqtt;
    json_t *o =
        json_pack("{s:s, s:I, s:I, s:I, s:I}", "state", mqtt_state_name(m), "queued",
                  (json_int_t)mqtt_queued(m), "dropped", (json_int_t)m->queue.dropped, "published",
                  (json_int_t)m->published, "reconnects", (json_int_t)m->reconnects);

    if (o != NULL && m->state != MQTT_OFF)
        json_object_set_new(o, "broker", json_string(m->broker));
    if (o != NULL && m->state != MQTT_CONNECTED && m->error[0])
        json_object_set_new(o, "error", json_string(m->error));
    return o;
}

static void m_status(struct rpc_call *call, json_t *params, void *ctx) {
    struct daemon *d = ctx;
    uint64_t now_ns = clock_now_ns(d->clk);
    json_t *chans = json_array();

    if (!params_only(call, params, NULL)) {
        json_decref(chans);
        return;
    }
    for (int i = 0; i < d->meter.nch; i++) {
        const struct meter_channel *c = &d->meter.ch[i];
        double mean_ms, max_ms;

        meter_revisit_ms(c, &mean_ms, &max_ms);
        json_array_append_new(
            chans,
            json_pack("{s:i, s:s, s:I, s:I, s:I, s:{s:o, s:o, s:o}}", "channel", c->cfg->channel,
                      "laser", c->cfg->name, "reads", (json_int_t)c->reads, "errors",
                      (json_int_t)c->errors, "not_ok", (json_int_t)c->not_ok, "revisit_ms", "mean",
                      num_or_null(mean_ms), "max", num_or_null(max_ms), "target",
                      c->target_ns ? json_real((double)c->target_ns * 1e-6) : json_null()));
    }
    json_t *drv = json_pack("{s:s, s:s}", "name", d->meter.drv->cfg.name, "state",
                            meter_state_name(&d->meter));
    if (d->meter.last_error[0])
        json_object_set_new(drv, "error", json_string(d->meter.last_error));
    if (d->meter.sw != NULL)
        json_object_set_new(drv, "switch", json_string(d->meter.sw->cfg.name));
    /* Each actuator device once, with the lasers that are its channels. */
    json_t *acts = json_array();
    for (int i = 0; i < d->lasers.ndevs; i++) {
        const struct actdev *a = &d->lasers.devs[i];
        json_t *names = json_array();
        for (int k = 0; k < a->args.nlasers; k++)
            json_array_append_new(names, json_string(a->lasers[k]->name));
        json_t *o = json_pack("{s:s, s:s, s:o, s:I, s:I}", "device", a->name, "state",
                              actdev_state_name(a), "lasers", names, "opens", (json_int_t)a->opens,
                              "failures", (json_int_t)a->failures);
        if (a->reason[0])
            json_object_set_new(o, "reason", json_string(a->reason));
        json_array_append_new(acts, o);
    }
    /* This connection's own access, so a client (the web page) can offer its
     * write controls only when they would work. */
    bool wfrom, token_req, logged;
    const struct rpc_session *sess = rpc_call_session(call);
    rpc_call_access(call, &wfrom, &token_req, &logged);
    json_t *session =
        json_pack("{s:s, s:b, s:b, s:b, s:b}", "peer", sess ? rpc_session_name(sess) : "",
                  "write_from", wfrom, "token_required", token_req, "logged_in", logged,
                  "may_write", wfrom && (!token_req || logged));
    rpc_call_result(
        call,
        json_pack("{s:f, s:o, s:o, s:f, s:o, s:i, s:i, s:{s:f, s:f}, s:{s:f}, s:i, s:b, s:i, s:s, "
                  "s:o, s:o}",
                  "uptime_s", ns_to_ms(now_ns - d->start_ns) / 1000.0, "driver", drv, "actuators",
                  acts, "cycle_ms", ns_to_ms(d->meter.last_cycle_ns), "channels", chans, "clients",
                  d->server.nclients, "clients_paused", server_clients_paused(&d->server),
                  "loop_lag_ms", "last", d->lag_last_ms, "max", d->lag_max_ms, "loop_turn_ms",
                  "max", d->turn_max_ms, "pool_jobs",
                  (meter_busy(&d->meter) ? 1 : 0) + lasers_jobs(&d->lasers), "read_in_flight",
                  meter_busy(&d->meter), "threadpool_size", d->cfg.threadpool_size, "state_dir",
                  d->state_dir, "session", session, "mqtt", mqtt_json(d)));
}

static void m_channels(struct rpc_call *call, json_t *params, void *ctx) {
    struct daemon *d = ctx;
    json_t *a;

    if (!params_only(call, params, NULL))
        return;
    a = json_array();
    for (int i = 0; i < d->meter.nch; i++) {
        const struct laser_config *lc = d->meter.ch[i].cfg;
        json_array_append_new(a, json_pack("{s:i, s:s, s:i, s:i, s:b}", "channel", lc->channel,
                                           "laser", lc->name, "exposure_ms", lc->exposure_ms,
                                           "settle_ms", lc->settle_ms, "enabled", lc->enabled));
    }
    rpc_call_result(call, a);
}

static const char *const read_params[] = {"channel", "laser", NULL};

static void m_read(struct rpc_call *call, json_t *params, void *ctx) {
    struct daemon *d = ctx;
    struct meter_channel *c;
    uint64_t now_ns = clock_now_ns(d->clk);
    int n;

    if (!params_only(call, params, read_params) || !param_channel(call, params, d, false, &c))
        return;
    n = c ? 1 : d->meter.nch;
    char *buf = malloc((size_t)n * (READING_TEXT_MAX + 1) + 3);
    if (buf == NULL) {
        rpc_call_error(call, RPC_INTERNAL_ERROR, "Internal error: out of memory", NULL);
        return;
    }
    struct text t = {buf, buf + (size_t)n * (READING_TEXT_MAX + 1) + 3};
    if (c) {
        reading_text(&t, c, now_ns);
    } else {
        put(&t, "[");
        for (int i = 0; i < n; i++) {
            if (i > 0)
                put(&t, ",");
            reading_text(&t, &d->meter.ch[i], now_ns);
        }
        put(&t, "]");
    }
    rpc_call_result_text(call, buf);
}

/* Write methods are for the networks in access.write_from only (and, with
 * access.require_token, for connections that logged in); anyone the server
 * accepts may read. The call's session decides: answers -32001 and returns
 * false otherwise. */
static bool write_allowed(struct rpc_call *call, struct daemon *d) {
    (void)d;
    return rpc_call_may_write(call);
}

static const char *const auth_params[] = {"token", NULL};

/* auth {token}: this connection may then use write methods. */
static void m_auth(struct rpc_call *call, json_t *params, void *ctx) {
    json_t *t = json_object_get(params, "token");

    (void)ctx;
    if (!params_only(call, params, auth_params))
        return;
    if (!json_is_string(t)) {
        rpc_call_error(call, RPC_INVALID_PARAMS, "Invalid params: \"token\" must be a string",
                       NULL);
        return;
    }
    rpc_call_login(call, json_string_value(t), json_string_length(t));
}

/* ---- the access policy the sessions ask (struct rpc_access) ---- */

/* The config as it is now: a reload replaces write_from in place. */
static bool access_write_from(void *ctx, const struct sockaddr *addr) {
    const struct daemon *d = ctx;

    return acl_allows(&d->cfg.write_from, addr);
}

static bool access_token_ok(void *ctx, const char *given, size_t len) {
    const struct daemon *d = ctx;

    return token_check(&d->token, given, len);
}

static bool access_login_blocked(void *ctx, struct peers *peers, const struct sockaddr *addr,
                                 double *wait_s) {
    const struct daemon *d = ctx;
    uint64_t now_ns = clock_now_ns(d->clk), wait_ns = 0;
    struct peer *r = peers ? peers_get(peers, addr, now_ns) : NULL;

    if (r == NULL ||
        !peers_login_blocked(r, now_ns, ADDR_LOGIN_WINDOW_NS, ADDR_MAX_FAILED_LOGINS, &wait_ns))
        return false;
    *wait_s = (double)wait_ns * 1e-9;
    return true;
}

static void access_login_failed(void *ctx, struct peers *peers, const struct sockaddr *addr) {
    const struct daemon *d = ctx;
    uint64_t now_ns = clock_now_ns(d->clk);
    struct peer *r = peers ? peers_get(peers, addr, now_ns) : NULL;

    if (r)
        peers_login_failed(r, now_ns, ADDR_LOGIN_WINDOW_NS);
}

/* ---- lasers ---- */

static const char *const laser_params[] = {"laser", NULL};

/* The laser named by params.laser; answers the call and returns NULL if none. */
static struct laser *param_laser(struct rpc_call *call, json_t *params, struct daemon *d) {
    json_t *name = json_object_get(params, "laser");
    char buf[32];
    const char *n = laser_name_param(name, buf, sizeof(buf));
    struct laser *l;

    if (n == NULL) {
        rpc_call_error(call, RPC_INVALID_PARAMS,
                       name ? "Invalid params: \"laser\" must be a string"
                            : "Invalid params: \"laser\" is required",
                       NULL);
        return NULL;
    }
    if ((l = lasers_find(&d->lasers, n)) == NULL)
        rpc_call_errorf(call, RPC_INVALID_PARAMS, NULL, "Invalid params: no laser \"%s\"", n);
    return l;
}

/* An optional finite number param; answers the call and returns false if bad. */
static bool param_number(struct rpc_call *call, json_t *params, const char *key, double *out) {
    json_t *v = json_object_get(params, key);

    if (v == NULL || json_is_null(v)) /* null skips a positional param */
        return true;
    if (!json_is_number(v) || !isfinite(json_number_value(v))) {
        rpc_call_errorf(call, RPC_INVALID_PARAMS, NULL,
                        "Invalid params: \"%s\" must be a finite number", key);
        return false;
    }
    *out = json_number_value(v);
    return true;
}

/* New reference: x to 6 significant digits (null if not finite): per-reading
 * gains and periods are estimates, and 15 digits of them are noise. */
static json_t *real6(double x) {
    char buf[32];

    if (!isfinite(x))
        return json_null();
    snprintf(buf, sizeof(buf), "%.6g", x);
    return json_real(strtod(buf, NULL));
}

/* New reference: the loop's per-reading gains (docs/CONTROL.md) as the
 * last step used them, what the gains asked for, and the check of the
 * gains against the schedule's revisit period. */
static json_t *laser_control_json(const struct laser *l) {
    const struct pid *p = &l->pid;
    bool stepped = p->dt_s > 0;

    return json_pack("{s:o, s:o, s:o, s:o, s:{s:o, s:o, s:o}, s:b, s:f, s:o, s:o}", "dt_s",
                     real6(stepped ? p->dt_s : (double)NAN), "gp",
                     real6(stepped ? p->eff.gp : (double)NAN), "gi",
                     real6(stepped ? p->eff.gi : (double)NAN), "gd",
                     real6(stepped ? p->eff.gd : (double)NAN), "asked", "gp",
                     real6(stepped ? p->asked.gp : (double)NAN), "gi",
                     real6(stepped ? p->asked.gi : (double)NAN), "gd",
                     real6(stepped ? p->asked.gd : (double)NAN), "bounded", stepped && p->bounded,
                     "backoff", p->gain_scale, "expected_dt_s", real6(l->expected_dt_s), "check",
                     l->gains_check[0] ? json_string(l->gains_check) : json_null());
}

/* New reference: the last autotune run, null if none. */
static json_t *laser_tune_json(const struct laser *l) {
    const struct laser_tune *t = &l->tune;
    const struct laser_tune_result *r = &t->res;
    json_t *o;

    if (t->phase == TUNE_NONE)
        return json_null();
    o = json_pack("{s:s, s:s, s:o, s:b}", "state", laser_tune_phase_name(t->phase), "detail",
                  t->detail, "step_v", real6(t->step_v), "apply", t->apply);
    if (o == NULL || t->phase != TUNE_DONE)
        return o;
    json_object_set_new(
        o, "result",
        json_pack(
            "{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:{s:o, s:o, s:o}, "
            "s:b}",
            "sensitivity_mhz_per_v", real6(r->sensitivity_mhz_per_v), "sensitivity_away_mhz_per_v",
            real6(r->s_out_mhz_per_v), "sensitivity_back_mhz_per_v", real6(r->s_back_mhz_per_v),
            "hysteresis", real6(r->hysteresis), "lag_readings", real6(r->lag_readings), "noise_mhz",
            real6(r->noise_mhz), "drift_mhz_per_sqrt_s", real6(r->drift_mhz_per_sqrt_s), "dt_s",
            real6(r->dt_s), "gi", real6(r->gi), "kalman_bound_mhz", real6(r->kalman_mhz),
            "expected_error_mhz", real6(r->expected_mhz), "gains", "kp_v_per_mhz",
            real6(r->kp_v_per_mhz), "ki_v_per_mhz_s", real6(r->ki_v_per_mhz_s), "kd_v_s_per_mhz",
            real6(r->kd_v_s_per_mhz), "applied", t->applied));
    return o;
}

/* New reference: everything a client may want to know about one laser. */
static json_t *laser_json(const struct laser *l, uint64_t now_ns, struct daemon *d) {
    const struct laser_config *c = l->cfg;
    struct meter_channel *ch = meter_channel_find(&d->meter, c->channel);
    json_t *o = json_object();

    json_object_set_new(o, "name", json_string(c->name));
    json_object_set_new(o, "channel", json_integer(c->channel));
    json_object_set_new(o, "actuator",
                        json_string(c->actuator.drv.driver[0] ? c->actuator.drv.driver : "none"));
    if (l->dev != NULL) {
        json_object_set_new(o, "actuator_device", json_string(l->dev->name));
        json_object_set_new(o, "actuator_state", json_string(actdev_state_name(l->dev)));
    }
    json_object_set_new(o, "lock", json_boolean(l->lock_on));
    json_object_set_new(o, "state", json_string(laser_state_name(l->state)));
    json_object_set_new(o, "reason", json_string(l->reason));
    json_object_set_new(o, "since", json_real(l->since_unix));
    json_object_set_new(o, "setpoint_thz", json_real(l->pid.setpoint_thz));
    json_object_set_new(o, "target_thz", json_real(l->pid.target_thz));
    json_object_set_new(o, "ramp_mhz_per_s",
                        json_real(l->large_move ? l->rate_after_move : l->pid.ramp_mhz_per_s));
    json_object_set_new(o, "error_mhz", num_or_null(l->error_mhz));
    /* How old the last error that was a number is: while holding, error_mhz
     * is null (no current reading) and this says since when. */
    json_object_set_new(o, "error_age_s",
                        l->error_t_ns != 0 && now_ns >= l->error_t_ns
                            ? json_real(round((double)(now_ns - l->error_t_ns) * 1e-6) / 1000)
                            : json_null());
    json_object_set_new(o, "output_v", l->output_known ? json_real(l->pid.output_v) : json_null());
    json_object_set_new(o, "output_readback_v", num_or_null(l->readback_v));
    json_object_set_new(o, "gains",
                        json_pack("{s:f, s:f, s:f, s:f}", "kp_v_per_mhz", l->pid.p.kp_v_per_mhz,
                                  "ki_v_per_mhz_s", l->pid.p.ki_v_per_mhz_s, "kd_v_s_per_mhz",
                                  l->pid.p.kd_v_s_per_mhz, "sensitivity_mhz_per_v",
                                  l->pid.p.sensitivity_mhz_per_v));
    json_object_set_new(o, "control", laser_control_json(l));
    json_object_set_new(o, "autotune", laser_tune_json(l));
    json_object_set_new(o, "limits",
                        json_pack("{s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "min_thz", c->min_thz,
                                  "max_thz", c->max_thz, "output_min_v", c->output_min_v,
                                  "output_max_v", c->output_max_v, "slew_v_per_s", c->slew_v_per_s,
                                  "capture_mhz", c->capture_mhz, "tolerance_mhz",
                                  c->tolerance_mhz));
    json_object_set_new(o, "restart", json_string(config_restart_name(c->restart)));
    json_object_set_new(o, "auto_relock", json_boolean(c->auto_relock));
    json_object_set_new(o, "relocks", json_integer(l->relocks));
    json_object_set_new(o, "actuator_writes", json_integer((json_int_t)l->writes));
    json_object_set_new(o, "actuator_errors", json_integer((json_int_t)l->write_errors));
    if (ch)
        json_object_set_new(o, "reading", methods_reading_json(ch, now_ns));
    return o;
}

static void m_lasers(struct rpc_call *call, json_t *params, void *ctx) {
    struct daemon *d = ctx;
    uint64_t now = clock_now_ns(d->clk);
    json_t *a;

    if (!params_only(call, params, NULL))
        return;
    a = json_array();
    for (int i = 0; i < d->lasers.n; i++)
        json_array_append_new(a, laser_json(&d->lasers.l[i], now, d));
    rpc_call_result(call, a);
}

static void m_laser_get(struct rpc_call *call, json_t *params, void *ctx) {
    struct daemon *d = ctx;
    struct laser *l;

    if (!params_only(call, params, laser_params) || (l = param_laser(call, params, d)) == NULL)
        return;
    rpc_call_result(call, laser_json(l, clock_now_ns(d->clk), d));
}

/* A write waits for its change to be durable; this finishes the call. */
struct write_call {
    struct rpc_call *call;
    struct daemon *d;
    struct laser *l;
};

static void write_done(void *arg, int rc, enum laser_stage stage) {
    struct write_call *w = arg;

    if (rc == 0)
        rpc_call_result(w->call, laser_json(w->l, clock_now_ns(w->d->clk), w->d));
    else if (stage == LASER_STAGE_STORE)
        rpc_call_errorf(w->call, RPC_STORAGE_FAILED, NULL, "Applied but not saved: state file: %s",
                        strerror(-rc));
    else
        rpc_call_errorf(w->call, RPC_LASER_FAULT, NULL, "Actuator write failed: %s",
                        rc < 0 ? strerror(-rc) : "unknown");
    free(w);
}

/* access.audit: one line per answer to a write method, accepted or
 * refused, with who asked, what, with which params and how it ended. */
static void access_audit(void *ctx, const char *peer, const char *method, json_t *params,
                         const char *outcome) {
    char *p = params ? json_dumps(params, JSON_COMPACT | JSON_SORT_KEYS) : NULL;

    (void)ctx;
    log_notice("audit: %s %s %s -> %s", peer, method ? method : "?", p ? p : "{}", outcome);
    free(p);
}

static uint64_t access_now_ns(void *ctx) {
    return clock_now_ns(((struct daemon *)ctx)->clk);
}

/* Answer a refused change (rc < 0 from a laser_* call) with the right code. */
static void write_refused(struct rpc_call *call, struct laser *l, int rc) {
    const struct laser_config *c = l->cfg;

    switch (rc) {
    case -ENOTSUP:
        rpc_call_errorf(call, RPC_LASER_NO_ACTUATOR, NULL,
                        "laser \"%s\" has no actuator (monitor only)", c->name);
        break;
    case -EPERM:
        rpc_call_errorf(call, RPC_LASER_LOCKED, NULL,
                        "laser \"%s\" is locked: unlock it before setting the output", c->name);
        break;
    case -EBUSY:
        rpc_call_errorf(call, RPC_BUSY, NULL, "laser \"%s\": an actuator write is in flight",
                        c->name);
        break;
    case -ENXIO:
        rpc_call_errorf(call, RPC_NOT_READY, NULL,
                        "laser \"%s\": its output is unknown (restart \"off\", and the actuator "
                        "cannot tell it): set it with laser.set_output first",
                        c->name);
        break;
    case -EDOM:
        rpc_call_errorf(call, RPC_INVALID_PARAMS,
                        json_pack("{s:f, s:f}", "capture_mhz", c->capture_mhz,
                                  "large_step_rate_mhz_per_s", c->large_step_rate_mhz_per_s),
                        "Invalid params: laser \"%s\" is locked and the new setpoint is more than "
                        "capture_mhz %g MHz away (large_step is \"refuse\"): ramp there with "
                        "ramp_mhz_per_s at most %g, or unlock first",
                        c->name, c->capture_mhz, c->large_step_rate_mhz_per_s);
        break;
    case -ENODEV:
        rpc_call_errorf(call, RPC_LASER_FAULT, NULL, "laser \"%s\": actuator %s is %s%s%s", c->name,
                        l->dev->name, actdev_state_name(l->dev), l->dev->reason[0] ? ": " : "",
                        l->dev->reason);
        break;
    default:
        rpc_call_errorf(call, RPC_INTERNAL_ERROR, NULL, "laser \"%s\": %s", c->name, strerror(-rc));
        break;
    }
}

static bool write_begin(struct rpc_call *call, json_t *params, struct daemon *d, struct laser *l,
                        struct write_call **out) {
    struct write_call *w = malloc(sizeof(*w));

    if (w == NULL) {
        rpc_call_error(call, RPC_INTERNAL_ERROR, "Internal error: out of memory", NULL);
        return false;
    }
    w->call = call;
    w->d = d;
    w->l = l;
    *out = w;
    (void)params; /* audited by the rpc layer with the answer */
    return true;
}

static const char *const setpoint_params[] = {"laser", "frequency_thz", "wavelength_nm",
                                              "ramp_mhz_per_s", NULL};

static void m_set_setpoint(struct rpc_call *call, json_t *params, void *ctx) {
    struct daemon *d = ctx;
    struct laser *l;
    struct write_call *w;
    double f = (double)NAN, wl = (double)NAN, ramp;
    int rc;

    if (!write_allowed(call, d))
        return;

    if (!params_only(call, params, setpoint_params) || (l = param_laser(call, params, d)) == NULL)
        return;
    ramp = l->large_move ? l->rate_after_move : l->pid.ramp_mhz_per_s; /* the laser's own */
    if (!param_number(call, params, "frequency_thz", &f) ||
        !param_number(call, params, "wavelength_nm", &wl) ||
        !param_number(call, params, "ramp_mhz_per_s", &ramp))
        return;
    if (isnan(f) == isnan(wl)) {
        rpc_call_error(
            call, RPC_INVALID_PARAMS,
            "Invalid params: give exactly one of \"frequency_thz\" and \"wavelength_nm\"", NULL);
        return;
    }
    if (isnan(f)) {
        /* The laser's range in nm, checked before converting: 0, negative
         * or denormal wavelengths never become a frequency. */
        double min_nm = C_NM_THZ / l->cfg->max_thz, max_nm = C_NM_THZ / l->cfg->min_thz;
        if (!(wl >= min_nm && wl <= max_nm)) {
            rpc_call_errorf(call, RPC_INVALID_PARAMS,
                            json_pack("{s:f, s:f}", "min_nm", min_nm, "max_nm", max_nm),
                            "Invalid params: %.6f nm is outside laser \"%s\"'s range [%.6f, "
                            "%.6f] nm",
                            wl, l->cfg->name, min_nm, max_nm);
            return;
        }
        f = C_NM_THZ / wl;
    }
    if (!(ramp >= 0 && ramp <= CONFIG_RAMP_MAX_MHZ_PER_S)) {
        rpc_call_errorf(call, RPC_INVALID_PARAMS,
                        json_pack("{s:f, s:f}", "min", 0.0, "max", CONFIG_RAMP_MAX_MHZ_PER_S),
                        "Invalid params: \"ramp_mhz_per_s\" must be in [0, %g]",
                        CONFIG_RAMP_MAX_MHZ_PER_S);
        return;
    }
    if (f < l->cfg->min_thz || f > l->cfg->max_thz) {
        rpc_call_errorf(call, RPC_INVALID_PARAMS,
                        json_pack("{s:f, s:f, s:f}", "min_thz", l->cfg->min_thz, "max_thz",
                                  l->cfg->max_thz, "requested_thz", f),
                        "Invalid params: %.9f THz is outside laser \"%s\"'s range [%.9f, %.9f] THz",
                        f, l->cfg->name, l->cfg->min_thz, l->cfg->max_thz);
        return;
    }
    if (!write_begin(call, params, d, l, &w))
        return;
    if ((rc = laser_set_setpoint(l, f, ramp, write_done, w)) < 0) {
        free(w);
        write_refused(call, l, rc);
    }
}

static void lock_common(struct rpc_call *call, json_t *params, struct daemon *d, bool on) {
    struct laser *l;
    struct write_call *w;
    int rc;

    if (!write_allowed(call, d))
        return;

    if (!params_only(call, params, laser_params) || (l = param_laser(call, params, d)) == NULL)
        return;
    if (on && !laser_has_actuator(l)) {
        write_refused(call, l, -ENOTSUP);
        return;
    }
    if (!write_begin(call, params, d, l, &w))
        return;
    if ((rc = laser_lock(l, on, write_done, w)) < 0) {
        free(w);
        write_refused(call, l, rc);
    }
}

static void m_lock(struct rpc_call *call, json_t *params, void *ctx) {
    lock_common(call, params, ctx, true);
}

static void m_unlock(struct rpc_call *call, json_t *params, void *ctx) {
    lock_common(call, params, ctx, false);
}

static const char *const gains_params[] = {"laser", "kp", "ki", "kd", NULL};

static void m_set_gains(struct rpc_call *call, json_t *params, void *ctx) {
    struct daemon *d = ctx;
    struct laser *l;
    struct write_call *w;
    double kp, ki, kd;
    int rc;

    if (!write_allowed(call, d))
        return;

    if (!params_only(call, params, gains_params) || (l = param_laser(call, params, d)) == NULL)
        return;
    kp = l->pid.p.kp_v_per_mhz;
    ki = l->pid.p.ki_v_per_mhz_s;
    kd = l->pid.p.kd_v_s_per_mhz;
    if (!param_number(call, params, "kp", &kp) || !param_number(call, params, "ki", &ki) ||
        !param_number(call, params, "kd", &kd))
        return;
    if (!(kp >= 0 && kp <= CONFIG_GAIN_MAX && ki >= 0 && ki <= CONFIG_GAIN_MAX && kd >= 0 &&
          kd <= CONFIG_GAIN_MAX)) {
        rpc_call_errorf(call, RPC_INVALID_PARAMS,
                        json_pack("{s:f, s:f}", "min", 0.0, "max", CONFIG_GAIN_MAX),
                        "Invalid params: gains must be in [0, %g] (the loop's sign comes from "
                        "sensitivity_mhz_per_v)",
                        CONFIG_GAIN_MAX);
        return;
    }
    if (!write_begin(call, params, d, l, &w))
        return;
    if ((rc = laser_set_gains(l, kp, ki, kd, write_done, w)) < 0) {
        free(w);
        write_refused(call, l, rc);
    }
}

static const char *const autotune_params[] = {"laser", "step_v", "apply", NULL};

/* laser.autotune {laser, step_v?, apply?}: starts a run and answers at once
 * with the laser (its "autotune" shows the progress, pushed on "locks"). */
static void m_autotune(struct rpc_call *call, json_t *params, void *ctx) {
    struct daemon *d = ctx;
    struct laser *l;
    double step_v = (double)NAN;
    json_t *apply = json_object_get(params, "apply");
    int rc;

    if (!write_allowed(call, d))
        return;
    if (!params_only(call, params, autotune_params) || (l = param_laser(call, params, d)) == NULL ||
        !param_number(call, params, "step_v", &step_v))
        return;
    if (apply != NULL && !json_is_null(apply) && !json_is_boolean(apply)) {
        rpc_call_error(call, RPC_INVALID_PARAMS, "Invalid params: \"apply\" must be a boolean",
                       NULL);
        return;
    }
    if (!isnan(step_v) && !(step_v > 0 && step_v <= l->cfg->output_max_v - l->cfg->output_min_v)) {
        rpc_call_errorf(
            call, RPC_INVALID_PARAMS,
            json_pack("{s:f, s:f}", "min", 0.0, "max", l->cfg->output_max_v - l->cfg->output_min_v),
            "Invalid params: \"step_v\" must be > 0 and within laser \"%s\"'s "
            "output range (%g V wide)",
            l->cfg->name, l->cfg->output_max_v - l->cfg->output_min_v);
        return;
    }
    rc = laser_autotune(l, step_v, json_is_true(apply));
    if (rc == 0) {
        rpc_call_result(call, laser_json(l, clock_now_ns(d->clk), d));
        return;
    }
    switch (rc) {
    case -EPERM:
        rpc_call_errorf(call, RPC_LASER_LOCKED, NULL,
                        "laser \"%s\" is locked: autotune runs on an unlocked laser", l->cfg->name);
        break;
    case -ERANGE:
        rpc_call_errorf(call, RPC_INVALID_PARAMS,
                        json_pack("{s:f, s:f, s:f}", "output_v", l->pid.output_v, "output_min_v",
                                  l->cfg->output_min_v, "output_max_v", l->cfg->output_max_v),
                        "Invalid params: no step of that size fits laser \"%s\"'s output range "
                        "from %.4f V either way",
                        l->cfg->name, l->pid.output_v);
        break;
    case -EBUSY:
        rpc_call_errorf(call, RPC_BUSY, NULL, "laser \"%s\": %s", l->cfg->name,
                        laser_tune_running(l) ? "an autotune is running"
                                              : "an actuator write is in flight");
        break;
    case -ENXIO:
        write_refused(call, l, rc);
        break;
    case -ENOTSUP:
        if (!laser_has_actuator(l)) {
            write_refused(call, l, rc);
            break;
        }
        rpc_call_errorf(call, RPC_INVALID_PARAMS, NULL,
                        "Invalid params: laser \"%s\" has sensitivity_mhz_per_v 0: give step_v",
                        l->cfg->name);
        break;
    default:
        write_refused(call, l, rc);
        break;
    }
}

static const char *const output_params[] = {"laser", "output_v", NULL};

static void m_set_output(struct rpc_call *call, json_t *params, void *ctx) {
    struct daemon *d = ctx;
    struct laser *l;
    struct write_call *w;
    double v = (double)NAN;
    int rc;

    if (!write_allowed(call, d))
        return;

    if (!params_only(call, params, output_params) || (l = param_laser(call, params, d)) == NULL ||
        !param_number(call, params, "output_v", &v))
        return;
    if (isnan(v)) {
        rpc_call_error(call, RPC_INVALID_PARAMS, "Invalid params: \"output_v\" is required", NULL);
        return;
    }
    if (v < l->cfg->output_min_v || v > l->cfg->output_max_v) {
        rpc_call_errorf(call, RPC_INVALID_PARAMS,
                        json_pack("{s:f, s:f}", "output_min_v", l->cfg->output_min_v,
                                  "output_max_v", l->cfg->output_max_v),
                        "Invalid params: %g V is outside laser \"%s\"'s output range [%g, %g] V", v,
                        l->cfg->name, l->cfg->output_min_v, l->cfg->output_max_v);
        return;
    }
    if (!write_begin(call, params, d, l, &w))
        return;
    if ((rc = laser_set_output(l, v, write_done, w)) < 0) {
        free(w);
        write_refused(call, l, rc);
    }
}

/* Error statistics by Welford's method: one pass, and no cancellation when
 * the mean is large against the spread (an unlocked laser far off). */
struct history_acc {
    struct text t;
    double mean, m2, min, max;
    size_t n, samples;
};

static void history_one(const struct laser_sample *s, void *arg) {
    struct history_acc *h = arg;
    struct text *t = &h->t;

    put(t, "%s{\"time\":", h->samples++ ? "," : "");
    put_real(t, s->time_unix);
    put(t, ",\"seq\":%" PRIu64 ",\"status\":\"%s\",\"frequency_thz\":", s->seq,
        wm_status_name(s->status));
    put_real(t, s->frequency_thz);
    put(t, ",\"error_mhz\":");
    put_real(t, s->error_mhz);
    put(t, ",\"output_v\":");
    put_real(t, s->output_v);
    put(t, ",\"state\":\"%s\"}", laser_state_name(s->state));
    if (isfinite(s->error_mhz)) {
        double x = s->error_mhz, delta = x - h->mean;

        h->min = h->n == 0 || x < h->min ? x : h->min;
        h->max = h->n == 0 || x > h->max ? x : h->max;
        h->n++;
        h->mean += delta / (double)h->n;
        h->m2 += delta * (x - h->mean);
    }
}

static void history_count(const struct laser_sample *s, void *arg) {
    (void)s;
    ++*(size_t *)arg;
}

/* The most one history sample takes as text: its seven members with every
 * number at its longest (15 significant digits and an exponent) and the
 * longest status and state names, 210 bytes; the rest of the answer, 400. */
#define HISTORY_SAMPLE_MAX_BYTES 240
#define HISTORY_FIXED_BYTES 400

static const char *const history_params[] = {"laser", "channel", "seconds", NULL};

static void m_history(struct rpc_call *call, json_t *params, void *ctx) {
    struct daemon *d = ctx;
    struct meter_channel *c;
    struct laser *l;
    struct history_acc h = {0};
    double seconds = 0;
    size_t n = 0;
    char *buf;

    if (!params_only(call, params, history_params) || !param_channel(call, params, d, true, &c) ||
        !param_number(call, params, "seconds", &seconds))
        return;
    if (seconds < 0) {
        rpc_call_error(call, RPC_INVALID_PARAMS, "Invalid params: \"seconds\" must be >= 0", NULL);
        return;
    }
    l = lasers_find_channel(&d->lasers, c->cfg->channel);
    /* The answer's size is bounded before it is built: refuse one the
     * client may not have, rather than build megabytes to throw away. */
    laser_history(l, seconds, history_count, &n);
    size_t need = HISTORY_FIXED_BYTES + n * HISTORY_SAMPLE_MAX_BYTES;
    if (need > rpc_call_budget(call)) {
        rpc_call_too_big(call, need);
        return;
    }
    if ((buf = malloc(need)) == NULL) {
        rpc_call_error(call, RPC_INTERNAL_ERROR, "Internal error: out of memory", NULL);
        return;
    }
    h.t.p = buf;
    h.t.end = buf + need;
    /* The name is [A-Za-z0-9_.-] (config): no escaping needed. */
    put(&h.t, "{\"laser\":\"%s\",\"channel\":%d,\"samples\":[", c->cfg->name, c->cfg->channel);
    laser_history(l, seconds, history_one, &h);
    put(&h.t, "],\"error_mhz\":{\"n\":%zu,\"mean\":", h.n);
    put_real(&h.t, h.n ? h.mean : (double)NAN);
    put(&h.t, ",\"std\":");
    put_real(&h.t, h.n > 1 ? sqrt(h.m2 / (double)(h.n - 1)) : (double)NAN);
    put(&h.t, ",\"min\":");
    put_real(&h.t, h.n ? h.min : (double)NAN);
    put(&h.t, ",\"max\":");
    put_real(&h.t, h.n ? h.max : (double)NAN);
    put(&h.t, "}}");
    rpc_call_result_text(call, buf);
}

/* sim.* methods: present only when the wavemeter driver simulates, and
 * reaching it only through meter_simulate(). */

static const char *const sim_fault_params[] = {"channel", "laser", "fault", NULL};

/* The driver's answer to a sim.* call. */
static void sim_answer(struct rpc_call *call, int rc) {
    if (rc == 0)
        rpc_call_result(call, json_true());
    else
        rpc_call_errorf(call, RPC_INVALID_PARAMS, NULL, "Invalid params: %s", strerror(-rc));
}

static void m_sim_fault(struct rpc_call *call, json_t *params, void *ctx) {
    struct daemon *d = ctx;
    struct meter_channel *c;
    json_t *f = json_object_get(params, "fault");
    struct wm_sim_cmd cmd = {.op = WM_SIM_FAULT};
    int rc;

    if (!write_allowed(call, d))
        return;

    if (!params_only(call, params, sim_fault_params) || !param_channel(call, params, d, true, &c))
        return;
    cmd.channel = c->cfg->channel;
    cmd.arg = json_is_string(f) ? json_string_value(f) : NULL;
    if ((rc = meter_simulate(&d->meter, &cmd)) == -EINVAL) {
        rpc_call_error(call, RPC_INVALID_PARAMS,
                       "Invalid params: \"fault\" must be one of none, no_signal, underexposed, "
                       "overexposed",
                       NULL);
        return;
    }
    sim_answer(call, rc);
}

/* A mode hop of a real diode laser is a few GHz to tens of GHz; a
 * simulated one up to 1 THz covers every case and keeps the simulated
 * frequency a frequency (1e308 MHz would make it infinite). */
#define SIM_MAX_HOP_MHZ 1e6

static const char *const sim_hop_params[] = {"channel", "laser", "jump_mhz", NULL};

static void m_sim_mode_hop(struct rpc_call *call, json_t *params, void *ctx) {
    struct daemon *d = ctx;
    struct meter_channel *c;
    json_t *j = json_object_get(params, "jump_mhz");
    struct wm_sim_cmd cmd = {.op = WM_SIM_MODE_HOP};

    if (!write_allowed(call, d))
        return;

    if (!params_only(call, params, sim_hop_params) || !param_channel(call, params, d, true, &c))
        return;
    if (!json_is_number(j) || !(fabs(json_number_value(j)) <= SIM_MAX_HOP_MHZ)) {
        rpc_call_errorf(call, RPC_INVALID_PARAMS,
                        json_pack("{s:f, s:f}", "min", -SIM_MAX_HOP_MHZ, "max", SIM_MAX_HOP_MHZ),
                        "Invalid params: \"jump_mhz\" must be a number in [%g, %g]",
                        -SIM_MAX_HOP_MHZ, SIM_MAX_HOP_MHZ);
        return;
    }
    cmd.channel = c->cfg->channel;
    cmd.jump_mhz = json_number_value(j);
    sim_answer(call, meter_simulate(&d->meter, &cmd));
}

static void sim_connect(struct rpc_call *call, json_t *params, void *ctx, bool connected) {
    struct daemon *d = ctx;
    struct wm_sim_cmd cmd = {.op = connected ? WM_SIM_CONNECT : WM_SIM_DISCONNECT};

    if (!write_allowed(call, d))
        return;

    if (!params_only(call, params, NULL))
        return;
    sim_answer(call, meter_simulate(&d->meter, &cmd));
}

static void m_sim_disconnect(struct rpc_call *call, json_t *params, void *ctx) {
    sim_connect(call, params, ctx, false);
}

static void m_sim_connect(struct rpc_call *call, json_t *params, void *ctx) {
    sim_connect(call, params, ctx, true);
}

/* ---- subscriptions: pushes of readings, lock changes and status ---- */

static const char *const topic_names[PUSH_NTOPICS] = {
    [PUSH_READINGS] = "readings",
    [PUSH_LOCKS] = "locks",
    [PUSH_STATUS] = "status",
};

static const char *const subscribe_params[] = {"topics", "lasers", "channels", "max_rate_hz", NULL};

/* A laser's index in the config for a name or channel given by a client;
 * -1 if none. */
static int laser_index(struct daemon *d, json_t *v, bool by_channel) {
    char buf[32];
    const char *name;
    struct meter_channel *c;

    if (by_channel) {
        json_int_t n = json_is_integer(v) ? json_integer_value(v) : 0;
        c = n >= 1 && n <= CONFIG_MAX_LASERS ? meter_channel_find(&d->meter, (int)n) : NULL;
    } else {
        name = laser_name_param(v, buf, sizeof(buf));
        c = name != NULL ? meter_channel_by_name(&d->meter, name) : NULL;
    }
    /* The meter's channels are the config's lasers, in order. */
    return c != NULL ? (int)(c - d->meter.ch) : -1;
}

static void m_subscribe(struct rpc_call *call, json_t *params, void *ctx) {
    struct daemon *d = ctx;
    struct push_filter f = {0};
    json_t *topics = json_object_get(params, "topics"), *v, *rate, *res, *names;
    static const char *const lists[] = {"lasers", "channels"};
    struct rpc_session *s = rpc_call_session(call);
    uint64_t id;
    size_t i;
    int rc;

    if (!params_only(call, params, subscribe_params))
        return;
    if (!json_is_array(topics) || json_array_size(topics) == 0) {
        rpc_call_error(call, RPC_INVALID_PARAMS,
                       "Invalid params: \"topics\" must be a non-empty array of \"readings\", "
                       "\"locks\", \"status\"",
                       NULL);
        return;
    }
    json_array_foreach(topics, i, v) {
        int t;
        for (t = 0; t < PUSH_NTOPICS; t++)
            if (json_is_string(v) && strcmp(json_string_value(v), topic_names[t]) == 0)
                break;
        if (t == PUSH_NTOPICS) {
            rpc_call_error(call, RPC_INVALID_PARAMS,
                           "Invalid params: unknown topic; topics are \"readings\", \"locks\", "
                           "\"status\"",
                           NULL);
            return;
        }
        f.topics |= 1u << t;
    }
    for (size_t l = 0; l < 2; l++) {
        json_t *list = json_object_get(params, lists[l]);
        if (list == NULL || json_is_null(list))
            continue;
        if (!json_is_array(list)) {
            rpc_call_errorf(call, RPC_INVALID_PARAMS, NULL,
                            "Invalid params: \"%s\" must be an array", lists[l]);
            return;
        }
        json_array_foreach(list, i, v) {
            int k = laser_index(d, v, l == 1);
            if (k < 0) {
                rpc_call_errorf(call, RPC_INVALID_PARAMS, NULL,
                                "Invalid params: no laser %s in \"%s\"",
                                l == 1 ? "on that channel" : "of that name", lists[l]);
                return;
            }
            f.lasers[k] = true;
        }
    }
    rate = json_object_get(params, "max_rate_hz");
    if (rate != NULL && !json_is_null(rate)) {
        double hz = json_is_number(rate) ? json_number_value(rate) : -1;
        if (!(hz > 0 && hz <= 1000)) {
            rpc_call_error(call, RPC_INVALID_PARAMS,
                           "Invalid params: \"max_rate_hz\" must be a number in (0, 1000]", NULL);
            return;
        }
        f.max_rate_hz = hz;
    }
    /* No lasers named: all of them. */
    bool any = false;
    for (int k = 0; k < d->cfg.nlasers; k++)
        any = any || f.lasers[k];
    for (int k = 0; k < d->cfg.nlasers && !any; k++)
        f.lasers[k] = true;
    rc = s == NULL ? -ENOTSUP : push_subscribe(&d->push, s, &f, &id);
    if (rc == -EMFILE) {
        rpc_call_errorf(call, RPC_BUSY, NULL, "Too many subscriptions on this connection (max %d)",
                        d->cfg.max_subscriptions);
        return;
    }
    if (rc < 0) {
        rpc_call_errorf(call, RPC_INTERNAL_ERROR, NULL, "Internal error: %s", strerror(-rc));
        return;
    }
    names = json_array();
    for (int k = 0; k < d->cfg.nlasers; k++)
        if (f.lasers[k])
            json_array_append_new(names, json_string(d->cfg.lasers[k].name));
    res = json_pack("{s:I, s:O, s:o, s:o}", "subscription", (json_int_t)id, "topics", topics,
                    "lasers", names, "max_rate_hz",
                    f.max_rate_hz > 0 ? json_real(f.max_rate_hz) : json_null());
    rpc_call_result(call, res);
}

static const char *const unsubscribe_params[] = {"subscription", NULL};

static void m_unsubscribe(struct rpc_call *call, json_t *params, void *ctx) {
    struct daemon *d = ctx;
    json_t *v = json_object_get(params, "subscription");
    struct rpc_session *s = rpc_call_session(call);

    if (!params_only(call, params, unsubscribe_params))
        return;
    if (!json_is_integer(v) || json_integer_value(v) < 1 || s == NULL ||
        push_unsubscribe(&d->push, s, (uint64_t)json_integer_value(v)) < 0) {
        rpc_call_error(call, RPC_INVALID_PARAMS,
                       "Invalid params: \"subscription\" must be one of this connection's", NULL);
        return;
    }
    rpc_call_result(call, json_true());
}

/* Send the payload (a new reference, stolen) as topic t's notification. */
static void push_json(struct daemon *d, enum push_topic t, int laser, const char *method,
                      json_t *payload) {
    char *text = payload ? json_dumps(payload, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;

    json_decref(payload);
    if (text == NULL)
        return;
    push_event(&d->push, t, laser, method, text);
    free(text);
}

void methods_on_reading(struct meter *m, const struct reading *r, void *ctx) {
    struct daemon *d = ctx;
    struct meter_channel *c;
    char buf[READING_TEXT_MAX];
    struct text t = {buf, buf + sizeof(buf)};
    uint64_t now_ns;
    bool to_mqtt;

    lasers_on_reading(m, r, &d->lasers);
    if ((c = meter_channel_find(m, r->channel)) == NULL)
        return;
    now_ns = clock_now_ns(d->clk);
    /* MQTT takes the same text as the reading notifications; its rate
     * limit goes by when the readings were taken. */
    to_mqtt = mqtt_wants_reading(&d->mqtt, (int)(c - m->ch), c->last.t_ns);
    if (!to_mqtt && !push_wanted(&d->push, PUSH_READINGS))
        return;
    reading_text(&t, c, now_ns);
    if (to_mqtt)
        mqtt_publish_reading(&d->mqtt, (int)(c - m->ch), buf, (size_t)(t.p - buf), c->last.t_ns);
    if (push_wanted(&d->push, PUSH_READINGS))
        push_event(&d->push, PUSH_READINGS, (int)(c - m->ch), "reading", buf);
}

/* A lock changed state: the laser's state, why, and where it stands; the
 * lock notifications and MQTT's retained lock topic carry the same text. */
static void on_lock_state(struct laser *l, void *ctx) {
    struct daemon *d = ctx;
    json_t *o = json_pack("{s:s, s:i, s:b, s:s, s:s, s:f, s:o, s:o, s:f}", "laser", l->cfg->name,
                          "channel", l->cfg->channel, "lock", l->lock_on, "state",
                          laser_state_name(l->state), "reason", l->reason, "since", l->since_unix,
                          "error_mhz", num_or_null(l->error_mhz), "output_v",
                          l->output_known ? json_real(l->pid.output_v) : json_null(),
                          "setpoint_thz", l->pid.setpoint_thz);
    char *text;

    /* An autotune's progress rides on the same event (its phases call here). */
    if (o != NULL && l->tune.phase != TUNE_NONE)
        json_object_set_new(o, "autotune", laser_tune_json(l));
    text = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;

    json_decref(o);
    if (text == NULL)
        return;
    mqtt_lock_state(&d->mqtt, (int)(l - d->lasers.l), text, strlen(text));
    if (push_wanted(&d->push, PUSH_LOCKS))
        push_event(&d->push, PUSH_LOCKS, (int)(l - d->lasers.l), "lock", text);
    free(text);
}

static void on_meter_state(struct meter *m, void *ctx) {
    struct daemon *d = ctx;
    json_t *o;

    if (!push_wanted(&d->push, PUSH_STATUS))
        return;
    o = json_pack("{s:s, s:s}", "driver", m->drv->cfg.name, "state", meter_state_name(m));
    if (o && m->state == METER_BACKOFF && m->last_error[0])
        json_object_set_new(o, "error", json_string(m->last_error));
    push_json(d, PUSH_STATUS, -1, "status", o);
}

static void hook_drained(void *ctx, struct rpc_session *s) {
    push_session_drained(&((struct daemon *)ctx)->push, s);
}

static void hook_closed(void *ctx, struct rpc_session *s) {
    push_session_closed(&((struct daemon *)ctx)->push, s);
}

static const struct rpc_method methods[] = {
    {.name = "ping", .fn = m_ping},
    {.name = "version", .fn = m_version},
    {.name = "status", .fn = m_status},
    {.name = "channels", .fn = m_channels},
    {.name = "read", .fn = m_read, .params = read_params},
    {.name = "auth", .fn = m_auth, .params = auth_params},
    {.name = "lasers", .fn = m_lasers},
    {.name = "laser.get", .fn = m_laser_get, .params = laser_params},
    {.name = "laser.set_setpoint", .fn = m_set_setpoint, .params = setpoint_params, .write = true},
    {.name = "laser.lock", .fn = m_lock, .params = laser_params, .write = true},
    {.name = "laser.unlock", .fn = m_unlock, .params = laser_params, .write = true},
    {.name = "laser.set_gains", .fn = m_set_gains, .params = gains_params, .write = true},
    {.name = "laser.set_output", .fn = m_set_output, .params = output_params, .write = true},
    {.name = "laser.autotune", .fn = m_autotune, .params = autotune_params, .write = true},
    {.name = "history", .fn = m_history, .params = history_params},
    {.name = "subscribe", .fn = m_subscribe, .params = subscribe_params},
    {.name = "unsubscribe", .fn = m_unsubscribe, .params = unsubscribe_params},
};

static const struct rpc_method sim_methods[] = {
    {.name = "sim.fault", .fn = m_sim_fault, .params = sim_fault_params, .write = true},
    {.name = "sim.mode_hop", .fn = m_sim_mode_hop, .params = sim_hop_params, .write = true},
    {.name = "sim.disconnect", .fn = m_sim_disconnect, .write = true},
    {.name = "sim.connect", .fn = m_sim_connect, .write = true},
};

static const struct rpc_method *find_extra(void *ctx, const char *name) {
    struct daemon *d = ctx;

    if (!meter_can_simulate(&d->meter))
        return NULL;
    for (size_t i = 0; i < sizeof(sim_methods) / sizeof(sim_methods[0]); i++)
        if (strcmp(sim_methods[i].name, name) == 0)
            return &sim_methods[i];
    return NULL;
}

void methods_init(struct rpc_server *rpc, struct daemon *d) {
    rpc->methods = methods;
    rpc->nmethods = sizeof(methods) / sizeof(methods[0]);
    rpc->ctx = d;
    rpc->max_batch = (size_t)d->cfg.max_batch;
    rpc->find = find_extra;
    rpc->access = (struct rpc_access){
        .write_from = access_write_from,
        /* access.require_token is read at start-up only (a change takes a
         * restart), as the token itself is. */
        .token_ok = d->cfg.require_token ? access_token_ok : NULL,
        .token_path = d->token.path,
        .login_blocked = access_login_blocked,
        .login_failed = access_login_failed,
        .write_rate_per_s = d->cfg.write_rate_per_s,
        .write_burst = d->cfg.write_burst,
        .now_ns = access_now_ns,
        .audit = access_audit,
    };
    rpc->session_drained = hook_drained;
    rpc->session_closed = hook_closed;
}

void methods_listen(struct daemon *d) {
    d->lasers.on_state = on_lock_state;
    d->lasers.state_ctx = d;
    /* Each laser's state as it starts, so MQTT has a retained one for every
     * laser (no client can have subscribed yet: the loop has not run). */
    for (int i = 0; i < d->lasers.n; i++)
        on_lock_state(&d->lasers.l[i], d);
    d->meter.on_state = on_meter_state;
    d->meter.state_ctx = d;
}
