/*
 * config: the built-in defaults and the JSON loader. Every key the file may
 * hold is one row in one static table per object kind (redis config.c style):
 * name, type, where it lands in the struct, bounds and a one-line doc. The
 * loader reads, validates and reports; it must not log, keep globals or start
 * anything, because --check-config and reloads run it too.
 */
#include "config.h"

#include "jsonpos.h"
#include "mqtt_out.h"
#include "wavemeter.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* A config file is a few kilobytes; a megabyte means the wrong file, and the
 * cap keeps a mistaken path (a log, a device) from being read into memory. */
#define CONFIG_FILE_MAX_BYTES (1024 * 1024)

/* A laser without a sim nominal or setpoint sits at the Rb D2 line: some
 * frequency is needed for the simulator, and 780 nm is the most common lab
 * laser. Real lasers should always set setpoint_thz. */
#define LASER_DEFAULT_NOMINAL_THZ 384.23
/* "Not in the file, follows another key": no JSON number is NaN. */
#define UNSET ((double)NAN)
/* Default allowed setpoint range each side of the setpoint: 1 GHz. */
#define LASER_DEFAULT_RANGE_THZ 0.001
/* Only the sign of the sensitivity reaches the loop (the gains are in V per
 * MHz); + is the common case, a piezo that raises the frequency. */
#define LASER_DEFAULT_SENSITIVITY_MHZ_PER_V 50.0

/* The loader's private row types beyond cfgkey.h: which kind of driver a
 * CFG_DRIVER row picks from (its max field). */
enum drv_kind { DRV_WAVEMETER, DRV_ACTUATOR, DRV_SWITCH };

#define C struct config
#define L struct laser_config
/* A row for an object whose "driver" picks the rest of its keys: the
 * settings land in field f (a struct drv_settings), the generic keys g (with
 * offsets from the same base) are read as well. */
#define ROW_DRIVER(n, s, f, g, kind, d)                                                            \
    { n, CFG_DRIVER, CFG_FIELD(s, f), 0, kind, NULL, g, 0, d }

static const char *const log_levels[] = {"debug", "info", "notice", "warning", "error", NULL};
/* Indexed by enum restart_policy. */
static const char *const restart_names[] = {"resume", "release", "off", NULL};
/* Indexed by enum lost_action and enum large_step. */
static const char *const lost_action_names[] = {"park", "hold", NULL};
static const char *const large_step_names[] = {"ramp", "refuse", NULL};

static const struct cfg_key limits_keys[] = {
    CFG_ROW_INT("max_line_bytes", C, max_line_bytes, 1024, 16777216,
                "longest request line in bytes; longer lines get an error and are dropped"),
    CFG_ROW_INT("max_clients", C, max_clients, 1, 4096, "connections served at once"),
    CFG_ROW_INT("max_clients_per_address", C, max_clients_per_address, 1, 4096,
                "connections served at once from one address (loopback included)"),
    CFG_ROW_INT("max_batch", C, max_batch, 1, 10000, "requests in one JSON-RPC batch"),
    CFG_ROW_INT("idle_timeout_s", C, idle_timeout_s, 1, 604800,
                "a connection silent this long is closed, in s"),
    CFG_ROW_INT("write_queue_max_bytes", C, write_queue_max_bytes, 65536, 1073741824,
                "unsent bytes queued to one client before it is dropped"),
    CFG_ROW_INT("answer_memory_max_bytes", C, answer_memory_max_bytes, 1048576, 1073741824,
                "answers all clients together may have outstanding, in bytes"),
    CFG_ROW_INT("write_stall_timeout_s", C, write_stall_timeout_s, 1, 3600,
                "a client that reads nothing for this long while output waits is dropped, in s"),
    CFG_ROW_INT("line_timeout_s", C, line_timeout_s, 1, 3600,
                "a request line once begun must end (newline) within this, in s"),
    CFG_ROW_INT("push_soft_bytes", C, push_soft_bytes, 4096, 1073741824,
                "unread output above which a client's notifications are coalesced: the newest "
                "per subscription and laser waits, the rest are counted as missed, in bytes"),
    CFG_ROW_INT("max_subscriptions", C, max_subscriptions, 1, 256,
                "subscriptions one connection may hold"),
    CFG_ROW_DBL("write_rate_per_s", C, write_rate_per_s, 0.01, 100000,
                "write methods one connection may call per second, on average (-32004 beyond)"),
    CFG_ROW_DBL("write_burst", C, write_burst, 1, 1000000,
                "write methods one connection may call at once before write_rate_per_s applies"),
    CFG_ROW_END,
};

static const struct cfg_key state_keys[] = {
    CFG_ROW_STR("dir", C, state_dir, "directory for the state file ($STATE_DIRECTORY wins)"),
    CFG_ROW_DBL("save_interval_s", C, state_save_interval_s, 0.1, 3600,
                "how often changed state is written, in s"),
    CFG_ROW_END,
};

static const struct cfg_key access_keys[] = {
    {"write_from", CFG_NETS, CFG_FIELD(C, write_from), 0, ACL_MAX, NULL, NULL, 0,
     "networks whose clients may use write methods, e.g. [\"127.0.0.0/8\", \"10.1.0.0/16\"]"},
    CFG_ROW_BOOL("require_token", C, require_token,
                 "write methods also need the auth method with the token first"),
    {"token_file", CFG_STRING, CFG_FIELD(C, token_file), 0, 0, NULL, NULL, 0,
     "file holding the token; empty: a new cookie in the state directory at each start"},
    CFG_ROW_END,
};

static const struct cfg_key mqtt_keys[] = {
    CFG_ROW_BOOL("enabled", C, mqtt.enabled, "publish readings and lock states to a broker"),
    CFG_ROW_STR("host", C, mqtt.host, "broker host name or numeric address"),
    CFG_ROW_INT("port", C, mqtt.port, 1, 65535, "broker TCP port; default 1883, 8883 with tls"),
    CFG_ROW_STR("client_id", C, mqtt.client_id, "MQTT client id; default wavemeterd-HOSTNAME"),
    CFG_ROW_STR("topic_prefix", C, mqtt.topic_prefix, "the first topic level(s)"),
    CFG_ROW_STR("username", C, mqtt.username, "broker login; none without"),
    CFG_ROW_STR("password_file", C, mqtt.password_file,
                "file holding the password (first line), not readable by others"),
    CFG_ROW_BOOL("tls", C, mqtt.tls, "TLS to the broker, its certificate checked"),
    CFG_ROW_STR("tls_cafile", C, mqtt.tls_cafile,
                "CA certificates (PEM) the broker's chain ends in"),
    CFG_ROW_STR("tls_capath", C, mqtt.tls_capath, "directory of hashed CA certificates"),
    CFG_ROW_STR("tls_certfile", C, mqtt.tls_certfile, "client certificate chain (PEM)"),
    CFG_ROW_STR("tls_keyfile", C, mqtt.tls_keyfile, "client private key (PEM, unencrypted)"),
    CFG_ROW_INT("qos", C, mqtt.qos, 0, 2, "MQTT quality of service of every message"),
    CFG_ROW_DBL("readings_max_rate_hz", C, mqtt.readings_max_rate_hz, 0, 1000,
                "readings published per laser and second at most; 0 = every reading"),
    CFG_ROW_INT("keepalive_s", C, mqtt.keepalive_s, 5, 3600,
                "MQTT keep-alive; a silent broker is dropped after 1.5 times this, in s"),
    CFG_ROW_INT("connect_timeout_s", C, mqtt.connect_timeout_s, 1, 300,
                "a connection attempt (TCP, TLS, CONNACK) succeeds or is dropped by then, in s"),
    CFG_ROW_INT("queue_max", C, mqtt.queue_max, 16, 1000000,
                "readings waiting for the broker; beyond, the oldest are dropped"),
    CFG_ROW_END,
};

