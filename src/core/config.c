/*
 * config: the built-in defaults and the JSON loader. Every key the file may
 * hold is one row in one static table per object kind (redis config.c style):
 * name, type, where it lands in the struct, bounds and a one-line doc. The
 * loader reads, validates and reports; it must not log, keep globals or start
 * anything, because --check-config and reloads run it too.
 */
#include "config.h"

#include "jsonpos.h"

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

enum key_type {
    KEY_INT,    /* int, JSON integer in [min, max] */
    KEY_UINT64, /* uint64_t, JSON integer >= 0 (jansson stops at INT64_MAX) */
    KEY_DOUBLE, /* double, JSON integer or real in [min, max] */
    KEY_BOOL,   /* bool */
    KEY_STRING, /* char[size], length in [min, size - 1] */
    KEY_NAME,   /* char[size], 1 to size - 1 of [A-Za-z0-9_.-] */
    KEY_ENUM,   /* char[size], one of values */
    KEY_POLICY, /* enum restart_policy, the index of the string in values */
    KEY_OBJECT, /* nested object, keys in sub, offsets relative to the same base */
    KEY_LISTEN, /* "HOST:PORT" into listen_host and listen_port */
    KEY_LASERS, /* array of laser objects, [min, max] elements */
    KEY_NETS,   /* array of "ADDR[/BITS]" strings into a struct acl */
};

#define KEY_REQUIRED 1u

struct key {
    const char *name;
    enum key_type type;
    size_t offset;             /* into struct config or struct laser_config */
    size_t size;               /* bytes of the field */
    double min, max;           /* numbers: bounds; strings: min length; lasers: count */
    const char *const *values; /* KEY_ENUM, KEY_POLICY: NULL-terminated */
    const struct key *sub;     /* KEY_OBJECT */
    unsigned flags;
    const char *doc;
};

#define FIELD(s, f) offsetof(s, f), sizeof(((s *)0)->f)
/* One row macro per line reads as a table. */
/* clang-format off */
#define ROW_INT(n, s, f, lo, hi, d) {n, KEY_INT, FIELD(s, f), lo, hi, NULL, NULL, 0, d}
#define ROW_U64(n, s, f, d) {n, KEY_UINT64, FIELD(s, f), 0, 0, NULL, NULL, 0, d}
#define ROW_DBL(n, s, f, lo, hi, d) {n, KEY_DOUBLE, FIELD(s, f), lo, hi, NULL, NULL, 0, d}
#define ROW_BOOL(n, s, f, d) {n, KEY_BOOL, FIELD(s, f), 0, 0, NULL, NULL, 0, d}
#define ROW_STR(n, s, f, d) {n, KEY_STRING, FIELD(s, f), 1, 0, NULL, NULL, 0, d}
#define ROW_ENUM(n, s, f, v, d) {n, KEY_ENUM, FIELD(s, f), 0, 0, v, NULL, 0, d}
#define ROW_OBJ(n, t, d) {n, KEY_OBJECT, 0, 0, 0, 0, NULL, t, 0, d}
#define ROW_END {NULL, KEY_INT, 0, 0, 0, 0, NULL, NULL, 0, NULL}
/* clang-format on */

static const char *const log_levels[] = {"debug", "info", "notice", "warning", "error", NULL};
static const char *const meter_drivers[] = {"sim", "highfinesse", NULL};
static const char *const actuator_drivers[] = {"sim", "none", NULL};
static const char *const sim_faults[] = {"none", "no_signal", "underexposed", "overexposed", NULL};
/* Indexed by enum restart_policy. */
static const char *const restart_names[] = {"resume", "release", "off", NULL};

#define C struct config
#define L struct laser_config

