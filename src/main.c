/*
 * main: command line, start-up and shutdown of wavemeterd. Validates the
 * whole config before anything starts, wires the meter, the methods and the
 * server onto one libuv loop, and speaks sd_notify (READY, STATUS, WATCHDOG,
 * STOPPING). Everything after start-up happens in the modules.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "daemon.h"
#include "log.h"
#include "metrics.h"

/* The lag timer ticks every 100 ms: fine enough to see a loop stall long
 * before the watchdog (seconds) would, cheap enough to be free. */
#define LAG_TICK_MS 100
/* STATUS= is refreshed every 5 s: systemctl status shows it, nobody polls it. */
#define STATUS_EVERY_MS 5000

/* Signals that end the daemon the orderly way (log, save, exit 0): every
 * signal whose default action would end it, but SIGHUP (reload), SIGPIPE
 * (ignored: a vanished peer costs an EPIPE), SIGXFSZ (ignored: an oversized
 * write fails with EFBIG) and SIGPROF (profilers). */
static const int stop_signals[] = {SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM};
#define NSTOP_SIGNALS (sizeof(stop_signals) / sizeof(stop_signals[0]))

struct runtime {
    struct daemon d;
    uv_loop_t loop;
    uv_signal_t stops[NSTOP_SIGNALS], sighup;
    const char *config_path;
    const char *listen_arg;         /* --listen, which a reload keeps too */
    const char *http_arg, *www_arg; /* --http, --www-dir: a reload keeps them too */
    const char *mqtt_arg;           /* --mqtt, the same */
    bool http_stopped;              /* a failed start waits for it */
    uv_timer_t watchdog, status;
    uint64_t watchdog_usec;
    int pending_stops;
    bool stopping;
};

static void usage(FILE *f) {
    fprintf(
        f, "usage: wavemeterd [options]\n"
           "  -c, --config FILE      JSON config (default: the built-in simulator)\n"
           "  -t, --check-config     validate the config and exit 0 (ok) or 1\n"
           "  -l, --listen ADDR:PORT listen here instead of the config's address\n"
           "  -H, --http ADDR:PORT   serve the page, /ws and /metrics here (\"\": off)\n"
           "  -W, --www-dir DIR      the page's files (absolute; default: the install's)\n"
           "  -M, --mqtt HOST[:PORT] publish to this MQTT broker (\"\": off; mqtt.* for the rest)\n"
           "  -L, --log-level LEVEL  debug, info, notice, warning or error\n"
           "  -V, --version          print the version and exit\n"
           "  -h, --help             this text\n"
           "Docs: README.md, docs/CONFIG.md, docs/PROTOCOL.md\n");
}

static void lag_cb(uv_timer_t *t) {
    struct daemon *d = t->data;
    uint64_t now_ns = uv_hrtime();

    d->lag_last_ms = now_ns > d->lag_due_ns ? (double)(now_ns - d->lag_due_ns) * 1e-6 : 0.0;
    if (d->lag_last_ms > d->lag_max_ms)
        d->lag_max_ms = d->lag_last_ms;
    d->lag_due_ns = now_ns + LAG_TICK_MS * 1000000u;
}

/* After each poll: how long the turn that ends here worked (not waited). */
static void turn_cb(uv_check_t *h) {
    struct daemon *d = h->data;
    uint64_t now = uv_hrtime(), idle = uv_metrics_idle_time(d->loop);
    uint64_t busy = now - d->turn_at_ns - (idle - d->turn_idle_ns);

    if (d->turn_at_ns != 0 && (double)busy * 1e-6 > d->turn_max_ms)
        d->turn_max_ms = (double)busy * 1e-6;
    d->turn_at_ns = now;
    d->turn_idle_ns = idle;
}

/* The watchdog is fed from the loop: if the loop blocks, systemd restarts us. */
static void watchdog_cb(uv_timer_t *t) {
    (void)t;
    sd_notify(0, "WATCHDOG=1");
}