static const struct cfg_key http_keys[] = {
    {"listen", CFG_STRING, CFG_FIELD(C, http.listen), 0, 0, NULL, NULL, 0,
     "HTTP and WebSocket address (the page, /ws, /metrics), \"HOST:PORT\" or "
     "\"[IPv6]:PORT\"; \"\" = off"},
    CFG_ROW_STR("www_dir", C, http.www_dir, "absolute directory of the page's files (/, /NAME)"),
    CFG_ROW_STR("dygraphs_dir", C, http.dygraphs_dir,
                "absolute directory /dygraphs/NAME serves (Debian's libjs-dygraphs)"),
    CFG_ROW_END,
};

/* The keys every switch takes; the driver's own (its port) come with it. */
static const struct cfg_key switch_keys[] = {
    CFG_ROW_INT("input", C, sw.input, 1, CONFIG_MAX_LASERS,
                "the wavemeter channel the switch's output fibre is plugged into"),
    CFG_ROW_INT("settle_ms", C, sw.settle_ms, 0, 10000,
                "wait after the switch confirmed a channel before exposing, in ms"),
    CFG_ROW_INT("timeout_ms", C, sw.timeout_ms, 10, 60000,
                "selecting and confirming a channel finish or fail by then, in ms"),
    CFG_ROW_END,
};

/* The keys every wavemeter takes; "driver" picks the table for the rest. */
static const struct cfg_key wavemeter_keys[] = {
    CFG_ROW_INT("read_timeout_ms", C, read_timeout_ms, 100, 60000,
                "one reading finishes or fails by then, in ms"),
    CFG_ROW_INT("monitor_period_ms", C, monitor_period_ms, 10, 3600000,
                "lasers no lock uses are read this often (unless max_age_ms), in ms"),
    ROW_DRIVER("switch", C, sw.drv, switch_keys, DRV_SWITCH,
               "an external fibre switch in front of the wavemeter"),
    CFG_ROW_END,
};

static const struct cfg_key actuator_keys[] = {
    CFG_ROW_INT("timeout_ms", L, actuator.timeout_ms, 10, 60000,
                "every actuator write finishes or fails by then, in ms"),
    CFG_ROW_END,
};

static const struct cfg_key laser_keys[] = {
    {"name", CFG_NAME, CFG_FIELD(L, name), 1, 0, NULL, NULL, CFG_REQUIRED,
     "unique name used by clients, 1 to 31 of A-Z a-z 0-9 _ . -"},
    {"channel", CFG_INT, CFG_FIELD(L, channel), 1, CONFIG_MAX_LASERS, NULL, NULL, CFG_REQUIRED,
     "wavemeter channel, 1-based, unique"},
    CFG_ROW_INT("exposure_ms", L, exposure_ms, 1, 10000, "exposure time, in ms"),
    CFG_ROW_INT("settle_ms", L, settle_ms, 0, 10000,
                "wait after switching to the channel before exposing, in ms"),
    CFG_ROW_BOOL("enabled", L, enabled, "measure this channel"),
    CFG_ROW_INT("max_age_ms", L, max_age_ms, 0, 3600000,
                "read this laser at least this often, in ms; 0: as often as possible while a "
                "lock uses it, else every wavemeter.monitor_period_ms"),
    ROW_DRIVER("actuator", L, actuator.drv, actuator_keys, DRV_ACTUATOR,
               "what the lock drives; \"none\" or no block (with a real wavemeter): monitor only"),
    CFG_ROW_DBL("setpoint_thz", L, setpoint_thz, 1, 2000, "lock setpoint at start, in THz"),
    CFG_ROW_DBL("min_thz", L, min_thz, 1, 2000, "lowest setpoint a client may ask for, in THz"),
    CFG_ROW_DBL("max_thz", L, max_thz, 1, 2000, "highest setpoint a client may ask for, in THz"),
    CFG_ROW_DBL("kp_v_per_mhz", L, kp_v_per_mhz, 0, CONFIG_GAIN_MAX, "proportional gain, in V/MHz"),
    CFG_ROW_DBL("ki_v_per_mhz_s", L, ki_v_per_mhz_s, 0, CONFIG_GAIN_MAX,
                "integral gain, in V/(MHz s)"),
    CFG_ROW_DBL("kd_v_s_per_mhz", L, kd_v_s_per_mhz, 0, CONFIG_GAIN_MAX,
                "derivative gain, in V s/MHz; 0 = off"),
    CFG_ROW_DBL("sensitivity_mhz_per_v", L, sensitivity_mhz_per_v, -1000000, 1000000,
                "actuator sensitivity, signed, in MHz/V; its sign sets the loop sign, 0 = +"),
    CFG_ROW_DBL("output_min_v", L, output_min_v, -1000, 1000, "lowest actuator output, in V"),
    CFG_ROW_DBL("output_max_v", L, output_max_v, -1000, 1000, "highest actuator output, in V"),
    CFG_ROW_DBL("output_initial_v", L, output_initial_v, -1000, 1000,
                "output at first start, in V"),
    CFG_ROW_DBL("slew_v_per_s", L, slew_v_per_s, 0, 1000000,
                "fastest output change, in V/s; 0 = unlimited"),
    CFG_ROW_DBL("ramp_mhz_per_s", L, ramp_mhz_per_s, 0, CONFIG_RAMP_MAX_MHZ_PER_S,
                "default rate for setpoint changes, in MHz/s; 0 = step"),
    CFG_ROW_DBL("capture_mhz", L, capture_mhz, 0.001, 1000000,
                "|error| beyond this counts toward lost, in MHz"),
    CFG_ROW_DBL("tolerance_mhz", L, tolerance_mhz, 0.001, 1000000,
                "|error| within this counts toward locked, in MHz"),
    CFG_ROW_INT("locked_after", L, locked_after, 1, 10000,
                "readings in a row within tolerance before \"locked\""),
    CFG_ROW_INT("lost_after", L, lost_after, 1, 10000,
                "readings in a row beyond capture before \"lost\""),
    CFG_ROW_DBL("rail_timeout_s", L, rail_timeout_s, 0.1, 86400,
                "output on a limit this long means lost, in s"),
    CFG_ROW_DBL("acquire_timeout_s", L, acquire_timeout_s, 1, 86400,
                "locked but not \"locked\" this long: the reason says why, in s"),
    CFG_ROW_DBL("max_gap_s", L, max_gap_s, 0.01, 3600,
                "a longer gap between readings freezes the integrator, in s"),
    CFG_ROW_DBL("stale_s", L, stale_s, 0.01, 3600,
                "a reading older than this never reaches the loop, in s"),
    {"restart", CFG_CHOICE, CFG_FIELD(L, restart), 0, 0, restart_names, NULL, 0,
     "with saved state: relock, hold the output unlocked, or start afresh"},
    CFG_ROW_BOOL("auto_relock", L, auto_relock, "try to lock again after lost"),
    {"lost_action", CFG_CHOICE, CFG_FIELD(L, lost_action), 0, 0, lost_action_names, NULL, 0,
     "after lost: output back to where it was last locked, or held"},
    {"large_step", CFG_CHOICE, CFG_FIELD(L, large_step), 0, 0, large_step_names, NULL, 0,
     "a setpoint change beyond capture_mhz while locked: ramped, or refused"},
    CFG_ROW_DBL("large_step_rate_mhz_per_s", L, large_step_rate_mhz_per_s, 0.001,
                CONFIG_RAMP_MAX_MHZ_PER_S, "rate of a large setpoint change's ramp, in MHz/s"),
    CFG_ROW_INT("relock_attempts", L, relock_attempts, 0, 1000,
                "relock tries after lost before giving up"),
    CFG_ROW_DBL("relock_delay_s", L, relock_delay_s, 0, 3600,
                "wait after lost before each relock attempt, in s"),
    CFG_ROW_INT("history_depth", L, history_depth, 1, 1000000, "readings kept for clients"),
    CFG_ROW_BOOL("lock", L, lock, "lock at first start (no state file yet)"),
    CFG_ROW_END,
};