static const struct key limits_keys[] = {
    ROW_INT("max_line_bytes", C, max_line_bytes, 1024, 16777216,
            "longest request line in bytes; longer lines get an error and are dropped"),
    ROW_INT("max_clients", C, max_clients, 1, 4096, "connections served at once"),
    ROW_INT("max_clients_per_address", C, max_clients_per_address, 1, 4096,
            "connections served at once from one address (loopback included)"),
    ROW_INT("max_batch", C, max_batch, 1, 10000, "requests in one JSON-RPC batch"),
    ROW_INT("idle_timeout_s", C, idle_timeout_s, 1, 604800,
            "a connection silent this long is closed, in s"),
    ROW_INT("write_queue_max_bytes", C, write_queue_max_bytes, 65536, 1073741824,
            "unsent bytes queued to one client before it is dropped"),
    ROW_INT("answer_memory_max_bytes", C, answer_memory_max_bytes, 1048576, 1073741824,
            "answers all clients together may have outstanding, in bytes"),
    ROW_INT("write_stall_timeout_s", C, write_stall_timeout_s, 1, 3600,
            "a client that reads nothing for this long while output waits is dropped, in s"),
    ROW_INT("line_timeout_s", C, line_timeout_s, 1, 3600,
            "a request line once begun must end (newline) within this, in s"),
    ROW_END,
};

static const struct key state_keys[] = {
    ROW_STR("dir", C, state_dir, "directory for the state file ($STATE_DIRECTORY wins)"),
    ROW_DBL("save_interval_s", C, state_save_interval_s, 0.1, 3600,
            "how often changed state is written, in s"),
    ROW_END,
};

static const struct key access_keys[] = {
    {"write_from", KEY_NETS, FIELD(C, write_from), 0, ACL_MAX, NULL, NULL, 0,
     "networks whose clients may use write methods, e.g. [\"127.0.0.0/8\", \"10.1.0.0/16\"]"},
    ROW_BOOL("require_token", C, require_token,
             "write methods also need the auth method with the token first"),
    {"token_file", KEY_STRING, FIELD(C, token_file), 0, 0, NULL, NULL, 0,
     "file holding the token; empty: a new cookie in the state directory at each start"},
    ROW_END,
};

static const struct key wavemeter_keys[] = {
    ROW_ENUM("driver", C, driver, meter_drivers, "wavemeter driver"),
    ROW_INT("read_timeout_ms", C, read_timeout_ms, 100, 60000,
            "one reading finishes or fails by then, in ms"),
    ROW_U64("seed", C, seed, "simulator random seed; 0 takes one from the clock"),
    ROW_STR("library", C, wlm_library, "path of the HighFinesse libwlmData.so"),
    ROW_END,
};

static const struct key sim_keys[] = {
    ROW_DBL("nominal_thz", L, sim.nominal_thz, 1, 2000, "free-running frequency at 0 V, in THz"),
    ROW_DBL("offset_mhz", L, sim.offset_mhz, -1000000, 1000000,
            "start offset from nominal_thz, in MHz"),
    ROW_DBL("drift_mhz_per_sqrt_s", L, sim.drift_mhz_per_sqrt_s, 0, 10000,
            "random-walk strength, in MHz per sqrt(s)"),
    ROW_DBL("noise_mhz", L, sim.noise_mhz, 0, 10000, "white measurement noise, 1 sigma, in MHz"),
    ROW_DBL("sensitivity_mhz_per_v", L, sim.sensitivity_mhz_per_v, -1000000, 1000000,
            "frequency change per actuator volt, signed, in MHz/V"),
    ROW_DBL("lag_ms", L, sim.lag_ms, 0, 100000, "first-order time constant of the actuator, in ms"),
    ROW_ENUM("fault", L, sim.fault, sim_faults, "every reading of this channel has this fault"),
    ROW_END,
};

static const struct key actuator_keys[] = {
    ROW_ENUM("driver", L, actuator.driver, actuator_drivers,
             "what moves the laser; \"none\" for read-only channels"),
    ROW_INT("timeout_ms", L, actuator.timeout_ms, 10, 60000,
            "every actuator write finishes or fails by then, in ms"),
    ROW_END,
};

