/*
 * config: the daemon's whole configuration as one plain struct, its defaults
 * (the built-in simulator), and the loader that validates a JSON file against
 * one table of keys with types, defaults and bounds. It does no I/O beyond
 * reading the file and never starts anything.
 */
#ifndef WMD_CONFIG_H
#define WMD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "acl.h"

/* Up to 32 lasers: one HighFinesse switch has at most 8 (or 16 with the
 * external multiplexer), and labs with two switches still fit. */
#define CONFIG_MAX_LASERS 32
#define CONFIG_NAME_MAX 32
#define CONFIG_PATH_MAX 256
/* Bounds shared by the config keys and the methods that change the same
 * values at run time, so a value a client may set always loads again. */
#define CONFIG_GAIN_MAX 1000.0
#define CONFIG_RAMP_MAX_MHZ_PER_S 1000000.0

enum restart_policy { RESTART_RESUME, RESTART_RELEASE, RESTART_OFF };
/* After "lost": put the output back where the laser was last locked, or
 * leave it where the freeze held it. */
enum lost_action { LOST_PARK, LOST_HOLD };
/* A setpoint change beyond capture_mhz while locked: carried out as a ramp
 * at large_step_rate_mhz_per_s, or refused. */
enum large_step { LARGE_STEP_RAMP, LARGE_STEP_REFUSE };

/* Room for one driver's own settings struct (a serial port path, a
 * command template, ...): the largest driver's struct fits with room to spare;
 * a driver whose struct outgrows it fails its unit test, not a user. */
#define CONFIG_SETTINGS_MAX 640
#define CONFIG_DRIVER_MAX 32 /* longer than any driver name (a unit test checks) */

/* A driver's name and its settings, kept as bytes the driver alone reads
 * (its key table says what is where). driver "" is no driver: a laser
 * without an actuator, a wavemeter without an external switch. */
struct drv_settings {
    char driver[CONFIG_DRIVER_MAX];
    union {
        max_align_t align;
        unsigned char bytes[CONFIG_SETTINGS_MAX];
    } u;
};

struct actuator_config {
    int timeout_ms; /* every actuator write finishes or fails by then */
    struct drv_settings drv;
};

/* An external channel selector (a fibre switch) in front of the wavemeter. */
struct switch_config {
    struct drv_settings drv; /* driver "": none, the wavemeter switches itself */
    int input;               /* the wavemeter channel the switch's output feeds */
    int settle_ms;           /* wait after a confirmed switch before exposing */
    int timeout_ms;          /* selecting and confirming finish or fail by then */
};

struct laser_config {
    char name[CONFIG_NAME_MAX];
    int channel; /* wavemeter channel, 1-based, unique */
    int exposure_ms;
    int settle_ms;  /* switch settle before the exposure */
    int max_age_ms; /* revisit at least this often; 0: by the lock (see meter.h) */
    bool enabled;
    /* The wavemeter driver's settings for this channel, if it takes any
     * (the simulator's lasers[].sim: the light it shows). */
    struct drv_settings meter;
    struct actuator_config actuator;

    /* Stabilization (issue 3). */
    double setpoint_thz;     /* default: the wavemeter driver's (sim.nominal_thz) */
    double min_thz, max_thz; /* allowed setpoint range; default: setpoint +- 1 GHz */
    double kp_v_per_mhz;
    double ki_v_per_mhz_s;
    double kd_v_s_per_mhz;
    double sensitivity_mhz_per_v; /* signed; sign of the loop, 0 = assume +1;
                                     default: the wavemeter driver's, else +50 */
    double output_min_v, output_max_v;
    double output_initial_v;
    double slew_v_per_s;
    double ramp_mhz_per_s;    /* default setpoint ramp, 0 = step */
    double capture_mhz;       /* |error| beyond this counts toward lost */
    double tolerance_mhz;     /* |error| within this counts toward locked */
    int locked_after;         /* readings within tolerance before "locked" */
    int lost_after;           /* readings outside capture before "lost" */
    double rail_timeout_s;    /* railed this long -> lost */
    double acquire_timeout_s; /* not locked this long: the reason says why */
    double max_gap_s;         /* longer gap between readings freezes the integrator */
    double stale_s;           /* reading older than this never reaches the loop */
    enum restart_policy restart;
    bool auto_relock;
    enum lost_action lost_action;
    enum large_step large_step;
    double large_step_rate_mhz_per_s;
    int relock_attempts;
    double relock_delay_s; /* wait after lost before each relock attempt */
    int history_depth;     /* readings kept per channel */
    bool lock;             /* lock at first start (no state file yet) */
};

/* MQTT publishing (mqtt.h); off unless enabled. Strings "" = not set. */
struct mqtt_config {
    bool enabled;
    char host[256];         /* broker: a name (resolved off the loop) or an address */
    int port;               /* 1883, or 8883 with tls, when the file gives none */
    char client_id[128];    /* "" = "wavemeterd-<hostname>" */
    char topic_prefix[128]; /* valid per mqtt_topic_prefix_check */
    char username[128];     /* "" = no login */
    char password_file[CONFIG_PATH_MAX];
    bool tls;
    char tls_cafile[CONFIG_PATH_MAX]; /* "" with tls_capath "": the system's CAs */
    char tls_capath[CONFIG_PATH_MAX];
    char tls_certfile[CONFIG_PATH_MAX]; /* client certificate, with tls_keyfile */
    char tls_keyfile[CONFIG_PATH_MAX];
    int qos;                     /* 0..2 */
    double readings_max_rate_hz; /* per laser; 0 = every reading */
    int keepalive_s;
    int connect_timeout_s; /* TCP, TLS and CONNACK together */
    int queue_max;         /* readings waiting for the broker */
};