static const struct cfg_key top_keys[] = {
    {"listen", CFG_LISTEN, 0, 0, 0, 0, NULL, NULL, 0,
     "TCP address for JSON-RPC, \"HOST:PORT\" or \"[IPv6]:PORT\""},
    CFG_ROW_ENUM("log_level", C, log_level, log_levels, "least severe message logged"),
    CFG_ROW_INT("threadpool_size", C, threadpool_size, 1, 1024,
                "libuv worker threads (UV_THREADPOOL_SIZE)"),
    CFG_ROW_OBJ("limits", limits_keys, "client and protocol limits"),
    CFG_ROW_OBJ("state", state_keys, "where lock state survives restarts"),
    CFG_ROW_OBJ("access", access_keys, "who may change things"),
    CFG_ROW_OBJ("mqtt", mqtt_keys, "publishing to an MQTT broker (off by default)"),
    CFG_ROW_OBJ("http", http_keys, "the web page, /ws and /metrics (off by default)"),
    ROW_DRIVER("wavemeter", C, wavemeter, wavemeter_keys, DRV_WAVEMETER, "the instrument"),
    {"lasers", CFG_LASERS, 0, 0, 1, CONFIG_MAX_LASERS, NULL, NULL, 0,
     "the channels; replaces the built-in lasers"},
    CFG_ROW_END,
};

#undef C
#undef L

/* For config_foreach_key: every table with the path prefix its keys have. */
static const struct {
    const char *section;
    const struct cfg_key *keys;
} sections[] = {
    {"", top_keys},
    {"limits", limits_keys},
    {"state", state_keys},
    {"access", access_keys},
    {"mqtt", mqtt_keys},
    {"http", http_keys},
    {"wavemeter", wavemeter_keys},
    {"wavemeter.switch", switch_keys},
    {"lasers[]", laser_keys},
    {"lasers[].actuator", actuator_keys},
};

/* wavemeter.switch.key and lasers[i].sim.key are the deepest paths. */
#define LOADER_MAX_DEPTH 4

struct loader {
    const char *name; /* file name for messages */
    const char *text;
    size_t len;
    char *err;
    size_t errlen;
    struct jsonpos_step path[LOADER_MAX_DEPTH];
    size_t depth;
    const struct wm_driver *wm; /* the wavemeter driver, read before the lasers */
};

static void copy_string(char *dst, size_t size, const char *src) {
    size_t n = strlen(src);
    if (n >= size)
        n = size - 1;
    /* Zero the whole field so equal configs are equal byte for byte. */
    memset(dst, 0, size);
    memcpy(dst, src, n);
}

static void path_push_key(struct loader *ld, const char *key) {
    ld->path[ld->depth].key = key;
    ld->path[ld->depth].index = 0;
    ld->depth++;
}

static void path_push_index(struct loader *ld, size_t index) {
    ld->path[ld->depth].key = NULL;
    ld->path[ld->depth].index = index;
    ld->depth++;
}

/* The path as people read it: lasers[1].sim.noise_mhz. A key from the file
 * may hold anything; quotes, backslashes and control characters become '?'
 * so the message stays one readable line. */
static void path_format(const struct loader *ld, char *buf, size_t size) {
    size_t n = 0;

    buf[0] = '\0';
    for (size_t d = 0; d < ld->depth && n + 1 < size; d++) {
        if (ld->path[d].key == NULL) {
            int w = snprintf(buf + n, size - n, "[%zu]", ld->path[d].index);
            n += w < 0 ? 0 : (size_t)w;
            if (n >= size)
                n = size - 1;
            continue;
        }
        if (d > 0)
            buf[n++] = '.';
        for (const char *k = ld->path[d].key; *k != '\0' && n + 1 < size; k++) {
            unsigned char c = (unsigned char)*k;
            buf[n++] = (c < 0x20 || c == 0x7f || c == '"' || c == '\\') ? '?' : (char)c;
        }
        buf[n] = '\0';
    }
}

/* Write "FILE:LINE:COL: key "PATH": reason" for the current path and return
 * -EINVAL. A key that is not in the file (a default that fails a cross
 * check, a missing required key) is reported at its closest ancestor. */
__attribute__((format(printf, 2, 3))) static int fail(struct loader *ld, const char *fmt, ...) {
    char path[192], reason[320];
    struct jsonpos pos;
    va_list ap;

    if (ld->err == NULL || ld->errlen == 0)
        return -EINVAL;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    (void)jsonpos_find(ld->text, ld->len, ld->path, ld->depth, &pos);
    path_format(ld, path, sizeof(path));
    snprintf(ld->err, ld->errlen, "%s:%d:%d: key \"%s\": %s", ld->name, pos.line, pos.column, path,
             reason);
    return -EINVAL;
}

static int fail_enum(struct loader *ld, const char *const *values) {
    char list[160];
    size_t n = 0;

    list[0] = '\0';
    for (size_t i = 0; values[i] != NULL && n < sizeof(list); i++) {
        int w = snprintf(list + n, sizeof(list) - n, "%s\"%s\"", i > 0 ? ", " : "", values[i]);
        n += w < 0 ? 0 : (size_t)w;
    }
    return fail(ld, "must be one of %s", list);
}

static int find_value(const char *const *values, const char *s) {
    for (int i = 0; values[i] != NULL; i++) {
        if (strcmp(values[i], s) == 0)
            return i;
    }
    return -1;
}

static bool name_valid(const char *s, size_t len, size_t size) {
    if (len == 0 || len >= size)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

/* "127.0.0.1:7420", "[::1]:7420". Numeric addresses only: the server binds
 * with uv_ip4_addr/uv_ip6_addr, and a name that resolves differently on
 * another day should not move the control port. */
static int split_listen(const char *s, char *host_out, size_t host_size, int *port_out) {
    const char *host, *colon;
    size_t hostlen;
    char buf[64];
    unsigned char addr[16];
    long port = 0;
    int family;

    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':')
            return -EINVAL;
        host = s + 1;
        hostlen = (size_t)(close - host);
        colon = close + 1;
        family = AF_INET6;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL)
            return -EINVAL;
        host = s;
        hostlen = (size_t)(colon - s);
        family = AF_INET;
    }
    if (hostlen == 0 || hostlen >= sizeof(buf))
        return -EINVAL;
    memcpy(buf, host, hostlen);
    buf[hostlen] = '\0';
    if (inet_pton(family, buf, addr) != 1)
        return -EINVAL;
    if (colon[1] == '\0' || strlen(colon + 1) > 5)
        return -EINVAL;
    for (const char *p = colon + 1; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return -EINVAL;
        port = port * 10 + (*p - '0');
    }
    if (port > 65535 || hostlen >= host_size)
        return -EINVAL;
    copy_string(host_out, host_size, buf);
    *port_out = (int)port;
    return 0;
}

int config_set_listen(struct config *cfg, const char *s) {
    char host[sizeof(cfg->listen_host)];
    int port;

    if (split_listen(s, host, sizeof(host), &port) != 0)
        return -EINVAL;
    copy_string(cfg->listen_host, sizeof(cfg->listen_host), host);
    cfg->listen_port = port;
    return 0;
}

int config_set_http_listen(struct config *cfg, const char *s) {
    char host[sizeof(cfg->http.host)];
    int port = 0;

    if (strlen(s) >= sizeof(cfg->http.listen))
        return -EINVAL;
    if (s[0] == '\0')
        host[0] = '\0';
    else if (split_listen(s, host, sizeof(host), &port) != 0)
        return -EINVAL;
    copy_string(cfg->http.listen, sizeof(cfg->http.listen), s);
    copy_string(cfg->http.host, sizeof(cfg->http.host), host);
    cfg->http.port = port;
    return 0;
}

static int parse_listen(struct loader *ld, json_t *v, struct config *cfg) {
    if (json_is_string(v) && config_set_listen(cfg, json_string_value(v)) == 0)
        return 0;
    return fail(ld, "must be \"ADDRESS:PORT\" with a numeric address and PORT in [0, 65535], "
                    "e.g. \"127.0.0.1:7420\" or \"[::1]:7420\"");
}

static int parse_object(struct loader *ld, const struct cfg_key *table, json_t *obj, void *base);
static int parse_lasers(struct loader *ld, const struct cfg_key *row, json_t *v,
                        struct config *cfg);
static int parse_nets(struct loader *ld, const struct cfg_key *row, json_t *v, struct acl *acl);
static int parse_driver_object(struct loader *ld, const struct cfg_key *row, json_t *obj,
                               void *base);