static const struct key laser_keys[] = {
    {"name", KEY_NAME, FIELD(L, name), 1, 0, NULL, NULL, KEY_REQUIRED,
     "unique name used by clients, 1 to 31 of A-Z a-z 0-9 _ . -"},
    {"channel", KEY_INT, FIELD(L, channel), 1, CONFIG_MAX_LASERS, NULL, NULL, KEY_REQUIRED,
     "wavemeter channel, 1-based, unique"},
    ROW_INT("exposure_ms", L, exposure_ms, 1, 10000, "exposure time, in ms"),
    ROW_INT("settle_ms", L, settle_ms, 0, 10000,
            "wait after switching to the channel before exposing, in ms"),
    ROW_BOOL("enabled", L, enabled, "measure this channel"),
    ROW_OBJ("sim", sim_keys, "the light the simulator shows on this channel"),
    ROW_OBJ("actuator", actuator_keys, "what the lock drives"),
    ROW_DBL("setpoint_thz", L, setpoint_thz, 1, 2000, "lock setpoint at start, in THz"),
    ROW_DBL("min_thz", L, min_thz, 1, 2000, "lowest setpoint a client may ask for, in THz"),
    ROW_DBL("max_thz", L, max_thz, 1, 2000, "highest setpoint a client may ask for, in THz"),
    ROW_DBL("kp_v_per_mhz", L, kp_v_per_mhz, 0, CONFIG_GAIN_MAX, "proportional gain, in V/MHz"),
    ROW_DBL("ki_v_per_mhz_s", L, ki_v_per_mhz_s, 0, CONFIG_GAIN_MAX, "integral gain, in V/(MHz s)"),
    ROW_DBL("kd_v_s_per_mhz", L, kd_v_s_per_mhz, 0, CONFIG_GAIN_MAX,
            "derivative gain, in V s/MHz; 0 = off"),
    ROW_DBL("sensitivity_mhz_per_v", L, sensitivity_mhz_per_v, -1000000, 1000000,
            "actuator sensitivity, signed, in MHz/V; its sign sets the loop sign, 0 = +"),
    ROW_DBL("output_min_v", L, output_min_v, -1000, 1000, "lowest actuator output, in V"),
    ROW_DBL("output_max_v", L, output_max_v, -1000, 1000, "highest actuator output, in V"),
    ROW_DBL("output_initial_v", L, output_initial_v, -1000, 1000, "output at first start, in V"),
    ROW_DBL("slew_v_per_s", L, slew_v_per_s, 0, 1000000,
            "fastest output change, in V/s; 0 = unlimited"),
    ROW_DBL("ramp_mhz_per_s", L, ramp_mhz_per_s, 0, CONFIG_RAMP_MAX_MHZ_PER_S,
            "default rate for setpoint changes, in MHz/s; 0 = step"),
    ROW_DBL("capture_mhz", L, capture_mhz, 0.001, 1000000,
            "|error| beyond this counts toward lost, in MHz"),
    ROW_DBL("tolerance_mhz", L, tolerance_mhz, 0.001, 1000000,
            "|error| within this counts toward locked, in MHz"),
    ROW_INT("locked_after", L, locked_after, 1, 10000,
            "readings in a row within tolerance before \"locked\""),
    ROW_INT("lost_after", L, lost_after, 1, 10000,
            "readings in a row beyond capture before \"lost\""),
    ROW_DBL("rail_timeout_s", L, rail_timeout_s, 0.1, 86400,
            "output on a limit this long means lost, in s"),
    ROW_DBL("max_gap_s", L, max_gap_s, 0.01, 3600,
            "a longer gap between readings freezes the integrator, in s"),
    ROW_DBL("stale_s", L, stale_s, 0.01, 3600,
            "a reading older than this never reaches the loop, in s"),
    {"restart", KEY_POLICY, FIELD(L, restart), 0, 0, restart_names, NULL, 0,
     "with saved state: relock, hold the output unlocked, or start afresh"},
    ROW_BOOL("auto_relock", L, auto_relock, "try to lock again after lost"),
    ROW_INT("relock_attempts", L, relock_attempts, 0, 1000,
            "relock tries after lost before giving up"),
    ROW_DBL("relock_delay_s", L, relock_delay_s, 0, 3600,
            "wait after lost before each relock attempt, in s"),
    ROW_INT("history_depth", L, history_depth, 1, 1000000, "readings kept for clients"),
    ROW_BOOL("lock", L, lock, "lock at first start (no state file yet)"),
    ROW_END,
};

static const struct key top_keys[] = {
    {"listen", KEY_LISTEN, 0, 0, 0, 0, NULL, NULL, 0,
     "TCP address for JSON-RPC, \"HOST:PORT\" or \"[IPv6]:PORT\""},
    ROW_ENUM("log_level", C, log_level, log_levels, "least severe message logged"),
    ROW_INT("threadpool_size", C, threadpool_size, 1, 1024,
            "libuv worker threads (UV_THREADPOOL_SIZE)"),
    ROW_OBJ("limits", limits_keys, "client and protocol limits"),
    ROW_OBJ("state", state_keys, "where lock state survives restarts"),
    ROW_OBJ("access", access_keys, "who may change things"),
    ROW_OBJ("wavemeter", wavemeter_keys, "the instrument"),
    {"lasers", KEY_LASERS, 0, 0, 1, CONFIG_MAX_LASERS, NULL, NULL, 0,
     "the channels; replaces the built-in lasers"},
    ROW_END,
};