/* The HTTP and WebSocket listener (http.h); off while listen is "". */
struct http_config {
    char listen[80];                    /* as written: "HOST:PORT", "[V6]:PORT", "" = off */
    char host[64];                      /* from listen, numeric */
    int port;                           /* from listen; 0 = a free port */
    char www_dir[CONFIG_PATH_MAX];      /* the page's files (absolute) */
    char dygraphs_dir[CONFIG_PATH_MAX]; /* what /dygraphs/ serves (absolute) */
};

struct config {
    char source[CONFIG_PATH_MAX]; /* file it came from, "" for built-in */

    char listen_host[64];
    int listen_port;
    char log_level[8];   /* debug|info|notice|warning|error */
    int threadpool_size; /* UV_THREADPOOL_SIZE */

    int max_line_bytes;
    int max_clients;
    int max_clients_per_address;
    int max_batch;
    int idle_timeout_s;
    int write_queue_max_bytes;
    int answer_memory_max_bytes;
    int write_stall_timeout_s;
    int line_timeout_s;
    int push_soft_bytes;     /* above this backlog, notifications are coalesced */
    int max_subscriptions;   /* per connection */
    double write_rate_per_s; /* writes one connection may make, on average */
    double write_burst;      /* ... and at once */

    struct acl write_from;            /* peers allowed to use write methods */
    bool require_token;               /* writes also need the auth method first */
    char token_file[CONFIG_PATH_MAX]; /* "" = a cookie made in the state dir */

    char state_dir[CONFIG_PATH_MAX];
    double state_save_interval_s;

    struct drv_settings wavemeter; /* driver "sim", "highfinesse", ... and its keys */
    int read_timeout_ms;
    int monitor_period_ms; /* how often lasers no lock uses are read */
    struct switch_config sw;

    struct mqtt_config mqtt;
    struct http_config http;

    int nlasers;
    struct laser_config lasers[CONFIG_MAX_LASERS];
};

/* Fill cfg with the built-in defaults: the simulator with 4 lasers. */
void config_defaults(struct config *cfg);

/*
 * Load and validate the JSON file at path into cfg: the defaults, overridden by
 * the file (a file with "lasers" replaces the default lasers). Format: see
 * docs/CONFIG.md. On success returns 0 and replaces *cfg. On error returns a
 * negative errno-style code, leaves *cfg unchanged and writes one line to err:
 * "FILE:LINE:COL: key "lasers[1].kp_v_per_mhz": must be a number in [0, 1000]",
 * "FILE:LINE:COL: invalid JSON: ..." or "FILE: cannot read: <strerror>".
 */
int config_load(struct config *cfg, const char *path, char *err, size_t errlen);

/* The same from a string; name is used in messages. */
int config_parse(struct config *cfg, const char *name, const char *text, size_t len, char *err,
                 size_t errlen);

/* Find a laser by name or channel; NULL if none. A name matches first, so
 * "3" is the laser named "3" if there is one, else the one on channel 3. */
const struct laser_config *config_laser_by_name(const struct config *cfg, const char *name);

const char *config_restart_name(enum restart_policy p);

/* Set listen_host and listen_port from "ADDR:PORT" or "[V6ADDR]:PORT" (the
 * config's "listen", and --listen). Numeric addresses only. 0 or -EINVAL,
 * with cfg unchanged. */
int config_set_listen(struct config *cfg, const char *text);
/* Set http.listen (and its host and port) the same way; "" turns HTTP off
 * (--http). 0 or -EINVAL, with cfg unchanged. */
int config_set_http_listen(struct config *cfg, const char *text);

/*
 * A reload (SIGHUP): copy into cur what may change while the daemon runs:
 * log_level, every limits.* key and access.write_from. Per-laser gains may
 * change too, but through the lasers (they are saved state), so they are
 * left to the caller. Keys that need a restart (listen, threadpool_size,
 * state, wavemeter, access.require_token and token_file, the lasers other
 * than their gains) keep cur's values; their paths are listed in restart
 * ("listen, lasers[1]"), "" when none differ. Returns how many run-time keys
 * changed.
 */
int config_update_runtime(struct config *cur, const struct config *next, char *restart,
                          size_t restart_len);

/* One key the loader accepts, as its table defines it (for docs and tests). */
struct config_key_info {
    const char *section; /* "", "limits", "state", "access", "wavemeter",
                            "wavemeter.switch", "lasers[]", "lasers[].actuator",
                            or a wavemeter driver's "lasers[].sim" */
    const char *driver;  /* NULL: a key of every driver; else only with this one */
    const char *key;
    const char *type; /* "integer", "number", "boolean", "string", "object",
                         "array" */
    bool has_range;   /* integer and number keys: min and max apply */
    double min, max;
    const char *const *values; /* allowed strings, NULL-terminated; NULL if free */
    bool required;             /* no default (laser name and channel, a port) */
    bool device;               /* lasers sharing a device must agree on it */
    const char *doc;           /* one line, with units */
};

/* Call fn once per key: the core tables in file-format order, then every
 * driver's own keys. Static data: any thread, no allocation; the info is
 * valid only during the call. */
void config_foreach_key(void (*fn)(const struct config_key_info *key, void *arg), void *arg);

#endif