/* Check one value against its row and store it at base + row->offset. */
static int parse_value(struct loader *ld, const struct cfg_key *row, json_t *v, void *base) {
    char *field = (char *)base + row->offset;

    switch (row->type) {
    case CFG_INT: {
        json_int_t x = json_is_integer(v) ? json_integer_value(v) : 0;
        if (!json_is_integer(v) || x < (json_int_t)row->min || x > (json_int_t)row->max)
            return fail(ld, "must be an integer in [%.0f, %.0f]", row->min, row->max);
        *(int *)(void *)field = (int)x;
        return 0;
    }
    case CFG_UINT64:
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return fail(ld, "must be an integer in [0, %" PRId64 "]", INT64_MAX);
        *(uint64_t *)(void *)field = (uint64_t)json_integer_value(v);
        return 0;
    case CFG_DOUBLE: {
        /* jansson reads 2 as an integer; a number key takes either. */
        double x = json_is_number(v) ? json_number_value(v) : (double)NAN;
        if (!(x >= row->min && x <= row->max))
            return fail(ld, "must be a number in [%.15g, %.15g]", row->min, row->max);
        *(double *)(void *)field = x;
        return 0;
    }
    case CFG_BOOL:
        if (!json_is_boolean(v))
            return fail(ld, "must be true or false");
        *(bool *)(void *)field = json_is_true(v);
        return 0;
    case CFG_STRING:
        if (!json_is_string(v) || json_string_length(v) < (size_t)row->min ||
            json_string_length(v) >= row->size)
            return fail(ld, "must be a string of %.0f to %zu bytes", row->min, row->size - 1);
        copy_string(field, row->size, json_string_value(v));
        return 0;
    case CFG_NAME:
        if (!json_is_string(v) ||
            !name_valid(json_string_value(v), json_string_length(v), row->size))
            return fail(ld, "must be 1 to %zu characters of A-Z a-z 0-9 _ . -", row->size - 1);
        copy_string(field, row->size, json_string_value(v));
        return 0;
    case CFG_ENUM:
        if (!json_is_string(v) || find_value(row->values, json_string_value(v)) < 0)
            return fail_enum(ld, row->values);
        copy_string(field, row->size, json_string_value(v));
        return 0;
    case CFG_CHOICE: {
        int i = json_is_string(v) ? find_value(row->values, json_string_value(v)) : -1;
        if (i < 0)
            return fail_enum(ld, row->values);
        *(int *)(void *)field = i;
        return 0;
    }
    case CFG_DRIVER:
        return parse_driver_object(ld, row, v, base);
    case CFG_OBJECT:
        return parse_object(ld, row->sub, v, base);
    case CFG_LISTEN:
        return parse_listen(ld, v, base);
    case CFG_LASERS:
        return parse_lasers(ld, row, v, base);
    case CFG_NETS:
        return parse_nets(ld, row, v, (struct acl *)(void *)field);
    }
    return fail(ld, "internal error: bad key type");
}

static const struct cfg_key *key_find(const struct cfg_key *table, const char *name) {
    for (const struct cfg_key *k = table; k->name != NULL; k++) {
        if (strcmp(k->name, name) == 0)
            return k;
    }
    return NULL;
}

/* Members are checked in file order, so the first error is the first one a
 * reader meets (jansson keeps insertion order). */
static int parse_object(struct loader *ld, const struct cfg_key *table, json_t *obj, void *base) {
    const char *name;
    json_t *v;
    int r;

    if (!json_is_object(obj))
        return fail(ld, "must be an object");
    json_object_foreach(obj, name, v) {
        const struct cfg_key *row = key_find(table, name);
        if (table == top_keys && strcmp(name, "wavemeter") == 0)
            continue; /* read first, by config_parse: the lasers depend on it */
        path_push_key(ld, name);
        if (row == NULL && table == laser_keys && ld->wm->chan.name != NULL &&
            strcmp(name, ld->wm->chan.name) == 0) {
            /* The wavemeter driver's per-laser section (lasers[].sim). */
            r = parse_object(ld, ld->wm->chan.keys, v,
                             ((struct laser_config *)base)->meter.u.bytes);
            if (r < 0)
                return r;
            ld->depth--;
            continue;
        }
        if (row == NULL && table == laser_keys) {
            const struct wm_driver *o;
            for (size_t i = 0; (o = wm_driver_at(i)) != NULL; i++)
                if (o->chan.name != NULL && strcmp(name, o->chan.name) == 0)
                    return fail(ld,
                                "is only read with wavemeter driver \"%s\" (this file has \"%s\")",
                                o->cfg.name, ld->wm->cfg.name);
        }
        if (row == NULL)
            return fail(ld, "unknown key");
        r = parse_value(ld, row, v, base);
        if (r < 0)
            return r;
        ld->depth--;
    }
    for (const struct cfg_key *k = table; k->name != NULL; k++) {
        if ((k->flags & CFG_REQUIRED) && json_object_get(obj, k->name) == NULL) {
            path_push_key(ld, k->name);
            return fail(ld, "is required");
        }
    }
    return 0;
}

/* A driver's settings: its name and its defaults, everything else zero (so
 * equal configs are equal byte for byte). d NULL: no driver. */
static void settings_reset(struct drv_settings *ds, const struct cfg_driver *d) {
    memset(ds, 0, sizeof(*ds));
    if (d == NULL)
        return;
    copy_string(ds->driver, sizeof(ds->driver), d->name);
    if (d->defaults)
        d->defaults(ds->u.bytes);
}

/* Per-laser defaults. The keys whose default follows another key start as
 * NAN, which no JSON number can be, and laser_resolve fills them in. */
static void laser_template(struct laser_config *l, const struct wm_driver *wm) {
    const struct act_driver *act =
        wm->default_actuator ? act_driver_find(wm->default_actuator) : NULL;

    memset(l, 0, sizeof(*l));
    l->exposure_ms = 20;
    l->settle_ms = 30;
    l->enabled = true;
    settings_reset(&l->meter, wm->chan.name ? &wm->chan : NULL);
    settings_reset(&l->actuator.drv, act ? &act->cfg : NULL);
    l->actuator.timeout_ms = 1000;
    l->setpoint_thz = UNSET;
    l->min_thz = UNSET;
    l->max_thz = UNSET;
    l->kp_v_per_mhz = 0.002;
    l->ki_v_per_mhz_s = 0.05;
    l->kd_v_s_per_mhz = 0;
    l->sensitivity_mhz_per_v = UNSET;
    l->output_min_v = -10;
    l->output_max_v = 10;
    l->output_initial_v = 0;
    l->slew_v_per_s = 5;
    l->ramp_mhz_per_s = 0;
    l->capture_mhz = 500;
    l->tolerance_mhz = 2;
    l->locked_after = 5;
    l->lost_after = 5;
    l->rail_timeout_s = 10;
    l->acquire_timeout_s = 30;
    l->max_gap_s = 5;
    l->stale_s = 2;
    l->restart = RESTART_RESUME;
    l->auto_relock = false;
    l->lost_action = LOST_PARK;
    l->large_step = LARGE_STEP_RAMP;
    l->large_step_rate_mhz_per_s = 100;
    l->relock_attempts = 3;
    l->relock_delay_s = 2;
    l->history_depth = 1000;
    l->lock = false;
}

static void laser_resolve(struct laser_config *l, const struct wm_driver *wm) {
    if (wm->chan_resolve)
        wm->chan_resolve(l->meter.u.bytes, l);
    if (isnan(l->setpoint_thz))
        l->setpoint_thz = LASER_DEFAULT_NOMINAL_THZ;
    if (isnan(l->min_thz))
        l->min_thz = l->setpoint_thz - LASER_DEFAULT_RANGE_THZ;
    if (isnan(l->max_thz))
        l->max_thz = l->setpoint_thz + LASER_DEFAULT_RANGE_THZ;
    if (isnan(l->sensitivity_mhz_per_v))
        l->sensitivity_mhz_per_v = LASER_DEFAULT_SENSITIVITY_MHZ_PER_V;
}

/* ---- driver-owned keys ---- */