static void status_cb(uv_timer_t *t) {
    struct runtime *rt = t->data;
    struct daemon *d = &rt->d;

    sd_notifyf(0, "STATUS=%s on %s; %d channels, driver %s %s, cycle %.0f ms, %d clients",
               rt->stopping ? "stopping" : "serving", d->server.bound, d->meter.nch,
               d->meter.drv->cfg.name, meter_state_name(&d->meter),
               (double)d->meter.last_cycle_ns * 1e-6, d->server.nclients);
}

static void close_handle(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void stop_step_done(struct runtime *rt) {
    if (--rt->pending_stops > 0)
        return;
    /* Everything with work in flight has finished; close what is left
     * (timers, signal handlers) and uv_run returns. */
    uv_walk(&rt->loop, close_handle, NULL);
}

static void server_stopped(struct server *s) {
    stop_step_done((struct runtime *)((char *)s - offsetof(struct runtime, d.server)));
}

/* Offline published and disconnected, or the deadline passed. */
static void mqtt_stopped(struct mqtt *m) {
    stop_step_done((struct runtime *)((char *)m - offsetof(struct runtime, d.mqtt)));
}

static void http_stopped(void *arg) {
    stop_step_done(arg);
}

static void lasers_stopped(struct lasers *ls) {
    stop_step_done((struct runtime *)((char *)ls - offsetof(struct runtime, d.lasers)));
}

/* No reading can arrive any more: let the lasers finish their writes and
 * save their state a last time. */
static void meter_stopped(struct meter *m) {
    struct runtime *rt = (struct runtime *)((char *)m - offsetof(struct runtime, d.meter));

    lasers_stop(&rt->d.lasers, lasers_stopped);
}

/* A gain change from a reload has been saved (or failed). */
static void reload_gains_done(void *arg, int rc, enum laser_stage stage) {
    struct laser *l = arg;

    if (rc != 0) /* success is logged by the laser itself */
        log_warnx("reload: laser \"%s\": gains applied but %s: %s", l->cfg->name,
                  stage == LASER_STAGE_STORE ? "not saved" : "refused", strerror(-rc));
}

/* --http and --www-dir over the config's http.listen and http.www_dir. */
static int http_args(struct config *cfg, const char *http, const char *www, char *err,
                     size_t errlen) {
    if (http && config_set_http_listen(cfg, http) != 0) {
        snprintf(err, errlen, "--http \"%s\": expected ADDR:PORT (numeric), or \"\" for off", http);
        return -EINVAL;
    }
    if (www && (www[0] != '/' || strlen(www) >= sizeof(cfg->http.www_dir))) {
        snprintf(err, errlen, "--www-dir \"%s\": expected an absolute directory", www);
        return -EINVAL;
    }
    if (www)
        snprintf(cfg->http.www_dir, sizeof(cfg->http.www_dir), "%s", www);
    return 0;
}

/* --mqtt HOST[:PORT] over the config's mqtt.enabled, host and port: on with
 * that broker, port 1883 when not given; "" turns publishing off. */
static int mqtt_arg(struct config *cfg, const char *arg, char *err, size_t errlen) {
    const char *colon;
    char *end;
    long port = 1883;
    size_t hostlen;

    if (arg == NULL)
        return 0;
    if (arg[0] == '\0') {
        cfg->mqtt.enabled = false;
        return 0;
    }
    colon = strrchr(arg, ':');
    if (colon != NULL && strchr(arg, ']') == NULL && strchr(arg, ':') != colon)
        colon = NULL; /* a bare IPv6 address: no port */
    hostlen = colon ? (size_t)(colon - arg) : strlen(arg);
    if (colon) {
        errno = 0;
        port = strtol(colon + 1, &end, 10);
        if (errno != 0 || end == colon + 1 || *end != '\0' || port < 1 || port > 65535)
            hostlen = 0;
    }
    if (hostlen == 0 || hostlen >= sizeof(cfg->mqtt.host)) {
        snprintf(err, errlen, "--mqtt \"%s\": expected HOST or HOST:PORT (port 1..65535), or \"\"",
                 arg);
        return -EINVAL;
    }
    cfg->mqtt.enabled = true;
    memcpy(cfg->mqtt.host, arg, hostlen);
    cfg->mqtt.host[hostlen] = '\0';
    cfg->mqtt.port = (int)port;
    return 0;
}

/*
 * SIGHUP: read the config file again and apply what can change while the
 * daemon runs (log level, limits, access lists, gains the file changed). A
 * file that does not load or check is refused with its reason and the
 * running config stays whole. Logs go to stderr (the journal under
 * systemd), so there is no log file to reopen.
 */
static void reload(struct runtime *rt) {
    struct daemon *d = &rt->d;
    struct config *next;
    char err[512], restart[256];
    enum log_level level;
    int rc, gains = 0;

    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%" PRIu64, uv_hrtime() / 1000);
    if (rt->config_path == NULL) {
        log_notice("SIGHUP: running on the built-in defaults, no config file to re-read");
        sd_notify(0, "READY=1");
        return;
    }
    if ((next = malloc(sizeof(*next))) == NULL) {
        log_warnx("reload: out of memory; keeping the running config");
        sd_notify(0, "READY=1");
        return;
    }
    rc = config_load(next, rt->config_path, err, sizeof(err));
    if (rc == 0 && rt->listen_arg)
        (void)config_set_listen(next, rt->listen_arg); /* checked at start-up */
    if (rc == 0)
        (void)http_args(next, rt->http_arg, rt->www_arg, err, sizeof(err)); /* the same */
    if (rc == 0)
        (void)mqtt_arg(next, rt->mqtt_arg, err, sizeof(err));
    if (rc == 0 && log_level_parse(next->log_level, &level) != 0) {
        snprintf(err, sizeof(err), "log_level \"%s\": unknown", next->log_level);
        rc = -EINVAL;
    }
    if (rc != 0) {
        log_error("reload refused, keeping the running config: %s", err);
        free(next);
        sd_notify(0, "READY=1");
        return;
    }
    /* The file's gains, where they differ from what the file said before:
     * an admin's edit wins over a client's laser.set_gains, an unchanged
     * file does not undo one. */
    if (next->nlasers == d->cfg.nlasers) {
        for (int i = 0; i < d->lasers.n; i++) {
            const struct laser_config *was = &d->cfg.lasers[i], *now = &next->lasers[i];
            struct laser *l = &d->lasers.l[i];
            if (strcmp(was->name, now->name) != 0 || (was->kp_v_per_mhz == now->kp_v_per_mhz &&
                                                      was->ki_v_per_mhz_s == now->ki_v_per_mhz_s &&
                                                      was->kd_v_s_per_mhz == now->kd_v_s_per_mhz))
                continue;
            rc = laser_set_gains(l, now->kp_v_per_mhz, now->ki_v_per_mhz_s, now->kd_v_s_per_mhz,
                                 reload_gains_done, l);
            if (rc < 0) {
                log_warnx("reload: laser \"%s\": gains not applied: %s", l->cfg->name,
                          strerror(-rc));
                continue;
            }
            d->cfg.lasers[i].kp_v_per_mhz = now->kp_v_per_mhz;
            d->cfg.lasers[i].ki_v_per_mhz_s = now->ki_v_per_mhz_s;
            d->cfg.lasers[i].kd_v_s_per_mhz = now->kd_v_s_per_mhz;
            gains++;
        }
    }
    rc = config_update_runtime(&d->cfg, next, restart, sizeof(restart));
    log_set_level(level);
    d->rpc.max_batch = (size_t)d->cfg.max_batch;
    d->rpc.access.write_rate_per_s = d->cfg.write_rate_per_s;
    d->rpc.access.write_burst = d->cfg.write_burst;
    if (restart[0])
        log_warnx("reload: %s changed in %s; that takes a restart, the running values stay",
                  restart, rt->config_path);
    log_notice("reload: %s applied: %d run-time key%s and the gains of %d laser%s changed",
               rt->config_path, rc, rc == 1 ? "" : "s", gains, gains == 1 ? "" : "s");
    free(next);
    sd_notify(0, "READY=1");
}

static void sighup_cb(uv_signal_t *h, int signum) {
    struct runtime *rt = h->data;

    (void)signum;
    if (!rt->stopping)
        reload(rt);
}

static void signal_cb(uv_signal_t *h, int signum) {
    struct runtime *rt = h->data;

    if (rt->stopping)
        return;
    rt->stopping = true;
    log_notice("%s: stopping (read in flight: %s)", strsignal(signum),
               meter_busy(&rt->d.meter) ? "yes" : "no");
    sd_notify(0, "STOPPING=1");
    rt->pending_stops = 2;
    if (rt->d.http) { /* first: it gives back its rows of the server's peer table */
        rt->pending_stops++;
        http_stop(rt->d.http, http_stopped, rt);
    }
    rt->pending_stops++; /* mqtt, done at once when off */
    mqtt_stop(&rt->d.mqtt, mqtt_stopped);
    push_stop(&rt->d.push);
    server_stop(&rt->d.server, server_stopped);
    meter_stop(&rt->d.meter, meter_stopped);
}

/* $STATE_DIRECTORY under systemd (the first entry if several), else the
 * config's state.dir. */
static void pick_state_dir(struct daemon *d) {
    const char *env = getenv("STATE_DIRECTORY");
    size_t n;

    if (env && *env) {
        n = strcspn(env, ":");
        if (n >= sizeof(d->state_dir))
            n = sizeof(d->state_dir) - 1;
        memcpy(d->state_dir, env, n);
        d->state_dir[n] = '\0';
    } else {
        snprintf(d->state_dir, sizeof(d->state_dir), "%s", d->cfg.state_dir);
    }
}

/* Start-up failed after the loop got handles: close them all, let anything
 * queued finish (uv_run returns once nothing is left), then free. */
static void http_aborted(void *arg) {
    ((struct runtime *)arg)->http_stopped = true;
}

static void abort_start(struct runtime *rt) {
    /* libwebsockets closes its own handles (over a few turns) and must not
     * find them closed under it. */
    if (rt->d.http) {
        http_stop(rt->d.http, http_aborted, rt);
        while (!rt->http_stopped)
            uv_run(&rt->loop, UV_RUN_ONCE);
    }
    uv_walk(&rt->loop, close_handle, NULL);
    uv_run(&rt->loop, UV_RUN_DEFAULT);
    http_destroy(rt->d.http);
    meter_fini(&rt->d.meter);
    uv_loop_close(&rt->loop);
}

int main(int argc, char **argv) {
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, 't'},
        {"listen", required_argument, NULL, 'l'},
        {"http", required_argument, NULL, 'H'},
        {"www-dir", required_argument, NULL, 'W'},
        {"mqtt", required_argument, NULL, 'M'},
        {"log-level", required_argument, NULL, 'L'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static struct runtime rt;
    struct daemon *d = &rt.d;
    const char *config_path = NULL, *listen = NULL, *level_arg = NULL;
    const char *http_arg = NULL, *www_arg = NULL, *mqtt = NULL;
    bool check_only = false;
    enum log_level level;
    char err[512], env[16];
    int opt, rc;

    while ((opt = getopt_long(argc, argv, "c:tl:H:W:M:L:Vh", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case 't':
            check_only = true;
            break;
        case 'l':
            listen = optarg;
            break;
        case 'H':
            http_arg = optarg;
            break;
        case 'W':
            www_arg = optarg;
            break;
        case 'M':
            mqtt = optarg;
            break;
        case 'L':
            level_arg = optarg;
            break;
        case 'V':
            printf("wavemeterd %s\n", WMD_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "wavemeterd: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    log_init(LOG_LVL_INFO);

    if (config_path) {
        rc = config_load(&d->cfg, config_path, err, sizeof(err));
    } else {
        config_defaults(&d->cfg);
        rc = 0;
    }
    if (rc == 0 && listen && config_set_listen(&d->cfg, listen) != 0) {
        snprintf(err, sizeof(err), "--listen \"%s\": expected ADDR:PORT", listen);
        rc = -EINVAL;
    }
    if (rc == 0)
        rc = http_args(&d->cfg, http_arg, www_arg, err, sizeof(err));
    if (rc == 0)
        rc = mqtt_arg(&d->cfg, mqtt, err, sizeof(err));
    if (rc == 0 && level_arg == NULL && log_level_parse(d->cfg.log_level, &level) != 0) {
        snprintf(err, sizeof(err), "log_level \"%s\": unknown", d->cfg.log_level);
        rc = -EINVAL;
    }
    if (rc == 0 && level_arg && log_level_parse(level_arg, &level) != 0) {
        snprintf(err, sizeof(err),
                 "--log-level \"%s\": expected debug, info, notice, warning or error", level_arg);
        rc = -EINVAL;
    }
    if (rc != 0) {
        log_error("%s", err);
        return 1;
    }
    if (check_only) {
        printf("%s: ok (%d laser%s, driver %s)\n", config_path ? config_path : "built-in defaults",
               d->cfg.nlasers, d->cfg.nlasers == 1 ? "" : "s", d->cfg.wavemeter.driver);
        return 0;
    }
    log_set_level(level);
    rt.config_path = config_path;
    rt.listen_arg = listen;
    rt.http_arg = http_arg;
    rt.www_arg = www_arg;
    rt.mqtt_arg = mqtt;

    /* libuv reads UV_THREADPOOL_SIZE once, when the pool first starts: set it
     * before anything can queue work. */
    snprintf(env, sizeof(env), "%d", d->cfg.threadpool_size);
    setenv("UV_THREADPOOL_SIZE", env, 1);
    /* A peer that vanishes mid-answer must cost an EPIPE, not the process. */
    signal(SIGPIPE, SIG_IGN);
    signal(SIGXFSZ, SIG_IGN);
    /* Big answers get pages of their own, given back when freed: glibc's
     * default would raise this threshold after the first big free and keep
     * later answers in the heap, which does not shrink. */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);

    if ((rc = uv_loop_init(&rt.loop)) != 0 ||
        (rc = uv_loop_configure(&rt.loop, UV_METRICS_IDLE_TIME)) != 0) {
        log_error("loop: %s", uv_strerror(rc));
        return 1;
    }
    d->loop = &rt.loop;
    d->clk = clock_system();
    d->start_ns = clock_now_ns(d->clk);

    /* Bind before any instrument is touched or pool work queued: a daemon
     * that cannot listen (port in use) must exit 1 at once, with nothing in
     * flight and no instrument spoken to. */
    methods_init(&d->rpc, d);
    if ((rc = push_init(&d->push, &rt.loop, &d->cfg)) != 0) {
        log_error("push: %s", uv_strerror(rc));
        return 1;
    }
    if ((rc = server_start(&d->server, &rt.loop, &d->cfg, &d->rpc, err, sizeof(err))) != 0) {
        log_error("%s", err);
        abort_start(&rt);
        return 1;
    }
    if (d->cfg.http.listen[0] != '\0') {
        const struct http_hooks hooks = {
            .rpc = &d->rpc, .peers = &d->server.peers, .metrics = metrics_hook, .ctx = d};
        if ((rc = http_start(&d->http, &rt.loop, &d->cfg, &hooks, err, sizeof(err))) != 0) {
            log_error("%s", err);
            abort_start(&rt);
            return 1;
        }
    }
    pick_state_dir(d);
    if (d->cfg.require_token) {
        rc = d->cfg.token_file[0] ? token_load(&d->token, d->cfg.token_file, err, sizeof(err))
                                  : token_make_cookie(&d->token, d->state_dir, err, sizeof(err));
        if (rc != 0) {
            log_error("access: %s", err);
            abort_start(&rt);
            return 1;
        }
        log_info("access: write methods need the token in %s", d->token.path);
    }
    /* The wavemeter opens here; actuator devices open on the pool once the
     * loop runs (lasers_init queues them last), so a start that fails
     * before this line has spoken to no instrument. */
    if ((rc = meter_init(&d->meter, &rt.loop, &d->cfg, d->clk, err, sizeof(err))) != 0) {
        log_error("wavemeter: %s", err);
        abort_start(&rt);
        return 1;
    }
    if ((rc = lasers_init(&d->lasers, &rt.loop, &d->cfg, d->clk, &d->meter, d->state_dir, err,
                          sizeof(err))) != 0) {
        log_error("%s", err);
        abort_start(&rt);
        return 1;
    }
    /* MQTT connects in the background and the daemon runs whether the
     * broker is there or not; only its files (password, TLS) can stop the
     * start here. Nothing after this can fail. */
    if ((rc = mqtt_start(&d->mqtt, &rt.loop, &d->cfg, err, sizeof(err))) != 0) {
        log_error("%s", err);
        abort_start(&rt);
        return 1;
    }

    for (size_t i = 0; i < NSTOP_SIGNALS; i++) {
        uv_signal_init(&rt.loop, &rt.stops[i]);
        rt.stops[i].data = &rt;
        uv_signal_start(&rt.stops[i], signal_cb, stop_signals[i]);
    }
    uv_signal_init(&rt.loop, &rt.sighup);
    rt.sighup.data = &rt;
    uv_signal_start(&rt.sighup, sighup_cb, SIGHUP);

    uv_timer_init(&rt.loop, &d->lag_timer);
    d->lag_timer.data = d;
    d->lag_due_ns = uv_hrtime() + LAG_TICK_MS * 1000000u;
    uv_timer_start(&d->lag_timer, lag_cb, LAG_TICK_MS, LAG_TICK_MS);

    uv_check_init(&rt.loop, &d->turn_check);
    d->turn_check.data = d;
    uv_check_start(&d->turn_check, turn_cb);

    uv_timer_init(&rt.loop, &rt.status);
    rt.status.data = &rt;
    uv_timer_start(&rt.status, status_cb, STATUS_EVERY_MS, STATUS_EVERY_MS);

    uv_timer_init(&rt.loop, &rt.watchdog);
    if (sd_watchdog_enabled(0, &rt.watchdog_usec) > 0 && rt.watchdog_usec > 0) {
        /* Feed at half the interval, as sd_watchdog_enabled(3) recommends. */
        uint64_t every_ms = rt.watchdog_usec / 2000;
        uv_timer_start(&rt.watchdog, watchdog_cb, every_ms ? every_ms : 1, every_ms ? every_ms : 1);
    }

    methods_listen(d);
    meter_start(&d->meter, methods_on_reading, d);
    log_notice("wavemeterd %s: listening on %s, driver %s, %d channels, %d pool threads",
               WMD_VERSION, d->server.bound, d->cfg.wavemeter.driver, d->meter.nch,
               d->cfg.threadpool_size);
    if (d->http)
        log_notice("http: serving http://%s/ (the page from %s, /ws, /metrics)",
                   http_bound(d->http), d->cfg.http.www_dir);
    sd_notify(0, "READY=1");
    status_cb(&rt.status);

    uv_run(&rt.loop, UV_RUN_DEFAULT);

    http_destroy(d->http);
    lasers_fini(&d->lasers);
    meter_fini(&d->meter);
    rc = uv_loop_close(&rt.loop);
    if (rc != 0)
        log_warnx("loop: handles left open at exit: %s", uv_strerror(rc));
    log_notice("stopped");
    return 0;
}