#undef C
#undef L

/* For config_foreach_key: every table with the path prefix its keys have. */
static const struct {
    const char *section;
    const struct key *keys;
} sections[] = {
    {"", top_keys},
    {"limits", limits_keys},
    {"state", state_keys},
    {"access", access_keys},
    {"wavemeter", wavemeter_keys},
    {"lasers[]", laser_keys},
    {"lasers[].sim", sim_keys},
    {"lasers[].actuator", actuator_keys},
};

/* lasers[i].sim.key is the deepest path the tables allow. */
#define LOADER_MAX_DEPTH 4

struct loader {
    const char *name; /* file name for messages */
    const char *text;
    size_t len;
    char *err;
    size_t errlen;
    struct jsonpos_step path[LOADER_MAX_DEPTH];
    size_t depth;
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
int config_set_listen(struct config *cfg, const char *s) {
    const char *host, *colon;
    size_t hostlen;
    char buf[sizeof(cfg->listen_host)];
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
    if (port > 65535)
        return -EINVAL;
    copy_string(cfg->listen_host, sizeof(cfg->listen_host), buf);
    cfg->listen_port = (int)port;
    return 0;
}

static int parse_listen(struct loader *ld, json_t *v, struct config *cfg) {
    if (json_is_string(v) && config_set_listen(cfg, json_string_value(v)) == 0)
        return 0;
    return fail(ld, "must be \"ADDRESS:PORT\" with a numeric address and PORT in [0, 65535], "
                    "e.g. \"127.0.0.1:7420\" or \"[::1]:7420\"");
}

static int parse_object(struct loader *ld, const struct key *table, json_t *obj, void *base);
static int parse_lasers(struct loader *ld, const struct key *row, json_t *v, struct config *cfg);
static int parse_nets(struct loader *ld, const struct key *row, json_t *v, struct acl *acl);

/* Check one value against its row and store it at base + row->offset. */
static int parse_value(struct loader *ld, const struct key *row, json_t *v, void *base) {
    char *field = (char *)base + row->offset;

    switch (row->type) {
    case KEY_INT: {
        json_int_t x = json_is_integer(v) ? json_integer_value(v) : 0;
        if (!json_is_integer(v) || x < (json_int_t)row->min || x > (json_int_t)row->max)
            return fail(ld, "must be an integer in [%.0f, %.0f]", row->min, row->max);
        *(int *)(void *)field = (int)x;
        return 0;
    }
    case KEY_UINT64:
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return fail(ld, "must be an integer in [0, %" PRId64 "]", INT64_MAX);
        *(uint64_t *)(void *)field = (uint64_t)json_integer_value(v);
        return 0;
    case KEY_DOUBLE: {
        /* jansson reads 2 as an integer; a number key takes either. */
        double x = json_is_number(v) ? json_number_value(v) : (double)NAN;
        if (!(x >= row->min && x <= row->max))
            return fail(ld, "must be a number in [%.15g, %.15g]", row->min, row->max);
        *(double *)(void *)field = x;
        return 0;
    }
    case KEY_BOOL:
        if (!json_is_boolean(v))
            return fail(ld, "must be true or false");
        *(bool *)(void *)field = json_is_true(v);
        return 0;
    case KEY_STRING:
        if (!json_is_string(v) || json_string_length(v) < (size_t)row->min ||
            json_string_length(v) >= row->size)
            return fail(ld, "must be a string of %.0f to %zu bytes", row->min, row->size - 1);
        copy_string(field, row->size, json_string_value(v));
        return 0;
    case KEY_NAME:
        if (!json_is_string(v) ||
            !name_valid(json_string_value(v), json_string_length(v), row->size))
            return fail(ld, "must be 1 to %zu characters of A-Z a-z 0-9 _ . -", row->size - 1);
        copy_string(field, row->size, json_string_value(v));
        return 0;
    case KEY_ENUM:
        if (!json_is_string(v) || find_value(row->values, json_string_value(v)) < 0)
            return fail_enum(ld, row->values);
        copy_string(field, row->size, json_string_value(v));
        return 0;
    case KEY_POLICY: {
        int i = json_is_string(v) ? find_value(row->values, json_string_value(v)) : -1;
        if (i < 0)
            return fail_enum(ld, row->values);
        *(enum restart_policy *)(void *)field = (enum restart_policy)i;
        return 0;
    }
    case KEY_OBJECT:
        return parse_object(ld, row->sub, v, base);
    case KEY_LISTEN:
        return parse_listen(ld, v, base);
    case KEY_LASERS:
        return parse_lasers(ld, row, v, base);
    case KEY_NETS:
        return parse_nets(ld, row, v, (struct acl *)(void *)field);
    }
    return fail(ld, "internal error: bad key type");
}

static const struct key *key_find(const struct key *table, const char *name) {
    for (const struct key *k = table; k->name != NULL; k++) {
        if (strcmp(k->name, name) == 0)
            return k;
    }
    return NULL;
}

/* Members are checked in file order, so the first error is the first one a
 * reader meets (jansson keeps insertion order). */
static int parse_object(struct loader *ld, const struct key *table, json_t *obj, void *base) {
    const char *name;
    json_t *v;
    int r;

    if (!json_is_object(obj))
        return fail(ld, "must be an object");
    json_object_foreach(obj, name, v) {
        const struct key *row = key_find(table, name);
        path_push_key(ld, name);
        if (row == NULL)
            return fail(ld, "unknown key");
        r = parse_value(ld, row, v, base);
        if (r < 0)
            return r;
        ld->depth--;
    }
    for (const struct key *k = table; k->name != NULL; k++) {
        if ((k->flags & KEY_REQUIRED) && json_object_get(obj, k->name) == NULL) {
            path_push_key(ld, k->name);
            return fail(ld, "is required");
        }
    }
    return 0;
}

/* Per-laser defaults. The keys whose default follows another key start as
 * NAN, which no JSON number can be, and laser_resolve fills them in. */
static void laser_template(struct laser_config *l) {
    memset(l, 0, sizeof(*l));
    l->exposure_ms = 20;
    l->settle_ms = 30;
    l->enabled = true;
    l->sim.nominal_thz = UNSET;
    l->sim.offset_mhz = 0;
    l->sim.drift_mhz_per_sqrt_s = 0.5;
    l->sim.noise_mhz = 0.5;
    l->sim.sensitivity_mhz_per_v = 50;
    l->sim.lag_ms = 20;
    copy_string(l->sim.fault, sizeof(l->sim.fault), "none");
    copy_string(l->actuator.driver, sizeof(l->actuator.driver), "sim");
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
    l->max_gap_s = 5;
    l->stale_s = 2;
    l->restart = RESTART_RESUME;
    l->auto_relock = false;
    l->relock_attempts = 3;
    l->relock_delay_s = 2;
    l->history_depth = 1000;
    l->lock = false;
}

static void laser_resolve(struct laser_config *l) {
    if (isnan(l->sim.nominal_thz))
        l->sim.nominal_thz = isnan(l->setpoint_thz) ? LASER_DEFAULT_NOMINAL_THZ : l->setpoint_thz;
    if (isnan(l->setpoint_thz))
        l->setpoint_thz = l->sim.nominal_thz;
    if (isnan(l->min_thz))
        l->min_thz = l->setpoint_thz - LASER_DEFAULT_RANGE_THZ;
    if (isnan(l->max_thz))
        l->max_thz = l->setpoint_thz + LASER_DEFAULT_RANGE_THZ;
    if (isnan(l->sensitivity_mhz_per_v))
        l->sensitivity_mhz_per_v = l->sim.sensitivity_mhz_per_v;
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
                    l->setpoint_thz, l->min_thz, l->max_thz,
                    given ? "" : " (it defaults to sim.nominal_thz)");
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
    if (l->lock && strcmp(l->actuator.driver, "none") == 0) {
        path_push_key(ld, "lock");
        return fail(ld, "cannot be true with actuator driver \"none\"");
    }
    return 0;
}