static const char *const kind_names[] = {
    [DRV_WAVEMETER] = "wavemeter",
    [DRV_ACTUATOR] = "actuator",
    [DRV_SWITCH] = "switch",
};

/* The i-th driver of a kind's table, NULL past the end. */
static const struct cfg_driver *kind_at(enum drv_kind kind, size_t i) {
    const struct wm_driver *w;
    const struct act_driver *a;
    const struct sw_driver *sw;

    switch (kind) {
    case DRV_WAVEMETER:
        return (w = wm_driver_at(i)) != NULL ? &w->cfg : NULL;
    case DRV_ACTUATOR:
        return (a = act_driver_at(i)) != NULL ? &a->cfg : NULL;
    case DRV_SWITCH:
        return (sw = sw_driver_at(i)) != NULL ? &sw->cfg : NULL;
    }
    return NULL;
}

static const struct cfg_driver *kind_find(enum drv_kind kind, const char *name) {
    const struct cfg_driver *d;

    for (size_t i = 0; (d = kind_at(kind, i)) != NULL; i++)
        if (strcmp(d->name, name) == 0)
            return d;
    return NULL;
}

/* "none" is no driver: a laser that is only measured, a wavemeter that
 * switches itself. A wavemeter always has a driver. */
static bool kind_has_none(enum drv_kind kind) {
    return kind != DRV_WAVEMETER;
}

static int fail_driver(struct loader *ld, enum drv_kind kind) {
    const struct cfg_driver *d;
    char list[256];
    size_t n = 0;

    list[0] = '\0';
    for (size_t i = 0; (d = kind_at(kind, i)) != NULL && n < sizeof(list); i++) {
        int w = snprintf(list + n, sizeof(list) - n, "%s\"%s\"", i > 0 ? ", " : "", d->name);
        n += w < 0 ? 0 : (size_t)w;
    }
    if (kind_has_none(kind) && n < sizeof(list))
        snprintf(list + n, sizeof(list) - n, ", \"none\"");
    return fail(ld, "must be one of %s", list);
}

/*
 * An object whose "driver" member picks the table for the rest of its keys
 * (wavemeter, wavemeter.switch, lasers[].actuator). The generic keys of
 * row->sub land in base; the driver's own keys in its struct drv_settings at
 * base + row->offset. Without "driver" the object refines the default
 * driver (the simulator, or the wavemeter's default actuator).
 */
static int parse_driver_object(struct loader *ld, const struct cfg_key *row, json_t *obj,
                               void *base) {
    enum drv_kind kind = (enum drv_kind)row->max;
    struct drv_settings *ds = (struct drv_settings *)(void *)((char *)base + row->offset);
    const struct cfg_driver *d = NULL;
    const char *name;
    json_t *jd, *v;
    int r;

    if (!json_is_object(obj))
        return fail(ld, "must be an object");
    if ((jd = json_object_get(obj, "driver")) != NULL) {
        path_push_key(ld, "driver");
        if (!json_is_string(jd))
            return fail_driver(ld, kind);
        if (!(kind_has_none(kind) && strcmp(json_string_value(jd), "none") == 0) &&
            (d = kind_find(kind, json_string_value(jd))) == NULL)
            return fail_driver(ld, kind);
        ld->depth--;
        settings_reset(ds, d);
    } else if (ds->driver[0] != '\0') {
        d = kind_find(kind, ds->driver);
    }
    json_object_foreach(obj, name, v) {
        const struct cfg_key *k;

        if (strcmp(name, "driver") == 0)
            continue;
        path_push_key(ld, name);
        if ((k = key_find(row->sub, name)) != NULL)
            r = parse_value(ld, k, v, base);
        else if (d != NULL && d->keys != NULL && (k = key_find(d->keys, name)) != NULL)
            r = parse_value(ld, k, v, ds->u.bytes);
        else if (d == NULL)
            return fail(ld, "unknown key: no %s driver is chosen (\"driver\": ...)",
                        kind_names[kind]);
        else
            return fail(ld, "unknown key for %s driver \"%s\"", kind_names[kind], d->name);
        if (r < 0)
            return r;
        ld->depth--;
    }
    for (const struct cfg_key *k = d && d->keys ? d->keys : NULL; k && k->name != NULL; k++) {
        if ((k->flags & CFG_REQUIRED) && json_object_get(obj, k->name) == NULL) {
            path_push_key(ld, k->name);
            return fail(ld, "is required with %s driver \"%s\"", kind_names[kind], d->name);
        }
    }
    if (kind == DRV_WAVEMETER)
        ld->wm = wm_driver_find(ds->driver);
    return 0;
}

/* Fail at lasers[i].actuator.KEY, or lasers[i].KEY for a laser key (the
 * output range a driver checks), or lasers[i].actuator. */
__attribute__((format(printf, 4, 5))) static int
fail_actuator(struct loader *ld, json_t *obj, const char *key, const char *fmt, ...) {
    json_t *ja = json_object_get(obj, "actuator");
    char reason[320];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    if (key != NULL && key_find(laser_keys, key) != NULL && json_object_get(obj, key) != NULL) {
        path_push_key(ld, key);
    } else {
        path_push_key(ld, "actuator");
        if (key != NULL && json_object_get(ja, key) != NULL)
            path_push_key(ld, key);
    }
    return fail(ld, "%s", reason);
}

/* A laser's actuator against its driver's checks and against the lasers
 * before it: one device is one driver, one channel is one laser, and the
 * device-level keys (a port's baud rate) agree. */
static int actuator_check(struct loader *ld, const struct config *cfg, int i, json_t *obj) {
    const struct laser_config *l = &cfg->lasers[i];
    const struct act_driver *act = act_driver_find(l->actuator.drv.driver);
    char dev[CONFIG_PATH_MAX], chan[32], why[256];
    const char *key = NULL;

    if (act == NULL)
        return 0; /* monitor only */
    if (act->check && act->check(l->actuator.drv.u.bytes, l, ld->wm, &key, why, sizeof(why)) < 0)
        return fail_actuator(ld, obj, key, "%s", why);
    act->ident(l->actuator.drv.u.bytes, l, dev, sizeof(dev), chan, sizeof(chan));
    for (int j = 0; j < i; j++) {
        const struct laser_config *o = &cfg->lasers[j];
        const struct act_driver *oa = act_driver_find(o->actuator.drv.driver);
        char odev[CONFIG_PATH_MAX], ochan[32];

        if (oa == NULL)
            continue;
        oa->ident(o->actuator.drv.u.bytes, o, odev, sizeof(odev), ochan, sizeof(ochan));
        if (strcmp(dev, odev) != 0)
            continue;
        if (oa != act)
            return fail_actuator(ld, obj, NULL,
                                 "device %s is already driven by laser \"%s\" with driver \"%s\"",
                                 dev, o->name, oa->cfg.name);
        if (strcmp(chan, ochan) == 0)
            return fail_actuator(ld, obj, NULL,
                                 "channel %s of device %s is already driven by laser \"%s\"", chan,
                                 dev, o->name);
        for (const struct cfg_key *k = act->cfg.keys; k && k->name != NULL; k++) {
            if ((k->flags & CFG_DEVICE) &&
                memcmp(l->actuator.drv.u.bytes + k->offset, o->actuator.drv.u.bytes + k->offset,
                       k->size) != 0)
                return fail_actuator(ld, obj, k->name,
                                     "must be the same as for laser \"%s\", which shares device %s",
                                     o->name, dev);
        }
    }
    return 0;
}

/* Checks that span keys, with lasers[i] on the path. Each failure names the
 * key a reader should change. */
