/*
 * methods: the JSON-RPC methods of wavemeterd, their params and results.
 * Translates between JSON and the meter (and later the lasers); holds no
 * state of its own and never sees a socket or a file descriptor.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "daemon.h"
#include "sim.h"

/* Protocol version: the major changes only for incompatible changes. */
#define PROTOCOL_MAJOR 1
#define PROTOCOL_MINOR 0

/* Speed of light, for vacuum wavelengths: lambda_nm = C_NM_THZ / f_thz. */
#define C_NM_THZ 299792.458

static double ns_to_ms(uint64_t ns)
{
    return (double)ns * 1e-6;
}

/* Members not in names (NULL-terminated) are refused with -32602 naming the
 * first one: a typo in a write must never be silently ignored. */
static bool params_only(struct rpc_call *call, json_t *params, const char *const *names)
{
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

/*
 * The channel named by "channel" (number) or "laser" (name). With required
 * false and neither given, *out is NULL and true is returned. On error the
 * call is answered and false returned.
 */
static bool param_channel(struct rpc_call *call, json_t *params, struct daemon *d, bool required,
                          struct meter_channel **out)
{
    json_t *ch = json_object_get(params, "channel");
    json_t *name = json_object_get(params, "laser");

    *out = NULL;
    if (ch && name) {
        rpc_call_error(call, RPC_INVALID_PARAMS, "Invalid params: give \"channel\" or \"laser\", not both", NULL);
        return false;
    }
    if (ch) {
        if (!json_is_integer(ch)) {
            rpc_call_error(call, RPC_INVALID_PARAMS, "Invalid params: \"channel\" must be an integer", NULL);
            return false;
        }
        *out = meter_channel_find(&d->meter, (int)json_integer_value(ch));
        if (*out == NULL) {
            rpc_call_errorf(call, RPC_INVALID_PARAMS, NULL, "Invalid params: no channel %lld",
                            (long long)json_integer_value(ch));
            return false;
        }
        return true;
    }
    if (name) {
        if (!json_is_string(name)) {
            rpc_call_error(call, RPC_INVALID_PARAMS, "Invalid params: \"laser\" must be a string", NULL);
            return false;
        }
        *out = meter_channel_by_name(&d->meter, json_string_value(name));
        if (*out == NULL) {
            rpc_call_errorf(call, RPC_INVALID_PARAMS, NULL, "Invalid params: no laser \"%s\"",
                            json_string_value(name));
            return false;
        }
        return true;
    }
    if (required) {
        rpc_call_error(call, RPC_INVALID_PARAMS, "Invalid params: \"channel\" or \"laser\" is required", NULL);
        return false;
    }
    return true;
}

/* New reference: one reading as clients see it. */
json_t *methods_reading_json(const struct meter_channel *c, uint64_t now_ns)
{
    const struct reading *r = &c->last;
    json_t *o = json_object();

    json_object_set_new(o, "channel", json_integer(c->cfg->channel));
    json_object_set_new(o, "laser", json_string(c->cfg->name));
    if (r->seq == 0) {
        json_object_set_new(o, "status", json_string("error"));
        json_object_set_new(o, "detail", json_string("no reading yet"));
        json_object_set_new(o, "seq", json_integer(0));
        return o;
    }
    json_object_set_new(o, "status", json_string(wm_status_name(r->status)));
    if (r->status == WM_OK) {
        json_object_set_new(o, "frequency_thz", json_real(r->frequency_thz));
        json_object_set_new(o, "wavelength_nm", json_real(C_NM_THZ / r->frequency_thz));
    }
    json_object_set_new(o, "exposure_ms", json_integer(r->exposure_ms));
    json_object_set_new(o, "time", json_real(r->time_unix));
    json_object_set_new(o, "age_ms", json_real(round(ns_to_ms(now_ns - r->t_ns) * 1000) / 1000));
    json_object_set_new(o, "seq", json_integer((json_int_t)r->seq));
    if (r->status == WM_ERROR && r->detail[0])
        json_object_set_new(o, "detail", json_string(r->detail));
    return o;
}

static void m_ping(struct rpc_call *call, json_t *params, void *ctx)
{
    (void)ctx;
    if (params_only(call, params, NULL))
        rpc_call_result(call, json_string("pong"));
}

static void m_version(struct rpc_call *call, json_t *params, void *ctx)
{
    (void)ctx;
    if (!params_only(call, params, NULL))
        return;
    rpc_call_result(call, json_pack("{s:s, s:s, s:{s:i, s:i}}", "name", "wavemeterd", "version",
                                    WMD_VERSION, "protocol", "major", PROTOCOL_MAJOR, "minor",
                                    PROTOCOL_MINOR));
}

static void m_status(struct rpc_call *call, json_t *params, void *ctx)
{
    struct daemon *d = ctx;
    uint64_t now_ns = clock_now_ns(d->clk);
    json_t *chans = json_array();

    if (!params_only(call, params, NULL)) {
        json_decref(chans);
        return;
    }
    for (int i = 0; i < d->meter.nch; i++) {
        const struct meter_channel *c = &d->meter.ch[i];
        json_array_append_new(chans, json_pack("{s:i, s:s, s:I, s:I, s:I}", "channel",
                                               c->cfg->channel, "laser", c->cfg->name, "reads",
                                               (json_int_t)c->reads, "errors",
                                               (json_int_t)c->errors, "not_ok",
                                               (json_int_t)c->not_ok));
    }
    json_t *drv = json_pack("{s:s, s:s}", "name", d->meter.drv->name, "state",
                            meter_state_name(&d->meter));
    if (d->meter.last_error[0])
        json_object_set_new(drv, "error", json_string(d->meter.last_error));
    rpc_call_result(
        call, json_pack("{s:f, s:o, s:f, s:o, s:i, s:{s:f, s:f}, s:i, s:i}", "uptime_s",
                        ns_to_ms(now_ns - d->start_ns) / 1000.0, "driver", drv, "cycle_ms",
                        ns_to_ms(d->meter.last_cycle_ns), "channels", chans, "clients",
                        d->server.nclients, "loop_lag_ms", "last", d->lag_last_ms, "max",
                        d->lag_max_ms, "pool_jobs", meter_busy(&d->meter) ? 1 : 0,
                        "threadpool_size", d->cfg.threadpool_size));
}

static void m_channels(struct rpc_call *call, json_t *params, void *ctx)
{
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

static void m_read(struct rpc_call *call, json_t *params, void *ctx)
{
    struct daemon *d = ctx;
    struct meter_channel *c;
    uint64_t now_ns = clock_now_ns(d->clk);
    json_t *a;

    if (!params_only(call, params, read_params) || !param_channel(call, params, d, false, &c))
        return;
    if (c) {
        rpc_call_result(call, methods_reading_json(c, now_ns));
        return;
    }
    a = json_array();
    for (int i = 0; i < d->meter.nch; i++)
        json_array_append_new(a, methods_reading_json(&d->meter.ch[i], now_ns));
    rpc_call_result(call, a);
}

/* sim.* methods: present only when the simulator is the driver. */

static const char *const sim_fault_params[] = {"channel", "laser", "fault", NULL};

static void m_sim_fault(struct rpc_call *call, json_t *params, void *ctx)
{
    struct daemon *d = ctx;
    struct meter_channel *c;
    json_t *f = json_object_get(params, "fault");
    enum sim_fault fault;

    if (!params_only(call, params, sim_fault_params) || !param_channel(call, params, d, true, &c))
        return;
    if (!json_is_string(f) || sim_fault_parse(json_string_value(f), &fault) != 0) {
        rpc_call_error(call, RPC_INVALID_PARAMS,
                       "Invalid params: \"fault\" must be one of none, no_signal, underexposed, "
                       "overexposed",
                       NULL);
        return;
    }
    sim_set_fault(d->meter.dev, c->cfg->channel, fault);
    rpc_call_result(call, json_true());
}

static const char *const sim_hop_params[] = {"channel", "laser", "jump_mhz", NULL};

static void m_sim_mode_hop(struct rpc_call *call, json_t *params, void *ctx)
{
    struct daemon *d = ctx;
    struct meter_channel *c;
    json_t *j = json_object_get(params, "jump_mhz");

    if (!params_only(call, params, sim_hop_params) || !param_channel(call, params, d, true, &c))
        return;
    if (!json_is_number(j) || !isfinite(json_number_value(j))) {
        rpc_call_error(call, RPC_INVALID_PARAMS, "Invalid params: \"jump_mhz\" must be a number",
                       NULL);
        return;
    }
    sim_mode_hop(d->meter.dev, c->cfg->channel, json_number_value(j));
    rpc_call_result(call, json_true());
}

static void sim_connect(struct rpc_call *call, json_t *params, void *ctx, bool connected)
{
    struct daemon *d = ctx;

    if (!params_only(call, params, NULL))
        return;
    sim_set_connected(d->meter.dev, connected);
    rpc_call_result(call, json_true());
}

static void m_sim_disconnect(struct rpc_call *call, json_t *params, void *ctx)
{
    sim_connect(call, params, ctx, false);
}

static void m_sim_connect(struct rpc_call *call, json_t *params, void *ctx)
{
    sim_connect(call, params, ctx, true);
}

static const struct rpc_method methods[] = {
    {.name = "ping", .fn = m_ping},
    {.name = "version", .fn = m_version},
    {.name = "status", .fn = m_status},
    {.name = "channels", .fn = m_channels},
    {.name = "read", .fn = m_read, .params = read_params},
};

static const struct rpc_method sim_methods[] = {
    {.name = "sim.fault", .fn = m_sim_fault, .params = sim_fault_params},
    {.name = "sim.mode_hop", .fn = m_sim_mode_hop, .params = sim_hop_params},
    {.name = "sim.disconnect", .fn = m_sim_disconnect},
    {.name = "sim.connect", .fn = m_sim_connect},
};

static const struct rpc_method *find_extra(void *ctx, const char *name)
{
    struct daemon *d = ctx;

    if (d->meter.drv != &sim_driver)
        return NULL;
    for (size_t i = 0; i < sizeof(sim_methods) / sizeof(sim_methods[0]); i++)
        if (strcmp(sim_methods[i].name, name) == 0)
            return &sim_methods[i];
    return NULL;
}

void methods_init(struct rpc_server *rpc, struct daemon *d)
{
    rpc->methods = methods;
    rpc->nmethods = sizeof(methods) / sizeof(methods[0]);
    rpc->ctx = d;
    rpc->max_batch = (size_t)d->cfg.max_batch;
    rpc->find = find_extra;
}