static int parse_lasers(struct loader *ld, const struct key *row, json_t *v, struct config *cfg) {
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
        laser_template(l);
        r = parse_object(ld, laser_keys, obj, l);
        if (r < 0)
            return r;
        laser_resolve(l);
        r = laser_check(ld, cfg, (int)i, obj);
        if (r < 0)
            return r;
        cfg->nlasers = (int)i + 1;
        ld->depth--;
    }
    return 0;
}

static int parse_nets(struct loader *ld, const struct key *row, json_t *v, struct acl *acl) {
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

static void laser_default(struct laser_config *l, const char *name, int channel, double nominal_thz,
                          double sensitivity_mhz_per_v) {
    laser_template(l);
    copy_string(l->name, sizeof(l->name), name);
    l->channel = channel;
    l->sim.nominal_thz = nominal_thz;
    l->sim.sensitivity_mhz_per_v = sensitivity_mhz_per_v;
    laser_resolve(l);
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
    if (!SAME_STR(driver) || cur->read_timeout_ms != next->read_timeout_ms ||
        cur->seed != next->seed || !SAME_STR(wlm_library))
        note_key(restart, restart_len, "wavemeter");
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

void config_defaults(struct config *cfg) {
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
    cfg->answer_memory_max_bytes = 32 * 1024 * 1024;
    cfg->max_clients_per_address = 16;
    copy_string(cfg->state_dir, sizeof(cfg->state_dir), "/var/lib/wavemeterd");
    /* Writes from this host only, until the config names other networks. */
    acl_parse_net("127.0.0.0/8", &cfg->write_from.nets[0], NULL, 0);
    acl_parse_net("::1/128", &cfg->write_from.nets[1], NULL, 0);
    cfg->write_from.n = 2;
    cfg->state_save_interval_s = 10;
    copy_string(cfg->driver, sizeof(cfg->driver), "sim");
    cfg->read_timeout_ms = 5000;
    cfg->seed = 0;
    copy_string(cfg->wlm_library, sizeof(cfg->wlm_library), "/usr/lib/libwlmData.so");

    /* A trapped-ion lab: Yb photoionization and the Ca+ cooling, repump and
     * quench lasers. One negative sensitivity keeps the loop sign honest. */
    laser_default(&cfg->lasers[0], "399", 1, 751.52653, 50);
    laser_default(&cfg->lasers[1], "397", 2, 755.2227, 50);
    laser_default(&cfg->lasers[2], "866", 3, 346.0002, -40);
    laser_default(&cfg->lasers[3], "854", 4, 350.8626, 50);
    cfg->nlasers = 4;
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

int config_parse(struct config *cfg, const char *name, const char *text, size_t len, char *err,
                 size_t errlen) {
    struct loader ld = {.name = name, .text = text, .len = len, .err = err, .errlen = errlen};
    struct config *tmp;
    json_error_t jerr;
    json_t *root;
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
    config_defaults(tmp);
    copy_string(tmp->source, sizeof(tmp->source), name);
    r = parse_object(&ld, top_keys, root, tmp);
    if (r == 0)
        r = check_read_times(&ld, tmp);
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

static const char *key_type_name(enum key_type t) {
    switch (t) {
    case KEY_INT:
    case KEY_UINT64:
        return "integer";
    case KEY_DOUBLE:
        return "number";
    case KEY_BOOL:
        return "boolean";
    case KEY_STRING:
    case KEY_NAME:
    case KEY_ENUM:
    case KEY_POLICY:
    case KEY_LISTEN:
        return "string";
    case KEY_OBJECT:
        return "object";
    case KEY_LASERS:
    case KEY_NETS:
        return "array";
    }
    return "?";
}

void config_foreach_key(void (*fn)(const struct config_key_info *key, void *arg), void *arg) {
    for (size_t s = 0; s < sizeof(sections) / sizeof(sections[0]); s++) {
        for (const struct key *k = sections[s].keys; k->name != NULL; k++) {
            struct config_key_info info = {
                .section = sections[s].section,
                .key = k->name,
                .type = key_type_name(k->type),
                .has_range = k->type == KEY_INT || k->type == KEY_DOUBLE,
                .min = k->min,
                .max = k->max,
                .values = k->values,
                .required = (k->flags & KEY_REQUIRED) != 0,
                .doc = k->doc,
            };
            fn(&info, arg);
        }
    }
}