static int laser_check(struct loader *ld, const struct config *cfg, int i, json_t *obj) {
    const struct laser_config *l = &cfg->lasers[i];

    for (int j = 0; j < i; j++) {
        if (cfg->lasers[j].channel == l->channel) {
            path_push_key(ld, "channel");
            return fail(ld, "channel %d is already used by laser \"%s\"", l->channel,
                        cfg->lasers[j].name);
        }
        if (strcmp(cfg->lasers[j].name, l->name) == 0) {
            path_push_key(ld, "name");
            return fail(ld, "name \"%s\" is already used by lasers[%d]", l->name, j);
        }
    }
    if (!(l->min_thz < l->max_thz)) {
        path_push_key(ld, json_object_get(obj, "max_thz") != NULL ? "max_thz" : "min_thz");
        return fail(ld, "must leave min_thz (%.15g) below max_thz (%.15g)", l->min_thz, l->max_thz);
    }
    if (!(l->min_thz < l->setpoint_thz && l->setpoint_thz < l->max_thz)) {
        bool given = json_object_get(obj, "setpoint_thz") != NULL;
        path_push_key(ld, "setpoint_thz");
        return fail(ld, "%.15g must be inside (min_thz, max_thz) = (%.15g, %.15g)%s",
                    l->setpoint_thz, l->min_thz, l->max_thz, given ? "" : " (its default)");
    }
    if (!(l->output_min_v < l->output_max_v)) {
        path_push_key(ld, "output_max_v");
        return fail(ld, "must be greater than output_min_v (%.15g)", l->output_min_v);
    }
    if (!(l->output_initial_v >= l->output_min_v && l->output_initial_v <= l->output_max_v)) {
        path_push_key(ld, "output_initial_v");
        return fail(ld, "must be inside [output_min_v, output_max_v] = [%.15g, %.15g]",
                    l->output_min_v, l->output_max_v);
    }
    if (l->tolerance_mhz > l->capture_mhz) {
        path_push_key(ld, "tolerance_mhz");
        return fail(ld, "must not exceed capture_mhz (%.15g)", l->capture_mhz);
    }
    if (l->lock && l->actuator.drv.driver[0] == '\0') {
        path_push_key(ld, "lock");
        return fail(ld, "cannot be true for a laser without an actuator (monitor only)");
    }
    return actuator_check(ld, cfg, i, obj);
}

static int parse_lasers(struct loader *ld, const struct cfg_key *row, json_t *v,
                        struct config *cfg) {
    size_t n = json_array_size(v);
    int r;

    if (!json_is_array(v) || n < (size_t)row->min || n > (size_t)row->max)
        return fail(ld, "must be an array of %.0f to %.0f lasers", row->min, row->max);
    cfg->nlasers = 0;
    memset(cfg->lasers, 0, sizeof(cfg->lasers));
    for (size_t i = 0; i < n; i++) {
        json_t *obj = json_array_get(v, i);
        struct laser_config *l = &cfg->lasers[i];

        path_push_index(ld, i);
        laser_template(l, ld->wm);
        r = parse_object(ld, laser_keys, obj, l);
        if (r < 0)
            return r;
        laser_resolve(l, ld->wm);
        r = laser_check(ld, cfg, (int)i, obj);
        if (r < 0)
            return r;
        cfg->nlasers = (int)i + 1;
        ld->depth--;
    }
    return 0;
}

static int parse_nets(struct loader *ld, const struct cfg_key *row, json_t *v, struct acl *acl) {
    size_t n = json_array_size(v);
    char why[128];

    if (!json_is_array(v) || n > (size_t)row->max)
        return fail(ld, "must be an array of at most %.0f \"ADDR[/BITS]\" strings", row->max);
    memset(acl, 0, sizeof(*acl));
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);

        path_push_index(ld, i);
        if (!json_is_string(e))
            return fail(ld, "must be a string \"ADDR[/BITS]\"");
        if (acl_parse_net(json_string_value(e), &acl->nets[i], why, sizeof(why)) < 0)
            return fail(ld, "%s", why);
        acl->n = i + 1;
        ld->depth--;
    }
    return 0;
}

static void note_key(char *list, size_t len, const char *key) {
    size_t n = strlen(list);

    if (n + 1 < len)
        snprintf(list + n, len - n, "%s%s", n ? ", " : "", key);
}

int config_update_runtime(struct config *cur, const struct config *next, char *restart,
                          size_t restart_len) {
    int changed = 0;

    restart[0] = '\0';
#define SAME_STR(f) (strcmp(cur->f, next->f) == 0)
#define RUNTIME(f)                                                                                 \
    do {                                                                                           \
        if (cur->f != next->f) {                                                                   \
            cur->f = next->f;                                                                      \
            changed++;                                                                             \
        }                                                                                          \
    } while (0)
    if (!SAME_STR(log_level)) {
        memcpy(cur->log_level, next->log_level, sizeof(cur->log_level));
        changed++;
    }
    RUNTIME(max_line_bytes);
    RUNTIME(max_clients);
    RUNTIME(max_clients_per_address);
    RUNTIME(max_batch);
    RUNTIME(idle_timeout_s);
    RUNTIME(write_queue_max_bytes);
    RUNTIME(answer_memory_max_bytes);
    RUNTIME(write_stall_timeout_s);
    RUNTIME(line_timeout_s);
    RUNTIME(push_soft_bytes);
    RUNTIME(max_subscriptions);
    RUNTIME(write_rate_per_s);
    RUNTIME(write_burst);
#undef RUNTIME
    if (cur->write_from.n != next->write_from.n ||
        memcmp(cur->write_from.nets, next->write_from.nets,
               next->write_from.n * sizeof(next->write_from.nets[0])) != 0) {
        cur->write_from = next->write_from;
        changed++;
    }

    if (!SAME_STR(listen_host) || cur->listen_port != next->listen_port)
        note_key(restart, restart_len, "listen");
    if (cur->threadpool_size != next->threadpool_size)
        note_key(restart, restart_len, "threadpool_size");
    if (!SAME_STR(state_dir) || cur->state_save_interval_s != next->state_save_interval_s)
        note_key(restart, restart_len, "state");
    if (cur->require_token != next->require_token || !SAME_STR(token_file))
        note_key(restart, restart_len, "access.require_token/token_file");
    if (memcmp(&cur->wavemeter, &next->wavemeter, sizeof(cur->wavemeter)) != 0 ||
        cur->read_timeout_ms != next->read_timeout_ms ||
        cur->monitor_period_ms != next->monitor_period_ms ||
        memcmp(&cur->sw, &next->sw, sizeof(cur->sw)) != 0)
        note_key(restart, restart_len, "wavemeter");
    if (memcmp(&cur->mqtt, &next->mqtt, sizeof(cur->mqtt)) != 0)
        note_key(restart, restart_len, "mqtt");
    if (memcmp(&cur->http, &next->http, sizeof(cur->http)) != 0)
        note_key(restart, restart_len, "http");
#undef SAME_STR
    if (cur->nlasers != next->nlasers) {
        note_key(restart, restart_len, "lasers");
        return changed;
    }
    for (int i = 0; i < cur->nlasers; i++) {
        /* Everything but the gains, compared as the loader made it (it
         * zeroes each struct first, so padding compares equal). */
        struct laser_config a, b;
        char key[24];

        memcpy(&a, &cur->lasers[i], sizeof(a)); /* memcpy keeps the padding */
        memcpy(&b, &next->lasers[i], sizeof(b));

        a.kp_v_per_mhz = b.kp_v_per_mhz;
        a.ki_v_per_mhz_s = b.ki_v_per_mhz_s;
        a.kd_v_s_per_mhz = b.kd_v_s_per_mhz;
        if (memcmp(&a, &b, sizeof(a)) != 0) {
            snprintf(key, sizeof(key), "lasers[%d]", i);
            note_key(restart, restart_len, key);
        }
    }
    return changed;
}

/* Everything but the lasers: the built-in values of every other key. The
 * first row of the wavemeter driver table (the simulator) is the default. */
static void config_base(struct config *cfg) {
    memset(cfg, 0, sizeof(*cfg));
    copy_string(cfg->listen_host, sizeof(cfg->listen_host), "127.0.0.1");
    cfg->listen_port = 7420;
    copy_string(cfg->log_level, sizeof(cfg->log_level), "info");
    cfg->threadpool_size = 4;
    cfg->max_line_bytes = 65536;
    cfg->max_clients = 64;
    cfg->max_batch = 100;
    cfg->idle_timeout_s = 900;
    cfg->write_queue_max_bytes = 1048576;
    cfg->write_stall_timeout_s = 10;
    cfg->line_timeout_s = 10;
    cfg->push_soft_bytes = 256 * 1024;
    cfg->max_subscriptions = 16;
    /* Each write is a durable state save: 100 a second is far beyond any
     * scan script, and far below what a runaway loop would send. */
    cfg->write_rate_per_s = 100;
    cfg->write_burst = 200;
    cfg->answer_memory_max_bytes = 32 * 1024 * 1024;
    cfg->max_clients_per_address = 16;
    copy_string(cfg->state_dir, sizeof(cfg->state_dir), "/var/lib/wavemeterd");
    /* Writes from this host only, until the config names other networks. */
    acl_parse_net("127.0.0.0/8", &cfg->write_from.nets[0], NULL, 0);
    acl_parse_net("::1/128", &cfg->write_from.nets[1], NULL, 0);
    cfg->write_from.n = 2;
    cfg->state_save_interval_s = 10;
    settings_reset(&cfg->wavemeter, &wm_driver_at(0)->cfg);
    cfg->read_timeout_ms = 5000;
    cfg->monitor_period_ms = 1000;
    settings_reset(&cfg->sw.drv, NULL);
    cfg->sw.input = 1;
    cfg->sw.settle_ms = 50;
    cfg->sw.timeout_ms = 1000;
    /* MQTT off; when turned on, a broker on this host. The port stays 0
     * (not in the file) until mqtt_resolve picks it by "tls". */
    copy_string(cfg->mqtt.host, sizeof(cfg->mqtt.host), "localhost");
    copy_string(cfg->mqtt.topic_prefix, sizeof(cfg->mqtt.topic_prefix), "wavemeter");
    cfg->mqtt.qos = 0;
    cfg->mqtt.readings_max_rate_hz = 1;
    cfg->mqtt.keepalive_s = 60;
    cfg->mqtt.connect_timeout_s = 10;
    cfg->mqtt.queue_max = 1000;
    /* HTTP off; the page from the install (CMake's datadir), dygraphs from
     * Debian's libjs-dygraphs. */
    copy_string(cfg->http.www_dir, sizeof(cfg->http.www_dir), WMD_WWW_DIR);
    copy_string(cfg->http.dygraphs_dir, sizeof(cfg->http.dygraphs_dir),
                "/usr/share/javascript/dygraphs");
}

/* The keys whose default follows another: the port follows "tls". */
static void mqtt_resolve(struct mqtt_config *m) {
    if (m->port == 0)
        m->port = m->tls ? 8883 : 1883;
}

/* The lasers of a file without "lasers", in the language of the file: a
 * trapped-ion lab's Yb photoionization and Ca+ cooling, repump and quench
 * lasers. One negative sensitivity keeps the loop sign honest. With the
 * simulator each gets a simulated laser on its setpoint; with a real
 * wavemeter they are measured only. */
static const char builtin_lasers[] =
    "[{\"name\": \"399\", \"channel\": 1, \"setpoint_thz\": 751.52653},\n"
    " {\"name\": \"397\", \"channel\": 2, \"setpoint_thz\": 755.2227},\n"
    " {\"name\": \"866\", \"channel\": 3, \"setpoint_thz\": 346.0002,"
    " \"sensitivity_mhz_per_v\": -40},\n"
    " {\"name\": \"854\", \"channel\": 4, \"setpoint_thz\": 350.8626}]\n";

static int parse_builtin_lasers(const struct wm_driver *wm, struct config *cfg, char *err,
                                size_t errlen) {
    static const struct cfg_key row = {"lasers",          CFG_LASERS, 0,    0, 1,
                                       CONFIG_MAX_LASERS, NULL,       NULL, 0, NULL};
    struct loader ld = {.name = "built-in lasers",
                        .text = builtin_lasers,
                        .len = sizeof(builtin_lasers) - 1,
                        .err = err,
                        .errlen = errlen,
                        .wm = wm};
    json_t *v = json_loadb(builtin_lasers, sizeof(builtin_lasers) - 1, 0, NULL);
    int r;

    if (v == NULL)
        return -ENOMEM;
    path_push_key(&ld, "lasers");
    r = parse_lasers(&ld, &row, v, cfg);
    json_decref(v);
    return r;
}

void config_defaults(struct config *cfg) {
    config_base(cfg);
    mqtt_resolve(&cfg->mqtt);
    /* Checked by the unit tests; only memory could make it fail. */
    if (parse_builtin_lasers(wm_driver_at(0), cfg, NULL, 0) != 0)
        cfg->nlasers = 0;
}

static void set_error(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_error(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Keys from different sections that must agree, checked once the whole file
 * is read (the sections may come in any order): a read that cannot finish
 * within the timeout would fail for ever. */
static int check_read_times(struct loader *ld, const struct config *cfg) {
    for (int i = 0; i < cfg->nlasers; i++) {
        const struct laser_config *l = &cfg->lasers[i];

        if (l->exposure_ms + l->settle_ms < cfg->read_timeout_ms)
            continue;
        ld->depth = 0;
        path_push_key(ld, "lasers");
        path_push_index(ld, (size_t)i);
        path_push_key(ld, "exposure_ms");
        return fail(ld,
                    "exposure_ms + settle_ms (%d ms) must be less than "
                    "wavemeter.read_timeout_ms (%d ms)",
                    l->exposure_ms + l->settle_ms, cfg->read_timeout_ms);
    }
    return 0;
}

/* The mqtt keys that depend on each other, at the key a reader should
 * change (or at "mqtt" when that key is not in the file). */
static int check_mqtt(struct loader *ld, struct config *cfg, json_t *root) {
    struct mqtt_config *m = &cfg->mqtt;
    json_t *jm = json_object_get(root, "mqtt");
    static const char *const tls_files[] = {"tls_cafile", "tls_capath", "tls_certfile",
                                            "tls_keyfile"};
    char why[128];

    mqtt_resolve(m);
    if (jm == NULL)
        return 0;
    ld->depth = 0;
    path_push_key(ld, "mqtt");
    if (mqtt_topic_prefix_check(m->topic_prefix, why, sizeof(why)) != 0) {
        path_push_key(ld, "topic_prefix");
        return fail(ld, "%s", why);
    }
    for (size_t i = 0; i < sizeof(tls_files) / sizeof(tls_files[0]); i++) {
        if (!m->tls && json_object_get(jm, tls_files[i]) != NULL) {
            path_push_key(ld, tls_files[i]);
            return fail(ld, "is only read with \"tls\": true");
        }
    }
    if ((m->tls_certfile[0] != '\0') != (m->tls_keyfile[0] != '\0')) {
        path_push_key(ld, m->tls_certfile[0] ? "tls_certfile" : "tls_keyfile");
        return fail(ld, "needs %s too (a client certificate is a certificate and its key)",
                    m->tls_certfile[0] ? "tls_keyfile" : "tls_certfile");
    }
    if (m->password_file[0] != '\0' && m->username[0] == '\0') {
        path_push_key(ld, "password_file");
        return fail(ld, "needs \"username\" too (MQTT sends no password without a user name)");
    }
    ld->depth = 0;
    return 0;
}

/* http.listen is a string so that "" can turn HTTP off; its address and
 * the directories are checked here, at the key. */
static int check_http(struct loader *ld, struct config *cfg) {
    struct http_config *h = &cfg->http;
    static const char *const dirs[] = {"www_dir", "dygraphs_dir"};

    char listen[sizeof(h->listen)];

    memcpy(listen, h->listen, sizeof(listen)); /* it is written over */
    ld->depth = 0;
    path_push_key(ld, "http");
    if (config_set_http_listen(cfg, listen) != 0) {
        path_push_key(ld, "listen");
        return fail(ld, "must be \"\" (off) or \"ADDRESS:PORT\" with a numeric address and PORT "
                        "in [0, 65535], e.g. \"127.0.0.1:7480\" or \"[::1]:7480\"");
    }
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        const char *d = i == 0 ? h->www_dir : h->dygraphs_dir;
        if (d[0] != '/') {
            path_push_key(ld, dirs[i]);
            return fail(ld, "must be an absolute path (the daemon's working directory is /)");
        }
    }
    ld->depth = 0;
    return 0;
}

int config_parse(struct config *cfg, const char *name, const char *text, size_t len, char *err,
                 size_t errlen) {
    struct loader ld = {.name = name, .text = text, .len = len, .err = err, .errlen = errlen};
    struct config *tmp;
    json_error_t jerr;
    json_t *root, *jw;
    char why[384];
    int r;

    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        set_error(err, errlen, "%s:%d:%d: invalid JSON: %s", name, jerr.line, jerr.column,
                  jerr.text);
        return -EINVAL;
    }
    if (!json_is_object(root)) {
        struct jsonpos pos;
        (void)jsonpos_find(text, len, NULL, 0, &pos);
        set_error(err, errlen, "%s:%d:%d: the top level must be an object", name, pos.line,
                  pos.column);
        json_decref(root);
        return -EINVAL;
    }
    /* Build into a copy so a failed load (a bad reload) leaves cfg as it was. */
    tmp = malloc(sizeof(*tmp));
    if (tmp == NULL) {
        set_error(err, errlen, "%s: out of memory", name);
        json_decref(root);
        return -ENOMEM;
    }
    config_base(tmp);
    copy_string(tmp->source, sizeof(tmp->source), name);
    ld.wm = wm_driver_at(0);
    r = 0;
    if ((jw = json_object_get(root, "wavemeter")) != NULL) {
        path_push_key(&ld, "wavemeter");
        r = parse_value(&ld, key_find(top_keys, "wavemeter"), jw, tmp);
        ld.depth = 0;
    }
    if (r == 0)
        r = parse_object(&ld, top_keys, root, tmp);
    if (r == 0 && json_object_get(root, "lasers") == NULL)
        r = parse_builtin_lasers(ld.wm, tmp, err, errlen);
    if (r == 0)
        r = check_read_times(&ld, tmp);
    if (r == 0)
        r = check_mqtt(&ld, tmp, root);
    if (r == 0)
        r = check_http(&ld, tmp);
    if (r == 0 && (r = wm_check_config(tmp, why, sizeof(why))) != 0)
        set_error(err, errlen, "%s: %s", name, why);
    if (r == 0)
        memcpy(cfg, tmp, sizeof(*cfg));
    free(tmp);
    json_decref(root);
    return r;
}

int config_load(struct config *cfg, const char *path, char *err, size_t errlen) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f;
    int r;

    if (strlen(path) >= CONFIG_PATH_MAX) {
        set_error(err, errlen, "%s: cannot read: %s", path, strerror(ENAMETOOLONG));
        return -ENAMETOOLONG;
    }
    f = fopen(path, "rb");
    if (f == NULL) {
        r = -errno;
        goto fail;
    }
    /* One byte more than allowed tells "exactly the limit" from "larger". */
    buf = malloc(CONFIG_FILE_MAX_BYTES + 1);
    if (buf == NULL) {
        r = -ENOMEM;
        goto fail;
    }
    len = fread(buf, 1, CONFIG_FILE_MAX_BYTES + 1, f);
    if (ferror(f)) {
        r = errno != 0 ? -errno : -EIO;
        goto fail;
    }
    if (len > CONFIG_FILE_MAX_BYTES) {
        r = -EFBIG;
        goto fail;
    }
    fclose(f);
    r = config_parse(cfg, path, buf, len, err, errlen);
    free(buf);
    return r;
fail:
    set_error(err, errlen, "%s: cannot read: %s", path, strerror(-r));
    if (f != NULL)
        fclose(f);
    free(buf);
    return r;
}

const struct laser_config *config_laser_by_name(const struct config *cfg, const char *name) {
    char *end;
    long channel;

    for (int i = 0; i < cfg->nlasers; i++) {
        if (strcmp(cfg->lasers[i].name, name) == 0)
            return &cfg->lasers[i];
    }
    /* Names win, so a laser called "3" is found before channel 3. */
    if (name[0] < '0' || name[0] > '9')
        return NULL;
    errno = 0;
    channel = strtol(name, &end, 10);
    if (*end != '\0' || errno != 0)
        return NULL;
    for (int i = 0; i < cfg->nlasers; i++) {
        if (cfg->lasers[i].channel == channel)
            return &cfg->lasers[i];
    }
    return NULL;
}

const char *config_restart_name(enum restart_policy p) {
    if ((unsigned)p > (unsigned)RESTART_OFF)
        return "?";
    return restart_names[p];
}

static const char *key_type_name(enum cfg_key_type t) {
    switch (t) {
    case CFG_INT:
    case CFG_UINT64:
        return "integer";
    case CFG_DOUBLE:
        return "number";
    case CFG_BOOL:
        return "boolean";
    case CFG_STRING:
    case CFG_NAME:
    case CFG_ENUM:
    case CFG_CHOICE:
    case CFG_LISTEN:
        return "string";
    case CFG_OBJECT:
    case CFG_DRIVER:
        return "object";
    case CFG_LASERS:
    case CFG_NETS:
        return "array";
    }
    return "?";
}

static void foreach_table(const char *section, const char *driver, const struct cfg_key *keys,
                          void (*fn)(const struct config_key_info *key, void *arg), void *arg) {
    for (const struct cfg_key *k = keys; k != NULL && k->name != NULL; k++) {
        struct config_key_info info = {
            .section = section,
            .driver = driver,
            .key = k->name,
            .type = key_type_name(k->type),
            .has_range = k->type == CFG_INT || k->type == CFG_DOUBLE,
            .min = k->min,
            .max = k->max,
            .values = k->values,
            .required = (k->flags & CFG_REQUIRED) != 0,
            .device = (k->flags & CFG_DEVICE) != 0,
            .doc = k->doc,
        };
        fn(&info, arg);
    }
}

/* The "driver" key of a driver object, with every driver's name. */
static void foreach_driver_key(const char *section, enum drv_kind kind,
                               void (*fn)(const struct config_key_info *key, void *arg),
                               void *arg) {
    const char *names[16 + 2];
    const struct cfg_driver *d;
    size_t n = 0;

    for (size_t i = 0; (d = kind_at(kind, i)) != NULL && n < 16; i++)
        names[n++] = d->name;
    if (kind_has_none(kind))
        names[n++] = "none";
    names[n] = NULL;
    struct config_key_info info = {
        .section = section,
        .key = "driver",
        .type = "string",
        .values = names,
        .doc = "which driver; the rest of the object is that driver's keys",
    };
    fn(&info, arg);
}

void config_foreach_key(void (*fn)(const struct config_key_info *key, void *arg), void *arg) {
    const struct wm_driver *w;
    const struct act_driver *a;
    const struct sw_driver *sw;

    for (size_t s = 0; s < sizeof(sections) / sizeof(sections[0]); s++) {
        if (strcmp(sections[s].section, "wavemeter") == 0)
            foreach_driver_key("wavemeter", DRV_WAVEMETER, fn, arg);
        else if (strcmp(sections[s].section, "wavemeter.switch") == 0)
            foreach_driver_key("wavemeter.switch", DRV_SWITCH, fn, arg);
        else if (strcmp(sections[s].section, "lasers[].actuator") == 0)
            foreach_driver_key("lasers[].actuator", DRV_ACTUATOR, fn, arg);
        foreach_table(sections[s].section, NULL, sections[s].keys, fn, arg);
    }
    for (size_t i = 0; (w = wm_driver_at(i)) != NULL; i++) {
        char section[48];

        foreach_table("wavemeter", w->cfg.name, w->cfg.keys, fn, arg);
        if (w->chan.name == NULL)
            continue;
        /* The section name lives in the driver's static table; the copy
         * here is only for the call. */
        snprintf(section, sizeof(section), "lasers[].%s", w->chan.name);
        foreach_table(section, w->cfg.name, w->chan.keys, fn, arg);
    }
    for (size_t i = 0; (sw = sw_driver_at(i)) != NULL; i++)
        foreach_table("wavemeter.switch", sw->cfg.name, sw->cfg.keys, fn, arg);
    for (size_t i = 0; (a = act_driver_at(i)) != NULL; i++)
        foreach_table("lasers[].actuator", a->cfg.name, a->cfg.keys, fn, arg);
}
